//! The AMQP-aware proxy: sits between each consumer instance and RabbitMQ (AMQP 0-9-1), turns
//! what it sees into timeline events (`delivered`, `ack`, `consumer_settings`), holds consumer
//! acknowledgements for the nemesis (`before: ack`), confirms when an ack reached the broker's
//! socket (`after: ack`), and applies network faults to one instance's connections.
//!
//! Framing is done here (the 8-byte protocol header at connection start, then frames of a
//! 7-byte header — type, channel, size — the payload and the frame-end octet 0xCE); only
//! method frames of interest and the content header that follows a `basic.deliver` /
//! `basic.get-ok` are decoded, with the amq-protocol crate, on a copy: every frame is forwarded
//! byte for byte as it came (the proxy never re-encodes AMQP). Body frames and heartbeats are
//! never looked into. A frame that cannot be decoded is forwarded and counted (a warning for the
//! first few); only bytes that cannot be framed at all (a wrong frame-end octet, a frame larger
//! than the negotiated `frame_max`) close that one connection.
//!
//! Per connection and channel the proxy keeps the outstanding deliveries (delivery tag → the
//! message ID from `message_id`, else the `exactly-id` header), so a client `basic.ack` /
//! `basic.nack` / `basic.reject` resolves to the IDs it covers (`multiple` covers every
//! outstanding tag up to its tag; tag 0 with `multiple` covers all). The broker's own
//! `basic.ack` / `basic.nack` are publisher confirms and are ignored (never consumer acks).
//!
//! Holding an ack stops the client→broker direction of that connection (AMQP frames are
//! ordered): the client's heartbeats wait behind it too, so a hold longer than the negotiated
//! heartbeat timeout lets RabbitMQ close the connection (a warning says so).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::protocol::{basic, channel, connection, parse_class, AMQPClass};
use amq_protocol::types::AMQPValue;
use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    bind_loopback, connect_upstream, serve_connection, spawn_accept_loop, ConnEnd, FrameHandler,
    Framing, Handled, PumpEnd, Registry, Tasks, MAX_FRAME,
};
use crate::error::InfraError;
use crate::gate::{Gate, HoldDecision, HoldPoint};
use crate::plan::Target;
use crate::proxy::control::NetworkControl;
use crate::timeline::{AckPhase, AckVerb, ClosedBy, Event, HeldAt, Timeline};

/// The frame-end octet every AMQP frame carries after its payload.
const FRAME_END: u8 = 0xCE;
/// Frame header (type, channel, size) + frame end.
const FRAME_OVERHEAD: usize = 8;
/// The largest frame accepted before `connection.tune-ok` fixes `frame_max` (the handshake's
/// frames are a few kilobytes; the spec's floor is 4096).
const PRE_TUNE_FRAME_MAX: usize = 1024 * 1024;
/// The spec's smallest `frame_max`.
const FRAME_MIN_SIZE: usize = 4096;
/// Frames the proxy could not read that get a warning of their own; later ones are counted.
const MAX_WARNINGS: u64 = 5;
/// A hold the nemesis never decides is released after this long, and the run fails.
const HOLD_CAP: Duration = Duration::from_secs(300);
/// Outstanding deliveries remembered per channel; beyond it the oldest are forgotten (a
/// consumer that never acks must not grow the proxy without bound).
const MAX_OUTSTANDING: usize = 1_000_000;
/// The header carrying the message ID (design §4).
const ID_HEADER: &str = "exactly-id";

// Class and method ids (AMQP 0-9-1).
const CONNECTION: u16 = 10;
const CONNECTION_TUNE_OK: u16 = 31;
const CHANNEL: u16 = 20;
const CHANNEL_OPEN: u16 = 10;
const CHANNEL_CLOSE: u16 = 40;
const CHANNEL_CLOSE_OK: u16 = 41;
const BASIC: u16 = 60;
const BASIC_QOS: u16 = 10;
const BASIC_CONSUME: u16 = 20;
const BASIC_CONSUME_OK: u16 = 21;
const BASIC_RETURN: u16 = 50;
const BASIC_DELIVER: u16 = 60;
const BASIC_GET: u16 = 70;
const BASIC_GET_OK: u16 = 71;
const BASIC_GET_EMPTY: u16 = 72;
const BASIC_ACK: u16 = 80;
const BASIC_REJECT: u16 = 90;
const BASIC_RECOVER_ASYNC: u16 = 100;
const BASIC_RECOVER_OK: u16 = 111;
const BASIC_NACK: u16 = 120;

