//! Brokers: create the topic (or queue), produce the workload while keeping the ledger, and
//! read the broker's view of progress. One module per broker kind; the run talks to them only
//! through [`connect`] and [`Broker`].

pub mod amqp;
pub mod dead_letter;
pub mod group_member;
pub mod kafka;
pub mod output_topic;

pub use group_member::{hold_group, GroupProtocol, HoldOutcome};

use std::collections::BTreeMap;

use crate::error::InfraError;
use crate::plan::{BrokerKind, BrokerSpec, Extractor, Rate};
use crate::timeline::{AckedOffsets, Event, Timeline};
use crate::workload::MessageFactory;

/// The Kafka cluster, topic and consumer group of one run: where the workload goes and which
/// group consumes it.
#[derive(Debug, Clone)]
pub struct KafkaTarget {
    /// Bootstrap servers (Kafka).
    pub address: String,
    /// Topic name, `{run}` already replaced.
    pub topic: String,
    /// Consumer group, `{run}` already replaced.
    pub group: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor of a fresh topic.
    pub replication: i32,
}

/// The broker's view of how far the consumer got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Committed offset per partition (the next offset the group will read).
    pub committed: BTreeMap<i32, i64>,
    /// End offset per partition.
    pub end: BTreeMap<i32, i64>,
}

impl Progress {
    /// True when the group has committed up to the end of every partition.
    pub fn nothing_left(&self) -> bool {
        self.end
            .iter()
            .all(|(p, end)| *end == 0 || self.committed.get(p).is_some_and(|c| c >= end))
    }

    /// Messages between the committed offsets and the ends.
    pub fn lag(&self) -> i64 {
        self.end
            .iter()
            .map(|(p, end)| end - self.committed.get(p).copied().unwrap_or(0).min(*end))
            .sum()
    }
}

/// The broker's view of progress at one moment, whatever the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    /// Kafka: committed and end offsets.
    Offsets(Progress),
    /// AMQP: messages ready in the queue (unacknowledged ones are not counted by the broker).
    Queue {
        /// Ready messages.
        ready: u64,
    },
}

impl Snapshot {
    /// True when the broker has nothing left for the consumer: the group committed to the end
    /// (Kafka), or no message is ready (AMQP; the caller also waits for effects to stop, since
    /// delivered-but-unacknowledged messages are not counted).
    pub fn nothing_left(&self) -> bool {
        match self {
            Snapshot::Offsets(p) => p.nothing_left(),
            Snapshot::Queue { ready } => *ready == 0,
        }
    }

    /// Messages not yet consumed, as far as the broker says.
    pub fn lag(&self) -> u64 {
        match self {
            Snapshot::Offsets(p) => p.lag().max(0) as u64,
            Snapshot::Queue { ready } => *ready,
        }
    }

    /// The timeline event that records this snapshot.
    pub fn event(&self) -> Event {
        match self {
            Snapshot::Offsets(p) => Event::Progress {
                committed: p.committed.clone(),
                end: p.end.clone(),
            },
            Snapshot::Queue { ready } => Event::QueueDepth { ready: *ready },
        }
    }
}

/// The broker's view of progress could not be read (the run goes on: a warning).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Kafka's committed or end offsets.
    #[error(transparent)]
    Kafka(#[from] kafka::ProgressError),
    /// The AMQP queue's depth.
    #[error(transparent)]
    Amqp(#[from] amqp::AmqpOpError),
}

/// What the consumer is told about the broker (the contract's broker variables).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Which broker.
    pub kind: BrokerKind,
    /// Kafka bootstrap servers, or the AMQP URL.
    pub address: String,
    /// Kafka topic, or AMQP queue (`{run}` replaced).
    pub source: String,
    /// Kafka consumer group (empty for AMQP).
    pub group: String,
    /// AMQP prefetch to hand to the consumer, if the plan sets one.
    pub prefetch: Option<u64>,
    /// True when the broker is the embedded mock cluster.
    pub mock: bool,
    /// The dead-letter topic or queue (`broker.dead_letter`, `{run}` replaced).
    pub dead_letter: Option<String>,
}

