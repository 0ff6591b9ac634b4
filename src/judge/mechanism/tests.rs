//! The mechanism rules on hand-written timelines with instances, commits, deliveries,
//! assignments and faults.

use super::*;
use crate::judge::analyze;
use crate::judge::fixtures::{commit_event, committed, effect_event, info, produced_event, Tl};
use crate::timeline::{
    AckPhase, AckVerb, CommitPhase, EffectOutcome, EndReason, Event, FaultRecord, ProcessPhase,
    ProcessRef, ProduceStatus, RebalanceKind,
};

/// A timeline builder with instances, on top of the judge's fixtures.
struct Run {
    tl: Tl,
}

impl Run {
    fn kafka(messages: u64) -> Run {
        let mut tl = Tl::new();
        tl.push(Event::RunStarted(Box::new(info(
            &["a fault"],
            messages,
            "at-least-once",
        ))));
        for i in 0..messages {
            tl.produced(&format!("m-{i}"), 0, i as i64);
        }
        Run { tl }
    }

    fn amqp(messages: u64) -> Run {
        let mut run_info = info(&["a fault"], messages, "at-least-once");
        run_info.broker = "amqp".into();
        let mut tl = Tl::new();
        tl.push(Event::RunStarted(Box::new(run_info)));
        for i in 0..messages {
            tl.push(produced_event(
                &format!("m-{i}"),
                None,
                Some(i as i64 + 1),
                ProduceStatus::Acked,
            ));
        }
        Run { tl }
    }

    fn started(&mut self, i: u32, n: u32) -> &mut Run {
        self.tl.push(Event::Process {
            instance: i,
            incarnation: n,
            pid: 100 * i + n,
            phase: ProcessPhase::Started,
            status: None,
        });
        self
    }

    fn exited(&mut self, i: u32, n: u32, status: &str) -> &mut Run {
        self.tl.push(Event::Process {
            instance: i,
            incarnation: n,
            pid: 100 * i + n,
            phase: ProcessPhase::Exited,
            status: Some(status.into()),
        });
        self
    }

    fn effect(&mut self, id: &str, i: u32, n: u32) -> &mut Run {
        self.tl
            .push(effect_event(id, Some(i), Some(n), EffectOutcome::Applied));
        self
    }

    fn delivered(&mut self, id: &str, i: u32, n: u32) -> &mut Run {
        self.tl.push(Event::Delivered {
            id: id.into(),
            instance: i,
            incarnation: n,
            partition: Some(0),
            offset: None,
            redelivered: false,
        });
        self
    }

    fn committed(&mut self, i: u32, n: u32, next_offset: i64) -> &mut Run {
        for phase in [CommitPhase::Request, CommitPhase::Response] {
            self.tl.push(commit_event(
                "billing-r1",
                (i, n),
                vec![committed("orders-r1", 0, next_offset)],
                phase,
            ));
        }
        self
    }

    fn fault(
        &mut self,
        index: usize,
        action: &str,
        hit: &[(u32, u32)],
        length_ms: u64,
    ) -> &mut Run {
        let t = self.tl.events.last().map_or(0, |e| e.t_us) + 1_000;
        self.tl.push(Event::Fault(Box::new(FaultRecord {
            fault: index,
            action: action.into(),
            target: "consumer".into(),
            trigger: "at: 1s".into(),
            matched_at_us: t,
            fired_at_us: t,
            trigger_latency_us: 0,
            applied: true,
            detail: String::new(),
            hit: hit
                .iter()
                .map(|&(instance, incarnation)| ProcessRef {
                    instance,
                    incarnation,
                })
                .collect(),
            length_us: (length_ms > 0).then_some(length_ms * 1_000),
            through_proxy: false,
        })));
        self
    }

    fn joined(&mut self, i: u32, n: u32) -> &mut Run {
        self.tl.push(Event::Rebalance {
            instance: i,
            incarnation: n,
            group: "billing-r1".into(),
            change: RebalanceKind::Join,
            member: "m".into(),
            generation: None,
            assignment: None,
            error: None,
            protocols: Some(vec!["range".into()]),
            session_timeout_ms: None,
        });
        self
    }

