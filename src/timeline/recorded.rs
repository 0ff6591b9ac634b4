//! A timeline read back for judging: the per-message events (`produced`, `effect`,
//! `delivered`, `delivered_batch`) in columns of small fixed rows that name their ID by
//! number, every other event as it was. On ten million messages the events as `Stamped`
//! values took 5.3 GB (two of 176 bytes per message, and the ID's text in each); the rows take
//! about 105 bytes per message (a produce, an effect and a delivered record), and its ID's text
//! stored once with its number about 40 more (`ids`).
//!
//! Invariants: each column keeps its events in the order they were added (file order when
//! read back), and `others` every event that is in no column, in order; fields that are rare at
//! scale (a key, an error, a boundary, an attribution note, a row or record place) sit in side
//! tables, so a row's size does not grow with them; [`Recorded::to_events`] gives back every
//! event as it was added (deliveries recorded as ranges come back as their records).

use std::sync::Arc;

use super::ids::{MessageIds, MessageNo};
use super::ranges::OffsetRange;
use super::{
    AttributedBy, Attribution, DeliveredIds, EffectOutcome, Event, ProduceStatus, RecordPlace,
    RowCommit, SinkKind, Stamped,
};

mod build;
mod resolve;
#[cfg(test)]
mod tests;

pub use build::{Columns, RecordedBuilder};

/// No side-table entry.
const NONE: u32 = u32::MAX;

/// A timeline in columns (module doc). Cheap to clone: the IDs, produces and deliveries are
/// shared (a boundary's view of the run shares them and keeps its own effects).
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    ids: Arc<MessageIds>,
    produced: Arc<Produces>,
    effects: Effects,
    deliveries: Arc<Deliveries>,
    others: Vec<Stamped>,
}

/// The `produced` column.
#[derive(Debug, Clone, Default)]
struct Produces {
    rows: Vec<ProducedRow>,
    /// The rare fields of the rows that have any.
    extra: Vec<ProducedExtra>,
}

/// The `effect` column.
#[derive(Debug, Clone, Default)]
struct Effects {
    rows: Vec<EffectRow>,
    extra: Vec<EffectExtra>,
}

/// The deliveries column: `delivered` and `delivered_batch` events, their records in one list.
#[derive(Debug, Clone, Default)]
struct Deliveries {
    rows: Vec<DeliveryRow>,
    records: Vec<DeliveredRecord>,
}

/// Flags of a row: which optional fields it has.
const HAS_PARTITION: u8 = 1;
const HAS_OFFSET: u8 = 2;
const POISON: u8 = 4;
const HAS_EXTRA: u8 = 8;
const HAS_INSTANCE: u8 = 1;
const HAS_INCARNATION: u8 = 2;
const HAS_PID: u8 = 4;
const BATCH: u8 = 8;
const REDELIVERED: u8 = 16;

/// One `produced` event (40 bytes).
#[derive(Debug, Clone, Copy)]
struct ProducedRow {
    seq: u64,
    t_us: u64,
    offset: i64,
    partition: i32,
    id: MessageNo,
    /// With [`HAS_EXTRA`], its rare fields' index in `Produces::extra`; else its key sequence.
    key_seq_or_extra: u32,
    status: ProduceStatus,
    flags: u8,
}

/// The fields of a produce that are rare at scale: a key, an error, a key sequence past
/// `u32::MAX`.
#[derive(Debug, Clone)]
struct ProducedExtra {
    key_seq: u64,
    key: Option<String>,
    error: Option<String>,
}

/// One `effect` event (40 bytes).
#[derive(Debug, Clone, Copy)]
struct EffectRow {
    seq: u64,
    t_us: u64,
    id: MessageNo,
    instance: u32,
    incarnation: u32,
    pid: u32,
    /// Its rare fields in `Effects::extra`, or [`NONE`].
    extra: u32,
    outcome: EffectOutcome,
    sink: SinkKind,
    by: Option<AttributedBy>,
    flags: u8,
}

/// The fields of an effect that are rare at scale.
#[derive(Debug, Clone, Default)]
struct EffectExtra {
    boundary: Option<String>,
    note: Option<String>,
    row: Option<Box<RowCommit>>,
    record: Option<Box<RecordPlace>>,
}

