//! Property tests: the judge against a naive oracle over random ledgers.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::judge::fixtures::{
    at, commit_event, committed as committed_offset, effect_event, info, produced_event,
};
use crate::timeline::{
    CommitPhase, EffectOutcome, EndReason, Event, FaultRecord, ProcessRef, ProduceStatus, Stamped,
};

/// One generated message: status, partition, applied and replayed effect counts, and an
/// optional retry record.
#[derive(Debug, Clone)]
struct Msg {
    status: ProduceStatus,
    partition: i32,
    applied: u32,
    replayed: u32,
    retry: bool,
}

#[derive(Debug, Clone)]
struct Case {
    msgs: Vec<Msg>,
    /// Committed offset per partition, as a fraction numerator of the partition's length.
    commit: [u8; 3],
    progress: bool,
    planned: usize,
    fired: Vec<bool>,
    /// For a fired fault: whether it hit an incarnation (else it fired but hit nothing).
    hits: Vec<bool>,
    end: Option<EndReason>,
    expect: &'static str,
    phantoms: u32,
    /// Planned message count minus produced IDs (0 = complete ledger).
    missing: u64,
    /// `effect_rejected` events (effects the sink could not read).
    rejected: u32,
    /// Per partition: whether the consumer's commit of its progress went through the proxy
    /// (an accepted `commit` event), else the broker's offset has no known committer.
    seen: [bool; 3],
}

fn status() -> impl Strategy<Value = ProduceStatus> {
    prop_oneof![
        6 => Just(ProduceStatus::Acked),
        1 => Just(ProduceStatus::Indeterminate),
        1 => Just(ProduceStatus::Failed),
    ]
}

fn msg() -> impl Strategy<Value = Msg> {
    (
        status(),
        0..3i32,
        prop_oneof![2 => Just(0u32), 6 => Just(1u32), 2 => 2..4u32],
        0..2u32,
        prop::bool::weighted(0.1),
    )
        .prop_map(|(status, partition, applied, replayed, retry)| Msg {
            status,
            partition,
            applied,
            replayed,
            retry,
        })
}

fn end_reason() -> impl Strategy<Value = Option<EndReason>> {
    prop_oneof![
        6 => Just(Some(EndReason::Settled)),
        2 => Just(Some(EndReason::Deadline)),
        1 => Just(Some(EndReason::Aborted)),
        1 => Just(Some(EndReason::InfrastructureError)),
        1 => Just(None),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(msg(), 0..25),
        prop::array::uniform3(0u8..=4),
        prop::bool::weighted(0.85),
        0..3usize,
        prop::collection::vec(prop::bool::weighted(0.8), 3),
        end_reason(),
        prop::sample::select(vec!["at-most-once", "at-least-once", "exactly-once"]),
        prop_oneof![6 => Just(0u32), 1 => 1..3u32],
        prop_oneof![8 => Just(0u64), 1 => 1..3u64],
        (
            prop::collection::vec(prop::bool::weighted(0.9), 3),
            prop_oneof![6 => Just(0u32), 1 => 1..3u32],
            prop::array::uniform3(prop::bool::weighted(0.85)),
        ),
    )
        .prop_map(
            |(msgs, commit, progress, planned, fired, end, expect, phantoms, missing, more)| {
                let (hits, rejected, seen) = more;
                Case {
                    msgs,
                    commit,
                    progress,
                    planned,
                    fired,
                    hits,
                    end,
                    expect,
                    phantoms,
                    missing,
                    rejected,
                    seen,
                }
            },
        )
}

