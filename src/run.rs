//! `exactly run`: wires one run together and decides when it ends.
//!
//! Order of a run: broker ready → timeline opened → sinks listening → workload produced (first,
//! or alongside) → nemesis subscribed → supervisor starts the consumer → watch progress → end
//! (settled, deadline, aborted, or infrastructure error) → stop everything → judge the
//! timeline file → reports. Every task gets the same stop token; nothing outlives `run`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::group_member::{self, GroupProtocol};
use crate::broker::{self, Broker, Endpoint, Snapshot};
use crate::consumer::contract::Contract;
use crate::consumer::{Roster, Supervisor, SupervisorConfig};
use crate::error::{Error, InfraError};
use crate::nemesis::action::{GroupControl, Levers, NetworkControl};
use crate::nemesis::gate::Gate;
use crate::nemesis::{Nemesis, NemesisStatus};
use crate::plan::{Plan, Semantics, SinkKind};
use crate::proxy::amqp::AmqpProxy;
use crate::proxy::kafka::KafkaProxy;
use crate::sink::extract::Extractor;
use crate::sink::http::HttpSink;
use crate::sink::{file, stdout, EffectRecorder};
use crate::timeline::{EndReason, Event, ProduceStatus, RunInfo, Stamped, Timeline};

/// How often the broker's progress is read.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Grace between SIGTERM and SIGKILL when the run stops the consumers.
const STOP_GRACE: Duration = Duration::from_secs(2);

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
    /// too, so the reports still get written).
    pub failure: Option<Error>,
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

    let expect = opts.expect.unwrap_or(plan.expect);
    let say = |msg: String| eprintln!("exactly: {msg}");
    say(format!("run {run_id} → {}", dir.display()));
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
    timeline.record(Event::RunStarted(RunInfo {
        run: run_id.clone(),
        plan: plan.name.clone(),
        description: plan.description.clone(),
        broker: endpoint.kind.into(),
        mock_broker: endpoint.mock,
        broker_address: endpoint.address.clone(),
        topic: endpoint.source.clone(),
        group: endpoint.group.clone(),
        expect: expect.as_str().into(),
        seed,
        planned_faults: plan.faults.iter().map(describe_fault).collect(),
        messages: plan.workload.messages.get(),
        reproduce,
        effects_id: Some(plan.effects.id.clone()),
    }));

    let stop = CancellationToken::new();
    let outcome = drive(
        plan,
        &run_id,
        &dir,
        seed,
        &endpoint,
        broker.clone(),
        &timeline,
        &stop,
        &abort,
        opts,
    )
    .await;
    stop.cancel();
    // The broker handle goes before the embedded cluster it may talk to (declared earlier).
    drop(broker);
    // Everything recorded is in events.jsonl before anyone reads it back.
    timeline.flush();
    Ok(RunOutcome {
        events: dir.join("events.jsonl"),
        dir,
        failure: outcome.err(),
    })
}

