//! The supervisor: runs the team's consumer as `instances` side-by-side processes, restarts
//! each after it dies (as a real supervisor would), keeps each incarnation's stdout/stderr,
//! applies the process faults (kill, terminate, pause) to whole process groups, and scales:
//! starts one more instance, or retires one gracefully.
//!
//! It observes and applies; it never decides when (that is the nemesis). Every lifecycle change
//! becomes a `process` event on the timeline; an incarnation that wrote on stderr gets a
//! `stderr_tail` event just before its `process` exited event ([`output`]).

pub mod containment;
pub mod contract;
pub mod output;
pub mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::plan::{RestartPolicy, Target};
use crate::timeline::{Event, ProcessPhase, Timeline};
use contract::Contract;
use output::{copy_output, Line, TailBuffer};
use process::{describe_status, signal_group, ConsumerProcess};

/// Who runs, readable by anyone without going through the supervisor: the current incarnation
/// of every instance (the proxy attributes each new connection with it; set just before an
/// incarnation is spawned) and the live process groups (the HTTP sink attributes each effect
/// by the group owning its socket; a group is listed from its spawn until it has exited).
/// Made before the supervisor, so what reads it can start first.
#[derive(Clone)]
pub struct Roster(Arc<RosterInner>);

struct RosterInner {
    incarnations: Vec<AtomicU32>,
    /// Per instance: (incarnation, process group id) of its live process group.
    live: Mutex<Vec<Option<(u32, u32)>>>,
}

impl Roster {
    /// A roster of `instances` instances, none started yet (incarnation 0).
    pub fn new(instances: u32) -> Roster {
        Roster(Arc::new(RosterInner {
            incarnations: (0..instances).map(|_| AtomicU32::new(0)).collect(),
            live: Mutex::new(vec![None; instances as usize]),
        }))
    }

    /// The current incarnation of `instance` (0 before its first start).
    pub fn incarnation(&self, instance: u32) -> u32 {
        self.0
            .incarnations
            .get(instance as usize)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// (instance, incarnation, process group id) of every live consumer process group, in
    /// instance order.
    pub fn live_groups(&self) -> Vec<(u32, u32, u32)> {
        let live = self.0.live.lock().unwrap_or_else(|p| p.into_inner());
        live.iter()
            .enumerate()
            .filter_map(|(i, g)| g.map(|(incarnation, pgid)| (i as u32, incarnation, pgid)))
            .collect()
    }

    fn set(&self, instance: u32, incarnation: u32) {
        if let Some(n) = self.0.incarnations.get(instance as usize) {
            n.store(incarnation, Ordering::Release);
        }
    }

    fn set_live(&self, instance: u32, incarnation: u32, pgid: Option<u32>) {
        let mut live = self.0.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = live.get_mut(instance as usize) {
            *slot = pgid.map(|pgid| (incarnation, pgid));
        }
    }
}

/// Called with (instance, incarnation, line) for every line a consumer prints on stdout, and
/// for the torn last line, if any, when its stdout ends.
pub type LineObserver = Arc<dyn Fn(u32, u32, Line<'_>) + Send + Sync>;

/// Everything needed to start incarnations.
pub struct SupervisorConfig {
    /// Program and arguments, placeholders not yet replaced.
    pub command: Vec<String>,
    /// Extra environment, placeholders not yet replaced.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Number of instances started at first.
    pub instances: u32,
    /// Most instances there can ever be (`instances` plus every planned `scale: +1`); the
    /// proxy's listeners and the roster are sized for it.
    pub capacity: u32,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Builds the contract of one incarnation (instance, incarnation).
    pub contract: Arc<dyn Fn(u32, u32) -> Contract + Send + Sync>,
    /// Folder for `consumer-I-N.stdout` / `.stderr`.
    pub log_dir: PathBuf,
    /// Optional observer of stdout lines (the stdout sink).
    pub stdout_observer: Option<LineObserver>,
    /// Where the current incarnation of each instance is published.
    pub roster: Roster,
}

/// Why the supervisor could not do its job (an infrastructure error for the run).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The consumer command could not be started.
    #[error("cannot start the consumer `{program}`: {source}; {hint}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it.
        hint: String,
    },
}

/// The live state of one instance.
#[derive(Debug, Default, Clone)]
struct InstanceState {
    incarnation: u32,
    pid: Option<u32>,
    /// Scaled down: never restarted again.
    retired: bool,
}

/// Handle to the running supervisor.
#[derive(Clone)]
pub struct Supervisor {
    instances: Arc<Mutex<HashMap<u32, InstanceState>>>,
    config: Arc<SupervisorConfig>,
    /// Instances started so far (the next `scale: +1` gets this index).
    started: Arc<AtomicU32>,
    /// Instance tasks still running (restarting, or waiting on a process).
    running: Arc<watch::Sender<u32>>,
    timeline: Timeline,
    stopping: CancellationToken,
    failure: Arc<Mutex<Option<SupervisorError>>>,
}

