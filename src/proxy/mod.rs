//! Protocol-aware TCP proxies between a consumer and its broker: the shared machinery.
//!
//! A proxy gives every consumer instance its own loopback listeners, so a connection is
//! attributed to its instance by the port it came in on. Each accepted connection gets one
//! upstream connection, and two *pumps* move whole frames (never loose bytes) between them: the
//! protocol module (`kafka.rs`, `amqp.rs`) supplies the [`Framing`] that cuts frames and
//! the [`FrameHandler`]s that turn frames into timeline events, rewrite the few that must change,
//! and hold or drop frames for the nemesis. This module owns what every protocol shares: the
//! frame reader (a partial frame means "not yet"; a clean close differs from a close
//! mid-frame), the pump (frames that arrive together leave in one write, and nothing waits
//! behind a held frame), the per-instance connection [`Registry`] with the network faults
//! (partition, latency, sever), and the task accounting that lets the run wait for every
//! proxy task.
//!
//! Invariants: listeners bind 127.0.0.1 only; bad bytes end one connection, never the proxy;
//! every task races its work against the run's stop token; a partition or latency heals by
//! itself after its length and at once when the run stops (the pumps end).

pub mod amqp;
pub mod control;
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

    /// The whole length of the frame starting `buf` when its first bytes already tell it (a
    /// length prefix), before the frame is whole: the reader then makes room for all of it at
    /// once instead of growing (and copying) its buffer as a large frame arrives. Only a hint:
    /// [`Framing::frame_len`] still decides. Default: unknown.
    fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        let _ = buf;
        None
    }
}

