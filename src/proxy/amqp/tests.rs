//! Tests of the AMQP proxy: framing, URLs, deliveries and acks resolved to IDs, holds, and
//! byte-level fuzzing of a whole conversation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::AMQPValue;
use tokio_util::sync::CancellationToken;

use super::conn::Conn;
use super::deliveries::ID_HEADER;
use super::framing::FRAME_END;
use super::url::split_url;
use super::*;
use crate::proxy::{Framing, Registry, Tasks};
use crate::timeline::{AckVerb, Event, Timeline};
use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::FieldTable;

fn test_conn(gate: Gate) -> (Arc<Conn>, Timeline) {
    let stop = CancellationToken::new();
    let timeline = Timeline::in_memory();
    let shared = Arc::new(Shared {
        url: split_url("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap(),
        ports: vec![1],
        timeline: timeline.clone(),
        gate,
        incarnation_of: Arc::new(|_| 1),
        registry: Registry::new(1, stop.clone()),
        stop,
        tasks: Tasks::default(),
        failure: Mutex::default(),
        unobserved: AtomicU64::new(0),
        live: Mutex::default(),
    });
    (Arc::new(Conn::new(shared, 0, 1)), timeline)
}

fn encode(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(WriteContext::from(Vec::new()))
        .expect("encodes")
        .write
}

fn method(ch: u16, m: basic::AMQPMethod) -> Vec<u8> {
    encode(&AMQPFrame::Method(ch, AMQPClass::Basic(m)))
}

fn deliver(ch: u16, consumer: &str, tag: u64, redelivered: bool) -> Vec<u8> {
    method(
        ch,
        basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: consumer.into(),
            delivery_tag: tag,
            redelivered,
            exchange: "".into(),
            routing_key: "q".into(),
        }),
    )
}

fn header(ch: u16, properties: BasicProperties) -> Vec<u8> {
    encode(&AMQPFrame::Header(
        ch,
        AMQPContentHeader {
            class_id: 60,
            body_size: 2,
            properties,
        },
    ))
}

fn with_id(id: &str) -> BasicProperties {
    BasicProperties::default().with_message_id(id.into())
}

fn ack(ch: u16, tag: u64, multiple: bool) -> Vec<u8> {
    method(
        ch,
        basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: tag,
            multiple,
        }),
    )
}

fn consume(ch: u16, tag: &str, no_ack: bool) -> Vec<u8> {
    method(
        ch,
        basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: tag.into(),
            no_ack,
            ..Default::default()
        }),
    )
}

/// Delivers `ids` on channel 1 (tags 1..) to consumer "c".
fn deliver_all(conn: &Conn, ids: &[&str]) {
    for (i, id) in ids.iter().enumerate() {
        conn.on_broker_frame(&deliver(1, "c", i as u64 + 1, false));
        conn.on_broker_frame(&header(1, with_id(id)));
        conn.on_broker_frame(&encode(&AMQPFrame::Body(1, b"{}".to_vec())));
    }
}

#[test]
fn framing_cuts_the_protocol_header_and_frames() {
    let f = AmqpFraming::new();
    let mut bytes = b"AMQP\x00\x00\x09\x01".to_vec();
    bytes.extend(ack(1, 7, false));
    bytes.extend([8, 0, 0, 0, 0, 0, 0, 0xCE]);
    bytes.extend(&ack(1, 8, false)[..5]);
    let (frames, rest) = super::super::split_frames(&f, &bytes);
    assert_eq!(frames.len(), 3);
    assert_eq!(&frames[0][..], b"AMQP\x00\x00\x09\x01");
    assert_eq!(rest, Ok(5));
    // A wrong frame end, or a frame over the frame max, cannot be framed.
    let mut bad = ack(1, 7, false);
    *bad.last_mut().unwrap() = 0;
    assert!(f.frame_len(&bad).is_err());
    f.set_frame_max(4096);
    assert!(f.frame_len(&[3, 0, 1, 0, 0, 0x10, 0]).is_err());
    assert_eq!(f.frame_len(&[3, 0, 1, 0, 0, 0x0F, 0xF8]), Ok(None));
    assert!(f.frame_len(b"AMQX").is_err());
    assert_eq!(f.frame_len(b"AMQ"), Ok(None));
}

