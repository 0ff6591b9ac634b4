//! Containment on real processes: a child that leaves the session is still found, signalled
//! and ended; the cgroup folder is found from what `/proc` says.

use super::*;

use std::os::unix::process::CommandExt;

/// A process whose `/proc/PID/cmdline` holds `arg`, alive (not a zombie).
fn alive_with_arg(arg: &str) -> Vec<u32> {
    procfs::pids(proc_root())
        .into_iter()
        .filter(|pid| {
            std::fs::read(proc_root().join(pid.to_string()).join("cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .filter(|pid| procfs::stat_fields(proc_root(), *pid).is_some_and(|st| !st.exited()))
        .collect()
}

/// `sh -c 'setsid sleep SECONDS & wait'` as a contained incarnation (with its cgroup when
/// `cgroup`), the way a launcher starts a daemonized consumer; returns it with its cell.
fn launcher(seconds: &str, cgroup: bool) -> (tokio::process::Child, Arc<Cell>) {
    launch(&format!("setsid sleep {seconds} & wait"), cgroup)
}

/// `sh -c SCRIPT` as a contained incarnation (with its cgroup when `cgroup`).
fn launch(script: &str, cgroup: bool) -> (tokio::process::Child, Arc<Cell>) {
    let mut prepared = prepare(0, 1);
    if !cgroup {
        if let Some((dir, _)) = prepared.cgroup.take() {
            std::fs::remove_dir(dir).unwrap();
        }
    }
    let fd = prepared.cgroup_fd();
    let (var, value) = prepared.mark();
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", script]).env(var, value).process_group(0);
    // SAFETY: the closure only writes to a descriptor (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            join_in_child(fd);
            Ok(())
        });
    }
    let child = tokio::process::Command::from(cmd).spawn().unwrap();
    let (cell, problem) = prepared.register(child.id().unwrap());
    assert!(problem.is_none(), "{problem:?}");
    (child, cell)
}

/// Waits (bounded) until the launcher's daemon runs `sleep` (`setsid` has exec'd); its pid.
async fn daemon_of(tag: &str) -> u32 {
    let running = || {
        let found = alive_with_arg(tag);
        (found.len() == 1
            && procfs::command_name(proc_root(), found[0]).as_deref() == Some("sleep"))
        .then(|| found[0])
    };
    assert!(eventually(|| running().is_some()).await, "the daemon runs");
    running().unwrap()
}

/// Waits (bounded) until `f` holds.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn a_daemon_in_another_session_is_ended_with_its_incarnation(cgroup: bool, tag: &str) {
    let (mut child, cell) = launcher(tag, cgroup);
    let daemon = daemon_of(tag).await;
    assert_ne!(
        procfs::stat_fields(proc_root(), daemon).unwrap().pgrp,
        cell.leader,
        "the daemon left the launcher's process group"
    );
    // A process-group kill, as the harness did before, misses it.
    killpg(Pid::from_raw(cell.leader as i32), Signal::SIGKILL).unwrap();
    child.wait().await.unwrap();
    assert_eq!(alive_with_arg(tag), [daemon], "the group kill missed it");
    let swept = end(&cell, Duration::from_millis(500)).await;
    assert!(alive_with_arg(tag).is_empty(), "ended with its incarnation");
    assert_eq!(swept.ended, [(daemon, "sleep".to_owned())]);
    assert!(swept.survived.is_empty());
    assert!(
        procfs::stat_fields(proc_root(), daemon).is_none(),
        "reaped, not left a zombie of the harness"
    );
    assert!(!lock(&CELLS).contains_key(&cell.leader), "forgotten");
}

#[tokio::test]
async fn a_daemon_in_another_session_is_ended_by_the_proc_walk() {
    a_daemon_in_another_session_is_ended_with_its_incarnation(false, "301.25").await;
}

#[tokio::test]
async fn a_daemon_in_another_session_is_ended_by_its_cgroup_when_there_is_one() {
    // Where cgroups are unavailable this is the walk again; the harness says which it used.
    a_daemon_in_another_session_is_ended_with_its_incarnation(true, "302.25").await;
}

#[tokio::test]
async fn a_signal_to_an_incarnation_reaches_the_member_outside_its_group() {
    a_signal_reaches_the_member_outside_the_group(false, "303.25").await;
}

#[tokio::test]
async fn a_signal_reaches_the_member_outside_the_group_through_the_cgroup_when_there_is_one() {
    a_signal_reaches_the_member_outside_the_group(true, "303.5").await;
}

async fn a_signal_reaches_the_member_outside_the_group(cgroup: bool, tag: &str) {
    let (mut child, cell) = launcher(tag, cgroup);
    let daemon = daemon_of(tag).await;
    let swept = paused_then_killed_with_its_incarnation(&mut child, &cell, daemon).await;
    assert!(alive_with_arg(tag).is_empty());
    // Killed by the signal itself, or found dying by the sweep: either way not left behind.
    assert!(swept.survived.is_empty());
    assert!(
        eventually(|| procfs::stat_fields(proc_root(), daemon).is_none()).await,
        "the orphan the signal killed is reaped, not left a zombie of the harness"
    );
}

