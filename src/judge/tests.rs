//! The judge's behaviour on hand-written timelines: outcomes, precedence, shortfalls, exit
//! codes, and its speed on large runs.

use super::*;
use crate::judge::fixtures::{duplicated_run, produced_event, Tl};
use crate::timeline::Event;
use crate::timeline::{EffectOutcome, EndReason, ProcessPhase, ProduceStatus, SinkKind};

const KILL: &str = "kill: consumer when {after: effect, nth: 2}";

/// A settled run with one fired fault and `ids` on partition 0 at offsets 0.. .
fn clean(ids: &[&str], expect: &str) -> Tl {
    let mut tl = Tl::new();
    tl.start(&[KILL], ids.len() as u64, expect);
    for (i, id) in ids.iter().enumerate() {
        tl.produced(id, 0, i as i64);
    }
    tl.fault(0, true);
    tl
}

fn outcome_of(rec: &Judgement, id: &str) -> Option<Outcome> {
    rec.anomalies.iter().find(|a| a.id == id).map(|a| a.outcome)
}

fn codes(reasons: &[InconclusiveReason]) -> Vec<&'static str> {
    reasons.iter().map(InconclusiveReason::code).collect()
}

#[test]
fn one_applied_effect_each_with_fired_faults_is_exact() {
    let mut tl = clean(&["a", "b"], "exactly-once");
    tl.effect("a", 1)
        .effect("b", 1)
        .progress(&[(0, 2)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.counts.exact, 2);
    assert!(rec.anomalies.is_empty());
    assert!(rec.inconclusive_reasons.is_empty());
    assert_eq!(rec.expectation_met, Some(true));
    assert_eq!(rec.exit_code(), 0);
}

#[test]
fn two_applied_effects_are_duplicated() {
    let rec = analyze(&duplicated_run().events);
    assert_eq!(rec.verdict, Verdict::Duplicated);
    assert_eq!(rec.counts.duplicated, 1);
    assert_eq!(rec.counts.exact, 3);
    assert_eq!(rec.counts.effects_applied, 5);
    let a = &rec.anomalies[0];
    assert_eq!((a.id.as_str(), a.outcome), ("m-1", Outcome::Duplicated));
    assert_eq!((a.partition, a.offset), (Some(0), Some(1)));
    let incs: Vec<_> = a.effects.iter().map(|e| e.incarnation).collect();
    assert_eq!(incs, vec![Some(1), Some(2)]);
    // at-least-once allows duplicates.
    assert_eq!(rec.expectation_met, Some(true));
    assert_eq!(rec.exit_code(), 0);
}

#[test]
fn committed_past_with_no_effect_is_lost() {
    let mut tl = clean(&["a", "b"], "at-least-once");
    tl.effect("b", 1)
        .progress(&[(0, 2)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Lost);
    assert_eq!(outcome_of(&rec, "a"), Some(Outcome::Lost));
    assert_eq!(rec.anomalies[0].committed, Some(2));
    assert_eq!(rec.expectation_met, Some(false));
    assert_eq!(rec.exit_code(), 1);
}

#[test]
fn uncommitted_with_no_effect_is_pending_and_inconclusive() {
    let mut tl = clean(&["a", "b"], "at-least-once");
    // Committed offset 1 means offset 1 ("b") is the next to read: not consumed.
    tl.effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Deadline);
    let rec = analyze(&tl.events);
    assert_eq!(outcome_of(&rec, "b"), Some(Outcome::Pending));
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["pending"]);
    assert_eq!(rec.expectation_met, None);
    assert_eq!(rec.exit_code(), 3);
}

/// An AMQP-shaped run: no partitions, the queue's remainder read at the end.
fn amqp_run(remainder: &[&str], complete: bool) -> Judgement {
    let mut tl = Tl::new();
    tl.start(&["kill: consumer when {at: 1s}"], 3, "at-least-once");
    for (i, id) in ["q-1", "q-2", "q-3"].iter().enumerate() {
        tl.push(produced_event(
            id,
            None,
            Some(i as i64 + 1),
            ProduceStatus::Acked,
        ));
    }
    tl.process(1, ProcessPhase::Started)
        .effect("q-1", 1)
        .fault(0, true);
    tl.push(Event::QueueRemainder {
        ids: remainder.iter().map(|s| s.to_string()).collect(),
        complete,
    });
    tl.end(EndReason::Settled);
    analyze(&tl.events)
}