#[test]
fn urls_keep_credentials_and_vhost() {
    let u = split_url("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
    assert_eq!(u.prefix, "amqp://guest:guest@");
    assert_eq!(u.address, "127.0.0.1:5672");
    assert_eq!(u.suffix, "/%2f");
    let u = split_url("amqp://rabbit?heartbeat=5").unwrap();
    assert_eq!(
        (u.prefix.as_str(), u.address.as_str(), u.suffix.as_str()),
        ("amqp://", "rabbit:5672", "?heartbeat=5")
    );
    let u = split_url("amqp://u:p@w@[::1]:5673/v").unwrap();
    assert_eq!(u.prefix, "amqp://u:p@w@");
    assert_eq!(u.address, "[::1]:5673");
    assert!(split_url("amqps://h/").is_err());
    assert!(split_url("http://h/").is_err());
    assert!(split_url("h:5672").is_err());
    assert_eq!(
        redact("amqp://guest:secret@h:1/v"),
        "amqp://guest:***@h:1/v"
    );
}

#[test]
fn deliveries_and_acks_resolve_to_ids() {
    let (conn, _timeline) = test_conn(Gate::open());
    deliver_all(&conn, &["a", "b", "c", "d", "e"]);
    // A single ack covers its tag; a multiple ack every outstanding tag up to its own.
    let a = conn.on_client_frame(&ack(1, 2, false)).unwrap();
    assert_eq!(a.ids, vec!["b"]);
    conn.settle(&a);
    let a = conn.on_client_frame(&ack(1, 4, true)).unwrap();
    assert_eq!(a.ids, vec!["a", "c", "d"]);
    conn.settle(&a);
    // Tag 0 with multiple: everything outstanding.
    let a = conn.on_client_frame(&ack(1, 0, true)).unwrap();
    assert_eq!(a.ids, vec!["e"]);
    conn.settle(&a);
    let a = conn.on_client_frame(&ack(1, 0, true)).unwrap();
    assert!(a.ids.is_empty());
    // Nack and reject carry requeue.
    deliver_all(&conn, &["f"]);
    let n = conn
        .on_client_frame(&method(
            1,
            basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: 1,
                multiple: false,
                requeue: true,
            }),
        ))
        .unwrap();
    assert_eq!(
        (n.verb, n.requeue, n.ids.clone()),
        (AckVerb::Nack, true, vec!["f".into()])
    );
    let r = conn
        .on_client_frame(&method(
            1,
            basic::AMQPMethod::Reject(basic::Reject {
                delivery_tag: 1,
                requeue: false,
            }),
        ))
        .unwrap();
    assert_eq!(r.verb, AckVerb::Reject);
}

#[test]
fn publisher_confirms_are_not_consumer_acks() {
    let (conn, timeline) = test_conn(Gate::open());
    let mut rx = timeline.subscribe();
    deliver_all(&conn, &["a"]);
    // The broker's basic.ack (a confirm) neither records nor settles anything.
    conn.on_broker_frame(&ack(1, 1, false));
    let a = conn.on_client_frame(&ack(1, 1, false)).unwrap();
    assert_eq!(a.ids, vec!["a"]);
    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        kinds.push(e.event.clone());
    }
    assert_eq!(kinds.len(), 1, "{kinds:?}");
    assert!(matches!(&kinds[0], Event::Delivered { id, offset: Some(1), .. } if id == "a"));
}

#[test]
fn the_id_comes_from_message_id_else_the_header() {
    let (conn, timeline) = test_conn(Gate::open());
    let mut rx = timeline.subscribe();
    let mut headers = FieldTable::default();
    headers.insert(ID_HEADER.into(), AMQPValue::LongString("h-1".into()));
    conn.on_broker_frame(&deliver(1, "c", 1, true));
    conn.on_broker_frame(&header(1, BasicProperties::default().with_headers(headers)));
    let e = rx.try_recv().unwrap();
    assert!(matches!(
        &e.event,
        Event::Delivered { id, redelivered: true, offset: Some(1), .. } if id == "h-1"
    ));
    // No ID at all: counted, not recorded.
    conn.on_broker_frame(&deliver(1, "c", 2, false));
    conn.on_broker_frame(&header(1, BasicProperties::default()));
    assert_eq!(conn.shared.unobserved.load(Ordering::Relaxed), 1);
}

