//! Poison messages (`workload.poison`): what became of each one, and whether its partition or
//! queue kept moving after it (liveness). A consumer that retries a poison message forever
//! never commits past it: that is a stall with the offset it stuck at, a finding of its own,
//! not merely a run that timed out with pending messages.
//!
//! Kafka: a poison message moved on when the group's last committed offset on its partition
//! passed its offset; RabbitMQ: when the queue no longer held it once the consumers stopped
//! (the remainder read whole). Without that word from the broker, nothing is claimed.
//! Pure: events and the facts in, fates and stalls out.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::facts::RunFacts;
use super::model::{Anomaly, Outcome, Stall};
use crate::timeline::{ProduceStatus, Recorded};

/// How many poison messages are kept with their details (the count is exact).
pub const POISON_SAMPLES: usize = 100;

/// What became of one poison message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoisonFate {
    /// Its ID.
    pub id: String,
    /// Its outcome (diverted, lost, pending, exact...).
    pub outcome: Outcome,
    /// Partition (Kafka).
    pub partition: Option<i32>,
    /// Offset (Kafka).
    pub offset: Option<i64>,
    /// How many times the proxy saw it handed to the consumer.
    pub deliveries: u64,
    /// Whether its partition or queue moved past it; `None` when the broker could not say.
    pub moved_on: Option<bool>,
}

/// The poison messages' fates (the first [`POISON_SAMPLES`]) and every stall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PoisonReport {
    /// Acknowledged poison messages on the ledger.
    pub(crate) count: u64,
    /// Their fates, in produce order, capped.
    pub(crate) fates: Vec<PoisonFate>,
    /// Where the consumer stopped moving.
    pub(crate) stalls: Vec<Stall>,
    /// Diverted IDs that were not poison: the consumer dead-lettered messages it could have
    /// processed (accounted for, but worth a warning).
    pub(crate) diverted_not_poison: u64,
}

/// Reads the poison messages' fates: `anomalies` give the outcomes of the IDs not EXACT.
pub(crate) fn fates(recorded: &Recorded, facts: &RunFacts, anomalies: &[Anomaly]) -> PoisonReport {
    let mut poison: Vec<(&str, Option<i32>, Option<i64>)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for p in recorded.produced() {
        if p.poison && p.status == ProduceStatus::Acked && seen.insert(p.id()) {
            poison.push((p.id(), p.partition, p.offset));
        }
    }
    let mut report = PoisonReport {
        diverted_not_poison: anomalies
            .iter()
            .filter(|a| a.outcome == Outcome::Diverted && !seen.contains(a.id.as_str()))
            .count() as u64,
        ..PoisonReport::default()
    };
    if poison.is_empty() {
        return report;
    }
    let deliveries = deliveries_of(recorded, &poison);
    let outcomes: HashMap<&str, Outcome> = anomalies
        .iter()
        .map(|a| (a.id.as_str(), a.outcome))
        .collect();
    for (id, partition, offset) in poison {
        let delivered = deliveries.get(id).copied().unwrap_or(0);
        let moved_on = moved_on(facts, id, partition, offset);
        if moved_on == Some(false) {
            report
                .stalls
                .push(stall(facts, id, partition, offset, delivered));
        }
        report.count += 1;
        if report.fates.len() < POISON_SAMPLES {
            report.fates.push(PoisonFate {
                id: id.to_owned(),
                outcome: outcomes.get(id).copied().unwrap_or(Outcome::Exact),
                partition,
                offset,
                deliveries: delivered,
                moved_on,
            });
        }
    }
    report
}

/// How many times each poison ID was handed to a consumer, as the proxy saw it.
fn deliveries_of<'a>(
    recorded: &'a Recorded,
    poison: &[(&'a str, Option<i32>, Option<i64>)],
) -> HashMap<&'a str, u64> {
    let ids = recorded.ids();
    let mut counts: HashMap<&str, u64> = poison.iter().map(|(id, ..)| (*id, 0)).collect();
    for (_, r) in recorded.delivered_records() {
        if let Some(n) = counts.get_mut(ids.text(r.id)) {
            *n += 1;
        }
    }
    counts
}

/// Whether the broker moved past the poison message (module doc).
fn moved_on(
    facts: &RunFacts,
    id: &str,
    partition: Option<i32>,
    offset: Option<i64>,
) -> Option<bool> {
    if let Some(left) = &facts.remainder {
        return left.complete.then(|| !left.ids.contains(id));
    }
    let (p, o) = (partition?, offset?);
    let progress = facts.progress.as_ref()?;
    Some(progress.committed.get(&p).is_some_and(|&c| c > o))
}

/// The stall at a poison message that never moved on.
fn stall(
    facts: &RunFacts,
    id: &str,
    partition: Option<i32>,
    offset: Option<i64>,
    deliveries: u64,
) -> Stall {
    let progress = facts
        .progress
        .as_ref()
        .filter(|_| facts.remainder.is_none());
    let committed = progress
        .zip(partition)
        .and_then(|(p, part)| p.committed.get(&part).copied());
    let behind = progress
        .zip(partition)
        .and_then(|(p, part)| p.end.get(&part).copied())
        .zip(offset)
        .map(|(end, o)| (end - o - 1).max(0));
    Stall {
        id: id.to_owned(),
        partition,
        offset,
        committed,
        behind,
        deliveries,
    }
}
