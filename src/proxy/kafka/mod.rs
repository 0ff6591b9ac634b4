//! The Kafka-aware proxy: sits between each consumer instance and the Kafka cluster, turns what
//! it sees into timeline events (`commit`, `rebalance`, `delivered_batch`), holds OffsetCommit
//! requests and responses for the nemesis, and applies network faults to one instance's
//! connections.
//!
//! Wire formats come from the kafka-protocol crate; the proxy itself only cuts frames (the
//! 4-byte length prefix) and reads the request header's api key, version and correlation id
//! (`wire.rs`). Each connection (`conn.rs`) keeps a map correlation id → (api key, version,
//! what the request said), so the response can be decoded, and hands each request and response
//! to the file that owns its API, a job per file:
//!
//! - `rewrite.rs`: the only responses re-encoded, those that carry broker addresses (Metadata,
//!   FindCoordinator, DescribeCluster; Fetch and Produce when they carry KIP-951
//!   `node_endpoints`) or advertised versions (ApiVersions, capped to the versions the crate
//!   decodes). Every other frame is forwarded byte for byte.
//! - `fetch.rs`: the fetch positions Fetch requests ask from, and the deliveries of Fetch
//!   responses; `records.rs`: which fetched records the client hands to its application (pure).
//! - `commit.rs`: OffsetCommit requests and responses, their `commit` events and their holds,
//!   and the `commit_error` fault; `fetch.rs` also applies `fetch_error` and `fetch_twice`.
//! - `fence.rs`: the `heartbeat_error` fault (a heartbeat answered with a fencing error).
//! - `group.rs`: group membership, classic (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) and
//!   KIP-848 (ConsumerGroupHeartbeat), as `rebalance` events.
//! - `topics.rs`: topic ids → names (KIP-848 and recent Fetch versions name topics by id).
//! - this file: the proxy's lifecycle, its listeners, one connection from accept to close, and
//!   the check that no consumer socket bypassed it.
//!
//! Deliveries: a Fetch response is forwarded first and its records are read right after it is
//! on the client's socket (before the proxy reads anything more from the broker): one
//! `delivered_batch` event per partition of the topic under test and Fetch response, listing
//! the records the client hands to the application ([`deliveries`]). A batch the harness's
//! ledger names record by record (handed over with [`KafkaProxy::vouch_with`]) is recorded as
//! its offset range from its header alone ([`header_says`]), and the timeline's reader turns the
//! range back into records. Other uncompressed v2 batches are walked in place by
//! [`scan_plain_batch`] (the crate still checks each batch header and CRC); every other batch
//! is decoded by the crate. This keeps the proxy's cost off
//! the consumer's path (issues 4 and 6); [`KafkaProxy::set_deliveries_before_forwarding`]
//! restores "events before forwarding".
//!
//! Keeping the client on the proxy: every instance has its own loopback listener for the
//! bootstrap and one per broker node id; a node's listeners are opened as soon as a response
//! names the node id, before that response is forwarded, so a client can never learn an
//! address the proxy does not listen on yet. A response whose addresses cannot be rewritten is
//! never forwarded: the connection closes and [`KafkaProxy::failure`] says why (exit 4).
//!
//! Bad bytes end one connection at most, never the proxy. A frame the proxy cannot decode is
//! forwarded unread with a warning, unless the run depends on it: a response whose addresses
//! must be rewritten closes its connection and fails the run; an OffsetCommit request the gate
//! must hold, or any OffsetCommit response, is forwarded and fails the run (the evidence or the
//! fault would be missing). The vendored kafka-protocol caps every preallocation by the bytes
//! left in the input (vendor/kafka-protocol/VENDORED.md), so no length prefix can make the
//! allocator abort the process (`flipped_frames_are_handled_or_refused`,
//! `huge_length_prefixes_are_refused_not_allocated`).

mod commit;
mod conn;
mod fence;
mod fetch;
mod group;
mod produce;
mod records;
mod rewrite;
mod topics;
mod txn;
mod wire;

pub use group::{assigned_partitions, AssignmentError};
pub use records::{
    delivered_records, deliveries, header_says, scan_plain_batch, Delivered, HeaderSays, SeenRecord,
};
pub use wire::{decodable_versions, error_name, request_ids, KafkaFraming};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{
    bind_loopback, connect_upstream, serve_connection, spawn_accept_loop, ConnEnd, PumpEnd,
    Registry, Tasks,
};
use crate::error::InfraError;
use crate::gate::{Gate, HoldDecision, HoldPoint};
use crate::plan::{ProtocolReply, Target};
use crate::proxy::control::NetworkControl;
use crate::timeline::{AckedOffsets, Event, Timeline};
use conn::{Conn, Requests, Responses};

/// Where a listener's connections go.
#[derive(Debug, Clone, Copy)]
enum Route {
    Bootstrap,
    Node(i32),
}

/// The proxy's state, shared by its listeners and connections.
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
    /// The workload's acknowledged offsets, once the run hands them over: batches below their
    /// watermark are recorded as offset ranges (none handed over: every record is read).
    acked: OnceLock<Arc<AckedOffsets>>,
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
            acked: OnceLock::new(),
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

    /// Hands over the workload's acknowledged offsets of the topic under test (once; later
    /// calls are ignored): from then on a fetched batch whose records the ledger names, every
    /// offset below the watermark, is recorded as an offset range without reading its records
    /// (`records::header_says`); the timeline's reader turns it back into records. Without
    /// it, every record is read.
    pub fn vouch_with(&self, acked: Arc<AckedOffsets>) {
        let _ = self.shared.acked.set(acked);
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

    fn reply(&self, target: Target, reply: ProtocolReply) -> Option<String> {
        self.shared.registry.arm_reply(target, reply)
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
    let conn = Arc::new(Conn::new(shared.clone(), instance, incarnation));
    let mut requests = Requests(conn.clone());
    let mut responses = Responses::new(conn);
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
        ConnEnd::Client(PumpEnd::Closed | PumpEnd::ClosedMidFrame | PumpEnd::Io(_))
        | ConnEnd::Upstream(PumpEnd::Closed | PumpEnd::ClosedMidFrame | PumpEnd::Io(_))
        | ConnEnd::Severed
        | ConnEnd::Stopped => {}
    }
}

/// Sockets of process `pid` connected to one of `addrs` ("host:port"), read from /proc: a
/// consumer socket connected straight to a broker bypassed the proxy. Returns "local -> remote"
/// descriptions; empty when none (or /proc is absent). (The run's watch uses
/// [`super::direct_sockets`] with the addresses resolved once.)
pub fn direct_connections(pid: u32, addrs: &[String]) -> Vec<String> {
    super::direct_sockets(pid, &super::resolve_all(addrs))
        .into_iter()
        .map(|row| format!("{} -> {}", row.local, row.remote))
        .collect()
}

#[cfg(test)]
mod range_tests;
#[cfg(test)]
mod tests;
