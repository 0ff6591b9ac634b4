//! The per-instance connection [`Registry`] and the network faults on it (partition, latency,
//! sever): a fault is set per instance, so connections the instance opens while it lasts obey it
//! too; each connection's pumps consult it through their [`FaultView`]. It also keeps the
//! protocol replies armed per instance ([`Registry::arm_reply`]): the protocol's handler takes
//! one ([`Registry::take_reply`]) when the request it answers comes by, once.
//!
//! Invariants: a fault needs at least one live connection to count as applied (else the action
//! reports nothing); a partition or latency heals by itself after its length, and waits end at
//! once when the run stops or the connection is severed; a severed connection is reset on both
//! sides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::plan::{ProtocolReply, Target};

/// The network faults in force on one instance.
#[derive(Debug, Default, Clone, Copy)]
struct InstanceFaults {
    partition_until: Option<Instant>,
    latency: Option<(Duration, Instant)>,
}

struct RegistryInner {
    next_id: u64,
    conns: Vec<HashMap<u64, CancellationToken>>,
    faults: Vec<InstanceFaults>,
    /// Per instance, the protocol replies armed and not yet given, oldest first.
    replies: Vec<Vec<ProtocolReply>>,
}

/// The live proxied connections of every instance, and the network faults on them. A fault
/// is set per instance, so connections the instance opens while it lasts obey it too.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<RegistryInner>>,
    stop: CancellationToken,
}

/// A connection's entry in the registry; removed on drop.
pub struct ConnGuard {
    registry: Registry,
    instance: u32,
    id: u64,
    /// What the connection's pumps consult.
    pub view: FaultView,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(conns) = inner.conns.get_mut(self.instance as usize) {
            conns.remove(&self.id);
        }
    }
}

/// One connection's view of its instance's faults.
#[derive(Clone)]
pub struct FaultView {
    registry: Registry,
    instance: u32,
    /// Cancelled by `sever`.
    pub sever: CancellationToken,
    /// The run's stop token.
    pub stop: CancellationToken,
}

impl FaultView {
    /// Waits while the instance is partitioned, then for the latency in force (counted from
    /// `read_at`, when the frame arrived). Returns at once when the run stops or the
    /// connection is severed (the connection ends then anyway).
    pub async fn pass(&self, read_at: Instant) {
        loop {
            let faults = self.registry.faults(self.instance);
            let now = Instant::now();
            if let Some(until) = faults.partition_until.filter(|u| *u > now) {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => continue,
                    _ = self.stop.cancelled() => return,
                    _ = self.sever.cancelled() => return,
                }
            }
            if let Some((delay, until)) = faults.latency {
                if until > now {
                    tokio::select! {
                        _ = tokio::time::sleep_until(read_at + delay) => {}
                        _ = self.stop.cancelled() => {}
                        _ = self.sever.cancelled() => {}
                    }
                }
            }
            return;
        }
    }
}

