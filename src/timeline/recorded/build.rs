//! Putting events into columns in timeline order: [`RecordedBuilder`] one event at a time on
//! one thread; [`Columns`] a block of events at a time on the reader's threads (IDs numbered by
//! [`SharedIds`]), the blocks' columns then appended in file order. Either way the `Stamped`
//! values of a large file never all exist at once.

use std::sync::Arc;

use super::super::ranges::{OffsetRange, UnresolvedOffsets};
use super::{
    resolve, DeliveredRecord, Deliveries, DeliveryRow, EffectExtra, EffectRow, Effects,
    ProducedExtra, ProducedRow, Produces, Recorded, BATCH, HAS_EXTRA, HAS_INCARNATION,
    HAS_INSTANCE, HAS_OFFSET, HAS_PARTITION, HAS_PID, NONE, POISON, REDELIVERED,
};
use crate::timeline::fast::{Hot, HotLine};
use crate::timeline::ids::{MessageIds, MessageNo, Numbering, PendingIds, SharedIds};
use crate::timeline::read::Lines;
use crate::timeline::{Attribution, Event, Stamped};

/// Builds a [`Recorded`] from events added in timeline order, on one thread.
#[derive(Debug, Default)]
pub struct RecordedBuilder {
    ids: MessageIds,
    columns: Columns,
}

impl RecordedBuilder {
    /// Adds the next event.
    pub fn push(&mut self, st: Stamped) {
        self.columns.push(st, &mut self.ids);
    }

    /// The columns, every range resolved into records from the acknowledged produces; an
    /// offset no single acknowledged produce names fails (a missing or wrong ID would make the
    /// judge claim what did not happen).
    pub fn finish(self) -> Result<Recorded, UnresolvedOffsets> {
        self.columns.finish(self.ids)
    }

    /// The columns, the offsets ranges name that no produce resolves left out.
    pub fn finish_lenient(self) -> Recorded {
        self.columns.finish_with_unresolved(self.ids).0
    }
}

/// One block's columns as the reader's thread fills them ([`Columns::for_block`]): IDs are
/// numbered provisionally as lines come, then all at once when the block ends, a shard at a
/// time (one lock each per block, not one per ID).
#[derive(Debug)]
pub(in crate::timeline) struct BlockColumns<'i> {
    pub(in crate::timeline) columns: Columns,
    pending: PendingIds,
    ids: &'i SharedIds,
}

impl Lines for BlockColumns<'_> {
    fn hot(&mut self, line: HotLine<'_>) {
        self.columns.push_hot(line, &mut self.pending);
    }

    fn event(&mut self, st: Stamped) {
        self.columns.push(st, &mut self.pending);
    }

    fn end(&mut self) {
        let nos = self.ids.add_all(&self.pending);
        self.columns.renumber(&nos);
        self.pending = PendingIds::default();
    }
}

/// The columns of a run of events, their IDs numbered elsewhere (by a [`Numbering`]).
#[derive(Debug, Default)]
pub struct Columns {
    produced: Produces,
    effects: Effects,
    deliveries: Deliveries,
    /// Each batch recorded with ranges: (its row, the ranges), resolved at the end.
    ranges: Vec<(usize, Vec<OffsetRange>)>,
    others: Vec<Stamped>,
}

impl Columns {
    /// Columns with room for about `messages` messages (an estimate: more only grow them;
    /// room never used is never resident).
    pub fn with_capacity(messages: usize) -> Columns {
        let mut c = Columns::default();
        c.produced.rows.reserve(messages);
        c.effects.rows.reserve(messages);
        c.deliveries.records.reserve(messages);
        c
    }

