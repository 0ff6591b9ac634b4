//! Triggers: pure, seeded state machines that say *when* a fault fires. They see timeline
//! events and the clock; they never touch a process. Time is measured from the moment the first
//! consumer incarnation started (the `origin`), so that producing the workload first does not
//! eat into `at:` times.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gate::HoldPoint;
use crate::plan::{EventKind, When};
use crate::timeline::{AckPhase, CommitPhase, Event, RebalanceKind};

/// What a trigger decided about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Nothing to do.
    No,
    /// Fire now; the event may go on (after).
    Fire,
    /// Fire now while the event is held at its hold point (`during: effect`, `before: commit`,
    /// `after: commit`); the nemesis then says whether it may go on.
    FireWhileHeld,
}

/// Where a counting trigger stands relative to its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// `after:` the event happened (for commits: the broker accepted it).
    After,
    /// `before:` the request is held on its way to the broker.
    Before,
    /// `during:` the sink holds its answer.
    During,
}

/// A trigger's state.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Fire at these offsets from the origin, in order (`at`, `every`, `random`).
    Schedule {
        /// Remaining fire times, ascending.
        times: Vec<Duration>,
    },
    /// Fire on the `nth` event of a kind.
    Count {
        /// Which events count.
        kind: EventKind,
        /// Which occurrence fires.
        nth: u64,
        /// Seen so far.
        seen: u64,
        /// Before, after or during the event.
        moment: Moment,
        /// Count only events of this instance (the fault targets `consumer[i]`).
        instance: Option<u32>,
    },
}

impl Trigger {
    /// Builds a trigger from a validated `when`; `seed` drives `random`. With `instance`, a
    /// counting trigger counts only that instance's events (a fault aimed at `consumer[i]`
    /// fires on `consumer[i]`'s Nth effect, never holds another instance's).
    pub fn new(when: &When, seed: u64, instance: Option<u32>) -> Trigger {
        if let Some(at) = when.at {
            return Trigger::Schedule { times: vec![at] };
        }
        if let (Some(every), Some(times)) = (when.every, when.times) {
            return Trigger::Schedule {
                times: (1..=times.get() as u32).map(|k| every * k).collect(),
            };
        }
        if let (Some(n), Some(within)) = (when.random, when.within) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut times: Vec<Duration> = (0..n.get())
                .map(|_| Duration::from_micros(rng.random_range(0..=within.as_micros() as u64)))
                .collect();
            times.sort();
            return Trigger::Schedule { times };
        }
        let (kind, moment) = match (when.after, when.before, when.during) {
            (Some(k), _, _) => (k, Moment::After),
            (None, Some(k), _) => (k, Moment::Before),
            // Validation guarantees one of the three for a counting trigger.
            (None, None, k) => (k.unwrap_or(EventKind::Effect), Moment::During),
        };
        Trigger::Count {
            kind,
            nth: when.nth.map_or(1, |n| n.get()),
            seen: 0,
            moment,
            instance,
        }
    }

    /// Feeds one event; says whether the trigger fires on it.
    pub fn on_event(&mut self, event: &Event) -> Match {
        let Trigger::Count {
            kind,
            nth,
            seen,
            moment,
            instance,
        } = self
        else {
            return Match::No;
        };
        let n = occurrences(*kind, *moment, event);
        if n == 0 || !belongs_to(*instance, event) {
            return Match::No;
        }
        // A batch of deliveries counts each record; the trigger fires on the event that holds
        // the nth.
        let reached = *seen < *nth && *seen + n >= *nth;
        *seen += n;
        match (reached, *moment) {
            (false, _) => Match::No,
            (true, Moment::After) if *kind != EventKind::Commit => Match::Fire,
            // `after: ack` fires once the ack is on the broker's socket: nothing is held.
            (true, _) => Match::FireWhileHeld,
        }
    }

    /// True for `during:` triggers (the held event is never let go).
    pub fn is_during(&self) -> bool {
        matches!(
            self,
            Trigger::Count {
                moment: Moment::During,
                ..
            }
        )
    }

    /// The hold point this trigger needs the sources to hold, if any.
    pub fn hold_point(&self) -> Option<HoldPoint> {
        match self {
            Trigger::Count {
                kind: EventKind::Effect,
                moment: Moment::During,
                ..
            } => Some(HoldPoint::Effect),
            Trigger::Count {
                kind: EventKind::Commit,
                moment: Moment::Before,
                ..
            } => Some(HoldPoint::CommitRequest),
            Trigger::Count {
                kind: EventKind::Commit,
                moment: Moment::After,
                ..
            } => Some(HoldPoint::CommitResponse),
            Trigger::Count {
                kind: EventKind::Ack,
                moment: Moment::Before,
                ..
            } => Some(HoldPoint::AckRequest),
            _ => None,
        }
    }

    /// The next scheduled fire time, if any remains.
    pub fn next_due(&self) -> Option<Duration> {
        match self {
            Trigger::Schedule { times } => times.first().copied(),
            Trigger::Count { .. } => None,
        }
    }

    /// Takes the scheduled fire time if it is due at `now` (since the origin).
    pub fn take_due(&mut self, now: Duration) -> Option<Duration> {
        match self {
            Trigger::Schedule { times } if times.first().is_some_and(|t| *t <= now) => {
                Some(times.remove(0))
            }
            _ => None,
        }
    }

    /// How many more times this trigger can fire.
    pub fn remaining(&self) -> usize {
        match self {
            Trigger::Schedule { times } => times.len(),
            Trigger::Count { nth, seen, .. } => usize::from(seen < nth),
        }
    }
}

