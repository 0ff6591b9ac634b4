//! The Kafka-aware proxy: sits between each consumer instance and the Kafka cluster, turns what
//! it sees into timeline events (`commit`, `rebalance`, `delivered`), holds OffsetCommit
//! requests and responses for the nemesis, and applies network faults to one instance's
//! connections.
//!
//! Wire formats come from the kafka-protocol crate; this file only cuts frames (the 4-byte
//! length prefix) and reads the request header's api key, version and correlation id. Each
//! connection keeps a map correlation id → (api key, version, what the request said), so the
//! response can be decoded. Frames the proxy need not change are forwarded byte for byte; it
//! re-encodes only the responses that carry broker addresses (ApiVersions, to cap the versions
//! to those the crate decodes; Metadata; FindCoordinator; DescribeCluster; Fetch and Produce
//! when they carry KIP-951 `node_endpoints`).
//!
//! Deliveries: a Fetch response is forwarded first and its records are read right after it is
//! on the client's socket (before the proxy reads anything more from the broker), one
//! `delivered` event per record handed to the application, recorded a partition at a time
//! ([`Timeline::record_many`]). Uncompressed v2 batches are walked in place by
//! [`scan_plain_batch`] (the crate still checks each batch header and CRC); every other batch is
//! decoded by the crate. This keeps the proxy's cost off the consumer's path (issues 4 and 6);
//! [`KafkaProxy::set_deliveries_before_forwarding`] restores "events before forwarding".
//!
//! Keeping the client on the proxy: every instance has its own loopback listener for the
//! bootstrap and one per broker node id; a node's listeners are opened as soon as a response
//! names the node id, before that response is forwarded, so a client can never learn an
//! address the proxy does not listen on yet. A response whose addresses cannot be rewritten is
//! never forwarded: the connection closes and [`KafkaProxy::failure`] says why (exit 4).
//!
//! Known limit: kafka-protocol preallocates arrays from their length prefix, so a request
//! crafted to claim billions of elements can make the allocator abort the process. The proxy
//! decodes only the requests a consumer sends in a group (OffsetCommit, Fetch, group
//! membership) and only on loopback ports handed to the consumer under test.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, ConsumerProtocolAssignment, DescribeClusterRequest,
    DescribeClusterResponse, FetchRequest, FetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    LeaveGroupRequest, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes, VersionRange};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
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
use crate::timeline::{
    CommitPhase, CommittedOffset, DeliveredIds, Event, HeldAt, RebalanceKind, Timeline,
};

/// Kafka's default `request.timeout.ms`: a hold longer than 80% of it gets a warning, since
/// every later response on that connection waits behind the held frame.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A hold the nemesis never decides is released after this long, and the run fails.
const HOLD_CAP: Duration = Duration::from_secs(300);
/// Requests awaiting a response on one connection; more means a broken or hostile client.
const MAX_IN_FLIGHT: usize = 100_000;
/// The header carrying the message ID (design §4).
const ID_HEADER: &str = "exactly-id";

/// Kafka framing: a 4-byte big-endian length, then that many bytes.
pub struct KafkaFraming;

impl Framing for KafkaFraming {
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len < 0 {
            return Err(format!("negative frame length {len}"));
        }
        let len = len as usize;
        if len > MAX_FRAME {
            return Err(format!(
                "frame of {len} bytes exceeds the {MAX_FRAME}-byte cap"
            ));
        }
        Ok((buf.len() >= 4 + len).then_some(4 + len))
    }

    fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        let prefix = buf.get(..4)?;
        let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .map(|l| 4 + l)
    }
}

/// The versions of `key` the proxy can decode and re-encode: the broker-advertised range is
/// capped to this in every ApiVersions response.
pub fn decodable_versions(key: ApiKey) -> VersionRange {
    fn both<Q: Message, R: Message>() -> VersionRange {
        Q::VERSIONS.intersect(&R::VERSIONS)
    }
    let range = match key {
        ApiKey::ApiVersions => both::<ApiVersionsRequest, ApiVersionsResponse>(),
        ApiKey::Metadata => both::<MetadataRequest, MetadataResponse>(),
        ApiKey::FindCoordinator => both::<FindCoordinatorRequest, FindCoordinatorResponse>(),
        ApiKey::DescribeCluster => both::<DescribeClusterRequest, DescribeClusterResponse>(),
        ApiKey::Fetch => both::<FetchRequest, FetchResponse>(),
        ApiKey::Produce => both::<ProduceRequest, ProduceResponse>(),
        ApiKey::OffsetCommit => both::<OffsetCommitRequest, OffsetCommitResponse>(),
        ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
        ApiKey::SyncGroup => both::<SyncGroupRequest, SyncGroupResponse>(),
        ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
        ApiKey::Heartbeat => both::<HeartbeatRequest, HeartbeatResponse>(),
        ApiKey::ConsumerGroupHeartbeat => {
            both::<ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse>()
        }
        _ => key.valid_versions(),
    };
    range.intersect(&key.valid_versions())
}

/// Where a listener's connections go.
#[derive(Debug, Clone, Copy)]
enum Route {
    Bootstrap,
    Node(i32),
}

/// What a request said that its response needs.
#[derive(Debug)]
enum Ctx {
    None,
    Commit(CommitInfo),
    Group {
        group: String,
        member: String,
        generation: Option<i32>,
    },
    Fetch {
        read_committed: bool,
    },
}

#[derive(Debug, Clone)]
struct CommitInfo {
    group: String,
    member: String,
    generation: i32,
    offsets: Vec<CommittedOffset>,
}

#[derive(Debug)]
struct Pending {
    key: i16,
    version: i16,
    ctx: Ctx,
}

