//! Attribution: what the timeline says about *why*, beyond the per-ID outcome. For now, the
//! at-most-once window: commits the broker accepted (Kafka) or acks it received (AMQP) for
//! messages whose effect had not been observed yet. Every such offset is a message a crash at that moment would lose, so a
//! commit-before-effect consumer shows up here even when no crash hit the window; and a lost
//! ID found here comes with the commit that passed it.
//!
//! Pure: events in, findings out.

use std::collections::HashMap;

use serde::Serialize;

use crate::timeline::{
    AckPhase, AckVerb, CommitPhase, CommittedOffset, Event, ProduceStatus, Stamped,
};

/// Most findings kept with their details (the count is always exact).
pub const SAMPLE_CAP: usize = 1000;

/// One offset committed before its message's effect was observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitAhead {
    /// The message ID at that offset.
    pub id: String,
    /// Partition (Kafka).
    pub partition: Option<i32>,
    /// Offset (Kafka) or delivery tag (AMQP).
    pub offset: Option<i64>,
    /// When the broker accepted the commit (or received the ack) that covered it (µs).
    pub commit_t_us: u64,
    /// Instance that committed.
    pub instance: u32,
    /// Its incarnation.
    pub incarnation: u32,
    /// When its first effect was observed, if ever.
    pub effect_t_us: Option<u64>,
}

/// All commits ahead of effects in a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CommitWindow {
    /// How many offsets were committed before their effect.
    pub count: u64,
    /// The first [`SAMPLE_CAP`] of them, in commit order.
    pub samples: Vec<CommitAhead>,
    /// Every finding of these IDs, for linking anomalies (not serialized).
    #[serde(skip)]
    by_id: HashMap<String, CommitAhead>,
}

impl CommitWindow {
    /// Counts one finding, keeping it as a sample while there is room.
    fn add(&mut self, finding: CommitAhead) {
        self.count += 1;
        if self.samples.len() < SAMPLE_CAP {
            self.samples.push(finding.clone());
        }
        self.by_id.insert(finding.id.clone(), finding);
    }

    /// The commit that passed `id` before its effect, if any.
    pub fn for_id(&self, id: &str) -> Option<&CommitAhead> {
        self.by_id.get(id)
    }
}

