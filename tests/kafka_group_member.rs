//! The harness's transient group member (the `rebalance` fault) against the real Kafka: it
//! holds partitions without ever committing, it speaks the protocol the proxy saw the consumer
//! offer (classic eager, classic cooperative-sticky, KIP-848), and when it leaves the consumer
//! under test owns every partition again and finishes the topic.
//!
//! Each test uses its own fresh topic and group; the harness's clients here are plain rdkafka
//! clients talking to the broker directly, as the member does.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use exactly::broker::{hold_group, GroupProtocol, HoldOutcome};
use exactly::gate::Gate;
use exactly::proxy::kafka::KafkaProxy;
use exactly::timeline::{Event, MemberChange, RebalanceKind, Stamped, Timeline};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const KAFKA: &str = "127.0.0.1:9092";
const PARTITIONS: i32 = 3;

/// A fresh topic with `n` messages spread evenly over its partitions; returns topic and group.
async fn fresh_topic(name: &str, n: usize) -> (String, String) {
    require_kafka();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let run = format!("gm-{name}-{}-{nanos}", std::process::id());
    let (topic, group) = (format!("{run}-t"), format!("{run}-g"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin
        .create_topics(
            [&NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &opts,
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends = (0..n).map(|i| {
        let id = format!("{run}-{i}");
        let payload = format!("{{\"order_id\":\"{id}\"}}");
        let producer = &producer;
        let topic = &topic;
        async move {
            let record = FutureRecord::to(topic)
                .partition(i as i32 % PARTITIONS)
                .key(&id)
                .payload(&payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "exactly-id",
                    value: Some(id.as_bytes()),
                }));
            producer
                .send(record, Duration::from_secs(30))
                .await
                .expect("produced");
        }
    });
    futures::future::join_all(sends).await;
    (topic, group)
}

/// A client of `group` that never joins it: reads committed and end offsets, commits by hand.
fn offsets_client(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// The group's committed offsets (partitions without one are left out).
fn committed(client: &BaseConsumer, topic: &str) -> BTreeMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    client
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// The end offset of every partition.
fn end_offsets(client: &BaseConsumer, topic: &str) -> BTreeMap<i32, i64> {
    (0..PARTITIONS)
        .map(|p| {
            let (_, high) = client
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect()
}

fn classic(assignors: &[&str]) -> GroupProtocol {
    GroupProtocol::Classic {
        assignors: assignors.iter().map(|s| s.to_string()).collect(),
    }
}

/// The member's own events, in order.
fn member_events(events: &[Arc<Stamped>]) -> Vec<(u64, MemberChange, Option<Vec<i32>>)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::GroupMember {
                change, partitions, ..
            } => Some((e.t_us, *change, partitions.clone())),
            _ => None,
        })
        .collect()
}

fn drain(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Arc<Stamped>>,
    into: &mut Vec<Arc<Stamped>>,
) {
    while let Ok(e) = rx.try_recv() {
        into.push(e);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_holds_partitions_without_ever_committing_with_every_protocol() {
    for (name, protocol) in [
        ("eager", classic(&["range", "roundrobin"])),
        ("coop", classic(&["cooperative-sticky"])),
        ("kip848", GroupProtocol::Consumer),
    ] {
        let (topic, group) = fresh_topic(&format!("nocommit-{name}"), 30).await;
        let client = offsets_client(&group);
        // The group's progress before the member comes: 3, 5 and 7 of the 10 per partition.
        let mut tpl = TopicPartitionList::new();
        for (p, o) in [(0, 3), (1, 5), (2, 7)] {
            tpl.add_partition_offset(&topic, p, Offset::Offset(o))
                .unwrap();
        }
        client
            .commit(&tpl, CommitMode::Sync)
            .expect("commit by hand");
        let before = committed(&client, &topic);
        assert_eq!(before, [(0, 3), (1, 5), (2, 7)].into());

        let timeline = Timeline::in_memory();
        let mut rx = timeline.subscribe();
        let outcome: HoldOutcome = hold_group(
            KAFKA,
            &BTreeMap::new(),
            &group,
            &topic,
            &protocol,
            Duration::from_secs(2),
            &timeline,
            &CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut events = Vec::new();
        drain(&mut rx, &mut events);
        let changes = member_events(&events);
        eprintln!("{name}: {outcome:?}\n{name}: {changes:?}");

        assert_eq!(
            outcome.partitions,
            vec![0, 1, 2],
            "{name}: alone in the group, it holds everything"
        );
        assert!(outcome.left_cleanly, "{name}: {outcome:?}");
        assert!(
            outcome.held >= Duration::from_secs(2),
            "{name}: {outcome:?}"
        );
        assert_eq!(outcome.dropped, 0, "{name}: paused before any fetch");
        assert_eq!(
            committed(&client, &topic),
            before,
            "{name}: the member moved the group's committed offsets"
        );
        let kinds: Vec<MemberChange> = changes.iter().map(|c| c.1).collect();
        assert_eq!(kinds.first(), Some(&MemberChange::Joined), "{name}");
        assert_eq!(kinds.last(), Some(&MemberChange::Left), "{name}");
        assert!(kinds.contains(&MemberChange::Assigned), "{name}");
        assert!(
            kinds.contains(&MemberChange::Revoked),
            "{name}: it gives its partitions up as it leaves"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_token_ends_the_hold_early_and_the_member_still_leaves_cleanly() {
    let (topic, group) = fresh_topic("stop", 3).await;
    let timeline = Timeline::in_memory();
    let mut rx = timeline.subscribe();
    let stop = CancellationToken::new();
    let canceller = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        })
    };
    let started = Instant::now();
    let outcome = hold_group(
        KAFKA,
        &BTreeMap::new(),
        &group,
        &topic,
        &GroupProtocol::default(),
        Duration::from_secs(60),
        &timeline,
        &stop,
    )
    .await
    .expect("the hold ends without error");
    canceller.await.unwrap();
    assert!(outcome.stopped, "{outcome:?}");
    assert!(outcome.left_cleanly, "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a 60 s hold ended soon after the stop: {:?}",
        started.elapsed()
    );
    let mut events = Vec::new();
    drain(&mut rx, &mut events);
    let kinds: Vec<MemberChange> = member_events(&events).iter().map(|c| c.1).collect();
    assert_eq!(kinds.last(), Some(&MemberChange::Left), "{kinds:?}");
}

/// Kills the consumer when the test ends, even on a failed assertion.
struct Running(Option<Child>);

impl Running {
    fn stop(&mut self) -> String {
        let Some(mut child) = self.0.take() else {
            return String::new();
        };
        let _ = child.kill();
        let out = child.wait_with_output().expect("consumer exits");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The consumer under test's assignments (whole ownership after each change), as the proxy
/// saw them, with their time.
fn consumer_assignments(events: &[Arc<Stamped>]) -> Vec<(u64, Vec<i32>)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Rebalance {
                change: RebalanceKind::Assign,
                assignment: Some(a),
                ..
            } => Some((e.t_us, a.clone())),
            _ => None,
        })
        .collect()
}

/// The example consumer runs through the proxy with `args`; the member reads the group's
/// protocol from the proxy's events, holds for 2 s and leaves; the consumer must own every
/// partition again and commit the whole topic.
async fn consumer_gets_everything_back(name: &str, args: &[&str], expected: GroupProtocol) {
    let n = 600;
    let (topic, group) = fresh_topic(name, n).await;
    let timeline = Timeline::in_memory();
    let mut rx = timeline.subscribe();
    let stop = CancellationToken::new();
    let proxy = KafkaProxy::start(
        KAFKA,
        &topic,
        1,
        timeline.clone(),
        Gate::open(),
        Arc::new(|_| 1),
        stop.clone(),
    )
    .await
    .expect("proxy starts");
    // Paced at 10 ms of work per message, then the case's own arguments.
    let args: Vec<&str> = ["--work-ms", "10"].iter().chain(args).copied().collect();
    let mut consumer = Running(Some(example_kafka_consumer(
        &proxy.bootstrap_for(0),
        &topic,
        &group,
        &args,
    )));

    // The consumer joins and gets everything.
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !consumer_assignments(&events)
        .iter()
        .any(|(_, a)| a.len() == PARTITIONS as usize)
    {
        assert!(
            Instant::now() < deadline,
            "{name}: the consumer got no assignment in 30s: {}",
            consumer.stop()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        drain(&mut rx, &mut events);
    }
    let protocol = GroupProtocol::seen(events.iter().map(|e| &**e), &group)
        .expect("the proxy saw the consumer join");
    assert_eq!(protocol, expected, "{name}: the protocol the proxy saw");

    let outcome = hold_group(
        KAFKA,
        &BTreeMap::new(),
        &group,
        &topic,
        &protocol,
        Duration::from_secs(2),
        &timeline,
        &stop,
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}: {}", consumer.stop()));

    // The consumer finishes the topic (committed reaches the end on every partition) and owns
    // every partition again after the member left (it may have finished before that: a
    // cooperative member can take an already finished partition).
    let client = offsets_client(&group);
    let end = end_offsets(&client, &topic);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        drain(&mut rx, &mut events);
        // From when the member began to give its partitions back (cooperative: the consumer
        // may get them before the member's LeaveGroup).
        let left = member_events(&events)
            .iter()
            .find(|m| matches!(m.1, MemberChange::Revoked | MemberChange::Left))
            .map(|m| m.0);
        let owns_all_again = left.is_some_and(|l| {
            consumer_assignments(&events)
                .iter()
                .any(|(t, a)| *t > l && a.len() == PARTITIONS as usize)
        });
        let c = committed(&client, &topic);
        if c == end && owns_all_again {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the consumer did not finish and own every partition again in 60s: \
             committed {c:?}, end {end:?}: {}",
            consumer.stop()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = consumer.stop();
    drain(&mut rx, &mut events);
    stop.cancel();
    proxy.join().await;

    let member = member_events(&events);
    let assignments = consumer_assignments(&events);
    let joined = member
        .iter()
        .find(|m| m.1 == MemberChange::Joined)
        .map(|m| m.0);
    let got = member
        .iter()
        .find(|m| m.1 == MemberChange::Assigned && m.2.as_ref().is_some_and(|p| !p.is_empty()))
        .map(|m| m.0);
    let left = member
        .iter()
        .find(|m| matches!(m.1, MemberChange::Revoked | MemberChange::Left))
        .map(|m| m.0);
    let back = left.and_then(|l| {
        assignments
            .iter()
            .find(|(t, a)| *t > l && a.len() == PARTITIONS as usize)
            .map(|(t, _)| *t)
    });
    let ms = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| (b as f64 - a as f64) / 1000.0);
    eprintln!(
        "{name}: {outcome:?}\n{name}: member {member:?}\n{name}: consumer assignments {assignments:?}\n\
         {name}: first rebalance (member joined -> got partitions) {:?} ms; \
         second (member left -> consumer owns all) {:?} ms",
        ms(joined, got),
        ms(left, back)
    );

    assert!(
        !outcome.partitions.is_empty(),
        "{name}: the member got partitions: {outcome:?}"
    );
    assert!(outcome.left_cleanly, "{name}: {outcome:?}");
    // While the member held, the consumer owned less than everything...
    assert!(
        assignments
            .iter()
            .any(|(t, a)| got.is_some_and(|g| *t <= g + 2_000_000) && a.len() < PARTITIONS as usize),
        "{name}: the consumer gave partitions up: {assignments:?}"
    );
    // ...and after the member left it owns everything again.
    assert!(
        back.is_some(),
        "{name}: after the member left, the consumer owns every partition: {assignments:?}\n{log}"
    );
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    assert_eq!(
        assignments
            .last()
            .map(|(_, a)| a.iter().copied().collect::<BTreeSet<_>>()),
        Some(all),
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_eager_consumer_gets_every_partition_back_when_the_member_leaves() {
    consumer_gets_everything_back("eager", &[], classic(&["range", "roundrobin"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_sticky_consumer_gets_every_partition_back_when_the_member_leaves() {
    consumer_gets_everything_back(
        "coop",
        &[
            "--config",
            "partition.assignment.strategy=cooperative-sticky",
        ],
        classic(&["cooperative-sticky"]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip848_consumer_gets_every_partition_back_when_the_member_leaves() {
    consumer_gets_everything_back(
        "kip848",
        &["--config", "group.protocol=consumer"],
        GroupProtocol::Consumer,
    )
    .await;
}