/// AMQP 0-9-1 framing for one connection: the 8-byte protocol header ("AMQP" + 4 version
/// bytes), else a frame of 7 header bytes + payload + 0xCE, capped by the connection's
/// negotiated `frame_max` (1 MiB until `connection.tune-ok`).
pub struct AmqpFraming {
    max: AtomicUsize,
}

impl Default for AmqpFraming {
    fn default() -> Self {
        AmqpFraming {
            max: AtomicUsize::new(PRE_TUNE_FRAME_MAX),
        }
    }
}

impl AmqpFraming {
    /// Framing for a new connection (before `connection.tune-ok`).
    pub fn new() -> AmqpFraming {
        AmqpFraming::default()
    }

    /// Applies the `frame_max` the client agreed to in `connection.tune-ok` (0 = no limit,
    /// which the proxy caps at [`MAX_FRAME`]).
    pub fn set_frame_max(&self, frame_max: u32) {
        let cap = if frame_max == 0 {
            MAX_FRAME
        } else {
            (frame_max as usize).clamp(FRAME_MIN_SIZE, MAX_FRAME)
        };
        self.max.store(cap, Ordering::Relaxed);
    }

    /// The largest whole frame (header and frame end included) accepted now.
    pub fn frame_max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

impl Framing for AmqpFraming {
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first == b'A' {
            let n = buf.len().min(4);
            if buf[..n] != b"AMQP"[..n] {
                return Err("bytes starting with 'A' that are not an AMQP protocol header".into());
            }
            return Ok((buf.len() >= 8).then_some(8));
        }
        let Some(header) = buf.get(..7) else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        let total = size + FRAME_OVERHEAD;
        let max = self.frame_max();
        if total > max {
            return Err(format!(
                "frame of {total} bytes (type {first}) exceeds the frame max of {max} bytes"
            ));
        }
        if buf.len() < total {
            return Ok(None);
        }
        if buf[total - 1] != FRAME_END {
            return Err(format!(
                "frame (type {first}, {size} bytes) does not end with 0xCE: the stream is out \
                 of step"
            ));
        }
        Ok(Some(total))
    }

    fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        let header = buf.get(..7).filter(|_| buf[0] != b'A')?;
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        Some((size + FRAME_OVERHEAD).min(self.frame_max()))
    }
}

/// The upstream URL cut where the proxy's address goes in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlParts {
    /// `amqp://user:pass@`
    prefix: String,
    /// The broker's `host:port` to connect to.
    address: String,
    /// `/vhost?query`, possibly empty.
    suffix: String,
}

/// Splits `amqp://user:pass@host:port/vhost?query` into the parts around `host:port`.
fn split_url(url: &str) -> Result<UrlParts, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("it has no scheme; write amqp://user:password@host:5672/%2f")?;
    match scheme.to_ascii_lowercase().as_str() {
        "amqp" => {}
        "amqps" => return Err("amqps:// (TLS) is not supported by the proxy; use amqp://".into()),
        other => return Err(format!("unknown scheme {other}://; use amqp://")),
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, suffix) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let close = h.find(']').ok_or("unclosed [ in the host")?;
        let port = h[close + 1..].strip_prefix(':').unwrap_or("");
        (format!("[{}]", &h[..close]), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host
    };
    let port: u16 = if port.is_empty() {
        5672
    } else {
        port.parse().map_err(|_| format!("bad port {port:?}"))?
    };
    Ok(UrlParts {
        prefix: format!("{scheme}://{userinfo}"),
        address: format!("{host}:{port}"),
        suffix: suffix.to_string(),
    })
}

/// `url` with the password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{scheme}://{}:***{}", &authority[..colon], &rest[at..])
        }
        _ => url.to_string(),
    }
}

struct Shared {
    url: UrlParts,
    ports: Vec<u16>,
    timeline: Timeline,
    gate: Gate,
    incarnation_of: Arc<dyn Fn(u32) -> u32 + Send + Sync>,
    stop: CancellationToken,
    registry: Registry,
    tasks: Tasks,
    failure: Mutex<Option<String>>,
    unobserved: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poison only means a panic elsewhere mid-update of plain maps; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn warn(&self, message: String) {
        self.timeline.record(Event::Warning { message });
    }