#[test]
fn amqp_message_gone_from_the_queue_without_effect_is_lost() {
    let rec = amqp_run(&["q-3"], true);
    assert_eq!(
        rec.counts.lost, 1,
        "q-2 left the queue and was never applied"
    );
    assert_eq!(rec.counts.pending, 1, "q-3 is still in the queue");
    assert_eq!(rec.verdict, Verdict::Lost);
}

#[test]
fn amqp_incomplete_remainder_proves_no_loss() {
    let rec = amqp_run(&["q-3"], false);
    assert_eq!(rec.counts.lost, 0);
    assert_eq!(rec.counts.pending, 2);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
}

#[test]
fn only_the_last_progress_event_decides_loss() {
    // "w" has an effect: the sink saw the consumer's work, so a loss can be proven.
    let mut tl = clean(&["a", "w"], "at-least-once");
    tl.effect("w", 1)
        .progress(&[(0, 1)])
        .progress(&[(0, 0)])
        .end(EndReason::Deadline);
    assert_eq!(analyze(&tl.events).counts.pending, 1);

    let mut tl = clean(&["a", "w"], "at-least-once");
    tl.effect("w", 1)
        .progress(&[(0, 0)])
        .progress(&[(0, 1)])
        .end(EndReason::Deadline);
    assert_eq!(analyze(&tl.events).counts.lost, 1);
}

