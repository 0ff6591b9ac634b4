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
//!   is still in progress (no guarantee either way);
//! - `commit-periodic`: work, effect, then mark the message done; the finished work is
//!   committed in the background every `--commit-every-ms` (1000), and at no other time (not
//!   on revoke, not on close). Finished-but-uncommitted work is always in flight: when a
//!   rebalance moves a partition, its new owner repeats it (at-least-once, with duplicates
//!   under rebalances);
//! - `commit-on-revoke`: like `commit-periodic`, and it also commits the finished work
//!   synchronously when partitions are taken away (the revoke callback: eager revoke,
//!   cooperative incremental revoke, KIP-848 revocation, and the final revoke on close), so a
//!   rebalance hands over only unfinished work.
//! - `ignore-commit-errors`: like `commit-after-effect`, and says so: a commit the broker
//!   refuses is logged and forgotten (the next message's commit, if any, covers it);
//! - `commit-retry`: like `commit-after-effect`, and a commit that fails is retried (the same
//!   offset, up to 5 more times, 200 ms apart) before the next message;
//!
//! - `transactional`: consume-transform-produce with Kafka transactions: per message, begin a
//!   transaction, produce the result to `EXACTLY_OUTPUT_TOPIC` (header `exactly-id`), send the
//!   consumed offset to the transaction, commit; any error aborts the transaction and ends
//!   the process (the supervisor restarts it; `init_transactions` fences the old one). Its
//!   transactional id is stable per instance (`<group>-<instance>`), as Kafka's EOS needs;
//! - `transactional-with-email`: the same, plus one HTTP effect per message (the "email")
//!   sent inside the loop, after the produce and before the commit: outside the transaction;
//!   (`--txn-timeout-ms N` sets its `transaction.timeout.ms`, 10000 by default);
//! - `produce-then-commit`: produce the result (idempotent producer, no transaction), wait
//!   for its acknowledgement, then commit the offset (at-least-once at the output topic).
//!
//! Database modes (the effect is a row in PostgreSQL, seen by the `postgres` sink; the URL is
//! `DATABASE_URL`, the table `EXACTLY_DB_TABLE` or `orders`; see `shared/db.rs`):
//!
//! - `db-then-commit`: insert the row (its own transaction), then commit the offset
//!   (at-least-once: a crash between the two repeats the row);
//! - `commit-then-db`: commit the offset, then insert (at-most-once: a crash between loses it);
//! - `dedup-table`: the row and `processed(message_id)` in one transaction, an ID already
//!   there skipped (`ON CONFLICT DO NOTHING`), the offset committed after (effectively
//!   exactly-once: a redelivery writes nothing);
//! - `offsets-in-db`: the row and the partition's next offset (`consumer_offsets`) in one
//!   transaction, a message behind the stored offset skipped; on assignment it seeks to the
//!   stored offsets. It never commits to Kafka (a plan reads its progress with
//!   `postgres.offsets`).
//! - `offset-then-db`: the offsets-in-db bug: the partition's next offset is stored in its own
//!   transaction first, the row in a second one (at-most-once: a crash between the two loses
//!   the message, by the consumer's own stored offset).
//!
//! `--on-poison dead-letter|retry-forever` decodes each payload as JSON first (without it, a
//! payload is never decoded): a message that does not decode is poison. `dead-letter` produces
//! it unchanged (key, `exactly-id` header) to `EXACTLY_DEAD_LETTER`, waits for the broker's
//! acknowledgement, then marks it done as the mode marks any message (commit, or store for the
//! periodic modes): the partition moves on. `retry-forever` retries the decode every 200 ms,
//! never giving up and never committing past it: the partition stalls behind it.
//!
//! `--sink http|file|stdout` picks where effects go: POST to `EXACTLY_EFFECT_URL` (default),
//! a line appended to `EXACTLY_EFFECT_FILE`, or a line `effect <payload>` on stdout.
//! `--also-sink http|file|stdout` sends each effect to a second place too, just before the
//! first and never with an idempotency key (a plan with two boundaries observes both).
//!
//! `--work-ms N` is the processing time between receiving a message and its effect;
//! `--commit-every-ms N` is the period of the background commits of the periodic modes;
//! `--session-timeout-ms N` sets the group session timeout; `--config key=value` passes any
//! other librdkafka setting (applied last: `--config bootstrap.servers=HOST:PORT` makes the
//! consumer connect to a broker address of its own, as a consumer with a hard-coded address
//! would); `--effect-timeout-ms N` is how long one HTTP effect attempt waits for the sink's
//! answer (30000); `--side-client` also opens a second client on the address the contract
//! hands it, which only reads metadata (as an admin or health-check client would);
//! `--start-at-zero` commits offset 0 of every partition before the first incarnation
//! subscribes (with `--config auto.offset.reset=latest`, the reset then applies only to a
//! fetch position the broker refuses, not to the group's first start).

