//! The RabbitMQ broker module against the real RabbitMQ on 127.0.0.1:5672 (guest/guest): the
//! confirmed ledger, the queue depth, the final drain, fresh and missing queues, unroutable
//! publishes, and an unreachable broker.
//!
//! Each test uses its own queue (named after the test plus a random suffix) and deletes it.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use exactly::broker::amqp::AmqpBroker;
use exactly::plan::{Extractor, Rate};
use exactly::timeline::{Event, ProduceStatus, Timeline};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The drain's count of consumer connections open through a proxy: these tests have none.
fn no_proxy() -> usize {
    0
}

/// Fails the test with the fix when the real broker is not running.
fn require_rabbitmq() {
    let addr: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!(
            "RabbitMQ is not reachable on 127.0.0.1:5672: start it with `scripts/brokers start`"
        );
    }
}

/// A queue name for this test, unique across runs.
fn queue_name(test: &str) -> String {
    format!("exactly-test-{test}-{:08x}", rand::random::<u32>())
}

/// Deletes a test queue through a connection of its own (the broker module has no delete).
async fn delete_queue(queue: &str) {
    let conn = lapin::Connection::connect(URL, lapin::ConnectionProperties::default())
        .await
        .expect("connect to delete the test queue");
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
        .await
        .expect("delete the test queue");
    let _ = conn.close(200, "bye".into()).await;
}

/// The `produced` events recorded so far, as (id, offset, status, error).
type Produced = (String, Option<i64>, ProduceStatus, Option<String>);

fn produced_events(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<std::sync::Arc<exactly::timeline::Stamped>>,
) -> Vec<Produced> {
    let mut out = Vec::new();
    while let Ok(stamped) = rx.try_recv() {
        if let Event::Produced {
            id,
            offset,
            status,
            error,
            partition,
            seq,
            ..
        } = &stamped.event
        {
            assert_eq!(*partition, None, "AMQP has no partitions");
            assert_eq!(*seq, 1);
            out.push((id.clone(), *offset, *status, error.clone()));
        }
    }
    out
}

