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
                "calibration: {} of {} effected, {:.1} ms per message, {} commit(s), {} ack(s), session timeout {}",
                c.effected,
                c.produced,
                c.per_message_us as f64 / 1000.0,
                c.commits,
                c.acks,
                c.session_timeout_ms.map_or("not seen".into(), |ms| format!("{ms} ms"))
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
        let total = selected.len() as u64 * u64::from(self.opts.repeats);
        let mut done = 0u64;
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
            };
            if let Err(why) = cell.applies(&self.base, cal) {
                say(format!("cell {name}: not applicable: {why}"));
                (result.applicable, result.reason) = (false, Some(why));
                done += u64::from(self.opts.repeats);
                results.push(result);
                continue;
            }
            for r in 1..=self.opts.repeats {
                let run_seed = seed
                    .wrapping_add((i as u64 + 1) * 1000)
                    .wrapping_add(u64::from(r));
                let judged = self.run_cell(*cell, cal, r, run_seed).await?;
                if result.description.is_empty() {
                    result.description = judged.faults.clone();
                }
                if self.abort.is_cancelled() {
                    say(format!("interrupted: {} not counted", judged.dir_str()));
                    result.interrupted = true;
                    results.push(result);
                    return Ok((results, true));
                }
                let mut run = RunResult::from_judgement(judged.dir_str(), run_seed, &judged.rec);
                run.failure = judged.failure.clone();
                done += 1;
                say(format!(
                    "{} cell {name} {r}/{}: {} ({})",
                    bar(done, total),
                    self.opts.repeats,
                    run.verdict,
                    if run.mechanisms.is_empty() {
                        "—".into()
                    } else {
                        run.mechanisms.join(", ")
                    }
                ));
                result.runs.push(run);
            }
            results.push(result);
        }
        Ok((results, false))
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

/// A progress bar across the audit's runs: `[#####-----] 5/10`.
fn bar(done: u64, total: u64) -> String {
    let width = 20u64;
    let filled = (done * width).checked_div(total).unwrap_or(width) as usize;
    format!(
        "[{}{}] {done}/{total}",
        "#".repeat(filled),
        "-".repeat(width as usize - filled.min(width as usize))
    )
}

fn say(msg: String) {
    eprintln!("exactly audit: {msg}");
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
