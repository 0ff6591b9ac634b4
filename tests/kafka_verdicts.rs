//! The shipped Kafka plans, run against the real broker: each consumer's semantics show up as
//! the verdict and exit code its plan promises.

mod common;

use common::*;

#[test]
fn commit_before_effect_killed_in_its_work_window_loses_messages() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("kafka-commit-before-effect.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "LOST", "{why}");
    assert!(report["counts"]["lost"].as_u64().unwrap() > 0, "{why}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "at-least-once is violated: {why}"
    );
    // Every lost ID comes with its evidence: the partition and offset the broker acknowledged.
    let lost = report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["outcome"] == "lost");
    assert!(lost.is_some_and(|a| a["offset"].is_i64()), "{why}");
}

#[test]
fn commit_after_effect_killed_during_its_effect_duplicates_but_loses_nothing() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("kafka-commit-after-effect.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "at-least-once allows duplicates: {why}"
    );
    // The duplicated IDs were effected by two incarnations.
    let dup = report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["outcome"] == "duplicated")
        .expect("a duplicated anomaly");
    assert!(dup["effects"].as_array().unwrap().len() >= 2, "{why}");
}

#[test]
fn commit_after_effect_claimed_exactly_once_fails_the_gate() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("kafka-commit-after-effect.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(
        &plan,
        &dir.path().join("run"),
        &["--expect", "exactly-once"],
    );
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(report["expectation_met"], false, "{why}");
    assert_eq!(out.status.code(), Some(1), "{why}");
    let junit = std::fs::read_to_string(dir.path().join("run/junit.xml")).unwrap();
    assert!(
        junit.contains("<failure"),
        "junit marks the violation: {junit}"
    );
}

#[test]
fn idempotent_consumer_under_the_same_kills_is_exact() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("kafka-idempotent.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "EXACT", "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    // The kills really landed, and the redeliveries were replays.
    let fired = report["faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["applied"] == true)
        .count();
    assert_eq!(fired, 2, "{why}");
    assert!(
        report["counts"]["effects_replayed"].as_u64().unwrap() > 0,
        "{why}"
    );
}

#[test]
fn run_without_faults_is_inconclusive() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("kafka-no-fault.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "INCONCLUSIVE", "{why}");
    assert_eq!(out.status.code(), Some(3), "{why}");
}

#[test]
fn demo_plan_runs_on_the_embedded_mock_cluster_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("demo.yaml", dir.path(), |t| t);
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["mock_broker"], true, "{why}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MOCK"),
        "{why}"
    );
    assert_eq!(report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    let md = std::fs::read_to_string(dir.path().join("run/report.md")).unwrap();
    assert!(
        md.to_lowercase().contains("mock"),
        "the report says it ran on a mock"
    );
}

#[test]
fn a_planned_fault_that_never_fires_makes_a_clean_run_inconclusive() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("kafka-no-fault.yaml", dir.path(), |t| {
        t.replace(
            "expect: at-least-once",
            "faults:\n  - kill: consumer\n    when: { after: effect, nth: 100000 }\nexpect: at-least-once",
        )
    });
    let (out, report) = run_plan(&plan, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["verdict"], "INCONCLUSIVE", "{why}");
    assert_eq!(out.status.code(), Some(3), "{why}");
    let reasons = report["inconclusive_reasons"].to_string();
    assert!(
        reasons.contains("never fired"),
        "the report says why: {reasons}"
    );
}
