//! `report.json`: the machine-readable report, with a versioned schema.
//!
//! Invariants: `schema_version` changes whenever a key is renamed or removed (adding keys does
//! not); times are µs since the run started, in keys ending `_us`; the anomaly list is capped
//! per outcome ([`ANOMALIES_PER_OUTCOME`]) so huge runs stay readable, and `anomalies_truncated`
//! says how many were left out; the counts are always exact.

use crate::judge::commit_window::{CommitAhead, CommitWindow};
use std::collections::BTreeMap;

use serde::Serialize;

use super::{end_reason_str, redact_address, summary_sentence};
use crate::judge::{
    Anomaly, BoundaryJudgement, Counts, EffectSeen, FailedProduce, Incarnation, InconclusiveReason,
    Judgement, Outcome, ProgressSnapshot, RejectedEffect, UnfiredFault,
};
use crate::timeline::{FaultRecord, ProcessRef, ProduceStatus, RunInfo};

/// The version of the `report.json` layout.
pub const SCHEMA_VERSION: u32 = 1;

/// At most this many anomalies of each outcome are listed (7 outcomes: 1400 in all).
pub const ANOMALIES_PER_OUTCOME: usize = 200;

#[derive(Serialize)]
struct JsonReport<'a> {
    schema_version: u32,
    verdict: &'static str,
    expect: &'a str,
    expectation_met: Option<bool>,
    /// `met`, `violated` or `unknown` (met only when the evidence covers what the claim
    /// forbids).
    expectation_state: &'static str,
    /// When unknown: the shortfalls that hide what the claim forbids.
    expectation_unknown_because: Vec<JsonReason>,
    exit_code: i32,
    summary: String,
    mock_broker: bool,
    run: Option<JsonRun<'a>>,
    end_reason: Option<&'static str>,
    ended_at_us: Option<u64>,
    counts: &'a Counts,
    faults_planned: usize,
    faults_fired: &'a [usize],
    faults_unfired: &'a [UnfiredFault],
    /// Planned faults applied only when they hit nothing (not exercised).
    faults_hit_nothing: &'a [UnfiredFault],
    /// Faults that fired only while a consumer connection bypassed the proxy (not exercised).
    faults_bypassed: &'a [UnfiredFault],
    /// Consumer connections seen straight to the broker, past the proxy.
    bypass: &'a [crate::judge::bypass::Bypass],
    faults: Vec<JsonFault<'a>>,
    inconclusive_reasons: Vec<JsonReason>,
    caveats: Vec<JsonReason>,
    anomalies: Vec<JsonAnomaly<'a>>,
    anomalies_truncated: usize,
    commits_ahead_of_effects: &'a CommitWindow,
    /// Lost and duplicated IDs grouped by how they happened, with evidence.
    mechanisms: &'a [crate::judge::mechanism::MechanismGroup],
    /// Messages applied out of their key's produce order.
    key_order: &'a crate::judge::key_order::KeyOrder,
    /// Frames held by the proxy for triggers, and how long.
    holds: &'a crate::judge::Holds,
    /// The sink's answers held for `during: effect` faults, and how long.
    effect_holds: &'a crate::judge::Holds,
    /// Requests the proxy answered with a protocol fault's reply, and what the broker had.
    protocol_replies: &'a [crate::judge::replies::Reply],
    /// Proxied consumer connections that ended before the run did (AMQP).
    connections_closed: &'a [crate::judge::ConnectionClosed],
    /// Partition ownership over time (assignments seen by the proxy).
    ownership: &'a [crate::judge::mechanism::OwnershipChange],
    consumer_settings: &'a [crate::judge::ConsumerSetting],
    incarnations: &'a [Incarnation],
    progress: Option<&'a ProgressSnapshot>,
    failed_produces: &'a [FailedProduce],
    rejected_effects: &'a [RejectedEffect],
    warnings: &'a [String],
    /// What was read back from output topics (`kafka-topic` boundaries).
    output_topics: &'a [crate::judge::OutputTopicRead],
    /// What became of each poison message, and whether its partition or queue kept moving.
    poison: &'a [crate::judge::PoisonFate],
    /// Each boundary's own ruling, for a plan that declared `boundaries` (the top level is
    /// then the overall ruling, its counts summed over the boundaries); empty for a plan with
    /// one `effects` sink, whose top level is its one boundary.
    boundaries: Vec<JsonBoundary<'a>>,
}

