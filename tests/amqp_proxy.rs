//! The AMQP-aware proxy against the real RabbitMQ on 127.0.0.1:5672 (guest/guest): the example
//! consumer (lapin) and a Python pika client consume through it; the proxy records every
//! delivery with its ID, resolves single and multiple acks to the IDs they cover, reports the
//! consumer's settings (prefetch, no-ack), and holds and drops an ack for the nemesis, after
//! which the broker redelivers the message (`redelivered` seen by the proxy).
//!
//! Each test publishes to its own fresh queue (the harness's own publisher, directly to the
//! broker) and deletes it at the end.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use exactly::broker::amqp::AmqpBroker;
use exactly::gate::{Gate, HoldDecision, HoldPoint};
use exactly::plan::{Extractor, Rate};
use exactly::proxy::amqp::AmqpProxy;
use exactly::timeline::{AckPhase, AckVerb, Event, ProduceStatus, Stamped, Timeline};
use tokio_util::sync::CancellationToken;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const WAIT: Duration = Duration::from_secs(30);

/// A fresh queue holding `n` confirmed messages; returns the broker handle, the queue and the
/// IDs. Bounded: a broker that stops answering fails the test instead of hanging it.
async fn fresh_queue(name: &str, n: u64) -> (AmqpBroker, String, BTreeSet<String>) {
    require_rabbitmq();
    tokio::time::timeout(Duration::from_secs(60), fill_queue(name, n))
        .await
        .unwrap_or_else(|_| panic!("publishing {n} messages to a fresh queue took over 60 s"))
}

async fn fill_queue(name: &str, n: u64) -> (AmqpBroker, String, BTreeSet<String>) {
    let run = format!("ap-{name}-{:08x}", rand::random::<u32>());
    let queue = format!("exactly-test-{run}");
    let broker = AmqpBroker::connect(URL, &queue, None, None, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e} (start RabbitMQ with `scripts/brokers start rabbitmq`)"));
    broker.prepare(true).await.expect("fresh queue");
    let ledger = Timeline::in_memory();
    let mut rx = ledger.subscribe();
    broker
        .produce(
            &exactly::workload::MessageFactory::new(&run, "{\"id\":\"{id}\"}"),
            n,
            Rate::Unlimited,
            &ledger,
        )
        .await
        .expect("produce");
    let mut ids = BTreeSet::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Produced {
            id,
            status: ProduceStatus::Acked,
            ..
        } = &e.event
        {
            ids.insert(id.clone());
        }
    }
    assert_eq!(ids.len() as u64, n, "every message was confirmed");
    (broker, queue, ids)
}

/// Deletes the test queue (its own connection: the broker module has no delete), within 10 s.
async fn delete_queue(queue: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(10), delete(queue)).await;
}

async fn delete(queue: &str) {
    if let Ok(conn) = lapin::Connection::connect(URL, lapin::ConnectionProperties::default()).await
    {
        if let Ok(channel) = conn.create_channel().await {
            let _ = channel
                .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
                .await;
        }
        let _ = conn.close(200, "bye".into()).await;
    }
}

struct Proxy {
    proxy: AmqpProxy,
    events: tokio::sync::mpsc::UnboundedReceiver<Arc<Stamped>>,
    seen: Vec<Arc<Stamped>>,
    stop: CancellationToken,
    incarnation: Arc<AtomicU32>,
}