#[test]
fn consume_reports_no_ack_and_prefetch_and_no_ack_deliveries_are_not_tracked() {
    let (conn, timeline) = test_conn(Gate::open());
    let mut rx = timeline.subscribe();
    conn.on_client_frame(&method(
        1,
        basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 50,
            global: false,
        }),
    ));
    conn.on_client_frame(&consume(1, "c", false));
    conn.on_client_frame(&consume(2, "", true));
    conn.on_broker_frame(&method(
        2,
        basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
            consumer_tag: "amq.ctag-1".into(),
        }),
    ));
    let first = rx.try_recv().unwrap();
    assert!(matches!(
        first.event,
        Event::ConsumerSettings {
            no_ack: false,
            prefetch: Some(50),
            ..
        }
    ));
    let second = rx.try_recv().unwrap();
    assert!(matches!(
        second.event,
        Event::ConsumerSettings {
            no_ack: true,
            prefetch: None,
            ..
        }
    ));
    conn.on_broker_frame(&deliver(2, "amq.ctag-1", 1, false));
    conn.on_broker_frame(&header(2, with_id("x")));
    assert!(lock(&conn.channels)[&2].outstanding.is_empty());
}

#[test]
fn a_reopened_channel_starts_afresh() {
    let (conn, _t) = test_conn(Gate::open());
    deliver_all(&conn, &["a"]);
    conn.on_client_frame(&encode(&AMQPFrame::Method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )));
    assert!(conn
        .on_client_frame(&ack(1, 1, false))
        .unwrap()
        .ids
        .is_empty());
}

#[test]
fn tune_ok_sets_the_frame_max_and_heartbeat() {
    let (conn, _t) = test_conn(Gate::open());
    conn.on_client_frame(&encode(&AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2047,
            frame_max: 131072,
            heartbeat: 7,
        })),
    )));
    assert_eq!(conn.framing.frame_max(), 131072);
    assert_eq!(conn.heartbeat.load(Ordering::Relaxed), 7);
}

#[test]
fn a_consume_records_the_heartbeat_its_connection_negotiated() {
    let (conn, timeline) = test_conn(Gate::open());
    let mut rx = timeline.subscribe();
    conn.on_client_frame(&encode(&AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2047,
            frame_max: 131072,
            heartbeat: 7,
        })),
    )));
    conn.on_client_frame(&consume(1, "c", false));
    let e = rx.try_recv().unwrap();
    assert!(
        matches!(
            e.event,
            Event::ConsumerSettings {
                heartbeat_s: Some(7),
                ..
            }
        ),
        "{:?}",
        e.event
    );
}

#[tokio::test]
async fn a_withheld_ack_is_dropped_and_an_answered_one_forwarded() {
    let gate = Gate::holding([HoldPoint::AckRequest]);
    let (conn, timeline) = test_conn(gate.clone());
    deliver_all(&conn, &["a", "b"]);
    let mut rx = timeline.subscribe();
    let mut all = timeline.subscribe();
    let mut requests = Requests {
        conn: conn.clone(),
        unwritten: None,
        content: inject::ContentFollower::default(),
        injecting: None,
    };
    let g = gate.clone();
    let decider = tokio::spawn(async move {
        let mut n = 0;
        while let Some(e) = rx.recv().await {
            if let Event::Ack {
                phase: AckPhase::Request,
                ..
            } = e.event
            {
                n += 1;
                let v = if n == 1 {
                    HoldDecision::Withhold
                } else {
                    HoldDecision::Answer
                };
                g.decide(HoldPoint::AckRequest, e.seq, v);
                if n == 2 {
                    return;
                }
            }
        }
    });
    let out = requests.on_frame(Bytes::from(ack(1, 1, false))).await;
    assert!(matches!(out, Handled::Drop));
    let out = requests.on_frame(Bytes::from(ack(1, 2, false))).await;
    assert!(matches!(out, Handled::Forward(_)));
    requests.on_written();
    decider.await.unwrap();
    let mut phases: Vec<(AckPhase, Vec<String>)> = Vec::new();
    while let Ok(e) = all.try_recv() {
        if let Event::Ack { phase, ids, .. } = &e.event {
            phases.push((*phase, ids.clone()));
        }
    }
    assert_eq!(
        phases,
        vec![
            (AckPhase::Request, vec!["a".to_string()]),
            (AckPhase::Dropped, vec!["a".to_string()]),
            (AckPhase::Request, vec!["b".to_string()]),
            (AckPhase::Forwarded, vec!["b".to_string()]),
        ]
    );
    // The withheld ack left "a" outstanding; "b" is settled.
    assert_eq!(
        lock(&conn.channels)[&1]
            .outstanding
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![1]
    );
}

