//! Redeliveries that made no further effect: a message handed to a consumer again after its
//! one applied effect was observed, with no second applied effect. This is what a dedup
//! table, offsets stored with the data or an idempotent write absorbs; the count says how
//! often the fix was needed. A redelivery the consumer never got to process before the run
//! ended counts too, so the figure is an upper bound on what the fix itself absorbed.

use crate::judge::id_map::IdMap;
use crate::timeline::{EffectOutcome, Event, Stamped};

/// Deliveries (through the proxy) of an ID after its only applied effect was recorded.
pub fn redeliveries_absorbed(events: &[Stamped]) -> u64 {
    // ID → (applied effects, timeline seq of the first one)
    let mut effects: IdMap<(u32, u64)> = IdMap::default();
    for e in events {
        if let Event::Effect {
            id,
            outcome: EffectOutcome::Applied,
            ..
        } = &e.event
        {
            let entry = effects.entry(id.as_str()).or_insert((0, e.seq));
            entry.0 += 1;
        }
    }
    let after_the_one_effect = |id: &str, seq: u64| {
        effects
            .get(id)
            .is_some_and(|&(n, first)| n == 1 && seq > first)
    };
    let mut absorbed = 0;
    for e in events {
        match &e.event {
            Event::Delivered { id, .. } => {
                absorbed += u64::from(after_the_one_effect(id, e.seq));
            }
            Event::DeliveredBatch { records, .. } => {
                absorbed += records
                    .iter()
                    .filter(|(_, id)| after_the_one_effect(id, e.seq))
                    .count() as u64;
            }
            _ => {}
        }
    }
    absorbed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{Attribution, DeliveredIds};

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
            sink: "postgres".into(),
            boundary: None,
            attribution: Attribution::default(),
        }
    }

    fn batch(ids: &[(i64, &str)]) -> Event {
        Event::DeliveredBatch {
            instance: 0,
            incarnation: 2,
            partition: 0,
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
