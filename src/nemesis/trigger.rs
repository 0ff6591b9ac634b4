//! Triggers: pure, seeded state machines that say *when* a fault fires. They see timeline
//! events and the clock; they never touch a process. Time is measured from the moment the first
//! consumer incarnation started (the `origin`), so that producing the workload first does not
//! eat into `at:` times.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::plan::{EventKind, When};
use crate::timeline::Event;

/// What a trigger decided about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Nothing to do.
    No,
    /// Fire now; the event may go on (after).
    Fire,
    /// Fire now, and the sink must never answer this effect (during).
    FireAndWithhold,
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
        /// Hold the sink's answer (during) rather than fire after.
        withhold: bool,
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
        let (kind, withhold) = match (when.after, when.during) {
            (Some(k), _) => (k, false),
            (None, Some(k)) => (k, true),
            // `before` needs the proxy; validation rejects it before a trigger is built.
            _ => (when.before.unwrap_or(EventKind::Effect), false),
        };
        Trigger::Count {
            kind,
            nth: when.nth.map_or(1, |n| n.get()),
            seen: 0,
            withhold,
            instance,
        }
    }

    /// Feeds one event; says whether the trigger fires on it.
    pub fn on_event(&mut self, event: &Event) -> Match {
        let Trigger::Count {
            kind,
            nth,
            seen,
            withhold,
            instance,
        } = self
        else {
            return Match::No;
        };
        let counts = matches!(
            (kind, event),
            (EventKind::Effect, Event::Effect { .. })
                | (EventKind::Produced, Event::Produced { .. })
        );
        let mine = match (instance, event) {
            (None, _) => true,
            (Some(i), Event::Effect { instance, .. }) => *instance == Some(*i),
            (Some(_), _) => true,
        };
        if !counts || !mine {
            return Match::No;
        }
        *seen += 1;
        match (*seen == *nth, *withhold) {
            (true, true) => Match::FireAndWithhold,
            (true, false) => Match::Fire,
            (false, _) => Match::No,
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
        };
        let mut t = Trigger::new(&when, 0, Some(1));
        let got: Vec<Match> = [by(0), by(1), by(0), by(1)]
            .iter()
            .map(|e| t.on_event(e))
            .collect();
        assert_eq!(
            got,
            [Match::No, Match::No, Match::No, Match::FireAndWithhold]
        );
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
            Match::FireAndWithhold
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
