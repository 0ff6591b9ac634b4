//! The judge's leaf types: what one message's fate is ([`Outcome`]), what a run's verdict is
//! ([`Verdict`]) and what was claimed ([`Expectation`]), the totals ([`Counts`]), why a run is
//! inconclusive, the anomalies with their effects, how a consumer process ended
//! ([`ExitStatus`]), and how many samples each finding keeps.
//!
//! Invariant: this module imports nothing from the rest of the judge; every other judge module
//! may import it.

use std::fmt;

use serde::Serialize;

use crate::timeline::{EffectOutcome, ProduceStatus, SinkKind};

/// How many failed produces and rejected effects are kept as samples (the counts stay exact).
pub const FAILED_SAMPLES: usize = 100;

/// How many commits ahead of their effect are kept with their details (the count is exact).
pub const COMMIT_WINDOW_SAMPLES: usize = 1000;

/// How many per-key reorderings are kept with their details (the count is exact).
pub const KEY_ORDER_SAMPLES: usize = 20;

/// How many explanations, with their evidence, each mechanism group keeps (the count is exact).
pub const MECHANISM_SAMPLES_PER_GROUP: usize = 10;

/// The run verdict (DESIGN §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Verdict {
    /// Every message was processed exactly once and the evidence is complete.
    #[serde(rename = "EXACT")]
    Exact,
    /// Some message was processed more than once; none was proven lost.
    #[serde(rename = "DUPLICATED")]
    Duplicated,
    /// Some message was consumed without being processed; none was processed twice.
    #[serde(rename = "LOST")]
    Lost,
    /// Both a loss and a duplicate were proven.
    #[serde(rename = "LOST+DUPLICATED")]
    LostAndDuplicated,
    /// Nothing was proven wrong, but the evidence is not enough to say EXACT.
    #[serde(rename = "INCONCLUSIVE")]
    Inconclusive,
}

