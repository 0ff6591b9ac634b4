//! The live answer to "can the ledger name the record at this offset?": per partition of the
//! topic under test, the watermark below which every offset has an acknowledged produce whose
//! `produced` event (with its ID) is already on the timeline.
//!
//! The workload fills it as acknowledgements arrive (after recording each one); the Kafka proxy
//! reads it to decide whether a fetched batch may be recorded as an offset range instead of
//! having its records walked (`proxy/kafka/records.rs`); `ranges.rs` turns such a range back
//! into records when the timeline is read.
//!
//! Invariants: the watermark only passes an offset some acknowledgement names, so an offset
//! whose produce failed or whose outcome is unknown (a record may or may not be there) stops it
//! for good, and records from there on are walked. It starts at 0, so a topic that held records
//! before the workload (`create: false`) never gets a watermark. Two acknowledgements naming
//! one offset (only a broker that lost acknowledged records and reused their offsets could
//! send them) freeze the partition at "vouch for nothing".

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// The acknowledged offsets of the topic under test, as far as they are contiguous from 0.
/// Shared (in an `Arc`) by the workload, which writes it, and the proxy, which reads it.
#[derive(Debug, Default)]
pub struct AckedOffsets {
    partitions: Mutex<HashMap<i32, Watermark>>,
}

/// One partition's watermark.
#[derive(Debug, Default)]
struct Watermark {
    /// Every offset below it is acknowledged.
    below: i64,
    /// Acknowledged offsets above `below` (waiting for the gap under them to close).
    ahead: BTreeSet<i64>,
    /// Two acknowledgements named one offset: nothing is vouched for any more.
    conflicted: bool,
}

impl AckedOffsets {
    /// Takes one acknowledged produce at (`partition`, `offset`); call it only once its
    /// `produced` event is recorded on the timeline. A negative offset (a broker that did not
    /// say where it stored the record) names no offset.
    pub fn acked(&self, partition: i32, offset: i64) {
        if offset < 0 {
            return;
        }
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let w = partitions.entry(partition).or_default();
        if offset < w.below || !w.ahead.insert(offset) {
            w.conflicted = true;
            return;
        }
        while w.ahead.first() == Some(&w.below) {
            w.ahead.pop_first();
            w.below += 1;
        }
    }

    /// The watermark of `partition`: every offset below it names a record the ledger on the
    /// timeline resolves to its ID (0 when none, or after a conflict).
    pub fn below(&self, partition: i32) -> i64 {
        let partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        match partitions.get(&partition) {
            Some(w) if !w.conflicted => w.below,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_rises_over_contiguous_acknowledgements_in_any_order() {
        let a = AckedOffsets::default();
        assert_eq!(a.below(0), 0);
        for o in [0, 2, 1, 4] {
            a.acked(0, o);
        }
        assert_eq!(a.below(0), 3, "4 waits for 3");
        a.acked(0, 3);
        assert_eq!(a.below(0), 5);
        assert_eq!(a.below(1), 0, "partitions are apart");
    }

    #[test]
    fn an_offset_no_acknowledgement_names_stops_the_watermark() {
        // Offset 1's produce timed out (indeterminate): a record may be there, no ID for it.
        let a = AckedOffsets::default();
        for o in [0, 2, 3] {
            a.acked(0, o);
        }
        assert_eq!(a.below(0), 1);
    }

    #[test]
    fn an_acknowledgement_without_an_offset_names_none() {
        let a = AckedOffsets::default();
        for o in [0, -1, 1] {
            a.acked(0, o);
        }
        assert_eq!(a.below(0), 2);
    }

    #[test]
    fn a_topic_that_does_not_start_at_zero_gets_no_watermark() {
        let a = AckedOffsets::default();
        for o in 10..20 {
            a.acked(0, o);
        }
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn two_acknowledgements_of_one_offset_vouch_for_nothing() {
        let a = AckedOffsets::default();
        for o in [0, 1, 2, 1] {
            a.acked(0, o);
        }
        assert_eq!(a.below(0), 0);
        a.acked(0, 3);
        assert_eq!(a.below(0), 0, "frozen for good");
        let b = AckedOffsets::default();
        for o in [0, 5, 5] {
            b.acked(0, o);
        }
        assert_eq!(b.below(0), 0, "a repeat above the watermark too");
    }
}
