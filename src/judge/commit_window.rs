//! The commit window: what the timeline says about *why*, beyond the per-ID outcome — commits
//! the broker accepted (Kafka) or acks it received (AMQP) for messages whose effect had not
//! been observed yet. Every such offset is a message a crash at that moment would lose, so a
//! commit-before-effect consumer shows up here even when no crash hit the window; and a lost
//! ID found here comes with the commit that passed it.
//!
//! Pure: events in, findings out.

use std::collections::HashMap;

use serde::Serialize;

use crate::judge::first_effects::FirstEffects;
use crate::judge::model::COMMIT_WINDOW_SAMPLES;
use crate::timeline::{
    AckPhase, AckVerb, CommitPhase, CommittedOffset, Event, ProduceStatus, Recorded, Stamped,
};

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
    /// The first [`COMMIT_WINDOW_SAMPLES`] of them, in commit order.
    pub samples: Vec<CommitAhead>,
    /// Every finding of these IDs, for linking anomalies (not serialized).
    #[serde(skip)]
    by_id: HashMap<String, CommitAhead>,
}

impl CommitWindow {
    /// Counts one finding, keeping it as a sample while there is room.
    fn add(&mut self, finding: CommitAhead) {
        self.count += 1;
        if self.samples.len() < COMMIT_WINDOW_SAMPLES {
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
    let recorded = Recorded::from_events(events);
    commits_ahead_with(&recorded, &FirstEffects::read(&recorded))
}

/// [`commits_ahead`] with the events in columns and the effects already read.
pub(crate) fn commits_ahead_with(recorded: &Recorded, effects: &FirstEffects) -> CommitWindow {
    let events = recorded.others();
    let topic = events.iter().find_map(|st| match &st.event {
        Event::RunStarted(info) => Some(info.topic.as_str()),
        _ => None,
    });
    let Some(topic) = topic else {
        return CommitWindow::default();
    };
    let mut scan = Scan::new(recorded, topic, effects);
    for st in events {
        match &st.event {
            // AMQP: an ack written to the broker's socket removes its messages from the queue.
            Event::Ack {
                instance,
                incarnation,
                delivery_tag,
                verb: AckVerb::Ack,
                ids,
                phase: AckPhase::Forwarded,
                ..
            } => scan.ack(st.t_us, (*instance, *incarnation), *delivery_tag, ids),
            Event::Commit {
                instance,
                incarnation,
                offsets,
                phase,
                error,
                ..
            } => scan.commit(st.t_us, (*instance, *incarnation), offsets, *phase, error),
            _ => {}
        }
    }
    scan.window
}

/// The state of the scan for commits ahead of effects.
struct Scan<'a> {
    topic: &'a str,
    /// Per partition, the acknowledged `produced` events (their rows) in offset order, the
    /// first produce of an offset kept: a commit's newly covered offsets are one run of it.
    /// Rows of 4 bytes rather than (offset, ID) pairs of 16: ten million IDs have one each.
    at_offset: HashMap<i32, Vec<u32>>,
    recorded: &'a Recorded,
    /// When each ID's first effect was observed.
    effects: &'a FirstEffects<'a>,
    /// Per partition, the offset below which commits were already checked.
    covered: HashMap<i32, i64>,
    /// Each committer's last commit request (a response may not repeat its offsets).
    last_request: HashMap<(u32, u32), &'a [CommittedOffset]>,
    window: CommitWindow,
}

impl<'a> Scan<'a> {
    fn new(recorded: &'a Recorded, topic: &'a str, effects: &'a FirstEffects<'a>) -> Scan<'a> {
        let mut at_offset: HashMap<i32, Vec<u32>> = HashMap::new();
        for (row, p) in recorded.produced().enumerate() {
            if let (Some(part), Some(_), ProduceStatus::Acked) = (p.partition, p.offset, p.status) {
                // Rows fit u32 as IDs do.
                at_offset.entry(part).or_default().push(row as u32);
            }
        }
        let offset = |row: &u32| recorded.produced_offset(*row as usize).1;
        for rows in at_offset.values_mut() {
            // Stable (the first produce of an offset stays first and is the one kept), and
            // skipped in the usual case: a producer acknowledges a partition in offset order.
            if !rows.is_sorted_by_key(offset) {
                rows.sort_by_key(offset);
            }
            rows.dedup_by_key(|row| offset(row));
        }
        Scan {
            topic,
            at_offset,
            recorded,
            effects,
            covered: HashMap::new(),
            last_request: HashMap::new(),
            window: CommitWindow::default(),
        }
    }

