//! The index the mechanism rules look up, built in one pass over the events: how each
//! incarnation exited, the applied faults, the commits the broker accepted or refused, the
//! acks, nacks, rejects and deliveries of the anomalous IDs, no-ack consumers, closed
//! connections, channels closed at RabbitMQ with an anomalous ID unacked, group changes and assignments, the IDs the broker stored twice, and when and
//! how the run ended; with the questions the rules ask of it (who marked a message done and
//! when, who owned a partition, which fault hit whom before what, whether an exit was the
//! harness's own stop).
//!
//! Invariants: only what the timeline recorded is indexed; per-ID lists are kept for the
//! anomalous IDs only. An exit after `run_ended` that no kill or terminate fault caused is the
//! harness stopping the consumer, never a crash. A fault is named only when its trigger matched
//! before the evidence it is named for, and it hit the processes concerned (or the group).

use std::collections::{HashMap, HashSet};

use crate::judge::id_map::IdSet;
use crate::judge::model::{Anomaly, ExitStatus};
use crate::timeline::{
    AckPhase, AckVerb, CommitPhase, CommittedOffset, EndReason, Event, FaultRecord, MemberChange,
    MessageNo, ProcessPhase, ProcessRef, ProduceStatus, RebalanceKind, Recorded, Stamped, TxnOp,
};

/// A consumer incarnation's reference.
pub(crate) fn pref(instance: u32, incarnation: u32) -> ProcessRef {
    ProcessRef {
        instance,
        incarnation,
    }
}

/// `consumer[0]#2`: instance 0, incarnation 2.
pub(crate) fn name(p: ProcessRef) -> String {
    format!("consumer[{}]#{}", p.instance, p.incarnation)
}

/// How one incarnation ended.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    /// When (µs).
    pub(crate) t_us: u64,
    /// The `process` event's position.
    pub(crate) seq: u64,
    /// The status, read.
    pub(crate) status: ExitStatus,
    /// The status as recorded (`signal SIGKILL`), for the evidence.
    pub(crate) text: String,
}

/// One delivery of an anomalous ID, seen by the proxy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivery {
    pub(crate) t_us: u64,
    pub(crate) seq: u64,
    pub(crate) to: ProcessRef,
    pub(crate) redelivered: bool,
}

/// A commit the broker accepted: (time, seq, partition, next offset).
type Accepted = (u64, u64, i32, i64);

/// A message an AMQP consumer handed back: a `basic.nack` or `basic.reject` the proxy
/// forwarded to the broker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Returned {
    pub(crate) t_us: u64,
    pub(crate) seq: u64,
    pub(crate) by: ProcessRef,
    pub(crate) verb: AckVerb,
    /// True: back to the queue (a redelivery follows); false: dropped (or dead-lettered).
    pub(crate) requeue: bool,
}

/// A channel RabbitMQ closed while it held an anomalous ID unacknowledged (a `channel_closed`
/// event): the message went back to the queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelRequeue<'a> {
    pub(crate) t_us: u64,
    pub(crate) seq: u64,
    pub(crate) who: ProcessRef,
    pub(crate) channel: u16,
    /// Who closed it and why.
    pub(crate) detail: &'a str,
}

/// A consumer connection that ended before the run did: (time, seq, unacked, how).
type Closed = (u64, u64, u64, String);

