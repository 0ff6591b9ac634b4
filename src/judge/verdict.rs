//! The verdict and its precedence (DESIGN §6): a proven loss or duplicate is the verdict
//! whatever else happened; otherwise any shortfall of evidence makes the run INCONCLUSIVE; only
//! then EXACT. The claimed semantics is then judged against the verdict *and* the evidence
//! (DESIGN §12): a claim is met only when the evidence covers what it forbids, and the exit
//! code follows.
//!
//! Invariants: INCONCLUSIVE never meets an expectation (a checker that cannot tell yields
//! "unknown", never a pass); a proven violation stands whatever the evidence missed; a claim
//! whose forbidden outcome the evidence could not see (pending or unconfirmed IDs, unread
//! effects, an interrupted run, work the broker never counted done under EXACT) is unknown;
//! the shortfalls are kept as caveats when a proof stands.

use crate::judge::facts::RunFacts;
use crate::judge::model::{Counts, Expectation, ExpectationState, InconclusiveReason, Verdict};
use crate::timeline::EndReason;

/// The judge's ruling on a run: the verdict, the claim and why the evidence falls short.
pub(crate) struct Ruling {
    /// The verdict.
    pub(crate) verdict: Verdict,
    /// The claimed semantics, when known.
    pub(crate) expectation: Option<Expectation>,
    /// Whether the claim held, as far as the evidence shows.
    pub(crate) expectation_state: ExpectationState,
    /// When the claim is unknown: the shortfalls that hide what it forbids.
    pub(crate) expectation_unknown: Vec<InconclusiveReason>,
    /// The shortfalls, when they make the run INCONCLUSIVE.
    pub(crate) inconclusive_reasons: Vec<InconclusiveReason>,
    /// The shortfalls, when a proven anomaly stands anyway, and the limits of any promise
    /// (work the broker never counted done) whatever the verdict.
    pub(crate) caveats: Vec<InconclusiveReason>,
    /// Set when the plan's claim is not one the judge knows.
    pub(crate) unknown_expectation: Option<String>,
}

/// What the ledger adds to the facts for the shortfalls.
pub(crate) struct LedgerEvidence {
    /// Distinct IDs with a produce record.
    pub(crate) recorded: u64,
    /// Acknowledged IDs without an applied effect.
    pub(crate) acked_without_effect: u64,
    /// Effects (applied or replayed) that named a produced ID.
    pub(crate) effects_on_ledger: u64,
    /// Where the consumer stopped moving at a poison message.
    pub(crate) stalls: Vec<crate::judge::model::Stall>,
}

/// Rules on a run from its facts and its counts.
pub(crate) fn rule(facts: &RunFacts, counts: &Counts, ledger: &LedgerEvidence) -> Ruling {
    let reasons = shortfalls(facts, counts, ledger);
    let verdict = verdict(counts, &reasons);
    let (inconclusive_reasons, mut caveats) = if verdict == Verdict::Inconclusive {
        (reasons, Vec::new())
    } else {
        (Vec::new(), reasons)
    };
    if counts.not_counted_done > 0 {
        caveats.push(InconclusiveReason::NotCountedDone {
            count: counts.not_counted_done,
            broker: facts
                .run
                .as_ref()
                .map_or_else(|| "kafka".to_owned(), |r| r.broker.clone()),
        });
    }
    let expectation = facts
        .run
        .as_ref()
        .and_then(|r| Expectation::parse(&r.expect));
    let unknown_expectation = match (&facts.run, expectation) {
        (Some(r), None) => Some(format!(
            "unknown expectation {:?}: nothing to judge the verdict against",
            r.expect
        )),
        _ => None,
    };
    let (expectation_state, expectation_unknown) =
        claim(expectation, verdict, &inconclusive_reasons, &caveats);
    Ruling {
        verdict,
        expectation,
        expectation_state,
        expectation_unknown,
        inconclusive_reasons,
        caveats,
        unknown_expectation,
    }
}

/// The precedence: a proof of loss or duplicate first, then any shortfall, then EXACT.
/// [`InconclusiveReason::NotCountedDone`] is never among `reasons`: it limits the promise,
/// not the verdict. A consumer process still alive after SIGKILL may yet apply the effect of
/// a message that looks lost, so no loss is proven while one is (a duplicate seen stays seen).
fn verdict(counts: &Counts, reasons: &[InconclusiveReason]) -> Verdict {
    let survivors = reasons
        .iter()
        .any(|r| matches!(r, InconclusiveReason::DescendantsSurvived { .. }));
    match (counts.lost > 0 && !survivors, counts.duplicated > 0) {
        (true, true) => Verdict::LostAndDuplicated,
        (true, false) => Verdict::Lost,
        (false, true) => Verdict::Duplicated,
        (false, false) if !reasons.is_empty() => Verdict::Inconclusive,
        (false, false) => Verdict::Exact,
    }
}