impl Verdict {
    /// The verdict as printed: `EXACT`, `LOST+DUPLICATED`...
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Exact => "EXACT",
            Verdict::Duplicated => "DUPLICATED",
            Verdict::Lost => "LOST",
            Verdict::LostAndDuplicated => "LOST+DUPLICATED",
            Verdict::Inconclusive => "INCONCLUSIVE",
        }
    }

    /// True when a loss was proven.
    pub fn has_loss(self) -> bool {
        matches!(self, Verdict::Lost | Verdict::LostAndDuplicated)
    }

    /// True when a duplicate was proven.
    pub fn has_duplicate(self) -> bool {
        matches!(self, Verdict::Duplicated | Verdict::LostAndDuplicated)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The delivery semantics a team claims for its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expectation {
    /// Never twice; losing is allowed.
    AtMostOnce,
    /// Never lost; twice is allowed.
    AtLeastOnce,
    /// Neither lost nor twice.
    ExactlyOnce,
}

impl Expectation {
    /// Parses `at-most-once`, `at-least-once` or `exactly-once`.
    pub fn parse(s: &str) -> Option<Expectation> {
        match s.trim() {
            "at-most-once" => Some(Expectation::AtMostOnce),
            "at-least-once" => Some(Expectation::AtLeastOnce),
            "exactly-once" => Some(Expectation::ExactlyOnce),
            _ => None,
        }
    }

    /// The claim as written in a plan.
    pub fn as_str(self) -> &'static str {
        match self {
            Expectation::AtMostOnce => "at-most-once",
            Expectation::AtLeastOnce => "at-least-once",
            Expectation::ExactlyOnce => "exactly-once",
        }
    }

    /// True when the claim forbids losing a message (at-least-once, exactly-once).
    pub fn forbids_loss(self) -> bool {
        match self {
            Expectation::AtMostOnce => false,
            Expectation::AtLeastOnce | Expectation::ExactlyOnce => true,
        }
    }

    /// True when the claim forbids processing a message twice (at-most-once, exactly-once).
    pub fn forbids_duplicate(self) -> bool {
        match self {
            Expectation::AtLeastOnce => false,
            Expectation::AtMostOnce | Expectation::ExactlyOnce => true,
        }
    }

    /// Whether `verdict` alone meets the claim; `None` for INCONCLUSIVE, which never passes.
    /// The ruling also asks whether the evidence covers what the claim forbids.
    pub fn met_by(self, verdict: Verdict) -> Option<bool> {
        if verdict == Verdict::Inconclusive {
            return None;
        }
        Some(match self {
            Expectation::AtMostOnce => !verdict.has_duplicate(),
            Expectation::AtLeastOnce => !verdict.has_loss(),
            Expectation::ExactlyOnce => !verdict.has_loss() && !verdict.has_duplicate(),
        })
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fate of one message ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged, no applied effect, and the broker committed past it.
    Lost,
    /// More than one applied effect.
    Duplicated,
    /// Acknowledged, no applied effect, and the broker counts it done, but the oracle was
    /// blind: the sink rejected effects it could not read (this one's may be among them), or
    /// no produced message had any effect at all. Neither lost nor exact: unproven.
    UnconfirmedLoss,
    /// Acknowledged, no applied effect, and the broker has not committed past it (or cannot say).
    Pending,
    /// Indeterminate produce with no applied effect: it may never have been stored, so it is
    /// neither lost nor pending.
    Unconfirmed,
    /// Effects for an ID the workload never produced.
    Phantom,
    /// Acknowledged, no applied effect, and read in the plan's dead-letter topic or queue
    /// after the run: the consumer diverted it. Neither lost nor effected: accounted for.
    Diverted,
    /// Exactly one applied effect.
    Exact,
}

impl Outcome {
    /// Lower-case name, as in the reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Lost => "lost",
            Outcome::Duplicated => "duplicated",
            Outcome::UnconfirmedLoss => "unconfirmed_loss",
            Outcome::Pending => "pending",
            Outcome::Unconfirmed => "unconfirmed",
            Outcome::Phantom => "phantom",
            Outcome::Diverted => "diverted",
            Outcome::Exact => "exact",
        }
    }

    /// The outcomes other than EXACT, listed per ID, in report order (`diverted` is no
    /// anomaly of the verdict, but its IDs are listed).
    pub const ANOMALIES: [Outcome; 7] = [
        Outcome::Lost,
        Outcome::Duplicated,
        Outcome::UnconfirmedLoss,
        Outcome::Pending,
        Outcome::Unconfirmed,
        Outcome::Phantom,
        Outcome::Diverted,
    ];
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Totals of one run. IDs are counted once whatever the number of produce records.
///
/// Invariant: `exact + duplicated + lost + unconfirmed_loss + pending + unconfirmed + diverted
/// == produced + indeterminate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Messages the workload was to produce (`RunInfo::messages`; 0 when unknown).
    pub expected: u64,
    /// `produced` events, retries included.
    pub produce_records: u64,
    /// IDs the broker acknowledged (the ledger checked for loss).
    pub produced: u64,
    /// IDs whose every produce failed (not produced: not judged).
    pub failed: u64,
    /// IDs with no acknowledgement but at least one indeterminate produce.
    pub indeterminate: u64,
    /// Acknowledged IDs stored at more than one partition/offset by producer retries.
    pub multi_offset: u64,
    /// Judged IDs (acknowledged or indeterminate) with at least one applied effect.
    pub effected: u64,
    /// Applied effects, all IDs (phantom and failed included).
    pub effects_applied: u64,
    /// Replayed effects, all IDs.
    pub effects_replayed: u64,
    /// IDs with exactly one applied effect.
    pub exact: u64,
    /// IDs with more than one applied effect (those the harness's holds duplicated aside).
    pub duplicated: u64,
    /// IDs whose extra applied effects were all the consumer's retries of an effect whose
    /// answer the harness held (`during: effect`): duplicated by the harness, not counted in
    /// `duplicated` nor against the consumer.
    pub harness_duplicated: u64,
    /// Acknowledged IDs consumed without an applied effect.
    pub lost: u64,
    /// Acknowledged IDs the broker counts done, without an applied effect, while the oracle
    /// was blind (effects rejected by the sink, or no effect at all): not provably lost.
    pub unconfirmed_loss: u64,
    /// Of `unconfirmed_loss`: Kafka IDs the broker counts done (committed past) with no
    /// applied effect, while the oracle saw, but with no accepted commit past them from any
    /// consumer connection the proxy watched: whose word counted them done is unknown.
    pub committer_unknown: u64,
    /// Acknowledged IDs not (provably) consumed and without an applied effect.
    pub pending: u64,
    /// Indeterminate IDs without an applied effect.
    pub unconfirmed: u64,
    /// Acknowledged IDs without an applied effect found in the plan's dead-letter topic or
    /// queue: diverted by the consumer, neither lost nor effected.
    pub diverted: u64,
    /// Poison messages of the workload (`workload.poison`) on the ledger.
    pub poison: u64,
    /// Distinct effect IDs that were never produced.
    pub phantom: u64,
    /// Failed IDs that nevertheless had effects (not judged; reported as a warning).
    pub failed_effected: u64,
    /// Deliveries of a message after its one applied effect that made no further effect:
    /// what a dedup table or offsets stored with the data absorbed (a redelivery not yet
    /// processed when the run ended counts too). Left out of report.json when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub redeliveries_absorbed: u64,
    /// Effects the sink could not read (`effect_rejected`).
    pub rejected: u64,
    /// Judged IDs with an applied effect that the broker never counted done (Kafka: no commit
    /// passed their offset by the last progress read; RabbitMQ: still in the queue once the
    /// consumers stopped, or the remainder could not be read whole).
    pub not_counted_done: u64,
    /// Torn lines of the file or stdout sink, never effects (`torn_line`).
    pub torn_lines: u64,
}

