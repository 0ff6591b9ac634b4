//! Poison messages and dead letters: `diverted` IDs, an unread dead-letter destination, and
//! the stall at a poison message the consumer never got past.

use super::*;
use crate::judge::fixtures::{commit_event, produced_event, Tl};
use crate::timeline::Event;
use crate::timeline::{EndReason, ProcessPhase, ProduceStatus, RunInfo};

/// A run of 4 messages on one partition (m-1 poison), a fired kill, the plan's dead-letter
/// topic `dlq`; `effected` had one effect each; the group committed to `committed`.
fn poison_run(effected: &[&str], committed: i64, dead_letters: Option<(&[&str], bool)>) -> Tl {
    let mut tl = Tl::new();
    let mut info: RunInfo = crate::judge::fixtures::info(&["kill: consumer"], 4, "exactly-once");
    info.dead_letter = Some("dlq".into());
    tl.push(Event::RunStarted(Box::new(info)));
    for (i, id) in ["m-0", "m-1", "m-2", "m-3"].iter().enumerate() {
        let mut e = produced_event(id, Some(0), Some(i as i64), ProduceStatus::Acked);
        if let Event::Produced { poison, .. } = &mut e {
            *poison = *id == "m-1";
        }
        tl.push(e);
    }
    tl.process(1, ProcessPhase::Started).fault(0, true);
    for id in effected {
        tl.effect(id, 1);
    }
    // the commit the proxy saw the broker accept (a loss needs the committing connection)
    if committed > 0 {
        let offsets = vec![crate::judge::fixtures::committed("orders-r1", 0, committed)];
        let accepted = crate::timeline::CommitPhase::Response;
        tl.push(commit_event("billing-r1", (0, 1), offsets, accepted));
    }
    tl.push(Event::Progress {
        committed: [(0, committed)].into_iter().collect(),
        end: [(0, 4)].into_iter().collect(),
    });
    tl.end(EndReason::Settled);
    if let Some((ids, complete)) = dead_letters {
        tl.push(Event::DeadLetters {
            destination: "dlq".into(),
            records: ids.len() as u64,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            complete,
        });
    }
    tl
}

#[test]
fn a_poison_message_found_in_the_dead_letter_topic_is_diverted_and_the_rest_exact() {
    let rec = analyze(&poison_run(&["m-0", "m-2", "m-3"], 4, Some((&["m-1"], true))).events);
    assert_eq!(
        rec.verdict,
        Verdict::Exact,
        "{:?}",
        rec.inconclusive_reasons
    );
    assert_eq!(
        (rec.counts.diverted, rec.counts.exact, rec.counts.lost),
        (1, 3, 0)
    );
    assert_eq!(rec.counts.poison, 1);
    let listed: Vec<(&str, Outcome)> = rec
        .anomalies
        .iter()
        .map(|a| (a.id.as_str(), a.outcome))
        .collect();
    assert_eq!(listed, [("m-1", Outcome::Diverted)]);
    let fate = &rec.poison[0];
    assert_eq!(
        (fate.id.as_str(), fate.outcome, fate.moved_on),
        ("m-1", Outcome::Diverted, Some(true))
    );
    assert_eq!(rec.exit_code(), 0);
}

#[test]
fn a_poison_message_committed_past_and_not_in_the_dead_letter_topic_is_lost() {
    let rec = analyze(&poison_run(&["m-0", "m-2", "m-3"], 4, Some((&[], true))).events);
    assert_eq!(rec.verdict, Verdict::Lost);
    assert_eq!((rec.counts.lost, rec.counts.diverted), (1, 0));
}

#[test]
fn a_dead_letter_destination_not_read_whole_proves_no_loss() {
    for read in [None, Some((&[][..], false))] {
        let rec = analyze(&poison_run(&["m-0", "m-2", "m-3"], 4, read).events);
        assert_eq!(rec.verdict, Verdict::Inconclusive, "{read:?}");
        assert_eq!((rec.counts.lost, rec.counts.unconfirmed_loss), (0, 1));
        assert!(rec
            .inconclusive_reasons
            .iter()
            .any(|r| matches!(r, InconclusiveReason::DeadLettersUnread { destination } if destination == "dlq")));
    }
}

