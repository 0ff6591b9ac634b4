//! Tests of the Kafka proxy: framing, address rewriting, delivery timing, the plain-batch scan
//! against the crate, and byte-level fuzzing of every frame kind it decodes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ConsumerProtocolAssignment, FetchRequest, FetchResponse,
    FindCoordinatorResponse, JoinGroupRequest, LeaveGroupRequest, MetadataRequest,
    MetadataResponse, OffsetCommitRequest, RequestHeader, ResponseHeader, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, Ctx, Pending, Responses};
use super::records::{DeliveryFilter, ID_HEADER};
use super::rewrite::cap_versions;
use super::wire::{correlation, decode_response, encode_response};
use super::*;
use crate::proxy::split_frames;
use crate::proxy::{FrameHandler, Framing, Handled, Registry, Tasks};
use crate::timeline::{DeliveredIds, Event, Timeline};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

#[test]
fn a_socket_connected_straight_to_a_broker_address_is_found() {
    let broker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = std::net::TcpStream::connect(broker.local_addr().unwrap()).unwrap();
    let me = std::process::id();
    let found = direct_connections(me, &[broker.local_addr().unwrap().to_string()]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with(&format!("-> {}", broker.local_addr().unwrap())));
    assert!(direct_connections(me, &[other.local_addr().unwrap().to_string()]).is_empty());
}

#[test]
fn error_names_are_kafka_style() {
    assert_eq!(error_name(22), "ILLEGAL_GENERATION");
    assert_eq!(error_name(27), "REBALANCE_IN_PROGRESS");
    assert_eq!(error_name(0), "NONE");
    assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
    assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE_9999");
}

#[test]
fn framing_waits_for_whole_frames_and_rejects_bad_lengths() {
    assert_eq!(KafkaFraming.frame_len(&[0, 0]), Ok(None));
    assert_eq!(KafkaFraming.frame_len(&[0, 0, 0, 2, 1]), Ok(None));
    assert_eq!(KafkaFraming.frame_len(&[0, 0, 0, 2, 1, 2, 3]), Ok(Some(6)));
    assert!(KafkaFraming.frame_len(&[0xff, 0, 0, 0]).is_err());
    assert!(KafkaFraming.frame_len(&[0x7f, 0, 0, 0]).is_err());
}

#[test]
fn versions_are_capped_to_what_the_crate_decodes() {
    let mut body = ApiVersionsResponse::default();
    body.api_keys.push(
        ApiVersion::default()
            .with_api_key(ApiKey::OffsetCommit as i16)
            .with_min_version(2)
            .with_max_version(99),
    );
    body.api_keys.push(
        ApiVersion::default()
            .with_api_key(ApiKey::Fetch as i16)
            .with_min_version(0)
            .with_max_version(2),
    );
    cap_versions(&mut body);
    assert_eq!(
        body.api_keys.len(),
        1,
        "Fetch 0..2 cannot be decoded: dropped"
    );
    assert_eq!(
        body.api_keys[0].max_version,
        OffsetCommitRequest::VERSIONS.max
    );
}

fn test_conn(gate: Gate) -> Arc<Conn> {
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        topic: "t".into(),
        bootstrap: vec!["127.0.0.1:1".into()],
        bootstrap_ports: vec![1],
        node_ports: Mutex::default(),
        nodes: Mutex::default(),
        topic_ids: Mutex::default(),
        timeline: Timeline::in_memory(),
        gate,
        incarnation_of: Arc::new(|_| 1),
        registry: Registry::new(1, stop.clone()),
        stop,
        tasks: Tasks::default(),
        failure: Mutex::default(),
        deliveries_first: AtomicBool::new(false),
        read_deliveries: AtomicBool::new(true),
        acked: std::sync::OnceLock::new(),
    });
    Arc::new(Conn {
        shared,
        instance: 0,
        incarnation: 1,
        inflight: Mutex::default(),
        positions: Mutex::default(),
    })
}

fn frame(header: impl FnOnce(&mut BytesMut), body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(0);
    header(&mut out);
    body(&mut out);
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

fn request<T: Encodable>(key: ApiKey, version: i16, corr: i32, body: &T) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("test")));
    frame(
        |b| {
            header
                .encode(b, key.request_header_version(version))
                .unwrap()
        },
        |b| body.encode(b, version).unwrap(),
    )
}

