//! The verdict and its precedence (DESIGN §6): a proven loss or duplicate is the verdict
//! whatever else happened; otherwise any shortfall of evidence makes the run INCONCLUSIVE; only
//! then EXACT. The claimed semantics is judged against the verdict, and the exit code follows.
//!
//! Invariants: INCONCLUSIVE never meets an expectation (a checker that cannot tell yields
//! "unknown", never a pass); the shortfalls are kept as caveats when a proof stands.

use crate::judge::facts::RunFacts;
use crate::judge::model::{Counts, Expectation, InconclusiveReason, Verdict};
use crate::timeline::EndReason;

/// The judge's ruling on a run: the verdict, the claim and why the evidence falls short.
pub(crate) struct Ruling {
    /// The verdict.
    pub(crate) verdict: Verdict,
    /// The claimed semantics, when known.
    pub(crate) expectation: Option<Expectation>,
    /// Whether the verdict meets it (`None` when INCONCLUSIVE or unknown).
    pub(crate) expectation_met: Option<bool>,
    /// The shortfalls, when they make the run INCONCLUSIVE.
    pub(crate) inconclusive_reasons: Vec<InconclusiveReason>,
    /// The shortfalls, when a proven anomaly stands anyway.
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
}

/// Rules on a run from its facts and its counts.
pub(crate) fn rule(facts: &RunFacts, counts: &Counts, ledger: &LedgerEvidence) -> Ruling {
    let reasons = shortfalls(facts, counts, ledger);
    let verdict = verdict(counts, &reasons);
    let (inconclusive_reasons, caveats) = if verdict == Verdict::Inconclusive {
        (reasons, Vec::new())
    } else {
        (Vec::new(), reasons)
    };
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
    Ruling {
        verdict,
        expectation,
        expectation_met: expectation.and_then(|x| x.met_by(verdict)),
        inconclusive_reasons,
        caveats,
        unknown_expectation,
    }
}

/// The precedence: a proof of loss or duplicate first, then any shortfall, then EXACT.
fn verdict(counts: &Counts, reasons: &[InconclusiveReason]) -> Verdict {
    match (counts.lost > 0, counts.duplicated > 0) {
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
        Some(EndReason::Settled | EndReason::Deadline) => {}
    }
    if facts.progress.is_none() && facts.remainder.is_none() && ledger.acked_without_effect > 0 {
        reasons.push(InconclusiveReason::NoProgress {
            without_effect: ledger.acked_without_effect,
        });
    }
    if counts.exact + counts.duplicated + counts.harness_duplicated == 0 {
        reasons.push(InconclusiveReason::NothingObserved);
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
    reasons
}

/// The process exit code (DESIGN §6): 4 when the run ended on an infrastructure error, else 3
/// when inconclusive (or when there is no known expectation to judge), 0 when the expectation
/// is met, 1 when it is violated.
pub(crate) fn exit_code(
    end_reason: Option<EndReason>,
    verdict: Verdict,
    expectation_met: Option<bool>,
) -> i32 {
    if end_reason == Some(EndReason::InfrastructureError) {
        return 4;
    }
    if verdict == Verdict::Inconclusive {
        return 3;
    }
    match expectation_met {
        Some(true) => 0,
        Some(false) => 1,
        None => 3,
    }
}
