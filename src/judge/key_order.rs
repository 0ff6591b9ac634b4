//! Per-key order: with `workload.keys`, every key's messages carry a sequence (1, 2, 3...).
//! A consumer that applies a key's messages out of that order (a zombie finishing old work
//! after the new owner moved on, a requeue sending a message to the back of the queue,
//! parallel workers) corrupts state even when nothing is lost or duplicated, so reordering is a
//! finding of its own, beside the verdict.
//!
//! Only each ID's first applied effect counts: re-applying an old message after a redelivery
//! is a duplicate, reported as such, not a reordering.
//!
//! Pure: events in, findings out.

use std::collections::HashMap;

use serde::Serialize;

use crate::judge::model::KEY_ORDER_SAMPLES;
use crate::timeline::{EffectOutcome, ProcessRef, ProduceStatus, Recorded};

/// One message's first effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyedEffect {
    /// The message ID.
    pub id: String,
    /// Its position among its key's messages.
    pub key_seq: u64,
    /// When its first effect was applied (µs).
    pub t_us: u64,
    /// Who applied it, when known.
    pub by: Option<ProcessRef>,
}

/// A message applied before one produced earlier for the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reordering {
    /// The key.
    pub key: String,
    /// Produced first, applied last.
    pub earlier: KeyedEffect,
    /// Produced later, applied before `earlier`.
    pub later: KeyedEffect,
    /// The two effects came from different processes (the key changed hands in between).
    pub ownership_changed: bool,
}

/// The per-key order findings of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeyOrder {
    /// Keys whose order could be checked (the workload used `keys`).
    pub keys: u64,
    /// Messages applied before a message produced earlier for the same key.
    pub count: u64,
    /// The first [`KEY_ORDER_SAMPLES`] of them.
    pub samples: Vec<Reordering>,
}

/// A message's first applied effect: when, and by whom.
type FirstEffect = (u64, Option<ProcessRef>);

/// Checks every key's first effects against its produce order.
pub fn check(recorded: &Recorded) -> KeyOrder {
    let by_key = produce_order(recorded);
    if by_key.is_empty() {
        return KeyOrder::default();
    }
    let first = first_effects(recorded);
    let mut out = KeyOrder {
        keys: by_key.len() as u64,
        ..KeyOrder::default()
    };
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    for (key, messages) in keys {
        check_key(key, messages, &first, &mut out);
    }
    out
}

/// Every key's acknowledged messages: (key sequence, ID).
fn produce_order(recorded: &Recorded) -> HashMap<&str, Vec<(u64, &str)>> {
    let mut by_key: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for p in recorded.produced() {
        if let (Some(key), ProduceStatus::Acked) = (p.key, p.status) {
            by_key.entry(key).or_default().push((p.key_seq, p.id()));
        }
    }
    by_key
}

/// Each ID's first applied effect.
fn first_effects(recorded: &Recorded) -> HashMap<&str, FirstEffect> {
    let mut first: HashMap<&str, FirstEffect> = HashMap::new();
    for e in recorded.effects() {
        if e.outcome == EffectOutcome::Applied {
            let by = e
                .instance
                .zip(e.incarnation)
                .map(|(instance, incarnation)| ProcessRef {
                    instance,
                    incarnation,
                });
            first.entry(e.id()).or_insert((e.t_us, by));
        }
    }
    first
}

/// Checks one key's messages, in produce order, against their first effects.
fn check_key(
    key: &str,
    mut messages: Vec<(u64, &str)>,
    first: &HashMap<&str, FirstEffect>,
    out: &mut KeyOrder,
) {
    messages.sort_unstable();
    messages.dedup_by_key(|m| m.1);
    // The latest first-effect so far among the key's earlier messages.
    let mut latest: Option<KeyedEffect> = None;
    for (key_seq, id) in messages {
        let Some(&(t_us, by)) = first.get(id) else {
            continue;
        };
        let here = KeyedEffect {
            id: id.to_owned(),
            key_seq,
            t_us,
            by,
        };
        match &latest {
            Some(prev) if prev.t_us > t_us => {
                out.count += 1;
                if out.samples.len() < KEY_ORDER_SAMPLES {
                    out.samples.push(Reordering {
                        key: key.to_owned(),
                        ownership_changed: prev.by != here.by,
                        earlier: prev.clone(),
                        later: here,
                    });
                }
            }
            _ => latest = Some(here),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixtures::{at, effect_event, produced_event};
    use crate::timeline::{Event, Stamped};

    fn produced(seq: u64, id: &str, key: &str, key_seq: u64) -> Stamped {
        let mut event = produced_event(id, Some(0), Some(seq as i64), ProduceStatus::Acked);
        if let Event::Produced { seq: s, key: k, .. } = &mut event {
            *s = key_seq;
            *k = Some(key.into());
        }
        at(seq, seq, event)
    }

    fn effect(seq: u64, id: &str, instance: u32) -> Stamped {
        let event = effect_event(id, Some(instance), Some(1), EffectOutcome::Applied);
        at(seq, seq * 1000, event)
    }

    fn workload() -> Vec<Stamped> {
        vec![
            produced(0, "a1", "A", 1),
            produced(1, "b1", "B", 1),
            produced(2, "a2", "A", 2),
            produced(3, "b2", "B", 2),
            produced(4, "a3", "A", 3),
        ]
    }

    #[test]
    fn effects_in_produce_order_per_key_are_not_a_finding_even_interleaved_across_keys() {
        let mut events = workload();
        for (i, id) in ["b1", "a1", "a2", "b2", "a3"].into_iter().enumerate() {
            events.push(effect(10 + i as u64, id, 0));
        }
        let order = check(&Recorded::from_events(&events));
        assert_eq!((order.keys, order.count), (2, 0));
    }

    #[test]
    fn a_message_applied_after_a_later_one_of_its_key_is_reordered_with_the_owner_change() {
        let mut events = workload();
        events.push(effect(10, "a1", 0));
        events.push(effect(11, "a3", 1));
        events.push(effect(12, "a2", 0));
        let order = check(&Recorded::from_events(&events));
        assert_eq!(order.count, 1);
        let r = &order.samples[0];
        assert_eq!((r.earlier.id.as_str(), r.later.id.as_str()), ("a2", "a3"));
        assert!(r.ownership_changed);
        assert_eq!(r.key, "A");
    }

    #[test]
    fn a_redelivered_old_message_is_a_duplicate_not_a_reordering() {
        let mut events = workload();
        events.push(effect(10, "a1", 0));
        events.push(effect(11, "a2", 0));
        events.push(effect(12, "a1", 1));
        events.push(effect(13, "a3", 1));
        assert_eq!(check(&Recorded::from_events(&events)).count, 0);
    }

    #[test]
    fn without_keys_there_is_nothing_to_check() {
        let x = produced_event("x", Some(0), Some(0), ProduceStatus::Acked);
        let events = vec![at(0, 0, x)];
        assert_eq!(check(&Recorded::from_events(&events)), KeyOrder::default());
    }
}
