//! Faults at the exact AMQP acknowledgement boundaries, through the AMQP-aware proxy, on the
//! real RabbitMQ.

mod common;

use common::*;
use exactly::timeline::{read_events, AckPhase, ClosedBy, Event};

#[test]
fn kill_after_the_fifth_ack_reached_the_broker_loses_what_it_covered() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("amqp-kill-after-ack.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "LOST", "{why}");
    assert_eq!(out.status.code(), Some(1), "{why}");
    // The lost ID is named with the ack that covered it before its effect.
    assert_losses_name_their_commit(&report, &why);
}

#[test]
fn kill_before_the_fifth_ack_reaches_the_broker_redelivers_and_duplicates() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("amqp-kill-before-ack.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    let dropped: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Ack {
                phase: AckPhase::Dropped,
                ids,
                ..
            } => Some(ids.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        !dropped.is_empty(),
        "the held ack never reached the broker: {why}"
    );
    // The message whose ack was dropped came back marked redelivered.
    assert!(
        events.iter().any(|e| matches!(&e.event,
            Event::Delivered { id, redelivered: true, .. } if dropped.contains(id))),
        "{why}"
    );
}

#[test]
fn idempotent_consumer_under_both_ack_boundaries_is_exact() {
    require_rabbitmq();
    for plan in ["amqp-kill-after-ack.yaml", "amqp-kill-before-ack.yaml"] {
        let dir = tempfile::tempdir().unwrap();
        let p = plan_copy(plan, dir.path(), |t| {
            t.replace("--mode, ack-after-effect", "--mode, idempotent")
                .replace("--mode, ack-before-effect", "--mode, idempotent")
                .replace(
                    "  id: json:/order_id",
                    "  id: json:/order_id\n  idempotency_key: header:Idempotency-Key",
                )
                .replace("expect: at-least-once", "expect: exactly-once")
        });
        let (out, report) = run_plan(&p, &dir.path().join("run"), &[]);
        let why = explain(&out, &report);
        assert_eq!(report["verdict"], "EXACT", "{plan}: {why}");
        assert_eq!(out.status.code(), Some(0), "{plan}: {why}");
    }
}

#[test]
fn partition_longer_than_the_heartbeat_timeout_requeues_and_never_loses() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("amqp-partition.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    // The partition was applied to the consumer's connection.
    let faults = report["faults"].as_array().cloned().unwrap_or_default();
    assert!(
        faults
            .iter()
            .any(|f| f["action"] == "partition" && f["applied"] == true),
        "the partition was not applied: {why}"
    );
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    let verdict = report["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict == "DUPLICATED" || verdict == "EXACT",
        "verdict {verdict}: {why}"
    );
    assert_eq!(out.status.code(), Some(0), "{why}");
    // RabbitMQ closed the silent connection and requeued what it held unacked: after the
    // partition began, deliveries come back marked redelivered.
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    let cut_at = events
        .iter()
        .find_map(|e| match &e.event {
            Event::Fault(f) if f.action == "partition" && f.applied => Some(e.t_us),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no applied partition on the timeline: {why}"));
    assert!(
        events.iter().any(|e| e.t_us > cut_at
            && matches!(
                &e.event,
                Event::Delivered {
                    redelivered: true,
                    ..
                }
            )),
        "no redelivery after the partition: {why}"
    );
    // The close itself is on the timeline: the partitioned connection died (the client's or
    // the broker's heartbeat check gave up first) while it held unacknowledged messages.
    assert!(
        events.iter().any(|e| e.t_us > cut_at
            && matches!(
                &e.event,
                Event::ConnectionClosed {
                    instance: 0,
                    incarnation: 1,
                    by: ClosedBy::Broker | ClosedBy::Consumer,
                    unacked,
                    ..
                } if *unacked > 0
            )),
        "no close with unacked messages after the partition: {why}"
    );
}
