//! The consumer's output topic (a `kafka-topic` boundary): created fresh for the run, and read
//! back by the harness's own readers, one per isolation level, from the first offset.
//!
//! A reader never joins a group and never commits: it assigns itself every partition. It
//! reads until the run stops, then on until it has been idle for [`QUIET`] with every
//! partition at its end, or [`DRAIN_DEADLINE`] has passed (`complete` says which).
//!
//! *Architecture invariant:* only `broker/` imports rdkafka; the sink receives plain
//! [`OutputRecord`]s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::kafka::create_topic_once;

use crate::error::InfraError;

/// How long a reader must see nothing new, after the run stopped, before it is done.
const QUIET: Duration = Duration::from_millis(1500);
/// The longest a reader reads on after the run stopped.
const DRAIN_DEADLINE: Duration = Duration::from_secs(15);

/// Where the output topic is and how it is made.
#[derive(Debug, Clone)]
pub struct OutputTopic {
    /// Bootstrap servers (the real broker, never the proxy).
    pub bootstrap: String,
    /// The topic, `{run}` replaced.
    pub topic: String,
    /// Its partitions.
    pub partitions: i32,
    /// Its replication factor.
    pub replication: i32,
    /// Extra librdkafka settings (`broker.config`).
    pub extra: BTreeMap<String, String>,
}

/// Which records a reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Records of committed transactions and non-transactional records only.
    ReadCommitted,
    /// Every record, aborted transactions included.
    ReadUncommitted,
}

impl Isolation {
    /// librdkafka's `isolation.level` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// One record read from the output topic.
#[derive(Debug, Clone)]
pub struct OutputRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key (lossy UTF-8).
    pub key: Option<String>,
    /// Its headers (lossy UTF-8 values).
    pub headers: Vec<(String, String)>,
    /// Its value (lossy UTF-8).
    pub payload: String,
}

/// How a reader ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadEnd {
    /// True when every partition was read to its end once the run stopped.
    pub complete: bool,
}

impl OutputTopic {
    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "3")
            .set("socket.connection.setup.timeout.ms", "5000");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// Creates the topic fresh (an existing one is an error: its records would be read as
    /// this run's effects).
    pub async fn create(&self) -> Result<(), InfraError> {
        self.make(false).await
    }

    /// Creates the topic, keeping one that exists (a dead-letter topic: the IDs of other runs'
    /// records there are no ID of this run's ledger).
    pub async fn create_or_keep(&self) -> Result<(), InfraError> {
        self.make(true).await
    }

    async fn make(&self, keep_existing: bool) -> Result<(), InfraError> {
        let shape = (self.partitions, self.replication);
        match create_topic_once(&self.config(), &self.topic, shape).await {
            Ok(true) => Ok(()),
            Ok(false) if keep_existing => Ok(()),
            Ok(false) => Err(InfraError::new(format!(
                "cannot create output topic {}: it exists already (put {{run}} in the boundary's topic)",
                self.topic
            ))),
            Err(e) => Err(InfraError::new(format!("cannot create output topic {e}"))),
        }
    }

    /// Reads every partition from its first offset at `isolation` on a thread of its own,
    /// handing each record to `on_record`, until `stop` and then the drain (module doc).
    pub fn read(
        &self,
        isolation: Isolation,
        stop: CancellationToken,
        mut on_record: impl FnMut(OutputRecord) + Send + 'static,
    ) -> Result<std::thread::JoinHandle<ReadEnd>, InfraError> {
        let mut config = self.config();
        config
            .set("group.id", format!("exactly-reader-{}", self.topic))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", isolation.as_str());
        let reader: BaseConsumer = config
            .create()
            .map_err(|e| InfraError::new(format!("cannot read output topic: {e}")))?;
        let mut assignment = TopicPartitionList::new();
        for p in 0..self.partitions {
            assignment
                .add_partition_offset(&self.topic, p, Offset::Beginning)
                .map_err(|e| InfraError::new(format!("cannot assign output topic: {e}")))?;
        }
        reader
            .assign(&assignment)
            .map_err(|e| InfraError::new(format!("cannot assign output topic: {e}")))?;
        let (topic, partitions) = (self.topic.clone(), self.partitions);
        Ok(std::thread::spawn(move || {
            let mut stopped_at: Option<Instant> = None;
            let mut last_record = Instant::now();
            loop {
                if let Some(m) = reader.poll(Duration::from_millis(100)) {
                    if let Ok(m) = m {
                        on_record(record_of(&m));
                    }
                    last_record = Instant::now();
                    continue;
                }
                if stopped_at.is_none() && stop.is_cancelled() {
                    stopped_at = Some(Instant::now());
                    last_record = Instant::now();
                }
                let Some(since) = stopped_at else { continue };
                if last_record.elapsed() >= QUIET {
                    let complete = at_end(&reader, &topic, partitions);
                    if complete || since.elapsed() >= DRAIN_DEADLINE {
                        return ReadEnd { complete };
                    }
                }
            }
        }))
    }
}

/// True when every partition's position has reached its end (for `read_committed`, the end
/// it can read: a position at or past the high watermark, or idle behind an open transaction
/// is not the end).
fn at_end(reader: &BaseConsumer, topic: &str, partitions: i32) -> bool {
    let Ok(positions) = reader.position() else {
        return false;
    };
    (0..partitions).all(|p| {
        let Ok((_, high)) = reader.fetch_watermarks(topic, p, Duration::from_secs(2)) else {
            return false;
        };
        let position = positions
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        // A partition never written to has no position and nothing to read.
        high == 0 || position.is_some_and(|o| o >= high)
    })
}

fn record_of(m: &rdkafka::message::BorrowedMessage<'_>) -> OutputRecord {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    OutputRecord {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(lossy),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(lossy).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default(),
        payload: m.payload().map(lossy).unwrap_or_default(),
    }
}
