//! Mechanisms named only from their events, on the real brokers: each test runs a consumer
//! written for it (tests/consumers/) that misbehaves the way real ones do, and asserts the
//! verdict, the exit code and the mechanism the report names for every anomaly.
//!
//! - a Kafka filter bug (commits past every 10th message without its effect) after a kill:
//!   `skipped`, not a crash, and the kill is not blamed (the harness's own SIGTERM after the
//!   run ended is not a crash either);
//! - a Kafka consumer that starts at the end of the topic: `never_delivered`;
//! - a RabbitMQ consumer that rejects with requeue after its effect and applies the
//!   redelivery again: `redelivered_same_process`, not `revoked_uncommitted`;
//! - a RabbitMQ consumer that nacks some messages without requeue: `dropped_by_consumer`.

mod common;

use std::process::Output;

use common::*;
use exactly::timeline::{read_events, Event, ProcessPhase, Stamped};
use serde_json::Value;

/// One finished run: the output, report.json, the events, and an account for messages.
struct Ran {
    out: Output,
    report: Value,
    events: Vec<Stamped>,
    why: String,
    /// Keeps the run folder until the test ends.
    _dir: tempfile::TempDir,
}

impl Ran {
    /// The mechanism of every anomaly of `outcome`, in report order.
    fn mechanisms_of(&self, outcome: &str) -> Vec<String> {
        self.report["anomalies"]
            .as_array()
            .expect("report.json lists anomalies")
            .iter()
            .filter(|a| a["outcome"] == outcome)
            .map(|a| a["mechanism"].as_str().unwrap_or("none").to_owned())
            .collect()
    }

    /// (mechanism, fault) of every group report.json names.
    fn groups(&self) -> Vec<(String, Option<u64>)> {
        self.report["mechanisms"]
            .as_array()
            .expect("report.json lists mechanisms")
            .iter()
            .map(|g| {
                (
                    g["mechanism"].as_str().unwrap().to_owned(),
                    g["fault"].as_u64(),
                )
            })
            .collect()
    }

    /// Every evidence line of the groups of `mechanism`.
    fn evidence_of(&self, mechanism: &str) -> Vec<String> {
        self.report["mechanisms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["mechanism"] == mechanism)
            .flat_map(|g| g["samples"].as_array().unwrap().iter())
            .flat_map(|s| s["evidence"].as_array().unwrap().iter())
            .map(|e| e["what"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The report.md text.
    fn markdown(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("run/report.md")).unwrap()
    }
}

/// Runs the plan `yaml` (`{examples}` and `{root}` filled in).
fn run(yaml: &str) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let text = yaml
        .replace("{examples}", &examples_dir().display().to_string())
        .replace("{root}", &root().display().to_string());
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, text).unwrap();
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap_or_default();
    Ran {
        out,
        report,
        events,
        why,
        _dir: dir,
    }
}

/// The Kafka plan of `kafka_misbehaving --mode MODE`, with `faults`.
fn kafka_plan(mode: &str, partitions: u32, messages: u32, faults: &str) -> String {
    let workload = format!("  messages: {messages}");
    kafka_misbehaving_plan("mechanism", mode, partitions, &workload, faults)
}

/// The AMQP plan of `amqp_settle.py --mode MODE`, no fault.
fn amqp_plan(mode: &str, messages: u32) -> String {
    format!(
        r#"name: mechanism-{mode}
broker:
  kind: amqp
  url: amqp://guest:guest@127.0.0.1:5672/%2f
  queue: orders-{{run}}
  prefetch: 10
workload:
  messages: {messages}
  payload: '{{"order_id":"{{id}}","amount":42}}'
consumer:
  command: [python3, "{{root}}/tests/consumers/amqp_settle.py", --mode, {mode}]
effects:
  sink: http
  id: json:/order_id
faults: []
expect: at-least-once
limits: {{ settle: 2s, deadline: 60s }}
seed: 7
"#
    )
}

#[test]
fn a_filter_bug_whose_commits_never_crossed_the_proxy_is_not_a_proven_loss() {
    require_kafka();
    require_example("kafka_misbehaving");
    // The same filter bug as below, but the consumer talks to the broker directly: the group's
    // offsets pass the skipped messages, yet no commit of them was seen, so the committing
    // connection is unknown and the loss is not proven (issue 13).
    let faults = "\n  - kill: consumer\n    when: { after: effect, nth: 3 }";
    let plan = kafka_plan("skip-every-10th", 1, 50, faults).replace(
        "  restart: { after: 300ms }",
        "  restart: { after: 300ms }\n  via_proxy: false",
    );
    let ran = run(&plan);
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "INCONCLUSIVE", "{why}");
    assert_eq!(ran.out.status.code(), Some(3), "{why}");
    assert_eq!(ran.report["counts"]["lost"], 0, "{why}");
    assert_eq!(ran.report["counts"]["committer_unknown"], 5, "{why}");
    let reasons: Vec<&str> = ran.report["inconclusive_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert!(reasons.contains(&"committer_unknown"), "{reasons:?} {why}");
}

#[test]
fn a_filter_bug_after_a_kill_is_skipped_and_blames_neither_the_kill_nor_the_harness_stop() {
    require_kafka();
    require_example("kafka_misbehaving");
    let faults = "\n  - kill: consumer\n    when: { after: effect, nth: 3 }";
    let ran = run(&kafka_plan("skip-every-10th", 1, 50, faults));
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "LOST", "{why}");
    assert_eq!(
        ran.out.status.code(),
        Some(1),
        "at-least-once violated: {why}"
    );
    assert_eq!(ran.report["faults_fired"], serde_json::json!([0]), "{why}");
    // <run>-10, -20, -30, -40 and -50 were committed past without their effect.
    assert_eq!(ran.report["counts"]["lost"], 5, "{why}");
    let lost = ran.mechanisms_of("lost");
    assert!(lost.iter().all(|m| m == "skipped"), "{lost:?}\n{why}");
    assert_eq!(
        ran.groups(),
        vec![("skipped".to_owned(), None)],
        "one group, no fault blamed: {why}"
    );
    // The consumer died of the harness's SIGTERM after run_ended: not a crash.
    let ended = ran
        .events
        .iter()
        .position(|e| matches!(e.event, Event::RunEnded { .. }))
        .expect("the run ended");
    let stopped_after = ran.events[ended..].iter().any(|e| {
        matches!(
            &e.event,
            Event::Process { phase: ProcessPhase::Exited, status: Some(s), .. }
                if s == "signal SIGTERM"
        )
    });
    assert!(stopped_after, "the harness stopped it after the run: {why}");
    let evidence = ran.evidence_of("skipped");
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("the harness stopped it")),
        "{evidence:?}"
    );
    assert!(
        ran.markdown().contains("Mechanism `skipped`"),
        "{}",
        ran.markdown()
    );
}

