//! Mechanisms: for every lost or duplicated ID, *how* it happened, named from the timeline with
//! the events that prove it (design §7), grouped by mechanism and by the fault blamed for it,
//! each group with a short recommendation; and partition ownership over time.
//!
//! The rules read only what the timeline recorded: who applied each effect (instance and
//! incarnation), which commits or acks the broker accepted, which processes died and how,
//! which faults hit whom, and which partitions each member owned. When the evidence is not
//! there (the consumer did not go through the proxy, an effect could not be attributed), the
//! ID is `unexplained` and the report says what was missing; a mechanism is never guessed.
//! A mechanism is named only from its events: a crash from an exit during the run (the
//! harness's own stop after `run_ended` is not one), a revocation from an ownership change, a
//! same-process redelivery, a drop or a never-delivered offset from the nack, reject, delivery
//! or commit that shows it. A fault is blamed only when its trigger matched before the evidence
//! it is blamed for and it reached the processes concerned (or the group).
//!
//! Layout: `kind` (the closed set of mechanisms), `index` (what the rules look up, built in one
//! pass), `evidence` (the facts and the evidence the rules share), `duplicated` and `lost` (the
//! rules), `aborted` (the records of aborted transactions an output topic's read named: what a
//! read_uncommitted reader downstream saw, never a loss or a duplicate here), `ownership`
//! (assignments over time); this file groups the explanations.
//!
//! Pure: events and the judge's anomalies in, explanations out.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::judge::model::{Anomaly, Outcome, MECHANISM_SAMPLES_PER_GROUP};
use crate::timeline::{Recorded, Stamped};

mod aborted;
#[cfg(test)]
mod aborted_tests;
mod duplicated;
mod evidence;
mod index;
mod kind;
mod lost;
mod ownership;
#[cfg(test)]
mod tests;

pub use evidence::Evidence;
pub use kind::Mechanism;
pub use ownership::{ownership, OwnershipChange};

use index::Index;

/// Why one ID was lost or duplicated (or, for a `read_uncommitted_only` mechanism, what a
/// read_uncommitted reader downstream saw of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The message ID.
    pub id: String,
    /// Lost or duplicated.
    pub outcome: Outcome,
    /// How.
    pub mechanism: Mechanism,
    /// The plan's fault blamed, by index: one whose trigger matched before the evidence and
    /// that reached the processes concerned; none for the consumer's own doing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<usize>,
    /// The facts, in time order.
    pub evidence: Vec<Evidence>,
    /// Caused by the harness's hold: its extra effects were the consumer's retries of an
    /// effect whose answer the harness held (not counted against the consumer).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub harness_hold: bool,
}

/// Every ID of one mechanism after one fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MechanismGroup {
    /// How.
    pub mechanism: Mechanism,
    /// The fault blamed for them (index in the plan), or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<usize>,
    /// The heading.
    pub title: String,
    /// What to do about it.
    pub recommendation: String,
    /// Caused by the harness's hold (see [`Explanation::harness_hold`]); such IDs form groups
    /// of their own.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub harness_hold: bool,
    /// How many IDs.
    pub count: u64,
    /// The first [`MECHANISM_SAMPLES_PER_GROUP`] of them, with evidence.
    pub samples: Vec<Explanation>,
}

/// The mechanisms of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Mechanisms {
    /// Groups, most IDs first.
    pub groups: Vec<MechanismGroup>,
    /// Mechanism of every lost or duplicated ID (not serialized: report.json puts it on the
    /// anomaly).
    #[serde(skip)]
    of_id: HashMap<String, Mechanism>,
    /// IDs whose explanation is marked caused by the harness's hold (not serialized: on the
    /// anomaly and the group).
    #[serde(skip)]
    harness_hold: HashSet<String>,
}

impl Mechanisms {
    /// One `title (count)` per mechanism title, over the faults it followed, most IDs first:
    /// the short form a boundary's row shows.
    pub fn summary(&self) -> Vec<String> {
        let mut by_title: Vec<(&str, u64)> = Vec::new();
        for g in &self.groups {
            match by_title.iter_mut().find(|(t, _)| *t == g.title) {
                Some((_, n)) => *n += g.count,
                None => by_title.push((&g.title, g.count)),
            }
        }
        by_title
            .iter()
            .map(|(title, n)| format!("{title} ({n})"))
            .collect()
    }

    /// The mechanism named for `id`, if it was lost or duplicated.
    pub fn of(&self, id: &str) -> Option<Mechanism> {
        self.of_id.get(id).copied()
    }

    /// Names every duplicate of the consumer's own making an effect outside the transaction:
    /// `why` says which boundary of the same run shows the transaction worked (its output
    /// exact under read_committed). The mechanism found first stays in the title.
    pub(crate) fn outside_transaction(&mut self, why: &str, duplicated: &HashSet<&str>) {
        self.rename_duplicates(Mechanism::EffectOutsideTransaction, why, duplicated);
    }

    /// Names every duplicate of the consumer's own making `outside`, `why` giving the evidence;
    /// the mechanism found first stays in the title.
    pub(crate) fn rename_duplicates(
        &mut self,
        outside: Mechanism,
        why: &str,
        duplicated: &HashSet<&str>,
    ) {
        for g in &mut self.groups {
            let duplicates = g
                .samples
                .first()
                .is_some_and(|e| e.outcome == Outcome::Duplicated);
            if g.harness_hold || !duplicates || g.mechanism.read_uncommitted_only() {
                continue;
            }
            g.title = format!(
                "{} ({why}; first seen as: {})",
                outside.title(false),
                g.title
            );
            g.recommendation = outside.recommendation(false).to_owned();
            g.mechanism = outside;
            for e in &mut g.samples {
                e.mechanism = outside;
            }
        }
        for (id, m) in &mut self.of_id {
            if duplicated.contains(id.as_str()) && !self.harness_hold.contains(id) {
                *m = outside;
            }
        }
    }