/// A shortfall of the evidence: why a run without proven anomalies cannot be called EXACT
/// (every variant but [`InconclusiveReason::NotCountedDone`]), or why a claim the verdict
/// seems to meet is unknown (see `verdict::blinds`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum InconclusiveReason {
    /// The timeline has no `run_started` event: the plan's claims are unknown.
    NoRunInfo,
    /// The plan has no fault, so nothing was tested beyond the happy path.
    NoFaultPlanned,
    /// Some planned faults were never applied.
    FaultsNotFired {
        /// Which ones.
        faults: Vec<UnfiredFault>,
    },
    /// Some planned faults were applied only when they could hit nothing (no live consumer
    /// process, no connection to cut): they were not exercised.
    FaultsHitNothing {
        /// Which ones.
        faults: Vec<UnfiredFault>,
    },
    /// Kafka: messages committed past with no effect, but no consumer connection the proxy
    /// watched had a commit past them accepted: the committing connection is unknown, so the
    /// loss is not proven (issue 13: loss needs the broker's word and the committer).
    CommitterUnknown {
        /// How many (`Counts::committer_unknown`).
        count: u64,
    },
    /// Acknowledged messages were neither effected nor consumed when the run ended.
    Pending {
        /// How many.
        count: u64,
    },
    /// Fewer produce records than the plan's message count.
    LedgerIncomplete {
        /// Distinct IDs with a produce record.
        recorded: u64,
        /// `RunInfo::messages`.
        expected: u64,
    },
    /// The timeline has no `run_ended` event (the harness stopped mid-run).
    RunNotEnded,
    /// No `progress` event, yet some acknowledged IDs have no applied effect: lost and pending
    /// cannot be told apart.
    NoProgress {
        /// Acknowledged IDs without an applied effect.
        without_effect: u64,
    },
    /// The run was interrupted.
    Aborted,
    /// The harness failed.
    InfrastructureError,
    /// No message was seen processed at all (no applied effect on a produced ID).
    NothingObserved {
        /// True when no effect, applied or replayed, named any produced ID: the sink may not
        /// see the consumer's work at all, so no loss can be proven either.
        blind: bool,
    },
    /// The sink rejected effects it could not read: an ID without an effect may have had one
    /// among them (not provably lost), and a rejected effect may have been a second one.
    EffectsUnread {
        /// `effect_rejected` events.
        rejected: u64,
        /// IDs the broker counts done with no readable effect (reported `unconfirmed_loss`).
        unconfirmed_loss: u64,
        /// The plan's `effects.id` rule, when the timeline has it.
        rule: Option<String>,
        /// Why the sink rejected the first one.
        reason: Option<String>,
        /// The start of the first rejected body.
        sample: Option<String>,
    },
    /// Applied effects the broker never counted done (no commit passed them, or never acked):
    /// what was observed stands, but any restart would redo them, so no promise is proven.
    /// Never makes a run INCONCLUSIVE by itself.
    NotCountedDone {
        /// How many effected IDs.
        count: u64,
        /// `kafka` or `amqp` (`RunInfo::broker`), for the wording.
        broker: String,
    },
    /// The run was stopped because the plan must be fixed (its effect ID rule read no effect).
    PlanError,
    /// An output topic (`kafka-topic` boundary) could not be read to its end once the run
    /// stopped (an open transaction, a broker that stopped answering): an effect may be
    /// missing (no loss provable) and a second one may be unread.
    OutputTopicUnread {
        /// The topic.
        topic: String,
    },
    /// Faults that act through the proxy fired only while a consumer connection bypassed it:
    /// they did not reach that connection, so they were not exercised.
    FaultsBypassed {
        /// Which ones.
        faults: Vec<UnfiredFault>,
        /// Consumer connections seen straight to the broker.
        connections: u64,
    },
    /// Processes of the consumer that outlived their incarnation and were still alive after
    /// SIGKILL: they may go on applying effects or committing after the run, so no claim about
    /// the messages is known.
    DescendantsSurvived {
        /// Which ones.
        processes: Vec<SurvivingProcess>,
    },
    /// Messages duplicated only by the consumer's retries of an effect whose answer the harness
    /// held: what the consumer would have done without the hold is unknown.
    HarnessDuplicated {
        /// How many.
        count: u64,
    },
    /// The plan's dead-letter topic or queue could not be read whole after the run: an ID with
    /// no effect may have been diverted there, so no loss is proven.
    DeadLettersUnread {
        /// The dead-letter topic or queue.
        destination: String,
    },
    /// The consumer stopped moving at a poison message (a liveness finding): its partition's
    /// committed offset never passed it, or the queue still held it when the run ended; the
    /// messages behind it were never processed.
    StalledOnPoison {
        /// Where each stall happened.
        stalls: Vec<Stall>,
    },
    /// A server-sent `basic.cancel` (`amqp: cancel`) or `channel.close` (`amqp: double-ack`)
    /// ended a consumer's subscription and its instance never subscribed again while messages
    /// were left pending (a liveness finding:
    /// the consumer neither re-subscribed nor exited to be restarted).
    ConsumerCancelled {
        /// The consumers cancelled, in words (`consumer[0] incarnation 1 (cancelled at 0.452s)`,
        /// or `(channel closed at ...)` for `amqp: double-ack`).
        consumers: Vec<String>,
    },
}

