//! Each ID's first effect, found in one pass with one map: when its first effect of any
//! outcome was observed (the commit window asks), and how many applied effects it had and the
//! position of the first (the absorbed redeliveries ask). On millions of IDs, one map of every
//! effected ID is one of the judge's largest costs: both findings share it.
//!
//! Invariant: only `effect` events; an ID with replayed effects only has no applied one.

use crate::timeline::{EffectOutcome, MessageIds, MessageNo, Recorded};

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

/// Marks an ID without an effect in [`FirstEffects`]'s array.
const NO_EFFECT: u64 = u64::MAX;

/// Every effected ID's [`FirstEffect`], by ID number.
pub(crate) struct FirstEffects<'a> {
    ids: &'a MessageIds,
    by_no: Vec<FirstEffect>,
}

impl<'a> FirstEffects<'a> {
    /// Reads every `effect` event.
    pub(crate) fn read(recorded: &'a Recorded) -> FirstEffects<'a> {
        let none = FirstEffect {
            t_us: NO_EFFECT,
            applied: 0,
            first_applied_seq: 0,
        };
        let mut by_no = vec![none; recorded.ids().len()];
        for e in recorded.effects() {
            let first = &mut by_no[e.no.index()];
            if first.t_us == NO_EFFECT {
                first.t_us = e.t_us;
            }
            if e.outcome == EffectOutcome::Applied {
                if first.applied == 0 {
                    first.first_applied_seq = e.seq;
                }
                first.applied += 1;
            }
        }
        FirstEffects {
            ids: recorded.ids(),
            by_no,
        }
    }

    /// ID `no`'s first effects, if it had any.
    pub(crate) fn of(&self, no: MessageNo) -> Option<&FirstEffect> {
        self.by_no.get(no.index()).filter(|e| e.t_us != NO_EFFECT)
    }

    /// `id`'s first effects, if it had any.
    pub(crate) fn of_text(&self, id: &str) -> Option<&FirstEffect> {
        self.of(self.ids.get(id)?)
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
        let recorded = Recorded::from_events(&events);
        let first = FirstEffects::read(&recorded);
        let a = first.of_text("a").unwrap();
        assert_eq!((a.t_us, a.applied, a.first_applied_seq), (10, 2, 2));
        assert_eq!(
            first.of_text("b").map(|b| (b.t_us, b.applied)),
            Some((40, 0))
        );
        assert!(first.of_text("c").is_none());
    }
}
