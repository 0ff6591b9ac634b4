//! The postgres sink against the real PostgreSQL of `scripts/brokers start postgres`
//! (127.0.0.1:5432, wal_level=logical, role and database `exactly`) and the real brokers:
//! committed rows are effects seen through logical replication, rolled-back ones never are, an
//! update of an existing row counts (and one that changed nothing is a replay), each effect
//! names the consumer process that wrote it, and a database that is down at start ends the run
//! with exit 4 in seconds, naming the URL with its password hidden.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use exactly::timeline::{read_events, AttributedBy, EffectOutcome, Event, Stamped};

/// The local database of `scripts/brokers start postgres`.
const URL: &str = "postgres://exactly:exactly@127.0.0.1:5432/exactly";

/// Fails the test with the fix when PostgreSQL is not running.
fn require_postgres() {
    let addr: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!("PostgreSQL is not reachable on 127.0.0.1:5432: start it with `scripts/brokers start postgres`");
    }
}

/// A RabbitMQ plan of the Python consumer (`examples/postgres_consumer.py ARGS`) writing into
/// `table`, watched by the postgres sink; `setup` is run before the table is watched.
fn python_plan(table: &str, args: &str, setup: &str, messages: u32, faults: &str) -> String {
    let root = root();
    let root = root.display();
    format!(
        r#"name: pg-{table}
broker:
  kind: amqp
  url: amqp://guest:guest@127.0.0.1:5672/%2f
  queue: orders-{{run}}
  prefetch: 10
workload:
  messages: {messages}
  payload: '{{"order_id":"{{id}}","amount":42}}'
consumer:
  command: [python3, "{root}/examples/postgres_consumer.py", {args}]
  restart: {{ after: 300ms }}
  env:
    DATABASE_URL: {URL}
    EXACTLY_DB_TABLE: {table}
effects:
  sink: postgres
  id: json:/message_id
  postgres:
    url: {URL}
    table: {table}
    setup: CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, message_id text NOT NULL, payload jsonb); CREATE TABLE IF NOT EXISTS processed (message_id text PRIMARY KEY); {setup}
faults: [{faults}]
expect: at-least-once
limits: {{ settle: 2s, deadline: 60s }}
seed: 3
"#
    )
}

/// A finished run: output, report.json, timeline and an account for assertion messages.
struct Ran {
    out: std::process::Output,
    report: serde_json::Value,
    events: Vec<Stamped>,
    why: String,
    took: Duration,
    /// report.md.
    md: String,
}

fn run_text(text: &str, extra: &[&str]) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, text).unwrap();
    run_file(&plan, dir.path(), extra)
}

fn run_file(plan: &Path, dir: &Path, extra: &[&str]) -> Ran {
    let out_dir = dir.join("run");
    let started = Instant::now();
    let (out, report) = run_plan(plan, &out_dir, extra);
    let took = started.elapsed();
    let events = read_events(&out_dir.join("events.jsonl")).unwrap_or_default();
    let why = explain(&out, &report);
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap_or_default();
    Ran {
        md,
        out,
        report,
        events,
        why,
        took,
    }
}

/// Every effect event: (id, outcome, attribution).
fn effects(events: &[Stamped]) -> Vec<(&str, EffectOutcome, &exactly::timeline::Attribution)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Effect {
                id,
                outcome,
                attribution,
                ..
            } => Some((id.as_str(), *outcome, attribution)),
            _ => None,
        })
        .collect()
}

