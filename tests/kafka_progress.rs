//! The harness's progress read (the group's committed offsets, every few hundred ms of a run)
//! against the real broker on 127.0.0.1:9092 while a transactional consumer holds offsets
//! it sent to its transaction but has not committed (a pipeline paused or slow between
//! `send_offsets_to_transaction` and `commit_transaction`). Those offsets are not committed
//! yet, and the read must say what is committed now instead of waiting for the transaction:
//! a read that waits (librdkafka asks for stable offsets under `read_committed`, and the
//! broker answers UNSTABLE_OFFSET_COMMIT until the transaction ends) fails after its
//! timeout, and a run whose reads fail for `connect_timeout` ends as "lost the broker".

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use exactly::broker::kafka::KafkaBroker;
use exactly::broker::KafkaTarget;
use exactly::plan::Rate;
use exactly::timeline::{AckedOffsets, Timeline};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

const KAFKA: &str = "127.0.0.1:9092";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reads_the_committed_offsets_while_a_transaction_holds_newer_ones() {
    require_kafka();
    let run = format!("kprog-{}-{}", std::process::id(), unique());
    let target = KafkaTarget {
        address: KAFKA.into(),
        topic: format!("{run}-t"),
        group: format!("{run}-g"),
        partitions: 1,
        replication: 1,
    };
    let broker = KafkaBroker::connect(&target, &BTreeMap::new(), Duration::from_secs(10))
        .await
        .expect("connect to Kafka");
    broker.create_topic().await.expect("create topic");
    let factory = exactly::workload::MessageFactory::new(&run, "{\"id\":\"{id}\"}");
    let ledger = Timeline::in_memory();
    broker
        .produce(
            &factory,
            10,
            Rate::Unlimited,
            &ledger,
            &AckedOffsets::default(),
        )
        .await
        .expect("produce");

    // A transactional pipeline sends offset 5 of the group to its transaction and stops there.
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", &target.group)
        .create()
        .unwrap();
    let group = member.group_metadata().expect("group metadata");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("transactional.id", format!("{run}-txn"))
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap();
    let wait = Duration::from_secs(20);
    producer.init_transactions(wait).expect("init_transactions");
    producer.begin_transaction().expect("begin_transaction");
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&target.topic, 0, Offset::Offset(5))
        .unwrap();
    producer
        .send_offsets_to_transaction(&offsets, &group, wait)
        .expect("send_offsets_to_transaction");

    let started = Instant::now();
    let progress = tokio::task::block_in_place(|| broker.progress());
    let took = started.elapsed();
    let progress = progress.expect("the read answers while the transaction is open");
    assert!(took < Duration::from_secs(2), "answered in {took:?}");
    assert_eq!(
        progress.committed.get(&0),
        None,
        "offset 5 is not committed yet"
    );
    assert_eq!(progress.end.get(&0), Some(&10));

    // Committed, it is read as committed (once the coordinator has written its marker, a
    // moment after it answered the commit).
    producer
        .commit_transaction(wait)
        .expect("commit_transaction");
    let deadline = Instant::now() + Duration::from_secs(10);
    let committed = loop {
        let read = tokio::task::block_in_place(|| broker.progress()).expect("read");
        let committed = read.committed.get(&0).copied();
        if committed == Some(5) || Instant::now() > deadline {
            break committed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(committed, Some(5));
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
