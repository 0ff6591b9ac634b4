//! The effect passes: pass 2 counts every effect against its ledger ID (or keeps it on a
//! phantom: an ID the workload never produced), pass 3 lists the effects of the anomalous
//! ledger IDs once classification has named them.
//!
//! Invariants: only `applied` effects change an outcome (a `replayed` effect is counted and
//! listed, never a duplicate nor a proof of processing); neither pass hashes (an effect finds
//! its ledger entry by its ID's number) and pass 3 is skipped when no anomaly has an effect; an
//! output-topic effect is attributed to the incarnation whose acknowledged Produce (a
//! `consumer_produce` event) wrote its record's offset.

use std::collections::HashMap;

use crate::judge::ledger::{Ledger, Place};
use crate::judge::model::{Anomaly, Counts, EffectSeen, Outcome};
use crate::judge::writers::Writers;

use crate::timeline::{AttributedBy, Effect, EffectOutcome, MessageNo, Recorded};

/// What pass 2 found besides the counts.
pub(crate) struct EffectTally {
    /// Phantom IDs, by first effect, each with all its effects.
    pub(crate) phantoms: Vec<Anomaly>,
    /// Effects (applied or replayed) that named an ID of the ledger: 0 means the sink saw
    /// nothing of the produced messages, so it cannot prove any of them lost.
    pub(crate) on_ledger: u64,
    /// Who wrote each output record (`kafka-topic` effects).
    writers: Writers,
}

/// The effect as reported; an output record no process was named for is attributed to the
/// incarnation whose Produce wrote it, when the proxy saw one.
fn seen(e: &Effect, writers: &Writers) -> EffectSeen {
    let mut seen = EffectSeen {
        seq: e.seq,
        t_us: e.t_us,
        instance: e.instance,
        incarnation: e.incarnation,
        outcome: e.outcome,
        sink: e.sink,
        attribution: e.attribution(),
    };
    let writer = match (e.record, e.instance) {
        (Some(place), None) => writers.of(&place.topic, place.partition, place.offset),
        _ => None,
    };
    if let Some(w) = writer {
        seen.instance = Some(w.who.instance);
        seen.incarnation = Some(w.who.incarnation);
        seen.attribution.by = Some(AttributedBy::Producer);
    }
    seen
}

/// Pass 2: counts effects per ID; phantoms keep their effects right away.
pub(crate) fn count(recorded: &Recorded, ledger: &mut Ledger, counts: &mut Counts) -> EffectTally {
    let mut phantom_index: HashMap<MessageNo, usize> = HashMap::new();
    let mut tally = EffectTally {
        phantoms: Vec::new(),
        on_ledger: 0,
        writers: Writers::read(recorded.others()),
    };
    for e in recorded.effects() {
        let applied = match e.outcome {
            EffectOutcome::Applied => {
                counts.effects_applied += 1;
                true
            }
            EffectOutcome::Replayed => {
                counts.effects_replayed += 1;
                false
            }
        };
        match ledger.place(e.no) {
            Place::Entry(i) => {
                // Ledger indices fit u32: a run of 4 billion messages is far beyond any plan.
                tally.on_ledger += 1;
                ledger.count_effect(i, applied);
            }
            Place::Phantom => {
                let phantoms = &mut tally.phantoms;
                let p = *phantom_index.entry(e.no).or_insert_with(|| {
                    phantoms.push(phantom(e.id()));
                    phantoms.len() - 1
                });
                phantoms[p].effects.push(seen(&e, &tally.writers));
            }
        }
    }
    tally
}

fn phantom(id: &str) -> Anomaly {
    Anomaly {
        id: id.to_owned(),
        outcome: Outcome::Phantom,
        produce_status: None,
        partition: None,
        offset: None,
        produced_at_us: None,
        committed: None,
        effects: Vec::new(),
    }
}

/// Pass 3: the effects of anomalous ledger IDs, skipped when none of them has any.
pub(crate) fn attach(
    recorded: &Recorded,
    ledger: &Ledger,
    tally: &EffectTally,
    anomalies: &mut [Anomaly],
) {
    if !ledger.anomalies_have_effects() {
        return;
    }
    for e in recorded.effects() {
        let Place::Entry(owner) = ledger.place(e.no) else {
            continue;
        };
        let Some(a) = ledger.anomaly_of(owner) else {
            continue;
        };
        anomalies[a].effects.push(seen(&e, &tally.writers));
    }
}
