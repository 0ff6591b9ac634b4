//! Where each anomaly goes on the timeline: the lane of the process that did it and when.
//! A duplicate sits where its writer applied it again; a phantom where it was first applied;
//! a lost ID where it was counted done without its effect (the commit or ack that covered it,
//! else its last delivery); a pending or unconfirmed ID at its last delivery. An anomaly no
//! consumer can be tied to goes on the unattributed lane at its produce time.
//!
//! A run with boundaries marks each boundary's anomalies (an ID lost at one and duplicated
//! at another gets two markers).
//!
//! Invariant: every anomaly gets one marker, up to [`MARKERS`]; the page says how many more.

use super::lives::{name, Lives};
use super::parts;
use crate::judge::{Anomaly, Judgement, Outcome};
use crate::timeline::{EffectOutcome, ProcessRef};

/// Anomaly markers drawn at most.
pub const MARKERS: usize = 2_000;

/// One anomaly's marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// The message ID.
    pub id: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// The instance whose lane it goes on; `None`: the unattributed lane.
    pub instance: Option<u32>,
    /// When (µs).
    pub t_us: u64,
    /// The hover text.
    pub title: String,
}

/// The markers of the first [`MARKERS`] anomalies (of every boundary, for a run with
/// boundaries: each boundary's anomalies with its own evidence, the boundary in the title).
pub fn place(rec: &Judgement, lives: &Lives) -> Vec<Marker> {
    let parts = parts::of(rec);
    parts::anomalies(&parts)
        .take(MARKERS)
        .map(|(part, a)| {
            let (by, t_us, why) = where_it_happened(part.rec, lives, a);
            let mechanism = part
                .rec
                .mechanisms
                .of(&a.id)
                .map(|m| format!(", mechanism {}", m.as_str()))
                .unwrap_or_default();
            let who = by.map_or("no consumer it can be tied to".to_string(), name);
            Marker {
                id: a.id.clone(),
                outcome: a.outcome,
                instance: by.map(|p| p.instance),
                t_us,
                title: format!(
                    "{} {}{}{mechanism}: {why} at {} by {who} (click to search it)",
                    a.id,
                    a.outcome.as_str(),
                    part.at(),
                    super::super::secs(t_us)
                ),
            }
        })
        .collect()
}

/// The process, time and words for one anomaly's marker.
fn where_it_happened(
    rec: &Judgement,
    lives: &Lives,
    a: &Anomaly,
) -> (Option<ProcessRef>, u64, &'static str) {
    let effect = |n: usize| {
        a.effects
            .iter()
            .filter(|e| e.outcome == EffectOutcome::Applied)
            .nth(n)
            .map(|e| {
                let by = e
                    .instance
                    .zip(e.incarnation)
                    .map(|(instance, incarnation)| ProcessRef {
                        instance,
                        incarnation,
                    });
                (by, e.t_us)
            })
    };
    let life = lives.get(&a.id);
    let last_delivery = || {
        life.and_then(|l| l.delivered.last())
            .map(|s| (s.by, s.t_us))
    };
    let produced = a.produced_at_us.unwrap_or(0);
    let found = match a.outcome {
        Outcome::Duplicated => effect(1).map(|(by, t)| (by, t, "applied again")),
        Outcome::Phantom => effect(0).map(|(by, t)| (by, t, "applied, never produced")),
        Outcome::Lost => rec
            .commits_ahead
            .for_id(&a.id)
            .map(|c| {
                let by = ProcessRef {
                    instance: c.instance,
                    incarnation: c.incarnation,
                };
                (Some(by), c.commit_t_us, "counted done before any effect")
            })
            .or_else(|| {
                life.and_then(|l| l.covered.first())
                    .map(|s| (s.by, s.t_us, "counted done without an effect"))
            })
            .or_else(|| last_delivery().map(|(by, t)| (by, t, "last delivered"))),
        Outcome::UnconfirmedLoss | Outcome::Pending | Outcome::Unconfirmed | Outcome::Diverted => {
            last_delivery().map(|(by, t)| (by, t, "last delivered"))
        }
        Outcome::Exact => None,
    };
    found.unwrap_or((None, produced, "produced, no delivery seen,"))
}
