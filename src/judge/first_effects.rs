//! Each ID's first effect, found in one pass with one map: when its first effect of any
//! outcome was observed (the commit window asks), and how many applied effects it had and the
//! position of the first (the absorbed redeliveries ask). On millions of IDs, one map of every
//! effected ID is one of the judge's largest costs: both findings share it.
//!
//! Invariant: only `effect` events; an ID with replayed effects only has no applied one.

use crate::judge::id_map::IdMap;
use crate::timeline::{EffectOutcome, Event, Stamped};

/// One ID's first effects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FirstEffect {
    /// When its first effect (applied or replayed) was observed (µs).
    pub(crate) t_us: u64,
    /// How many applied effects it had.
    pub(crate) applied: u32,
    /// The timeline position of its first applied effect (meaningful when `applied > 0`).
    pub(crate) first_applied_seq: u64,
}

/// Every effected ID's [`FirstEffect`].
pub(crate) struct FirstEffects<'a> {
    by_id: IdMap<'a, FirstEffect>,
}

impl<'a> FirstEffects<'a> {
    /// Reads every `effect` event (the map sized once, by a count of them).
    pub(crate) fn read(events: &'a [Stamped]) -> FirstEffects<'a> {
        let effects = events
            .iter()
            .filter(|st| matches!(st.event, Event::Effect { .. }))
            .count();
        let mut by_id = IdMap::with_capacity_and_hasher(effects, Default::default());
        for st in events {
            let Event::Effect { id, outcome, .. } = &st.event else {
                continue;
            };
            let first = by_id.entry(id.as_str()).or_insert(FirstEffect {
                t_us: st.t_us,
                applied: 0,
                first_applied_seq: 0,
            });
            if *outcome == EffectOutcome::Applied {
                if first.applied == 0 {
                    first.first_applied_seq = st.seq;
                }
                first.applied += 1;
            }
        }
        FirstEffects { by_id }
    }

    /// `id`'s first effects, if it had any.
    pub(crate) fn of(&self, id: &str) -> Option<&FirstEffect> {
        self.by_id.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixtures::{at, effect_event};

    #[test]
    fn the_first_effect_of_any_outcome_dates_an_id_and_only_applied_ones_are_counted() {
        let effect = |id: &str, outcome| effect_event(id, Some(0), Some(1), outcome);
        let events = [
            at(1, 10, effect("a", EffectOutcome::Replayed)),
            at(2, 20, effect("a", EffectOutcome::Applied)),
            at(3, 30, effect("a", EffectOutcome::Applied)),
            at(4, 40, effect("b", EffectOutcome::Replayed)),
        ];
        let first = FirstEffects::read(&events);
        let a = first.of("a").unwrap();
        assert_eq!((a.t_us, a.applied, a.first_applied_seq), (10, 2, 2));
        assert_eq!(first.of("b").map(|b| (b.t_us, b.applied)), Some((40, 0)));
        assert!(first.of("c").is_none());
    }
}
