//! `exactly audit PLAN`: measures a consumer's delivery contract without a hand-written fault
//! plan. One fault-free run calibrates ([`calibrate`]); then every cell ([`cells`]) runs R
//! times, each repeat a real run with its own run folder, through the same [`run::run`] that
//! `exactly run` uses and judged by the same `judge::analyze`; the cells are summed up into the
//! contract ([`contract`]) and written as audit.md, audit.json and junit.xml ([`output`])
//! and audit.html, the index page linking each run's report.html ([`page`]).
//!
//! Layout of an audit folder: `calibration/` (the fault-free run), `<cell>-<r>/` (each
//! repeat's run folder, with its report.md), `plans/<cell>-<r>.yaml` (the exact plan each
//! repeat ran: `exactly run` on it reproduces it), and the four outputs.
//!
//! Invariants: a cell's repeats run one after the other (the consumer under test gets the
//! machine to itself); Ctrl-C ends the run in progress in order (as `exactly run` does), keeps
//! every finished run, does not count the cut one, and writes the outputs saying so.

pub mod calibrate;
pub mod cells;
pub mod contract;
pub mod output;
pub mod page;
mod progress;
mod runner;
pub mod shrink;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, InfraError};
use crate::plan::{self, Plan, Semantics};
use calibrate::{Calibration, CalibrationStop};
use cells::CellKind;
use contract::{CellResult, RunResult};
use progress::Progress;
pub use runner::judge_folder;
use runner::Runner;

/// What the command line asks of an audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The plan file.
    pub plan_path: PathBuf,
    /// The audit folder (default: reports/audit-<plan>-<time>).
    pub out: Option<PathBuf>,
    /// Repeats per cell (default 3).
    pub repeats: u32,
    /// Only these cells (default: all of them).
    pub cells: Vec<String>,
    /// The audit's seed (default: the plan's, else random).
    pub seed: Option<u64>,
    /// The claim judged instead of the plan's `expect`.
    pub expect: Option<Semantics>,
}

/// What an audit ended with.
pub struct AuditOutcome {
    /// The audit folder.
    pub dir: PathBuf,
    /// The exit code.
    pub exit_code: i32,
    /// The contract table and the conclusion, for the terminal.
    pub summary: String,
}

/// Replays per shrinking step (it still fails when one of them does), as `exactly shrink`.
const SHRINK_REPLAYS: u32 = 3;
/// Replays confirming the shrunk plan, as `exactly shrink`.
const SHRINK_CONFIRM: u32 = 5;

/// Runs a whole audit of a validated plan (its faults ignored).
pub async fn audit(
    plan: &Plan,
    opts: &AuditOptions,
    abort: CancellationToken,
) -> Result<AuditOutcome, Error> {
    let started = Instant::now();
    let selected = cells::select(&opts.cells, plan.broker.kind).map_err(Error::Usage)?;
    let seed = opts.seed.or(plan.seed).unwrap_or_else(rand::random);
    let dir = opts.out.clone().unwrap_or_else(|| default_dir(&plan.name));
    std::fs::create_dir_all(dir.join("plans"))
        .map_err(|e| InfraError::new(format!("cannot create {}: {e}", dir.display())))?;
    let mut base = plan.clone();
    base.faults.clear();
    base.seed = None;
    let audit = Audit {
        base,
        opts,
        dir: dir.clone(),
        abort: abort.clone(),
        runner: Runner {
            dir: dir.clone(),
            expect: opts.expect,
            abort,
        },
    };
    let head = |interrupted| output::Head {
        plan: plan.name.clone(),
        broker: match audit.base.broker.kind {
            plan::BrokerKind::Kafka => "kafka".into(),
            plan::BrokerKind::Amqp => "amqp".into(),
        },
        expect: opts
            .expect
            .or(plan.expect)
            .unwrap_or(plan.boundaries()[0].expect)
            .as_str()
            .into(),
        repeats: opts.repeats,
        seed,
        interrupted,
        elapsed: started.elapsed(),
    };
    say(format!("audit of {} → {}", plan.name, dir.display()));
    say("calibration: one run without faults".into());
    let cal = match audit.calibrate(seed).await? {
        Ok(cal) => cal,
        Err(stop) => {
            let c = contract::Contract {
                semantics: contract::Measured::Unknown,
                conclusion: format!("not audited: {stop}"),
                exit_code: stop.exit_code(),
            };
            let interrupted = audit.abort.is_cancelled();
            return audit.finish(output::AuditReport::new(head(interrupted), None, &[], &c));
        }
    };
    let (results, interrupted) = audit.cells(&selected, &cal, seed).await?;
    let c = contract::conclude(&results, interrupted);
    audit.finish(output::AuditReport::new(
        head(interrupted),
        Some(cal),
        &results,
        &c,
    ))
}