/// What the rules look up, built in one pass over the events.
pub(crate) struct Index<'a> {
    /// The broker is RabbitMQ (acks and queues) rather than Kafka (commits and partitions).
    pub(crate) amqp: bool,
    /// How each incarnation exited (the last `process` exit event of each).
    exits: HashMap<ProcessRef, Exit>,
    /// Applied faults, in time order, with the event's seq.
    faults: Vec<(u64, &'a FaultRecord)>,
    /// Accepted commits of the topic under test, per committer.
    commits: HashMap<ProcessRef, Vec<Accepted>>,
    /// Commit responses with errors (a fenced zombie's late commit), per committer.
    pub(crate) failed_commits: HashMap<ProcessRef, Vec<(u64, u64, String)>>,
    /// Whether the proxy saw any commit or ack at all.
    pub(crate) saw_marks: bool,
    /// Forwarded acks (AMQP) of the anomalous IDs: (time, seq, by).
    acks: HashMap<&'a str, Vec<(u64, u64, ProcessRef)>>,
    /// Nacks and rejects of the anomalous IDs, forwarded to the broker.
    returns: HashMap<&'a str, Vec<Returned>>,
    /// Deliveries of the anomalous IDs.
    deliveries: HashMap<&'a str, Vec<Delivery>>,
    /// Consumer connections that ended before the run did, per incarnation.
    closed: HashMap<ProcessRef, Vec<Closed>>,
    /// Channels closed at RabbitMQ holding the anomalous IDs unacknowledged, per ID.
    channel_requeues: HashMap<&'a str, Vec<ChannelRequeue<'a>>>,
    /// When the run ended (`run_ended`), and whether it settled (the work was done and the
    /// effects quiet) rather than being cut off (deadline, abort, harness failure).
    pub(crate) end: Option<(u64, bool)>,
    /// Incarnations consuming in no-ack mode.
    pub(crate) no_ack: HashSet<ProcessRef>,
    /// Group changes: (time, seq, who, what).
    pub(crate) group_changes: Vec<(u64, u64, Option<ProcessRef>, String)>,
    /// Assignments seen by the proxy, in time order: (time, member, partitions).
    assignments: Vec<(u64, ProcessRef, Vec<i32>)>,
    /// Partitions the harness's transient member was given, in time order: (time, seq,
    /// partitions).
    member_assignments: Vec<(u64, u64, Vec<i32>)>,
    /// Consumers joining (again) or leaving the group, in time order: (time, seq, who); a
    /// join after the first gives back what it owned (the eager protocol, a KIP-848 rejoin).
    rejoins: Vec<(u64, u64, ProcessRef)>,
    /// Anomalous IDs the broker stored at more than one offset.
    stored_twice: HashSet<&'a str>,
    /// Fetch responses the proxy answered with a `fetch_error` reply, in time order.
    pub(crate) fetch_errors: Vec<FetchError<'a>>,
}

/// A Fetch the proxy answered with an error instead of the broker's records (a `replied`
/// event of a `fetch_error` fault).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchError<'a> {
    pub(crate) t_us: u64,
    pub(crate) seq: u64,
    pub(crate) to: ProcessRef,
    /// The error code the consumer was told.
    pub(crate) sent: &'a str,
    /// The fetch positions it had asked from.
    pub(crate) positions: &'a [CommittedOffset],
}

/// The index while it is built, with the scratch state of the pass.
struct Builder<'a> {
    index: Index<'a>,
    /// The anomalous IDs.
    ids: IdSet<'a>,
    /// The anomalous IDs by number, for the per-message columns.
    nos: HashMap<MessageNo, &'a str>,
    /// The topic under test.
    topic: &'a str,
    /// The first acknowledged partition and offset of each anomalous ID.
    offsets_of: HashMap<&'a str, (i32, i64)>,
    /// Each committer's last commit request (a response may not repeat its offsets).
    last_request: HashMap<ProcessRef, &'a [CommittedOffset]>,
    /// Accepted TxnOffsetCommits whose transaction has not ended, per transactional id.
    in_txn: HashMap<&'a str, Vec<(ProcessRef, &'a [CommittedOffset])>>,
}

impl<'a> Index<'a> {
    /// Indexes `events` for the anomalies in `wanted`.
    pub(crate) fn build(recorded: &'a Recorded, wanted: &[&'a Anomaly]) -> Index<'a> {
        let events = recorded.others();
        let info = events.iter().find_map(|st| match &st.event {
            Event::RunStarted(info) => Some(info),
            _ => None,
        });
        let mut builder = Builder {
            index: Index {
                amqp: info.is_some_and(|i| i.broker == "amqp"),
                exits: HashMap::new(),
                faults: Vec::new(),
                commits: HashMap::new(),
                failed_commits: HashMap::new(),
                saw_marks: false,
                acks: HashMap::new(),
                returns: HashMap::new(),
                deliveries: HashMap::new(),
                closed: HashMap::new(),
                channel_requeues: HashMap::new(),
                end: None,
                no_ack: HashSet::new(),
                group_changes: Vec::new(),
                assignments: Vec::new(),
                member_assignments: Vec::new(),
                rejoins: Vec::new(),
                stored_twice: HashSet::new(),
                fetch_errors: Vec::new(),
            },
            ids: wanted.iter().map(|a| a.id.as_str()).collect(),
            nos: wanted
                .iter()
                .filter_map(|a| Some((recorded.ids().get(&a.id)?, a.id.as_str())))
                .collect(),
            topic: info.map(|i| i.topic.as_str()).unwrap_or_default(),
            offsets_of: HashMap::new(),
            last_request: HashMap::new(),
            in_txn: HashMap::new(),
        };
        for p in recorded.produced() {
            if let (Some(part), Some(o), ProduceStatus::Acked) = (p.partition, p.offset, p.status) {
                builder.produced(p.no, (part, o));
            }
        }
        for (d, r) in recorded.delivered_records() {
            let to = pref(d.instance, d.incarnation);
            builder.delivered((d.t_us, d.seq), r.id, to, d.redelivered);
        }
        for st in events {
            builder.observe(st);
        }
        builder.index
    }
}

