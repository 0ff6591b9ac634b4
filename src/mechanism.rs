//! Mechanisms: for every lost or duplicated ID, *how* it happened, named from the timeline with
//! the events that prove it (design §7), grouped by mechanism and by the fault that preceded
//! it, each group with a short recommendation.
//!
//! The rules read only what the timeline recorded: who applied each effect (instance and
//! incarnation), which commits or acks the broker accepted, which processes died and how,
//! which faults hit whom, and which partitions each member owned. When the evidence is not
//! there (the consumer did not go through the proxy, an effect could not be attributed), the
//! ID is `unexplained` and the report says what was missing; a mechanism is never guessed.
//!
//! Pure: events and the judge's anomalies in, explanations out.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::reconcile::{Anomaly, EffectSeen, Outcome};
use crate::timeline::{
    AckPhase, AckVerb, CommitPhase, CommittedOffset, EffectOutcome, Event, FaultRecord,
    MemberChange, ProcessPhase, ProcessRef, ProduceStatus, RebalanceKind, Stamped,
};

/// Most explanations kept, with their evidence, per group (the count is always exact).
pub const SAMPLES_PER_GROUP: usize = 10;

/// How a message came to be lost or duplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Effect applied, the process crashed before its commit (ack) covered it, and the
    /// message was delivered again: the at-least-once window.
    CrashAfterEffect,
    /// The broker accepted a commit (ack) covering the message before its effect, then the
    /// process crashed: the at-most-once window.
    CrashAfterCommit,
    /// The message was removed from the queue on delivery (no-ack mode) and the process
    /// crashed before its effect.
    NoAckDelivery,
    /// The partition (or message) moved to another member while the one that applied the
    /// effect was alive, before it committed (acked) that finished work: a rebalance, a
    /// graceful stop, a requeue.
    RevokedUncommitted,
    /// A paused or cut-off member lost its partitions (messages) and kept working: it wrote
    /// after the new owner had started, or the new owner redid its uncommitted work.
    Zombie,
    /// The same process applied the effect more than once.
    ConsumerRetry,
    /// The broker stored the message twice (a producer retry): two offsets, one ID.
    ProducerDuplicate,
    /// Delivered and applied again although the broker had accepted a commit (ack) covering
    /// it (an offset reset, or a commit that did not stick).
    RedeliveredAfterCommit,
    /// A live consumer committed past the message without applying it (a filter or an error
    /// path that skips work).
    Skipped,
    /// The timeline lacks what naming the mechanism needs (see the evidence).
    Unexplained,
}

