//! The run facts: everything pass 1 reads from the timeline besides the ledger and the effects
//! — what the run announced, its faults, the consumer processes, the broker's last progress
//! (or the queue's remainder), how the run ended, the sink's rejections, the proxy's view of
//! consumer settings, closed connections and holds, the sink's holds of effect answers, the
//! connections that bypassed the proxy, the consumer's processes that outlived SIGKILL, the
//! commits the broker accepted from watched connections (`committers`), and the `warning`
//! events.
//!
//! Invariant: facts are read in one pass in timeline order, one event at a time; the latest
//! `progress` event by sequence number is the one that decides lost versus pending.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::judge::bypass::{bypassed_faults, Bypass};
use crate::judge::committers::{CommitsReader, CommitsSeen};
use crate::judge::model::{SurvivingProcess, UnfiredFault, FAILED_SAMPLES};
use crate::timeline::{
    DescendantFate, EndReason, Event, FaultRecord, HeldAt, ProcessPhase, RunInfo, SinkKind,
    Stamped, TxnOp,
};

/// One consumer process, from its `process` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incarnation {
    /// Instance index.
    pub instance: u32,
    /// Incarnation of that instance, from 1.
    pub incarnation: u32,
    /// OS process id.
    pub pid: u32,
    /// When it started (µs), if seen.
    pub started_us: Option<u64>,
    /// When it exited (µs), if seen.
    pub exited_us: Option<u64>,
    /// Exit status (`exit 0`, `signal SIGKILL`), if it exited.
    pub status: Option<String>,
}

/// The broker's progress as last read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressSnapshot {
    /// When it was read (µs).
    pub t_us: u64,
    /// Committed offset per partition.
    pub committed: BTreeMap<i32, i64>,
    /// End offset per partition.
    pub end: BTreeMap<i32, i64>,
}

/// Something the sink could not read as an effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedEffect {
    /// When (µs).
    pub t_us: u64,
    /// Why.
    pub reason: String,
    /// The start of what was received.
    pub sample: String,
}

/// One AMQP consumer's `basic.consume` / `basic.qos`, as seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerSetting {
    /// Instance.
    pub instance: u32,
    /// Incarnation.
    pub incarnation: u32,
    /// Consumes in no-ack mode.
    pub no_ack: bool,
    /// Prefetch asked for, if any.
    pub prefetch: Option<u16>,
    /// When the proxy saw the `basic.consume` (µs since run start).
    #[serde(skip)]
    pub t_us: u64,
}

/// The proxy's holds of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Holds {
    /// Frames held.
    pub count: u64,
    /// Of those, dropped (never forwarded: the consumer was being stopped).
    pub dropped: u64,
    /// Median hold (µs).
    pub p50_us: u64,
    /// 99th percentile hold (µs).
    pub p99_us: u64,
    /// Longest hold (µs).
    pub max_us: u64,
}

impl Holds {
    /// The holds' count and drops, with the percentiles of `times` (µs).
    fn with_times(mut self, mut times: Vec<u64>) -> Holds {
        times.sort_unstable();
        let at = |q: f64| -> u64 {
            if times.is_empty() {
                return 0;
            }
            times[((times.len() - 1) as f64 * q).round() as usize]
        };
        self.p50_us = at(0.5);
        self.p99_us = at(0.99);
        self.max_us = times.last().copied().unwrap_or(0);
        self
    }
}

/// A proxied consumer connection that ended before the run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionClosed {
    /// When (µs).
    pub t_us: u64,
    /// Instance.
    pub instance: u32,
    /// Incarnation.
    pub incarnation: u32,
    /// Which side ended it.
    pub by: crate::timeline::ClosedBy,
    /// Deliveries not yet acknowledged on it.
    pub unacked: u64,
    /// How it ended.
    pub detail: String,
}

/// AMQP: the IDs the queue still held when the consumers stopped, and whether that list is
/// whole.
pub(crate) struct Remainder<'a> {
    /// The IDs left in the queue.
    pub(crate) ids: HashSet<&'a str>,
    /// False when the drain could not read the whole queue.
    pub(crate) complete: bool,
}

