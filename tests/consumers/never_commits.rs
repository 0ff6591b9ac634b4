//! A Kafka consumer that never commits (issue 13, item 5): it applies one effect per message,
//! once each, and never tells the broker the work is done (`enable.auto.commit=false`, no
//! commit call, not even on close). What a run observes is EXACT, but any restart would
//! process every message again: the judge must not let that pass as a met promise.
//!
//! The consumer contract as `examples/kafka_consumer.rs` follows it (`EXACTLY_KAFKA_BOOTSTRAP`,
//! `EXACTLY_TOPIC`, `EXACTLY_GROUP`, effects POSTed to `EXACTLY_EFFECT_URL`); `--work-ms N` is
//! the processing time before each effect.

#[path = "../../examples/shared/effects.rs"]
mod effects;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use effects::{env, Effects, Sink};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

/// Name used in log lines.
const PROGRAM: &str = "never_commits";

fn main() {
    let mut work = Duration::from_millis(5);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (
            flag.as_str(),
            args.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            ("--work-ms", Some(ms)) => work = Duration::from_millis(ms),
            _ => {
                eprintln!("{PROGRAM}: usage: never_commits [--work-ms N]");
                std::process::exit(2);
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).expect("signal handler");
    }
    let effects = Effects::open(PROGRAM, Sink::Http, effects::HTTP_TIMEOUT);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env(PROGRAM, "EXACTLY_KAFKA_BOOTSTRAP"))
        .set("group.id", env(PROGRAM, "EXACTLY_GROUP"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("log_level", "4")
        .create()
        .expect("consumer config is valid");
    consumer
        .subscribe(&[&env(PROGRAM, "EXACTLY_TOPIC")])
        .expect("subscribe");
    eprintln!("{PROGRAM}: consuming, never committing");
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => eprintln!("{PROGRAM}: poll error: {e}"),
            Some(Ok(msg)) => {
                let payload = msg
                    .payload()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                std::thread::sleep(work);
                effects.apply(PROGRAM, &payload, None);
            }
        }
    }
    eprintln!("{PROGRAM}: stopping without a commit");
}