#[path = "shared/db.rs"]
mod db;
#[path = "shared/effects.rs"]
mod effects;

use db::{Db, Written};
use std::sync::Mutex;

use effects::{env, Effects, Sink};

/// Name used in log lines.
const PROGRAM: &str = "kafka_consumer";

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    CommitBeforeEffect,
    CommitAfterEffect,
    Idempotent,
    AutoCommit,
    CommitPeriodic,
    CommitOnRevoke,
    Transactional,
    TransactionalWithEmail,
    ProduceThenCommit,
    DbThenCommit,
    CommitThenDb,
    DedupTable,
    OffsetsInDb,
    OffsetThenDb,
    IgnoreCommitErrors,
    CommitRetry,
}

impl Mode {
    /// The modes that produce their result to `EXACTLY_OUTPUT_TOPIC`.
    fn produces(self) -> bool {
        matches!(
            self,
            Mode::Transactional | Mode::TransactionalWithEmail | Mode::ProduceThenCommit
        )
    }

    /// The database modes: the effect is a row, not a call to the sink.
    fn writes_db(self) -> bool {
        match self {
            Mode::DbThenCommit
            | Mode::CommitThenDb
            | Mode::DedupTable
            | Mode::OffsetsInDb
            | Mode::OffsetThenDb => true,
            Mode::CommitBeforeEffect
            | Mode::CommitAfterEffect
            | Mode::Idempotent
            | Mode::AutoCommit
            | Mode::CommitPeriodic
            | Mode::CommitOnRevoke
            | Mode::Transactional
            | Mode::TransactionalWithEmail
            | Mode::ProduceThenCommit
            | Mode::IgnoreCommitErrors
            | Mode::CommitRetry => false,
        }
    }
}

/// What to do with a message whose payload does not decode (`--on-poison`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum OnPoison {
    /// Produce it to the dead-letter topic, then mark it done.
    DeadLetter,
    /// Retry decoding it until stopped, never moving past it.
    RetryForever,
}