    /// Columns that the reader's threads fill with the lines of one block, their IDs numbered
    /// by `ids`.
    pub(in crate::timeline) fn for_block(ids: &SharedIds) -> BlockColumns<'_> {
        BlockColumns {
            columns: Columns::default(),
            pending: PendingIds::default(),
            ids,
        }
    }

    /// Gives every ID of these columns its number from `nos` (IDs numbered provisionally).
    fn renumber(&mut self, nos: &[MessageNo]) {
        let real = |no: MessageNo| PendingIds::resolve(nos, no);
        self.produced
            .rows
            .iter_mut()
            .for_each(|r| r.id = real(r.id));
        self.effects.rows.iter_mut().for_each(|r| r.id = real(r.id));
        let records = self.deliveries.records.iter_mut();
        records.for_each(|r| r.id = real(r.id));
    }

    /// Adds the events of `next` (which follow these), numbered by the same IDs.
    pub fn append(&mut self, next: Columns) {
        let Columns {
            produced,
            effects,
            deliveries,
            ranges,
            others,
        } = next;
        let shift = |extra: u32, by: usize| match extra {
            NONE => NONE,
            i => side_index(i as usize + by),
        };
        let by = self.produced.extra.len();
        let rows = produced
            .rows
            .into_iter()
            .map(|r| match r.flags & HAS_EXTRA {
                0 => r,
                _ => ProducedRow {
                    key_seq_or_extra: shift(r.key_seq_or_extra, by),
                    ..r
                },
            });
        self.produced.rows.extend(rows);
        self.produced.extra.extend(produced.extra);
        let by = self.effects.extra.len();
        let rows = effects.rows.into_iter().map(|r| EffectRow {
            extra: shift(r.extra, by),
            ..r
        });
        self.effects.rows.extend(rows);
        self.effects.extra.extend(effects.extra);
        let (row_by, record_by) = (self.deliveries.rows.len(), self.deliveries.records.len());
        let rows = deliveries.rows.into_iter().map(|r| DeliveryRow {
            start: r.start + record_by,
            ..r
        });
        self.deliveries.rows.extend(rows);
        self.deliveries.records.extend(deliveries.records);
        let ranges = ranges.into_iter().map(|(row, rs)| (row + row_by, rs));
        self.ranges.extend(ranges);
        self.others.extend(others);
    }

    /// The columns with their IDs, ranges resolved (see [`RecordedBuilder::finish`]).
    pub fn finish(self, ids: MessageIds) -> Result<Recorded, UnresolvedOffsets> {
        let (recorded, unresolved) = self.finish_with_unresolved(ids);
        match unresolved.count {
            0 => Ok(recorded),
            _ => Err(unresolved),
        }
    }

    fn finish_with_unresolved(mut self, ids: MessageIds) -> (Recorded, UnresolvedOffsets) {
        let unresolved = resolve::ranges(&self.produced, &mut self.deliveries, self.ranges);
        let recorded = Recorded {
            ids: Arc::new(ids),
            produced: Arc::new(self.produced),
            effects: self.effects,
            deliveries: Arc::new(self.deliveries),
            others: self.others,
        };
        (recorded, unresolved)
    }

    /// Adds the next event.
    fn push(&mut self, st: Stamped, ids: &mut impl Numbering) {
        let Stamped { seq, t_us, event } = st;
        let line = |event| HotLine { seq, t_us, event };
        match event {
            Event::Produced {
                id,
                seq: key_seq,
                key,
                partition,
                offset,
                status,
                error,
                poison,
            } => self.push_hot(
                line(Hot::Produced {
                    id: &id,
                    key_seq,
                    key: key.as_deref(),
                    partition,
                    offset,
                    status,
                    error: error.as_deref(),
                    poison,
                }),
                ids,
            ),
            Event::Effect {
                id,
                instance,
                incarnation,
                outcome,
                sink,
                boundary,
                attribution,
            } => {
                let Attribution {
                    by,
                    pid,
                    note,
                    row,
                    record,
                } = attribution;
                let hot = Hot::Effect {
                    id: &id,
                    instance,
                    incarnation,
                    outcome,
                    sink,
                    boundary: boundary.as_deref(),
                    by,
                    pid,
                    note: note.as_deref(),
                    row,
                    record,
                };
                self.push_hot(line(hot), ids);
            }
            Event::Delivered {
                id,
                instance,
                incarnation,
                partition,
                offset,
                redelivered,
            } => {
                let record = DeliveredRecord {
                    offset: offset.unwrap_or_default(),
                    id: ids.number(&id),
                };
                self.deliveries.records.push(record);
                let flags = flag(partition.is_some(), HAS_PARTITION)
                    | flag(offset.is_some(), HAS_OFFSET)
                    | flag(redelivered, REDELIVERED);
                let at = (seq, t_us, instance, incarnation);
                self.delivery(at, partition.unwrap_or_default(), 1, flags);
            }
            Event::DeliveredBatch {
                instance,
                incarnation,
                partition,
                ranges,
                records,
            } => {
                let hot = Hot::Batch {
                    instance,
                    incarnation,
                    partition,
                    ranges,
                    records: records.iter().collect(),
                };
                self.push_hot(line(hot), ids);
            }
            event => self.others.push(Stamped { seq, t_us, event }),
        }
    }

    /// Adds the next event, of a hot kind.
    fn push_hot(&mut self, line: HotLine, ids: &mut impl Numbering) {
        let HotLine { seq, t_us, event } = line;
        match event {
            Hot::Produced {
                id,
                key_seq,
                key,
                partition,
                offset,
                status,
                error,
                poison,
            } => {
                let plain = u32::try_from(key_seq)
                    .ok()
                    .filter(|_| key.is_none() && error.is_none());
                let key_seq_or_extra = match plain {
                    Some(key_seq) => key_seq,
                    None => {
                        let (key, error) = (owned(key), owned(error));
                        let extra = ProducedExtra {
                            key_seq,
                            key,
                            error,
                        };
                        side(&mut self.produced.extra, extra)
                    }
                };
                let flags = flag(partition.is_some(), HAS_PARTITION)
                    | flag(offset.is_some(), HAS_OFFSET)
                    | flag(poison, POISON)
                    | flag(plain.is_none(), HAS_EXTRA);
                self.produced.rows.push(ProducedRow {
                    seq,
                    t_us,
                    offset: offset.unwrap_or_default(),
                    partition: partition.unwrap_or_default(),
                    id: ids.number(id),
                    key_seq_or_extra,
                    status,
                    flags,
                });
            }
            Hot::Effect {
                id,
                instance,
                incarnation,
                outcome,
                sink,
                boundary,
                by,
                pid,
                note,
                row,
                record,
            } => {
                let rare =
                    boundary.is_some() || note.is_some() || row.is_some() || record.is_some();
                let extra = match rare {
                    false => NONE,
                    true => {
                        let extra = EffectExtra {
                            boundary: owned(boundary),
                            note: owned(note),
                            row,
                            record,
                        };
                        side(&mut self.effects.extra, extra)
                    }
                };
                let flags = flag(instance.is_some(), HAS_INSTANCE)
                    | flag(incarnation.is_some(), HAS_INCARNATION)
                    | flag(pid.is_some(), HAS_PID);
                self.effects.rows.push(EffectRow {
                    seq,
                    t_us,
                    id: ids.number(id),
                    instance: instance.unwrap_or_default(),
                    incarnation: incarnation.unwrap_or_default(),
                    pid: pid.unwrap_or_default(),
                    extra,
                    outcome,
                    sink,
                    by,
                    flags,
                });
            }
            Hot::Batch {
                instance,
                incarnation,
                partition,
                ranges,
                records,
            } => {
                for &(offset, id) in &records {
                    let id = ids.number(id);
                    self.deliveries.records.push(DeliveredRecord { offset, id });
                }
                if !ranges.is_empty() {
                    self.ranges.push((self.deliveries.rows.len(), ranges));
                }
                let at = (seq, t_us, instance, incarnation);
                self.delivery(at, partition, records.len(), BATCH | HAS_PARTITION);
            }
        }
    }

    /// Adds a delivery row for the last `len` records added.
    fn delivery(&mut self, at: (u64, u64, u32, u32), partition: i32, len: usize, flags: u8) {
        let (seq, t_us, instance, incarnation) = at;
        self.deliveries.rows.push(DeliveryRow {
            seq,
            t_us,
            start: self.deliveries.records.len() - len,
            instance,
            incarnation,
            partition,
            // A Fetch response is at most 2 GiB: its records number fewer than 2^32.
            len: u32::try_from(len).unwrap_or(u32::MAX),
            flags,
        });
    }
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

fn flag(set: bool, bit: u8) -> u8 {
    if set {
        bit
    } else {
        0
    }
}

/// Adds `value` to a side table and returns its index.
fn side<T>(table: &mut Vec<T>, value: T) -> u32 {
    table.push(value);
    side_index(table.len() - 1)
}

/// A side-table index as a row keeps it.
fn side_index(i: usize) -> u32 {
    // Four billion rare fields would need four billion messages: beyond any run.
    u32::try_from(i).unwrap_or(NONE)
}