/// What the plan's dead-letter topic or queue held after the run (`dead_letters`).
pub(crate) struct DeadLetterRead<'a> {
    /// The topic or queue.
    pub(crate) destination: &'a str,
    /// The IDs read there.
    pub(crate) ids: HashSet<&'a str>,
    /// False when the read did not finish.
    pub(crate) complete: bool,
}

impl<'a> DeadLetterRead<'a> {
    fn new(destination: &'a str, ids: &'a [String], complete: bool) -> Self {
        DeadLetterRead {
            destination,
            ids: ids.iter().map(String::as_str).collect(),
            complete,
        }
    }
}

/// Reads the run facts during pass 1, one event at a time.
#[derive(Default)]
pub(crate) struct FactsReader<'a> {
    run: Option<RunInfo>,
    run_started_twice: bool,
    faults: Vec<FaultRecord>,
    incarnations: HashMap<(u32, u32), Incarnation>,
    last_progress: Option<&'a Stamped>,
    /// The consumer's own stored offsets (`stored_offsets`), when the plan reads them.
    stored_offsets: Option<&'a Stamped>,
    remainder: Option<Remainder<'a>>,
    dead_letters: Option<DeadLetterRead<'a>>,
    end: Option<(EndReason, u64)>,
    last_t_us: Option<u64>,
    rejected: u64,
    rejected_samples: Vec<RejectedEffect>,
    torn_lines: u64,
    /// The first torn line: (instance, incarnation, sink, sample).
    first_torn: Option<(u32, u32, SinkKind, String)>,
    consumer_settings: Vec<ConsumerSetting>,
    connections_closed: Vec<ConnectionClosed>,
    holds: Holds,
    hold_times: Vec<u64>,
    effect_holds: Holds,
    effect_hold_times: Vec<u64>,
    bypasses: Vec<Bypass>,
    survivors: Vec<SurvivingProcess>,
    warnings: Vec<String>,
    /// Per incarnation, its fencing warning (an index into `warnings`) until its next EndTxn
    /// answer says how its transaction ended.
    /// With its transactional id: a later InitProducerId of that id aborts the open
    /// transaction.
    fenced: HashMap<(u32, u32), (usize, Option<String>)>,
    output_topics: Vec<OutputTopicRead>,
    /// When the proxy answered a request with a protocol fault's reply (`replied` events).
    reply_times: Vec<u64>,
    commits: CommitsReader,
}

/// The progress the judge counts work done by: the consumer's own stored offsets when the
/// plan had them read (they replace the group's committed offsets, which such a consumer does
/// not resume from; the end offsets stay the broker's), with a note saying so for the report.
fn with_stored_offsets(
    broker: Option<ProgressSnapshot>,
    stored: Option<&Stamped>,
) -> (Option<ProgressSnapshot>, Option<String>) {
    let Some(Stamped {
        t_us,
        event: Event::StoredOffsets { source, committed },
        ..
    }) = stored
    else {
        return (broker, None);
    };
    let note = format!(
        "work is counted done by the offsets the consumer stored with its data ({source}), not \
         by the group's committed offsets: {} partition(s) read once the consumers stopped",
        committed.len()
    );
    let end = broker.map(|p| p.end).unwrap_or_default();
    let progress = ProgressSnapshot {
        t_us: *t_us,
        committed: committed.clone(),
        end,
    };
    (Some(progress), Some(note))
}

/// Why the broker's answer fences a zombie, if it does: its producer epoch is stale, or
/// (KIP-447) its offsets name a group membership it no longer has.
pub(crate) fn fencing(op: TxnOp, error: &str) -> Option<&'static str> {
    if matches!(error, "PRODUCER_FENCED" | "INVALID_PRODUCER_EPOCH") {
        return Some("a newer epoch owns its transactional id (a newer incarnation started, or the broker aborted the transaction that timed out), so the zombie's transaction cannot commit");
    }
    let generation = matches!(
        error,
        "ILLEGAL_GENERATION" | "UNKNOWN_MEMBER_ID" | "FENCED_INSTANCE_ID"
    );
    (op == TxnOp::TxnOffsetCommit && generation).then_some(
        "its group membership is gone (KIP-447): the offsets it would commit with its transaction now belong to the partitions' new owner, so the transaction cannot commit them",
    )
}

