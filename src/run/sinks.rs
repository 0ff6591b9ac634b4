//! The sinks phase: starts one effect sink (HTTP, file, stdout, kafka-topic or postgres) per
//! boundary of the plan before the consumer, each bound to the roster so the HTTP and postgres
//! sinks attribute effects by the live consumer process groups and each recording its
//! boundary's name on its events; stops them all at the end of the run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::RunContext;
use crate::broker::output_topic::{Isolation, OutputTopic};
use crate::consumer::output::Line;
use crate::consumer::{LineObserver, Roster};
use crate::error::{Error, InfraError};
use crate::gate::Gate;
use crate::plan::{Boundary, SinkKind, TopicIsolation};
use crate::sink::http::HttpSink;
use crate::sink::kafka_topic::KafkaTopicSink;
use crate::sink::owner::{Group, SocketOwners};
use crate::sink::postgres::PostgresSink;
use crate::sink::rule_check::WrongRule;
use crate::sink::stdout::StdoutSink;
use crate::sink::{file, EffectRecorder};

/// Longest wait for the file sink's last read once the run stops.
const FILE_TAIL_DEADLINE: Duration = Duration::from_secs(2);

/// One boundary's sink, whichever kind the plan chose.
struct BoundarySink {
    /// The boundary it observes.
    boundary: Boundary,
    /// The HTTP sink, for `sink: http`.
    http: Option<HttpSink>,
    /// The file sink's tailing task, for `sink: file`.
    file_task: Option<JoinHandle<()>>,
    /// The output topic's readers, for `sink: kafka-topic`.
    kafka: Option<KafkaTopicSink>,
    /// The output topic, `{run}` replaced, for `sink: kafka-topic`.
    output_topic: Option<String>,
    /// The replication reader, for `sink: postgres`.
    postgres: Option<PostgresSink>,
    /// Where incarnations write their effect files (`sink: file`).
    effects_dir: PathBuf,
    /// A clone of the sink's recorder: it knows when the ID rule read none of the first effects.
    recorder: EffectRecorder,
}

/// Where one boundary's effects go, as the consumer contract hands it to an incarnation.
#[derive(Debug, Clone)]
pub(super) struct BoundaryAddress {
    /// The boundary's name (`effects` for a plan written with `effects`).
    pub(super) name: String,
    /// Its sink.
    pub(super) sink: SinkKind,
    /// The HTTP sink's base URL (`http://127.0.0.1:PORT`), for `sink: http`.
    pub(super) url: Option<String>,
    /// The folder of its effect files, for `sink: file`.
    pub(super) effects_dir: PathBuf,
    /// The output topic, for `sink: kafka-topic`.
    pub(super) output_topic: Option<String>,
}

/// The run's sinks: one per boundary of the plan.
pub(super) struct Sinks {
    /// In plan order.
    boundaries: Vec<BoundarySink>,
    /// The stdout sink's line observer (handed to the supervisor), when a boundary has one.
    stdout_observer: Option<LineObserver>,
    /// Stops the sinks (after the consumers, so their last effects are seen).
    stop: CancellationToken,
}

impl Sinks {
    /// Starts every boundary's sink; their effects go to the timeline.
    pub(super) async fn start(
        ctx: &RunContext<'_>,
        gate: &Gate,
        roster: &Roster,
    ) -> Result<Sinks, Error> {
        let mut sinks = Sinks {
            boundaries: Vec::with_capacity(ctx.plan.boundaries().len()),
            stdout_observer: None,
            stop: CancellationToken::new(),
        };
        for boundary in ctx.plan.boundaries() {
            let opened = sinks.open(ctx, boundary, gate, roster).await?;
            sinks.boundaries.push(opened);
        }
        Ok(sinks)
    }

