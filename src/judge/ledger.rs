//! The ledger: one entry per message ID the workload produced, merged over producer retries,
//! and its classification once the effects are counted (lost, duplicated, pending,
//! unconfirmed, exact; failed produces are counted and sampled, not judged).
//!
//! Invariants: identity is the message ID, never the offset; the first acknowledged record
//! gives an ID's partition and offset; an acknowledged ID is LOST only when the broker proves
//! it was consumed (its offset is below its partition's committed offset in the last
//! `progress` event, or the AMQP queue's whole remainder no longer holds it), else PENDING,
//! and (Kafka) only when a watched consumer connection's accepted commit passed it, else an
//! UNCONFIRMED LOSS counted in `committer_unknown`; one array lookup per event (IDs by number).

use serde::Serialize;

use crate::judge::facts::{ProgressSnapshot, RunFacts};
use crate::judge::model::{Anomaly, Counts, Outcome, FAILED_SAMPLES};
use crate::timeline::{MessageNo, ProduceStatus, Produced, Recorded};

/// The index of an ID without an entry (an effect's ID the workload never produced).
const NO_ENTRY: u32 = u32::MAX;

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

/// One ID of the ledger while judging (20 bytes: a run of ten million IDs has ten million).
#[derive(Clone, Copy)]
struct Entry {
    /// The `produced` event that gives its ID, place, time and error (the first of the best
    /// status).
    row: u32,
    applied: u32,
    replayed: u32,
    /// Index into the anomalies once classified, else [`NO_ENTRY`].
    anomaly: u32,
    status: ProduceStatus,
    /// Acknowledged at two different partition/offset pairs (a producer retry).
    stored_twice: bool,
}

/// An entry with the `produced` event it names.
struct Seen<'a> {
    e: Entry,
    p: Produced<'a>,
}

impl Seen<'_> {
    /// Whether the broker proves the ID was consumed (counts it done). Kafka: the group
    /// committed past its offset. AMQP: the queue no longer holds it (and the list of what it
    /// holds is whole). Without either word from the broker, or without a known offset: no.
    fn consumed(&self, facts: &RunFacts) -> bool {
        match (
            &facts.remainder,
            &facts.progress,
            self.p.partition,
            self.p.offset,
        ) {
            (Some(left), ..) => left.complete && !left.ids.contains(self.p.id()),
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
        match (&facts.remainder, self.p.partition, self.p.offset) {
            (Some(_), ..) => true,
            (None, Some(_), Some(_)) if facts.progress_is_stored => true,
            (None, Some(part), Some(off)) => facts.commits_seen.covers(part, off),
            (None, ..) => false,
        }
    }

    /// The outcome by the number of applied effects: `none` (computed only then) without any,
    /// EXACT with one, DUPLICATED with more.
    fn by_effects(&self, none: impl FnOnce() -> Outcome) -> Outcome {
        match self.e.applied {
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
    recorded: &'a Recorded,
    entries: Vec<Entry>,
    /// Each ID's entry, by ID number ([`NO_ENTRY`]: none).
    index: Vec<u32>,
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
    /// The ledger of `recorded`'s `produced` events.
    pub(crate) fn read(recorded: &'a Recorded, counts: &mut Counts) -> Ledger<'a> {
        let mut ledger = Ledger {
            recorded,
            entries: Vec::with_capacity(recorded.produced_len()),
            index: vec![NO_ENTRY; recorded.ids().bound()],
        };
        for (row, p) in recorded.produced().enumerate() {
            // Rows fit u32 as IDs do: a run of 4 billion messages is beyond any plan.
            ledger.record(row as u32, &p, counts);
        }
        ledger
    }

    /// Entry `e` with its `produced` event.
    fn seen(&self, e: Entry) -> Seen<'a> {
        Seen {
            e,
            p: self.recorded.produced_at(e.row as usize),
        }
    }

    /// Distinct IDs with a produce record (failed ones included).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records one `produced` event (row `row`); a retry of a known ID merges into its entry
    /// (a better record replaces a worse one; the first of the best kind is kept).
    fn record(&mut self, row: u32, produce: &Produced, counts: &mut Counts) {
        counts.produce_records += 1;
        match self.index[produce.no.index()] {
            NO_ENTRY => {
                self.index[produce.no.index()] = self.entries.len() as u32;
                self.entries.push(Entry {
                    row,
                    applied: 0,
                    replayed: 0,
                    anomaly: NO_ENTRY,
                    status: produce.status,
                    stored_twice: false,
                });
            }
            at => {
                let placed = self
                    .recorded
                    .produced_at(self.entries[at as usize].row as usize);
                let e = &mut self.entries[at as usize];
                if status_rank(produce.status) > status_rank(e.status) {
                    e.status = produce.status;
                    e.row = row;
                } else if produce.status == ProduceStatus::Acked
                    && e.status == ProduceStatus::Acked
                    && (placed.partition, placed.offset) != (produce.partition, produce.offset)
                    && !e.stored_twice
                {
                    e.stored_twice = true;
                    counts.multi_offset += 1;
                }
            }
        }
    }

    /// Where ID `no` sits.
    pub(crate) fn place(&self, no: MessageNo) -> Place {
        match self.index.get(no.index()) {
            Some(&NO_ENTRY) | None => Place::Phantom,
            Some(&i) => Place::Entry(i as usize),
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
        self.entries
            .get(i)
            .and_then(|e| (e.anomaly != NO_ENTRY).then_some(e.anomaly as usize))
    }

    /// Whether some anomalous entry has an effect (applied or replayed) to list.
    pub(crate) fn anomalies_have_effects(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.anomaly != NO_ENTRY && (e.applied > 0 || e.replayed > 0))
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
        for (i, &entry) in self.entries.iter().enumerate() {
            let e = self.seen(entry);
            let outcome = match entry.status {
                ProduceStatus::Failed => {
                    count_failed(&e, counts, &mut failed_samples);
                    continue;
                }
                ProduceStatus::Acked => {
                    counts.produced += 1;
                    acked_without_effect += u64::from(entry.applied == 0);
                    let outcome = e.by_effects(|| {
                        if facts.diverted(e.p.id()) {
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
            if entry.applied > 0 {
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
            // Anomalies number at most the entries, which fit u32.
            self.entries[i].anomaly = anomalies.len() as u32;
            let e = self.seen(self.entries[i]);
            let committed = match (progress, e.p.partition) {
                (Some(p), Some(part)) => p.committed.get(&part).copied(),
                _ => None,
            };
            anomalies.push(Anomaly {
                id: e.p.id().to_string(),
                outcome,
                produce_status: Some(e.e.status),
                partition: e.p.partition,
                offset: e.p.offset,
                produced_at_us: Some(e.p.t_us),
                committed,
                effects: Vec::new(),
            });
        }
        anomalies
    }
}

fn count_failed(e: &Seen, counts: &mut Counts, samples: &mut Vec<FailedProduce>) {
    counts.failed += 1;
    if e.e.applied > 0 || e.e.replayed > 0 {
        counts.failed_effected += 1;
    }
    if samples.len() < FAILED_SAMPLES {
        samples.push(FailedProduce {
            id: e.p.id().to_string(),
            t_us: e.p.t_us,
            error: e.p.error.map(str::to_string),
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
