//! Records of aborted transactions named per ID at a `kafka-topic` boundary read
//! `read_committed`: the writer, what ended its transaction, the committed copy, the fault
//! blamed; never counted as effects, never a loss or a duplicate there.

use crate::judge::analyze;
use crate::judge::fixtures::Tl;
use crate::judge::mechanism::Mechanism;
use crate::judge::model::{Outcome, Verdict};
use crate::timeline::{
    AbortedRecord, Attribution, BoundaryInfo, EffectOutcome, EndReason, Event, ProcessPhase,
    ProducedBatch, RecordPlace, SinkKind, TxnOp,
};

const KILL: &str = "kill consumer after the 1st produce";

fn init(tl: &mut Tl, incarnation: u32, epoch: i16) {
    tl.push(Event::Txn {
        instance: 0,
        incarnation,
        op: TxnOp::InitProducerId,
        transactional_id: Some("billing-0".into()),
        producer_id: 5,
        producer_epoch: epoch,
        committed: None,
        request: false,
        offsets: Vec::new(),
        error: None,
    });
}

/// `incarnation` wrote one record at `out[0]@offset`, in its transaction.
fn produce(tl: &mut Tl, incarnation: u32, offset: i64) {
    tl.push(Event::ConsumerProduce {
        instance: 0,
        incarnation,
        transactional_id: Some("billing-0".into()),
        producer_id: 5,
        producer_epoch: i16::try_from(incarnation).unwrap() - 1,
        batches: vec![ProducedBatch {
            topic: "out".into(),
            partition: 0,
            base_offset: offset,
            records: 1,
            error: None,
        }],
    });
}

/// The committed record of `id` at `out[0]@offset`, read back as an effect.
fn read_committed(tl: &mut Tl, id: &str, offset: i64) {
    tl.push(Event::Effect {
        boundary: Some("out".into()),
        id: id.into(),
        instance: None,
        incarnation: None,
        outcome: EffectOutcome::Applied,
        sink: SinkKind::KafkaTopic,
        attribution: Attribution {
            record: Some(Box::new(RecordPlace {
                topic: "out".into(),
                partition: 0,
                offset,
            })),
            ..Attribution::default()
        },
    });
}

/// m-0 written by incarnation 1, killed before its commit; incarnation 2's InitProducerId
/// aborts that transaction and it writes m-0 (offset 2, after the abort marker) and m-1
/// again, committed; `copies` is how many times it commits m-0 (0: never redone; 2: a
/// duplicate under read_committed too).
fn aborted_then_redone(copies: i64) -> Tl {
    let mut tl = Tl::new();
    tl.start(&[KILL], 2, "exactly-once");
    if let Event::RunStarted(info) = &mut tl.events[0].event {
        info.effects_sink = Some(SinkKind::KafkaTopic);
        info.boundaries = vec![BoundaryInfo {
            name: "out".into(),
            sink: SinkKind::KafkaTopic,
            expect: "exactly-once".into(),
            id: "header:exactly-id".into(),
        }];
    }
    tl.produced("m-0", 0, 0).produced("m-1", 0, 1);
    tl.process(1, ProcessPhase::Started);
    init(&mut tl, 1, 0);
    produce(&mut tl, 1, 0);
    tl.fault(0, true).process(1, ProcessPhase::Exited);
    tl.process(2, ProcessPhase::Started);
    init(&mut tl, 2, 1);
    produce(&mut tl, 2, 2);
    read_committed(&mut tl, "m-1", 2);
    for offset in 3..3 + copies {
        produce(&mut tl, 2, offset);
        read_committed(&mut tl, "m-0", offset);
    }
    tl.push(Event::OutputTopicRead {
        boundary: Some("out".into()),
        topic: "out".into(),
        isolation: "read_committed".into(),
        committed_records: 1 + copies as u64,
        uncommitted_records: 2 + copies as u64,
        aborted_records: 1,
        aborted_ids: vec!["m-0".into()],
        aborted_with_id: 1,
        aborted: vec![AbortedRecord {
            partition: 0,
            offset: 0,
            id: Some("m-0".into()),
        }],
        complete: true,
    });
    tl.progress(&[(0, 2)]).end(EndReason::Settled);
    tl
}

