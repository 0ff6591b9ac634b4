//! Protocol-aware TCP proxies between a consumer and its broker: the shared machinery.
//!
//! A proxy gives every consumer instance its own loopback listeners, so a connection is
//! attributed to its instance by the port it came in on. Each accepted connection gets one
//! upstream connection, and two *pumps* move whole frames (never loose bytes) between them: the
//! protocol module (`kafka.rs`, `amqp.rs`) supplies the [`Framing`] that cuts frames and
//! the [`FrameHandler`]s that turn frames into timeline events, rewrite the few that must change,
//! and hold or drop frames for the nemesis. This module owns what every protocol shares: the
//! frame reader (a partial frame means "not yet"; a clean close differs from a close
//! mid-frame), the per-instance connection [`Registry`] with the network faults (partition,
//! latency, sever), and the task accounting that lets the run wait for every proxy task.
//!
//! Invariants: listeners bind 127.0.0.1 only; bad bytes end one connection, never the proxy;
//! every task races its work against the run's stop token; a partition or latency heals by
//! itself after its length and at once when the run stops (the pumps end).

pub mod amqp;
pub mod kafka;

/// How long the proxy waits to open its connection to the real broker.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the upstream side of a proxied connection, with a deadline.
pub async fn connect_upstream(addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connecting to {addr} timed out"),
        )),
    }
}

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::plan::Target;

/// Largest frame a proxy accepts; a longer one closes the connection (a hostile or corrupt
/// length prefix must not make the proxy allocate gigabytes).
pub const MAX_FRAME: usize = 100 * 1024 * 1024;

/// Cuts whole frames out of a byte stream. Pure: looks at bytes, never reads.
pub trait Framing: Send + Sync + 'static {
    /// The length in bytes of the first whole frame at the start of `buf`; `Ok(None)` when
    /// more bytes are needed; `Err(reason)` when these bytes can never start a valid frame.
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, String>;
}

/// Why reading the next frame failed.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection in the middle of a frame.
    ClosedMidFrame,
    /// The bytes cannot be a frame (bad length, too large...).
    Malformed(String),
    /// The socket failed.
    Io(io::Error),
}

/// Reads whole frames from one side of a connection.
pub struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
}

impl<R: tokio::io::AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `reader`.
    pub fn new(reader: R) -> FrameReader<R> {
        FrameReader {
            reader,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// The next whole frame; `Ok(None)` on a clean close (between frames).
    pub async fn read_frame<F: Framing + ?Sized>(
        &mut self,
        framing: &F,
    ) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(len) = framing.frame_len(&self.buf).map_err(ReadError::Malformed)? {
                return Ok(Some(self.buf.split_to(len).freeze()));
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            let n = self
                .reader
                .read_buf(&mut self.buf)
                .await
                .map_err(ReadError::Io)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::ClosedMidFrame)
                };
            }
        }
    }
}

/// Splits every frame found in `input` with `framing`, as a reader would: the frames, and
/// then `Ok(rest)` (a partial frame, possibly empty) or the error that stopped it. Used by
/// tests and the fuzzer to check the framing without sockets.
pub fn split_frames<F: Framing + ?Sized>(
    framing: &F,
    input: &[u8],
) -> (Vec<Bytes>, Result<usize, String>) {
    let mut buf = Bytes::copy_from_slice(input);
    let mut frames = Vec::new();
    loop {
        match framing.frame_len(&buf) {
            Ok(Some(len)) => {
                if len == 0 || len > buf.len() {
                    return (frames, Err(format!("framing returned a bad length {len}")));
                }
                frames.push(buf.split_to(len));
            }
            Ok(None) => return (frames, Ok(buf.remaining())),
            Err(e) => return (frames, Err(e)),
        }
    }
}

/// What a handler decided about one frame.
#[derive(Debug)]
pub enum Handled {
    /// Write these bytes to the other side (the frame itself, or its rewrite).
    Forward(Bytes),
    /// Never forward this frame (a held request the nemesis withheld).
    Drop,
    /// Close the whole connection, for this reason.
    Close(String),
}

/// Protocol logic for one direction of one connection.
pub trait FrameHandler: Send {
    /// Handles one whole frame; may wait (a hold), and records the events it implies.
    fn on_frame(&mut self, frame: Bytes) -> impl Future<Output = Handled> + Send;

