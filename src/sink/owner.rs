//! Who is on the other end of an HTTP effect: the consumer process that owns the client socket
//! of the connection, found on Linux from `/proc/net/tcp{,6}` (socket → inode) and
//! `/proc/PID/fd` (inode → process). This is what makes attribution a proof rather than a
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
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Kernel TCP state of an established connection.
pub const TCP_ESTABLISHED: u8 = 0x01;

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    /// The socket's own address (IPv4-mapped IPv6 addresses are given as IPv4).
    pub local: SocketAddr,
    /// The address it is connected to (unspecified for a listener).
    pub remote: SocketAddr,
    /// Kernel TCP state (`TCP_ESTABLISHED` = 1, TIME_WAIT = 6, LISTEN = 10...).
    pub state: u8,
    /// Socket inode, as `/proc/PID/fd/N` links to it (`socket:[INODE]`); 0 when no process
    /// holds the socket any more (TIME_WAIT, orphaned).
    pub inode: u64,
}

/// Parses one data row of `/proc/net/tcp` or `/proc/net/tcp6`; `None` for the header line or
/// anything else that is not a row.
///
/// Fields: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`, addresses as
/// `HEXADDR:HEXPORT` where the address is the kernel's in-memory (network-order) bytes printed
/// as native-endian 32-bit words (little-endian on x86 and arm64), the port plain hex.
pub fn parse_row(line: &str) -> Option<TcpRow> {
    let mut fields = line.split_whitespace();
    let slot = fields.next()?;
    if !slot.ends_with(':') {
        return None;
    }
    let local = parse_address(fields.next()?)?;
    let remote = parse_address(fields.next()?)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    // tx:rx, tr:when, retrnsmt, uid, timeout, then the inode.
    let inode = fields.nth(5)?.parse().ok()?;
    Some(TcpRow {
        local,
        remote,
        state,
        inode,
    })
}

