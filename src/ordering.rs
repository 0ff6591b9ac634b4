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

use crate::timeline::{EffectOutcome, Event, ProcessRef, ProduceStatus, Stamped};

/// Most reorderings kept with their details (the count is always exact).
pub const SAMPLE_CAP: usize = 20;

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
    /// The first [`SAMPLE_CAP`] of them.
    pub samples: Vec<Reordering>,
}

/// Checks every key's first effects against its produce order.
pub fn check(events: &[Stamped]) -> KeyOrder {
    let mut by_key: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for st in events {
        if let Event::Produced {
            id,
            seq,
            key: Some(key),
            status: ProduceStatus::Acked,
            ..
        } = &st.event
        {
            by_key
                .entry(key.as_str())
                .or_default()
                .push((*seq, id.as_str()));
        }
    }
    if by_key.is_empty() {
        return KeyOrder::default();
    }
    let mut first: HashMap<&str, (u64, Option<ProcessRef>)> = HashMap::new();
    for st in events {
        if let Event::Effect {
            id,
            instance,
            incarnation,
            outcome: EffectOutcome::Applied,
            ..
        } = &st.event
        {
            let by = instance
                .zip(*incarnation)
                .map(|(instance, incarnation)| ProcessRef {
                    instance,
                    incarnation,
                });
            first.entry(id.as_str()).or_insert((st.t_us, by));
        }
    }

    let mut out = KeyOrder {
        keys: by_key.len() as u64,
        ..KeyOrder::default()
    };
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    for (key, mut messages) in keys {
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
                    if out.samples.len() < SAMPLE_CAP {
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Stamped;

    fn produced(seq: u64, id: &str, key: &str, key_seq: u64) -> Stamped {
        Stamped {
            seq,
            t_us: seq,
            event: Event::Produced {
                id: id.into(),
                seq: key_seq,
                key: Some(key.into()),
                partition: Some(0),
                offset: Some(seq as i64),
                status: ProduceStatus::Acked,
                error: None,
            },
        }
    }

    fn effect(seq: u64, id: &str, instance: u32) -> Stamped {
        Stamped {
            seq,
            t_us: seq * 1000,
            event: Event::Effect {
                id: id.into(),
                instance: Some(instance),
                incarnation: Some(1),
                outcome: EffectOutcome::Applied,
                sink: "http".into(),
                attribution: Default::default(),
            },
        }
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
        let order = check(&events);
        assert_eq!((order.keys, order.count), (2, 0));
    }

    #[test]
    fn a_message_applied_after_a_later_one_of_its_key_is_reordered_with_the_owner_change() {
        let mut events = workload();
        events.push(effect(10, "a1", 0));
        events.push(effect(11, "a3", 1));
        events.push(effect(12, "a2", 0));
        let order = check(&events);
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
        assert_eq!(check(&events).count, 0);
    }

    #[test]
    fn without_keys_there_is_nothing_to_check() {
        let events = vec![Stamped {
            seq: 0,
            t_us: 0,
            event: Event::Produced {
                id: "x".into(),
                seq: 1,
                key: None,
                partition: Some(0),
                offset: Some(0),
                status: ProduceStatus::Acked,
                error: None,
            },
        }];
        assert_eq!(check(&events), KeyOrder::default());
    }
}
