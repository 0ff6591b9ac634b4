//! Redeliveries that made no further effect: a message handed to a consumer again after its
//! one applied effect was observed, with no second applied effect. This is what a dedup
//! table, offsets stored with the data or an idempotent write absorbs; the count says how
//! often the fix was needed. A redelivery the consumer never got to process before the run
//! ended counts too, so the figure is an upper bound on what the fix itself absorbed.

use crate::judge::first_effects::FirstEffects;
use crate::timeline::Recorded;

/// Deliveries (through the proxy) of an ID after its only applied effect was recorded.
#[cfg(test)]
fn redeliveries_absorbed(events: &[crate::timeline::Stamped]) -> u64 {
    let recorded = Recorded::from_events(events);
    redeliveries_absorbed_with(&recorded, &FirstEffects::read(&recorded))
}

/// Deliveries (through the proxy) of an ID after its only applied effect was recorded, with
/// the effects already read.
pub(crate) fn redeliveries_absorbed_with(recorded: &Recorded, effects: &FirstEffects) -> u64 {
    recorded
        .delivered_records()
        .filter(|(d, r)| {
            effects
                .of(r.id)
                .is_some_and(|e| e.applied == 1 && d.seq > e.first_applied_seq)
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{Attribution, DeliveredIds, EffectOutcome, Event, SinkKind, Stamped};

    fn at(seq: u64, event: Event) -> Stamped {
        Stamped {
            seq,
            t_us: seq,
            event,
        }
    }

    fn effect(id: &str) -> Event {
        Event::Effect {
            id: id.into(),
            instance: Some(0),
            incarnation: Some(1),
            outcome: EffectOutcome::Applied,
            sink: SinkKind::Postgres,
            boundary: None,
            attribution: Attribution::default(),
        }
    }

    fn batch(ids: &[(i64, &str)]) -> Event {
        Event::DeliveredBatch {
            instance: 0,
            incarnation: 2,
            partition: 0,
            ranges: Vec::new(),
            records: ids.iter().copied().collect::<DeliveredIds>(),
        }
    }

    #[test]
    fn only_deliveries_after_the_one_effect_of_an_id_count() {
        let events = [
            at(1, batch(&[(0, "a"), (1, "b"), (2, "c")])),
            at(2, effect("a")),
            at(3, effect("b")),
            at(4, effect("b")),
            // a and b come back: a is absorbed, b was applied twice (a duplicate, not absorbed)
            at(5, batch(&[(0, "a"), (1, "b")])),
            at(6, effect("c")),
        ];
        assert_eq!(redeliveries_absorbed(&events), 1);
    }
}