/// One boundary's ruling.
#[derive(Serialize)]
struct JsonBoundary<'a> {
    name: &'a str,
    sink: &'a str,
    expect: &'a str,
    verdict: &'static str,
    expectation_met: Option<bool>,
    expectation_state: &'static str,
    expectation_unknown_because: Vec<JsonReason>,
    summary: String,
    counts: &'a Counts,
    inconclusive_reasons: Vec<JsonReason>,
    caveats: Vec<JsonReason>,
    anomalies: Vec<JsonAnomaly<'a>>,
    anomalies_truncated: usize,
    mechanisms: &'a [crate::judge::mechanism::MechanismGroup],
    commits_ahead_of_effects: &'a CommitWindow,
    key_order: &'a crate::judge::key_order::KeyOrder,
    output_topics: &'a [crate::judge::OutputTopicRead],
}

impl<'a> JsonBoundary<'a> {
    fn new(b: &'a BoundaryJudgement) -> Self {
        let j = &b.judgement;
        let (anomalies, anomalies_truncated) = capped(j);
        JsonBoundary {
            name: &b.name,
            sink: b.sink.as_str(),
            expect: &b.expect,
            verdict: j.verdict.as_str(),
            expectation_met: j.expectation_met,
            expectation_state: j.expectation_state.as_str(),
            expectation_unknown_because: reasons(&j.expectation_unknown),
            summary: summary_sentence(j),
            counts: &j.counts,
            inconclusive_reasons: reasons(&j.inconclusive_reasons),
            caveats: reasons(&j.caveats),
            anomalies,
            anomalies_truncated,
            mechanisms: &j.mechanisms.groups,
            commits_ahead_of_effects: &j.commits_ahead,
            key_order: &j.key_order,
            output_topics: &j.output_topics,
        }
    }
}

fn reasons(list: &[InconclusiveReason]) -> Vec<JsonReason> {
    list.iter().map(JsonReason::new).collect()
}

#[derive(Serialize)]
struct JsonRun<'a> {
    run: &'a str,
    plan: &'a str,
    description: Option<&'a str>,
    broker: &'a str,
    broker_address: String,
    topic: &'a str,
    group: &'a str,
    seed: u64,
    messages: u64,
    planned_faults: &'a [String],
    reproduce: &'a str,
    /// The plan's `effects.id` rule, when the timeline has it.
    effects_id: Option<&'a str>,
}

