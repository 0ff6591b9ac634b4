//! RabbitMQ (AMQP 0-9-1) through lapin: the fresh queue, the workload publisher that keeps the
//! ledger (publisher confirms), the queue depth the run watches, and the final drain that tells
//! messages still pending in the queue from messages that are gone.
//!
//! One connection, two channels: a publishing channel in confirm mode (opened by `produce`,
//! used by nothing else, so the broker's publish sequence numbers are exactly the order of our
//! `basic.publish` calls), and a control channel for declares, binds, passive declares and the
//! drain. A passive declare of a missing queue makes the broker close the control channel; it is
//! reopened on the next use.
//!
//! *Architecture invariant:* only this module imports lapin (the example consumer aside). The
//! harness's own channels never consume from the run's queue while the consumer runs: the depth
//! comes from passive declares, and the only `basic.get` is the final drain, after the consumers
//! were stopped.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::error::InfraError;
use crate::plan::{Extractor, Rate};
use crate::timeline::{ProduceStatus, Timeline};
use crate::workload::{self, Message, MessageFactory};

/// How long the broker may take to confirm one publish before it is indeterminate.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Most unconfirmed publishes at once.
const MAX_IN_FLIGHT: usize = 1000;
/// Deadline for one control operation (declare, bind, delete, get).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for the whole final drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the queue's ready count must hold still, once no one holds messages, before the
/// drain takes what is there (the broker requeues a closed connection's messages on its own
/// time).
pub const REQUEUE_SETTLE: Duration = Duration::from_millis(200);
/// The header that carries the message ID (as in the Kafka workload).
const ID_HEADER: &str = "exactly-id";

/// One operation on RabbitMQ did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AmqpOpError {
    /// The broker or the client library refused it.
    #[error("{0}")]
    Refused(#[source] lapin::Error),
    /// No answer came within the operation's deadline.
    #[error("{what}: no answer within {}", humantime::format_duration(*limit))]
    NoAnswer {
        /// The operation.
        what: &'static str,
        /// Its deadline.
        limit: Duration,
    },
}

/// The end-of-run drain could not tell what the queue still holds.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The queue could not be inspected.
    #[error(transparent)]
    Queue(#[from] AmqpOpError),
    /// A consumer is still attached, or a consumer connection still open through the proxy,
    /// so the messages it holds unacknowledged are not back yet.
    #[error(
        "queue {queue} still has {consumers} consumer(s) and {connections} consumer connection(s) open through the proxy after {}: the messages they hold unacknowledged are not back, so pending cannot be told from lost",
        humantime::format_duration(DRAIN_TIMEOUT)
    )]
    HoldersLeft {
        /// The queue.
        queue: String,
        /// Consumers still attached (`basic.consume`).
        consumers: u32,
        /// Consumer connections still open (a `basic.get` consumer is no queue consumer).
        connections: usize,
    },
    /// The drain ran out of time.
    #[error(
        "the drain of queue {queue} did not finish within {} ({taken} messages taken)",
        humantime::format_duration(DRAIN_TIMEOUT)
    )]
    OutOfTime {
        /// The queue.
        queue: String,
        /// Messages already taken (acked, gone from the queue).
        taken: usize,
    },
    /// A `basic.get` failed.
    #[error("cannot drain queue {queue} ({source}; {taken} messages taken)")]
    Get {
        /// The queue.
        queue: String,
        /// Messages already taken.
        taken: usize,
        /// What the get returned.
        #[source]
        source: AmqpOpError,
    },
    /// Acknowledging a drained message failed.
    #[error("cannot ack a drained message of queue {queue} ({source}; {taken} messages taken)")]
    Ack {
        /// The queue.
        queue: String,
        /// Messages already taken.
        taken: usize,
        /// What the ack returned.
        #[source]
        source: lapin::Error,
    },
}

