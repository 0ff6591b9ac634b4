//! The sinks phase: starts the plan's effect sink (HTTP, file, stdout or postgres) before the
//! consumer, bound to the roster so the HTTP and postgres sinks attribute effects by the live
//! consumer process groups; stops it at the end of the run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::RunContext;
use crate::consumer::output::Line;
use crate::consumer::{LineObserver, Roster};
use crate::error::{Error, InfraError};
use crate::gate::Gate;
use crate::plan::SinkKind;
use crate::sink::http::HttpSink;
use crate::sink::owner::{Group, SocketOwners};
use crate::sink::postgres::PostgresSink;
use crate::sink::rule_check::WrongRule;
use crate::sink::stdout::StdoutSink;
use crate::sink::{file, EffectRecorder};

/// Longest wait for the file sink's last read once the run stops.
const FILE_TAIL_DEADLINE: Duration = Duration::from_secs(2);

/// The run's effect sink, whichever the plan chose.
pub(super) struct Sinks {
    /// The HTTP sink, for `sink: http`.
    http: Option<HttpSink>,
    /// The file sink's tailing task, for `sink: file`.
    file_task: Option<JoinHandle<()>>,
    /// The postgres sink's replication reader, for `sink: postgres`.
    postgres: Option<PostgresSink>,
    /// The stdout sink's line observer (handed to the supervisor), for `sink: stdout`.
    stdout_observer: Option<LineObserver>,
    /// Where incarnations write their effect files.
    effects_dir: PathBuf,
    /// Stops the sinks (after the consumers, so their last effects are seen).
    stop: CancellationToken,
    /// A clone of the sink's recorder: it knows when the ID rule read none of the first effects.
    recorder: EffectRecorder,
}

impl Sinks {
    /// Starts the plan's sink; its effects go to the timeline.
    pub(super) async fn start(
        ctx: &RunContext<'_>,
        gate: &Gate,
        roster: &Roster,
    ) -> Result<Sinks, Error> {
        let plan = ctx.plan;
        let id_rule = plan.loaded.effect_id.clone();
        let key_rule = plan.loaded.idempotency_key.clone();
        let sink_name = plan.effects.sink.name();
        let recorder = EffectRecorder::new(ctx.timeline.clone(), id_rule, key_rule, sink_name)
            .for_run(ctx.run_id);
        let mut sinks = Sinks {
            http: None,
            file_task: None,
            postgres: None,
            stdout_observer: None,
            effects_dir: ctx.dir.join("effects"),
            stop: CancellationToken::new(),
            recorder: recorder.clone(),
        };
        match plan.effects.sink {
            SinkKind::Http => {
                let sink = HttpSink::start(recorder, gate.clone(), sinks.stop.clone())
                    .await
                    .map_err(|e| InfraError::new(format!("cannot start the HTTP sink: {e}")))?;
                // Each effect is attributed by the consumer process group owning its socket.
                let roster = roster.clone();
                sink.bind_consumers(Arc::new(move || {
                    roster.live_groups().into_iter().map(Group::from).collect()
                }));
                sinks.http = Some(sink);
            }
            SinkKind::File => {
                sinks.file_task = Some(tokio::spawn(file::tail(
                    sinks.effects_dir.clone(),
                    recorder,
                    sinks.stop.clone(),
                )));
            }
            SinkKind::Stdout => {
                let sink = StdoutSink::new(recorder);
                let observer: LineObserver =
                    Arc::new(move |instance, incarnation, line: Line<'_>| match line {
                        Line::Complete(text) => sink.line(instance, incarnation, text),
                        Line::Torn(bytes) => sink.torn(instance, incarnation, bytes),
                    });
                sinks.stdout_observer = Some(observer);
            }
            SinkKind::Postgres => {
                let spec = plan.effects.postgres.as_ref().ok_or_else(|| {
                    InfraError::new(
                        "sink: postgres without `effects.postgres` (validation missed it)",
                    )
                })?;
                let owners = SocketOwners::new();
                let roster = roster.clone();
                owners.bind(Arc::new(move || {
                    roster.live_groups().into_iter().map(Group::from).collect()
                }));
                let sink = PostgresSink::start(spec, ctx.run_id, recorder, owners).await?;
                sinks.postgres = Some(sink);
            }
        }
        Ok(sinks)
    }

    /// The HTTP sink's base URL (`http://127.0.0.1:PORT`), for `sink: http`.
    pub(super) fn effect_url(&self) -> Option<String> {
        self.http.as_ref().map(|s| format!("http://{}", s.addr))
    }

    /// The folder the incarnations' effect files go to (`sink: file`).
    pub(super) fn effects_dir(&self) -> &Path {
        &self.effects_dir
    }

    /// What stops the run when the first effects all missed the plan's ID rule.
    pub(super) fn wrong_rule(&self) -> Option<WrongRule> {
        self.recorder.wrong_rule()
    }

    /// The stdout sink's line observer, for the supervisor (`sink: stdout`).
    pub(super) fn stdout_observer(&self) -> Option<LineObserver> {
        self.stdout_observer.clone()
    }

    /// Stops the sinks and waits for the HTTP sink to finish serving. The file sink's last
    /// read is awaited apart ([`Sinks::finish_file_tail`]).
    pub(super) async fn stop_serving(&mut self) {
        self.stop.cancel();
        if let Some(sink) = self.http.take() {
            sink.join().await;
        }
        if let Some(sink) = self.postgres.take() {
            sink.stop().await;
        }
    }

    /// Waits (bounded) for the file sink to read what the incarnations wrote last.
    pub(super) async fn finish_file_tail(self) {
        if let Some(t) = self.file_task {
            let _ = tokio::time::timeout(FILE_TAIL_DEADLINE, t).await;
        }
    }
}
