//! Triggers: pure, seeded state machines that say *when* a fault fires. Each is armed from a
//! plan's [`Trigger`]; it sees timeline events and the clock and never touches a process. Time
//! is measured from the moment the first consumer incarnation started (the `origin`), so that
//! producing the workload first does not eat into `at:` times.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gate::HoldPoint;
use crate::plan::{EventKind, Moment, SinkKind, Trigger};
use crate::timeline::{AckPhase, CommitPhase, Event, RebalanceKind, TxnOp};

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

/// A trigger's state.
#[derive(Debug, Clone)]
pub enum TriggerState {
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

impl TriggerState {
    /// Arms a plan's trigger; `seed` drives `random`. With `instance`, a counting trigger counts
    /// only that instance's events (a fault aimed at `consumer[i]` fires on `consumer[i]`'s Nth
    /// effect, never holds another instance's).
    pub fn new(trigger: &Trigger, seed: u64, instance: Option<u32>) -> TriggerState {
        match *trigger {
            Trigger::At(at) => TriggerState::Schedule { times: vec![at] },
            Trigger::Every { period, times } => TriggerState::Schedule {
                times: (1..=times.get() as u32).map(|k| period * k).collect(),
            },
            Trigger::Random { count, within } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut times: Vec<Duration> = (0..count.get())
                    .map(|_| Duration::from_micros(rng.random_range(0..=within.as_micros() as u64)))
                    .collect();
                times.sort();
                TriggerState::Schedule { times }
            }
            Trigger::Count { moment, event, nth } => TriggerState::Count {
                kind: event,
                nth: nth.get(),
                seen: 0,
                moment,
                instance,
            },
        }
    }

