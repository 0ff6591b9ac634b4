//! The pump: moves whole frames from one side of a proxied connection to the other through a
//! protocol's [`FrameHandler`], under the instance's network faults; and [`serve_connection`],
//! which runs the two pumps of one connection until either side ends, a `sever` fault resets it
//! or the run stops.
//!
//! Invariants: frames leave in the order they came; frames read together leave in one write,
//! but nothing waits behind the gathering (the gathered bytes are written before any hold,
//! fault wait or socket read); a handler that asks hears once its frame is on the other side's
//! socket.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::faults::FaultView;
use super::frames::{FrameReader, Framing, ReadError};

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

    /// Frames the handler makes up itself (a protocol fault it injects), ready while the pump
    /// waits for the sending side with no whole frame left: the pump writes them, then calls
    /// [`FrameHandler::on_written`] if [`FrameHandler::needs_written`]. Must be cancel-safe
    /// (it loses every race with a read). Default: never.
    fn injected(&mut self) -> impl Future<Output = Bytes> + Send {
        std::future::pending()
    }
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
                let filled = tokio::select! {
                    filled = from.fill(framing) => filled,
                    bytes = handler.injected() => {
                        // A made-up frame obeys the network faults as a forwarded one does.
                        faults.pass(Instant::now()).await;
                        if let Err(e) = to.write_all(&bytes).await {
                            return PumpEnd::Io(e);
                        }
                        if handler.needs_written() {
                            handler.on_written();
                        }
                        continue;
                    }
                };
                match filled {
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