/// Where a consumer stopped moving at a poison message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stall {
    /// The poison message's ID.
    pub id: String,
    /// Its partition (Kafka).
    pub partition: Option<i32>,
    /// Its offset (Kafka), where the partition stuck.
    pub offset: Option<i64>,
    /// The group's last committed offset on that partition (Kafka).
    pub committed: Option<i64>,
    /// Records after it in its partition that were never committed (Kafka).
    pub behind: Option<i64>,
    /// How many times the proxy saw it handed to the consumer.
    pub deliveries: u64,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.partition, self.offset) {
            (Some(p), Some(o)) => {
                write!(f, "partition {p} stuck at offset {o} (poison {})", self.id)?;
                if let Some(c) = self.committed {
                    write!(f, ", committed offset {c}")?;
                }
                if let Some(b) = self.behind {
                    write!(
                        f,
                        ", {b} record{} behind it never processed",
                        plural(b.max(0) as u64)
                    )?;
                }
            }
            _ => write!(
                f,
                "poison {} never settled: still in the queue when the consumers stopped",
                self.id
            )?,
        }
        write!(
            f,
            ", handed to the consumer {} time{}",
            self.deliveries,
            plural(self.deliveries)
        )
    }
}

/// A consumer process the harness could not end (a `descendant` event with fate `survived`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SurvivingProcess {
    /// Instance.
    pub instance: u32,
    /// Incarnation.
    pub incarnation: u32,
    /// Process id.
    pub pid: u32,
    /// Command name (`/proc/PID/comm`).
    pub command: String,
}