impl Proxy {
    async fn start(gate: Gate) -> Proxy {
        let timeline = Timeline::in_memory();
        let events = timeline.subscribe();
        let stop = CancellationToken::new();
        let incarnation = Arc::new(AtomicU32::new(1));
        let inc = incarnation.clone();
        let proxy = AmqpProxy::start(
            URL,
            1,
            timeline,
            gate,
            Arc::new(move |_| inc.load(Ordering::SeqCst)),
            stop.clone(),
        )
        .await
        .expect("proxy starts");
        Proxy {
            proxy,
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

    async fn finish(mut self) -> Vec<Arc<Stamped>> {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        let failure = self.proxy.failure();
        self.stop.cancel();
        self.proxy.join().await;
        assert_eq!(failure, None, "the proxy reported a failure");
        self.seen
    }
}

/// Starts the example consumer through the proxy.
fn consumer(proxy: &Proxy, queue: &str, args: &[&str]) -> Child {
    let bin = examples_dir().join("amqp_consumer");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release --examples`",
        bin.display()
    );
    Command::new(bin)
        .args(args)
        .env("EXACTLY_AMQP_URL", proxy.proxy.url_for(0))
        .env("EXACTLY_QUEUE", queue)
        .env("EXACTLY_EFFECT_URL", "http://127.0.0.1:9/unused")
        .env("EXACTLY_INSTANCE", "0")
        .env(
            "EXACTLY_INCARNATION",
            proxy.incarnation.load(Ordering::SeqCst).to_string(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start amqp_consumer")
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn delivered(events: &[Arc<Stamped>]) -> Vec<(String, u32, i64, bool)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Delivered {
                id,
                incarnation,
                offset,
                redelivered,
                instance: 0,
                partition: None,
            } => Some((id.clone(), *incarnation, offset.unwrap_or(-1), *redelivered)),
            _ => None,
        })
        .collect()
}

fn delivered_ids(events: &[Arc<Stamped>]) -> BTreeSet<String> {
    delivered(events).into_iter().map(|d| d.0).collect()
}

/// (seq, delivery tag, multiple, verb, ids) of the acks in `phase`.
type AckSeen = (u64, u64, bool, AckVerb, Vec<String>);

fn acks(events: &[Arc<Stamped>], wanted: AckPhase) -> Vec<AckSeen> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Ack {
                phase,
                delivery_tag,
                multiple,
                verb,
                ids,
                ..
            } if *phase == wanted => Some((e.seq, *delivery_tag, *multiple, *verb, ids.clone())),
            _ => None,
        })
        .collect()
}

fn acked_ids(events: &[Arc<Stamped>]) -> BTreeSet<String> {
    acks(events, AckPhase::Forwarded)
        .into_iter()
        .flat_map(|a| a.4)
        .collect()
}

fn settings(events: &[Arc<Stamped>]) -> Vec<(bool, Option<u16>)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ConsumerSettings {
                no_ack, prefetch, ..
            } => Some((*no_ack, *prefetch)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_and_ack_is_seen_with_its_ids() {
    let (broker, queue, ids) = fresh_queue("single", 40).await;
    let mut proxy = Proxy::start(Gate::open()).await;
    let url = proxy.proxy.url_for(0);
    assert!(
        url.starts_with("amqp://guest:guest@127.0.0.1:") && url.ends_with("/%2f"),
        "{url}"
    );
    let child = consumer(
        &proxy,
        &queue,
        &[
            "--mode",
            "ack-after-effect",
            "--sink",
            "stdout",
            "--prefetch",
            "7",
        ],
    );
    let all = ids.clone();
    let done = proxy
        .wait_for(WAIT, |e| acked_ids(e) == all && delivered_ids(e) == all)
        .await;
    kill(child);
    let remaining = broker
        .drain_remaining(&Extractor::Body, &|| proxy.proxy.open_connections())
        .await
        .expect("drain");
    delete_queue(&queue).await;
    let events = proxy.finish().await;
    assert!(
        done,
        "delivered {} / acked {} of {}",
        delivered_ids(&events).len(),
        acked_ids(&events).len(),
        ids.len()
    );
    assert!(
        remaining.is_empty(),
        "every forwarded ack reached the broker: {remaining:?}"
    );
    assert_eq!(settings(&events), vec![(false, Some(7))]);
    let forwarded = acks(&events, AckPhase::Forwarded);
    assert_eq!(forwarded.len(), ids.len());
    // Each single ack names exactly the message delivered with its tag.
    let by_tag: std::collections::HashMap<i64, String> = delivered(&events)
        .into_iter()
        .map(|(id, _, tag, _)| (tag, id))
        .collect();
    for (_, tag, multiple, verb, covered) in &forwarded {
        assert!(!multiple);
        assert_eq!(*verb, AckVerb::Ack);
        assert_eq!(covered, &vec![by_tag[&(*tag as i64)].clone()]);
    }
    // Every Forwarded follows its Request.
    assert_eq!(acks(&events, AckPhase::Request).len(), forwarded.len());
    assert!(acks(&events, AckPhase::Dropped).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_acks_resolve_to_the_ids_they_cover() {
    let (_broker, queue, ids) = fresh_queue("multiple", 40).await;
    let mut proxy = Proxy::start(Gate::open()).await;
    let child = consumer(
        &proxy,
        &queue,
        &[
            "--mode",
            "ack-after-effect",
            "--sink",
            "stdout",
            "--multiple-ack",
            "5",
        ],
    );
    let all = ids.clone();
    let done = proxy.wait_for(WAIT, |e| acked_ids(e) == all).await;
    kill(child);
    delete_queue(&queue).await;
    let events = proxy.finish().await;
    assert!(done, "acked {} of {}", acked_ids(&events).len(), ids.len());
    let by_tag: std::collections::BTreeMap<i64, String> = delivered(&events)
        .into_iter()
        .map(|(id, _, tag, _)| (tag, id))
        .collect();
    let forwarded = acks(&events, AckPhase::Forwarded);
    assert_eq!(forwarded.len(), 8, "40 messages, one multiple ack per 5");
    for (_, tag, multiple, _, covered) in &forwarded {
        assert!(multiple);
        let expected: Vec<String> = by_tag
            .range(*tag as i64 - 4..=*tag as i64)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(covered, &expected, "ack of tag {tag}");
    }
    assert_eq!(settings(&events), vec![(false, Some(10))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_ack_consumer_shows_no_ack_and_sends_no_acks() {
    let (_broker, queue, ids) = fresh_queue("autoack", 25).await;
    let mut proxy = Proxy::start(Gate::open()).await;
    let child = consumer(&proxy, &queue, &["--mode", "auto-ack", "--sink", "stdout"]);
    let all = ids.clone();
    let done = proxy.wait_for(WAIT, |e| delivered_ids(e) == all).await;
    // Give a stray ack the time to show up.
    proxy.wait_for(Duration::from_millis(500), |_| false).await;
    kill(child);
    delete_queue(&queue).await;
    let events = proxy.finish().await;
    assert!(
        done,
        "delivered {} of {}",
        delivered_ids(&events).len(),
        ids.len()
    );
    assert_eq!(settings(&events), vec![(true, None)]);
    assert!(events.iter().all(|e| !matches!(e.event, Event::Ack { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withheld_ack_is_dropped_and_its_message_redelivered() {
    let (broker, queue, ids) = fresh_queue("held", 30).await;
    let gate = Gate::holding([HoldPoint::AckRequest]);
    let mut proxy = Proxy::start(gate.clone()).await;
    let args = [
        "--mode",
        "ack-after-effect",
        "--sink",
        "stdout",
        "--prefetch",
        "4",
    ];
    let mut child = Some(consumer(&proxy, &queue, &args));
    // The test is the nemesis: answer every ack request but the third, which it withholds
    // after killing the consumer.
    let mut decided = 0;
    let mut withheld: Option<(u64, Vec<String>)> = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while withheld.is_none() && tokio::time::Instant::now() < deadline {
        let Ok(Some(e)) = tokio::time::timeout_at(deadline, proxy.events.recv()).await else {
            break;
        };
        proxy.seen.push(e.clone());
        if let Event::Ack {
            phase: AckPhase::Request,
            ids,
            ..
        } = &e.event
        {
            decided += 1;
            if decided == 3 {
                kill(child.take().unwrap());
                gate.decide(HoldPoint::AckRequest, e.seq, HoldDecision::Withhold);
                withheld = Some((e.seq, ids.clone()));
            } else {
                gate.decide(HoldPoint::AckRequest, e.seq, HoldDecision::Answer);
            }
        }
    }
    let (held_seq, held_ids) = withheld.expect("a third ack request");
    assert_eq!(held_ids.len(), 1);
    let dropped = proxy
        .wait_for(WAIT, |e| {
            acks(e, AckPhase::Dropped)
                .iter()
                .any(|a| a.0 > held_seq && a.4 == held_ids)
        })
        .await;
    assert!(dropped, "a Dropped event follows the withheld request");
    assert!(
        !acked_ids(&proxy.seen).contains(&held_ids[0]),
        "the withheld ack was never forwarded"
    );

    // The next incarnation gets the message again, marked redelivered; every ack from now on
    // is answered.
    proxy.incarnation.store(2, Ordering::SeqCst);
    let second = consumer(&proxy, &queue, &args);
    let id = held_ids[0].clone();
    let all = ids.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut redelivered = false;
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(e)) = tokio::time::timeout_at(deadline, proxy.events.recv()).await else {
            break;
        };
        proxy.seen.push(e.clone());
        if let Event::Ack {
            phase: AckPhase::Request,
            ..
        } = &e.event
        {
            gate.decide(HoldPoint::AckRequest, e.seq, HoldDecision::Answer);
        }
        redelivered |= matches!(
            &e.event,
            Event::Delivered { id: got, incarnation: 2, redelivered: true, .. } if *got == id
        );
        if redelivered && acked_ids(&proxy.seen) == all {
            break;
        }
    }
    kill(second);
    let remaining = broker
        .drain_remaining(&Extractor::Body, &|| proxy.proxy.open_connections())
        .await
        .expect("drain");
    delete_queue(&queue).await;
    let events = proxy.finish().await;
    assert!(
        redelivered,
        "{id} came back redelivered to incarnation 2: {:?}",
        delivered(&events)
            .into_iter()
            .filter(|d| d.0 == id)
            .collect::<Vec<_>>()
    );
    assert_eq!(acked_ids(&events), ids, "every message acked in the end");
    assert!(remaining.is_empty(), "{remaining:?}");
    assert_eq!(acks(&events, AckPhase::Dropped).len(), 1);
}

const PIKA_CONSUMER: &str = r#"
import sys
import pika
url, queue, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.basic_qos(prefetch_count=5)
seen = 0
for method, props, body in ch.consume(queue, auto_ack=False, inactivity_timeout=30):
    if method is None:
        sys.exit("pika consumer: no message within 30 s")
    seen += 1
    # Every third message (and the last) acks the ones before it too (multiple=True).
    if seen % 3 == 0 or seen == n:
        ch.basic_ack(method.delivery_tag, multiple=True)
    if seen == n:
        break
ch.cancel()
conn.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_pika_client_consumes_through_the_proxy() {
    let pika = Command::new("python3")
        .args(["-c", "import pika"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    // Never a silent skip: a missing client is a setup to fix (`.ci/run` installs it).
    assert!(
        pika,
        "python3 with pika is not installed: run `python3 -m pip install pika`"
    );
    let (broker, queue, ids) = fresh_queue("pika", 20).await;
    let mut proxy = Proxy::start(Gate::open()).await;
    let url = proxy.proxy.url_for(0);
    let q = queue.clone();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", PIKA_CONSUMER, &url, &q, "20"])
            .output()
            .expect("run python3")
    });
    let all = ids.clone();
    let done = proxy
        .wait_for(WAIT, |e| acked_ids(e) == all && delivered_ids(e) == all)
        .await;
    let out = tokio::time::timeout(WAIT, run)
        .await
        .expect("pika consumer ends")
        .unwrap();
    let remaining = broker
        .drain_remaining(&Extractor::Body, &|| proxy.proxy.open_connections())
        .await
        .expect("drain");
    delete_queue(&queue).await;
    let events = proxy.finish().await;
    assert!(
        out.status.success(),
        "pika consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        done,
        "delivered {} / acked {} of {}",
        delivered_ids(&events).len(),
        acked_ids(&events).len(),
        ids.len()
    );
    assert!(remaining.is_empty(), "{remaining:?}");
    assert_eq!(settings(&events), vec![(false, Some(5))]);
    let forwarded = acks(&events, AckPhase::Forwarded);
    assert!(forwarded.iter().all(|a| a.2), "pika sent multiple acks");
    assert!(
        forwarded.iter().filter(|a| a.4.len() == 3).count() >= 6,
        "{forwarded:?}"
    );
    // Every ID covered exactly once.
    let total: usize = forwarded.iter().map(|a| a.4.len()).sum();
    assert_eq!(total, ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_pauses_and_sever_resets_the_consumers_connection() {
    use exactly::plan::Target;
    use exactly::proxy::control::NetworkControl;
    let (_broker, queue, ids) = fresh_queue("network", 30).await;
    let mut proxy = Proxy::start(Gate::open()).await;
    let mut child = consumer(
        &proxy,
        &queue,
        &[
            "--mode",
            "ack-after-effect",
            "--sink",
            "stdout",
            "--work-ms",
            "20",
        ],
    );
    assert!(proxy.wait_for(WAIT, |e| acked_ids(e).len() >= 3).await);
    let what = proxy
        .proxy
        .partition(Target::Instance(0), Duration::from_millis(800))
        .expect("a connection to partition");
    assert!(what.contains("1 connection"), "{what}");
    // Frames in flight when the partition began may still land; after that, silence.
    proxy.wait_for(Duration::from_millis(200), |_| false).await;
    let before = proxy.seen.len();
    proxy.wait_for(Duration::from_millis(400), |_| false).await;
    assert_eq!(
        proxy.seen.len(),
        before,
        "nothing moves during the partition"
    );
    // It heals by itself.
    assert!(proxy.wait_for(WAIT, |e| e.len() > before).await);
    let what = proxy
        .proxy
        .sever(Target::Instance(0))
        .expect("a connection to sever");
    assert!(what.contains("RST"), "{what}");
    let exited = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        (status, child)
    });
    let (status, _child) = tokio::time::timeout(WAIT, exited)
        .await
        .expect("the consumer notices the reset")
        .unwrap();
    assert!(
        !status.unwrap().success(),
        "the consumer lost its connection"
    );
    let mut gone = false;
    for _ in 0..100 {
        if proxy.proxy.connections(0) == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the severed connection left the registry");
    delete_queue(&queue).await;
    let events = proxy.finish().await;
    assert!(acked_ids(&events).len() < ids.len());
}

/// A client through the proxy that takes `n` messages with `basic.get` and holds them
/// unacknowledged until it is killed (a `basic.get` consumer is no queue consumer: the
/// broker's consumer count stays 0 while it holds them).
const PIKA_HOLDER: &str = r#"
import pika, sys, time
conn = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
ch = conn.channel()
for _ in range(int(sys.argv[3])):
    ch.basic_get(sys.argv[2], auto_ack=False)
time.sleep(600)
"#;

/// Starts [`PIKA_HOLDER`] through the proxy; returns once the proxy saw its `n` deliveries.
async fn hold_with_basic_get(proxy: &mut Proxy, queue: &str, n: usize) -> Child {
    let holder = Command::new("python3")
        .args([
            "-c",
            PIKA_HOLDER,
            &proxy.proxy.url_for(0),
            queue,
            &n.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 with pika (`python3 -m pip install pika`)");
    assert!(proxy.wait_for(WAIT, |e| delivered_ids(e).len() == n).await);
    holder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_waits_for_a_basic_get_holder_to_go_and_finds_what_it_held() {
    let (broker, queue, ids) = fresh_queue("holder-goes", 10).await;
    let mut proxy = Proxy::start(Gate::open()).await;
    let holder = hold_with_basic_get(&mut proxy, &queue, 4).await;
    // Killed a moment after the drain began (a consumer dying late): its socket just closes.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        kill(holder);
    });
    let drained: BTreeSet<String> = broker
        .drain_remaining(&Extractor::Body, &|| proxy.proxy.open_connections())
        .await
        .expect("the drain finishes once the holder is gone")
        .into_iter()
        .collect();
    killer.join().unwrap();
    delete_queue(&queue).await;
    proxy.finish().await;
    assert_eq!(
        drained, ids,
        "the 4 held messages came back and were counted in the queue, not gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stays_makes_the_drain_give_up_rather_than_call_its_messages_gone() {
    let (broker, queue, _) = fresh_queue("holder-stays", 6).await;
    let mut proxy = Proxy::start(Gate::open()).await;
    let holder = hold_with_basic_get(&mut proxy, &queue, 2).await;
    let result = broker
        .drain_remaining(&Extractor::Body, &|| proxy.proxy.open_connections())
        .await;
    kill(holder);
    delete_queue(&queue).await;
    proxy.finish().await;
    let e = result.expect_err("a holder is still there");
    assert!(
        matches!(
            e,
            exactly::broker::amqp::DrainError::HoldersLeft { connections: 1, .. }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("pending cannot be told from lost"),
        "{e}"
    );
}