    /// Records the first fatal problem (later ones only as warnings).
    fn fail(&self, message: String) {
        {
            let mut f = lock(&self.failure);
            if f.is_none() {
                *f = Some(message.clone());
            }
        }
        self.warn(format!("amqp proxy: {message}"));
    }

    /// Counts a frame the proxy forwarded without being able to read it; warns for the first
    /// few.
    fn unobserved(&self, what: String) {
        let n = self.unobserved.fetch_add(1, Ordering::Relaxed);
        if n < MAX_WARNINGS {
            self.warn(format!("amqp proxy: {what} (forwarded as is)"));
        }
        if n + 1 == MAX_WARNINGS {
            self.warn(
                "amqp proxy: further frames the proxy cannot read are counted, not reported \
                 one by one"
                    .into(),
            );
        }
    }
}

/// The AMQP proxy of one run. Cheap to clone.
#[derive(Clone)]
pub struct AmqpProxy {
    shared: Arc<Shared>,
}

impl AmqpProxy {
    /// One loopback listener per consumer instance in front of the RabbitMQ at `upstream_url`
    /// (`amqp://user:pass@host:port/vhost`). A connection is attributed to the instance whose
    /// listener it came in on; `incarnation_of(instance)` gives its incarnation (called at
    /// accept). Fails when the URL is not `amqp://` or the broker cannot be reached. Every task
    /// ends when `stop` is cancelled.
    pub async fn start(
        upstream_url: &str,
        instances: u32,
        timeline: Timeline,
        gate: Gate,
        incarnation_of: Arc<dyn Fn(u32) -> u32 + Send + Sync>,
        stop: CancellationToken,
    ) -> Result<AmqpProxy, InfraError> {
        let shown = redact(upstream_url);
        let url = split_url(upstream_url)
            .map_err(|e| InfraError::new(format!("amqp proxy: bad broker url {shown}: {e}")))?;
        // Fail early and clearly if the broker is not there.
        if let Err(e) = connect_upstream(&url.address).await {
            return Err(InfraError::new(format!(
                "amqp proxy: cannot reach RabbitMQ at {} ({e}); start it with \
                 `scripts/brokers start` or fix broker.url",
                url.address
            )));
        }
        let mut listeners = Vec::new();
        for _ in 0..instances {
            listeners.push(bind_loopback().map_err(|e| {
                InfraError::new(format!("amqp proxy: cannot listen on 127.0.0.1: {e}"))
            })?);
        }
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| InfraError::new(format!("amqp proxy: {e}")))?;
        let shared = Arc::new(Shared {
            url,
            ports,
            timeline,
            gate,
            incarnation_of,
            registry: Registry::new(instances, stop.clone()),
            stop,
            tasks: Tasks::default(),
            failure: Mutex::default(),
            unobserved: AtomicU64::new(0),
        });
        for (instance, listener) in listeners.into_iter().enumerate() {
            let s = shared.clone();
            spawn_accept_loop(
                &shared.tasks,
                listener,
                shared.stop.clone(),
                move |stream| serve(s.clone(), stream, instance as u32),
            );
        }
        Ok(AmqpProxy { shared })
    }

    /// The URL to hand to instance `instance`: the upstream URL with host:port replaced by the
    /// proxy's listener for that instance (credentials, vhost and query kept).
    pub fn url_for(&self, instance: u32) -> String {
        let port = self
            .shared
            .ports
            .get(instance as usize)
            .copied()
            .unwrap_or(0);
        format!(
            "{}127.0.0.1:{port}{}",
            self.shared.url.prefix, self.shared.url.suffix
        )
    }

    /// The first fatal proxy problem, if any: a fault that could not be applied to a frame it
    /// targets (an ack the proxy must hold but cannot decode, a hold never decided). The run
    /// ends with exit 4 on it.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// How many frames were forwarded without the proxy being able to read them (method or
    /// content-header frames that did not decode, deliveries without an ID).
    pub fn unobserved_frames(&self) -> u64 {
        self.shared.unobserved.load(Ordering::Relaxed)
    }

    /// Live proxied connections of `instance`.
    pub fn connections(&self, instance: u32) -> usize {
        self.shared.registry.connections(instance)
    }

    /// Bounded wait (~2 s) for the proxy's tasks after `stop` was cancelled; releases every
    /// held ack first.
    pub async fn join(self) {
        self.shared.gate.release_all();
        self.shared.tasks.join(Duration::from_secs(2)).await;
    }
}