fn response<T: Encodable>(key: ApiKey, version: i16, corr: i32, body: &T) -> Bytes {
    let header = ResponseHeader::default().with_correlation_id(corr);
    encode_response(&header, key, version, body).unwrap()
}

fn batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..5)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 10 + i,
            sequence: -1,
            timestamp: 0,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from_static(b"{}")),
            headers: [(
                StrBytes::from_static_str(ID_HEADER),
                Some(Bytes::from(format!("id-{i}"))),
            )]
            .into_iter()
            .collect(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

#[test]
fn records_of_every_codec_are_delivered_from_the_fetch_offset() {
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let b = batch(c);
        let (recs, err) = delivered_records(&b, 12, &[], false);
        assert_eq!(err, None, "{c:?}");
        let ids: Vec<_> = recs.iter().collect();
        assert_eq!(ids, [(12, "id-2"), (13, "id-3"), (14, "id-4")], "{c:?}");
        // A truncated last batch is normal (the broker cuts at max bytes).
        let mut two = BytesMut::from(&b[..]);
        two.extend_from_slice(&b[..b.len() / 2]);
        let (recs, err) = delivered_records(&two.freeze(), 0, &[], false);
        assert_eq!(err, None, "{c:?}");
        // The whole batches of the second copy count, the cut one does not.
        assert!((5..10).contains(&recs.len()), "{c:?}: {}", recs.len());
    }
}

/// Valid frames of every kind the proxy decodes, with (is request, api key, version).
fn corpus() -> Vec<(bool, ApiKey, i16, Bytes)> {
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponseTopic,
    };
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{BrokerId, GroupId, TopicName};
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_member_id(StrBytes::from_static_str("m"))
        .with_generation_id_or_member_epoch(3)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)])]);
    let metadata = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(StrBytes::from_static_str("10.0.0.1"))
            .with_port(9092)])
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))]);
    let mut fetch = FetchResponse::default();
    let mut topic = kafka_protocol::messages::fetch_response::FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("t")));
    topic.partitions.push(
        kafka_protocol::messages::fetch_response::PartitionData::default()
            .with_records(Some(batch(Compression::Gzip))),
    );
    fetch.responses.push(topic);
    let sync = SyncGroupResponse::default().with_assignment({
        let mut b = BytesMut::new();
        b.put_i16(0);
        ConsumerProtocolAssignment::default()
            .encode(&mut b, 0)
            .unwrap();
        b.freeze()
    });
    vec![
        (
            true,
            ApiKey::OffsetCommit,
            8,
            request(ApiKey::OffsetCommit, 8, 1, &commit),
        ),
        (
            true,
            ApiKey::JoinGroup,
            5,
            request(ApiKey::JoinGroup, 5, 2, &JoinGroupRequest::default()),
        ),
        (
            true,
            ApiKey::Fetch,
            12,
            request(ApiKey::Fetch, 12, 3, &FetchRequest::default()),
        ),
        (
            true,
            ApiKey::LeaveGroup,
            3,
            request(ApiKey::LeaveGroup, 3, 4, &LeaveGroupRequest::default()),
        ),
        (
            false,
            ApiKey::Metadata,
            12,
            response(ApiKey::Metadata, 12, 5, &metadata),
        ),
        (
            false,
            ApiKey::Fetch,
            12,
            response(ApiKey::Fetch, 12, 6, &fetch),
        ),
        (
            false,
            ApiKey::SyncGroup,
            3,
            response(ApiKey::SyncGroup, 3, 7, &sync),
        ),
        (
            false,
            ApiKey::FindCoordinator,
            4,
            response(
                ApiKey::FindCoordinator,
                4,
                8,
                &FindCoordinatorResponse::default(),
            ),
        ),
        (
            false,
            ApiKey::ApiVersions,
            3,
            response(ApiKey::ApiVersions, 3, 9, &ApiVersionsResponse::default()),
        ),
    ]
}

/// Notes that `conn` sent the request that `frame` answers (`key`, `version`, what handling
/// its response needs), as the request side would have.
fn awaiting(conn: &Conn, frame: &Bytes, key: ApiKey, version: i16, ctx: Ctx) {
    lock(&conn.inflight).insert(
        correlation(frame),
        Pending {
            key: key as i16,
            version,
            ctx,
        },
    );
}