    fn assigned(&mut self, i: u32, n: u32, partitions: &[i32]) -> &mut Run {
        self.tl.push(Event::Rebalance {
            instance: i,
            incarnation: n,
            group: "billing-r1".into(),
            change: RebalanceKind::Assign,
            member: "m".into(),
            generation: Some(2),
            assignment: Some(partitions.to_vec()),
            error: None,
            protocols: None,
            session_timeout_ms: None,
        });
        self
    }

    fn end(&mut self, committed: i64) -> Mechanisms {
        self.tl.progress(&[(0, committed)]).end(EndReason::Settled);
        analyze(&self.tl.events).mechanisms
    }

    /// The broker's last progress, then `run_ended` for `reason`; events may follow (the
    /// harness stopping the consumers) before [`Run::judge`].
    fn ended(&mut self, committed: i64, reason: EndReason) -> &mut Run {
        self.tl.progress(&[(0, committed)]).end(reason);
        self
    }

    /// AMQP: the queue's remainder (empty), then `run_ended`, settled.
    fn drained(&mut self) -> &mut Run {
        self.tl
            .push(Event::QueueRemainder {
                ids: vec![],
                complete: true,
            })
            .end(EndReason::Settled);
        self
    }

    fn judge(&self) -> Mechanisms {
        analyze(&self.tl.events).mechanisms
    }

    /// An AMQP ack, nack or reject of `id` by `i`/`n`, forwarded to the broker.
    fn settled(&mut self, id: &str, i: u32, n: u32, verb: AckVerb, requeue: bool) -> &mut Run {
        self.tl.push(Event::Ack {
            instance: i,
            incarnation: n,
            channel: 1,
            delivery_tag: 1,
            multiple: false,
            verb,
            requeue,
            ids: vec![id.into()],
            phase: AckPhase::Forwarded,
        });
        self
    }

    /// AMQP: `id` handed again to `i`/`n`, marked redelivered by the broker.
    fn redelivered(&mut self, id: &str, i: u32, n: u32) -> &mut Run {
        self.tl.push(Event::Delivered {
            id: id.into(),
            instance: i,
            incarnation: n,
            partition: None,
            offset: None,
            redelivered: true,
        });
        self
    }
}

#[test]
fn killed_after_the_effect_before_the_commit_is_the_at_least_once_window() {
    let mech = Run::kafka(3)
        .started(0, 1)
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .effect("m-1", 0, 1)
        .fault(0, "kill", &[(0, 1)], 0)
        .exited(0, 1, "signal SIGKILL")
        .started(0, 2)
        .delivered("m-1", 0, 2)
        .effect("m-1", 0, 2)
        .effect("m-2", 0, 2)
        .committed(0, 2, 3)
        .end(3);
    assert_eq!(mech.of("m-1"), Some(Mechanism::CrashAfterEffect));
    let group = &mech.groups[0];
    assert_eq!((group.count, group.fault), (1, Some(0)));
    let evidence: Vec<&str> = group.samples[0]
        .evidence
        .iter()
        .map(|e| e.what.as_str())
        .collect();
    assert!(
        evidence
            .iter()
            .any(|w| w.contains("no commit by consumer[0]#1 covered it")),
        "{evidence:?}"
    );
}

#[test]
fn committed_before_the_effect_then_killed_is_the_at_most_once_window() {
    let mech = Run::kafka(3)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .delivered("m-1", 0, 1)
        .committed(0, 1, 2)
        .effect("m-0", 0, 1)
        .fault(0, "kill", &[(0, 1)], 0)
        .exited(0, 1, "signal SIGKILL")
        .started(0, 2)
        .effect("m-2", 0, 2)
        .committed(0, 2, 3)
        .end(3);
    assert_eq!(mech.of("m-1"), Some(Mechanism::CrashAfterCommit));
    assert_eq!(mech.groups[0].fault, Some(0));
}

#[test]
fn committed_past_by_a_live_consumer_without_an_effect_is_skipped() {
    let mech = Run::kafka(2)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .delivered("m-1", 0, 1)
        .effect("m-0", 0, 1)
        .committed(0, 1, 2)
        .end(2);
    assert_eq!(mech.of("m-1"), Some(Mechanism::Skipped));
}