impl NetworkControl for AmqpProxy {
    fn partition(&self, target: Target, length: Duration) -> Option<String> {
        self.shared.registry.partition(target, length)
    }

    fn latency(&self, target: Target, delay: Duration, length: Duration) -> Option<String> {
        self.shared.registry.latency(target, delay, length)
    }

    fn sever(&self, target: Target) -> Option<String> {
        self.shared.registry.sever(target)
    }
}

/// One accepted connection, from accept to close.
async fn serve(shared: Arc<Shared>, client: TcpStream, instance: u32) {
    let incarnation = (shared.incarnation_of)(instance);
    let upstream = match connect_upstream(&shared.url.address).await {
        Ok(s) => s,
        Err(e) => {
            shared.warn(format!(
                "amqp proxy: consumer[{instance}] connection closed: cannot reach RabbitMQ at \
                 {}: {e}",
                shared.url.address
            ));
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let guard = shared.registry.register(instance);
    let conn = Arc::new(Conn::new(shared.clone(), instance, incarnation));
    let mut requests = Requests {
        conn: conn.clone(),
        unwritten: None,
    };
    let mut responses = Responses(conn.clone());
    let end = serve_connection(
        client,
        upstream,
        &conn.framing,
        &mut requests,
        &mut responses,
        &guard.view,
    )
    .await;
    match &end {
        ConnEnd::Client(PumpEnd::Malformed(r)) => shared.warn(format!(
            "amqp proxy: closed a consumer[{instance}] connection: {r}"
        )),
        ConnEnd::Upstream(PumpEnd::Malformed(r)) => shared.warn(format!(
            "amqp proxy: closed a consumer[{instance}] connection (broker side): {r}"
        )),
        _ => {}
    }
    let (by, detail) = match end {
        ConnEnd::Stopped => return,
        ConnEnd::Severed => (ClosedBy::Severed, "reset by a `sever` fault".to_owned()),
        ConnEnd::Upstream(e) => (ClosedBy::Broker, describe_end(&e)),
        ConnEnd::Client(e) => (ClosedBy::Consumer, describe_end(&e)),
    };
    shared.timeline.record(Event::ConnectionClosed {
        instance,
        incarnation,
        by,
        unacked: conn.unacked(),
        detail,
    });
}

/// How one side of a connection ended, in words.
fn describe_end(end: &PumpEnd) -> String {
    match end {
        PumpEnd::Closed => "closed".into(),
        PumpEnd::ClosedMidFrame => "closed in the middle of a frame".into(),
        PumpEnd::Malformed(r) => format!("closed by the proxy: {r}"),
        PumpEnd::Io(e) => format!("socket error: {e}"),
    }
}

/// What follows a content-bearing method from the broker on one channel.
#[derive(Debug, Clone, Copy)]
enum Content {
    /// A message handed to the consumer (`basic.deliver`, `basic.get-ok`).
    Delivery {
        tag: u64,
        redelivered: bool,
        /// False for a no-ack consumer: the broker forgot it already, no ack will name it.
        tracked: bool,
    },
    /// Content the proxy does not follow (`basic.return`).
    Other,
}

/// One channel's consumer-side state.
#[derive(Debug, Default)]
struct ChannelState {
    /// Delivery tag → message ID (None when the message had none), not yet acknowledged.
    outstanding: BTreeMap<u64, Option<String>>,
    /// The content header expected next on this channel belongs to this.
    content: Option<Content>,
    /// The prefetch count of the last `basic.qos`.
    prefetch: Option<u16>,
    /// Consumer tag → no-ack.
    no_ack_of: HashMap<String, bool>,
    /// `basic.consume`s awaiting their `consume-ok` (the broker may name the tag): no-ack.
    consumes: VecDeque<bool>,
    /// `basic.get`s awaiting `get-ok` / `get-empty`: no-ack.
    gets: VecDeque<bool>,
    /// Whether the outstanding cap was hit already (one warning).
    capped: bool,
}

/// A consumer acknowledgement resolved to what it covers.
#[derive(Debug, Clone, PartialEq)]
struct AckRecord {
    channel: u16,
    delivery_tag: u64,
    multiple: bool,
    verb: AckVerb,
    requeue: bool,
    ids: Vec<String>,
    /// Tags it settles: every outstanding tag ≤ this (multiple) or this tag alone.
    upto: u64,
}

/// One proxied connection's protocol state, shared by its two directions.
struct Conn {
    shared: Arc<Shared>,
    instance: u32,
    incarnation: u32,
    framing: AmqpFraming,
    /// Negotiated heartbeat interval in seconds (0 = none).
    heartbeat: AtomicU32,
    channels: Mutex<HashMap<u16, ChannelState>>,
}

impl Conn {
    /// Deliveries not yet acknowledged, over every channel.
    fn unacked(&self) -> u64 {
        lock(&self.channels)
            .values()
            .map(|c| c.outstanding.len() as u64)
            .sum()
    }
}

/// Splits a whole frame into (type, channel, payload); None for the protocol header or bytes
/// too short to be a frame.
fn frame_parts(frame: &[u8]) -> Option<(u8, u16, &[u8])> {
    if frame.len() < FRAME_OVERHEAD || frame[0] == b'A' {
        return None;
    }
    Some((
        frame[0],
        u16::from_be_bytes([frame[1], frame[2]]),
        &frame[7..frame.len() - 1],
    ))
}

/// (class id, method id) of a method frame's payload.
fn method_ids(payload: &[u8]) -> Option<(u16, u16)> {
    let b = payload.get(..4)?;
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ))
}

