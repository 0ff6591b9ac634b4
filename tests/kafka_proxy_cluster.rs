//! The Kafka-aware proxy in front of a real 3-node cluster (`scripts/brokers start
//! kafka-cluster`: KRaft nodes 1..3 on 127.0.0.1:19092..19094): the deterministic commit-boundary
//! plans give the same verdicts as on one broker, and the consumer reaches every node only
//! through the proxy's per-node listeners.
//!
//! The plans' topics have 6 partitions replicated on all three nodes (`replication: 3`); Kafka
//! spreads the leaders over the three, and the test checks that it did. The group's offsets
//! topic is replicated on all three nodes too (scripts/brokers).
//!
//! Evidence that the consumer never left the proxy, gathered while `exactly run` runs: every
//! consumer process's TCP sockets (from /proc) go to the proxy's loopback listeners or the
//! sink, never to 19092..19094, and they reach three listeners besides the bootstrap one (the
//! proxy opens one per node id for each instance). The proxy's `delivered` events cover every
//! partition, so fetches were answered by each of the three leaders through it. (That the run
//! completes proves nothing here: the real brokers are reachable, a bypassing client would
//! work too.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use exactly::procfs::process_sockets;
use exactly::timeline::{read_events, CommitPhase, Event, RebalanceKind, Stamped};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const CLUSTER: &str = "127.0.0.1:19092";
const PARTITIONS: i32 = 6;

/// A shipped single-broker plan pointed at the cluster, with 6 partitions of 3 replicas.
fn on_cluster(text: String) -> String {
    let out = text
        .replace(
            "bootstrap: 127.0.0.1:9092",
            &format!("bootstrap: {CLUSTER}"),
        )
        .replace(
            "partitions: 3",
            &format!("partitions: {PARTITIONS}\n  replication: 3"),
        );
    assert!(
        out.contains(CLUSTER) && out.contains(&format!("partitions: {PARTITIONS}")),
        "the plan's broker section changed shape: {out}"
    );
    out
}

/// What the consumer processes' sockets showed during a run.
#[derive(Debug, Default)]
struct Sockets {
    /// "pid: local -> remote" for every socket connected straight to a cluster node.
    direct: BTreeSet<String>,
    /// Proxy bootstrap ports the consumers were given.
    bootstrap: BTreeSet<u16>,
    /// Loopback ports the consumers connected to that are neither the sink nor a broker (the
    /// proxy's listeners), each checked to be a listening socket of the harness.
    proxy_ports: BTreeSet<u16>,
    /// Remote ports that were neither the sink, a broker, nor a listener of the harness.
    unexplained: BTreeSet<u16>,
    /// Consumer processes seen.
    consumers: BTreeSet<u32>,
}

/// The port in "http://127.0.0.1:PORT/..." or "127.0.0.1:PORT".
fn port_of(url: &str) -> Option<u16> {
    let rest = url.split("//").last()?;
    let hostport = rest.split('/').next()?;
    hostport.rsplit_once(':')?.1.parse().ok()
}

/// One look at the harness's consumer processes (its descendants carrying the contract's
/// environment).
fn look(harness: u32, seen: &mut Sockets) {
    const LISTEN: u8 = 0x0A;
    let mut remotes: Vec<(
        u32,
        std::net::SocketAddr,
        std::net::SocketAddr,
        BTreeSet<u16>,
    )> = Vec::new();
    for pid in process_tree(harness).into_iter().skip(1) {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let env: BTreeMap<String, String> = env
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        let Some(bootstrap) = env.get("EXACTLY_KAFKA_BOOTSTRAP").and_then(|b| port_of(b)) else {
            continue;
        };
        seen.consumers.insert(pid);
        seen.bootstrap.insert(bootstrap);
        let sink: BTreeSet<u16> = ["EXACTLY_EFFECT_URL", "EXACTLY_EFFECT_URL_SHARED"]
            .iter()
            .filter_map(|k| env.get(*k).and_then(|u| port_of(u)))
            .collect();
        for row in process_sockets(pid) {
            // connected or connecting (a SYN sent to a broker is a bypass too)
            if row.state != LISTEN {
                remotes.push((pid, row.local, row.remote, sink.clone()));
            }
        }
    }
    // read after the consumers' sockets: the proxy opens node listeners as it learns nodes
    let listening: BTreeSet<u16> = process_sockets(harness)
        .into_iter()
        .filter(|row| row.state == LISTEN)
        .map(|row| row.local.port())
        .collect();
    for (pid, local, remote, sink) in remotes {
        let port = remote.port();
        if KAFKA_CLUSTER_PORTS.contains(&port) || !remote.ip().is_loopback() {
            seen.direct.insert(format!("{pid}: {local} -> {remote}"));
        } else if sink.contains(&port) {
            // the consumer's effects
        } else if listening.contains(&port) {
            seen.proxy_ports.insert(port);
        } else {
            seen.unexplained.insert(port);
        }
    }
}

