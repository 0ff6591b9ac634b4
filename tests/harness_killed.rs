//! The harness killed, measured: `exactly run` sent SIGKILL, SIGTERM or SIGINT at a random
//! moment (seeded), many times over, leaves no consumer process and no listener behind, and
//! `exactly report` judges its run folder as interrupted (exit 3), never an error.
//!
//! `HARNESS_KILL_RUNS` runs (default 6, what CI runs), seeded by `HARNESS_KILL_SEED` (default
//! 12); each picks the broker (Kafka or RabbitMQ), whether the consumer is started through the
//! setsid launcher (so it is in another session), the signal, and the moment (0 to 4 s after
//! the run folder appears, while the run still has several seconds to go). The figures are
//! printed at the end (`-- --nocapture`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use common::processes::{
    cgroups_of, contract_ports, listening, mark_consumer, marked, marked_after,
};
use common::*;
use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The latest moment a signal is sent, after the run folder appears.
const WINDOW_MS: u64 = 4000;
/// The brokers' own ports: a consumer's environment may name them, they are not the run's.
const BROKER_PORTS: [u16; 5] = [9092, 5672, 19092, 19093, 19094];

/// One run's draw.
#[derive(Debug, Clone, Copy)]
struct Draw {
    amqp: bool,
    launcher: bool,
    signal: Signal,
    delay: Duration,
}

impl Draw {
    fn new(rng: &mut ChaCha8Rng) -> Draw {
        Draw {
            amqp: rng.random_bool(0.5),
            launcher: rng.random_bool(0.5),
            signal: [Signal::SIGKILL, Signal::SIGTERM, Signal::SIGINT][rng.random_range(0..3)],
            delay: Duration::from_millis(rng.random_range(0..=WINDOW_MS)),
        }
    }
}

/// What one run left and how it was judged.
#[derive(Debug)]
struct Outcome {
    draw: Draw,
    /// `exactly run`'s end: `exit N` or `signal N`.
    run_status: String,
    /// From the signal to the harness's exit.
    took: Duration,
    /// Marked processes still alive 10 s after the harness exited.
    left: Vec<u32>,
    /// The run's loopback ports seen in its consumers' environment (0 when the signal came
    /// before a consumer started: the harness being gone is then the check).
    ports: usize,
    /// Those still listened on.
    listeners: Vec<u16>,
    /// The harness's cgroup folders still there once its guardian is done.
    cgroups: Vec<PathBuf>,
    /// `exactly report`'s exit code.
    report_code: Option<i32>,
    /// The reasons in report.json that say the run was interrupted.
    interrupted: bool,
}

/// A plan of `draw`'s broker, long enough to outlast the window (a slow consumer, no fault).
fn plan(dir: &Path, mark: &str, draw: &Draw) -> PathBuf {
    let (name, slow) = if draw.amqp {
        (
            "amqp-no-fault.yaml",
            ("ack-after-effect]", "ack-after-effect, --work-ms, \"40\"]"),
        )
    } else {
        (
            "kafka-no-fault.yaml",
            (
                "--session-timeout-ms,",
                "--work-ms, \"40\", --session-timeout-ms,",
            ),
        )
    };
    plan_copy(name, dir, |t| {
        mark_consumer(&t, mark, draw.launcher)
            .replace(slow.0, slow.1)
            .replace("messages: 100", "messages: 300")
    })
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown".into(),
    }
}

