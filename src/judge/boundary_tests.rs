//! The boundary judge: each boundary judged on its own effects against its own promise, the
//! overall ruling combined, and old timelines (no boundary) judged as before.

use crate::judge::analyze;
use crate::judge::fixtures::Tl;
use crate::judge::model::{ExpectationState, Verdict};
use crate::timeline::{BoundaryInfo, EffectOutcome, EndReason, Event, SinkKind};

/// One planned kill, fired in every timeline below (a run without an exercised fault proves
/// nothing).
const KILL: &str = "kill consumer after the 1st effect";

fn boundary(name: &str, expect: &str) -> BoundaryInfo {
    BoundaryInfo {
        name: name.into(),
        sink: SinkKind::Http,
        expect: expect.into(),
        id: "json:/id".into(),
    }
}

fn effect_at(tl: &mut Tl, id: &str, boundary: &str) {
    tl.push(Event::Effect {
        boundary: Some(boundary.into()),
        id: id.into(),
        instance: Some(0),
        incarnation: Some(1),
        outcome: EffectOutcome::Applied,
        sink: SinkKind::Http,
        attribution: Default::default(),
    });
}

/// Two messages, both committed; `out` sees each once, `email` sees `m-1` twice.
fn two_boundaries(email_expect: &str) -> Tl {
    let mut tl = Tl::new();
    tl.start(&[KILL], 2, "exactly-once");
    if let Event::RunStarted(info) = &mut tl.events[0].event {
        info.boundaries = vec![
            boundary("out", "exactly-once"),
            boundary("email", email_expect),
        ];
    }
    tl.produced("m-0", 0, 0)
        .produced("m-1", 0, 1)
        .fault(0, true);
    for (id, b) in [
        ("m-0", "out"),
        ("m-0", "email"),
        ("m-1", "out"),
        ("m-1", "email"),
        ("m-1", "email"),
    ] {
        effect_at(&mut tl, id, b);
    }
    tl.progress(&[(0, 2)]).end(EndReason::Settled);
    tl
}

