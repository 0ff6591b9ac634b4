//! An example Kafka consumer with known delivery semantics, used by the demo and the tests.
//!
//! It follows exactly's consumer contract: it reads `EXACTLY_KAFKA_BOOTSTRAP`, `EXACTLY_TOPIC`,
//! `EXACTLY_GROUP` and POSTs one side effect per message (the message's payload) to
//! `EXACTLY_EFFECT_URL`. `--mode` picks *when* it marks work done:
//!
//! - `commit-before-effect`: commit the offset, then work, then the effect (at-most-once);
//! - `commit-after-effect`: work, effect, then commit (at-least-once);
//! - `idempotent`: like commit-after-effect, with `Idempotency-Key: <id>` on the effect, so an
//!   idempotent provider turns the redelivered copy into a no-op (effectively exactly-once);
//! - `auto-commit`: librdkafka commits the consumed position in the background while the work
//!   is still in progress (no guarantee either way).
//!
//! `--sink http|file|stdout` picks where effects go: POST to `EXACTLY_EFFECT_URL` (default),
//! a line appended to `EXACTLY_EFFECT_FILE`, or a line `effect <payload>` on stdout.
//!
//! `--work-ms N` is the processing time between receiving a message and its effect;
//! `--session-timeout-ms N` sets the group session timeout; `--config key=value` passes any
//! other librdkafka setting.

#[path = "shared/effects.rs"]
mod effects;

use effects::{env, Effects, Sink};

/// Name used in log lines.
const PROGRAM: &str = "kafka_consumer";

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    CommitBeforeEffect,
    CommitAfterEffect,
    Idempotent,
    AutoCommit,
}

struct Args {
    mode: Mode,
    sink: Sink,
    work: Duration,
    session_timeout_ms: u32,
    /// Extra librdkafka settings, `--config key=value`.
    config: Vec<(String, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mode: Mode::CommitAfterEffect,
        sink: Sink::Http,
        work: Duration::ZERO,
        session_timeout_ms: 6000,
        config: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => {
                args.mode = match value()?.as_str() {
                    "commit-before-effect" => Mode::CommitBeforeEffect,
                    "commit-after-effect" => Mode::CommitAfterEffect,
                    "idempotent" => Mode::Idempotent,
                    "auto-commit" => Mode::AutoCommit,
                    other => return Err(format!("unknown mode {other}")),
                }
            }
            "--sink" => args.sink = value()?.parse()?,
            "--work-ms" => {
                args.work =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("--work-ms: {e}"))?)
            }
            "--session-timeout-ms" => {
                args.session_timeout_ms = value()?
                    .parse()
                    .map_err(|e| format!("--session-timeout-ms: {e}"))?
            }
            "--config" => {
                let kv = value()?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or(format!("--config wants key=value, got {kv}"))?;
                args.config.push((k.to_owned(), v.to_owned()));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Prints librdkafka's own log lines and errors on stderr (kept by exactly per incarnation).
struct StderrLog;

impl ClientContext for StderrLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!("kafka_consumer: librdkafka {level:?} {fac}: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("kafka_consumer: librdkafka error {error}: {reason}");
    }
}

impl ConsumerContext for StderrLog {}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("kafka_consumer: {e}");
        std::process::exit(2)
    });
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())
        .expect("SIGTERM handler");
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone()).expect("SIGINT handler");

    let effects = Effects::open(PROGRAM, args.sink);
    let topic = env(PROGRAM, "EXACTLY_TOPIC");
    let auto = args.mode == Mode::AutoCommit;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", env(PROGRAM, "EXACTLY_KAFKA_BOOTSTRAP"))
        .set("group.id", env(PROGRAM, "EXACTLY_GROUP"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", if auto { "true" } else { "false" })
        .set("auto.commit.interval.ms", "100")
        .set("log_level", "4");
    // The KIP-848 protocol (`--config group.protocol=consumer`) keeps these on the broker.
    let kip848 = args
        .config
        .iter()
        .any(|(k, v)| k == "group.protocol" && v == "consumer");
    if !kip848 {
        config
            .set("session.timeout.ms", args.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (args.session_timeout_ms / 4).max(100).to_string(),
            );
    }
    for (k, v) in &args.config {
        config.set(k, v);
    }
    let consumer: BaseConsumer<StderrLog> = config
        .create_with_context(StderrLog)
        .expect("consumer config is valid");
    consumer.subscribe(&[&topic]).expect("subscribe");
    eprintln!(
        "kafka_consumer: mode {:?}, work {:?}, instance {} incarnation {}",
        args.mode,
        args.work,
        std::env::var("EXACTLY_INSTANCE").unwrap_or_default(),
        std::env::var("EXACTLY_INCARNATION").unwrap_or_default()
    );

    while !stop.load(Ordering::Relaxed) {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = match result {
            Ok(m) => m,
            Err(e) => {
                eprintln!("kafka_consumer: poll error: {e}");
                continue;
            }
        };
        let id = msg
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "exactly-id")
                    .and_then(|h| h.value)
            })
            .or_else(|| msg.key())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let payload = msg
            .payload()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();

        if args.mode == Mode::CommitBeforeEffect {
            commit(&consumer, &msg);
        }
        std::thread::sleep(args.work);
        effects.apply(
            PROGRAM,
            &payload,
            (args.mode == Mode::Idempotent).then_some(id.as_str()),
        );
        if matches!(args.mode, Mode::CommitAfterEffect | Mode::Idempotent) {
            commit(&consumer, &msg);
        }
    }
    eprintln!("kafka_consumer: stopping");
}

fn commit(consumer: &BaseConsumer<StderrLog>, msg: &rdkafka::message::BorrowedMessage<'_>) {
    if let Err(e) = consumer.commit_message(msg, CommitMode::Sync) {
        eprintln!("kafka_consumer: commit failed: {e}");
    }
}
