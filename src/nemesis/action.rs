//! Fault actions: what a fault *does*, once its trigger has fired. Each action applies itself
//! to one of the run's levers (the supervisor, the proxy, the transient group member) and
//! reports exactly what it hit; an action that hit nothing was not applied (design §12) and the
//! caller may retry it when a process is live again.
//! Timed parts (the SIGKILL after a grace period, the SIGCONT after a pause) run as tasks that
//! also end, healed, when the run stops.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use crate::broker::group_member::GroupProtocol;
use crate::consumer::Supervisor;
use crate::plan::{FaultSpec, Target};
use crate::proxy::control::NetworkControl;
use crate::timeline::ProcessRef;

/// Forces rebalances of the group under test with a transient member of the harness's own.
pub trait GroupControl: Send + Sync {
    /// Starts a member that joins, holds its share of partitions for `hold` without
    /// consuming or committing, then leaves. `protocol` is how the group under test was seen
    /// to join (`None`: not seen; librdkafka's defaults). Returns a description, or `None`
    /// when it could not be started.
    fn rebalance(&self, hold: Duration, protocol: Option<&GroupProtocol>) -> Option<String>;
}

/// Everything an action can act on.
#[derive(Clone)]
pub struct Levers {
    /// The consumer processes.
    pub supervisor: Supervisor,
    /// The proxy, when the consumer goes through one.
    pub network: Option<Arc<dyn NetworkControl>>,
    /// The transient group member (Kafka).
    pub group: Option<Arc<dyn GroupControl>>,
    /// Cancelled when the run stops: timed parts end, healed.
    pub stopping: CancellationToken,
}

/// What an applied action hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// In words, for the report.
    pub detail: String,
    /// The incarnations it touched.
    pub hit: Vec<ProcessRef>,
}

/// One fault's action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// SIGKILL the target's process groups.
    Kill(Target),
    /// SIGTERM, then SIGKILL after the grace period.
    Terminate(Target, Duration),
    /// SIGSTOP, then SIGCONT after the duration.
    Pause(Target, Duration),
    /// Proxy stops forwarding the target's connections for the duration.
    Partition(Target, Duration),
    /// Proxy delays the target's frames by the first duration, for the second.
    Latency(Target, Duration, Duration),
    /// Proxy resets the target's connections.
    Sever(Target),
    /// A transient member joins the group for the duration, then leaves.
    Rebalance(Duration),
    /// Start one more instance.
    ScaleUp,
    /// Retire the highest-numbered live instance: SIGTERM, SIGKILL after the grace period.
    ScaleDown(Duration),
}

/// Default grace between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

impl Action {
    /// The action of a validated fault.
    pub fn from_spec(fault: &FaultSpec) -> Action {
        if let Some(t) = fault.terminate {
            Action::Terminate(t, fault.grace.unwrap_or(DEFAULT_GRACE))
        } else if let Some(t) = fault.pause {
            Action::Pause(t, fault.for_.unwrap_or(Duration::from_secs(5)))
        } else if let Some(t) = fault.partition {
            Action::Partition(t, fault.for_.unwrap_or(Duration::from_secs(5)))
        } else if let Some(delay) = fault.latency {
            let target = fault.target.unwrap_or(Target::AllInstances);
            Action::Latency(target, delay, fault.for_.unwrap_or(Duration::from_secs(5)))
        } else if let Some(t) = fault.sever {
            Action::Sever(t)
        } else if fault.rebalance.is_some() {
            Action::Rebalance(fault.for_.unwrap_or(Duration::from_secs(3)))
        } else if let Some(step) = fault.scale {
            if step > 0 {
                Action::ScaleUp
            } else {
                Action::ScaleDown(fault.grace.unwrap_or(DEFAULT_GRACE))
            }
        } else {
            // Validation guarantees exactly one supported action; kill is the only one left.
            Action::Kill(fault.kill.unwrap_or(Target::AllInstances))
        }
    }