/// Everything between "broker ready" and "run ended"; returns once every task has stopped.
#[allow(clippy::too_many_arguments)]
async fn drive(
    plan: &Plan,
    run_id: &str,
    dir: &Path,
    seed: u64,
    endpoint: &Endpoint,
    broker: Arc<Broker>,
    timeline: &Timeline,
    stop: &CancellationToken,
    abort: &CancellationToken,
    opts: &RunOptions,
) -> Result<(), Error> {
    let started = Instant::now();
    let tally = Tally::start(timeline);

    // Sinks.
    let id_rule = Extractor::parse(&plan.effects.id).map_err(Error::Usage)?;
    let key_rule = match &plan.effects.idempotency_key {
        Some(k) => Some(Extractor::parse(k).map_err(Error::Usage)?),
        None => None,
    };
    let gate = Gate::holding(crate::nemesis::hold_points(&plan.faults));
    let sink_stop = CancellationToken::new();
    let effects_dir = dir.join("effects");
    let mut http_sink = None;
    let mut file_task = None;
    let mut stdout_observer = None;
    match plan.effects.sink {
        SinkKind::Http => {
            let recorder = EffectRecorder::new(timeline.clone(), id_rule, key_rule, "http");
            let sink = HttpSink::start(recorder, gate.clone(), sink_stop.clone())
                .await
                .map_err(|e| InfraError::new(format!("cannot start the HTTP sink: {e}")))?;
            http_sink = Some(sink);
        }
        SinkKind::File => {
            let recorder = EffectRecorder::new(timeline.clone(), id_rule, key_rule, "file");
            file_task = Some(tokio::spawn(file::tail(
                effects_dir.clone(),
                recorder,
                sink_stop.clone(),
            )));
        }
        SinkKind::Stdout => {
            let recorder = EffectRecorder::new(timeline.clone(), id_rule, key_rule, "stdout");
            stdout_observer = Some(stdout::observer(recorder));
        }
    }
    let effect_url = http_sink.as_ref().map(|s| format!("http://{}", s.addr));

    // Workload: first, or alongside the consumer.
    let produce = {
        let (broker, timeline) = (broker.clone(), timeline.clone());
        let messages = crate::workload::MessageFactory {
            run: run_id.to_owned(),
            keys: plan.workload.keys.map(|k| k.get()),
            template: plan.workload.payload.clone(),
        };
        let (count, rate) = (plan.workload.messages.get(), plan.workload.rate);
        async move { broker.produce(&messages, count, rate, &timeline).await }
    };
    let mut produce_task = None;
    if plan.workload.during {
        produce_task = Some(tokio::spawn(produce));
    } else {
        tokio::select! {
            r = produce => r?,
            _ = abort.cancelled() => {
                timeline.record(Event::RunEnded { reason: EndReason::Aborted });
                return Ok(());
            }
        }
    }

    // The proxy, when the consumer goes through one: each instance gets its own listeners, so
    // every connection is attributed by the port it came in on.
    let instances =
        crate::nemesis::instance_capacity(plan.consumer.instances.get() as u32, &plan.faults);
    let roster = Roster::new(instances);
    let incarnation_of = {
        let roster = roster.clone();
        Arc::new(move |instance: u32| roster.incarnation(instance))
    };
    let proxy = match (plan.via_proxy(), endpoint.kind) {
        (false, _) => None,
        (true, "kafka") => Some(Proxy::Kafka(
            KafkaProxy::start(
                &endpoint.address,
                &endpoint.source,
                instances,
                timeline.clone(),
                gate.clone(),
                incarnation_of,
                stop.clone(),
            )
            .await?,
        )),
        (true, _) => Some(Proxy::Amqp(
            AmqpProxy::start(
                &endpoint.address,
                instances,
                timeline.clone(),
                gate.clone(),
                incarnation_of,
                stop.clone(),
            )
            .await?,
        )),
    };

    // Consumer and nemesis (the nemesis subscribes first, so it sees the first start).
    let contract = {
        let (run, endpoint, effects_dir) =
            (run_id.to_owned(), endpoint.clone(), effects_dir.clone());
        let kafka = endpoint.kind == "kafka";
        let proxy = proxy.clone();
        Arc::new(move |instance: u32, incarnation: u32| Contract {
            run: run.clone(),
            broker: endpoint.kind.into(),
            bootstrap: match (&proxy, kafka) {
                (_, false) => String::new(),
                (Some(p), true) => p.address_for(instance),
                (None, true) => endpoint.address.clone(),
            },
            topic: if kafka {
                endpoint.source.clone()
            } else {
                String::new()
            },
            group: endpoint.group.clone(),
            amqp_url: match (&proxy, kafka) {
                (_, true) => String::new(),
                (Some(p), false) => p.address_for(instance),
                (None, false) => endpoint.address.clone(),
            },
            queue: if kafka {
                String::new()
            } else {
                endpoint.source.clone()
            },
            prefetch: endpoint.prefetch.map(|p| p.to_string()).unwrap_or_default(),
            effect_url: effect_url
                .as_ref()
                .map(|u| format!("{u}/effect/{instance}/{incarnation}"))
                .unwrap_or_default(),
            effect_url_shared: effect_url
                .as_ref()
                .map(|u| format!("{u}/effect"))
                .unwrap_or_default(),
            effect_file: file::effect_file(&effects_dir, instance, incarnation)
                .display()
                .to_string(),
            instance,
            incarnation,
        })
    };
    let nemesis_events = timeline.subscribe();
    let supervisor = Supervisor::start(
        SupervisorConfig {
            command: plan.consumer.command.clone(),
            env: plan.consumer.env.clone().into_iter().collect(),
            cwd: plan.consumer.cwd.as_ref().map(PathBuf::from),
            instances: plan.consumer.instances.get() as u32,
            capacity: instances,
            restart: plan.consumer.restart.clone(),
            contract,
            log_dir: dir.join("logs"),
            stdout_observer,
            roster: roster.clone(),
        },
        timeline.clone(),
    );
    // The HTTP sink attributes each effect by the consumer process group owning its socket.
    if let Some(sink) = &http_sink {
        let supervisor = supervisor.clone();
        sink.bind_consumers(Arc::new(move || {
            let live = supervisor.live(crate::plan::Target::AllInstances);
            live.into_iter()
                .map(crate::sink::owner::Group::from)
                .collect()
        }));
    }
    let nemesis_stop = CancellationToken::new();
    let member_stop = CancellationToken::new();
    let members = (endpoint.kind == "kafka").then(|| {
        Arc::new(TransientMembers {
            bootstrap: endpoint.address.clone(),
            config: plan.broker.config.clone(),
            group: endpoint.group.clone(),
            topic: endpoint.source.clone(),
            timeline: timeline.clone(),
            stop: member_stop.clone(),
            tasks: Default::default(),
        })
    });
    let levers = Levers {
        supervisor: supervisor.clone(),
        network: proxy.clone().map(Proxy::network),
        group: members.clone().map(|m| m as Arc<dyn GroupControl>),
        stopping: stop.clone(),
    };
    let (nemesis, nemesis_status) =
        Nemesis::new(&plan.faults, seed, timeline.clone(), levers, gate);
    let nemesis_task = tokio::spawn(nemesis.run(nemesis_events, nemesis_stop.clone()));

    // Watch until the run ends.
    let bar = progress_bar(opts.progress_bar, plan.workload.messages.get());
    let deadline = started + plan.limits.deadline;
    let mut quiet_since: Option<Instant> = None;
    let mut last_snapshot: Option<Snapshot> = None;
    let mut progress_error: Option<String> = None;
    let mut instances_done = false;
    let mut proxy_failed: Option<String> = None;
    let reason = loop {
        tokio::select! {
            _ = tokio::time::sleep(PROGRESS_INTERVAL) => {}
            _ = abort.cancelled() => break EndReason::Aborted,
            _ = supervisor.instances_ended(), if !instances_done => {
                instances_done = true;
                if supervisor.has_failed() { break EndReason::InfrastructureError; }
                continue;
            }
        }
        if supervisor.has_failed() {
            break EndReason::InfrastructureError;
        }
        // A proxy that could not apply a fault, or a consumer that slipped past it, makes the
        // evidence incomplete: an infrastructure error, never a pass (design §12).
        // (The proxy has put the problem on the timeline already.)
        if let Some(problem) = proxy.as_ref().and_then(Proxy::failure) {
            proxy_failed = Some(problem);
            break EndReason::InfrastructureError;
        }
        let produced = produce_task.as_ref().is_none_or(|t| t.is_finished());
        match broker.snapshot().await {
            Ok(snapshot) => {
                if last_snapshot.as_ref() != Some(&snapshot) {
                    timeline.record(snapshot.event());
                    last_snapshot = Some(snapshot);
                }
                progress_error = None;
            }
            Err(e) => progress_error = Some(e),
        }
        let status = nemesis_status.borrow().clone();
        let counts = tally.borrow().clone();
        update_bar(&bar, &counts, &status, last_snapshot.as_ref());
        if Instant::now() >= deadline {
            break EndReason::Deadline;
        }
        // Done: every acknowledged ID was effected, or the broker has nothing left and the
        // effects have stopped (an AMQP queue does not count delivered, unacked messages).
        let effects_quiet = counts
            .last_effect_at
            .is_none_or(|t| t.elapsed() >= plan.limits.settle);
        let work_done = produced
            && (counts.all_effected()
                || (effects_quiet && last_snapshot.as_ref().is_some_and(Snapshot::nothing_left)));
        if !work_done || status.scheduled_pending {
            quiet_since = None;
            continue;
        }
        let quiet = *quiet_since.get_or_insert_with(Instant::now);
        let since_fault = status
            .last_fired_at
            .map(|at| timeline.elapsed().saturating_sub(at))
            .unwrap_or(Duration::MAX);
        if quiet.elapsed() >= plan.limits.settle && since_fault >= plan.limits.settle {
            break EndReason::Settled;
        }
        if instances_done && quiet.elapsed() >= plan.limits.settle {
            break EndReason::Settled;
        }
    };
    bar.finish_and_clear();
    if let Some(e) = progress_error {
        timeline.record(Event::Warning {
            message: format!("the last progress read failed: {e}"),
        });
    }

    // Final progress (before the consumers are stopped: a shutdown commit is not the run's).
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
    let failure = supervisor.take_failure();
    if let Some(f) = &failure {
        timeline.record(Event::Warning {
            message: f.to_string(),
        });
    }
    timeline.record(Event::RunEnded { reason });

    // Stop everything, in order: no more faults, then the consumers, then the sinks.
    nemesis_stop.cancel();
    let _ = nemesis_task.await;
    member_stop.cancel();
    if let Some(m) = &members {
        m.join().await;
    }
    supervisor.stop(STOP_GRACE).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), supervisor.instances_ended()).await;
    crate::consumer::process::kill_all_groups();
    if let Some(t) = produce_task {
        t.abort();
    }
    // With the consumers gone, what the broker still holds is pending, not lost.
    if reason != EndReason::InfrastructureError {
        broker.finish(timeline).await;
    }
    sink_stop.cancel();
    if let Some(sink) = http_sink {
        sink.join().await;
    }
    if let Some(p) = proxy {
        p.join().await;
    }
    if let Some(problem) = proxy_failed {
        return Err(InfraError::new(format!("the proxy failed: {problem}")).into());
    }
    if let Some(t) = file_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    match failure {
        Some(f) => Err(InfraError::new(f.to_string()).into()),
        None => Ok(()),
    }
}