#[test]
fn work_redone_by_the_new_owner_while_the_old_one_lives_is_revoked_uncommitted() {
    let mech = Run::kafka(2)
        .started(0, 1)
        .started(1, 1)
        .assigned(0, 1, &[0])
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .effect("m-1", 0, 1)
        .assigned(0, 1, &[])
        .assigned(1, 1, &[0])
        .effect("m-1", 1, 1)
        .committed(1, 1, 2)
        .end(2);
    assert_eq!(mech.of("m-1"), Some(Mechanism::RevokedUncommitted));
    let evidence = &mech.groups[0].samples[0].evidence;
    assert!(evidence
        .iter()
        .any(|e| e.what.contains("assigned partitions [0]")));
}

#[test]
fn a_paused_owner_writing_after_the_new_owner_started_is_a_zombie() {
    let mech = Run::kafka(3)
        .started(0, 1)
        .started(1, 1)
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .fault(0, "pause", &[(0, 1)], 60_000)
        .assigned(1, 1, &[0])
        .effect("m-1", 1, 1)
        .effect("m-2", 1, 1)
        .committed(1, 1, 3)
        .effect("m-1", 0, 1)
        .end(3);
    assert_eq!(mech.of("m-1"), Some(Mechanism::Zombie));
    let evidence = &mech.groups[0].samples[0].evidence;
    assert!(
        evidence.iter().any(|e| e.what.contains("zombie write")),
        "{evidence:?}"
    );
}

#[test]
fn one_process_applying_twice_without_a_second_delivery_is_a_consumer_retry() {
    let mech = Run::kafka(1)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .end(1);
    assert_eq!(mech.of("m-0"), Some(Mechanism::ConsumerRetry));
}

#[test]
fn one_process_handed_the_message_twice_lost_it_in_a_rebalance_not_a_retry() {
    let mech = Run::kafka(1)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .joined(0, 1)
        .assigned(0, 1, &[0])
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .end(1);
    assert_eq!(mech.of("m-0"), Some(Mechanism::RevokedUncommitted));
}

#[test]
fn amqp_ack_before_the_effect_then_a_kill_is_the_at_most_once_window() {
    let mut run = Run::amqp(2);
    run.started(0, 1).effect("m-0", 0, 1).tl.push(Event::Ack {
        instance: 0,
        incarnation: 1,
        channel: 1,
        delivery_tag: 2,
        multiple: false,
        verb: AckVerb::Ack,
        requeue: false,
        ids: vec!["m-1".into()],
        phase: AckPhase::Forwarded,
    });
    run.fault(0, "kill", &[(0, 1)], 0)
        .exited(0, 1, "signal SIGKILL");
    run.tl
        .push(Event::QueueRemainder {
            ids: vec![],
            complete: true,
        })
        .end(EndReason::Settled);
    let mech = analyze(&run.tl.events).mechanisms;
    assert_eq!(mech.of("m-1"), Some(Mechanism::CrashAfterCommit));
    assert!(mech.groups[0].title.contains("Acked before the effect"));
}

#[test]
fn amqp_no_ack_delivery_then_a_kill_is_named_as_such() {
    let mut run = Run::amqp(2);
    run.started(0, 1).tl.push(Event::ConsumerSettings {
        instance: 0,
        incarnation: 1,
        no_ack: true,
        prefetch: None,
        heartbeat_s: None,
    });
    run.delivered("m-0", 0, 1)
        .delivered("m-1", 0, 1)
        .effect("m-0", 0, 1)
        .fault(0, "kill", &[(0, 1)], 0)
        .exited(0, 1, "signal SIGKILL");
    run.tl
        .push(Event::QueueRemainder {
            ids: vec![],
            complete: true,
        })
        .end(EndReason::Settled);
    let mech = analyze(&run.tl.events).mechanisms;
    assert_eq!(mech.of("m-1"), Some(Mechanism::NoAckDelivery));
}

#[test]
fn without_proxy_evidence_a_loss_is_unexplained_and_says_why() {
    // AMQP: the queue's remainder is the broker's own word; nothing says who took it.
    let mech = Run::amqp(2)
        .started(0, 1)
        .effect("m-0", 0, 1)
        .drained()
        .judge();
    assert_eq!(mech.of("m-1"), Some(Mechanism::Unexplained));
    let evidence = &mech.groups[0].samples[0].evidence;
    assert!(evidence[0].what.contains("did not go through the proxy"));
}

