//! Putting events into columns in timeline order: [`RecordedBuilder`] one event at a time on
//! one thread; [`Columns`] a block of events at a time on the reader's threads (IDs numbered by
//! [`SharedIds`]), the blocks' columns then appended in file order. Either way the `Stamped`
//! values of a large file never all exist at once.

use std::sync::Arc;

use super::super::ranges::{OffsetRange, UnresolvedOffsets};
use super::{
    resolve, DeliveredRecord, Deliveries, DeliveryRow, EffectExtra, EffectRow, Effects,
    ProducedRow, Produces, Recorded, BATCH, HAS_INCARNATION, HAS_INSTANCE, HAS_OFFSET,
    HAS_PARTITION, HAS_PID, NONE, POISON, REDELIVERED,
};
use crate::timeline::ids::{MessageIds, Numbering, SharedIds};
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

    /// The columns of `events`, their IDs numbered by `ids`.
    pub fn of(events: Vec<Stamped>, mut ids: &SharedIds) -> Columns {
        let mut c = Columns::default();
        events.into_iter().for_each(|st| c.push(st, &mut ids));
        c
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
        let rows = produced.rows.into_iter().map(|r| ProducedRow {
            extra: shift(r.extra, by),
            ..r
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
            } => {
                let extra = match (key, error) {
                    (None, None) => NONE,
                    pair => side(&mut self.produced.extra, pair),
                };
                let flags = flag(partition.is_some(), HAS_PARTITION)
                    | flag(offset.is_some(), HAS_OFFSET)
                    | flag(poison, POISON);
                self.produced.rows.push(ProducedRow {
                    seq,
                    t_us,
                    key_seq,
                    offset: offset.unwrap_or_default(),
                    partition: partition.unwrap_or_default(),
                    id: ids.number(&id),
                    extra,
                    status,
                    flags,
                });
            }
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
                let extra = EffectExtra {
                    boundary,
                    note,
                    row,
                    record,
                };
                let rare = extra.boundary.is_some()
                    || extra.note.is_some()
                    || extra.row.is_some()
                    || extra.record.is_some();
                let extra = if rare {
                    side(&mut self.effects.extra, extra)
                } else {
                    NONE
                };
                let flags = flag(instance.is_some(), HAS_INSTANCE)
                    | flag(incarnation.is_some(), HAS_INCARNATION)
                    | flag(pid.is_some(), HAS_PID);
                self.effects.rows.push(EffectRow {
                    seq,
                    t_us,
                    id: ids.number(&id),
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
                for (offset, id) in records.iter() {
                    let id = ids.number(id);
                    self.deliveries.records.push(DeliveredRecord { offset, id });
                }
                if !ranges.is_empty() {
                    self.ranges.push((self.deliveries.rows.len(), ranges));
                }
                let at = (seq, t_us, instance, incarnation);
                self.delivery(at, partition, records.len(), BATCH | HAS_PARTITION);
            }
            event => self.others.push(Stamped { seq, t_us, event }),
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
