//! The honesty rules (DESIGN §12, issues 12 and 13) on hand-written timelines: a blind oracle
//! never proves a loss, a claim is met only when the evidence covers what it forbids, EXACT
//! needs the work counted done, a run without any effect and a fault that hit nothing prove
//! nothing.

use super::*;
use crate::judge::fixtures::{duplicated_run, produced_event, Tl};
use crate::timeline::Event;
use crate::timeline::{EndReason, FaultRecord, ProcessPhase, ProcessRef, ProduceStatus};

const KILL: &str = "kill: consumer when {after: effect, nth: 2}";

/// A fired fault, then `ids` produced on partition 0 at offsets 0.. .
fn run_of(ids: &[&str], expect: &str) -> Tl {
    let mut tl = Tl::new();
    tl.start(&[KILL], ids.len() as u64, expect);
    for (i, id) in ids.iter().enumerate() {
        tl.produced(id, 0, i as i64);
    }
    tl.process(1, ProcessPhase::Started).fault(0, true);
    tl
}

fn rejected(tl: &mut Tl, body: &str) {
    tl.push(Event::EffectRejected {
        boundary: None,
        reason: "no message ID found by the `effects.id` rule".into(),
        sample: body.into(),
    });
}

fn codes(reasons: &[InconclusiveReason]) -> Vec<&'static str> {
    reasons.iter().map(InconclusiveReason::code).collect()
}

fn outcome_of(rec: &Judgement, id: &str) -> Option<Outcome> {
    rec.anomalies.iter().find(|a| a.id == id).map(|a| a.outcome)
}

// 1. Effects the sink could not read make loss unprovable.

