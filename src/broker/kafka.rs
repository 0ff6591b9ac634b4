//! Kafka through rdkafka: the fresh topic, the workload producer that keeps the ledger, and
//! the progress reader (the group's committed offsets against the end offsets).
//!
//! *Architecture invariant:* only `broker/` imports rdkafka (here and `group_member.rs`). The
//! harness's own clients never commit: the progress reader only fetches offsets, and the only
//! one that joins the consumer group is the transient member of `rebalance: group`.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

use super::{KafkaTarget, Progress};
use crate::error::InfraError;
use crate::plan::Rate;
use crate::timeline::{AckedOffsets, ProduceStatus, Timeline};
use crate::workload::{self, Message, MessageFactory};

/// The broker's view of progress could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// The group's committed offsets.
    #[error("cannot read committed offsets of group {group}: {source}")]
    Committed {
        /// The consumer group.
        group: String,
        /// What librdkafka returned.
        #[source]
        source: KafkaError,
    },
    /// A partition's end offset.
    #[error("cannot read end offsets of {topic}: {source}")]
    EndOffsets {
        /// The topic.
        topic: String,
        /// What librdkafka returned.
        #[source]
        source: KafkaError,
    },
}

/// How long the broker may take to answer one produce before it is indeterminate.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most produce requests in flight at once.
const MAX_IN_FLIGHT: usize = 1000;