#[tokio::test]
async fn an_ack_whose_connection_ends_while_held_is_dropped() {
    let gate = Gate::holding([HoldPoint::AckRequest]);
    let (conn, timeline) = test_conn(gate);
    deliver_all(&conn, &["a"]);
    let mut rx = timeline.subscribe();
    {
        let mut requests = Requests {
            conn: conn.clone(),
            unwritten: None,
            content: inject::ContentFollower::default(),
            injecting: None,
        };
        let held = requests.on_frame(Bytes::from(ack(1, 1, false)));
        // The connection ends (the pump is dropped) while the ack waits for a verdict.
        let _ = tokio::time::timeout(Duration::from_millis(50), held).await;
    }
    let mut phases = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Ack { phase, .. } = e.event {
            phases.push(phase);
        }
    }
    assert_eq!(phases, vec![AckPhase::Request, AckPhase::Dropped]);
}

/// A valid conversation: both directions' frames, in order, tagged by direction
/// (true = client→broker).
fn conversation() -> Vec<(bool, Vec<u8>)> {
    let mut headers = FieldTable::default();
    headers.insert(ID_HEADER.into(), AMQPValue::LongString("h-9".into()));
    headers.insert(
        "nested".into(),
        AMQPValue::FieldArray(vec![AMQPValue::LongLongInt(3)].into()),
    );
    let mut out = vec![
        (true, b"AMQP\x00\x00\x09\x01".to_vec()),
        (
            true,
            encode(&AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                    channel_max: 2047,
                    frame_max: 131072,
                    heartbeat: 5,
                })),
            )),
        ),
        (
            true,
            method(
                1,
                basic::AMQPMethod::Qos(basic::Qos {
                    prefetch_count: 10,
                    global: false,
                }),
            ),
        ),
        (true, consume(1, "", false)),
        (
            false,
            method(
                1,
                basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: "ctag".into(),
                }),
            ),
        ),
    ];
    for tag in 1..=4u64 {
        out.push((false, deliver(1, "ctag", tag, tag % 2 == 0)));
        let props = if tag == 3 {
            BasicProperties::default().with_headers(headers.clone())
        } else {
            with_id(&format!("m-{tag}"))
        };
        out.push((false, header(1, props)));
        out.push((false, encode(&AMQPFrame::Body(1, b"{\"x\":1}".to_vec()))));
    }
    out.push((true, ack(1, 2, true)));
    out.push((
        true,
        method(
            1,
            basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: 3,
                multiple: false,
                requeue: true,
            }),
        ),
    ));
    out.push((false, ack(1, 9, true)));
    out.push((true, ack(1, 0, true)));
    out.push((false, vec![8, 0, 0, 0, 0, 0, 0, 0xCE]));
    out
}

/// Feeds `bytes` through the framing into one direction's observer, as the pump would
/// (a framing error ends the "connection").
fn feed(conn: &Conn, client: bool, bytes: &[u8]) -> usize {
    let (frames, _) = super::super::split_frames(&conn.framing, bytes);
    for f in &frames {
        if client {
            if let Some(a) = conn.on_client_frame(f) {
                conn.settle(&a);
            }
        } else {
            conn.on_broker_frame(f);
        }
    }
    frames.len()
}

#[test]
fn the_valid_conversation_resolves_its_acks() {
    let (conn, timeline) = test_conn(Gate::open());
    let mut rx = timeline.subscribe();
    for (client, bytes) in conversation() {
        assert_eq!(feed(&conn, client, &bytes), 1);
    }
    let mut acks = Vec::new();
    let mut delivered = 0;
    while let Ok(e) = rx.try_recv() {
        match &e.event {
            Event::Delivered { .. } => delivered += 1,
            Event::Ack { ids, .. } => acks.push(ids.clone()),
            _ => {}
        }
    }
    assert_eq!(delivered, 4);
    // (ack events are recorded by the Requests handler, not by `feed`)
    assert!(acks.is_empty());
    assert_eq!(conn.shared.unobserved.load(Ordering::Relaxed), 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

    /// Random bytes through the framing and both directions' observers: never a panic,
    /// and whatever is framed is a whole frame.
    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        client in proptest::prelude::any::<bool>(),
    ) {
        let (conn, _t) = test_conn(Gate::holding([HoldPoint::AckRequest]));
        conn.framing.set_frame_max(4096);
        feed(&conn, client, &bytes);
        // Also as payloads behind a valid frame header of every type.
        for kind in [1u8, 2, 3, 8] {
            let mut f = vec![kind, 0, 1];
            f.extend((bytes.len() as u32).to_be_bytes());
            f.extend(&bytes);
            f.push(FRAME_END);
            feed(&conn, client, &f);
            conn.on_broker_frame(&f);
        }
    }

    /// A valid conversation with random bytes changed, inserted or cut: never a panic.
    #[test]
    fn mutated_conversations_never_panic(
        edits in proptest::collection::vec(
            (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), 0u8..3),
            1..12,
        ),
        cut in proptest::prelude::any::<usize>(),
    ) {
        let (conn, _t) = test_conn(Gate::holding([HoldPoint::AckRequest]));
        let mut client_bytes = Vec::new();
        let mut broker_bytes = Vec::new();
        for (client, bytes) in conversation() {
            if client { client_bytes.extend(bytes) } else { broker_bytes.extend(bytes) }
        }
        for stream in [&mut client_bytes, &mut broker_bytes] {
            for &(at, value, op) in &edits {
                let i = at % (stream.len() + 1);
                match op {
                    0 if i < stream.len() => stream[i] = value,
                    1 => stream.insert(i, value),
                    _ if i < stream.len() => { stream.remove(i); }
                    _ => {}
                }
            }
        }
        let cut = cut % (broker_bytes.len() + 1);
        feed(&conn, false, &broker_bytes[..cut]);
        feed(&conn, true, &client_bytes);
        feed(&conn, false, &broker_bytes[cut..]);
    }
}