/// The run's proxy, whichever the broker.
#[derive(Clone)]
enum Proxy {
    Kafka(KafkaProxy),
    Amqp(AmqpProxy),
}

/// The `rebalance: group` lever: transient members of the harness's own that join the group
/// under test straight at the broker (never through the proxy's fault path), hold their share
/// of partitions, and leave.
struct TransientMembers {
    bootstrap: String,
    config: std::collections::BTreeMap<String, String>,
    group: String,
    topic: String,
    timeline: crate::timeline::Timeline,
    /// Ends every hold early (the member still leaves cleanly) when the run stops.
    stop: CancellationToken,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Longest wait for transient members to leave at the end of a run.
const MEMBER_LEAVE_DEADLINE: Duration = Duration::from_secs(30);

impl GroupControl for TransientMembers {
    fn rebalance(&self, hold: Duration, protocol: Option<&GroupProtocol>) -> Option<String> {
        let protocol = protocol.cloned().unwrap_or_default();
        // A member that cannot speak the group's protocol never joins: not applied (design §12).
        if let Err(e) = protocol.client_settings() {
            self.timeline.record(Event::Warning {
                message: format!("rebalance: group not applied: {e}"),
            });
            return None;
        }
        let described = match &protocol {
            GroupProtocol::Classic { assignors } => format!("classic, {}", assignors.join(",")),
            GroupProtocol::Consumer => "KIP-848 consumer protocol".into(),
        };
        let (bootstrap, config, group, topic, timeline, stop) = (
            self.bootstrap.clone(),
            self.config.clone(),
            self.group.clone(),
            self.topic.clone(),
            self.timeline.clone(),
            self.stop.clone(),
        );
        let task = tokio::spawn(async move {
            let held = group_member::hold_group(
                &bootstrap, &config, &group, &topic, &protocol, hold, &timeline, &stop,
            )
            .await;
            if let Err(e) = held {
                timeline.record(Event::Warning {
                    message: format!("the transient group member failed: {e}"),
                });
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        Some(format!(
            "transient member joins group {} for {} ({described})",
            self.group,
            humantime::format_duration(hold)
        ))
    }
}

impl TransientMembers {
    /// Waits (with a deadline) for every member to have left the group.
    async fn join(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::time::timeout(MEMBER_LEAVE_DEADLINE, async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
    }
}

impl Proxy {
    /// What the consumer instance connects to: a bootstrap address or an AMQP URL.
    fn address_for(&self, instance: u32) -> String {
        match self {
            Proxy::Kafka(p) => p.bootstrap_for(instance),
            Proxy::Amqp(p) => p.url_for(instance),
        }
    }

    fn failure(&self) -> Option<String> {
        match self {
            Proxy::Kafka(p) => p.failure(),
            Proxy::Amqp(p) => p.failure(),
        }
    }

    fn network(self) -> Arc<dyn NetworkControl> {
        match self {
            Proxy::Kafka(p) => Arc::new(p),
            Proxy::Amqp(p) => Arc::new(p),
        }
    }

    async fn join(self) {
        match self {
            Proxy::Kafka(p) => p.join().await,
            Proxy::Amqp(p) => p.join().await,
        }
    }
}

/// Live counts for the end condition and the progress bar.
#[derive(Debug, Clone, Default)]
struct Counts {
    acked: usize,
    effected: usize,
    all_acked_effected: bool,
    last_effect_at: Option<Instant>,
}

impl Counts {
    fn all_effected(&self) -> bool {
        self.acked > 0 && self.all_acked_effected
    }
}

/// Follows the timeline to count acknowledged and effected IDs.
struct Tally;

impl Tally {
    fn start(timeline: &Timeline) -> watch::Receiver<Counts> {
        let mut events = timeline.subscribe();
        let (tx, rx) = watch::channel(Counts::default());
        tokio::spawn(async move {
            let mut acked: HashSet<String> = HashSet::new();
            let mut effected: HashSet<String> = HashSet::new();
            let mut waiting = 0usize;
            while let Some(e) = events.recv().await {
                let e: Arc<Stamped> = e;
                match &e.event {
                    Event::Produced {
                        id,
                        status: ProduceStatus::Acked,
                        ..
                    } => {
                        if acked.insert(id.clone()) && !effected.contains(id) {
                            waiting += 1;
                        }
                    }
                    Event::Effect { id, .. } => {
                        if effected.insert(id.clone()) && acked.contains(id) {
                            waiting -= 1;
                        }
                    }
                    _ => continue,
                }
                let last_effect_at = match &e.event {
                    Event::Effect { .. } => Some(Instant::now()),
                    _ => tx.borrow().last_effect_at,
                };
                tx.send_replace(Counts {
                    acked: acked.len(),
                    effected: effected.len(),
                    all_acked_effected: waiting == 0,
                    last_effect_at,
                });
            }
        });
        rx
    }
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
    counts: &Counts,
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

fn describe_fault(f: &crate::plan::FaultSpec) -> String {
    use crate::nemesis::action::Action;
    let action = Action::from_spec(f);
    let what = match action {
        Action::Rebalance(hold) => format!("group for {}", humantime::format_duration(hold)),
        Action::ScaleUp => "+1".into(),
        Action::ScaleDown(_) => "-1".into(),
        _ => action.target().to_string(),
    };
    format!(
        "{}: {what} when {}",
        action.name(),
        crate::nemesis::trigger::describe(&f.when)
    )
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
