//! A Kafka consumer with one of two bugs real consumers have, for tests/mechanisms.rs. It
//! follows exactly's consumer contract (`EXACTLY_KAFKA_BOOTSTRAP`, `EXACTLY_TOPIC`,
//! `EXACTLY_GROUP`, `EXACTLY_EFFECT_URL`) and posts each effect with `Idempotency-Key: <id>`,
//! so a redelivery after a kill is replayed, not applied twice. `--mode`:
//!
//! - `skip-every-10th`: a filter bug. Effect, then commit, for every message except those
//!   whose ID ends in a multiple of 10 (`<run>-10`, `<run>-20`...): those are committed past
//!   without their effect;
//! - `start-at-end`: `auto.offset.reset=latest`, and once it owns partitions it commits their
//!   end offsets (a consumer that records where it started): messages produced before it came
//!   are committed past and never fetched.
//!
//! It installs no SIGTERM handler: the harness's stop at the end of the run kills it with
//! `signal SIGTERM`, as it would a consumer that does not handle the signal.

// Only the http sink is used here.
#[allow(dead_code)]
#[path = "../../examples/shared/effects.rs"]
mod effects;

use std::time::Duration;

use effects::{env, Effects, Sink};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Name used in log lines.
const PROGRAM: &str = "kafka_misbehaving";

/// Which bug.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    SkipEvery10th,
    StartAtEnd,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = match (args.next().as_deref(), args.next().as_deref()) {
        (Some("--mode"), Some("skip-every-10th")) => Mode::SkipEvery10th,
        (Some("--mode"), Some("start-at-end")) => Mode::StartAtEnd,
        other => {
            eprintln!("{PROGRAM}: usage: --mode skip-every-10th|start-at-end (got {other:?})");
            std::process::exit(2)
        }
    };
    let effects = Effects::open(PROGRAM, Sink::Http, effects::HTTP_TIMEOUT);
    let topic = env(PROGRAM, "EXACTLY_TOPIC");
    let reset = match mode {
        Mode::SkipEvery10th => "earliest",
        Mode::StartAtEnd => "latest",
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env(PROGRAM, "EXACTLY_KAFKA_BOOTSTRAP"))
        .set("group.id", env(PROGRAM, "EXACTLY_GROUP"))
        .set("auto.offset.reset", reset)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1500")
        .create()
        .expect("consumer config is valid");
    consumer.subscribe(&[&topic]).expect("subscribe");
    eprintln!("{PROGRAM}: mode {mode:?}");
    let mut started_at_end = false;
    loop {
        if mode == Mode::StartAtEnd && !started_at_end {
            started_at_end = commit_end_offsets(&consumer, &topic);
        }
        let msg = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => {
                eprintln!("{PROGRAM}: poll error: {e}");
                continue;
            }
            Some(Ok(m)) => m,
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
        std::thread::sleep(Duration::from_millis(20));
        if mode == Mode::SkipEvery10th && filtered_out(&id) {
            eprintln!("{PROGRAM}: {id} filtered out (the bug): committed without its effect");
        } else {
            effects.apply(PROGRAM, &payload, Some(&id));
        }
        if let Err(e) = consumer.commit_message(&msg, CommitMode::Sync) {
            eprintln!("{PROGRAM}: commit failed: {e}");
        }
    }
}

/// The filter bug: IDs `<run>-N` with N a multiple of 10.
fn filtered_out(id: &str) -> bool {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n % 10 == 0)
}

/// Commits the end offset of every partition it owns; false while it owns none yet.
fn commit_end_offsets(consumer: &BaseConsumer, topic: &str) -> bool {
    let owned = match consumer.assignment() {
        Ok(tpl) if tpl.count() > 0 => tpl,
        _ => return false,
    };
    let mut ends = TopicPartitionList::new();
    for e in owned.elements() {
        match consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(5)) {
            Ok((_, high)) => {
                if let Err(err) =
                    ends.add_partition_offset(topic, e.partition(), Offset::Offset(high))
                {
                    eprintln!("{PROGRAM}: {err}");
                    return false;
                }
            }
            Err(err) => {
                eprintln!(
                    "{PROGRAM}: cannot read the end of partition {}: {err}",
                    e.partition()
                );
                return false;
            }
        }
    }
    match consumer.commit(&ends, CommitMode::Sync) {
        Ok(()) => {
            eprintln!("{PROGRAM}: started at the end: committed {ends:?}");
            true
        }
        Err(e) => {
            eprintln!("{PROGRAM}: commit of the end offsets failed: {e}");
            false
        }
    }
}