/// The timeline of a case, with produced and effect events in a shuffled order (effects may
/// precede their produce ack), framed by start, faults, progress and end. Also returns each
/// message's partition offset.
fn build(c: &Case, shuffle: &[usize]) -> (Vec<Stamped>, Vec<i64>, BTreeMap<i32, i64>) {
    let mut body: Vec<Event> = Vec::new();
    let mut next = [0i64; 3];
    let mut offsets = Vec::new();
    for (i, m) in c.msgs.iter().enumerate() {
        let id = format!("m{i}");
        let off = next[m.partition as usize];
        next[m.partition as usize] += if m.retry { 2 } else { 1 };
        offsets.push(off);
        body.push(produced_event(&id, Some(m.partition), Some(off), m.status));
        for _ in 0..m.applied {
            body.push(effect(&id, EffectOutcome::Applied));
        }
        for _ in 0..m.replayed {
            body.push(effect(&id, EffectOutcome::Replayed));
        }
    }
    for p in 0..c.phantoms {
        body.push(effect(&format!("ghost{p}"), EffectOutcome::Applied));
    }
    for r in 0..c.rejected {
        body.push(Event::EffectRejected {
            boundary: None,
            reason: "no message ID found by the `effects.id` rule".into(),
            sample: format!("{{\"nope\":{r}}}"),
        });
    }
    // Shuffle the body with the generated permutation keys.
    let mut keyed: Vec<(usize, Event)> = body
        .into_iter()
        .enumerate()
        .map(|(i, e)| (shuffle.get(i).copied().unwrap_or(i), e))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    let mut events: Vec<Event> = Vec::new();
    let planned: Vec<String> = (0..c.planned).map(|i| format!("fault {i}")).collect();
    let planned_refs: Vec<&str> = planned.iter().map(String::as_str).collect();
    let produced = c.msgs.len() as u64;
    events.push(Event::RunStarted(Box::new(info(
        &planned_refs,
        produced + c.missing,
        c.expect,
    ))));
    events.extend(keyed.into_iter().map(|(_, e)| e));
    // Retries: a second acked record for the same ID at the next offset.
    for (i, m) in c.msgs.iter().enumerate() {
        if m.retry && m.status == ProduceStatus::Acked {
            events.push(produced_event(
                &format!("m{i}"),
                Some(m.partition),
                Some(offsets[i] + 1),
                ProduceStatus::Acked,
            ));
        }
    }
    for f in 0..c.planned {
        events.push(Event::Fault(Box::new(FaultRecord {
            fault: f,
            action: "kill".into(),
            target: "consumer".into(),
            trigger: "at: 1s".into(),
            matched_at_us: 1,
            fired_at_us: 2,
            trigger_latency_us: 1,
            applied: c.fired[f],
            detail: String::new(),
            hit: if c.fired[f] && c.hits[f] {
                vec![ProcessRef {
                    instance: 0,
                    incarnation: 1,
                }]
            } else {
                Vec::new()
            },
            length_us: None,
            through_proxy: false,
        })));
    }
    let committed: BTreeMap<i32, i64> = (0..3)
        .map(|p| (p as i32, next[p] * c.commit[p] as i64 / 4))
        .collect();
    if c.progress {
        // The real proxy records the consumer's accepted commit before the broker's progress
        // is read; an unseen one leaves the offset without a known committer.
        for (&p, &next) in committed.iter() {
            if next > 0 && c.seen[p as usize] {
                events.push(commit_event(
                    "billing-r1",
                    (0, 1),
                    vec![committed_offset("orders-r1", p, next)],
                    CommitPhase::Response,
                ));
            }
        }
        events.push(Event::Progress {
            committed: committed.clone(),
            end: committed.clone(),
        });
    }
    if let Some(reason) = c.end {
        events.push(Event::RunEnded { reason });
    }
    let stamped = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| at(i as u64, i as u64 * 10, event))
        .collect();
    (stamped, offsets, committed)
}

fn effect(id: &str, outcome: EffectOutcome) -> Event {
    effect_event(id, Some(0), Some(1), outcome)
}