impl<'a> Builder<'a> {
    fn observe(&mut self, st: &'a Stamped) {
        match &st.event {
            Event::Process {
                instance,
                incarnation,
                phase: ProcessPhase::Exited,
                status,
                ..
            } => {
                let text = status.clone().unwrap_or_default();
                let exit = Exit {
                    t_us: st.t_us,
                    seq: st.seq,
                    status: ExitStatus::parse(&text),
                    text,
                };
                self.index.exits.insert(pref(*instance, *incarnation), exit);
            }
            Event::Fault(f) if f.applied => self.index.faults.push((st.seq, f)),
            Event::Commit {
                instance,
                incarnation,
                offsets,
                phase,
                error,
                ..
            } => self.commit(st, pref(*instance, *incarnation), offsets, *phase, error),
            Event::Txn { .. } => self.txn(st),
            Event::Ack {
                instance,
                incarnation,
                verb,
                requeue,
                ids: covered,
                phase: AckPhase::Forwarded,
                ..
            } => self.ack(st, pref(*instance, *incarnation), *verb, *requeue, covered),
            Event::ConsumerSettings {
                instance,
                incarnation,
                no_ack: true,
                ..
            } => {
                self.index.no_ack.insert(pref(*instance, *incarnation));
            }
            _ => self.observe_group(st),
        }
    }

    /// Deliveries, group changes and the proxy's Fetch error replies.
    fn observe_group(&mut self, st: &'a Stamped) {
        match &st.event {
            Event::Replied {
                instance,
                incarnation,
                api,
                sent,
                offsets,
                ..
            } if api == "Fetch" => self.index.fetch_errors.push(FetchError {
                t_us: st.t_us,
                seq: st.seq,
                to: pref(*instance, *incarnation),
                sent,
                positions: offsets,
            }),
            Event::Rebalance {
                instance,
                incarnation,
                change,
                assignment,
                error,
                ..
            } => {
                let who = pref(*instance, *incarnation);
                self.rebalance(st, who, *change, assignment.as_ref(), error.as_deref());
            }
            Event::ConnectionClosed {
                instance,
                incarnation,
                unacked,
                detail,
                ..
            } => {
                let closed = (st.t_us, st.seq, *unacked, detail.clone());
                let who = pref(*instance, *incarnation);
                self.index.closed.entry(who).or_default().push(closed);
            }
            Event::ChannelClosed {
                instance,
                incarnation,
                channel,
                requeued,
                detail,
            } => {
                let who = pref(*instance, *incarnation);
                for id in requeued {
                    let Some(&id) = self.ids.get(id.as_str()) else {
                        continue;
                    };
                    self.index
                        .channel_requeues
                        .entry(id)
                        .or_default()
                        .push(ChannelRequeue {
                            t_us: st.t_us,
                            seq: st.seq,
                            who,
                            channel: *channel,
                            detail,
                        });
                }
            }
            Event::RunEnded { reason } if self.index.end.is_none() => {
                self.index.end = Some((st.t_us, *reason == EndReason::Settled));
            }
            Event::GroupMember {
                change,
                partitions,
                error,
                ..
            } => {
                if let (MemberChange::Assigned, Some(parts)) = (change, partitions) {
                    let given = (st.t_us, st.seq, parts.clone());
                    self.index.member_assignments.push(given);
                }
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
                self.index.group_changes.push((st.t_us, st.seq, None, what));
            }
            _ => {}
        }
    }

    /// An acknowledged produce of an anomalous ID: a second offset means it was stored twice.
    fn produced(&mut self, no: MessageNo, at: (i32, i64)) {
        let Some(&id) = self.nos.get(&no) else {
            return;
        };
        match self.offsets_of.get(id) {
            Some(&first) if first != at => {
                self.index.stored_twice.insert(id);
            }
            Some(_) => {}
            None => {
                self.offsets_of.insert(id, at);
            }
        }
    }