/// One broker frame through the broker→client side as `Responses` handles it: shifted, observed,
/// followed by an armed `redeliver`.
fn from_broker(conn: &Conn, frame: Vec<u8>) -> (Vec<u8>, Option<(Bytes, inject::Forged)>) {
    let frame = conn.to_client(Bytes::from(frame));
    conn.on_broker_frame(&frame);
    let copy = conn.capture(&frame);
    (frame.to_vec(), copy)
}

fn tag_of(frame: &[u8]) -> u64 {
    inject::frame_tag(frame)
        .expect("a frame with a delivery tag")
        .1
}

#[test]
fn a_redelivered_copy_takes_the_next_tag_and_the_broker_never_sees_it() {
    let (conn, timeline) = test_conn(Gate::open());
    let mut rx = timeline.subscribe();
    conn.on_client_frame(&consume(1, "c", false));
    let (answer, mut outcome) = tokio::sync::oneshot::channel();
    conn.arm_redeliver(answer).expect("armed");
    // Delivery 1, whole: the copy follows its body frame.
    assert!(from_broker(&conn, deliver(1, "c", 1, false)).1.is_none());
    assert!(from_broker(&conn, header(1, with_id("m-1"))).1.is_none());
    let body = encode(&AMQPFrame::Body(1, b"{}".to_vec()));
    let (_, copy) = from_broker(&conn, body.clone());
    let (copy, forged) = copy.expect("the copy once the delivery is whole");
    let frames = crate::proxy::split_frames(&conn.framing, &copy).0;
    assert_eq!(frames.len(), 3, "method, header, body");
    let expect = deliver(1, "c", 2, true);
    assert_eq!(&frames[0][..], &expect[..], "tag 2, redelivered");
    assert_eq!(&frames[2][..], &body[..]);
    assert!(
        outcome.try_recv().is_err(),
        "not answered before it is written"
    );
    conn.forged_written(forged);
    let sent = outcome.try_recv().expect("answered").expect("sent");
    assert!(sent.detail.contains("(ID m-1)"), "{}", sent.detail);
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e.event.clone());
    }
    let delivered: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::Delivered {
                id,
                offset,
                redelivered,
                ..
            } => Some((id, offset, redelivered)),
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered,
        [
            ("m-1".into(), Some(1), false),
            ("m-1".into(), Some(2), true)
        ]
    );
    // The broker's delivery 2 is the client's 3; nothing else is armed.
    let (shifted, copy) = from_broker(&conn, deliver(1, "c", 2, false));
    assert!(copy.is_none());
    assert_eq!(tag_of(&shifted), 3);
    // Acks go back to the broker's tags; the forged tag alone is absorbed.
    let to_broker = |tag, multiple| {
        conn.to_broker(Bytes::from(ack(1, tag, multiple)), multiple)
            .map(|f| tag_of(&f))
    };
    assert_eq!(to_broker(2, false), None, "the forged tag is absorbed");
    assert_eq!(to_broker(3, false), Some(2));
    assert_eq!(to_broker(1, false), Some(1));
    assert_eq!(
        to_broker(2, true),
        Some(1),
        "up to the forged: the broker's 1"
    );
    assert_eq!(to_broker(3, true), Some(2));
    assert_eq!(to_broker(0, true), Some(0), "all stays all");
    // Another channel keeps its tags.
    let other = conn.to_client(Bytes::from(deliver(2, "c", 1, false)));
    assert_eq!(tag_of(&other), 1);
}