impl Endpoint {
    /// The broker's name as the consumer is told it (`EXACTLY_BROKER`) and the timeline
    /// records it: `kafka` or `amqp`.
    pub fn broker_name(&self) -> &'static str {
        match self.kind {
            BrokerKind::Kafka => "kafka",
            BrokerKind::Amqp => "amqp",
        }
    }
}

/// A broker ready for a run: its topic or queue exists, and the embedded cluster (if any) is
/// kept alive for as long as this value lives.
pub struct Connected {
    /// The harness's connection.
    pub broker: Broker,
    /// What the consumer is told.
    pub endpoint: Endpoint,
    /// Declared last, so it is dropped after every client of it.
    _embedded: Option<kafka::EmbeddedCluster>,
}

/// Connects to the plan's broker (starting the embedded cluster for a Kafka plan without
/// `bootstrap`) and prepares the topic or queue named after `run_id`.
pub async fn connect(spec: &BrokerSpec, run_id: &str) -> Result<Connected, InfraError> {
    let dead_letter = spec
        .dead_letter
        .as_ref()
        .map(|d| d.replace("{run}", run_id));
    match spec.kind {
        BrokerKind::Kafka => {
            let mut target = KafkaTarget {
                address: spec.bootstrap.clone().unwrap_or_default(),
                topic: spec.topic.replace("{run}", run_id),
                group: spec.group.replace("{run}", run_id),
                partitions: spec.partitions.get() as i32,
                replication: spec.replication.map_or(1, |r| r.get() as i32),
            };
            let embedded = match spec.bootstrap {
                Some(_) => None,
                None => {
                    let cluster = kafka::EmbeddedCluster::start(&target.topic, target.partitions)?;
                    target.address = cluster.bootstrap().to_owned();
                    Some(cluster)
                }
            };
            let k = kafka::KafkaBroker::connect(&target, &spec.config, spec.connect_timeout)
                .await?
                .with_dead_letter(dead_letter.clone());
            let broker = Broker::Kafka(k);
            // The mock cluster has its topic already; a real one gets it fresh.
            broker.prepare(spec.create && embedded.is_none()).await?;
            Ok(Connected {
                broker,
                endpoint: Endpoint {
                    kind: BrokerKind::Kafka,
                    address: target.address,
                    source: target.topic,
                    group: target.group,
                    prefetch: None,
                    mock: embedded.is_some(),
                    dead_letter,
                },
                _embedded: embedded,
            })
        }
        BrokerKind::Amqp => {
            // Validation guarantees a URL for amqp plans.
            let url = spec.url.clone().unwrap_or_default();
            let queue = spec.queue_name().replace("{run}", run_id);
            let a = amqp::AmqpBroker::connect(
                &url,
                &queue,
                spec.exchange.as_deref(),
                spec.routing_key.as_deref(),
                spec.connect_timeout,
            )
            .await?
            .with_dead_letter(dead_letter.clone());
            let broker = Broker::Amqp(Box::new(a));
            broker.prepare(spec.create).await?;
            Ok(Connected {
                broker,
                endpoint: Endpoint {
                    kind: BrokerKind::Amqp,
                    address: url,
                    source: queue,
                    group: String::new(),
                    prefetch: spec.prefetch.map(|p| p.get()),
                    mock: false,
                    dead_letter,
                },
                _embedded: None,
            })
        }
    }
}

/// A connected broker.
pub enum Broker {
    /// Apache Kafka (real, or the embedded mock cluster).
    Kafka(kafka::KafkaBroker),
    /// RabbitMQ.
    Amqp(Box<amqp::AmqpBroker>),
}