struct Args {
    mode: Mode,
    /// `--on-poison`: decode payloads as JSON, and what to do with one that does not.
    on_poison: Option<OnPoison>,
    sink: Sink,
    /// A second place each effect goes, just before the first (`--also-sink`): a second
    /// boundary of the same loop.
    also_sink: Option<Sink>,
    work: Duration,
    /// How often `commit-periodic` and `commit-on-revoke` commit the finished work.
    commit_every: Duration,
    session_timeout_ms: u32,
    /// Extra librdkafka settings, `--config key=value`.
    config: Vec<(String, String)>,
    /// How long one HTTP effect attempt waits.
    effect_timeout: Duration,
    /// Open a metadata-only side client on the contract's bootstrap address.
    side_client: bool,
    /// Commit offset 0 of every partition before the first incarnation subscribes.
    start_at_zero: bool,
    /// The transactional modes' `transaction.timeout.ms`.
    txn_timeout_ms: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mode: Mode::CommitAfterEffect,
        on_poison: None,
        sink: Sink::Http,
        also_sink: None,
        work: Duration::ZERO,
        commit_every: Duration::from_secs(1),
        session_timeout_ms: 6000,
        config: Vec::new(),
        effect_timeout: effects::HTTP_TIMEOUT,
        side_client: false,
        start_at_zero: false,
        txn_timeout_ms: 10_000,
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
                    "commit-periodic" => Mode::CommitPeriodic,
                    "commit-on-revoke" => Mode::CommitOnRevoke,
                    "transactional" => Mode::Transactional,
                    "transactional-with-email" => Mode::TransactionalWithEmail,
                    "produce-then-commit" => Mode::ProduceThenCommit,
                    "db-then-commit" => Mode::DbThenCommit,
                    "commit-then-db" => Mode::CommitThenDb,
                    "dedup-table" => Mode::DedupTable,
                    "offsets-in-db" => Mode::OffsetsInDb,
                    "offset-then-db" => Mode::OffsetThenDb,
                    "ignore-commit-errors" => Mode::IgnoreCommitErrors,
                    "commit-retry" => Mode::CommitRetry,
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
            "--also-sink" => args.also_sink = Some(value()?.parse()?),
            "--work-ms" => {
                args.work =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("--work-ms: {e}"))?)
            }
            "--commit-every-ms" => {
                args.commit_every = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|e| format!("--commit-every-ms: {e}"))?,
                )
            }
            "--session-timeout-ms" => {
                args.session_timeout_ms = value()?
                    .parse()
                    .map_err(|e| format!("--session-timeout-ms: {e}"))?
            }
            "--effect-timeout-ms" => {
                args.effect_timeout = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|e| format!("--effect-timeout-ms: {e}"))?,
                )
            }
            "--side-client" => args.side_client = true,
            "--start-at-zero" => args.start_at_zero = true,
            "--txn-timeout-ms" => {
                args.txn_timeout_ms = value()?
                    .parse()
                    .map_err(|e| format!("--txn-timeout-ms: {e}"))?
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

/// Prints librdkafka's own log lines and errors on stderr (kept by exactly per incarnation),
/// and, in `commit-on-revoke`, commits the finished work before partitions are taken away.
struct Hooks {
    commit_on_revoke: bool,
    /// `offsets-in-db`: the database and (group, topic) whose stored offsets it seeks to.
    offsets: Option<(Arc<Mutex<Db>>, String, String)>,
}

impl ClientContext for Hooks {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!("kafka_consumer: librdkafka {level:?} {fac}: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("kafka_consumer: librdkafka error {error}: {reason}");
    }
}

impl ConsumerContext for Hooks {
    fn post_rebalance(&self, consumer: &BaseConsumer<Hooks>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            self.seek_to_stored(consumer, assigned);
        }
    }

    /// Runs inside `poll`, before the revoked partitions are given up: everything marked done
    /// so far (the stored offsets) is committed while this consumer still owns it.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Hooks>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let partitions: Vec<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
        if !self.commit_on_revoke {
            eprintln!("kafka_consumer: partitions {partitions:?} revoked");
            return;
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => eprintln!(
                "kafka_consumer: partitions {partitions:?} revoked; finished work committed"
            ),
            Err(e) if nothing_to_commit(&e) => {
                eprintln!("kafka_consumer: partitions {partitions:?} revoked; nothing to commit")
            }
            Err(e) => eprintln!("kafka_consumer: commit on revoke failed: {e}"),
        }
    }
}