#[test]
fn each_boundary_is_judged_on_its_own_effects_against_its_own_promise() {
    let rec = analyze(&two_boundaries("at-least-once").events);
    let rows: Vec<_> = rec
        .boundaries
        .iter()
        .map(|b| {
            (
                b.name.as_str(),
                b.judgement.verdict,
                b.judgement.expectation_state,
                b.judgement.counts.duplicated,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("out", Verdict::Exact, ExpectationState::Met, 0),
            ("email", Verdict::Duplicated, ExpectationState::Met, 1),
        ]
    );
    assert_eq!(rec.verdict, Verdict::Duplicated);
    assert_eq!(rec.expectation_state, ExpectationState::Met);
    assert_eq!(rec.exit_code(), 0, "every boundary kept its promise");
}

#[test]
fn one_boundary_breaking_its_promise_fails_the_run() {
    let rec = analyze(&two_boundaries("exactly-once").events);
    assert_eq!(rec.boundaries[1].judgement.expectation_met, Some(false));
    assert_eq!(rec.expectation_state, ExpectationState::Violated);
    assert_eq!(rec.exit_code(), 1);
}

#[test]
fn a_boundary_that_saw_nothing_is_inconclusive_and_the_run_unknown() {
    let mut tl = Tl::new();
    tl.start(&[KILL], 1, "exactly-once");
    if let Event::RunStarted(info) = &mut tl.events[0].event {
        info.boundaries = vec![
            boundary("out", "exactly-once"),
            boundary("email", "at-least-once"),
        ];
    }
    tl.produced("m-0", 0, 0).fault(0, true);
    effect_at(&mut tl, "m-0", "out");
    tl.progress(&[(0, 1)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert_eq!(rec.boundaries[0].judgement.verdict, Verdict::Exact);
    assert_ne!(rec.boundaries[1].judgement.verdict, Verdict::Exact);
    assert_ne!(rec.expectation_state, ExpectationState::Met);
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn a_timeline_without_boundaries_is_judged_as_before() {
    let mut tl = Tl::new();
    tl.start(&[KILL], 1, "exactly-once");
    tl.produced("m-0", 0, 0).fault(0, true).effect("m-0", 1);
    tl.progress(&[(0, 1)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    assert!(rec.boundaries.is_empty());
    assert_eq!(rec.verdict, Verdict::Exact);
    assert_eq!(rec.exit_code(), 0);
}

/// A transactional answer of consumer[0] `incarnation` to `op`, with the broker's `error`.
fn txn(incarnation: u32, op: crate::timeline::TxnOp, commit: bool, error: Option<&str>) -> Event {
    use crate::timeline::TxnOp;
    Event::Txn {
        instance: 0,
        incarnation,
        op,
        transactional_id: Some("g-0".into()),
        producer_id: 7,
        producer_epoch: 0,
        committed: (op == TxnOp::EndTxn).then_some(commit),
        request: false,
        offsets: Vec::new(),
        error: error.map(Into::into),
    }
}

#[test]
fn a_fenced_zombie_transaction_is_said_and_other_refusals_are_not() {
    use crate::timeline::TxnOp;
    let mut tl = Tl::new();
    tl.start(&[KILL], 1, "exactly-once");
    tl.push(txn(
        1,
        TxnOp::TxnOffsetCommit,
        true,
        Some("UNKNOWN_MEMBER_ID"),
    ))
    .push(txn(2, TxnOp::EndTxn, true, Some("PRODUCER_FENCED")))
    .push(txn(
        1,
        TxnOp::InitProducerId,
        true,
        Some("CONCURRENT_TRANSACTIONS"),
    ))
    .push(txn(1, TxnOp::EndTxn, true, Some("UNKNOWN_MEMBER_ID")));
    let rec = analyze(&tl.events);
    let fenced: Vec<&String> = rec
        .warnings
        .iter()
        .filter(|w| w.contains("was fenced"))
        .collect();
    assert_eq!(fenced.len(), 2, "{:?}", rec.warnings);
    assert!(fenced[0].contains("KIP-447"), "{}", fenced[0]);
    assert!(fenced[1].contains("EndTxn (commit)") && fenced[1].contains("newer epoch"));
}

#[test]
fn a_zombie_is_fenced_by_the_group_coordinator_or_by_its_epoch_and_the_line_says_how_it_ended() {
    use crate::timeline::TxnOp;
    // KIP-447: the group coordinator refuses the offsets of a lost membership, whatever the
    // protocol (classic generation, KIP-848 member epoch, static member), then the zombie
    // aborts; the transaction coordinator refuses a stale producer epoch.
    let cases = [
        (TxnOp::TxnOffsetCommit, "UNKNOWN_MEMBER_ID", "KIP-447"),
        (TxnOp::TxnOffsetCommit, "ILLEGAL_GENERATION", "KIP-447"),
        (TxnOp::TxnOffsetCommit, "FENCED_INSTANCE_ID", "KIP-447"),
        (TxnOp::AddPartitionsToTxn, "PRODUCER_FENCED", "newer epoch"),
        (TxnOp::EndTxn, "INVALID_PRODUCER_EPOCH", "newer epoch"),
    ];
    for (op, error, why) in cases {
        let mut tl = Tl::new();
        tl.start(&[KILL], 1, "exactly-once");
        tl.push(txn(1, op, true, Some(error)))
            .push(txn(2, TxnOp::EndTxn, true, None))
            .push(txn(1, TxnOp::EndTxn, false, None));
        let rec = analyze(&tl.events);
        let line = rec
            .warnings
            .iter()
            .find(|w| w.contains("was fenced"))
            .unwrap_or_else(|| panic!("{error}: {:?}", rec.warnings));
        let said = format!("consumer[0] incarnation 1 was fenced: its {op:?}");
        assert!(line.starts_with(&said), "{line}");
        assert!(line.contains(&format!("refused with {error}")), "{line}");
        assert!(line.contains(why), "{line}");
        // Another incarnation's commit says nothing of it; its own abort does.
        assert!(
            line.ends_with("; its transaction was then aborted (EndTxn abort accepted)"),
            "{line}"
        );
    }
    // A fenced request, then a commit the broker accepted after all: said, never hidden.
    let mut tl = Tl::new();
    tl.start(&[KILL], 1, "exactly-once");
    tl.push(txn(
        1,
        TxnOp::TxnOffsetCommit,
        true,
        Some("ILLEGAL_GENERATION"),
    ))
    .push(txn(1, TxnOp::EndTxn, true, None));
    let rec = analyze(&tl.events);
    assert!(rec
        .warnings
        .iter()
        .any(|w| w.ends_with("; yet its next EndTxn commit was accepted")));
    // The zombie exits without an EndTxn; the next incarnation's InitProducerId of the same
    // transactional id aborts its transaction (what rdkafka did on the real Kafka).
    let mut tl = Tl::new();
    tl.start(&[KILL], 1, "exactly-once");
    tl.push(txn(
        1,
        TxnOp::TxnOffsetCommit,
        true,
        Some("UNKNOWN_MEMBER_ID"),
    ))
    .push(txn(
        2,
        TxnOp::InitProducerId,
        true,
        Some("CONCURRENT_TRANSACTIONS"),
    ))
    .push(txn(2, TxnOp::InitProducerId, true, None));
    let rec = analyze(&tl.events);
    let line = rec
        .warnings
        .iter()
        .find(|w| w.contains("was fenced"))
        .unwrap();
    assert!(
        line.ends_with("; its open transaction was aborted when consumer[0] incarnation 2's InitProducerId took its transactional id (epoch 0)"),
        "{line}"
    );
}

/// One message produced by two incarnations of a consumer to its output topic (killed
/// between its produce and its commit), the copies read back at a `kafka-topic` boundary:
/// declared under `boundaries` (named `out`) or the plan's one `effects` sink.
fn produced_twice(transactional_id: Option<&str>, declared: bool) -> crate::judge::Judgement {
    use crate::timeline::ProducedBatch;
    let mut tl = Tl::new();
    tl.start(&[KILL], 1, "at-least-once");
    if let Event::RunStarted(info) = &mut tl.events[0].event {
        info.effects_sink = Some(SinkKind::KafkaTopic);
        if declared {
            let mut out = boundary("out", "at-least-once");
            out.sink = SinkKind::KafkaTopic;
            info.boundaries = vec![out];
        }
    }
    tl.produced("m-0", 0, 0).fault(0, true);
    for incarnation in [1, 2] {
        tl.push(Event::ConsumerProduce {
            instance: 0,
            incarnation,
            transactional_id: transactional_id.map(Into::into),
            producer_id: 5,
            producer_epoch: 0,
            batches: vec![ProducedBatch {
                topic: "out".into(),
                partition: 0,
                base_offset: i64::from(incarnation) - 1,
                records: 1,
                error: None,
            }],
        });
        tl.push(Event::Effect {
            boundary: declared.then(|| "out".into()),
            id: "m-0".into(),
            instance: Some(0),
            incarnation: Some(incarnation),
            outcome: EffectOutcome::Applied,
            sink: SinkKind::KafkaTopic,
            attribution: Default::default(),
        });
    }
    tl.progress(&[(0, 1)]).end(EndReason::Settled);
    analyze(&tl.events)
}

#[test]
fn a_duplicate_at_an_output_topic_written_without_transactions_is_named_so() {
    use crate::judge::mechanism::Mechanism;
    let plain = produced_twice(None, true);
    let out = &plain.boundaries[0].judgement;
    assert_eq!(out.verdict, Verdict::Duplicated);
    assert_eq!(
        out.mechanisms.of("m-0"),
        Some(Mechanism::OutputWithoutTransaction)
    );
    assert!(out.mechanisms.groups[0]
        .title
        .contains("none of the consumer's 2 produces"));
    // Transactional produces: a duplicate there is something else, named by the rules.
    let txn = produced_twice(Some("billing-0"), true);
    let out = &txn.boundaries[0].judgement;
    assert_ne!(
        out.mechanisms.of("m-0"),
        Some(Mechanism::OutputWithoutTransaction)
    );
}

#[test]
fn a_plan_with_one_effects_sink_on_an_output_topic_gets_the_same_mechanism() {
    use crate::judge::mechanism::Mechanism;
    let plain = produced_twice(None, false);
    assert!(plain.boundaries.is_empty());
    assert_eq!(plain.verdict, Verdict::Duplicated);
    assert_eq!(
        plain.mechanisms.of("m-0"),
        Some(Mechanism::OutputWithoutTransaction)
    );
    assert_eq!(
        plain.mechanisms.groups[0].mechanism,
        Mechanism::OutputWithoutTransaction
    );
    assert!(plain.mechanisms.groups[0]
        .title
        .contains("none of the consumer's 2 produces"));
    let txn = produced_twice(Some("billing-0"), false);
    assert_ne!(
        txn.mechanisms.of("m-0"),
        Some(Mechanism::OutputWithoutTransaction)
    );
    // Another sink's duplicate is never an output produced again, whatever the produces.
    let mut other = Tl::new();
    other.start(&[KILL], 1, "at-least-once");
    other.produced("m-0", 0, 0).fault(0, true);
    other.push(Event::ConsumerProduce {
        instance: 0,
        incarnation: 1,
        transactional_id: None,
        producer_id: 5,
        producer_epoch: 0,
        batches: Vec::new(),
    });
    other.effect("m-0", 1).effect("m-0", 2);
    other.progress(&[(0, 1)]).end(EndReason::Settled);
    let rec = analyze(&other.events);
    assert_eq!(rec.verdict, Verdict::Duplicated);
    assert_ne!(
        rec.mechanisms.of("m-0"),
        Some(Mechanism::OutputWithoutTransaction)
    );
}
