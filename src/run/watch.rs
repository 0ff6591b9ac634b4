//! The watch phase: wakes every 250 ms (or on an interrupt, or when every consumer instance
//! ended), looks for consumer connections that bypass the proxy (about once a second, see
//! [`super::bypass`]; once more at the end), checks the run's health, reads the broker's
//! progress onto the timeline, draws the progress bar, and asks [`EndWatch`] whether the run is
//! over. It decides nothing itself.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::bypass::BypassWatch;
use super::crash_loop::Streak;
use super::end::{EndWatch, Ending, Health, Seen, Step, Wake};
use super::proxy::Proxy;
use super::sinks::Sinks;
use super::supervision::Supervision;
use super::tally::Tally;
use super::RunContext;
use crate::broker::Snapshot;
use crate::error::InfraError;
use crate::nemesis::NemesisStatus;
use crate::plan::Target;
use crate::timeline::{EndReason, Event};

/// How often the broker's progress is read.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// What the watch follows besides the supervision: the live tally of acknowledged and
/// effected IDs, the crash-loop streak, and the sinks (a wrong ID rule).
pub(super) struct Followed<'a> {
    /// Acknowledged and effected IDs so far.
    pub(super) tally: &'a watch::Receiver<Tally>,
    /// Quick self-exits of the consumer since its last sign of work.
    pub(super) crashes: &'a watch::Receiver<Streak>,
    /// The run's effect sink.
    pub(super) sinks: &'a Sinks,
}

/// Watches the run until it ends; returns how. The last progress read's failure, if it still
/// stands, is recorded as a warning.
pub(super) async fn until_end(
    ctx: &RunContext<'_>,
    started: Instant,
    followed: Followed<'_>,
    supervision: &Supervision,
    proxy: Option<&Proxy>,
    workload: Option<&JoinHandle<Result<(), InfraError>>>,
) -> Ending {
    let tally = followed.tally;
    let limits = &ctx.plan.limits;
    let supervisor = &supervision.supervisor;
    let bar = progress_bar(ctx.opts.progress_bar, ctx.plan.workload.messages.get());
    let mut end = EndWatch::new(started + limits.deadline, limits.settle);
    let mut last_snapshot: Option<Snapshot> = None;
    let mut progress_error = None;
    let mut bypass = BypassWatch::new(ctx.plan.consumer.bypass);
    // Since when every progress read has failed.
    let mut failing_since: Option<Instant> = None;
    let connect_timeout = ctx.plan.broker.connect_timeout;
    let ending = loop {
        let wake = tokio::select! {
            _ = tokio::time::sleep(PROGRESS_INTERVAL) => Wake::Tick,
            _ = ctx.abort.cancelled() => Wake::StopRequested,
            _ = supervisor.instances_ended(), if !end.instances_done() => Wake::InstancesEnded,
        };
        if let Some(p) = proxy {
            let live = supervisor.live(Target::AllInstances);
            bypass.look_if_due(p, live, ctx.timeline).await;
        }
        let health = Health {
            consumer_failed: supervisor.has_failed(),
            proxy_failure: proxy.and_then(Proxy::failure),
            events_unwritable: ctx.timeline.write_failure().is_some(),
            crash_loop: followed
                .crashes
                .borrow()
                .crash_loop(end.instances_done(), ctx.timeline.now_us())
                .map(|c| c.to_string()),
            wrong_rule: followed.sinks.wrong_rule().map(|w| w.to_string()),
            fatal_bypass: bypass.fatal().map(str::to_owned),
            broker_lost: broker_lost(failing_since, connect_timeout, progress_error.as_ref()),
        };
        match end.on_wake(wake, &health) {
            Step::End(ending) => break ending,
            Step::Wait => continue,
            Step::ReadProgress => {}
        }
        let produced = workload.is_none_or(|t| t.is_finished());
        match ctx.broker.snapshot().await {
            Ok(snapshot) => {
                if last_snapshot.as_ref() != Some(&snapshot) {
                    ctx.timeline.record(snapshot.event());
                    last_snapshot = Some(snapshot);
                }
                progress_error = None;
                failing_since = None;
            }
            Err(e) => {
                progress_error = Some(e);
                failing_since.get_or_insert_with(Instant::now);
            }
        }
        let status = supervision.nemesis_status.borrow().clone();
        let counts = tally.borrow().clone();
        update_bar(&bar, &counts, &status, last_snapshot.as_ref());
        let seen = Seen {
            now: Instant::now(),
            produced,
            all_effected: counts.all_effected(),
            last_effect_at: counts.last_effect_at,
            nothing_left: last_snapshot.as_ref().is_some_and(Snapshot::nothing_left),
            faults_pending: status.scheduled_pending,
            since_last_fault: status
                .last_fired_at
                .map(|at| ctx.timeline.elapsed().saturating_sub(at)),
        };
        if let Some(ending) = end.on_progress(&seen) {
            break ending;
        }
    };
    bar.finish_and_clear();
    let ending = last_look(ctx, &mut bypass, supervision, proxy, ending).await;
    if let Ending::BrokerLost(why) = &ending {
        ctx.timeline.record(Event::Warning {
            message: why.clone(),
        });
    }
    if let Some(e) = progress_error {
        ctx.timeline.record(Event::Warning {
            message: format!("the last progress read failed: {e}"),
        });
    }
    ending
}

/// One more look for bypassing connections before the consumers are stopped (one opened since
/// the last look would go unseen); a fatal one found then ends a run that was ending well as
/// bypassed.
async fn last_look(
    ctx: &RunContext<'_>,
    bypass: &mut BypassWatch,
    supervision: &Supervision,
    proxy: Option<&Proxy>,
    ending: Ending,
) -> Ending {
    let Some(p) = proxy else {
        return ending;
    };
    let live = supervision.supervisor.live(Target::AllInstances);
    bypass.look(p, live, ctx.timeline).await;
    match (bypass.fatal(), ending.reason()) {
        (Some(what), EndReason::Settled | EndReason::Deadline) => Ending::Bypassed(what.into()),
        (Some(_), EndReason::Aborted | EndReason::InfrastructureError | EndReason::PlanError)
        | (None, _) => ending,
    }
}

/// Why the broker counts as gone: every progress read for `connect_timeout` failed (the last
/// with `error`). A shorter outage is waited out.
fn broker_lost(
    failing_since: Option<Instant>,
    connect_timeout: Duration,
    error: Option<&impl std::fmt::Display>,
) -> Option<String> {
    let since = failing_since.filter(|t| t.elapsed() >= connect_timeout)?;
    Some(format!(
        "lost the broker: no progress read succeeded for {} (broker.connect_timeout {}); the \
         last one failed with: {}",
        humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
        humantime::format_duration(connect_timeout),
        error.map_or_else(|| "?".to_owned(), |e| e.to_string())
    ))
}

fn progress_bar(enabled: bool, len: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} effected  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn update_bar(
    bar: &ProgressBar,
    counts: &Tally,
    status: &NemesisStatus,
    snapshot: Option<&Snapshot>,
) {
    bar.set_position(counts.effected as u64);
    let lag = snapshot
        .map(|p| p.lag().to_string())
        .unwrap_or_else(|| "?".into());
    bar.set_message(format!(
        "faults {}/{} | lag {lag}",
        status.fired, status.planned
    ));
}