fn with_shuffle() -> impl Strategy<Value = (Case, Vec<usize>)> {
    case().prop_flat_map(|c| {
        let n: usize = c
            .msgs
            .iter()
            .map(|m| 1 + (m.applied + m.replayed) as usize)
            .sum::<usize>()
            + c.phantoms as usize
            + c.rejected as usize;
        (Just(c), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
    })
}

/// What a naive reading of a case says, message by message.
struct Oracle {
    lost: u64,
    unconfirmed_loss: u64,
    committer_unknown: u64,
    dup: u64,
    exact: u64,
    not_counted_done: u64,
    acked: u64,
    indet: u64,
}

fn oracle(c: &Case, offsets: &[i64], committed: &BTreeMap<i32, i64>) -> Oracle {
    let judged = |m: &Msg| m.status != ProduceStatus::Failed;
    let done = |m: &Msg, off: i64| c.progress && off < committed[&m.partition];
    // Blind: effects went unread, or no effect named any produced ID.
    let blind = c.rejected > 0 || c.msgs.iter().all(|m| m.applied + m.replayed == 0);
    let consumed_without_effect = |by_seen: bool| {
        c.msgs
            .iter()
            .zip(offsets)
            .filter(|(m, _)| m.status == ProduceStatus::Acked && m.applied == 0)
            .filter(|(m, off)| done(m, **off) && c.seen[m.partition as usize] == by_seen)
            .count() as u64
    };
    let (known, unknown) = (
        consumed_without_effect(true),
        consumed_without_effect(false),
    );
    let count = |f: &dyn Fn(&Msg) -> bool| c.msgs.iter().filter(|m| f(m)).count() as u64;
    Oracle {
        lost: if blind { 0 } else { known },
        unconfirmed_loss: if blind { known + unknown } else { unknown },
        committer_unknown: if blind { 0 } else { unknown },
        dup: count(&|m| judged(m) && m.applied >= 2),
        exact: count(&|m| judged(m) && m.applied == 1),
        not_counted_done: c
            .msgs
            .iter()
            .zip(offsets)
            .filter(|(m, off)| judged(m) && m.applied > 0 && !done(m, **off))
            .count() as u64,
        acked: count(&|m| m.status == ProduceStatus::Acked),
        indet: count(&|m| m.status == ProduceStatus::Indeterminate),
    }
}

impl Oracle {
    /// The claim's state when the verdict is not INCONCLUSIVE: violated by a proof, unknown
    /// when something it forbids could have happened unseen, else met.
    fn claim(&self, c: &Case, x: Expectation, pending: u64, verdict: Verdict) -> ExpectationState {
        let violated =
            (x.forbids_loss() && self.lost > 0) || (x.forbids_duplicate() && self.dup > 0);
        if violated {
            return ExpectationState::Violated;
        }
        let interrupted = !matches!(c.end, Some(EndReason::Settled | EndReason::Deadline));
        let both = interrupted
            || c.rejected > 0
            || self.exact + self.dup == 0
            || (verdict == Verdict::Exact && self.not_counted_done > 0);
        let loss = pending > 0 || self.unconfirmed_loss > 0 || c.missing > 0;
        let duplicate = self.not_counted_done > 0;
        let hidden = both || (x.forbids_loss() && loss) || (x.forbids_duplicate() && duplicate);
        if hidden {
            ExpectationState::Unknown
        } else {
            ExpectationState::Met
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn classification_matches_a_naive_oracle((c, shuffle) in with_shuffle()) {
        let (events, offsets, committed) = build(&c, &shuffle);
        let rec = analyze(&events);
        let o = oracle(&c, &offsets, &committed);

        prop_assert_eq!(rec.counts.lost, o.lost);
        prop_assert_eq!(rec.counts.unconfirmed_loss, o.unconfirmed_loss);
        prop_assert_eq!(rec.counts.committer_unknown, o.committer_unknown);
        prop_assert_eq!(rec.counts.duplicated, o.dup);
        prop_assert_eq!(rec.counts.exact, o.exact);
        prop_assert_eq!(rec.counts.not_counted_done, o.not_counted_done);
        prop_assert_eq!(rec.counts.produced, o.acked);
        prop_assert_eq!(rec.counts.indeterminate, o.indet);
        prop_assert_eq!(rec.counts.phantom, c.phantoms as u64);
        let k = &rec.counts;
        prop_assert_eq!(
            k.exact + k.duplicated + k.lost + k.unconfirmed_loss + k.pending + k.unconfirmed,
            k.produced + k.indeterminate
        );
        prop_assert_eq!(k.effected, k.exact + k.duplicated);
        prop_assert_eq!(
            rec.anomalies.len() as u64,
            k.duplicated + k.lost + k.unconfirmed_loss + k.pending + k.unconfirmed + k.phantom
        );

        // Verdict: loss iff some acked ID with no applied effect is committed past while the
        // oracle could see; duplicate iff some judged ID has two applied effects.
        prop_assert_eq!(rec.verdict.has_loss(), o.lost > 0);
        prop_assert_eq!(rec.verdict.has_duplicate(), o.dup > 0);
        let short = c.planned == 0
            || (0..c.planned).any(|f| !(c.fired[f] && c.hits[f]))
            || c.rejected > 0
            || k.pending > 0
            || o.committer_unknown > 0
            || c.missing > 0
            || !matches!(c.end, Some(EndReason::Settled | EndReason::Deadline))
            || o.exact + o.dup == 0;
        if o.lost == 0 && o.dup == 0 {
            prop_assert_eq!(rec.verdict == Verdict::Inconclusive, short);
        }
        prop_assert_eq!(
            rec.verdict == Verdict::Inconclusive,
            !rec.inconclusive_reasons.is_empty()
        );

        // Exit code agrees with verdict, expectation and what the evidence covers.
        let x = Expectation::parse(c.expect).unwrap();
        let code = rec.exit_code();
        if c.end == Some(EndReason::InfrastructureError) {
            prop_assert_eq!(code, 4);
        } else if rec.verdict == Verdict::Inconclusive {
            prop_assert_eq!(code, 3);
            prop_assert_eq!(rec.expectation_met, None);
        } else {
            let state = o.claim(&c, x, k.pending, rec.verdict);
            prop_assert_eq!(rec.expectation_state, state);
            prop_assert_eq!(rec.expectation_met, state.as_met());
            let want = match state {
                ExpectationState::Met => 0,
                ExpectationState::Violated => 1,
                ExpectationState::Unknown => 3,
            };
            prop_assert_eq!(code, want);
        }
        // An interrupted run never passes.
        if c.end != Some(EndReason::Settled) && c.end != Some(EndReason::Deadline) {
            prop_assert_ne!(code, 0);
        }
    }

    #[test]
    fn order_of_produced_and_effect_events_does_not_change_the_judgement(
        (c, shuffle) in with_shuffle()
    ) {
        let identity: Vec<usize> = (0..shuffle.len()).collect();
        let a = analyze(&build(&c, &identity).0);
        let b = analyze(&build(&c, &shuffle).0);
        prop_assert_eq!(a.verdict, b.verdict);
        prop_assert_eq!(&a.counts, &b.counts);
        let ids = |r: &Judgement| {
            let mut v: Vec<(String, Outcome)> =
                r.anomalies.iter().map(|x| (x.id.clone(), x.outcome)).collect();
            v.sort();
            v
        };
        prop_assert_eq!(ids(&a), ids(&b));
    }
}
