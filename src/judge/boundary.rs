//! Boundaries (design §13): a run whose plan declared several places where work lands is
//! judged once per boundary, each on its own effects against its own promise, and the
//! overall ruling combines them.
//!
//! A boundary's view of the timeline is every event except the sink events (`effect`,
//! `effect_rejected`, `torn_line`, `output_topic_read`) of the other boundaries, with the run's promise and ID rule
//! replaced by the boundary's own. The judge then reads that view as it reads a one-sink run,
//! so every finding (mechanisms, shortfalls, the commit window) holds per boundary. A sink
//! event that names no boundary belongs to the first one: timelines from before boundaries,
//! and plans written with `effects`, have exactly one.
//!
//! Invariants: the overall verdict is a proven loss or duplicate when any boundary proves
//! one, INCONCLUSIVE only when no boundary proves anything and one is inconclusive; the claim
//! is violated when any boundary's promise is violated, unknown when none is and any is
//! unknown, met only when every boundary's is met.

use crate::judge::judgement::{BoundaryJudgement, Judgement};
use crate::judge::mechanism::{Mechanism, Mechanisms};
use std::collections::HashSet;

use crate::judge::model::{Anomaly, Counts, ExpectationState, Outcome, Verdict};
use crate::timeline::{BoundaryInfo, Event, Recorded, SinkKind, Stamped};

