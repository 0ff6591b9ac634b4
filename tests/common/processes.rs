//! What a test needs to tell whether a run left processes or listeners behind: consumers are
//! marked with a variable of their own in the plan's `consumer.env` (every process they start
//! inherits it), and the kernel's tables say who is alive and who listens.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::root;

/// The variable a test's plan gives its consumer, so its processes can be found afterwards.
pub const TEST_MARK: &str = "EXACTLY_TEST_MARK";

/// The launcher that starts the consumer it is given in a new session (`setsid`) and waits.
pub fn setsid_launcher() -> PathBuf {
    root().join("tests/consumers/setsid_launcher.sh")
}

/// A plan's text with `TEST_MARK=mark` in the consumer's environment and, with `launcher`,
/// its command started through [`setsid_launcher`].
pub fn mark_consumer(text: &str, mark: &str, launcher: bool) -> String {
    let command = if launcher {
        format!("command: [{}, ", setsid_launcher().display())
    } else {
        "command: [".to_owned()
    };
    text.replacen(
        "  command: [",
        &format!("  env: {{ {TEST_MARK}: \"{mark}\" }}\n  {command}"),
        1,
    )
}

/// Live (not zombie) processes carrying `TEST_MARK=mark` in their environment.
pub fn marked(mark: &str) -> Vec<u32> {
    let entry = format!("{TEST_MARK}={mark}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == entry.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// The marked processes still alive after waiting up to `within` for them to go.
pub fn marked_after(mark: &str, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left = marked(mark);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True while `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with(['Z', 'X']),
        Err(_) => false,
    }
}

/// The ports among `ports` that a socket listens on (TCP state LISTEN in /proc/net/tcp{,6}).
pub fn listening(ports: &[u16]) -> Vec<u16> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let mut f = line.split_whitespace();
            let (Some(local), Some(_), Some(state)) = (f.nth(1), f.next(), f.next()) else {
                continue;
            };
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if state == "0A" {
                if let Some(p) = port.filter(|p| ports.contains(p)) {
                    out.push(p);
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The loopback ports in the `EXACTLY_*` addresses of process `pid`'s environment (the proxy
/// listener and the sink the harness handed it); empty when it is gone.
pub fn contract_ports(pid: u32) -> Vec<u16> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let mut ports: Vec<u16> = env
        .split(|b| *b == 0)
        .filter_map(|e| std::str::from_utf8(e).ok())
        .filter(|e| e.starts_with("EXACTLY_"))
        .flat_map(|e| {
            e.match_indices("127.0.0.1:")
                .filter_map(|(i, m)| {
                    let rest = &e[i + m.len()..];
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()
                })
                .collect::<Vec<u16>>()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The cgroup folders the harness with process id `harness` made (`exactly-<pid>-…`, beside
/// this test process's own cgroup, which the harness shares); empty where there is no cgroup
/// v2 or the harness made none.
pub fn cgroups_of(harness: u32) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(dir) = exactly::consumer::containment::own_cgroup_dir(&own, &mounts) else {
        return Vec::new();
    };
    let prefix = format!("exactly-{harness}-");
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