/// The most room a reader makes at once from a [`Framing::frame_len_hint`]: a larger frame
/// grows the buffer as it arrives (a hostile prefix must not make the proxy allocate up to
/// [`MAX_FRAME`] before any byte of it came).
const MAX_RESERVE: usize = 16 * 1024 * 1024;

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
            if let Some(frame) = self.buffered_frame(framing)? {
                return Ok(Some(frame));
            }
            if !self.fill(framing).await? {
                return Ok(None);
            }
        }
    }

    /// The next whole frame if it is already buffered (no reading); `Ok(None)` when more
    /// bytes must be read first.
    pub fn buffered_frame<F: Framing + ?Sized>(
        &mut self,
        framing: &F,
    ) -> Result<Option<Bytes>, ReadError> {
        match framing.frame_len(&self.buf).map_err(ReadError::Malformed)? {
            Some(len) => Ok(Some(self.buf.split_to(len).freeze())),
            None => Ok(None),
        }
    }

    /// Reads what the socket has (waiting for at least one byte): `Ok(true)` when bytes came,
    /// `Ok(false)` on a clean close between frames.
    pub async fn fill<F: Framing + ?Sized>(&mut self, framing: &F) -> Result<bool, ReadError> {
        let spare = self.buf.capacity() - self.buf.len();
        let wanted = framing
            .frame_len_hint(&self.buf)
            .map_or(0, |total| total.saturating_sub(self.buf.len()))
            .min(MAX_RESERVE);
        if spare < wanted {
            self.buf.reserve(wanted);
        } else if spare < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        let n = self
            .reader
            .read_buf(&mut self.buf)
            .await
            .map_err(ReadError::Io)?;
        if n == 0 {
            return if self.buf.is_empty() {
                Ok(false)
            } else {
                Err(ReadError::ClosedMidFrame)
            };
        }
        Ok(true)
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

    /// Asked right after a [`Handled::Forward`]: true when the handler must hear (through
    /// [`FrameHandler::on_written`]) that those bytes were written. The pump then writes them
    /// at once instead of gathering them with the next frames. Default: false.
    fn needs_written(&self) -> bool {
        false
    }

    /// Called once the bytes of the last [`Handled::Forward`] were written to the other
    /// side's socket, when [`FrameHandler::needs_written`] asked for it (for events that must
    /// say "it reached the other side"). Not called when the write failed or the connection
    /// ended first. Default: nothing.
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

/// Frames at most this large are gathered into one write with the frames read with them; a
/// larger one is written from its own buffer (no copy).
const GATHER_MAX: usize = 64 * 1024;

/// Moves frames from `from` to `to` through `handler`, obeying the instance's network faults.
///
/// Writes are gathered: the frames that arrived together (one read of the socket) are handled
/// one by one, in order, and their forwarded bytes go out in one write once no whole frame is
/// left to handle, rather than one write per frame (a delivery of three small AMQP frames was
/// three system calls). Nothing waits behind the gathering: before any wait (a held frame, a
/// partition or latency fault, reading the socket) the gathered bytes are written first, and a
/// handler that needs to know its frame was written ([`FrameHandler::needs_written`]) gets it
/// written at once.
pub async fn pump<F: Framing + ?Sized, H: FrameHandler>(
    from: &mut FrameReader<OwnedReadHalf>,
    to: &mut OwnedWriteHalf,
    framing: &F,
    handler: &mut H,
    faults: &FaultView,
) -> PumpEnd {
    let mut out = BytesMut::new();
    loop {
        let frame = match from.buffered_frame(framing) {
            Ok(Some(f)) => f,
            Ok(None) => {
                // Nothing whole left to handle: out with what is gathered, then read.
                if let Err(e) = flush(to, &mut out).await {
                    return PumpEnd::Io(e);
                }
                match from.fill(framing).await {
                    Ok(true) => continue,
                    Ok(false) => return PumpEnd::Closed,
                    Err(ReadError::ClosedMidFrame) => return PumpEnd::ClosedMidFrame,
                    Err(ReadError::Malformed(r)) => return PumpEnd::Malformed(r),
                    Err(ReadError::Io(e)) => return PumpEnd::Io(e),
                }
            }
            Err(e) => {
                // The frames before the bad bytes still go through, as they would have one by
                // one.
                if let Err(e) = flush(to, &mut out).await {
                    return PumpEnd::Io(e);
                }
                return match e {
                    ReadError::ClosedMidFrame => PumpEnd::ClosedMidFrame,
                    ReadError::Malformed(r) => PumpEnd::Malformed(r),
                    ReadError::Io(e) => PumpEnd::Io(e),
                };
            }
        };
        let read_at = Instant::now();
        // Faults before handling: a partitioned connection neither forwards nor reports.
        if let Err(e) = flush_if_waiting(faults.pass(read_at), to, &mut out).await {
            return PumpEnd::Io(e);
        }
        let handled = match flush_if_waiting(handler.on_frame(frame), to, &mut out).await {
            Ok(h) => h,
            Err(e) => return PumpEnd::Io(e),
        };
        match handled {
            Handled::Forward(bytes) => {
                let written = if bytes.len() > GATHER_MAX {
                    match flush(to, &mut out).await {
                        Ok(()) => to.write_all(&bytes).await,
                        Err(e) => Err(e),
                    }
                } else {
                    out.extend_from_slice(&bytes);
                    if handler.needs_written() || out.len() > GATHER_MAX {
                        flush(to, &mut out).await
                    } else {
                        Ok(())
                    }
                };
                if let Err(e) = written {
                    return PumpEnd::Io(e);
                }
                if handler.needs_written() {
                    // Large frames were written above; a small one was flushed with `out`.
                    handler.on_written();
                }
            }
            Handled::Drop => {}
            Handled::Close(reason) => {
                if let Err(e) = flush(to, &mut out).await {
                    return PumpEnd::Io(e);
                }
                return PumpEnd::Malformed(reason);
            }
        }
    }
}

/// Writes the gathered bytes, if any.
async fn flush(to: &mut OwnedWriteHalf, out: &mut BytesMut) -> io::Result<()> {
    if !out.is_empty() {
        to.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Runs `work`; if it cannot finish at once (a hold, a fault's wait), writes the gathered
/// bytes first, so frames handled before never wait behind it.
async fn flush_if_waiting<T>(
    work: impl Future<Output = T>,
    to: &mut OwnedWriteHalf,
    out: &mut BytesMut,
) -> io::Result<T> {
    let mut work = std::pin::pin!(work);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(work.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(v) = first {
        return Ok(v);
    }
    flush(to, out).await?;
    Ok(work.await)
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

    /// Holds frames starting with 0xFF until `release` fires; asks to hear when 0xEE frames
    /// were written.
    struct HoldFf {
        release: Option<tokio::sync::oneshot::Receiver<()>>,
        written: Arc<Mutex<Vec<u8>>>,
        last: u8,
    }

    impl FrameHandler for HoldFf {
        async fn on_frame(&mut self, frame: Bytes) -> Handled {
            if frame[1] == 0xff {
                if let Some(rx) = self.release.take() {
                    let _ = rx.await;
                }
            }
            self.last = frame[1];
            Handled::Forward(frame)
        }

        fn needs_written(&self) -> bool {
            self.last == 0xee
        }

        fn on_written(&mut self) {
            self.written.lock().unwrap().push(self.last);
        }
    }

    /// Frames that arrive together go out together, but a held frame never keeps the frames
    /// before it from being written, and a handler that asks hears that its frame was written.
    #[tokio::test]
    async fn gathered_writes_never_wait_behind_a_held_frame() {
        let listener = bind_loopback().unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut sender, accepted) =
            tokio::join!(async { TcpStream::connect(addr).await.unwrap() }, async {
                listener.accept().await.unwrap().0
            });
        let listener = bind_loopback().unwrap();
        let addr = listener.local_addr().unwrap();
        let (out, mut receiver) =
            tokio::join!(async { TcpStream::connect(addr).await.unwrap() }, async {
                listener.accept().await.unwrap().0
            });
        let (from, _) = accepted.into_split();
        let (_, mut to) = out.into_split();
        let (release, rx) = tokio::sync::oneshot::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let mut handler = HoldFf {
            release: Some(rx),
            written: written.clone(),
            last: 0,
        };
        let registry = Registry::new(1, CancellationToken::new());
        let guard = registry.register(0);
        let pump = tokio::spawn(async move {
            let mut from = FrameReader::new(from);
            pump(&mut from, &mut to, &Len1, &mut handler, &guard.view).await
        });
        // Four frames in one write: 1, ff (held), ee, 2.
        sender
            .write_all(&[1, 1, 1, 0xff, 1, 0xee, 1, 2])
            .await
            .unwrap();
        let mut got = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), receiver.read_exact(&mut got))
            .await
            .expect("the frame before the held one is written while it waits")
            .unwrap();
        assert_eq!(got, [1, 1]);
        assert!(written.lock().unwrap().is_empty());
        release.send(()).unwrap();
        let mut got = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(5), receiver.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, [1, 0xff, 1, 0xee, 1, 2]);
        drop(sender);
        assert!(matches!(pump.await.unwrap(), PumpEnd::Closed));
        assert_eq!(*written.lock().unwrap(), [0xee]);
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
