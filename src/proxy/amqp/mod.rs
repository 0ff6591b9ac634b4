//! The AMQP-aware proxy: sits between each consumer instance and RabbitMQ (AMQP 0-9-1), turns
//! what it sees into timeline events (`delivered`, `ack`, `consumer_settings`,
//! `connection_closed`), holds consumer acknowledgements for the nemesis (`before: ack`),
//! confirms when an ack reached the broker's socket (`after: ack`), and applies network faults
//! to one instance's connections.
//!
//! Only method frames of interest and the content header that follows a `basic.deliver` /
//! `basic.get-ok` are decoded, with the amq-protocol crate, on a copy: every frame is forwarded
//! byte for byte as it came (the proxy never re-encodes AMQP). Body frames and heartbeats are
//! never looked into. A frame that cannot be decoded is forwarded and counted (a warning for the
//! first few); only bytes that cannot be framed at all (a wrong frame-end octet, a frame larger
//! than the negotiated `frame_max`) close that one connection. A job per file:
//!
//! - `framing.rs`: the protocol header and frames, capped by the negotiated `frame_max`;
//! - `url.rs`: the broker URL, with the proxy's listener put in place of its `host:port`;
//! - `conn.rs`: one connection's per-channel state;
//! - `deliveries.rs`: the broker→client side: deliveries and the outstanding delivery tags;
//! - `acks.rs`: the client→broker side: acks resolved to IDs, their hold, consumer settings;
//! - `inject.rs`: protocol faults sent to the consumer (`amqp: redeliver`, `amqp: cancel`), the
//!   delivery tags they shift, and the frames each side has due;
//! - `blocked.rs`: `amqp: blocked`, `connection.blocked` and the publishes held until
//!   `connection.unblocked`;
//! - `channel_close.rs`: `amqp: double-ack`, a channel closed at both ends as RabbitMQ closes
//!   it on a second ack of a tag;
//! - this file: the proxy's lifecycle, one connection from accept to close, and the two
//!   directions as frame handlers.
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

mod acks;
mod blocked;
mod channel_close;
mod conn;
mod deliveries;
mod framing;
mod inject;
mod url;

pub use framing::AmqpFraming;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{
    bind_loopback, connect_upstream, serve_connection, spawn_accept_loop, ConnEnd, FrameHandler,
    Handled, PumpEnd, Registry, Tasks,
};
use crate::error::InfraError;
use crate::gate::{Gate, HoldDecision, HoldPoint};
use crate::plan::{AmqpFault, Target};
use crate::proxy::control::{Injection, NetworkControl};
use crate::timeline::{AckPhase, ClosedBy, Event, Timeline};
use acks::AckRecord;
use conn::Conn;
use inject::{ContentFollower, Injected, Side};
use url::{redact, split_url, UrlParts};

/// Frames the proxy could not read that get a warning of their own; later ones are counted.
const MAX_WARNINGS: u64 = 5;

