//! The teardown phase: records how the run ended, then stops everything in order (no more
//! faults, the consumers, the sinks, the proxy), and says which failure, if any, ended it.
//!
//! The final progress is read before the consumers stop (a shutdown commit is not the run's),
//! and the AMQP queue's remainder after (with the consumers gone, what the broker still holds
//! is pending, not lost); neither after an infrastructure error, whose broker may be the
//! failure.

use tokio::task::JoinHandle;

use super::end::Ending;
use super::proxy::Proxy;
use super::sinks::Sinks;
use super::supervision::Supervision;
use super::RunContext;
use crate::error::{Error, InfraError};
use crate::plan::{PlanError, PlanProblem};
use crate::timeline::{EndReason, Event};

/// Ends the run the way `ending` says and stops every task it started; `Err` names the failure
/// that ended it: the infrastructure's (exit 4), or the plan's when its ID rule read no effect
/// (exit 2).
pub(super) async fn stop_all(
    ctx: &RunContext<'_>,
    ending: Ending,
    mut sinks: Sinks,
    proxy: Option<Proxy>,
    supervision: Supervision,
    workload: Option<JoinHandle<Result<(), InfraError>>>,
) -> Result<(), Error> {
    let (timeline, broker) = (ctx.timeline, ctx.broker);
    let reason = ending.reason();
    if reason != EndReason::InfrastructureError {
        match broker.snapshot().await {
            Ok(snapshot) => {
                timeline.record(snapshot.event());
            }
            Err(e) => {
                timeline.record(Event::Warning {
                    message: format!("cannot read the final progress: {e}"),
                });
            }
        }
    }
    let consumer_failure = supervision.supervisor.take_failure();
    if let Some(f) = &consumer_failure {
        timeline.record(Event::Warning {
            message: f.to_string(),
        });
    }
    // The wrong ID rule was recorded by the sink as it found it.
    if let Ending::CrashLoop(why) = &ending {
        timeline.record(Event::Warning {
            message: why.clone(),
        });
    }
    timeline.record(Event::RunEnded { reason });

    supervision.stop().await;
    if let Some(t) = workload {
        t.abort();
    }
    if reason != EndReason::InfrastructureError {
        let open = || proxy.as_ref().map_or(0, Proxy::open_connections);
        // Loading keeps at least one boundary; the first one's rule reads the queue's IDs.
        broker
            .finish(timeline, &ctx.plan.boundaries()[0].id, &open)
            .await;
    }
    sinks.stop_serving().await;
    if let Some(p) = proxy {
        p.join().await;
    }
    let failure: Option<Error> = match ending {
        Ending::ProxyFailed(problem) => {
            return Err(InfraError::new(format!("the proxy failed: {problem}")).into());
        }
        Ending::CrashLoop(why) | Ending::BrokerLost(why) => Some(InfraError::new(why).into()),
        Ending::WrongIdRule(why) => Some(
            PlanError {
                file: ctx.opts.plan_path.clone(),
                problems: vec![PlanProblem {
                    position: None,
                    message: why,
                    source_line: None,
                }],
            }
            .into(),
        ),
        Ending::Bypassed(what) => Some(
            InfraError::new(format!(
                "{what}, past the proxy (`consumer.bypass: fatal`): hand the consumer only \
                 the addresses in its EXACTLY_* variables"
            ))
            .into(),
        ),
        Ending::Settled
        | Ending::Deadline
        | Ending::Aborted
        | Ending::ConsumerFailed
        | Ending::EventsUnwritable => consumer_failure.map(Error::from),
    };
    sinks.finish_file_tail().await;
    failure.map_or(Ok(()), Err)
}