/// How many occurrences a trigger on `kind` at `moment` counts in `event` (a batch of Kafka
/// deliveries counts each record; anything else 0 or 1).
fn occurrences(kind: EventKind, moment: Moment, event: &Event) -> u64 {
    if let (EventKind::Deliver, Event::DeliveredBatch { records, .. }) = (kind, event) {
        return records.len() as u64;
    }
    u64::from(counts(kind, moment, event))
}

/// True when `event` is one a trigger on `kind` at `moment` counts. Commits count at the
/// request (`before`) or at the broker's successful response (`after`); rebalances count when
/// an assignment takes effect.
fn counts(kind: EventKind, moment: Moment, event: &Event) -> bool {
    match (kind, event) {
        (EventKind::Effect, Event::Effect { .. }) => true,
        (EventKind::Produced, Event::Produced { .. }) => true,
        (EventKind::Deliver, Event::Delivered { .. }) => true,
        (EventKind::Commit, Event::Commit { phase, error, .. }) => match moment {
            Moment::Before => *phase == CommitPhase::Request,
            _ => *phase == CommitPhase::Response && error.is_none(),
        },
        (EventKind::Rebalance, Event::Rebalance { change, .. }) => *change == RebalanceKind::Assign,
        (EventKind::Ack, Event::Ack { phase, .. }) => match moment {
            Moment::Before => *phase == AckPhase::Request,
            _ => *phase == AckPhase::Forwarded,
        },
        _ => false,
    }
}

/// True when `event` belongs to `instance` (or no instance filter applies).
fn belongs_to(instance: Option<u32>, event: &Event) -> bool {
    let Some(wanted) = instance else { return true };
    let of = match event {
        Event::Effect { instance, .. } => *instance,
        Event::Delivered { instance, .. }
        | Event::DeliveredBatch { instance, .. }
        | Event::Ack { instance, .. }
        | Event::Commit { instance, .. }
        | Event::Rebalance { instance, .. } => Some(*instance),
        _ => return true,
    };
    of == Some(wanted)
}

