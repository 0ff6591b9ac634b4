//! The judge: the run's timeline in, per-ID outcomes and one verdict out, with the findings that
//! explain them. [`judge`] is the one entry point ([`analyze`] puts events in memory into its
//! columns first); `cli` and `report` use nothing else to judge.
//!
//! [`judge`] is a pure function of the events (no I/O, no clock), so `exactly report DIR`
//! reaches the same verdict from `events.jsonl` as the live run did. It composes, in order:
//! pass 1 over every event (the ledger in `ledger`, the run facts in `facts`), pass 2 (the
//! effects counted per ID, `effects`), the classification (`ledger`), pass 3 (the effects of the
//! anomalies, `effects`), the duplicates of the harness's own making (`harness`: retries of
//! an effect whose answer it held), the ruling (`verdict`: shortfalls, precedence, claim), and
//! the findings (`mechanism`, `commit_window`, `key_order`). The run facts include the
//! consumer connections that bypassed the proxy and the faults they escaped (`bypass`).
//! `commit_window` and `absorbed` need nothing but the events and each ID's first effects
//! (`first_effects`, one map of every effected ID): they run on a second thread beside the
//! rest.
//!
//! Invariants:
//! - Identity is the message ID, never the offset. Several `produced` records for one ID (a
//!   producer retry) are one message; the first acknowledged record gives its partition and
//!   offset.
//! - Only `applied` effects count. A `replayed` effect (an idempotent sink answering a repeated
//!   key) changed nothing in the world: it neither makes a duplicate nor saves a message from
//!   being lost.
//! - An acknowledged ID is LOST only when the broker proves it was consumed: its offset is below
//!   the committed offset of its partition in the *last* `progress` event. Without that proof a
//!   zero-effect ID is PENDING, which can make the run INCONCLUSIVE but never EXACT.
//! - ...and (Kafka) only when a consumer connection the proxy watched had a commit past it
//!   accepted (`committers`): committed past by nobody seen, it is an UNCONFIRMED LOSS and
//!   the run says whose word is missing (`committer_unknown`).
//! - ...and only when the oracle could see its effect: with effects the sink rejected, or no
//!   effect naming any produced ID at all, such an ID is an UNCONFIRMED LOSS, never lost.
//! - A claim is met only when the evidence covers what it forbids (`verdict`); otherwise it is
//!   unknown (exit 3), even when the verdict stands.
//! - Indeterminate produces (no answer in time) are never lost nor pending (they may never have
//!   been stored) but are checked for duplicates. Failed produces are counted and reported only.
//! - Precedence (DESIGN §6): a proven loss or duplicate is the verdict whatever else happened;
//!   otherwise any shortfall of evidence makes the run INCONCLUSIVE; only then EXACT.
//! - Work is linear in the number of events, no per-ID scans; per-ID state is in arrays
//!   indexed by the ID's number (`timeline::MessageNo`), looked up without hashing.
//! - No module of the judge imports one that imports it: `model` is the leaf, `analyze` (here)
//!   the root, and nothing below imports this file.

use crate::timeline::{Recorded, Stamped};

mod absorbed;
mod boundary;
pub mod bypass;
pub mod commit_window;
mod committers;
mod effects;
mod facts;
mod first_effects;
mod harness;
mod id_map;
mod judgement;
pub mod key_order;
mod ledger;
pub mod mechanism;
pub mod model;
pub mod poison;
pub mod replies;
mod verdict;
mod writers;

#[cfg(test)]
mod boundary_tests;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod honesty;
#[cfg(test)]
mod poison_tests;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use facts::{
    hit_nothing, ConnectionClosed, ConsumerSetting, Holds, Incarnation, OutputTopicRead,
    ProgressSnapshot, RejectedEffect,
};
pub use judgement::{BoundaryJudgement, Judgement};
pub use ledger::FailedProduce;
pub use model::{
    Anomaly, Counts, EffectSeen, ExitStatus, Expectation, ExpectationState, InconclusiveReason,
    Outcome, Stall, UnfiredFault, Verdict,
};
pub use poison::PoisonFate;

