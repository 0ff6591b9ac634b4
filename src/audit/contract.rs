//! The contract: each cell's runs summed up (verdicts, the dominant mechanism, faults armed vs
//! applied), the semantics the whole audit shows, its one-line conclusion and the exit code of
//! the plan's `expect` judged over every run.
//!
//! Pure: a function of the cells' results. The semantics claims only what was proven: a
//! loss or a duplicate seen in some run; "exactly-once" only when every run of every applicable
//! cell was EXACT, never when some run could not tell.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::exit;
use crate::judge::{ExpectationState, Judgement, Verdict};

/// What one repeat of a cell showed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunResult {
    /// Its run folder.
    pub run_dir: String,
    /// The seed it ran with.
    pub seed: u64,
    /// Its verdict.
    pub verdict: Verdict,
    /// `met`, `violated` or `unknown`, for the plan's `expect`.
    pub expectation: &'static str,
    /// Its exit code as `exactly run` would give it.
    pub exit_code: i32,
    /// The mechanisms its losses and duplicates were explained by (snake case).
    pub mechanisms: Vec<String>,
    /// Faults planned (armed).
    pub faults_planned: usize,
    /// Faults applied and exercised (hit a live process, not escaped by a bypass).
    pub faults_hit: usize,
    /// The failure that ended the run, when the harness failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl RunResult {
    /// Sums up a judged run.
    pub fn from_judgement(run_dir: String, seed: u64, rec: &Judgement) -> RunResult {
        let mut mechanisms: Vec<String> = rec
            .mechanisms
            .groups
            .iter()
            .filter(|g| !g.harness_hold && !g.mechanism.read_uncommitted_only())
            .map(|g| g.mechanism.as_str().to_owned())
            .collect();
        mechanisms.dedup();
        let not_hit = rec.faults_unfired.len() + rec.faults_hit_nothing.len();
        let not_hit = not_hit + rec.faults_bypassed.len();
        RunResult {
            run_dir,
            seed,
            verdict: rec.verdict,
            expectation: rec.expectation_state.as_str(),
            exit_code: rec.exit_code(),
            mechanisms,
            faults_planned: rec.faults_planned,
            faults_hit: rec.faults_planned.saturating_sub(not_hit),
            failure: None,
        }
    }

    fn violated(&self) -> bool {
        self.expectation == ExpectationState::Violated.as_str()
    }
}

/// One cell, summed up.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CellResult {
    /// The cell's name (`kill-after-commit`).
    pub fault: String,
    /// The fault of its first repeat, as a plan would describe it.
    pub description: String,
    /// False when the cell cannot apply to this plan or consumer.
    pub applicable: bool,
    /// Why not, when it does not apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its repeats that finished.
    pub runs: Vec<RunResult>,
    /// True when the audit was interrupted before every repeat finished.
    pub interrupted: bool,
    /// For a cell of several faults that broke the claim: the smallest set of them that still
    /// breaks it, found by shrinking its first failing run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrunk: Option<Shrunk>,
}

/// The minimal fault set a failing multi-fault cell shrank to.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Shrunk {
    /// The failing run it started from.
    pub from: String,
    /// The plan file written (`exactly run` on it replays it).
    pub plan: String,
    /// The faults left, as a plan describes them.
    pub faults: Vec<String>,
    /// Faults before shrinking.
    pub faults_before: usize,
    /// Confirmation replays that broke the claim, and how many ran.
    pub confirmed: (u32, u32),
}