#[test]
fn a_consumer_stuck_on_a_poison_message_is_a_stall_with_its_offset() {
    // m-0 done and committed (offset 1); m-1 retried forever: nothing after it committed.
    let rec = analyze(&poison_run(&["m-0"], 1, Some((&[], true))).events);
    assert_eq!(rec.verdict, Verdict::Inconclusive);
    assert_eq!(rec.counts.pending, 3);
    let stall = rec
        .inconclusive_reasons
        .iter()
        .find_map(|r| match r {
            InconclusiveReason::StalledOnPoison { stalls } => Some(stalls.clone()),
            _ => None,
        })
        .expect("a stall");
    assert_eq!(stall.len(), 1);
    assert_eq!(
        (stall[0].id.as_str(), stall[0].partition, stall[0].offset),
        ("m-1", Some(0), Some(1))
    );
    assert_eq!((stall[0].committed, stall[0].behind), (Some(1), Some(2)));
    assert!(
        stall[0]
            .to_string()
            .contains("partition 0 stuck at offset 1"),
        "{}",
        stall[0]
    );
    assert_eq!(rec.poison[0].moved_on, Some(false));
    assert_eq!(rec.exit_code(), 3);
}

#[test]
fn a_run_without_poison_has_no_poison_findings() {
    let mut tl = poison_run(&["m-0", "m-1", "m-2", "m-3"], 4, Some((&[], true)));
    for st in &mut tl.events {
        if let Event::Produced { poison, .. } = &mut st.event {
            *poison = false;
        }
    }
    let rec = analyze(&tl.events);
    assert!(rec.poison.is_empty());
    assert_eq!((rec.counts.poison, rec.verdict), (0, Verdict::Exact));
}

#[test]
fn an_amqp_poison_message_still_in_the_queue_at_the_end_is_a_stall_with_its_deliveries() {
    let mut tl = Tl::new();
    let mut info: RunInfo = crate::judge::fixtures::info(&["kill: consumer"], 2, "at-least-once");
    info.broker = "amqp".into();
    tl.push(Event::RunStarted(Box::new(info)));
    let mut poisoned = produced_event("p-1", None, Some(1), ProduceStatus::Acked);
    if let Event::Produced { poison, .. } = &mut poisoned {
        *poison = true;
    }
    tl.push(poisoned)
        .push(produced_event("p-2", None, Some(2), ProduceStatus::Acked));
    tl.process(1, ProcessPhase::Started).fault(0, true);
    for redelivered in [false, true, true] {
        tl.push(Event::Delivered {
            id: "p-1".into(),
            instance: 0,
            incarnation: 1,
            partition: None,
            offset: Some(1),
            redelivered,
        });
    }
    tl.effect("p-2", 1).end(EndReason::Settled);
    tl.push(Event::QueueRemainder {
        ids: vec!["p-1".into()],
        complete: true,
    });
    let rec = analyze(&tl.events);
    assert_eq!(
        (rec.verdict, rec.counts.pending),
        (Verdict::Inconclusive, 1)
    );
    let stalls = rec
        .inconclusive_reasons
        .iter()
        .find_map(|r| match r {
            InconclusiveReason::StalledOnPoison { stalls } => Some(stalls.clone()),
            _ => None,
        })
        .expect("a stall");
    assert_eq!((stalls[0].id.as_str(), stalls[0].deliveries), ("p-1", 3));
    assert_eq!((stalls[0].committed, stalls[0].behind), (None, None));
    assert!(
        stalls[0].to_string().contains("never settled"),
        "{}",
        stalls[0]
    );
}

#[test]
fn a_diverted_message_that_was_not_poison_is_warned_about() {
    // m-2 had no effect and is in the dead-letter topic, though only m-1 is poison.
    let rec = analyze(&poison_run(&["m-0", "m-3"], 4, Some((&["m-1", "m-2"], true))).events);
    assert_eq!(rec.counts.diverted, 2);
    assert!(
        rec.warnings
            .iter()
            .any(|w| w.starts_with("1 diverted message was not poison")),
        "{:?}",
        rec.warnings
    );
}