    /// Called once the bytes of the last [`Handled::Forward`] were written to the other
    /// side's socket (for events that must say "it reached the broker"). Not called when the
    /// write failed or the connection ended first. Default: nothing.
    fn on_written(&mut self) {}
}

/// Why one direction of a connection stopped.
#[derive(Debug)]
pub enum PumpEnd {
    /// The sending side closed cleanly, between frames.
    Closed,
    /// The sending side closed in the middle of a frame.
    ClosedMidFrame,
    /// Bad bytes, or a handler asked to close: the reason.
    Malformed(String),
    /// A socket failed.
    Io(io::Error),
}

/// Moves frames from `from` to `to` through `handler`, obeying the instance's network faults.
pub async fn pump<F: Framing + ?Sized, H: FrameHandler>(
    from: &mut FrameReader<OwnedReadHalf>,
    to: &mut OwnedWriteHalf,
    framing: &F,
    handler: &mut H,
    faults: &FaultView,
) -> PumpEnd {
    loop {
        let frame = match from.read_frame(framing).await {
            Ok(Some(f)) => f,
            Ok(None) => return PumpEnd::Closed,
            Err(ReadError::ClosedMidFrame) => return PumpEnd::ClosedMidFrame,
            Err(ReadError::Malformed(r)) => return PumpEnd::Malformed(r),
            Err(ReadError::Io(e)) => return PumpEnd::Io(e),
        };
        let read_at = Instant::now();
        // Faults before handling: a partitioned connection neither forwards nor reports.
        faults.pass(read_at).await;
        match handler.on_frame(frame).await {
            Handled::Forward(bytes) => {
                if let Err(e) = to.write_all(&bytes).await {
                    return PumpEnd::Io(e);
                }
                handler.on_written();
            }
            Handled::Drop => {}
            Handled::Close(reason) => return PumpEnd::Malformed(reason),
        }
    }
}

/// How one proxied connection ended.
#[derive(Debug)]
pub enum ConnEnd {
    /// The client (consumer) side ended.
    Client(PumpEnd),
    /// The upstream (broker) side ended.
    Upstream(PumpEnd),
    /// A `sever` fault closed it with a reset.
    Severed,
    /// The run stopped.
    Stopped,
}

/// Runs one connection: the client→upstream and upstream→client pumps until either ends,
/// the connection is severed (both sockets closed with RST) or the run stops.
pub async fn serve_connection<F, Q, R>(
    client: TcpStream,
    upstream: TcpStream,
    framing: &F,
    requests: &mut Q,
    responses: &mut R,
    faults: &FaultView,
) -> ConnEnd
where
    F: Framing + ?Sized,
    Q: FrameHandler,
    R: FrameHandler,
{
    let (client_r, mut client_w) = client.into_split();
    let (upstream_r, mut upstream_w) = upstream.into_split();
    let mut client_r = FrameReader::new(client_r);
    let mut upstream_r = FrameReader::new(upstream_r);
    let end = tokio::select! {
        e = pump(&mut client_r, &mut upstream_w, framing, requests, faults) => ConnEnd::Client(e),
        e = pump(&mut upstream_r, &mut client_w, framing, responses, faults) => ConnEnd::Upstream(e),
        _ = faults.sever.cancelled() => ConnEnd::Severed,
        _ = faults.stop.cancelled() => ConnEnd::Stopped,
    };
    if matches!(end, ConnEnd::Severed) {
        // SO_LINGER 0: dropping the socket sends RST instead of FIN, on both sides. (tokio
        // deprecates set_linger because a non-zero linger blocks the thread on drop; a zero
        // linger never blocks: the kernel discards the buffers and resets at once.)
        #[allow(deprecated)]
        let _ = client_w.as_ref().set_linger(Some(Duration::ZERO));
        #[allow(deprecated)]
        let _ = upstream_w.as_ref().set_linger(Some(Duration::ZERO));
    }
    end
}

/// A loopback listener on a port the OS picks. Bound synchronously so the port is known (and
/// accepting) before anyone can be told about it.
pub fn bind_loopback() -> io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// Counts the proxy's live tasks so the run can wait for them after `stop`.
#[derive(Clone)]
pub struct Tasks {
    live: Arc<watch::Sender<usize>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            live: Arc::new(watch::channel(0).0),
        }
    }
}