impl CellResult {
    /// Verdict → number of runs, every verdict listed.
    pub fn verdicts(&self) -> BTreeMap<&'static str, usize> {
        let all = [
            Verdict::Exact,
            Verdict::Duplicated,
            Verdict::Lost,
            Verdict::LostAndDuplicated,
            Verdict::Inconclusive,
        ];
        all.into_iter()
            .map(|v| {
                (
                    v.as_str(),
                    self.runs.iter().filter(|r| r.verdict == v).count(),
                )
            })
            .collect()
    }

    /// The mechanisms over its runs, most runs first (ties by name).
    pub fn mechanisms(&self) -> Vec<String> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.runs.iter().flat_map(|r| &r.mechanisms) {
            *seen.entry(m).or_default() += 1;
        }
        let mut ranked: Vec<(&str, usize)> = seen.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        ranked.into_iter().map(|(m, _)| m.to_owned()).collect()
    }

    /// (faults armed, faults applied) over its runs.
    pub fn armed_hit(&self) -> (usize, usize) {
        self.runs
            .iter()
            .fold((0, 0), |(a, h), r| (a + r.faults_planned, h + r.faults_hit))
    }

    fn any(&self, f: impl Fn(Verdict) -> bool) -> bool {
        self.runs.iter().any(|r| f(r.verdict))
    }
}

/// The semantics the audit measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measured {
    /// Loses work, never duplicates it.
    AtMostOnce,
    /// Duplicates work, never loses it.
    AtLeastOnce,
    /// Neither lost nor duplicated in any run, every run EXACT.
    ExactlyOnce,
    /// Both lost and duplicated.
    None,
    /// Nothing proven wrong, but some run could not tell (or nothing ran).
    Unknown,
}

impl Measured {
    /// The kebab-case word, as in audit.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Measured::AtMostOnce => "at-most-once",
            Measured::AtLeastOnce => "at-least-once",
            Measured::ExactlyOnce => "exactly-once",
            Measured::None => "none",
            Measured::Unknown => "unknown",
        }
    }
}

/// The whole audit's contract.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Contract {
    /// What the runs showed.
    pub semantics: Measured,
    /// The one-line conclusion.
    pub conclusion: String,
    /// The exit code: the plan's `expect` over every run.
    pub exit_code: i32,
}

/// Sums the cells up into the contract.
pub fn conclude(cells: &[CellResult], interrupted: bool) -> Contract {
    let runs: Vec<&RunResult> = cells.iter().flat_map(|c| &c.runs).collect();
    let faults: usize = runs.iter().map(|r| r.faults_hit).sum();
    let names = |f: &dyn Fn(Verdict) -> bool| -> String {
        let n: Vec<&str> = cells
            .iter()
            .filter(|c| c.any(f))
            .map(|c| c.fault.as_str())
            .collect();
        n.join(", ")
    };
    let (lost, dup) = (names(&Verdict::has_loss), names(&Verdict::has_duplicate));
    let inconclusive = runs
        .iter()
        .filter(|r| r.verdict == Verdict::Inconclusive)
        .count();
    let not_all = if inconclusive > 0 {
        format!("; {inconclusive} run(s) inconclusive")
    } else {
        String::new()
    };
    let n = runs.len();
    let (semantics, conclusion) = match (lost.is_empty(), dup.is_empty()) {
        (false, false) => (
            Measured::None,
            format!("neither at-most-once nor at-least-once: loses work in {lost}; duplicates it in {dup}"),
        ),
        (false, true) => (
            Measured::AtMostOnce,
            format!("at-most-once: loses work in {lost}; no duplicate in {n} runs{not_all}"),
        ),
        (true, false) => (
            Measured::AtLeastOnce,
            format!("at-least-once: duplicates in {dup} ({}); no loss in {n} runs{not_all}", mechanisms(cells)),
        ),
        (true, true) if inconclusive == 0 && n > 0 => (
            Measured::ExactlyOnce,
            format!("exactly-once at this boundary: no loss or duplicate in {n} runs under {faults} faults"),
        ),
        (true, true) => (
            Measured::Unknown,
            format!("unknown: no loss or duplicate proven in {n} runs, but {inconclusive} could not tell: exactly-once not shown"),
        ),
    };
    Contract {
        semantics,
        conclusion,
        exit_code: exit_code(&runs, interrupted),
    }
}

