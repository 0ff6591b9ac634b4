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