#[test]
fn an_aborted_record_committed_again_is_named_with_its_writer_and_never_counted() {
    let rec = analyze(&aborted_then_redone(1).events);
    let out = &rec.boundaries[0].judgement;
    assert_eq!(out.verdict, Verdict::Exact, "{:?}", out.mechanisms);
    assert_eq!((out.counts.duplicated, out.counts.exact), (0, 2));
    assert_eq!(rec.exit_code(), 0);
    assert_eq!(out.mechanisms.of("m-0"), None, "not an anomaly");
    let g = &out.mechanisms.groups[0];
    assert_eq!(g.mechanism, Mechanism::AbortedThenCommitted);
    assert_eq!((g.count, g.fault), (1, Some(0)));
    assert!(g.recommendation.contains("read_committed"));
    let e = &g.samples[0];
    assert_eq!((e.id.as_str(), e.outcome), ("m-0", Outcome::Exact));
    let facts: Vec<&str> = e.evidence.iter().map(|x| x.what.as_str()).collect();
    let expected = [
        "consumer[0]#1's Produce wrote it to out[0]@0 in a transaction of billing-0 (producer 5, epoch 0)",
        "consumer[0]#1 exited (signal SIGKILL) with that transaction open",
        "consumer[0]#2's InitProducerId for transactional id billing-0 (epoch 1) fenced the older producer",
        "consumer[0]#2's Produce wrote it again to out[0]@3",
    ];
    assert_eq!(facts.len(), expected.len(), "{facts:#?}");
    for (fact, want) in facts.iter().zip(expected) {
        assert!(fact.starts_with(want), "{fact} / {want}");
    }
    // The boundary's row names it.
    assert!(out.mechanisms.summary()[0].starts_with("Aborted, then committed again"));
}

#[test]
fn an_aborted_record_never_committed_is_phantom_work_and_saves_nothing_from_loss() {
    let rec = analyze(&aborted_then_redone(0).events);
    let out = &rec.boundaries[0].judgement;
    // m-0 was committed past with no record under read_committed: the aborted record is no
    // effect, so the loss stands.
    assert_eq!(out.verdict, Verdict::Lost);
    assert_eq!(out.counts.lost, 1);
    assert!(out
        .mechanisms
        .of("m-0")
        .is_some_and(|m| !m.read_uncommitted_only()));
    let aborted = out
        .mechanisms
        .groups
        .iter()
        .find(|g| g.mechanism == Mechanism::AbortedNeverCommitted)
        .expect("the aborted group");
    let e = &aborted.samples[0];
    assert_eq!((e.id.as_str(), e.outcome), ("m-0", Outcome::Lost));
    assert!(e
        .evidence
        .last()
        .is_some_and(|x| x.what.starts_with("no committed record of it in out")));
    assert_eq!(
        out.mechanisms.groups.last().unwrap().mechanism,
        Mechanism::AbortedNeverCommitted
    );
}

#[test]
fn a_duplicate_is_explained_first_and_its_aborted_record_after_it() {
    // m-0 committed twice (a real duplicate under read_committed) and aborted once.
    let rec = analyze(&aborted_then_redone(2).events);
    let out = &rec.boundaries[0].judgement;
    assert_eq!(out.verdict, Verdict::Duplicated);
    let kinds: Vec<Mechanism> = out.mechanisms.groups.iter().map(|g| g.mechanism).collect();
    assert!(!kinds[0].read_uncommitted_only(), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&Mechanism::AbortedThenCommitted));
    assert!(out
        .mechanisms
        .of("m-0")
        .is_some_and(|m| !m.read_uncommitted_only()));
}

#[test]
fn records_read_uncommitted_as_effects_are_not_named_again() {
    // A boundary reading read_uncommitted has no aborted list to name (its effects hold them).
    let mut tl = aborted_then_redone(1);
    for st in &mut tl.events {
        if let Event::OutputTopicRead { isolation, .. } = &mut st.event {
            *isolation = "read_uncommitted".into();
        }
    }
    let rec = analyze(&tl.events);
    let out = &rec.boundaries[0].judgement;
    assert!(out
        .mechanisms
        .groups
        .iter()
        .all(|g| !g.mechanism.read_uncommitted_only()));
}