    /// `kill`, `terminate` or `pause`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Kill(_) => "kill",
            Action::Terminate(..) => "terminate",
            Action::Pause(..) => "pause",
            Action::Partition(..) => "partition",
            Action::Latency(..) => "latency",
            Action::Sever(_) => "sever",
            Action::Rebalance(_) => "rebalance",
            Action::ScaleUp | Action::ScaleDown(_) => "scale",
        }
    }

    /// How long a timed action lasts.
    pub fn length(&self) -> Option<Duration> {
        match *self {
            Action::Pause(_, d)
            | Action::Partition(_, d)
            | Action::Latency(_, _, d)
            | Action::Rebalance(d) => Some(d),
            _ => None,
        }
    }

    /// True for actions that end the consumer process (a held event then never goes on).
    pub fn stops_consumer(&self) -> bool {
        matches!(self, Action::Kill(_) | Action::Terminate(..))
    }

    /// The target.
    pub fn target(&self) -> Target {
        match *self {
            Action::Kill(t)
            | Action::Terminate(t, _)
            | Action::Pause(t, _)
            | Action::Partition(t, _)
            | Action::Latency(t, _, _)
            | Action::Sever(t) => t,
            Action::Rebalance(_) | Action::ScaleUp | Action::ScaleDown(_) => Target::AllInstances,
        }
    }

    /// Applies the action now; returns what it hit, or `None` when it could not be applied
    /// (no targeted process alive, no proxy connection, no group member possible).
    pub fn apply(&self, levers: &Levers, protocol: Option<&GroupProtocol>) -> Option<Applied> {
        let supervisor = &levers.supervisor;
        let network = levers.network.as_deref();
        let live_refs = |target: Target| -> Vec<ProcessRef> {
            supervisor
                .live(target)
                .into_iter()
                .map(|(instance, incarnation, _)| ProcessRef {
                    instance,
                    incarnation,
                })
                .collect()
        };
        let on_network = |detail: Option<String>, target: Target| {
            detail.map(|detail| Applied {
                detail,
                hit: live_refs(target),
            })
        };
        let signal = match *self {
            Action::Kill(_) => Signal::SIGKILL,
            Action::Terminate(..) => Signal::SIGTERM,
            Action::Pause(..) => Signal::SIGSTOP,
            // Network faults belong to the proxy; without one they cannot be applied.
            Action::Partition(t, length) => return on_network(network?.partition(t, length), t),
            Action::Latency(t, delay, length) => {
                return on_network(network?.latency(t, delay, length), t)
            }
            Action::Sever(t) => return on_network(network?.sever(t), t),
            Action::Rebalance(hold) => {
                let detail = levers.group.as_deref()?.rebalance(hold, protocol)?;
                return Some(Applied {
                    detail,
                    hit: Vec::new(),
                });
            }
            Action::ScaleUp => {
                return supervisor.scale_up().map(|detail| Applied {
                    detail,
                    hit: Vec::new(),
                })
            }
            Action::ScaleDown(grace) => {
                let (instance, incarnation, pid) = supervisor.scale_down(grace)?;
                return Some(Applied {
                    detail: format!(
                        "SIGTERM consumer[{instance}] incarnation {incarnation} (pid {pid}), retired: not restarted"
                    ),
                    hit: vec![ProcessRef {
                        instance,
                        incarnation,
                    }],
                });
            }
        };
        let hit = supervisor.signal(self.target(), signal);
        if hit.is_empty() {
            return None;
        }
        let names: Vec<String> = hit
            .iter()
            .map(|(i, n, pid)| format!("consumer[{i}] incarnation {n} (pid {pid})"))
            .collect();
        let refs = hit
            .iter()
            .map(|&(instance, incarnation, _)| ProcessRef {
                instance,
                incarnation,
            })
            .collect();
        match *self {
            Action::Terminate(_, grace) => {
                let (sup, stopping) = (supervisor.clone(), levers.stopping.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(grace) => {}
                        _ = stopping.cancelled() => {}
                    }
                    // Only the incarnations that were sent SIGTERM, if they are still there.
                    for (i, n, pid) in hit {
                        if sup.live(Target::Instance(i)).contains(&(i, n, pid)) {
                            crate::consumer::process::signal_group(pid, Signal::SIGKILL);
                        }
                    }
                });
            }
            Action::Pause(_, length) => {
                let stopping = levers.stopping.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(length) => {}
                        _ = stopping.cancelled() => {}
                    }
                    for (_, _, pid) in hit {
                        crate::consumer::process::signal_group(pid, Signal::SIGCONT);
                    }
                });
            }
            _ => {}
        }
        Some(Applied {
            detail: format!("{} {}", signal.as_str(), names.join(", ")),
            hit: refs,
        })
    }
}