impl Hooks {
    /// `offsets-in-db`: after an assignment, seek each assigned partition to the offset the
    /// database stored (the transaction's guard still skips anything behind it).
    fn seek_to_stored(&self, consumer: &BaseConsumer<Hooks>, assigned: &TopicPartitionList) {
        let Some((db, group, topic)) = &self.offsets else {
            return;
        };
        let stored = db
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stored_offsets(group, topic);
        let stored = match stored {
            Ok(s) => s,
            Err(e) => {
                eprintln!("kafka_consumer: cannot read the stored offsets: {e}");
                return;
            }
        };
        for e in assigned.elements() {
            if let Some((_, next)) = stored.iter().find(|(p, _)| *p == e.partition()) {
                let sought = consumer.seek(
                    topic,
                    e.partition(),
                    Offset::Offset(*next),
                    Duration::from_secs(2),
                );
                match sought {
                    Ok(()) => eprintln!(
                        "kafka_consumer: partition {} sought to stored offset {next}",
                        e.partition()
                    ),
                    Err(err) => eprintln!(
                        "kafka_consumer: seek of partition {} to {next} failed: {err}",
                        e.partition()
                    ),
                }
            }
        }
    }
}

/// librdkafka's answer to a commit with no new stored offset: not a failure.
fn nothing_to_commit(e: &KafkaError) -> bool {
    matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
}

/// The consumer's client settings shared by every mode.
fn consumer_config(args: &Args, auto: bool, periodic: bool) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", env(PROGRAM, "EXACTLY_KAFKA_BOOTSTRAP"))
        .set("group.id", env(PROGRAM, "EXACTLY_GROUP"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", if auto { "true" } else { "false" })
        .set("auto.commit.interval.ms", "100")
        .set(
            "enable.auto.offset.store",
            if periodic { "false" } else { "true" },
        )
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
    config
}

/// The message's ID: its `exactly-id` header, else its key.
fn id_of(msg: &rdkafka::message::BorrowedMessage<'_>) -> String {
    msg.headers()
        .and_then(|h| {
            h.iter()
                .find(|h| h.key == "exactly-id")
                .and_then(|h| h.value)
        })
        .or_else(|| msg.key())
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// The producing modes: consume, transform, produce to the output topic (module doc).
fn run_pipeline(args: &Args, stop: &AtomicBool) {
    let transactional = matches!(
        args.mode,
        Mode::Transactional | Mode::TransactionalWithEmail
    );
    let email = (args.mode == Mode::TransactionalWithEmail)
        .then(|| Effects::open(PROGRAM, Sink::Http, args.effect_timeout));
    let mut consumer_cfg = consumer_config(args, false, false);
    consumer_cfg.set("isolation.level", "read_committed");
    let consumer: BaseConsumer<Hooks> = consumer_cfg
        .create_with_context(Hooks {
            commit_on_revoke: false,
            offsets: None,
        })
        .expect("consumer config is valid");
    let topic = env(PROGRAM, "EXACTLY_TOPIC");
    let output = env(PROGRAM, "EXACTLY_OUTPUT_TOPIC");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut producer_cfg = ClientConfig::new();
    producer_cfg
        .set("bootstrap.servers", env(PROGRAM, "EXACTLY_KAFKA_BOOTSTRAP"))
        .set("enable.idempotence", "true")
        .set("log_level", "4");
    if transactional {
        let id = format!(
            "{}-{}",
            env(PROGRAM, "EXACTLY_GROUP"),
            env(PROGRAM, "EXACTLY_INSTANCE")
        );
        producer_cfg
            .set("transactional.id", id)
            .set("transaction.timeout.ms", args.txn_timeout_ms.to_string());
    }
    let producer: BaseProducer = producer_cfg.create().expect("producer config is valid");
    if transactional {
        if let Err(e) = producer.init_transactions(TXN_TIMEOUT) {
            eprintln!("kafka_consumer: init_transactions failed: {e}");
            std::process::exit(1);
        }
    }
    eprintln!("kafka_consumer: mode {:?}, output {output}", args.mode);
    while !stop.load(Ordering::Relaxed) {
        let msg = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => {
                eprintln!("kafka_consumer: poll error: {e}");
                continue;
            }
            Some(Ok(m)) => m,
        };
        std::thread::sleep(args.work);
        let step = Step {
            consumer: &consumer,
            producer: &producer,
            output: &output,
            email: email.as_ref(),
        };
        let done = if transactional {
            step.transaction(&msg)
        } else {
            step.produce_then_commit(&msg)
        };
        if let Err(e) = done {
            eprintln!("kafka_consumer: {e}; stopping (the next incarnation redoes it)");
            if transactional {
                let _ = producer.abort_transaction(TXN_TIMEOUT);
            }
            std::process::exit(1);
        }
    }
    eprintln!("kafka_consumer: stopping");
}

/// How long one transactional call may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(10);

/// One message's trip through a producing mode.
struct Step<'a> {
    consumer: &'a BaseConsumer<Hooks>,
    producer: &'a BaseProducer,
    output: &'a str,
    email: Option<&'a Effects>,
}