/// The mechanisms of every cell, most frequent first.
fn mechanisms(cells: &[CellResult]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for m in cells.iter().flat_map(CellResult::mechanisms) {
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    if seen.is_empty() {
        return "no mechanism named".into();
    }
    seen.join(", ")
}

/// 1 when some run violated the claim (proven); else 4 when the harness failed in one; else
/// 3 when some claim is unknown or the audit was interrupted; else 0.
fn exit_code(runs: &[&RunResult], interrupted: bool) -> i32 {
    if runs.iter().any(|r| r.violated()) {
        exit::VIOLATED
    } else if runs.iter().any(|r| r.exit_code == exit::INFRASTRUCTURE) {
        exit::INFRASTRUCTURE
    } else if interrupted || runs.is_empty() || runs.iter().any(|r| r.exit_code != exit::MET) {
        exit::INCONCLUSIVE
    } else {
        exit::MET
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(verdict: Verdict, expectation: ExpectationState, mechanism: &str) -> RunResult {
        let exit_code = match expectation {
            ExpectationState::Met => 0,
            ExpectationState::Violated => 1,
            ExpectationState::Unknown => 3,
        };
        RunResult {
            run_dir: "d".into(),
            seed: 1,
            verdict,
            expectation: expectation.as_str(),
            exit_code,
            mechanisms: (!mechanism.is_empty())
                .then(|| mechanism.to_owned())
                .into_iter()
                .collect(),
            faults_planned: 1,
            faults_hit: 1,
            failure: None,
        }
    }

    fn cell(name: &str, runs: Vec<RunResult>) -> CellResult {
        CellResult {
            fault: name.into(),
            description: String::new(),
            applicable: true,
            reason: None,
            runs,
            interrupted: false,
            shrunk: None,
        }
    }

    use ExpectationState::{Met, Unknown, Violated};

    #[test]
    fn a_loss_in_one_cell_and_no_duplicate_is_at_most_once() {
        let cells = [
            cell(
                "kill-after-commit",
                vec![run(Verdict::Lost, Violated, "crash_after_commit")],
            ),
            cell("kill-after-effect", vec![run(Verdict::Exact, Met, "")]),
        ];
        let c = conclude(&cells, false);
        assert_eq!(c.semantics, Measured::AtMostOnce);
        assert!(
            c.conclusion.contains("kill-after-commit"),
            "{}",
            c.conclusion
        );
        assert!(
            c.conclusion.contains("no duplicate in 2 runs"),
            "{}",
            c.conclusion
        );
        assert_eq!(c.exit_code, 1);
    }

    #[test]
    fn duplicates_without_loss_are_at_least_once_with_their_mechanisms() {
        let cells = [cell(
            "kill-after-effect",
            vec![
                run(Verdict::Duplicated, Met, "crash_after_effect"),
                run(Verdict::Exact, Met, ""),
            ],
        )];
        let c = conclude(&cells, false);
        assert_eq!(c.semantics, Measured::AtLeastOnce);
        assert!(
            c.conclusion.contains("crash_after_effect"),
            "{}",
            c.conclusion
        );
        assert_eq!(c.exit_code, 0);
        assert_eq!(cells[0].verdicts()["DUPLICATED"], 1);
    }

    #[test]
    fn exactly_once_needs_every_run_exact() {
        let exact = [cell("sever", vec![run(Verdict::Exact, Met, "")])];
        assert_eq!(conclude(&exact, false).semantics, Measured::ExactlyOnce);
        let one_blind = [cell(
            "sever",
            vec![
                run(Verdict::Exact, Met, ""),
                run(Verdict::Inconclusive, Unknown, ""),
            ],
        )];
        let c = conclude(&one_blind, false);
        assert_eq!(c.semantics, Measured::Unknown);
        assert_eq!(c.exit_code, 3);
        assert_eq!(conclude(&[], false).semantics, Measured::Unknown);
    }

    #[test]
    fn an_interrupted_audit_that_proved_nothing_wrong_is_unknown() {
        let cells = [cell("sever", vec![run(Verdict::Exact, Met, "")])];
        assert_eq!(conclude(&cells, true).exit_code, 3);
    }
}