/// One `delivered` or `delivered_batch` event; its records are `records[start..start + len]`.
#[derive(Debug, Clone, Copy)]
struct DeliveryRow {
    seq: u64,
    t_us: u64,
    start: usize,
    instance: u32,
    incarnation: u32,
    partition: i32,
    len: u32,
    flags: u8,
}

/// One record handed to a consumer: its offset (Kafka) or delivery tag (AMQP) and its ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveredRecord {
    /// The offset (0 for a `delivered` event that named none: see [`Delivery::offset`]).
    pub offset: i64,
    /// The ID.
    pub id: MessageNo,
}

/// A `produced` event as the columns hold it.
#[derive(Debug, Clone, Copy)]
pub struct Produced<'a> {
    /// Position in the timeline.
    pub seq: u64,
    /// When (µs since the run started).
    pub t_us: u64,
    /// The message ID's number ([`Produced::id`] reads its text).
    pub no: MessageNo,
    ids: &'a MessageIds,
    /// Its place among its key's messages.
    pub key_seq: u64,
    /// Its key, when not the ID itself.
    pub key: Option<&'a str>,
    /// Partition the broker stored it in.
    pub partition: Option<i32>,
    /// Offset in that partition.
    pub offset: Option<i64>,
    /// Whether the broker acknowledged it.
    pub status: ProduceStatus,
    /// The error, when not acknowledged.
    pub error: Option<&'a str>,
    /// A poison message.
    pub poison: bool,
}

/// An `effect` event as the columns hold it.
#[derive(Debug, Clone, Copy)]
pub struct Effect<'a> {
    /// Position in the timeline.
    pub seq: u64,
    /// When (µs since the run started).
    pub t_us: u64,
    /// The number of the message ID the effect names ([`Effect::id`] reads its text).
    pub no: MessageNo,
    ids: &'a MessageIds,
    /// Instance that made it, when known.
    pub instance: Option<u32>,
    /// Incarnation that made it, when known.
    pub incarnation: Option<u32>,
    /// Applied or replayed.
    pub outcome: EffectOutcome,
    /// Which sink saw it.
    pub sink: SinkKind,
    /// The plan boundary whose sink saw it (absent: the one default boundary).
    pub boundary: Option<&'a str>,
    /// The witness that decided its instance and incarnation.
    pub by: Option<AttributedBy>,
    /// The process that owned its connection.
    pub pid: Option<u32>,
    /// The attribution's note.
    pub note: Option<&'a str>,
    /// The database row change it was read from (`postgres`).
    pub row: Option<&'a RowCommit>,
    /// The output record it was read from (`kafka-topic`).
    pub record: Option<&'a RecordPlace>,
}

impl<'a> Produced<'a> {
    /// The message ID (read from the IDs only when asked: the judge's passes over millions of
    /// rows mostly need its number).
    pub fn id(&self) -> &'a str {
        self.ids.text(self.no)
    }
}

impl<'a> Effect<'a> {
    /// The message ID the effect names.
    pub fn id(&self) -> &'a str {
        self.ids.text(self.no)
    }

    /// Its attribution as the timeline writes it.
    pub fn attribution(&self) -> Attribution {
        Attribution {
            by: self.by,
            pid: self.pid,
            note: self.note.map(str::to_owned),
            row: self.row.map(|r| Box::new(r.clone())),
            record: self.record.map(|r| Box::new(r.clone())),
        }
    }
}

/// A `delivered` (one record) or `delivered_batch` event as the columns hold it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// Position in the timeline.
    pub seq: u64,
    /// When (µs since the run started).
    pub t_us: u64,
    /// Instance they went to.
    pub instance: u32,
    /// Incarnation they went to.
    pub incarnation: u32,
    /// Kafka partition (none for AMQP).
    pub partition: Option<i32>,
    /// AMQP: the broker marked it redelivered.
    pub redelivered: bool,
    /// A `delivered_batch` (else one `delivered` record).
    pub batch: bool,
    /// The records, in order.
    pub records: &'a [DeliveredRecord],
    has_offset: bool,
}

impl Delivery<'_> {
    /// A `delivered` event's offset or delivery tag (`None` when it named none); a batch's
    /// records always have theirs.
    pub fn offset(&self) -> Option<i64> {
        match (self.batch || self.has_offset, self.records.first()) {
            (true, Some(r)) => Some(r.offset),
            _ => None,
        }
    }
}