#[test]
fn partition_missing_from_progress_is_pending_not_lost() {
    let mut tl = Tl::new();
    tl.start(&[KILL], 1, "at-least-once")
        .produced("a", 2, 0)
        .fault(0, true)
        .progress(&[(0, 10)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(outcome_of(&rec, "a"), Some(Outcome::Pending));
    assert_eq!(rec.anomalies[0].committed, None);
}

#[test]
fn loss_is_the_verdict_even_when_no_fault_fired() {
    let mut tl = Tl::new();
    tl.start(&[KILL], 2, "at-least-once")
        .produced("a", 0, 0)
        .produced("b", 0, 1)
        .effect("b", 1)
        .fault(0, false)
        .progress(&[(0, 2)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Lost);
    assert!(rec.inconclusive_reasons.is_empty());
    assert_eq!(codes(&rec.caveats), vec!["faults_not_fired"]);
    assert_eq!(rec.exit_code(), 1);
}

#[test]
fn duplicate_is_the_verdict_even_without_any_planned_fault() {
    let mut tl = Tl::new();
    tl.start(&[], 1, "at-most-once")
        .produced("a", 0, 0)
        .effect("a", 1)
        .effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Duplicated);
    assert_eq!(codes(&rec.caveats), vec!["no_fault_planned"]);
    assert_eq!(rec.expectation_met, Some(false));
}

#[test]
fn loss_and_duplicate_together_read_lost_plus_duplicated() {
    let mut tl = clean(&["a", "b"], "at-most-once");
    tl.effect("b", 1)
        .effect("b", 2)
        .progress(&[(0, 2)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::LostAndDuplicated);
    assert_eq!(rec.verdict.to_string(), "LOST+DUPLICATED");
    assert_eq!(rec.expectation_met, Some(false));
    // Lost anomalies come first in report order.
    assert_eq!(rec.anomalies[0].outcome, Outcome::Lost);
    assert_eq!(rec.anomalies[1].outcome, Outcome::Duplicated);
}

#[test]
fn replayed_effects_do_not_count_as_duplicates() {
    let mut tl = clean(&["a"], "exactly-once");
    tl.effect("a", 1)
        .effect_as("a", 2, EffectOutcome::Replayed)
        .effect_as("a", 2, EffectOutcome::Replayed)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.counts.effects_replayed, 2);
    assert_eq!(rec.counts.effects_applied, 1);
}

#[test]
fn replayed_effects_alone_do_not_save_a_message_from_loss() {
    // A replay without an applied effect means the idempotency key matched another
    // message's: this one's work never happened.
    let mut tl = clean(&["a"], "at-least-once");
    tl.effect_as("a", 1, EffectOutcome::Replayed)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Lost);
    assert_eq!(
        rec.anomalies[0].effects.len(),
        1,
        "the replay is kept as evidence"
    );
}

#[test]
fn indeterminate_produce_is_never_lost_but_can_be_duplicated() {
    let mut tl = Tl::new();
    tl.start(&[KILL], 3, "at-least-once")
        .produced("ok", 0, 0)
        .produced_as("gone", 0, 1, ProduceStatus::Indeterminate)
        .produced_as("twice", 0, 2, ProduceStatus::Indeterminate)
        .effect("ok", 1)
        .fault(0, true)
        .effect("twice", 1)
        .effect("twice", 2)
        .progress(&[(0, 3)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(outcome_of(&rec, "gone"), Some(Outcome::Unconfirmed));
    assert_eq!(outcome_of(&rec, "twice"), Some(Outcome::Duplicated));
    assert_eq!(rec.verdict, Verdict::Duplicated);
    assert_eq!(rec.counts.lost, 0);
    assert_eq!(rec.counts.pending, 0);
    assert_eq!(rec.counts.indeterminate, 2);
    assert_eq!(rec.counts.produced, 1);
}

#[test]
fn indeterminate_without_effect_does_not_block_exact() {
    let mut tl = clean(&["a"], "at-least-once");
    tl.produced_as("b", 0, 1, ProduceStatus::Indeterminate);
    tl.effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let mut events = tl.events;
    // The plan said 2 messages.
    if let Event::RunStarted(info) = &mut events[0].event {
        info.messages = 2;
    }
    let rec = analyze(&events);
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.counts.unconfirmed, 1);
}

#[test]
fn failed_produce_is_counted_and_not_judged() {
    let mut tl = clean(&["a"], "exactly-once");
    tl.produced_as("f", 0, -1, ProduceStatus::Failed);
    tl.effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let mut events = tl.events;
    if let Event::RunStarted(info) = &mut events[0].event {
        info.messages = 2;
    }
    let rec = analyze(&events);
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.counts.failed, 1);
    assert_eq!(rec.counts.produced, 1);
    assert_eq!(rec.failed_samples[0].id, "f");
    assert!(rec.failed_samples[0].error.is_some());
}

#[test]
fn failed_produce_with_effects_is_a_warning_not_a_phantom() {
    let mut tl = clean(&["a"], "exactly-once");
    tl.produced_as("f", 0, -1, ProduceStatus::Failed);
    tl.effect("a", 1).effect("f", 1).effect("f", 1);
    tl.progress(&[(0, 1)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.counts.phantom, 0);
    assert_eq!(rec.counts.failed_effected, 1);
    assert_eq!(rec.counts.duplicated, 0);
    assert!(rec.warnings.iter().any(|w| w.contains("produce failed")));
}

#[test]
fn identity_is_the_id_so_a_producer_retry_is_one_message() {
    let mut tl = Tl::new();
    tl.start(&[KILL], 1, "exactly-once")
        .produced_as("a", 0, 0, ProduceStatus::Failed)
        .produced("a", 1, 5)
        .produced("a", 2, 9)
        .effect("a", 1)
        .fault(0, true)
        .progress(&[(1, 6), (2, 10)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.counts.produced, 1);
    assert_eq!(rec.counts.failed, 0);
    assert_eq!(rec.counts.produce_records, 3);
    assert_eq!(rec.counts.multi_offset, 1);
    assert!(rec
        .warnings
        .iter()
        .any(|w| w.contains("more than one offset")));
}

#[test]
fn the_first_acked_record_gives_the_offset() {
    let mut tl = Tl::new();
    tl.start(&[KILL], 1, "at-least-once")
        .produced_as("a", 0, 0, ProduceStatus::Indeterminate)
        .produced("a", 1, 5)
        .produced("a", 2, 9)
        // A witness with an effect: the sink saw the consumer's work.
        .produced("w", 0, 1)
        .effect("w", 1)
        .fault(0, true)
        // Partition 1 committed past 5: lost by the first acked record; partition 2
        // would have said pending.
        .progress(&[(1, 6), (2, 0)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Lost);
    assert_eq!(
        (rec.anomalies[0].partition, rec.anomalies[0].offset),
        (Some(1), Some(5))
    );
}

#[test]
fn effects_before_their_produce_ack_are_not_phantom() {
    let mut tl = Tl::new();
    tl.start(&[KILL], 1, "exactly-once")
        .effect("a", 1)
        .produced("a", 0, 0)
        .fault(0, true)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.counts.phantom, 0);
}

#[test]
fn effects_for_unknown_ids_are_phantom_and_reported() {
    let mut tl = clean(&["a"], "exactly-once");
    tl.effect("a", 1).effect("ghost", 1).effect("ghost", 2);
    tl.progress(&[(0, 1)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.counts.phantom, 1);
    assert_eq!(rec.counts.duplicated, 0, "a phantom is never a duplicate");
    let ghost = rec.anomalies_of(Outcome::Phantom).next().unwrap();
    assert_eq!((ghost.id.as_str(), ghost.effects.len()), ("ghost", 2));
    assert!(rec.warnings.iter().any(|w| w.contains("never produced")));
    assert_eq!(rec.verdict, Verdict::Exact);
}

#[test]
fn unfired_fault_makes_a_clean_run_inconclusive() {
    let mut tl = Tl::new();
    tl.start(
        &[KILL, "pause: consumer[0] for 8s when {at: 4s}"],
        1,
        "exactly-once",
    )
    .produced("a", 0, 0)
    .effect("a", 1)
    .fault(0, true)
    .progress(&[(0, 1)])
    .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(rec.faults_fired, vec![0]);
    assert_eq!(rec.faults_unfired.len(), 1);
    assert_eq!(rec.faults_unfired[0].fault, 1);
    let text = rec.inconclusive_reasons[0].to_string();
    assert!(text.contains("#1 pause: consumer[0]"), "{text}");
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn fault_that_matched_but_was_not_applied_does_not_count() {
    let mut tl = clean(&["a"], "exactly-once");
    tl.events.pop(); // the applied fault
    tl.fault(0, false)
        .effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert!(rec.faults_fired.is_empty());
    assert_eq!(
        rec.faults.len(),
        1,
        "the record is still kept for the report"
    );
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["faults_not_fired"]);
}

#[test]
fn a_fault_fired_twice_counts_once() {
    let mut tl = clean(&["a"], "exactly-once");
    tl.fault(0, true)
        .effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.faults_fired, vec![0]);
    assert_eq!(rec.faults.len(), 2);
    assert_eq!(rec.verdict, Verdict::Exact);
}

#[test]
fn no_planned_fault_makes_a_clean_run_inconclusive() {
    let mut tl = Tl::new();
    tl.start(&[], 1, "exactly-once")
        .produced("a", 0, 0)
        .effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["no_fault_planned"]);
}

#[test]
fn missing_produce_records_make_the_ledger_incomplete() {
    let mut tl = clean(&["a"], "exactly-once");
    tl.effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let mut events = tl.events;
    if let Event::RunStarted(info) = &mut events[0].event {
        info.messages = 5;
    }
    let rec = analyze(&events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(
        rec.inconclusive_reasons,
        vec![InconclusiveReason::LedgerIncomplete {
            recorded: 1,
            expected: 5
        }]
    );
}

#[test]
fn a_harness_crash_without_run_ended_is_inconclusive() {
    let mut tl = clean(&["a"], "exactly-once");
    tl.effect("a", 1).progress(&[(0, 1)]);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["run_not_ended"]);
    assert_eq!(rec.end_reason, None);
    assert_eq!(rec.ended_at_us, tl.events.last().map(|e| e.t_us));
}

#[test]
fn without_any_progress_zero_effect_ids_cannot_be_called_lost() {
    let mut tl = clean(&["a", "b"], "at-least-once");
    tl.effect("a", 1).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(outcome_of(&rec, "b"), Some(Outcome::Pending));
    assert_eq!(
        codes(&rec.inconclusive_reasons),
        vec!["pending", "no_progress"]
    );
}

#[test]
fn without_progress_a_fully_effected_run_can_still_be_exact() {
    let mut tl = clean(&["a"], "at-least-once");
    tl.effect("a", 1).end(EndReason::Settled);
    assert_eq!(analyze(&tl.events).verdict, Verdict::Exact);
}

#[test]
fn aborted_run_is_inconclusive() {
    let mut tl = clean(&["a"], "at-least-once");
    tl.effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Aborted);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["aborted"]);
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn infrastructure_error_exits_4_even_with_a_proven_anomaly() {
    let mut tl = clean(&["a"], "at-least-once");
    tl.effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::InfrastructureError);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(rec.exit_code(), 4);

    // "w" has an effect, so the sink saw the consumer's work and "a" is proven lost.
    let mut tl = clean(&["a", "w"], "at-least-once");
    tl.effect("w", 1)
        .progress(&[(0, 2)])
        .end(EndReason::InfrastructureError);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Lost);
    assert_eq!(codes(&rec.caveats), vec!["infrastructure_error"]);
    assert_eq!(rec.exit_code(), 4);
}

