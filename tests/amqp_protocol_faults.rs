//! AMQP protocol faults the proxy injects (`amqp:` faults), against the real RabbitMQ: what the
//! example consumer does with them shows in the verdict, the exit code, the `fault` event (what
//! was sent) and the reports.

mod common;

use common::*;
use exactly::timeline::{read_events, Event, FaultRecord};
use serde_json::Value;

/// One finished run: exit code, report.json, report.md, the `fault` events, the account.
struct Ran {
    code: Option<i32>,
    report: Value,
    markdown: String,
    faults: Vec<FaultRecord>,
    redelivered: Vec<String>,
    why: String,
}

fn run(plan: &str, edit: impl Fn(String) -> String) -> Ran {
    let tmp = tempfile::tempdir().unwrap();
    let plan = plan_copy(plan, tmp.path(), edit);
    let dir = tmp.path().join("run");
    let (out, report) = run_plan(&plan, &dir, &[]);
    let events = read_events(&dir.join("events.jsonl")).expect("events.jsonl");
    let faults = events
        .iter()
        .filter_map(|st| match &st.event {
            Event::Fault(f) => Some(FaultRecord::clone(f)),
            _ => None,
        })
        .collect();
    let redelivered = events
        .iter()
        .filter_map(|st| match &st.event {
            Event::Delivered {
                id,
                redelivered: true,
                ..
            } => Some(id.clone()),
            _ => None,
        })
        .collect();
    Ran {
        code: out.status.code(),
        why: explain(&out, &report),
        markdown: std::fs::read_to_string(dir.join("report.md")).unwrap_or_default(),
        report,
        faults,
        redelivered,
    }
}

/// The one applied `redeliver` fault: its detail names the ID it re-sent.
fn redelivered_id(r: &Ran) -> String {
    let why = &r.why;
    assert_eq!(r.faults.len(), 1, "{:?} {why}", r.faults);
    let f = &r.faults[0];
    assert!(f.applied, "{f:?} {why}");
    assert_eq!(f.action, "amqp", "{why}");
    assert!(f.detail.contains("redelivered=true"), "{f:?}");
    assert_eq!(r.redelivered.len(), 1, "one forged delivery: {why}");
    let id = r.redelivered[0].clone();
    assert!(f.detail.contains(&format!("(ID {id})")), "{f:?}");
    id
}

#[test]
fn a_redelivered_copy_is_effected_twice_by_a_consumer_that_does_not_deduplicate() {
    require_rabbitmq();
    let r = run("amqp-redelivered.yaml", |t| t);
    let why = &r.why;
    assert_eq!(r.report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(r.code, Some(1), "exactly-once broken: {why}");
    let id = redelivered_id(&r);
    let counts = &r.report["counts"];
    assert_eq!(counts["lost"], 0, "the absorbed ack lost nothing: {why}");
    assert_eq!(counts["duplicated"], 1, "{why}");
    let dup: Vec<&Value> = r.report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == "duplicated")
        .collect();
    assert_eq!(
        dup[0]["id"],
        id.as_str(),
        "the re-sent ID is the duplicate: {why}"
    );
    assert!(r.markdown.contains(&id), "{}", r.markdown);
    assert!(r.markdown.contains("redelivered=true"), "{}", r.markdown);
}

#[test]
fn an_idempotent_consumer_absorbs_the_redelivered_copy() {
    require_rabbitmq();
    let r = run("amqp-redelivered.yaml", |t| {
        t.replace("ack-after-effect", "idempotent").replace(
            "  id: json:/order_id",
            "  id: json:/order_id\n  idempotency_key: header:Idempotency-Key",
        )
    });
    let why = &r.why;
    assert_eq!(r.report["verdict"], "EXACT", "{why}");
    assert_eq!(r.code, Some(0), "{why}");
    redelivered_id(&r);
    assert_eq!(r.report["counts"]["exact"], 100, "{why}");
}