use facts::{FactsReader, RunFacts};
use first_effects::FirstEffects;
use ledger::Ledger;
use model::plural;
use verdict::LedgerEvidence;

/// Judges a run from its events in memory (tests, small tools): [`judge`] of them in columns.
pub fn analyze(events: &[Stamped]) -> Judgement {
    judge(&Recorded::from_events(events))
}

/// Judges a run from its timeline, read back in columns (`timeline::read_recorded`). Pure:
/// the same events always give the same result, in any file order of produced and effect
/// events (effects may be observed before the produce acknowledgement arrives). A run that
/// declared boundaries is judged once per boundary and the rulings combined (`boundary`).
pub fn judge(recorded: &Recorded) -> Judgement {
    let declared = boundary::declared(recorded.others());
    if declared.is_empty() {
        return analyze_one(recorded);
    }
    let parts: Vec<BoundaryJudgement> = declared
        .iter()
        .enumerate()
        .map(|(i, b)| BoundaryJudgement {
            name: b.name.clone(),
            sink: b.sink,
            expect: b.expect.clone(),
            judgement: analyze_one(&boundary::view(recorded, b, i == 0)),
        })
        .collect();
    boundary::overall(parts)
}

/// Judges the effects of one boundary (the run's one sink, or one boundary's view). The two
/// findings that need nothing but the events (`Beside`) are made on a second thread while the
/// ledger passes run: on millions of IDs they and their map of every effected ID cost about as
/// much as the rest.
fn analyze_one(recorded: &Recorded) -> Judgement {
    std::thread::scope(|s| {
        let beside = s.spawn(|| {
            let effects = FirstEffects::read(recorded);
            Beside {
                commits_ahead: commit_window::commits_ahead_with(recorded, &effects),
                redeliveries_absorbed: absorbed::redeliveries_absorbed_with(recorded, &effects),
            }
        });
        // The thread panics only on a bug in the judge: pass the panic on.
        analyze_with(recorded, || {
            beside
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    })
}

/// Findings of one boundary made from the events alone, beside the ledger's passes.
struct Beside {
    commits_ahead: commit_window::CommitWindow,
    redeliveries_absorbed: u64,
}

/// [`analyze_one`] once `beside` is started: it is waited for at the end.
fn analyze_with(recorded: &Recorded, beside: impl FnOnce() -> Beside) -> Judgement {
    let events = recorded.others();
    let mut counts = Counts::default();
    let (mut ledger, facts) = read_ledger_and_facts(recorded, &mut counts);
    let tally = effects::count(recorded, &mut ledger, &mut counts);
    // The oracle is blind to loss when the sink rejected effects (an ID's effect may be among
    // them) or saw none of the produced messages at all (DESIGN §12).
    // An output topic not read to its end may hold the missing effect too.
    // So may a dead-letter destination not read whole: the message may have been diverted.
    let oracle_blind = facts.rejected > 0
        || tally.on_ledger == 0
        || facts.output_topics.iter().any(|t| !t.complete)
        || facts.dead_letters_unread().is_some();
    let classified = ledger.classify(&facts, oracle_blind, &mut counts);
    let mut anomalies = classified.anomalies;
    effects::attach(recorded, &ledger, &tally, &mut anomalies);
    // Duplicates the harness's holds made count for the harness, not against the consumer.
    let harness_duplicated = harness::duplicated_by_holds(events, &anomalies);
    counts.harness_duplicated = harness_duplicated.len() as u64;
    counts.duplicated -= counts.harness_duplicated;
    counts.phantom = tally.phantoms.len() as u64;
    anomalies.extend(tally.phantoms);
    let poison = poison::fates(recorded, &facts, &anomalies);
    counts.poison = poison.count;
    counts.rejected = facts.rejected;
    counts.torn_lines = facts.torn_lines;
    if let Some(r) = &facts.run {
        counts.expected = r.messages;
    }
    let evidence = LedgerEvidence {
        recorded: ledger.len() as u64,
        acked_without_effect: classified.acked_without_effect,
        effects_on_ledger: tally.on_ledger,
        stalls: poison.stalls,
    };
    let ruling = verdict::rule(&facts, &counts, &evidence);
    let mut warnings = facts.warnings;
    warnings.extend(observations(&counts));
    if poison.diverted_not_poison > 0 {
        warnings.push(format!(
            "{} diverted message{} {} not poison: the consumer dead-lettered work it could have done",
            poison.diverted_not_poison,
            plural(poison.diverted_not_poison),
            if poison.diverted_not_poison == 1 { "was" } else { "were" }
        ));
    }
    warnings.extend(ruling.unknown_expectation);
    let mut mechanisms = mechanism::explain(recorded, &anomalies, &harness_duplicated);
    boundary::name_output_without_transaction(events, &anomalies, &mut mechanisms);
    let beside = beside();
    counts.redeliveries_absorbed = beside.redeliveries_absorbed;
    Judgement {
        run: facts.run,
        verdict: ruling.verdict,
        expectation: ruling.expectation,
        expectation_met: ruling.expectation_state.as_met(),
        expectation_state: ruling.expectation_state,
        expectation_unknown: ruling.expectation_unknown,
        counts,
        inconclusive_reasons: ruling.inconclusive_reasons,
        caveats: ruling.caveats,
        mechanisms,
        anomalies,
        faults: facts.faults,
        faults_planned: facts.faults_planned,
        faults_fired: facts.faults_fired,
        faults_unfired: facts.faults_unfired,
        faults_hit_nothing: facts.faults_hit_nothing,
        incarnations: facts.incarnations,
        warnings,
        end_reason: facts.end.map(|(r, _)| r),
        ended_at_us: facts.ended_at_us,
        last_progress: facts.progress,
        failed_samples: classified.failed_samples,
        rejected_samples: facts.rejected_samples,
        commits_ahead: beside.commits_ahead,
        key_order: key_order::check(recorded),
        ownership: mechanism::ownership(events),
        consumer_settings: facts.consumer_settings,
        connections_closed: facts.connections_closed,
        holds: facts.holds,
        effect_holds: facts.effect_holds,
        replies: replies::replies(events),
        bypasses: facts.bypasses,
        faults_bypassed: facts.faults_bypassed,
        output_topics: facts.output_topics,
        poison: poison.fates,
        boundaries: Vec::new(),
    }
}

/// Pass 1: the ledger from the `produced` events, the run facts from every other event.
fn read_ledger_and_facts<'a>(
    recorded: &'a Recorded,
    counts: &mut Counts,
) -> (Ledger<'a>, RunFacts<'a>) {
    let ledger = Ledger::read(recorded, counts);
    let mut facts = FactsReader::default();
    recorded.others().iter().for_each(|st| facts.observe(st));
    if let Some(t) = recorded.last_t_us_in_columns() {
        facts.saw_time(t);
    }
    (ledger, facts.finish())
}

/// The judge's own observations on the counts, as warnings.
fn observations(counts: &Counts) -> Vec<String> {
    let mut warnings = Vec::new();
    if counts.multi_offset > 0 {
        warnings.push(format!(
            "{} message{} stored at more than one offset by producer retries (judged by ID, once each)",
            counts.multi_offset,
            if counts.multi_offset == 1 { " was" } else { "s were" }
        ));
    }
    if counts.failed_effected > 0 {
        warnings.push(format!(
            "{} message{} whose produce failed nevertheless had effects (the broker may have stored them); not judged",
            counts.failed_effected,
            plural(counts.failed_effected)
        ));
    }
    if counts.phantom > 0 {
        warnings.push(format!(
            "effects named {} ID{} that the workload never produced (check the effect id extractor)",
            counts.phantom,
            plural(counts.phantom)
        ));
    }
    if counts.rejected > 0 {
        warnings.push(format!(
            "the sink rejected {} request{} it could not read as an effect",
            counts.rejected,
            plural(counts.rejected)
        ));
    }
    warnings
}
