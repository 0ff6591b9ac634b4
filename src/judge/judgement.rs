//! [`Judgement`]: the whole judgement of one run, as the reports read it — the ruling
//! (verdict, claim, shortfalls), the totals and anomalies, the run facts, and the findings
//! that explain them (mechanisms, the commit window, key order, ownership).
//!
//! Invariant: a `Judgement` is built only by the judge's `analyze`, from the events alone.

use crate::judge::bypass::Bypass;
use crate::judge::commit_window::CommitWindow;
use crate::judge::facts::{
    ConnectionClosed, ConsumerSetting, Holds, Incarnation, OutputTopicRead, ProgressSnapshot,
    RejectedEffect,
};
use crate::judge::key_order::KeyOrder;
use crate::judge::ledger::FailedProduce;
use crate::judge::mechanism::{Mechanisms, OwnershipChange};
use crate::judge::model::{
    Anomaly, Counts, Expectation, ExpectationState, InconclusiveReason, Outcome, UnfiredFault,
    Verdict,
};
use crate::judge::verdict;
use crate::timeline::{EndReason, FaultRecord, RunInfo, SinkKind};

/// The whole judgement of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// What the run announced about itself; `None` when the timeline has no `run_started`.
    pub run: Option<RunInfo>,
    /// The run verdict.
    pub verdict: Verdict,
    /// The claimed semantics, parsed from `RunInfo::expect`; `None` when absent or unknown.
    pub expectation: Option<Expectation>,
    /// Whether the observed behaviour meets the claim; `None` when unknown
    /// ([`Judgement::expectation_state`]).
    pub expectation_met: Option<bool>,
    /// Whether the claim held, as far as the evidence shows: met only when the evidence
    /// covers what it forbids.
    pub expectation_state: ExpectationState,
    /// When the claim is unknown: the shortfalls that hide what it forbids (the inconclusive
    /// reasons when the verdict is INCONCLUSIVE; empty when there is no known claim).
    pub expectation_unknown: Vec<InconclusiveReason>,
    /// Totals.
    pub counts: Counts,
    /// Why the evidence is not enough to say EXACT. Non-empty exactly when the verdict is
    /// INCONCLUSIVE.
    pub inconclusive_reasons: Vec<InconclusiveReason>,
    /// The same shortfalls of evidence when the verdict is a proven loss or duplicate (they do
    /// not weaken a proof but the report should still say them), and whatever the verdict the
    /// limits of any promise ([`InconclusiveReason::NotCountedDone`]).
    pub caveats: Vec<InconclusiveReason>,
    /// Every ID whose outcome is not EXACT, ordered lost, duplicated, unconfirmed loss,
    /// pending, unconfirmed, phantom; within one outcome in ledger order (phantoms by first effect).
    pub anomalies: Vec<Anomaly>,
    /// Every `fault` event, in timeline order (applied or not).
    pub faults: Vec<FaultRecord>,
    /// Number of planned faults (`RunInfo::planned_faults`).
    pub faults_planned: usize,
    /// Plan indices of the faults applied at least once, ascending.
    pub faults_fired: Vec<usize>,
    /// Planned faults that were never applied.
    pub faults_unfired: Vec<UnfiredFault>,
    /// Planned faults applied only when they hit nothing (not exercised; see
    /// [`hit_nothing`](crate::judge::hit_nothing)).
    pub faults_hit_nothing: Vec<UnfiredFault>,
    /// Consumer processes, ordered by start time.
    pub incarnations: Vec<Incarnation>,
    /// `warning` events in order, then the judge's own observations.
    pub warnings: Vec<String>,
    /// Why the run ended; `None` when the timeline has no `run_ended` (harness crash).
    pub end_reason: Option<EndReason>,
    /// When the run ended (µs since start), or the last event's time when it never did.
    pub ended_at_us: Option<u64>,
    /// The broker's last view of progress, which decides lost versus pending.
    pub last_progress: Option<ProgressSnapshot>,
    /// The first [`FAILED_SAMPLES`](crate::judge::model::FAILED_SAMPLES) failed produces.
    pub failed_samples: Vec<FailedProduce>,
    /// The first [`FAILED_SAMPLES`](crate::judge::model::FAILED_SAMPLES) rejected effects.
    pub rejected_samples: Vec<RejectedEffect>,
    /// Offsets the broker accepted a commit for before their effect was observed (the
    /// at-most-once window), whether or not a crash hit it.
    pub commits_ahead: CommitWindow,
    /// How each lost or duplicated ID happened, grouped by mechanism and fault.
    pub mechanisms: Mechanisms,
    /// Messages applied out of their key's produce order (`workload.keys`).
    pub key_order: KeyOrder,
    /// Partition ownership over time, as the proxy saw the assignments.
    pub ownership: Vec<OwnershipChange>,
    /// How AMQP consumers asked to be served (no-ack mode, prefetch), as the proxy saw it.
    pub consumer_settings: Vec<ConsumerSetting>,
    /// Proxied consumer connections that ended before the run did (AMQP).
    pub connections_closed: Vec<ConnectionClosed>,
    /// Frames the proxy held for triggers, and how long (design §12: a hold delays every later
    /// response on its connection).
    pub holds: Holds,
    /// The sink's answers to effects held for `during: effect` faults, and how long (answered
    /// once the fault ended; `dropped`: withheld, the consumer was being stopped).
    pub effect_holds: Holds,
    /// Requests the proxy answered with a protocol fault's reply (`commit_error`,
    /// `fetch_error`): what the consumer was told and what the broker had.
    pub replies: Vec<crate::judge::replies::Reply>,
    /// Consumer connections the run's watch found straight to the broker, past the proxy.
    pub bypasses: Vec<Bypass>,
    /// Planned faults that fired only while a bypass escaped them (not exercised).
    pub faults_bypassed: Vec<UnfiredFault>,
    /// What was read back from output topics (`kafka-topic` boundaries): records under each
    /// isolation level, and those of aborted transactions.
    pub output_topics: Vec<OutputTopicRead>,
    /// What became of each poison message (`workload.poison`), the first
    /// [`POISON_SAMPLES`](crate::judge::poison::POISON_SAMPLES), and whether its partition or
    /// queue kept moving after it.
    pub poison: Vec<crate::judge::poison::PoisonFate>,
    /// For a run whose plan declared `boundaries`: each boundary's own judgement, in plan
    /// order. The fields above are then the overall ruling (verdict, claim, shortfalls), the
    /// run facts every boundary shares, counts summed over the boundaries, and no anomalies
    /// or mechanisms of their own (each boundary has its). Empty for a one-sink run.
    pub boundaries: Vec<BoundaryJudgement>,
}

