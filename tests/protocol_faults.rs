//! Kafka protocol faults through the proxy (issue 18), on the real broker: an OffsetCommit
//! answered with an error (dropped: never stored; ambiguous: stored, the consumer told it
//! failed), a Fetch answered OFFSET_OUT_OF_RANGE. Each test runs a shipped plan and asserts
//! its verdict, exit code, what the proxy recorded it answered, and the mechanism.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::*;
use exactly::timeline::{read_events, CommitPhase, Event, Stamped};
use serde_json::Value;

/// A finished run of a shipped plan.
struct Ran {
    out: Output,
    report: Value,
    events: Vec<Stamped>,
    why: String,
    _tmp: tempfile::TempDir,
    _dir: PathBuf,
}

/// Runs the shipped plan `name` (edited by `edit`) on the real Kafka.
fn run(name: &str, edit: impl Fn(String) -> String) -> Ran {
    require_kafka();
    let tmp = tempfile::tempdir().unwrap();
    let plan = plan_copy(name, tmp.path(), edit);
    let dir = tmp.path().join("run");
    let (out, report) = run_plan(&plan, &dir, &[]);
    let why = explain(&out, &report);
    let events = read_events(&dir.join("events.jsonl")).unwrap_or_default();
    Ran {
        out,
        report,
        events,
        why,
        _tmp: tmp,
        _dir: dir,
    }
}

/// The proxy's `replied` events: (api, sent, broker).
fn replies(events: &[Stamped]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter_map(|st| match &st.event {
            Event::Replied {
                api, sent, broker, ..
            } => Some((api.clone(), sent.clone(), broker.clone())),
            _ => None,
        })
        .collect()
}

/// How many commit events of `phase` the proxy recorded.
fn commits(events: &[Stamped], phase: CommitPhase) -> usize {
    events
        .iter()
        .filter(|st| matches!(&st.event, Event::Commit { phase: p, .. } if *p == phase))
        .count()
}

