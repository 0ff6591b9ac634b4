//! An example RabbitMQ (AMQP 0-9-1) consumer with known delivery semantics, used by the tests.
//!
//! It follows exactly's consumer contract: it reads `EXACTLY_AMQP_URL` and `EXACTLY_QUEUE`,
//! consumes the queue, and POSTs one side effect per message (the message's payload, as
//! `application/json`) to `EXACTLY_EFFECT_URL`. `--mode` picks *when* it tells the broker the
//! work is done:
//!
//! - `auto-ack`: consume with `no_ack`: the broker counts a message done the moment it sends
//!   it, and pushes everything it has at once (prefetch does not apply), so a crash loses every
//!   message received but not yet effected (at-most-once);
//! - `ack-before-effect`: `basic.ack`, then work, then the effect: a crash between the ack and
//!   the effect loses the message (at-most-once);
//! - `ack-after-effect`: work, effect, then `basic.ack`: a crash between the effect and the ack
//!   makes the broker redeliver a message whose effect already happened (at-least-once);
//! - `idempotent`: like ack-after-effect, with `Idempotency-Key: <id>` on the effect, so an
//!   idempotent provider turns the redelivered copy into a no-op (effectively exactly-once).
//!
//! `--on-poison dead-letter|retry-forever` decodes each payload as JSON first (without it, a
//! payload is never decoded): a message that does not decode is poison. `dead-letter` answers
//! `basic.nack(requeue=false)`: the broker dead-letters it (to the queue the plan's
//! `broker.dead_letter` names) and the queue moves on. `retry-forever` answers
//! `basic.nack(requeue=true)` after 200 ms: the broker hands it back, again and again.
//!
//! The message ID is the `message_id` property, else the `exactly-id` header, else the payload.
//!
//! `--prefetch N` sets `basic.qos` (default: `EXACTLY_PREFETCH`, else 10): how many unacked
//! messages the broker lets this consumer hold, all of them redelivered when it dies.
//! `--work-ms N` is the processing time between receiving a message and its effect.
//! `--multiple-ack N` acks every N-th delivery with `multiple=true`, covering the ones before it
//! (default 1: ack each); a clean stop acks what it has effected before closing.
//! `--sink http|file|stdout` picks where effects go: POST to `EXACTLY_EFFECT_URL` (default), a
//! line appended to `EXACTLY_EFFECT_FILE`, or a line `effect <payload>` on stdout.
//!
//! SIGTERM or SIGINT stops it cleanly between messages: cancel the consumer, close the channel
//! (unacked messages go back to the queue) and the connection.

#[path = "shared/effects.rs"]
mod effects;

use effects::{env, Effects, Sink};

/// Name used in log lines.
const PROGRAM: &str = "amqp_consumer";

use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    AutoAck,
    AckBeforeEffect,
    AckAfterEffect,
    Idempotent,
}

/// What to do with a message whose payload does not decode (`--on-poison`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum OnPoison {
    /// `basic.nack(requeue=false)`: the broker dead-letters it.
    DeadLetter,
    /// `basic.nack(requeue=true)` after a pause: the broker redelivers it, forever.
    RetryForever,
}

struct Args {
    mode: Mode,
    /// `--on-poison`: decode payloads as JSON, and what to do with one that does not.
    on_poison: Option<OnPoison>,
    sink: Sink,
    work: Duration,
    prefetch: u16,
    multiple_ack: u64,
}

fn parse_args() -> Result<Args, String> {
    let prefetch = match std::env::var("EXACTLY_PREFETCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|e| format!("EXACTLY_PREFETCH={v}: {e}"))?,
        _ => 10,
    };
    let mut args = Args {
        mode: Mode::AckAfterEffect,
        on_poison: None,
        sink: Sink::Http,
        work: Duration::ZERO,
        prefetch,
        multiple_ack: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => {
                args.mode = match value()?.as_str() {
                    "auto-ack" => Mode::AutoAck,
                    "ack-before-effect" => Mode::AckBeforeEffect,
                    "ack-after-effect" => Mode::AckAfterEffect,
                    "idempotent" => Mode::Idempotent,
                    other => return Err(format!("unknown mode {other}")),
                }
            }
            "--on-poison" => {
                args.on_poison = Some(match value()?.as_str() {
                    "dead-letter" => OnPoison::DeadLetter,
                    "retry-forever" => OnPoison::RetryForever,
                    other => return Err(format!("unknown --on-poison {other}")),
                })
            }
            "--sink" => args.sink = value()?.parse()?,
            "--work-ms" => {
                args.work =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("--work-ms: {e}"))?)
            }
            "--prefetch" => {
                args.prefetch = value()?.parse().map_err(|e| format!("--prefetch: {e}"))?
            }
            "--multiple-ack" => {
                args.multiple_ack = value()?
                    .parse()
                    .map_err(|e| format!("--multiple-ack: {e}"))?;
                if args.multiple_ack == 0 {
                    return Err("--multiple-ack must be at least 1".into());
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("amqp_consumer: {e}");
        std::process::exit(2)
    });
    // Two workers: lapin's I/O keeps running (heartbeats) while a blocking effect is posted.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(consume(args));
    std::process::exit(code);
}

