//! The ledger: one entry per message ID the workload produced, merged over producer retries,
//! and its classification once the effects are counted (lost, duplicated, pending,
//! unconfirmed, exact; failed produces are counted and sampled, not judged).
//!
//! Invariants: identity is the message ID, never the offset; the first acknowledged record
//! gives an ID's partition and offset; an acknowledged ID is LOST only when the broker proves
//! it was consumed (its offset is below its partition's committed offset in the last
//! `progress` event, or the AMQP queue's whole remainder no longer holds it), else PENDING,
//! and (Kafka) only when a watched consumer connection's accepted commit passed it, else an
//! UNCONFIRMED LOSS counted in `committer_unknown`; one hash lookup per event.

use std::collections::hash_map;

use serde::Serialize;

use crate::judge::facts::{ProgressSnapshot, RunFacts};
use crate::judge::id_map::IdMap;
use crate::judge::model::{Anomaly, Counts, Outcome, FAILED_SAMPLES};
use crate::timeline::ProduceStatus;

/// A produce the broker refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedProduce {
    /// The message ID.
    pub id: String,
    /// When (µs).
    pub t_us: u64,
    /// The error, when given.
    pub error: Option<String>,
}

/// Rank of a produce status when merging retries: an acknowledgement beats a timeout beats a
/// refusal.
fn status_rank(s: ProduceStatus) -> u8 {
    match s {
        ProduceStatus::Acked => 2,
        ProduceStatus::Indeterminate => 1,
        ProduceStatus::Failed => 0,
    }
}

/// One ID of the ledger while judging.
struct Entry<'a> {
    id: &'a str,
    status: ProduceStatus,
    partition: Option<i32>,
    offset: Option<i64>,
    produced_at_us: u64,
    error: Option<&'a str>,
    applied: u32,
    replayed: u32,
    /// Acknowledged at two different partition/offset pairs (a producer retry).
    stored_twice: bool,
    /// Index into the anomalies, once classified.
    anomaly: Option<usize>,
}

impl Entry<'_> {
    /// Whether the broker proves the ID was consumed (counts it done). Kafka: the group
    /// committed past its offset. AMQP: the queue no longer holds it (and the list of what it
    /// holds is whole). Without either word from the broker, or without a known offset: no.
    fn consumed(&self, facts: &RunFacts) -> bool {
        match (
            &facts.remainder,
            &facts.progress,
            self.partition,
            self.offset,
        ) {
            (Some(left), ..) => left.complete && !left.ids.contains(self.id),
            (None, Some(p), Some(part), Some(off)) => {
                p.committed.get(&part).is_some_and(|&c| off < c)
            }
            _ => false,
        }
    }

    /// Whether the word that counts the ID done came from a watched consumer connection. AMQP:
    /// the queue's remainder is the broker's own word. Kafka: a commit past its offset, from a
    /// connection through the proxy, that the broker accepted (`committers`); or the offsets
    /// the consumer stored with its own data, which only it writes.
    fn committer_known(&self, facts: &RunFacts) -> bool {
        match (&facts.remainder, self.partition, self.offset) {
            (Some(_), ..) => true,
            (None, Some(_), Some(_)) if facts.progress_is_stored => true,
            (None, Some(part), Some(off)) => facts.commits_seen.covers(part, off),
            (None, ..) => false,
        }
    }

    /// The outcome by the number of applied effects: `none` (computed only then) without any,
    /// EXACT with one, DUPLICATED with more.
    fn by_effects(&self, none: impl FnOnce() -> Outcome) -> Outcome {
        match self.applied {
            0 => none(),
            1 => Outcome::Exact,
            _ => Outcome::Duplicated,
        }
    }
}

/// Where an effect's ID sits in the ledger.
pub(crate) enum Place {
    /// The ledger's entry at this index.
    Entry(usize),
    /// Not produced: a phantom.
    Phantom,
}

/// The message IDs of a run, in the order their first produce record was read.
pub(crate) struct Ledger<'a> {
    entries: Vec<Entry<'a>>,
    index: IdMap<'a, usize>,
}