    fn commit(
        &mut self,
        st: &Stamped,
        who: ProcessRef,
        offsets: &'a [CommittedOffset],
        phase: CommitPhase,
        error: &Option<String>,
    ) {
        self.index.saw_marks = true;
        match (phase, error) {
            (CommitPhase::Request, _) => {
                self.last_request.insert(who, offsets);
            }
            (CommitPhase::Response, Some(e)) => self
                .index
                .failed_commits
                .entry(who)
                .or_default()
                .push((st.t_us, st.seq, e.clone())),
            (CommitPhase::Response, None) => {
                // A response carries its offsets, or they are those of the request it answers.
                let offsets = if offsets.is_empty() {
                    self.last_request.get(&who).copied().unwrap_or_default()
                } else {
                    offsets
                };
                let list = self.index.commits.entry(who).or_default();
                for c in offsets.iter().filter(|c| c.topic == self.topic) {
                    list.push((st.t_us, st.seq, c.partition, c.offset));
                }
            }
            (CommitPhase::Dropped, _) => {}
        }
    }

    /// Offsets sent to a transaction count as committed when its EndTxn commits (at that
    /// moment); an abort, a refused EndTxn or a new InitProducerId drops them.
    fn txn(&mut self, st: &'a Stamped) {
        let Event::Txn {
            instance,
            incarnation,
            op,
            transactional_id: Some(tid),
            committed,
            offsets,
            error,
            request: false,
            ..
        } = &st.event
        else {
            return;
        };
        let (who, tid) = (pref(*instance, *incarnation), tid.as_str());
        match (op, error, committed) {
            (TxnOp::TxnOffsetCommit, None, _) => {
                self.index.saw_marks = true;
                self.in_txn.entry(tid).or_default().push((who, offsets));
            }
            (TxnOp::EndTxn, None, Some(true)) => {
                for (by, offsets) in self.in_txn.remove(tid).unwrap_or_default() {
                    let list = self.index.commits.entry(by).or_default();
                    for c in offsets.iter().filter(|c| c.topic == self.topic) {
                        list.push((st.t_us, st.seq, c.partition, c.offset));
                    }
                }
            }
            (TxnOp::EndTxn, ..) | (TxnOp::InitProducerId, ..) => {
                self.in_txn.remove(tid);
            }
            (TxnOp::TxnOffsetCommit, Some(_), _)
            | (TxnOp::AddPartitionsToTxn, ..)
            | (TxnOp::AddOffsetsToTxn, ..) => {}
        }
    }

    /// A forwarded ack marks the IDs it covers done; a nack or reject hands them back.
    fn ack(
        &mut self,
        st: &Stamped,
        by: ProcessRef,
        verb: AckVerb,
        requeue: bool,
        covered: &[String],
    ) {
        self.index.saw_marks = true;
        for id in covered {
            let Some(&id) = self.ids.get(id.as_str()) else {
                continue;
            };
            match verb {
                AckVerb::Ack => {
                    let acks = self.index.acks.entry(id).or_default();
                    acks.push((st.t_us, st.seq, by));
                }
                AckVerb::Nack | AckVerb::Reject => {
                    self.index.returns.entry(id).or_default().push(Returned {
                        t_us: st.t_us,
                        seq: st.seq,
                        by,
                        verb,
                        requeue,
                    });
                }
            }
        }
    }

    fn delivered(
        &mut self,
        (t_us, seq): (u64, u64),
        no: MessageNo,
        to: ProcessRef,
        redelivered: bool,
    ) {
        if let Some(&id) = self.nos.get(&no) {
            self.index.deliveries.entry(id).or_default().push(Delivery {
                t_us,
                seq,
                to,
                redelivered,
            });
        }
    }