    /// True when `id` was duplicated by the consumer's retries of an answer the harness held.
    pub fn caused_by_harness(&self, id: &str) -> bool {
        self.harness_hold.contains(id)
    }
}

/// What a group of duplicates the harness's hold caused recommends.
const HARNESS_HOLD_ADVICE: &str = "The harness held this effect's answer for a `during: effect` fault and the consumer's client sent the effect again meanwhile: not counted against the consumer. A real provider can be as slow: send the same idempotency key with every retry, or give the client a timeout longer than the provider's slowest answer.";

/// Names the mechanism of every lost or duplicated anomaly; those in `harness_hold` (IDs
/// duplicated by the consumer's retries of an answer the harness held, with the hold's
/// evidence) are marked so. The records of aborted transactions an output topic's read named
/// get their groups too, after the others (`aborted`: never a loss or a duplicate here).
pub fn explain(
    recorded: &Recorded,
    anomalies: &[Anomaly],
    harness_hold: &HashMap<String, Evidence>,
) -> Mechanisms {
    let wanted: Vec<&Anomaly> = anomalies
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Lost | Outcome::Duplicated))
        .collect();
    let mut explanations: Vec<Explanation> = Vec::new();
    if !wanted.is_empty() {
        let index = Index::build(recorded, &wanted);
        explanations.extend(wanted.iter().map(|a| {
            let mut e = explain_one(&index, a);
            if let Some(hold) = harness_hold.get(&a.id) {
                e.harness_hold = true;
                e.evidence.push(hold.clone());
                e.evidence.sort_by_key(|x| (x.t_us, x.seq));
            }
            e
        }));
    }
    explanations.extend(aborted::explain(recorded, anomalies));
    if explanations.is_empty() {
        return Mechanisms::default();
    }
    group(explanations, amqp(recorded.others()))
}

/// True when the run's broker is RabbitMQ (its mechanisms are worded in acks and queues).
fn amqp(events: &[Stamped]) -> bool {
    events.iter().any(|st| match &st.event {
        crate::timeline::Event::RunStarted(info) => info.broker == "amqp",
        _ => false,
    })
}

/// Groups explanations by mechanism, fault and the harness's hold: the consumer's own first,
/// what only a read_uncommitted reader saw after them, most IDs first.
fn group(mut explanations: Vec<Explanation>, amqp: bool) -> Mechanisms {
    explanations.sort_by_key(|e| {
        let first = e.evidence.first().map(|x| x.t_us);
        let downstream = e.mechanism.read_uncommitted_only();
        (e.harness_hold, downstream, e.mechanism, e.fault, first)
    });
    let mut out = Mechanisms::default();
    let mut slots: HashMap<(Mechanism, Option<usize>, bool), usize> = HashMap::new();
    for e in explanations {
        if !e.mechanism.read_uncommitted_only() {
            out.of_id.insert(e.id.clone(), e.mechanism);
        }
        if e.harness_hold {
            out.harness_hold.insert(e.id.clone());
        }
        let key = (e.mechanism, e.fault, e.harness_hold);
        let slot = *slots.entry(key).or_insert_with(|| {
            let title = e.mechanism.title(amqp);
            out.groups.push(MechanismGroup {
                mechanism: e.mechanism,
                fault: e.fault,
                harness_hold: e.harness_hold,
                title: if e.harness_hold {
                    format!(
                        "{title} — caused by the harness's hold (not counted against the consumer)"
                    )
                } else {
                    title.to_owned()
                },
                recommendation: if e.harness_hold {
                    HARNESS_HOLD_ADVICE.to_owned()
                } else {
                    e.mechanism.recommendation(amqp).to_owned()
                },
                count: 0,
                samples: Vec::new(),
            });
            out.groups.len() - 1
        });
        let group = &mut out.groups[slot];
        group.count += 1;
        if group.samples.len() < MECHANISM_SAMPLES_PER_GROUP {
            group.samples.push(e);
        }
    }
    out.groups.sort_by(|a, b| {
        let consumer_first = a.harness_hold.cmp(&b.harness_hold);
        let downstream = |g: &MechanismGroup| g.mechanism.read_uncommitted_only();
        consumer_first
            .then(downstream(a).cmp(&downstream(b)))
            .then(b.count.cmp(&a.count))
            .then(a.mechanism.cmp(&b.mechanism))
    });
    out
}

/// Explains one lost or duplicated anomaly.
fn explain_one(index: &Index, a: &Anomaly) -> Explanation {
    let found = match a.outcome {
        Outcome::Duplicated => index.duplicated(a),
        // Only lost and duplicated anomalies are explained.
        Outcome::Lost
        | Outcome::UnconfirmedLoss
        | Outcome::Pending
        | Outcome::Unconfirmed
        | Outcome::Phantom
        | Outcome::Diverted
        | Outcome::Exact => index.lost(a),
    };
    let mut evidence = found.evidence;
    evidence.sort_by_key(|e| (e.t_us, e.seq));
    evidence.dedup();
    Explanation {
        id: a.id.clone(),
        outcome: a.outcome,
        mechanism: found.mechanism,
        fault: found.fault,
        evidence,
        harness_hold: false,
    }
}
