//! The audit's outputs, in its folder: `audit.json` (the contract, every cell with its
//! verdict counts, mechanisms and run folders), `audit.md` (the contract table and the
//! conclusion, for people) and `junit.xml` (a testcase per cell: failed when a run of it broke
//! the plan's `expect`, skipped when it does not apply); `audit.html` is rendered by
//! [`crate::audit::page`].

use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use crate::audit::calibrate::Calibration;
use crate::audit::contract::{CellResult, Contract};

/// Everything an audit found, as audit.json holds it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The plan's name.
    pub plan: String,
    /// `kafka` or `amqp`.
    pub broker: String,
    /// The claim judged over every run (`at-least-once`...).
    pub expect: String,
    /// The semantics measured (`at-most-once`, `at-least-once`, `exactly-once`, `none`,
    /// `unknown`).
    pub semantics: &'static str,
    /// The one-line conclusion.
    pub conclusion: String,
    /// The exit code.
    pub exit_code: i32,
    /// Repeats per cell.
    pub repeats: u32,
    /// The audit's seed (each repeat's seed is derived from it).
    pub seed: u64,
    /// True when Ctrl-C stopped the audit: the cells after it did not run.
    pub interrupted: bool,
    /// Seconds the audit took in all.
    pub seconds: f64,
    /// What the fault-free run measured (absent when it could not run).
    pub calibration: Option<Calibration>,
    /// Every cell, in order (the ones an interruption cut off are absent).
    pub cells: Vec<CellJson>,
}

/// One cell, as audit.json holds it.
#[derive(Debug, Clone, Serialize)]
pub struct CellJson {
    /// The cell's name.
    pub fault: String,
    /// Its fault as a plan describes it.
    pub description: String,
    /// False when it does not apply here.
    pub applicable: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Finished repeats.
    pub runs: usize,
    /// Verdict → number of runs.
    pub verdicts: std::collections::BTreeMap<&'static str, usize>,
    /// Mechanisms, most runs first.
    pub mechanisms: Vec<String>,
    /// Faults armed over its runs.
    pub faults_armed: usize,
    /// Faults applied to a live consumer over its runs.
    pub faults_hit: usize,
    /// Its run folders.
    pub run_dirs: Vec<String>,
    /// Each run, with its seed, verdict, claim and exit code.
    pub details: Vec<crate::audit::contract::RunResult>,
    /// True when an interruption cut its repeats short.
    pub interrupted: bool,
    /// For a failing cell of several faults: the smallest set of them that still fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrunk: Option<crate::audit::contract::Shrunk>,
}

impl AuditReport {
    /// Builds the report from the cells and the contract.
    pub fn new(
        head: Head,
        calibration: Option<Calibration>,
        cells: &[CellResult],
        c: &Contract,
    ) -> AuditReport {
        AuditReport {
            plan: head.plan,
            broker: head.broker,
            expect: head.expect,
            semantics: c.semantics.as_str(),
            conclusion: c.conclusion.clone(),
            exit_code: c.exit_code,
            repeats: head.repeats,
            seed: head.seed,
            interrupted: head.interrupted,
            seconds: head.elapsed.as_secs_f64(),
            calibration,
            cells: cells.iter().map(cell_json).collect(),
        }
    }
}

/// The audit's own facts, beside its cells.
#[derive(Debug, Clone)]
pub struct Head {
    /// The plan's name.
    pub plan: String,
    /// `kafka` or `amqp`.
    pub broker: String,
    /// The claim.
    pub expect: String,
    /// Repeats per cell.
    pub repeats: u32,
    /// The audit's seed.
    pub seed: u64,
    /// Ctrl-C stopped it.
    pub interrupted: bool,
    /// How long it took.
    pub elapsed: Duration,
}

fn cell_json(c: &CellResult) -> CellJson {
    let (armed, hit) = c.armed_hit();
    CellJson {
        fault: c.fault.clone(),
        description: c.description.clone(),
        applicable: c.applicable,
        reason: c.reason.clone(),
        runs: c.runs.len(),
        verdicts: c.verdicts(),
        mechanisms: c.mechanisms(),
        faults_armed: armed,
        faults_hit: hit,
        run_dirs: c.runs.iter().map(|r| r.run_dir.clone()).collect(),
        details: c.runs.clone(),
        interrupted: c.interrupted,
        shrunk: c.shrunk.clone(),
    }
}

/// Writes audit.json, audit.md, junit.xml and audit.html into `dir`.
pub fn write(dir: &Path, report: &AuditReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("audit.json"), json + "\n")?;
    std::fs::write(dir.join("audit.md"), markdown(report))?;
    std::fs::write(dir.join("junit.xml"), junit(report)?)?;
    let page = crate::audit::page::render(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("audit.html"), page)?;
    Ok(())
}