/// What the harness read back from a `kafka-topic` boundary's output topic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutputTopicRead {
    /// The topic.
    pub topic: String,
    /// The isolation level its effects were read at.
    pub isolation: String,
    /// Records under `read_committed`.
    pub committed_records: u64,
    /// Records under `read_uncommitted`.
    pub uncommitted_records: u64,
    /// Records of aborted (or never-committed) transactions: seen only under
    /// `read_uncommitted`, never effects.
    pub aborted_records: u64,
    /// How many of those name a message ID.
    pub aborted_with_id: u64,
    /// The first of their IDs.
    pub aborted_ids: Vec<String>,
    /// False when a reader did not reach the end of every partition.
    pub complete: bool,
}

impl<'a> FactsReader<'a> {
    /// Takes in the time of an event it is not shown (the per-message columns), for the time
    /// of the last one.
    pub(crate) fn saw_time(&mut self, t_us: u64) {
        self.last_t_us = Some(self.last_t_us.map_or(t_us, |t| t.max(t_us)));
    }

    /// Takes in one event outside the per-message columns.
    pub(crate) fn observe(&mut self, st: &'a Stamped) {
        self.saw_time(st.t_us);
        self.commits.observe(&st.event);
        match &st.event {
            Event::RunStarted(info) => {
                self.commits.scope(&info.topic, &info.group);
                if self.run.is_none() {
                    self.run = Some(RunInfo::clone(info));
                } else {
                    self.run_started_twice = true;
                }
            }
            Event::EffectRejected { reason, sample, .. } => {
                self.rejected += 1;
                if self.rejected_samples.len() < FAILED_SAMPLES {
                    self.rejected_samples.push(RejectedEffect {
                        t_us: st.t_us,
                        reason: reason.clone(),
                        sample: sample.clone(),
                    });
                }
            }
            Event::Process {
                instance,
                incarnation,
                pid,
                phase,
                status,
            } => self.process(st.t_us, (*instance, *incarnation), *pid, *phase, status),
            Event::Fault(rec) => self.faults.push(FaultRecord::clone(rec)),
            // The latest progress by sequence number decides lost versus pending.
            Event::Progress { .. } if self.last_progress.is_none_or(|p| st.seq >= p.seq) => {
                self.last_progress = Some(st);
            }
            Event::StoredOffsets { .. } => self.stored_offsets = Some(st),
            Event::OutputTopicRead {
                topic,
                isolation,
                committed_records,
                uncommitted_records,
                aborted_records,
                aborted_ids,
                aborted_with_id,
                complete,
                ..
            } => self.output_topics.push(OutputTopicRead {
                topic: topic.clone(),
                isolation: isolation.clone(),
                committed_records: *committed_records,
                uncommitted_records: *uncommitted_records,
                aborted_records: *aborted_records,
                aborted_with_id: *aborted_with_id,
                aborted_ids: aborted_ids.clone(),
                complete: *complete,
            }),
            Event::Txn { .. } => self.txn(&st.event),
            Event::QueueRemainder { ids, complete } => {
                self.remainder = Some(Remainder {
                    ids: ids.iter().map(String::as_str).collect(),
                    complete: *complete,
                });
            }
            Event::DeadLetters {
                destination,
                ids,
                complete,
                ..
            } => self.dead_letters = Some(DeadLetterRead::new(destination, ids, *complete)),
            Event::TornLine {
                instance,
                incarnation,
                sink,
                sample,
                ..
            } => {
                self.torn_lines += 1;
                self.first_torn
                    .get_or_insert_with(|| (*instance, *incarnation, *sink, sample.clone()));
            }
            Event::Warning { message } => self.warnings.push(message.clone()),
            Event::Descendant {
                instance,
                incarnation,
                pid,
                command,
                fate: DescendantFate::Survived,
            } => self.survivors.push(SurvivingProcess {
                instance: *instance,
                incarnation: *incarnation,
                pid: *pid,
                command: command.clone(),
            }),
            Event::RunEnded { reason } => self.end = Some((*reason, st.t_us)),
            _ => self.observe_proxy(st),
        }
    }