impl fmt::Display for SurvivingProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} `{}` (consumer[{}] incarnation {})",
            self.pid, self.command, self.instance, self.incarnation
        )
    }
}

impl InconclusiveReason {
    /// Stable machine name (`faults_not_fired`...), as in `report.json`.
    pub fn code(&self) -> &'static str {
        match self {
            InconclusiveReason::NoRunInfo => "no_run_info",
            InconclusiveReason::NoFaultPlanned => "no_fault_planned",
            InconclusiveReason::FaultsNotFired { .. } => "faults_not_fired",
            InconclusiveReason::FaultsHitNothing { .. } => "faults_hit_nothing",
            InconclusiveReason::CommitterUnknown { .. } => "committer_unknown",
            InconclusiveReason::Pending { .. } => "pending",
            InconclusiveReason::LedgerIncomplete { .. } => "ledger_incomplete",
            InconclusiveReason::RunNotEnded => "run_not_ended",
            InconclusiveReason::NoProgress { .. } => "no_progress",
            InconclusiveReason::Aborted => "aborted",
            InconclusiveReason::InfrastructureError => "infrastructure_error",
            InconclusiveReason::NothingObserved { .. } => "nothing_observed",
            InconclusiveReason::EffectsUnread { .. } => "effects_unread",
            InconclusiveReason::NotCountedDone { .. } => "not_counted_done",
            InconclusiveReason::PlanError => "plan_error",
            InconclusiveReason::OutputTopicUnread { .. } => "output_topic_unread",
            InconclusiveReason::FaultsBypassed { .. } => "faults_bypassed",
            InconclusiveReason::HarnessDuplicated { .. } => "harness_duplicated",
            InconclusiveReason::DescendantsSurvived { .. } => "descendants_survived",
            InconclusiveReason::DeadLettersUnread { .. } => "dead_letters_unread",
            InconclusiveReason::StalledOnPoison { .. } => "stalled_on_poison",
            InconclusiveReason::ConsumerCancelled { .. } => "consumer_cancelled",
        }
    }
}

