//! Who is on the other end of an HTTP effect: the consumer process that owns the client socket
//! of the connection, found on Linux from `/proc/net/tcp{,6}` (socket → inode) and
//! `/proc/PID/fd` (inode → process), read through the [`crate::procfs`] leaf. This is what makes attribution a proof rather than a
//! claim: a process cannot post from a socket it does not hold, whatever URL it uses.
//!
//! Only processes of live consumer process groups are candidates (the supervisor starts each
//! incarnation in its own group, so the group names the incarnation; `/proc/PID/stat`'s `pgrp`
//! finds the leader's children). A socket held by anything else is `Unknown`, with the reason
//! naming the process when it can be seen. Processes vanish mid-scan: every read that fails
//! means "not this one", never an error.
//!
//! Cost: the first request on a connection reads `/proc/net/tcp` up to its row (the kernel
//! walks its whole established-hash table to produce it: about 1 to 5 ms on a host with 262144
//! buckets, whatever the number of sockets) and scans the candidates' descriptors. Later
//! requests on the same keep-alive connection reuse the answer, keyed by (client address,
//! connection number given at accept), for as long as the owner's incarnation is live: a
//! connection's client socket cannot change hands within the group, and a dead incarnation's
//! entry is looked up afresh.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::procfs::{self, canonical, TcpRow};

/// One live consumer process group: the incarnation it runs and its id (the leader's pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// Instance index, from 0.
    pub instance: u32,
    /// Incarnation, from 1.
    pub incarnation: u32,
    /// Process group id (the pid of the incarnation's first process).
    pub pgid: u32,
}

impl From<(u32, u32, u32)> for Group {
    /// From the supervisor's `(instance, incarnation, pgid)`.
    fn from((instance, incarnation, pgid): (u32, u32, u32)) -> Group {
        Group {
            instance,
            incarnation,
            pgid,
        }
    }
}

/// Lists the live consumer process groups (the supervisor's view, asked at every lookup).
pub type LiveGroups = Arc<dyn Fn() -> Vec<Group> + Send + Sync>;

/// The consumer process that owns a connection's client socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Instance index of its process group.
    pub instance: u32,
    /// Incarnation of its process group.
    pub incarnation: u32,
    /// The process holding the socket (the group leader or one of its children).
    pub pid: u32,
}

/// No consumer process was found to own the socket, and why (kept on the effect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// What the lookup saw, in words.
    pub reason: String,
}

impl Unknown {
    fn new(reason: impl Into<String>) -> Unknown {
        Unknown {
            reason: reason.into(),
        }
    }
}

/// Cached owners at most; past it the cache starts over (each connection costs a scan again).
const CACHE_LIMIT: usize = 4096;

/// Finds which consumer process owns the client side of a connection to the sink. Cheap to
/// clone; the live groups are bound late (the sink starts before the supervisor).
#[derive(Clone)]
pub struct SocketOwners {
    inner: Arc<Inner>,
}

struct Inner {
    proc: PathBuf,
    live: OnceLock<LiveGroups>,
    /// Client address → (connection number, owner, the owner's process group).
    cache: Mutex<HashMap<SocketAddr, Cached>>,
}

#[derive(Clone, Copy)]
struct Cached {
    connection: u64,
    owner: Owner,
    pgid: u32,
}

impl Default for SocketOwners {
    fn default() -> Self {
        SocketOwners::new()
    }
}

impl SocketOwners {
    /// Looks in `/proc`; knows no consumer until `bind` is called.
    pub fn new() -> SocketOwners {
        SocketOwners::with_proc("/proc")
    }

    /// Looks in another procfs mount (tests, containers).
    pub fn with_proc(proc: impl Into<PathBuf>) -> SocketOwners {
        SocketOwners {
            inner: Arc::new(Inner {
                proc: proc.into(),
                live: OnceLock::new(),
                cache: Mutex::default(),
            }),
        }
    }

    /// Tells it where the live consumer process groups come from; false when already bound
    /// (the first binding stays).
    pub fn bind(&self, live: LiveGroups) -> bool {
        self.inner.live.set(live).is_ok()
    }