impl Mechanism {
    /// Snake-case name, as in report.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::CrashAfterEffect => "crash_after_effect",
            Mechanism::CrashAfterCommit => "crash_after_commit",
            Mechanism::NoAckDelivery => "no_ack_delivery",
            Mechanism::RevokedUncommitted => "revoked_uncommitted",
            Mechanism::Zombie => "zombie",
            Mechanism::ConsumerRetry => "consumer_retry",
            Mechanism::ProducerDuplicate => "producer_duplicate",
            Mechanism::RedeliveredAfterCommit => "redelivered_after_commit",
            Mechanism::Skipped => "skipped",
            Mechanism::Unexplained => "unexplained",
        }
    }

    /// One line for a heading; `amqp` words it in acks and queues.
    pub fn title(self, amqp: bool) -> &'static str {
        match (self, amqp) {
            (Mechanism::CrashAfterEffect, false) => {
                "Crash after the effect, before the offset commit (redelivered, applied again)"
            }
            (Mechanism::CrashAfterEffect, true) => {
                "Crash after the effect, before the ack (requeued, applied again)"
            }
            (Mechanism::CrashAfterCommit, false) => {
                "Offset committed before the effect, then a crash (never applied)"
            }
            (Mechanism::CrashAfterCommit, true) => {
                "Acked before the effect, then a crash (never applied)"
            }
            (Mechanism::NoAckDelivery, _) => {
                "Removed from the queue on delivery (no-ack), then a crash (never applied)"
            }
            (Mechanism::RevokedUncommitted, false) => {
                "Partition revoked before finished work was committed (the new owner redid it)"
            }
            (Mechanism::RevokedUncommitted, true) => {
                "Requeued from a live consumer before it acked finished work (another redid it)"
            }
            (Mechanism::Zombie, _) => {
                "Zombie: a paused or cut-off member kept working after its work moved"
            }
            (Mechanism::ConsumerRetry, _) => "Consumer-side retry: one process applied it twice",
            (Mechanism::ProducerDuplicate, _) => {
                "Stored twice by the broker (a producer retry), applied once per copy"
            }
            (Mechanism::RedeliveredAfterCommit, false) => {
                "Applied again although its offset commit had been accepted"
            }
            (Mechanism::RedeliveredAfterCommit, true) => {
                "Applied again although its ack had reached the broker"
            }
            (Mechanism::Skipped, false) => "Committed past by a live consumer, never applied",
            (Mechanism::Skipped, true) => "Acked by a live consumer, never applied",
            (Mechanism::Unexplained, _) => "Not enough evidence to name the mechanism",
        }
    }

    /// A short, plain recommendation.
    pub fn recommendation(self, amqp: bool) -> &'static str {
        match (self, amqp) {
            (Mechanism::CrashAfterEffect, _) => {
                "Make the effect idempotent (send an idempotency key the provider deduplicates on), or record the effect and the consumed position in one transaction (transactional outbox)."
            }
            (Mechanism::CrashAfterCommit, false) => {
                "Commit only after the effect has completed (disable auto-commit, or store offsets after processing); pair it with an idempotency key for the redeliveries that follow."
            }
            (Mechanism::CrashAfterCommit, true) => {
                "Ack only after the effect has completed; pair it with an idempotency key for the redeliveries that follow."
            }
            (Mechanism::NoAckDelivery, _) => {
                "Do not consume in no-ack (auto-ack) mode when losing work matters: use manual acks after the effect and a bounded prefetch."
            }
            (Mechanism::RevokedUncommitted, false) => {
                "Commit finished work in the partition-revoked callback (commit on revoke) and before a graceful shutdown; keep an idempotency key for the work still in flight."
            }
            (Mechanism::RevokedUncommitted, true) => {
                "Ack each message as soon as its effect is done (not in batches that a disconnect requeues), and keep an idempotency key for the work still in flight."
            }
            (Mechanism::Zombie, false) => {
                "Fence zombies: keep processing time well under max.poll.interval.ms and the session timeout, stop work when partitions are revoked or a commit fails with ILLEGAL_GENERATION / FENCED_MEMBER_EPOCH, and make effects idempotent."
            }
            (Mechanism::Zombie, true) => {
                "Stop work when the connection or channel closes (its unacked messages were requeued), and make effects idempotent."
            }
            (Mechanism::ConsumerRetry, _) => {
                "The consumer retried an effect within one process: send the same idempotency key on every retry, or check the first attempt's outcome before retrying."
            }
            (Mechanism::ProducerDuplicate, _) => {
                "Enable the idempotent producer (enable.idempotence=true) or deduplicate on the message ID."
            }
            (Mechanism::RedeliveredAfterCommit, _) => {
                "Check for offset resets (auto.offset.reset) or commits that did not stick; an idempotency key makes the repeat harmless."
            }
            (Mechanism::Skipped, _) => {
                "The consumer marked work done that it never did: check filters, error handlers and early returns that commit (ack) without the effect."
            }
            (Mechanism::Unexplained, _) => {
                "Route the consumer through the proxy (`consumer.via_proxy: true`) and use the http sink so commits, deliveries and effect owners are on the timeline."
            }
        }
    }
}

/// One timeline fact that supports an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// When (µs since the run started).
    pub t_us: u64,
    /// The event's position in the timeline, when it is one event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What it shows, in words.
    pub what: String,
}

/// Why one ID was lost or duplicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The message ID.
    pub id: String,
    /// Lost or duplicated.
    pub outcome: Outcome,
    /// How.
    pub mechanism: Mechanism,
    /// The plan's fault that preceded the decisive moment, by index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<usize>,
    /// The facts, in time order.
    pub evidence: Vec<Evidence>,
}

/// Every ID of one mechanism after one fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MechanismGroup {
    /// How.
    pub mechanism: Mechanism,
    /// The fault that preceded them (index in the plan), or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<usize>,
    /// The heading.
    pub title: String,
    /// What to do about it.
    pub recommendation: String,
    /// How many IDs.
    pub count: u64,
    /// The first [`SAMPLES_PER_GROUP`] of them, with evidence.
    pub samples: Vec<Explanation>,
}

/// The mechanisms of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Mechanisms {
    /// Groups, most IDs first.
    pub groups: Vec<MechanismGroup>,
    /// Mechanism of every lost or duplicated ID (not serialized: report.json puts it on the
    /// anomaly).
    #[serde(skip)]
    of_id: HashMap<String, Mechanism>,
}

impl Mechanisms {
    /// The mechanism named for `id`, if it was lost or duplicated.
    pub fn of(&self, id: &str) -> Option<Mechanism> {
        self.of_id.get(id).copied()
    }
}

/// Who owned which partitions when, as the proxy saw it (SyncGroup / KIP-848 heartbeat
/// assignments of each consumer incarnation, and the transient member's share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnershipChange {
    /// When (µs).
    pub t_us: u64,
    /// The consumer incarnation, or `None` for the harness's transient group member.
    pub owner: Option<ProcessRef>,
    /// The partitions it owns from now on (consumers), or that it was given or gave back
    /// (the transient member: see `released`).
    pub partitions: Vec<i32>,
    /// True when the transient member gave these partitions back (revoked, or left).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// Every assignment change of the run, in time order.