    /// An ack forwarded at `t_us` by `who` for `ids`: each one not yet effected is ahead.
    fn ack(&mut self, t_us: u64, who: (u32, u32), delivery_tag: u64, ids: &[String]) {
        for id in ids {
            let effect_t_us = self.effects.of_text(id).map(|e| e.t_us);
            if effect_t_us.is_some_and(|t| t <= t_us) || self.window.by_id.contains_key(id) {
                continue;
            }
            self.window.add(CommitAhead {
                id: id.clone(),
                partition: None,
                offset: Some(delivery_tag as i64),
                commit_t_us: t_us,
                instance: who.0,
                incarnation: who.1,
                effect_t_us,
            });
        }
    }

    /// A commit event: requests are remembered, accepted responses checked.
    fn commit(
        &mut self,
        t_us: u64,
        who: (u32, u32),
        offsets: &'a [CommittedOffset],
        phase: CommitPhase,
        error: &Option<String>,
    ) {
        match phase {
            CommitPhase::Request => {
                self.last_request.insert(who, offsets);
                return;
            }
            CommitPhase::Dropped => return,
            CommitPhase::Response if error.is_some() => return,
            CommitPhase::Response => {}
        }
        // A response carries its offsets, or they are those of the request it answers.
        let offsets = if offsets.is_empty() {
            self.last_request.get(&who).copied().unwrap_or_default()
        } else {
            offsets
        };
        let topic = self.topic;
        for c in offsets.iter().filter(|c| c.topic == topic) {
            self.accepted(t_us, who, c.partition, c.offset);
        }
    }

    /// The broker accepted `who`'s commit of `partition` up to `next`: every offset newly
    /// covered whose effect was not yet observed is ahead.
    fn accepted(&mut self, t_us: u64, who: (u32, u32), partition: i32, next: i64) {
        let from = self.covered.get(&partition).copied().unwrap_or(0);
        let rows = self
            .at_offset
            .get(&partition)
            .map_or(&[][..], Vec::as_slice);
        let recorded = self.recorded;
        let place = |row: u32| {
            let (no, offset) = recorded.produced_offset(row as usize);
            (offset.unwrap_or_default(), no)
        };
        let start = rows.partition_point(|&row| place(row).0 < from);
        let covered = rows[start..].iter().map(|&row| place(row));
        for (offset, no) in covered.take_while(|&(offset, _)| offset < next) {
            let effect_t_us = self.effects.of(no).map(|e| e.t_us);
            if effect_t_us.is_some_and(|t| t <= t_us) {
                continue;
            }
            self.window.add(CommitAhead {
                id: recorded.ids().text(no).to_owned(),
                partition: Some(partition),
                offset: Some(offset),
                commit_t_us: t_us,
                instance: who.0,
                incarnation: who.1,
                effect_t_us,
            });
        }
        if next > from {
            self.covered.insert(partition, next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixtures::{
        at, commit_event, committed, effect_event, info as run_info, produced_event,
    };
    use crate::timeline::EffectOutcome;

    fn stamped(t_us: u64, event: Event) -> Stamped {
        at(t_us, t_us, event)
    }

    /// A run on topic `t`.
    fn info() -> Event {
        let mut info = run_info(&[], 3, "at-least-once");
        info.topic = "t".into();
        Event::RunStarted(Box::new(info))
    }

    fn produced(id: &str, offset: i64) -> Event {
        produced_event(id, Some(0), Some(offset), ProduceStatus::Acked)
    }

    fn effect(id: &str) -> Event {
        effect_event(id, Some(0), Some(1), EffectOutcome::Applied)
    }

    fn commit(phase: CommitPhase, offset: Option<i64>) -> Event {
        let offsets = offset.map(|o| vec![committed("t", 0, o)]);
        commit_event("g", (0, 1), offsets.unwrap_or_default(), phase)
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
    fn produces_acknowledged_out_of_order_are_found_in_offset_order_first_produce_named() {
        let events = [
            stamped(1, info()),
            stamped(2, produced("c", 2)),
            stamped(3, produced("a", 0)),
            stamped(4, produced("b", 1)),
            // A second record at offset 1 (not what the broker stored first): not named.
            stamped(5, produced("b-again", 1)),
            stamped(6, commit(CommitPhase::Response, Some(1))),
            stamped(7, commit(CommitPhase::Response, Some(3))),
        ];
        let w = commits_ahead(&events);
        let found: Vec<(&str, Option<i64>, u64)> = w
            .samples
            .iter()
            .map(|c| (c.id.as_str(), c.offset, c.commit_t_us))
            .collect();
        assert_eq!(
            found,
            [("a", Some(0), 6), ("b", Some(1), 7), ("c", Some(2), 7)]
        );
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
