//! The bypass check of the watch phase: about once a second, the processes of every live
//! consumer incarnation (its process group, and every descendant of it, whatever group or
//! session it moved to) are looked up in `/proc` for TCP sockets connected straight to the
//! broker: the Kafka bootstrap and every broker node the proxy learned of, or the AMQP
//! `host:port`. Each such connection becomes one `bypass` event the first time it is seen;
//! network faults do not reach it and the proxy sees none of its commits, acks or deliveries,
//! which the judge takes into account. With `consumer.bypass: fatal` the first one ends the run
//! (exit 4), naming it.
//!
//! Invariants: the check only observes (it never signals a process); a process that vanishes
//! mid-scan is skipped, never an error (procfs's rule); names are resolved only when the proxy's
//! list of broker addresses changes; the TCP tables are read once per network namespace per
//! look; the scan runs on a blocking thread, off the runtime the proxy forwards on. A connection opened and closed between two looks is not seen: the check
//! is a sampling, which is why the judge treats a bypassing incarnation as bypassing for its
//! whole life.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::proxy::Proxy;
use crate::plan::BypassPolicy;
use crate::procfs;
use crate::proxy::resolve_all;
use crate::timeline::{Event, Timeline};

/// How often the consumers' sockets are looked at.
const BYPASS_INTERVAL: Duration = Duration::from_secs(1);

/// A live consumer incarnation: instance, incarnation, process group id.
type Live = (u32, u32, u32);

/// One consumer socket connected straight to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    instance: u32,
    incarnation: u32,
    pid: u32,
    local: SocketAddr,
    remote: SocketAddr,
}

impl Found {
    fn describe(&self) -> String {
        format!(
            "consumer[{}] incarnation {} (pid {}) connected straight to the broker: {} -> {}",
            self.instance, self.incarnation, self.pid, self.local, self.remote
        )
    }
}

/// The broker addresses as the proxy last listed them, and what they resolve to.
#[derive(Default)]
struct Brokers {
    listed: Vec<String>,
    resolved: Arc<HashSet<SocketAddr>>,
}

/// The bypass check of one run: when to look next, and what it has seen.
pub(super) struct BypassWatch {
    policy: BypassPolicy,
    next_at: Instant,
    brokers: Brokers,
    /// Connections already recorded, by (local, remote).
    seen: HashSet<(SocketAddr, SocketAddr)>,
    /// The first bypass, described, when the plan makes a bypass fatal.
    fatal: Option<String>,
}

impl BypassWatch {
    /// A check for a run whose plan says `policy`; the first look is due at once.
    pub(super) fn new(policy: BypassPolicy) -> BypassWatch {
        BypassWatch {
            policy,
            next_at: Instant::now(),
            brokers: Brokers::default(),
            seen: HashSet::new(),
            fatal: None,
        }
    }

    /// The first bypass, described, once there is one and the plan makes it fatal.
    pub(super) fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// Looks when a look is due (once per [`BYPASS_INTERVAL`]).
    pub(super) async fn look_if_due(&mut self, proxy: &Proxy, live: Vec<Live>, tl: &Timeline) {
        let now = Instant::now();
        if now < self.next_at {
            return;
        }
        self.next_at = now + BYPASS_INTERVAL;
        self.look(proxy, live, tl).await;
    }

    /// Looks now: records a `bypass` event for every connection not seen before.
    pub(super) async fn look(&mut self, proxy: &Proxy, live: Vec<Live>, tl: &Timeline) {
        if live.is_empty() {
            return;
        }
        let listed = proxy.broker_addresses();
        let stale = listed != self.brokers.listed;
        let resolved = self.brokers.resolved.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            let resolved = if stale {
                Arc::new(resolve_all(&listed))
            } else {
                resolved
            };
            let found = scan(Path::new("/proc"), &live, &resolved);
            (listed, resolved, found)
        })
        .await;
        // The scan panicking would be a bug in it; a missed look is not worth the run.
        let Ok((listed, resolved, found)) = scanned else {
            return;
        };
        self.brokers = Brokers { listed, resolved };
        for f in found {
            if !self.seen.insert((f.local, f.remote)) {
                continue;
            }
            self.record(&f, tl);
        }
    }

    fn record(&mut self, f: &Found, tl: &Timeline) {
        tl.record(Event::Bypass {
            instance: f.instance,
            incarnation: f.incarnation,
            pid: f.pid,
            local: f.local.to_string(),
            remote: f.remote.to_string(),
        });
        let what = f.describe();
        match self.policy {
            BypassPolicy::Fatal => {
                self.fatal.get_or_insert(what);
            }
            BypassPolicy::Warn => {
                if self.seen.len() == 1 {
                    eprintln!(
                        "exactly: warning: {what}, past the proxy: faults applied through the \
                         proxy do not reach it (`consumer.bypass: fatal` ends the run on it)"
                    );
                }
            }
        }
    }
}

