//! Who wrote each output record: the consumer Produces the proxy saw the broker acknowledge
//! (`consumer_produce` events), per topic and partition the offset ranges each one wrote, with
//! the incarnation, its transaction and when the answer passed. Output-topic effects are
//! attributed by it (`effects`), and the records of aborted transactions name their writers
//! by it (`mechanism::aborted`).
//!
//! Invariant: only acknowledged batches (no error, a base offset) count; a record no
//! acknowledged Produce covers has no writer, never a guessed one.

use std::collections::HashMap;

use crate::timeline::{Event, ProcessRef, Stamped};

/// One acknowledged batch: offsets `[from, to)` of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    /// The first offset.
    pub(crate) from: i64,
    /// One past the last.
    pub(crate) to: i64,
    /// The incarnation whose Produce it was.
    pub(crate) who: ProcessRef,
    /// Its transactional id, when the producer is transactional.
    pub(crate) transactional_id: Option<String>,
    /// Its producer id.
    pub(crate) producer_id: i64,
    /// Its producer epoch.
    pub(crate) producer_epoch: i16,
    /// When the broker's answer passed the proxy (µs).
    pub(crate) t_us: u64,
    /// The `consumer_produce` event's position.
    pub(crate) seq: u64,
}

/// The acknowledged consumer Produces of a run, per topic and partition.
#[derive(Debug, Default)]
pub(crate) struct Writers {
    ranges: HashMap<String, HashMap<i32, Vec<Write>>>,
}

impl Writers {
    /// Reads every `consumer_produce` event (none in most runs: then empty, no cost).
    pub(crate) fn read(events: &[Stamped]) -> Writers {
        let mut w = Writers::default();
        for st in events {
            let Event::ConsumerProduce {
                instance,
                incarnation,
                transactional_id,
                producer_id,
                producer_epoch,
                batches,
            } = &st.event
            else {
                continue;
            };
            for b in batches
                .iter()
                .filter(|b| b.error.is_none() && b.base_offset >= 0)
            {
                w.ranges
                    .entry(b.topic.clone())
                    .or_default()
                    .entry(b.partition)
                    .or_default()
                    .push(Write {
                        from: b.base_offset,
                        to: b.base_offset + i64::from(b.records),
                        who: ProcessRef {
                            instance: *instance,
                            incarnation: *incarnation,
                        },
                        transactional_id: transactional_id.clone(),
                        producer_id: *producer_id,
                        producer_epoch: *producer_epoch,
                        t_us: st.t_us,
                        seq: st.seq,
                    });
            }
        }
        w
    }

    /// The acknowledged Produce that wrote the record at `offset` of `topic`'s `partition`.
    pub(crate) fn of(&self, topic: &str, partition: i32, offset: i64) -> Option<&Write> {
        self.ranges
            .get(topic)?
            .get(&partition)?
            .iter()
            .find(|w| w.from <= offset && offset < w.to)
    }
}
