//! `exactly run`: wires one run together and decides when it ends.
//!
//! Order of a run, one phase per step of [`drive`]: broker ready → timeline opened → sinks
//! listening ([`sinks`]) → workload produced (first, or alongside) → proxy listening
//! ([`proxy`]) → nemesis subscribed, supervisor starts the consumer ([`supervision`]) → watch
//! progress and bypasses of the proxy until the end ([`watch`] and [`bypass`], deciding with
//! the pure [`end`]) → stop everything
//! ([`teardown`]) → the caller judges the timeline file and writes the reports.
//!
//! Invariants: every task gets the run's stop token and nothing outlives `run`; the phases
//! only hand forward what they started (no phase reaches back into an earlier one); the end
//! of a run is decided by [`end::EndWatch`] alone, from what the watch observed.

mod bypass;
mod crash_loop;
mod end;
mod members;
mod proxy;
mod sinks;
mod supervision;
mod tally;
mod teardown;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, Broker, Endpoint};
use crate::consumer::Roster;
use crate::error::{Error, InfraError};
use crate::gate::Gate;
use crate::plan::{Plan, Semantics};
use crate::timeline::{AckedOffsets, BoundaryInfo, EndReason, Event, RunInfo, Timeline};
use sinks::Sinks;
use supervision::Supervision;
use tally::Tally;

/// What the command line adds to a plan.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The plan file (for the report's reproduce line).
    pub plan_path: PathBuf,
    /// `--out DIR`: the run folder, exactly there.
    pub out: Option<PathBuf>,
    /// `--seed N`.
    pub seed: Option<u64>,
    /// `--expect S`: overrides the plan's expectation.
    pub expect: Option<Semantics>,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress_bar: bool,
}

/// Where a finished run left its evidence.
pub struct RunOutcome {
    /// The run folder.
    pub dir: PathBuf,
    /// The timeline file.
    pub events: PathBuf,
    /// The infrastructure failure that ended the run early, if any (the timeline records it
    /// too, so the reports still get written), or the failed write that left the timeline file
    /// incomplete ([`Error::EventsUnwritable`]: then there is nothing sound to judge).
    pub failure: Option<Error>,
}

/// What every phase of one run shares, read-only.
struct RunContext<'a> {
    plan: &'a Plan,
    opts: &'a RunOptions,
    run_id: &'a str,
    dir: &'a Path,
    seed: u64,
    endpoint: &'a Endpoint,
    broker: &'a Arc<Broker>,
    timeline: &'a Timeline,
    /// The workload's acknowledged offsets (Kafka): written by the produce phase, read by the
    /// proxy to record fetched batches the ledger names as offset ranges.
    acked: &'a Arc<AckedOffsets>,
    /// Cancelled when the run stops: every task the run started ends.
    stop: &'a CancellationToken,
    /// Cancelled on SIGINT/SIGTERM.
    abort: &'a CancellationToken,
}