/// Runs one plan and kills the harness as `draw` says; returns what was left.
fn one_run(dir: &Path, i: usize, draw: Draw) -> Outcome {
    let mark = format!("killed-{}-{i}", std::process::id());
    let plan = plan(dir, &mark, &draw);
    let out = dir.join(format!("run-{i}"));
    let log = std::fs::File::create(dir.join(format!("run-{i}.log"))).unwrap();
    let mut harness = Command::new(exactly_bin())
        .args([
            "run",
            plan.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(root())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let events = out.join("events.jsonl");
    let appeared = Instant::now() + Duration::from_secs(60);
    while !events.exists() && Instant::now() < appeared {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(events.exists(), "run {i}: no run folder within 60 s");
    // Wait out the drawn moment, noting the ports handed to the consumer meanwhile.
    let fire = Instant::now() + draw.delay;
    let mut ports = Vec::new();
    while Instant::now() < fire {
        for pid in marked(&mark) {
            ports.extend(contract_ports(pid));
        }
        std::thread::sleep(
            Duration::from_millis(100).min(fire.saturating_duration_since(Instant::now())),
        );
    }
    assert!(
        harness.try_wait().unwrap().is_none(),
        "run {i}: the run ended before its signal ({draw:?}): make the plan longer"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(harness.id() as i32), draw.signal).unwrap();
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = harness.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "run {i}: the harness did not exit within 60 s of {:?}",
            draw.signal
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    let left = marked_after(&mark, Duration::from_secs(10));
    ports.retain(|p| !BROKER_PORTS.contains(p));
    ports.sort_unstable();
    ports.dedup();
    let listeners = listening(&ports);
    let harness_pid = harness.id();
    let gone = Instant::now() + Duration::from_secs(10);
    while !cgroups_of(harness_pid).is_empty() && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(100));
    }
    let cgroups = cgroups_of(harness_pid);
    let report = exactly(&["report", out.to_str().unwrap()]);
    let json: serde_json::Value = std::fs::read_to_string(out.join("report.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    let interrupted = ["inconclusive_reasons", "caveats"].iter().any(|list| {
        json[list].as_array().is_some_and(|rs| {
            rs.iter()
                .any(|r| r["code"] == "aborted" || r["code"] == "run_not_ended")
        })
    });
    Outcome {
        draw,
        run_status: describe(status),
        took,
        left,
        ports: ports.len(),
        listeners,
        cgroups,
        report_code: report.status.code(),
        interrupted,
    }
}

#[test]
fn the_harness_killed_at_random_moments_leaves_nothing_and_is_judged_interrupted() {
    require_kafka();
    require_rabbitmq();
    let runs: usize = std::env::var("HARNESS_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("HARNESS_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Kept when an assertion fails, for the logs and events; removed at the end otherwise.
    let dir = tempfile::tempdir().unwrap().keep();
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for i in 0..runs {
        let draw = Draw::new(&mut rng);
        let outcome = one_run(&dir, i, draw);
        eprintln!("run {i}: {outcome:?}");
        outcomes.push(outcome);
    }
    let count = |f: &dyn Fn(&Outcome) -> String| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for o in &outcomes {
            *m.entry(f(o)).or_default() += 1;
        }
        m
    };
    let left: usize = outcomes.iter().map(|o| o.left.len()).sum();
    let listeners: usize = outcomes.iter().map(|o| o.listeners.len()).sum();
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    let ports: usize = outcomes.iter().map(|o| o.ports).sum();
    let cgroups: usize = outcomes.iter().map(|o| o.cgroups.len()).sum();
    eprintln!(
        "harness killed {runs} times (seed {seed}) in {:.0?}: signals {:?}; exactly run ended {:?}; \
         exactly report exited {:?}; {left} consumer process(es) left, {listeners} of {ports} port(s) still listened on, {cgroups} cgroup(s) left; \
         slowest exit after the signal {slowest:.1?}",
        started.elapsed(),
        count(&|o| o.draw.signal.as_str().to_owned()),
        count(&|o| o.run_status.clone()),
        count(&|o| format!("{:?}", o.report_code)),
    );
    for (i, o) in outcomes.iter().enumerate() {
        let why = format!("run {i} (folder kept in {}): {o:?}", dir.display());
        assert!(o.left.is_empty(), "consumer processes left: {why}");
        assert!(o.listeners.is_empty(), "listeners left: {why}");
        assert!(o.cgroups.is_empty(), "cgroups left: {why}");
        assert_eq!(o.report_code, Some(3), "judged again: {why}");
        assert!(
            o.interrupted,
            "the report says the run was interrupted: {why}"
        );
        assert_ne!(
            o.run_status, "exit 0",
            "an interrupted run never passes: {why}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
