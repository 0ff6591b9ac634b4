//! Which fetched records the client hands to its application: the walk over one partition's
//! record batches in a Fetch response ([`delivered_records`]), the filter that applies the
//! fetch position, control records and aborted transactions, the in-place scan of
//! uncompressed v2 batches ([`scan_plain_batch`]) that spares the proxy the crate's per-record
//! allocations, and the header-only decision ([`header_says`]) that records a batch the ledger
//! already names as an offset range, without reading its records ([`deliveries`]).
//!
//! Pure functions of bytes: no I/O, no state. Invariant: the in-place scan either reads exactly
//! what the kafka-protocol crate reads or refuses the batch, which the crate then decodes (the
//! property test `plain_batch_scan_equals_the_crate` holds the two equal).

use std::collections::HashSet;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use crate::timeline::{DeliveredIds, OffsetRange};

/// The header carrying the message ID (design §4).
pub(super) const ID_HEADER: &str = "exactly-id";

/// The records of one partition's fetched bytes that the client will hand to the
/// application: data records at or after `fetch_offset`, minus aborted transactional records
/// for a read_committed client. A truncated last batch (the broker cuts at max bytes) is
/// normal and ends the walk; any other undecodable batch is an error (with the records read
/// before it).
///
/// Uncompressed v2 batches go through [`scan_plain_batch`] (no allocation per record); every
/// other batch, and any batch that scan refuses, is decoded by the kafka-protocol crate, whose
/// answer is the reference (see [`scan_plain_batch`] for why both exist). Every record is read:
/// [`deliveries`] with nothing vouched for.
pub fn delivered_records(
    records: &Bytes,
    fetch_offset: i64,
    aborted: &[(i64, i64)],
    read_committed: bool,
) -> (DeliveredIds, Option<String>) {
    // Nothing vouched for: no range.
    let (delivered, err) = deliveries(records, fetch_offset, aborted, read_committed, 0);
    (delivered.records, err)
}

/// What the client is handed from one partition's fetched bytes: the records of `ranges`
/// first (offsets recorded from batch headers alone, in order), then `records` (read one by
/// one from their batches).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Batches the ledger names, every offset (see [`header_says`]); consecutive ones merged.
    pub ranges: Vec<OffsetRange>,
    /// Records read, (offset, ID), after those of `ranges`.
    pub records: DeliveredIds,
}

/// As [`delivered_records`], except that batches whose header alone tells their records, all
/// below `vouched_below` (the ledger's watermark for this partition, `AckedOffsets`), are
/// recorded as offset ranges and not read ([`header_says`]), up to the first record that had to
/// be read (so that ranges, then records, is the order the client got them in). Consecutive
/// range batches make one range; a repeated batch is a repeated range. `vouched_below <= 0`
/// reads every record.
pub fn deliveries(
    records: &Bytes,
    fetch_offset: i64,
    aborted: &[(i64, i64)],
    read_committed: bool,
    vouched_below: i64,
) -> (Delivered, Option<String>) {
    let mut out = Delivered::default();
    let mut filter = DeliveryFilter::new(fetch_offset, aborted, read_committed);
    // One list for the records of every plain batch, reused from batch to batch.
    let mut seen = Vec::new();
    let mut at = 0;
    let err = loop {
        // A batch: base offset (8), length (4), then `length` bytes.
        let Some(head) = records.get(at..at + 12) else {
            break None; // the end, or a truncated last batch
        };
        let len = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        if len < 0 {
            break Some(format!("record batch with negative length {len}"));
        }
        let Some(batch) = records.get(at..at + 12 + len as usize) else {
            break None; // truncated last batch (the broker cuts at max bytes)
        };
        let range = at..at + batch.len();
        at = range.end;
        if vouched_below > 0 && out.records.is_empty() {
            match header_says(batch, fetch_offset, vouched_below) {
                HeaderSays::Range(r) => {
                    out.push_range(r);
                    continue;
                }
                HeaderSays::Nothing => continue,
                HeaderSays::Walk => {}
            }
        }
        let mut deliver = |id: &[u8], offset| out.records.push_bytes(offset, id);
        if scan_plain_batch(records, range, &mut seen) {
            for r in seen.drain(..) {
                filter.visit(r, &mut deliver);
            }
            continue;
        }
        let set = match RecordBatchDecoder::decode(&mut records.slice_ref(batch)) {
            Ok(s) => s,
            Err(e) => break Some(format!("record batch: {e}")),
        };
        for r in &set.records {
            let id = r
                .headers
                .iter()
                .find(|(k, _)| k.as_str() == ID_HEADER)
                .and_then(|(_, v)| v.as_deref())
                .or(r.key.as_deref());
            let seen = SeenRecord {
                offset: r.offset,
                control: r.control,
                transactional: r.transactional,
                producer_id: r.producer_id,
                id,
            };
            filter.visit(seen, &mut deliver);
        }
    };
    (out, err)
}