/// The embedded mock cluster, alive until dropped. It lives on its own thread because
/// librdkafka's mock handle is not `Send`.
pub struct EmbeddedCluster {
    bootstrap: String,
    stop: Option<std_mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The mock's `group.initial.rebalance.delay.ms`: how long a group's first JoinGroup is held
/// before the leader is elected. librdkafka's mock defaults to 3000 ms, but its session timer
/// (a 1 s tick) also expires members *parked in that JoinGroup* once `session.timeout.ms` has
/// passed; with a session timeout at or below 3 s (the demo uses 2 s) the only member is
/// dropped before the election, its JoinGroup is never answered, and the consumer waits for
/// it for `max.poll.interval.ms` (5 min): no assignment, no progress. Keeping the delay well
/// under any realistic session timeout avoids that.
const MOCK_INITIAL_REBALANCE_DELAY_MS: i32 = 200;

impl EmbeddedCluster {
    /// Starts a 1-broker mock cluster with `topic` created with `partitions`.
    pub fn start(topic: &str, partitions: i32) -> Result<EmbeddedCluster, InfraError> {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
        let topic = topic.to_owned();
        let thread = std::thread::spawn(move || {
            // The cluster is owned by this (never used) client, created through
            // `test.mock.num.brokers` so that its raw handle is reachable for the settings
            // rdkafka's `MockCluster` does not wrap.
            let owner: BaseProducer = match ClientConfig::new()
                .set("test.mock.num.brokers", "1")
                .create()
            {
                Ok(p) => p,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let Some(cluster) = owner.client().mock_cluster() else {
                let _ = ready_tx.send(Err("the client has no mock cluster".to_owned()));
                return;
            };
            // SAFETY: the handle belongs to `owner`, alive for this whole scope; the setter
            // only takes the mock cluster's own lock.
            unsafe {
                let raw =
                    rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
                if !raw.is_null() {
                    rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(
                        raw,
                        MOCK_INITIAL_REBALANCE_DELAY_MS,
                    );
                }
            }
            if let Err(e) = cluster.create_topic(&topic, partitions, 1) {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
            let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
            // Keep the cluster alive until asked to stop (or the sender is dropped).
            let _ = stop_rx.recv();
            drop(cluster);
            drop(owner);
        });
        let bootstrap = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| InfraError::new("the embedded mock cluster did not start within 10s"))?
            .map_err(|e| InfraError::new(format!("cannot start the embedded mock cluster: {e}")))?;
        Ok(EmbeddedCluster {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Its bootstrap address (a real TCP listener on loopback).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The harness's connection to one Kafka cluster.
pub struct KafkaBroker {
    bootstrap: String,
    topic: String,
    group: String,
    partitions: i32,
    replication: i32,
    extra: BTreeMap<String, String>,
    progress_reader: BaseConsumer,
    /// `broker.dead_letter`: the topic the consumer diverts poison to, read after the run.
    dead_letter: Option<Box<super::output_topic::OutputTopic>>,
}

impl KafkaBroker {
    /// Connects (retrying until `connect_timeout`) and checks the cluster answers.
    pub async fn connect(
        target: &KafkaTarget,
        extra: &BTreeMap<String, String>,
        connect_timeout: Duration,
    ) -> Result<KafkaBroker, InfraError> {
        let mut config = base_config(&target.address, extra);
        // `read_uncommitted`: under librdkafka's default `read_committed` a committed-offsets
        // read asks for stable offsets (KIP-447), and while a transactional consumer has sent
        // offsets to a transaction it has not ended (paused, slow, or a zombie about to be
        // fenced) the broker answers UNSTABLE_OFFSET_COMMIT until the read times out; reads
        // failing for `connect_timeout` end the run as "lost the broker". Unstable offsets
        // are not committed yet: the read returns what is committed now. The input topic is
        // the harness's own, written without transactions, so its end offset is the same
        // under either isolation.
        config
            .set("group.id", &target.group)
            .set("isolation.level", "read_uncommitted")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let progress_reader: BaseConsumer = config.create().map_err(|e| {
            InfraError::new(format!("bad Kafka client settings (broker.config): {e}"))
        })?;
        let broker = KafkaBroker {
            bootstrap: target.address.clone(),
            topic: target.topic.clone(),
            group: target.group.clone(),
            partitions: target.partitions,
            replication: target.replication,
            extra: extra.clone(),
            progress_reader,
            dead_letter: None,
        };
        let deadline = Instant::now() + connect_timeout;
        loop {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(2));
            let reader = &broker.progress_reader;
            let answered = tokio::task::block_in_place(|| reader.fetch_metadata(None, step));
            match answered {
                Ok(_) => return Ok(broker),
                Err(e) if Instant::now() >= deadline => {
                    return Err(InfraError::new(format!(
                        "cannot reach Kafka at {} within {} ({e}); start it with `scripts/brokers start` or fix broker.bootstrap",
                        broker.bootstrap,
                        humantime::format_duration(connect_timeout)
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Names the dead-letter topic (`broker.dead_letter`, `{run}` replaced): one partition,
    /// made by [`KafkaBroker::create_dead_letter`], read by [`KafkaBroker::read_dead_letters`].
    pub fn with_dead_letter(mut self, topic: Option<String>) -> KafkaBroker {
        self.dead_letter = topic.map(|topic| {
            Box::new(super::output_topic::OutputTopic {
                bootstrap: self.bootstrap.clone(),
                topic,
                partitions: 1,
                replication: self.replication,
                extra: self.extra.clone(),
            })
        });
        self
    }

    /// Makes the dead-letter topic, when the plan names one.
    pub async fn create_dead_letter(&self) -> Result<(), InfraError> {
        match &self.dead_letter {
            Some(t) => super::dead_letter::create_topic(t).await,
            None => Ok(()),
        }
    }

    /// What the dead-letter topic holds, with its name; `None` when the plan names none.
    pub async fn read_dead_letters(
        &self,
    ) -> Option<(String, Result<super::dead_letter::DeadLetters, InfraError>)> {
        let t = self.dead_letter.as_ref()?;
        Some((t.topic.clone(), super::dead_letter::read_topic(t).await))
    }

    /// Creates the topic and waits until every partition has a leader.
    pub async fn create_topic(&self) -> Result<(), InfraError> {
        let config = base_config(&self.bootstrap, &self.extra);
        // A topic that exists already is used as it is.
        create_topic_once(&config, &self.topic, (self.partitions, self.replication))
            .await
            .map_err(|e| InfraError::new(format!("cannot create topic {e}")))?;
        self.wait_for_leaders().await
    }

    /// Checks the topic exists with leaders (for `create: false` and after creating it).
    pub async fn wait_for_leaders(&self) -> Result<(), InfraError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let reader = &self.progress_reader;
            let topic = self.topic.as_str();
            let ready = tokio::task::block_in_place(|| {
                reader
                    .fetch_metadata(Some(topic), Duration::from_secs(2))
                    .ok()
                    .and_then(|m| {
                        m.topics().first().map(|t| {
                            t.error().is_none()
                                && !t.partitions().is_empty()
                                && t.partitions().iter().all(|p| p.leader() >= 0)
                        })
                    })
                    .unwrap_or(false)
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(InfraError::new(format!(
                    "topic {} has no leader for every partition after 15s",
                    self.topic
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Produces the workload, recording one `produced` event per message (the ledger), and
    /// each acknowledged offset in `acked` once its event is recorded.
    pub async fn produce(
        &self,
        messages: &MessageFactory,
        count: u64,
        rate: Rate,
        timeline: &Timeline,
        acked: &AckedOffsets,
    ) -> Result<(), InfraError> {
        let producer: FutureProducer = {
            let mut c = base_config(&self.bootstrap, &self.extra);
            c.set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set(
                    "message.timeout.ms",
                    DELIVERY_TIMEOUT.as_millis().to_string(),
                );
            c.create()
                .map_err(|e| InfraError::new(format!("cannot create the workload producer: {e}")))?
        };
        let started = Instant::now();
        let mut in_flight = FuturesUnordered::new();
        for (sent, seq) in (1..=count).enumerate() {
            let wait = workload::delay_before(rate, sent as u64, started.elapsed());
            if !wait.is_zero() {
                workload::wait_driving(wait, &mut in_flight).await;
            }
            let message = messages.message(seq);
            in_flight.push(send_one(&producer, &self.topic, message, (timeline, acked)));
            while in_flight.len() >= MAX_IN_FLIGHT {
                in_flight.next().await;
            }
        }
        while in_flight.next().await.is_some() {}
        let _ = tokio::task::block_in_place(|| producer.flush(Duration::from_secs(5)));
        Ok(())
    }

    /// Reads the group's committed offsets and the end offsets of every partition.
    pub fn progress(&self) -> Result<Progress, ProgressError> {
        let timeout = Duration::from_secs(5);
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = self
            .progress_reader
            .committed_offsets(tpl, timeout)
            .map_err(|source| ProgressError::Committed {
                group: self.group.clone(),
                source,
            })?;
        let mut progress = Progress::default();
        for el in committed.elements() {
            if let Offset::Offset(o) = el.offset() {
                progress.committed.insert(el.partition(), o);
            }
        }
        for p in 0..self.partitions {
            let (_, high) = self
                .progress_reader
                .fetch_watermarks(&self.topic, p, timeout)
                .map_err(|source| ProgressError::EndOffsets {
                    topic: self.topic.clone(),
                    source,
                })?;
            progress.end.insert(p, high);
        }
        Ok(progress)
    }
}

/// Sends one message and records its fate: on the timeline, then, when acknowledged, in the
/// acknowledged offsets (so they never name an offset whose ID is not on the timeline).
async fn send_one(
    producer: &FutureProducer,
    topic: &str,
    message: Message,
    (timeline, acked): (&Timeline, &AckedOffsets),
) {
    let headers = OwnedHeaders::new().insert(Header {
        key: "exactly-id",
        value: Some(message.id.as_bytes()),
    });
    let record = FutureRecord::to(topic)
        .key(message.key.as_str())
        .payload(message.payload.as_str())
        .headers(headers);
    let result = producer
        .send(record, Timeout::After(DELIVERY_TIMEOUT))
        .await;
    let mut at = None;
    let event = match result {
        Ok(d) => {
            at = Some((d.partition, d.offset));
            message.produced(
                Some(d.partition),
                Some(d.offset),
                ProduceStatus::Acked,
                None,
            )
        }
        Err((e, _)) => {
            let status = match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                    ProduceStatus::Indeterminate
                }
                _ => ProduceStatus::Failed,
            };
            message.produced(None, None, status, Some(e.to_string()))
        }
    };
    timeline.record(event);
    if let Some((partition, offset)) = at {
        acked.acked(partition, offset);
    }
}

/// Settings every harness client shares: the address, quiet logs, the user's extras.
fn base_config(bootstrap: &str, extra: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .set("socket.connection.setup.timeout.ms", "5000");
    for (k, v) in extra {
        c.set(k, v);
    }
    c
}

/// Creates `topic` with `(partitions, replication)` through an admin client made of `config`:
/// `Ok(true)` when it was created, `Ok(false)` when it existed already; an error starts with
/// the topic's name (the caller says what the topic was for).
pub(crate) async fn create_topic_once(
    config: &ClientConfig,
    topic: &str,
    (partitions, replication): (i32, i32),
) -> Result<bool, String> {
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| format!("{topic}: cannot create a Kafka admin client: {e}"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| format!("{topic}: {e}"))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
            Err((name, code)) => return Err(format!("{name}: {code}")),
        }
    }
    Ok(true)
}
