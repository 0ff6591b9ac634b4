//! Test support shared by the judge's and the reports' tests: hand-written timelines ([`Tl`]),
//! the run information they start with, one DUPLICATED run, and the event constructors every
//! test builds its timelines from (one copy each).

use std::collections::BTreeMap;

use crate::timeline::{
    CommitPhase, CommittedOffset, EffectOutcome, EndReason, Event, FaultRecord, ProcessPhase,
    ProcessRef, ProduceStatus, RunInfo, SinkKind, Stamped,
};

/// An event at `seq` and `t_us`.
pub(crate) fn at(seq: u64, t_us: u64, event: Event) -> Stamped {
    Stamped { seq, t_us, event }
}

/// A `produced` record of `id` (key-less, no error).
pub(crate) fn produced_event(
    id: &str,
    partition: Option<i32>,
    offset: Option<i64>,
    status: ProduceStatus,
) -> Event {
    Event::Produced {
        id: id.into(),
        seq: 1,
        key: None,
        partition,
        offset,
        status,
        error: None,
        poison: false,
    }
}

/// An effect of `id` seen by the http sink from `instance`/`incarnation`.
pub(crate) fn effect_event(
    id: &str,
    instance: Option<u32>,
    incarnation: Option<u32>,
    outcome: EffectOutcome,
) -> Event {
    Event::Effect {
        boundary: None,
        id: id.into(),
        instance,
        incarnation,
        outcome,
        sink: SinkKind::Http,
        attribution: Default::default(),
    }
}

/// A commit of `offsets` by `instance`/`incarnation` in `group` (member `m`, generation 1).
pub(crate) fn commit_event(
    group: &str,
    (instance, incarnation): (u32, u32),
    offsets: Vec<CommittedOffset>,
    phase: CommitPhase,
) -> Event {
    Event::Commit {
        instance,
        incarnation,
        group: group.into(),
        member: "m".into(),
        generation: 1,
        offsets,
        phase,
        error: None,
    }
}

/// `topic`'s `partition` committed up to `offset` (the next to read).
pub(crate) fn committed(topic: &str, partition: i32, offset: i64) -> CommittedOffset {
    CommittedOffset {
        topic: topic.into(),
        partition,
        offset,
    }
}

/// Builds a timeline event by event; each event is 1 ms after the previous one.
#[derive(Default)]
pub(crate) struct Tl {
    pub(crate) events: Vec<Stamped>,
    t_us: u64,
    /// The incarnation of consumer[0] last started (what an applied fault hits; 1 before any).
    live: Option<u32>,
}

impl Tl {
    pub(crate) fn new() -> Tl {
        Tl::default()
    }

    pub(crate) fn push(&mut self, event: Event) -> &mut Tl {
        self.t_us += 1_000;
        let seq = self.events.len() as u64;
        self.events.push(at(seq, self.t_us, event));
        self
    }

    pub(crate) fn start(&mut self, faults: &[&str], messages: u64, expect: &str) -> &mut Tl {
        self.push(Event::RunStarted(Box::new(info(faults, messages, expect))))
    }

    pub(crate) fn produced(&mut self, id: &str, partition: i32, offset: i64) -> &mut Tl {
        self.produced_as(id, partition, offset, ProduceStatus::Acked)
    }

    pub(crate) fn produced_as(
        &mut self,
        id: &str,
        partition: i32,
        offset: i64,
        status: ProduceStatus,
    ) -> &mut Tl {
        let mut event = produced_event(id, Some(partition), Some(offset), status);
        if let Event::Produced { error, .. } = &mut event {
            *error =
                (status != ProduceStatus::Acked).then(|| "Local: Message timed out".to_string());
        }
        self.push(event)
    }

    pub(crate) fn effect(&mut self, id: &str, incarnation: u32) -> &mut Tl {
        self.effect_as(id, incarnation, EffectOutcome::Applied)
    }

    pub(crate) fn effect_as(
        &mut self,
        id: &str,
        incarnation: u32,
        outcome: EffectOutcome,
    ) -> &mut Tl {
        self.push(effect_event(id, Some(0), Some(incarnation), outcome))
    }

    pub(crate) fn process(&mut self, incarnation: u32, phase: ProcessPhase) -> &mut Tl {
        if phase == ProcessPhase::Started {
            self.live = Some(incarnation);
        }
        let status = (phase == ProcessPhase::Exited).then(|| "signal SIGKILL".to_string());
        self.push(Event::Process {
            instance: 0,
            incarnation,
            pid: 4000 + incarnation,
            phase,
            status,
        })
    }

