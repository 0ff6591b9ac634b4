//! The Kafka-aware proxy against the real broker on 127.0.0.1:9092: two client
//! implementations (Kafka's own Java console consumer and librdkafka) consume through it in a
//! group and commit; the proxy records what they did (deliveries, commits, assignments), holds
//! and drops a commit for the nemesis, and partitions and severs a consumer's connections.
//!
//! Each test produces to its own fresh topic (with different compression codecs, so the record
//! decoding sees gzip, snappy and lz4 from a real broker; the bundled librdkafka has no zstd,
//! which the unit tests cover with kafka-protocol's encoder) and uses its own group.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use exactly::broker::kafka::KafkaBroker;
use exactly::broker::KafkaTarget as BrokerTarget;
use exactly::gate::{Gate, HoldDecision, HoldPoint};
use exactly::plan::{Rate, Target};
use exactly::proxy::control::NetworkControl;
use exactly::proxy::kafka::{direct_connections, KafkaProxy};
use exactly::timeline::{CommitPhase, Event, RebalanceKind, Stamped, Timeline};
use tokio_util::sync::CancellationToken;

const KAFKA: &str = "127.0.0.1:9092";

/// A fresh topic with `n` messages produced with `compression`; returns the broker handle
/// (for committed offsets), the topic, the group and the produced IDs.
async fn fresh_topic(
    name: &str,
    partitions: i32,
    n: u64,
    compression: &str,
) -> (KafkaBroker, String, String, BTreeSet<String>) {
    require_kafka();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let run = format!("kp-{name}-{}-{nanos}", std::process::id());
    let target = BrokerTarget {
        address: KAFKA.into(),
        topic: format!("{run}-t"),
        group: format!("{run}-g"),
        partitions,
        replication: 1,
    };
    let extra: BTreeMap<String, String> = [("compression.type".into(), compression.into())].into();
    let broker = KafkaBroker::connect(&target, &extra, Duration::from_secs(10))
        .await
        .expect("connect to Kafka");
    broker.create_topic().await.expect("create topic");
    let ledger = Timeline::in_memory();
    let mut rx = ledger.subscribe();
    broker
        .produce(
            &exactly::workload::MessageFactory::new(&run, "{\"id\":\"{id}\"}"),
            n,
            Rate::Unlimited,
            &ledger,
            &exactly::timeline::AckedOffsets::default(),
        )
        .await
        .expect("produce");
    let mut ids = BTreeSet::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Produced { id, .. } = &e.event {
            ids.insert(id.clone());
        }
    }
    assert_eq!(ids.len() as u64, n, "every message was produced");
    (broker, target.topic, target.group, ids)
}

struct Proxy {
    proxy: KafkaProxy,
    timeline: Timeline,
    events: tokio::sync::mpsc::UnboundedReceiver<Arc<Stamped>>,
    seen: Vec<Arc<Stamped>>,
    stop: CancellationToken,
    incarnation: Arc<AtomicU32>,
}

impl Proxy {
    async fn start(topic: &str, gate: Gate) -> Proxy {
        let timeline = Timeline::in_memory();
        let events = timeline.subscribe();
        let stop = CancellationToken::new();
        let incarnation = Arc::new(AtomicU32::new(1));
        let inc = incarnation.clone();
        let proxy = KafkaProxy::start(
            KAFKA,
            topic,
            1,
            timeline.clone(),
            gate,
            Arc::new(move |_| inc.load(Ordering::SeqCst)),
            stop.clone(),
        )
        .await
        .expect("proxy starts");
        Proxy {
            proxy,
            timeline,
            events,
            seen: Vec::new(),
            stop,
            incarnation,
        }
    }

