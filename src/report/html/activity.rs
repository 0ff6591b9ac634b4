//! What each consumer instance did over time, read from the events in one pass for the
//! timeline: effects and accepted commits or acks per time bucket, the commits and acks that
//! did not count (refused, dropped, nack, reject), and the frames held for triggers.
//!
//! Invariant: counts are exact; only the individual marks beyond [`MARKS`] are left out, and
//! how many is kept.

use std::collections::BTreeMap;

use super::svg::Scale;
use crate::timeline::{AckPhase, AckVerb, CommitPhase, EffectOutcome, Event, HeldAt, Recorded};

/// Time buckets across the plot.
pub const BUCKETS: usize = 200;
/// Individual marks (held frames, refused commits...) drawn at most per kind.
pub const MARKS: usize = 400;

/// One instance's counts per time bucket.
#[derive(Debug, Clone)]
pub struct Buckets {
    /// Applied effects.
    pub effects: Vec<u32>,
    /// Accepted commits (Kafka responses without error) or acks that reached the broker.
    pub done: Vec<u32>,
}

impl Default for Buckets {
    fn default() -> Buckets {
        Buckets {
            effects: vec![0; BUCKETS],
            done: vec![0; BUCKETS],
        }
    }
}

/// A mark at one time on one instance's lane.
#[derive(Debug, Clone)]
pub struct Tick {
    /// When it started (µs).
    pub from_us: u64,
    /// When it ended (µs; the same as `from_us` for an instant).
    pub to_us: u64,
    /// Instance.
    pub instance: u32,
    /// What it was, for the hover title.
    pub what: String,
}

/// Marks of one kind, capped.
#[derive(Debug, Default)]
pub struct Marks {
    /// The first [`MARKS`].
    pub shown: Vec<Tick>,
    /// How many in all.
    pub total: u64,
}

impl Marks {
    fn push(&mut self, tick: Tick) {
        self.total += 1;
        if self.shown.len() < MARKS {
            self.shown.push(tick);
        }
    }
}

/// The run's activity per instance.
#[derive(Debug, Default)]
pub struct Activity {
    /// Counts per instance.
    pub buckets: BTreeMap<u32, Buckets>,
    /// Effects with no known writer, per bucket.
    pub unattributed_effects: u64,
    /// Commits refused or dropped, acks dropped, nacks and rejects.
    pub not_done: Marks,
    /// Frames or effect answers held for a trigger.
    pub held: Marks,
    /// Whether the run is AMQP (acks) rather than Kafka (commits).
    pub amqp: bool,
}

/// Reads the activity from the events.
pub fn collect(recorded: &Recorded, scale: Scale, amqp: bool) -> Activity {
    let mut a = Activity {
        amqp,
        ..Activity::default()
    };
    let b = |t: u64| scale.bucket(t, BUCKETS);
    for e in recorded.effects() {
        if e.outcome == EffectOutcome::Applied {
            match e.instance {
                Some(i) => a.buckets.entry(i).or_default().effects[b(e.t_us)] += 1,
                None => a.unattributed_effects += 1,
            }
        }
    }
    for st in recorded.others() {
        let t = st.t_us;
        match &st.event {
            Event::Commit {
                instance,
                incarnation,
                phase,
                error,
                offsets,
                ..
            } => match (phase, error) {
                (CommitPhase::Response, None) => a.buckets.entry(*instance).or_default().done[b(t)] += 1,
                (CommitPhase::Response, Some(e)) => a.not_done.push(tick(t, *instance, format!("commit by consumer[{instance}]#{incarnation} refused: {e}"))),
                (CommitPhase::Dropped, _) => a.not_done.push(tick(t, *instance, format!("commit by consumer[{instance}]#{incarnation} held and dropped (never reached the broker): {} partition(s)", offsets.len()))),
                (CommitPhase::Request, _) => {}
            },
            Event::Ack {
                instance,
                incarnation,
                verb,
                requeue,
                phase,
                ids,
                ..
            } => match (phase, verb) {
                (AckPhase::Forwarded, AckVerb::Ack) => a.buckets.entry(*instance).or_default().done[b(t)] += 1,
                (AckPhase::Forwarded, AckVerb::Nack | AckVerb::Reject) => a.not_done.push(tick(t, *instance, format!("{verb:?} by consumer[{instance}]#{incarnation} (requeue: {requeue}) of {} message(s)", ids.len()).to_lowercase())),
                (AckPhase::Dropped, _) => a.not_done.push(tick(t, *instance, format!("{verb:?} by consumer[{instance}]#{incarnation} held and dropped (never reached the broker)").to_lowercase())),
                (AckPhase::Request, _) => {}
            },
            Event::Held {
                instance,
                incarnation,
                at,
                held_us,
                released,
                ..
            } => {
                let what = format!(
                    "{} of consumer[{instance}]#{incarnation} held {} ms, {}",
                    held_at(*at),
                    held_us / 1000,
                    if *released { "then released" } else { "then dropped" }
                );
                a.held.push(Tick {
                    from_us: t.saturating_sub(*held_us),
                    to_us: t,
                    instance: *instance,
                    what,
                });
            }
            _ => {}
        }
    }
    a
}

fn tick(t: u64, instance: u32, what: String) -> Tick {
    Tick {
        from_us: t,
        to_us: t,
        instance,
        what,
    }
}

/// The held thing, in words.
fn held_at(at: HeldAt) -> &'static str {
    match at {
        HeldAt::CommitRequest => "commit request",
        HeldAt::CommitResponse => "commit response",
        HeldAt::AckRequest => "ack",
        HeldAt::Publish => "publish (connection blocked)",
        HeldAt::EndTxnRequest => "transaction commit (EndTxn) request",
        HeldAt::Effect => "the sink's answer to an effect",
    }
}