#[test]
fn a_cancelled_consumer_exits_loudly_is_restarted_and_the_run_stays_exact() {
    require_rabbitmq();
    let r = run("amqp-cancel.yaml", |t| t);
    let why = &r.why;
    assert_eq!(r.report["verdict"], "EXACT", "{why}");
    assert_eq!(r.code, Some(0), "{why}");
    assert_eq!(r.faults.len(), 1, "{:?} {why}", r.faults);
    let f = &r.faults[0];
    assert!(f.applied, "{f:?} {why}");
    assert!(
        f.detail.contains("sent basic.cancel (consumer tag"),
        "{f:?}"
    );
    assert!(f.detail.contains("cancelled at RabbitMQ first"), "{f:?}");
    assert_eq!(r.report["counts"]["exact"], 100, "{why}");
    // The example consumer does not hang on the cancel: it exits with 1 and the restart
    // subscribes again; the report shows both.
    assert!(
        r.markdown
            .contains("consumer[0] incarnation 1 exited (exit 1)"),
        "{}",
        r.markdown
    );
    assert!(r.markdown.contains("sent basic.cancel"), "{}", r.markdown);
    assert!(
        r.markdown.contains("consumer[0] incarnation 2"),
        "{}",
        r.markdown
    );
}

#[test]
fn a_consumer_that_ignores_the_cancel_is_a_liveness_finding_not_a_timeout() {
    require_rabbitmq();
    let r = run("amqp-cancel.yaml", |t| {
        let script = root().join("tests/consumers/amqp_ignores_cancel.py");
        t.lines()
            .filter(|l| !l.contains("idempotency_key"))
            .map(|l| {
                if l.starts_with("  command:") {
                    format!("  command: [python3, \"{}\"]", script.display())
                } else {
                    l.replace("deadline: 60s", "deadline: 12s")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let why = &r.why;
    assert_eq!(r.report["verdict"], "INCONCLUSIVE", "{why}");
    assert_eq!(
        r.code,
        Some(3),
        "pending work proves neither loss nor duplicate: {why}"
    );
    assert!(r.faults[0].applied, "{:?} {why}", r.faults);
    let reasons = r.report["inconclusive_reasons"].as_array().unwrap();
    let cancelled = reasons
        .iter()
        .find(|x| x["code"] == "consumer_cancelled")
        .unwrap_or_else(|| panic!("a consumer_cancelled reason: {why}"));
    let consumers = cancelled["consumers"].as_array().unwrap();
    assert_eq!(consumers.len(), 1, "{why}");
    assert!(
        consumers[0]
            .as_str()
            .unwrap()
            .starts_with("consumer[0] incarnation 1 (cancelled at"),
        "{why}"
    );
    assert!(r.report["counts"]["pending"].as_u64().unwrap() > 0, "{why}");
    assert_eq!(r.report["counts"]["lost"], 0, "{why}");
    assert!(
        r.markdown.contains("never delivered") && r.markdown.contains("liveness"),
        "{}",
        r.markdown
    );
}

#[test]
fn a_consumer_that_is_restarted_after_the_cancel_is_no_liveness_finding() {
    require_rabbitmq();
    // The same plan with the example consumer (exits 1, restarted, subscribes again) has no
    // such reason: the first test of this file asserts EXACT; here only the reason's absence
    // under a run cut short, where pending messages remain.
    let r = run("amqp-cancel.yaml", |t| {
        t.replace("messages: 100", "messages: 3000")
            .replace("deadline: 60s", "deadline: 4s")
    });
    let why = &r.why;
    let reasons = r.report["inconclusive_reasons"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        r.faults[0].applied,
        "the cancel was sent: {:?} {why}",
        r.faults
    );
    assert!(
        r.report["counts"]["pending"].as_u64().unwrap_or(0) > 0,
        "work left pending, as in the liveness case: {why}"
    );
    assert!(
        reasons.iter().all(|x| x["code"] != "consumer_cancelled"),
        "{why}"
    );
}

/// The one applied `double-ack` fault: its detail says what the consumer was sent.
fn double_ack_fault(r: &Ran) -> &FaultRecord {
    let why = &r.why;
    assert_eq!(r.faults.len(), 1, "{:?} {why}", r.faults);
    let f = &r.faults[0];
    assert!(f.applied, "{f:?} {why}");
    assert_eq!(f.action, "amqp", "{why}");
    assert!(
        f.detail
            .starts_with("sent channel.close 406 PRECONDITION_FAILED - unknown delivery tag"),
        "{f:?}"
    );
    assert!(f.detail.contains("closed channel"), "{f:?}");
    f
}

#[test]
fn a_double_acks_channel_close_requeues_finished_work_that_is_then_done_twice() {
    require_rabbitmq();
    let r = run("amqp-double-ack.yaml", |t| t);
    let why = &r.why;
    assert_eq!(r.report["verdict"], "DUPLICATED", "{why}");
    assert_eq!(r.code, Some(1), "exactly-once broken: {why}");
    double_ack_fault(&r);
    let counts = &r.report["counts"];
    assert_eq!(counts["lost"], 0, "the requeue lost nothing: {why}");
    let dups: Vec<&Value> = r.report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == "duplicated")
        .collect();
    assert!(!dups.is_empty(), "{why}");
    assert!(
        dups.iter().all(|a| a["mechanism"] == "channel_closed"),
        "{dups:?}"
    );
    // Each repeat is explained by the closed channel's requeue, blaming the fault, not as a
    // crash or a retry.
    let groups = r.report["mechanisms"].as_array().expect("mechanisms");
    let mechanisms: Vec<&Value> = groups.iter().map(|g| &g["mechanism"]).collect();
    assert!(
        groups.iter().all(|g| g["mechanism"] == "channel_closed"),
        "{mechanisms:?} {why}"
    );
    assert!(groups.iter().all(|g| g["fault"] == 0), "{groups:?}");
    assert!(
        r.markdown
            .contains("closed at RabbitMQ while it held this message unacknowledged"),
        "{}",
        r.markdown
    );
    // The example consumer does not hang on the closed channel: it exits 1, is restarted and
    // finishes the queue.
    assert!(
        r.markdown
            .contains("consumer[0] incarnation 1 exited (exit 1)"),
        "{}",
        r.markdown
    );
    assert_eq!(counts["pending"], 0, "{why}");
}

#[test]
fn an_idempotent_consumer_survives_the_double_acks_channel_close() {
    require_rabbitmq();
    let r = run("amqp-double-ack.yaml", |t| {
        t.replace("ack-after-effect", "idempotent").replace(
            "  id: json:/order_id",
            "  id: json:/order_id\n  idempotency_key: header:Idempotency-Key",
        )
    });
    let why = &r.why;
    assert_eq!(r.report["verdict"], "EXACT", "{why}");
    assert_eq!(r.code, Some(0), "{why}");
    double_ack_fault(&r);
    assert_eq!(r.report["counts"]["exact"], 100, "{why}");
}

/// A plan for tests/consumers/amqp_publishes.py (which publishes each message, confirmed,
/// before its effect) with `amqp: blocked` for 2 s after the 10th ack.
fn blocked_plan(dir: &std::path::Path, args: &str) -> std::path::PathBuf {
    let script = root().join("tests/consumers/amqp_publishes.py");
    let text = format!(
        r#"name: amqp-blocked
broker:
  kind: amqp
  url: amqp://guest:guest@127.0.0.1:5672/%2f
  queue: orders-{{run}}
  prefetch: 5
workload:
  messages: 40
  payload: '{{"order_id":"{{id}}","amount":42}}'
consumer:
  command: [python3, "{}"{args}]
effects:
  sink: http
  id: json:/order_id
faults:
  - amqp: blocked
    for: 2s
    when: {{ after: ack, nth: 10 }}
expect: exactly-once
limits: {{ settle: 2s, deadline: 60s }}
seed: 49
"#,
        script.display()
    );
    let path = dir.join("amqp-blocked.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The run of [`blocked_plan`]: its report, the fault, the effects' and held publishes' times.
struct Blocked {
    code: Option<i32>,
    report: Value,
    fault: FaultRecord,
    effects_at: Vec<u64>,
    held_publishes: Vec<u64>,
    stderr: String,
    why: String,
}

fn run_blocked(args: &str) -> Blocked {
    let tmp = tempfile::tempdir().unwrap();
    let plan = blocked_plan(tmp.path(), args);
    let dir = tmp.path().join("run");
    let (out, report) = run_plan(&plan, &dir, &[]);
    let events = read_events(&dir.join("events.jsonl")).expect("events.jsonl");
    let mut faults = Vec::new();
    let (mut effects_at, mut held_publishes) = (Vec::new(), Vec::new());
    for st in &events {
        match &st.event {
            Event::Fault(f) => faults.push(FaultRecord::clone(f)),
            Event::Effect { .. } => effects_at.push(st.t_us),
            Event::Held {
                at: exactly::timeline::HeldAt::Publish,
                held_us,
                ..
            } => held_publishes.push(*held_us),
            _ => {}
        }
    }
    let why = explain(&out, &report);
    assert_eq!(faults.len(), 1, "{faults:?} {why}");
    Blocked {
        code: out.status.code(),
        report,
        fault: faults.remove(0),
        effects_at,
        held_publishes,
        stderr: std::fs::read_to_string(dir.join("logs/consumer-0-1.stderr")).unwrap_or_default(),
        why,
    }
}

#[test]
fn a_blocked_connections_publishes_are_held_for_the_window_and_land_after_it() {
    require_rabbitmq();
    let r = run_blocked("");
    let why = &r.why;
    let f = &r.fault;
    assert!(f.applied, "{f:?} {why}");
    assert!(
        f.detail
            .starts_with("sent connection.blocked (reason \"low on memory\""),
        "{f:?}"
    );
    assert_eq!(f.length_us, Some(2_000_000), "{f:?}");
    // The consumer heard both notifications.
    assert!(
        r.stderr.contains("connection.blocked (low on memory)")
            && r.stderr.contains("connection.unblocked"),
        "{}",
        r.stderr
    );
    // Its next publish was held for (nearly) the whole window, then landed: RabbitMQ
    // confirmed it and the effect that waits for the confirm came after the window.
    let longest = r.held_publishes.iter().copied().max().unwrap_or(0);
    assert!(
        (1_500_000..=4_000_000).contains(&longest),
        "{:?} {why}",
        r.held_publishes
    );
    let (from, to) = (f.fired_at_us + 300_000, f.fired_at_us + 1_900_000);
    let inside: Vec<u64> = r
        .effects_at
        .iter()
        .copied()
        .filter(|t| *t > from && *t < to)
        .collect();
    assert!(inside.is_empty(), "effects while blocked: {inside:?} {why}");
    let after = r.effects_at.iter().filter(|t| **t >= to).count();
    assert!(after > 0, "{why}");
    assert_eq!(r.report["verdict"], "EXACT", "{why}");
    assert_eq!(r.code, Some(0), "{why}");
    assert_eq!(r.report["counts"]["exact"], 40, "{why}");
}

#[test]
fn a_client_without_the_blocked_capability_is_not_sent_it_and_the_fault_says_why() {
    require_rabbitmq();
    let r = run_blocked(", --no-blocked-capability");
    let why = &r.why;
    let f = &r.fault;
    assert!(!f.applied, "{f:?} {why}");
    assert!(
        f.detail
            .contains("did not announce the connection.blocked capability"),
        "{f:?}"
    );
    assert!(r.held_publishes.is_empty(), "{:?}", r.held_publishes);
    assert!(!r.stderr.contains("connection.blocked"), "{}", r.stderr);
    assert_eq!(r.report["counts"]["lost"], 0, "{why}");
    assert_eq!(r.report["counts"]["duplicated"], 0, "{why}");
}
