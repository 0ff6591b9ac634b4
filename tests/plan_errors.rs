//! A user's mistakes get clear messages naming the file, line and column (every problem of a
//! plan at once, in file order), and exit 2 (plan) or 4 (environment) — never a panic or a
//! hang.

mod common;

use common::*;

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("plan.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = "name: t
broker: { kind: kafka, bootstrap: 127.0.0.1:9092 }
workload: { messages: 10 }
consumer: { command: [./consumer] }
effects: { sink: http, id: json:/order_id }
faults:
  - kill: consumer
    when: { after: effect, nth: 3 }
expect: at-least-once
";

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_good_plan_validates() {
    let dir = tempfile::tempdir().unwrap();
    let out = exactly(&["validate", write(dir.path(), GOOD).to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

#[test]
fn unknown_field_is_named_with_its_position_and_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(
        dir.path(),
        &GOOD.replace("{ messages: 10 }", "{ messages: 10, payloda: x }"),
    );
    let out = exactly(&["validate", plan.to_str().unwrap()]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("plan.yaml:3:"), "file:line:col in {err}");
    assert!(err.contains("did you mean `payload`"), "{err}");
}

#[test]
fn bad_duration_is_named_with_its_position_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(dir.path(), &format!("{GOOD}limits: {{ settle: soon }}\n"));
    let out = exactly(&["validate", plan.to_str().unwrap()]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("plan.yaml:10:"), "{err}");
    assert!(err.contains("500ms"), "{err}");
}

#[test]
fn impossible_values_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, line) in [
        ("messages: 10", "messages: 0", 3),
        ("nth: 3", "nth: 0", 8),
        (
            "command: [./consumer] }",
            "command: [./consumer], instances: 0 }",
            4,
        ),
    ] {
        let plan = write(dir.path(), &GOOD.replace(from, to));
        let out = exactly(&["validate", plan.to_str().unwrap()]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{to}: {err}");
        assert!(err.contains(&format!("plan.yaml:{line}:")), "{to}: {err}");
        assert!(err.contains("at least 1"), "{to}: {err}");
    }
}

#[test]
fn a_rule_across_fields_is_located_too() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(
        dir.path(),
        &GOOD.replace("{ after: effect, nth: 3 }", "{ after: effect }"),
    );
    let out = exactly(&["validate", plan.to_str().unwrap()]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("plan.yaml:8:"), "{err}");
    assert!(err.contains("nth"), "{err}");
}

/// GOOD with three mistakes on lines 2, 5 and 8: an AMQP field on a Kafka broker, an ID rule
/// that is no rule, and a fault action with a parameter it does not take.
fn three_mistakes() -> String {
    GOOD.replace(
        "bootstrap: 127.0.0.1:9092 }",
        "bootstrap: 127.0.0.1:9092, prefetch: 10 }",
    )
    .replace("id: json:/order_id", "id: xml:/order_id")
    .replace("    when: {", "    grace: 2s\n    when: {")
}

#[test]
fn validate_reports_every_problem_at_once_each_located_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(dir.path(), &three_mistakes());
    let out = exactly(&["validate", plan.to_str().unwrap()]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let located: Vec<usize> = ["plan.yaml:2:", "plan.yaml:5:", "plan.yaml:8:"]
        .iter()
        .map(|at| err.find(at).unwrap_or_else(|| panic!("{at} in {err}")))
        .collect();
    assert!(located.is_sorted(), "in file order: {err}");
    assert!(err.contains("`prefetch` is for amqp brokers"), "{err}");
    assert!(err.contains("json:/field"), "{err}");
    assert!(err.contains("`grace` goes with `terminate`"), "{err}");
    assert!(err.contains("plan.yaml: 3 problems"), "{err}");
}

#[test]
fn run_refuses_a_plan_with_the_same_list_as_validate() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(dir.path(), &three_mistakes());
    let validated = stderr_of(&exactly(&["validate", plan.to_str().unwrap()]));
    let run_dir = dir.path().join("run");
    let out = exactly(&[
        "run",
        plan.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert_eq!(stderr_of(&out), validated);
    assert!(!run_dir.exists(), "nothing was started");
}

#[test]
fn missing_plan_file_is_a_usage_error() {
    let out = exactly(&["validate", "/nonexistent/plan.yaml"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/plan.yaml"), "{err}");
}

#[test]
fn schema_is_json_schema_of_the_plan() {
    let out = exactly(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema["properties"]["faults"].is_object(), "{schema}");
}

#[test]
fn unreachable_broker_is_an_infrastructure_error_within_the_connect_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(
        dir.path(),
        &GOOD.replace(
            "bootstrap: 127.0.0.1:9092 }",
            "bootstrap: 127.0.0.1:1, connect_timeout: 2s }",
        ),
    );
    let started = std::time::Instant::now();
    let out = exactly(&[
        "run",
        plan.to_str().unwrap(),
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:1"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn missing_consumer_command_is_an_infrastructure_error() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = write(
        dir.path(),
        &GOOD.replace("./consumer", "/nonexistent/consumer"),
    );
    let out = exactly(&[
        "run",
        plan.to_str().unwrap(),
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("/nonexistent/consumer"), "{err}");
    // What was recorded is still judged and reported.
    let report = std::fs::read_to_string(dir.path().join("run/report.json")).unwrap();
    assert!(report.contains("infrastructure_error"), "{report}");
}