#[test]
fn a_redeliver_given_up_by_the_nemesis_is_never_sent_late() {
    let (conn, _) = test_conn(Gate::open());
    conn.on_client_frame(&consume(1, "c", false));
    let (answer, outcome) = tokio::sync::oneshot::channel();
    conn.arm_redeliver(answer).expect("armed");
    drop(outcome);
    from_broker(&conn, deliver(1, "c", 1, false));
    from_broker(&conn, header(1, with_id("m-1")));
    let (_, copy) = from_broker(&conn, encode(&AMQPFrame::Body(1, b"{}".to_vec())));
    assert!(copy.is_none());
    let (shifted, _) = from_broker(&conn, deliver(1, "c", 2, false));
    assert_eq!(tag_of(&shifted), 2, "no tag was forged");
}

#[test]
fn nothing_is_injected_inside_a_content_and_a_cancel_goes_to_the_broker_first() {
    let mut content = inject::ContentFollower::default();
    assert!(content.between());
    content.follow(&deliver(1, "c", 1, false));
    assert!(!content.between(), "header next");
    content.follow(&header(1, with_id("m")));
    assert!(!content.between(), "2 body bytes next");
    content.follow(&encode(&AMQPFrame::Body(1, b"{}".to_vec())));
    assert!(content.between());

    let (conn, _) = test_conn(Gate::open());
    let (answer, _) = tokio::sync::oneshot::channel();
    assert!(conn.arm_cancel(answer).is_err(), "no consumer yet");
    conn.on_client_frame(&consume(1, "c", false));
    let (answer, mut outcome) = tokio::sync::oneshot::channel();
    conn.arm_cancel(answer).expect("armed");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let expect = method(
        1,
        basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: "c".into(),
            nowait: true,
        }),
    );
    let to_broker = rt.block_on(conn.due(inject::Side::Broker)).0;
    assert_eq!(&to_broker[..], &expect[..]);
    let early = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_millis(20),
            conn.due(inject::Side::Client),
        )
        .await
    });
    assert!(
        early.is_err(),
        "the consumer hears of it only once RabbitMQ has"
    );
    conn.injected_written(inject::Injected::Cancel(inject::CancelStage::ToBroker));
    let to_client = rt.block_on(conn.due(inject::Side::Client)).0;
    assert_eq!(&to_client[..], &expect[..]);
    assert!(
        outcome.try_recv().is_err(),
        "not answered before it is written"
    );
    conn.injected_written(inject::Injected::Cancel(inject::CancelStage::ToClient));
    let sent = outcome.try_recv().expect("answered").expect("sent");
    assert!(
        sent.detail.contains("consumer tag c, channel 1"),
        "{}",
        sent.detail
    );
    assert!(!conn.consumes(), "the cancelled consumer is forgotten");
}

#[test]
fn a_no_ack_consumers_copy_awaits_no_ack_but_names_its_id() {
    let (conn, _) = test_conn(Gate::open());
    conn.on_client_frame(&consume(1, "c", true));
    let (answer, mut outcome) = tokio::sync::oneshot::channel();
    conn.arm_redeliver(answer).expect("armed");
    from_broker(&conn, deliver(1, "c", 1, false));
    from_broker(&conn, header(1, with_id("m-1")));
    let (_, copy) = from_broker(&conn, encode(&AMQPFrame::Body(1, b"{}".to_vec())));
    let (_, forged) = copy.expect("copied");
    assert_eq!(
        conn.unacked(),
        0,
        "neither the original nor the copy awaits an ack"
    );
    conn.forged_written(forged);
    let sent = outcome.try_recv().expect("answered").expect("sent");
    assert!(sent.detail.contains("(ID m-1)"), "{}", sent.detail);
}

fn channel_method(ch: u16, m: channel::AMQPMethod) -> Vec<u8> {
    encode(&AMQPFrame::Method(ch, AMQPClass::Channel(m)))
}

fn channel_close(ch: u16, code: u16, text: &str, class_id: u16, method_id: u16) -> Vec<u8> {
    channel_method(
        ch,
        channel::AMQPMethod::Close(channel::Close {
            reply_code: code,
            reply_text: text.into(),
            class_id,
            method_id,
        }),
    )
}

