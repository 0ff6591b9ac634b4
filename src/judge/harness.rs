//! Findings of the harness's own making: duplicates made by the consumer retrying an effect
//! whose answer the harness held (`held` events at `effect`, recorded when the sink answered
//! the effect a `during: effect` fault fired on, once that fault ended).
//!
//! An applied effect is a *retry in a hold* when an earlier applied effect of the same ID had
//! its answer held by the harness and released, and this one arrived between that effect and
//! [`RETRY_GRACE`] after the release, from the same process (or one the sink could not name):
//! the consumer's client gave up waiting for an answer the harness was holding, and sent the
//! effect again. An ID whose applied effects are all retries in a hold but one was duplicated
//! by the harness, not by the consumer: it does not count against the consumer, and the run
//! cannot say what the consumer would have done without the hold (design §12: never a pass,
//! never a violation). A retry from another process (a redelivery after a crash) is never
//! excused, nor one that came long after the answer went out.
//!
//! Pure: events and anomalies in, the IDs out.

use std::collections::HashMap;

use crate::judge::mechanism::Evidence;
use crate::judge::model::{Anomaly, EffectSeen, Outcome};
use crate::timeline::{EffectOutcome, Event, HeldAt, Stamped};

/// How long after a held answer went out a retry is still taken as caused by the hold: a
/// client that gave up during the hold sends its retry after its own backoff, which can end
/// after the release (a paused consumer notices its timeout only once resumed).
pub const RETRY_GRACE_US: u64 = 1_000_000;

/// A hold of one effect's answer that ended with the answer sent.
#[derive(Debug, Clone, Copy)]
struct Released {
    /// When the answer went out (µs).
    at_us: u64,
    /// The `held` event.
    seq: u64,
    /// How long it was held (µs).
    held_us: u64,
}

/// The duplicated IDs whose extra effects were all the consumer's retries of an answer the
/// harness held, each with the hold that explains it.
pub(crate) fn duplicated_by_holds(
    events: &[Stamped],
    anomalies: &[Anomaly],
) -> HashMap<String, Evidence> {
    let released: HashMap<u64, Released> = events
        .iter()
        .filter_map(|st| match st.event {
            Event::Held {
                at: HeldAt::Effect,
                event,
                released: true,
                held_us,
                ..
            } => Some((
                event,
                Released {
                    at_us: st.t_us,
                    seq: st.seq,
                    held_us,
                },
            )),
            _ => None,
        })
        .collect();
    if released.is_empty() {
        return HashMap::new();
    }
    anomalies
        .iter()
        .filter(|a| a.outcome == Outcome::Duplicated)
        .filter_map(|a| Some((a.id.clone(), only_retries_in_holds(a, &released)?)))
        .collect()
}

/// The evidence of the first hold, when every applied effect of `a` but one is a retry in a
/// hold.
fn only_retries_in_holds(a: &Anomaly, released: &HashMap<u64, Released>) -> Option<Evidence> {
    let applied: Vec<&EffectSeen> = a
        .effects
        .iter()
        .filter(|e| e.outcome == EffectOutcome::Applied)
        .collect();
    let mut first_hold = None;
    let mut own = 0;
    for (k, e) in applied.iter().enumerate() {
        match applied[..k].iter().find(|held| retried(held, e, released)) {
            Some(held) => {
                first_hold.get_or_insert(*held);
            }
            None => own += 1,
        }
    }
    let held = first_hold.filter(|_| own <= 1)?;
    let hold = released.get(&held.seq)?;
    Some(Evidence {
        t_us: hold.at_us,
        seq: Some(hold.seq),
        what: format!(
            "the harness held the sink's answer to the effect at {:.3}s for {:.3}s (a `during: effect` fault) and answered once the fault ended; the same process sent the effect again meanwhile",
            held.t_us as f64 / 1e6,
            hold.held_us as f64 / 1e6
        ),
    })
}