impl Supervisor {
    /// Starts the first `config.instances` instances; each then runs (and restarts) until
    /// `stop` is called or it runs out of incarnations ([`Supervisor::instances_ended`]).
    pub fn start(config: SupervisorConfig, timeline: Timeline) -> Supervisor {
        let first = config.instances;
        timeline.record(containment::describe());
        let supervisor = Supervisor {
            instances: Arc::default(),
            config: Arc::new(config),
            started: Arc::default(),
            running: Arc::new(watch::Sender::new(0)),
            timeline,
            stopping: CancellationToken::new(),
            failure: Arc::default(),
        };
        for _ in 0..first {
            supervisor.start_next_instance();
        }
        supervisor
    }

    /// Starts one more instance if capacity allows; returns its index.
    fn start_next_instance(&self) -> Option<u32> {
        let instance = self
            .started
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.config.capacity).then_some(n + 1)
            })
            .ok()?;
        self.running.send_modify(|n| *n += 1);
        let sup = self.clone();
        tokio::spawn(async move {
            sup.run_instance(instance).await;
            sup.running.send_modify(|n| *n -= 1);
        });
        Some(instance)
    }

    /// `scale: +1`: starts one more instance. Returns what it did, or `None` when the
    /// capacity planned for scale-ups is used up or the run is stopping.
    pub fn scale_up(&self) -> Option<String> {
        if self.stopping.is_cancelled() {
            return None;
        }
        let instance = self.start_next_instance()?;
        Some(format!("started consumer[{instance}]"))
    }

    /// `scale: -1`: retires the highest-numbered live instance: it is never restarted, gets
    /// SIGTERM (after SIGCONT, in case it is paused) and SIGKILL after `grace` if still there.
    /// Returns (instance, incarnation, pid) of the process it stopped, or `None` when no
    /// instance is live.
    pub fn scale_down(&self, grace: Duration) -> Option<(u32, u32, u32)> {
        let (instance, incarnation, pid) = {
            let mut map = self.instances.lock().unwrap_or_else(|p| p.into_inner());
            let (&instance, state) = map
                .iter_mut()
                .filter(|(_, s)| s.pid.is_some() && !s.retired)
                .max_by_key(|(i, _)| **i)?;
            state.retired = true;
            (instance, state.incarnation, state.pid?)
        };
        signal_group(pid, Signal::SIGCONT);
        signal_group(pid, Signal::SIGTERM);
        let (sup, stopping) = (self.clone(), self.stopping.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = stopping.cancelled() => return,
            }
            if sup
                .live(Target::Instance(instance))
                .contains(&(instance, incarnation, pid))
            {
                signal_group(pid, Signal::SIGKILL);
            }
        });
        Some((instance, incarnation, pid))
    }

    /// Resolves once every instance task has ended (each ran out of incarnations, was
    /// retired, or the supervisor stopped).
    pub async fn instances_ended(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn is_retired(&self, instance: u32) -> bool {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&instance)
            .is_some_and(|s| s.retired)
    }

    /// The first error that stopped an instance, if any (taken once).
    pub fn take_failure(&self) -> Option<SupervisorError> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Resolves when an instance hit an error the run cannot continue after.
    pub fn has_failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// One instance: spawn, wait, restart, until stopped, retired or out of incarnations.
    async fn run_instance(&self, instance: u32) {
        let config = &*self.config;
        let max = config.restart.max_incarnations();
        for incarnation in 1..=max {
            if self.stopping.is_cancelled() || self.is_retired(instance) {
                return;
            }
            if let Err(e) = self.run_incarnation(instance, incarnation, config).await {
                self.stopping.cancel();
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return;
            }
            let Some(delay) = config.restart.delay() else {
                return;
            };
            if self.is_retired(instance) {
                return;
            }
            if incarnation == max {
                self.timeline.record(Event::Warning {
                    message: format!(
                        "consumer[{instance}] reached {max} incarnations: the supervisor stops restarting it (restart.max)"
                    ),
                });
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stopping.cancelled() => return,
            }
        }
    }

    /// Runs one incarnation to its end, copying its output.
    async fn run_incarnation(
        &self,
        instance: u32,
        incarnation: u32,
        config: &SupervisorConfig,
    ) -> Result<(), SupervisorError> {
        config.roster.set(instance, incarnation);
        let contract = (config.contract)(instance, incarnation);
        let argv: Vec<String> = config
            .command
            .iter()
            .map(|a| contract.substitute(a))
            .collect();
        let mut env: Vec<(String, String)> = contract.env();
        env.extend(
            config
                .env
                .iter()
                .map(|(k, v)| (k.clone(), contract.substitute(v))),
        );

        let mut proc = ConsumerProcess::spawn(
            &argv,
            &env,
            config.cwd.as_deref(),
            (instance, incarnation),
            &self.timeline,
        )
        .map_err(|source| {
            let hint = if source.kind() == std::io::ErrorKind::NotFound {
                "check consumer.command (build it first, e.g. `cargo build --release --examples`)"
                    .into()
            } else {
                "check consumer.command and its permissions".into()
            };
            SupervisorError::Spawn {
                program: argv[0].clone(),
                source,
                hint,
            }
        })?;
        let pid = proc.pid;
        self.set_state(instance, incarnation, Some(pid));
        self.timeline.record(Event::Process {
            instance,
            incarnation,
            pid,
            phase: ProcessPhase::Started,
            status: None,
        });
        // Stopping may have begun while this incarnation was being spawned.
        if self.stopping.is_cancelled() {
            signal_group(pid, Signal::SIGKILL);
        }

        let (stdout_log, stderr_log) = log_paths(&config.log_dir, instance, incarnation);
        let stdout = proc.child.stdout.take().expect("stdout is piped");
        let stderr = proc.child.stderr.take().expect("stderr is piped");
        let observer = config.stdout_observer.clone();
        let out_task = tokio::spawn(copy_output(
            stdout,
            stdout_log,
            observer.map(|o| move |line: Line<'_>| o(instance, incarnation, line)),
            None,
        ));
        let stderr_tail = TailBuffer::default();
        let err_task = tokio::spawn(copy_output(
            stderr,
            stderr_log,
            None::<fn(Line<'_>)>,
            Some(stderr_tail.clone()),
        ));

        let status = proc.wait().await;
        // The group is dead, so the pipes close; the copies finish promptly.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = out_task.await;
            let _ = err_task.await;
        })
        .await;
        self.set_state(instance, incarnation, None);
        if let Some((tail, bytes)) = stderr_tail.tail() {
            self.timeline.record(Event::StderrTail {
                instance,
                incarnation,
                tail,
                bytes,
            });
        }
        self.timeline.record(Event::Process {
            instance,
            incarnation,
            pid,
            phase: ProcessPhase::Exited,
            status: Some(match &status {
                Ok(s) => describe_status(s),
                Err(e) => format!("wait failed: {e}"),
            }),
        });
        Ok(())
    }

    fn set_state(&self, instance: u32, incarnation: u32, pid: Option<u32>) {
        let mut map = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        let state = map.entry(instance).or_default();
        state.incarnation = incarnation;
        state.pid = pid;
        // Under the same lock, so the roster never shows what the supervisor does not.
        self.config.roster.set_live(instance, incarnation, pid);
    }

    /// (instance, incarnation, pid) of every live process the target names.
    pub fn live(&self, target: Target) -> Vec<(u32, u32, u32)> {
        let map = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .filter(|(i, _)| match target {
                Target::AllInstances => true,
                Target::Instance(n) => **i == n,
            })
            .filter_map(|(i, s)| s.pid.map(|pid| (*i, s.incarnation, pid)))
            .collect();
        out.sort();
        out
    }

    /// Sends `signal` to each live targeted process group; returns what it hit.
    pub fn signal(&self, target: Target, signal: Signal) -> Vec<(u32, u32, u32)> {
        self.live(target)
            .into_iter()
            .filter(|(_, _, pid)| signal_group(*pid, signal))
            .collect()
    }

    /// Stops restarting, SIGTERMs every group, SIGKILLs what is left after `grace`.
    /// The instance tasks returned by `start` end once every process has exited.
    pub async fn stop(&self, grace: Duration) {
        self.stopping.cancel();
        // A paused (SIGSTOPped) consumer cannot act on SIGTERM: wake it first.
        self.signal(Target::AllInstances, Signal::SIGCONT);
        self.signal(Target::AllInstances, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.live(Target::AllInstances).is_empty() && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.signal(Target::AllInstances, Signal::SIGKILL);
    }
}

/// The stdout and stderr log files of one incarnation.
pub fn log_paths(log_dir: &Path, instance: u32, incarnation: u32) -> (PathBuf, PathBuf) {
    let base = log_dir.join(format!("consumer-{instance}-{incarnation}"));
    (base.with_extension("stdout"), base.with_extension("stderr"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roster_lists_a_group_from_its_spawn_until_its_exit() {
        let roster = Roster::new(3);
        assert_eq!(roster.incarnation(1), 0);
        assert!(roster.live_groups().is_empty());
        roster.set(1, 2);
        assert_eq!(roster.incarnation(1), 2);
        assert!(roster.live_groups().is_empty(), "spawning, not live yet");
        roster.set_live(1, 2, Some(4242));
        roster.set_live(0, 1, Some(4000));
        assert_eq!(roster.live_groups(), [(0, 1, 4000), (1, 2, 4242)]);
        roster.set_live(1, 2, None);
        assert_eq!(roster.live_groups(), [(0, 1, 4000)]);
        roster.set_live(7, 1, Some(1));
        assert_eq!(roster.incarnation(7), 0, "beyond the capacity: ignored");
    }
}