fn drain(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Arc<crate::timeline::Stamped>>,
) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e.event.clone());
    }
    events
}

#[test]
fn a_double_ack_closes_the_channel_at_rabbitmq_first_then_tells_the_consumer_406() {
    use inject::{Injected, Side};
    let (conn, timeline) = test_conn(Gate::open());
    let mut rx = timeline.subscribe();
    conn.on_client_frame(&consume(1, "c", false));
    deliver_all(&conn, &["m-1", "m-2", "m-3"]);
    let (answer, _) = tokio::sync::oneshot::channel();
    assert!(conn.arm_double_ack(answer).is_err(), "no ack to double yet");
    let first = conn.on_client_frame(&ack(1, 1, false)).expect("an ack");
    conn.settle(&first);
    conn.ack_forwarded(&first);
    let (answer, mut outcome) = tokio::sync::oneshot::channel();
    conn.arm_double_ack(answer).expect("armed");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (to_broker, stage) = rt.block_on(conn.due(Side::Broker));
    assert_eq!(
        &to_broker[..],
        &channel_close(1, 200, "exactly: amqp double-ack fault", 0, 0)[..]
    );
    let early = rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_millis(20), conn.due(Side::Client)).await
    });
    assert!(
        early.is_err(),
        "the consumer hears of it once RabbitMQ closed it"
    );
    assert!(
        !conn.drop_client_frame(&ack(1, 2, false)),
        "not closing yet"
    );
    conn.injected_written(stage);
    drain(&mut rx);
    // From the close on, the consumer's frames on the channel never reach RabbitMQ.
    assert!(conn.drop_client_frame(&ack(1, 2, false)));
    assert!(
        !conn.drop_client_frame(&ack(2, 1, false)),
        "another channel"
    );
    let acks: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::Ack { ids, phase, .. } => Some((ids, phase)),
            _ => None,
        })
        .collect();
    assert_eq!(
        acks,
        [
            (vec!["m-2".to_string()], AckPhase::Request),
            (vec!["m-2".to_string()], AckPhase::Dropped)
        ]
    );
    // A delivery RabbitMQ sent before it read the close goes on, and is requeued too.
    let d = deliver(1, "c", 4, false);
    assert!(!conn.swallow_broker_frame(&d));
    conn.on_broker_frame(&d);
    conn.on_broker_frame(&header(1, with_id("m-4")));
    let close_ok = channel_method(1, channel::AMQPMethod::CloseOk(channel::CloseOk {}));
    assert!(conn.swallow_broker_frame(&close_ok), "RabbitMQ's close-ok");
    let closed: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::ChannelClosed {
                channel, requeued, ..
            } => Some((channel, requeued)),
            _ => None,
        })
        .collect();
    assert_eq!(
        closed,
        [(1, vec!["m-2".into(), "m-3".into(), "m-4".into()])]
    );
    let (to_client, stage) = rt.block_on(conn.due(Side::Client));
    assert_eq!(
        &to_client[..],
        &channel_close(
            1,
            406,
            "PRECONDITION_FAILED - unknown delivery tag 1",
            60,
            80
        )[..]
    );
    assert!(
        outcome.try_recv().is_err(),
        "not answered before it is written"
    );
    assert!(matches!(stage, Injected::Close(_)));
    conn.injected_written(stage);
    let sent = outcome.try_recv().expect("answered").expect("sent");
    assert!(
        sent.detail.starts_with(
            "sent channel.close 406 PRECONDITION_FAILED - unknown delivery tag 1 (channel 1)"
        ),
        "{}",
        sent.detail
    );
    assert!(
        sent.detail.contains("requeued the 3 deliveries"),
        "{}",
        sent.detail
    );
    // The consumer's close-ok is swallowed; then the channel is its own again.
    assert!(conn.drop_client_frame(&close_ok));
    let open = channel_method(1, channel::AMQPMethod::Open(channel::Open {}));
    assert!(!conn.drop_client_frame(&open));
}