/// Runs a validated plan to its end. `Err` means nothing was recorded (bad folder, broker
/// unreachable); once the timeline exists, failures come back in `RunOutcome::failure`.
/// `abort` is cancelled on SIGINT/SIGTERM.
pub async fn run(
    plan: &Plan,
    opts: &RunOptions,
    abort: CancellationToken,
) -> Result<RunOutcome, Error> {
    let seed = opts.seed.or(plan.seed).unwrap_or_else(random_seed);
    let run_id = run_id(&plan.name);
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| Path::new("reports").join(&run_id));
    let io = |what: &str, e: std::io::Error| {
        InfraError::new(format!("cannot {what} in {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| io("create the run folder", e))?;
    std::fs::create_dir_all(dir.join("effects")).map_err(|e| io("create the run folder", e))?;
    let resolved = serde_yaml::to_string(plan).unwrap_or_default();
    std::fs::write(dir.join("plan.yaml"), resolved).map_err(|e| io("write plan.yaml", e))?;

    // `--expect` overrides every boundary's promise.
    let expect_of = |b: &crate::plan::Boundary| opts.expect.unwrap_or(b.expect);
    let first = &plan.boundaries()[0]; // loading keeps at least one boundary
    let boundaries: Vec<BoundaryInfo> = plan
        .boundaries()
        .iter()
        .filter(|b| b.declared)
        .map(|b| BoundaryInfo {
            name: b.name.clone(),
            sink: b.sink,
            expect: expect_of(b).as_str().into(),
            id: b.id_rule.clone(),
        })
        .collect();
    let say = |msg: String| eprintln!("exactly: {msg}");
    // Runs without a bar on a terminal are the audit's and shrink's: their own line shows them.
    if opts.progress_bar || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        say(format!("run {run_id} → {}", dir.display()));
    }
    let connected = broker::connect(&plan.broker, &run_id).await?;
    let endpoint = connected.endpoint.clone();
    if endpoint.mock {
        say(format!(
            "no broker.bootstrap: using librdkafka's embedded MOCK cluster at {} (a demo, not evidence about a real Kafka)",
            endpoint.address
        ));
    }
    let broker = Arc::new(connected.broker);

    let timeline =
        Timeline::create(&dir.join("events.jsonl")).map_err(|e| io("write events.jsonl", e))?;
    let reproduce = reproduce_command(opts, seed);
    timeline.record(Event::RunStarted(Box::new(RunInfo {
        run: run_id.clone(),
        plan: plan.name.clone(),
        description: plan.description.clone(),
        broker: endpoint.broker_name().into(),
        mock_broker: endpoint.mock,
        broker_address: endpoint.address.clone(),
        topic: endpoint.source.clone(),
        group: endpoint.group.clone(),
        expect: expect_of(first).as_str().into(),
        seed,
        planned_faults: plan.loaded.faults.iter().map(|f| f.to_string()).collect(),
        messages: plan.workload.messages.get(),
        reproduce,
        effects_id: Some(first.id_rule.clone()),
        effects_sink: Some(first.sink),
        boundaries,
        dead_letter: endpoint.dead_letter.clone(),
    })));

    let stop = CancellationToken::new();
    let acked = Arc::new(AckedOffsets::default());
    let ctx = RunContext {
        plan,
        opts,
        run_id: &run_id,
        dir: &dir,
        seed,
        endpoint: &endpoint,
        broker: &broker,
        timeline: &timeline,
        acked: &acked,
        stop: &stop,
        abort: &abort,
    };
    let outcome = drive(&ctx).await;
    stop.cancel();
    // The broker handle goes before the embedded cluster it may talk to (declared earlier).
    drop(broker);
    // Everything recorded is in events.jsonl before anyone reads it back.
    timeline.flush();
    // A hole in the timeline outranks every other failure: the evidence cannot be judged.
    let failure = match timeline.write_failure() {
        Some(e) => Some(e.into()),
        None => outcome.err(),
    };
    Ok(RunOutcome {
        events: dir.join("events.jsonl"),
        dir,
        failure,
    })
}

/// Everything between "broker ready" and "run ended", phase by phase; returns once every task
/// has stopped.
async fn drive(ctx: &RunContext<'_>) -> Result<(), Error> {
    let started = Instant::now();
    let tally = Tally::follow(ctx.timeline);
    let crashes = crash_loop::follow(ctx.timeline);
    let gate = Gate::holding(crate::nemesis::hold_points(&ctx.plan.loaded.faults));
    // Sized up front for every planned scale-up, so a scaled-up instance is attributed like
    // the first ones; the sink and the proxy read it, the supervisor writes it.
    let capacity = ctx.plan.instance_capacity();
    let roster = Roster::new(capacity);
    let sinks = Sinks::start(ctx, &gate, &roster).await?;
    let workload = match produce_workload(ctx).await? {
        Workload::Aborted => return Ok(()),
        Workload::Produced => None,
        Workload::Producing(task) => Some(task),
    };
    let proxy = proxy::start(ctx, capacity, &roster, &gate).await?;
    let supervision = Supervision::start(ctx, &sinks, proxy.as_ref(), capacity, roster, gate);
    let followed = watch::Followed {
        tally: &tally,
        crashes: &crashes,
        sinks: &sinks,
    };
    let ending = watch::until_end(
        ctx,
        started,
        followed,
        &supervision,
        proxy.as_ref(),
        workload.as_ref(),
    )
    .await;
    teardown::stop_all(ctx, ending, sinks, proxy, supervision, workload).await
}

/// Where the workload stands once the produce phase is over.
enum Workload {
    /// Produced in full before the consumer starts.
    Produced,
    /// Produced alongside the consumer (`workload.during`).
    Producing(JoinHandle<Result<(), InfraError>>),
    /// Interrupted while producing first: the run ended (and says so on the timeline).
    Aborted,
}

/// The produce phase: first (waiting for it, unless interrupted), or alongside the consumer.
async fn produce_workload(ctx: &RunContext<'_>) -> Result<Workload, Error> {
    let plan = ctx.plan;
    let produce = {
        let (broker, timeline, acked) =
            (ctx.broker.clone(), ctx.timeline.clone(), ctx.acked.clone());
        let messages = crate::workload::MessageFactory {
            run: ctx.run_id.to_owned(),
            keys: plan.workload.keys.map(|k| k.get()),
            template: plan.workload.payload.clone(),
            poison: plan.workload.poison.clone(),
        };
        let (count, rate) = (plan.workload.messages.get(), plan.workload.rate);
        async move {
            broker
                .produce(&messages, count, rate, &timeline, &acked)
                .await
        }
    };
    if plan.workload.during {
        return Ok(Workload::Producing(tokio::spawn(produce)));
    }
    tokio::select! {
        r = produce => r.map(|()| Workload::Produced).map_err(Error::from),
        _ = ctx.abort.cancelled() => {
            ctx.timeline.record(Event::RunEnded { reason: EndReason::Aborted });
            Ok(Workload::Aborted)
        }
    }
}

fn reproduce_command(opts: &RunOptions, seed: u64) -> String {
    let mut cmd = format!("exactly run {} --seed {seed}", opts.plan_path.display());
    if let Some(e) = opts.expect {
        cmd.push_str(&format!(" --expect {}", e.as_str()));
    }
    cmd
}

fn random_seed() -> u64 {
    rand::random()
}

/// `name-YYYYMMDDTHHMMSS-xxxx`, safe in topic, group and folder names.
fn run_id(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]"
        ))
        .unwrap_or_default();
    format!("{clean}-{stamp}-{:04x}", rand::random::<u16>())
}