#[test]
fn a_run_where_nothing_happened_never_reads_exact() {
    let rec = analyze(&[]);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(
        codes(&rec.inconclusive_reasons),
        vec!["no_run_info", "run_not_ended", "nothing_observed"]
    );
    assert_eq!(rec.exit_code(), 3);

    let mut tl = Tl::new();
    tl.start(&[KILL], 0, "exactly-once")
        .fault(0, true)
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(codes(&rec.inconclusive_reasons), vec!["nothing_observed"]);
}

#[test]
fn unknown_expectation_is_not_judged_and_exits_3() {
    let mut tl = clean(&["a"], "maybe-once");
    tl.effect("a", 1)
        .progress(&[(0, 1)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.expectation, None);
    assert_eq!(rec.expectation_met, None);
    assert_eq!(rec.exit_code(), 3);
    assert!(rec.warnings.iter().any(|w| w.contains("maybe-once")));
}

#[test]
fn expectations_judge_verdicts_as_the_design_says() {
    use Expectation::*;
    use Verdict::*;
    let table = [
        (AtMostOnce, Exact, Some(true)),
        (AtMostOnce, Lost, Some(true)),
        (AtMostOnce, Duplicated, Some(false)),
        (AtMostOnce, LostAndDuplicated, Some(false)),
        (AtLeastOnce, Duplicated, Some(true)),
        (AtLeastOnce, Lost, Some(false)),
        (AtLeastOnce, LostAndDuplicated, Some(false)),
        (ExactlyOnce, Exact, Some(true)),
        (ExactlyOnce, Lost, Some(false)),
        (ExactlyOnce, Duplicated, Some(false)),
        (ExactlyOnce, Inconclusive, None),
        (AtLeastOnce, Inconclusive, None),
    ];
    for (x, v, want) in table {
        assert_eq!(x.met_by(v), want, "{x} with {v}");
    }
    for x in [AtMostOnce, AtLeastOnce, ExactlyOnce] {
        assert_eq!(Expectation::parse(x.as_str()), Some(x));
    }
}

#[test]
fn incarnations_warnings_and_faults_are_kept() {
    let mut tl = duplicated_run();
    tl.warning("hold of 900ms nears request.timeout.ms");
    let rec = analyze(&tl.events);
    assert_eq!(rec.incarnations.len(), 2);
    let first = &rec.incarnations[0];
    assert_eq!((first.incarnation, first.pid), (1, 4001));
    assert!(first.started_us.is_some() && first.exited_us.is_some());
    assert_eq!(first.status.as_deref(), Some("signal SIGKILL"));
    assert_eq!(rec.incarnations[1].exited_us, None);
    assert_eq!(rec.warnings, vec!["hold of 900ms nears request.timeout.ms"]);
    assert_eq!(rec.faults.len(), 1);
    assert_eq!(rec.end_reason, Some(EndReason::Settled));
    assert!(rec.last_progress.is_some());
}

#[test]
fn rejected_effects_are_counted() {
    let mut tl = duplicated_run();
    tl.push(Event::EffectRejected {
        boundary: None,
        reason: "no id at /order_id".into(),
        sample: "{}".into(),
    });
    let rec = analyze(&tl.events);
    assert_eq!(rec.counts.rejected, 1);
    assert_eq!(rec.rejected_samples[0].reason, "no id at /order_id");
}

#[test]
fn torn_lines_are_counted_and_shown_never_judged_as_effects() {
    let mut tl = duplicated_run();
    let before = analyze(&tl.events).counts;
    for sample in ["effect r-1", "effect r-"] {
        tl.push(Event::TornLine {
            boundary: None,
            instance: 0,
            incarnation: 1,
            sink: SinkKind::Stdout,
            bytes: sample.len() as u64,
            sample: sample.into(),
        });
    }
    let rec = analyze(&tl.events);
    assert_eq!(rec.counts.torn_lines, 2);
    assert_eq!(
        (rec.counts.effects_applied, rec.counts.duplicated),
        (before.effects_applied, before.duplicated),
        "a torn line is no effect"
    );
    assert!(
        rec.warnings.iter().any(|w| w.starts_with("2 torn lines")
            && w.contains("consumer[0] incarnation 1 (stdout sink): `effect r-1`")),
        "{:?}",
        rec.warnings
    );
}

#[test]
fn reconcile_is_linear_enough_for_large_runs() {
    // 200k IDs keep a debug build quick; the release figure for 1M is in the module's
    // ignored benchmark below.
    let rec = analyze(&large_run(200_000));
    assert_eq!(rec.counts.produced, 200_000);
    assert_eq!(rec.counts.duplicated, 200_000 / 1000);
}

/// `n` IDs on 8 partitions, one applied effect each, every 1000th applied twice.
fn large_run(n: usize) -> Vec<Stamped> {
    let mut tl = Tl::new();
    tl.start(&[KILL], n as u64, "at-least-once");
    for i in 0..n {
        tl.produced(&format!("id-{i:08}"), (i % 8) as i32, (i / 8) as i64);
    }
    tl.fault(0, true);
    for i in 0..n {
        let id = format!("id-{i:08}");
        tl.effect(&id, 1);
        if i % 1000 == 0 {
            tl.effect(&id, 2);
        }
    }
    let committed: Vec<(i32, i64)> = (0..8).map(|p| (p, (n / 8 + 1) as i64)).collect();
    tl.progress(&committed).end(EndReason::Settled);
    tl.events
}

#[test]
#[ignore = "benchmark: cargo test --release -- --ignored one_million"]
fn one_million_ids_reconcile_in_well_under_a_few_seconds() {
    let events = large_run(1_000_000);
    let start = std::time::Instant::now();
    let rec = analyze(&events);
    let took = start.elapsed();
    eprintln!("reconciled {} events in {took:?}", events.len());
    assert_eq!(rec.counts.produced, 1_000_000);
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
}

#[test]
fn output_records_are_attributed_to_the_incarnation_whose_produce_wrote_them() {
    use crate::timeline::{AttributedBy, Attribution, ProducedBatch, RecordPlace};
    let produce = |incarnation, base_offset| Event::ConsumerProduce {
        instance: 0,
        incarnation,
        transactional_id: None,
        producer_id: 9,
        producer_epoch: 0,
        batches: vec![ProducedBatch {
            topic: "out".into(),
            partition: 1,
            base_offset,
            records: 2,
            error: None,
        }],
    };
    let effect = |id: &str, offset| Event::Effect {
        id: id.into(),
        instance: None,
        incarnation: None,
        outcome: EffectOutcome::Applied,
        sink: SinkKind::KafkaTopic,
        boundary: None,
        attribution: Attribution {
            record: Some(Box::new(RecordPlace {
                topic: "out".into(),
                partition: 1,
                offset,
            })),
            ..Attribution::default()
        },
    };
    let mut tl = clean(&["a", "b"], "at-least-once");
    // Incarnation 1 wrote a and b at 0-1, was killed before its commit; incarnation 2 wrote
    // them again at 2-3. Offset 7 was written by no Produce the proxy saw.
    tl.push(produce(1, 0))
        .push(effect("a", 0))
        .push(effect("b", 1))
        .push(produce(2, 2))
        .push(effect("a", 2))
        .push(effect("b", 3))
        .push(effect("b", 7))
        .progress(&[(0, 2)])
        .end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.verdict, Verdict::Duplicated);
    let writers = |id: &str| -> Vec<(Option<u32>, Option<AttributedBy>)> {
        let a = rec.anomalies.iter().find(|a| a.id == id).unwrap();
        a.effects
            .iter()
            .map(|e| (e.incarnation, e.attribution.by))
            .collect()
    };
    let by = Some(AttributedBy::Producer);
    assert_eq!(writers("a"), [(Some(1), by), (Some(2), by)]);
    assert_eq!(writers("b"), [(Some(1), by), (Some(2), by), (None, None)]);
}

