//! Fault actions: what a fault *does*, once its trigger has fired. Each action applies itself
//! to the supervisor and reports exactly what it hit; an action that hit nothing was not
//! applied (design §12) and the caller may retry it when a process is live again.
//! Timed parts (the SIGKILL after a grace period, the SIGCONT after a pause) run as tasks that
//! also end, healed, when the run stops.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use crate::consumer::Supervisor;
use crate::plan::{FaultSpec, Target};

/// Network faults on a consumer's broker connections, applied by a protocol-aware proxy.
/// Each returns a description of what it hit, or `None` when the target has no connection
/// through the proxy (not applied). Timed faults heal themselves after `length`, and at once
/// when the run stops.
pub trait NetworkControl: Send + Sync {
    /// Stop forwarding both ways on the target's connections for `length`; sockets stay open.
    fn partition(&self, target: Target, length: Duration) -> Option<String>;
    /// Delay every frame on the target's connections by `delay`, for `length`.
    fn latency(&self, target: Target, delay: Duration, length: Duration) -> Option<String>;
    /// Close the target's connections with a TCP reset.
    fn sever(&self, target: Target) -> Option<String>;
}

/// One process fault.
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
        }
    }

    /// Applies the action now; returns a description of what it hit, or `None` when no
    /// targeted process was alive.
    pub fn apply(
        &self,
        supervisor: &Supervisor,
        network: Option<&dyn NetworkControl>,
        stopping: &CancellationToken,
    ) -> Option<String> {
        let signal = match *self {
            Action::Kill(_) => Signal::SIGKILL,
            Action::Terminate(..) => Signal::SIGTERM,
            Action::Pause(..) => Signal::SIGSTOP,
            // Network faults belong to the proxy; without one they cannot be applied.
            Action::Partition(t, length) => return network?.partition(t, length),
            Action::Latency(t, delay, length) => return network?.latency(t, delay, length),
            Action::Sever(t) => return network?.sever(t),
        };
        let hit = supervisor.signal(self.target(), signal);
        if hit.is_empty() {
            return None;
        }
        let names: Vec<String> = hit
            .iter()
            .map(|(i, n, pid)| format!("consumer[{i}] incarnation {n} (pid {pid})"))
            .collect();
        match *self {
            Action::Kill(_) | Action::Partition(..) | Action::Latency(..) | Action::Sever(_) => {}
            Action::Terminate(_, grace) => {
                let (sup, stopping) = (supervisor.clone(), stopping.clone());
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
                let stopping = stopping.clone();
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
        }
        Some(format!("{} {}", signal.as_str(), names.join(", ")))
    }
}