#[test]
fn kafka_committed_past_by_no_watched_connection_is_not_a_proven_loss() {
    // Issue 13: the group's offset passed m-1, but no commit through the proxy did.
    let mut run = Run::kafka(2);
    run.started(0, 1).effect("m-0", 0, 1);
    run.tl
        .progress_uncommitted(&[(0, 2)])
        .end(EndReason::Settled);
    let rec = analyze(&run.tl.events);
    assert_eq!(rec.counts.lost, 0);
    assert_eq!(rec.counts.committer_unknown, 1);
    assert_eq!(rec.verdict, crate::judge::Verdict::Inconclusive);
    assert!(rec.mechanisms.of("m-1").is_none());
}

#[test]
fn groups_split_by_mechanism_and_by_the_preceding_fault_largest_first() {
    let mech = Run::kafka(4)
        .started(0, 1)
        .effect("m-0", 0, 1)
        .fault(0, "kill", &[(0, 1)], 0)
        .exited(0, 1, "signal SIGKILL")
        .started(0, 2)
        .effect("m-0", 0, 2)
        .effect("m-1", 0, 2)
        .effect("m-2", 0, 2)
        .fault(1, "kill", &[(0, 2)], 0)
        .exited(0, 2, "signal SIGKILL")
        .started(0, 3)
        .effect("m-1", 0, 3)
        .effect("m-2", 0, 3)
        .effect("m-3", 0, 3)
        .committed(0, 3, 4)
        .end(4);
    let groups: Vec<(Mechanism, Option<usize>, u64)> = mech
        .groups
        .iter()
        .map(|g| (g.mechanism, g.fault, g.count))
        .collect();
    assert_eq!(
        groups,
        vec![
            (Mechanism::CrashAfterEffect, Some(1), 2),
            (Mechanism::CrashAfterEffect, Some(0), 1)
        ]
    );
}

