//! Failures around a run that are the harness's, not the consumer's: they exit 4
//! (infrastructure) and say what failed. Most need no broker (the embedded mock cluster, or no
//! run at all); the output topic's needs the real Kafka.

mod common;

use std::time::{Duration, Instant};

use common::{exactly, explain, plan_copy, require_kafka, run_plan};

#[test]
fn a_timeline_file_that_cannot_be_written_ends_the_run_with_exit_4_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("demo.yaml", dir.path(), |t| t);
    let out = dir.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    std::os::unix::fs::symlink("/dev/full", out.join("events.jsonl")).unwrap();
    let started = Instant::now();
    let (output, report) = run_plan(&plan, &out, &[]);
    let why = explain(&output, &report);
    assert_eq!(output.status.code(), Some(4), "{why}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot write"), "{why}");
    assert!(stderr.contains("events.jsonl"), "{why}");
    // A timeline with a hole is not judged, and the reports say so.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["judged"], false, "{why}");
    assert!(json["verdict"].is_null(), "no verdict: {why}");
    assert_eq!(json["expectation_state"], "unknown", "{why}");
    assert!(
        json["evidence_incomplete"]
            .as_str()
            .is_some_and(|s| s.contains("events.jsonl")),
        "{why}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("NOT JUDGED") && md.contains("evidence is incomplete"),
        "{md}"
    );
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains("evidence_incomplete"), "{junit}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the run ends when the write fails, not at its 90 s deadline: {why}"
    );
}

#[test]
fn reports_that_cannot_be_written_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("events.jsonl"), "").unwrap();
    // A folder where report.json goes: the write fails whoever runs the test (root included).
    std::fs::create_dir(dir.path().join("report.json")).unwrap();
    let output = exactly(&["report", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("cannot write reports in"), "{stderr}");
}

#[test]
fn an_output_topic_that_exists_already_exits_4_with_the_fix() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("orders-out-fixed-{}", std::process::id());
    let plan = plan_copy("kafka-produce-then-commit.yaml", dir.path(), |t| {
        let t = t
            .replace("topic: orders-out-{run}", &format!("topic: {topic}"))
            .replace("messages: 100", "messages: 5");
        // no faults: the first run only has to create the topic
        let (head, tail) = t.split_once("faults:").unwrap();
        let tail = tail.split_once("limits:").unwrap().1;
        format!("{head}limits:{tail}")
    });
    // A run without faults proves nothing (exit 3), but it created the topic.
    let (first, report) = run_plan(&plan, &dir.path().join("first"), &[]);
    assert_eq!(first.status.code(), Some(3), "{}", explain(&first, &report));
    let (second, report) = run_plan(&plan, &dir.path().join("second"), &[]);
    let why = explain(&second, &report);
    assert_eq!(second.status.code(), Some(4), "{why}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&topic) && stderr.contains("exists already (put {run} in"),
        "{why}"
    );
}