impl Recorded {
    /// Every event of `events`, in columns; ranges are resolved from the `produced` events,
    /// and a range they cannot resolve is left out (only [`super::read_recorded`] refuses a
    /// timeline for it: events in memory come from tests and small tools).
    pub fn from_events(events: &[Stamped]) -> Recorded {
        let mut b = RecordedBuilder::default();
        for st in events {
            b.push(st.clone());
        }
        b.finish_lenient()
    }

    /// The message IDs.
    pub fn ids(&self) -> &MessageIds {
        &self.ids
    }

    /// Every event outside the columns, in order.
    pub fn others(&self) -> &[Stamped] {
        &self.others
    }

    /// The latest time of an event in the columns (each column's last is its latest when the
    /// events were added in timeline order; the maximum is taken anyway).
    pub fn last_t_us_in_columns(&self) -> Option<u64> {
        let produced = self.produced.rows.iter().map(|r| r.t_us);
        let effects = self.effects.rows.iter().map(|r| r.t_us);
        let deliveries = self.deliveries.rows.iter().map(|r| r.t_us);
        produced.chain(effects).chain(deliveries).max()
    }

    /// How many `produced` events.
    pub fn produced_len(&self) -> usize {
        self.produced.rows.len()
    }

    /// How many `effect` events.
    pub fn effects_len(&self) -> usize {
        self.effects.rows.len()
    }

    /// The `produced` event at `row` (in the order added).
    ///
    /// # Panics
    /// When `row` is not below [`Self::produced_len`].
    pub fn produced_at(&self, row: usize) -> Produced<'_> {
        self.produced_view(&self.produced.rows[row])
    }

    /// The ID and offset of the `produced` event at `row`: what a pass over millions of rows
    /// in offset order reads, without building the whole event.
    ///
    /// # Panics
    /// When `row` is not below [`Self::produced_len`].
    pub fn produced_offset(&self, row: usize) -> (MessageNo, Option<i64>) {
        let r = &self.produced.rows[row];
        (r.id, (r.flags & HAS_OFFSET != 0).then_some(r.offset))
    }

    /// The `produced` events, in order.
    pub fn produced(&self) -> impl ExactSizeIterator<Item = Produced<'_>> + Clone {
        self.produced.rows.iter().map(|r| self.produced_view(r))
    }

    /// The `effect` events, in order.
    pub fn effects(&self) -> impl ExactSizeIterator<Item = Effect<'_>> + Clone {
        self.effects.rows.iter().map(|r| self.effect_view(r))
    }

    /// The deliveries, in order.
    pub fn deliveries(&self) -> impl ExactSizeIterator<Item = Delivery<'_>> + Clone {
        self.deliveries.rows.iter().map(|r| self.delivery_view(r))
    }

    /// Every delivered record with the position and time of its delivery, in order.
    pub fn delivered_records(&self) -> impl Iterator<Item = (Delivery<'_>, DeliveredRecord)> {
        self.deliveries()
            .flat_map(|d| d.records.iter().map(move |r| (d, *r)))
    }

    /// The same run with only the effects `keep` accepts and `others` in place of its other
    /// events (a boundary's view of it); IDs, produces and deliveries are shared.
    pub fn with(&self, keep: impl Fn(&Effect) -> bool, others: Vec<Stamped>) -> Recorded {
        let mut effects = Effects::default();
        for row in &self.effects.rows {
            if keep(&self.effect_view(row)) {
                let mut row = *row;
                if row.extra != NONE {
                    effects
                        .extra
                        .push(self.effects.extra[row.extra as usize].clone());
                    row.extra = (effects.extra.len() - 1) as u32;
                }
                effects.rows.push(row);
            }
        }
        Recorded {
            ids: self.ids.clone(),
            produced: self.produced.clone(),
            effects,
            deliveries: self.deliveries.clone(),
            others,
        }
    }

    /// Every event back as a `Stamped`, in timeline order (by `seq`, columns and others merged
    /// stably): what [`super::read_events`] returns and the reports that walk every event
    /// read.
    pub fn to_events(&self) -> Vec<Stamped> {
        let mut all: Vec<Stamped> = Vec::with_capacity(
            self.others.len()
                + self.produced.rows.len()
                + self.effects.rows.len()
                + self.deliveries.rows.len(),
        );
        all.extend(self.produced().map(|p| p.to_stamped()));
        all.extend(self.effects().map(|e| e.to_stamped()));
        all.extend(self.deliveries().map(|d| d.to_stamped(&self.ids)));
        all.extend(self.others.iter().cloned());
        all.sort_by_key(|st| st.seq);
        all
    }

    fn produced_view<'a>(&'a self, r: &ProducedRow) -> Produced<'a> {
        let (key_seq, key, error) = match r.flags & HAS_EXTRA {
            0 => (u64::from(r.key_seq_or_extra), None, None),
            _ => {
                let x = &self.produced.extra[r.key_seq_or_extra as usize];
                (x.key_seq, x.key.as_deref(), x.error.as_deref())
            }
        };
        Produced {
            seq: r.seq,
            t_us: r.t_us,
            no: r.id,
            ids: &self.ids,
            key_seq,
            key,
            partition: (r.flags & HAS_PARTITION != 0).then_some(r.partition),
            offset: (r.flags & HAS_OFFSET != 0).then_some(r.offset),
            status: r.status,
            error,
            poison: r.flags & POISON != 0,
        }
    }

    fn effect_view<'a>(&'a self, r: &EffectRow) -> Effect<'a> {
        let extra = match r.extra {
            NONE => None,
            i => Some(&self.effects.extra[i as usize]),
        };
        Effect {
            seq: r.seq,
            t_us: r.t_us,
            no: r.id,
            ids: &self.ids,
            instance: (r.flags & HAS_INSTANCE != 0).then_some(r.instance),
            incarnation: (r.flags & HAS_INCARNATION != 0).then_some(r.incarnation),
            outcome: r.outcome,
            sink: r.sink,
            boundary: extra.and_then(|x| x.boundary.as_deref()),
            by: r.by,
            pid: (r.flags & HAS_PID != 0).then_some(r.pid),
            note: extra.and_then(|x| x.note.as_deref()),
            row: extra.and_then(|x| x.row.as_deref()),
            record: extra.and_then(|x| x.record.as_deref()),
        }
    }

    fn delivery_view<'a>(&'a self, r: &DeliveryRow) -> Delivery<'a> {
        Delivery {
            seq: r.seq,
            t_us: r.t_us,
            instance: r.instance,
            incarnation: r.incarnation,
            partition: (r.flags & HAS_PARTITION != 0).then_some(r.partition),
            redelivered: r.flags & REDELIVERED != 0,
            batch: r.flags & BATCH != 0,
            records: &self.deliveries.records[r.start..r.start + r.len as usize],
            has_offset: r.flags & HAS_OFFSET != 0,
        }
    }
}

