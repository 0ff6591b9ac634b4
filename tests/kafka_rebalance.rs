//! Forced rebalances, zombies and scaling on the real broker, with the mechanism the report
//! names for each duplicate: `rebalance: group` (a transient member of the harness's own),
//! `pause` beyond the session timeout, `scale: +1` / `scale: -1`.

mod common;

use common::*;
use exactly::timeline::{read_events, CommitPhase, Event, MemberChange, ProcessPhase};

/// Runs a shipped plan with `edit` applied; returns the output, report and run folder.
fn run(
    plan: &str,
    edit: impl Fn(String) -> String,
) -> (std::process::Output, serde_json::Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let p = plan_copy(plan, dir.path(), edit);
    let (out, report) = run_plan(&p, &dir.path().join("run"), &[]);
    (out, report, dir)
}

/// (mechanism, fault, count) of every group the report names.
fn mechanisms(report: &serde_json::Value) -> Vec<(String, Option<u64>, u64)> {
    report["mechanisms"]
        .as_array()
        .expect("report.json lists mechanisms")
        .iter()
        .map(|g| {
            (
                g["mechanism"].as_str().unwrap().to_owned(),
                g["fault"].as_u64(),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// (holds that ended with the member leaving, non-empty assignments it got). Holds may
/// overlap and KIP-848 may hand a member its share in several steps, so the two are counted
/// apart.
fn member_holds(dir: &tempfile::TempDir) -> (usize, usize) {
    let (mut left, mut assigned) = (0, 0);
    for e in read_events(&dir.path().join("run/events.jsonl")).unwrap() {
        match &e.event {
            Event::GroupMember {
                change: MemberChange::Assigned,
                partitions: Some(p),
                ..
            } if !p.is_empty() => assigned += 1,
            Event::GroupMember {
                change: MemberChange::Left,
                ..
            } => left += 1,
            _ => {}
        }
    }
    (left, assigned)
}

/// Three holds, each of which got partitions.
fn three_holds_with_partitions(dir: &tempfile::TempDir) -> bool {
    let (left, assigned) = member_holds(dir);
    left == 3 && assigned >= 3
}

#[test]
fn forced_rebalances_make_a_periodic_committer_repeat_work_named_revoked_uncommitted() {
    require_kafka();
    let (out, report, dir) = run("kafka-rebalance.yaml", |t| t);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    let groups = mechanisms(&report);
    assert!(
        groups
            .iter()
            .any(|(m, fault, n)| m == "revoked_uncommitted" && *fault == Some(0) && *n > 0),
        "the rebalance fault's duplicates are named: {groups:?}\n{why}"
    );
    assert!(
        three_holds_with_partitions(&dir),
        "{:?} {why}",
        member_holds(&dir)
    );
    let md = std::fs::read_to_string(dir.path().join("run/report.md")).unwrap();
    assert!(md.contains("## Root cause"), "{md}");
    assert!(md.contains("commit on revoke"), "{md}");
}

#[test]
fn committing_on_revoke_removes_the_duplicates_the_same_rebalances_caused() {
    require_kafka();
    let (out, report, dir) = run("kafka-rebalance-commit-on-revoke.yaml", |t| t);
    let why = explain(&out, &report);
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    let groups = mechanisms(&report);
    assert!(
        groups.iter().all(|(m, _, _)| m != "revoked_uncommitted"),
        "{groups:?}\n{why}"
    );
    assert!(
        three_holds_with_partitions(&dir),
        "the rebalances happened: {why}"
    );
}

#[test]
fn the_transient_member_forces_rebalances_of_a_kip_848_group() {
    require_kafka();
    let kip848 = |t: String| {
        t.replace(
            "--session-timeout-ms, \"6000\"]",
            "--config, group.protocol=consumer]",
        )
    };
    let (out, report, dir) = run("kafka-rebalance.yaml", kip848);
    let why = explain(&out, &report);
    assert!(
        three_holds_with_partitions(&dir),
        "{:?} {why}",
        member_holds(&dir)
    );
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    assert_eq!(report["verdict"], "DUPLICATED", "{why}");
    let groups = mechanisms(&report);
    assert!(
        groups.iter().any(|(m, _, _)| m == "revoked_uncommitted"),
        "{groups:?}\n{why}"
    );
    // The member spoke the group's protocol: the proxy saw KIP-848 joins (epoch 0), no
    // classic JoinGroup.
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    assert!(
        !events.iter().any(|e| matches!(
            &e.event,
            Event::Rebalance {
                protocols: Some(_),
                ..
            }
        )),
        "{why}"
    );
}

#[test]
fn a_member_paused_past_its_session_timeout_is_a_zombie_whose_late_commit_is_refused() {
    require_kafka();
    let (out, report, dir) = run("kafka-zombie.yaml", |t| t);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    let groups = mechanisms(&report);
    assert!(
        groups
            .iter()
            .any(|(m, fault, _)| m == "zombie" && *fault == Some(0)),
        "{groups:?}\n{why}"
    );
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    let refused = events.iter().any(|e| {
        matches!(
            &e.event,
            Event::Commit {
                instance: 0,
                phase: CommitPhase::Response,
                error: Some(_),
                ..
            }
        )
    });
    assert!(refused, "the zombie's late commit fails: {why}");
}

#[test]
fn scaling_up_then_down_loses_nothing_for_an_at_least_once_consumer() {
    require_kafka();
    let (out, report, dir) = run("kafka-scale.yaml", |t| t);
    let why = explain(&out, &report);
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    assert_eq!(report["counts"]["pending"], 0, "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    let lifecycle: Vec<(u32, u32, ProcessPhase)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Process {
                instance,
                incarnation,
                phase,
                ..
            } => Some((*instance, *incarnation, *phase)),
            _ => None,
        })
        .collect();
    // consumer[1] was started by `scale: +1`, stopped by `scale: -1`, and never restarted.
    let second: Vec<_> = lifecycle.iter().filter(|(i, _, _)| *i == 1).collect();
    assert_eq!(
        second,
        vec![
            &(1, 1, ProcessPhase::Started),
            &(1, 1, ProcessPhase::Exited)
        ],
        "{why}"
    );
    // The effects came from both instances.
    let writers: std::collections::HashSet<u32> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Effect { instance, .. } => *instance,
            _ => None,
        })
        .collect();
    assert_eq!(writers.len(), 2, "{why}");
}
