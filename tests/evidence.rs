//! Evidence read honestly where it lands (issue 12), on the real brokers: a torn stdout line of
//! a consumer killed mid-write is never an effect.

mod common;

use common::*;
use exactly::timeline::{read_events, Event, Stamped};

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
            } if sink == "stdout" => Some(sample.clone()),
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