/// What classifying the ledger found, besides the counts.
pub(crate) struct Classified {
    /// The first [`FAILED_SAMPLES`] failed produces.
    pub(crate) failed_samples: Vec<FailedProduce>,
    /// Acknowledged IDs with no applied effect (lost or pending).
    pub(crate) acked_without_effect: u64,
    /// The anomalies of ledger IDs, in report order, without their effects yet.
    pub(crate) anomalies: Vec<Anomaly>,
}

impl<'a> Ledger<'a> {
    /// An empty ledger with room for `produce_records` records.
    pub(crate) fn with_capacity(produce_records: usize) -> Ledger<'a> {
        let mut index = IdMap::default();
        index.reserve(produce_records);
        Ledger {
            entries: Vec::with_capacity(produce_records),
            index,
        }
    }

    /// Distinct IDs with a produce record (failed ones included).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records one `produced` event; a retry of a known ID merges into its entry (a better
    /// record replaces a worse one; the first of the best kind is kept).
    pub(crate) fn record(&mut self, produce: Produce<'a>, counts: &mut Counts) {
        counts.produce_records += 1;
        match self.index.entry(produce.id) {
            hash_map::Entry::Vacant(slot) => {
                slot.insert(self.entries.len());
                self.entries.push(Entry {
                    id: produce.id,
                    status: produce.status,
                    partition: produce.partition,
                    offset: produce.offset,
                    produced_at_us: produce.t_us,
                    error: produce.error,
                    applied: 0,
                    replayed: 0,
                    stored_twice: false,
                    anomaly: None,
                });
            }
            hash_map::Entry::Occupied(slot) => {
                let e = &mut self.entries[*slot.get()];
                if status_rank(produce.status) > status_rank(e.status) {
                    e.status = produce.status;
                    e.partition = produce.partition;
                    e.offset = produce.offset;
                    e.produced_at_us = produce.t_us;
                    e.error = produce.error;
                } else if produce.status == ProduceStatus::Acked
                    && e.status == ProduceStatus::Acked
                    && (e.partition, e.offset) != (produce.partition, produce.offset)
                    && !e.stored_twice
                {
                    e.stored_twice = true;
                    counts.multi_offset += 1;
                }
            }
        }
    }

    /// Where `id` sits.
    pub(crate) fn place(&self, id: &str) -> Place {
        match self.index.get(id) {
            Some(&i) => Place::Entry(i),
            None => Place::Phantom,
        }
    }

    /// Counts one effect of the entry at `i`.
    pub(crate) fn count_effect(&mut self, i: usize, applied: bool) {
        let e = &mut self.entries[i];
        if applied {
            e.applied = e.applied.saturating_add(1);
        } else {
            e.replayed = e.replayed.saturating_add(1);
        }
    }

    /// The anomaly index of the entry at `i`, once classified.
    pub(crate) fn anomaly_of(&self, i: usize) -> Option<usize> {
        self.entries.get(i).and_then(|e| e.anomaly)
    }

    /// Whether some anomalous entry has an effect (applied or replayed) to list.
    pub(crate) fn anomalies_have_effects(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.anomaly.is_some() && (e.applied > 0 || e.replayed > 0))
    }

    /// Classifies every entry in ledger order, counting outcomes, and lists the anomalies in
    /// report order (a stable sort keeps ledger order within an outcome). With `oracle_blind`
    /// (the sink rejected effects, or saw none for any produced ID) an ID the broker counts
    /// done without an effect is an unconfirmed loss, never lost. Effected IDs the broker does
    /// not count done are counted in `not_counted_done`.
    pub(crate) fn classify(
        &mut self,
        facts: &RunFacts,
        oracle_blind: bool,
        counts: &mut Counts,
    ) -> Classified {
        let mut failed_samples = Vec::new();
        let mut anomaly_refs: Vec<(Outcome, usize)> = Vec::new();
        let mut acked_without_effect = 0u64;
        for (i, e) in self.entries.iter().enumerate() {
            let outcome = match e.status {
                ProduceStatus::Failed => {
                    count_failed(e, counts, &mut failed_samples);
                    continue;
                }
                ProduceStatus::Acked => {
                    counts.produced += 1;
                    acked_without_effect += u64::from(e.applied == 0);
                    let outcome = e.by_effects(|| {
                        if facts.diverted(e.id) {
                            return Outcome::Diverted;
                        }
                        match (e.consumed(facts), oracle_blind, e.committer_known(facts)) {
                            (true, false, true) => Outcome::Lost,
                            (true, ..) => Outcome::UnconfirmedLoss,
                            (false, ..) => Outcome::Pending,
                        }
                    });
                    let unknown = outcome == Outcome::UnconfirmedLoss && !oracle_blind;
                    counts.committer_unknown += u64::from(unknown);
                    outcome
                }
                ProduceStatus::Indeterminate => {
                    counts.indeterminate += 1;
                    e.by_effects(|| Outcome::Unconfirmed)
                }
            };
            if e.applied > 0 {
                counts.effected += 1;
                counts.not_counted_done += u64::from(!e.consumed(facts));
            }
            count_outcome(outcome, counts);
            if outcome != Outcome::Exact {
                anomaly_refs.push((outcome, i));
            }
        }
        anomaly_refs.sort_by_key(|&(o, _)| o);
        let anomalies = self.anomalies(&anomaly_refs, facts.progress.as_ref());
        Classified {
            failed_samples,
            acked_without_effect,
            anomalies,
        }
    }

    /// The anomalies of `refs`, in that order, each entry remembering its anomaly's index.
    fn anomalies(
        &mut self,
        refs: &[(Outcome, usize)],
        progress: Option<&ProgressSnapshot>,
    ) -> Vec<Anomaly> {
        let mut anomalies = Vec::with_capacity(refs.len());
        for &(outcome, i) in refs {
            let e = &mut self.entries[i];
            e.anomaly = Some(anomalies.len());
            let committed = match (progress, e.partition) {
                (Some(p), Some(part)) => p.committed.get(&part).copied(),
                _ => None,
            };
            anomalies.push(Anomaly {
                id: e.id.to_string(),
                outcome,
                produce_status: Some(e.status),
                partition: e.partition,
                offset: e.offset,
                produced_at_us: Some(e.produced_at_us),
                committed,
                effects: Vec::new(),
            });
        }
        anomalies
    }
}

