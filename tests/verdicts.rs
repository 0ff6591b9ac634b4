//! The shipped plans, run against the real brokers (and the embedded mock): each consumer's
//! semantics show up as the verdict, exit code and evidence its plan promises, over Kafka and
//! over AMQP 0-9-1, through the same supervisor, sinks, triggers and judge.
//!
//! One table, one row per plan run (a shipped plan, maybe edited, maybe with extra arguments):
//! the broker it needs, the verdict and exit code it must give, and what else its report must
//! show. Each row is its own test; [`check`] runs it and asserts it.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use exactly::timeline::{read_events, Event};
use serde_json::Value;

/// What a row needs running before its plan can run.
#[derive(Clone, Copy)]
enum Needs {
    /// Kafka on 127.0.0.1:9092.
    Kafka,
    /// RabbitMQ on 127.0.0.1:5672.
    RabbitMq,
    /// Nothing: the embedded mock cluster, or a broker that is meant to be unreachable.
    Nothing,
}

/// One plan run and what it must show.
struct Row {
    /// The shipped plan (in `plans/`).
    plan: &'static str,
    /// The broker it needs.
    needs: Needs,
    /// An edit of the plan's text (the identity for most rows).
    edit: fn(String) -> String,
    /// Extra arguments to `exactly run`.
    args: &'static [&'static str],
    /// The verdict report.json must give; `None` when the run must leave no judgement.
    verdict: Option<&'static str>,
    /// The exit code.
    exit: i32,
    /// Why that exit code, for the assertion message.
    exit_why: &'static str,
    /// What else the run must show.
    also: fn(&Ran),
}

/// A row that changes nothing, needs nothing and checks nothing beyond its verdict and exit.
const ROW: Row = Row {
    plan: "",
    needs: Needs::Nothing,
    edit: unchanged,
    args: &[],
    verdict: None,
    exit: 0,
    exit_why: "",
    also: nothing_else,
};

fn unchanged(text: String) -> String {
    text
}

fn nothing_else(_: &Ran) {}

/// A finished row: the output, report.json, the run folder, an account for assertion
/// messages, and how long the run took.
struct Ran {
    out: Output,
    report: Value,
    dir: PathBuf,
    why: String,
    took: Duration,
}

impl Ran {
    /// The anomalies of one outcome in report.json.
    fn anomalies(&self, outcome: &str) -> Vec<&Value> {
        self.report["anomalies"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["outcome"] == outcome).collect())
            .unwrap_or_default()
    }

    /// What the harness printed on stderr.
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