/// `exactly run` on `plan`, watching its consumers' sockets every 20 ms while it runs.
fn run_watched(plan: &std::path::Path, out: &std::path::Path) -> (std::process::Output, Sockets) {
    let child = Command::new(exactly_bin())
        .args([
            "run",
            plan.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exactly runs");
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = Sockets::default();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                look(pid, &mut seen);
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let output = child.wait_with_output().expect("exactly finishes");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    (output, watcher.join().unwrap())
}

/// Partition → leader node of `topic` on the cluster.
fn leaders(topic: &str) -> BTreeMap<i32, i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", CLUSTER)
        .create()
        .expect("metadata client");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("cluster metadata");
    md.topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
        .collect()
}

/// The node coordinating `group`: the leader of its `__consumer_offsets` partition
/// (Java's `abs(group.hashCode()) % partitions`).
fn coordinator(group: &str) -> Option<i32> {
    let offsets = leaders("__consumer_offsets");
    let h = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    let p = (h & 0x7fff_ffff) % offsets.len().max(1) as i32;
    offsets.get(&p).copied()
}

/// Runs `plan` on the cluster and checks, besides what `verdict` checks, that the consumer
/// reached all three nodes through the proxy and never the nodes themselves.
fn on_three_nodes(
    plan: &str,
    verdict: impl Fn(&std::process::Output, &serde_json::Value, &[Stamped], &str),
) {
    on_three_nodes_with(plan, |t| t, verdict)
}

/// [`on_three_nodes`] with `edit` applied to the plan too.
fn on_three_nodes_with(
    plan: &str,
    edit: impl Fn(String) -> String,
    verdict: impl Fn(&std::process::Output, &serde_json::Value, &[Stamped], &str),
) {
    require_kafka_cluster();
    let dir = tempfile::tempdir().unwrap();
    let p = plan_copy(plan, dir.path(), |t| edit(on_cluster(t)));
    let run = dir.path().join("run");
    let (out, sockets) = run_watched(&p, &run);
    let report = std::fs::read_to_string(run.join("report.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    let mut why = explain(&out, &report);
    let events = read_events(&run.join("events.jsonl")).expect("events.jsonl");
    let (topic, group) = events
        .iter()
        .find_map(|e| match &e.event {
            Event::RunStarted(info) => Some((info.topic.clone(), info.group.clone())),
            _ => None,
        })
        .expect("run_started");
    let leaders = leaders(&topic);
    let coordinator = coordinator(&group);
    why = format!(
        "{why}\nleaders: {leaders:?} coordinator of {group}: {coordinator:?}\nsockets: {sockets:?}"
    );

    verdict(&out, &report, &events, &why);

    // The consumer never connected to a node itself ...
    assert!(
        !sockets.consumers.is_empty(),
        "no consumer process was seen: {why}"
    );
    assert!(
        sockets.direct.is_empty(),
        "the consumer bypassed the proxy: {:?}\n{why}",
        sockets.direct
    );
    assert!(sockets.unexplained.is_empty(), "{why}");
    // ... and reached one proxy listener per node id (one instance: one listener per node),
    // besides the bootstrap listener.
    let nodes: BTreeSet<u16> = sockets
        .proxy_ports
        .difference(&sockets.bootstrap)
        .copied()
        .collect();
    assert_eq!(
        nodes.len(),
        3,
        "the consumer should reach one proxy listener per node: {nodes:?}\n{why}"
    );
    // The topic is spread over the three nodes: a partition led by each.
    assert_eq!(leaders.len(), PARTITIONS as usize, "{why}");
    assert_eq!(
        leaders.values().copied().collect::<BTreeSet<_>>(),
        [1, 2, 3].into(),
        "{why}"
    );
    // Records of every partition went through the proxy: fetches answered by each leader.
    let delivered: BTreeSet<i32> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::DeliveredBatch { partition, .. } => Some(*partition),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, (0..PARTITIONS).collect(), "{why}");
    // Commits went through the proxy and the coordinator (wherever it is) accepted them.
    assert!(
        events.iter().any(|e| matches!(
            &e.event,
            Event::Commit {
                phase: CommitPhase::Response,
                error: None,
                ..
            }
        )),
        "{why}"
    );
    assert!(coordinator.is_some_and(|c| (1..=3).contains(&c)), "{why}");
    // Nothing went wrong in the proxy (no unreachable node, no closed connection).
    let proxy_warnings: Vec<&String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Warning { message } if message.contains("proxy") => Some(message),
            _ => None,
        })
        .collect();
    assert!(proxy_warnings.is_empty(), "{proxy_warnings:?}\n{why}");
}

#[test]
fn kill_after_the_third_accepted_commit_on_three_nodes_loses_and_never_leaves_the_proxy() {
    on_three_nodes(
        "kafka-kill-after-commit.yaml",
        |out, report, _events, why| {
            assert_eq!(report["verdict"], "LOST", "{why}");
            assert_eq!(out.status.code(), Some(1), "{why}");
            assert_losses_name_their_commit(report, why);
        },
    );
}

#[test]
fn kill_before_the_third_commit_on_three_nodes_duplicates_and_never_leaves_the_proxy() {
    on_three_nodes(
        "kafka-kill-before-commit.yaml",
        assert_duplicated_by_a_dropped_commit,
    );
}

#[test]
fn kill_after_commit_on_three_nodes_with_the_kip_848_group_protocol_loses_through_the_proxy() {
    on_three_nodes_with(
        "kafka-kill-after-commit.yaml",
        |t| {
            let t = t.replace(
                "--session-timeout-ms, \"2000\"",
                "--config, group.protocol=consumer",
            );
            assert!(t.contains("group.protocol=consumer"), "{t}");
            t
        },
        |_out, report, events, why| {
            assert_eq!(report["verdict"], "LOST", "{why}");
            assert!(
                events.iter().any(|e| matches!(
                    e.event,
                    Event::Rebalance {
                        change: RebalanceKind::Assign,
                        ..
                    }
                )),
                "the ConsumerGroupHeartbeat assignment is seen: {why}"
            );
        },
    );
}