#[test]
fn a_consumer_that_starts_at_the_end_of_the_topic_loses_messages_it_never_received() {
    require_kafka();
    require_example("kafka_misbehaving");
    // Produced while the consumer starts: what came before it joined is committed past and
    // never fetched; what came after is applied, so the oracle is seen to work (a run with no
    // effect at all is inconclusive, never LOST).
    // The consumer starts 2 s into a 6 s workload.
    let plan = kafka_plan("start-at-end", 3, 60, "[]")
        .replace("  messages: 60\n", "  messages: 60\n  rate: 10/s\n  during: true\n")
        .replace(
            r#"command: ["{examples}/kafka_misbehaving", --mode, start-at-end]"#,
            r#"command: [sh, -c, "sleep 2; exec {examples}/kafka_misbehaving --mode start-at-end"]"#,
        );
    let ran = run(&plan);
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "LOST", "{why}");
    assert_eq!(
        ran.out.status.code(),
        Some(1),
        "at-least-once violated: {why}"
    );
    let lost = ran.report["counts"]["lost"].as_u64().unwrap_or(0);
    assert!(lost > 0 && lost < 60, "some lost, some applied: {why}");
    let lost = ran.mechanisms_of("lost");
    assert!(
        lost.iter().all(|m| m == "never_delivered"),
        "{lost:?}\n{why}"
    );
    let evidence = ran.evidence_of("never_delivered");
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("no Fetch response through the proxy carried")),
        "{evidence:?}"
    );
    assert!(
        ran.markdown().contains("Mechanism `never_delivered`"),
        "{}",
        ran.markdown()
    );
}

#[test]
fn a_reject_with_requeue_after_the_effect_is_a_same_process_redelivery_not_a_revocation() {
    require_rabbitmq();
    let ran = run(&amqp_plan("requeue-once", 30));
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(ran.out.status.code(), Some(0), "at-least-once met: {why}");
    assert_eq!(ran.report["counts"]["duplicated"], 30, "{why}");
    let duplicated = ran.mechanisms_of("duplicated");
    assert!(
        duplicated.iter().all(|m| m == "redelivered_same_process"),
        "{duplicated:?}\n{why}"
    );
    let evidence = ran.evidence_of("redelivered_same_process");
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("rejected it with requeue")),
        "{evidence:?}"
    );
    assert!(
        evidence.iter().any(|e| e.contains("marked redelivered")),
        "{evidence:?}"
    );
}

#[test]
fn a_nack_without_requeue_is_a_loss_dropped_by_the_consumer() {
    require_rabbitmq();
    let ran = run(&amqp_plan("nack-every-10th", 30));
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "LOST", "{why}");
    assert_eq!(
        ran.out.status.code(),
        Some(1),
        "at-least-once violated: {why}"
    );
    // <run>-10, -20 and -30 were nacked without requeue.
    assert_eq!(ran.report["counts"]["lost"], 3, "{why}");
    let lost = ran.mechanisms_of("lost");
    assert!(
        lost.iter().all(|m| m == "dropped_by_consumer"),
        "{lost:?}\n{why}"
    );
    let evidence = ran.evidence_of("dropped_by_consumer");
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("nacked it without requeue")),
        "{evidence:?}"
    );
}