/// Pushes raw bytes through the framing and the handlers, as a connection would.
async fn feed(conn: &Arc<Conn>, is_request: bool, key: ApiKey, version: i16, bytes: &[u8]) {
    let (frames, _) = split_frames(&KafkaFraming, bytes);
    for f in frames {
        if is_request {
            let _ = conn.clone().on_request(f).await;
        } else {
            if f.len() >= 8 {
                let ctx = Ctx::Fetch {
                    read_committed: false,
                };
                awaiting(conn, &f, key, version, ctx);
            }
            let _ = conn.clone().on_response(f).await;
        }
    }
}

/// Handed the workload's acknowledged offsets, the proxy records a fetched batch below their
/// watermark as its offset range, in the one event of that partition and response; without
/// them (or beyond the watermark) it reads the records.
#[tokio::test]
async fn a_batch_the_ledger_names_is_recorded_as_its_offset_range() {
    // The corpus's Fetch response carries offsets 10..=14 of partition 0, one batch each.
    let range = |last| vec![crate::timeline::OffsetRange { first: 10, last }];
    let cases = [
        (None, (vec![], 5)),
        (Some(15), (range(14), 0)),
        (Some(14), (range(13), 1)),
    ];
    for (watermark, want) in cases {
        let conn = test_conn(Gate::open());
        if let Some(w) = watermark {
            let acked = crate::timeline::AckedOffsets::default();
            (0..w).for_each(|o| acked.acked(0, o));
            conn.shared.acked.set(Arc::new(acked)).unwrap();
        }
        let mut rx = conn.shared.timeline.subscribe();
        let mut responses = Responses {
            conn: conn.clone(),
            unread: Vec::new(),
        };
        let (_, _, _, f) = corpus().swap_remove(5);
        let ctx = Ctx::Fetch {
            read_committed: false,
        };
        awaiting(&conn, &f, ApiKey::Fetch, 12, ctx);
        assert!(matches!(responses.on_frame(f).await, Handled::Forward(_)));
        responses.on_written();
        let mut batches = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let Event::DeliveredBatch {
                ranges, records, ..
            } = &e.event
            {
                batches.push((ranges.clone(), records.len()));
            }
        }
        assert_eq!(batches, [want], "watermark {watermark:?}");
    }
}

/// A Fetch response's `delivered` events come once it is written (by default), or before
/// it is forwarded when the proxy is told to; a response that is not forwarded delivers
/// nothing.
#[tokio::test]
async fn deliveries_are_recorded_after_the_write_or_before_the_forward() {
    let fetch = || {
        let (_, _, _, f) = corpus().swap_remove(5);
        f
    };
    let delivered =
        |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Arc<crate::timeline::Stamped>>| {
            let mut n = 0;
            while let Ok(e) = rx.try_recv() {
                if let Event::DeliveredBatch {
                    instance: 0,
                    incarnation: 1,
                    partition: 0,
                    records,
                    ..
                } = &e.event
                {
                    n += records.len();
                }
            }
            n
        };
    // (before forwarding, reading records): the benchmark's floor turns reading off.
    for (first, read) in [(false, true), (true, true), (false, false)] {
        let conn = test_conn(Gate::open());
        conn.shared.deliveries_first.store(first, Ordering::Relaxed);
        conn.shared.read_deliveries.store(read, Ordering::Relaxed);
        let mut rx = conn.shared.timeline.subscribe();
        let mut responses = Responses {
            conn: conn.clone(),
            unread: Vec::new(),
        };
        let f = fetch();
        let ctx = Ctx::Fetch {
            read_committed: false,
        };
        awaiting(&conn, &f, ApiKey::Fetch, 12, ctx);
        assert!(matches!(responses.on_frame(f).await, Handled::Forward(_)));
        if !read {
            assert!(!responses.needs_written());
            assert_eq!(delivered(&mut rx), 0, "forwarded, never read");
            continue;
        }
        if first {
            assert_eq!(delivered(&mut rx), 5, "recorded before the forward");
            assert!(!responses.needs_written());
        } else {
            assert_eq!(delivered(&mut rx), 0, "nothing before the write");
            assert!(responses.needs_written());
            responses.on_written();
            assert_eq!(delivered(&mut rx), 5, "every record once written");
            assert!(!responses.needs_written());
        }
        // A response with no request behind it closes the connection: nothing delivered.
        assert!(matches!(
            responses.on_frame(fetch()).await,
            Handled::Close(_)
        ));
        assert!(!responses.needs_written());
        assert_eq!(delivered(&mut rx), 0);
    }
}

