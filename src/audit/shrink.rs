//! `exactly shrink RUN_DIR`: a smaller plan that still fails. From a run that broke its claim
//! (exit 1), it replays the run's plan with fewer faults, earlier `nth` values and shorter
//! durations, keeping each step that still fails in at least one of `replays` replays; then
//! replays the result `confirm` times and writes it as a plan file to re-run.
//!
//! Random and periodic triggers are first made fixed: each firing the run applied becomes its
//! own `at:` fault at the time it fired (from the consumer's first start), so one firing can
//! be dropped without moving the others.
//!
//! Every replay is a real run through the same [`Runner`] the audit uses, in
//! `RUN_DIR/shrink/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::audit::runner::Runner;
use crate::error::{exit, Error};
use crate::judge::Judgement;
use crate::plan::{self, Count, FaultSpec, Plan, Semantics, When};
use crate::timeline::{read_events, Event, Stamped};

/// What the command line asks of a shrink.
#[derive(Debug, Clone)]
pub struct ShrinkOptions {
    /// The failing run's folder.
    pub dir: PathBuf,
    /// Where the smaller plan goes (default: RUN_DIR/shrunk.yaml).
    pub out: Option<PathBuf>,
    /// Replays per candidate (it fails when one of them does).
    pub replays: u32,
    /// Replays of the result.
    pub confirm: u32,
}

/// What a shrink found.
pub struct ShrinkOutcome {
    /// The plan file written.
    pub plan: PathBuf,
    /// Faults before and after.
    pub faults: (usize, usize),
    /// Replays of the result that failed, of `confirm`.
    pub confirmed: (u32, u32),
    /// Exit code: 0 when the result failed in a confirmation replay, else 3.
    pub exit_code: i32,
}

/// Shrinks a failing run's plan.
pub async fn shrink(
    opts: &ShrinkOptions,
    abort: CancellationToken,
) -> Result<ShrinkOutcome, Error> {
    let events = read_events(&opts.dir.join("events.jsonl"))?;
    let rec = crate::judge::analyze(&events);
    if rec.exit_code() != exit::VIOLATED {
        return Err(Error::Usage(format!(
            "{}: the run did not break its claim (exit {}, {}): only a failing run (exit 1) can be shrunk",
            opts.dir.display(),
            rec.exit_code(),
            rec.verdict
        )));
    }
    let plan_file = opts.dir.join("plan.yaml");
    let mut plan = plan::load_plan(&plan_file)?;
    let (seed, expect) = run_facts(&rec);
    let before = plan.faults.len();
    plan.faults = fixed_faults(&plan, &events, &rec);
    let mut s = Shrinker {
        runner: Runner {
            dir: opts.dir.join("shrink"),
            expect,
            abort,
        },
        plan,
        seed,
        replays: opts.replays,
        trial: 0,
    };
    s.drop_faults().await?;
    s.earlier_counts().await?;
    s.shorter_lengths().await?;
    let mut failed = 0;
    for _ in 0..opts.confirm {
        if s.interrupted() {
            break;
        }
        failed += u32::from(s.replay_once(&s.plan.clone()).await?);
    }
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| opts.dir.join("shrunk.yaml"));
    write_plan(&out, &s.plan, &opts.dir, (failed, opts.confirm))?;
    Ok(ShrinkOutcome {
        plan: out,
        faults: (before, s.plan.faults.len()),
        confirmed: (failed, opts.confirm),
        exit_code: if failed > 0 {
            exit::MET
        } else {
            exit::INCONCLUSIVE
        },
    })
}

/// The run's seed and claim, from its `run_started`.
fn run_facts(rec: &Judgement) -> (u64, Option<Semantics>) {
    let seed = rec.run.as_ref().map_or(0, |r| r.seed);
    let expect = rec.run.as_ref().and_then(|r| r.expect.parse().ok());
    (seed, expect)
}