    /// A transactional answer: one that fences a zombie is a warning naming the incarnation,
    /// the request and the broker's error; what follows says how its transaction ended: the
    /// EndTxn that incarnation sends next (aborted, as a fenced one must be, or committed after
    /// all), or the InitProducerId of a later producer with its transactional id.
    fn txn(&mut self, event: &Event) {
        let Event::Txn {
            instance,
            incarnation,
            op,
            transactional_id,
            producer_epoch,
            committed,
            error,
            request: false,
            ..
        } = event
        else {
            return;
        };
        let who = (*instance, *incarnation);
        match (op, error, committed) {
            (_, Some(error), _) => {
                let Some(why) = fencing(*op, error) else {
                    return;
                };
                self.warnings.push(format!(
                    "consumer[{instance}] incarnation {incarnation} was fenced: its {op:?}{} was refused with {error} (transactional id {}, epoch {producer_epoch}): {why}",
                    match committed {
                        Some(true) => " (commit)",
                        Some(false) => " (abort)",
                        None => "",
                    },
                    transactional_id.as_deref().unwrap_or("none"),
                ));
                self.fenced
                    .insert(who, (self.warnings.len() - 1, transactional_id.clone()));
            }
            (TxnOp::InitProducerId, None, _) => {
                // A later producer with the zombie's transactional id: the coordinator aborts
                // the open transaction as it bumps the epoch.
                let zombie = self
                    .fenced
                    .iter()
                    .find(|(w, (_, tid))| **w != who && tid.is_some() && *tid == *transactional_id);
                if let Some((&w, &(line, _))) = zombie {
                    self.fenced.remove(&w);
                    self.warnings[line].push_str(&format!(
                        "; its open transaction was aborted when consumer[{instance}] incarnation {incarnation}'s InitProducerId took its transactional id (epoch {producer_epoch})"
                    ));
                }
            }
            (TxnOp::EndTxn, None, Some(commit)) => {
                if let Some((line, _)) = self.fenced.remove(&who) {
                    self.warnings[line].push_str(if *commit {
                        "; yet its next EndTxn commit was accepted"
                    } else {
                        "; its transaction was then aborted (EndTxn abort accepted)"
                    });
                }
            }
            (TxnOp::EndTxn, None, None)
            | (
                TxnOp::AddPartitionsToTxn | TxnOp::AddOffsetsToTxn | TxnOp::TxnOffsetCommit,
                None,
                _,
            ) => {}
        }
    }

    /// What the proxy saw (consumer settings, holds and closed connections), the sink's holds
    /// and the run's bypass check. Produced and
    /// effect events are the ledger's; the kinds only attribution and mechanisms read
    /// (deliveries, commits, rebalances) fall through here as well, so adding one to the
    /// timeline does not touch the facts.
    fn observe_proxy(&mut self, st: &'a Stamped) {
        match &st.event {
            Event::ConsumerSettings {
                instance,
                incarnation,
                no_ack,
                prefetch,
                ..
            } => self.consumer_settings.push(ConsumerSetting {
                instance: *instance,
                incarnation: *incarnation,
                no_ack: *no_ack,
                prefetch: *prefetch,
                t_us: st.t_us,
            }),
            // The sink's holds of effect answers are the harness's, not the proxy's.
            Event::Held {
                at: HeldAt::Effect,
                held_us,
                released,
                ..
            } => {
                self.effect_hold_times.push(*held_us);
                self.effect_holds.count += 1;
                self.effect_holds.dropped += u64::from(!released);
            }
            Event::Held {
                held_us, released, ..
            } => {
                self.hold_times.push(*held_us);
                self.holds.count += 1;
                self.holds.dropped += u64::from(!released);
            }
            Event::Replied { .. } => self.reply_times.push(st.t_us),
            Event::Bypass {
                instance,
                incarnation,
                pid,
                local,
                remote,
            } => self.bypasses.push(Bypass {
                t_us: st.t_us,
                instance: *instance,
                incarnation: *incarnation,
                pid: *pid,
                local: local.clone(),
                remote: remote.clone(),
            }),
            Event::ConnectionClosed {
                instance,
                incarnation,
                by,
                unacked,
                detail,
            } => self.connections_closed.push(ConnectionClosed {
                t_us: st.t_us,
                instance: *instance,
                incarnation: *incarnation,
                by: *by,
                unacked: *unacked,
                detail: detail.clone(),
            }),
            _ => {}
        }
    }