struct Shared {
    topic: String,
    bootstrap: Vec<String>,
    bootstrap_ports: Vec<u16>,
    /// Node id → the listener port of each instance for it.
    node_ports: Mutex<HashMap<i32, Vec<u16>>>,
    /// Node id → its real address.
    nodes: Mutex<HashMap<i32, String>>,
    /// Topic id → name, from Metadata responses.
    topic_ids: Mutex<HashMap<[u8; 16], String>>,
    timeline: Timeline,
    gate: Gate,
    incarnation_of: Arc<dyn Fn(u32) -> u32 + Send + Sync>,
    stop: CancellationToken,
    registry: Registry,
    tasks: Tasks,
    failure: Mutex<Option<String>>,
    /// Record a Fetch response's deliveries before forwarding it (else right after).
    deliveries_first: AtomicBool,
    /// Read Fetch responses' records at all (off only in the benchmark's floor measurement).
    read_deliveries: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poison only means a panic elsewhere mid-update of plain maps; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Kafka proxy of one run. Cheap to clone.
#[derive(Clone)]
pub struct KafkaProxy {
    shared: Arc<Shared>,
}

impl KafkaProxy {
    /// Starts the proxy in front of the Kafka cluster at `upstream_bootstrap` for `instances`
    /// consumer instances. Each instance gets its own set of loopback listeners (one for the
    /// bootstrap + one per broker node id, opened before any client can learn the address), so
    /// every connection is attributed to its instance by the port it came in on.
    /// `incarnation_of(instance)` gives the instance's current incarnation (called at accept).
    /// `topic` is the topic under test (for `delivered` and `assign` events).
    pub async fn start(
        upstream_bootstrap: &str,
        topic: &str,
        instances: u32,
        timeline: Timeline,
        gate: Gate,
        incarnation_of: Arc<dyn Fn(u32) -> u32 + Send + Sync>,
        stop: CancellationToken,
    ) -> Result<KafkaProxy, InfraError> {
        let bootstrap: Vec<String> = upstream_bootstrap
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if bootstrap.is_empty() {
            return Err(InfraError::new(
                "kafka proxy: the bootstrap address is empty",
            ));
        }
        // Fail early and clearly if the cluster is not there.
        if connect_any(&bootstrap).await.is_err() {
            return Err(InfraError::new(format!(
                "kafka proxy: cannot reach the Kafka cluster at {upstream_bootstrap} \
                 (is it running? for tests: scripts/brokers start)"
            )));
        }
        let mut listeners = Vec::new();
        for _ in 0..instances {
            listeners.push(bind_loopback().map_err(|e| {
                InfraError::new(format!("kafka proxy: cannot listen on 127.0.0.1: {e}"))
            })?);
        }
        let bootstrap_ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| InfraError::new(format!("kafka proxy: {e}")))?;
        let shared = Arc::new(Shared {
            topic: topic.to_string(),
            bootstrap,
            bootstrap_ports,
            node_ports: Mutex::default(),
            nodes: Mutex::default(),
            topic_ids: Mutex::default(),
            timeline,
            gate,
            incarnation_of,
            registry: Registry::new(instances, stop.clone()),
            stop,
            tasks: Tasks::default(),
            failure: Mutex::default(),
            deliveries_first: AtomicBool::new(false),
            read_deliveries: AtomicBool::new(true),
        });
        for (instance, listener) in listeners.into_iter().enumerate() {
            Shared::spawn_listener(&shared, listener, instance as u32, Route::Bootstrap);
        }
        Ok(KafkaProxy { shared })
    }

    /// The bootstrap address to hand to instance `i` (e.g. "127.0.0.1:40123").
    pub fn bootstrap_for(&self, instance: u32) -> String {
        let port = self
            .shared
            .bootstrap_ports
            .get(instance as usize)
            .copied()
            .unwrap_or(0);
        format!("127.0.0.1:{port}")
    }

    /// The first fatal proxy problem, if any: a fault that could not be applied to a frame it
    /// targets (decode/re-encode failure), or a client that bypassed the proxy (connected to a
    /// real broker address the proxy failed to rewrite). The run ends with exit 4 on it.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// The real broker addresses the proxy has seen (bootstrap and every node): a consumer
    /// socket connected to one of these bypassed the proxy (see [`direct_connections`]).
    pub fn broker_addresses(&self) -> Vec<String> {
        let mut addrs: HashSet<String> = self.shared.bootstrap.iter().cloned().collect();
        addrs.extend(lock(&self.shared.nodes).values().cloned());
        let mut v: Vec<String> = addrs.into_iter().collect();
        v.sort();
        v
    }

    /// When to record a Fetch response's `delivered` events. By default (`false`) the response
    /// is forwarded first and its records read right after it is on the client's socket, before
    /// the proxy reads anything more from the broker: the client never waits for the proxy to
    /// read records, and an event means the client has the bytes. `true` records them before
    /// forwarding (the client waits for every record to be read): for a plan whose faults must
    /// land before the consumer can see the records (an `after: deliver` trigger), at a cost
    /// in throughput. Applies to responses handled from now on.
    pub fn set_deliveries_before_forwarding(&self, first: bool) {
        self.shared.deliveries_first.store(first, Ordering::Relaxed);
    }

    /// Whether Fetch responses' records are read for `delivered_batch` events (default true).
    /// Off, the proxy still decodes every response and rewrites addresses but records no
    /// delivery: a run would have no delivery evidence. It exists for the benchmark, to
    /// measure what forwarding alone costs next to forwarding and reading every record.
    pub fn set_read_deliveries(&self, read: bool) {
        self.shared.read_deliveries.store(read, Ordering::Relaxed);
    }

    /// Live proxied connections of `instance`.
    pub fn connections(&self, instance: u32) -> usize {
        self.shared.registry.connections(instance)
    }

    /// Waits (bounded, ~2 s) for every proxy task to end after `stop` was cancelled.
    pub async fn join(self) {
        self.shared.gate.release_all();
        self.shared.tasks.join(Duration::from_secs(2)).await;
    }
}