/// The consumer's pids, from its `started` events.
fn consumer_pids(events: &[Stamped]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Process { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect()
}

#[test]
fn a_rolled_back_transaction_is_never_an_effect() {
    require_postgres();
    require_rabbitmq();
    let ran = run_text(
        &python_plan(
            "pg_rollback",
            "--mode, db-then-ack, --also, rollback",
            "",
            40,
            "",
        ),
        &[],
    );
    let why = &ran.why;
    // every message was written twice: once rolled back, once committed; with no fault
    // planned the run proves nothing about delivery (INCONCLUSIVE), but every ID is exact
    assert_eq!(ran.report["verdict"], "INCONCLUSIVE", "{why}");
    assert_eq!(ran.report["counts"]["exact"], 40, "{why}");
    assert_eq!(ran.report["counts"]["duplicated"], 0, "{why}");
    let effects = effects(&ran.events);
    assert_eq!(effects.len(), 40, "only the committed rows: {why}");
    assert!(effects.iter().all(|(_, o, a)| *o == EffectOutcome::Applied
        && a.row
            .as_ref()
            .is_some_and(|r| r.op == "insert" && !r.lsn.is_empty())));
}

#[test]
fn an_update_of_an_existing_row_is_counted_and_one_that_changed_nothing_is_a_replay() {
    require_postgres();
    require_rabbitmq();
    let ran = run_text(
        &python_plan(
            "pg_update",
            "--mode, db-then-ack, --also, update",
            "",
            30,
            "",
        ),
        &[],
    );
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(ran.report["counts"]["duplicated"], 30, "{why}");
    let updates = effects(&ran.events)
        .iter()
        .filter(|(_, o, a)| {
            *o == EffectOutcome::Applied && a.row.as_ref().is_some_and(|r| r.op == "update")
        })
        .count();
    assert_eq!(updates, 30, "{why}");

    // With the whole old row in the stream, an update that sets what is there changed nothing.
    let ran = run_text(
        &python_plan(
            "pg_touch",
            "--mode, db-then-ack, --also, touch",
            "ALTER TABLE pg_touch REPLICA IDENTITY FULL",
            30,
            "",
        ),
        &[],
    );
    let why = &ran.why;
    assert_eq!(
        ran.report["counts"]["exact"], 30,
        "no fault planned, but every ID exact: {why}"
    );
    assert_eq!(ran.report["counts"]["duplicated"], 0, "{why}");
    let replayed = effects(&ran.events)
        .iter()
        .filter(|(_, o, a)| {
            *o == EffectOutcome::Replayed && a.row.as_ref().is_some_and(|r| r.op == "update")
        })
        .count();
    assert_eq!(replayed, 30, "{why}");
}

#[test]
fn db_then_commit_duplicates_under_kills_and_each_row_names_the_process_that_wrote_it() {
    require_postgres();
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("postgres-db-then-commit.yaml", dir.path(), |t| t);
    let ran = run_file(&plan, dir.path(), &[]);
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(ran.out.status.code(), Some(0), "at-least-once met: {why}");
    assert_eq!(ran.report["counts"]["lost"], 0, "{why}");
    let pids = consumer_pids(&ran.events);
    let effects = effects(&ran.events);
    assert!(effects.len() > 200, "a row written twice: {why}");
    // report.md shows each duplicate's rows with their commits and writers
    assert!(ran.md.contains("row insert committed at LSN"), "{}", ran.md);
    assert!(ran.md.contains("(its socket, pid "), "{}", ran.md);
    for (id, _, a) in &effects {
        assert_eq!(a.by, Some(AttributedBy::Socket), "{id}: {a:?} {why}");
        assert!(
            pids.contains(&a.pid.unwrap()),
            "{id} written by a consumer process: {a:?}"
        );
    }
}

#[test]
fn a_postgres_boundary_is_judged_under_its_own_name() {
    require_postgres();
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    // The shipped plan's one sink, declared as a boundary named `rows` with its own promise.
    let plan = plan_copy("postgres-db-then-commit.yaml", dir.path(), |t| {
        let (head, rest) = t.split_once("effects:\n").expect("an effects section");
        let (section, tail) = rest.split_once("faults:\n").expect("a faults section");
        let indented: String = section.lines().map(|l| format!("  {l}\n")).collect();
        let boundary = indented.replacen(
            "    sink: postgres",
            "  - name: rows\n    sink: postgres",
            1,
        );
        format!("{head}boundaries:\n{boundary}faults:\n{tail}")
            .replace("expect: at-least-once", "expect: exactly-once")
    });
    let ran = run_file(&plan, dir.path(), &[]);
    let why = &ran.why;
    let rows = &ran.report["boundaries"][0];
    assert_eq!(rows["name"], "rows", "{why}");
    assert_eq!(rows["sink"], "postgres", "{why}");
    assert_eq!(rows["verdict"], "DUPLICATED", "{why}");
    assert_eq!(ran.report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(
        ran.out.status.code(),
        Some(1),
        "exactly-once broken at rows: {why}"
    );
    assert!(
        ran.events.iter().any(|e| matches!(
            &e.event,
            Event::Effect { boundary: Some(b), .. } if b == "rows"
        )),
        "effects name their boundary: {why}"
    );
}

#[test]
fn a_database_down_at_start_ends_the_run_with_exit_4_in_seconds_with_the_password_hidden() {
    let text = python_plan("pg_down", "--mode, dedup-table", "", 5, "").replace(
        "url: postgres://exactly:exactly@127.0.0.1:5432/exactly",
        "url: postgres://exactly:s3cr3t-pw@127.0.0.1:5439/exactly",
    );
    let ran = run_text(&text, &[]);
    let stderr = String::from_utf8_lossy(&ran.out.stderr);
    assert_eq!(ran.out.status.code(), Some(4), "{}", ran.why);
    assert!(ran.took < Duration::from_secs(15), "took {:?}", ran.took);
    assert!(
        stderr.contains("postgres://exactly:***@127.0.0.1:5439/exactly"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t-pw"), "{stderr}");
}

#[test]
fn during_effect_is_refused_for_a_postgres_sink() {
    let text = python_plan(
        "pg_during",
        "--mode, dedup-table",
        "",
        5,
        "{ kill: consumer, when: { during: effect, nth: 2 } }",
    );
    let ran = run_text(&text, &[]);
    let stderr = String::from_utf8_lossy(&ran.out.stderr);
    assert_eq!(ran.out.status.code(), Some(2), "{}", ran.why);
    assert!(
        stderr.contains("a postgres sink answers nothing"),
        "{stderr}"
    );
}

/// A shipped plan, edited, run from a temporary folder.
fn run_shipped(name: &str, edit: impl Fn(String) -> String) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy(name, dir.path(), edit);
    run_file(&plan, dir.path(), &[])
}

#[test]
fn commit_then_db_loses_the_rows_a_kill_after_the_commit_cut_off() {
    require_postgres();
    require_kafka();
    let ran = run_shipped("postgres-commit-then-db.yaml", |t| t);
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "LOST", "{why}");
    assert_eq!(
        ran.out.status.code(),
        Some(1),
        "at-least-once violated: {why}"
    );
    assert_losses_name_their_commit(&ran.report, why);
}

#[test]
fn dedup_table_is_exact_under_kills_pauses_and_rebalances_and_says_what_it_absorbed() {
    require_postgres();
    require_kafka();
    let ran = run_shipped("postgres-dedup.yaml", |t| t);
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "EXACT", "{why}");
    assert_eq!(ran.out.status.code(), Some(0), "exactly-once met: {why}");
    assert_eq!(
        ran.report["faults_fired"].as_array().map(Vec::len),
        Some(4),
        "{why}"
    );
    let absorbed = ran.report["counts"]["redeliveries_absorbed"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        absorbed >= 1,
        "a kill between the row and the commit is redelivered: {why}"
    );
}

#[test]
fn offsets_in_db_is_exact_under_kills_pauses_and_rebalances() {
    require_postgres();
    require_kafka();
    let ran = run_shipped("postgres-offsets-in-db.yaml", |t| t);
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "EXACT", "{why}");
    assert_eq!(ran.out.status.code(), Some(0), "exactly-once met: {why}");
    assert_eq!(
        ran.report["faults_fired"].as_array().map(Vec::len),
        Some(4),
        "{why}"
    );
    let commits = ran
        .events
        .iter()
        .filter(|e| matches!(e.event, Event::Commit { .. }))
        .count();
    assert_eq!(commits, 0, "it never commits to Kafka: {why}");
    let stored: Vec<i64> = ran
        .events
        .iter()
        .find_map(|e| match &e.event {
            Event::StoredOffsets { committed, .. } => Some(committed.values().copied().collect()),
            _ => None,
        })
        .expect("the stored offsets were read");
    assert_eq!(stored.len(), 3, "one row per partition: {why}");
    assert!(
        ran.md.contains("offsets the consumer stored with its data"),
        "the report says what counted the work done: {}",
        ran.md
    );
}

