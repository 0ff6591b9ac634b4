//! The supervisor and the sinks against the real Kafka: effects observed through every sink,
//! attributed to the incarnation that made them; terminate and pause applied to whole process
//! groups; several instances side by side.

mod common;

use std::path::Path;

use common::*;
use exactly::timeline::{read_events, Event, ProcessPhase, SinkKind};

/// A Kafka plan for the example consumer with `args`, the given effects block and faults.
fn plan(
    dir: &Path,
    name: &str,
    args: &str,
    instances: u32,
    effects: &str,
    faults: &str,
) -> std::path::PathBuf {
    let consumer = examples_dir().join("kafka_consumer");
    let text = format!(
        "name: {name}
broker: {{ kind: kafka, bootstrap: 127.0.0.1:9092, topic: 'orders-{{run}}', partitions: 3, group: 'g-{{run}}' }}
workload: {{ messages: 150, payload: '{{\"order_id\":\"{{id}}\"}}' }}
consumer:
  command: [{consumer}, --session-timeout-ms, \"2000\", {args}]
  instances: {instances}
  restart: {{ after: 300ms }}
effects: {effects}
{faults}
expect: at-least-once
limits: {{ settle: 1s, deadline: 60s }}
",
        consumer = consumer.display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn file_sink_sees_every_effect_with_its_incarnation() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "file-sink",
        "--sink, file",
        1,
        "{ sink: file, id: json:/order_id }",
        "",
    );
    let (out, report) = run_plan(&p, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["counts"]["effected"], 150, "{why}");
    assert_eq!(report["counts"]["phantom"], 0, "{why}");
    assert!(
        dir.path().join("run/effects/consumer-0-1.log").exists(),
        "{why}"
    );
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::Effect {
            instance: Some(0),
            incarnation: Some(1),
            sink: SinkKind::File,
            ..
        }
    )));
    // No fault was planned, so the run proves nothing about crashes.
    assert_eq!(report["verdict"], "INCONCLUSIVE", "{why}");
}

#[test]
fn stdout_sink_reads_effects_from_the_consumers_output() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "stdout-sink",
        "--sink, stdout",
        1,
        r#"{ sink: stdout, id: 'regex:^effect .*"order_id":"([^"]+)"' }"#,
        "",
    );
    let (out, report) = run_plan(&p, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["counts"]["effected"], 150, "{why}");
    assert_eq!(report["counts"]["phantom"], 0, "{why}");
    let log = std::fs::read_to_string(dir.path().join("run/logs/consumer-0-1.stdout")).unwrap();
    assert!(
        log.lines().filter(|l| l.starts_with("effect ")).count() >= 150,
        "stdout is kept too"
    );
}

#[test]
fn terminate_stops_one_instance_gracefully_and_the_supervisor_restarts_it() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "terminate",
        "--mode, commit-after-effect, --work-ms, \"20\"",
        2,
        "{ sink: http, id: json:/order_id }",
        "faults:\n  - terminate: consumer[1]\n    grace: 3s\n    when: { at: 1500ms }",
    );
    let (out, report) = run_plan(&p, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    let exited_cleanly = events.iter().any(|e| matches!(
        &e.event,
        Event::Process { instance: 1, incarnation: 1, phase: ProcessPhase::Exited, status: Some(s), .. } if s == "exit 0"
    ));
    assert!(
        exited_cleanly,
        "SIGTERM let consumer[1] stop on its own: {why}"
    );
    let restarted = events.iter().any(|e| {
        matches!(
            e.event,
            Event::Process {
                instance: 1,
                incarnation: 2,
                phase: ProcessPhase::Started,
                ..
            }
        )
    });
    assert!(restarted, "{why}");
    let untouched = !events.iter().any(|e| {
        matches!(
            e.event,
            Event::Process {
                instance: 0,
                incarnation: 2,
                ..
            }
        )
    });
    assert!(untouched, "the fault targeted consumer[1] only: {why}");
}

#[test]
fn pause_stops_the_consumer_for_a_while_then_it_resumes() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "pause",
        "--mode, commit-after-effect, --work-ms, \"15\"",
        1,
        "{ sink: http, id: json:/order_id }",
        "faults:\n  - pause: consumer\n    for: 1s\n    when: { at: 1s }",
    );
    let (out, report) = run_plan(&p, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();
    let fired_at = events
        .iter()
        .find_map(|e| match &e.event {
            Event::Fault(f) if f.applied && f.action == "pause" => Some(f.fired_at_us),
            _ => None,
        })
        .expect("the pause was applied");
    let effects_at: Vec<u64> = events
        .iter()
        .filter(|e| {
            matches!(
                e.event,
                Event::Effect {
                    incarnation: Some(1),
                    ..
                }
            )
        })
        .map(|e| e.t_us)
        .collect();
    // Nothing while stopped; the same incarnation goes on afterwards.
    assert!(
        !effects_at
            .iter()
            .any(|t| *t > fired_at + 50_000 && *t < fired_at + 950_000),
        "{why}"
    );
    assert!(
        effects_at.iter().any(|t| *t > fired_at + 1_000_000),
        "{why}"
    );
    assert_eq!(report["counts"]["lost"], 0, "{why}");
}