/// One `produced` event, as the ledger reads it.
pub(crate) struct Produce<'a> {
    /// The message ID.
    pub(crate) id: &'a str,
    /// Acked, failed or indeterminate.
    pub(crate) status: ProduceStatus,
    /// Partition (Kafka).
    pub(crate) partition: Option<i32>,
    /// Offset (Kafka) or publish sequence (AMQP).
    pub(crate) offset: Option<i64>,
    /// When it was recorded (µs).
    pub(crate) t_us: u64,
    /// The broker's error, when it refused.
    pub(crate) error: Option<&'a str>,
}

fn count_failed(e: &Entry, counts: &mut Counts, samples: &mut Vec<FailedProduce>) {
    counts.failed += 1;
    if e.applied > 0 || e.replayed > 0 {
        counts.failed_effected += 1;
    }
    if samples.len() < FAILED_SAMPLES {
        samples.push(FailedProduce {
            id: e.id.to_string(),
            t_us: e.produced_at_us,
            error: e.error.map(str::to_string),
        });
    }
}

fn count_outcome(outcome: Outcome, counts: &mut Counts) {
    match outcome {
        Outcome::Exact => counts.exact += 1,
        Outcome::Duplicated => counts.duplicated += 1,
        Outcome::Lost => counts.lost += 1,
        Outcome::UnconfirmedLoss => counts.unconfirmed_loss += 1,
        Outcome::Pending => counts.pending += 1,
        Outcome::Unconfirmed => counts.unconfirmed += 1,
        Outcome::Diverted => counts.diverted += 1,
        Outcome::Phantom => unreachable!("ledger IDs are never phantom"),
    }
}