/// Finds every offset of the topic under test that a successful commit covered before the
/// effect of its message was observed.
pub fn commits_ahead(events: &[Stamped]) -> CommitWindow {
    let topic = events.iter().find_map(|st| match &st.event {
        Event::RunStarted(info) => Some(info.topic.as_str()),
        _ => None,
    });
    let Some(topic) = topic else {
        return CommitWindow::default();
    };
    let mut at_offset: HashMap<(i32, i64), &str> = HashMap::new();
    let mut first_effect: HashMap<&str, u64> = HashMap::new();
    for st in events {
        match &st.event {
            Event::Produced {
                id,
                partition: Some(p),
                offset: Some(o),
                status: ProduceStatus::Acked,
                ..
            } => {
                at_offset.entry((*p, *o)).or_insert(id.as_str());
            }
            Event::Effect { id, .. } => {
                first_effect.entry(id.as_str()).or_insert(st.t_us);
            }
            _ => {}
        }
    }

    let mut window = CommitWindow::default();
    let mut covered: HashMap<i32, i64> = HashMap::new();
    let mut last_request: HashMap<(u32, u32), &[CommittedOffset]> = HashMap::new();
    for st in events {
        // AMQP: an ack written to the broker's socket removes its messages from the queue.
        if let Event::Ack {
            instance,
            incarnation,
            delivery_tag,
            verb: AckVerb::Ack,
            ids,
            phase: AckPhase::Forwarded,
            ..
        } = &st.event
        {
            for id in ids {
                let effect_t_us = first_effect.get(id.as_str()).copied();
                if effect_t_us.is_some_and(|t| t <= st.t_us) || window.by_id.contains_key(id) {
                    continue;
                }
                let finding = CommitAhead {
                    id: id.clone(),
                    partition: None,
                    offset: Some(*delivery_tag as i64),
                    commit_t_us: st.t_us,
                    instance: *instance,
                    incarnation: *incarnation,
                    effect_t_us,
                };
                window.add(finding);
            }
            continue;
        }
        let Event::Commit {
            instance,
            incarnation,
            offsets,
            phase,
            error,
            ..
        } = &st.event
        else {
            continue;
        };
        match phase {
            CommitPhase::Request => {
                last_request.insert((*instance, *incarnation), offsets.as_slice());
                continue;
            }
            CommitPhase::Dropped => continue,
            CommitPhase::Response if error.is_some() => continue,
            CommitPhase::Response => {}
        }
        // A response carries its offsets, or they are those of the request it answers.
        let offsets = if offsets.is_empty() {
            last_request
                .get(&(*instance, *incarnation))
                .copied()
                .unwrap_or_default()
        } else {
            offsets.as_slice()
        };
        for c in offsets.iter().filter(|c| c.topic == topic) {
            let from = covered.get(&c.partition).copied().unwrap_or(0);
            for offset in from..c.offset {
                let Some(id) = at_offset.get(&(c.partition, offset)) else {
                    continue;
                };
                let effect_t_us = first_effect.get(id).copied();
                if effect_t_us.is_some_and(|t| t <= st.t_us) {
                    continue;
                }
                let finding = CommitAhead {
                    id: (*id).to_owned(),
                    partition: Some(c.partition),
                    offset: Some(offset),
                    commit_t_us: st.t_us,
                    instance: *instance,
                    incarnation: *incarnation,
                    effect_t_us,
                };
                window.add(finding);
            }
            if c.offset > from {
                covered.insert(c.partition, c.offset);
            }
        }
    }
    window
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{EffectOutcome, RunInfo};

    fn stamped(t_us: u64, event: Event) -> Stamped {
        Stamped {
            seq: t_us,
            t_us,
            event,
        }
    }

    fn info() -> Event {
        Event::RunStarted(RunInfo {
            run: "r".into(),
            plan: "p".into(),
            description: None,
            broker: "kafka".into(),
            mock_broker: false,
            broker_address: "x".into(),
            topic: "t".into(),
            group: "g".into(),
            expect: "at-least-once".into(),
            seed: 1,
            planned_faults: vec![],
            messages: 3,
            reproduce: String::new(),
        })
    }

    fn produced(id: &str, offset: i64) -> Event {
        Event::Produced {
            id: id.into(),
            seq: 1,
            key: None,
            partition: Some(0),
            offset: Some(offset),
            status: ProduceStatus::Acked,
            error: None,
        }
    }

    fn effect(id: &str) -> Event {
        Event::Effect {
            id: id.into(),
            instance: Some(0),
            incarnation: Some(1),
            outcome: EffectOutcome::Applied,
            sink: "http".into(),
            attribution: Default::default(),
        }
    }

    fn commit(phase: CommitPhase, offset: Option<i64>) -> Event {
        Event::Commit {
            instance: 0,
            incarnation: 1,
            group: "g".into(),
            member: "m".into(),
            generation: 1,
            offsets: offset
                .map(|o| {
                    vec![CommittedOffset {
                        topic: "t".into(),
                        partition: 0,
                        offset: o,
                    }]
                })
                .unwrap_or_default(),
            phase,
            error: None,
        }
    }

    #[test]
    fn commit_accepted_before_the_effect_is_found() {
        let events = [
            stamped(1, info()),
            stamped(2, produced("a", 0)),
            stamped(3, produced("b", 1)),
            stamped(4, effect("a")),
            // Commits past a (effected) and b (not yet); the response names no offsets.
            stamped(5, commit(CommitPhase::Request, Some(2))),
            stamped(6, commit(CommitPhase::Response, None)),
            stamped(7, effect("b")),
        ];
        let w = commits_ahead(&events);
        assert_eq!(w.count, 1);
        let b = w.for_id("b").unwrap();
        assert_eq!(
            (b.offset, b.commit_t_us, b.effect_t_us),
            (Some(1), 6, Some(7))
        );
        assert!(w.for_id("a").is_none());
    }

    #[test]
    fn commit_after_every_effect_finds_nothing_and_offsets_count_once() {
        let events = [
            stamped(1, info()),
            stamped(2, produced("a", 0)),
            stamped(3, effect("a")),
            stamped(4, commit(CommitPhase::Response, Some(1))),
            stamped(5, commit(CommitPhase::Response, Some(1))),
        ];
        assert_eq!(commits_ahead(&events).count, 0);
    }

    #[test]
    fn dropped_and_failed_commits_are_not_acceptances() {
        let mut failed = commit(CommitPhase::Response, Some(1));
        if let Event::Commit { error, .. } = &mut failed {
            *error = Some("ILLEGAL_GENERATION".into());
        }
        let events = [
            stamped(1, info()),
            stamped(2, produced("a", 0)),
            stamped(3, commit(CommitPhase::Dropped, Some(1))),
            stamped(4, failed),
        ];
        assert_eq!(commits_ahead(&events).count, 0);
    }
}
