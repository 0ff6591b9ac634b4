//! A transactional consume-transform-produce pipeline written against Kafka's own Java client
//! (tests/java/TxnPipeline.java, compiled here against the jars `scripts/brokers` fetches)
//! runs through exactly's proxy: the proxy decodes another client's transactional traffic
//! (InitProducerId, TxnOffsetCommit, EndTxn), `after: end_txn` kills it right after a commit,
//! `before: end_txn` kills it while the proxy holds its commit request (between the produce and
//! the commit), and either way the output topic read under read_committed is EXACT.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use exactly::timeline::{read_events, Event, HeldAt, ProcessPhase, Stamped, TxnOp};

/// The Kafka jars `scripts/brokers fetch` put in the checkout's cache.
fn kafka_lib() -> PathBuf {
    let version = std::env::var("KAFKA_VERSION").unwrap_or_else(|_| "4.4.0".into());
    let lib = root().join(".cache/kafka").join(version).join("lib");
    assert!(
        lib.is_dir(),
        "no Kafka jars in {}: run `scripts/brokers fetch`",
        lib.display()
    );
    lib
}

/// Compiles the Java pipeline and runs it through a plan whose one fault is a kill `when`;
/// returns exactly's output, report.json and the timeline.
fn run_java_pipeline(when: &str) -> (std::process::Output, serde_json::Value, Vec<Stamped>) {
    let tmp = tempfile::tempdir().unwrap();
    let classes = tmp.path().join("classes");
    let classpath = format!("{}/*", kafka_lib().display());
    let javac = Command::new("javac")
        .args(["-cp", &classpath, "-d"])
        .arg(&classes)
        .arg(root().join("tests/java/TxnPipeline.java"))
        .output()
        .expect("javac runs (install a JDK)");
    assert!(
        javac.status.success(),
        "{}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let plan = tmp.path().join("plan.yaml");
    let run_classpath = format!("{}:{classpath}", classes.display());
    std::fs::write(
        &plan,
        format!(
            "name: java-eos\n\
             broker: {{ kind: kafka, bootstrap: 127.0.0.1:9092, topic: 'orders-{{run}}', partitions: 3, group: 'billing-{{run}}' }}\n\
             workload: {{ messages: 60, payload: '{{\"order_id\":\"{{id}}\"}}' }}\n\
             consumer:\n  command: [java, -cp, '{run_classpath}', TxnPipeline]\n  restart: {{ after: 300ms }}\n\
             boundaries:\n  - {{ name: orders-out, sink: kafka-topic, id: 'header:exactly-id', expect: exactly-once }}\n\
             faults:\n  - kill: consumer\n    when: {when}\n\
             limits: {{ settle: 3s, deadline: 90s }}\n"
        ),
    )
    .unwrap();
    let dir = tmp.path().join("run");
    let (out, report) = run_plan(&plan, &dir, &[]);
    let events = read_events(&dir.join("events.jsonl")).unwrap();
    (out, report, events)
}

#[test]
fn a_java_transactional_pipeline_is_decoded_and_exact_at_its_output_topic() {
    require_kafka();
    let (out, report, events) = run_java_pipeline("{ after: end_txn, nth: 20 }");
    let why = format!("{}\n{report:#}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{why}");
    assert_eq!(report["boundaries"][0]["verdict"], "EXACT", "{why}");
    let count = |wanted: TxnOp| {
        events
            .iter()
            .filter(|e| matches!(&e.event, Event::Txn { op, error: None, .. } if *op == wanted))
            .count()
    };
    // Two incarnations each started a transactional producer; every message committed once
    // (the Java client of Kafka 4 adds partitions and offsets implicitly, KIP-890).
    assert!(count(TxnOp::InitProducerId) >= 2, "{why}");
    assert!(count(TxnOp::TxnOffsetCommit) >= 60, "{why}");
    assert!(count(TxnOp::EndTxn) >= 60, "{why}");
}

#[test]
fn a_kill_while_the_proxy_holds_the_commit_request_aborts_the_transaction_and_stays_exact() {
    require_kafka();
    let (out, report, events) = run_java_pipeline("{ before: end_txn, nth: 20 }");
    let why = format!("{}\n{report:#}", String::from_utf8_lossy(&out.stderr));
    // The 20th EndTxn (commit) request was held, the consumer killed, and the request never
    // reached the broker.
    let held: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Held {
                at: HeldAt::EndTxnRequest,
                released,
                ..
            } => Some(*released),
            _ => None,
        })
        .collect();
    // Every commit request waits at the gate for the nemesis; the 20th alone is withheld.
    let withheld: Vec<usize> = (0..held.len()).filter(|&i| !held[i]).collect();
    assert_eq!(withheld, [19], "the 20th commit request withheld\n{why}");
    let fault = &report["faults"][0];
    assert_eq!(fault["applied"], true, "{why}");
    // Its records were produced but their transaction never committed: the next incarnation's
    // InitProducerId aborted it, so read_uncommitted sees them and read_committed does not.
    let topic = &report["boundaries"][0]["output_topics"][0];
    assert!(topic["aborted_records"].as_u64().unwrap() >= 1, "{why}");
    assert_eq!(topic["committed_records"], 60, "{why}");
    assert_eq!(report["boundaries"][0]["verdict"], "EXACT", "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
}

#[test]
fn a_kill_after_its_produce_is_acknowledged_lands_before_the_commit_and_stays_exact() {
    require_kafka();
    let (out, report, events) = run_java_pipeline("{ after: produce, nth: 15 }");
    let why = format!("{}\n{report:#}", String::from_utf8_lossy(&out.stderr));
    // The proxy recorded the pipeline's own produces, each attributed to its incarnation and
    // transactional producer, to the output topic.
    let produces: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ConsumerProduce {
                incarnation,
                transactional_id,
                producer_id,
                batches,
                ..
            } => Some((
                *incarnation,
                transactional_id.clone(),
                *producer_id,
                batches,
            )),
            _ => None,
        })
        .collect();
    assert!(produces.len() >= 60, "{why}");
    assert!(
        produces.iter().all(|(_, tid, pid, batches)| tid.is_some()
            && *pid >= 0
            && batches
                .iter()
                .all(|b| b.topic.starts_with("orders-out") && b.records >= 1)),
        "{why}"
    );
    // The kill fired on the 15th acknowledged produce, and a second incarnation produced.
    let fault = &report["faults"][0];
    assert_eq!(fault["applied"], true, "{why}");
    assert!(produces.iter().any(|p| p.0 == 2), "{why}");
    let started = events
        .iter()
        .filter(|e| {
            matches!(
                &e.event,
                Event::Process {
                    phase: ProcessPhase::Started,
                    ..
                }
            )
        })
        .count();
    assert!(started >= 2, "{why}");
    // Produced but not yet committed when killed: aborted, never an effect; orders-out EXACT.
    let topic = &report["boundaries"][0]["output_topics"][0];
    assert!(topic["aborted_records"].as_u64().unwrap() >= 1, "{why}");
    assert_eq!(report["boundaries"][0]["verdict"], "EXACT", "{why}");
    assert_eq!(out.status.code(), Some(0), "{why}");
}