/// Every reason the evidence is not enough to say EXACT, in report order.
fn shortfalls(
    facts: &RunFacts,
    counts: &Counts,
    ledger: &LedgerEvidence,
) -> Vec<InconclusiveReason> {
    let mut reasons = Vec::new();
    match &facts.run {
        None => reasons.push(InconclusiveReason::NoRunInfo),
        Some(r) if r.planned_faults.is_empty() => reasons.push(InconclusiveReason::NoFaultPlanned),
        Some(_) => {}
    }
    if !facts.faults_unfired.is_empty() {
        reasons.push(InconclusiveReason::FaultsNotFired {
            faults: facts.faults_unfired.clone(),
        });
    }
    if !facts.faults_hit_nothing.is_empty() {
        reasons.push(InconclusiveReason::FaultsHitNothing {
            faults: facts.faults_hit_nothing.clone(),
        });
    }
    if facts.rejected > 0 {
        let first = facts.rejected_samples.first();
        reasons.push(InconclusiveReason::EffectsUnread {
            rejected: facts.rejected,
            unconfirmed_loss: counts.unconfirmed_loss - counts.committer_unknown,
            rule: facts.run.as_ref().and_then(|r| r.effects_id.clone()),
            reason: first.map(|s| s.reason.clone()),
            sample: first.map(|s| s.sample.clone()),
        });
    }
    for topic in facts.output_topics.iter().filter(|t| !t.complete) {
        reasons.push(InconclusiveReason::OutputTopicUnread {
            topic: topic.topic.clone(),
        });
    }
    if let Some(destination) = facts.dead_letters_unread() {
        reasons.push(InconclusiveReason::DeadLettersUnread { destination });
    }
    if !ledger.stalls.is_empty() {
        reasons.push(InconclusiveReason::StalledOnPoison {
            stalls: ledger.stalls.clone(),
        });
    }
    if counts.committer_unknown > 0 {
        reasons.push(InconclusiveReason::CommitterUnknown {
            count: counts.committer_unknown,
        });
    }
    let cancelled = facts.cancelled_never_resubscribed();
    if counts.pending > 0 && !cancelled.is_empty() {
        reasons.push(InconclusiveReason::ConsumerCancelled {
            consumers: cancelled,
        });
    }
    if counts.pending > 0 {
        reasons.push(InconclusiveReason::Pending {
            count: counts.pending,
        });
    }
    if facts
        .run
        .as_ref()
        .is_some_and(|r| ledger.recorded < r.messages)
    {
        reasons.push(InconclusiveReason::LedgerIncomplete {
            recorded: ledger.recorded,
            expected: counts.expected,
        });
    }
    match facts.end_reason() {
        None => reasons.push(InconclusiveReason::RunNotEnded),
        Some(EndReason::Aborted) => reasons.push(InconclusiveReason::Aborted),
        Some(EndReason::InfrastructureError) => {
            reasons.push(InconclusiveReason::InfrastructureError)
        }
        Some(EndReason::PlanError) => reasons.push(InconclusiveReason::PlanError),
        Some(EndReason::Settled | EndReason::Deadline) => {}
    }
    if facts.progress.is_none() && facts.remainder.is_none() && ledger.acked_without_effect > 0 {
        reasons.push(InconclusiveReason::NoProgress {
            without_effect: ledger.acked_without_effect,
        });
    }
    if counts.exact + counts.duplicated + counts.harness_duplicated == 0 {
        reasons.push(InconclusiveReason::NothingObserved {
            blind: ledger.effects_on_ledger == 0,
        });
    }
    if !facts.faults_bypassed.is_empty() {
        reasons.push(InconclusiveReason::FaultsBypassed {
            faults: facts.faults_bypassed.clone(),
            connections: facts.bypasses.len() as u64,
        });
    }
    if counts.harness_duplicated > 0 {
        reasons.push(InconclusiveReason::HarnessDuplicated {
            count: counts.harness_duplicated,
        });
    }
    if !facts.survivors.is_empty() {
        reasons.push(InconclusiveReason::DescendantsSurvived {
            processes: facts.survivors.clone(),
        });
    }
    reasons
}

