//! Faults at the exact protocol boundaries, through the Kafka-aware proxy, on the real broker:
//! the verdicts that were a matter of luck with timed kills become deterministic.

mod common;

use common::*;
use exactly::timeline::{read_events, Event, HeldAt, RebalanceKind};

/// Runs a shipped plan, with `edit` applied, three times; returns the reports.
fn runs(
    plan: &str,
    times: usize,
    edit: impl Fn(String) -> String,
) -> Vec<(std::process::Output, serde_json::Value, tempfile::TempDir)> {
    (0..times)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let p = plan_copy(plan, dir.path(), &edit);
            let (out, report) = run_plan(&p, &dir.path().join("run"), &[]);
            (out, report, dir)
        })
        .collect()
}

#[test]
fn kill_after_the_third_accepted_commit_loses_what_it_covered_every_time() {
    require_kafka();
    for (out, report, dir) in runs("kafka-kill-after-commit.yaml", 2, |t| t) {
        let why = explain(&out, &report);
        assert_eq!(report["verdict"], "LOST", "{why}");
        assert_eq!(out.status.code(), Some(1), "{why}");
        // The lost ID is named with the commit that passed it before its effect.
        assert_losses_name_their_commit(&report, &why);
        let md = std::fs::read_to_string(dir.path().join("run/report.md")).unwrap();
        assert!(md.contains("## Commits and acks ahead of effects"), "{md}");
    }
}

#[test]
fn kill_before_the_third_commit_reaches_the_broker_duplicates_every_time() {
    require_kafka();
    for (out, report, dir) in runs("kafka-kill-before-commit.yaml", 2, |t| t) {
        let why = explain(&out, &report);
        let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
        assert_duplicated_by_a_dropped_commit(&out, &report, &events, &why);
        // How long it was held is on the timeline, and that it was dropped.
        assert!(
            events.iter().any(|e| matches!(
                e.event,
                Event::Held {
                    at: HeldAt::CommitRequest,
                    released: false,
                    ..
                }
            )),
            "the hold is recorded: {why}"
        );
        assert!(report["holds"]["count"].as_u64().unwrap_or(0) >= 3, "{why}");
    }
}

#[test]
fn idempotent_consumer_under_both_commit_boundaries_is_exact() {
    require_kafka();
    let idempotent = |t: String| {
        t.replace("--mode, commit-after-effect", "--mode, idempotent")
            .replace("--mode, commit-before-effect", "--mode, idempotent")
            .replace(
                "  id: json:/order_id",
                "  id: json:/order_id\n  idempotency_key: header:Idempotency-Key",
            )
            .replace("expect: at-least-once", "expect: exactly-once")
    };
    for plan in [
        "kafka-kill-after-commit.yaml",
        "kafka-kill-before-commit.yaml",
    ] {
        for (out, report, _dir) in runs(plan, 1, idempotent) {
            let why = explain(&out, &report);
            assert_eq!(report["verdict"], "EXACT", "{plan}: {why}");
            assert_eq!(out.status.code(), Some(0), "{plan}: {why}");
        }
    }
}

#[test]
fn kill_after_commit_works_with_the_kip_848_group_protocol() {
    require_kafka();
    let kip848 = |t: String| {
        t.replace(
            "--session-timeout-ms, \"2000\"",
            "--config, group.protocol=consumer",
        )
    };
    for (out, report, dir) in runs("kafka-kill-after-commit.yaml", 1, kip848) {
        let why = explain(&out, &report);
        assert_eq!(report["verdict"], "LOST", "{why}");
        let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
        assert!(
            events.iter().any(|e| matches!(
                e.event,
                Event::Rebalance {
                    change: RebalanceKind::Assign,
                    ..
                }
            )),
            "the ConsumerGroupHeartbeat assignment is seen: {why}"
        );
    }
}

#[test]
fn partition_longer_than_the_session_timeout_shows_the_rebalance_and_loses_nothing() {
    require_kafka();
    for (out, report, dir) in runs("kafka-partition.yaml", 1, |t| t) {
        let why = explain(&out, &report);
        assert_eq!(report["counts"]["lost"], 0, "{why}");
        assert_ne!(report["verdict"], "INCONCLUSIVE", "{why}");
        let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
        let healed_at = events
            .iter()
            .find_map(|e| match &e.event {
                Event::Fault(f) if f.applied && f.action == "partition" => {
                    Some(f.fired_at_us + 4_000_000)
                }
                _ => None,
            })
            .expect("the partition was applied");
        // After the partition the member is no longer in the group: an error, then a new assignment.
        let after: Vec<_> = events.iter().filter(|e| e.t_us >= healed_at).collect();
        assert!(
            after.iter().any(|e| matches!(
                &e.event,
                Event::Rebalance {
                    change: RebalanceKind::Error,
                    ..
                } | Event::Commit { error: Some(_), .. }
            )),
            "{why}"
        );
        assert!(
            after.iter().any(|e| matches!(
                e.event,
                Event::Rebalance {
                    change: RebalanceKind::Assign,
                    ..
                }
            )),
            "{why}"
        );
    }
}