struct TaskGuard(Arc<watch::Sender<usize>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Tasks {
    /// Spawns a counted task.
    pub fn spawn<Fut>(&self, fut: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.live.send_modify(|n| *n += 1);
        let guard = TaskGuard(self.live.clone());
        tokio::spawn(async move {
            let _guard = guard;
            fut.await;
        });
    }

    /// Tasks still running.
    pub fn live(&self) -> usize {
        *self.live.borrow()
    }

    /// Waits until every counted task has ended, at most `deadline`; false on timeout.
    pub async fn join(&self, deadline: Duration) -> bool {
        let mut rx = self.live.subscribe();
        let done = tokio::time::timeout(deadline, rx.wait_for(|n| *n == 0))
            .await
            .is_ok();
        done
    }
}

/// Accepts connections on `listener` until `stop`, handing each to `on_accept`.
pub fn spawn_accept_loop<A, Fut>(
    tasks: &Tasks,
    listener: TcpListener,
    stop: CancellationToken,
    on_accept: A,
) where
    A: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let inner_tasks = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.cancelled() => return,
            };
            match accepted {
                Ok((stream, _)) => inner_tasks.spawn(on_accept(stream)),
                // Transient (EMFILE, aborted handshake): back off briefly, keep listening.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
}

/// The network faults in force on one instance.
#[derive(Debug, Default, Clone, Copy)]
struct InstanceFaults {
    partition_until: Option<Instant>,
    latency: Option<(Duration, Instant)>,
}

struct RegistryInner {
    next_id: u64,
    conns: Vec<HashMap<u64, CancellationToken>>,
    faults: Vec<InstanceFaults>,
}

/// The live proxied connections of every instance, and the network faults on them. A fault
/// is set per instance, so connections the instance opens while it lasts obey it too.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<RegistryInner>>,
    stop: CancellationToken,
}

/// A connection's entry in the registry; removed on drop.
pub struct ConnGuard {
    registry: Registry,
    instance: u32,
    id: u64,
    /// What the connection's pumps consult.
    pub view: FaultView,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(conns) = inner.conns.get_mut(self.instance as usize) {
            conns.remove(&self.id);
        }
    }
}

/// One connection's view of its instance's faults.
#[derive(Clone)]
pub struct FaultView {
    registry: Registry,
    instance: u32,
    /// Cancelled by `sever`.
    pub sever: CancellationToken,
    /// The run's stop token.
    pub stop: CancellationToken,
}

impl FaultView {
    /// Waits while the instance is partitioned, then for the latency in force (counted from
    /// `read_at`, when the frame arrived). Returns at once when the run stops or the
    /// connection is severed (the connection ends then anyway).
    pub async fn pass(&self, read_at: Instant) {
        loop {
            let faults = self.registry.faults(self.instance);
            let now = Instant::now();
            if let Some(until) = faults.partition_until.filter(|u| *u > now) {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => continue,
                    _ = self.stop.cancelled() => return,
                    _ = self.sever.cancelled() => return,
                }
            }
            if let Some((delay, until)) = faults.latency {
                if until > now {
                    tokio::select! {
                        _ = tokio::time::sleep_until(read_at + delay) => {}
                        _ = self.stop.cancelled() => {}
                        _ = self.sever.cancelled() => {}
                    }
                }
            }
            return;
        }
    }
}