    /// The consumer process that owns the socket `peer` connected to `sink` (`peer` is the
    /// request's source address, the client's local socket). `connection` is a number the
    /// caller gives each accepted connection: later requests on the same one reuse the answer
    /// while the owner's incarnation is live. Blocking file I/O in `/proc`: call it off the
    /// async runtime. Never panics on odd or vanishing `/proc` content.
    pub fn owner(
        &self,
        peer: SocketAddr,
        sink: SocketAddr,
        connection: u64,
    ) -> Result<Owner, Unknown> {
        let (peer, sink) = (canonical(peer), canonical(sink));
        let Some(live) = self.inner.live.get() else {
            return Err(Unknown::new(
                "no consumer has been started yet (the supervisor is not bound)",
            ));
        };
        let groups = live();
        if let Some(owner) = self.cached(peer, connection, &groups) {
            return Ok(owner);
        }
        let row = self.client_socket(peer, sink)?;
        if row.inode == 0 {
            return Err(Unknown::new(format!(
                "the client socket {peer} has no owner any more (inode 0, TCP state {:#04x}): \
                 its process closed it",
                row.state
            )));
        }
        let (owner, pgid) = find_owner(&self.inner.proc, row.inode, &groups)?;
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(
            peer,
            Cached {
                connection,
                owner,
                pgid,
            },
        );
        Ok(owner)
    }

    /// The owner already found for this connection, if its incarnation is still live; no
    /// file I/O, so callers may try it on the async runtime before `owner`.
    pub fn known(&self, peer: SocketAddr, connection: u64) -> Option<Owner> {
        let live = self.inner.live.get()?;
        self.cached(canonical(peer), connection, &live())
    }

    /// The cached owner of `peer` if it is the same connection and its group is still live.
    fn cached(&self, peer: SocketAddr, connection: u64, groups: &[Group]) -> Option<Owner> {
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        let hit = cache.get(&peer).copied()?;
        let live = groups.iter().any(|g| {
            (g.instance, g.incarnation, g.pgid)
                == (hit.owner.instance, hit.owner.incarnation, hit.pgid)
        });
        if hit.connection == connection && live {
            return Some(hit.owner);
        }
        // A new connection from a reused port, or an owner whose incarnation ended (a socket
        // outliving it is someone else's now): look again.
        cache.remove(&peer);
        None
    }

    /// The row of the client's socket: local `peer`, connected to `sink`.
    fn client_socket(&self, peer: SocketAddr, sink: SocketAddr) -> Result<TcpRow, Unknown> {
        let mut problems = Vec::new();
        for table in ["net/tcp", "net/tcp6"] {
            let path = self.inner.proc.join(table);
            match procfs::find_row(&path, |r| r.local == peer && r.remote == sink) {
                Ok(Some(row)) => return Ok(row),
                Ok(None) => {}
                Err(e) => problems.push(format!("cannot read {}: {e}", path.display())),
            }
        }
        let mut reason = format!(
            "no TCP socket {peer} → {sink} in {}/net/tcp or tcp6 (the client is in another \
             network namespace, or already gone)",
            self.inner.proc.display()
        );
        for p in problems {
            reason.push_str("; ");
            reason.push_str(&p);
        }
        Err(Unknown::new(reason))
    }
}