/// The proxy's state, shared by its listeners and connections.
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
    /// Every live connection, by instance: where an `amqp:` fault is armed.
    live: Mutex<Vec<(u32, std::sync::Weak<Conn>)>>,
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
            live: Mutex::default(),
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

    /// The real broker address ("host:port" from the broker URL): a consumer socket connected
    /// to it bypassed the proxy (see [`super::direct_sockets`]).
    pub fn broker_addresses(&self) -> Vec<String> {
        vec![self.shared.url.address.clone()]
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

    /// Live proxied connections of every instance: each may hold deliveries unacknowledged.
    pub fn open_connections(&self) -> usize {
        (0..self.shared.ports.len() as u32)
            .map(|i| self.connections(i))
            .sum()
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

    fn amqp_fault(
        &self,
        target: Target,
        fault: AmqpFault,
        length: Option<Duration>,
    ) -> Option<Injection> {
        match fault {
            AmqpFault::Redeliver => self.arm(target, |c, a| c.arm_redeliver(a)),
            AmqpFault::Cancel => self.arm(target, |c, a| c.arm_cancel(a)),
            AmqpFault::DoubleAck => self.arm(target, |c, a| c.arm_double_ack(a)),
            AmqpFault::Blocked => {
                let length = length.unwrap_or(Duration::from_secs(1));
                self.arm(target, |c, a| c.arm_blocked(a, length))
                    .or_else(|| self.not_announced(target))
            }
        }
    }
}

impl AmqpProxy {
    /// Arms a protocol fault with `arm` on the first live connection of `target` that consumes
    /// and takes it (`arm` gives the answer back when the connection has one armed already);
    /// `None` when there is none.
    fn arm(
        &self,
        target: Target,
        arm: impl Fn(&Conn, inject::Answer) -> Result<(), inject::Answer>,
    ) -> Option<Injection> {
        let (mut answer, outcome) = tokio::sync::oneshot::channel();
        let mut live = lock(&self.shared.live);
        live.retain(|(_, c)| c.strong_count() > 0);
        for (instance, conn) in live.iter() {
            let hit = match target {
                Target::AllInstances => true,
                Target::Instance(i) => i == *instance,
            };
            let Some(conn) = conn.upgrade().filter(|c| hit && c.consumes()) else {
                continue;
            };
            match arm(&conn, answer) {
                Ok(()) => return Some(outcome),
                Err(back) => answer = back,
            }
        }
        None
    }
}

impl AmqpProxy {
    /// An `amqp: blocked` no connection of `target` could take because none announced the
    /// `connection.blocked` capability (RabbitMQ notifies only those): answered at once with
    /// why, so the fault event says it; `None` when `target` has no consuming connection.
    fn not_announced(&self, target: Target) -> Option<Injection> {
        let mut live = lock(&self.shared.live);
        live.retain(|(_, c)| c.strong_count() > 0);
        let (instance, _) = live.iter().find(|(instance, c)| {
            let hit = match target {
                Target::AllInstances => true,
                Target::Instance(i) => i == *instance,
            };
            hit && c
                .upgrade()
                .is_some_and(|c| c.consumes() && !c.announced_blocked())
        })?;
        let (answer, outcome) = tokio::sync::oneshot::channel();
        let _ = answer.send(Err(format!(
            "consumer[{instance}]'s client did not announce the connection.blocked capability \
             in its client-properties: RabbitMQ sends connection.blocked only to clients that \
             do, so nothing was sent and its publishes were not held"
        )));
        Some(outcome)
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
    lock(&shared.live).push((instance, Arc::downgrade(&conn)));
    let mut requests = Requests {
        conn: conn.clone(),
        unwritten: None,
        content: ContentFollower::default(),
        injecting: None,
    };
    let mut responses = Responses {
        conn: conn.clone(),
        forged: None,
        content: ContentFollower::default(),
        injecting: None,
    };
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
        ConnEnd::Client(PumpEnd::Closed | PumpEnd::ClosedMidFrame | PumpEnd::Io(_))
        | ConnEnd::Upstream(PumpEnd::Closed | PumpEnd::ClosedMidFrame | PumpEnd::Io(_))
        | ConnEnd::Severed
        | ConnEnd::Stopped => {}
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

/// The client→broker direction: acks are recorded, held, and confirmed once written.
struct Requests {
    conn: Arc<Conn>,
    /// An ack recorded as a request and not yet written to the broker: if the connection
    /// ends first, it was never forwarded (recorded as dropped when this is dropped).
    unwritten: Option<AckRecord>,
    /// The client's content in flight (nothing is injected inside it).
    content: ContentFollower,
    /// An injected frame being written.
    injecting: Option<Injected>,
}

impl FrameHandler for Requests {
    async fn on_frame(&mut self, frame: Bytes) -> Handled {
        self.content.follow(&frame);
        if self.conn.drop_client_frame(&frame) {
            // On a channel an `amqp: double-ack` closed: RabbitMQ would ignore it.
            return Handled::Drop;
        }
        // A blocked connection's publish waits (and everything after it, as RabbitMQ stops
        // reading it).
        self.conn.hold_if_publishing(&frame).await;
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
        let Some(ack) = self.unwritten.take() else {
            return Handled::Forward(frame);
        };
        self.conn.settle(&ack);
        match self.conn.to_broker(frame, ack.multiple) {
            Some(frame) => {
                self.unwritten = Some(ack);
                Handled::Forward(frame)
            }
            // It names only the proxy's own tags (`amqp: redeliver`): RabbitMQ never hears it.
            None => Handled::Drop,
        }
    }

    fn needs_written(&self) -> bool {
        self.unwritten.is_some() || self.injecting.is_some()
    }

    fn on_written(&mut self) {
        if let Some(ack) = self.unwritten.take() {
            self.conn.ack_event(&ack, AckPhase::Forwarded);
            self.conn.ack_forwarded(&ack);
        }
        if let Some(injected) = self.injecting.take() {
            self.conn.injected_written(injected);
        }
    }

    async fn injected(&mut self) -> Bytes {
        if !self.content.between() {
            std::future::pending::<()>().await;
        }
        let (frame, injected) = self.conn.due(Side::Broker).await;
        self.injecting = Some(injected);
        frame
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        if let Some(ack) = self.unwritten.take() {
            self.conn.ack_event(&ack, AckPhase::Dropped);
        }
    }
}

/// The broker→client direction: observed and forwarded at once (delivery tags shifted past
/// the proxy's own), with an injected copy right after a delivery an `amqp: redeliver` copies.
struct Responses {
    conn: Arc<Conn>,
    /// A forged delivery appended to the last forwarded frame, until it is written.
    forged: Option<inject::Forged>,
    /// The broker's content in flight (nothing is injected inside it).
    content: ContentFollower,
    /// An injected frame being written.
    injecting: Option<Injected>,
}

impl FrameHandler for Responses {
    fn on_frame(&mut self, frame: Bytes) -> impl std::future::Future<Output = Handled> + Send {
        let frame = self.conn.to_client(frame);
        self.content.follow(&frame);
        if self.conn.swallow_broker_frame(&frame) {
            // RabbitMQ's close-ok to the proxy's own close (`amqp: double-ack`).
            return std::future::ready(Handled::Drop);
        }
        self.conn.on_broker_frame(&frame);
        let handled = match self.conn.capture(&frame) {
            None => Handled::Forward(frame),
            Some((copy, forged)) => {
                self.forged = Some(forged);
                let mut both = bytes::BytesMut::from(&frame[..]);
                both.extend_from_slice(&copy);
                Handled::Forward(both.freeze())
            }
        };
        std::future::ready(handled)
    }

    fn needs_written(&self) -> bool {
        self.forged.is_some() || self.injecting.is_some()
    }

    fn on_written(&mut self) {
        if let Some(forged) = self.forged.take() {
            self.conn.forged_written(forged);
        }
        if let Some(injected) = self.injecting.take() {
            self.conn.injected_written(injected);
        }
    }

    async fn injected(&mut self) -> Bytes {
        if !self.content.between() {
            std::future::pending::<()>().await;
        }
        let (frame, injected) = self.conn.due(Side::Client).await;
        self.injecting = Some(injected);
        frame
    }
}

#[cfg(test)]
mod tests;