#[tokio::test]
async fn a_signal_reaches_an_orphan_of_the_incarnation_through_the_harness_family() {
    // The subshell that started the daemon exits at once: the daemon, in its own session,
    // re-parents to the harness (the subreaper), outside the leader's tree; no cgroup.
    let tag = "304.25";
    let (mut child, cell) = launch(&format!("(setsid sleep {tag} &); exec sleep {tag}"), false);
    let daemon = eventually_daemon(tag, cell.leader).await;
    let family = family_snapshot().expect("the harness is the subreaper here");
    assert_eq!(
        family[&daemon].ppid,
        std::process::id(),
        "an orphan of the harness"
    );
    let swept = paused_then_killed_with_its_incarnation(&mut child, &cell, daemon).await;
    assert!(swept.survived.is_empty());
    assert!(eventually(|| alive_with_arg(tag).is_empty()).await);
}

/// SIGSTOPs the incarnation of `cell` and checks `member` is paused with it, then SIGKILLs it
/// and ends it; what the sweep found.
async fn paused_then_killed_with_its_incarnation(
    child: &mut tokio::process::Child,
    cell: &Cell,
    member: u32,
) -> Swept {
    assert!(signal(cell.leader, Signal::SIGSTOP));
    assert!(
        eventually(|| procfs::stat_fields(proc_root(), member).is_some_and(|s| s.state == 'T'))
            .await,
        "{member} is paused with its incarnation"
    );
    assert!(signal(cell.leader, Signal::SIGKILL));
    child.wait().await.unwrap();
    end(cell, Duration::from_millis(200)).await
}

/// The one process running `sleep tag` that is not the leader, once it has re-parented.
async fn eventually_daemon(tag: &str, leader: u32) -> u32 {
    let me = std::process::id();
    let found = || {
        alive_with_arg(tag).into_iter().find(|p| {
            *p != leader && procfs::stat_fields(proc_root(), *p).is_some_and(|s| s.ppid == me)
        })
    };
    assert!(eventually(|| found().is_some()).await, "the daemon runs");
    found().unwrap()
}

#[test]
fn the_cgroup_folder_comes_from_the_v2_mount_and_the_process_path() {
    let unified = "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
    let v1 = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    assert_eq!(
        own_cgroup_dir(
            "4:memory:/x\n0::/user.slice/a.scope\n",
            &format!("{v1}{unified}")
        ),
        Some(PathBuf::from("/sys/fs/cgroup/unified/user.slice/a.scope"))
    );
    assert_eq!(
        own_cgroup_dir("0::/\n", unified),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    // A mount showing a sub-folder (a container's cgroup namespace seen from outside).
    let sub = "40 25 0:30 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        own_cgroup_dir("0::/kubepods/pod1\n", sub),
        Some(PathBuf::from("/sys/fs/cgroup/pod1"))
    );
    assert_eq!(own_cgroup_dir("0::/a\n", v1), None, "no cgroup2 mount");
    assert_eq!(own_cgroup_dir("4:memory:/x\n", unified), None, "v1 only");
}

#[test]
fn a_survivor_is_named_on_the_timeline_with_a_warning() {
    let swept = Swept {
        ended: vec![(10, "sh".into())],
        survived: vec![(11, "kafka_consumer".into())],
    };
    let events = swept.events(1, 2);
    assert!(matches!(
        events[0],
        Event::Descendant {
            instance: 1,
            incarnation: 2,
            pid: 10,
            fate: DescendantFate::Ended,
            ..
        }
    ));
    assert!(matches!(
        events[1],
        Event::Descendant {
            pid: 11,
            fate: DescendantFate::Survived,
            ..
        }
    ));
    let Event::Warning { message } = &events[2] else {
        panic!("{events:?}")
    };
    assert!(
        message.contains("process 11 (`kafka_consumer`) could not be ended"),
        "{message}"
    );
}

#[test]
fn the_harness_says_how_it_contains() {
    let Event::Containment { method, detail } = describe() else {
        panic!("a containment event")
    };
    assert!(detail.contains("child subreaper"), "{detail}");
    match method {
        ContainmentMethod::Cgroup => assert!(detail.contains("exactly-"), "{detail}"),
        ContainmentMethod::Subreaper => assert!(detail.contains("no cgroup ("), "{detail}"),
    }
}

#[test]
fn the_pids_of_a_cgroup_include_those_of_the_cgroups_under_it() {
    let prepared = prepare(0, 9);
    let Some((dir, _)) = &prepared.cgroup else {
        eprintln!("no cgroups here: {:?}", harness().cgroups);
        return;
    };
    assert!(subfolders(dir).is_empty(), "a fresh cgroup has no folders");
    let sub = dir.join("nested");
    std::fs::create_dir(&sub).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(sub.join("cgroup.procs"), child.id().to_string()).unwrap();
    assert_eq!(subfolders(dir), std::slice::from_ref(&sub));
    assert!(
        cgroup_pids(dir).contains(&child.id()),
        "found one level down"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(remove_cgroup(dir));
}