    /// Reads events until `done(all events so far)` or the deadline; returns whether done.
    async fn wait_for(
        &mut self,
        deadline: Duration,
        done: impl Fn(&[Arc<Stamped>]) -> bool,
    ) -> bool {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if done(&self.seen) {
                return true;
            }
            match tokio::time::timeout_at(end, self.events.recv()).await {
                Ok(Some(e)) => self.seen.push(e),
                _ => return done(&self.seen),
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }

    async fn finish(mut self) -> Vec<Arc<Stamped>> {
        self.drain();
        let failure = self.proxy.failure();
        self.stop.cancel();
        self.proxy.join().await;
        assert_eq!(failure, None, "the proxy reported a failure");
        self.seen
    }
}

fn delivered_ids(events: &[Arc<Stamped>]) -> BTreeSet<String> {
    events
        .iter()
        .flat_map(|e| match &e.event {
            Event::DeliveredBatch { records, .. } => {
                records.iter().map(|(_, id)| id.to_string()).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

fn commits(events: &[Arc<Stamped>], phase: CommitPhase) -> Vec<&Arc<Stamped>> {
    events
        .iter()
        .filter(|e| matches!(&e.event, Event::Commit { phase: p, .. } if *p == phase))
        .collect()
}

fn assigned(events: &[Arc<Stamped>]) -> BTreeSet<i32> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Rebalance {
                change: RebalanceKind::Assign,
                assignment: Some(a),
                ..
            } => Some(a.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn warnings(events: &[Arc<Stamped>]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Watches `pid`'s process tree for sockets connected straight to a broker, until it exits.
fn watch_for_bypass(pid: u32, brokers: Vec<String>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut found = Vec::new();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            for p in process_tree(pid) {
                found.extend(direct_connections(p, &brokers));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    })
}

fn stop_child(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().expect("consumer exits");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn committed(broker: &KafkaBroker) -> BTreeMap<i32, i64> {
    tokio::task::block_in_place(|| broker.progress())
        .expect("committed offsets")
        .committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn java_console_consumer_consumes_and_commits_through_the_proxy() {
    let n = 60;
    let (broker, topic, group, ids) = fresh_topic("java", 3, n, "gzip").await;
    let mut p = Proxy::start(&topic, Gate::open()).await;
    let child = Command::new(root().join("scripts/kafka-tool"))
        .args([
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            &p.proxy.bootstrap_for(0),
            "--topic",
            &topic,
            "--group",
            &group,
            "--from-beginning",
            "--max-messages",
            &n.to_string(),
            "--timeout-ms",
            "30000",
            "--command-property",
            "auto.commit.interval.ms=200",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/kafka-tool (java)");
    let bypass = watch_for_bypass(child.id(), p.proxy.broker_addresses());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .expect("console consumer ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let received: BTreeSet<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        received, ids,
        "console consumer got every message: {stderr}"
    );
    let direct = bypass.join().unwrap();
    assert!(
        direct.is_empty(),
        "the Java client bypassed the proxy: {direct:?}"
    );

    p.wait_for(Duration::from_secs(5), |e| {
        !commits(e, CommitPhase::Response).is_empty()
    })
    .await;
    let events = p.finish().await;
    assert_eq!(
        delivered_ids(&events),
        ids,
        "a delivered event for every ID"
    );
    let requests = commits(&events, CommitPhase::Request);
    let responses = commits(&events, CommitPhase::Response);
    assert!(
        !requests.is_empty() && !responses.is_empty(),
        "commits seen"
    );
    assert!(responses
        .iter()
        .all(|e| matches!(&e.event, Event::Commit { error: None, group: g, .. } if *g == group)));
    // The last commit covers the whole topic, as the broker confirms.
    let broker_view = committed(&broker).await;
    assert_eq!(
        broker_view.values().sum::<i64>(),
        n as i64,
        "{broker_view:?}"
    );
    assert_eq!(assigned(&events), [0, 1, 2].into(), "assignment decoded");
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
}

async fn rdkafka_through_the_proxy(name: &str, compression: &str, extra: &[&str]) {
    let n = 50;
    let (broker, topic, group, ids) = fresh_topic(name, 3, n, compression).await;
    let mut p = Proxy::start(&topic, Gate::open()).await;
    let child = example_kafka_consumer(&p.proxy.bootstrap_for(0), &topic, &group, extra);
    let bypass = watch_for_bypass(child.id(), p.proxy.broker_addresses());
    let all = ids.clone();
    let done = p
        .wait_for(Duration::from_secs(60), |e| {
            delivered_ids(e) == all
                && commits(e, CommitPhase::Response)
                    .iter()
                    .filter_map(|c| match &c.event {
                        Event::Commit { offsets, .. } => Some(offsets.len()),
                        _ => None,
                    })
                    .count()
                    >= n as usize
        })
        .await;
    let pid = child.id();
    let direct: Vec<String> = process_tree(pid)
        .into_iter()
        .flat_map(|p2| direct_connections(p2, &p.proxy.broker_addresses()))
        .collect();
    let log = stop_child(child);
    let _ = bypass.join();
    assert!(
        done,
        "consumer did not consume and commit everything in 60s: {log}"
    );
    assert!(
        direct.is_empty(),
        "librdkafka bypassed the proxy: {direct:?}"
    );
    let events = p.finish().await;
    assert_eq!(delivered_ids(&events), ids);
    assert_eq!(
        assigned(&events),
        [0, 1, 2].into(),
        "assignment decoded: {log}"
    );
    let broker_view = committed(&broker).await;
    assert_eq!(
        broker_view.values().sum::<i64>(),
        n as i64,
        "{broker_view:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn librdkafka_classic_group_through_the_proxy() {
    rdkafka_through_the_proxy("rdk-classic", "snappy", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn librdkafka_kip848_group_through_the_proxy() {
    rdkafka_through_the_proxy("rdk-848", "gzip", &["--config", "group.protocol=consumer"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_withheld_commit_never_reaches_the_broker() {
    let n = 20;
    let (broker, topic, group, _ids) = fresh_topic("hold", 1, n, "lz4").await;
    let gate = Gate::holding([HoldPoint::CommitRequest]);
    let mut p = Proxy::start(&topic, gate.clone()).await;
    // The test is the nemesis: answer every commit but the third, which it withholds (and
    // kills the consumer, as a `before: commit` kill would).
    let mut nemesis_events = p.timeline.subscribe();
    let child = example_kafka_consumer(&p.proxy.bootstrap_for(0), &topic, &group, &[]);
    let child_pid = child.id();
    let nemesis = tokio::spawn(async move {
        let mut seen = 0;
        let mut withheld = None;
        while let Some(e) = nemesis_events.recv().await {
            if let Event::Commit {
                phase: CommitPhase::Request,
                offsets,
                ..
            } = &e.event
            {
                seen += 1;
                if seen == 3 {
                    let _ = Command::new("kill")
                        .args(["-9", &child_pid.to_string()])
                        .status();
                    gate.decide(HoldPoint::CommitRequest, e.seq, HoldDecision::Withhold);
                    withheld = Some((e.seq, offsets.clone()));
                    break;
                }
                gate.decide(HoldPoint::CommitRequest, e.seq, HoldDecision::Answer);
            }
        }
        withheld
    });
    let withheld = tokio::time::timeout(Duration::from_secs(60), nemesis)
        .await
        .expect("three commits within 60s")
        .unwrap()
        .expect("a third commit");
    let dropped = p
        .wait_for(Duration::from_secs(10), |e| {
            !commits(e, CommitPhase::Dropped).is_empty()
        })
        .await;
    let log = stop_child(child);
    assert!(
        dropped,
        "a dropped event follows the withheld commit: {log}"
    );
    let events = p.finish().await;
    let dropped = commits(&events, CommitPhase::Dropped);
    assert_eq!(dropped.len(), 1);
    assert!(dropped[0].seq > withheld.0);
    let Event::Commit { offsets, .. } = &dropped[0].event else {
        unreachable!()
    };
    assert_eq!(
        *offsets, withheld.1,
        "the dropped event names the withheld offsets"
    );
    // commit-after-effect commits offset+1 per message: 1, 2, then the withheld 3.
    assert_eq!(offsets[0].offset, 3);
    let broker_view = committed(&broker).await;
    assert_eq!(
        broker_view.get(&0),
        Some(&2),
        "the broker never saw the withheld commit"
    );
    assert_eq!(commits(&events, CommitPhase::Response).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_silences_a_consumer_and_sever_makes_it_reconnect() {
    let n = 300;
    let (_broker, topic, group, ids) = fresh_topic("net", 1, n, "none").await;
    let mut p = Proxy::start(&topic, Gate::open()).await;
    let child = example_kafka_consumer(
        &p.proxy.bootstrap_for(0),
        &topic,
        &group,
        &["--work-ms", "10"],
    );
    // Let it get going.
    let started = p
        .wait_for(Duration::from_secs(30), |e| {
            commits(e, CommitPhase::Response).len() >= 10
        })
        .await;
    assert!(started, "consumer started committing");

    let length = Duration::from_secs(3);
    let what = p
        .proxy
        .partition(Target::Instance(0), length)
        .expect("partition applies to live connections");
    assert!(what.starts_with("partitioned consumer[0]: "), "{what}");
    let t0 = p.timeline.now_us();
    tokio::time::sleep(length + Duration::from_millis(500)).await;
    p.drain();
    let quiet_from = t0 + 200_000;
    let quiet_to = t0 + length.as_micros() as u64;
    let during: Vec<_> = p
        .seen
        .iter()
        .filter(|e| e.t_us > quiet_from && e.t_us < quiet_to)
        .filter(|e| matches!(e.event, Event::DeliveredBatch { .. } | Event::Commit { .. }))
        .collect();
    assert!(during.is_empty(), "events during the partition: {during:?}");
    let resumed = p
        .wait_for(Duration::from_secs(10), |e| {
            e.iter()
                .any(|x| x.t_us > quiet_to && matches!(x.event, Event::Commit { .. }))
        })
        .await;
    assert!(resumed, "commits resume after the partition heals");

    // Sever: the connections close with RST; the consumer reconnects and finishes.
    p.incarnation.store(1, Ordering::SeqCst);
    let before = p.proxy.connections(0);
    let what = p
        .proxy
        .sever(Target::Instance(0))
        .expect("sever hits connections");
    assert!(what.contains(&format!("{before} connection")), "{what}");
    let t_sever = p.timeline.now_us();
    let all = ids.clone();
    let finished = p
        .wait_for(Duration::from_secs(60), |e| {
            delivered_ids(e) == all
                && e.iter().any(|x| {
                    x.t_us > t_sever
                        && matches!(
                            x.event,
                            Event::Commit {
                                phase: CommitPhase::Response,
                                ..
                            }
                        )
                })
        })
        .await;
    let reconnected = p.proxy.connections(0);
    let log = stop_child(child);
    assert!(finished, "consumer carried on after the sever: {log}");
    assert!(reconnected > 0, "consumer reconnected through the proxy");
    p.finish().await;
}
