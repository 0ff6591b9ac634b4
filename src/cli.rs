//! The command line: parse, dispatch, print the one error, return the documented exit code
//! (the mapping from errors to codes is `error`'s; from verdicts, the judge's).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::consumer::containment;
use crate::error::{exit, Error};
use crate::plan::{self, Semantics};
use crate::run::{self, RunOptions, RunOutcome};
use crate::timeline::read_recorded;
use crate::{judge, report};

/// Tells, with evidence, whether a message consumer loses or duplicates work when it crashes.
#[derive(Debug, Parser)]
#[command(name = "exactly", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a plan: produce, run the consumer, inject faults, judge, write reports.
    Run {
        /// The plan file (YAML).
        plan: PathBuf,
        /// Put the run folder exactly here (default: reports/<run>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seed for random triggers (overrides the plan's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// Judge against these semantics instead of the plan's `expect`.
        #[arg(long, value_parser = parse_semantics)]
        expect: Option<Semantics>,
    },
    /// Check a plan without running it.
    Validate {
        /// The plan file (YAML).
        plan: PathBuf,
    },
    /// Print the plan's JSON Schema (for editors).
    Schema,
    /// Measure the consumer's delivery contract: calibrate without faults, then run every
    /// fault cell R times (the plan's `faults` are ignored) and state the semantics shown.
    Audit {
        /// The plan file (YAML); its faults are ignored.
        plan: PathBuf,
        /// Put the audit folder exactly here (default: reports/audit-<plan>-<time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Repeats per cell, each with its own seed.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        repeats: u32,
        /// Only these cells, comma-separated (e.g. kill-after-effect,kill-after-commit).
        #[arg(long, value_delimiter = ',')]
        cells: Vec<String>,
        /// The audit's seed (each repeat's seed derives from it; overrides the plan's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// Judge every run against these semantics instead of the plan's `expect`.
        #[arg(long, value_parser = parse_semantics)]
        expect: Option<Semantics>,
    },
    /// Find a smaller plan that still fails: fewer faults, earlier nth, shorter durations,
    /// each step kept when one of --replays replays still breaks the claim; writes it.
    Shrink {
        /// A failing run's folder (exit 1; holding plan.yaml and events.jsonl).
        dir: PathBuf,
        /// Write the smaller plan here (default: DIR/shrunk.yaml).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replays per candidate: it still fails when one of them does.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        replays: u32,
        /// Replays of the result, to confirm it.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
        confirm: u32,
    },
    /// Judge a run folder again from its events.jsonl and rewrite its reports.
    Report {
        /// A run folder (holding events.jsonl).
        dir: PathBuf,
    },
    /// Internal: the guardian `exactly run` starts, which ends the consumers' processes when
    /// the harness dies (even by SIGKILL).
    #[command(hide = true)]
    Guard {
        /// The harness's containment token.
        #[arg(long)]
        token: String,
        /// The harness's cgroup folder, when it has one.
        #[arg(long)]
        cgroup: Option<PathBuf>,
    },
}