fn method_name(class: u16, method: u16) -> String {
    match (class, method) {
        (BASIC, BASIC_DELIVER) => "basic.deliver".into(),
        (BASIC, BASIC_GET_OK) => "basic.get-ok".into(),
        (BASIC, BASIC_ACK) => "basic.ack".into(),
        (BASIC, BASIC_NACK) => "basic.nack".into(),
        (BASIC, BASIC_REJECT) => "basic.reject".into(),
        (BASIC, BASIC_QOS) => "basic.qos".into(),
        (BASIC, BASIC_CONSUME) => "basic.consume".into(),
        (BASIC, BASIC_CONSUME_OK) => "basic.consume-ok".into(),
        (CONNECTION, CONNECTION_TUNE_OK) => "connection.tune-ok".into(),
        _ => format!("method {class}.{method}"),
    }
}

/// The message ID of a delivery: `message_id`, else the `exactly-id` header.
fn message_id(properties: &amq_protocol::protocol::BasicProperties) -> Option<String> {
    if let Some(id) = properties.message_id() {
        if !id.as_str().is_empty() {
            return Some(id.as_str().to_string());
        }
    }
    match properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ID_HEADER))
    {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
        _ => None,
    }
}

impl Conn {
    fn new(shared: Arc<Shared>, instance: u32, incarnation: u32) -> Conn {
        Conn {
            shared,
            instance,
            incarnation,
            framing: AmqpFraming::new(),
            heartbeat: AtomicU32::new(0),
            channels: Mutex::default(),
        }
    }

    fn unreadable(&self, side: &str, class: u16, method: u16, channel: u16, e: impl ToString) {
        let e = e.to_string();
        let e: String = e.chars().take(200).collect();
        self.shared.unobserved(format!(
            "consumer[{}] {side} {} on channel {channel} could not be decoded: {e}",
            self.instance,
            method_name(class, method)
        ));
    }

    /// Observes one broker→client frame (never held: the caller forwards it). Records a
    /// `delivered` event when the content header of a delivery arrives, before it is forwarded.
    fn on_broker_frame(&self, frame: &[u8]) {
        let Some((kind, ch, payload)) = frame_parts(frame) else {
            return;
        };
        match kind {
            1 => self.on_broker_method(ch, payload),
            2 => self.on_broker_header(ch, payload),
            // Body frames and heartbeats: nothing to see.
            _ => {}
        }
    }