impl fmt::Display for InconclusiveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InconclusiveReason::NoRunInfo => {
                f.write_str("the timeline has no run_started event, so the plan is unknown")
            }
            InconclusiveReason::NoFaultPlanned => f.write_str(
                "no fault was planned: a clean run without crashes proves nothing about delivery semantics",
            ),
            InconclusiveReason::FaultsNotFired { faults } => {
                let n = faults.len();
                write!(
                    f,
                    "{n} planned fault{} never fired: {}",
                    if n == 1 { "" } else { "s" },
                    fault_list(faults)
                )
            }
            InconclusiveReason::FaultsHitNothing { faults } => {
                let n = faults.len();
                write!(
                    f,
                    "{n} planned fault{} fired but hit nothing (no live consumer process or connection to act on), so {} not exercised: {}",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "it was" } else { "they were" },
                    fault_list(faults)
                )
            }
            InconclusiveReason::CommitterUnknown { count } => committer_unknown(f, *count),
            InconclusiveReason::Pending { count } => write!(
                f,
                "{count} message{} still pending at the end (not processed, not committed past)",
                plural(*count)
            ),
            InconclusiveReason::LedgerIncomplete { recorded, expected } => write!(
                f,
                "the ledger is incomplete: {recorded} of {expected} messages have a produce record"
            ),
            InconclusiveReason::RunNotEnded => f.write_str(
                "the run never ended (no run_ended event: the harness stopped mid-run)",
            ),
            InconclusiveReason::NoProgress { without_effect } => write!(
                f,
                "no progress was read from the broker, so {without_effect} message{} without an effect cannot be told lost from pending",
                plural(*without_effect)
            ),
            InconclusiveReason::Aborted => f.write_str("the run was aborted (interrupted)"),
            InconclusiveReason::InfrastructureError => {
                f.write_str("the run ended on an infrastructure error of the harness")
            }
            InconclusiveReason::NothingObserved { blind: true } => f.write_str(
                "no produced message was observed being processed: no effect named any of them, \
                 so the sink may not be seeing the consumer's work (check the effect URL or \
                 file, the `effects.id` rule, and the consumer's own output in the run \
                 folder's logs/ directory: consumer-0-1.stderr is instance 0's first \
                 incarnation); no message is called lost on this evidence",
            ),
            InconclusiveReason::NothingObserved { blind: false } => f.write_str(
                "no produced message was observed being processed: no applied effect named any \
                 of them (only replays of an idempotency key)",
            ),
            InconclusiveReason::EffectsUnread {
                rejected,
                unconfirmed_loss,
                rule,
                reason,
                sample,
            } => effects_unread(f, *rejected, *unconfirmed_loss, (rule, reason, sample)),
            InconclusiveReason::NotCountedDone { count, broker } => {
                not_counted_done(f, *count, broker)
            }
            InconclusiveReason::FaultsBypassed {
                faults,
                connections,
            } => write!(
                f,
                "the consumer bypassed the proxy ({connections} connection{} straight to the broker): {} fault{} acting through the proxy fired only while it did, did not reach those connections and {} not exercised: {}",
                plural(*connections),
                faults.len(),
                plural(faults.len() as u64),
                if faults.len() == 1 { "was" } else { "were" },
                fault_list(faults)
            ),
            InconclusiveReason::HarnessDuplicated { count } => write!(
                f,
                "{count} message{} duplicated only by the consumer retrying an effect whose answer the harness held for a `during: effect` fault: the harness caused {}, so {} not counted against the consumer, and what it would have done without the hold is unknown",
                plural(*count),
                if *count == 1 { "it" } else { "them" },
                if *count == 1 { "it is" } else { "they are" }
            ),
            InconclusiveReason::PlanError => f.write_str(
                "the run was stopped early: the plan's effect ID rule read none of the first effects (see the warnings)",
            ),
            InconclusiveReason::DescendantsSurvived { processes } => {
                descendants_survived(f, processes)
            }
            InconclusiveReason::OutputTopicUnread { topic } => write!(
                f,
                "the output topic {topic} could not be read to its end once the run stopped (an open transaction, or the broker stopped answering): a missing effect proves no loss, and an unread record may be a second one"
            ),
            InconclusiveReason::DeadLettersUnread { destination } => write!(
                f,
                "the dead-letter destination {destination} could not be read whole after the run: a message without an effect may have been diverted there, so none is proven lost"
            ),
            InconclusiveReason::StalledOnPoison { stalls } => write!(
                f,
                "the consumer stopped moving at a poison message (liveness): {}",
                stalls.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            ),
            InconclusiveReason::ConsumerCancelled { consumers } => write!(
                f,
                "a server-sent basic.cancel (or channel.close) ended the subscription of {} and no process of that instance subscribed again (liveness: the consumer neither re-subscribed nor exited to be restarted): the messages left pending were never delivered",
                consumers.join(", ")
            ),
        }
    }
}

/// The text of [`InconclusiveReason::CommitterUnknown`].
fn committer_unknown(f: &mut fmt::Formatter<'_>, count: u64) -> fmt::Result {
    write!(
        f,
        "{count} message{s} the group committed past without an effect, but no consumer connection through the proxy had a commit past {them} accepted (a commit that bypassed the proxy, offsets reset or moved by another client, a group member outside the run): the committing connection is unknown, so {them} {are} not proven lost",
        s = plural(count),
        them = if count == 1 { "it" } else { "them" },
        are = if count == 1 { "is" } else { "are" },
    )
}

/// The text of [`InconclusiveReason::DescendantsSurvived`].
fn descendants_survived(f: &mut fmt::Formatter<'_>, processes: &[SurvivingProcess]) -> fmt::Result {
    let one = processes.len() == 1;
    write!(
        f,
        "{} consumer process{} outlived {} incarnation and could not be ended, not even by SIGKILL: {}; {} may still apply effects or commit, so no claim about the messages is known",
        processes.len(),
        if one { "" } else { "es" },
        if one { "its" } else { "their" },
        processes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        if one { "it" } else { "they" },
    )
}