/// The boundaries the run declared (`run_started`), in plan order; empty for a run with one
/// `effects` sink.
pub(crate) fn declared(events: &[Stamped]) -> Vec<BoundaryInfo> {
    events
        .iter()
        .find_map(|st| match &st.event {
            Event::RunStarted(info) => Some(info.boundaries.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The timeline as boundary `b` sees it (`first`: it also owns sink events naming none).
pub(crate) fn view(recorded: &Recorded, b: &BoundaryInfo, first: bool) -> Recorded {
    let mine = |name: Option<&str>| match name {
        Some(n) => n == b.name,
        None => first,
    };
    let others = recorded
        .others()
        .iter()
        .filter(|st| match &st.event {
            Event::EffectRejected { boundary, .. }
            | Event::TornLine { boundary, .. }
            | Event::OutputTopicRead { boundary, .. } => mine(boundary.as_deref()),
            _ => true,
        })
        .map(|st| match &st.event {
            Event::RunStarted(info) => {
                let mut info = info.clone();
                info.expect = b.expect.clone();
                info.effects_id = Some(b.id.clone());
                info.effects_sink = Some(b.sink);
                Stamped {
                    seq: st.seq,
                    t_us: st.t_us,
                    event: Event::RunStarted(info),
                }
            }
            _ => st.clone(),
        })
        .collect();
    recorded.with(|e| mine(e.boundary), others)
}

/// The overall judgement of a run with boundaries: the run facts as every boundary shares
/// them, the combined ruling, and each boundary's own judgement in `boundaries`.
pub(crate) fn overall(mut parts: Vec<BoundaryJudgement>) -> Judgement {
    name_effects_outside_the_transaction(&mut parts);
    let Some(first) = parts.first() else {
        unreachable!("called with the declared boundaries, never none");
    };
    let mut all = first.judgement.clone();
    all.verdict = combined_verdict(parts.iter().map(|p| p.judgement.verdict));
    all.expectation_state = combined_state(parts.iter().map(|p| p.judgement.expectation_state));
    all.expectation_met = all.expectation_state.as_met();
    all.expectation_unknown = union(parts.iter().map(|p| &p.judgement.expectation_unknown));
    let inconclusive = union(parts.iter().map(|p| &p.judgement.inconclusive_reasons));
    let caveats = union(parts.iter().map(|p| &p.judgement.caveats));
    if all.verdict == Verdict::Inconclusive {
        all.inconclusive_reasons = inconclusive;
        all.caveats = caveats;
    } else {
        // A proof at one boundary stands; another's shortfalls are its caveats.
        all.inconclusive_reasons = Vec::new();
        all.caveats = union([&inconclusive, &caveats]);
    }
    all.counts = summed_counts(parts.iter().map(|p| &p.judgement.counts));
    all.anomalies = Vec::new();
    all.output_topics = parts
        .iter()
        .flat_map(|p| p.judgement.output_topics.clone())
        .collect();
    all.mechanisms = Mechanisms::default();
    all.warnings = union(parts.iter().map(|p| &p.judgement.warnings));
    all.boundaries = parts;
    all
}

/// When one boundary is an output topic EXACT under read_committed (the pipeline's
/// transaction held), the duplicates at the other boundaries are effects made outside that
/// transaction: their mechanism says so, with the evidence.
fn name_effects_outside_the_transaction(parts: &mut [BoundaryJudgement]) {
    let held = parts.iter().find_map(|p| {
        let j = &p.judgement;
        let topic = j.output_topics.first()?;
        let exact = p.sink == SinkKind::KafkaTopic
            && j.verdict == Verdict::Exact
            && topic.isolation == "read_committed";
        exact.then(|| {
            format!(
                "{} is EXACT under read_committed, {} aborted record{} counted apart",
                p.name,
                topic.aborted_records,
                if topic.aborted_records == 1 { "" } else { "s" }
            )
        })
    });
    let Some(why) = held else { return };
    for p in parts.iter_mut().filter(|p| p.sink != SinkKind::KafkaTopic) {
        let j = &mut p.judgement;
        let duplicated = duplicated_ids(&j.anomalies);
        if !duplicated.is_empty() {
            j.mechanisms.outside_transaction(&why, &duplicated);
        }
    }
}

/// When the consumer wrote its output topic without transactions (every Produce the proxy saw
/// had no transactional id), the duplicates at a `kafka-topic` boundary are results produced
/// twice around a crash before the offset commit: their mechanism says so. `events` is the
/// boundary's view (a plan's one `effects` sink is a boundary too): its `run_started` names
/// the sink.
pub(crate) fn name_output_without_transaction(
    events: &[Stamped],
    anomalies: &[Anomaly],
    mechanisms: &mut Mechanisms,
) {
    let sink = events.iter().find_map(|st| match &st.event {
        Event::RunStarted(info) => info.effects_sink,
        _ => None,
    });
    if sink != Some(SinkKind::KafkaTopic) {
        return;
    }
    let (mut plain, mut transactional) = (0u64, 0u64);
    for st in events {
        if let Event::ConsumerProduce {
            transactional_id, ..
        } = &st.event
        {
            match transactional_id {
                Some(_) => transactional += 1,
                None => plain += 1,
            }
        }
    }
    if plain == 0 || transactional > 0 {
        return;
    }
    let why = format!(
        "none of the consumer's {plain} produce{} through the proxy belonged to a transaction",
        if plain == 1 { "" } else { "s" }
    );
    let duplicated = duplicated_ids(anomalies);
    if !duplicated.is_empty() {
        mechanisms.rename_duplicates(Mechanism::OutputWithoutTransaction, &why, &duplicated);
    }
}

/// Lost and duplicated where any boundary proves them; else INCONCLUSIVE where any is; else
/// EXACT.
fn combined_verdict(verdicts: impl Iterator<Item = Verdict>) -> Verdict {
    let (mut lost, mut duplicated, mut inconclusive) = (false, false, false);
    for v in verdicts {
        match v {
            Verdict::Exact => {}
            Verdict::Lost => lost = true,
            Verdict::Duplicated => duplicated = true,
            Verdict::LostAndDuplicated => (lost, duplicated) = (true, true),
            Verdict::Inconclusive => inconclusive = true,
        }
    }
    match (lost, duplicated, inconclusive) {
        (true, true, _) => Verdict::LostAndDuplicated,
        (true, false, _) => Verdict::Lost,
        (false, true, _) => Verdict::Duplicated,
        (false, false, true) => Verdict::Inconclusive,
        (false, false, false) => Verdict::Exact,
    }
}

/// Violated where any promise is; else unknown where any is; else met.
fn combined_state(states: impl Iterator<Item = ExpectationState>) -> ExpectationState {
    let mut all = ExpectationState::Met;
    for s in states {
        all = match (all, s) {
            (ExpectationState::Violated, _) | (_, ExpectationState::Violated) => {
                ExpectationState::Violated
            }
            (ExpectationState::Unknown, _) | (_, ExpectationState::Unknown) => {
                ExpectationState::Unknown
            }
            (ExpectationState::Met, ExpectationState::Met) => ExpectationState::Met,
        };
    }
    all
}

/// Every item of the lists once, in first-seen order.
fn union<'a, T: PartialEq + Clone + 'a>(lists: impl IntoIterator<Item = &'a Vec<T>>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in lists.into_iter().flatten() {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

/// The ledger's counts (the same at every boundary) with the per-ID outcomes and effect
/// counts summed over the boundaries: each (boundary, ID) pair counted once.
fn summed_counts<'a>(parts: impl Iterator<Item = &'a Counts>) -> Counts {
    let mut sum = Counts::default();
    for c in parts {
        // Exhaustive: a new count must decide whether it is the ledger's or a boundary's.
        let Counts {
            expected,
            produce_records,
            produced,
            failed,
            indeterminate,
            multi_offset,
            effected,
            effects_applied,
            effects_replayed,
            exact,
            duplicated,
            harness_duplicated,
            lost,
            unconfirmed_loss,
            committer_unknown,
            pending,
            unconfirmed,
            diverted,
            poison,
            phantom,
            failed_effected,
            rejected,
            not_counted_done,
            torn_lines,
            redeliveries_absorbed,
        } = c;
        (sum.expected, sum.produce_records, sum.produced) =
            (*expected, *produce_records, *produced);
        (sum.failed, sum.indeterminate, sum.multi_offset) =
            (*failed, *indeterminate, *multi_offset);
        sum.poison = *poison;
        for (total, n) in [
            (&mut sum.effected, effected),
            (&mut sum.effects_applied, effects_applied),
            (&mut sum.effects_replayed, effects_replayed),
            (&mut sum.exact, exact),
            (&mut sum.duplicated, duplicated),
            (&mut sum.harness_duplicated, harness_duplicated),
            (&mut sum.lost, lost),
            (&mut sum.unconfirmed_loss, unconfirmed_loss),
            (&mut sum.committer_unknown, committer_unknown),
            (&mut sum.pending, pending),
            (&mut sum.unconfirmed, unconfirmed),
            (&mut sum.diverted, diverted),
            (&mut sum.phantom, phantom),
            (&mut sum.failed_effected, failed_effected),
            (&mut sum.rejected, rejected),
            (&mut sum.not_counted_done, not_counted_done),
            (&mut sum.torn_lines, torn_lines),
            (&mut sum.redeliveries_absorbed, redeliveries_absorbed),
        ] {
            *total += n;
        }
    }
    sum
}

/// The IDs a boundary's judgement found duplicated.
fn duplicated_ids(anomalies: &[Anomaly]) -> HashSet<&str> {
    anomalies
        .iter()
        .filter(|a| a.outcome == Outcome::Duplicated)
        .map(|a| a.id.as_str())
        .collect()
}
