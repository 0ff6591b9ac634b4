//! The supervision phase: the consumer's contract (what each incarnation is told), the
//! supervisor that runs it, the transient group members, and the nemesis that pulls the
//! levers on them. The nemesis subscribes before the supervisor starts, so it sees the first
//! start; everything started here is stopped by [`Supervision::stop`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::members::TransientMembers;
use super::proxy::Proxy;
use super::sinks::BoundaryAddress;
use super::sinks::Sinks;
use super::RunContext;
use crate::consumer::contract::{BoundaryContract, Contract};
use crate::consumer::{Roster, Supervisor, SupervisorConfig};
use crate::gate::Gate;
use crate::nemesis::action::{GroupControl, Levers};
use crate::nemesis::{Nemesis, NemesisStatus};
use crate::plan::{BrokerKind, SinkKind};
use crate::sink::file;

/// Grace between SIGTERM and SIGKILL when the run stops the consumers.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Longest wait for the instance tasks to end once the consumers were stopped.
const INSTANCES_END_DEADLINE: Duration = Duration::from_secs(10);

/// Builds the contract of one incarnation (instance, incarnation).
type ContractFor = Arc<dyn Fn(u32, u32) -> Contract + Send + Sync>;

/// The consumer, its supervisor and the fault injector, running.
pub(super) struct Supervision {
    /// Runs and restarts the consumer instances.
    pub(super) supervisor: Supervisor,
    /// The nemesis's progress (faults fired, scheduled ones still to come).
    pub(super) nemesis_status: watch::Receiver<NemesisStatus>,
    nemesis_task: JoinHandle<()>,
    nemesis_stop: CancellationToken,
    /// The `rebalance: group` lever (Kafka).
    members: Option<Arc<TransientMembers>>,
    member_stop: CancellationToken,
}

impl Supervision {
    /// Starts the nemesis and the supervisor (which starts the consumer's first instances).
    pub(super) fn start(
        ctx: &RunContext<'_>,
        sinks: &Sinks,
        proxy: Option<&Proxy>,
        capacity: u32,
        roster: Roster,
        gate: Gate,
    ) -> Supervision {
        let plan = ctx.plan;
        let nemesis_events = ctx.timeline.subscribe();
        let supervisor = Supervisor::start(
            SupervisorConfig {
                command: plan.consumer.command.clone(),
                env: plan.consumer.env.clone().into_iter().collect(),
                cwd: plan.consumer.cwd.as_ref().map(PathBuf::from),
                instances: plan.consumer.instances.get() as u32,
                capacity,
                restart: plan.consumer.restart.clone(),
                contract: contract_for(ctx, sinks, proxy),
                log_dir: ctx.dir.join("logs"),
                stdout_observer: sinks.stdout_observer(),
                roster,
            },
            ctx.timeline.clone(),
        );
        let member_stop = CancellationToken::new();
        let members = transient_members(ctx, &member_stop);
        let levers = Levers {
            supervisor: supervisor.clone(),
            network: proxy.cloned().map(Proxy::network),
            group: members.clone().map(|m| m as Arc<dyn GroupControl>),
            stopping: ctx.stop.clone(),
        };
        let (nemesis, nemesis_status) = Nemesis::new(
            &plan.loaded.faults,
            ctx.seed,
            ctx.timeline.clone(),
            levers,
            gate,
        );
        let nemesis_stop = CancellationToken::new();
        let nemesis_task = tokio::spawn(nemesis.run(nemesis_events, nemesis_stop.clone()));
        Supervision {
            supervisor,
            nemesis_status,
            nemesis_task,
            nemesis_stop,
            members,
            member_stop,
        }
    }

    /// Stops everything, in order: no more faults, the transient members leave, then the
    /// consumers (SIGTERM, grace, SIGKILL), and any process group left is killed.
    pub(super) async fn stop(self) {
        self.nemesis_stop.cancel();
        let _ = self.nemesis_task.await;
        self.member_stop.cancel();
        if let Some(m) = &self.members {
            m.join().await;
        }
        self.supervisor.stop(STOP_GRACE).await;
        let _ =
            tokio::time::timeout(INSTANCES_END_DEADLINE, self.supervisor.instances_ended()).await;
        crate::consumer::process::kill_all_groups();
    }
}

