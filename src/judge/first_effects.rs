//! Each ID's first effect, found in one pass with one map: when its first effect of any
//! outcome was observed (the commit window asks), and how many applied effects it had and the
//! position of the first (the absorbed redeliveries ask). On millions of IDs, one map of every
//! effected ID is one of the judge's largest costs: both findings share it.
//!
//! Invariant: only `effect` events; an ID with replayed effects only has no applied one.

use crate::timeline::{EffectOutcome, MessageIds, MessageNo, Recorded};

/// One ID's first effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FirstEffect {
    /// When its first effect (applied or replayed) was observed (µs).
    pub(crate) t_us: u64,
    /// How many applied effects it had, counted up to [`MANY`] ("that many or more").
    pub(crate) applied: u32,
    /// The timeline position of its first applied effect (meaningful when `applied > 0`).
    pub(crate) first_applied_seq: u64,
}

/// Where applied effects stop being counted: the findings ask "none, one or more".
pub(crate) const MANY: u32 = 3;

/// Marks an ID without an effect in [`FirstEffects`]'s array.
const NO_EFFECT: u64 = u64::MAX;

/// One ID's [`FirstEffect`] in 16 bytes (ten million IDs have one each): the count of applied
/// effects in the low two bits of the first one's position.
#[derive(Clone, Copy)]
struct Packed {
    t_us: u64,
    seq_and_applied: u64,
}

/// Every effected ID's [`FirstEffect`], by ID number.
pub(crate) struct FirstEffects<'a> {
    ids: &'a MessageIds,
    by_no: Vec<Packed>,
}

impl<'a> FirstEffects<'a> {
    /// Reads every `effect` event.
    pub(crate) fn read(recorded: &'a Recorded) -> FirstEffects<'a> {
        let none = Packed {
            t_us: NO_EFFECT,
            seq_and_applied: 0,
        };
        let mut by_no = vec![none; recorded.ids().bound()];
        for e in recorded.effects() {
            let first = &mut by_no[e.no.index()];
            if first.t_us == NO_EFFECT {
                first.t_us = e.t_us;
            }
            if e.outcome == EffectOutcome::Applied {
                let applied = (first.seq_and_applied & 3) as u32;
                if applied == 0 {
                    // Positions stay far below 2^62 (a timeline of 4 * 10^18 events).
                    first.seq_and_applied = e.seq << 2;
                }
                let counted = u64::from((applied + 1).min(MANY));
                first.seq_and_applied = (first.seq_and_applied & !3) | counted;
            }
        }
        FirstEffects {
            ids: recorded.ids(),
            by_no,
        }
    }

    /// ID `no`'s first effects, if it had any.
    pub(crate) fn of(&self, no: MessageNo) -> Option<FirstEffect> {
        let p = self.by_no.get(no.index()).filter(|p| p.t_us != NO_EFFECT)?;
        Some(FirstEffect {
            t_us: p.t_us,
            applied: (p.seq_and_applied & 3) as u32,
            first_applied_seq: p.seq_and_applied >> 2,
        })
    }

    /// `id`'s first effects, if it had any.
    pub(crate) fn of_text(&self, id: &str) -> Option<FirstEffect> {
        self.of(self.ids.get(id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixtures::{at, effect_event};

    #[test]
    fn the_first_effect_of_any_outcome_dates_an_id_and_only_applied_ones_are_counted_up_to_many() {
        let effect = |id: &str, outcome| effect_event(id, Some(0), Some(1), outcome);
        let events = [
            at(1, 10, effect("a", EffectOutcome::Replayed)),
            at(2, 20, effect("a", EffectOutcome::Applied)),
            at(3, 30, effect("a", EffectOutcome::Applied)),
            at(4, 40, effect("b", EffectOutcome::Replayed)),
            at(5, 50, effect("c", EffectOutcome::Applied)),
            at(6, 60, effect("c", EffectOutcome::Applied)),
            at(7, 70, effect("c", EffectOutcome::Applied)),
            at(8, 80, effect("c", EffectOutcome::Applied)),
        ];
        let recorded = Recorded::from_events(&events);
        let first = FirstEffects::read(&recorded);
        let a = first.of_text("a").unwrap();
        assert_eq!((a.t_us, a.applied, a.first_applied_seq), (10, 2, 2));
        assert_eq!(
            first.of_text("b").map(|b| (b.t_us, b.applied)),
            Some((40, 0))
        );
        let c = first.of_text("c").unwrap();
        assert_eq!((c.t_us, c.applied, c.first_applied_seq), (50, MANY, 5));
        assert!(first.of_text("d").is_none());
    }
}
