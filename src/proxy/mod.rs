//! Protocol-aware TCP proxies between a consumer and its broker.
//!
//! A proxy gives every consumer instance its own loopback listeners, so a connection is
//! attributed to its instance by the port it came in on. Each accepted connection gets one
//! upstream connection, and two *pumps* move whole frames (never loose bytes) between them: the
//! protocol module ([`kafka`], [`amqp`]) supplies the [`Framing`] that cuts frames and the
//! [`FrameHandler`]s that turn frames into timeline events, rewrite the few that must change,
//! and hold or drop frames for the nemesis. What every protocol shares lives beside them, a job
//! per file:
//!
//! - `frames.rs`: the [`Framing`] contract and the [`FrameReader`] (a partial frame means "not
//!   yet"; a clean close differs from a close mid-frame);
//! - `pump.rs`: the pump (frames that arrive together leave in one write, and nothing waits
//!   behind a held frame) and [`serve_connection`], one connection's two pumps;
//! - `faults.rs`: the per-instance connection [`Registry`] with the network faults (partition,
//!   latency, sever);
//! - `tasks.rs`: the task accounting that lets the run wait for every proxy task, and the
//!   accept loop;
//! - this file: the two socket helpers (a loopback listener, an upstream connection) and the
//!   bypass check (which sockets of a consumer process reach the broker directly).
//!
//! Invariants: listeners bind 127.0.0.1 only; bad bytes end one connection, never the proxy;
//! every task races its work against the run's stop token; a partition or latency heals by
//! itself after its length and at once when the run stops (the pumps end).

pub mod amqp;
pub mod control;
mod faults;
mod frames;
pub mod kafka;
mod pump;
mod tasks;

pub use faults::{ConnGuard, FaultView, Registry};
pub use frames::{split_frames, FrameReader, Framing, ReadError, MAX_FRAME};
pub use pump::{pump, serve_connection, ConnEnd, FrameHandler, Handled, PumpEnd};
pub use tasks::{spawn_accept_loop, Tasks};

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use tokio::net::{TcpListener, TcpStream};

use crate::procfs::TcpRow;

/// How long the proxy waits to open its connection to the real broker.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the upstream side of a proxied connection, with a deadline.
pub async fn connect_upstream(addr: &str) -> io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {addr} timed out"),
        )),
    }
}

/// A loopback listener on a port the OS picks. Bound synchronously so the port is known (and
/// accepting) before anyone can be told about it.
pub fn bind_loopback() -> io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// Every socket address `addrs` ("host:port") resolve to, each as the kernel's tables show it
/// (IPv4-mapped IPv6 as IPv4); an address that does not resolve is left out. Resolves names:
/// call it when the list changes, not per process.
pub fn resolve_all(addrs: &[String]) -> HashSet<SocketAddr> {
    addrs
        .iter()
        .filter_map(|a| a.to_socket_addrs().ok())
        .flatten()
        .map(crate::procfs::canonical)
        .collect()
}

/// The TCP sockets of process `pid` connected (or connecting) to one of `brokers`, read from
/// `/proc`: a consumer socket connected straight to a broker bypassed the proxy. Empty when
/// none, or when the process is gone.
pub fn direct_sockets(pid: u32, brokers: &HashSet<SocketAddr>) -> Vec<TcpRow> {
    crate::procfs::process_sockets(pid)
        .into_iter()
        .filter(|row| brokers.contains(&row.remote))
        .collect()
}

#[cfg(test)]
mod tests;