#[tokio::test]
async fn valid_frames_pass_and_addresses_are_rewritten() {
    let conn = test_conn(Gate::open());
    for (is_request, key, version, f) in corpus() {
        if is_request {
            assert!(matches!(
                conn.clone().on_request(f).await,
                Handled::Forward(_)
            ));
            continue;
        }
        awaiting(&conn, &f, key, version, Ctx::None);
        let Handled::Forward(out) = conn.clone().on_response(f).await else {
            panic!("{key:?} not forwarded");
        };
        if key == ApiKey::Metadata {
            let (_, m) = decode_response::<MetadataResponse>(&out, key, version).unwrap();
            assert_eq!(m.brokers[0].host.as_str(), "127.0.0.1");
            let port = lock(&conn.shared.node_ports)[&1][0];
            assert_eq!(m.brokers[0].port, port as i32);
        }
    }
    assert_eq!(conn.shared.failure(), None);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

    #[test]
    fn random_bytes_are_framed_or_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let (frames, _) = split_frames(&KafkaFraming, &bytes);
        for f in frames {
            let _ = request_ids(&f);
        }
    }

    /// Valid frames cut short at any point (length prefix fixed up, so the handlers see
    /// a whole but truncated message) or with a bad prefix: each is forwarded, refused or
    /// closes the connection; nothing panics.
    #[test]
    fn truncated_frames_are_handled_or_refused(
        which in 0usize..9,
        cut in proptest::prelude::any::<usize>(),
        fix_prefix in proptest::prelude::any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (is_request, key, version, f) = corpus().swap_remove(which);
        let mut bytes = f.to_vec();
        bytes.truncate(cut % (bytes.len() + 1));
        if fix_prefix && bytes.len() >= 4 {
            let len = (bytes.len() - 4) as i32;
            bytes[..4].copy_from_slice(&len.to_be_bytes());
        }
        let conn = test_conn(Gate::open());
        rt.block_on(feed(&conn, is_request, key, version, &bytes));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// Arbitrary byte flips inside valid frames: each is forwarded, refused or closes the
    /// connection; nothing panics or aborts. (Upstream kafka-protocol 0.18 preallocates
    /// from flipped length prefixes and the allocator aborts; the vendored copy caps every
    /// preallocation by the bytes remaining, see vendor/kafka-protocol/VENDORED.md.)
    #[test]
    fn flipped_frames_are_handled_or_refused(
        which in 0usize..9,
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (is_request, key, version, f) = corpus().swap_remove(which);
        let mut bytes = f.to_vec();
        for (pos, b) in flips {
            let i = 4 + pos % (bytes.len() - 4);
            bytes[i] = b;
        }
        let conn = test_conn(Gate::open());
        rt.block_on(feed(&conn, is_request, key, version, &bytes));
    }
}

/// The reference for [`delivered_records`]: every batch decoded by the crate (what the
/// proxy did before the plain-batch scan existed).
fn delivered_records_by_the_crate(
    records: &Bytes,
    fetch_offset: i64,
    aborted: &[(i64, i64)],
    read_committed: bool,
) -> (DeliveredIds, bool) {
    let mut out = DeliveredIds::default();
    let mut filter = DeliveryFilter::new(fetch_offset, aborted, read_committed);
    let mut buf = records.clone();
    while buf.remaining() >= 12 {
        let len = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if len < 0 {
            return (out, true);
        }
        if buf.remaining() < 12 + len as usize {
            break;
        }
        let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
            return (out, true);
        };
        for r in &set.records {
            let id = r
                .headers
                .iter()
                .find(|(k, _)| k.as_str() == ID_HEADER)
                .and_then(|(_, v)| v.as_deref())
                .or(r.key.as_deref());
            filter.visit(
                SeenRecord {
                    offset: r.offset,
                    control: r.control,
                    transactional: r.transactional,
                    producer_id: r.producer_id,
                    id,
                },
                &mut |id, offset| out.push_bytes(offset, id),
            );
        }
    }
    (out, false)
}