/// The text of [`InconclusiveReason::NotCountedDone`], worded for the broker.
fn not_counted_done(f: &mut fmt::Formatter<'_>, count: u64, broker: &str) -> fmt::Result {
    let one = count == 1;
    let (never, what) = match (broker == "amqp", one) {
        (true, _) => (
            "never acknowledged",
            "still in the queue once the consumers stopped",
        ),
        (false, true) => (
            "never committed",
            "no commit passed its offset by the last progress read",
        ),
        (false, false) => (
            "never committed",
            "no commit passed their offsets by the last progress read",
        ),
    };
    write!(
        f,
        "the broker never counted {count} processed message{} done ({never}: {what}): \
         what was observed stands, but any restart would process {} again",
        plural(count),
        if one { "it" } else { "them" }
    )
}

/// `#0 kill: consumer; #2 pause: ...`
fn fault_list(faults: &[UnfiredFault]) -> String {
    let list: Vec<String> = faults
        .iter()
        .map(|u| format!("#{} {}", u.fault, u.plan))
        .collect();
    list.join("; ")
}

/// The text of [`InconclusiveReason::EffectsUnread`]: the rule, the sink's reason, a sample.
fn effects_unread(
    f: &mut fmt::Formatter<'_>,
    rejected: u64,
    unconfirmed_loss: u64,
    (rule, reason, sample): (&Option<String>, &Option<String>, &Option<String>),
) -> fmt::Result {
    write!(
        f,
        "the sink rejected {rejected} effect{} it could not read",
        plural(rejected)
    )?;
    match rule {
        Some(rule) => write!(f, " with the `effects.id` rule `{rule}`")?,
        None => f.write_str(" with the plan's `effects.id` rule")?,
    }
    if let Some(reason) = reason {
        write!(f, " ({reason})")?;
    }
    if let Some(sample) = sample {
        let sample = sample.replace('`', "'").replace(['\n', '\r'], " ");
        write!(f, "; first rejected body: `{sample}`")?;
    }
    if unconfirmed_loss > 0 {
        write!(
            f,
            "; so {unconfirmed_loss} message{} the broker counts done without a readable effect {} not called lost (unconfirmed loss: {} effect may be among the rejected)",
            plural(unconfirmed_loss),
            if unconfirmed_loss == 1 { "is" } else { "are" },
            if unconfirmed_loss == 1 { "its" } else { "their" }
        )?;
    }
    f.write_str("; a rejected effect may also hide a second application")
}

/// Whether the claimed semantics held, as far as the evidence shows (DESIGN §12: a claim the
/// evidence cannot cover is unknown, never met).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectationState {
    /// The evidence covers everything the claim forbids, and none of it happened.
    Met,
    /// A proven loss or duplicate breaks the claim.
    Violated,
    /// Nothing proven breaks the claim, but the evidence does not cover what it forbids (or
    /// the verdict is INCONCLUSIVE, or there is no known claim).
    Unknown,
}

impl ExpectationState {
    /// `met`, `violated` or `unknown`, as in `report.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectationState::Met => "met",
            ExpectationState::Violated => "violated",
            ExpectationState::Unknown => "unknown",
        }
    }

    /// `Some(true)` when met, `Some(false)` when violated, `None` when unknown.
    pub fn as_met(self) -> Option<bool> {
        match self {
            ExpectationState::Met => Some(true),
            ExpectationState::Violated => Some(false),
            ExpectationState::Unknown => None,
        }
    }
}

/// `""` for one, `"s"` otherwise.
pub(crate) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A planned fault that never fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnfiredFault {
    /// Index in the plan.
    pub fault: usize,
    /// The plan's line for it (`RunInfo::planned_faults`).
    pub plan: String,
}

/// One ID whose outcome is not EXACT, with the evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    /// The message ID.
    pub id: String,
    /// What happened to it.
    pub outcome: Outcome,
    /// The kept produce record's status; `None` for a phantom.
    pub produce_status: Option<ProduceStatus>,
    /// Partition of the kept produce record.
    pub partition: Option<i32>,
    /// Offset of the kept produce record.
    pub offset: Option<i64>,
    /// When the kept produce record was written (µs since start).
    pub produced_at_us: Option<u64>,
    /// Committed offset of its partition in the last progress event, when known.
    pub committed: Option<i64>,
    /// Every effect seen for it, in timeline order.
    pub effects: Vec<EffectSeen>,
}

