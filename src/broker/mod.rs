//! Brokers: create the topic (or queue), produce the workload while keeping the ledger, and
//! read the broker's view of progress. One module per broker kind; the run talks to them only
//! through [`Broker`], so RabbitMQ slots in as a second variant.

pub mod kafka;

use std::collections::BTreeMap;

use crate::error::InfraError;
use crate::plan::Rate;
use crate::timeline::Timeline;

/// Where the workload goes and which group consumes it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Bootstrap servers (Kafka).
    pub address: String,
    /// Topic name, `{run}` already replaced.
    pub topic: String,
    /// Consumer group, `{run}` already replaced.
    pub group: String,
    /// Partition count.
    pub partitions: i32,
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

/// A connected broker.
pub enum Broker {
    /// Apache Kafka (real, or the embedded mock cluster).
    Kafka(kafka::KafkaBroker),
}

impl Broker {
    /// Creates the topic fresh, or checks it exists.
    pub async fn prepare(&self, create: bool) -> Result<(), InfraError> {
        match self {
            Broker::Kafka(k) if create => k.create_topic().await,
            Broker::Kafka(k) => k.wait_for_leaders().await,
        }
    }

    /// Produces the workload and records the ledger.
    pub async fn produce(
        &self,
        run: &str,
        count: u64,
        template: &str,
        rate: Rate,
        timeline: &Timeline,
    ) -> Result<(), InfraError> {
        match self {
            Broker::Kafka(k) => k.produce(run, count, template, rate, timeline).await,
        }
    }

    /// Reads progress (a blocking call: run it off the async threads).
    pub fn progress(&self) -> Result<Progress, String> {
        match self {
            Broker::Kafka(k) => k.progress(),
        }
    }
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