/// One record as the property tests describe it: key, value, headers (name, value).
type RecordSpec = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn record_spec() -> impl proptest::strategy::Strategy<Value = RecordSpec> {
    use proptest::prelude::*;
    let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12));
    // Header names: mostly the ID header or a few others, so duplicates happen.
    let name = prop_oneof![
        Just(ID_HEADER.to_string()),
        Just("other".to_string()),
        "[a-z-]{0,12}",
    ];
    (
        bytes(),
        bytes(),
        proptest::collection::vec((name, bytes()), 0..4),
    )
}

/// One encoded batch of `specs` from `base` (control / transactional as given).
fn encode_batch(
    specs: &[RecordSpec],
    base: i64,
    producer_id: i64,
    transactional: bool,
    control: bool,
    compression: Compression,
) -> Bytes {
    let records: Vec<Record> = specs
        .iter()
        .enumerate()
        .map(|(i, (key, value, headers))| Record {
            transactional,
            control,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: base + i as i64,
            // offset − sequence constant: the encoder keeps the records in one batch.
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: key.clone().map(Bytes::from),
            value: value.clone().map(Bytes::from),
            headers: headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                .collect(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// Recomputes a v2 batch's CRC after its bytes were changed, so a decoder gets past it.
fn fix_crc(batch: &mut [u8]) {
    if batch.len() >= 21 {
        let crc = crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// The plain-batch scan reads exactly what the crate reads: on valid uncompressed
    /// batches it is used (never falls back) and yields the same records; on batches with
    /// bytes changed (CRC fixed up so the records are reached, or not) it either agrees with
    /// the crate or refuses; and the whole walk over several batches (compressed ones,
    /// a cut last batch, aborted transactions) equals the crate-only walk.
    #[test]
    fn plain_batch_scan_equals_the_crate(
        batches in proptest::collection::vec(
            (
                proptest::collection::vec(record_spec(), 1..6),
                0i64..3,
                proptest::prelude::any::<bool>(),
                proptest::prelude::any::<bool>(),
                0usize..5,
            ),
            1..4,
        ),
        flips in proptest::collection::vec(
            (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()),
            0..3,
        ),
        fix in proptest::prelude::any::<bool>(),
        cut in proptest::prelude::any::<usize>(),
        fetch_offset in 0i64..20,
        read_committed in proptest::prelude::any::<bool>(),
    ) {
        let codecs = [
            Compression::None,
            Compression::None,
            Compression::None,
            Compression::Gzip,
            Compression::Lz4,
        ];
        let mut all = BytesMut::new();
        let mut base = 0i64;
        for (specs, pid, transactional, control, codec) in &batches {
            let compression = codecs[*codec];
            let b = encode_batch(specs, base, *pid, *transactional, *control, compression);
            // A valid plain batch: the scan must take it, and agree with the crate.
            if compression == Compression::None {
                let mut scanned = Vec::new();
                proptest::prop_assert!(scan_plain_batch(&b, 0..b.len(), &mut scanned));
                let set = RecordBatchDecoder::decode(&mut b.clone()).unwrap();
                let want: Vec<(i64, Option<Vec<u8>>)> = set
                    .records
                    .iter()
                    .map(|r| {
                        let id = r
                            .headers
                            .iter()
                            .find(|(k, _)| k.as_str() == ID_HEADER)
                            .and_then(|(_, v)| v.as_deref())
                            .or(r.key.as_deref());
                        (r.offset, id.map(<[u8]>::to_vec))
                    })
                    .collect();
                let got: Vec<(i64, Option<Vec<u8>>)> = scanned
                    .iter()
                    .map(|r| (r.offset, r.id.map(<[u8]>::to_vec)))
                    .collect();
                proptest::prop_assert_eq!(got, want);
            }
            // A changed copy: the scan agrees with the crate or refuses.
            if !flips.is_empty() {
                let mut bad = b.to_vec();
                for (pos, v) in &flips {
                    let i = pos % bad.len();
                    bad[i] = *v;
                }
                if fix {
                    fix_crc(&mut bad);
                }
                let bad = Bytes::from(bad);
                let mut scanned = Vec::new();
                if scan_plain_batch(&bad, 0..bad.len(), &mut scanned) {
                    let set = RecordBatchDecoder::decode(&mut bad.clone());
                    proptest::prop_assert!(set.is_ok(), "scan read what the crate refuses");
                    let set = set.unwrap();
                    proptest::prop_assert_eq!(scanned.len(), set.records.len());
                    for (s, r) in scanned.iter().zip(&set.records) {
                        let id = r
                            .headers
                            .iter()
                            .find(|(k, _)| k.as_str() == ID_HEADER)
                            .and_then(|(_, v)| v.as_deref())
                            .or(r.key.as_deref());
                        proptest::prop_assert_eq!(s.offset, r.offset);
                        proptest::prop_assert_eq!(s.id, id);
                        proptest::prop_assert_eq!(s.control, r.control);
                        proptest::prop_assert_eq!(s.transactional, r.transactional);
                        proptest::prop_assert_eq!(s.producer_id, r.producer_id);
                    }
                }
            }
            all.extend_from_slice(&b);
            base += specs.len() as i64 + 1;
        }
        // The whole walk, with the last batch possibly cut, against the crate-only walk.
        let mut all = all.to_vec();
        if cut % 3 == 0 {
            all.truncate(all.len() - cut % all.len());
        }
        if !flips.is_empty() && cut % 2 == 0 {
            for (pos, v) in &flips {
                let i = pos % all.len();
                all[i] = *v;
            }
        }
        let all = Bytes::from(all);
        let aborted = [(1, 2), (2, 0)];
        let (got, err) = delivered_records(&all, fetch_offset, &aborted, read_committed);
        let (want, want_err) =
            delivered_records_by_the_crate(&all, fetch_offset, &aborted, read_committed);
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert_eq!(err.is_some(), want_err);
    }
}

/// Length prefixes of i32::MAX (and the compact u32::MAX) in a tiny frame: decoding fails
/// with an error instead of preallocating gigabytes (which aborts the process).
#[test]
fn huge_length_prefixes_are_refused_not_allocated() {
    // MetadataRequest v1: topics, a nullable array, claims i32::MAX entries.
    let mut b = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 5]);
    assert!(MetadataRequest::decode(&mut b, 1).is_err());
    // MetadataRequest v9 (flexible): a compact array of u32::MAX - 1 entries.
    let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0]);
    assert!(MetadataRequest::decode(&mut b, 9).is_err());
    // A valid one-record batch whose record count says i32::MAX (crc fixed up, so the
    // decoder gets as far as the records).
    let mut out = batch(Compression::None).to_vec();
    // base offset (8), length (4), leader epoch (4), magic (1), then the crc (4) over the
    // rest: attributes (2), last offset delta (4), timestamps (16), producer id/epoch
    // (10), base sequence (4), record count (4).
    let count_at = 8 + 4 + 4 + 1 + 4 + 2 + 4 + 16 + 10 + 4;
    out[count_at..count_at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
    let end = 12 + i32::from_be_bytes([out[8], out[9], out[10], out[11]]) as usize;
    let crc = crc32c(&out[21..end]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = RecordBatchDecoder::decode(&mut Bytes::from(out)).unwrap_err();
    assert!(!err.to_string().contains("Cyclic"), "{err}");
}

/// CRC-32C (Castagnoli), as record batches use; bitwise, for tests only.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A typed decode error reads exactly as the crate's error did in the old string form ("Metadata
/// v12 response: <the crate's reason>"), and keeps the crate's error as its source.
#[test]
fn decode_errors_keep_the_crates_words_and_source() {
    let whole = response(
        ApiKey::Metadata,
        12,
        5,
        &MetadataResponse::default().with_brokers(vec![
            kafka_protocol::messages::metadata_response::MetadataResponseBroker::default()
                .with_host(StrBytes::from_static_str("10.0.0.1")),
        ]),
    );
    let cut = whole.slice(..whole.len() - 3);
    let err = decode_response::<MetadataResponse>(&cut, ApiKey::Metadata, 12).unwrap_err();
    let mut body = cut.slice(4..);
    ResponseHeader::decode(&mut body, ApiKey::Metadata.response_header_version(12)).unwrap();
    let crate_err = MetadataResponse::decode(&mut body, 12).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Metadata v12 response: {crate_err}")
    );
    let source = std::error::Error::source(&err).expect("the crate's error as source");
    assert_eq!(source.to_string(), crate_err.to_string());
}