    /// Feeds one event; says whether the trigger fires on it.
    pub fn on_event(&mut self, event: &Event) -> Match {
        let TriggerState::Count {
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
        if !reached {
            return Match::No;
        }
        // The event waits at its hold point when the trigger has one (`after: ack` fires once
        // the ack is on the broker's socket: nothing is held).
        match held_at(*kind, *moment) {
            Some(_) => Match::FireWhileHeld,
            None => Match::Fire,
        }
    }

    /// True for `during:` triggers (the held effect is answered only once the fault ended).
    pub fn is_during(&self) -> bool {
        match self {
            TriggerState::Count { moment, .. } => *moment == Moment::During,
            TriggerState::Schedule { .. } => false,
        }
    }

    /// The hold point this trigger needs the sources to hold, if any.
    pub fn hold_point(&self) -> Option<HoldPoint> {
        match *self {
            TriggerState::Count { kind, moment, .. } => held_at(kind, moment),
            TriggerState::Schedule { .. } => None,
        }
    }

    /// The next scheduled fire time, if any remains.
    pub fn next_due(&self) -> Option<Duration> {
        match self {
            TriggerState::Schedule { times } => times.first().copied(),
            TriggerState::Count { .. } => None,
        }
    }

    /// Takes the scheduled fire time if it is due at `now` (since the origin).
    pub fn take_due(&mut self, now: Duration) -> Option<Duration> {
        match self {
            TriggerState::Schedule { times } => match times.first() {
                Some(first) if *first <= now => Some(times.remove(0)),
                Some(_) | None => None,
            },
            TriggerState::Count { .. } => None,
        }
    }

    /// How many more times this trigger can fire.
    pub fn remaining(&self) -> usize {
        match self {
            TriggerState::Schedule { times } => times.len(),
            TriggerState::Count { nth, seen, .. } => usize::from(seen < nth),
        }
    }
}

/// The hold point a plan's trigger needs the sources to hold, if any.
pub fn hold_point(trigger: &Trigger) -> Option<HoldPoint> {
    match *trigger {
        Trigger::Count { moment, event, .. } => held_at(event, moment),
        Trigger::At(_) | Trigger::Every { .. } | Trigger::Random { .. } => None,
    }
}

/// Where an event counted at `moment` is held: the HTTP sink's answer during an effect, a
/// commit request before it reaches the broker, the broker's commit response after it accepted
/// one, an AMQP ack before it reaches the broker, a transaction's EndTxn (commit) request
/// before it reaches the broker. Nothing else is held.
fn held_at(event: EventKind, moment: Moment) -> Option<HoldPoint> {
    match (event, moment) {
        (EventKind::Effect, Moment::During) => Some(HoldPoint::Effect),
        (EventKind::Commit, Moment::Before) => Some(HoldPoint::CommitRequest),
        (EventKind::Commit, Moment::After) => Some(HoldPoint::CommitResponse),
        (EventKind::Ack, Moment::Before) => Some(HoldPoint::AckRequest),
        (EventKind::EndTxn, Moment::Before) => Some(HoldPoint::EndTxnRequest),
        (EventKind::Effect, Moment::After | Moment::Before)
        | (EventKind::Commit | EventKind::Ack, Moment::During)
        | (EventKind::Ack, Moment::After)
        | (EventKind::EndTxn, Moment::After | Moment::During)
        | (
            EventKind::Deliver | EventKind::Rebalance | EventKind::Produced | EventKind::Produce,
            Moment::After | Moment::Before | Moment::During,
        ) => None,
    }
}

/// How many occurrences a trigger on `kind` at `moment` counts in `event` (a batch of Kafka
/// deliveries counts each record, those of an offset range included; anything else 0 or 1).
fn occurrences(kind: EventKind, moment: Moment, event: &Event) -> u64 {
    if let (
        EventKind::Deliver,
        Event::DeliveredBatch {
            records, ranges, ..
        },
    ) = (kind, event)
    {
        return records.len() as u64 + ranges.iter().map(|r| r.len()).sum::<u64>();
    }
    u64::from(counts(kind, moment, event))
}

/// True when `event` is one a trigger on `kind` at `moment` counts. Commits count at the
/// request (`before`) or at the broker's successful response (`after`); rebalances count when
/// an assignment takes effect.
fn counts(kind: EventKind, moment: Moment, event: &Event) -> bool {
    match (kind, event) {
        // `during:` holds the sink's answer: only an effect the HTTP sink holds can count (in
        // a run with boundaries, another sink's effects pass unheld).
        (EventKind::Effect, Event::Effect { sink, .. }) => {
            moment != Moment::During || *sink == SinkKind::Http
        }
        (EventKind::Produced, Event::Produced { .. }) => true,
        // A transaction the broker committed (its EndTxn answer passing the proxy), or
        // (`before:`) a commit request the proxy holds on its way to the broker.
        (
            EventKind::EndTxn,
            Event::Txn {
                op: TxnOp::EndTxn,
                committed: Some(true),
                error: None,
                request,
                ..
            },
        ) => *request == (moment == Moment::Before),
        // A consumer's own Produce every partition of which the broker accepted.
        (EventKind::Produce, Event::ConsumerProduce { batches, .. }) => {
            moment == Moment::After
                && !batches.is_empty()
                && batches.iter().all(|b| b.error.is_none())
        }
        (EventKind::Deliver, Event::Delivered { .. }) => true,
        (EventKind::Commit, Event::Commit { phase, error, .. }) => match moment {
            Moment::Before => *phase == CommitPhase::Request,
            Moment::After | Moment::During => *phase == CommitPhase::Response && error.is_none(),
        },
        (EventKind::Rebalance, Event::Rebalance { change, .. }) => *change == RebalanceKind::Assign,
        (EventKind::Ack, Event::Ack { phase, .. }) => match moment {
            Moment::Before => *phase == AckPhase::Request,
            Moment::After | Moment::During => *phase == AckPhase::Forwarded,
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
        | Event::Rebalance { instance, .. }
        | Event::Txn { instance, .. }
        | Event::ConsumerProduce { instance, .. } => Some(*instance),
        _ => return true,
    };
    of == Some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Count;
    use crate::timeline::EffectOutcome;

    fn effect() -> Event {
        Event::Effect {
            boundary: None,
            id: "x".into(),
            instance: None,
            incarnation: None,
            outcome: EffectOutcome::Applied,
            sink: SinkKind::Http,
            attribution: Default::default(),
        }
    }

    #[test]
    fn after_effect_fires_once_on_the_nth() {
        let when = Trigger::Count {
            moment: Moment::After,
            event: EventKind::Effect,
            nth: Count::new(3),
        };
        let mut t = TriggerState::new(&when, 0, None);
        let got: Vec<Match> = (0..5).map(|_| t.on_event(&effect())).collect();
        assert_eq!(
            got,
            [Match::No, Match::No, Match::Fire, Match::No, Match::No]
        );
        assert_eq!(t.remaining(), 0);
    }

    #[test]
    fn after_end_txn_counts_only_commits_the_broker_accepted() {
        let when = Trigger::Count {
            moment: Moment::After,
            event: EventKind::EndTxn,
            nth: Count::new(2),
        };
        let txn = |op, committed, error: Option<&str>| Event::Txn {
            instance: 0,
            incarnation: 1,
            op,
            transactional_id: Some("t".into()),
            producer_id: 1,
            producer_epoch: 0,
            committed,
            request: false,
            offsets: Vec::new(),
            error: error.map(Into::into),
        };
        let mut t = TriggerState::new(&when, 0, None);
        let got: Vec<Match> = [
            txn(TxnOp::EndTxn, Some(true), None),
            txn(TxnOp::EndTxn, Some(false), None),
            txn(TxnOp::EndTxn, Some(true), Some("PRODUCER_FENCED")),
            txn(TxnOp::TxnOffsetCommit, None, None),
            txn(TxnOp::EndTxn, Some(true), None),
        ]
        .iter()
        .map(|e| t.on_event(e))
        .collect();
        assert_eq!(
            got,
            [Match::No, Match::No, Match::No, Match::No, Match::Fire]
        );
    }

    #[test]
    fn before_end_txn_counts_commit_requests_and_holds_the_nth() {
        let when = Trigger::Count {
            moment: Moment::Before,
            event: EventKind::EndTxn,
            nth: Count::new(2),
        };
        let txn = |committed, request| Event::Txn {
            instance: 0,
            incarnation: 1,
            op: TxnOp::EndTxn,
            transactional_id: Some("t".into()),
            producer_id: 1,
            producer_epoch: 0,
            committed: Some(committed),
            request,
            offsets: Vec::new(),
            error: None,
        };
        let mut t = TriggerState::new(&when, 0, None);
        assert_eq!(t.hold_point(), Some(HoldPoint::EndTxnRequest));
        let events = [
            txn(true, true),
            txn(true, false), // its answer: not a request
            txn(false, true), // an abort is not a commit
            txn(true, true),
        ];
        let got: Vec<Match> = events.iter().map(|e| t.on_event(e)).collect();
        assert_eq!(got, [Match::No, Match::No, Match::No, Match::FireWhileHeld]);
        assert_eq!(HoldPoint::of(&events[3]), Some(HoldPoint::EndTxnRequest));
        assert_eq!(HoldPoint::of(&events[1]), None);
    }

    #[test]
    fn after_produce_counts_the_consumers_produces_the_broker_accepted() {
        use crate::timeline::ProducedBatch;
        let when = Trigger::Count {
            moment: Moment::After,
            event: EventKind::Produce,
            nth: Count::new(2),
        };
        let produce = |instance, error: Option<&str>| Event::ConsumerProduce {
            instance,
            incarnation: 1,
            transactional_id: None,
            producer_id: 3,
            producer_epoch: 0,
            batches: vec![ProducedBatch {
                topic: "orders-out".into(),
                partition: 0,
                base_offset: 10,
                records: 2,
                error: error.map(Into::into),
            }],
        };
        let mut t = TriggerState::new(&when, 0, Some(0));
        assert_eq!(t.hold_point(), None, "observed, not held");
        let got: Vec<Match> = [
            produce(0, None),
            produce(0, Some("NOT_LEADER_OR_FOLLOWER")),
            produce(1, None),
            produce(0, None),
        ]
        .iter()
        .map(|e| t.on_event(e))
        .collect();
        assert_eq!(got, [Match::No, Match::No, Match::No, Match::Fire]);
    }

    #[test]
    fn during_effect_counts_only_effects_the_http_sink_can_hold() {
        let when = Trigger::Count {
            moment: Moment::During,
            event: EventKind::Effect,
            nth: Count::new(2),
        };
        let mut topic = effect();
        if let Event::Effect { sink, .. } = &mut topic {
            *sink = SinkKind::KafkaTopic;
        }
        let mut t = TriggerState::new(&when, 0, None);
        let got: Vec<Match> = [effect(), topic.clone(), topic, effect()]
            .iter()
            .map(|e| t.on_event(e))
            .collect();
        assert_eq!(got[..3], [Match::No, Match::No, Match::No]);
        assert_ne!(got[3], Match::No, "the second HTTP effect is the nth");
    }

    #[test]
    fn after_deliver_counts_each_record_of_a_batch_and_fires_on_the_batch_holding_the_nth() {
        let when = Trigger::Count {
            moment: Moment::After,
            event: EventKind::Deliver,
            nth: Count::new(5),
        };
        let batch = |n: i64| Event::DeliveredBatch {
            instance: 0,
            incarnation: 1,
            partition: 0,
            ranges: Vec::new(),
            records: (0..n).map(|o| (o, format!("m-{o}"))).collect(),
        };
        let mut t = TriggerState::new(&when, 0, None);
        let got: Vec<Match> = [3, 3, 3].map(|n| t.on_event(&batch(n))).to_vec();
        assert_eq!(got, [Match::No, Match::Fire, Match::No]);
        assert_eq!(t.remaining(), 0);
    }

    #[test]
    fn after_deliver_counts_each_offset_of_a_range_the_proxy_did_not_read() {
        let when = Trigger::Count {
            moment: Moment::After,
            event: EventKind::Deliver,
            nth: Count::new(5),
        };
        let range = |first: i64, last: i64| Event::DeliveredBatch {
            instance: 0,
            incarnation: 1,
            partition: 0,
            ranges: vec![crate::timeline::OffsetRange { first, last }],
            records: Default::default(),
        };
        let mut t = TriggerState::new(&when, 0, None);
        let got: Vec<Match> = [range(0, 2), range(3, 5), range(6, 8)]
            .iter()
            .map(|e| t.on_event(e))
            .collect();
        assert_eq!(got, [Match::No, Match::Fire, Match::No]);
    }

    #[test]
    fn a_trigger_aimed_at_one_instance_counts_only_its_effects() {
        let when = Trigger::Count {
            moment: Moment::During,
            event: EventKind::Effect,
            nth: Count::new(2),
        };
        let by = |i: u32| Event::Effect {
            boundary: None,
            id: "x".into(),
            instance: Some(i),
            incarnation: Some(1),
            outcome: EffectOutcome::Applied,
            sink: SinkKind::Http,
            attribution: Default::default(),
        };
        let mut t = TriggerState::new(&when, 0, Some(1));
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
        let when = Trigger::Count {
            moment: Moment::Before,
            event: EventKind::Commit,
            nth: Count::new(2),
        };
        let mut t = TriggerState::new(&when, 0, None);
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
        let when = Trigger::Count {
            moment: Moment::After,
            event: EventKind::Commit,
            nth: Count::new(2),
        };
        let mut t = TriggerState::new(&when, 0, None);
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
        let when = Trigger::Count {
            moment: Moment::After,
            event: EventKind::Rebalance,
            nth: Count::new(1),
        };
        let mut t = TriggerState::new(&when, 0, None);
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
            session_timeout_ms: None,
        };
        assert_eq!(t.on_event(&rebalance(RebalanceKind::Join)), Match::No);
        assert_eq!(t.on_event(&rebalance(RebalanceKind::Assign)), Match::Fire);
        assert_eq!(t.hold_point(), None);
    }

    #[test]
    fn during_effect_withholds_the_answer() {
        let when = Trigger::Count {
            moment: Moment::During,
            event: EventKind::Effect,
            nth: Count::new(1),
        };
        assert_eq!(
            TriggerState::new(&when, 0, None).on_event(&effect()),
            Match::FireWhileHeld
        );
    }

    #[test]
    fn every_fires_times_times_one_period_apart() {
        let when = Trigger::Every {
            period: Duration::from_secs(2),
            times: Count::new(3),
        };
        let mut t = TriggerState::new(&when, 0, None);
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
        let when = Trigger::Random {
            count: Count::new(4),
            within: Duration::from_secs(10),
        };
        let a = TriggerState::new(&when, 42, None);
        let b = TriggerState::new(&when, 42, None);
        let c = TriggerState::new(&when, 43, None);
        let times = |t: &TriggerState| match t {
            TriggerState::Schedule { times } => times.clone(),
            _ => unreachable!(),
        };
        assert_eq!(times(&a), times(&b));
        assert_ne!(times(&a), times(&c));
        assert!(times(&a).iter().all(|t| *t <= Duration::from_secs(10)));
        assert_eq!(times(&a).len(), 4);
    }
}