impl Registry {
    /// A registry for `instances` instances; faults heal when `stop` is cancelled.
    pub fn new(instances: u32, stop: CancellationToken) -> Registry {
        Registry {
            inner: Arc::new(Mutex::new(RegistryInner {
                next_id: 0,
                conns: (0..instances).map(|_| HashMap::new()).collect(),
                faults: vec![InstanceFaults::default(); instances as usize],
                replies: vec![Vec::new(); instances as usize],
            })),
            stop,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        // Poison only means a panic elsewhere mid-update of plain data; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn faults(&self, instance: u32) -> InstanceFaults {
        self.lock()
            .faults
            .get(instance as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Registers a new connection of `instance`.
    pub fn register(&self, instance: u32) -> ConnGuard {
        let sever = CancellationToken::new();
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        if let Some(conns) = inner.conns.get_mut(instance as usize) {
            conns.insert(id, sever.clone());
        }
        drop(inner);
        ConnGuard {
            registry: self.clone(),
            instance,
            id,
            view: FaultView {
                registry: self.clone(),
                instance,
                sever,
                stop: self.stop.clone(),
            },
        }
    }

    /// Live connections per instance.
    pub fn connections(&self, instance: u32) -> usize {
        self.lock()
            .conns
            .get(instance as usize)
            .map_or(0, HashMap::len)
    }

    fn instances_of(&self, target: Target) -> Vec<usize> {
        let n = self.lock().conns.len();
        match target {
            Target::AllInstances => (0..n).collect(),
            Target::Instance(i) if (i as usize) < n => vec![i as usize],
            Target::Instance(_) => vec![],
        }
    }

    /// Applies `set` to the target's instances if they have at least one connection; returns
    /// how many connections the fault covers now.
    fn apply(&self, target: Target, set: impl Fn(&mut InstanceFaults)) -> usize {
        let instances = self.instances_of(target);
        let mut inner = self.lock();
        let hit: usize = instances.iter().map(|&i| inner.conns[i].len()).sum();
        if hit > 0 {
            for &i in &instances {
                set(&mut inner.faults[i]);
            }
        }
        hit
    }

    /// Stops forwarding both ways on the target's connections for `length`.
    pub fn partition(&self, target: Target, length: Duration) -> Option<String> {
        let until = Instant::now() + length;
        let hit = self.apply(target, |f| f.partition_until = Some(until));
        (hit > 0).then(|| {
            format!(
                "partitioned {target}: {hit} connection{} for {}",
                plural(hit),
                humantime::format_duration(length)
            )
        })
    }

    /// Delays every frame on the target's connections by `delay`, for `length`.
    pub fn latency(&self, target: Target, delay: Duration, length: Duration) -> Option<String> {
        let until = Instant::now() + length;
        let hit = self.apply(target, |f| f.latency = Some((delay, until)));
        (hit > 0).then(|| {
            format!(
                "delayed {target}: {hit} connection{} by {} for {}",
                plural(hit),
                humantime::format_duration(delay),
                humantime::format_duration(length)
            )
        })
    }

    /// Arms `reply` on the target's instances (those with a live connection): the next request
    /// it answers on any of their connections gets it, once per instance.
    pub fn arm_reply(&self, target: Target, reply: ProtocolReply) -> Option<String> {
        let instances = self.instances_of(target);
        let mut inner = self.lock();
        let live: Vec<usize> = instances
            .into_iter()
            .filter(|&i| !inner.conns[i].is_empty())
            .collect();
        for &i in &live {
            inner.replies[i].push(reply);
        }
        (!live.is_empty()).then(|| {
            format!(
                "armed {} on {target} ({} instance{}): the next {} is answered {}",
                reply.name(),
                live.len(),
                plural(live.len()),
                match reply {
                    ProtocolReply::CommitError { .. } => "OffsetCommit",
                    ProtocolReply::FetchError { .. } | ProtocolReply::FetchTwice => {
                        "Fetch of the topic under test"
                    }
                    ProtocolReply::HeartbeatError { .. } => "group heartbeat",
                },
                reply.describe()
            )
        })
    }

    /// Takes the oldest reply armed on `instance` that `answers` accepts, if any.
    pub fn take_reply(
        &self,
        instance: u32,
        answers: impl Fn(&ProtocolReply) -> bool,
    ) -> Option<ProtocolReply> {
        let mut inner = self.lock();
        let armed = inner.replies.get_mut(instance as usize)?;
        let at = armed.iter().position(answers)?;
        Some(armed.remove(at))
    }

    /// Closes the target's connections with a reset on both sides.
    pub fn sever(&self, target: Target) -> Option<String> {
        let instances = self.instances_of(target);
        let inner = self.lock();
        let mut hit = 0;
        for &i in &instances {
            for token in inner.conns[i].values() {
                token.cancel();
                hit += 1;
            }
        }
        (hit > 0).then(|| format!("severed {target}: {hit} connection{} (RST)", plural(hit)))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