/// The trigger as a user would write it, for reports.
pub fn describe(when: &When) -> String {
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let name = |k: EventKind| {
        serde_json::to_value(k)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let nth = when.nth.map_or(1, |n| n.get());
    if let Some(at) = when.at {
        format!("at: {}", d(at))
    } else if let Some(k) = when.after {
        format!("after: {}, nth: {nth}", name(k))
    } else if let Some(k) = when.before {
        format!("before: {}, nth: {nth}", name(k))
    } else if let Some(k) = when.during {
        format!("during: {}, nth: {nth}", name(k))
    } else if let (Some(e), Some(t)) = (when.every, when.times) {
        format!("every: {}, times: {}", d(e), t.get())
    } else if let (Some(r), Some(w)) = (when.random, when.within) {
        format!("random: {}, within: {}", r.get(), d(w))
    } else {
        "never".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Count;
    use crate::timeline::EffectOutcome;

    fn effect() -> Event {
        Event::Effect {
            id: "x".into(),
            instance: None,
            incarnation: None,
            outcome: EffectOutcome::Applied,
            sink: "http".into(),
            attribution: Default::default(),
        }
    }

    #[test]
    fn after_effect_fires_once_on_the_nth() {
        let when = When {
            after: Some(EventKind::Effect),
            nth: Some(Count::new(3)),
            ..When::default()
        };
        let mut t = Trigger::new(&when, 0, None);
        let got: Vec<Match> = (0..5).map(|_| t.on_event(&effect())).collect();
        assert_eq!(
            got,
            [Match::No, Match::No, Match::Fire, Match::No, Match::No]
        );
        assert_eq!(t.remaining(), 0);
    }

    #[test]
    fn after_deliver_counts_each_record_of_a_batch_and_fires_on_the_batch_holding_the_nth() {
        let when = When {
            after: Some(EventKind::Deliver),
            nth: Some(Count::new(5)),
            ..When::default()
        };
        let batch = |n: i64| Event::DeliveredBatch {
            instance: 0,
            incarnation: 1,
            partition: 0,
            records: (0..n).map(|o| (o, format!("m-{o}"))).collect(),
        };
        let mut t = Trigger::new(&when, 0, None);
        let got: Vec<Match> = [3, 3, 3].map(|n| t.on_event(&batch(n))).to_vec();
        assert_eq!(got, [Match::No, Match::Fire, Match::No]);
        assert_eq!(t.remaining(), 0);
    }

    #[test]
    fn a_trigger_aimed_at_one_instance_counts_only_its_effects() {
        let when = When {
            during: Some(EventKind::Effect),
            nth: Some(Count::new(2)),
            ..When::default()
        };
        let by = |i: u32| Event::Effect {
            id: "x".into(),
            instance: Some(i),
            incarnation: Some(1),
            outcome: EffectOutcome::Applied,
            sink: "http".into(),
            attribution: Default::default(),
        };
        let mut t = Trigger::new(&when, 0, Some(1));
        let got: Vec<Match> = [by(0), by(1), by(0), by(1)]
            .iter()
            .map(|e| t.on_event(e))
            .collect();
        assert_eq!(got, [Match::No, Match::No, Match::No, Match::FireWhileHeld]);
    }

    fn commit(phase: CommitPhase, error: Option<&str>) -> Event {
        Event::Commit {
            instance: 0,
            incarnation: 1,
            group: "g".into(),
            member: "m".into(),
            generation: 1,
            offsets: Vec::new(),
            phase,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn before_commit_counts_requests_and_holds_them() {
        let when = When {
            before: Some(EventKind::Commit),
            nth: Some(Count::new(2)),
            ..When::default()
        };
        let mut t = Trigger::new(&when, 0, None);
        assert_eq!(t.hold_point(), Some(HoldPoint::CommitRequest));
        let events = [
            commit(CommitPhase::Request, None),
            commit(CommitPhase::Response, None),
            commit(CommitPhase::Request, None),
        ];
        let got: Vec<Match> = events.iter().map(|e| t.on_event(e)).collect();
        assert_eq!(got, [Match::No, Match::No, Match::FireWhileHeld]);
    }

    #[test]
    fn after_commit_counts_only_accepted_responses() {
        let when = When {
            after: Some(EventKind::Commit),
            nth: Some(Count::new(2)),
            ..When::default()
        };
        let mut t = Trigger::new(&when, 0, None);
        assert_eq!(t.hold_point(), Some(HoldPoint::CommitResponse));
        let events = [
            commit(CommitPhase::Response, None),
            commit(CommitPhase::Response, Some("ILLEGAL_GENERATION")),
            commit(CommitPhase::Request, None),
            commit(CommitPhase::Response, None),
        ];
        let got: Vec<Match> = events.iter().map(|e| t.on_event(e)).collect();
        assert_eq!(got, [Match::No, Match::No, Match::No, Match::FireWhileHeld]);
    }

    #[test]
    fn after_rebalance_counts_assignments() {
        let when = When {
            after: Some(EventKind::Rebalance),
            nth: Some(Count::new(1)),
            ..When::default()
        };
        let mut t = Trigger::new(&when, 0, None);
        let rebalance = |change| Event::Rebalance {
            instance: 0,
            incarnation: 1,
            group: "g".into(),
            change,
            member: String::new(),
            generation: None,
            assignment: None,
            error: None,
            protocols: None,
        };
        assert_eq!(t.on_event(&rebalance(RebalanceKind::Join)), Match::No);
        assert_eq!(t.on_event(&rebalance(RebalanceKind::Assign)), Match::Fire);
        assert_eq!(t.hold_point(), None);
    }

    #[test]
    fn during_effect_withholds_the_answer() {
        let when = When {
            during: Some(EventKind::Effect),
            nth: Some(Count::new(1)),
            ..When::default()
        };
        assert_eq!(
            Trigger::new(&when, 0, None).on_event(&effect()),
            Match::FireWhileHeld
        );
    }

    #[test]
    fn every_fires_times_times_one_period_apart() {
        let when = When {
            every: Some(Duration::from_secs(2)),
            times: Some(Count::new(3)),
            ..When::default()
        };
        let mut t = Trigger::new(&when, 0, None);
        assert_eq!(t.take_due(Duration::from_secs(1)), None);
        assert_eq!(
            t.take_due(Duration::from_secs(5)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            t.take_due(Duration::from_secs(5)),
            Some(Duration::from_secs(4))
        );
        assert_eq!(t.next_due(), Some(Duration::from_secs(6)));
    }

    #[test]
    fn random_is_reproducible_from_the_seed_and_stays_within() {
        let when = When {
            random: Some(Count::new(4)),
            within: Some(Duration::from_secs(10)),
            ..When::default()
        };
        let a = Trigger::new(&when, 42, None);
        let b = Trigger::new(&when, 42, None);
        let c = Trigger::new(&when, 43, None);
        let times = |t: &Trigger| match t {
            Trigger::Schedule { times } => times.clone(),
            _ => unreachable!(),
        };
        assert_eq!(times(&a), times(&b));
        assert_ne!(times(&a), times(&c));
        assert!(times(&a).iter().all(|t| *t <= Duration::from_secs(10)));
        assert_eq!(times(&a).len(), 4);
    }
}
