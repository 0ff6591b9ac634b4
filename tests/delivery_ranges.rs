//! Deliveries recorded as offset ranges, on the real Kafka (127.0.0.1:9092): the same plan run
//! twice, once as a run does by default (the proxy records batches the ledger names as offset
//! ranges) and once with `EXACTLY_DELIVERY_RANGES=off` (the proxy reads every record). The
//! default run must have written ranges, and both must reach the same verdict, counts and
//! mechanisms, with the same IDs delivered: ranges change what the proxy reads, never what the
//! judge concludes.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use common::*;
use exactly::timeline::{read_events, Event, DELIVERY_RANGES_SWITCH};
use serde_json::Value;

/// One finished run of the plan.
struct Ran {
    out: Output,
    report: Value,
    /// `delivered_batch` lines of events.jsonl that carry ranges (as written, before reading).
    range_lines: usize,
    /// Every ID the timeline, read back, says was delivered.
    delivered: BTreeSet<String>,
    /// Every ID a sink saw an effect of.
    effected: BTreeSet<String>,
    _dir: tempfile::TempDir,
}

impl Ran {
    fn why(&self) -> String {
        explain(&self.out, &self.report)
    }

    /// What the judge concluded: verdict, exit code, counts, each anomaly's outcome and
    /// mechanism (sorted), and the mechanism groups.
    fn conclusion(&self) -> Value {
        let mut anomalies: Vec<(String, String)> = self.report["anomalies"]
            .as_array()
            .expect("report.json lists anomalies")
            .iter()
            .map(|a| {
                (
                    a["outcome"].as_str().unwrap_or("").to_owned(),
                    a["mechanism"].as_str().unwrap_or("none").to_owned(),
                )
            })
            .collect();
        anomalies.sort();
        let mut groups: Vec<String> = self.report["mechanisms"]
            .as_array()
            .expect("report.json lists mechanisms")
            .iter()
            .map(|g| format!("{} fault={}", g["mechanism"], g["fault"]))
            .collect();
        groups.sort();
        serde_json::json!({
            "verdict": self.report["verdict"],
            "exit": self.out.status.code(),
            "counts": self.report["counts"],
            "anomalies": anomalies,
            "groups": groups,
        })
    }
}

/// Runs `plan` (`{examples}` filled in) with delivery ranges on or off.
fn run(plan: &str, ranges: bool) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.yaml");
    let text = plan.replace("{examples}", &examples_dir().display().to_string());
    std::fs::write(&path, text).unwrap();
    let run_dir = dir.path().join("run");
    let mut cmd = Command::new(exactly_bin());
    cmd.args([
        "run",
        path.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ])
    .current_dir(root());
    if !ranges {
        cmd.env(DELIVERY_RANGES_SWITCH, "off");
    } else {
        cmd.env_remove(DELIVERY_RANGES_SWITCH);
    }
    let out = cmd.output().expect("exactly runs");
    let report = std::fs::read_to_string(run_dir.join("report.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let events_file = run_dir.join("events.jsonl");
    let raw = std::fs::read_to_string(&events_file).unwrap_or_default();
    let range_lines = raw
        .lines()
        .filter(|l| l.contains(r#""kind":"delivered_batch""#) && l.contains(r#""ranges":[["#))
        .count();
    let events = read_events(&events_file).expect("the timeline reads back, ranges resolved");
    let delivered = events
        .iter()
        .flat_map(|e| match &e.event {
            Event::DeliveredBatch {
                ranges, records, ..
            } => {
                assert!(ranges.is_empty(), "reading resolves every range");
                records.iter().map(|(_, id)| id.to_owned()).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    let effected = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Effect { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    Ran {
        out,
        report,
        range_lines,
        delivered,
        effected,
        _dir: dir,
    }
}

/// The Kafka plan of `kafka_misbehaving --mode MODE`, with `faults` and `workload` lines.
fn plan(mode: &str, partitions: u32, workload: &str, faults: &str) -> String {
    kafka_misbehaving_plan("ranges", mode, partitions, workload, faults)
}

/// Runs `plan` both ways and checks ranges were recorded and changed no conclusion.
fn both_ways(plan: &str) -> (Ran, Ran) {
    let ranged = run(plan, true);
    let walked = run(plan, false);
    let why = format!(
        "with ranges:\n{}\nwalking every record:\n{}",
        ranged.why(),
        walked.why()
    );
    assert!(ranged.range_lines > 0, "a real run records ranges: {why}");
    assert_eq!(walked.range_lines, 0, "the switch turns ranges off: {why}");
    assert_eq!(ranged.conclusion(), walked.conclusion(), "{why}");
    (ranged, walked)
}

#[test]
fn a_run_recording_ranges_concludes_what_a_run_reading_every_record_concludes() {
    require_kafka();
    require_example("kafka_misbehaving");
    // A filter bug (every 10th message committed past without its effect) and a kill: the
    // `skipped` mechanism needs the deliveries (without them it would be `never_delivered`).
    let faults = "\n  - kill: consumer\n    when: { after: effect, nth: 3 }";
    let (ranged, walked) = both_ways(&plan("skip-every-10th", 2, "  messages: 200", faults));
    let why = ranged.why();
    assert_eq!(ranged.report["verdict"], "LOST", "{why}");
    assert_eq!(ranged.report["counts"]["lost"], 20, "{why}");
    assert!(
        ranged.conclusion()["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a[1] == "skipped"),
        "{why}"
    );
    assert_eq!(
        ranged.delivered.len(),
        200,
        "every message delivered: {why}"
    );
    // The same messages (IDs are `{run}-{n}`, and each run has its own run id).
    let numbers = |ids: &BTreeSet<String>| -> BTreeSet<String> {
        ids.iter()
            .filter_map(|id| id.rsplit('-').next().map(str::to_owned))
            .collect()
    };
    assert_eq!(numbers(&ranged.delivered), numbers(&walked.delivered));
}

#[test]
fn a_run_producing_while_consuming_mixes_ranges_and_reads_and_misses_no_delivery() {
    require_kafka();
    require_example("kafka_misbehaving");
    // Produced while the consumer reads: some fetched batches are beyond the acknowledged
    // offsets (read), the rest are ranges. The consumer starts at the end of the topic, so
    // what came before it joined is `never_delivered`: a missing range would show as more.
    let workload = "  messages: 60\n  rate: 10/s\n  during: true";
    let plan = plan("start-at-end", 3, workload, "[]").replace(
        r#"command: ["{examples}/kafka_misbehaving", --mode, start-at-end]"#,
        r#"command: [sh, -c, "sleep 2; exec {examples}/kafka_misbehaving --mode start-at-end"]"#,
    );
    let ranged = run(&plan, true);
    let why = ranged.why();
    assert!(ranged.range_lines > 0, "ranges recorded: {why}");
    assert_eq!(ranged.report["verdict"], "LOST", "{why}");
    let lost = ranged.report["counts"]["lost"].as_u64().unwrap_or(0);
    assert!(lost > 0 && lost < 60, "some lost, some applied: {why}");
    let anomalies = ranged.conclusion()["anomalies"].clone();
    assert!(
        anomalies
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a[1] == "never_delivered"),
        "{anomalies}\n{why}"
    );
    // Every message with an effect was delivered, by range or by read.
    assert!(!ranged.effected.is_empty(), "{why}");
    let undelivered: Vec<_> = ranged.effected.difference(&ranged.delivered).collect();
    assert!(
        undelivered.is_empty(),
        "applied, never delivered: {undelivered:?}\n{why}"
    );
}
