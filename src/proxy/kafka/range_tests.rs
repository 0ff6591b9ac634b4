//! The header-only decision (`records::header_says`) and the deliveries it shapes
//! (`records::deliveries`): which batches become offset ranges, and that ranges resolved by
//! the ledger give exactly the records the walk reads.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::records::{delivered_records, deliveries, header_says, Delivered, HeaderSays};
use crate::timeline::OffsetRange;

/// How a test batch is made.
#[derive(Debug, Clone, Copy)]
struct Shape {
    transactional: bool,
    control: bool,
    compression: Compression,
}

const PLAIN: Shape = Shape {
    transactional: false,
    control: false,
    compression: Compression::None,
};

/// One batch holding the records at `offsets` (one batch even with gaps), each named
/// `m-{offset}` in its `exactly-id` header.
fn batch(offsets: &[i64], shape: Shape) -> Bytes {
    let base = offsets[0];
    let records: Vec<Record> = offsets
        .iter()
        .map(|&offset| {
            let id = Bytes::from(format!("m-{offset}"));
            Record {
                transactional: shape.transactional,
                control: shape.control,
                partition_leader_epoch: 0,
                producer_id: 7,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset,
                // offset − sequence constant: the encoder keeps them in one batch.
                sequence: (offset - base) as i32,
                timestamp: 1_700_000_000_000,
                key: Some(id.clone()),
                value: Some(Bytes::from_static(b"{}")),
                headers: [("exactly-id".into(), Some(id))].into_iter().collect(),
                delete_horizon: false,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: shape.compression,
        },
    )
    .unwrap();
    buf.freeze()
}

fn range(first: i64, last: i64) -> HeaderSays {
    HeaderSays::Range(OffsetRange { first, last })
}

#[test]
fn a_plain_or_compressed_batch_below_the_watermark_is_a_range_from_its_header() {
    let ten: Vec<i64> = (10..20).collect();
    assert_eq!(header_says(&batch(&ten, PLAIN), 0, 20), range(10, 19));
    for compression in [Compression::Gzip, Compression::Lz4, Compression::Snappy] {
        let shape = Shape {
            compression,
            ..PLAIN
        };
        assert_eq!(
            header_says(&batch(&ten, shape), 0, 100),
            range(10, 19),
            "{compression:?}"
        );
    }
}

#[test]
fn transactional_control_and_gapped_batches_are_walked() {
    let ten: Vec<i64> = (10..20).collect();
    let transactional = Shape {
        transactional: true,
        ..PLAIN
    };
    let control = Shape {
        control: true,
        ..PLAIN
    };
    assert_eq!(
        header_says(&batch(&ten, transactional), 0, 100),
        HeaderSays::Walk
    );
    assert_eq!(header_says(&batch(&ten, control), 0, 100), HeaderSays::Walk);
    // Compaction left offset 12 out: count 3, last offset delta 3.
    assert_eq!(
        header_says(&batch(&[10, 11, 13], PLAIN), 0, 100),
        HeaderSays::Walk
    );
}

#[test]
fn the_fetch_position_clips_the_range_and_the_watermark_bounds_it() {
    let b = batch(&(10..20).collect::<Vec<_>>(), PLAIN);
    assert_eq!(header_says(&b, 15, 20), range(15, 19), "clipped");
    assert_eq!(
        header_says(&b, 20, 0),
        HeaderSays::Nothing,
        "all before the position"
    );
    assert_eq!(
        header_says(&b, 0, 19),
        HeaderSays::Walk,
        "offset 19 is not vouched for"
    );
    assert_eq!(
        header_says(&b, 15, 19),
        HeaderSays::Walk,
        "clipped, still beyond"
    );
}

#[test]
fn a_short_or_legacy_header_is_walked() {
    let b = batch(&[0, 1], PLAIN);
    assert_eq!(header_says(&b[..60], 0, 100), HeaderSays::Walk);
    let mut legacy = b.to_vec();
    legacy[16] = 1;
    assert_eq!(header_says(&legacy, 0, 100), HeaderSays::Walk);
}

#[test]
fn consecutive_range_batches_are_one_range_and_those_beyond_the_watermark_are_read() {
    let mut all = BytesMut::new();
    for offsets in [[0, 1, 2], [3, 4, 5], [6, 7, 8]] {
        all.extend_from_slice(&batch(&offsets, PLAIN));
    }
    let (got, err) = deliveries(&all.freeze(), 1, &[], false, 6);
    assert_eq!(err, None);
    let want = Delivered {
        ranges: vec![OffsetRange { first: 1, last: 5 }],
        records: (6..=8).map(|o| (o, format!("m-{o}"))).collect(),
    };
    assert_eq!(got, want);
}

#[test]
fn after_a_record_that_had_to_be_read_the_rest_is_read_too() {
    // Ranges come first in the event: a range batch after a read record is read, in order.
    let transactional = Shape {
        transactional: true,
        ..PLAIN
    };
    let mut all = BytesMut::new();
    all.extend_from_slice(&batch(&[0, 1], PLAIN));
    all.extend_from_slice(&batch(&[2], transactional));
    all.extend_from_slice(&batch(&[3, 4], PLAIN));
    let (got, _) = deliveries(&all.freeze(), 0, &[], false, 100);
    let want = Delivered {
        ranges: vec![OffsetRange { first: 0, last: 1 }],
        records: (2..=4).map(|o| (o, format!("m-{o}"))).collect(),
    };
    assert_eq!(got, want);
}

#[test]
fn a_batch_sent_twice_is_two_ranges_in_order() {
    // The `fetch_twice` fault repeats a partition's records: the client gets each twice.
    let b = batch(&[0, 1, 2], PLAIN);
    let mut twice = BytesMut::new();
    twice.extend_from_slice(&b);
    twice.extend_from_slice(&b);
    let (got, _) = deliveries(&twice.freeze(), 0, &[], false, 3);
    let r = OffsetRange { first: 0, last: 2 };
    assert_eq!(got.ranges, [r, r]);
    assert!(got.records.is_empty());
}

/// The ranges of `delivered` turned into records by a ledger that names offset `o` `m-{o}`,
/// then its records.
fn resolved(delivered: Delivered) -> Vec<(i64, String)> {
    let ranged = delivered
        .ranges
        .iter()
        .flat_map(|r| (r.first..=r.last).map(|o| (o, format!("m-{o}"))));
    let read = delivered.records.iter().map(|(o, id)| (o, id.to_owned()));
    ranged.chain(read).collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Whatever the batches (plain, compressed, transactional and aborted, control, gapped),
    /// the fetch position, the isolation level and the watermark (below which the ledger names
    /// every data record), the deliveries with their ranges resolved are the walk's records.
    #[test]
    fn ranges_resolved_by_the_ledger_are_the_records_the_walk_reads(
        batches in proptest::collection::vec(
            (1usize..5, 0usize..5, 0usize..3, proptest::prelude::any::<bool>()),
            1..6,
        ),
        fetch_offset in 0i64..20,
        read_committed in proptest::prelude::any::<bool>(),
        watermark in 0i64..30,
        abort_from in proptest::option::of(0i64..20),
    ) {
        let codecs = [Compression::None, Compression::None, Compression::Gzip, Compression::Lz4, Compression::Snappy];
        let mut all = BytesMut::new();
        let mut next = 0i64;
        for (count, codec, kind, gap) in &batches {
            let mut offsets: Vec<i64> = (next..next + *count as i64).collect();
            if *gap && *count > 1 {
                offsets[*count - 1] += 1; // a hole before the last record
            }
            next = offsets[offsets.len() - 1] + 1;
            let shape = Shape {
                transactional: *kind == 1,
                control: *kind == 2,
                compression: codecs[*codec],
            };
            all.extend_from_slice(&batch(&offsets, shape));
        }
        let all = all.freeze();
        let aborted: Vec<(i64, i64)> = abort_from.map(|first| (7, first)).into_iter().collect();
        let (walked, err) = delivered_records(&all, fetch_offset, &aborted, read_committed);
        proptest::prop_assert_eq!(err, None);
        let (delivered, err) = deliveries(&all, fetch_offset, &aborted, read_committed, watermark);
        proptest::prop_assert_eq!(err, None);
        let walked: Vec<(i64, String)> = walked.iter().map(|(o, id)| (o, id.to_owned())).collect();
        proptest::prop_assert_eq!(resolved(delivered), walked);
    }
}