/// Parses `HEXADDR:HEXPORT` as the kernel writes it (8 hex digits for IPv4, 32 for IPv6).
/// IPv4-mapped IPv6 addresses come back as IPv4, so both tables compare alike.
pub fn parse_address(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Four address bytes from one 8-hex-digit word printed as a native-endian u32.
fn word(hex: &str) -> Option<[u8; 4]> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

/// The process group (`pgrp`, the 5th field) from the text of `/proc/PID/stat`. The command
/// name in parentheses may hold spaces and parentheses itself, so fields count from the last
/// `)`.
pub fn parse_stat_pgrp(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // state ppid pgrp
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// An address as the kernel's tables show it: IPv4-mapped IPv6 as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

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
            match find_row(&path, |r| r.local == peer && r.remote == sink) {
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

/// The first row of the table at `path` that `wanted` accepts. Reads line by line and stops at
/// the match: the kernel generates the table as it is read, so the rest is never produced.
fn find_row(path: &Path, wanted: impl Fn(&TcpRow) -> bool) -> std::io::Result<Option<TcpRow>> {
    let mut lines = BufReader::new(File::open(path)?);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some(row) = parse_row(&line).filter(|r| wanted(r)) {
            return Ok(Some(row));
        }
    }
}

/// Which process of `groups` holds `socket:[inode]` (and its group): each group leader first
/// (the usual owner), then every other member of those groups. When none does, the reason
/// names the process outside them that holds it, if this user can see it.
fn find_owner(proc: &Path, inode: u64, groups: &[Group]) -> Result<(Owner, u32), Unknown> {
    let needle = format!("socket:[{inode}]");
    for g in groups {
        if holds(proc, g.pgid, &needle) {
            let owner = Owner {
                instance: g.instance,
                incarnation: g.incarnation,
                pid: g.pgid,
            };
            return Ok((owner, g.pgid));
        }
    }
    let mut strangers = Vec::new();
    for pid in pids(proc) {
        if groups.iter().any(|g| g.pgid == pid) {
            continue;
        }
        let Some(pgrp) = std::fs::read_to_string(proc.join(pid.to_string()).join("stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat_pgrp)
        else {
            continue;
        };
        match groups.iter().find(|g| g.pgid == pgrp) {
            Some(g) if holds(proc, pid, &needle) => {
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
        if holds(proc, pid, &needle) {
            let comm = std::fs::read_to_string(proc.join(pid.to_string()).join("comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_else(|_| "?".into());
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

/// Whether process `pid` has a descriptor on `needle` (`socket:[INODE]`). A process that
/// vanished or cannot be inspected does not.
fn holds(proc: &Path, pid: u32, needle: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(proc.join(pid.to_string()).join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| target.as_os_str().as_encoded_bytes() == needle.as_bytes())
    })
}

/// The TCP sockets process `pid` holds: its `socket:[INODE]` descriptors matched against the
/// rows of its network namespace's `/proc/PID/net/tcp` and `tcp6`. Empty when the process is
/// gone or cannot be inspected. (The proxy uses it to catch a consumer that slipped past it.)
pub fn process_sockets(pid: u32) -> Vec<TcpRow> {
    let proc = Path::new("/proc").join(pid.to_string());
    let Ok(fds) = std::fs::read_dir(proc.join("fd")) else {
        return Vec::new();
    };
    let inodes: std::collections::HashSet<u64> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(proc.join("net").join(table)).ok())
        .flat_map(|text| text.lines().filter_map(parse_row).collect::<Vec<_>>())
        .filter(|row| inodes.contains(&row.inode))
        .collect()
}

/// Every process id in `proc` (thread-group leaders: threads share their fd table).
fn pids(proc: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    // Literal rows as a little-endian kernel writes them.
    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 48211 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 0100007F:A3F2 01 00000000:00000000 00:00000000 00000000  1000        0 51234 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:A3F2 0100007F:D431 06 00000000:00000000 03:00000BB8 00000000     0        0 0 3 0000000000000000
";

    #[cfg(target_endian = "little")]
    #[test]
    fn a_process_finds_its_own_connected_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let rows = process_sockets(std::process::id());
        assert!(
            rows.iter().any(|r| r.local == client.local_addr().unwrap()
                && r.remote == listener.local_addr().unwrap()
                && r.state == TCP_ESTABLISHED),
            "{rows:?}"
        );
        assert!(process_sockets(u32::MAX).is_empty(), "no such process");
    }

    #[test]
    fn ipv4_rows_give_addresses_state_and_inode() {
        let rows: Vec<TcpRow> = TCP.lines().filter_map(parse_row).collect();
        assert_eq!(rows.len(), 3, "the header line is not a row");
        assert_eq!(
            rows[0],
            TcpRow {
                local: addr("127.0.0.1:9092"),
                remote: addr("0.0.0.0:0"),
                state: 0x0A,
                inode: 48211,
            }
        );
        assert_eq!(rows[1].local, addr("127.0.0.1:54321"));
        assert_eq!(rows[1].remote, addr("127.0.0.1:41970"));
        assert_eq!(rows[1].state, TCP_ESTABLISHED);
        assert_eq!(rows[1].inode, 51234);
        assert_eq!(
            (rows[2].state, rows[2].inode),
            (6, 0),
            "TIME_WAIT has no inode"
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_rows_give_v6_and_v4_mapped_addresses() {
        // [::1]:8080 → [::1]:54321, and ::ffff:127.0.0.1:54322 → ::ffff:127.0.0.1:41970.
        let v6 = "   3: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 20 4 0 10 -1";
        let row = parse_row(v6).unwrap();
        assert_eq!(row.local, addr("[::1]:8080"));
        assert_eq!(row.remote, addr("[::1]:54321"));
        assert_eq!(row.inode, 777);
        let mapped = "   4: 0000000000000000FFFF00000100007F:D432 0000000000000000FFFF00000100007F:A3F2 01 00000000:00000000 00:00000000 00000000  1000        0 778 1 0000000000000000 20 4 0 10 -1";
        let row = parse_row(mapped).unwrap();
        assert_eq!(row.local, addr("127.0.0.1:54322"), "mapped reads as IPv4");
        assert_eq!(row.remote, addr("127.0.0.1:41970"));
        // A real IPv6 address keeps its byte order: 2001:db8::1.
        assert_eq!(
            parse_address("B80D0120000000000000000001000000:0050"),
            Some(addr("[2001:db8::1]:80"))
        );
    }

    #[test]
    fn malformed_rows_are_skipped_not_fatal() {
        for line in [
            "",
            "garbage",
            "   0: 0100007F:2384",
            "   0: 0100007F 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007G:2384 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007F:2384 00000000:0000 0A 0:0 0:0 0 0 0 notanumber",
            "   0: 01007F:2384 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007F:FFFFF 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: ï¿½ï¿½ï¿½:0 00000000:0000 0A 0:0 0:0 0 0 0 1",
        ] {
            assert_eq!(parse_row(line), None, "{line:?}");
        }
    }

    #[test]
    fn stat_pgrp_survives_odd_command_names() {
        let stat = "4242 (kafka_consumer) S 4000 4242 4000 0 -1 4194560 2480 0 0 0";
        assert_eq!(parse_stat_pgrp(stat), Some(4242));
        let odd = "4243 (a) b (c) S 4242 4242 4000 0 -1";
        assert_eq!(parse_stat_pgrp(odd), Some(4242));
        assert_eq!(parse_stat_pgrp("4244 (truncated"), None);
        assert_eq!(parse_stat_pgrp("4244 (x) S 1"), None);
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