/// Everything one audit's runs share.
struct Audit<'a> {
    /// The plan without its faults.
    base: Plan,
    opts: &'a AuditOptions,
    dir: PathBuf,
    abort: CancellationToken,
    runner: Runner,
}

impl Audit<'_> {
    /// The fault-free run, and what it measured (or why the audit stops there).
    async fn calibrate(&self, seed: u64) -> Result<Result<Calibration, CalibrationStop>, Error> {
        let judged = self
            .runner
            .run("calibration", self.base.clone(), seed)
            .await?;
        let cal = calibrate::calibrate(&judged.dir_str(), &judged.events, &judged.rec);
        match &cal {
            Ok(c) => say(format!(
                "calibration: {} of {} effected, {:.1} ms per message, {} commit(s), {} ack(s), {}",
                c.effected,
                c.produced,
                c.per_message_us as f64 / 1000.0,
                c.commits,
                c.acks,
                c.liveness_text()
            )),
            Err(stop) => say(format!("calibration: {stop}")),
        }
        Ok(cal)
    }

    /// Every selected cell, R repeats each; stops early (true) when interrupted.
    async fn cells(
        &self,
        selected: &[CellKind],
        cal: &Calibration,
        seed: u64,
    ) -> Result<(Vec<CellResult>, bool), Error> {
        let kind = self.base.broker.kind;
        let repeats = self.opts.repeats;
        let mut progress = Progress::new(selected.len() as u64 * u64::from(repeats));
        let mut results = Vec::new();
        for (i, cell) in selected.iter().enumerate() {
            let name = cell.name(kind);
            let mut result = CellResult {
                fault: name.into(),
                description: String::new(),
                applicable: true,
                reason: None,
                runs: Vec::new(),
                interrupted: false,
                shrunk: None,
            };
            if let Err(why) = cell.applies(&self.base, cal) {
                progress.skipped(
                    u64::from(repeats),
                    &format!("cell {name}: not applicable: {why}"),
                );
                (result.applicable, result.reason) = (false, Some(why));
                results.push(result);
                continue;
            }
            for r in 1..=repeats {
                let run_seed = seed
                    .wrapping_add((i as u64 + 1) * 1000)
                    .wrapping_add(u64::from(r));
                progress.started(name, r, repeats);
                let judged = self.run_cell(*cell, cal, r, run_seed).await?;
                if result.description.is_empty() {
                    result.description = judged.faults.clone();
                }
                if self.abort.is_cancelled() {
                    progress.line(&format!("interrupted: {} not counted", judged.dir_str()));
                    result.interrupted = true;
                    results.push(result);
                    return Ok((results, true));
                }
                let mut run = RunResult::from_judgement(judged.dir_str(), run_seed, &judged.rec);
                run.failure = judged.failure.clone();
                let mechanisms = match run.mechanisms.is_empty() {
                    true => "—".to_owned(),
                    false => run.mechanisms.join(", "),
                };
                progress.finished(name, r, repeats, run.verdict.as_str(), &mechanisms);
                result.runs.push(run);
            }
            progress.cell_done();
            let shrunk = self.shrink_cell(&result, &mut progress).await;
            if self.abort.is_cancelled() {
                progress.line(&format!(
                    "interrupted while shrinking {name}: no minimal fault set"
                ));
                results.push(result);
                return Ok((results, true));
            }
            result.shrunk = match shrunk {
                Ok(s) => s,
                // The cell's runs stand; only its minimal fault set is missing, and said so.
                Err(e) => {
                    progress.line(&format!("cell {name}: could not shrink: {e}"));
                    None
                }
            };
            results.push(result);
        }
        Ok((results, false))
    }

    /// For a cell of several faults whose run broke the claim, the smallest set of them that
    /// still breaks it: its first failing run shrunk (`exactly shrink`, its replays in that
    /// run's `shrink/` folder), the plan written as `plans/<cell>-shrunk.yaml`.
    async fn shrink_cell(
        &self,
        cell: &CellResult,
        progress: &mut Progress,
    ) -> Result<Option<contract::Shrunk>, Error> {
        let Some(failing) = cell
            .runs
            .iter()
            .find(|r| r.faults_planned > 1 && r.exit_code == crate::error::exit::VIOLATED)
        else {
            return Ok(None);
        };
        progress.line(&format!(
            "cell {}: {} broke the claim with {} faults: shrinking it",
            cell.fault, failing.run_dir, failing.faults_planned
        ));
        let out = self
            .dir
            .join("plans")
            .join(format!("{}-shrunk.yaml", cell.fault));
        let opts = shrink::ShrinkOptions {
            dir: PathBuf::from(&failing.run_dir),
            out: Some(out.clone()),
            replays: SHRINK_REPLAYS,
            confirm: SHRINK_CONFIRM,
        };
        let outcome = shrink::shrink(&opts, self.abort.clone()).await?;
        let left = plan::load_plan(&outcome.plan)?;
        let faults: Vec<String> = left.loaded.faults.iter().map(|f| f.to_string()).collect();
        progress.line(&format!(
            "cell {}: shrunk to {} fault(s), broke the claim in {} of {} confirmations: {}",
            cell.fault,
            faults.len(),
            outcome.confirmed.0,
            outcome.confirmed.1,
            faults.join("; ")
        ));
        Ok(Some(contract::Shrunk {
            from: failing.run_dir.clone(),
            plan: outcome.plan.display().to_string(),
            faults,
            faults_before: outcome.faults.0,
            confirmed: outcome.confirmed,
        }))
    }

    /// One repeat of a cell: its faults drawn with `seed`, a deadline long enough for them.
    async fn run_cell(
        &self,
        cell: CellKind,
        cal: &Calibration,
        repeat: u32,
        seed: u64,
    ) -> Result<runner::Judged, Error> {
        let mut p = self.base.clone();
        p.faults = cell.faults(&self.base, cal, seed);
        let needed = Duration::from_micros(cal.run_us) * 3 + cell.length(cal) * 2;
        p.limits.deadline = p.limits.deadline.max(needed + Duration::from_secs(20));
        let name = format!("{}-{repeat}", cell.name(self.base.broker.kind));
        self.runner.run(&name, p, seed).await
    }

    /// Writes the outputs and says where.
    fn finish(&self, report: output::AuditReport) -> Result<AuditOutcome, Error> {
        output::write(&self.dir, &report).map_err(|source| Error::Reports {
            dir: self.dir.clone(),
            source,
        })?;
        let mut summary = output::table(&report);
        summary.push_str(&format!("\n{}\n", report.conclusion));
        if report.interrupted {
            summary.push_str("interrupted: only the runs that finished are counted\n");
        }
        summary.push_str(&format!(
            "audit: {} (page: {})",
            self.dir.join("audit.md").display(),
            self.dir.join("audit.html").display()
        ));
        Ok(AuditOutcome {
            dir: self.dir.clone(),
            exit_code: report.exit_code,
            summary,
        })
    }
}

fn say(msg: String) {
    progress::say(&msg);
}

/// `reports/audit-<plan>-<YYYYMMDDTHHMMSS>`.
fn default_dir(name: &str) -> PathBuf {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]"
        ))
        .unwrap_or_default();
    Path::new("reports").join(format!("audit-{clean}-{stamp}"))
}