impl Step<'_> {
    /// The result record of `msg`: its payload, keyed and headed by its ID.
    fn send(&self, msg: &rdkafka::message::BorrowedMessage<'_>) -> Result<(), String> {
        let id = id_of(msg);
        let payload = msg.payload().unwrap_or_default();
        let headers = OwnedHeaders::new().insert(Header {
            key: "exactly-id",
            value: Some(id.as_bytes()),
        });
        let record = BaseRecord::to(self.output)
            .key(id.as_bytes())
            .payload(payload)
            .headers(headers);
        self.producer
            .send(record)
            .map_err(|(e, _)| format!("produce failed: {e}"))
    }

    /// Begin, produce, (email), send the offset, commit.
    fn transaction(&self, msg: &rdkafka::message::BorrowedMessage<'_>) -> Result<(), String> {
        self.producer
            .begin_transaction()
            .map_err(|e| format!("begin_transaction failed: {e}"))?;
        self.send(msg)?;
        if let Some(email) = self.email {
            let payload = String::from_utf8_lossy(msg.payload().unwrap_or_default());
            email.apply(PROGRAM, &payload, None);
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                msg.topic(),
                msg.partition(),
                Offset::Offset(msg.offset() + 1),
            )
            .map_err(|e| format!("offsets: {e}"))?;
        let group = self.consumer.group_metadata().ok_or("no group metadata")?;
        self.producer
            .send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)
            .map_err(|e| format!("send_offsets_to_transaction failed: {e}"))?;
        self.producer
            .commit_transaction(TXN_TIMEOUT)
            .map_err(|e| format!("commit_transaction failed: {e}"))
    }

    /// Produce, wait for the acknowledgement, then commit the offset.
    fn produce_then_commit(
        &self,
        msg: &rdkafka::message::BorrowedMessage<'_>,
    ) -> Result<(), String> {
        self.send(msg)?;
        self.producer
            .flush(TXN_TIMEOUT)
            .map_err(|e| format!("flush failed: {e}"))?;
        self.consumer
            .commit_message(msg, CommitMode::Sync)
            .map_err(|e| format!("commit failed: {e}"))
    }
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("kafka_consumer: {e}");
        std::process::exit(2)
    });
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())
        .expect("SIGTERM handler");
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone()).expect("SIGINT handler");

    if args.mode.produces() {
        return run_pipeline(&args, &stop);
    }
    let effects = Effects::open(PROGRAM, args.sink, args.effect_timeout);
    let also = args
        .also_sink
        .map(|sink| Effects::open(PROGRAM, sink, args.effect_timeout));
    let topic = env(PROGRAM, "EXACTLY_TOPIC");
    let auto = args.mode == Mode::AutoCommit;
    // The periodic modes mark a message done (store its offset) after its effect, and commit
    // what is stored; nothing is stored automatically when it is merely received.
    let periodic = matches!(args.mode, Mode::CommitPeriodic | Mode::CommitOnRevoke);
    let config = consumer_config(&args, auto, periodic);
    let db = args
        .mode
        .writes_db()
        .then(|| Arc::new(Mutex::new(Db::connect(PROGRAM))));
    let group = env(PROGRAM, "EXACTLY_GROUP");
    let hooks = Hooks {
        commit_on_revoke: args.mode == Mode::CommitOnRevoke,
        offsets: match (&db, args.mode) {
            (Some(db), Mode::OffsetsInDb | Mode::OffsetThenDb) => {
                Some((db.clone(), group.clone(), topic.clone()))
            }
            _ => None,
        },
    };
    let consumer: BaseConsumer<Hooks> = config
        .create_with_context(hooks)
        .expect("consumer config is valid");
    if args.start_at_zero && std::env::var("EXACTLY_INCARNATION").as_deref() == Ok("1") {
        commit_zero(&consumer, &topic);
    }
    consumer.subscribe(&[&topic]).expect("subscribe");
    eprintln!(
        "kafka_consumer: mode {:?}, work {:?}, instance {} incarnation {}",
        args.mode,
        args.work,
        std::env::var("EXACTLY_INSTANCE").unwrap_or_default(),
        std::env::var("EXACTLY_INCARNATION").unwrap_or_default()
    );

    if args.side_client {
        side_client(&topic, stop.clone());
    }

    let dead_letter = (args.on_poison == Some(OnPoison::DeadLetter)).then(DeadLetter::open);
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if periodic && last_commit.elapsed() >= args.commit_every {
            // In the background: the loop goes on working while the commit travels.
            match consumer.commit_consumer_state(CommitMode::Async) {
                Ok(()) => {}
                Err(e) if nothing_to_commit(&e) => {}
                Err(e) => eprintln!("kafka_consumer: periodic commit failed: {e}"),
            }
            last_commit = Instant::now();
        }
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

        if args.on_poison.is_some() && !decodes(&payload) {
            match &dead_letter {
                Some(dlq) => {
                    dlq.divert(&msg, &id);
                    mark_done(&consumer, &msg, args.mode);
                }
                None => retry_forever(&payload, &id, msg.partition(), msg.offset(), &stop),
            }
            continue;
        }
        if let Some(db) = &db {
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            write_row(
                args.mode,
                args.work,
                &mut db,
                &consumer,
                &msg,
                &group,
                (&id, &payload),
            );
            continue;
        }
        if args.mode == Mode::CommitBeforeEffect {
            commit(&consumer, &msg);
        }
        std::thread::sleep(args.work);
        if let Some(also) = &also {
            also.apply(PROGRAM, &payload, None);
        }
        effects.apply(
            PROGRAM,
            &payload,
            (args.mode == Mode::Idempotent).then_some(id.as_str()),
        );
        match args.mode {
            Mode::CommitAfterEffect | Mode::Idempotent | Mode::IgnoreCommitErrors => {
                commit(&consumer, &msg)
            }
            Mode::CommitRetry => commit_with_retries(&consumer, &msg),
            Mode::CommitBeforeEffect
            | Mode::AutoCommit
            | Mode::CommitPeriodic
            | Mode::CommitOnRevoke
            | Mode::Transactional
            | Mode::TransactionalWithEmail
            | Mode::ProduceThenCommit
            | Mode::DbThenCommit
            | Mode::CommitThenDb
            | Mode::DedupTable
            | Mode::OffsetsInDb
            | Mode::OffsetThenDb => {}
        }
        if periodic {
            // Done: the next periodic commit (or the revoke callback) covers it.
            if let Err(e) = consumer.store_offset_from_message(&msg) {
                eprintln!("kafka_consumer: cannot mark the message done: {e}");
            }
        }
    }
    eprintln!("kafka_consumer: stopping");
}