impl Delivered {
    /// True when the client is handed nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.records.is_empty()
    }

    /// Appends a range; one that continues the last range extends it.
    fn push_range(&mut self, r: OffsetRange) {
        if let Some(last) = self.ranges.last_mut() {
            if last.last.checked_add(1) == Some(r.first) {
                last.last = r.last;
                return;
            }
        }
        self.ranges.push(r);
    }
}

/// What one record batch's header alone says of the records the client is handed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderSays {
    /// Exactly the records at these offsets, every one below the watermark.
    Range(OffsetRange),
    /// None: every record is before the fetch position.
    Nothing,
    /// Only reading the records tells (see [`header_says`]).
    Walk,
}

/// Decides from the header of one whole batch (`batch`: base offset to its end) whether its
/// records need reading. A range needs a v2 batch that is neither transactional (an aborted
/// transaction's records are not handed to a read_committed client) nor a control batch
/// (markers are never handed on), whose record count is its last offset delta + 1 (no offset
/// missing, as compaction leaves), with a known compression (the header is never compressed,
/// so a compressed batch is vouched for alike), clipped to the fetch position, and every
/// offset of it below `vouched_below`. Anything else is walked.
///
/// The batch's CRC is not checked here (the walk's decoder checks it): it guards the records'
/// bytes, which the range does not read, and the client (librdkafka's `check.crcs` is off by
/// default) hands the records on whatever it says.
pub fn header_says(batch: &[u8], fetch_offset: i64, vouched_below: i64) -> HeaderSays {
    let Some(h) = batch.get(..V2_RECORDS_AT) else {
        return HeaderSays::Walk;
    };
    let be_i64 = |at: usize| i64::from_be_bytes(h[at..at + 8].try_into().unwrap_or([0; 8]));
    let be_i32 = |at: usize| i32::from_be_bytes(h[at..at + 4].try_into().unwrap_or([0; 4]));
    let base = be_i64(0);
    let magic = h[16];
    let attributes = u16::from_be_bytes([h[21], h[22]]);
    let last_delta = be_i32(23);
    let count = be_i32(57);
    let compression_known = attributes & 0x7 <= 4;
    let transactional = attributes & (1 << 4) != 0;
    let control = attributes & (1 << 5) != 0;
    let no_gap = last_delta >= 0 && i64::from(count) == i64::from(last_delta) + 1;
    if magic != 2 || !compression_known || transactional || control || !no_gap || base < 0 {
        return HeaderSays::Walk;
    }
    let last = base.saturating_add(i64::from(last_delta));
    let first = base.max(fetch_offset);
    if first > last {
        HeaderSays::Nothing
    } else if last < vouched_below {
        HeaderSays::Range(OffsetRange { first, last })
    } else {
        HeaderSays::Walk
    }
}

/// What the delivery walk needs of one record, however its batch was decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenRecord<'a> {
    /// Its offset.
    pub offset: i64,
    /// From a control batch (transaction markers: never handed to the application).
    pub control: bool,
    /// From a transactional batch.
    pub transactional: bool,
    /// The batch's producer id (matches aborted transactions).
    pub producer_id: i64,
    /// The `exactly-id` header's value (the last such header, as the crate's header map keeps
    /// it), else the key; `None` when neither is there.
    pub id: Option<&'a [u8]>,
}

/// Decides which fetched records the client hands to the application (fetch position,
/// control records, aborted transactions for read_committed), in offset order.
pub(super) struct DeliveryFilter {
    fetch_offset: i64,
    read_committed: bool,
    /// Aborted transactions not yet reached: (producer id, first offset), by first offset.
    pending_aborts: Vec<(i64, i64)>,
    /// Producers whose aborted transaction is open at the current offset.
    active_aborts: HashSet<i64>,
}

impl DeliveryFilter {
    /// A filter for records fetched from `fetch_offset`.
    pub(super) fn new(
        fetch_offset: i64,
        aborted: &[(i64, i64)],
        read_committed: bool,
    ) -> DeliveryFilter {
        let mut pending_aborts: Vec<(i64, i64)> = aborted.to_vec();
        pending_aborts.sort_by_key(|a| a.1);
        DeliveryFilter {
            fetch_offset,
            read_committed,
            pending_aborts,
            active_aborts: HashSet::new(),
        }
    }

    /// Takes the next record in offset order; calls `deliver(id, offset)` if the client hands
    /// it to the application.
    pub(super) fn visit(&mut self, r: SeenRecord<'_>, deliver: &mut impl FnMut(&[u8], i64)) {
        if self.read_committed {
            while let Some(&(pid, first)) = self.pending_aborts.first() {
                if first > r.offset {
                    break;
                }
                self.active_aborts.insert(pid);
                self.pending_aborts.remove(0);
            }
            if r.control {
                self.active_aborts.remove(&r.producer_id);
                return;
            }
            if r.transactional && self.active_aborts.contains(&r.producer_id) {
                return;
            }
        }
        if r.control || r.offset < self.fetch_offset {
            return;
        }
        if let Some(id) = r.id {
            deliver(id, r.offset);
        }
    }
}

