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
        tl.push(Event::RunStarted(info(
            &["a fault"],
            messages,
            "at-least-once",
        )));
        for i in 0..messages {
            tl.produced(&format!("m-{i}"), 0, i as i64);
        }
        Run { tl }
    }

    fn amqp(messages: u64) -> Run {
        let mut run_info = info(&["a fault"], messages, "at-least-once");
        run_info.broker = "amqp".into();
        let mut tl = Tl::new();
        tl.push(Event::RunStarted(run_info));
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
        self.tl.push(Event::Fault(FaultRecord {
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
        }));
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
        });
        self
    }

    fn end(&mut self, committed: i64) -> Mechanisms {
        self.tl.progress(&[(0, committed)]).end(EndReason::Settled);
        analyze(&self.tl.events).mechanisms
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
    let mech = Run::kafka(2).started(0, 1).effect("m-0", 0, 1).end(2);
    assert_eq!(mech.of("m-1"), Some(Mechanism::Unexplained));
    let evidence = &mech.groups[0].samples[0].evidence;
    assert!(evidence[0].what.contains("did not go through the proxy"));
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