/// An AMQP run whose consumer[0]#1 had its channel closed by `amqp: double-ack` after q-1 and
/// two messages left in the queue; `resubscribed`: it sent `basic.consume` again after.
fn channel_closed_run(resubscribed: bool) -> Judgement {
    let mut tl = Tl::new();
    tl.start(
        &["amqp: double-ack when {after: ack, nth: 1}"],
        3,
        "at-least-once",
    );
    for (i, id) in ["q-1", "q-2", "q-3"].iter().enumerate() {
        tl.push(produced_event(
            id,
            None,
            Some(i as i64 + 1),
            ProduceStatus::Acked,
        ));
    }
    tl.process(1, ProcessPhase::Started).effect("q-1", 1);
    tl.push(Event::Fault(Box::new(crate::timeline::FaultRecord {
        fault: 0,
        action: "amqp".into(),
        target: "consumer".into(),
        trigger: "after: ack, nth: 1".into(),
        matched_at_us: 1_000,
        fired_at_us: 2_000,
        trigger_latency_us: 1_000,
        applied: true,
        detail: format!(
            "{} - unknown delivery tag 1 (channel 1) to consumer[0]",
            crate::timeline::CHANNEL_CLOSE_SENT
        ),
        hit: vec![crate::timeline::ProcessRef {
            instance: 0,
            incarnation: 1,
        }],
        length_us: None,
        through_proxy: true,
    })));
    if resubscribed {
        tl.push(Event::ConsumerSettings {
            instance: 0,
            incarnation: 1,
            no_ack: false,
            prefetch: Some(10),
            heartbeat_s: None,
        });
    }
    tl.push(Event::QueueRemainder {
        ids: vec!["q-2".into(), "q-3".into()],
        complete: true,
    });
    tl.end(EndReason::Deadline);
    analyze(&tl.events)
}

#[test]
fn a_consumer_whose_channel_was_closed_and_never_subscribed_again_is_a_liveness_finding() {
    let stuck = channel_closed_run(false);
    let reason = stuck
        .inconclusive_reasons
        .iter()
        .find_map(|r| match r {
            crate::judge::model::InconclusiveReason::ConsumerCancelled { consumers } => {
                Some(consumers.clone())
            }
            _ => None,
        })
        .expect("a consumer_cancelled reason");
    assert_eq!(reason.len(), 1);
    assert!(
        reason[0].starts_with("consumer[0] incarnation 1 (channel closed at"),
        "{reason:?}"
    );
    let moved_on = channel_closed_run(true);
    assert!(!moved_on.inconclusive_reasons.iter().any(|r| matches!(
        r,
        crate::judge::model::InconclusiveReason::ConsumerCancelled { .. }
    )));
}