#[test]
fn offsets_in_db_without_its_stored_offsets_read_is_not_counted_done() {
    require_postgres();
    require_kafka();
    // The same consumer and faults, but the plan does not say where its progress is: nothing
    // was committed to Kafka, so the promise cannot be known (exit 3), whatever was observed.
    let ran = run_shipped("postgres-offsets-in-db.yaml", |t| {
        t.lines()
            .filter(|l| !l.trim_start().starts_with("offsets:"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    let why = &ran.why;
    assert_eq!(ran.out.status.code(), Some(3), "{why}");
    assert!(
        ran.report["counts"]["not_counted_done"].as_u64() > Some(0),
        "{why}"
    );
}

#[test]
fn offsets_stored_before_the_row_lose_work_by_the_consumer_s_own_word() {
    require_postgres();
    require_kafka();
    // The offsets-in-db bug: the offset in its own transaction, then the row. A kill between
    // the two leaves a stored offset past a message without its row; the stored offsets are
    // the consumer's own word, so that is a proven loss, not an unconfirmed one.
    let ran = run_shipped("postgres-offsets-in-db.yaml", |t| {
        // 150 ms between the offset and the row: two kills at a time land there (a kill
        // after an observed row has landed before the next offset in every run tried).
        let faults = t.find("faults:").expect("the plan has faults");
        let expect = t.find("expect:").expect("the plan has expect");
        let t = format!(
            "{}faults:\n  - kill: consumer\n    when: {{ at: 3s }}\n  - kill: consumer\n    when: {{ at: 7s }}\n{}",
            &t[..faults],
            &t[expect..]
        );
        t.replace("--mode, offsets-in-db", "--mode, offset-then-db")
            .replace(r#"--work-ms, "20""#, r#"--work-ms, "150""#)
            .replace("messages: 200", "messages: 60")
            .replace("orders_offsets_in_db", "orders_offset_then_db")
            .replace("expect: exactly-once", "expect: at-least-once")
            // the lost IDs never settle: the run ends at its deadline
            .replace("deadline: 90s", "deadline: 25s")
    });
    let why = &ran.why;
    let counts = &ran.report["counts"];
    assert!(counts["lost"].as_u64() >= Some(1), "{why}");
    assert_eq!(counts["committer_unknown"], 0, "{why}");
    assert_eq!(ran.report["verdict"], "LOST", "{why}");
    assert_eq!(
        ran.out.status.code(),
        Some(1),
        "at-least-once violated: {why}"
    );
}

#[test]
fn the_python_rabbitmq_dedup_consumer_is_exact_and_duplicates_without_its_dedup() {
    require_postgres();
    require_rabbitmq();
    let ran = run_shipped("amqp-postgres-dedup.yaml", |t| t);
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "EXACT", "{why}");
    assert_eq!(ran.out.status.code(), Some(0), "{why}");
    let ran = run_shipped("amqp-postgres-dedup.yaml", |t| {
        t.replace("--mode, dedup-table", "--mode, db-then-ack")
    });
    let why = &ran.why;
    assert_eq!(ran.report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(
        ran.out.status.code(),
        Some(1),
        "exactly-once violated: {why}"
    );
    assert_eq!(ran.report["counts"]["lost"], 0, "{why}");
}

#[test]
fn a_replication_stream_cut_mid_run_never_claims_a_loss_it_could_not_see() {
    require_postgres();
    require_kafka();
    // the commit-then-db plan, slower, under a name of its own (its slot is found by it)
    let cutter = std::thread::spawn(|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        std::thread::sleep(Duration::from_secs(3));
        while Instant::now() < deadline {
            let out = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
                .args(["-h", "127.0.0.1", "-U", "exactly", "-d", "exactly", "-tAc"])
                .arg(
                    "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots \
                     WHERE slot_name LIKE 'exactly_pg_cut_%' AND active_pid IS NOT NULL",
                )
                .env("PGPASSWORD", "exactly")
                .output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "1") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });
    let ran = run_shipped("postgres-commit-then-db.yaml", |t| {
        t.replace("name: postgres-commit-then-db", "name: pg-cut")
            .replace("rate: unlimited", "")
            .replace(
                "  messages: 200\n",
                "  messages: 200\n  rate: 25/s\n  during: true\n",
            )
    });
    assert!(cutter.join().unwrap(), "the sink's walsender was cut");
    let why = &ran.why;
    assert_ne!(ran.report["verdict"], "LOST", "{why}");
    assert_eq!(ran.report["counts"]["lost"], 0, "{why}");
    assert_eq!(ran.out.status.code(), Some(3), "inconclusive: {why}");
    assert!(ran.md.contains("replication stream ended"), "{}", ran.md);
}