/// True when `again` is a retry of `held` while (or just after) the harness held its answer.
fn retried(held: &EffectSeen, again: &EffectSeen, released: &HashMap<u64, Released>) -> bool {
    let Some(hold) = released.get(&held.seq) else {
        return false;
    };
    let same_process = match (
        (held.instance, held.incarnation),
        (again.instance, again.incarnation),
    ) {
        ((Some(i), Some(n)), (Some(j), Some(m))) => (i, n) == (j, m),
        // The sink could not name one of them: not another process that it knows of.
        _ => true,
    };
    same_process
        && again.t_us >= held.t_us
        && again.t_us <= hold.at_us.saturating_add(RETRY_GRACE_US)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::judge::fixtures::{at, effect_event, info, produced_event};
    use crate::timeline::{EndReason, ProduceStatus};

    /// An at-least-once run of one ID whose first effect's answer (from consumer[0]#1 at
    /// 10 ms) the harness held for a 300 ms pause, then a second effect from `second`,
    /// `second_after_us` after the first.
    fn held_then(second: (u32, u32), second_after_us: u64) -> Vec<Stamped> {
        let t1 = 10_000;
        let events = [
            (
                0,
                Event::RunStarted(Box::new(info(&["pause"], 1, "at-least-once"))),
            ),
            (
                1_000,
                produced_event("m-1", Some(0), Some(0), ProduceStatus::Acked),
            ),
            (
                t1,
                effect_event("m-1", Some(0), Some(1), EffectOutcome::Applied),
            ),
            (
                t1 + 300_000,
                Event::Held {
                    instance: 0,
                    incarnation: 1,
                    at: HeldAt::Effect,
                    event: 2,
                    held_us: 300_000,
                    released: true,
                },
            ),
            (
                t1 + second_after_us,
                effect_event(
                    "m-1",
                    Some(second.0),
                    Some(second.1),
                    EffectOutcome::Applied,
                ),
            ),
            (
                5_000_000,
                Event::RunEnded {
                    reason: EndReason::Settled,
                },
            ),
        ];
        let mut events: Vec<(u64, Event)> = events.into_iter().collect();
        events.sort_by_key(|(t, _)| *t);
        events
            .into_iter()
            .enumerate()
            .map(|(seq, (t, e))| at(seq as u64, t, e))
            .collect()
    }

    fn judged(events: &[Stamped]) -> HashSet<String> {
        let j = crate::judge::analyze(events);
        duplicated_by_holds(events, &j.anomalies)
            .into_keys()
            .collect()
    }

    #[test]
    fn a_retry_by_the_same_process_during_or_just_after_a_hold_is_the_harness_s() {
        for after in [100_000, 300_000, 1_200_000] {
            let events = held_then((0, 1), after);
            assert_eq!(
                judged(&events),
                HashSet::from(["m-1".to_string()]),
                "{after} µs after"
            );
        }
    }

    #[test]
    fn a_duplicate_the_hold_made_is_marked_and_never_counted_against_the_consumer() {
        let mut events = held_then((0, 1), 400_000);
        if let Event::RunStarted(info) = &mut events[0].event {
            info.expect = "exactly-once".into();
        }
        let j = crate::judge::analyze(&events);
        assert_eq!((j.counts.duplicated, j.counts.harness_duplicated), (0, 1));
        assert_eq!(j.verdict, crate::judge::Verdict::Inconclusive);
        assert_eq!(j.exit_code(), 3, "not a violation of exactly-once");
        assert!(j
            .inconclusive_reasons
            .iter()
            .any(|r| r.code() == "harness_duplicated"));
        let group = &j.mechanisms.groups[0];
        assert!(group.harness_hold && group.title.contains("harness's hold"));
        let evidence = &group.samples[0].evidence;
        assert!(
            evidence
                .iter()
                .any(|e| e.what.starts_with("the harness held the sink's answer")),
            "{evidence:?}"
        );
        assert!(j.mechanisms.caused_by_harness("m-1"));
        assert_eq!(j.effect_holds.count, 1);
        assert_eq!(j.holds.count, 0, "the proxy held nothing");
    }

    #[test]
    fn another_process_or_a_late_repeat_is_the_consumer_s() {
        assert!(
            judged(&held_then((0, 2), 200_000)).is_empty(),
            "redelivered"
        );
        assert!(judged(&held_then((0, 1), 2_000_000)).is_empty(), "too late");
        let j = crate::judge::analyze(&held_then((0, 2), 200_000));
        assert_eq!(j.verdict, crate::judge::Verdict::Duplicated);
        assert!(!j.mechanisms.groups[0].harness_hold);
    }
}