/// The plan's faults with every `random` or `every` trigger replaced by one `at:` fault per
/// firing the run applied (a firing it never applied is dropped).
fn fixed_faults(plan: &Plan, events: &[Stamped], rec: &Judgement) -> Vec<FaultSpec> {
    let first_start = events.iter().find_map(|e| match &e.event {
        Event::Process { .. } => Some(e.t_us),
        _ => None,
    });
    let mut out = Vec::new();
    for (i, f) in plan.faults.iter().enumerate() {
        if f.when.random.is_none() && f.when.every.is_none() {
            out.push(f.clone());
            continue;
        }
        for r in rec.faults.iter().filter(|r| r.fault == i && r.applied) {
            let at = r.fired_at_us.saturating_sub(first_start.unwrap_or(0));
            out.push(FaultSpec {
                when: When {
                    at: Some(Duration::from_millis(at / 1000)),
                    ..When::default()
                },
                ..f.clone()
            });
        }
    }
    out
}

/// The shrinking in progress: the smallest failing plan so far.
struct Shrinker {
    runner: Runner,
    plan: Plan,
    seed: u64,
    replays: u32,
    trial: u32,
}

impl Shrinker {
    fn interrupted(&self) -> bool {
        self.runner.abort.is_cancelled()
    }

    /// Drops one fault at a time while the rest still fails.
    async fn drop_faults(&mut self) -> Result<(), Error> {
        let mut i = 0;
        while i < self.plan.faults.len() && self.plan.faults.len() > 1 {
            let mut candidate = self.plan.clone();
            let dropped = candidate.faults.remove(i);
            say(format!("without fault {}: {}", i, describe(&dropped)));
            if self.fails(&candidate).await? {
                self.plan = candidate;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// For each counted trigger, the earliest of nth 1, nth/4, nth/2 that still fails; for
    /// each `at:`, half as long.
    async fn earlier_counts(&mut self) -> Result<(), Error> {
        for i in 0..self.plan.faults.len() {
            if let Some(nth) = self.plan.faults[i].when.nth.map(Count::get) {
                for smaller in [1, nth / 4, nth / 2] {
                    if smaller == 0 || smaller >= nth {
                        continue;
                    }
                    let mut c = self.plan.clone();
                    c.faults[i].when.nth = Some(Count::new(smaller));
                    say(format!("fault {i} at nth {smaller} instead of {nth}"));
                    if self.fails(&c).await? {
                        self.plan = c;
                        break;
                    }
                }
            }
            if let Some(at) = self.plan.faults[i].when.at {
                let mut c = self.plan.clone();
                c.faults[i].when.at = Some(at / 2);
                say(format!("fault {i} at {:?} instead of {at:?}", at / 2));
                if self.fails(&c).await? {
                    self.plan = c;
                }
            }
        }
        Ok(())
    }

    /// Each length (`for`, `grace`) halved while it still fails.
    async fn shorter_lengths(&mut self) -> Result<(), Error> {
        for i in 0..self.plan.faults.len() {
            for field in [Length::For, Length::Grace] {
                let Some(d) = field.get(&self.plan.faults[i]) else {
                    continue;
                };
                let mut c = self.plan.clone();
                field.set(&mut c.faults[i], d / 2);
                say(format!("fault {i} lasting {:?} instead of {d:?}", d / 2));
                if self.fails(&c).await? {
                    self.plan = c;
                }
            }
        }
        Ok(())
    }

    /// True when one of `replays` replays breaks the claim; false once interrupted.
    async fn fails(&mut self, candidate: &Plan) -> Result<bool, Error> {
        for _ in 0..self.replays {
            if self.interrupted() {
                return Ok(false);
            }
            if self.replay_once(candidate).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One replay; true when it broke the claim.
    async fn replay_once(&mut self, candidate: &Plan) -> Result<bool, Error> {
        self.trial += 1;
        let name = format!("trial-{}", self.trial);
        let judged = self.runner.run(&name, candidate.clone(), self.seed).await?;
        let failed = judged.rec.exit_code() == exit::VIOLATED;
        say(format!(
            "{name}: {} fault(s) → {}{}",
            candidate.faults.len(),
            judged.rec.verdict,
            if failed { " (fails)" } else { "" }
        ));
        Ok(failed)
    }
}

/// A length of a fault that shrinking tries to halve.
#[derive(Clone, Copy)]
enum Length {
    For,
    Grace,
}

impl Length {
    fn get(self, f: &FaultSpec) -> Option<Duration> {
        match self {
            Length::For => f.for_,
            Length::Grace => f.grace,
        }
    }
    fn set(self, f: &mut FaultSpec, d: Duration) {
        match self {
            Length::For => f.for_ = Some(d),
            Length::Grace => f.grace = Some(d),
        }
    }
}

/// A fault in one line, as the plan would say it.
fn describe(f: &FaultSpec) -> String {
    serde_json::to_string(f).unwrap_or_default()
}

/// Writes the smaller plan with a header saying where it came from.
fn write_plan(out: &Path, p: &Plan, from: &Path, (failed, of): (u32, u32)) -> Result<(), Error> {
    let mut p = p.clone();
    p.name = format!("{}-shrunk", p.name);
    let text = serde_yaml::to_string(&p)
        .map_err(|e| crate::error::InfraError::new(format!("cannot write the plan: {e}")))?;
    let header = format!(
        "# Shrunk by `exactly shrink {}`: {} fault(s); it broke its claim in {failed} of {of} \
         confirmation replays.\n# Re-run it: exactly run {}\n",
        from.display(),
        p.faults.len(),
        out.display()
    );
    std::fs::write(out, header + &text).map_err(|e| {
        crate::error::InfraError::new(format!("cannot write {}: {e}", out.display())).into()
    })
}

fn say(msg: String) {
    eprintln!("exactly shrink: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::FaultRecord;

    #[test]
    fn random_firings_become_one_at_fault_each_from_the_first_start() {
        let text = "name: t\nbroker: {kind: kafka, bootstrap: 'x:1'}\nworkload: {messages: 10}\n\
                    consumer: {command: [c]}\neffects: {sink: http}\nexpect: at-least-once\n\
                    faults:\n  - kill: consumer\n    when: {random: 3, within: 5s}\n  \
                    - kill: consumer\n    when: {after: effect, nth: 4}\n";
        let plan = plan::parse_plan(Path::new("t.yaml"), text).unwrap();
        let start = Stamped {
            seq: 0,
            t_us: 1_000_000,
            event: Event::Process {
                instance: 0,
                incarnation: 1,
                pid: 1,
                phase: crate::timeline::ProcessPhase::Started,
                status: None,
            },
        };
        let mut rec = crate::judge::analyze(&[]);
        let fired = |fault, at, applied| FaultRecord {
            fault,
            action: "kill".into(),
            target: "consumer".into(),
            trigger: String::new(),
            matched_at_us: at,
            fired_at_us: at,
            trigger_latency_us: 0,
            applied,
            detail: String::new(),
            hit: vec![],
            length_us: None,
            through_proxy: false,
        };
        rec.faults = vec![
            fired(0, 2_500_000, true),
            fired(0, 3_000_000, false),
            fired(1, 3_200_000, true),
            fired(0, 4_000_000, true),
        ];
        let fixed = fixed_faults(&plan, &[start], &rec);
        let ats: Vec<_> = fixed.iter().map(|f| f.when.at).collect();
        assert_eq!(
            ats,
            vec![
                Some(Duration::from_millis(1500)),
                Some(Duration::from_millis(3000)),
                None
            ]
        );
        assert_eq!(fixed[2].when.nth, Some(Count::new(4)));
        // Each is a fault a plan accepts.
        let mut p = plan.clone();
        p.faults = fixed;
        let text = serde_yaml::to_string(&p).unwrap();
        assert_eq!(
            plan::parse_plan(Path::new("s.yaml"), &text)
                .unwrap()
                .loaded
                .faults
                .len(),
            3
        );
    }
}