/// The contract table: one row per cell.
pub fn table(report: &AuditReport) -> String {
    let mut out = String::from(
        "| cell | runs | EXACT | DUPLICATED | LOST | LOST+DUP | INCONCLUSIVE | mechanism | faults hit/armed |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for c in &report.cells {
        if !c.applicable {
            out.push_str(&format!(
                "| {} | n/a | | | | | | not applicable: {} | |\n",
                c.fault,
                c.reason.as_deref().unwrap_or("")
            ));
            continue;
        }
        let v = |k: &str| c.verdicts.get(k).copied().unwrap_or(0);
        out.push_str(&format!(
            "| {} | {}{} | {} | {} | {} | {} | {} | {} | {}/{} |\n",
            c.fault,
            c.runs,
            if c.interrupted { " (interrupted)" } else { "" },
            v("EXACT"),
            v("DUPLICATED"),
            v("LOST"),
            v("LOST+DUPLICATED"),
            v("INCONCLUSIVE"),
            c.mechanisms.first().map_or("—", String::as_str),
            c.faults_hit,
            c.faults_armed,
        ));
    }
    out
}

fn markdown(r: &AuditReport) -> String {
    let mut out = format!("# Audit of `{}` ({})\n\n", r.plan, r.broker);
    out.push_str(&format!("**{}**\n\n", r.conclusion));
    out.push_str(&format!(
        "Measured semantics: `{}`. Claimed: `{}` → exit {}. {} repeat(s) per cell, seed {}, {:.0} s in all.\n\n",
        r.semantics, r.expect, r.exit_code, r.repeats, r.seed, r.seconds
    ));
    if r.interrupted {
        out.push_str(
            "**Interrupted** (Ctrl-C): the cells below are the ones that finished; the run \
             that was cut short is kept in its folder but not counted.\n\n",
        );
    }
    if let Some(c) = &r.calibration {
        out.push_str(&format!(
            "Calibration (no fault, `{}`): {} of {} messages effected, {:.1} ms per message, \
             {} commit(s), {} ack(s), {} deliveries, {}.\n\n",
            c.run_dir,
            c.effected,
            c.produced,
            c.per_message_us as f64 / 1000.0,
            c.commits,
            c.acks,
            c.deliveries,
            c.liveness_text(),
        ));
    }
    out.push_str(&table(r));
    out.push_str("\n## Cells\n\n");
    for c in r.cells.iter().filter(|c| c.applicable) {
        out.push_str(&format!("- **{}** (`{}`):", c.fault, c.description));
        for d in &c.details {
            out.push_str(&format!(
                " {} (seed {}, claim {}, `{}`{});",
                d.verdict,
                d.seed,
                d.expectation,
                d.run_dir,
                d.failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(", harness failure: {f}"))
            ));
        }
        out.push('\n');
        if let Some(s) = &c.shrunk {
            out.push_str(&format!("  {}\n", shrunk_line(s)));
        }
    }
    out
}

/// "Minimal fault set (shrunk from 2 faults of `run`): `f`; it broke the claim in 4 of 5
/// confirmation replays; `exactly run plan` replays it."
pub fn shrunk_line(s: &crate::audit::contract::Shrunk) -> String {
    let faults: Vec<String> = s.faults.iter().map(|f| format!("`{f}`")).collect();
    format!(
        "Minimal fault set (shrunk from {} faults of `{}`): {}; it broke the claim in {} of {} confirmation replays; `exactly run {}` replays it.",
        s.faults_before,
        s.from,
        faults.join(", "),
        s.confirmed.0,
        s.confirmed.1,
        s.plan
    )
}

fn junit(r: &AuditReport) -> std::io::Result<String> {
    let mut suite = TestSuite::new("exactly-audit");
    for c in &r.cells {
        let status = if !c.applicable {
            let mut s = TestCaseStatus::skipped();
            s.set_message(c.reason.clone().unwrap_or_default());
            s
        } else if let Some(bad) = c.details.iter().find(|d| d.exit_code != 0) {
            let kind = match bad.expectation {
                "violated" => NonSuccessKind::Failure,
                _ => NonSuccessKind::Error,
            };
            let mut s = TestCaseStatus::non_success(kind);
            s.set_type(bad.expectation).set_message(format!(
                "expected {}, observed {} in {} (exit {})",
                r.expect, bad.verdict, bad.run_dir, bad.exit_code
            ));
            s
        } else {
            TestCaseStatus::success()
        };
        let mut case = TestCase::new(c.fault.clone(), status);
        case.set_classname(format!("exactly-audit.{}", r.broker));
        case.add_properties(
            [
                ("runs", c.runs.to_string()),
                ("mechanisms", c.mechanisms.join(",")),
                ("fault", c.description.clone()),
                (
                    "minimal_faults",
                    c.shrunk
                        .as_ref()
                        .map_or(String::new(), |s| s.faults.join("; ")),
                ),
            ]
            .into_iter()
            .map(|(k, v)| Property::new(k, v)),
        );
        suite.add_test_case(case);
    }
    let mut report = Report::new("exactly-audit");
    report.add_test_suite(suite);
    report.to_string().map_err(std::io::Error::other)
}