/// The transient group members of `rebalance: group`, for a Kafka run.
fn transient_members(
    ctx: &RunContext<'_>,
    stop: &CancellationToken,
) -> Option<Arc<TransientMembers>> {
    let endpoint = ctx.endpoint;
    match endpoint.kind {
        BrokerKind::Kafka => Some(Arc::new(TransientMembers {
            bootstrap: endpoint.address.clone(),
            config: ctx.plan.broker.config.clone(),
            group: endpoint.group.clone(),
            topic: endpoint.source.clone(),
            timeline: ctx.timeline.clone(),
            stop: stop.clone(),
            tasks: Default::default(),
        })),
        BrokerKind::Amqp => None,
    }
}

/// What each incarnation is told: the broker (or the proxy's listener for its instance), its
/// topic or queue, and where its effects go.
fn contract_for(ctx: &RunContext<'_>, sinks: &Sinks, proxy: Option<&Proxy>) -> ContractFor {
    let (run, endpoint) = (ctx.run_id.to_owned(), ctx.endpoint.clone());
    let addresses = sinks.addresses();
    let declared = ctx.plan.boundaries().iter().any(|b| b.declared);
    let effects_dir = ctx.dir.join("effects");
    let proxy = proxy.cloned();
    Arc::new(move |instance: u32, incarnation: u32| {
        let address = match &proxy {
            Some(p) => p.address_for(instance),
            None => endpoint.address.clone(),
        };
        let (bootstrap, topic, amqp_url, queue) = match endpoint.kind {
            BrokerKind::Kafka => (
                address,
                endpoint.source.clone(),
                String::new(),
                String::new(),
            ),
            BrokerKind::Amqp => (
                String::new(),
                String::new(),
                address,
                endpoint.source.clone(),
            ),
        };
        let each: Vec<BoundaryContract> = addresses
            .iter()
            .map(|a| boundary_contract(a, instance, incarnation))
            .collect();
        // The plain variables name the first boundary of their sink kind.
        let first = |kind: SinkKind| addresses.iter().zip(&each).find(|(a, _)| a.sink == kind);
        let http = first(SinkKind::Http)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        // Without a file boundary the file variable still names a file, as it always has.
        let file = first(SinkKind::File).map_or_else(
            || {
                file::effect_file(&effects_dir, instance, incarnation)
                    .display()
                    .to_string()
            },
            |(_, c)| c.effect_file.clone(),
        );
        Contract {
            run: run.clone(),
            broker: endpoint.broker_name().into(),
            bootstrap,
            topic,
            group: endpoint.group.clone(),
            amqp_url,
            queue,
            prefetch: endpoint.prefetch.map(|p| p.to_string()).unwrap_or_default(),
            effect_url: http.effect_url,
            effect_url_shared: http.effect_url_shared,
            effect_file: file,
            output_topic: first(SinkKind::KafkaTopic)
                .map(|(_, c)| c.output_topic.clone())
                .unwrap_or_default(),
            dead_letter: endpoint.dead_letter.clone().unwrap_or_default(),
            instance,
            incarnation,
            boundaries: if declared { each } else { Vec::new() },
        }
    })
}

/// Where one boundary's effects go for one incarnation.
fn boundary_contract(a: &BoundaryAddress, instance: u32, incarnation: u32) -> BoundaryContract {
    let file = match a.sink {
        SinkKind::File => file::effect_file(&a.effects_dir, instance, incarnation)
            .display()
            .to_string(),
        SinkKind::Http | SinkKind::Stdout | SinkKind::KafkaTopic | SinkKind::Postgres => {
            String::new()
        }
    };
    BoundaryContract {
        name: a.name.clone(),
        effect_url: a
            .url
            .as_ref()
            .map(|u| format!("{u}/effect/{instance}/{incarnation}"))
            .unwrap_or_default(),
        effect_url_shared: a
            .url
            .as_ref()
            .map(|u| format!("{u}/effect"))
            .unwrap_or_default(),
        effect_file: file,
        output_topic: a.output_topic.clone().unwrap_or_default(),
    }
}
