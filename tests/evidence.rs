//! Evidence read honestly where it lands (issue 12), on the real brokers: a torn stdout line of
//! a consumer killed mid-write is never an effect; a plan whose effect ID rule reads none of the
//! first effects stops at once with exit 2 and the rule that would have read them; a consumer
//! that crash-loops ends the run at once with exit 4 and what it said on stderr.

mod common;

use std::time::{Duration, Instant};

use common::*;
use exactly::timeline::{read_events, Event, SinkKind, Stamped};

fn events(dir: &std::path::Path) -> Vec<Stamped> {
    read_events(&dir.join("events.jsonl")).expect("events.jsonl")
}

/// A plan's text with its `consumer.command` line replaced by `command` (more lines may follow).
fn with_command(text: &str, command: &str) -> String {
    let start = text.find("  command:").expect("a consumer command");
    let end = start + text[start..].find('\n').expect("a line");
    format!("{}  command: {command}{}", &text[..start], &text[end..])
}

#[test]
fn a_stdout_line_torn_by_a_sigkill_is_counted_as_torn_and_never_as_an_effect() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let script = root().join("tests/consumers/torn_stdout.py");
    let plan = plan_copy("amqp-no-fault.yaml", dir.path(), |t| {
        let command = format!(
            "[python3, {}]\n  restart: {{ after: 200ms }}",
            script.display()
        );
        with_command(&t, &command)
            .replace("messages: 100", "messages: 20")
            .replace(
                "sink: http\n  id: json:/order_id",
                "sink: stdout\n  id: 'regex:^effect (\\S+)$'",
            )
            .replace("deadline: 60s", "deadline: 30s")
    });
    let out = dir.path().join("run");
    let (output, report) = run_plan(&plan, &out, &[]);
    let why = explain(&output, &report);
    let events = events(&out);
    let run = events
        .iter()
        .find_map(|e| match &e.event {
            Event::RunStarted(info) => Some(info.run.clone()),
            _ => None,
        })
        .expect("run_started");
    let cut = format!("effect {run}-1");
    let torn: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::TornLine {
                instance: 0,
                incarnation: 1,
                sink,
                sample,
                ..
            } if *sink == SinkKind::Stdout => Some(sample.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(torn, [cut], "{why}");
    let effects_of_1 = events
        .iter()
        .filter(|e| matches!(&e.event, Event::Effect { id, .. } if *id == format!("{run}-1")))
        .count();
    assert_eq!(effects_of_1, 1, "the cut line is no second effect: {why}");
    assert_eq!(report["counts"]["torn_lines"], 1, "{why}");
    assert_eq!(report["counts"]["duplicated"], 0, "{why}");
    assert_eq!(report["counts"]["phantom"], 0, "{why}");
    assert_eq!(report["counts"]["effected"], 20, "{why}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| torn lines (never effects) | 1 |"), "{md}");
}

#[test]
fn a_wrong_effect_id_rule_stops_the_run_with_exit_2_and_suggests_the_rule_that_reads() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("kafka-commit-after-effect.yaml", dir.path(), |t| {
        t.replace("id: json:/order_id", "id: json:/orderid")
    });
    let out = dir.path().join("run");
    let started = Instant::now();
    let (output, report) = run_plan(&plan, &out, &[]);
    let took = started.elapsed();
    let why = explain(&output, &report);
    assert_eq!(output.status.code(), Some(2), "{why}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("effects.id"), "{why}");
    assert!(stderr.contains("`json:/orderid`"), "{why}");
    assert!(stderr.contains(r#""order_id":""#), "a sample body: {why}");
    assert!(stderr.contains("did you mean `json:/order_id`?"), "{why}");
    assert!(
        took < Duration::from_secs(45),
        "stopped early, not at the 90 s deadline ({took:?}): {why}"
    );
    assert_eq!(report["end_reason"], "plan error", "{why}");
    let rejected = report["counts"]["rejected"].as_u64().unwrap_or(0);
    assert!(rejected >= 20, "{why}");
    let again = exactly(&["report", out.to_str().unwrap()]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "judged again, the run folder says the same"
    );
}

#[test]
fn a_consumer_that_crash_loops_ends_the_run_with_exit_4_and_its_stderr_tail() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("kafka-no-fault.yaml", dir.path(), |t| {
        with_command(&t, "[sh, -c, 'echo starting; echo boom >&2; exit 3']")
    });
    let out = dir.path().join("run");
    let started = Instant::now();
    let (output, report) = run_plan(&plan, &out, &[]);
    let took = started.elapsed();
    let why = explain(&output, &report);
    assert_eq!(output.status.code(), Some(4), "{why}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("crash-loops"), "{why}");
    assert!(stderr.contains("boom"), "{why}");
    assert!(
        took < Duration::from_secs(30),
        "ended at once, not at the 60 s deadline ({took:?}): {why}"
    );
    let tails: Vec<_> = events(&out)
        .into_iter()
        .filter_map(|e| match e.event {
            Event::StderrTail { tail, .. } => Some(tail),
            _ => None,
        })
        .collect();
    assert!(tails.len() >= 3, "{why}");
    assert!(tails.iter().all(|t| t == "boom"), "{tails:?}");
}