/// Each boundary of report.json: (name, verdict, expectation_met).
fn boundary_rows(r: &Ran) -> Vec<(String, String, Option<bool>)> {
    r.report["boundaries"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|b| {
                    (
                        b["name"].as_str().unwrap_or_default().to_owned(),
                        b["verdict"].as_str().unwrap_or_default().to_owned(),
                        b["expectation_met"].as_bool(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every ID with a record of an aborted transaction at boundary `b` (as its output topic's
/// read recorded them, all of them) is named once in a mechanism group of its own: committed
/// again at an EXACT boundary (what a read_uncommitted reader saw twice), each with the Produce
/// that wrote the aborted record and the one that wrote the committed copy; listed after the
/// boundary's own mechanisms and in report.md, never counted as a duplicate.
fn assert_aborted_named(r: &Ran, b: usize) {
    let why = &r.why;
    let events = read_events(&r.dir.join("events.jsonl")).unwrap();
    let ids: HashSet<String> = events
        .iter()
        .filter_map(|st| match &st.event {
            Event::OutputTopicRead { aborted, .. } => Some(aborted),
            _ => None,
        })
        .flatten()
        .filter_map(|a| a.id.clone())
        .collect();
    let boundary = &r.report["boundaries"][b];
    let groups = boundary["mechanisms"].as_array().unwrap();
    let aborted: Vec<&Value> = groups
        .iter()
        .filter(|g| {
            g["mechanism"] == "aborted_then_committed"
                || g["mechanism"] == "aborted_never_committed"
        })
        .collect();
    let named: u64 = aborted.iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(named, ids.len() as u64, "aborted IDs {ids:?}: {why}");
    if boundary["verdict"] == "EXACT" {
        assert!(
            aborted
                .iter()
                .all(|g| g["mechanism"] == "aborted_then_committed"),
            "{why}"
        );
        assert_eq!(boundary["counts"]["duplicated"], 0, "{why}");
    }
    // After the boundary's own mechanisms.
    let first_aborted = groups.iter().position(|g| aborted.contains(&g));
    assert!(
        first_aborted.is_none_or(|i| groups[i..].iter().all(|g| aborted.contains(&g))),
        "{why}"
    );
    for g in &aborted {
        for sample in g["samples"].as_array().unwrap() {
            assert!(ids.contains(sample["id"].as_str().unwrap()), "{why}");
            let facts: Vec<&str> = sample["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["what"].as_str())
                .collect();
            // Its writer, when the broker's answer to that Produce reached the proxy (a kill
            // while it is in flight leaves the record written and the answer unread: then
            // the record itself, saying so).
            assert!(
                facts.iter().any(|f| (f.contains("'s Produce wrote it to ")
                    || f.contains("no Produce of it was seen through the proxy"))
                    && f.contains("its transaction never committed")),
                "{facts:?}"
            );
            if g["mechanism"] == "aborted_then_committed" {
                assert!(
                    facts
                        .iter()
                        .any(|f| f.contains("'s Produce wrote it again to ")),
                    "{facts:?}"
                );
            }
        }
    }
    if !ids.is_empty() {
        let md = std::fs::read_to_string(r.dir.join("report.md")).unwrap();
        assert!(md.contains("Mechanism `aborted_"), "{md}");
        eprintln!("aborted and named: {named} IDs in {} groups", aborted.len());
    }
}

/// The zombie's fencing line names the request and the error the broker answered it with, as
/// the proxy recorded them: the group coordinator's (KIP-447: its TxnOffsetCommit refused for
/// a lost membership) or the transaction coordinator's (a stale producer epoch); and, when the
/// zombie's next EndTxn aborted, says so. report.md shows the same line.
fn assert_fencing_said_as_the_broker_answered(r: &Ran, events: &[exactly::timeline::Stamped]) {
    use exactly::timeline::TxnOp;
    let why = &r.why;
    let fencing = |op: TxnOp, e: &str| match e {
        "PRODUCER_FENCED" | "INVALID_PRODUCER_EPOCH" => true,
        "ILLEGAL_GENERATION" | "UNKNOWN_MEMBER_ID" | "FENCED_INSTANCE_ID" => {
            op == TxnOp::TxnOffsetCommit
        }
        _ => false,
    };
    let refused = events.iter().position(|st| match &st.event {
        Event::Txn {
            instance: 0,
            incarnation: 1,
            op,
            error: Some(e),
            request: false,
            ..
        } => fencing(*op, e),
        _ => false,
    });
    let Some(at) = refused else {
        panic!("no fencing answer to consumer[0] incarnation 1 on the timeline: {why}");
    };
    let Event::Txn {
        op,
        error: Some(error),
        ..
    } = &events[at].event
    else {
        unreachable!()
    };
    let line = format!("consumer[0] incarnation 1 was fenced: its {op:?}");
    let warnings = r.report["warnings"].as_array().unwrap();
    let said = warnings
        .iter()
        .filter_map(|w| w.as_str())
        .find(|w| w.starts_with(&line))
        .unwrap_or_else(|| panic!("no line `{line}`: {warnings:?}; {why}"));
    assert!(
        said.contains(&format!("was refused with {error}")),
        "{said}"
    );
    // How its transaction ended, as the proxy saw it next: its own EndTxn, or (rdkafka on
    // Kafka 4.4: the zombie exits without one) the InitProducerId of its successor.
    let ended = events[at..].iter().find_map(|st| match &st.event {
        Event::Txn {
            instance: 0,
            incarnation: 1,
            op: TxnOp::EndTxn,
            committed: Some(false),
            error: None,
            request: false,
            ..
        } => Some("its transaction was then aborted (EndTxn abort accepted)".to_owned()),
        Event::Txn {
            instance: 0,
            incarnation: n,
            op: TxnOp::InitProducerId,
            producer_epoch,
            error: None,
            request: false,
            ..
        } if *n > 1 => Some(format!(
            "its open transaction was aborted when consumer[0] incarnation {n}'s \
             InitProducerId took its transactional id (epoch {producer_epoch})"
        )),
        _ => None,
    });
    if let Some(end) = ended {
        assert!(said.ends_with(&end), "{said} / {end}");
    }
    let md = std::fs::read_to_string(r.dir.join("report.md")).unwrap();
    assert!(
        md.contains(&format!("its {op:?} was refused with {error}")),
        "{md}"
    );
    eprintln!("fencing line: {said}");
}

/// Runs `row`'s plan and asserts its verdict, exit code and the rest.
fn check(row: Row) {
    match row.needs {
        Needs::Kafka => require_kafka(),
        Needs::RabbitMq => require_rabbitmq(),
        Needs::Nothing => {}
    }
    let tmp = tempfile::tempdir().unwrap();
    let plan = plan_copy(row.plan, tmp.path(), row.edit);
    let dir = tmp.path().join("run");
    let started = Instant::now();
    let (out, report) = run_plan(&plan, &dir, row.args);
    let ran = Ran {
        why: explain(&out, &report),
        took: started.elapsed(),
        out,
        report,
        dir,
    };
    let why = &ran.why;
    if let Some(verdict) = row.verdict {
        assert_eq!(ran.report["verdict"], verdict, "{why}");
    }
    if row.exit_why.is_empty() {
        assert_eq!(ran.out.status.code(), Some(row.exit), "{why}");
    } else {
        assert_eq!(
            ran.out.status.code(),
            Some(row.exit),
            "{}: {why}",
            row.exit_why
        );
    }
    (row.also)(&ran);
}

/// One test per row.
macro_rules! verdicts {
    ($($name:ident: $row:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check($row);
            }
        )*
    };
}

verdicts! {
    // Kafka.
    commit_before_effect_killed_in_its_work_window_loses_messages: Row {
        plan: "kafka-commit-before-effect.yaml",
        needs: Needs::Kafka,
        verdict: Some("LOST"),
        exit: 1,
        exit_why: "at-least-once is violated",
        also: |r| {
            let why = &r.why;
            assert!(r.report["counts"]["lost"].as_u64().unwrap() > 0, "{why}");
            // Every lost ID comes with its evidence: the partition and offset the broker
            // acknowledged.
            let lost = r.anomalies("lost").into_iter().next();
            assert!(lost.is_some_and(|a| a["offset"].is_i64()), "{why}");
        },
        ..ROW
    };
    commit_after_effect_killed_during_its_effect_duplicates_but_loses_nothing: Row {
        plan: "kafka-commit-after-effect.yaml",
        needs: Needs::Kafka,
        verdict: Some("DUPLICATED"),
        exit: 0,
        exit_why: "at-least-once allows duplicates",
        also: |r| {
            let why = &r.why;
            assert_eq!(r.report["counts"]["lost"], 0, "{why}");
            // The duplicated IDs were effected by two incarnations.
            let dup = r.anomalies("duplicated");
            let dup = dup.first().expect("a duplicated anomaly");
            assert!(dup["effects"].as_array().unwrap().len() >= 2, "{why}");
        },
        ..ROW
    };
    commit_after_effect_claimed_exactly_once_fails_the_gate: Row {
        plan: "kafka-commit-after-effect.yaml",
        needs: Needs::Kafka,
        args: &["--expect", "exactly-once"],
        verdict: Some("DUPLICATED"),
        exit: 1,
        also: |r| {
            assert_eq!(r.report["expectation_met"], false, "{}", r.why);
            let junit = std::fs::read_to_string(r.dir.join("junit.xml")).unwrap();
            assert!(
                junit.contains("<failure"),
                "junit marks the violation: {junit}"
            );
        },
        ..ROW
    };
    kafka_idempotent_consumer_under_the_same_kills_is_exact: Row {
        plan: "kafka-idempotent.yaml",
        needs: Needs::Kafka,
        verdict: Some("EXACT"),
        exit: 0,
        also: |r| {
            let why = &r.why;
            // The kills really landed, and the redeliveries were replays.
            let fired = r.report["faults"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["applied"] == true)
                .count();
            assert_eq!(fired, 2, "{why}");
            assert!(
                r.report["counts"]["effects_replayed"].as_u64().unwrap() > 0,
                "{why}"
            );
        },
        ..ROW
    };
    two_boundaries_each_get_their_verdict_and_the_exit_follows_each_promise: Row {
        plan: "kafka-two-boundaries.yaml",
        needs: Needs::Kafka,
        verdict: Some("DUPLICATED"),
        exit: 0,
        exit_why: "the ledger promises at-least-once and payments exactly-once: both kept",
        also: |r| {
            let why = &r.why;
            let rows = boundary_rows(r);
            assert_eq!(
                rows,
                [
                    ("ledger".to_owned(), "DUPLICATED".to_owned(), Some(true)),
                    ("payments".to_owned(), "EXACT".to_owned(), Some(true)),
                ],
                "{why}"
            );
            let payments = &r.report["boundaries"][1];
            assert!(payments["counts"]["effects_replayed"].as_u64().unwrap() > 0, "{why}");
            let ledger = &r.report["boundaries"][0];
            assert_eq!(ledger["counts"]["lost"], 0, "{why}");
            // report.md opens with the boundary table; junit has a case per boundary.
            let md = std::fs::read_to_string(r.dir.join("report.md")).unwrap();
            let table = md.find("## Boundaries").expect("a boundary table");
            assert!(table < md.find("## Summary").unwrap(), "{md}");
            assert!(md.contains("| ledger | file | at-least-once | **DUPLICATED** | met |"), "{md}");
            let junit = std::fs::read_to_string(r.dir.join("junit.xml")).unwrap();
            assert_eq!(junit.matches("<testcase").count(), 2, "{junit}");
            assert!(!junit.contains("<failure"), "{junit}");
        },
        ..ROW
    };
    two_boundaries_fail_the_run_when_one_breaks_its_promise: Row {
        plan: "kafka-two-boundaries.yaml",
        needs: Needs::Kafka,
        edit: |t| t.replacen("expect: at-least-once", "expect: exactly-once", 1),
        verdict: Some("DUPLICATED"),
        exit: 1,
        exit_why: "the ledger's exactly-once is violated though payments kept theirs",
        also: |r| {
            let rows = boundary_rows(r);
            assert_eq!(rows[0].2, Some(false), "{}", r.why);
            assert_eq!(rows[1].2, Some(true), "{}", r.why);
            let junit = std::fs::read_to_string(r.dir.join("junit.xml")).unwrap();
            assert_eq!(junit.matches("<failure").count(), 1, "{junit}");
        },
        ..ROW
    };
    transactional_pipeline_is_exact_at_its_output_topic: Row {
        plan: "kafka-eos.yaml",
        needs: Needs::Kafka,
        verdict: Some("EXACT"),
        exit: 0,
        exit_why: "read_committed sees each result once",
        also: |r| {
            let why = &r.why;
            assert_eq!(boundary_rows(r)[0].1, "EXACT", "{why}");
            let topic = &r.report["boundaries"][0]["output_topics"][0];
            assert_eq!(topic["complete"], true, "{why}");
            assert_eq!(topic["committed_records"], 100, "{why}");
            // The kill while the proxy held the 30th transaction commit request fired.
            let faults = r.report["faults"].as_array().unwrap();
            let before = faults
                .iter()
                .find(|f| f["trigger"].as_str().unwrap().contains("before: end_txn"));
            assert!(before.is_some_and(|f| f["applied"] == true), "{why}");
            // That transaction's record was acknowledged before its EndTxn was held: aborted,
            // and named per ID (committed again by the next incarnation), never an effect.
            assert!(topic["aborted_records"].as_u64().unwrap() >= 1, "{why}");
            assert_eq!(r.report["boundaries"][0]["counts"]["exact"], 100, "{why}");
            assert_aborted_named(r, 0);
        },
        ..ROW
    };
    transactional_pipeline_with_email_is_exact_at_the_topic_and_duplicated_at_the_email: Row {
        plan: "kafka-eos-email.yaml",
        needs: Needs::Kafka,
        verdict: Some("DUPLICATED"),
        exit: 0,
        exit_why: "orders-out keeps exactly-once, the email at-least-once",
        also: |r| {
            let why = &r.why;
            let rows = boundary_rows(r);
            assert_eq!(
                rows,
                [
                    ("orders-out".to_owned(), "EXACT".to_owned(), Some(true)),
                    ("email".to_owned(), "DUPLICATED".to_owned(), Some(true)),
                ],
                "{why}"
            );
            // A kill after the produce aborts that transaction, and only read_uncommitted sees
            // its records; a kill before the batch left the client aborts nothing the broker
            // stored (fresh-ci saw 0 once), so the count is checked for consistency, not size.
            let topic = &r.report["boundaries"][0]["output_topics"][0];
            let aborted = topic["aborted_records"].as_u64().unwrap();
            assert_eq!(
                topic["uncommitted_records"].as_u64().unwrap(),
                topic["committed_records"].as_u64().unwrap() + aborted,
                "{why}"
            );
            if aborted > 0 {
                let md = std::fs::read_to_string(r.dir.join("report.md")).unwrap();
                assert!(md.contains("records of aborted transactions"), "{md}");
            }
            assert_aborted_named(r, 0);
            // The email's duplicates are named for what they are: outside the transaction.
            let groups = r.report["boundaries"][1]["mechanisms"].as_array().unwrap();
            assert!(!groups.is_empty(), "{why}");
            for g in groups {
                assert_eq!(g["mechanism"], "effect_outside_transaction", "{why}");
            }
        },
        ..ROW
    };
    transactional_zombie_is_fenced_and_the_output_stays_exact: Row {
        plan: "kafka-eos-zombie.yaml",
        needs: Needs::Kafka,
        exit: 0,
        exit_why: "orders-out keeps exactly-once (the zombie cannot commit), the email at-least-once",
        also: |r| {
            let why = &r.why;
            assert_eq!(boundary_rows(r)[0].1, "EXACT", "{why}");
            let warnings = r.report["warnings"].as_array().unwrap();
            assert!(
                warnings
                    .iter()
                    .any(|w| w.as_str().unwrap().contains("consumer[0] incarnation 1 was fenced")),
                "{why}"
            );
            let events = read_events(&r.dir.join("events.jsonl")).unwrap();
            assert_fencing_said_as_the_broker_answered(r, &events);
            // The zombie's own transaction (its produce before the pause) aborted: named.
            assert_aborted_named(r, 0);
            // The proxy decoded rdkafka's transactional traffic.
            let txns = events
                .iter()
                .filter(|e| matches!(e.event, Event::Txn { .. }))
                .count();
            assert!(txns >= 300, "{txns} txn events: {why}");
        },
        ..ROW
    };
    produce_then_commit_duplicates_at_its_output_topic: Row {
        plan: "kafka-produce-then-commit.yaml",
        needs: Needs::Kafka,
        verdict: Some("DUPLICATED"),
        exit: 0,
        exit_why: "at-least-once allows the results produced twice",
        also: |r| {
            let why = &r.why;
            let b = &r.report["boundaries"][0];
            assert!(b["counts"]["duplicated"].as_u64().unwrap() > 0, "{why}");
            assert_eq!(b["counts"]["lost"], 0, "{why}");
            // No transactions: nothing aborted.
            assert_eq!(b["output_topics"][0]["aborted_records"], 0, "{why}");
            // Each copy names the incarnation whose Produce (seen by the proxy) wrote it: a
            // duplicate was written by the killed incarnation and again by its successor.
            let two_writers = b["anomalies"].as_array().unwrap().iter().any(|a| {
                let writers: std::collections::BTreeSet<u64> = a["effects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["attributed_by"] == "producer")
                    .filter_map(|e| e["incarnation"].as_u64())
                    .collect();
                a["outcome"] == "duplicated" && writers.len() >= 2
            });
            assert!(two_writers, "{why}");
            // Named for what it is: output produced again, outside any transaction.
            let groups = b["mechanisms"].as_array().unwrap();
            assert!(
                groups
                    .iter()
                    .any(|g| g["mechanism"] == "output_without_transaction"),
                "{why}"
            );
        },
        ..ROW
    };
    produce_then_commit_with_one_effects_sink_names_the_output_produced_again: Row {
        plan: "kafka-produce-then-commit.yaml",
        needs: Needs::Kafka,
        // The same output topic as the plan's one `effects` sink instead of a boundary.
        edit: |t| {
            let written = "boundaries:\n  - name: orders-out\n    sink: kafka-topic\n    topic: orders-out-{run}\n    id: header:exactly-id\n    expect: at-least-once\n";
            assert!(t.contains(written), "the plan's boundary changed: {t}");
            t.replace(
                written,
                "effects:\n  sink: kafka-topic\n  topic: orders-out-{run}\n  id: header:exactly-id\nexpect: at-least-once\n",
            )
        },
        verdict: Some("DUPLICATED"),
        exit: 0,
        exit_why: "at-least-once allows the results produced twice",
        also: |r| {
            let why = &r.why;
            assert!(r.report.get("boundaries").is_none_or(|b| b.as_array().is_some_and(Vec::is_empty)), "{why}");
            assert!(r.report["counts"]["duplicated"].as_u64().unwrap() > 0, "{why}");
            assert_eq!(r.report["counts"]["lost"], 0, "{why}");
            assert_eq!(r.report["output_topics"][0]["aborted_records"], 0, "{why}");
            let groups = r.report["mechanisms"].as_array().unwrap();
            assert!(
                groups
                    .iter()
                    .any(|g| g["mechanism"] == "output_without_transaction"),
                "{why}"
            );
            for dup in r.anomalies("duplicated") {
                assert_eq!(dup["mechanism"], "output_without_transaction", "{why}");
            }
        },
        ..ROW
    };
    run_without_faults_is_inconclusive: Row {
        plan: "kafka-no-fault.yaml",
        needs: Needs::Kafka,
        verdict: Some("INCONCLUSIVE"),
        exit: 3,
        ..ROW
    };
    demo_plan_runs_on_the_embedded_mock_cluster_and_says_so: Row {
        plan: "demo.yaml",
        needs: Needs::Nothing,
        verdict: Some("DUPLICATED"),
        exit: 0,
        also: |r| {
            let why = &r.why;
            assert_eq!(r.report["mock_broker"], true, "{why}");
            assert!(r.stderr().contains("MOCK"), "{why}");
            let md = std::fs::read_to_string(r.dir.join("report.md")).unwrap();
            assert!(
                md.to_lowercase().contains("mock"),
                "the report says it ran on a mock"
            );
        },
        ..ROW
    };
    a_planned_fault_that_never_fires_makes_a_clean_run_inconclusive: Row {
        plan: "kafka-no-fault.yaml",
        needs: Needs::Kafka,
        edit: |t| {
            t.replace(
                "expect: at-least-once",
                "faults:\n  - kill: consumer\n    when: { after: effect, nth: 100000 }\nexpect: at-least-once",
            )
        },
        verdict: Some("INCONCLUSIVE"),
        exit: 3,
        also: |r| {
            let reasons = r.report["inconclusive_reasons"].to_string();
            assert!(
                reasons.contains("never fired"),
                "the report says why: {reasons}"
            );
        },
        ..ROW
    };

    // Honesty (issues 12 and 13): a blind oracle never proves a loss, a promise the broker
    // never counted done is never met.
    a_wrong_effect_id_rule_is_inconclusive_never_lost: Row {
        plan: "kafka-commit-after-effect.yaml",
        needs: Needs::Kafka,
        // The default payload ({"id":"…"}) read with `id: json:/order_id`: every effect the
        // consumer posts is rejected, and once the first 20 all are, the run stops: the plan
        // must be fixed (exit 2), and nothing is called lost on a blind oracle.
        edit: |t| {
            t.replace("  payload: '{\"order_id\":\"{id}\",\"amount\":42}'\n", "")
                .replace("messages: 200", "messages: 30")
        },
        verdict: Some("INCONCLUSIVE"),
        exit: 2,
        exit_why: "a rule that reads none of the first effects is a plan error, never a loss",
        also: |r| {
            let why = &r.why;
            assert_eq!(r.report["counts"]["lost"], 0, "{why}");
            assert!(r.report["counts"]["rejected"].as_u64().unwrap() >= 20, "{why}");
            assert!(r.anomalies("lost").is_empty(), "{why}");
            assert_eq!(r.report["expectation_state"], "unknown", "{why}");
            let reasons = r.report["inconclusive_reasons"].to_string();
            assert!(reasons.contains("effects_unread"), "{reasons}");
            let stderr = String::from_utf8_lossy(&r.out.stderr);
            assert!(stderr.contains("did you mean `json:/id`"), "{stderr}");
            let md = std::fs::read_to_string(r.dir.join("report.md")).unwrap();
            assert!(md.contains("`json:/order_id`"), "the report names the rule: {md}");
            assert!(md.contains("## Rejected effects"), "{md}");
            assert!(md.contains(r#"{"id":""#), "the report shows a rejected body: {md}");
        },
        ..ROW
    };
    an_id_rule_that_reads_only_some_effects_calls_no_unread_message_lost: Row {
        plan: "kafka-commit-after-effect.yaml",
        needs: Needs::Kafka,
        // Only IDs ending in an even digit are read: the others' effects are rejected.
        edit: |t| {
            t.replace(
                "  id: json:/order_id",
                "  id: 'regex:\"order_id\":\"([^\"]*[02468])\"'",
            )
            .replace("messages: 200", "messages: 60")
        },
        verdict: None,
        exit: 3,
        exit_why: "with effects unread, neither EXACT nor a met claim can be proven",
        also: |r| {
            let why = &r.why;
            let verdict = r.report["verdict"].as_str().unwrap_or_default();
            assert!(
                verdict == "INCONCLUSIVE" || verdict == "DUPLICATED",
                "{verdict}: {why}"
            );
            assert_eq!(r.report["counts"]["lost"], 0, "{why}");
            assert!(r.report["counts"]["unconfirmed_loss"].as_u64().unwrap() > 0, "{why}");
            assert!(r.report["counts"]["exact"].as_u64().unwrap() > 0, "{why}");
            assert_eq!(r.report["expectation_state"], "unknown", "{why}");
        },
        ..ROW
    };
    a_consumer_that_never_commits_is_exact_but_its_promise_unknown: Row {
        plan: "kafka-commit-after-effect.yaml",
        needs: Needs::Kafka,
        // tests/consumers/never_commits.rs; a pause (not a kill: a restart would redo
        // everything) so that a fault is exercised.
        edit: |t| {
            t.replace(
                "kafka_consumer, --mode, commit-after-effect, --work-ms, \"5\", --session-timeout-ms, \"2000\"",
                "never_commits, --work-ms, \"5\"",
            )
            .replace(
                "  - kill: consumer\n    when: { during: effect, nth: 30 }\n  - kill: consumer\n    when: { during: effect, nth: 120 }",
                "  - pause: consumer\n    for: 300ms\n    when: { after: effect, nth: 30 }",
            )
        },
        verdict: Some("EXACT"),
        exit: 3,
        exit_why: "the broker never counted the work done",
        also: |r| {
            let why = &r.why;
            assert_eq!(r.report["counts"]["exact"], 200, "{why}");
            assert_eq!(r.report["counts"]["not_counted_done"], 200, "{why}");
            assert_eq!(r.report["expectation_state"], "unknown", "{why}");
            assert_eq!(r.report["expectation_met"], serde_json::Value::Null, "{why}");
            assert_eq!(r.report["caveats"][0]["code"], "not_counted_done", "{why}");
            let md = std::fs::read_to_string(r.dir.join("report.md")).unwrap();
            let caveats = md.split("## Caveats").nth(1).unwrap_or_default();
            assert!(
                caveats.contains("the broker never counted 200 processed messages done"),
                "{md}"
            );
            let junit = std::fs::read_to_string(r.dir.join("junit.xml")).unwrap();
            assert!(junit.contains(r#"type="unknown""#), "{junit}");
        },
        ..ROW
    };

    // RabbitMQ.
    auto_ack_consumer_killed_loses_what_it_was_sent: Row {
        plan: "amqp-auto-ack.yaml",
        needs: Needs::RabbitMq,
        verdict: Some("LOST"),
        exit: 1,
        also: |r| {
            // The kill came after 40 effects; the broker had pushed far more than that already.
            assert!(r.report["counts"]["lost"].as_u64().unwrap() > 50, "{}", r.why);
        },
        ..ROW
    };
    ack_before_effect_killed_in_its_work_window_loses_messages: Row {
        plan: "amqp-ack-before-effect.yaml",
        needs: Needs::RabbitMq,
        verdict: Some("LOST"),
        exit: 1,
        ..ROW
    };
    ack_after_effect_killed_during_its_effect_is_redelivered_and_duplicated: Row {
        plan: "amqp-ack-after-effect.yaml",
        needs: Needs::RabbitMq,
        verdict: Some("DUPLICATED"),
        exit: 0,
        also: |r| {
            let why = &r.why;
            assert_eq!(r.report["counts"]["lost"], 0, "{why}");
            // The report shows the redelivered copy: the same ID applied by two incarnations.
            let dup = r.anomalies("duplicated");
            assert!(!dup.is_empty(), "{why}");
            let incarnations: HashSet<_> = dup[0]["effects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["incarnation"].clone())
                .collect();
            assert!(incarnations.len() >= 2, "{why}");
        },
        ..ROW
    };
    amqp_idempotent_consumer_under_the_same_kills_is_exact: Row {
        plan: "amqp-idempotent.yaml",
        needs: Needs::RabbitMq,
        verdict: Some("EXACT"),
        exit: 0,
        also: |r| {
            assert!(
                r.report["counts"]["effects_replayed"].as_u64().unwrap() > 0,
                "{}",
                r.why
            );
        },
        ..ROW
    };
    amqp_run_without_faults_is_inconclusive: Row {
        plan: "amqp-no-fault.yaml",
        needs: Needs::RabbitMq,
        verdict: Some("INCONCLUSIVE"),
        exit: 3,
        also: |r| assert_eq!(r.report["counts"]["effected"], 100, "{}", r.why),
        ..ROW
    };
    the_surviving_instance_picks_up_the_killed_instances_requeued_messages: Row {
        plan: "amqp-ack-after-effect.yaml",
        needs: Needs::RabbitMq,
        // Two instances; consumer[0] dies (for good) while its 20th effect is in flight.
        edit: |t| {
            t.replace("restart: { after: 300ms }", "instances: 2\n  restart: never").replace(
                "  - kill: consumer\n    when: { during: effect, nth: 30 }\n  - kill: consumer\n    when: { during: effect, nth: 120 }",
                "  - kill: consumer[0]\n    when: { during: effect, nth: 20 }",
            )
        },
        verdict: Some("DUPLICATED"),
        exit: 0,
        also: |r| {
            let why = &r.why;
            assert_eq!(r.report["counts"]["lost"], 0, "{why}");
            assert_eq!(
                r.report["counts"]["pending"], 0,
                "consumer[1] finished the work: {why}"
            );
            // The requeued message was applied first by instance 0, then again by instance 1.
            let dup = r.anomalies("duplicated");
            let instances: Vec<_> = dup[0]["effects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["instance"].clone())
                .collect();
            assert_eq!(instances, [0, 1], "{why}");
            let events = read_events(&r.dir.join("events.jsonl")).unwrap();
            assert!(!events.iter().any(|e| matches!(
                e.event,
                Event::Process {
                    instance: 0,
                    incarnation: 2,
                    ..
                }
            )));
        },
        ..ROW
    };
    unreachable_rabbitmq_is_an_infrastructure_error_within_the_connect_deadline: Row {
        plan: "amqp-no-fault.yaml",
        needs: Needs::Nothing,
        edit: |t| {
            t.replace(
                "127.0.0.1:5672/%2f",
                "127.0.0.1:1/%2f\n  connect_timeout: 2s",
            )
        },
        verdict: None,
        exit: 4,
        also: |r| {
            let err = r.stderr();
            assert!(err.contains("cannot reach RabbitMQ"), "{err}");
            assert!(
                !err.contains("guest:guest"),
                "the password is not printed: {err}"
            );
            assert!(r.took < Duration::from_secs(20));
        },
        ..ROW
    };
}
