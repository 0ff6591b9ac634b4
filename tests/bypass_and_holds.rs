//! Issue 13, classes 2 and 6, on the real Kafka (and RabbitMQ for the bypass): a consumer that bypasses the proxy never gets
//! an EXACT on faults that could not reach it, and a fault that holds an effect's answer
//! without stopping the consumer never makes a duplicate blamed on the consumer.
//!
//! The consumer is the example `kafka_consumer` (commit after effect): with
//! `--config bootstrap.servers=127.0.0.1:9092` its main client connects to the broker address
//! of its own configuration while `--side-client` keeps a second client on the address the
//! contract hands it (so the proxy has a connection to partition); with
//! `--effect-timeout-ms` its HTTP client gives up on an answer sooner than the 30 s default.

mod common;

use common::*;
use exactly::timeline::{read_events, Event, HeldAt};
use serde_json::Value;

/// The consumer command of the shipped plans, as `plan_copy` rewrites it.
const COMMAND_END: &str = "--session-timeout-ms, \"2000\"]";

/// Runs the shipped `plan` with `edit` applied and `args`; returns the output, report.json,
/// the events and the folder (kept for report.md).
fn run(
    plan: &str,
    edit: impl Fn(String) -> String,
    args: &[&str],
) -> (
    std::process::Output,
    Value,
    Vec<exactly::timeline::Stamped>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let p = plan_copy(plan, dir.path(), |t| {
        assert!(t.contains(COMMAND_END), "the plan's command changed: {t}");
        edit(t)
    });
    let (out, report) = run_plan(&p, &dir.path().join("run"), args);
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap_or_default();
    (out, report, events, dir)
}

/// kafka-partition.yaml with the consumer's main client on 127.0.0.1:9092 itself and a side
/// client on the proxy; `extra` goes under `consumer:`.
fn bypassing(extra: &'static str) -> impl Fn(String) -> String {
    move |t: String| {
        let t = t.replace(
            COMMAND_END,
            "--session-timeout-ms, \"2000\", --config, bootstrap.servers=127.0.0.1:9092, --side-client]",
        );
        t.replace(
            "  restart: { after: 300ms }",
            &format!("  restart: {{ after: 300ms }}{extra}"),
        )
    }
}

#[test]
fn a_partition_that_only_reached_the_side_client_of_a_bypassing_consumer_is_not_exact() {
    require_kafka();
    let (out, report, events, dir) = run("kafka-partition.yaml", bypassing(""), &[]);
    let why = explain(&out, &report);
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.event, Event::Bypass { remote, .. } if remote.ends_with(":9092"))),
        "the watch saw the main client's connection to the broker: {why}"
    );
    assert!(
        report["faults"][0]["applied"] == true,
        "the partition fired (on the side client): {why}"
    );
    assert_eq!(report["verdict"], "INCONCLUSIVE", "{why}");
    assert_eq!(out.status.code(), Some(3), "{why}");
    assert_eq!(report["faults_bypassed"][0]["fault"], 0, "{why}");
    let reasons: Vec<&str> = report["inconclusive_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert!(reasons.contains(&"faults_bypassed"), "{reasons:?} {why}");
    assert!(
        report["bypass"].as_array().is_some_and(|b| !b.is_empty()),
        "{why}"
    );
    let md = std::fs::read_to_string(dir.path().join("run/report.md")).unwrap();
    assert!(md.contains("**The consumer bypassed the proxy.**"), "{md}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connected straight to the broker"),
        "the run warned while it ran: {why}"
    );
}

#[test]
fn a_bypass_the_plan_makes_fatal_ends_the_run_with_exit_4_naming_the_connection() {
    require_kafka();
    let (out, report, events, _dir) =
        run("kafka-partition.yaml", bypassing("\n  bypass: fatal"), &[]);
    let why = explain(&out, &report);
    assert_eq!(out.status.code(), Some(4), "{why}");
    assert_eq!(report["end_reason"], "infrastructure error", "{why}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connected straight to the broker") && stderr.contains("-> 127.0.0.1:9092"),
        "the failure names the connection: {why}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, Event::Bypass { .. })),
        "{why}"
    );
}

/// kafka-commit-after-effect.yaml with its two kills replaced by `fault` (YAML list items).
fn with_fault(fault: &'static str, consumer_args: &'static str) -> impl Fn(String) -> String {
    move |t: String| {
        let start = t.find("faults:\n").expect("the plan has faults");
        let end = t.find("expect:").expect("the plan has expect");
        let t = format!("{}faults:\n{fault}\n{}", &t[..start], &t[end..]);
        t.replace(
            COMMAND_END,
            &format!("--session-timeout-ms, \"2000\"{consumer_args}]"),
        )
    }
}