/// A second client on the contract's bootstrap address that reads the topic's metadata every
/// 500 ms until `stop`, while the main client may be configured elsewhere.
fn side_client(topic: &str, stop: Arc<AtomicBool>) {
    let side: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env(PROGRAM, "EXACTLY_KAFKA_BOOTSTRAP"))
        .set("log_level", "4")
        .create()
        .expect("side client config is valid");
    let topic = topic.to_owned();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = side.fetch_metadata(Some(&topic), Duration::from_secs(2)) {
                eprintln!("kafka_consumer: side client: {e}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}

/// A database mode's handling of one message; a failed write ends the process (exit 1)
/// without committing, as a consumer that cannot reach its database would.
fn write_row(
    mode: Mode,
    work: Duration,
    db: &mut Db,
    consumer: &BaseConsumer<Hooks>,
    msg: &rdkafka::message::BorrowedMessage<'_>,
    group: &str,
    (id, payload): (&str, &str),
) {
    let fail = |e: tokio_postgres::Error| -> ! {
        eprintln!("kafka_consumer: database write failed: {e}");
        std::process::exit(1)
    };
    // `work` is the rest of the processing between the two steps: the window a kill lands in
    match mode {
        Mode::DbThenCommit => {
            db.insert(id, payload).unwrap_or_else(|e| fail(e));
            std::thread::sleep(work);
            commit(consumer, msg);
        }
        Mode::CommitThenDb => {
            commit(consumer, msg);
            std::thread::sleep(work);
            db.insert(id, payload).unwrap_or_else(|e| fail(e));
        }
        Mode::DedupTable => {
            if db.insert_once(id, payload).unwrap_or_else(|e| fail(e)) == Written::Skipped {
                eprintln!("kafka_consumer: {id} already in processed: skipped");
            }
            std::thread::sleep(work);
            commit(consumer, msg);
        }
        Mode::OffsetsInDb => {
            let at = (group, msg.topic(), msg.partition(), msg.offset());
            if db
                .insert_with_offset(at, id, payload)
                .unwrap_or_else(|e| fail(e))
                == Written::Skipped
            {
                eprintln!(
                    "kafka_consumer: offset {} is behind the stored offset: skipped",
                    msg.offset()
                );
            }
            // No Kafka commit: it resumes from the database's offset, nothing else.
            std::thread::sleep(work);
        }
        Mode::OffsetThenDb => {
            let at = (group, msg.topic(), msg.partition(), msg.offset());
            if db.store_offset(at).unwrap_or_else(|e| fail(e)) == Written::Skipped {
                eprintln!(
                    "kafka_consumer: offset {} is behind the stored offset: skipped",
                    msg.offset()
                );
                return;
            }
            std::thread::sleep(work);
            db.insert(id, payload).unwrap_or_else(|e| fail(e));
        }
        Mode::CommitBeforeEffect
        | Mode::CommitAfterEffect
        | Mode::Idempotent
        | Mode::AutoCommit
        | Mode::CommitPeriodic
        | Mode::CommitOnRevoke
        | Mode::Transactional
        | Mode::TransactionalWithEmail
        | Mode::ProduceThenCommit
        | Mode::IgnoreCommitErrors
        | Mode::CommitRetry => unreachable!("not a database mode"),
    }
}

/// True when the payload decodes as JSON (what this consumer's work reads).
fn decodes(payload: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(payload).is_ok()
}

/// The dead-letter producer (`--on-poison dead-letter`): poison goes to `EXACTLY_DEAD_LETTER`.
struct DeadLetter {
    producer: BaseProducer,
    topic: String,
}

impl DeadLetter {
    fn open() -> DeadLetter {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", env(PROGRAM, "EXACTLY_KAFKA_BOOTSTRAP"))
            .set("enable.idempotence", "true")
            .set("log_level", "4")
            .create()
            .expect("producer config is valid");
        DeadLetter {
            producer,
            topic: env(PROGRAM, "EXACTLY_DEAD_LETTER"),
        }
    }

    /// Produces the poison message unchanged to the dead-letter topic and waits for the
    /// broker's acknowledgement; a failure ends the process (the next incarnation redoes it).
    fn divert(&self, msg: &rdkafka::message::BorrowedMessage<'_>, id: &str) {
        let headers = OwnedHeaders::new().insert(Header {
            key: "exactly-id",
            value: Some(id.as_bytes()),
        });
        let record = BaseRecord::to(&self.topic)
            .key(msg.key().unwrap_or(id.as_bytes()))
            .payload(msg.payload().unwrap_or_default())
            .headers(headers);
        let sent = self
            .producer
            .send(record)
            .map_err(|(e, _)| e.to_string())
            .and_then(|()| self.producer.flush(TXN_TIMEOUT).map_err(|e| e.to_string()));
        if let Err(e) = sent {
            eprintln!("kafka_consumer: cannot dead-letter {id}: {e}; stopping");
            std::process::exit(1);
        }
        eprintln!(
            "kafka_consumer: poison {id} (partition {} offset {}) dead-lettered to {}",
            msg.partition(),
            msg.offset(),
            self.topic
        );
    }
}

/// Marks a diverted message done the way `mode` marks any message.
fn mark_done(
    consumer: &BaseConsumer<Hooks>,
    msg: &rdkafka::message::BorrowedMessage<'_>,
    mode: Mode,
) {
    match mode {
        Mode::CommitPeriodic | Mode::CommitOnRevoke => {
            if let Err(e) = consumer.store_offset_from_message(msg) {
                eprintln!("kafka_consumer: cannot mark the message done: {e}");
            }
        }
        // the offsets-in-db modes resume from the database only: nothing to mark in Kafka
        Mode::AutoCommit | Mode::OffsetsInDb | Mode::OffsetThenDb => {}
        Mode::DbThenCommit | Mode::CommitThenDb | Mode::DedupTable => commit(consumer, msg),
        Mode::CommitBeforeEffect
        | Mode::CommitAfterEffect
        | Mode::Idempotent
        | Mode::Transactional
        | Mode::TransactionalWithEmail
        | Mode::ProduceThenCommit
        | Mode::IgnoreCommitErrors => commit(consumer, msg),
        Mode::CommitRetry => commit_with_retries(consumer, msg),
    }
}

/// `--on-poison retry-forever`: retries decoding the payload every 200 ms until stopped (it
/// never will decode): the partition never moves past it.
fn retry_forever(payload: &str, id: &str, partition: i32, offset: i64, stop: &AtomicBool) {
    eprintln!(
        "kafka_consumer: cannot decode {id} (partition {partition} offset {offset}); retrying until it decodes"
    );
    while !stop.load(Ordering::Relaxed) && !decodes(payload) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn commit(consumer: &BaseConsumer<Hooks>, msg: &rdkafka::message::BorrowedMessage<'_>) {
    if let Err(e) = consumer.commit_message(msg, CommitMode::Sync) {
        eprintln!("kafka_consumer: commit failed: {e}");
    }
}

/// `--start-at-zero`: commits offset 0 of every partition of `topic` (outside the group's
/// generations, as a fresh group allows), so that a consumer with `auto.offset.reset=latest`
/// starts from the beginning the first time and the reset policy applies only to a fetch
/// position the broker refuses.
fn commit_zero(consumer: &BaseConsumer<Hooks>, topic: &str) {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(0))
                .expect("partition offset");
        }
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .expect("commit offset 0");
    eprintln!(
        "kafka_consumer: committed offset 0 of {} partition(s)",
        tpl.count()
    );
}

/// `commit-retry`: commits `msg`, retrying a failed commit up to 5 more times, 200 ms apart.
fn commit_with_retries(
    consumer: &BaseConsumer<Hooks>,
    msg: &rdkafka::message::BorrowedMessage<'_>,
) {
    const RETRIES: u32 = 5;
    for attempt in 0..=RETRIES {
        match consumer.commit_message(msg, CommitMode::Sync) {
            Ok(()) => {
                if attempt > 0 {
                    eprintln!("kafka_consumer: commit succeeded on retry {attempt}");
                }
                return;
            }
            Err(e) if attempt < RETRIES => {
                eprintln!("kafka_consumer: commit failed ({e}); retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => eprintln!("kafka_consumer: commit failed after {RETRIES} retries: {e}"),
        }
    }
}