    fn process(
        &mut self,
        t_us: u64,
        (instance, incarnation): (u32, u32),
        pid: u32,
        phase: ProcessPhase,
        status: &Option<String>,
    ) {
        let inc = self
            .incarnations
            .entry((instance, incarnation))
            .or_insert_with(|| Incarnation {
                instance,
                incarnation,
                pid,
                started_us: None,
                exited_us: None,
                status: None,
            });
        match phase {
            ProcessPhase::Started => {
                inc.pid = pid;
                inc.started_us = Some(t_us);
            }
            ProcessPhase::Exited => {
                inc.exited_us = Some(t_us);
                inc.status = status.clone();
            }
        }
    }

    /// The facts of the whole run, once every event was observed.
    pub(crate) fn finish(self) -> RunFacts<'a> {
        let progress = self.last_progress.and_then(|st| match &st.event {
            Event::Progress { committed, end } => Some(ProgressSnapshot {
                t_us: st.t_us,
                committed: committed.clone(),
                end: end.clone(),
            }),
            _ => None,
        });
        let (progress, stored_note) = with_stored_offsets(progress, self.stored_offsets);
        let mut incarnations: Vec<Incarnation> = self.incarnations.into_values().collect();
        incarnations.sort_by_key(|i| {
            (
                i.started_us.or(i.exited_us).unwrap_or(u64::MAX),
                i.instance,
                i.incarnation,
            )
        });
        let mut facts = RunFacts {
            faults_planned: self.run.as_ref().map_or(0, |r| r.planned_faults.len()),
            faults_fired: Vec::new(),
            faults_unfired: Vec::new(),
            faults_hit_nothing: Vec::new(),
            run: self.run,
            faults: self.faults,
            incarnations,
            progress_is_stored: stored_note.is_some(),
            progress,
            remainder: self.remainder,
            dead_letters: self.dead_letters,
            end: self.end,
            ended_at_us: self.end.map(|(_, t)| t).or(self.last_t_us),
            rejected: self.rejected,
            rejected_samples: self.rejected_samples,
            torn_lines: self.torn_lines,
            consumer_settings: self.consumer_settings,
            connections_closed: self.connections_closed,
            holds: self.holds.with_times(self.hold_times),
            effect_holds: self.effect_holds.with_times(self.effect_hold_times),
            faults_bypassed: Vec::new(),
            bypasses: self.bypasses,
            survivors: self.survivors,
            warnings: self.warnings,
            output_topics: self.output_topics,
            commits_seen: self.commits.finish(),
        };
        facts.tally_faults(&self.reply_times);
        facts.warnings.extend(stored_note);
        if let Some((instance, incarnation, sink, sample)) = self.first_torn {
            facts.warnings.push(format!(
                "{} torn line{} (a last line without its newline: its writer died mid-write) never counted as effects; the first, from consumer[{instance}] incarnation {incarnation} ({sink} sink): `{sample}`",
                self.torn_lines,
                if self.torn_lines == 1 { "" } else { "s" },
            ));
        }
        let planned = facts.run.as_ref().map(|r| r.planned_faults.as_slice());
        facts.faults_bypassed = bypassed_faults(
            &facts.bypasses,
            &facts.faults,
            &facts.incarnations,
            planned.unwrap_or_default(),
        );
        if self.run_started_twice {
            facts
                .warnings
                .push("the timeline has more than one run_started event; the first is used".into());
        }
        facts
    }
}