    fn rebalance(
        &mut self,
        st: &Stamped,
        who: ProcessRef,
        change: RebalanceKind,
        assignment: Option<&Vec<i32>>,
        error: Option<&str>,
    ) {
        match (change, assignment) {
            (RebalanceKind::Assign, Some(parts)) => {
                self.index.assignments.push((st.t_us, who, parts.clone()));
            }
            (RebalanceKind::Join | RebalanceKind::Leave, _) => {
                self.index.rejoins.push((st.t_us, st.seq, who));
            }
            _ => {}
        }
        let what = match (change, assignment, error) {
            (RebalanceKind::Assign, Some(parts), _) => format!("assigned partitions {parts:?}"),
            (_, _, Some(e)) => format!("group error {e}"),
            (RebalanceKind::Join, _, _) => "joins the group (rebalance)".into(),
            (RebalanceKind::Leave, _, _) => "leaves the group".into(),
            (RebalanceKind::Sync, _, _) => "synced with the group".into(),
            (RebalanceKind::Assign | RebalanceKind::Error, _, None) => return,
        };
        self.index
            .group_changes
            .push((st.t_us, st.seq, Some(who), what));
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

/// A fault that stalls a member without ending it.
fn is_stall(f: &FaultRecord) -> bool {
    matches!(f.action.as_str(), "pause" | "partition")
}

impl Index<'_> {
    /// How `who` exited, if it did.
    pub(crate) fn exit_of(&self, who: ProcessRef) -> Option<&Exit> {
        self.exits.get(&who)
    }

    /// The proxy's deliveries of `id` (an anomalous ID), in timeline order.
    pub(crate) fn deliveries_of(&self, id: &str) -> impl Iterator<Item = &Delivery> + '_ {
        self.deliveries.get(id).into_iter().flatten()
    }

    /// Whether the broker acknowledged `id` at two different offsets.
    pub(crate) fn stored_twice(&self, id: &str) -> bool {
        self.stored_twice.contains(id)
    }

