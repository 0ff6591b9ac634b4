//! One real run of a plan made in code, as `exactly run` would do it: the plan written as a
//! file (so the run's reproduce line works), loaded and validated like any plan, run by
//! [`run::run`] into its own folder, judged by `judge::analyze`, its reports written.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, InfraError};
use crate::judge::{self, Judgement};
use crate::plan::{self, Plan, Semantics};
use crate::run::{self, RunOptions};
use crate::timeline::{read_recorded, Stamped};

/// Runs plans into folders under `dir` (`dir/<name>/`, the plan as `dir/plans/<name>.yaml`).
pub struct Runner {
    /// The folder the runs go under.
    pub dir: PathBuf,
    /// The claim judged instead of each plan's `expect`.
    pub expect: Option<Semantics>,
    /// Cancelled on Ctrl-C: the run in progress ends in order.
    pub abort: CancellationToken,
}

/// A finished, judged run.
pub struct Judged {
    /// Its run folder.
    pub dir: PathBuf,
    /// Its timeline.
    pub events: Vec<Stamped>,
    /// Its judgement.
    pub rec: Judgement,
    /// Its faults, described.
    pub faults: String,
    /// The harness failure that ended it early, if any (its timeline says so too).
    pub failure: Option<String>,
}

impl Judged {
    /// The run folder, as text.
    pub fn dir_str(&self) -> String {
        self.dir.display().to_string()
    }
}

impl Runner {
    /// Writes the plan as `plans/<name>.yaml`, runs it into `<name>/` exactly as `exactly
    /// run` would, judges it and writes its reports.
    pub async fn run(&self, name: &str, p: Plan, seed: u64) -> Result<Judged, Error> {
        let plans = self.dir.join("plans");
        std::fs::create_dir_all(&plans)
            .map_err(|e| InfraError::new(format!("cannot create {}: {e}", plans.display())))?;
        let plan_path = plans.join(format!("{name}.yaml"));
        let text = serde_yaml::to_string(&p)
            .map_err(|e| InfraError::new(format!("cannot write the plan of {name}: {e}")))?;
        std::fs::write(&plan_path, &text)
            .map_err(|e| InfraError::new(format!("cannot write {}: {e}", plan_path.display())))?;
        let p = plan::parse_plan(&plan_path, &text)?;
        let faults: Vec<String> = p.loaded.faults.iter().map(|f| f.to_string()).collect();
        let opts = RunOptions {
            plan_path,
            out: Some(self.dir.join(name)),
            seed: Some(seed),
            expect: self.expect,
            progress_bar: false,
        };
        let outcome = run::run(&p, &opts, self.abort.clone()).await?;
        crate::consumer::process::kill_all_groups();
        let failure = match outcome.failure {
            Some(e @ Error::EventsUnwritable(_)) => return Err(e),
            other => other.map(|e| e.to_string()),
        };
        let (events, rec) = judge_folder(&outcome.dir)?;
        Ok(Judged {
            dir: outcome.dir,
            events,
            rec,
            faults: faults.join("; "),
            failure,
        })
    }
}

/// Reads a run folder's timeline, judges it and writes its reports (as `exactly report`).
pub fn judge_folder(dir: &Path) -> Result<(Vec<Stamped>, Judgement), Error> {
    let recorded = read_recorded(&dir.join("events.jsonl"))?;
    let rec = judge::judge(&recorded);
    crate::report::write_reports(dir, &rec, &recorded).map_err(|source| Error::Reports {
        dir: dir.to_owned(),
        source,
    })?;
    Ok((recorded.to_events(), rec))
}