#[test]
fn every_effect_rejected_makes_the_run_inconclusive_not_lost() {
    // The default payload read with `json:/order_id`: every effect is rejected.
    let mut tl = run_of(&["a", "b"], "at-least-once");
    rejected(&mut tl, r#"{"id":"a"}"#);
    rejected(&mut tl, r#"{"id":"b"}"#);
    tl.progress(&[(0, 2)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!((rec.counts.lost, rec.counts.unconfirmed_loss), (0, 2));
    assert_eq!(outcome_of(&rec, "a"), Some(Outcome::UnconfirmedLoss));
    assert_eq!(
        codes(&rec.inconclusive_reasons),
        vec!["effects_unread", "nothing_observed"]
    );
    let text = rec.inconclusive_reasons[0].to_string();
    assert!(text.contains("rejected 2 effects"), "{text}");
    assert!(text.contains("`json:/order_id`"), "names the rule: {text}");
    assert!(
        text.contains(r#"body: `{"id":"a"}`"#),
        "shows a body: {text}"
    );
    assert!(text.contains("2 messages"), "{text}");
    assert!(
        rec.mechanisms.groups.is_empty(),
        "no mechanism for an unproven loss"
    );
    assert_eq!(rec.expectation_state, ExpectationState::Unknown);
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn one_rejected_effect_keeps_a_missing_id_from_being_called_lost() {
    let mut tl = run_of(&["a", "b", "c"], "at-least-once");
    tl.effect("a", 1).effect("b", 1);
    rejected(&mut tl, "garbage");
    tl.progress(&[(0, 3)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(outcome_of(&rec, "c"), Some(Outcome::UnconfirmedLoss));
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["effects_unread"]);
    assert_eq!(rec.exit_code(), 3);

    // The same run with every effect read: c is lost.
    let mut tl = run_of(&["a", "b", "c"], "at-least-once");
    tl.effect("a", 1)
        .effect("b", 1)
        .progress(&[(0, 3)])
        .end(EndReason::Settled);
    assert_eq!(analyze(&tl.events).verdict, Verdict::Lost);
}

#[test]
fn rejected_effects_beside_full_coverage_still_block_exact() {
    // Every ID applied once, but a rejected effect may have been a second application.
    let mut tl = run_of(&["a", "b"], "exactly-once");
    tl.effect("a", 1).effect("b", 1);
    rejected(&mut tl, "{}");
    tl.progress(&[(0, 2)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(rec.counts.unconfirmed_loss, 0);
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["effects_unread"]);
}

#[test]
fn a_duplicate_proven_beside_rejected_effects_stands_with_the_claim_unknown() {
    let mut tl = duplicated_run();
    tl.events.pop(); // run_ended
    rejected(&mut tl, "{}");
    tl.end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Duplicated);
    assert_eq!(codes(&rec.caveats), vec!["effects_unread"]);
    assert_eq!(rec.expectation_state, ExpectationState::Unknown);
    assert_eq!(rec.expectation_met, None);
    assert_eq!(codes(&rec.expectation_unknown), vec!["effects_unread"]);
    assert_eq!(rec.exit_code(), 3);
}

// 2. An expectation is met only when the evidence covers what it forbids.

#[test]
fn at_least_once_with_pending_messages_is_unknown_even_with_a_proven_duplicate() {
    let mut tl = run_of(&["a", "b", "c"], "at-least-once");
    // a applied twice, b once; c neither effected nor committed past: pending.
    tl.effect("a", 1)
        .effect("a", 2)
        .effect("b", 2)
        .progress(&[(0, 2)])
        .end(EndReason::Deadline);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Duplicated);
    assert_eq!(rec.expectation_state, ExpectationState::Unknown);
    assert_eq!(codes(&rec.expectation_unknown), vec!["pending"]);
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn an_aborted_run_never_exits_0() {
    for expect in ["at-least-once", "at-most-once", "exactly-once"] {
        let mut tl = duplicated_run();
        tl.events.pop();
        tl.end(EndReason::Aborted);
        if let Event::RunStarted(info) = &mut tl.events[0].event {
            info.expect = expect.into();
        }
        let rec = analyze(&tl.events);
        assert_eq!(rec.verdict, Verdict::Duplicated, "{expect}");
        assert_ne!(rec.exit_code(), 0, "{expect}");
    }
    // at-least-once allows the duplicate, but the interrupted run hides any loss: unknown.
    let mut tl = duplicated_run();
    tl.events.pop();
    tl.end(EndReason::Aborted);
    let rec = analyze(&tl.events);
    assert_eq!(rec.expectation_state, ExpectationState::Unknown);
    assert_eq!(codes(&rec.expectation_unknown), vec!["aborted"]);
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn a_run_that_never_ended_hides_both_sides_of_a_claim() {
    let mut tl = duplicated_run();
    tl.events.pop();
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Duplicated);
    assert_eq!(codes(&rec.expectation_unknown), vec!["run_not_ended"]);
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn a_proven_violation_stands_whatever_the_evidence_missed() {
    let mut tl = run_of(&["a", "b", "c"], "at-least-once");
    // a lost (committed past, no effect), c pending, the run aborted.
    tl.effect("b", 1)
        .progress(&[(0, 2)])
        .end(EndReason::Aborted);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Lost);
    assert_eq!(rec.expectation_state, ExpectationState::Violated);
    assert_eq!(rec.exit_code(), 1);
}

#[test]
fn each_claim_looks_only_at_the_side_it_forbids() {
    // a lost, b applied once and committed, c pending: a loss is proven, duplicates are not.
    let judged = |expect: &str| {
        let mut tl = run_of(&["a", "b", "c"], expect);
        tl.effect("b", 1)
            .progress(&[(0, 2)])
            .end(EndReason::Settled);
        analyze(&tl.events)
    };
    // at-most-once forbids duplicates only: the pending message hides nothing it forbids.
    let rec = judged("at-most-once");
    assert_eq!(rec.verdict, Verdict::Lost);
    assert_eq!(rec.expectation_state, ExpectationState::Met);
    assert_eq!(rec.exit_code(), 0);
    assert_eq!(
        judged("exactly-once").expectation_state,
        ExpectationState::Violated
    );
}

// 3. EXACT needs the work counted done.

#[test]
fn exact_without_any_commit_stands_but_its_promise_is_unknown() {
    for expect in ["at-least-once", "at-most-once", "exactly-once"] {
        let mut tl = run_of(&["a", "b"], expect);
        // The consumer never commits: the group's committed offset stays where it began.
        tl.effect("a", 1)
            .effect("b", 1)
            .progress(&[(0, 0)])
            .end(EndReason::Settled);
        let rec = analyze(&tl.events);
        assert_eq!(rec.verdict, Verdict::Exact, "{expect}");
        assert_eq!(rec.counts.not_counted_done, 2, "{expect}");
        assert_eq!(codes(&rec.caveats), vec!["not_counted_done"], "{expect}");
        let text = rec.caveats[0].to_string();
        assert!(
            text.contains("never counted 2 processed messages done"),
            "{text}"
        );
        assert!(text.contains("never committed"), "{text}");
        assert_eq!(rec.expectation_state, ExpectationState::Unknown, "{expect}");
        assert_eq!(rec.exit_code(), 3, "{expect}");
    }
}

#[test]
fn exact_with_every_offset_committed_meets_its_claim() {
    let mut tl = run_of(&["a", "b"], "exactly-once");
    tl.effect("a", 1)
        .effect("b", 1)
        .progress(&[(0, 2)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.counts.not_counted_done, 0);
    assert!(rec.caveats.is_empty());
    assert_eq!(rec.expectation_state, ExpectationState::Met);
    assert_eq!(rec.exit_code(), 0);
}

#[test]
fn amqp_messages_effected_but_back_in_the_queue_were_never_acked() {
    let mut tl = Tl::new();
    tl.start(&[KILL], 2, "exactly-once");
    for (i, id) in ["q-1", "q-2"].iter().enumerate() {
        tl.push(produced_event(
            id,
            None,
            Some(i as i64 + 1),
            ProduceStatus::Acked,
        ));
    }
    tl.process(1, ProcessPhase::Started)
        .fault(0, true)
        .effect("q-1", 1)
        .effect("q-2", 1);
    // q-2 came back to the queue once the consumers stopped: never acked.
    tl.push(Event::QueueRemainder {
        ids: vec!["q-2".into()],
        complete: true,
    });
    if let Event::RunStarted(info) = &mut tl.events[0].event {
        info.broker = "amqp".into();
    }
    tl.end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.counts.not_counted_done, 1);
    assert!(rec.caveats[0].to_string().contains("never acknowledged"));
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn uncommitted_work_beside_a_duplicate_still_meets_at_least_once() {
    // a applied twice, b applied once and never committed: a restart would redo b, which
    // at-least-once allows; at-most-once cannot be met by what was seen.
    let judged = |expect: &str| {
        let mut tl = run_of(&["a", "b"], expect);
        tl.effect("a", 1)
            .effect("a", 2)
            .effect("b", 2)
            .progress(&[(0, 1)])
            .end(EndReason::Settled);
        analyze(&tl.events)
    };
    let rec = judged("at-least-once");
    assert_eq!(rec.verdict, Verdict::Duplicated);
    assert_eq!(codes(&rec.caveats), vec!["not_counted_done"]);
    assert_eq!(rec.expectation_state, ExpectationState::Met);
    assert_eq!(rec.exit_code(), 0);
    assert_eq!(judged("at-most-once").exit_code(), 1);
}

// 4. A run with no effect at all.

#[test]
fn a_run_with_no_effect_at_all_is_inconclusive_not_lost() {
    let mut tl = run_of(&["a", "b"], "at-least-once");
    tl.progress(&[(0, 2)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!((rec.counts.lost, rec.counts.unconfirmed_loss), (0, 2));
    assert_eq!(
        rec.inconclusive_reasons,
        vec![InconclusiveReason::NothingObserved { blind: true }]
    );
    let text = rec.inconclusive_reasons[0].to_string();
    assert!(text.contains("no effect named any of them"), "{text}");
    assert!(
        text.contains("logs/ directory: consumer-0-1.stderr"),
        "says where the logs are: {text}"
    );
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn effects_only_for_ids_never_produced_prove_no_loss() {
    // A wrong ID rule that still finds *something*: every effect is a phantom.
    let mut tl = run_of(&["a"], "at-least-once");
    tl.effect("42", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(outcome_of(&rec, "a"), Some(Outcome::UnconfirmedLoss));
}

// 5. A fault that fired but hit nothing.

fn fault_record(action: &str, hit: Vec<ProcessRef>) -> Event {
    Event::Fault(Box::new(FaultRecord {
        fault: 0,
        action: action.into(),
        target: "consumer".into(),
        trigger: "at: 1s".into(),
        matched_at_us: 1_000,
        fired_at_us: 1_100,
        trigger_latency_us: 100,
        applied: true,
        through_proxy: false,
        detail: "partitioned consumer: 1 connection for 2s".into(),
        hit,
        length_us: Some(2_000_000),
    }))
}

fn with_only_fault(event: Event) -> Judgement {
    let mut tl = Tl::new();
    tl.start(
        &["partition: consumer for 2s when {at: 1s}"],
        1,
        "at-least-once",
    )
    .produced("a", 0, 0)
    .process(1, ProcessPhase::Started)
    .push(event);
    tl.effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    analyze(&tl.events)
}

#[test]
fn a_fault_that_fired_but_hit_nothing_is_not_exercised() {
    let rec = with_only_fault(fault_record("partition", Vec::new()));
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert!(rec.faults_fired.is_empty());
    assert!(rec.faults_unfired.is_empty(), "it did fire");
    assert_eq!(rec.faults_hit_nothing.len(), 1);
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["faults_hit_nothing"]);
    let text = rec.inconclusive_reasons[0].to_string();
    assert!(text.contains("fired but hit nothing"), "{text}");
    assert_eq!(rec.exit_code(), 3);

    let hit = vec![ProcessRef {
        instance: 0,
        incarnation: 1,
    }];
    let rec = with_only_fault(fault_record("partition", hit));
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.faults_fired, vec![0]);
}

#[test]
fn group_and_roster_faults_need_no_incarnation_hit() {
    for action in ["rebalance", "scale"] {
        let rec = with_only_fault(fault_record(action, Vec::new()));
        assert_eq!(rec.faults_fired, vec![0], "{action}");
        assert_eq!(rec.verdict, Verdict::Exact, "{action}");
    }
}

#[test]
fn replays_alone_show_the_sink_sees_the_consumer_so_a_loss_stands() {
    // The only effect is a replay: the sink does see the consumer's work, so a message
    // committed past without an applied effect is lost; the caveat does not claim blindness.
    let mut tl = run_of(&["a"], "at-least-once");
    tl.effect_as("a", 1, crate::timeline::EffectOutcome::Replayed)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Lost);
    assert_eq!(
        rec.caveats,
        vec![InconclusiveReason::NothingObserved { blind: false }]
    );
    assert!(rec.caveats[0].to_string().contains("only replays"));
}

// A consumer process the harness could not end (issue 13: containment that holds).

fn survivor(tl: &mut Tl) {
    tl.push(Event::Descendant {
        instance: 0,
        incarnation: 1,
        pid: 4242,
        command: "worker".into(),
        fate: crate::timeline::DescendantFate::Survived,
    });
}

#[test]
fn a_process_alive_after_sigkill_makes_an_exact_looking_run_inconclusive_and_names_it() {
    let mut tl = run_of(&["a", "b"], "at-least-once");
    tl.effect("a", 1).effect("b", 1);
    survivor(&mut tl);
    tl.progress(&[(0, 2)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(
        codes(&rec.inconclusive_reasons),
        vec!["descendants_survived"]
    );
    let text = rec.inconclusive_reasons[0].to_string();
    assert!(text.contains("pid 4242 `worker`"), "{text}");
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn a_process_alive_after_sigkill_keeps_a_missing_effect_from_being_called_lost() {
    let mut tl = run_of(&["a", "b"], "at-least-once");
    tl.effect("a", 1);
    survivor(&mut tl);
    tl.progress(&[(0, 2)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive, "b may yet be applied");
    assert_eq!(rec.expectation_state, ExpectationState::Unknown);
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn a_descendant_the_harness_ended_changes_nothing() {
    let mut tl = run_of(&["a"], "at-least-once");
    tl.effect("a", 1);
    tl.push(Event::Descendant {
        instance: 0,
        incarnation: 1,
        pid: 4243,
        command: "worker".into(),
        fate: crate::timeline::DescendantFate::Ended,
    });
    tl.progress(&[(0, 1)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.exit_code(), 0);
}

#[test]
fn a_protocol_fault_no_request_came_to_answer_is_not_exercised() {
    let hit = vec![ProcessRef {
        instance: 0,
        incarnation: 1,
    }];
    // Armed on the proxy, but no `replied` event follows: nothing was answered with it.
    let rec = with_only_fault(fault_record("fetch_error", hit.clone()));
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(rec.faults_hit_nothing.len(), 1);
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["faults_hit_nothing"]);

    // Answered: exercised.
    let mut tl = Tl::new();
    tl.start(&["fetch_error: OFFSET_OUT_OF_RANGE"], 1, "at-least-once")
        .produced("a", 0, 0)
        .process(1, ProcessPhase::Started)
        .push(fault_record("fetch_error", hit))
        .push(Event::Replied {
            instance: 0,
            incarnation: 1,
            api: "Fetch".into(),
            version: 12,
            sent: "OFFSET_OUT_OF_RANGE".into(),
            offsets: Vec::new(),
            broker: "records withheld".into(),
        });
    tl.effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert!(rec.faults_hit_nothing.is_empty());
    assert_eq!(rec.faults_fired, [0]);
    assert_eq!(rec.verdict, Verdict::Exact);
}

// Loss needs the broker's word and the committing connection (issue 13).

/// `a` effected, `b` not, the group's offset past both; `commits` are the events the proxy
/// saw before the broker's progress was read.
fn committed_by(commits: &[Event]) -> Judgement {
    let mut tl = run_of(&["a", "b"], "at-least-once");
    tl.effect("a", 1);
    for c in commits {
        tl.push(c.clone());
    }
    tl.progress_uncommitted(&[(0, 2)]).end(EndReason::Settled);
    analyze(&tl.events)
}

fn txn(op: crate::timeline::TxnOp, committed: Option<bool>, offset: i64) -> Event {
    use crate::judge::fixtures::committed as offset_of;
    Event::Txn {
        instance: 0,
        incarnation: 1,
        op,
        transactional_id: Some("billing-0".into()),
        producer_id: 7,
        producer_epoch: 0,
        committed,
        request: false,
        offsets: if offset > 0 {
            vec![offset_of("orders-r1", 0, offset)]
        } else {
            Vec::new()
        },
        error: None,
    }
}

#[test]
fn a_commit_nobody_was_seen_making_proves_no_loss() {
    let rec = committed_by(&[]);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(outcome_of(&rec, "b"), Some(Outcome::UnconfirmedLoss));
    assert_eq!(
        (rec.counts.lost, rec.counts.committer_unknown),
        (0, 1),
        "committed past by no watched connection"
    );
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["committer_unknown"]);
    let text = rec.inconclusive_reasons[0].to_string();
    assert!(text.contains("committing connection is unknown"), "{text}");
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn offsets_sent_to_a_committed_transaction_are_the_brokers_word() {
    use crate::timeline::TxnOp;
    let rec = committed_by(&[
        txn(TxnOp::TxnOffsetCommit, None, 2),
        txn(TxnOp::EndTxn, Some(true), 0),
    ]);
    assert_eq!(rec.verdict, Verdict::Lost);
    assert_eq!(outcome_of(&rec, "b"), Some(Outcome::Lost));
    assert_ne!(
        rec.mechanisms.of("b"),
        Some(crate::judge::mechanism::Mechanism::Unexplained),
        "the transaction's commit is the mark"
    );
    // The same offsets in a transaction that aborted were never committed by that connection.
    let rec = committed_by(&[
        txn(TxnOp::TxnOffsetCommit, None, 2),
        txn(TxnOp::EndTxn, Some(false), 0),
    ]);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(rec.counts.committer_unknown, 1);
}

#[test]
fn offsets_the_consumer_stored_with_its_data_are_its_own_word_for_a_loss() {
    let stored = Event::StoredOffsets {
        source: "postgres consumer_offsets".into(),
        committed: [(0, 2)].into(),
    };
    let rec = committed_by(&[stored]);
    assert_eq!(rec.verdict, Verdict::Lost, "{:?}", rec.inconclusive_reasons);
    assert_eq!(outcome_of(&rec, "b"), Some(Outcome::Lost));
    assert_eq!((rec.counts.lost, rec.counts.committer_unknown), (1, 0));
}