    /// "committed" or "acked".
    pub(crate) fn marked_word(&self) -> &'static str {
        if self.amqp {
            "acked"
        } else {
            "committed"
        }
    }

    /// The first accepted commit (ack) covering the anomaly's message: (time, seq, by).
    pub(crate) fn first_mark(&self, a: &Anomaly) -> Option<(u64, u64, ProcessRef)> {
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
    pub(crate) fn marked_done(
        &self,
        a: &Anomaly,
        who: ProcessRef,
        until: u64,
    ) -> Option<(u64, u64)> {
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

    /// When partition `p` belonged to someone else at `t`: after `who`'s last assignment that
    /// included it, another member was given it (the first such assignment: when and to whom).
    /// `None` when `who` still owned it, or the proxy saw no assignments.
    pub(crate) fn taken_over(&self, who: ProcessRef, p: i32, t: u64) -> Option<(u64, ProcessRef)> {
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
    pub(crate) fn stall_of(&self, who: ProcessRef, t: u64) -> Option<(u64, &FaultRecord)> {
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
    pub(crate) fn stall_between(
        &self,
        who: ProcessRef,
        from: u64,
        to: u64,
    ) -> Option<(u64, &FaultRecord)> {
        self.faults
            .iter()
            .filter(|(_, f)| is_stall(f) && f.hit.contains(&who))
            .filter(|(_, f)| f.fired_at_us >= from && f.fired_at_us <= to)
            .map(|(seq, f)| (*seq, *f))
            .next()
    }

    /// The last applied fault whose trigger matched in `[from, until]` and that hit one of
    /// `who` (or, with `group`, was aimed at the group: a transient member, a scale-up).
    /// `matched_at` decides, not `fired_at`: a kill's exit can be recorded before the fault
    /// event that sent the signal.
    pub(crate) fn fault_on(
        &self,
        who: &[ProcessRef],
        (from, until): (u64, u64),
        group: bool,
    ) -> Option<(u64, &FaultRecord)> {
        self.faults
            .iter()
            .filter(|(_, f)| f.matched_at_us >= from && f.matched_at_us <= until)
            .filter(|(_, f)| who.iter().any(|w| reached(f, *w)) || (group && is_group_level(f)))
            .max_by_key(|(_, f)| f.matched_at_us)
            .map(|(seq, f)| (*seq, *f))
    }

    /// The last applied fault whose trigger matched in `[from, until]`, whomever it hit.
    pub(crate) fn fault_between(&self, from: u64, until: u64) -> Option<(u64, &FaultRecord)> {
        self.faults
            .iter()
            .filter(|(_, f)| f.matched_at_us >= from && f.matched_at_us <= until)
            .max_by_key(|(_, f)| f.matched_at_us)
            .map(|(seq, f)| (*seq, *f))
    }

    /// Whether `exit` was the harness stopping `who` at the end of the run: it came at or
    /// after `run_ended`, and no kill or terminate fault named `who` among those it hit.
    pub(crate) fn stopped_by_harness(&self, who: ProcessRef, exit: &Exit) -> bool {
        let Some((end, _)) = self.end else {
            return false;
        };
        exit.t_us >= end
            && !self.faults.iter().any(|(_, f)| {
                matches!(f.action.as_str(), "kill" | "terminate") && f.hit.contains(&who)
            })
    }

    /// Whether `who` was still running when the run ended: no exit, or the harness's own stop.
    pub(crate) fn alive_at_end(&self, who: ProcessRef) -> bool {
        self.end.is_some()
            && self
                .exit_of(who)
                .is_none_or(|exit| self.stopped_by_harness(who, exit))
    }

    /// The nacks and rejects of `id` (an anomalous ID) forwarded to the broker, in order.
    pub(crate) fn returns_of(&self, id: &str) -> impl Iterator<Item = &Returned> + '_ {
        self.returns.get(id).into_iter().flatten()
    }

    /// The first channel of `who` closed at RabbitMQ between `from` and `to` while it held `id`
    /// unacknowledged (RabbitMQ requeued it).
    pub(crate) fn channel_requeue(
        &self,
        id: &str,
        who: ProcessRef,
        (from, to): (u64, u64),
    ) -> Option<&ChannelRequeue<'_>> {
        self.channel_requeues
            .get(id)?
            .iter()
            .find(|r| r.who == who && r.t_us >= from && r.t_us <= to)
    }

    /// The connections of `who` that ended between `from` and `to`.
    pub(crate) fn closed_between(
        &self,
        who: ProcessRef,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = &Closed> + '_ {
        self.closed
            .get(&who)
            .into_iter()
            .flatten()
            .filter(move |c| c.0 >= from && c.0 <= to)
    }

    /// The first ownership change of the anomaly's message away from `who` between `from` and
    /// `to`, as evidence: Kafka, another consumer or the transient member was given its
    /// partition, `who` was given a set without it, or `who` left or joined the group again;
    /// AMQP, the message was delivered to another consumer. `None` when the timeline shows
    /// none.
    pub(crate) fn moved_away(
        &self,
        a: &Anomaly,
        who: ProcessRef,
        (from, to): (u64, u64),
    ) -> Option<(u64, Option<u64>, String)> {
        let inside = |t: u64| t > from && t <= to;
        if self.amqp {
            return self
                .deliveries_of(&a.id)
                .find(|d| inside(d.t_us) && d.to != who)
                .map(|d| (d.t_us, Some(d.seq), format!("delivered to {}", name(d.to))));
        }
        let p = a.partition?;
        let assigned = self
            .assignments
            .iter()
            .filter(|x| inside(x.0))
            .find(|x| (x.1 == who) != x.2.contains(&p))
            .map(|x| {
                let what = if x.1 == who {
                    format!("{} is assigned {:?}, without partition {p}", name(who), x.2)
                } else {
                    format!("{} is assigned partition {p}", name(x.1))
                };
                (x.0, None, what)
            });
        let member = self
            .member_assignments
            .iter()
            .find(|x| inside(x.0) && x.2.contains(&p))
            .map(|x| {
                let what = format!("the transient group member is given partition {p}");
                (x.0, Some(x.1), what)
            });
        let rejoin = self
            .rejoins
            .iter()
            .find(|x| inside(x.0) && x.2 == who)
            .map(|x| {
                let what = format!(
                    "{} leaves or rejoins the group: its partitions are revoked",
                    name(who)
                );
                (x.0, Some(x.1), what)
            });
        [assigned, member, rejoin]
            .into_iter()
            .flatten()
            .min_by_key(|x| x.0)
    }
}

/// Whether fault `f` reached `who`: it names `who` among the incarnations it hit, or it is a
/// process fault with no list of whom it hit (a timeline from before faults recorded it).
fn reached(f: &FaultRecord, who: ProcessRef) -> bool {
    f.hit.contains(&who) || (f.hit.is_empty() && !is_group_level(f))
}

/// A fault aimed at the group rather than at processes: a transient member's rebalance, a
/// scale-up (a scale-down names the incarnation it retired).
fn is_group_level(f: &FaultRecord) -> bool {
    f.hit.is_empty() && matches!(f.action.as_str(), "rebalance" | "scale")
}