pub fn ownership(events: &[Stamped]) -> Vec<OwnershipChange> {
    let mut out = Vec::new();
    for st in events {
        match &st.event {
            Event::Rebalance {
                instance,
                incarnation,
                change: RebalanceKind::Assign,
                assignment: Some(parts),
                ..
            } => out.push(OwnershipChange {
                t_us: st.t_us,
                owner: Some(pref(*instance, *incarnation)),
                partitions: parts.clone(),
                released: false,
            }),
            Event::GroupMember {
                change: change @ (MemberChange::Assigned | MemberChange::Revoked),
                partitions: Some(parts),
                ..
            } => out.push(OwnershipChange {
                t_us: st.t_us,
                owner: None,
                partitions: parts.clone(),
                released: *change == MemberChange::Revoked,
            }),
            _ => {}
        }
    }
    out
}

/// Names the mechanism of every lost or duplicated anomaly.
pub fn explain(events: &[Stamped], anomalies: &[Anomaly]) -> Mechanisms {
    let wanted: Vec<&Anomaly> = anomalies
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Lost | Outcome::Duplicated))
        .collect();
    if wanted.is_empty() {
        return Mechanisms::default();
    }
    let index = Index::build(events, &wanted);
    let mut explanations: Vec<Explanation> = wanted.iter().map(|a| index.explain(a)).collect();
    explanations.sort_by_key(|e| (e.mechanism, e.fault, e.evidence.first().map(|x| x.t_us)));

    let mut out = Mechanisms::default();
    let mut slots: HashMap<(Mechanism, Option<usize>), usize> = HashMap::new();
    for e in explanations {
        out.of_id.insert(e.id.clone(), e.mechanism);
        let slot = *slots.entry((e.mechanism, e.fault)).or_insert_with(|| {
            out.groups.push(MechanismGroup {
                mechanism: e.mechanism,
                fault: e.fault,
                title: e.mechanism.title(index.amqp).to_owned(),
                recommendation: e.mechanism.recommendation(index.amqp).to_owned(),
                count: 0,
                samples: Vec::new(),
            });
            out.groups.len() - 1
        });
        let group = &mut out.groups[slot];
        group.count += 1;
        if group.samples.len() < SAMPLES_PER_GROUP {
            group.samples.push(e);
        }
    }
    out.groups
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.mechanism.cmp(&b.mechanism)));
    out
}

/// One incarnation's life.
#[derive(Debug, Default, Clone)]
struct Life {
    exited: Option<(u64, u64, String)>,
}

/// One delivery of an anomalous ID, seen by the proxy.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    t_us: u64,
    seq: u64,
    to: ProcessRef,
    redelivered: bool,
}

/// A commit the broker accepted: (time, seq, partition, next offset).
type Accepted = (u64, u64, i32, i64);

/// What the rules look up, built in one pass over the events.
struct Index<'a> {
    amqp: bool,
    lives: HashMap<ProcessRef, Life>,
    /// Applied faults, in time order, with the event's seq.
    faults: Vec<(u64, &'a FaultRecord)>,
    /// Accepted commits of the topic under test, per committer.
    commits: HashMap<ProcessRef, Vec<Accepted>>,
    /// Commit responses with errors (a fenced zombie's late commit), per committer.
    failed_commits: HashMap<ProcessRef, Vec<(u64, u64, String)>>,
    /// Whether the proxy saw any commit or ack at all.
    saw_marks: bool,
    /// Forwarded acks (AMQP) of the anomalous IDs: (time, seq, by).
    acks: HashMap<&'a str, Vec<(u64, u64, ProcessRef)>>,
    /// Deliveries of the anomalous IDs.
    deliveries: HashMap<&'a str, Vec<Delivery>>,
    /// Incarnations consuming in no-ack mode.
    no_ack: HashSet<ProcessRef>,
    /// Group changes: (time, seq, who, what).
    group_changes: Vec<(u64, u64, Option<ProcessRef>, String)>,
    /// Assignments seen by the proxy, in time order: (time, member, partitions).
    assignments: Vec<(u64, ProcessRef, Vec<i32>)>,
    /// Anomalous IDs the broker stored at more than one offset.
    stored_twice: HashSet<&'a str>,
}