impl Registry {
    /// A registry for `instances` instances; faults heal when `stop` is cancelled.
    pub fn new(instances: u32, stop: CancellationToken) -> Registry {
        Registry {
            inner: Arc::new(Mutex::new(RegistryInner {
                next_id: 0,
                conns: (0..instances).map(|_| HashMap::new()).collect(),
                faults: vec![InstanceFaults::default(); instances as usize],
            })),
            stop,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        // Poison only means a panic elsewhere mid-update of plain data; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn faults(&self, instance: u32) -> InstanceFaults {
        self.lock()
            .faults
            .get(instance as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Registers a new connection of `instance`.
    pub fn register(&self, instance: u32) -> ConnGuard {
        let sever = CancellationToken::new();
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        if let Some(conns) = inner.conns.get_mut(instance as usize) {
            conns.insert(id, sever.clone());
        }
        drop(inner);
        ConnGuard {
            registry: self.clone(),
            instance,
            id,
            view: FaultView {
                registry: self.clone(),
                instance,
                sever,
                stop: self.stop.clone(),
            },
        }
    }

    /// Live connections per instance.
    pub fn connections(&self, instance: u32) -> usize {
        self.lock()
            .conns
            .get(instance as usize)
            .map_or(0, HashMap::len)
    }

    fn instances_of(&self, target: Target) -> Vec<usize> {
        let n = self.lock().conns.len();
        match target {
            Target::AllInstances => (0..n).collect(),
            Target::Instance(i) if (i as usize) < n => vec![i as usize],
            Target::Instance(_) => vec![],
        }
    }

    /// Applies `set` to the target's instances if they have at least one connection; returns
    /// how many connections the fault covers now.
    fn apply(&self, target: Target, set: impl Fn(&mut InstanceFaults)) -> usize {
        let instances = self.instances_of(target);
        let mut inner = self.lock();
        let hit: usize = instances.iter().map(|&i| inner.conns[i].len()).sum();
        if hit > 0 {
            for &i in &instances {
                set(&mut inner.faults[i]);
            }
        }
        hit
    }

    /// Stops forwarding both ways on the target's connections for `length`.
    pub fn partition(&self, target: Target, length: Duration) -> Option<String> {
        let until = Instant::now() + length;
        let hit = self.apply(target, |f| f.partition_until = Some(until));
        (hit > 0).then(|| {
            format!(
                "partitioned {target}: {hit} connection{} for {}",
                plural(hit),
                humantime::format_duration(length)
            )
        })
    }

    /// Delays every frame on the target's connections by `delay`, for `length`.
    pub fn latency(&self, target: Target, delay: Duration, length: Duration) -> Option<String> {
        let until = Instant::now() + length;
        let hit = self.apply(target, |f| f.latency = Some((delay, until)));
        (hit > 0).then(|| {
            format!(
                "delayed {target}: {hit} connection{} by {} for {}",
                plural(hit),
                humantime::format_duration(delay),
                humantime::format_duration(length)
            )
        })
    }

    /// Closes the target's connections with a reset on both sides.
    pub fn sever(&self, target: Target) -> Option<String> {
        let instances = self.instances_of(target);
        let inner = self.lock();
        let mut hit = 0;
        for &i in &instances {
            for token in inner.conns[i].values() {
                token.cancel();
                hit += 1;
            }
        }
        (hit > 0).then(|| format!("severed {target}: {hit} connection{} (RST)", plural(hit)))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Len1;
    impl Framing for Len1 {
        fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
            match buf.first() {
                None => Ok(None),
                Some(0) => Err("zero length".into()),
                Some(&n) if buf.len() > n as usize => Ok(Some(n as usize + 1)),
                Some(_) => Ok(None),
            }
        }
    }

    #[test]
    fn frames_split_and_partial_frame_means_not_yet() {
        let (frames, rest) = split_frames(&Len1, &[1, 9, 2, 7, 7, 3, 1]);
        assert_eq!(frames.len(), 2);
        assert_eq!(rest, Ok(2));
        let (_, rest) = split_frames(&Len1, &[0]);
        assert!(rest.is_err());
    }

    #[tokio::test]
    async fn faults_need_a_connection_and_describe_what_they_hit() {
        let registry = Registry::new(2, CancellationToken::new());
        assert_eq!(
            registry.partition(Target::Instance(0), Duration::from_secs(1)),
            None
        );
        let guard = registry.register(0);
        let _other = registry.register(1);
        assert_eq!(
            registry
                .partition(Target::Instance(0), Duration::from_secs(10))
                .as_deref(),
            Some("partitioned consumer[0]: 1 connection for 10s")
        );
        assert_eq!(
            registry.sever(Target::AllInstances).as_deref(),
            Some("severed consumer: 2 connections (RST)")
        );
        assert!(guard.view.sever.is_cancelled());
        drop(guard);
        assert_eq!(registry.connections(0), 0);
    }

    #[tokio::test]
    async fn a_partition_holds_frames_until_it_heals() {
        let registry = Registry::new(1, CancellationToken::new());
        let guard = registry.register(0);
        registry.partition(Target::Instance(0), Duration::from_millis(200));
        let start = Instant::now();
        guard.view.pass(start).await;
        assert!(start.elapsed() >= Duration::from_millis(200));
    }
}