/// Which side of a claim a shortfall hides: whether a loss, a duplicate, both or neither
/// could have happened unseen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blind {
    /// It says nothing about what happened to the messages (fault coverage).
    Neither,
    /// A loss could have gone unseen.
    Loss,
    /// A duplicate could have gone unseen (or will happen on any restart).
    Duplicate,
    /// Either could.
    Both,
}

impl Blind {
    /// True when what it hides is something `x` forbids.
    fn hides_from(self, x: Expectation) -> bool {
        match self {
            Blind::Neither => false,
            Blind::Loss => x.forbids_loss(),
            Blind::Duplicate => x.forbids_duplicate(),
            Blind::Both => true,
        }
    }
}

/// What `reason` hides, under `verdict`. Work the broker never counted done will be redone on
/// any restart (a duplicate to come); under EXACT it also means the run never reached the
/// state the promise is about, so it hides both sides (issue 13: EXACT needs the work counted
/// done).
fn blinds(reason: &InconclusiveReason, verdict: Verdict) -> Blind {
    match reason {
        InconclusiveReason::NoFaultPlanned
        | InconclusiveReason::FaultsNotFired { .. }
        | InconclusiveReason::FaultsHitNothing { .. }
        | InconclusiveReason::FaultsBypassed { .. } => Blind::Neither,
        InconclusiveReason::HarnessDuplicated { .. } => Blind::Duplicate,
        InconclusiveReason::Pending { .. }
        | InconclusiveReason::CommitterUnknown { .. }
        | InconclusiveReason::NoProgress { .. }
        | InconclusiveReason::LedgerIncomplete { .. }
        | InconclusiveReason::DeadLettersUnread { .. }
        | InconclusiveReason::StalledOnPoison { .. }
        | InconclusiveReason::ConsumerCancelled { .. } => Blind::Loss,
        InconclusiveReason::NoRunInfo
        | InconclusiveReason::RunNotEnded
        | InconclusiveReason::Aborted
        | InconclusiveReason::InfrastructureError
        | InconclusiveReason::NothingObserved { .. }
        | InconclusiveReason::EffectsUnread { .. }
        | InconclusiveReason::PlanError
        | InconclusiveReason::DescendantsSurvived { .. }
        | InconclusiveReason::OutputTopicUnread { .. } => Blind::Both,
        InconclusiveReason::NotCountedDone { .. } if verdict == Verdict::Exact => Blind::Both,
        InconclusiveReason::NotCountedDone { .. } => Blind::Duplicate,
    }
}

/// The claim's state, and when unknown the shortfalls behind it: unknown when INCONCLUSIVE
/// (all its reasons) or without a known claim; violated by a proof whatever else; met only
/// when no caveat hides what the claim forbids.
fn claim(
    expectation: Option<Expectation>,
    verdict: Verdict,
    inconclusive_reasons: &[InconclusiveReason],
    caveats: &[InconclusiveReason],
) -> (ExpectationState, Vec<InconclusiveReason>) {
    if verdict == Verdict::Inconclusive {
        return (ExpectationState::Unknown, inconclusive_reasons.to_vec());
    }
    let Some(x) = expectation else {
        return (ExpectationState::Unknown, Vec::new());
    };
    if x.met_by(verdict) == Some(false) {
        return (ExpectationState::Violated, Vec::new());
    }
    let hidden: Vec<InconclusiveReason> = caveats
        .iter()
        .filter(|r| blinds(r, verdict).hides_from(x))
        .cloned()
        .collect();
    if hidden.is_empty() {
        (ExpectationState::Met, hidden)
    } else {
        (ExpectationState::Unknown, hidden)
    }
}

/// The process exit code (DESIGN §6): 4 when the run ended on an infrastructure error, 2 when
/// it was stopped because the plan must be fixed, else 3 when inconclusive (or when there is no
/// known expectation to judge), 0 when the expectation is met, 1 when it is violated.
pub(crate) fn exit_code(
    end_reason: Option<EndReason>,
    verdict: Verdict,
    state: ExpectationState,
) -> i32 {
    if end_reason == Some(EndReason::InfrastructureError) {
        return 4;
    }
    if end_reason == Some(EndReason::PlanError) {
        return 2;
    }
    if verdict == Verdict::Inconclusive {
        return 3;
    }
    match state {
        ExpectationState::Met => 0,
        ExpectationState::Violated => 1,
        ExpectationState::Unknown => 3,
    }
}
