//! The shipped RabbitMQ plans, run against the real broker: the same verdicts as Kafka, over
//! AMQP 0-9-1, through the same supervisor, sinks, triggers and judge.

mod common;

use common::*;
use exactly::timeline::{read_events, Event};

fn anomalies<'a>(report: &'a serde_json::Value, outcome: &str) -> Vec<&'a serde_json::Value> {
    report["anomalies"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["outcome"] == outcome).collect())
        .unwrap_or_default()
}

#[test]
fn auto_ack_consumer_killed_loses_what_it_was_sent() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("amqp-auto-ack.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "LOST", "{why}");
    // The kill came after 40 effects; the broker had pushed far more than that already.
    assert!(report["counts"]["lost"].as_u64().unwrap() > 50, "{why}");
    assert_eq!(out.status.code(), Some(1), "{why}");
}

#[test]
fn ack_before_effect_killed_in_its_work_window_loses_messages() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("amqp-ack-before-effect.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "LOST", "{why}");
    assert_eq!(out.status.code(), Some(1), "{why}");
}

#[test]
fn ack_after_effect_killed_during_its_effect_is_redelivered_and_duplicated() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("amqp-ack-after-effect.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    // The report shows the redelivered copy: the same ID applied by two incarnations.
    let dup = anomalies(&report, "duplicated");
    assert!(!dup.is_empty(), "{why}");
    let incarnations: std::collections::HashSet<_> = dup[0]["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["incarnation"].clone())
        .collect();
    assert!(incarnations.len() >= 2, "{why}");
}

#[test]
fn idempotent_consumer_under_the_same_kills_is_exact() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("amqp-idempotent.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "EXACT", "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert!(
        report["counts"]["effects_replayed"].as_u64().unwrap() > 0,
        "{why}"
    );
}

#[test]
fn amqp_run_without_faults_is_inconclusive() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("amqp-no-fault.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "INCONCLUSIVE", "{why}");
    assert_eq!(report["counts"]["effected"], 100, "{why}");
    assert_eq!(out.status.code(), Some(3), "{why}");
}

#[test]
fn the_surviving_instance_picks_up_the_killed_instances_requeued_messages() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    // Two instances; consumer[0] dies (for good) while its 20th effect is in flight.
    let plan = plan_copy("amqp-ack-after-effect.yaml", dir.path(), |t| {
        t.replace("restart: { after: 300ms }", "instances: 2\n  restart: never").replace(
            "  - kill: consumer\n    when: { during: effect, nth: 30 }\n  - kill: consumer\n    when: { during: effect, nth: 120 }",
            "  - kill: consumer[0]\n    when: { during: effect, nth: 20 }",
        )
    });
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    assert_eq!(
        report["counts"]["pending"], 0,
        "consumer[1] finished the work: {why}"
    );
    assert_eq!(out.status.code(), Some(0), "{why}");
    // The requeued message was applied first by instance 0, then again by instance 1.
    let dup = anomalies(&report, "duplicated");
    let instances: Vec<_> = dup[0]["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["instance"].clone())
        .collect();
    assert_eq!(instances, [0, 1], "{why}");
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    assert!(!events.iter().any(|e| matches!(
        e.event,
        Event::Process {
            instance: 0,
            incarnation: 2,
            ..
        }
    )));
}

#[test]
fn unreachable_rabbitmq_is_an_infrastructure_error_within_the_connect_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("amqp-no-fault.yaml", dir.path(), |t| {
        t.replace(
            "127.0.0.1:5672/%2f",
            "127.0.0.1:1/%2f\n  connect_timeout: 2s",
        )
    });
    let started = std::time::Instant::now();
    let (out, _) = run_plan(&plan, &dir.path().join("run"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("cannot reach RabbitMQ"), "{err}");
    assert!(
        !err.contains("guest:guest"),
        "the password is not printed: {err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
