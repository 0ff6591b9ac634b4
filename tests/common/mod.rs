//! Shared helpers for the integration tests: run the `exactly` binary on a shipped plan against
//! the real Kafka on 127.0.0.1:9092, and read what it wrote.
#![allow(dead_code)]

pub mod processes;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The repository root (plans/ and examples are found from here).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `exactly` binary under test.
pub fn exactly_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_exactly"))
}

/// The folder holding the example consumers built with this test profile.
pub fn examples_dir() -> PathBuf {
    exactly_bin()
        .parent()
        .expect("binary has a folder")
        .join("examples")
}

/// Requires the test consumer `name` among the built examples.
pub fn require_example(name: &str) {
    let bin = examples_dir().join(name);
    assert!(
        Path::new(&bin).exists(),
        "{} is missing: build the examples first (cargo build --examples)",
        bin.display()
    );
}

/// The Kafka plan `{prefix}-{mode}` of `kafka_misbehaving --mode MODE` on the real Kafka: its
/// `workload` lines (indented under `workload:`), `partitions`, and `faults`.
pub fn kafka_misbehaving_plan(
    prefix: &str,
    mode: &str,
    partitions: u32,
    workload: &str,
    faults: &str,
) -> String {
    format!(
        r#"name: {prefix}-{mode}
broker:
  kind: kafka
  bootstrap: 127.0.0.1:9092
  topic: orders-{{run}}
  partitions: {partitions}
  group: billing-{{run}}
workload:
{workload}
  payload: '{{"order_id":"{{id}}","amount":42}}'
consumer:
  command: ["{{examples}}/kafka_misbehaving", --mode, {mode}]
  restart: {{ after: 300ms }}
effects:
  sink: http
  id: json:/order_id
  idempotency_key: header:Idempotency-Key
faults: {faults}
expect: at-least-once
limits: {{ settle: 2s, deadline: 60s }}
seed: 7
"#
    )
}

/// Fails the test with the fix when the real broker is not running.
pub fn require_kafka() {
    let addr: SocketAddr = "127.0.0.1:9092".parse().unwrap();
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!("Kafka is not reachable on 127.0.0.1:9092: start it with `scripts/brokers start`");
    }
}

/// Fails the test with the fix when RabbitMQ is not running.
pub fn require_rabbitmq() {
    let addr: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!(
            "RabbitMQ is not reachable on 127.0.0.1:5672: start it with `scripts/brokers start`"
        );
    }
}

/// A shipped plan, with its example-consumer paths pointed at this test profile's build, and
/// `edit` applied to its text; written into `dir`.
pub fn plan_copy(name: &str, dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(root().join("plans").join(name)).expect("plan exists");
    let text = text.replace(
        "target/release/examples/",
        &format!("{}/", examples_dir().display()),
    );
    let path = dir.join(name);
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// Runs `exactly` with `args` from the repository root.
pub fn exactly(args: &[&str]) -> Output {
    Command::new(exactly_bin())
        .args(args)
        .current_dir(root())
        .output()
        .expect("exactly runs")
}

/// `exactly run PLAN --out DIR [extra]`; returns the output and the parsed report.json.
pub fn run_plan(plan: &Path, out: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let mut args = vec![
        "run",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let output = exactly(&args);
    let report = std::fs::read_to_string(out.join("report.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    (output, report)
}

/// Asserts the run lost messages and names every lost ID with the commit or ack the broker
/// accepted before its effect (report.json `committed_before_effect`).
pub fn assert_losses_name_their_commit(report: &serde_json::Value, why: &str) {
    let lost: Vec<_> = report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == "lost")
        .collect();
    assert!(!lost.is_empty(), "{why}");
    assert!(
        lost.iter()
            .all(|a| a["committed_before_effect"].is_object()),
        "{why}"
    );
}

/// A readable account of a run, for assertion messages.
pub fn explain(output: &Output, report: &serde_json::Value) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}\nverdict: {} counts: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        report["verdict"],
        report["counts"]
    )
}

/// The 3-node Kafka cluster of `scripts/brokers start kafka-cluster` (nodes 1..3).
pub const KAFKA_CLUSTER_PORTS: [u16; 3] = [19092, 19093, 19094];

/// Fails the test with the fix when the 3-node Kafka cluster is not running (every node must
/// accept connections).
pub fn require_kafka_cluster() {
    for port in KAFKA_CLUSTER_PORTS {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
            panic!(
                "the 3-node Kafka cluster is not reachable on 127.0.0.1:{port}: start it with \
                 `scripts/brokers start kafka-cluster`"
            );
        }
    }
}

/// Every process in `pid`'s tree (itself first), from the parent ids in `/proc/*/stat`.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                // Fields after the command's closing parenthesis: state, ppid, ...
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|s| s.parse::<u32>().ok());
                if ppid == Some(parent) && !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        i += 1;
    }
    out
}

/// The example Kafka consumer (`examples/kafka_consumer.rs`, commit-after-effect, effects on
/// stdout) as instance 0, incarnation 1 of `group`, with `extra` arguments; its stderr is
/// piped for the test's failure messages.
pub fn example_kafka_consumer(
    bootstrap: &str,
    topic: &str,
    group: &str,
    extra: &[&str],
) -> std::process::Child {
    let bin = examples_dir().join("kafka_consumer");
    assert!(
        bin.exists(),
        "{} is missing: build the examples first (cargo build --release --examples)",
        bin.display()
    );
    Command::new(bin)
        .args(["--mode", "commit-after-effect", "--sink", "stdout"])
        .args(extra)
        .env("EXACTLY_KAFKA_BOOTSTRAP", bootstrap)
        .env("EXACTLY_TOPIC", topic)
        .env("EXACTLY_GROUP", group)
        .env("EXACTLY_INSTANCE", "0")
        .env("EXACTLY_INCARNATION", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the example consumer")
}

/// The kill-before-commit outcome: DUPLICATED, nothing lost, exit 0, and the held commit was
/// dropped (the broker never saw it).
pub fn assert_duplicated_by_a_dropped_commit(
    out: &Output,
    report: &serde_json::Value,
    events: &[exactly::timeline::Stamped],
    why: &str,
) {
    use exactly::timeline::{CommitPhase, Event};
    assert_eq!(report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert!(
        events.iter().any(|e| matches!(
            e.event,
            Event::Commit {
                phase: CommitPhase::Dropped,
                ..
            }
        )),
        "the held commit never reached the broker: {why}"
    );
}