/// What the timeline says about the run besides the ledger and the effects.
pub(crate) struct RunFacts<'a> {
    /// The first `run_started`.
    pub(crate) run: Option<RunInfo>,
    /// Every `fault` event, in timeline order.
    pub(crate) faults: Vec<FaultRecord>,
    /// Number of planned faults.
    pub(crate) faults_planned: usize,
    /// Plan indices of the faults applied at least once, ascending.
    pub(crate) faults_fired: Vec<usize>,
    /// Planned faults never applied.
    pub(crate) faults_unfired: Vec<UnfiredFault>,
    /// Planned faults applied only when they hit nothing (see [`hit_nothing`]).
    pub(crate) faults_hit_nothing: Vec<UnfiredFault>,
    /// Consumer processes, ordered by start time.
    pub(crate) incarnations: Vec<Incarnation>,
    /// The broker's last progress (Kafka), or the consumer's own stored offsets in its place.
    pub(crate) progress: Option<ProgressSnapshot>,
    /// The committed offsets of `progress` are the ones the consumer stored with its data
    /// (`stored_offsets`): its own word, written by it into its own store, so a loss behind
    /// them has a known committer (the consumer).
    pub(crate) progress_is_stored: bool,
    /// The queue's remainder (AMQP).
    pub(crate) remainder: Option<Remainder<'a>>,
    /// What the dead-letter destination held after the run.
    pub(crate) dead_letters: Option<DeadLetterRead<'a>>,
    /// Why and when the run ended.
    pub(crate) end: Option<(EndReason, u64)>,
    /// When the run ended, or the last event's time when it never did.
    pub(crate) ended_at_us: Option<u64>,
    /// `effect_rejected` events.
    pub(crate) rejected: u64,
    /// What was read back from output topics (`kafka-topic` boundaries).
    pub(crate) output_topics: Vec<OutputTopicRead>,
    /// The first of them.
    pub(crate) rejected_samples: Vec<RejectedEffect>,
    /// `torn_line` events: lines the file or stdout sink never took as effects.
    pub(crate) torn_lines: u64,
    /// AMQP consumer settings seen by the proxy.
    pub(crate) consumer_settings: Vec<ConsumerSetting>,
    /// Consumer connections that ended before the run did.
    pub(crate) connections_closed: Vec<ConnectionClosed>,
    /// The proxy's holds.
    pub(crate) holds: Holds,
    /// The sink's holds of effect answers for `during: effect` faults.
    pub(crate) effect_holds: Holds,
    /// Consumer connections straight to the broker, past the proxy.
    pub(crate) bypasses: Vec<Bypass>,
    /// Planned faults that fired only while a bypass escaped them (not exercised).
    pub(crate) faults_bypassed: Vec<UnfiredFault>,
    /// Consumer processes still alive after the harness's SIGKILL (`descendant` events).
    pub(crate) survivors: Vec<SurvivingProcess>,
    /// `warning` events in order, then the facts' own observations.
    pub(crate) warnings: Vec<String>,
    /// The commits of watched consumer connections the broker accepted (Kafka).
    pub(crate) commits_seen: CommitsSeen,
}