    /// Opens one boundary's sink.
    async fn open(
        &mut self,
        ctx: &RunContext<'_>,
        boundary: &Boundary,
        gate: &Gate,
        roster: &Roster,
    ) -> Result<BoundarySink, Error> {
        let recorder = EffectRecorder::new(
            ctx.timeline.clone(),
            boundary.id.clone(),
            boundary.idempotency_key.clone(),
            boundary.sink,
        )
        .for_run(ctx.run_id)
        .for_boundary(boundary.event_name());
        // The one boundary of `effects` keeps the run folder's `effects/`; each declared one
        // has its own folder under it.
        let effects_dir = match boundary.declared {
            false => ctx.dir.join("effects"),
            true => ctx.dir.join("effects").join(&boundary.name),
        };
        let mut opened = BoundarySink {
            boundary: boundary.clone(),
            http: None,
            file_task: None,
            kafka: None,
            output_topic: None,
            postgres: None,
            effects_dir,
            recorder: recorder.clone(),
        };
        match boundary.sink {
            SinkKind::Http => {
                let sink = HttpSink::start(recorder, gate.clone(), self.stop.clone())
                    .await
                    .map_err(|e| InfraError::new(format!("cannot start the HTTP sink: {e}")))?;
                // Each effect is attributed by the consumer process group owning its socket.
                let roster = roster.clone();
                sink.bind_consumers(Arc::new(move || {
                    roster.live_groups().into_iter().map(Group::from).collect()
                }));
                opened.http = Some(sink);
            }
            SinkKind::File => {
                std::fs::create_dir_all(&opened.effects_dir).map_err(|e| {
                    InfraError::new(format!(
                        "cannot create {}: {e}",
                        opened.effects_dir.display()
                    ))
                })?;
                opened.file_task = Some(tokio::spawn(file::tail(
                    opened.effects_dir.clone(),
                    recorder,
                    self.stop.clone(),
                )));
            }
            SinkKind::Stdout => {
                let sink = StdoutSink::new(recorder);
                let observer: LineObserver =
                    Arc::new(move |instance, incarnation, line: Line<'_>| match line {
                        Line::Complete(text) => sink.line(instance, incarnation, text),
                        Line::Torn(bytes) => sink.torn(instance, incarnation, bytes),
                    });
                self.stdout_observer = Some(observer);
            }
            SinkKind::KafkaTopic => {
                let (sink, topic) = open_output_topic(ctx, boundary, recorder, &self.stop).await?;
                opened.kafka = Some(sink);
                opened.output_topic = Some(topic);
            }
            SinkKind::Postgres => {
                let Some(spec) = &boundary.postgres else {
                    unreachable!("loading gives every postgres boundary its database");
                };
                let owners = SocketOwners::new();
                let roster = roster.clone();
                owners.bind(Arc::new(move || {
                    roster.live_groups().into_iter().map(Group::from).collect()
                }));
                let at = (
                    ctx.run_id,
                    ctx.endpoint.group.as_str(),
                    ctx.endpoint.source.as_str(),
                );
                let sink = PostgresSink::start(spec, at, recorder, owners).await?;
                opened.postgres = Some(sink);
            }
        }
        Ok(opened)
    }

    /// Where each boundary's effects go, in plan order, for the consumer contract.
    pub(super) fn addresses(&self) -> Vec<BoundaryAddress> {
        self.boundaries
            .iter()
            .map(|b| BoundaryAddress {
                name: b.boundary.name.clone(),
                sink: b.boundary.sink,
                url: b.http.as_ref().map(|s| format!("http://{}", s.addr)),
                effects_dir: b.effects_dir.clone(),
                output_topic: b.output_topic.clone(),
            })
            .collect()
    }

    /// What stops the run when the first effects of some boundary all missed its ID rule.
    pub(super) fn wrong_rule(&self) -> Option<WrongRule> {
        self.boundaries.iter().find_map(|b| b.recorder.wrong_rule())
    }

    /// The stdout sink's line observer, for the supervisor (`sink: stdout`).
    pub(super) fn stdout_observer(&self) -> Option<LineObserver> {
        self.stdout_observer.clone()
    }

    /// Stops the sinks and waits for the HTTP sinks to finish serving. The file sinks' last
    /// reads are awaited apart ([`Sinks::finish_file_tail`]).
    pub(super) async fn stop_serving(&mut self) {
        self.stop.cancel();
        for b in &mut self.boundaries {
            if let Some(sink) = b.http.take() {
                sink.join().await;
            }
            if let Some(sink) = b.postgres.take() {
                sink.stop().await;
            }
        }
    }

    /// Waits (bounded, all together) for the file sinks to read what the incarnations wrote
    /// last, and for the output topics' readers to read them to their end.
    pub(super) async fn finish_file_tail(self) {
        let mut tails = Vec::new();
        let mut topics = Vec::new();
        for b in self.boundaries {
            tails.extend(b.file_task);
            topics.extend(b.kafka.map(KafkaTopicSink::finish));
        }
        let _ = tokio::time::timeout(FILE_TAIL_DEADLINE, futures::future::join_all(tails)).await;
        // Each reader's drain has its own deadline.
        futures::future::join_all(topics).await;
    }
}

/// Creates a `kafka-topic` boundary's output topic fresh on the run's broker (never through
/// the proxy) and starts its readers.
async fn open_output_topic(
    ctx: &RunContext<'_>,
    boundary: &Boundary,
    recorder: EffectRecorder,
    stop: &CancellationToken,
) -> Result<(KafkaTopicSink, String), Error> {
    let Some(spec) = &boundary.output else {
        unreachable!("loading gives every kafka-topic boundary its output topic");
    };
    let topic = spec.topic.replace("{run}", ctx.run_id);
    let output = OutputTopic {
        bootstrap: ctx.endpoint.address.clone(),
        topic: topic.clone(),
        partitions: i32::try_from(spec.partitions).unwrap_or(i32::MAX),
        replication: ctx
            .plan
            .broker
            .replication
            .map_or(1, |r| i32::try_from(r.get()).unwrap_or(i32::MAX)),
        extra: ctx.plan.broker.config.clone(),
    };
    let isolation = match spec.isolation {
        TopicIsolation::ReadCommitted => Isolation::ReadCommitted,
        TopicIsolation::ReadUncommitted => Isolation::ReadUncommitted,
    };
    let sink = KafkaTopicSink::start(output, isolation, recorder, stop.clone()).await?;
    Ok((sink, topic))
}