impl NetworkControl for KafkaProxy {
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

async fn connect_any(addrs: &[String]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("no address");
    for a in addrs {
        match connect_upstream(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Shared {
    fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    fn spawn_listener(
        shared: &Arc<Shared>,
        listener: tokio::net::TcpListener,
        instance: u32,
        route: Route,
    ) {
        let s = shared.clone();
        spawn_accept_loop(
            &shared.tasks,
            listener,
            shared.stop.clone(),
            move |stream| serve(s.clone(), stream, instance, route),
        );
    }

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
        self.warn(format!("kafka proxy: {message}"));
    }

    /// The port of `instance`'s listener for node `node`, opening one listener per instance
    /// for that node first if the node is new.
    fn node_port(self: &Arc<Shared>, node: i32, instance: u32) -> Result<u16, String> {
        let mut ports = lock(&self.node_ports);
        if let Some(p) = ports.get(&node) {
            return p
                .get(instance as usize)
                .copied()
                .ok_or_else(|| format!("no listener for instance {instance}"));
        }
        let mut opened = Vec::new();
        for i in 0..self.bootstrap_ports.len() as u32 {
            let l = bind_loopback().map_err(|e| format!("cannot listen for node {node}: {e}"))?;
            let port = l.local_addr().map_err(|e| e.to_string())?.port();
            Shared::spawn_listener(self, l, i, Route::Node(node));
            opened.push(port);
        }
        let port = opened.get(instance as usize).copied();
        ports.insert(node, opened);
        port.ok_or_else(|| format!("no listener for instance {instance}"))
    }

    /// Asks the cluster for every topic's id (a Metadata request on a connection of the
    /// proxy's own, bounded by a deadline).
    async fn learn_topic_ids(&self) -> Result<(), String> {
        const VERSION: i16 = 12;
        let work = async {
            let mut stream = connect_any(&self.bootstrap)
                .await
                .map_err(|e| e.to_string())?;
            let header = RequestHeader::default()
                .with_request_api_key(ApiKey::Metadata as i16)
                .with_request_api_version(VERSION)
                .with_correlation_id(1)
                .with_client_id(Some(StrBytes::from_static_str("exactly-proxy")));
            let body = MetadataRequest::default().with_topics(None);
            let mut out = BytesMut::new();
            out.put_i32(0);
            header
                .encode(&mut out, ApiKey::Metadata.request_header_version(VERSION))
                .map_err(|e| e.to_string())?;
            body.encode(&mut out, VERSION).map_err(|e| e.to_string())?;
            let len = (out.len() - 4) as i32;
            out[..4].copy_from_slice(&len.to_be_bytes());
            use tokio::io::AsyncWriteExt;
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            let (r, _w) = stream.into_split();
            let mut reader = super::FrameReader::new(r);
            let frame = reader
                .read_frame(&KafkaFraming)
                .await
                .map_err(|e| format!("{e:?}"))?
                .ok_or("the broker closed the connection")?;
            let (_, resp) = decode_response::<MetadataResponse>(&frame, ApiKey::Metadata, VERSION)?;
            let mut ids = lock(&self.topic_ids);
            for t in &resp.topics {
                if let Some(name) = &t.name {
                    if !t.topic_id.is_nil() {
                        ids.insert(*t.topic_id.as_bytes(), name.0.to_string());
                    }
                }
            }
            Ok::<(), String>(())
        };
        tokio::time::timeout(Duration::from_secs(5), work)
            .await
            .map_err(|_| "the Metadata request timed out".to_string())?
    }

    fn topic_name(&self, name: &str, id: &[u8; 16]) -> String {
        if !name.is_empty() {
            return name.to_string();
        }
        lock(&self.topic_ids)
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("topic-id:{}", hex(id)))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One accepted connection, from accept to close.
async fn serve(shared: Arc<Shared>, client: TcpStream, instance: u32, route: Route) {
    let incarnation = (shared.incarnation_of)(instance);
    let target = match route {
        Route::Bootstrap => connect_any(&shared.bootstrap).await,
        Route::Node(node) => {
            let addr = lock(&shared.nodes).get(&node).cloned();
            match addr {
                Some(a) => connect_upstream(&a).await,
                None => Err(std::io::Error::other(format!("node {node} is unknown"))),
            }
        }
    };
    let upstream = match target {
        Ok(s) => s,
        Err(e) => {
            shared.warn(format!(
                "kafka proxy: consumer[{instance}] connection ({route:?}) closed: cannot reach \
                 the broker: {e}"
            ));
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let guard = shared.registry.register(instance);
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        instance,
        incarnation,
        inflight: Mutex::default(),
        positions: Mutex::default(),
    });
    let mut requests = Requests(conn.clone());
    let mut responses = Responses {
        conn,
        unread: Vec::new(),
    };
    let end = serve_connection(
        client,
        upstream,
        &KafkaFraming,
        &mut requests,
        &mut responses,
        &guard.view,
    )
    .await;
    match end {
        ConnEnd::Client(PumpEnd::Malformed(r)) => shared.warn(format!(
            "kafka proxy: closed a consumer[{instance}] connection: {r}"
        )),
        ConnEnd::Upstream(PumpEnd::Malformed(r)) => shared.warn(format!(
            "kafka proxy: closed a consumer[{instance}] connection (broker side): {r}"
        )),
        _ => {}
    }
}

/// One proxied connection's protocol state, shared by its two directions.
struct Conn {
    shared: Arc<Shared>,
    instance: u32,
    incarnation: u32,
    inflight: Mutex<HashMap<i32, Pending>>,
    /// (topic, partition) → the fetch offset last requested on this connection (fetch
    /// sessions omit unchanged partitions).
    positions: Mutex<HashMap<(String, i32), i64>>,
}

struct Requests(Arc<Conn>);

/// The broker→client direction. A Fetch response is forwarded first and its records read
/// after (in [`FrameHandler::on_written`]), so the client never waits for the proxy to read
/// them; see [`KafkaProxy::set_deliveries_before_forwarding`] for the other order.
struct Responses {
    conn: Arc<Conn>,
    /// The records of the response being written, read once it is on the client's socket.
    unread: Vec<FetchedPartition>,
}

/// One partition's records in a Fetch response, and what reading their deliveries needs.
struct FetchedPartition {
    topic: String,
    partition: i32,
    /// A handle on the response's bytes (no copy).
    records: Bytes,
    /// The offset the client asked from (records before it are not handed to it).
    fetch_offset: i64,
    /// Aborted transactions: (producer id, first offset).
    aborted: Vec<(i64, i64)>,
    read_committed: bool,
}

impl FrameHandler for Requests {
    fn on_frame(&mut self, frame: Bytes) -> impl std::future::Future<Output = Handled> + Send {
        self.0.clone().on_request(frame)
    }
}

impl FrameHandler for Responses {
    async fn on_frame(&mut self, frame: Bytes) -> Handled {
        let (handled, fetched) = self.conn.on_response_deferred(frame).await;
        if !self.conn.shared.read_deliveries.load(Ordering::Relaxed) {
            return handled;
        }
        if self.conn.shared.deliveries_first.load(Ordering::Relaxed) {
            self.conn.record_deliveries(fetched);
        } else {
            self.unread = fetched;
        }
        handled
    }

    fn needs_written(&self) -> bool {
        !self.unread.is_empty()
    }

    fn on_written(&mut self) {
        // The client has the bytes; the pump reads nothing more until this returns, so the
        // events are in the timeline before the connection can end or the proxy report
        // itself stopped.
        let fetched = std::mem::take(&mut self.unread);
        self.conn.record_deliveries(fetched);
    }
}

/// The request header fields every version shares: api key, version, correlation id.
pub fn request_ids(frame: &[u8]) -> Option<(i16, i16, i32)> {
    let b = frame.get(4..12)?;
    Some((
        i16::from_be_bytes([b[0], b[1]]),
        i16::from_be_bytes([b[2], b[3]]),
        i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    ))
}

fn decode_request<T: Decodable>(frame: &Bytes, key: ApiKey, version: i16) -> Result<T, String> {
    let mut b = frame.slice(4..);
    RequestHeader::decode(&mut b, key.request_header_version(version))
        .map_err(|e| format!("{key:?} v{version} request header: {e}"))?;
    T::decode(&mut b, version).map_err(|e| format!("{key:?} v{version} request: {e}"))
}

fn decode_response<T: Decodable>(
    frame: &Bytes,
    key: ApiKey,
    version: i16,
) -> Result<(ResponseHeader, T), String> {
    let mut b = frame.slice(4..);
    let header = ResponseHeader::decode(&mut b, key.response_header_version(version))
        .map_err(|e| format!("{key:?} v{version} response header: {e}"))?;
    let body =
        T::decode(&mut b, version).map_err(|e| format!("{key:?} v{version} response: {e}"))?;
    Ok((header, body))
}

fn encode_response<T: Encodable>(
    header: &ResponseHeader,
    key: ApiKey,
    version: i16,
    body: &T,
) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    header
        .encode(&mut out, key.response_header_version(version))
        .map_err(|e| format!("{key:?} v{version} response header: {e}"))?;
    body.encode(&mut out, version)
        .map_err(|e| format!("{key:?} v{version} response: {e}"))?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}

/// `ILLEGAL_GENERATION` for 22, `UNKNOWN_ERROR_CODE_123` for codes the crate does not know.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

/// Group errors that mean the member must rejoin or was fenced.
fn is_group_error(code: i16) -> bool {
    matches!(
        ResponseError::try_from_code(code),
        Some(
            ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::RebalanceInProgress
                | ResponseError::FencedInstanceId
                | ResponseError::FencedMemberEpoch
                | ResponseError::UnreleasedInstanceId
                | ResponseError::StaleMemberEpoch
        )
    )
}

/// The partitions of `topic` in a classic-protocol SyncGroup assignment
/// (ConsumerProtocolAssignment, prefixed with its version).
pub fn assigned_partitions(assignment: &Bytes, topic: &str) -> Result<Vec<i32>, String> {
    if assignment.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = assignment.clone();
    if b.remaining() < 2 {
        return Err("assignment shorter than its version".into());
    }
    // Newer versions only add fields: read them with the newest version the crate knows.
    let version = b.get_i16().clamp(
        ConsumerProtocolAssignment::VERSIONS.min,
        ConsumerProtocolAssignment::VERSIONS.max,
    );
    let a = ConsumerProtocolAssignment::decode(&mut b, version)
        .map_err(|e| format!("consumer protocol assignment: {e}"))?;
    let mut parts: Vec<i32> = a
        .assigned_partitions
        .iter()
        .filter(|tp| tp.topic.0.as_str() == topic)
        .flat_map(|tp| tp.partitions.iter().copied())
        .collect();
    parts.sort_unstable();
    Ok(parts)
}

/// The records of one partition's fetched bytes that the client will hand to the
/// application: data records at or after `fetch_offset`, minus aborted transactional records
/// for a read_committed client. A truncated last batch (the broker cuts at max bytes) is
/// normal and ends the walk; any other undecodable batch is an error (with the records read
/// before it).
///
/// Uncompressed v2 batches go through [`scan_plain_batch`] (no allocation per record); every
/// other batch, and any batch that scan refuses, is decoded by the kafka-protocol crate, whose
/// answer is the reference (see [`scan_plain_batch`] for why both exist).
pub fn delivered_records(
    records: &Bytes,
    fetch_offset: i64,
    aborted: &[(i64, i64)],
    read_committed: bool,
) -> (DeliveredIds, Option<String>) {
    let mut out = DeliveredIds::default();
    let mut filter = DeliveryFilter::new(fetch_offset, aborted, read_committed);
    let mut deliver = |id: &[u8], offset| out.push_bytes(offset, id);
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
struct DeliveryFilter {
    fetch_offset: i64,
    read_committed: bool,
    /// Aborted transactions not yet reached: (producer id, first offset), by first offset.
    pending_aborts: Vec<(i64, i64)>,
    /// Producers whose aborted transaction is open at the current offset.
    active_aborts: HashSet<i64>,
}

impl DeliveryFilter {
    fn new(fetch_offset: i64, aborted: &[(i64, i64)], read_committed: bool) -> DeliveryFilter {
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
    fn visit(&mut self, r: SeenRecord<'_>, deliver: &mut impl FnMut(&[u8], i64)) {
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

impl Conn {
    fn record(&self, event: Event) -> Arc<crate::timeline::Stamped> {
        self.shared.timeline.record(event)
    }

    fn rebalance(
        &self,
        group: &str,
        change: RebalanceKind,
        member: &str,
        generation: Option<i32>,
        assignment: Option<Vec<i32>>,
        error: Option<String>,
    ) {
        self.record(Event::Rebalance {
            instance: self.instance,
            incarnation: self.incarnation,
            group: group.to_string(),
            change,
            member: member.to_string(),
            generation,
            assignment,
            error,
            protocols: None,
        });
    }

    fn commit_event(&self, info: &CommitInfo, phase: CommitPhase, error: Option<String>) -> u64 {
        self.record(Event::Commit {
            instance: self.instance,
            incarnation: self.incarnation,
            group: info.group.clone(),
            member: info.member.clone(),
            generation: info.generation,
            offsets: info.offsets.clone(),
            phase,
            error,
        })
        .seq
    }

    /// Waits for the nemesis's verdict on event `seq`, measuring the hold and warning when it
    /// nears the client's request timeout.
    async fn hold(&self, point: HoldPoint, seq: u64) -> HoldDecision {
        let start = Instant::now();
        let warn_after = CLIENT_REQUEST_TIMEOUT.mul_f64(0.8);
        let wait = self.shared.gate.wait(point, seq);
        tokio::pin!(wait);
        let mut warned = false;
        let verdict = loop {
            tokio::select! {
                v = &mut wait => break v,
                _ = tokio::time::sleep_until(start + warn_after), if !warned => {
                    warned = true;
                    self.shared.warn(format!(
                        "kafka proxy: {point:?} of consumer[{}] held for {}s: every later \
                         response on its connection waits behind it, and the client gives up \
                         at request.timeout.ms (30 s by default)",
                        self.instance,
                        warn_after.as_secs()
                    ));
                }
                _ = tokio::time::sleep_until(start + HOLD_CAP) => {
                    self.shared.fail(format!(
                        "{point:?} of consumer[{}] (event {seq}) held for {}s without a \
                         verdict; released",
                        self.instance,
                        HOLD_CAP.as_secs()
                    ));
                    break HoldDecision::Answer;
                }
            }
        };
        let held = start.elapsed();
        self.record(Event::Held {
            instance: self.instance,
            incarnation: self.incarnation,
            at: match point {
                HoldPoint::CommitResponse => HeldAt::CommitResponse,
                _ => HeldAt::CommitRequest,
            },
            event: seq,
            held_us: held.as_micros() as u64,
            released: verdict == HoldDecision::Answer,
        });
        verdict
    }

    async fn on_request(self: Arc<Conn>, frame: Bytes) -> Handled {
        let Some((raw_key, version, corr)) = request_ids(&frame) else {
            return Handled::Close("request shorter than its header".into());
        };
        let key = ApiKey::try_from(raw_key).ok();
        let ctx = match key {
            Some(k) => match self.request_ctx(&frame, k, version) {
                Ok(ctx) => ctx,
                Err(e) => {
                    if k == ApiKey::OffsetCommit && self.shared.gate.holds(HoldPoint::CommitRequest)
                    {
                        self.shared
                            .fail(format!("cannot decode an OffsetCommit to hold it: {e}"));
                    } else {
                        self.shared.warn(format!(
                            "kafka proxy: consumer[{}] sent a request the proxy cannot read \
                             (forwarded as is): {e}",
                            self.instance
                        ));
                    }
                    Ctx::None
                }
            },
            None => Ctx::None,
        };
        let commit = match &ctx {
            Ctx::Commit(info) => Some(info.clone()),
            _ => None,
        };
        {
            let mut inflight = lock(&self.inflight);
            if inflight.len() >= MAX_IN_FLIGHT {
                return Handled::Close(format!(
                    "more than {MAX_IN_FLIGHT} requests without a response"
                ));
            }
            // Registered before forwarding, so the response always finds it.
            inflight.insert(
                corr,
                Pending {
                    key: raw_key,
                    version,
                    ctx,
                },
            );
        }
        if let Some(info) = commit {
            let seq = self.commit_event(&info, CommitPhase::Request, None);
            if self.shared.gate.holds(HoldPoint::CommitRequest)
                && self.hold(HoldPoint::CommitRequest, seq).await == HoldDecision::Withhold
            {
                lock(&self.inflight).remove(&corr);
                self.commit_event(&info, CommitPhase::Dropped, None);
                return Handled::Drop;
            }
        }
        Handled::Forward(frame)
    }

    /// Decodes the requests whose responses need context, and records request-side events.
    fn request_ctx(&self, frame: &Bytes, key: ApiKey, version: i16) -> Result<Ctx, String> {
        Ok(match key {
            ApiKey::OffsetCommit => {
                let r: OffsetCommitRequest = decode_request(frame, key, version)?;
                let mut offsets = Vec::new();
                for t in &r.topics {
                    let topic = self
                        .shared
                        .topic_name(t.name.0.as_str(), t.topic_id.as_bytes());
                    for p in &t.partitions {
                        offsets.push(CommittedOffset {
                            topic: topic.clone(),
                            partition: p.partition_index,
                            offset: p.committed_offset,
                        });
                    }
                }
                Ctx::Commit(CommitInfo {
                    group: r.group_id.0.to_string(),
                    member: r.member_id.to_string(),
                    generation: r.generation_id_or_member_epoch,
                    offsets,
                })
            }
            ApiKey::Fetch => {
                let r: FetchRequest = decode_request(frame, key, version)?;
                let mut positions = lock(&self.positions);
                for t in &r.topics {
                    let topic = self
                        .shared
                        .topic_name(t.topic.0.as_str(), t.topic_id.as_bytes());
                    for p in &t.partitions {
                        positions.insert((topic.clone(), p.partition), p.fetch_offset);
                    }
                }
                for t in &r.forgotten_topics_data {
                    let topic = self
                        .shared
                        .topic_name(t.topic.0.as_str(), t.topic_id.as_bytes());
                    for p in &t.partitions {
                        positions.remove(&(topic.clone(), *p));
                    }
                }
                Ctx::Fetch {
                    read_committed: r.isolation_level == 1,
                }
            }
            ApiKey::JoinGroup => {
                let r: JoinGroupRequest = decode_request(frame, key, version)?;
                let group = r.group_id.0.to_string();
                let member = r.member_id.to_string();
                // The assignors it offers, so the harness's own group member can speak the same.
                self.record(Event::Rebalance {
                    instance: self.instance,
                    incarnation: self.incarnation,
                    group: group.clone(),
                    change: RebalanceKind::Join,
                    member: member.clone(),
                    generation: None,
                    assignment: None,
                    error: None,
                    protocols: Some(r.protocols.iter().map(|p| p.name.to_string()).collect()),
                });
                Ctx::Group {
                    group,
                    member,
                    generation: None,
                }
            }
            ApiKey::SyncGroup => {
                let r: SyncGroupRequest = decode_request(frame, key, version)?;
                Ctx::Group {
                    group: r.group_id.0.to_string(),
                    member: r.member_id.to_string(),
                    generation: Some(r.generation_id),
                }
            }
            ApiKey::Heartbeat => {
                let r: HeartbeatRequest = decode_request(frame, key, version)?;
                Ctx::Group {
                    group: r.group_id.0.to_string(),
                    member: r.member_id.to_string(),
                    generation: Some(r.generation_id),
                }
            }
            ApiKey::LeaveGroup => {
                let r: LeaveGroupRequest = decode_request(frame, key, version)?;
                let group = r.group_id.0.to_string();
                let mut members: Vec<String> =
                    r.members.iter().map(|m| m.member_id.to_string()).collect();
                if members.is_empty() {
                    members.push(r.member_id.to_string());
                }
                for m in members {
                    self.rebalance(&group, RebalanceKind::Leave, &m, None, None, None);
                }
                Ctx::None
            }
            ApiKey::ConsumerGroupHeartbeat => {
                let r: ConsumerGroupHeartbeatRequest = decode_request(frame, key, version)?;
                let group = r.group_id.0.to_string();
                let member = r.member_id.to_string();
                match r.member_epoch {
                    0 => self.rebalance(&group, RebalanceKind::Join, &member, Some(0), None, None),
                    e if e < 0 => {
                        self.rebalance(&group, RebalanceKind::Leave, &member, Some(e), None, None)
                    }
                    _ => {}
                }
                Ctx::Group {
                    group,
                    member,
                    generation: Some(r.member_epoch),
                }
            }
            _ => Ctx::None,
        })
    }

    /// Handles one response and records its deliveries at once (before it is forwarded).
    #[cfg(test)]
    async fn on_response(self: Arc<Conn>, frame: Bytes) -> Handled {
        let (handled, fetched) = self.on_response_deferred(frame).await;
        if matches!(handled, Handled::Forward(_)) {
            self.record_deliveries(fetched);
        }
        handled
    }

    /// Handles one response; a Fetch response's records to read for `delivered` events come
    /// back apart, to be read once the response is forwarded (see [`Responses`]).
    async fn on_response_deferred(&self, frame: Bytes) -> (Handled, Vec<FetchedPartition>) {
        let mut fetched = Vec::new();
        let handled = self.response_of(frame, &mut fetched).await;
        if !matches!(handled, Handled::Forward(_)) {
            // Never reaches the client: nothing was delivered.
            fetched.clear();
        }
        (handled, fetched)
    }

    async fn response_of(&self, frame: Bytes, fetched: &mut Vec<FetchedPartition>) -> Handled {
        let Some(b) = frame.get(4..8) else {
            return Handled::Close("response shorter than a correlation id".into());
        };
        let corr = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let Some(p) = lock(&self.inflight).remove(&corr) else {
            return Handled::Close(format!(
                "response with correlation id {corr} that no request on this connection used"
            ));
        };
        let Ok(key) = ApiKey::try_from(p.key) else {
            return Handled::Forward(frame);
        };
        match self.response(frame, key, p, fetched).await {
            Ok(h) => h,
            Err(e) => Handled::Close(e),
        }
    }

    /// Handles one decoded-or-forwarded response. `Err` closes the connection (and has been
    /// recorded as a failure when the run's evidence or faults depend on it). A Fetch
    /// response's partitions of the topic under test are put in `fetched`, for the caller to
    /// read its deliveries from.
    async fn response(
        &self,
        frame: Bytes,
        key: ApiKey,
        p: Pending,
        fetched: &mut Vec<FetchedPartition>,
    ) -> Result<Handled, String> {
        let version = p.version;
        let must_rewrite = |e: String| -> String {
            let msg = format!(
                "cannot rewrite broker addresses in a {key:?} v{version} response for \
                 consumer[{}] ({e}); the connection was closed so the client cannot bypass \
                 the proxy",
                self.instance
            );
            self.shared.fail(msg.clone());
            msg
        };
        match key {
            ApiKey::ApiVersions => {
                let ours = decodable_versions(key);
                if version > ours.max {
                    // The client asked in a version the crate cannot read: answer as a broker
                    // that does not support it would (v0, UNSUPPORTED_VERSION, our range), so
                    // the client retries in a version the proxy can rewrite.
                    let header = ResponseHeader::default().with_correlation_id(correlation(&frame));
                    let mut body = ApiVersionsResponse::default()
                        .with_error_code(ResponseError::UnsupportedVersion.code());
                    body.api_keys.push(
                        ApiVersion::default()
                            .with_api_key(ApiKey::ApiVersions as i16)
                            .with_min_version(ours.min)
                            .with_max_version(ours.max),
                    );
                    return Ok(Handled::Forward(
                        encode_response(&header, key, 0, &body).map_err(must_rewrite)?,
                    ));
                }
                // A broker that does not support the request's version answers in v0 with
                // UNSUPPORTED_VERSION (the error code is the first field in every version).
                let error = frame.get(8..10).map(|b| i16::from_be_bytes([b[0], b[1]]));
                if error.is_some_and(|e| e != 0) {
                    // An error answer (librdkafka's mock sends UNSUPPORTED_VERSION in the
                    // request's own format, not v0). It holds no addresses; cap what it lists
                    // if it decodes, else pass it on as it came: a retry above our range is
                    // answered by the proxy itself (above).
                    for v in [0, version] {
                        if let Ok((header, mut body)) =
                            decode_response::<ApiVersionsResponse>(&frame, key, v)
                        {
                            cap_versions(&mut body);
                            if let Ok(bytes) = encode_response(&header, key, v, &body) {
                                return Ok(Handled::Forward(bytes));
                            }
                        }
                    }
                    return Ok(Handled::Forward(frame));
                }
                let (header, mut body) =
                    decode_response::<ApiVersionsResponse>(&frame, key, version)
                        .map_err(must_rewrite)?;
                cap_versions(&mut body);
                Ok(Handled::Forward(
                    encode_response(&header, key, version, &body).map_err(must_rewrite)?,
                ))
            }
            ApiKey::Metadata => {
                let (header, mut body) = decode_response::<MetadataResponse>(&frame, key, version)
                    .map_err(must_rewrite)?;
                {
                    let mut ids = lock(&self.shared.topic_ids);
                    for t in &body.topics {
                        if let Some(name) = &t.name {
                            if !t.topic_id.is_nil() {
                                ids.insert(*t.topic_id.as_bytes(), name.0.to_string());
                            }
                        }
                    }
                }
                for b in &mut body.brokers {
                    self.learn_node(b.node_id.0, b.host.as_str(), b.port);
                    b.port = self.listener(b.node_id.0).map_err(must_rewrite)?;
                    b.host = loopback();
                }
                Ok(Handled::Forward(
                    encode_response(&header, key, version, &body).map_err(must_rewrite)?,
                ))
            }
            ApiKey::FindCoordinator => {
                let (header, mut body) =
                    decode_response::<FindCoordinatorResponse>(&frame, key, version)
                        .map_err(must_rewrite)?;
                if body.node_id.0 >= 0 && !body.host.is_empty() {
                    self.learn_node(body.node_id.0, body.host.as_str(), body.port);
                    body.port = self.listener(body.node_id.0).map_err(must_rewrite)?;
                    body.host = loopback();
                }
                for c in &mut body.coordinators {
                    if c.node_id.0 >= 0 && !c.host.is_empty() {
                        self.learn_node(c.node_id.0, c.host.as_str(), c.port);
                        c.port = self.listener(c.node_id.0).map_err(must_rewrite)?;
                        c.host = loopback();
                    }
                }
                Ok(Handled::Forward(
                    encode_response(&header, key, version, &body).map_err(must_rewrite)?,
                ))
            }
            ApiKey::DescribeCluster => {
                let (header, mut body) =
                    decode_response::<DescribeClusterResponse>(&frame, key, version)
                        .map_err(must_rewrite)?;
                for b in &mut body.brokers {
                    self.learn_node(b.broker_id.0, b.host.as_str(), b.port);
                    b.port = self.listener(b.broker_id.0).map_err(must_rewrite)?;
                    b.host = loopback();
                }
                Ok(Handled::Forward(
                    encode_response(&header, key, version, &body).map_err(must_rewrite)?,
                ))
            }
            ApiKey::Produce => {
                let (header, mut body) = decode_response::<ProduceResponse>(&frame, key, version)
                    .map_err(must_rewrite)?;
                if body.node_endpoints.is_empty() {
                    return Ok(Handled::Forward(frame));
                }
                for n in &mut body.node_endpoints {
                    self.learn_node(n.node_id.0, n.host.as_str(), n.port);
                    n.port = self.listener(n.node_id.0).map_err(must_rewrite)?;
                    n.host = loopback();
                }
                Ok(Handled::Forward(
                    encode_response(&header, key, version, &body).map_err(must_rewrite)?,
                ))
            }
            ApiKey::Fetch => {
                let (header, mut body) =
                    decode_response::<FetchResponse>(&frame, key, version).map_err(must_rewrite)?;
                let read_committed = matches!(
                    p.ctx,
                    Ctx::Fetch {
                        read_committed: true
                    }
                );
                // Only what the records' reading needs is taken now (the fetch positions as
                // this response answers them); the records are read by the caller.
                *fetched = self.fetched_partitions(&body, read_committed);
                if body.node_endpoints.is_empty() {
                    return Ok(Handled::Forward(frame));
                }
                for n in &mut body.node_endpoints {
                    self.learn_node(n.node_id.0, n.host.as_str(), n.port);
                    n.port = self.listener(n.node_id.0).map_err(must_rewrite)?;
                    n.host = loopback();
                }
                Ok(Handled::Forward(
                    encode_response(&header, key, version, &body).map_err(must_rewrite)?,
                ))
            }
            ApiKey::OffsetCommit => {
                let Ctx::Commit(info) = p.ctx else {
                    return Ok(Handled::Forward(frame));
                };
                let body = match decode_response::<OffsetCommitResponse>(&frame, key, version) {
                    Ok((_, b)) => b,
                    Err(e) => {
                        self.shared
                            .fail(format!("cannot decode an OffsetCommit response: {e}"));
                        return Ok(Handled::Forward(frame));
                    }
                };
                let mut errors: Vec<i16> = body
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                    .filter(|c| *c != 0)
                    .collect();
                errors.sort_unstable();
                errors.dedup();
                let error = (!errors.is_empty()).then(|| {
                    errors
                        .iter()
                        .map(|c| error_name(*c))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                let seq = self.commit_event(&info, CommitPhase::Response, error);
                if let Some(&g) = errors.iter().find(|c| is_group_error(**c)) {
                    self.rebalance(
                        &info.group,
                        RebalanceKind::Error,
                        &info.member,
                        Some(info.generation),
                        None,
                        Some(error_name(g)),
                    );
                }
                if self.shared.gate.holds(HoldPoint::CommitResponse)
                    && self.hold(HoldPoint::CommitResponse, seq).await == HoldDecision::Withhold
                {
                    return Ok(Handled::Drop);
                }
                Ok(Handled::Forward(frame))
            }
            ApiKey::SyncGroup => {
                if let Ctx::Group {
                    group,
                    member,
                    generation,
                } = &p.ctx
                {
                    match decode_response::<SyncGroupResponse>(&frame, key, version) {
                        Ok((_, b)) if b.error_code != 0 => self.rebalance(
                            group,
                            RebalanceKind::Error,
                            member,
                            *generation,
                            None,
                            Some(error_name(b.error_code)),
                        ),
                        Ok((_, b)) => {
                            self.rebalance(
                                group,
                                RebalanceKind::Sync,
                                member,
                                *generation,
                                None,
                                None,
                            );
                            match assigned_partitions(&b.assignment, &self.shared.topic) {
                                Ok(parts) => self.rebalance(
                                    group,
                                    RebalanceKind::Assign,
                                    member,
                                    *generation,
                                    Some(parts),
                                    None,
                                ),
                                Err(e) => self.shared.warn(format!(
                                    "kafka proxy: cannot read consumer[{}]'s assignment, the timeline misses it: {e}",
                                    self.instance
                                )),
                            }
                        }
                        // Forwarded untouched: only the timeline misses this rebalance event.
                        Err(e) => self.shared.warn(format!(
                            "kafka proxy: cannot decode a SyncGroup response, the timeline misses this assignment: {e}"
                        )),
                    }
                }
                Ok(Handled::Forward(frame))
            }
            ApiKey::Heartbeat => {
                if let Ctx::Group {
                    group,
                    member,
                    generation,
                } = &p.ctx
                {
                    match decode_response::<HeartbeatResponse>(&frame, key, version) {
                        Ok((_, b)) if b.error_code != 0 => self.rebalance(
                            group,
                            RebalanceKind::Error,
                            member,
                            *generation,
                            None,
                            Some(error_name(b.error_code)),
                        ),
                        Ok(_) => {}
                        Err(e) => self.shared.warn(format!(
                            "kafka proxy: cannot decode a Heartbeat response, the timeline misses it: {e}"
                        )),
                    }
                }
                Ok(Handled::Forward(frame))
            }
            ApiKey::ConsumerGroupHeartbeat => {
                if let Ctx::Group { group, member, .. } = &p.ctx {
                    match decode_response::<ConsumerGroupHeartbeatResponse>(&frame, key, version) {
                        Ok((_, b)) => self.group_heartbeat(group, member, &b).await,
                        Err(e) => self.shared.warn(format!(
                            "kafka proxy: cannot decode a ConsumerGroupHeartbeat response, the timeline misses it: {e}"
                        )),
                    }
                }
                Ok(Handled::Forward(frame))
            }
            _ => Ok(Handled::Forward(frame)),
        }
    }

    async fn group_heartbeat(&self, group: &str, member: &str, b: &ConsumerGroupHeartbeatResponse) {
        let member = b
            .member_id
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| member.to_string());
        if b.error_code != 0 {
            self.rebalance(
                group,
                RebalanceKind::Error,
                &member,
                Some(b.member_epoch),
                None,
                Some(error_name(b.error_code)),
            );
            return;
        }
        if let Some(a) = &b.assignment {
            // KIP-848 names topics by id, and the client may learn the names only after this
            // response: ask the cluster for ids the proxy has not seen yet.
            let unknown = {
                let ids = lock(&self.shared.topic_ids);
                a.topic_partitions
                    .iter()
                    .any(|tp| !ids.contains_key(tp.topic_id.as_bytes()))
            };
            if unknown {
                if let Err(e) = self.shared.learn_topic_ids().await {
                    self.shared.fail(format!(
                        "cannot name the topics of consumer[{}]'s assignment: {e}",
                        self.instance
                    ));
                }
            }
            let mut parts = Vec::new();
            for tp in &a.topic_partitions {
                if self.shared.topic_name("", tp.topic_id.as_bytes()) == self.shared.topic {
                    parts.extend(tp.partitions.iter().copied());
                }
            }
            parts.sort_unstable();
            self.rebalance(
                group,
                RebalanceKind::Assign,
                &member,
                Some(b.member_epoch),
                Some(parts),
                None,
            );
        }
    }

    /// The partitions of the topic under test in a Fetch response that carry records, with
    /// what reading their deliveries needs. Cheap (no record is read): the records stay
    /// handles on the response's bytes.
    fn fetched_partitions(
        &self,
        body: &FetchResponse,
        read_committed: bool,
    ) -> Vec<FetchedPartition> {
        let mut out = Vec::new();
        for t in &body.responses {
            let topic = self
                .shared
                .topic_name(t.topic.0.as_str(), t.topic_id.as_bytes());
            if topic != self.shared.topic {
                continue;
            }
            for p in &t.partitions {
                let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) else {
                    continue;
                };
                let fetch_offset = lock(&self.positions)
                    .get(&(topic.clone(), p.partition_index))
                    .copied()
                    .unwrap_or(0);
                out.push(FetchedPartition {
                    topic: topic.clone(),
                    partition: p.partition_index,
                    records: records.clone(),
                    fetch_offset,
                    aborted: p
                        .aborted_transactions
                        .iter()
                        .flatten()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect(),
                    read_committed,
                });
            }
        }
        out
    }

    /// Records one `delivered_batch` event per fetched partition, listing the records the
    /// client will hand to the application; a partition whose records cannot be read fails the
    /// run.
    fn record_deliveries(&self, fetched: Vec<FetchedPartition>) {
        for f in fetched {
            let (records, err) =
                delivered_records(&f.records, f.fetch_offset, &f.aborted, f.read_committed);
            if !records.is_empty() {
                self.shared.timeline.record(Event::DeliveredBatch {
                    instance: self.instance,
                    incarnation: self.incarnation,
                    partition: f.partition,
                    records,
                });
            }
            if let Some(e) = err {
                self.shared.fail(format!(
                    "cannot read the records fetched by consumer[{}] from {}[{}]: {e}",
                    self.instance, f.topic, f.partition
                ));
            }
        }
    }

    fn learn_node(&self, node: i32, host: &str, port: i32) {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        lock(&self.shared.nodes).insert(node, addr);
    }

    fn listener(&self, node: i32) -> Result<i32, String> {
        self.shared.node_port(node, self.instance).map(|p| p as i32)
    }
}

fn correlation(frame: &[u8]) -> i32 {
    frame
        .get(4..8)
        .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn loopback() -> StrBytes {
    StrBytes::from_static_str("127.0.0.1")
}

/// Caps every advertised version range to what the proxy decodes; drops APIs left with none.
fn cap_versions(body: &mut ApiVersionsResponse) {
    body.api_keys.retain_mut(|a| {
        let Ok(key) = ApiKey::try_from(a.api_key) else {
            return true; // unknown to the crate: never decoded, forwarded as is
        };
        let ours = decodable_versions(key);
        a.min_version = a.min_version.max(ours.min);
        a.max_version = a.max_version.min(ours.max);
        a.min_version <= a.max_version
    });
}

/// Sockets of process `pid` connected to one of `addrs` ("host:port"), read from /proc: a
/// consumer socket connected straight to a broker bypassed the proxy. Returns "local -> remote" descriptions; empty when none (or /proc is absent).
pub fn direct_connections(pid: u32, addrs: &[String]) -> Vec<String> {
    let wanted: HashSet<std::net::SocketAddr> = addrs
        .iter()
        .filter_map(|a| {
            use std::net::ToSocketAddrs;
            a.to_socket_addrs().ok()?.next()
        })
        .collect();
    crate::sink::owner::process_sockets(pid)
        .into_iter()
        .filter(|row| wanted.contains(&row.remote))
        .map(|row| format!("{} -> {}", row.local, row.remote))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::split_frames;
    use super::*;
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

    /// Pushes raw bytes through the framing and the handlers, as a connection would.
    async fn feed(conn: &Arc<Conn>, is_request: bool, key: ApiKey, version: i16, bytes: &[u8]) {
        let (frames, _) = split_frames(&KafkaFraming, bytes);
        for f in frames {
            if is_request {
                let _ = conn.clone().on_request(f).await;
            } else {
                if f.len() >= 8 {
                    lock(&conn.inflight).insert(
                        correlation(&f),
                        Pending {
                            key: key as i16,
                            version,
                            ctx: Ctx::Fetch {
                                read_committed: false,
                            },
                        },
                    );
                }
                let _ = conn.clone().on_response(f).await;
            }
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
            lock(&conn.inflight).insert(
                correlation(&f),
                Pending {
                    key: ApiKey::Fetch as i16,
                    version: 12,
                    ctx: Ctx::Fetch {
                        read_committed: false,
                    },
                },
            );
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
            lock(&conn.inflight).insert(
                correlation(&f),
                Pending {
                    key: key as i16,
                    version,
                    ctx: Ctx::None,
                },
            );
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
}