impl RunFacts<'_> {
    /// The plan's dead-letter destination when it was not read whole after the run (no
    /// `dead_letters` event, or one that did not finish).
    pub(crate) fn dead_letters_unread(&self) -> Option<String> {
        let declared = self.run.as_ref()?.dead_letter.as_ref()?;
        match &self.dead_letters {
            Some(read) if read.complete => None,
            Some(read) => Some(read.destination.to_owned()),
            None => Some(declared.clone()),
        }
    }

    /// True when `id` was read in the dead-letter destination.
    pub(crate) fn diverted(&self, id: &str) -> bool {
        self.dead_letters
            .as_ref()
            .is_some_and(|read| read.ids.contains(id))
    }

    /// Fired means applied (DESIGN §12), never merely matched, and exercised: an application
    /// that hit nothing (see [`hit_nothing`]) does not count either. A planned fault never
    /// applied is unfired; one applied only when it hit nothing is listed apart.
    /// Sorts the planned faults into fired, never applied and applied without effect (`hit
    /// nothing`: a process fault that reached no process, or a protocol fault armed on the
    /// proxy that no `replied` event followed: no request came for it to answer).
    fn tally_faults(&mut self, reply_times: &[u64]) {
        let unanswered = |f: &FaultRecord| {
            is_protocol_reply(f) && !reply_times.iter().any(|t| *t >= f.fired_at_us)
        };
        let indices = |keep: &dyn Fn(&FaultRecord) -> bool| -> Vec<usize> {
            let mut v: Vec<usize> = self
                .faults
                .iter()
                .filter(|f| keep(f))
                .map(|f| f.fault)
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let fired = indices(&|f| f.applied && !hit_nothing(f) && !unanswered(f));
        let applied = indices(&|f| f.applied);
        let planned_faults = self
            .run
            .as_ref()
            .map(|r| r.planned_faults.as_slice())
            .unwrap_or_default();
        let listed = |applied_ones: bool| -> Vec<UnfiredFault> {
            planned_faults
                .iter()
                .enumerate()
                .filter(|(i, _)| fired.binary_search(i).is_err())
                .filter(|(i, _)| applied.binary_search(i).is_ok() == applied_ones)
                .map(|(i, plan)| UnfiredFault {
                    fault: i,
                    plan: plan.clone(),
                })
                .collect()
        };
        self.faults_unfired = listed(false);
        self.faults_hit_nothing = listed(true);
        let planned = self.faults_planned;
        if let Some(bad) = applied.iter().find(|&&i| i >= planned) {
            if self.run.is_some() {
                self.warnings.push(format!(
                    "a fault event names fault #{bad}, which the plan does not have ({planned} planned)"
                ));
            }
        }
        self.faults_fired = fired;
    }

    /// The consumers a server-sent `basic.cancel` (`amqp: cancel`) or `channel.close`
    /// (`amqp: double-ack`) reached whose instance never subscribed again after it (no
    /// `basic.consume` from any of its incarnations), in words: `consumer[0] incarnation 1
    /// (cancelled at 0.452s)`, `... (channel closed at 0.452s)`.
    pub(crate) fn cancelled_never_resubscribed(&self) -> Vec<String> {
        use crate::timeline::{CANCEL_SENT, CHANNEL_CLOSE_SENT};
        self.faults
            .iter()
            .filter_map(|f| {
                let what = if !f.applied || f.action != "amqp" {
                    None
                } else if f.detail.starts_with(CANCEL_SENT) {
                    Some("cancelled")
                } else if f.detail.starts_with(CHANNEL_CLOSE_SENT) {
                    Some("channel closed")
                } else {
                    None
                };
                what.map(|w| (f, w))
            })
            .flat_map(|(f, w)| f.hit.iter().map(move |h| (f.fired_at_us, *h, w)))
            .filter(|(t, h, _)| {
                !self
                    .consumer_settings
                    .iter()
                    .any(|s| s.instance == h.instance && s.t_us > *t)
            })
            .map(|(t, h, what)| {
                format!(
                    "consumer[{}] incarnation {} ({what} at {:.3}s)",
                    h.instance,
                    h.incarnation,
                    t as f64 / 1e6
                )
            })
            .collect()
    }

    /// Why the run ended, when it did.
    pub(crate) fn end_reason(&self) -> Option<EndReason> {
        self.end.map(|(r, _)| r)
    }
}

/// True for a protocol fault (`commit_error`, `fetch_error`, `fetch_twice`, `heartbeat_error`):
/// applying it arms the proxy; it is exercised only when the proxy answers a request with it.
fn is_protocol_reply(f: &FaultRecord) -> bool {
    matches!(
        f.action.as_str(),
        "commit_error" | "fetch_error" | "fetch_twice" | "heartbeat_error"
    )
}

/// True when a fault was applied yet hit nothing: an action aimed at consumer processes or
/// their connections (`kill`, `terminate`, `pause`, `partition`, `latency`, `sever`) whose
/// record names no incarnation it touched. Such a fault was not exercised (DESIGN §12).
/// `rebalance` and `scale` act on the group or the roster and name no incarnation by design.
pub fn hit_nothing(f: &FaultRecord) -> bool {
    let aims_at_consumers = matches!(
        f.action.as_str(),
        "kill" | "terminate" | "pause" | "partition" | "latency" | "sever" | "amqp"
    );
    f.applied && aims_at_consumers && f.hit.is_empty()
}