impl Anomaly {
    /// Number of applied effects.
    pub fn applied(&self) -> usize {
        self.effects
            .iter()
            .filter(|e| e.outcome == EffectOutcome::Applied)
            .count()
    }
}

/// One observed effect of an anomalous ID.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectSeen {
    /// Timeline position.
    pub seq: u64,
    /// When (µs since start).
    pub t_us: u64,
    /// Instance that made it, when known.
    pub instance: Option<u32>,
    /// Incarnation that made it, when known.
    pub incarnation: Option<u32>,
    /// Applied or replayed.
    pub outcome: EffectOutcome,
    /// Which sink saw it.
    pub sink: SinkKind,
    /// How the instance and incarnation were found (socket owner, URL...).
    #[serde(flatten)]
    pub attribution: crate::timeline::Attribution,
}

/// How a consumer process ended, read from a `process` event's status (`exit 0`,
/// `signal SIGKILL`, `signal 9`, `unknown`); events.jsonl keeps the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// SIGTERM ended it: it was asked to stop, a graceful end.
    Terminated,
    /// Any other signal ended it (named, or by number when it has no name): a crash.
    Signalled(String),
    /// No status, or one this reading does not know.
    Unknown,
}

impl ExitStatus {
    /// Reads the status text of a `process` event.
    pub fn parse(text: &str) -> ExitStatus {
        if let Some(code) = text.strip_prefix("exit ") {
            return code.parse().map_or(ExitStatus::Unknown, ExitStatus::Exited);
        }
        match text.strip_prefix("signal ") {
            Some("SIGTERM") => ExitStatus::Terminated,
            Some(signal) => ExitStatus::Signalled(signal.to_owned()),
            None => ExitStatus::Unknown,
        }
    }

    /// True when a signal other than SIGTERM ended the process: it died without a chance to
    /// finish (a kill, a crash).
    pub fn is_crash(&self) -> bool {
        match self {
            ExitStatus::Signalled(_) => true,
            ExitStatus::Exited(_) | ExitStatus::Terminated | ExitStatus::Unknown => false,
        }
    }

    /// True when the process exited with code 0.
    pub fn is_success(&self) -> bool {
        match self {
            ExitStatus::Exited(code) => *code == 0,
            ExitStatus::Terminated | ExitStatus::Signalled(_) | ExitStatus::Unknown => false,
        }
    }
}

/// For `skip_serializing_if`: a count of 0 is left out.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_as_the_supervisor_writes_them() {
        assert_eq!(ExitStatus::parse("exit 0"), ExitStatus::Exited(0));
        assert_eq!(ExitStatus::parse("exit 143"), ExitStatus::Exited(143));
        assert_eq!(ExitStatus::parse("signal SIGTERM"), ExitStatus::Terminated);
        assert_eq!(
            ExitStatus::parse("signal SIGKILL"),
            ExitStatus::Signalled("SIGKILL".into())
        );
        assert_eq!(
            ExitStatus::parse("signal 64"),
            ExitStatus::Signalled("64".into())
        );
        assert_eq!(ExitStatus::parse("unknown"), ExitStatus::Unknown);
        assert_eq!(ExitStatus::parse(""), ExitStatus::Unknown);
    }

    #[test]
    fn a_signal_other_than_sigterm_is_a_crash_and_only_exit_0_a_success() {
        for crash in ["signal SIGKILL", "signal SIGSEGV", "signal 64"] {
            assert!(ExitStatus::parse(crash).is_crash(), "{crash}");
            assert!(!ExitStatus::parse(crash).is_success(), "{crash}");
        }
        for not_crash in ["exit 0", "exit 1", "signal SIGTERM", "unknown", ""] {
            assert!(!ExitStatus::parse(not_crash).is_crash(), "{not_crash}");
        }
        assert!(ExitStatus::parse("exit 0").is_success());
        for not_success in ["exit 1", "signal SIGTERM", "signal SIGKILL", "unknown", ""] {
            assert!(
                !ExitStatus::parse(not_success).is_success(),
                "{not_success}"
            );
        }
    }
}