    fn on_broker_method(&self, ch: u16, payload: &[u8]) {
        let Some((class, method)) = method_ids(payload) else {
            self.shared.unobserved(format!(
                "consumer[{}] broker method frame on channel {ch} shorter than its ids",
                self.instance
            ));
            return;
        };
        let interesting = matches!(
            (class, method),
            (
                BASIC,
                BASIC_DELIVER
                    | BASIC_GET_OK
                    | BASIC_GET_EMPTY
                    | BASIC_RETURN
                    | BASIC_CONSUME_OK
                    | BASIC_RECOVER_OK
            ) | (CHANNEL, CHANNEL_CLOSE | CHANNEL_CLOSE_OK)
        );
        if !interesting {
            // Publisher confirms (basic.ack / basic.nack from the broker) end here too.
            return;
        }
        let parsed = match parse_class(payload) {
            Ok((_, m)) => m,
            Err(e) => {
                if matches!((class, method), (BASIC, BASIC_DELIVER | BASIC_GET_OK)) {
                    // Its content header is not a delivery the proxy can attribute.
                    lock(&self.channels).entry(ch).or_default().content = Some(Content::Other);
                }
                self.unreadable("broker", class, method, ch, e);
                return;
            }
        };
        let mut channels = lock(&self.channels);
        match parsed {
            AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) => {
                let state = channels.entry(ch).or_default();
                let no_ack = state
                    .no_ack_of
                    .get(d.consumer_tag.as_str())
                    .copied()
                    .unwrap_or(false);
                state.content = Some(Content::Delivery {
                    tag: d.delivery_tag,
                    redelivered: d.redelivered,
                    tracked: !no_ack,
                });
            }
            AMQPClass::Basic(basic::AMQPMethod::GetOk(g)) => {
                let state = channels.entry(ch).or_default();
                let no_ack = state.gets.pop_front().unwrap_or(false);
                state.content = Some(Content::Delivery {
                    tag: g.delivery_tag,
                    redelivered: g.redelivered,
                    tracked: !no_ack,
                });
            }
            AMQPClass::Basic(basic::AMQPMethod::GetEmpty(_)) => {
                channels.entry(ch).or_default().gets.pop_front();
            }
            AMQPClass::Basic(basic::AMQPMethod::Return(_)) => {
                channels.entry(ch).or_default().content = Some(Content::Other);
            }
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)) => {
                let state = channels.entry(ch).or_default();
                let no_ack = state.consumes.pop_front().unwrap_or(false);
                state
                    .no_ack_of
                    .insert(ok.consumer_tag.as_str().to_string(), no_ack);
            }
            AMQPClass::Basic(basic::AMQPMethod::RecoverOk(_)) => {
                // Every unacknowledged message goes back: the old tags are void.
                channels.entry(ch).or_default().outstanding.clear();
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(_) | channel::AMQPMethod::CloseOk(_)) => {
                channels.remove(&ch);
            }
            _ => {}
        }
    }

    fn on_broker_header(&self, ch: u16, payload: &[u8]) {
        let content = lock(&self.channels)
            .get_mut(&ch)
            .and_then(|s| s.content.take());
        let Some(Content::Delivery {
            tag,
            redelivered,
            tracked,
        }) = content
        else {
            return;
        };
        let id = match parse_content_header(payload) {
            Ok((_, header)) => message_id(&header.properties),
            Err(e) => {
                self.unreadable(
                    "broker",
                    BASIC,
                    BASIC_DELIVER,
                    ch,
                    format!("content header: {e}"),
                );
                None
            }
        };
        if tracked {
            let mut channels = lock(&self.channels);
            let state = channels.entry(ch).or_default();
            state.outstanding.insert(tag, id.clone());
            if state.outstanding.len() > MAX_OUTSTANDING {
                state.outstanding.pop_first();
                if !state.capped {
                    state.capped = true;
                    drop(channels);
                    self.shared.warn(format!(
                        "amqp proxy: consumer[{}] holds more than {MAX_OUTSTANDING} \
                         unacknowledged deliveries on channel {ch}: the oldest are forgotten \
                         (acks naming them resolve to no ID)",
                        self.instance
                    ));
                }
            }
        }
        match id {
            Some(id) => {
                self.shared.timeline.record(Event::Delivered {
                    id,
                    instance: self.instance,
                    incarnation: self.incarnation,
                    partition: None,
                    offset: i64::try_from(tag).ok(),
                    redelivered,
                });
            }
            None => self.shared.unobserved(format!(
                "consumer[{}] delivery {tag} on channel {ch} carries no message_id and no \
                 {ID_HEADER} header",
                self.instance
            )),
        }
    }

    /// Observes one client→broker frame: consumer settings, the negotiated frame max and
    /// heartbeat, channel resets; returns the acknowledgement it carries, resolved to its IDs
    /// (the caller records, holds and forwards it).
    fn on_client_frame(&self, frame: &[u8]) -> Option<AckRecord> {
        let (kind, ch, payload) = frame_parts(frame)?;
        if kind != 1 {
            return None;
        }
        let (class, method) = method_ids(payload)?;
        let is_ack = matches!(
            (class, method),
            (BASIC, BASIC_ACK | BASIC_NACK | BASIC_REJECT)
        );
        let interesting = is_ack
            || matches!(
                (class, method),
                (
                    BASIC,
                    BASIC_QOS | BASIC_CONSUME | BASIC_GET | BASIC_RECOVER_ASYNC
                ) | (CHANNEL, CHANNEL_OPEN | CHANNEL_CLOSE | CHANNEL_CLOSE_OK)
                    | (CONNECTION, CONNECTION_TUNE_OK)
            );
        if !interesting {
            return None;
        }
        let parsed = match parse_class(payload) {
            Ok((_, m)) => m,
            Err(e) => {
                if is_ack && self.shared.gate.holds(HoldPoint::AckRequest) {
                    self.shared.fail(format!(
                        "cannot decode a {} of consumer[{}] to hold it: {e}",
                        method_name(class, method),
                        self.instance
                    ));
                } else {
                    self.unreadable("client", class, method, ch, e);
                }
                return None;
            }
        };
        let (tag, multiple, verb, requeue) = match parsed {
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                (a.delivery_tag, a.multiple, AckVerb::Ack, false)
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                (n.delivery_tag, n.multiple, AckVerb::Nack, n.requeue)
            }
            AMQPClass::Basic(basic::AMQPMethod::Reject(r)) => {
                (r.delivery_tag, false, AckVerb::Reject, r.requeue)
            }
            other => {
                self.on_client_setting(ch, other);
                return None;
            }
        };
        let channels = lock(&self.channels);
        let empty = BTreeMap::new();
        let outstanding = channels.get(&ch).map_or(&empty, |s| &s.outstanding);
        let (ids, upto) = if multiple {
            let upto = if tag == 0 {
                outstanding.last_key_value().map_or(0, |(t, _)| *t)
            } else {
                tag
            };
            let ids = outstanding
                .range(..=upto)
                .filter_map(|(_, id)| id.clone())
                .collect();
            (ids, upto)
        } else {
            (
                outstanding
                    .get(&tag)
                    .cloned()
                    .flatten()
                    .into_iter()
                    .collect(),
                tag,
            )
        };
        Some(AckRecord {
            channel: ch,
            delivery_tag: tag,
            multiple,
            verb,
            requeue,
            ids,
            upto,
        })
    }

    fn on_client_setting(&self, ch: u16, method: AMQPClass) {
        let mut channels = lock(&self.channels);
        match method {
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(t)) => {
                self.framing.set_frame_max(t.frame_max);
                self.heartbeat
                    .store(u32::from(t.heartbeat), Ordering::Relaxed);
            }
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                channels.insert(ch, ChannelState::default());
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(_) | channel::AMQPMethod::CloseOk(_)) => {
                channels.remove(&ch);
            }
            AMQPClass::Basic(basic::AMQPMethod::Qos(q)) => {
                channels.entry(ch).or_default().prefetch = Some(q.prefetch_count);
            }
            AMQPClass::Basic(basic::AMQPMethod::Get(g)) => {
                channels.entry(ch).or_default().gets.push_back(g.no_ack);
            }
            AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(_)) => {
                channels.entry(ch).or_default().outstanding.clear();
            }
            AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => {
                let state = channels.entry(ch).or_default();
                if !c.consumer_tag.as_str().is_empty() {
                    state
                        .no_ack_of
                        .insert(c.consumer_tag.as_str().to_string(), c.no_ack);
                }
                if !c.nowait {
                    state.consumes.push_back(c.no_ack);
                }
                let prefetch = state.prefetch;
                drop(channels);
                self.shared.timeline.record(Event::ConsumerSettings {
                    instance: self.instance,
                    incarnation: self.incarnation,
                    no_ack: c.no_ack,
                    prefetch,
                });
            }
            _ => {}
        }
    }

    /// Forgets the deliveries an ack settles (it is on its way to the broker).
    fn settle(&self, ack: &AckRecord) {
        let mut channels = lock(&self.channels);
        let Some(state) = channels.get_mut(&ack.channel) else {
            return;
        };
        if ack.multiple {
            let rest = state.outstanding.split_off(&(ack.upto.saturating_add(1)));
            if ack.upto == u64::MAX {
                state.outstanding.clear();
            } else {
                state.outstanding = rest;
            }
        } else {
            state.outstanding.remove(&ack.upto);
        }
    }

    fn ack_event(&self, ack: &AckRecord, phase: AckPhase) -> u64 {
        self.shared
            .timeline
            .record(Event::Ack {
                instance: self.instance,
                incarnation: self.incarnation,
                channel: ack.channel,
                delivery_tag: ack.delivery_tag,
                multiple: ack.multiple,
                verb: ack.verb,
                requeue: ack.requeue,
                ids: ack.ids.clone(),
                phase,
            })
            .seq
    }

    /// Waits for the nemesis's verdict on ack event `seq`, measuring the hold and warning when
    /// it nears the heartbeat timeout.
    async fn hold(&self, seq: u64) -> HoldDecision {
        let start = Instant::now();
        let heartbeat = self.heartbeat.load(Ordering::Relaxed);
        let warn_after = Duration::from_secs(u64::from(heartbeat.max(1)));
        let wait = self.shared.gate.wait(HoldPoint::AckRequest, seq);
        tokio::pin!(wait);
        let mut warned = heartbeat == 0;
        let verdict = loop {
            tokio::select! {
                v = &mut wait => break v,
                _ = tokio::time::sleep_until(start + warn_after), if !warned => {
                    warned = true;
                    self.shared.warn(format!(
                        "amqp proxy: an ack of consumer[{}] held for {heartbeat}s: every later \
                         frame of that connection (heartbeats too) waits behind it, and \
                         RabbitMQ closes a connection silent for two heartbeat intervals",
                        self.instance
                    ));
                }
                _ = tokio::time::sleep_until(start + HOLD_CAP) => {
                    self.shared.fail(format!(
                        "an ack of consumer[{}] (event {seq}) held for {}s without a verdict; \
                         released",
                        self.instance,
                        HOLD_CAP.as_secs()
                    ));
                    break HoldDecision::Answer;
                }
            }
        };
        let held = start.elapsed();
        self.shared.timeline.record(Event::Held {
            instance: self.instance,
            incarnation: self.incarnation,
            at: HeldAt::AckRequest,
            event: seq,
            held_us: held.as_micros() as u64,
            released: verdict == HoldDecision::Answer,
        });
        verdict
    }
}