/// Which process of `groups` holds `socket:[inode]` (and its group): each group leader first
/// (the usual owner), then every other member of those groups. When none does, the reason
/// names the process outside them that holds it, if this user can see it.
fn find_owner(proc: &Path, inode: u64, groups: &[Group]) -> Result<(Owner, u32), Unknown> {
    for g in groups {
        if procfs::holds_socket(proc, g.pgid, inode) {
            let owner = Owner {
                instance: g.instance,
                incarnation: g.incarnation,
                pid: g.pgid,
            };
            return Ok((owner, g.pgid));
        }
    }
    let mut strangers = Vec::new();
    for pid in procfs::pids(proc) {
        if groups.iter().any(|g| g.pgid == pid) {
            continue;
        }
        let Some(pgrp) = procfs::process_group(proc, pid) else {
            continue;
        };
        match groups.iter().find(|g| g.pgid == pgrp) {
            Some(g) if procfs::holds_socket(proc, pid, inode) => {
                let owner = Owner {
                    instance: g.instance,
                    incarnation: g.incarnation,
                    pid,
                };
                return Ok((owner, g.pgid));
            }
            Some(_) => {}
            None => strangers.push((pid, pgrp)),
        }
    }
    let groups_seen = if groups.is_empty() {
        "no consumer process group is live".to_owned()
    } else {
        let list: Vec<String> = groups
            .iter()
            .map(|g| {
                format!(
                    "consumer[{}] incarnation {} (group {})",
                    g.instance, g.incarnation, g.pgid
                )
            })
            .collect();
        format!("live consumer groups: {}", list.join(", "))
    };
    for (pid, pgrp) in strangers {
        if procfs::holds_socket(proc, pid, inode) {
            let comm = procfs::command_name(proc, pid).unwrap_or_else(|| "?".into());
            return Err(Unknown::new(format!(
                "socket:[{inode}] belongs to pid {pid} (`{comm}`, process group {pgrp}), which \
                 is in no live consumer process group ({groups_seen})"
            )));
        }
    }
    Err(Unknown::new(format!(
        "no process this harness can inspect holds socket:[{inode}] (closed meanwhile, or \
         another user's; {groups_seen})"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// This test process plays the consumer: a connection it holds is found as its own.
    fn own_group() -> u32 {
        nix::unistd::getpgrp().as_raw() as u32
    }

    #[test]
    fn the_process_holding_the_client_socket_is_found_and_reused_while_its_group_lives() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sink = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(sink).unwrap();
        let peer = client.local_addr().unwrap();
        let owners = SocketOwners::new();
        let groups = Arc::new(Mutex::new(vec![Group {
            instance: 1,
            incarnation: 3,
            pgid: own_group(),
        }]));
        let live = groups.clone();
        owners.bind(Arc::new(move || live.lock().unwrap().clone()));
        let owner = owners.owner(peer, sink, 7).unwrap();
        assert_eq!(
            owner,
            Owner {
                instance: 1,
                incarnation: 3,
                pid: std::process::id()
            }
        );
        assert_eq!(owners.owner(peer, sink, 7), Ok(owner), "a keep-alive hit");
        assert_eq!(
            owners.owner(peer, sink, 8),
            Ok(owner),
            "a new connection, found again"
        );
        // The incarnation ended: the cached answer is not trusted, the socket is no consumer's.
        groups.lock().unwrap().clear();
        let after = owners.owner(peer, sink, 8).unwrap_err();
        assert!(
            after.reason.contains("no live consumer process group"),
            "{after:?}"
        );
    }

    #[test]
    fn a_socket_outside_the_consumer_groups_is_unknown_and_names_its_holder() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sink = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(sink).unwrap();
        let peer = client.local_addr().unwrap();
        let owners = SocketOwners::new();
        let unbound = owners.owner(peer, sink, 1).unwrap_err();
        assert!(unbound.reason.contains("not bound"), "{unbound:?}");
        owners.bind(Arc::new(Vec::new));
        let unknown = owners.owner(peer, sink, 1).unwrap_err();
        let me = format!("pid {}", std::process::id());
        assert!(unknown.reason.contains(&me), "{unknown:?}");
        assert!(unknown.reason.contains("no consumer process group"));
        let gone = owners
            .owner(addr("127.0.0.1:1"), sink, 2)
            .expect_err("no such connection");
        assert!(gone.reason.contains("no TCP socket"), "{gone:?}");
    }

    /// Prints the cost of a lookup: first request on a connection vs a later one, and a
    /// `/proc/net/tcp` read alone for scale.
    /// `cargo test --release --lib sink::owner::tests::lookup_latency -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn lookup_latency() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sink = listener.local_addr().unwrap();
        let group = own_group();
        let owners = SocketOwners::new();
        owners.bind(Arc::new(move || {
            vec![Group {
                instance: 0,
                incarnation: 1,
                pgid: group,
            }]
        }));
        let (mut first, mut cached, mut table) = (Vec::new(), Vec::new(), Vec::new());
        for connection in 0..200 {
            let client = std::net::TcpStream::connect(sink).unwrap();
            let peer = client.local_addr().unwrap();
            let t = Instant::now();
            owners.owner(peer, sink, connection).unwrap();
            first.push(t.elapsed());
            let t = Instant::now();
            owners.owner(peer, sink, connection).unwrap();
            cached.push(t.elapsed());
            let t = Instant::now();
            let _ = std::fs::read("/proc/net/tcp");
            table.push(t.elapsed());
            let _ = listener.accept();
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            (v[v.len() / 2], v[v.len() * 9 / 10])
        };
        let rows = std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .lines()
            .count();
        println!(
            "lookup median/p90: first on a connection {:?}, later on it {:?}; \
             whole /proc/net/tcp read {:?} ({rows} lines)",
            median(&mut first),
            median(&mut cached),
            median(&mut table)
        );
    }
}
