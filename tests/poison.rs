//! Poison messages and dead letters on the real brokers: the shipped poison plans give the
//! verdict and exit code their header promises, the poison IDs read back from the plan's
//! dead-letter topic or queue are `diverted` (in report.json, report.md and junit.xml), and a
//! consumer that retries a poison message forever is reported stalled at its offset.

mod common;

use common::*;
use exactly::timeline::{read_events, Event};
use serde_json::Value;

/// Runs a shipped plan; returns the exit code, report.json, report.md, junit.xml and the
/// dead-letter IDs the timeline recorded (`None`: no `dead_letters` event).
struct Ran {
    code: Option<i32>,
    report: Value,
    markdown: String,
    junit: String,
    dead_letters: Option<(Vec<String>, bool)>,
    why: String,
}

fn run(plan: &str) -> Ran {
    let tmp = tempfile::tempdir().unwrap();
    let plan = plan_copy(plan, tmp.path(), |t| t);
    let dir = tmp.path().join("run");
    let (out, report) = run_plan(&plan, &dir, &[]);
    let events = read_events(&dir.join("events.jsonl")).expect("events.jsonl");
    let dead_letters = events.iter().find_map(|st| match &st.event {
        Event::DeadLetters { ids, complete, .. } => Some((ids.clone(), *complete)),
        _ => None,
    });
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    Ran {
        code: out.status.code(),
        why: explain(&out, &report),
        markdown: read("report.md"),
        junit: read("junit.xml"),
        report,
        dead_letters,
    }
}

/// The IDs report.json lists with `outcome`.
fn ids_of(report: &Value, outcome: &str) -> Vec<String> {
    let mut ids: Vec<String> = report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == outcome)
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The shared checks of a dead-letter plan: EXACT, exit 0, the ten poison IDs (every 10th)
/// diverted, read whole from the dead-letter destination, each one's partition or queue
/// moving on, and the reports listing them.
fn assert_diverted(r: &Ran) {
    let why = &r.why;
    assert_eq!(r.report["verdict"], "EXACT", "{why}");
    assert_eq!(r.code, Some(0), "exactly-once met: {why}");
    let counts = &r.report["counts"];
    assert_eq!(
        (counts["diverted"].as_u64(), counts["poison"].as_u64()),
        (Some(10), Some(10)),
        "{why}"
    );
    assert_eq!(
        (counts["exact"].as_u64(), counts["lost"].as_u64()),
        (Some(90), Some(0)),
        "{why}"
    );
    let diverted = ids_of(&r.report, "diverted");
    let mut poison: Vec<String> = diverted
        .iter()
        .filter(|id| id.rsplit('-').next().unwrap().parse::<u64>().unwrap() % 10 == 0)
        .cloned()
        .collect();
    poison.sort();
    assert_eq!(
        diverted, poison,
        "only every 10th message is diverted: {why}"
    );
    let (read, complete) = r.dead_letters.clone().expect("a dead_letters event");
    assert!(complete, "{why}");
    for id in &diverted {
        assert!(
            read.contains(id),
            "{id} read in the dead-letter destination: {why}"
        );
    }
    let fates = r.report["poison"].as_array().expect("report.json poison");
    assert_eq!(fates.len(), 10, "{why}");
    assert!(
        fates
            .iter()
            .all(|f| f["outcome"] == "diverted" && f["moved_on"] == true),
        "{why}"
    );
    assert!(r.markdown.contains("## Poison messages"), "{}", r.markdown);
    assert!(
        r.markdown
            .contains(&format!("`{}` | diverted", diverted[0])),
        "{}",
        r.markdown
    );
    assert!(
        r.junit.contains(&diverted[0]),
        "junit lists the diverted IDs: {}",
        r.junit
    );
}

#[test]
fn kafka_poison_dead_lettered_to_a_topic_is_diverted_and_the_rest_exact() {
    require_kafka();
    assert_diverted(&run("kafka-poison-dlq.yaml"));
}

#[test]
fn amqp_poison_nacked_to_the_dead_letter_queue_is_diverted_and_the_rest_exact() {
    require_rabbitmq();
    assert_diverted(&run("amqp-poison-dlx.yaml"));
}

#[test]
fn kafka_consumer_retrying_a_poison_message_forever_is_reported_stalled_at_its_offset() {
    require_kafka();
    let r = run("kafka-poison-stuck.yaml");
    let why = &r.why;
    assert_eq!(r.report["verdict"], "INCONCLUSIVE", "{why}");
    assert_eq!(
        r.code,
        Some(3),
        "a stall proves neither loss nor duplicate: {why}"
    );
    let stalls = r.report["inconclusive_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["code"] == "stalled_on_poison")
        .map(|x| x["stalls"].clone())
        .unwrap_or_else(|| panic!("a stalled_on_poison reason: {why}"));
    let stall = &stalls[0];
    // One partition, the 20th message (offset 19) poison: the group committed up to it and
    // never past it; the 40 after it were never processed.
    assert!(stall["id"].as_str().unwrap().ends_with("-20"), "{why}");
    assert_eq!(
        (stall["partition"].as_i64(), stall["offset"].as_i64()),
        (Some(0), Some(19)),
        "{why}"
    );
    assert_eq!(
        (stall["committed"].as_i64(), stall["behind"].as_i64()),
        (Some(19), Some(40)),
        "{why}"
    );
    assert!(stall["deliveries"].as_u64().unwrap() >= 1, "{why}");
    assert_eq!(r.report["counts"]["pending"], 41, "{why}");
    assert_eq!(r.report["counts"]["lost"], 0, "{why}");
    assert!(
        r.markdown.contains("partition 0 stuck at offset 19"),
        "{}",
        r.markdown
    );
    assert!(r.markdown.contains("**no: stuck**"), "{}", r.markdown);
}