/// The mechanisms report.json names, in its order.
fn mechanisms(report: &Value) -> Vec<String> {
    report["mechanisms"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|g| g["mechanism"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts the run's verdict and exit code.
fn verdict(r: &Ran, verdict: &str, exit: i32) {
    let why = &r.why;
    assert_eq!(r.report["verdict"], verdict, "{why}");
    assert_eq!(r.out.status.code(), Some(exit), "{why}");
}

#[test]
fn a_dropped_last_commit_is_never_stored_and_the_report_says_a_restart_would_redo_it() {
    let r = run("kafka-commit-error.yaml", |t| t);
    verdict(&r, "EXACT", 3);
    let why = &r.why;
    let replies = replies(&r.events);
    assert_eq!(replies.len(), 1, "{why}");
    assert_eq!(replies[0].0, "OffsetCommit");
    assert_eq!(replies[0].1, "REBALANCE_IN_PROGRESS");
    assert!(replies[0].2.starts_with("never forwarded"), "{why}");
    // The judge reads the truth: the refused commit is `dropped`, never an accepted response.
    assert_eq!(commits(&r.events, CommitPhase::Dropped), 1, "{why}");
    assert_eq!(r.report["counts"]["not_counted_done"], 1, "{why}");
    assert_eq!(r.report["expectation_state"], "unknown", "{why}");
}

#[test]
fn a_consumer_that_retries_the_refused_commit_gets_it_stored() {
    let r = run("kafka-commit-error.yaml", |t| {
        t.replace("ignore-commit-errors", "commit-retry")
    });
    verdict(&r, "EXACT", 0);
    let why = &r.why;
    assert_eq!(replies(&r.events).len(), 1, "{why}");
    assert_eq!(commits(&r.events, CommitPhase::Dropped), 1, "{why}");
    assert_eq!(r.report["counts"]["not_counted_done"], 0, "{why}");
}

#[test]
fn an_ambiguous_commit_is_stored_although_the_consumer_was_told_it_failed() {
    let r = run("kafka-ambiguous-commit.yaml", |t| t);
    verdict(&r, "EXACT", 0);
    let why = &r.why;
    let replies = replies(&r.events);
    assert_eq!(replies.len(), 1, "{why}");
    assert_eq!(replies[0].1, "REBALANCE_IN_PROGRESS");
    assert!(
        replies[0].2.starts_with("forwarded: the broker stored"),
        "{why}"
    );
    assert_eq!(commits(&r.events, CommitPhase::Dropped), 0, "{why}");
    assert_eq!(r.report["counts"]["not_counted_done"], 0, "{why}");
}

#[test]
fn an_out_of_range_fetch_with_reset_latest_loses_what_it_skipped_as_offset_reset_skipped() {
    let r = run("kafka-offset-reset-latest.yaml", |t| t);
    verdict(&r, "LOST", 1);
    let why = &r.why;
    assert!(r.report["counts"]["lost"].as_u64().unwrap() > 0, "{why}");
    assert_eq!(mechanisms(&r.report), ["offset_reset_skipped"], "{why}");
    let replies = replies(&r.events);
    assert_eq!(replies.len(), 1, "{why}");
    assert_eq!(
        (replies[0].0.as_str(), replies[0].1.as_str()),
        ("Fetch", "OFFSET_OUT_OF_RANGE")
    );
}

#[test]
fn a_batch_fetched_twice_is_applied_twice_by_a_plain_consumer() {
    let r = run("kafka-fetch-redelivery.yaml", |t| t);
    verdict(&r, "DUPLICATED", 0);
    let why = &r.why;
    assert_eq!(r.report["counts"]["lost"], 0, "{why}");
    assert_eq!(mechanisms(&r.report), ["fetched_twice"], "{why}");
    assert_eq!(replies(&r.events).len(), 1, "{why}");
}

#[test]
fn a_batch_fetched_twice_stays_exact_for_an_idempotent_consumer() {
    let r = run("kafka-fetch-redelivery.yaml", |t| {
        t.replace("commit-after-effect", "idempotent").replace(
            "  id: json:/order_id\n",
            "  id: json:/order_id\n  idempotency_key: header:Idempotency-Key\n",
        )
    });
    verdict(&r, "EXACT", 0);
    let why = &r.why;
    assert!(
        r.report["counts"]["effects_replayed"].as_u64().unwrap() >= 1,
        "{why}"
    );
}

/// A fenced member's run: never LOST; a duplicate, if any, is the finished work whose commit
/// the fence refused, redone once the partition came back (`revoked_uncommitted`).
fn never_lost_after_a_fence(r: &Ran) {
    let why = &r.why;
    assert_eq!(r.out.status.code(), Some(0), "{why}");
    assert_eq!(r.report["counts"]["lost"], 0, "{why}");
    let v = r.report["verdict"].as_str().unwrap_or_default();
    assert!(v == "EXACT" || v == "DUPLICATED", "{why}");
    for m in mechanisms(&r.report) {
        assert_eq!(m, "revoked_uncommitted", "{why}");
    }
}

#[test]
fn a_fenced_heartbeat_makes_the_member_rejoin_and_loses_nothing() {
    let r = run("kafka-fenced-heartbeat.yaml", |t| t);
    never_lost_after_a_fence(&r);
    let why = &r.why;
    let replies = replies(&r.events);
    assert_eq!(replies.len(), 1, "{why}");
    assert_eq!(
        (replies[0].0.as_str(), replies[0].1.as_str()),
        ("Heartbeat", "UNKNOWN_MEMBER_ID")
    );
    // The client rejoined under a new member id after the fence.
    let fenced_at = r
        .events
        .iter()
        .find(|st| matches!(st.event, Event::Replied { .. }))
        .map(|st| st.seq)
        .unwrap();
    let rejoined = r.events.iter().any(|st| {
        st.seq > fenced_at
            && matches!(
                &st.event,
                Event::Rebalance { change, .. }
                    if *change == exactly::timeline::RebalanceKind::Assign
            )
    });
    assert!(rejoined, "{why}");
}

#[test]
fn a_fetch_answered_not_leader_is_fetched_again_from_the_same_position() {
    let r = run("kafka-offset-reset-latest.yaml", |t| {
        t.replace(
            "fetch_error: OFFSET_OUT_OF_RANGE",
            "fetch_error: NOT_LEADER_OR_FOLLOWER",
        )
    });
    // The client refreshes its metadata and asks again from the position it had: nothing
    // skipped, even with auto.offset.reset=latest.
    verdict(&r, "EXACT", 0);
    let why = &r.why;
    let replies = replies(&r.events);
    assert_eq!(replies.len(), 1, "{why}");
    assert_eq!(replies[0].1, "NOT_LEADER_OR_FOLLOWER");
}

#[test]
fn a_kip848_heartbeat_answered_fenced_member_epoch_rejoins_and_loses_nothing() {
    let r = run("kafka-fenced-heartbeat.yaml", |t| {
        t.replace(
            "heartbeat_error: UNKNOWN_MEMBER_ID",
            "heartbeat_error: FENCED_MEMBER_EPOCH",
        )
        .replace(
            "--work-ms, \"2\"]",
            "--work-ms, \"2\", --config, group.protocol=consumer]",
        )
    });
    never_lost_after_a_fence(&r);
    let why = &r.why;
    let replies = replies(&r.events);
    assert_eq!(replies.len(), 1, "{why}");
    assert_eq!(
        (replies[0].0.as_str(), replies[0].1.as_str()),
        ("ConsumerGroupHeartbeat", "FENCED_MEMBER_EPOCH")
    );
}