impl<'a> JsonRun<'a> {
    fn new(r: &'a RunInfo) -> JsonRun<'a> {
        JsonRun {
            run: &r.run,
            plan: &r.plan,
            description: r.description.as_deref(),
            broker: &r.broker,
            broker_address: redact_address(&r.broker_address),
            topic: &r.topic,
            group: &r.group,
            seed: r.seed,
            messages: r.messages,
            planned_faults: &r.planned_faults,
            reproduce: &r.reproduce,
            effects_id: r.effects_id.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct JsonFault<'a> {
    fault: usize,
    /// The plan's line for this fault, when the plan has it.
    planned: Option<&'a str>,
    action: &'a str,
    target: &'a str,
    trigger: &'a str,
    matched_at_us: u64,
    fired_at_us: u64,
    trigger_latency_us: u64,
    applied: bool,
    /// Applied to at least one consumer incarnation (or an action that needs none).
    exercised: bool,
    /// The incarnations it hit.
    hit: &'a [ProcessRef],
    detail: &'a str,
    /// Acts on the proxied connections or counts what the proxy sees (a bypass escapes it).
    through_proxy: bool,
}

#[derive(Serialize)]
struct JsonReason {
    code: &'static str,
    message: String,
    #[serde(flatten)]
    detail: BTreeMap<String, serde_json::Value>,
}

impl JsonReason {
    fn new(r: &InconclusiveReason) -> Self {
        // The tagged serialization of the reason gives its fields; the tag is `code`.
        let detail = match serde_json::to_value(r) {
            Ok(serde_json::Value::Object(map)) => {
                map.into_iter().filter(|(k, _)| k != "code").collect()
            }
            _ => BTreeMap::new(),
        };
        JsonReason {
            code: r.code(),
            message: r.to_string(),
            detail,
        }
    }
}

#[derive(Serialize)]
struct JsonAnomaly<'a> {
    id: &'a str,
    outcome: Outcome,
    produce_status: Option<ProduceStatus>,
    partition: Option<i32>,
    offset: Option<i64>,
    produced_at_us: Option<u64>,
    committed: Option<i64>,
    /// The accepted commit that passed this offset before its effect, if any.
    committed_before_effect: Option<&'a CommitAhead>,
    /// How it was lost or duplicated (see `mechanisms`).
    mechanism: Option<crate::judge::mechanism::Mechanism>,
    /// Duplicated only by the consumer's retries of an answer the harness held: not counted
    /// against the consumer (`counts.harness_duplicated`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    harness_hold: bool,
    applied: usize,
    effects: &'a [EffectSeen],
}

impl<'a> JsonAnomaly<'a> {
    fn new(a: &'a Anomaly, rec: &'a Judgement) -> Self {
        JsonAnomaly {
            id: &a.id,
            outcome: a.outcome,
            produce_status: a.produce_status,
            partition: a.partition,
            offset: a.offset,
            produced_at_us: a.produced_at_us,
            committed: a.committed,
            committed_before_effect: rec.commits_ahead.for_id(&a.id),
            mechanism: rec.mechanisms.of(&a.id),
            harness_hold: rec.mechanisms.caused_by_harness(&a.id),
            applied: a.applied(),
            effects: &a.effects,
        }
    }
}

fn fault<'a>(f: &'a FaultRecord, rec: &'a Judgement) -> JsonFault<'a> {
    JsonFault {
        fault: f.fault,
        planned: rec
            .run
            .as_ref()
            .and_then(|r| r.planned_faults.get(f.fault))
            .map(String::as_str),
        action: &f.action,
        target: &f.target,
        trigger: &f.trigger,
        matched_at_us: f.matched_at_us,
        fired_at_us: f.fired_at_us,
        trigger_latency_us: f.trigger_latency_us,
        applied: f.applied,
        exercised: f.applied && !crate::judge::hit_nothing(f),
        hit: &f.hit,
        detail: &f.detail,
        through_proxy: f.through_proxy,
    }
}

/// The anomalies to list, at most [`ANOMALIES_PER_OUTCOME`] per outcome in report order, and
/// how many were left out.
fn capped(rec: &Judgement) -> (Vec<JsonAnomaly<'_>>, usize) {
    let mut listed = Vec::new();
    let mut left_out = 0;
    for outcome in Outcome::ANOMALIES {
        let mut n = 0;
        for a in rec.anomalies_of(outcome) {
            if n < ANOMALIES_PER_OUTCOME {
                listed.push(JsonAnomaly::new(a, rec));
                n += 1;
            } else {
                left_out += 1;
            }
        }
    }
    (listed, left_out)
}

/// Renders `report.json` (pretty-printed, newline-terminated).
pub fn render(rec: &Judgement) -> std::io::Result<String> {
    let (anomalies, anomalies_truncated) = capped(rec);
    let report = JsonReport {
        schema_version: SCHEMA_VERSION,
        verdict: rec.verdict.as_str(),
        expect: rec.expect_str(),
        expectation_met: rec.expectation_met,
        expectation_state: rec.expectation_state.as_str(),
        expectation_unknown_because: rec
            .expectation_unknown
            .iter()
            .map(JsonReason::new)
            .collect(),
        exit_code: rec.exit_code(),
        summary: summary_sentence(rec),
        mock_broker: rec.mock_broker(),
        run: rec.run.as_ref().map(JsonRun::new),
        end_reason: rec.end_reason.map(end_reason_str),
        ended_at_us: rec.ended_at_us,
        counts: &rec.counts,
        faults_planned: rec.faults_planned,
        faults_fired: &rec.faults_fired,
        faults_unfired: &rec.faults_unfired,
        faults_hit_nothing: &rec.faults_hit_nothing,
        faults_bypassed: &rec.faults_bypassed,
        bypass: &rec.bypasses,
        faults: rec.faults.iter().map(|f| fault(f, rec)).collect(),
        inconclusive_reasons: rec
            .inconclusive_reasons
            .iter()
            .map(JsonReason::new)
            .collect(),
        caveats: rec.caveats.iter().map(JsonReason::new).collect(),
        anomalies,
        anomalies_truncated,
        commits_ahead_of_effects: &rec.commits_ahead,
        mechanisms: &rec.mechanisms.groups,
        key_order: &rec.key_order,
        ownership: &rec.ownership,
        connections_closed: &rec.connections_closed,
        holds: &rec.holds,
        effect_holds: &rec.effect_holds,
        protocol_replies: &rec.replies,
        consumer_settings: &rec.consumer_settings,
        incarnations: &rec.incarnations,
        progress: rec.last_progress.as_ref(),
        failed_produces: &rec.failed_samples,
        rejected_effects: &rec.rejected_samples,
        warnings: &rec.warnings,
        output_topics: &rec.output_topics,
        poison: &rec.poison,
        boundaries: rec.boundaries.iter().map(JsonBoundary::new).collect(),
    };
    let mut text = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::judge::analyze;
    use crate::judge::fixtures::{duplicated_run, Tl};
    use crate::timeline::EndReason;

    fn parse(rec: &Judgement) -> Value {
        serde_json::from_str(&render(rec).expect("renders")).expect("report.json parses")
    }

    #[test]
    fn report_json_parses_and_has_the_required_keys() {
        let v = parse(&analyze(&duplicated_run().events));
        for key in [
            "schema_version",
            "verdict",
            "expectation_met",
            "expect",
            "counts",
            "faults",
            "anomalies",
            "anomalies_truncated",
            "inconclusive_reasons",
            "incarnations",
            "run",
            "mock_broker",
            "end_reason",
            "warnings",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["verdict"], "DUPLICATED");
        assert_eq!(v["expect"], "at-least-once");
        assert_eq!(v["expectation_met"], true);
        assert_eq!(v["end_reason"], "settled");
        for key in [
            "produced",
            "effected",
            "exact",
            "duplicated",
            "lost",
            "pending",
            "phantom",
        ] {
            assert!(v["counts"][key].is_u64(), "counts.{key}");
        }
        assert_eq!(v["counts"]["duplicated"], 1);
    }

    #[test]
    fn anomalies_carry_their_effects() {
        let v = parse(&analyze(&duplicated_run().events));
        let a = &v["anomalies"][0];
        assert_eq!(a["id"], "m-1");
        assert_eq!(a["outcome"], "duplicated");
        assert_eq!(a["partition"], 0);
        assert_eq!(a["offset"], 1);
        assert_eq!(a["effects"].as_array().map(Vec::len), Some(2));
        assert_eq!(a["effects"][1]["incarnation"], 2);
        assert_eq!(a["effects"][1]["outcome"], "applied");
        assert!(a["effects"][0]["t_us"].is_u64());
    }

    #[test]
    fn faults_say_when_and_whether_they_were_applied() {
        let v = parse(&analyze(&duplicated_run().events));
        let f = &v["faults"][0];
        assert_eq!(f["fault"], 0);
        assert_eq!(f["action"], "kill");
        assert_eq!(f["applied"], true);
        assert_eq!(f["trigger_latency_us"], 150);
        assert!(f["fired_at_us"].is_u64());
        assert_eq!(f["planned"], "kill: consumer when {after: effect, nth: 2}");
    }

    #[test]
    fn inconclusive_reasons_have_code_message_and_detail() {
        let mut tl = Tl::new();
        tl.start(&["kill: consumer"], 1, "at-least-once")
            .produced("a", 0, 0)
            .effect("a", 1)
            .end(EndReason::Settled);
        let v = parse(&analyze(&tl.events));
        assert_eq!(v["verdict"], "INCONCLUSIVE");
        assert_eq!(v["expectation_met"], Value::Null);
        assert_eq!(v["exit_code"], 3);
        let r = &v["inconclusive_reasons"][0];
        assert_eq!(r["code"], "faults_not_fired");
        assert_eq!(r["faults"][0]["fault"], 0);
        assert!(r["message"]
            .as_str()
            .is_some_and(|m| m.contains("never fired")));
    }

    #[test]
    fn an_unknown_claim_keeps_expectation_met_null_and_says_why() {
        // A duplicate proven, the run aborted: at-least-once is unknown, not met.
        let mut tl = duplicated_run();
        tl.events.pop();
        tl.end(EndReason::Aborted);
        let v = parse(&analyze(&tl.events));
        assert_eq!(v["verdict"], "DUPLICATED");
        assert_eq!(v["expectation_met"], Value::Null);
        assert_eq!(v["expectation_state"], "unknown");
        assert_eq!(v["expectation_unknown_because"][0]["code"], "aborted");
        assert_eq!(v["caveats"][0]["code"], "aborted");
        assert_eq!(v["exit_code"], 3);

        let v = parse(&analyze(&duplicated_run().events));
        assert_eq!(v["expectation_state"], "met");
        assert_eq!(v["expectation_unknown_because"], serde_json::json!([]));
    }

    #[test]
    fn rejected_effects_and_unconfirmed_losses_are_in_the_json() {
        let mut tl = Tl::new();
        tl.start(&["kill: consumer"], 1, "at-least-once")
            .produced("a", 0, 0)
            .fault(0, true)
            .push(crate::timeline::Event::EffectRejected {
                boundary: None,
                reason: "no message ID found by the `effects.id` rule".into(),
                sample: r#"{"id":"a"}"#.into(),
            });
        tl.progress(&[(0, 1)]).end(EndReason::Settled);
        let v = parse(&analyze(&tl.events));
        assert_eq!(v["counts"]["unconfirmed_loss"], 1);
        assert_eq!(v["counts"]["lost"], 0);
        assert_eq!(v["anomalies"][0]["outcome"], "unconfirmed_loss");
        let r = &v["inconclusive_reasons"][0];
        assert_eq!(r["code"], "effects_unread");
        assert_eq!(r["rule"], "json:/order_id");
        assert_eq!(r["sample"], r#"{"id":"a"}"#);
        assert_eq!(v["rejected_effects"][0]["sample"], r#"{"id":"a"}"#);
        assert_eq!(v["run"]["effects_id"], "json:/order_id");
    }

    #[test]
    fn work_never_counted_done_and_faults_that_hit_nothing_are_in_the_json() {
        let mut tl = Tl::new();
        tl.start(&["kill: consumer", "kill: consumer"], 1, "at-least-once")
            .produced("a", 0, 0)
            .fault(0, true)
            .fault(1, true);
        if let Some(crate::timeline::Event::Fault(f)) = tl.events.last_mut().map(|e| &mut e.event) {
            f.hit.clear();
        }
        tl.effect("a", 1)
            .progress(&[(0, 0)])
            .end(EndReason::Settled);
        let v = parse(&analyze(&tl.events));
        assert_eq!(v["counts"]["not_counted_done"], 1);
        assert_eq!(v["faults"][0]["exercised"], true);
        assert_eq!(v["faults"][0]["hit"][0]["incarnation"], 1);
        assert_eq!(v["faults"][1]["exercised"], false);
        assert_eq!(v["faults_hit_nothing"][0]["fault"], 1);
        let codes: Vec<&str> = v["inconclusive_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["code"].as_str())
            .collect();
        assert_eq!(codes, ["faults_hit_nothing"]);
        assert_eq!(v["caveats"][0]["code"], "not_counted_done");
        assert_eq!(v["caveats"][0]["count"], 1);
    }

    #[test]
    fn huge_anomaly_lists_are_capped_per_outcome() {
        let mut tl = Tl::new();
        tl.start(&["kill: consumer"], 0, "at-least-once")
            .fault(0, true);
        for i in 0..300 {
            tl.produced(&format!("lost-{i}"), 0, i);
        }
        tl.produced("dup", 1, 0).effect("dup", 1).effect("dup", 2);
        tl.progress(&[(0, 300), (1, 1)]).end(EndReason::Settled);
        let v = parse(&analyze(&tl.events));
        let listed = v["anomalies"].as_array().map(Vec::len);
        assert_eq!(listed, Some(ANOMALIES_PER_OUTCOME + 1));
        assert_eq!(v["anomalies_truncated"], 300 - ANOMALIES_PER_OUTCOME);
        assert_eq!(v["counts"]["lost"], 300, "counts stay exact");
        assert!(
            v["anomalies"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["id"] == "dup")),
            "the duplicate is not crowded out by the losses"
        );
    }

    #[test]
    fn broker_passwords_are_redacted() {
        let mut events = duplicated_run().events;
        if let crate::timeline::Event::RunStarted(info) = &mut events[0].event {
            info.broker_address = "amqp://guest:hunter2@127.0.0.1:5672/%2f".into();
        }
        let text = render(&analyze(&events)).expect("renders");
        assert!(!text.contains("hunter2"));
        assert!(text.contains("guest:***@"));
    }

    #[test]
    fn an_empty_timeline_still_renders() {
        let v = parse(&analyze(&[]));
        assert_eq!(v["verdict"], "INCONCLUSIVE");
        assert_eq!(v["run"], Value::Null);
        assert_eq!(v["expect"], "none");
    }
}