/// Offset of the first record in a v2 batch: base offset (8), length (4), leader epoch (4),
/// magic (1), crc (4), attributes (2), last offset delta (4), first and max timestamps (16),
/// producer id (8) and epoch (2), base sequence (4), record count (4).
const V2_RECORDS_AT: usize = 61;

/// The records of one whole uncompressed v2 record batch (`records[batch]` is exactly the
/// batch), read in place into `out` (emptied first): `false` whenever the batch is anything else
/// (compressed, legacy, malformed), so the caller decodes it with the kafka-protocol crate
/// instead.
///
/// Why a hand-written walk next to the crate: the proxy reads every record of every Fetch
/// response, and the crate builds a full `Record` per record (a header map, key and value
/// handles), which was the proxy's largest cost (issues 4 and 6). This walk is deliberately
/// narrow: the batch header and its CRC are still checked by the crate
/// (`RecordBatchDecoder::decode_batch_info`); only the per-record layout (varint length,
/// attributes, timestamp and offset deltas, key, value, headers) is walked here, with the
/// crate's own acceptance rules (same varint decoding, same negative-length and UTF-8 header
/// key checks, trailing bytes ignored), and any doubt falls back to the crate. The tests hold
/// it equal to the crate's decoding on valid, cut and corrupted batches
/// (`plain_batch_scan_equals_the_crate`).
pub fn scan_plain_batch<'a>(
    records: &'a Bytes,
    batch: std::ops::Range<usize>,
    out: &mut Vec<SeenRecord<'a>>,
) -> bool {
    out.clear();
    let scanned = scan_plain_records(records, batch, out).is_some();
    if !scanned {
        out.clear();
    }
    scanned
}

fn scan_plain_records<'a>(
    records: &'a Bytes,
    batch: std::ops::Range<usize>,
    out: &mut Vec<SeenRecord<'a>>,
) -> Option<()> {
    let bytes = records.get(batch.clone())?;
    // A `Bytes` handle, not a slice: the crate copies what it reads from a slice.
    let infos = RecordBatchDecoder::decode_batch_info(&mut records.slice(batch)).ok()?;
    let [info] = infos.as_slice() else {
        return None;
    };
    if info.compression != Compression::None {
        return None;
    }
    let mut b: &[u8] = bytes.get(V2_RECORDS_AT..)?;
    let count = usize::try_from(info.record_count).ok()?;
    // Each record takes at least its length byte: a count beyond the bytes is malformed.
    out.reserve(count.min(b.len()));
    for _ in 0..count {
        let size = usize::try_from(varint(&mut b)?).ok()?;
        let mut r = take(&mut b, size)?;
        take(&mut r, 1)?; // attributes
        varlong(&mut r)?; // timestamp delta
        let offset_delta = varint(&mut r)?;
        let key = nullable(&mut r)?;
        nullable(&mut r)?; // value
        let headers = usize::try_from(varint(&mut r)?).ok()?;
        // None: no `exactly-id` header; Some(v): the last one's value (null or bytes).
        let mut id_header: Option<Option<&[u8]>> = None;
        for _ in 0..headers {
            let key_len = usize::try_from(varint(&mut r)?).ok()?;
            let name = std::str::from_utf8(take(&mut r, key_len)?).ok()?;
            let value = nullable(&mut r)?;
            if name == ID_HEADER {
                id_header = Some(value);
            }
        }
        out.push(SeenRecord {
            offset: info.min_offset.wrapping_add(i64::from(offset_delta)),
            control: info.control,
            transactional: info.transactional,
            producer_id: info.producer_id,
            id: id_header.flatten().or(key),
        });
    }
    Some(())
}

/// The first `n` bytes of `b`, advancing it; `None` when fewer are left.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

/// A zigzag varint, as the crate reads it (at most 5 bytes; bits past 32 dropped).
fn varint(b: &mut &[u8]) -> Option<i32> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let byte = u32::from(*take(b, 1)?.first()?);
        value |= (byte & 0x7f) << (i * 7);
        if byte < 0x80 {
            break;
        }
    }
    Some(((value >> 1) as i32) ^ -((value & 1) as i32))
}

/// A zigzag varlong, as the crate reads it (at most 10 bytes).
fn varlong(b: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = u64::from(*take(b, 1)?.first()?);
        value |= (byte & 0x7f) << (i * 7);
        if byte < 0x80 {
            break;
        }
    }
    Some(((value >> 1) as i64) ^ -((value & 1) as i64))
}

/// A varint length and that many bytes; length -1 is null, below -1 is malformed.
fn nullable<'a>(b: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    match varint(b)? {
        -1 => Some(None),
        n if n < -1 => None,
        n => take(b, n as usize).map(Some),
    }
}