impl Produced<'_> {
    /// The event as the timeline holds it.
    pub fn to_stamped(&self) -> Stamped {
        Stamped {
            seq: self.seq,
            t_us: self.t_us,
            event: Event::Produced {
                id: self.id().to_owned(),
                seq: self.key_seq,
                key: self.key.map(str::to_owned),
                partition: self.partition,
                offset: self.offset,
                status: self.status,
                error: self.error.map(str::to_owned),
                poison: self.poison,
            },
        }
    }
}

impl Effect<'_> {
    /// The event as the timeline holds it.
    pub fn to_stamped(&self) -> Stamped {
        Stamped {
            seq: self.seq,
            t_us: self.t_us,
            event: Event::Effect {
                id: self.id().to_owned(),
                instance: self.instance,
                incarnation: self.incarnation,
                outcome: self.outcome,
                sink: self.sink,
                boundary: self.boundary.map(str::to_owned),
                attribution: self.attribution(),
            },
        }
    }
}

impl Delivery<'_> {
    /// The event as the timeline holds it (a batch's ranges as their records).
    pub fn to_stamped(&self, ids: &MessageIds) -> Stamped {
        let event = if self.batch {
            Event::DeliveredBatch {
                instance: self.instance,
                incarnation: self.incarnation,
                partition: self.partition.unwrap_or_default(),
                ranges: Vec::<OffsetRange>::new(),
                records: self
                    .records
                    .iter()
                    .map(|r| (r.offset, ids.text(r.id)))
                    .collect::<DeliveredIds>(),
            }
        } else {
            Event::Delivered {
                id: self
                    .records
                    .first()
                    .map(|r| ids.text(r.id).to_owned())
                    .unwrap_or_default(),
                instance: self.instance,
                incarnation: self.incarnation,
                partition: self.partition,
                offset: self.offset(),
                redelivered: self.redelivered,
            }
        };
        Stamped {
            seq: self.seq,
            t_us: self.t_us,
            event,
        }
    }
}