    /// A `kill` of consumer[0]; applied, it hits the incarnation last started.
    pub(crate) fn fault(&mut self, fault: usize, applied: bool) -> &mut Tl {
        let t = self.t_us + 1_000;
        let hit = if applied {
            vec![ProcessRef {
                instance: 0,
                incarnation: self.live.unwrap_or(1),
            }]
        } else {
            Vec::new()
        };
        self.push(Event::Fault(Box::new(FaultRecord {
            fault,
            action: "kill".into(),
            target: "consumer".into(),
            trigger: "after: effect, nth: 2".into(),
            matched_at_us: t - 150,
            fired_at_us: t,
            trigger_latency_us: 150,
            applied,
            detail: if applied {
                "SIGKILL to pgid 4001".into()
            } else {
                "no live process".into()
            },
            hit,
            length_us: None,
            through_proxy: false,
        })))
    }

    /// The broker's progress, after the accepted commit of it by consumer[0] (its incarnation
    /// last started) that the proxy records when a consumer commits through it (the
    /// committing connection every proven Kafka loss needs).
    pub(crate) fn progress(&mut self, committed: &[(i32, i64)]) -> &mut Tl {
        let offsets: Vec<CommittedOffset> = committed
            .iter()
            .filter(|(_, o)| *o > 0)
            .map(|&(p, o)| self::committed("orders-r1", p, o))
            .collect();
        if !offsets.is_empty() {
            let who = (0, self.live.unwrap_or(1));
            self.push(commit_event(
                "billing-r1",
                who,
                offsets,
                CommitPhase::Response,
            ));
        }
        self.progress_uncommitted(committed)
    }

    /// The broker's progress alone: what it counts done, with no commit of it seen through
    /// the proxy (a commit that bypassed it, offsets moved by another client).
    pub(crate) fn progress_uncommitted(&mut self, committed: &[(i32, i64)]) -> &mut Tl {
        let committed: BTreeMap<i32, i64> = committed.iter().copied().collect();
        self.push(Event::Progress {
            end: committed.clone(),
            committed,
        })
    }

    pub(crate) fn warning(&mut self, message: &str) -> &mut Tl {
        self.push(Event::Warning {
            message: message.into(),
        })
    }

    pub(crate) fn end(&mut self, reason: EndReason) -> &mut Tl {
        self.push(Event::RunEnded { reason })
    }
}

pub(crate) fn info(faults: &[&str], messages: u64, expect: &str) -> RunInfo {
    RunInfo {
        run: "r-20240101-0001".into(),
        plan: "kafka-commit-after-effect".into(),
        description: Some("Kill after the effect, before the commit.".into()),
        broker: "kafka".into(),
        mock_broker: false,
        broker_address: "127.0.0.1:9092".into(),
        topic: "orders-r1".into(),
        group: "billing-r1".into(),
        expect: expect.into(),
        seed: 42,
        planned_faults: faults.iter().map(|f| f.to_string()).collect(),
        messages,
        reproduce: "exactly run plans/kafka-commit-after-effect.yaml --seed 42".into(),
        effects_id: Some("json:/order_id".into()),
        effects_sink: Some(SinkKind::Http),
        boundaries: Vec::new(),
        dead_letter: None,
    }
}

/// An EXACT run under exactly-once whose one message the broker never counted done (its
/// effect applied once, no commit past offset 0): the claim is unknown.
pub(crate) fn exact_never_counted_done() -> Tl {
    let mut tl = Tl::new();
    tl.start(&["kill: consumer"], 1, "exactly-once")
        .produced("a", 0, 0)
        .fault(0, true)
        .effect("a", 1)
        .progress(&[(0, 0)])
        .end(EndReason::Settled);
    tl
}

/// A DUPLICATED run: 4 messages on one partition, the consumer killed after the effect of
/// m-1 and before its commit, so m-1 is applied twice; all committed at the end.
pub(crate) fn duplicated_run() -> Tl {
    let mut tl = Tl::new();
    tl.start(
        &["kill: consumer when {after: effect, nth: 2}"],
        4,
        "at-least-once",
    )
    .produced("m-0", 0, 0)
    .produced("m-1", 0, 1)
    .produced("m-2", 0, 2)
    .produced("m-3", 0, 3)
    .process(1, ProcessPhase::Started)
    .effect("m-0", 1)
    .effect("m-1", 1)
    .fault(0, true)
    .process(1, ProcessPhase::Exited)
    .process(2, ProcessPhase::Started)
    .effect("m-1", 2)
    .effect("m-2", 2)
    .effect("m-3", 2)
    .progress(&[(0, 4)])
    .end(EndReason::Settled);
    tl
}