async fn consume(args: Args) -> i32 {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let effects = std::sync::Arc::new(Effects::open(PROGRAM, args.sink, effects::HTTP_TIMEOUT));
    let url = env(PROGRAM, "EXACTLY_AMQP_URL");
    let queue = env(PROGRAM, "EXACTLY_QUEUE");

    let connection = match connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("amqp_consumer: cannot connect: {e}");
            return 1;
        }
    };
    let channel = connection.create_channel().await.expect("open a channel");
    let auto_ack = args.mode == Mode::AutoAck;
    if !auto_ack {
        channel
            .basic_qos(args.prefetch, BasicQosOptions { global: false })
            .await
            .expect("basic.qos");
    }
    let tag = format!(
        "amqp_consumer-{}-{}",
        std::env::var("EXACTLY_INSTANCE").unwrap_or_default(),
        std::env::var("EXACTLY_INCARNATION").unwrap_or_default()
    );
    let mut consumer = match channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions {
                no_ack: auto_ack,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("amqp_consumer: cannot consume queue {queue}: {e}");
            return 1;
        }
    };
    eprintln!(
        "amqp_consumer: mode {:?}, prefetch {}, work {:?}, multiple-ack {}, instance {} incarnation {}",
        args.mode,
        if auto_ack { "none (no-ack)".to_owned() } else { args.prefetch.to_string() },
        args.work,
        args.multiple_ack,
        std::env::var("EXACTLY_INSTANCE").unwrap_or_default(),
        std::env::var("EXACTLY_INCARNATION").unwrap_or_default()
    );

    let mut received: u64 = 0;
    // The newest delivery effected (after-effect modes) but not yet acked.
    let mut unacked: Option<Delivery> = None;
    let code = loop {
        let next = tokio::select! {
            _ = term.recv() => break 0,
            _ = int.recv() => break 0,
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                eprintln!("amqp_consumer: consumer error: {e}");
                break 1;
            }
            None => {
                eprintln!("amqp_consumer: the broker ended the consumer");
                break 1;
            }
        };
        received += 1;
        let ack_now = received.is_multiple_of(args.multiple_ack);
        let id = message_id(&delivery);
        let payload = String::from_utf8_lossy(&delivery.data).into_owned();
        if let Some(policy) = args.on_poison {
            if serde_json::from_str::<serde_json::Value>(&payload).is_err() {
                reject_poison(&delivery, &id, policy).await;
                continue;
            }
        }

        if args.mode == Mode::AckBeforeEffect && ack_now {
            ack(&delivery, args.multiple_ack > 1).await;
        }
        tokio::time::sleep(args.work).await;
        let key = (args.mode == Mode::Idempotent).then_some(id);
        let fx = effects.clone();
        let _ =
            tokio::task::spawn_blocking(move || fx.apply(PROGRAM, &payload, key.as_deref())).await;
        if matches!(args.mode, Mode::AckAfterEffect | Mode::Idempotent) {
            if ack_now {
                ack(&delivery, args.multiple_ack > 1).await;
                unacked = None;
            } else {
                unacked = Some(delivery);
            }
        }
    };

    eprintln!("amqp_consumer: stopping");
    let stop = async {
        let _ = channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        // What was effected is done: ack it so a clean stop repeats nothing.
        if let Some(d) = unacked.take() {
            ack(&d, true).await;
        }
        let _ = channel.close(200, "bye".into()).await;
        let _ = connection.close(200, "bye".into()).await;
    };
    if tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .is_err()
    {
        eprintln!("amqp_consumer: the broker did not answer the close within 5s");
    }
    code
}

/// Connects, retrying for a few seconds (a restarted incarnation may race a busy broker).
async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    let mut attempt = 1;
    loop {
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(c) => return Ok(c),
            Err(e) if attempt >= 25 => return Err(e),
            Err(e) => {
                eprintln!("amqp_consumer: connect attempt {attempt} failed: {e}");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A poison delivery: nacked without requeue (dead-lettered) or, after a pause, with requeue
/// (handed back by the broker, forever).
async fn reject_poison(delivery: &Delivery, id: &str, policy: OnPoison) {
    let requeue = policy == OnPoison::RetryForever;
    if requeue {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "amqp_consumer: cannot decode {id} (delivery {}, redelivered {}); basic.nack requeue={requeue}",
        delivery.delivery_tag, delivery.redelivered
    );
    let options = BasicNackOptions {
        multiple: false,
        requeue,
    };
    if let Err(e) = delivery.acker.nack(options).await {
        eprintln!("amqp_consumer: nack failed: {e}");
    }
}

async fn ack(delivery: &Delivery, multiple: bool) {
    if let Err(e) = delivery.acker.ack(BasicAckOptions { multiple }).await {
        eprintln!("amqp_consumer: ack failed: {e}");
    }
}

/// `message_id`, else the `exactly-id` header, else the payload.
fn message_id(delivery: &Delivery) -> String {
    if let Some(id) = delivery.properties.message_id() {
        return id.as_str().to_owned();
    }
    match delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("exactly-id"))
    {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => String::from_utf8_lossy(&delivery.data).into_owned(),
    }
}