#[test]
fn a_consumer_that_closes_the_channel_itself_meanwhile_is_answered_close_ok() {
    use inject::Side;
    let (conn, _) = test_conn(Gate::open());
    conn.on_client_frame(&consume(1, "c", false));
    deliver_all(&conn, &["m-1"]);
    let first = conn.on_client_frame(&ack(1, 1, false)).expect("an ack");
    conn.ack_forwarded(&first);
    let (answer, mut outcome) = tokio::sync::oneshot::channel();
    conn.arm_double_ack(answer).expect("armed");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (_, stage) = rt.block_on(conn.due(Side::Broker));
    conn.injected_written(stage);
    assert!(conn.drop_client_frame(&channel_close(1, 200, "bye", 0, 0)));
    let close_ok = channel_method(1, channel::AMQPMethod::CloseOk(channel::CloseOk {}));
    assert!(conn.swallow_broker_frame(&close_ok));
    let why = outcome.try_recv().expect("answered").expect_err("not sent");
    assert!(why.contains("closed channel 1 itself"), "{why}");
    let (to_client, stage) = rt.block_on(conn.due(Side::Client));
    assert_eq!(&to_client[..], &close_ok[..]);
    conn.injected_written(stage);
    let open = channel_method(1, channel::AMQPMethod::Open(channel::Open {}));
    assert!(!conn.drop_client_frame(&open), "the fault is over");
}

#[test]
fn a_channel_rabbitmq_closes_lists_what_it_requeued() {
    let (conn, timeline) = test_conn(Gate::open());
    let mut rx = timeline.subscribe();
    conn.on_client_frame(&consume(1, "c", false));
    deliver_all(&conn, &["m-1", "m-2"]);
    conn.on_broker_frame(&channel_close(
        1,
        406,
        "PRECONDITION_FAILED - unknown delivery tag 7",
        60,
        80,
    ));
    let closed: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::ChannelClosed {
                requeued, detail, ..
            } => Some((requeued, detail)),
            _ => None,
        })
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].0, ["m-1", "m-2"]);
    assert!(
        closed[0].1.contains("406 PRECONDITION_FAILED"),
        "{}",
        closed[0].1
    );
    assert_eq!(conn.unacked(), 0);
}

fn start_ok(capabilities: &[(&str, bool)]) -> Vec<u8> {
    let mut caps = FieldTable::default();
    for (k, v) in capabilities {
        caps.insert((*k).into(), AMQPValue::Boolean(*v));
    }
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    encode(&AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
    ))
}

fn publish(ch: u16) -> Vec<u8> {
    method(
        ch,
        basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "out".into(),
            mandatory: false,
            immediate: false,
        }),
    )
}

#[tokio::test]
async fn a_blocked_connection_holds_its_publishes_until_unblocked() {
    use inject::Side;
    let (conn, timeline) = test_conn(Gate::open());
    let mut rx = timeline.subscribe();
    conn.on_client_frame(&start_ok(&[("connection.blocked", false)]));
    let (answer, _) = tokio::sync::oneshot::channel();
    let length = std::time::Duration::from_millis(150);
    assert!(
        conn.arm_blocked(answer, length).is_err(),
        "RabbitMQ notifies only a client that announced the capability"
    );
    conn.on_client_frame(&start_ok(&[("connection.blocked", true)]));
    let (answer, mut outcome) = tokio::sync::oneshot::channel();
    conn.arm_blocked(answer, length).expect("armed");
    // Nothing is held before the consumer was told.
    conn.hold_if_publishing(&publish(1)).await;
    let (frame, stage) = conn.due(Side::Client).await;
    let expect = encode(&AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
            reason: "low on memory".into(),
        })),
    ));
    assert_eq!(&frame[..], &expect[..]);
    assert!(
        outcome.try_recv().is_err(),
        "not answered before it is written"
    );
    conn.injected_written(stage);
    let sent = outcome.try_recv().expect("answered").expect("sent");
    assert!(
        sent.detail.starts_with("sent connection.blocked"),
        "{}",
        sent.detail
    );
    let started = tokio::time::Instant::now();
    // Acks and other frames pass; a publish waits for connection.unblocked.
    conn.hold_if_publishing(&ack(1, 1, false)).await;
    let writer = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let (frame, stage) = conn.due(Side::Client).await;
            conn.injected_written(stage);
            frame
        })
    };
    conn.hold_if_publishing(&publish(1)).await;
    let held_for = started.elapsed();
    assert!(held_for >= length, "held {held_for:?}");
    let unblocked = writer.await.unwrap();
    let expect = encode(&AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
    ));
    assert_eq!(&unblocked[..], &expect[..]);
    let held: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::Held { at, held_us, .. } => Some((at, held_us)),
            _ => None,
        })
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, crate::timeline::HeldAt::Publish);
    assert!(held[0].1 >= 100_000, "{held:?}");
    // Unblocked: publishes pass again.
    conn.hold_if_publishing(&publish(1)).await;
}
