//! What Linux's `/proc` says about TCP sockets and the processes holding them: rows of
//! `/proc/net/tcp{,6}` (socket → inode), `/proc/PID/fd` (inode → process), `/proc/PID/stat`
//! (process → process group). A leaf: it knows nothing of consumers, sinks or proxies; the HTTP
//! sink (who made an effect) and the Kafka proxy (did a consumer slip past it) build on it.
//!
//! Invariant: processes vanish mid-scan, so every read that fails means "not this one" (an
//! empty answer), never an error or a panic; odd content is skipped, not trusted.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

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

/// The parent process id (`ppid`, the 4th field) from the text of `/proc/PID/stat`, counted
/// from the last `)` like [`parse_stat_pgrp`].
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // state ppid
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// An address as the kernel's tables show it: IPv4-mapped IPv6 as IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The first row of the table at `path` that `wanted` accepts. Reads line by line and stops at
/// the match: the kernel generates the table as it is read, so the rest is never produced.
pub fn find_row(path: &Path, wanted: impl Fn(&TcpRow) -> bool) -> std::io::Result<Option<TcpRow>> {
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

/// Whether process `pid` has a descriptor on the socket `inode` (a `socket:[INODE]` link). A
/// process that vanished or cannot be inspected does not.
pub fn holds_socket(proc: &Path, pid: u32, inode: u64) -> bool {
    let needle = format!("socket:[{inode}]");
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
/// gone or cannot be inspected. (The Kafka proxy uses it to catch a consumer that slipped past it.)
pub fn process_sockets(pid: u32) -> Vec<TcpRow> {
    let proc = Path::new("/proc");
    let inodes = socket_inodes(proc, pid);
    if inodes.is_empty() {
        return Vec::new();
    }
    tcp_rows(proc, pid)
        .into_iter()
        .filter(|row| inodes.contains(&row.inode))
        .collect()
}

/// The inodes of the sockets process `pid` has descriptors on (`socket:[INODE]` links in
/// `PID/fd`); empty when it is gone or cannot be inspected.
pub fn socket_inodes(proc: &Path, pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(proc.join(pid.to_string()).join("fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Every row of `PID/net/tcp` and `PID/net/tcp6`: the TCP sockets of process `pid`'s network
/// namespace, whoever holds them. The kernel generates these tables on each read (the cost grows
/// with the host's connections): read them once per namespace, not once per process.
pub fn tcp_rows(proc: &Path, pid: u32) -> Vec<TcpRow> {
    let net = proc.join(pid.to_string()).join("net");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(net.join(table)).ok())
        .flat_map(|text| text.lines().filter_map(parse_row).collect::<Vec<_>>())
        .collect()
}

/// The network namespace of process `pid` (the `PID/ns/net` link, `net:[INODE]`); `None`
/// when it is gone or cannot be read.
pub fn network_namespace(proc: &Path, pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(proc.join(pid.to_string()).join("ns").join("net")).ok()
}

/// Every process id in `proc` (thread-group leaders: threads share their fd table).
pub fn pids(proc: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The children of process `pid`: the union of `/proc/PID/task/*/children` (the kernel lists a
/// child under the thread that forked it). `None` when `pid` is gone or the kernel has no such
/// files (built without `CONFIG_PROC_CHILDREN`).
pub fn children(proc: &Path, pid: u32) -> Option<Vec<u32>> {
    let tasks = std::fs::read_dir(proc.join(pid.to_string()).join("task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        any = true;
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    any.then_some(out)
}

/// The process group of process `pid`, from `/proc/PID/stat`; `None` when it is gone or
/// cannot be read.
pub fn process_group(proc: &Path, pid: u32) -> Option<u32> {
    std::fs::read_to_string(proc.join(pid.to_string()).join("stat"))
        .ok()
        .as_deref()
        .and_then(parse_stat_pgrp)
}

/// The command name of process `pid` (`/proc/PID/comm`); `None` when it is gone.
pub fn command_name(proc: &Path, pid: u32) -> Option<String> {
    std::fs::read_to_string(proc.join(pid.to_string()).join("comm"))
        .ok()
        .map(|c| c.trim().to_owned())
}

/// The fields of `/proc/PID/stat` that place a process in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields {
    /// State letter: `R`, `S`, `D`, `T`, `Z` (zombie), `X` (dead)...
    pub state: char,
    /// Parent process id.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
}

impl StatFields {
    /// True for a process that has exited (a zombie waiting to be reaped, or dead).
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// State, parent and process group from the text of `/proc/PID/stat` (fields counted from the
/// last `)`, as in [`parse_stat_pgrp`]).
pub fn parse_stat_fields(stat: &str) -> Option<StatFields> {
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(StatFields { state, ppid, pgrp })
}

/// The stat fields of process `pid`; `None` when it is gone or cannot be read.
pub fn stat_fields(proc: &Path, pid: u32) -> Option<StatFields> {
    std::fs::read_to_string(proc.join(pid.to_string()).join("stat"))
        .ok()
        .as_deref()
        .and_then(parse_stat_fields)
}

/// Whether an entry (`NAME=value`) of process `pid`'s initial environment
/// (`/proc/PID/environ`) satisfies `wanted`. False when the process is gone, is a zombie (its
/// environment reads empty) or belongs to someone the harness may not inspect.
pub fn environ_has(proc: &Path, pid: u32, wanted: impl Fn(&[u8]) -> bool) -> bool {
    std::fs::read(proc.join(pid.to_string()).join("environ"))
        .is_ok_and(|block| block.split(|b| *b == 0).any(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn stat_fields_give_state_parent_and_group() {
        let stat = "4243 (a) b (c) Z 4242 4240 4000 0 -1";
        assert_eq!(
            parse_stat_fields(stat),
            Some(StatFields {
                state: 'Z',
                ppid: 4242,
                pgrp: 4240
            })
        );
        assert!(parse_stat_fields(stat).unwrap().exited());
        assert_eq!(parse_stat_fields("1 (x) S 0"), None);
        let me = stat_fields(Path::new("/proc"), std::process::id()).unwrap();
        assert!(!me.exited());
        assert_eq!(me.pgrp, nix::unistd::getpgrp().as_raw() as u32);
    }

    #[test]
    fn a_process_reads_its_own_environment() {
        let proc = Path::new("/proc");
        assert!(environ_has(proc, std::process::id(), |e| e.starts_with(b"PATH=")));
        assert!(!environ_has(proc, u32::MAX, |_| true), "no such process");
    }

    #[test]
    fn stat_pgrp_survives_odd_command_names() {
        let stat = "4242 (kafka_consumer) S 4000 4242 4000 0 -1 4194560 2480 0 0 0";
        assert_eq!(parse_stat_pgrp(stat), Some(4242));
        let odd = "4243 (a) b (c) S 4242 4242 4000 0 -1";
        assert_eq!(parse_stat_pgrp(odd), Some(4242));
        assert_eq!(parse_stat_pgrp("4244 (truncated"), None);
        assert_eq!(parse_stat_pgrp("4244 (x) S 1"), None);
        assert_eq!(parse_stat_ppid(odd), Some(4242));
        assert_eq!(parse_stat_ppid(stat), Some(4000));
    }
}