/// The client→broker direction: acks are recorded, held, and confirmed once written.
struct Requests {
    conn: Arc<Conn>,
    /// An ack recorded as a request and not yet written to the broker: if the connection
    /// ends first, it was never forwarded (recorded as dropped when this is dropped).
    unwritten: Option<AckRecord>,
}

impl FrameHandler for Requests {
    async fn on_frame(&mut self, frame: Bytes) -> Handled {
        let Some(ack) = self.conn.on_client_frame(&frame) else {
            return Handled::Forward(frame);
        };
        let seq = self.conn.ack_event(&ack, AckPhase::Request);
        self.unwritten = Some(ack);
        if self.conn.shared.gate.holds(HoldPoint::AckRequest)
            && self.conn.hold(seq).await == HoldDecision::Withhold
        {
            if let Some(ack) = self.unwritten.take() {
                self.conn.ack_event(&ack, AckPhase::Dropped);
            }
            return Handled::Drop;
        }
        if let Some(ack) = &self.unwritten {
            self.conn.settle(ack);
        }
        Handled::Forward(frame)
    }

    fn needs_written(&self) -> bool {
        self.unwritten.is_some()
    }

    fn on_written(&mut self) {
        if let Some(ack) = self.unwritten.take() {
            self.conn.ack_event(&ack, AckPhase::Forwarded);
        }
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        if let Some(ack) = self.unwritten.take() {
            self.conn.ack_event(&ack, AckPhase::Dropped);
        }
    }
}

/// The broker→client direction: observed, always forwarded at once.
struct Responses(Arc<Conn>);

impl FrameHandler for Responses {
    fn on_frame(&mut self, frame: Bytes) -> impl std::future::Future<Output = Handled> + Send {
        self.0.on_broker_frame(&frame);
        std::future::ready(Handled::Forward(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