fn parse_semantics(s: &str) -> Result<Semantics, String> {
    s.parse()
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    install_panic_cleanup();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return exit::command_line(e.use_stderr());
        }
    };
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("exactly: error: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(command: Command) -> Result<i32, Error> {
    match command {
        Command::Schema => {
            let schema =
                serde_json::to_string_pretty(&plan::json_schema()).expect("a schema serializes");
            println!("{schema}");
            Ok(exit::MET)
        }
        Command::Validate { plan } => {
            let p = plan::load_plan(&plan)?;
            println!(
                "{}: ok — plan `{}`, {} message(s), {} fault(s), expects {}",
                plan.display(),
                p.name,
                p.workload.messages.get(),
                p.faults.len(),
                p.boundaries()
                    .iter()
                    .map(|b| match b.declared {
                        true => format!("{} {}", b.name, b.expect.as_str()),
                        false => b.expect.as_str().to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(exit::MET)
        }
        Command::Report { dir } => judge(&dir),
        Command::Guard { token, cgroup } => Ok(containment::guard(&token, cgroup.as_deref())),
        Command::Shrink {
            dir,
            out,
            replays,
            confirm,
        } => {
            let opts = crate::audit::shrink::ShrinkOptions {
                dir,
                out,
                replays,
                confirm,
            };
            let outcome =
                with_runtime(
                    |abort| async move { crate::audit::shrink::shrink(&opts, abort).await },
                )?;
            println!(
                "shrunk {} fault(s) to {}; it failed in {} of {} confirmation replays",
                outcome.faults.0, outcome.faults.1, outcome.confirmed.0, outcome.confirmed.1
            );
            println!("plan: {}", outcome.plan.display());
            Ok(outcome.exit_code)
        }
        Command::Audit {
            plan,
            out,
            repeats,
            cells,
            seed,
            expect,
        } => {
            let p = plan::load_plan(&plan)?;
            let opts = crate::audit::AuditOptions {
                plan_path: plan,
                out,
                repeats,
                cells,
                seed,
                expect,
            };
            let outcome =
                with_runtime(|abort| async move { crate::audit::audit(&p, &opts, abort).await })?;
            println!("{}", outcome.summary);
            Ok(outcome.exit_code)
        }
        Command::Run {
            plan,
            out,
            seed,
            expect,
        } => {
            let p = plan::load_plan(&plan)?;
            let opts = RunOptions {
                plan_path: plan,
                out,
                seed,
                expect,
                progress_bar: std::io::stderr().is_terminal(),
            };
            let name = p.name.clone();
            let outcome = with_runtime(|abort| async move { run::run(&p, &opts, abort).await })?;
            conclude(outcome, &name)
        }
    }
}

/// Runs `work` on a fresh runtime with a stop token cancelled on the first SIGINT/SIGTERM;
/// no task and no consumer process outlives it.
fn with_runtime<T, F>(work: impl FnOnce(CancellationToken) -> F) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, Error>>,
{
    // Before any consumer: whatever ends this process, a guardian ends what it started.
    containment::start_guardian(std::env::current_exe());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let result = runtime.block_on(async {
        let abort = CancellationToken::new();
        // Listening before the run starts, so no signal finds the default action.
        let signals = Signals::listen();
        tokio::spawn(watch_signals(signals, abort.clone()));
        work(abort).await
    });
    // The runtime is dropped here: no task survives into the judging.
    drop(runtime);
    containment::kill_all();
    result
}

/// Judges a finished run and writes its reports; the failure that ended it, if any, is still
/// the headline. A run whose timeline file could not be written is not judged at all: its
/// reports say the evidence is incomplete (when they can be written; the error stands anyway).
fn conclude(outcome: RunOutcome, plan: &str) -> Result<i32, Error> {
    match outcome.failure {
        Some(e @ Error::EventsUnwritable(_)) => {
            if let Err(w) = report::unjudged::write(&outcome.dir, plan, &e.to_string()) {
                eprintln!("exactly: cannot write the reports either: {w}");
            }
            Err(e)
        }
        failure => {
            let code = judge(&outcome.dir)?;
            failure.map_or(Ok(code), Err)
        }
    }
}

/// Reads a run folder's timeline (in columns, as the judge reads it), judges it, writes the
/// reports, prints the verdict.
fn judge(dir: &Path) -> Result<i32, Error> {
    let recorded = read_recorded(&dir.join("events.jsonl"))?;
    let rec = judge::judge(&recorded);
    report::write_reports(dir, &rec, &recorded).map_err(|source| Error::Reports {
        dir: dir.to_owned(),
        source,
    })?;
    println!("{}", report::verdict_table(&rec));
    println!("report: {}", dir.join("report.md").display());
    println!("page:   {}", dir.join("report.html").display());
    Ok(rec.exit_code())
}

/// The harness's SIGINT and SIGTERM listeners (none when they could not be installed).
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    /// Installs the listeners now (inside the runtime).
    fn listen() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals(
            signal(SignalKind::interrupt())
                .ok()
                .zip(signal(SignalKind::terminate()).ok()),
        )
    }
}

/// First SIGINT/SIGTERM: stop the run in order. Second: kill every consumer and leave now.
async fn watch_signals(signals: Signals, abort: CancellationToken) {
    let Signals(Some((mut int, mut term))) = signals else {
        return;
    };
    for round in 0.. {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if round == 0 {
            eprintln!("exactly: interrupted: stopping the consumers and writing the report (again to kill at once)");
            abort.cancel();
        } else {
            containment::kill_all();
            std::process::exit(130);
        }
    }
}

/// A panic anywhere still kills every consumer process group before the process dies.
fn install_panic_cleanup() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        containment::kill_all();
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;
    use crate::timeline::EventsWriteError;
    use std::sync::Arc;

    /// A run folder holding an (empty) timeline.
    fn run_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.jsonl"), "").unwrap();
        dir
    }

    #[test]
    fn reports_that_cannot_be_written_are_an_infrastructure_failure() {
        let dir = run_folder();
        // A folder where the report file goes: the write fails, whoever runs the test.
        std::fs::create_dir(dir.path().join("report.json")).unwrap();
        let e = judge(dir.path()).expect_err("the report cannot be written");
        assert!(matches!(e, Error::Reports { .. }), "{e:?}");
        assert_eq!(e.exit_code(), exit::INFRASTRUCTURE);
        let shown = e.to_string();
        assert!(shown.contains(&dir.path().display().to_string()), "{shown}");
    }

    #[test]
    fn a_folder_without_a_timeline_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = judge(dir.path()).expect_err("no events.jsonl");
        assert_eq!(e.exit_code(), exit::USAGE);
    }

    #[test]
    fn a_run_whose_timeline_could_not_be_written_is_not_judged_and_exits_4() {
        let dir = run_folder();
        let events = dir.path().join("events.jsonl");
        let outcome = RunOutcome {
            dir: dir.path().to_owned(),
            events: events.clone(),
            failure: Some(Error::EventsUnwritable(EventsWriteError {
                path: events.clone(),
                source: Arc::new(std::io::Error::from_raw_os_error(28)),
            })),
        };
        let e = conclude(outcome, "plan").expect_err("the run failed");
        assert_eq!(e.exit_code(), exit::INFRASTRUCTURE);
        assert!(e.to_string().contains(&events.display().to_string()), "{e}");
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(
            md.contains("NOT JUDGED") && !md.contains("verdict:"),
            "no verdict from a timeline with a hole: {md}"
        );
    }

    #[test]
    fn a_run_that_failed_otherwise_is_judged_and_the_failure_is_the_headline() {
        let dir = run_folder();
        let outcome = RunOutcome {
            dir: dir.path().to_owned(),
            events: dir.path().join("events.jsonl"),
            failure: Some(crate::error::InfraError::new("the proxy failed: x").into()),
        };
        let e = conclude(outcome, "plan").expect_err("the run failed");
        assert_eq!(e.exit_code(), exit::INFRASTRUCTURE);
        assert!(
            dir.path().join("report.md").exists(),
            "reports still written"
        );
    }
}