/// The facts (`what`) of the first sample of the group of `mechanism`.
fn facts_of(mech: &Mechanisms, mechanism: Mechanism) -> Vec<String> {
    mech.groups
        .iter()
        .find(|g| g.mechanism == mechanism)
        .map(|g| {
            g.samples[0]
                .evidence
                .iter()
                .map(|e| e.what.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The fault blamed for `mechanism`'s group (which must exist).
fn fault_of(mech: &Mechanisms, mechanism: Mechanism) -> Option<usize> {
    let group = mech.groups.iter().find(|g| g.mechanism == mechanism);
    group
        .unwrap_or_else(|| panic!("no {mechanism:?} group in {:?}", mech.groups))
        .fault
}

/// A filter bug after a kill: consumer[0]#1 is killed early by fault 0; consumer[0]#2 commits
/// past m-3 without applying it and lives until the harness stops it after `run_ended`.
fn filter_bug_after_a_kill(stop: &str, reason: EndReason) -> Run {
    let mut run = Run::kafka(5);
    run.started(0, 1)
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .fault(0, "kill", &[(0, 1)], 0)
        .exited(0, 1, "signal SIGKILL")
        .started(0, 2)
        .delivered("m-1", 0, 2)
        .delivered("m-2", 0, 2)
        .delivered("m-3", 0, 2)
        .delivered("m-4", 0, 2)
        .effect("m-1", 0, 2)
        .effect("m-2", 0, 2)
        .effect("m-4", 0, 2)
        .committed(0, 2, 5)
        .ended(5, reason)
        .exited(0, 2, stop);
    run
}

#[test]
fn the_harness_stopping_a_consumer_after_the_run_ended_is_not_a_crash() {
    for stop in ["signal SIGTERM", "signal SIGKILL", "exit 143"] {
        let mech = filter_bug_after_a_kill(stop, EndReason::Settled).judge();
        assert_eq!(mech.of("m-3"), Some(Mechanism::Skipped), "{stop}");
        let facts = facts_of(&mech, Mechanism::Skipped);
        assert!(
            facts.iter().any(|f| f.contains("the harness stopped it")),
            "{stop}: {facts:?}"
        );
    }
}

#[test]
fn a_skip_after_an_earlier_kill_of_another_incarnation_blames_no_fault() {
    let mech = filter_bug_after_a_kill("signal SIGTERM", EndReason::Settled).judge();
    assert_eq!(mech.of("m-3"), Some(Mechanism::Skipped));
    assert_eq!(mech.groups.len(), 1, "{:?}", mech.groups);
    assert_eq!(fault_of(&mech, Mechanism::Skipped), None);
    let facts = facts_of(&mech, Mechanism::Skipped);
    assert!(!facts.iter().any(|f| f.contains("fault #0")), "{facts:?}");
}

#[test]
fn a_consumer_still_running_when_the_run_is_cut_off_is_unfinished_at_end() {
    let mech = filter_bug_after_a_kill("signal SIGTERM", EndReason::Deadline).judge();
    assert_eq!(mech.of("m-3"), Some(Mechanism::UnfinishedAtEnd));
    assert_eq!(fault_of(&mech, Mechanism::UnfinishedAtEnd), None);
    let facts = facts_of(&mech, Mechanism::UnfinishedAtEnd);
    assert!(facts.iter().any(|f| f.contains("cut off")), "{facts:?}");
    assert!(mech.groups[0].title.contains("still running"));
}

#[test]
fn a_consumer_without_an_exit_when_the_run_is_cut_off_is_unfinished_at_end() {
    let mech = Run::kafka(2)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .delivered("m-1", 0, 1)
        .committed(0, 1, 2)
        .effect("m-0", 0, 1)
        .ended(2, EndReason::Deadline)
        .judge();
    assert_eq!(mech.of("m-1"), Some(Mechanism::UnfinishedAtEnd));
}

#[test]
fn a_crash_blames_only_a_fault_that_hit_that_process_before_it_died() {
    // The kill hit consumer[1]#1; consumer[0]#1 then died of its own (SIGSEGV) with m-1
    // committed and not applied.
    let mech = Run::kafka(2)
        .started(0, 1)
        .started(1, 1)
        .fault(0, "kill", &[(1, 1)], 0)
        .exited(1, 1, "signal SIGKILL")
        .delivered("m-0", 0, 1)
        .delivered("m-1", 0, 1)
        .committed(0, 1, 2)
        .effect("m-0", 0, 1)
        .exited(0, 1, "signal SIGSEGV")
        .end(2);
    assert_eq!(mech.of("m-1"), Some(Mechanism::CrashAfterCommit));
    assert_eq!(fault_of(&mech, Mechanism::CrashAfterCommit), None);
}

#[test]
fn a_fault_after_the_crash_is_not_blamed_for_it() {
    let mech = Run::kafka(2)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .delivered("m-1", 0, 1)
        .committed(0, 1, 2)
        .effect("m-0", 0, 1)
        .exited(0, 1, "signal SIGSEGV")
        .started(0, 2)
        .fault(0, "kill", &[(0, 2)], 0)
        .exited(0, 2, "signal SIGKILL")
        .end(2);
    assert_eq!(mech.of("m-1"), Some(Mechanism::CrashAfterCommit));
    assert_eq!(fault_of(&mech, Mechanism::CrashAfterCommit), None);
}

#[test]
fn a_retry_blames_no_fault_that_hit_another_process() {
    let mech = Run::kafka(1)
        .started(0, 1)
        .started(1, 1)
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .fault(0, "kill", &[(1, 1)], 0)
        .exited(1, 1, "signal SIGKILL")
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .end(1);
    assert_eq!(mech.of("m-0"), Some(Mechanism::ConsumerRetry));
    assert_eq!(fault_of(&mech, Mechanism::ConsumerRetry), None);
}

#[test]
fn one_process_handed_its_message_again_without_an_ownership_change_is_not_revoked() {
    // One incarnation, one assignment: it went back over m-0 itself (a seek back).
    let mech = Run::kafka(1)
        .started(0, 1)
        .assigned(0, 1, &[0])
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .end(1);
    assert_eq!(mech.of("m-0"), Some(Mechanism::RedeliveredSameProcess));
    let facts = facts_of(&mech, Mechanism::RedeliveredSameProcess);
    assert!(facts.iter().any(|f| f.contains("a seek back")), "{facts:?}");
    assert!(!mech.groups[0].title.contains("new owner"));
}

#[test]
fn a_partition_lent_to_the_transient_member_and_back_is_revoked() {
    let mut run = Run::kafka(1);
    run.started(0, 1)
        .assigned(0, 1, &[0])
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .tl
        .push(Event::GroupMember {
            group: "billing-r1".into(),
            change: crate::timeline::MemberChange::Assigned,
            partitions: Some(vec![0]),
            error: None,
        });
    let mech = run
        .assigned(0, 1, &[0])
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .end(1);
    assert_eq!(mech.of("m-0"), Some(Mechanism::RevokedUncommitted));
    let facts = facts_of(&mech, Mechanism::RevokedUncommitted);
    assert!(
        facts.iter().any(|f| f.contains("transient group member")),
        "{facts:?}"
    );
}

#[test]
fn amqp_reject_with_requeue_after_the_effect_is_a_same_process_redelivery() {
    let mech = Run::amqp(1)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .settled("m-0", 0, 1, AckVerb::Reject, true)
        .redelivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .settled("m-0", 0, 1, AckVerb::Ack, false)
        .drained()
        .judge();
    assert_eq!(mech.of("m-0"), Some(Mechanism::RedeliveredSameProcess));
    let facts = facts_of(&mech, Mechanism::RedeliveredSameProcess);
    assert!(
        facts.iter().any(|f| f.contains("rejected it with requeue")),
        "{facts:?}"
    );
    assert!(
        facts.iter().any(|f| f.contains("marked redelivered")),
        "{facts:?}"
    );
}

#[test]
fn amqp_requeue_to_another_consumer_is_revoked_and_names_the_requeue() {
    let mech = Run::amqp(1)
        .started(0, 1)
        .started(1, 1)
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .settled("m-0", 0, 1, AckVerb::Nack, true)
        .redelivered("m-0", 1, 1)
        .effect("m-0", 1, 1)
        .settled("m-0", 1, 1, AckVerb::Ack, false)
        .drained()
        .judge();
    assert_eq!(mech.of("m-0"), Some(Mechanism::RevokedUncommitted));
    let facts = facts_of(&mech, Mechanism::RevokedUncommitted);
    assert!(
        facts.iter().any(|f| f.contains("nacked it with requeue")),
        "{facts:?}"
    );
}

#[test]
fn amqp_nack_without_requeue_is_dropped_by_the_consumer() {
    for verb in [AckVerb::Nack, AckVerb::Reject] {
        let mech = Run::amqp(2)
            .started(0, 1)
            .delivered("m-0", 0, 1)
            .delivered("m-1", 0, 1)
            .effect("m-0", 0, 1)
            .settled("m-0", 0, 1, AckVerb::Ack, false)
            .settled("m-1", 0, 1, verb, false)
            .drained()
            .judge();
        assert_eq!(
            mech.of("m-1"),
            Some(Mechanism::DroppedByConsumer),
            "{verb:?}"
        );
        let facts = facts_of(&mech, Mechanism::DroppedByConsumer);
        assert!(
            facts.iter().any(|f| f.contains("without requeue")),
            "{facts:?}"
        );
        assert!(mech.groups[0].title.contains("Rejected by the consumer"));
    }
}

#[test]
fn kafka_offsets_committed_past_but_never_fetched_are_never_delivered() {
    // auto.offset.reset=latest: the consumer starts at the end and commits it; what comes
    // after it is applied (a run with no effect at all is inconclusive, never LOST).
    let mech = Run::kafka(4)
        .started(0, 1)
        .assigned(0, 1, &[0])
        .committed(0, 1, 3)
        .delivered("m-3", 0, 1)
        .effect("m-3", 0, 1)
        .committed(0, 1, 4)
        .end(4);
    for id in ["m-0", "m-1", "m-2"] {
        assert_eq!(mech.of(id), Some(Mechanism::NeverDelivered), "{id}");
    }
    assert_eq!(mech.groups.len(), 1);
    let facts = facts_of(&mech, Mechanism::NeverDelivered);
    assert!(
        facts
            .iter()
            .any(|f| f.contains("no Fetch response through the proxy carried offset")),
        "{facts:?}"
    );
}

#[test]
fn a_committer_that_never_fetched_what_its_predecessor_did_is_never_delivered() {
    // consumer[0]#1 fetched m-1 and died before committing; #2 reset to the end and
    // committed past it without fetching it.
    let mech = Run::kafka(3)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .delivered("m-1", 0, 1)
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .fault(0, "kill", &[(0, 1)], 0)
        .exited(0, 1, "signal SIGKILL")
        .started(0, 2)
        .committed(0, 2, 3)
        .end(3);
    assert_eq!(mech.of("m-1"), Some(Mechanism::NeverDelivered));
    let facts = facts_of(&mech, Mechanism::NeverDelivered);
    assert!(
        facts.iter().any(|f| f.contains("other incarnations")),
        "{facts:?}"
    );
}

#[test]
fn work_requeued_when_the_harness_stops_a_consumer_after_the_run_is_not_a_crash() {
    // consumer[0]#1 applied m-0 and was SIGKILLed by the harness's stop after run_ended,
    // before its ack; RabbitMQ requeued m-0 to consumer[1]#1, which applied it again.
    let mut run = Run::amqp(1);
    run.started(0, 1)
        .started(1, 1)
        .fault(0, "kill", &[(1, 1)], 0)
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .tl
        .end(EndReason::Settled);
    let mech = run
        .exited(0, 1, "signal SIGKILL")
        .redelivered("m-0", 1, 1)
        .effect("m-0", 1, 1)
        .settled("m-0", 1, 1, AckVerb::Ack, false)
        .judge();
    assert_eq!(mech.of("m-0"), Some(Mechanism::RevokedUncommitted));
    assert_eq!(fault_of(&mech, Mechanism::RevokedUncommitted), None);
    let facts = facts_of(&mech, Mechanism::RevokedUncommitted);
    assert!(
        facts.iter().any(|f| f.contains("the harness stopped it")),
        "{facts:?}"
    );
}

#[test]
fn offsets_skipped_after_an_out_of_range_fetch_reply_are_offset_reset_skipped() {
    // The proxy answered consumer[0]#1's Fetch from offset 1 with OFFSET_OUT_OF_RANGE (a
    // fetch_error fault); its client reset to the end (3) and committed past m-1 and m-2,
    // which no Fetch response carried to it. m-0 went before the reset and is EXACT.
    let mut run = Run::kafka(4);
    run.started(0, 1)
        .assigned(0, 1, &[0])
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .fault(0, "fetch_error", &[(0, 1)], 0);
    run.tl.push(Event::Replied {
        instance: 0,
        incarnation: 1,
        api: "Fetch".into(),
        version: 12,
        sent: "OFFSET_OUT_OF_RANGE".into(),
        offsets: vec![committed("orders-r1", 0, 1)],
        broker: "records withheld".into(),
    });
    let mech = run
        .delivered("m-3", 0, 1)
        .effect("m-3", 0, 1)
        .committed(0, 1, 4)
        .end(4);
    for id in ["m-1", "m-2"] {
        assert_eq!(mech.of(id), Some(Mechanism::OffsetResetSkipped), "{id}");
    }
    assert_eq!(mech.of("m-0"), None);
    assert_eq!(fault_of(&mech, Mechanism::OffsetResetSkipped), Some(0));
    let facts = facts_of(&mech, Mechanism::OffsetResetSkipped);
    assert!(
        facts
            .iter()
            .any(|f| f.contains("with OFFSET_OUT_OF_RANGE: its client reset its position")),
        "{facts:?}"
    );
}

#[test]
fn a_record_carried_twice_by_one_fetch_response_and_applied_twice_is_fetched_twice() {
    // A fetch_twice fault: one delivered_batch lists m-1 twice (the batch repeated); the
    // client handed both copies over and consumer[0]#1 applied it twice, committing between.
    let mut run = Run::kafka(3);
    run.started(0, 1)
        .assigned(0, 1, &[0])
        .fault(0, "fetch_twice", &[(0, 1)], 0);
    run.tl.push(Event::DeliveredBatch {
        instance: 0,
        incarnation: 1,
        partition: 0,
        ranges: Vec::new(),
        records: [
            (0, "m-0"),
            (1, "m-1"),
            (2, "m-2"),
            (0, "m-0"),
            (1, "m-1"),
            (2, "m-2"),
        ]
        .into_iter()
        .collect(),
    });
    let mech = run
        .effect("m-0", 0, 1)
        .committed(0, 1, 1)
        .effect("m-1", 0, 1)
        .committed(0, 1, 2)
        .effect("m-2", 0, 1)
        .committed(0, 1, 3)
        .effect("m-0", 0, 1)
        .effect("m-1", 0, 1)
        .effect("m-2", 0, 1)
        .end(3);
    for id in ["m-0", "m-1", "m-2"] {
        assert_eq!(mech.of(id), Some(Mechanism::FetchedTwice), "{id}");
    }
    assert_eq!(fault_of(&mech, Mechanism::FetchedTwice), Some(0));
    let facts = facts_of(&mech, Mechanism::FetchedTwice);
    assert!(
        facts
            .iter()
            .any(|f| f.contains("one Fetch response carried it twice")),
        "{facts:?}"
    );
}

impl Run {
    /// AMQP: channel 1 of `i`/`n` closed at RabbitMQ holding `requeued` unacknowledged.
    fn channel_closed(&mut self, i: u32, n: u32, requeued: &[&str]) -> &mut Run {
        self.tl.push(Event::ChannelClosed {
            instance: i,
            incarnation: n,
            channel: 1,
            requeued: requeued.iter().map(|s| s.to_string()).collect(),
            detail: "closed at RabbitMQ by the proxy for an `amqp: double-ack` fault".into(),
        });
        self
    }
}

#[test]
fn amqp_work_requeued_by_a_closed_channel_and_redone_after_an_exit_is_channel_closed() {
    // The double ack's 406 closes the channel: m-1, effected but not yet acked, goes back to
    // the queue; the consumer exits 1 on the channel error and its successor redoes m-1.
    let mech = Run::amqp(2)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .delivered("m-1", 0, 1)
        .effect("m-0", 0, 1)
        .settled("m-0", 0, 1, AckVerb::Ack, false)
        .fault(0, "amqp", &[(0, 1)], 0)
        .channel_closed(0, 1, &["m-1"])
        .effect("m-1", 0, 1)
        .exited(0, 1, "exit 1")
        .started(0, 2)
        .redelivered("m-1", 0, 2)
        .effect("m-1", 0, 2)
        .settled("m-1", 0, 2, AckVerb::Ack, false)
        .drained()
        .judge();
    assert_eq!(mech.of("m-1"), Some(Mechanism::ChannelClosed));
    assert_eq!(fault_of(&mech, Mechanism::ChannelClosed), Some(0));
    let facts = facts_of(&mech, Mechanism::ChannelClosed);
    assert!(
        facts.iter().any(|f| f.contains(
            "channel 1 of consumer[0]#1 closed at RabbitMQ while it held this message unacknowledged"
        )),
        "{facts:?}"
    );
}

#[test]
fn amqp_work_requeued_by_a_closed_channel_to_the_same_process_is_channel_closed() {
    // The consumer opened a channel again and was handed its own requeued message.
    let mech = Run::amqp(1)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .channel_closed(0, 1, &["m-0"])
        .redelivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .settled("m-0", 0, 1, AckVerb::Ack, false)
        .drained()
        .judge();
    assert_eq!(mech.of("m-0"), Some(Mechanism::ChannelClosed));
    // A channel that closed without the message is no explanation.
    let mech = Run::amqp(2)
        .started(0, 1)
        .delivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .channel_closed(0, 1, &["m-1"])
        .settled("m-0", 0, 1, AckVerb::Reject, true)
        .redelivered("m-0", 0, 1)
        .effect("m-0", 0, 1)
        .settled("m-0", 0, 1, AckVerb::Ack, false)
        .delivered("m-1", 0, 1)
        .effect("m-1", 0, 1)
        .settled("m-1", 0, 1, AckVerb::Ack, false)
        .drained()
        .judge();
    assert_eq!(mech.of("m-0"), Some(Mechanism::RedeliveredSameProcess));
}