/// One boundary's judgement: its name, sink and promise, and the judgement of its effects.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundaryJudgement {
    /// The boundary's name.
    pub name: String,
    /// Its sink kind (`http`, `file`, `kafka-topic`...).
    pub sink: SinkKind,
    /// Its promise as written (`exactly-once`...).
    pub expect: String,
    /// The judgement of its own effects against its own promise.
    pub judgement: Judgement,
}

impl Judgement {
    /// The process exit code (DESIGN §6): 4 when the run ended on an infrastructure error,
    /// else 3 when inconclusive or when the claim is unknown, 0 when the expectation is met,
    /// 1 when it is violated.
    pub fn exit_code(&self) -> i32 {
        verdict::exit_code(self.end_reason, self.verdict, self.expectation_state)
    }

    /// True when the run was against the embedded mock cluster (a demo, not evidence).
    pub fn mock_broker(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.mock_broker)
    }

    /// The claim as written in the plan (`at-least-once`), `none`, or `per boundary` for a
    /// run with boundaries (each has its own).
    pub fn expect_str(&self) -> &str {
        if !self.boundaries.is_empty() {
            return "per boundary";
        }
        self.run.as_ref().map_or("none", |r| r.expect.as_str())
    }

    /// Anomalies with one outcome, in report order.
    pub fn anomalies_of(&self, outcome: Outcome) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(move |a| a.outcome == outcome)
    }
}