impl Broker {
    /// Creates the topic fresh, or checks it exists.
    pub async fn prepare(&self, create: bool) -> Result<(), InfraError> {
        match self {
            Broker::Kafka(k) if create => {
                k.create_topic().await?;
                k.create_dead_letter().await
            }
            Broker::Kafka(k) => {
                k.wait_for_leaders().await?;
                k.create_dead_letter().await
            }
            Broker::Amqp(a) => a.prepare(create).await,
        }
    }

    /// Produces the workload and records the ledger; a Kafka broker also notes each
    /// acknowledged offset in `acked` (for the proxy's offset ranges).
    pub async fn produce(
        &self,
        messages: &MessageFactory,
        count: u64,
        rate: Rate,
        timeline: &Timeline,
        acked: &AckedOffsets,
    ) -> Result<(), InfraError> {
        match self {
            Broker::Kafka(k) => k.produce(messages, count, rate, timeline, acked).await,
            Broker::Amqp(a) => a.produce(messages, count, rate, timeline).await,
        }
    }

    /// Reads the broker's view of progress.
    pub async fn snapshot(&self) -> Result<Snapshot, SnapshotError> {
        Ok(match self {
            // librdkafka's offset calls block: keep them off the other tasks' threads.
            Broker::Kafka(k) => Snapshot::Offsets(tokio::task::block_in_place(|| k.progress())?),
            Broker::Amqp(a) => Snapshot::Queue {
                ready: a.ready_count().await?,
            },
        })
    }

    /// Records what only the end of a run can tell, once the consumers are stopped. `id_rule`
    /// is the plan's `effects.id`, which reads the IDs of what the queue still holds first;
    /// `open_holders` counts the consumer connections still open through the proxy.
    pub async fn finish(
        &self,
        timeline: &Timeline,
        id_rule: &Extractor,
        open_holders: &(dyn Fn() -> usize + Sync),
    ) {
        match self {
            Broker::Kafka(k) => {
                if let Some((topic, read)) = k.read_dead_letters().await {
                    record_dead_letters(timeline, &topic, read);
                }
            }
            // With the consumers gone, their unacknowledged messages are back in the queue:
            // what is left there is pending; the rest left the queue.
            Broker::Amqp(a) => {
                let (ids, complete) = match a.drain_remaining(id_rule, open_holders).await {
                    Ok(ids) => (ids, true),
                    Err(e) => {
                        timeline.record(Event::Warning {
                            message: format!("cannot read what the queue still holds: {e}"),
                        });
                        (Vec::new(), false)
                    }
                };
                timeline.record(Event::QueueRemainder { ids, complete });
                if let Some((queue, read)) = a.drain_dead_letters(id_rule).await {
                    record_dead_letters(timeline, &queue, read);
                }
                a.close().await;
            }
        }
    }
}

/// Records a read of the dead-letter destination; a failed one as a warning and an
/// incomplete, empty read (the judge then proves no loss).
fn record_dead_letters<E: std::fmt::Display>(
    timeline: &Timeline,
    destination: &str,
    read: Result<dead_letter::DeadLetters, E>,
) {
    let read = read.unwrap_or_else(|e| {
        timeline.record(Event::Warning {
            message: format!("cannot read the dead-letter destination {destination}: {e}"),
        });
        dead_letter::DeadLetters::default()
    });
    timeline.record(read.event(destination));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_left_needs_every_nonempty_partition_committed_to_its_end() {
        let p = |committed: &[(i32, i64)], end: &[(i32, i64)]| Progress {
            committed: committed.iter().copied().collect(),
            end: end.iter().copied().collect(),
        };
        assert!(p(&[(0, 5), (1, 3)], &[(0, 5), (1, 3)]).nothing_left());
        assert!(p(&[(0, 5)], &[(0, 5), (1, 0)]).nothing_left());
        assert!(!p(&[(0, 4), (1, 3)], &[(0, 5), (1, 3)]).nothing_left());
        assert!(!p(&[(0, 5)], &[(0, 5), (1, 3)]).nothing_left());
        assert_eq!(p(&[(0, 4)], &[(0, 5), (1, 3)]).lag(), 4);
    }
}