impl<'a> Index<'a> {
    fn build(events: &'a [Stamped], wanted: &[&'a Anomaly]) -> Index<'a> {
        let ids: HashSet<&str> = wanted.iter().map(|a| a.id.as_str()).collect();
        let info = events.iter().find_map(|st| match &st.event {
            Event::RunStarted(info) => Some(info),
            _ => None,
        });
        let amqp = info.is_some_and(|i| i.broker == "amqp");
        let topic = info.map(|i| i.topic.as_str()).unwrap_or_default();

        let mut index = Index {
            amqp,
            lives: HashMap::new(),
            faults: Vec::new(),
            commits: HashMap::new(),
            failed_commits: HashMap::new(),
            saw_marks: false,
            acks: HashMap::new(),
            deliveries: HashMap::new(),
            no_ack: HashSet::new(),
            group_changes: Vec::new(),
            assignments: Vec::new(),
            stored_twice: HashSet::new(),
        };
        let mut offsets_of: HashMap<&str, (i32, i64)> = HashMap::new();
        let mut last_request: HashMap<ProcessRef, &[CommittedOffset]> = HashMap::new();
        for st in events {
            match &st.event {
                Event::Produced {
                    id,
                    partition: Some(p),
                    offset: Some(o),
                    status: ProduceStatus::Acked,
                    ..
                } if ids.contains(id.as_str()) => match offsets_of.get(id.as_str()) {
                    Some(&first) if first != (*p, *o) => {
                        index.stored_twice.insert(id.as_str());
                    }
                    Some(_) => {}
                    None => {
                        offsets_of.insert(id.as_str(), (*p, *o));
                    }
                },
                Event::Process {
                    instance,
                    incarnation,
                    phase: ProcessPhase::Exited,
                    status,
                    ..
                } => {
                    index
                        .lives
                        .entry(pref(*instance, *incarnation))
                        .or_default()
                        .exited = Some((st.t_us, st.seq, status.clone().unwrap_or_default()));
                }
                Event::Fault(f) if f.applied => index.faults.push((st.seq, f)),
                Event::Commit {
                    instance,
                    incarnation,
                    offsets,
                    phase,
                    error,
                    ..
                } => {
                    index.saw_marks = true;
                    let who = pref(*instance, *incarnation);
                    match (phase, error) {
                        (CommitPhase::Request, _) => {
                            last_request.insert(who, offsets.as_slice());
                        }
                        (CommitPhase::Response, Some(e)) => index
                            .failed_commits
                            .entry(who)
                            .or_default()
                            .push((st.t_us, st.seq, e.clone())),
                        (CommitPhase::Response, None) => {
                            let offsets = if offsets.is_empty() {
                                last_request.get(&who).copied().unwrap_or_default()
                            } else {
                                offsets.as_slice()
                            };
                            let list = index.commits.entry(who).or_default();
                            for c in offsets.iter().filter(|c| c.topic == topic) {
                                list.push((st.t_us, st.seq, c.partition, c.offset));
                            }
                        }
                        (CommitPhase::Dropped, _) => {}
                    }
                }
                Event::Ack {
                    instance,
                    incarnation,
                    verb: AckVerb::Ack,
                    ids: covered,
                    phase: AckPhase::Forwarded,
                    ..
                } => {
                    index.saw_marks = true;
                    for id in covered {
                        if let Some(&id) = ids.get(id.as_str()) {
                            index.acks.entry(id).or_default().push((
                                st.t_us,
                                st.seq,
                                pref(*instance, *incarnation),
                            ));
                        }
                    }
                }
                Event::Delivered {
                    id,
                    instance,
                    incarnation,
                    redelivered,
                    ..
                } => {
                    if let Some(&id) = ids.get(id.as_str()) {
                        index.deliveries.entry(id).or_default().push(Delivery {
                            t_us: st.t_us,
                            seq: st.seq,
                            to: pref(*instance, *incarnation),
                            redelivered: *redelivered,
                        });
                    }
                }
                Event::DeliveredBatch {
                    instance,
                    incarnation,
                    records,
                    ..
                } => {
                    for (_, id) in records.iter() {
                        if let Some(&id) = ids.get(id) {
                            index.deliveries.entry(id).or_default().push(Delivery {
                                t_us: st.t_us,
                                seq: st.seq,
                                to: pref(*instance, *incarnation),
                                redelivered: false,
                            });
                        }
                    }
                }
                Event::ConsumerSettings {
                    instance,
                    incarnation,
                    no_ack: true,
                    ..
                } => {
                    index.no_ack.insert(pref(*instance, *incarnation));
                }
                Event::Rebalance {
                    instance,
                    incarnation,
                    change,
                    assignment,
                    error,
                    ..
                } => {
                    if let (RebalanceKind::Assign, Some(parts)) = (change, assignment) {
                        index.assignments.push((
                            st.t_us,
                            pref(*instance, *incarnation),
                            parts.clone(),
                        ));
                    }
                    let what = match (change, assignment, error) {
                        (RebalanceKind::Assign, Some(parts), _) => {
                            format!("assigned partitions {parts:?}")
                        }
                        (_, _, Some(e)) => format!("group error {e}"),
                        (RebalanceKind::Join, _, _) => "joins the group (rebalance)".into(),
                        (RebalanceKind::Leave, _, _) => "leaves the group".into(),
                        (RebalanceKind::Sync, _, _) => "synced with the group".into(),
                        _ => continue,
                    };
                    index.group_changes.push((
                        st.t_us,
                        st.seq,
                        Some(pref(*instance, *incarnation)),
                        what,
                    ));
                }
                Event::GroupMember {
                    change,
                    partitions,
                    error,
                    ..
                } => {
                    let what = match (error, partitions) {
                        (Some(e), _) => format!("transient member: error {e}"),
                        (None, Some(parts)) => {
                            format!(
                                "transient member {}: partitions {parts:?}",
                                member_word(*change)
                            )
                        }
                        (None, None) => format!("transient member {}", member_word(*change)),
                    };
                    index.group_changes.push((st.t_us, st.seq, None, what));
                }
                _ => {}
            }
        }
        index
    }

    fn explain(&self, a: &Anomaly) -> Explanation {
        let (mechanism, fault_at, evidence) = match a.outcome {
            Outcome::Duplicated => self.duplicated(a),
            _ => self.lost(a),
        };
        let mut evidence = evidence;
        evidence.sort_by_key(|e| (e.t_us, e.seq));
        evidence.dedup();
        Explanation {
            id: a.id.clone(),
            outcome: a.outcome,
            mechanism,
            fault: fault_at
                .and_then(|t| self.fault_before(t))
                .map(|(_, f)| f.fault),
            evidence,
        }
    }

    /// Mechanism, the decisive moment (for the preceding fault) and the evidence of a
    /// duplicate.
    fn duplicated(&self, a: &Anomaly) -> (Mechanism, Option<u64>, Vec<Evidence>) {
        let applied: Vec<&EffectSeen> = a
            .effects
            .iter()
            .filter(|e| e.outcome == EffectOutcome::Applied)
            .collect();
        let mut ev: Vec<Evidence> = Vec::new();
        if self.stored_twice.contains(a.id.as_str()) {
            ev.push(self.effect_evidence(applied[0]));
            ev.push(Evidence {
                t_us: a.produced_at_us.unwrap_or(0),
                seq: None,
                what: "the broker acknowledged this ID at two different offsets".into(),
            });
            return (Mechanism::ProducerDuplicate, None, ev);
        }
        let writer = |e: &EffectSeen| Some(pref(e.instance?, e.incarnation?));
        let first = applied[0];
        let Some(w1) = writer(first) else {
            ev.push(self.effect_evidence(first));
            ev.push(unattributed(first));
            return (Mechanism::Unexplained, Some(applied[1].t_us), ev);
        };
        ev.push(self.effect_evidence(first));
        let Some(second) = applied.iter().skip(1).find(|e| writer(e) != Some(w1)) else {
            // One process applied it every time: a retry inside the process, unless the
            // broker handed it the message again (its partition went away and came back, or
            // the message was requeued to it).
            let t2 = applied[1].t_us;
            ev.push(self.effect_evidence(applied[1]));
            let handed: Vec<_> = self
                .deliveries
                .get(a.id.as_str())
                .into_iter()
                .flatten()
                .filter(|d| d.to == w1 && d.t_us <= t2)
                .collect();
            if handed.len() < 2 {
                return (Mechanism::ConsumerRetry, Some(t2), ev);
            }
            for d in handed {
                ev.push(Evidence {
                    t_us: d.t_us,
                    seq: Some(d.seq),
                    what: format!("delivered to {}", name(w1)),
                });
            }
            if let Some((t, seq)) = self.marked_done(a, w1, t2) {
                ev.push(Evidence {
                    t_us: t,
                    seq: Some(seq),
                    what: format!("{} {} it", name(w1), self.marked_word()),
                });
                return (Mechanism::RedeliveredAfterCommit, Some(t2), ev);
            }
            self.push_no_mark(&mut ev, w1, first.t_us, t2);
            self.push_group_changes(&mut ev, first.t_us, t2, &[w1]);
            return (Mechanism::RevokedUncommitted, Some(t2), ev);
        };
        ev.push(self.effect_evidence(second));
        let Some(w2) = writer(second) else {
            ev.push(unattributed(second));
            return (Mechanism::Unexplained, Some(second.t_us), ev);
        };
        let (t1, t2) = (first.t_us, second.t_us);
        // The delivery the second writer acted on: its last one before the second effect.
        let redelivery = self
            .deliveries
            .get(a.id.as_str())
            .into_iter()
            .flatten()
            .rfind(|d| d.to == w2 && d.t_us <= t2);
        if let Some(d) = redelivery {
            {
                ev.push(Evidence {
                    t_us: d.t_us,
                    seq: Some(d.seq),
                    what: format!(
                        "delivered to {}{}",
                        name(w2),
                        if d.redelivered {
                            " (marked redelivered)"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
        // The zombie, resumed: the second writer wrote for a partition another member had been
        // given since (or was paused or cut off while the first writer did the work).
        let stalled_w2 = self.stall_of(w2, t1);
        let taken_over = if self.amqp {
            None
        } else {
            a.partition
                .and_then(|p| self.taken_over(w2, p, t2).map(|t| (p, t)))
        };
        if taken_over.is_some() || stalled_w2.is_some() {
            if let Some((seq, f)) = stalled_w2 {
                ev.push(fault_evidence(seq, f));
            }
            if let Some((p, (t, owner))) = taken_over {
                ev.push(Evidence {
                    t_us: t,
                    seq: None,
                    what: format!(
                        "{} (the new owner) is assigned partition {p}: {} no longer owns it",
                        name(owner),
                        name(w2)
                    ),
                });
            }
            ev.push(Evidence {
                t_us: t2,
                seq: None,
                what: format!(
                    "{} writes after the new owner had started: a zombie write",
                    name(w2)
                ),
            });
            self.push_failed_commits(&mut ev, w2, t1);
            self.push_group_changes(&mut ev, t1.saturating_sub(1), t2, &[w1, w2]);
            return (Mechanism::Zombie, Some(t2), ev);
        }
        // Not a zombie. Did the first writer's commit (ack) cover it before the second effect?
        if let Some((t, seq)) = self.marked_done(a, w1, t2) {
            ev.push(Evidence {
                t_us: t,
                seq: Some(seq),
                what: format!("{} {} it", name(w1), self.marked_word()),
            });
            return (Mechanism::RedeliveredAfterCommit, Some(t2), ev);
        }
        // The first writer lost the work before it committed: how?
        if let Some((seq, f)) = self.stall_between(w1, t1, t2) {
            ev.push(fault_evidence(seq, f));
            ev.push(Evidence {
                t_us: t2,
                seq: None,
                what: format!(
                    "{} lost its work while stalled, before it {} it; {} redid it",
                    name(w1),
                    self.marked_word(),
                    name(w2)
                ),
            });
            self.push_failed_commits(&mut ev, w1, t1);
            self.push_group_changes(&mut ev, t1, t2, &[w1, w2]);
            return (Mechanism::Zombie, Some(t2), ev);
        }
        let exit = self.lives.get(&w1).and_then(|l| l.exited.clone());
        match exit {
            Some((te, seq, status)) if te < t2 => {
                ev.push(Evidence {
                    t_us: te,
                    seq: Some(seq),
                    what: format!(
                        "{} exited ({status}) before it {} it",
                        name(w1),
                        self.marked_word()
                    ),
                });
                if let Some((fseq, f)) = self.fault_before(te) {
                    ev.push(fault_evidence(fseq, f));
                }
                self.push_no_mark(&mut ev, w1, t1, te);
                let crashed = status.starts_with("signal") && !status.contains("SIGTERM");
                let mechanism = if crashed {
                    Mechanism::CrashAfterEffect
                } else {
                    Mechanism::RevokedUncommitted
                };
                (mechanism, Some(te), ev)
            }
            _ => {
                self.push_no_mark(&mut ev, w1, t1, t2);
                self.push_group_changes(&mut ev, t1, t2, &[w1, w2]);
                (Mechanism::RevokedUncommitted, Some(t2), ev)
            }
        }
    }

    /// Mechanism, the decisive moment and the evidence of a loss.
    fn lost(&self, a: &Anomaly) -> (Mechanism, Option<u64>, Vec<Evidence>) {
        let mut ev: Vec<Evidence> = Vec::new();
        let deliveries = self.deliveries.get(a.id.as_str());
        for d in deliveries.into_iter().flatten() {
            ev.push(Evidence {
                t_us: d.t_us,
                seq: Some(d.seq),
                what: format!("delivered to {}", name(d.to)),
            });
        }
        // Who marked it done: the first accepted commit (ack) covering it, or a no-ack
        // delivery.
        let marked = self.first_mark(a);
        let no_ack = deliveries
            .into_iter()
            .flatten()
            .find(|d| self.no_ack.contains(&d.to))
            .map(|d| (d.t_us, d.seq, d.to));
        let (mechanism_if_crash, (tm, seq, who)) = match (marked, no_ack) {
            (Some(m), _) => (Mechanism::CrashAfterCommit, m),
            (None, Some(d)) => (Mechanism::NoAckDelivery, d),
            (None, None) => {
                let what = if self.saw_marks {
                    format!(
                        "the broker counts it done, but no {} seen by the proxy covered it",
                        if self.amqp { "ack" } else { "commit" }
                    )
                } else {
                    "no commits or acks on the timeline: the consumer did not go through the proxy"
                        .into()
                };
                ev.push(Evidence {
                    t_us: a.produced_at_us.unwrap_or(0),
                    seq: None,
                    what,
                });
                return (Mechanism::Unexplained, None, ev);
            }
        };
        ev.push(Evidence {
            t_us: tm,
            seq: Some(seq),
            what: if mechanism_if_crash == Mechanism::NoAckDelivery {
                format!(
                    "{} consumes in no-ack mode: the broker forgot it on delivery",
                    name(who)
                )
            } else {
                format!("{} {} it before any effect", name(who), self.marked_word())
            },
        });
        match self.lives.get(&who).and_then(|l| l.exited.clone()) {
            Some((te, eseq, status)) if te >= tm && !status.starts_with("exit 0") => {
                ev.push(Evidence {
                    t_us: te,
                    seq: Some(eseq),
                    what: format!("{} exited ({status}) before the effect", name(who)),
                });
                if let Some((fseq, f)) = self.fault_before(te) {
                    ev.push(fault_evidence(fseq, f));
                }
                (mechanism_if_crash, Some(te), ev)
            }
            _ => (Mechanism::Skipped, Some(tm), ev),
        }
    }

    /// "committed" or "acked".
    fn marked_word(&self) -> &'static str {
        if self.amqp {
            "acked"
        } else {
            "committed"
        }
    }

    /// The first accepted commit (ack) covering the anomaly's message: (time, seq, by).
    fn first_mark(&self, a: &Anomaly) -> Option<(u64, u64, ProcessRef)> {
        if self.amqp {
            return self
                .acks
                .get(a.id.as_str())
                .and_then(|v| v.iter().min_by_key(|x| x.0))
                .copied();
        }
        let (p, o) = (a.partition?, a.offset?);
        self.commits
            .iter()
            .flat_map(|(who, list)| list.iter().map(move |c| (c, *who)))
            .filter(|(c, _)| c.2 == p && c.3 > o)
            .map(|(c, who)| (c.0, c.1, who))
            .min_by_key(|x| x.0)
    }

    /// When `who` had a commit (ack) covering the message accepted before `until`.
    fn marked_done(&self, a: &Anomaly, who: ProcessRef, until: u64) -> Option<(u64, u64)> {
        if self.amqp {
            return self
                .acks
                .get(a.id.as_str())?
                .iter()
                .find(|x| x.2 == who && x.0 < until)
                .map(|x| (x.0, x.1));
        }
        let (p, o) = (a.partition?, a.offset?);
        self.commits
            .get(&who)?
            .iter()
            .find(|c| c.2 == p && c.3 > o && c.0 < until)
            .map(|c| (c.0, c.1))
    }

    /// Says that `who` never got a commit (ack) for it accepted between `from` and `to`.
    fn push_no_mark(&self, ev: &mut Vec<Evidence>, who: ProcessRef, from: u64, to: u64) {
        let what = if !self.saw_marks {
            "commits and acks were not observed (the consumer did not go through the proxy)"
                .to_owned()
        } else {
            format!(
                "no {} by {} covered it before then",
                if self.amqp { "ack" } else { "commit" },
                name(who)
            )
        };
        ev.push(Evidence {
            t_us: to.max(from),
            seq: None,
            what,
        });
    }

    /// When partition `p` belonged to someone else at `t`: after `who`'s last assignment that
    /// included it, another member was given it (the first such assignment: when and to whom).
    /// `None` when `who` still owned it, or the proxy saw no assignments.
    fn taken_over(&self, who: ProcessRef, p: i32, t: u64) -> Option<(u64, ProcessRef)> {
        let before_t = || self.assignments.iter().take_while(|a| a.0 <= t);
        let owned_at = before_t()
            .filter(|a| a.1 == who && a.2.contains(&p))
            .map(|a| a.0)
            .last()?;
        before_t()
            .find(|a| a.0 > owned_at && a.1 != who && a.2.contains(&p))
            .map(|a| (a.0, a.1))
    }

    /// A pause or partition that hit `who` and was still in force at `t` (or ended just
    /// before it): the member was stalled while its work moved.
    fn stall_of(&self, who: ProcessRef, t: u64) -> Option<(u64, &FaultRecord)> {
        self.faults
            .iter()
            .rev()
            .filter(|(_, f)| is_stall(f) && f.hit.contains(&who))
            .find(|(_, f)| {
                let end = f.fired_at_us + f.length_us.unwrap_or(0);
                f.fired_at_us <= t && t <= end
            })
            .map(|(seq, f)| (*seq, *f))
    }

    /// A pause or partition that hit `who` between `from` and `to`.
    fn stall_between(&self, who: ProcessRef, from: u64, to: u64) -> Option<(u64, &FaultRecord)> {
        self.faults
            .iter()
            .filter(|(_, f)| is_stall(f) && f.hit.contains(&who))
            .filter(|(_, f)| f.fired_at_us >= from && f.fired_at_us <= to)
            .map(|(seq, f)| (*seq, *f))
            .next()
    }

    /// The last applied fault whose trigger matched at or before `t` (a kill's exit can be
    /// recorded before the fault event that sent the signal).
    fn fault_before(&self, t: u64) -> Option<(u64, &FaultRecord)> {
        self.faults
            .iter()
            .filter(|(_, f)| f.matched_at_us <= t)
            .max_by_key(|(_, f)| f.matched_at_us)
            .map(|(seq, f)| (*seq, *f))
    }

    fn push_failed_commits(&self, ev: &mut Vec<Evidence>, who: ProcessRef, after: u64) {
        for (t, seq, e) in self.failed_commits.get(&who).into_iter().flatten() {
            if *t >= after {
                ev.push(Evidence {
                    t_us: *t,
                    seq: Some(*seq),
                    what: format!("{}'s commit refused: {e}", name(who)),
                });
                break;
            }
        }
    }

    fn push_group_changes(&self, ev: &mut Vec<Evidence>, from: u64, to: u64, who: &[ProcessRef]) {
        let changes: Vec<_> = self
            .group_changes
            .iter()
            .filter(|(t, _, w, _)| *t >= from && *t <= to && w.is_none_or(|w| who.contains(&w)))
            .collect();
        // The first and the last few: how the work left, and how it arrived where it was redone.
        let keep = |i: usize| i < 3 || i + 4 > changes.len();
        for (t, seq, w, what) in changes
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, c)| *c)
        {
            ev.push(Evidence {
                t_us: *t,
                seq: Some(*seq),
                what: match w {
                    Some(w) => format!("{}: {what}", name(*w)),
                    None => what.clone(),
                },
            });
        }
    }

    fn effect_evidence(&self, e: &EffectSeen) -> Evidence {
        Evidence {
            t_us: e.t_us,
            seq: Some(e.seq),
            what: match (e.instance, e.incarnation) {
                (Some(i), Some(n)) => format!("effect applied by {}", name(pref(i, n))),
                _ => "effect applied by an unknown process".into(),
            },
        }
    }
}

fn member_word(change: MemberChange) -> &'static str {
    match change {
        MemberChange::Joined => "joins the group",
        MemberChange::Assigned => "assigned",
        MemberChange::Revoked => "revoked",
        MemberChange::Left => "leaves the group",
        MemberChange::Error => "error",
    }
}

fn pref(instance: u32, incarnation: u32) -> ProcessRef {
    ProcessRef {
        instance,
        incarnation,
    }
}

/// `consumer[0]#2`: instance 0, incarnation 2.
fn name(p: ProcessRef) -> String {
    format!("consumer[{}]#{}", p.instance, p.incarnation)
}

fn is_stall(f: &FaultRecord) -> bool {
    matches!(f.action.as_str(), "pause" | "partition")
}

fn fault_evidence(seq: u64, f: &FaultRecord) -> Evidence {
    Evidence {
        t_us: f.fired_at_us,
        seq: Some(seq),
        what: format!(
            "fault #{} `{}` ({}) hit {}",
            f.fault,
            f.action,
            f.trigger,
            if f.hit.is_empty() {
                f.target.clone()
            } else {
                f.hit
                    .iter()
                    .map(|p| name(*p))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    }
}

fn unattributed(e: &EffectSeen) -> Evidence {
    Evidence {
        t_us: e.t_us,
        seq: Some(e.seq),
        what: "this effect could not be attributed to a consumer process".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::{info, Tl};
    use crate::reconcile::reconcile;
    use crate::timeline::{AckPhase, AckVerb, CommitPhase, CommittedOffset, EndReason};

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
                tl.push(Event::Produced {
                    id: format!("m-{i}"),
                    seq: 1,
                    key: None,
                    partition: None,
                    offset: Some(i as i64 + 1),
                    status: ProduceStatus::Acked,
                    error: None,
                });
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
            self.tl.push(Event::Effect {
                id: id.into(),
                instance: Some(i),
                incarnation: Some(n),
                outcome: EffectOutcome::Applied,
                sink: "http".into(),
                attribution: Default::default(),
            });
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
                self.tl.push(Event::Commit {
                    instance: i,
                    incarnation: n,
                    group: "billing-r1".into(),
                    member: "m".into(),
                    generation: 1,
                    offsets: vec![CommittedOffset {
                        topic: "orders-r1".into(),
                        partition: 0,
                        offset: next_offset,
                    }],
                    phase,
                    error: None,
                });
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
            reconcile(&self.tl.events).mechanisms
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
        let mech = reconcile(&run.tl.events).mechanisms;
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
        let mech = reconcile(&run.tl.events).mechanisms;
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
}
