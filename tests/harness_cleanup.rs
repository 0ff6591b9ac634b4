//! The harness never leaves a consumer process behind, whatever stops it and wherever the
//! consumer's processes went (another session included), and its timeline file stays readable.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::processes::{mark_consumer, marked, marked_after};
use common::*;
use exactly::timeline::{read_events, ContainmentMethod, Event, ProcessPhase};

/// Starts a long run (slow consumer, no faults) in the background.
fn start_long_run(dir: &Path) -> Child {
    let plan = plan_copy("kafka-no-fault.yaml", dir, |t| {
        t.replace(
            "--session-timeout-ms,",
            "--work-ms, \"200\", --session-timeout-ms,",
        )
        .replace("messages: 100", "messages: 500")
    });
    Command::new(exactly_bin())
        .args([
            "run",
            plan.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (bounded) until the run has started a consumer; returns its pid.
fn wait_for_consumer(dir: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(events) = read_events(&dir.join("run/events.jsonl")) {
            let pid = events.iter().find_map(|e| match e.event {
                Event::Process {
                    pid,
                    phase: ProcessPhase::Started,
                    ..
                } => Some(pid),
                _ => None,
            });
            if let Some(pid) = pid {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no consumer started within 60s");
}

/// True while `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[test]
fn sigterm_to_the_harness_stops_the_consumer_and_keeps_the_timeline_readable() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let mut harness = start_long_run(dir.path());
    let pid = wait_for_consumer(dir.path());
    assert!(alive(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(harness.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status =
        wait_exit(&mut harness, Duration::from_secs(30)).expect("harness exits after SIGTERM");
    assert!(!alive(pid), "consumer {pid} survived the harness");
    assert_eq!(status.code(), Some(3), "an aborted run is inconclusive");
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e.event, Event::RunEnded { .. })));
    assert!(
        dir.path().join("run/report.md").exists(),
        "the report is still written"
    );
}

#[test]
fn sigkill_to_the_harness_takes_the_consumer_with_it() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let mut harness = start_long_run(dir.path());
    let pid = wait_for_consumer(dir.path());
    harness.kill().unwrap();
    let _ = harness.wait();
    assert!(
        wait_gone(pid, Duration::from_secs(5)),
        "consumer {pid} survived a SIGKILLed harness"
    );
    // Whatever was written before the kill parses.
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e.event, Event::RunStarted(_))));
}

/// A kafka-no-fault run whose consumer is started through the setsid launcher, marked `mark`;
/// with `slow`, long enough to be stopped midway.
fn launcher_plan(dir: &Path, mark: &str, slow: bool) -> std::path::PathBuf {
    plan_copy("kafka-no-fault.yaml", dir, |t| {
        let t = mark_consumer(&t, mark, true);
        if slow {
            t.replace(
                "--session-timeout-ms,",
                "--work-ms, \"200\", --session-timeout-ms,",
            )
            .replace("messages: 100", "messages: 500")
        } else {
            t
        }
    })
}

/// Runs a plan whose consumer leaves the session to its end (with `env` set for the harness);
/// checks that it worked, that nothing of it is left, and returns the containment method the
/// run recorded.
fn run_with_a_consumer_in_another_session(tag: &str, env: &[(&str, &str)]) -> ContainmentMethod {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let mark = format!("{tag}-{}", std::process::id());
    let plan = launcher_plan(dir.path(), &mark, false);
    let out = dir.path().join("run");
    let output = Command::new(exactly_bin())
        .args([
            "run",
            plan.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .unwrap();
    let left = marked(&mark);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let why = explain(&output, &report);
    assert!(
        left.is_empty(),
        "processes {left:?} outlived the run\n{why}"
    );
    assert_eq!(
        output.status.code(),
        Some(3),
        "no fault: inconclusive\n{why}"
    );
    assert_eq!(
        report["counts"]["exact"], 100,
        "the consumer behind the launcher worked\n{why}"
    );
    let events = read_events(&out.join("events.jsonl")).unwrap();
    events
        .iter()
        .find_map(|e| match &e.event {
            Event::Containment { method, .. } => Some(*method),
            _ => None,
        })
        .expect("the run says how it contained the consumer")
}

#[test]
fn a_consumer_that_leaves_the_session_ends_with_the_run() {
    let method = run_with_a_consumer_in_another_session("session", &[]);
    // This machine's cgroup v2 is writable when the run folder says cgroup; either is fine.
    eprintln!("contained by {method:?}");
}

#[test]
fn without_cgroups_the_subreaper_walk_still_ends_a_consumer_that_left_the_session() {
    let method = run_with_a_consumer_in_another_session("walk", &[("EXACTLY_CGROUPS", "off")]);
    assert_eq!(method, ContainmentMethod::Subreaper);
}

#[test]
fn sigkill_to_the_harness_takes_a_consumer_that_left_the_session_with_it() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let mark = format!("sigkill-{}", std::process::id());
    let plan = launcher_plan(dir.path(), &mark, true);
    let mut harness = Command::new(exactly_bin())
        .args([
            "run",
            plan.to_str().unwrap(),
            "--out",
            dir.path().join("run").to_str().unwrap(),
        ])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let launcher = wait_for_consumer(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while marked(&mark).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let consumer = marked(&mark)
        .into_iter()
        .find(|p| *p != launcher)
        .expect("the consumer started behind the launcher");
    // Found between the launcher's fork and `setsid`, it is still in the launcher's group for
    // a moment: wait (bounded) until it has left.
    let left_group = || {
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(consumer as i32)))
            .is_ok_and(|g| g.as_raw() as u32 != launcher)
    };
    while !left_group() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        left_group(),
        "the consumer left the launcher's process group"
    );
    harness.kill().unwrap();
    let _ = harness.wait();
    let left = marked_after(&mark, Duration::from_secs(10));
    assert!(left.is_empty(), "{left:?} outlived a SIGKILLed harness");
}

#[test]
fn an_amqp_consumer_that_left_the_session_holding_messages_leaves_them_pending_not_lost() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let mark = format!("amqp-held-{}", std::process::id());
    // Slow enough that the deadline ends the run while it holds a prefetch of unacked messages.
    let plan = plan_copy("amqp-no-fault.yaml", dir.path(), |t| {
        mark_consumer(&t, &mark, true)
            .replace("ack-after-effect]", "ack-after-effect, --work-ms, \"100\"]")
            .replace("deadline: 60s", "deadline: 6s")
    });
    let out = dir.path().join("run");
    let (output, report) = run_plan(&plan, &out, &[]);
    let why = explain(&output, &report);
    assert!(
        marked(&mark).is_empty(),
        "the consumer outlived the run\n{why}"
    );
    assert_eq!(report["counts"]["lost"], 0, "held is not gone\n{why}");
    assert!(
        report["counts"]["pending"].as_u64().unwrap() > 0,
        "the deadline left work\n{why}"
    );
    assert_eq!(output.status.code(), Some(3), "{why}");
    let events = read_events(&out.join("events.jsonl")).unwrap();
    assert!(
        events.iter().any(|e| matches!(
            &e.event,
            Event::QueueRemainder { complete: true, ids } if !ids.is_empty()
        )),
        "the drain finished and found what the consumer held\n{why}"
    );
}