/// Polls the ready count until it equals `want` (the broker applies a publish and its confirm
/// before the count reflects it; this is only a little slack), returning the last value.
async fn ready_eventually(broker: &AmqpBroker, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n = broker.ready_count().await.expect("ready_count");
        if n == want || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_counts_and_drain_agree_on_every_message() {
    require_rabbitmq();
    let queue = queue_name("produce");
    let broker = AmqpBroker::connect(URL, &queue, None, None, Duration::from_secs(5))
        .await
        .expect("connect");
    broker.prepare(true).await.expect("prepare");
    let timeline = Timeline::in_memory();
    let mut rx = timeline.subscribe();
    let template = r#"{"order_id":"{id}","n":{seq}}"#;
    broker
        .produce(
            &exactly::workload::MessageFactory::new("r1", template),
            50,
            Rate::Unlimited,
            &timeline,
        )
        .await
        .expect("produce");

    let events = produced_events(&mut rx);
    assert_eq!(
        events.len(),
        50,
        "one produced event per message: {events:?}"
    );
    assert!(
        events
            .iter()
            .all(|(_, _, status, error)| *status == ProduceStatus::Acked && error.is_none()),
        "every message confirmed: {events:?}"
    );
    let offsets: HashSet<i64> = events.iter().map(|e| e.1.expect("an offset")).collect();
    assert_eq!(offsets.len(), 50, "distinct publish sequence numbers");
    assert_eq!(offsets, (1..=50).collect(), "sequence numbers 1..=50");
    let produced_ids: HashSet<String> = events.iter().map(|e| e.0.clone()).collect();
    assert_eq!(produced_ids, (1..=50).map(|i| format!("r1-{i}")).collect());

    assert_eq!(ready_eventually(&broker, 50).await, 50);
    let drained = broker
        .drain_remaining(&Extractor::Body, &no_proxy)
        .await
        .expect("drain");
    assert_eq!(drained.len(), 50, "{drained:?}");
    assert_eq!(
        drained.iter().cloned().collect::<HashSet<_>>(),
        produced_ids
    );
    assert_eq!(broker.ready_count().await.unwrap(), 0);
    assert!(broker
        .drain_remaining(&Extractor::Body, &no_proxy)
        .await
        .unwrap()
        .is_empty());

    broker.close().await;
    delete_queue(&queue).await;
}

/// Publishes `body` to `queue` through the default exchange with its own `message_id`, as a
/// consumer re-publishing a retry copy would.
async fn publish_copy(queue: &str, message_id: &str, body: &str) {
    let conn = lapin::Connection::connect(URL, lapin::ConnectionProperties::default())
        .await
        .expect("connect to publish");
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions::default(),
            body.as_bytes(),
            lapin::BasicProperties::default().with_message_id(message_id.into()),
        )
        .await
        .expect("publish");
    confirm.await.expect("confirmed");
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_reads_a_retry_copys_id_from_its_body_with_the_plans_rule() {
    require_rabbitmq();
    let queue = queue_name("remainder-rule");
    let broker = AmqpBroker::connect(URL, &queue, None, None, Duration::from_secs(5))
        .await
        .expect("connect");
    broker.prepare(true).await.expect("prepare");
    publish_copy(&queue, "retry-0001", r#"{"order_id":"r9-7","attempt":2}"#).await;
    assert_eq!(ready_eventually(&broker, 1).await, 1);
    let rule = Extractor::parse("json:/order_id").unwrap();
    let drained = broker
        .drain_remaining(&rule, &no_proxy)
        .await
        .expect("drain");
    assert_eq!(
        drained,
        ["r9-7", "retry-0001"],
        "the rule's ID first, the copy's own message_id kept too"
    );

    publish_copy(&queue, "retry-0002", r#"{"order_id":"r9-8"}"#).await;
    assert_eq!(ready_eventually(&broker, 1).await, 1);
    let drained = broker
        .drain_remaining(&Extractor::Body, &no_proxy)
        .await
        .expect("drain");
    assert_eq!(drained, ["retry-0002"], "without a rule, message_id only");

    broker.close().await;
    delete_queue(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_makes_the_queue_fresh_and_checks_a_missing_one() {
    require_rabbitmq();
    let queue = queue_name("prepare");
    let broker = AmqpBroker::connect(URL, &queue, None, None, Duration::from_secs(5))
        .await
        .expect("connect");

    // A missing queue: the passive declare fails (and the broker closes that channel)...
    let err = broker
        .prepare(false)
        .await
        .expect_err("the queue is missing");
    assert!(err.message.contains(&queue), "{err}");
    assert!(err.message.contains("broker.create"), "{err}");
    assert!(!err.message.contains("guest:guest"), "{err}");
    assert!(broker.ready_count().await.is_err());

    // ...and the same broker recovers: create, fill, then create again empties it.
    broker.prepare(true).await.expect("prepare fresh");
    let timeline = Timeline::in_memory();
    broker
        .produce(
            &exactly::workload::MessageFactory::new("r2", "{id}"),
            7,
            Rate::Unlimited,
            &timeline,
        )
        .await
        .expect("produce");
    assert_eq!(ready_eventually(&broker, 7).await, 7);
    broker.prepare(false).await.expect("the queue exists now");
    assert_eq!(
        broker.ready_count().await.unwrap(),
        7,
        "create: false keeps it"
    );
    broker.prepare(true).await.expect("prepare again");
    assert_eq!(
        broker.ready_count().await.unwrap(),
        0,
        "create: true starts empty"
    );

    broker.close().await;
    delete_queue(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_routes_to_the_bound_queue_and_unroutable_messages_fail() {
    require_rabbitmq();
    let queue = queue_name("exchange");
    let key = format!("{queue}-key");
    let bound = AmqpBroker::connect(
        URL,
        &queue,
        Some("amq.direct"),
        Some(&key),
        Duration::from_secs(5),
    )
    .await
    .expect("connect");
    bound.prepare(true).await.expect("declare and bind");
    let timeline = Timeline::in_memory();
    let mut rx = timeline.subscribe();
    bound
        .produce(
            &exactly::workload::MessageFactory::new("r3", r#"{"id":"{id}"}"#),
            5,
            Rate::PerSecond(200.0),
            &timeline,
        )
        .await
        .expect("produce");
    let events = produced_events(&mut rx);
    assert_eq!(events.len(), 5);
    assert!(
        events.iter().all(|e| e.2 == ProduceStatus::Acked),
        "{events:?}"
    );
    assert_eq!(ready_eventually(&bound, 5).await, 5);
    bound.close().await;

    // Another routing key reaches no queue: the broker confirms the publish and drops it, so
    // the ledger must say failed, never acked.
    let unbound = AmqpBroker::connect(
        URL,
        &queue,
        Some("amq.direct"),
        Some("exactly-test-nowhere"),
        Duration::from_secs(5),
    )
    .await
    .expect("connect");
    unbound.prepare(false).await.expect("the queue exists");
    unbound
        .produce(
            &exactly::workload::MessageFactory::new("r4", "{id}"),
            3,
            Rate::Unlimited,
            &timeline,
        )
        .await
        .expect("produce");
    let events = produced_events(&mut rx);
    assert_eq!(events.len(), 3);
    assert!(
        events.iter().all(|e| e.2 == ProduceStatus::Failed
            && e.3.as_deref().is_some_and(|m| m.contains("unroutable"))),
        "{events:?}"
    );
    assert_eq!(unbound.ready_count().await.unwrap(), 5);
    let mut drained = unbound
        .drain_remaining(&Extractor::Body, &no_proxy)
        .await
        .expect("drain");
    drained.sort();
    assert_eq!(drained, ["r3-1", "r3-2", "r3-3", "r3-4", "r3-5"]);

    unbound.close().await;
    delete_queue(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_an_infrastructure_error_without_the_password() {
    let started = Instant::now();
    let result = AmqpBroker::connect(
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "q",
        None,
        None,
        Duration::from_secs(2),
    )
    .await;
    let elapsed = started.elapsed();
    let err = result.err().expect("nothing listens on port 1");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let msg = err.message;
    assert!(
        msg.starts_with("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f within 2s ("),
        "{msg}"
    );
    assert!(
        msg.ends_with("start it with `scripts/brokers start` or fix broker.url"),
        "{msg}"
    );
    assert!(!msg.contains("guest:guest"), "{msg}");
}

/// The example consumer built with this test profile (`cargo test` builds examples only when
/// it runs every target; scripts/test builds them first).
fn example_consumer() -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_BIN_EXE_exactly"))
        .parent()
        .expect("binary has a folder")
        .join("examples/amqp_consumer");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release --examples` (scripts/test does)",
        path.display()
    );
    path
}

/// Starts the example consumer on `queue` with effects on stdout; returns the child and a
/// channel of the payloads it effected.
fn start_consumer(
    queue: &str,
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(example_consumer())
        .args(["--sink", "stdout"])
        .args(args)
        .env("EXACTLY_AMQP_URL", URL)
        .env("EXACTLY_QUEUE", queue)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("the example consumer starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(payload) = line.strip_prefix("effect ") {
                let _ = tx.send(payload.to_owned());
            }
        }
    });
    (child, rx)
}

/// Waits for `n` effects (at most `limit`).
fn effects(rx: &std::sync::mpsc::Receiver<String>, n: usize, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(p) => out.push(p),
            Err(_) => break,
        }
    }
    out
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_consumer_effects_everything_and_stops_cleanly() {
    require_rabbitmq();
    let queue = queue_name("consumer");
    let broker = AmqpBroker::connect(URL, &queue, None, None, Duration::from_secs(5))
        .await
        .expect("connect");
    broker.prepare(true).await.expect("prepare");
    let timeline = Timeline::in_memory();
    broker
        .produce(
            &exactly::workload::MessageFactory::new("r5", "{id}"),
            40,
            Rate::Unlimited,
            &timeline,
        )
        .await
        .expect("produce");

    let (mut child, rx) = start_consumer(
        &queue,
        &["--mode", "ack-after-effect", "--multiple-ack", "3"],
    );
    let seen = tokio::task::block_in_place(|| effects(&rx, 40, Duration::from_secs(20)));
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), 40, "{seen:?}");
    signal(&child, libc::SIGTERM);
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert!(status.success(), "clean stop: {status}");
    // 40 is not a multiple of 3: the clean stop acked the last effected ones.
    assert_eq!(broker.ready_count().await.unwrap(), 0);
    assert!(broker
        .drain_remaining(&Extractor::Body, &no_proxy)
        .await
        .unwrap()
        .is_empty());

    broker.close().await;
    delete_queue(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_leaves_its_unacked_messages_for_the_drain() {
    require_rabbitmq();
    let queue = queue_name("killed");
    let broker = AmqpBroker::connect(URL, &queue, None, None, Duration::from_secs(5))
        .await
        .expect("connect");
    broker.prepare(true).await.expect("prepare");
    let timeline = Timeline::in_memory();
    broker
        .produce(
            &exactly::workload::MessageFactory::new("r6", "{id}"),
            30,
            Rate::Unlimited,
            &timeline,
        )
        .await
        .expect("produce");

    let (mut child, rx) = start_consumer(
        &queue,
        &[
            "--mode",
            "ack-after-effect",
            "--prefetch",
            "5",
            "--work-ms",
            "20",
        ],
    );
    let seen = tokio::task::block_in_place(|| effects(&rx, 10, Duration::from_secs(20)));
    assert_eq!(seen.len(), 10);
    signal(&child, libc::SIGKILL);
    tokio::task::block_in_place(|| child.wait()).unwrap();
    let late: Vec<String> = rx.try_iter().collect();
    let effected: HashSet<String> = seen.into_iter().chain(late).collect();

    // The broker requeues the dead consumer's unacked messages: every message is either
    // effected or still in the queue (some, effected but not acked, are both).
    let drained: HashSet<String> = broker
        .drain_remaining(&Extractor::Body, &no_proxy)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let all: HashSet<String> = (1..=30).map(|i| format!("r6-{i}")).collect();
    assert_eq!(
        effected.union(&drained).cloned().collect::<HashSet<_>>(),
        all,
        "effected {effected:?}, drained {drained:?}"
    );
    assert!(drained.len() < 30 && drained.len() >= 30 - effected.len());

    broker.close().await;
    delete_queue(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_auto_ack_consumer_loses_what_it_held() {
    require_rabbitmq();
    let queue = queue_name("autoack");
    let broker = AmqpBroker::connect(URL, &queue, None, None, Duration::from_secs(5))
        .await
        .expect("connect");
    broker.prepare(true).await.expect("prepare");
    let timeline = Timeline::in_memory();
    broker
        .produce(
            &exactly::workload::MessageFactory::new("r7", "{id}"),
            30,
            Rate::Unlimited,
            &timeline,
        )
        .await
        .expect("produce");

    let (mut child, rx) = start_consumer(&queue, &["--mode", "auto-ack", "--work-ms", "30"]);
    let seen = tokio::task::block_in_place(|| effects(&rx, 5, Duration::from_secs(20)));
    assert_eq!(seen.len(), 5);
    signal(&child, libc::SIGKILL);
    tokio::task::block_in_place(|| child.wait()).unwrap();
    let effected: HashSet<String> = seen.into_iter().chain(rx.try_iter()).collect();

    // No-ack: the broker pushed everything and forgot it; what was not effected is gone.
    let drained: HashSet<String> = broker
        .drain_remaining(&Extractor::Body, &no_proxy)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let lost = (1..=30)
        .map(|i| format!("r7-{i}"))
        .filter(|id| !effected.contains(id) && !drained.contains(id))
        .count();
    assert!(lost > 0, "effected {effected:?}, drained {drained:?}");

    broker.close().await;
    delete_queue(&queue).await;
}
