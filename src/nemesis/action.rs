//! Fault actions: what a fault *does*, once its trigger has fired. [`apply`] applies a plan's
//! [`FaultAction`] to one of the run's levers (the supervisor, the proxy, the transient group
//! member) and reports exactly what it hit; an action that hit nothing was not applied
//! (design §12) and the caller may retry it when a process is live again.
//! Timed parts (the SIGKILL after a grace period, the SIGCONT after a pause) run as tasks that
//! also end, healed, when the run stops.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use crate::broker::group_member::GroupProtocol;
use crate::consumer::process::signal_group;
use crate::consumer::Supervisor;
use crate::plan::{FaultAction, ScaleStep, Target};
use crate::proxy::control::{Injection, NetworkControl};
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

/// How an action lands: at once, or once the proxy has written what it injects.
pub enum Landing {
    /// Applied now: what it hit.
    Now(Applied),
    /// A protocol fault the proxy queued; the answer says what was sent, or why not.
    Sending(Injection),
}

/// Applies `action`; returns how it lands, or `None` when it could not be applied (no
/// targeted process alive, no proxy connection, no group member possible).
pub fn apply(
    action: &FaultAction,
    levers: &Levers,
    protocol: Option<&GroupProtocol>,
) -> Option<Landing> {
    if let FaultAction::Amqp {
        target,
        fault,
        length,
    } = *action
    {
        let queued = levers
            .network
            .as_deref()?
            .amqp_fault(target, fault, length)?;
        return Some(Landing::Sending(queued));
    }
    apply_now(action, levers, protocol).map(Landing::Now)
}

/// Applies an action that lands at once (every one but the proxy's protocol faults).
fn apply_now(
    action: &FaultAction,
    levers: &Levers,
    protocol: Option<&GroupProtocol>,
) -> Option<Applied> {
    // Network faults belong to the proxy; without one they cannot be applied.
    let network = || levers.network.as_deref();
    match *action {
        FaultAction::Kill { target } => signal(levers, target, Signal::SIGKILL).map(|(a, _)| a),
        FaultAction::Terminate { target, grace } => {
            let (applied, hit) = signal(levers, target, Signal::SIGTERM)?;
            kill_after(levers, grace, hit);
            Some(applied)
        }
        FaultAction::Pause { target, length } => {
            let (applied, hit) = signal(levers, target, Signal::SIGSTOP)?;
            resume_after(levers, length, hit);
            Some(applied)
        }
        FaultAction::Partition { target, length } => {
            on_network(levers, target, network()?.partition(target, length))
        }
        FaultAction::Latency {
            target,
            delay,
            length,
        } => on_network(levers, target, network()?.latency(target, delay, length)),
        FaultAction::Sever { target } => on_network(levers, target, network()?.sever(target)),
        FaultAction::Reply { target, reply } => {
            on_network(levers, target, network()?.reply(target, reply))
        }
        FaultAction::Rebalance { hold } => {
            let detail = levers.group.as_deref()?.rebalance(hold, protocol)?;
            Some(Applied {
                detail,
                hit: Vec::new(),
            })
        }
        FaultAction::Scale(ScaleStep::Up) => levers.supervisor.scale_up().map(|detail| Applied {
            detail,
            hit: Vec::new(),
        }),
        FaultAction::Scale(ScaleStep::Down { grace }) => {
            let (instance, incarnation, pid) = levers.supervisor.scale_down(grace)?;
            Some(Applied {
                detail: format!(
                    "SIGTERM consumer[{instance}] incarnation {incarnation} (pid {pid}), retired: not restarted"
                ),
                hit: vec![ProcessRef {
                    instance,
                    incarnation,
                }],
            })
        }
        // Lands once sent: `apply` queues it and never comes here.
        FaultAction::Amqp { .. } => None,
    }
}

/// A live incarnation: instance, incarnation, process group.
type Incarnation = (u32, u32, u32);

/// Sends `signal` to the target's live process groups; `None` when none was alive.
fn signal(levers: &Levers, target: Target, signal: Signal) -> Option<(Applied, Vec<Incarnation>)> {
    let hit = levers.supervisor.signal(target, signal);
    if hit.is_empty() {
        return None;
    }
    let names: Vec<String> = hit
        .iter()
        .map(|(i, n, pid)| format!("consumer[{i}] incarnation {n} (pid {pid})"))
        .collect();
    let applied = Applied {
        detail: format!("{} {}", signal.as_str(), names.join(", ")),
        hit: hit.iter().map(|&(i, n, _)| process_ref(i, n)).collect(),
    };
    Some((applied, hit))
}

/// A network fault the proxy applied (`detail`), with the incarnations it reached.
fn on_network(levers: &Levers, target: Target, detail: Option<String>) -> Option<Applied> {
    detail.map(|detail| Applied {
        detail,
        hit: levers
            .supervisor
            .live(target)
            .into_iter()
            .map(|(i, n, _)| process_ref(i, n))
            .collect(),
    })
}

/// SIGKILLs the incarnations sent SIGTERM once `grace` has passed (or the run stops), if they
/// are still there.
fn kill_after(levers: &Levers, grace: Duration, hit: Vec<Incarnation>) {
    let (sup, stopping) = (levers.supervisor.clone(), levers.stopping.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = stopping.cancelled() => {}
        }
        for (i, n, pid) in hit {
            if sup.live(Target::Instance(i)).contains(&(i, n, pid)) {
                signal_group(pid, Signal::SIGKILL);
            }
        }
    });
}

/// SIGCONTs the paused process groups once `length` has passed, or at once when the run stops.
fn resume_after(levers: &Levers, length: Duration, hit: Vec<Incarnation>) {
    let stopping = levers.stopping.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(length) => {}
            _ = stopping.cancelled() => {}
        }
        for (_, _, pid) in hit {
            signal_group(pid, Signal::SIGCONT);
        }
    });
}

fn process_ref(instance: u32, incarnation: u32) -> ProcessRef {
    ProcessRef {
        instance,
        incarnation,
    }
}