/// The harness's connection to one RabbitMQ broker (one vhost), for one queue.
pub struct AmqpBroker {
    /// The URL with its password replaced by `***`, for messages.
    shown_url: String,
    queue: String,
    exchange: Option<String>,
    routing_key: Option<String>,
    connection: Connection,
    /// Declares, binds, passive declares and the drain; `None` after the broker closed it.
    control: Mutex<Option<Channel>>,
    /// The publishing channel while `produce` runs (kept so `close` can close it).
    publisher: Mutex<Option<Channel>>,
    /// `broker.dead_letter`: the queue the run's queue dead-letters to, drained after the run.
    dead_letter: Option<String>,
}

impl AmqpBroker {
    /// Connects to `url` (`amqp://user:pass@host:port/vhost`), retrying until `connect_timeout`.
    /// `queue` is the run's queue; with `exchange`, the workload is published there with
    /// `routing_key` (default: the queue name), else through the default exchange.
    ///
    /// On failure: an [`InfraError`] saying "cannot reach RabbitMQ at <url, password
    /// redacted> within <d> (<error>); start it with `scripts/brokers start` or fix broker.url".
    pub async fn connect(
        url: &str,
        queue: &str,
        exchange: Option<&str>,
        routing_key: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<AmqpBroker, InfraError> {
        let shown_url = redact_url(url);
        if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
            return Err(InfraError::new(format!(
                "bad broker.url {shown_url} ({e}); write it as amqp://user:password@host:5672/%2f"
            )));
        }
        if url.starts_with("amqps://") {
            return Err(InfraError::new(format!(
                "bad broker.url {shown_url}: amqps:// (TLS) is not supported yet; use amqp://"
            )));
        }
        let deadline = Instant::now() + connect_timeout;
        let connection = loop {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(100), Duration::from_secs(5));
            let attempt = tokio::time::timeout(
                step,
                Connection::connect(url, ConnectionProperties::default()),
            )
            .await;
            let error = match attempt {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {}", humantime::format_duration(step)),
            };
            if Instant::now() >= deadline {
                return Err(InfraError::new(format!(
                    "cannot reach RabbitMQ at {shown_url} within {} ({}); start it with `scripts/brokers start` or fix broker.url",
                    humantime::format_duration(connect_timeout),
                    redact_text(&error, url)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let control = within(OP_TIMEOUT, "open a channel", connection.create_channel())
            .await
            .map_err(|e| InfraError::new(format!("RabbitMQ at {shown_url}: {e}")))?;
        Ok(AmqpBroker {
            shown_url,
            queue: queue.to_owned(),
            exchange: exchange.map(str::to_owned),
            routing_key: routing_key.map(str::to_owned),
            connection,
            control: Mutex::new(Some(control)),
            publisher: Mutex::new(None),
            dead_letter: None,
        })
    }

    /// Names the dead-letter queue (`broker.dead_letter`, `{run}` replaced): `prepare` declares
    /// it and makes the run's queue dead-letter to it through the default exchange, so a
    /// `basic.nack(requeue=false)` or `basic.reject(requeue=false)` of the consumer lands there.
    pub fn with_dead_letter(mut self, queue: Option<String>) -> AmqpBroker {
        self.dead_letter = queue;
        self
    }

    /// The run queue's arguments: where it dead-letters to, when the plan says.
    fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(dlq) = &self.dead_letter {
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(LongString::from("")),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(LongString::from(dlq.as_str())),
            );
        }
        args
    }

    /// Declares the dead-letter queue fresh and durable (an old one is deleted with its
    /// messages first), when the plan names one.
    async fn prepare_dead_letter(&self, channel: &Channel) -> Result<(), InfraError> {
        let Some(dlq) = &self.dead_letter else {
            return Ok(());
        };
        let fail = |what: &str, e: AmqpOpError| {
            InfraError::new(format!(
                "cannot {what} dead-letter queue {dlq} on RabbitMQ at {} ({e})",
                self.shown_url
            ))
        };
        within(
            OP_TIMEOUT,
            "queue.delete",
            channel.queue_delete(dlq.as_str().into(), QueueDeleteOptions::default()),
        )
        .await
        .map_err(|e| fail("delete the old", e))?;
        within(
            OP_TIMEOUT,
            "queue.declare",
            channel.queue_declare(
                dlq.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|e| fail("declare", e))?;
        Ok(())
    }

    /// After the run: takes every message of the dead-letter queue (`basic.get`, acking each)
    /// and returns their IDs (as [`AmqpBroker::drain_remaining`] reads them), with the queue's
    /// name; `None` when the plan names no dead-letter queue. Bounded by the drain's deadline.
    pub async fn drain_dead_letters(
        &self,
        id_rule: &Extractor,
    ) -> Option<(String, Result<super::dead_letter::DeadLetters, AmqpOpError>)> {
        let dlq = self.dead_letter.clone()?;
        let read = async {
            let channel = self.control_channel().await?;
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            let mut read = super::dead_letter::DeadLetters::default();
            while Instant::now() < deadline {
                let got = within(
                    OP_TIMEOUT,
                    "basic.get",
                    channel.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false }),
                )
                .await?;
                let Some(message) = got else {
                    read.complete = true;
                    return Ok(read);
                };
                let delivery = message.delivery;
                read.records += 1;
                read.ids
                    .extend(message_ids(id_rule, &delivery.properties, &delivery.data));
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(AmqpOpError::Refused)?;
            }
            Ok(read)
        };
        Some((dlq.clone(), read.await))
    }

    /// With `create`: makes the queue fresh and durable (a queue of the same name left by an
    /// earlier run is deleted first, with its messages, so none of them can be judged as this
    /// run's), and binds it to the exchange with the routing key when an exchange is given (the
    /// exchange itself must exist). Without `create`: checks the queue exists (passive declare);
    /// bindings are left as they are.
    pub async fn prepare(&self, create: bool) -> Result<(), InfraError> {
        let queue = self.queue.as_str();
        if !create {
            return match self.passive_declare().await {
                Ok(_) => Ok(()),
                Err(e) => Err(InfraError::new(format!(
                    "queue {queue} is not usable on RabbitMQ at {} ({e}); declare it or set broker.create: true",
                    self.shown_url
                ))),
            };
        }
        let fail = |what: &str, e: AmqpOpError| {
            InfraError::new(format!(
                "cannot {what} on RabbitMQ at {} ({e})",
                self.shown_url
            ))
        };
        if self.passive_declare().await.is_ok() {
            let channel = self
                .control_channel()
                .await
                .map_err(|e| fail("open a channel", e))?;
            within(
                OP_TIMEOUT,
                "queue.delete",
                channel.queue_delete(queue.into(), QueueDeleteOptions::default()),
            )
            .await
            .map_err(|e| fail(&format!("delete the old queue {queue}"), e))?;
        }
        let channel = self
            .control_channel()
            .await
            .map_err(|e| fail("open a channel", e))?;
        self.prepare_dead_letter(&channel).await?;
        within(
            OP_TIMEOUT,
            "queue.declare",
            channel.queue_declare(
                queue.into(),
                QueueDeclareOptions::durable(),
                self.queue_arguments(),
            ),
        )
        .await
        .map_err(|e| fail(&format!("declare queue {queue}"), e))?;
        if let Some(exchange) = &self.exchange {
            within(
                OP_TIMEOUT,
                "queue.bind",
                channel.queue_bind(
                    queue.into(),
                    exchange.as_str().into(),
                    self.publish_key().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(|e| {
                fail(
                    &format!("bind queue {queue} to exchange {exchange} (it must exist)"),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Publishes `count` messages (IDs and payloads from [`workload::message`]) with publisher
    /// confirms, paced to `rate`, at most 1000 unconfirmed at once. Each message is persistent
    /// and mandatory, carries its ID as `message_id` and in the `exactly-id` header, and gets
    /// exactly one `Event::Produced` (`partition: None`, `offset`: its publish sequence number):
    /// `acked` on a confirm, `failed` on a nack, a return (unroutable) or a publish refused
    /// before it was sent, `indeterminate` when no confirm came within 30 s or the channel
    /// died after the message was sent. When the channel is lost the rest of the workload is
    /// recorded as failed and an error is returned.
    pub async fn produce(
        &self,
        messages: &MessageFactory,
        count: u64,
        rate: Rate,
        timeline: &Timeline,
    ) -> Result<(), InfraError> {
        let opened = async {
            let channel = self.connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        };
        let channel = within(OP_TIMEOUT, "open the publishing channel", opened)
            .await
            .map_err(|e| {
                InfraError::new(format!(
                    "cannot open a publishing channel on RabbitMQ at {} ({e})",
                    self.shown_url
                ))
            })?;
        *self.publisher.lock().await = Some(channel.clone());

        let exchange = self.exchange.clone().unwrap_or_default();
        let key = self.publish_key().to_owned();
        let started = Instant::now();
        let mut in_flight = FuturesUnordered::new();
        // The broker numbers confirm-mode publishes on a channel from 1; only this loop
        // publishes on this channel, so our count is its delivery tag.
        let mut tag: u64 = 0;
        let mut lost: Option<String> = None;
        for (sent, seq) in (1..=count).enumerate() {
            let message = messages.message(seq);
            if let Some(why) = &lost {
                timeline.record(message.produced(
                    None,
                    None,
                    ProduceStatus::Failed,
                    Some(format!("not sent: {why}")),
                ));
                continue;
            }
            let wait = workload::delay_before(rate, sent as u64, started.elapsed());
            if !wait.is_zero() {
                workload::wait_driving(wait, &mut in_flight).await;
            }
            if !channel.status().connected() {
                let why =
                    "the publishing channel was closed (by the broker, or the connection dropped)"
                        .to_owned();
                timeline.record(message.produced(
                    None,
                    None,
                    ProduceStatus::Failed,
                    Some(format!("not sent: {why}")),
                ));
                lost = Some(why);
                continue;
            }
            tag += 1;
            let mut headers = FieldTable::default();
            headers.insert(
                ID_HEADER.into(),
                AMQPValue::LongString(LongString::from(message.id.as_bytes())),
            );
            let properties = BasicProperties::default()
                .with_message_id(ShortString::from(message.id.as_str()))
                .with_delivery_mode(2)
                .with_headers(headers);
            // Every wait has a deadline: a publish that cannot even be handed to the channel
            // within OP_TIMEOUT ends the workload (indeterminate: it may have left).
            let published = within(
                OP_TIMEOUT,
                "publish a message",
                channel.basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    message.payload.as_bytes(),
                    properties,
                ),
            )
            .await;
            match published {
                Ok(confirm) => in_flight.push(settle(message, tag, confirm, timeline)),
                Err(e) => {
                    // The frame may have left before the error: the broker may hold it.
                    timeline.record(message.produced(
                        None,
                        Some(tag as i64),
                        ProduceStatus::Indeterminate,
                        Some(format!("publish failed: {e}")),
                    ));
                    lost = Some(e.to_string());
                }
            }
            while in_flight.len() >= MAX_IN_FLIGHT {
                in_flight.next().await;
            }
        }
        while in_flight.next().await.is_some() {}
        *self.publisher.lock().await = None;
        let _ =
            tokio::time::timeout(OP_TIMEOUT, channel.close(200, "workload produced".into())).await;
        match lost {
            None => Ok(()),
            Some(why) => Err(InfraError::new(format!(
                "lost the publishing channel to RabbitMQ at {} while producing ({why})",
                self.shown_url
            ))),
        }
    }

    /// Messages ready in the queue right now (a passive `queue.declare`; unacknowledged
    /// messages are not counted). Cheap enough to call every 250 ms.
    pub async fn ready_count(&self) -> Result<u64, AmqpOpError> {
        self.passive_declare()
            .await
            .map(|(ready, _)| u64::from(ready))
    }

    /// At the end of a run, after the consumers were stopped (so their unacknowledged messages
    /// went back to ready): takes every message left in the queue with `basic.get`, acking each,
    /// and returns the IDs they stand for (what `id_rule`, the plan's `effects.id`, reads from
    /// the body and headers, `message_id`, the `exactly-id` header: see [`message_ids`]). This
    /// tells "pending" (still in the queue) from "lost" (gone without an effect).
    ///
    /// It first waits until nothing may still hold a message unacknowledged: no queue consumer
    /// (`basic.consume`) and no consumer connection open through the proxy (`open_holders`: a
    /// consumer that fetches with `basic.get` is no queue consumer, yet holds what it fetched
    /// until its connection closes). The broker requeues a closed connection's unacknowledged
    /// messages on its own time, so it then waits for the ready count to hold still for
    /// [`REQUEUE_SETTLE`]. A message still held is not ready, and not ready is not gone: while
    /// a holder is there the drain does not start, and gives up with
    /// [`DrainError::HoldersLeft`] (the remainder is then incomplete: pending, never lost).
    /// Bounded by 10 s in all; on a timeout or an error it returns the error, naming how many
    /// IDs it had taken (those are acked and gone from the queue). Without the proxy,
    /// `open_holders` knows nothing and only queue consumers are waited for.
    pub async fn drain_remaining(
        &self,
        id_rule: &Extractor,
        open_holders: &(dyn Fn() -> usize + Sync),
    ) -> Result<Vec<String>, DrainError> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut ready = loop {
            let (ready, consumers) = self.passive_declare().await?;
            let connections = open_holders();
            if consumers == 0 && connections == 0 {
                break ready;
            }
            if Instant::now() >= deadline {
                return Err(DrainError::HoldersLeft {
                    queue: self.queue.clone(),
                    consumers,
                    connections,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        while Instant::now() < deadline {
            tokio::time::sleep(REQUEUE_SETTLE).await;
            let (now, _) = self.passive_declare().await?;
            if now == ready {
                break;
            }
            ready = now;
        }
        let channel = self.control_channel().await?;
        let mut ids = Vec::new();
        let mut taken = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DrainError::OutOfTime {
                    queue: self.queue.clone(),
                    taken,
                });
            }
            let got = within(
                left.min(OP_TIMEOUT),
                "basic.get",
                channel.basic_get(
                    self.queue.as_str().into(),
                    BasicGetOptions { no_ack: false },
                ),
            )
            .await
            .map_err(|source| DrainError::Get {
                queue: self.queue.clone(),
                taken,
                source,
            })?;
            let Some(message) = got else {
                return Ok(ids);
            };
            let delivery = message.delivery;
            ids.extend(message_ids(id_rule, &delivery.properties, &delivery.data));
            taken += 1;
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|source| DrainError::Ack {
                    queue: self.queue.clone(),
                    taken,
                    source,
                })?;
        }
    }

    /// Closes the channels and the connection, waiting at most a few seconds.
    pub async fn close(&self) {
        let close = async {
            for slot in [&self.publisher, &self.control] {
                if let Some(channel) = slot.lock().await.take() {
                    if channel.status().connected() {
                        let _ = channel.close(200, "bye".into()).await;
                    }
                }
            }
            if self.connection.status().connected() {
                let _ = self.connection.close(200, "bye".into()).await;
            }
        };
        let _ = tokio::time::timeout(OP_TIMEOUT, close).await;
    }

    /// The routing key the workload is published (and the queue bound) with.
    fn publish_key(&self) -> &str {
        match (&self.exchange, &self.routing_key) {
            (Some(_), Some(key)) => key,
            _ => &self.queue,
        }
    }

    /// The control channel, reopened when the broker closed it.
    async fn control_channel(&self) -> Result<Channel, AmqpOpError> {
        let mut slot = self.control.lock().await;
        if let Some(channel) = slot.as_ref() {
            if channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let channel = within(
            OP_TIMEOUT,
            "open a channel",
            self.connection.create_channel(),
        )
        .await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Passive `queue.declare`: the ready messages and the consumers, or why the queue is not
    /// there.
    async fn passive_declare(&self) -> Result<(u32, u32), AmqpOpError> {
        let channel = self.control_channel().await?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        within(
            OP_TIMEOUT,
            "queue.declare (passive)",
            channel.queue_declare(self.queue.as_str().into(), options, FieldTable::default()),
        )
        .await
        .map(|q| (q.message_count(), q.consumer_count()))
    }
}

/// Waits for the broker's answer for an operation `what`, at most `limit`.
async fn within<T>(
    limit: Duration,
    what: &'static str,
    op: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, AmqpOpError> {
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(AmqpOpError::Refused(e)),
        Err(_) => Err(AmqpOpError::NoAnswer { what, limit }),
    }
}

/// Waits for one publish's confirm and records its fate.
async fn settle(message: Message, tag: u64, confirm: lapin::PublisherConfirm, timeline: &Timeline) {
    let (status, error) = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
        Ok(Ok(Confirmation::Ack(None))) => (ProduceStatus::Acked, None),
        // Acked after a basic.return: the broker could route it to no queue and dropped it.
        Ok(Ok(Confirmation::Ack(Some(returned)))) => (
            ProduceStatus::Failed,
            Some(format!(
                "broker returned the message as unroutable ({} {})",
                returned.reply_code, returned.reply_text
            )),
        ),
        Ok(Ok(Confirmation::Nack(_))) => (
            ProduceStatus::Failed,
            Some("broker nacked the message".to_owned()),
        ),
        Ok(Ok(Confirmation::NotRequested)) => (
            ProduceStatus::Indeterminate,
            Some("the channel was not in confirm mode".to_owned()),
        ),
        Ok(Err(e)) => (
            ProduceStatus::Indeterminate,
            Some(format!("no confirm: {e}")),
        ),
        Err(_) => (
            ProduceStatus::Indeterminate,
            Some(format!(
                "no confirm within {}",
                humantime::format_duration(CONFIRM_TIMEOUT)
            )),
        ),
    };
    timeline.record(message.produced(None, Some(tag as i64), status, error));
}

/// The IDs a message left in the queue may stand for, each counted pending: what the plan's
/// ID rule (`effects.id`) reads from its body and headers, as the sink reads effects (a retry
/// copy the consumer re-published with a fresh `message_id` still carries its ID in the body),
/// then its `message_id` and its `exactly-id` header; the payload as text when none of these
/// names one. All of them, not the first: a rule made for effects may read something else in a
/// message, and a message left out of the remainder would be judged lost.
fn message_ids(id_rule: &Extractor, properties: &BasicProperties, payload: &[u8]) -> Vec<String> {
    let headers = text_headers(properties);
    let body = String::from_utf8_lossy(payload);
    let mut ids = Vec::new();
    let mut add = |id: String| {
        if !ids.contains(&id) {
            ids.push(id);
        }
    };
    // The `body` rule would read the whole payload: that is the last resort below.
    if !matches!(id_rule, Extractor::Body) {
        if let Some(id) = id_rule.extract(&headers, &body) {
            add(id);
        }
    }
    if let Some(id) = properties.message_id() {
        add(id.as_str().to_owned());
    }
    if let Some((_, id)) = headers.iter().find(|(k, _)| k == ID_HEADER) {
        add(id.clone());
    }
    if ids.is_empty() {
        ids.push(body.into_owned());
    }
    ids
}

/// A message's headers whose values are text, as (name, value) pairs.
fn text_headers(properties: &BasicProperties) -> Vec<(String, String)> {
    let Some(table) = properties.headers().as_ref() else {
        return Vec::new();
    };
    table
        .inner()
        .iter()
        .filter_map(|(k, v)| {
            let value = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                _ => return None,
            };
            Some((k.as_str().to_owned(), value))
        })
        .collect()
}

/// `url` with the password of its user info replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let user_info = &authority[..at];
    let Some(colon) = user_info.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..rest_start],
        &user_info[..colon],
        &rest[at..]
    )
}

/// `text` with the password of `url` (if it has one) replaced by `***`, in case an error
/// message quotes it.
fn redact_text(text: &str, url: &str) -> String {
    let shown = redact_url(url);
    let mut out = text.replace(url, &shown);
    if let Some(password) = password_of(url) {
        if password.len() >= 3 {
            out = out.replace(password, "***");
        }
    }
    out
}

/// The password in `url`'s user info, if any.
fn password_of(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let user_info = &authority[..authority.rfind('@')?];
    Some(&user_info[user_info.find(':')? + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("amqp://127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://user@host/v"), "amqp://user@host/v");
        assert_eq!(
            redact_url("amqp://u:p@ss@host"),
            "amqp://u:***@host",
            "the last @ ends the user info"
        );
        assert_eq!(
            redact_text(
                "refused amqp://u:hunter2@h/%2f: bad hunter2",
                "amqp://u:hunter2@h/%2f"
            ),
            "refused amqp://u:***@h/%2f: bad ***"
        );
    }

    #[test]
    fn without_a_rule_the_id_comes_from_message_id_then_header_then_payload() {
        let rule = Extractor::Body;
        let with_id = BasicProperties::default().with_message_id("r-1".into());
        assert_eq!(message_ids(&rule, &with_id, b"x"), ["r-1"]);
        let mut headers = FieldTable::default();
        headers.insert(
            ID_HEADER.into(),
            AMQPValue::LongString(LongString::from(&b"r-2"[..])),
        );
        let with_header = BasicProperties::default().with_headers(headers);
        assert_eq!(message_ids(&rule, &with_header, b"x"), ["r-2"]);
        let with_both = with_header.with_message_id("r-2".into());
        assert_eq!(message_ids(&rule, &with_both, b"x"), ["r-2"], "once");
        assert_eq!(
            message_ids(&rule, &BasicProperties::default(), b"r-3"),
            ["r-3"]
        );
    }

    #[test]
    fn the_plans_id_rule_reads_the_body_and_headers_first() {
        // A retry copy the consumer re-published: a fresh message_id, the ID in the body.
        let copy = BasicProperties::default().with_message_id("retry-7f3a".into());
        let body = br#"{"order_id":"r-4","attempt":2}"#;
        let json = Extractor::parse("json:/order_id").unwrap();
        assert_eq!(message_ids(&json, &copy, body), ["r-4", "retry-7f3a"]);
        let regex = Extractor::parse("regex:\"order_id\":\"([^\"]+)\"").unwrap();
        assert_eq!(message_ids(&regex, &copy, body), ["r-4", "retry-7f3a"]);
        let mut headers = FieldTable::default();
        headers.insert(
            "x-original-id".into(),
            AMQPValue::LongString(LongString::from(&b"r-5"[..])),
        );
        let with_header = BasicProperties::default().with_headers(headers);
        let header = Extractor::parse("header:X-Original-Id").unwrap();
        assert_eq!(message_ids(&header, &with_header, b"x"), ["r-5"]);
        // A body the rule cannot read leaves message_id; a rule reading something else in a
        // message never hides the message's own ID.
        assert_eq!(message_ids(&json, &copy, b"not json"), ["retry-7f3a"]);
        let greedy = Extractor::parse("regex:(\\S+)").unwrap();
        let own = BasicProperties::default().with_message_id("r-6".into());
        assert_eq!(message_ids(&greedy, &own, b"payload"), ["payload", "r-6"]);
    }
}