#[test]
fn a_pause_during_an_effect_releases_the_answer_when_it_resumes_and_blames_nothing_on_it() {
    require_kafka();
    let pause = "  - pause: consumer\n    for: 300ms\n    when: { during: effect, nth: 30 }";
    let (out, report, events, _dir) = run(
        "kafka-commit-after-effect.yaml",
        with_fault(pause, ""),
        &["--expect", "exactly-once"],
    );
    let why = explain(&out, &report);
    // The answer went out once the pause ended, and the hold says so.
    let hold = events.iter().find_map(|e| match e.event {
        Event::Held {
            at: HeldAt::Effect,
            held_us,
            released,
            ..
        } => Some((held_us, released)),
        _ => None,
    });
    let (held_us, released) = hold.unwrap_or_else(|| panic!("no effect hold recorded: {why}"));
    assert!(released, "{why}");
    assert!(
        (290_000..5_000_000).contains(&held_us),
        "held for about the pause ({held_us} µs): {why}"
    );
    assert_eq!(
        report["counts"]["duplicated"], 0,
        "no duplicate against the consumer: {why}"
    );
    assert_ne!(out.status.code(), Some(1), "{why}");
    match report["verdict"].as_str() {
        Some("EXACT") => assert_eq!(out.status.code(), Some(0), "{why}"),
        _ => {
            assert!(
                report["counts"]["harness_duplicated"].as_u64() > Some(0),
                "{why}"
            );
            assert_eq!(out.status.code(), Some(3), "{why}");
        }
    }
}

#[test]
fn a_client_that_times_out_during_a_held_answer_makes_a_duplicate_marked_as_the_harness_s() {
    require_kafka();
    // The partition leaves the consumer running; its client gives up on the held answer after
    // 300 ms and posts the effect again while the harness still holds the first answer.
    let partition =
        "  - partition: consumer\n    for: 1500ms\n    when: { during: effect, nth: 30 }";
    let (out, report, _events, dir) = run(
        "kafka-commit-after-effect.yaml",
        with_fault(partition, ", --effect-timeout-ms, \"300\""),
        &["--expect", "exactly-once"],
    );
    let why = explain(&out, &report);
    assert!(
        report["counts"]["harness_duplicated"].as_u64() >= Some(1),
        "the retry is the harness's: {why}"
    );
    assert_eq!(report["counts"]["duplicated"], 0, "{why}");
    assert_eq!(report["verdict"], "INCONCLUSIVE", "{why}");
    assert_eq!(
        out.status.code(),
        Some(3),
        "never a violation of exactly-once: {why}"
    );
    let marked = report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["outcome"] == "duplicated" && a["harness_hold"] == true);
    assert!(marked, "{why}");
    let md = std::fs::read_to_string(dir.path().join("run/report.md")).unwrap();
    assert!(md.contains("caused by the harness's hold"), "{md}");
}

#[test]
fn an_amqp_consumer_connected_to_rabbitmq_itself_is_caught_and_a_fatal_bypass_ends_the_run() {
    require_rabbitmq();
    // The plan's own environment overrides the contract's URL: the consumer never meets the
    // proxy.
    let (out, report, events, _dir) = run_amqp(
        "amqp-partition.yaml",
        "  restart: { after: 300ms }\n  env: { EXACTLY_AMQP_URL: \"amqp://guest:guest@127.0.0.1:5672/%2f\" }\n  bypass: fatal",
    );
    let why = explain(&out, &report);
    assert_eq!(out.status.code(), Some(4), "{why}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("-> 127.0.0.1:5672"),
        "the failure names the connection: {why}"
    );
    assert!(
        events.iter().any(
            |e| matches!(&e.event, Event::Bypass { remote, .. } if remote == "127.0.0.1:5672")
        ),
        "{why}"
    );
}

/// Runs the shipped AMQP `plan` with its `restart:` line replaced by `consumer_tail`.
fn run_amqp(
    plan: &str,
    consumer_tail: &'static str,
) -> (
    std::process::Output,
    Value,
    Vec<exactly::timeline::Stamped>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let p = plan_copy(plan, dir.path(), |t| {
        assert!(t.contains("  restart: { after: 300ms }\n"), "{t}");
        t.replace("  restart: { after: 300ms }", consumer_tail)
    });
    let (out, report) = run_plan(&p, &dir.path().join("run"), &[]);
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap_or_default();
    (out, report, events, dir)
}
