//! Deliveries recorded as offset ranges resolved into records, by the acknowledged produces
//! of the columns (`ranges.rs` says why a range exists and why an offset it cannot name fails
//! the read).

use super::super::ranges::{Ledger, OffsetRange, UnresolvedOffsets};
use super::{DeliveredRecord, Deliveries, Produces, HAS_OFFSET, HAS_PARTITION};
use crate::timeline::ProduceStatus;

/// Puts the records of each batch's `ranges` (by row) in front of the records it read, and
/// returns the offsets no single acknowledged produce names.
pub(super) fn ranges(
    produced: &Produces,
    deliveries: &mut Deliveries,
    ranges: Vec<(usize, Vec<OffsetRange>)>,
) -> UnresolvedOffsets {
    let mut unresolved = UnresolvedOffsets {
        count: 0,
        runs: Vec::new(),
    };
    if ranges.is_empty() {
        return unresolved;
    }
    let with_place = HAS_PARTITION | HAS_OFFSET;
    let ledger = Ledger::of(|| {
        produced
            .rows
            .iter()
            .filter(move |r| r.status == ProduceStatus::Acked && r.flags & with_place == with_place)
            .map(|r| (r.partition, r.offset, r.id))
    });
    // Sized by the acknowledged produces, not by the ranges: a corrupt range may name more
    // offsets than memory holds (it fails unresolved, unwalked).
    let old = std::mem::take(&mut deliveries.records);
    let mut records = Vec::with_capacity(old.len() + produced.rows.len());
    let mut pending = ranges.into_iter().peekable();
    for (i, row) in deliveries.rows.iter_mut().enumerate() {
        let start = records.len();
        if let Some((_, rs)) = pending.next_if(|(at, _)| *at == i) {
            for range in rs {
                let push = |offset, id| records.push(DeliveredRecord { offset, id });
                ledger.records(row.partition, range, push, &mut unresolved);
            }
        }
        records.extend_from_slice(&old[row.start..row.start + row.len as usize]);
        row.start = start;
        row.len = u32::try_from(records.len() - start).unwrap_or(u32::MAX);
    }
    deliveries.records = records;
    unresolved
}