/// Every socket of the live consumers' processes connected to one of `brokers`. Each
/// process's socket descriptors are listed; the TCP tables are read once per network
/// namespace (the kernel generates them on each read, at a cost that grows with the host's
/// connections).
fn scan(proc: &Path, live: &[Live], brokers: &HashSet<SocketAddr>) -> Vec<Found> {
    if brokers.is_empty() {
        return Vec::new();
    }
    // socket inode → (pid, instance, incarnation); one process per namespace to read tables.
    let mut holders: HashMap<u64, (u32, u32, u32)> = HashMap::new();
    let mut namespaces: HashMap<Option<PathBuf>, u32> = HashMap::new();
    for (pid, (instance, incarnation)) in consumer_processes(proc, live) {
        let inodes = procfs::socket_inodes(proc, pid);
        if inodes.is_empty() {
            continue;
        }
        for inode in inodes {
            holders.insert(inode, (pid, instance, incarnation));
        }
        namespaces
            .entry(procfs::network_namespace(proc, pid))
            .or_insert(pid);
    }
    let mut found: Vec<Found> = namespaces
        .into_values()
        .flat_map(|pid| procfs::tcp_rows(proc, pid))
        .filter(|row| brokers.contains(&row.remote))
        .filter_map(|row| {
            let &(pid, instance, incarnation) = holders.get(&row.inode)?;
            Some(Found {
                instance,
                incarnation,
                pid,
                local: row.local,
                remote: row.remote,
            })
        })
        .collect();
    found.sort_by_key(|f| (f.instance, f.incarnation, f.pid, f.local));
    found.dedup();
    found
}

/// Which consumer incarnation each process belongs to: every member of a live process group,
/// and every descendant of those (a child that left the group with `setsid` still works for
/// its incarnation), by a walk over `proc`'s `PID/stat` files.
fn consumer_processes(proc: &Path, live: &[Live]) -> HashMap<u32, (u32, u32)> {
    let by_group: HashMap<u32, (u32, u32)> = live
        .iter()
        .map(|&(instance, incarnation, pgid)| (pgid, (instance, incarnation)))
        .collect();
    // pid → (parent, group), for every process that can be read.
    let table: Vec<(u32, u32, u32)> = procfs::pids(proc)
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
            Some((
                pid,
                procfs::parse_stat_ppid(&stat)?,
                procfs::parse_stat_pgrp(&stat)?,
            ))
        })
        .collect();
    let mut owner: HashMap<u32, (u32, u32)> = table
        .iter()
        .filter_map(|&(pid, _, pgrp)| Some((pid, *by_group.get(&pgrp)?)))
        .collect();
    // Descendants, to a fixed point (one pass per generation).
    loop {
        let adopted: Vec<(u32, (u32, u32))> = table
            .iter()
            .filter(|(pid, _, _)| !owner.contains_key(pid))
            .filter_map(|&(pid, ppid, _)| Some((pid, *owner.get(&ppid)?)))
            .collect();
        if adopted.is_empty() {
            return owner;
        }
        owner.extend(adopted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc` with one `PID/stat` per (pid, command, ppid, pgrp).
    fn fake_proc(rows: &[(u32, &str, u32, u32)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for &(pid, comm, ppid, pgrp) in rows {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir(&d).unwrap();
            let stat = format!("{pid} ({comm}) S {ppid} {pgrp} {pgrp} 0 -1 4194560 0 0");
            std::fs::write(d.join("stat"), stat).unwrap();
        }
        std::fs::create_dir(dir.path().join("self-not-a-pid")).unwrap();
        dir
    }

    #[test]
    fn a_group_and_every_descendant_belong_to_the_incarnation_even_after_setsid() {
        let proc = fake_proc(&[
            (100, "launcher", 1, 100),
            (101, "worker (a)", 100, 100),
            (200, "daemon", 101, 200), // left the group with setsid
            (201, "daemon child", 200, 200),
            (300, "bystander", 1, 300),
            (400, "other consumer", 1, 400),
        ]);
        let owner = consumer_processes(proc.path(), &[(0, 1, 100), (1, 3, 400)]);
        let mut got: Vec<(u32, (u32, u32))> = owner.into_iter().collect();
        got.sort();
        assert_eq!(
            got,
            [
                (100, (0, 1)),
                (101, (0, 1)),
                (200, (0, 1)),
                (201, (0, 1)),
                (400, (1, 3))
            ]
        );
        assert!(consumer_processes(proc.path(), &[]).is_empty());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn a_socket_to_a_broker_address_is_found_and_others_are_not() {
        let broker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _direct = std::net::TcpStream::connect(broker.local_addr().unwrap()).unwrap();
        let _fine = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        // This test process plays the consumer: its own group is the live group.
        let me = nix::unistd::getpgrp().as_raw() as u32;
        let brokers = resolve_all(&[broker.local_addr().unwrap().to_string()]);
        let found = scan(Path::new("/proc"), &[(0, 1, me)], &brokers);
        assert!(
            found
                .iter()
                .any(|f| f.remote == broker.local_addr().unwrap()
                    && f.pid == std::process::id()
                    && (f.instance, f.incarnation) == (0, 1)),
            "{found:?}"
        );
        assert!(found
            .iter()
            .all(|f| f.remote != other.local_addr().unwrap()));
        assert!(scan(Path::new("/proc"), &[(0, 1, me)], &HashSet::new()).is_empty());
    }
}
