//! The YAML plan: what to produce, which consumer to run, where its effects land, which
//! faults to inject and what semantics the team expects.
//!
//! Every struct here is flat (no tagged enums) on purpose: serde buffers tagged enums before
//! deserializing them, which loses the line and column of an error. Flat structs keep them, and
//! rules that span several fields are checked in [`validate`] (the fault rules in
//! [`fault_rules`]), every problem kept and located with positions from [`span`].
//!
//! The flat structs are only the written form. Loading turns what later stages act on into
//! typed values, once, and keeps them in [`Plan::loaded`]: each fault as one [`Fault`] (a
//! [`FaultAction`] and its [`Trigger`]) and the effect ID rules as [`Extractor`]s. Nothing
//! downstream reads the written `faults`, `effects.id` or `effects.idempotency_key` again.

#[cfg(test)]
mod boundary_tests;
mod effect_id;
mod fault;
mod fault_rules;
mod load;
mod span;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::timeline::SinkKind;

pub use effect_id::Extractor;
pub use fault::{
    AmqpFault, CommitErrorForm, Fault, FaultAction, KafkaError, Moment, ProtocolReply, ScaleStep,
    Trigger, DEFAULT_GRACE,
};
pub use load::{load_plan, parse_plan, PlanError, PlanProblem};
pub use span::Position;
pub use validate::{LONGEST, MOST_INSTANCES, MOST_PARTITIONS};
pub use values::{Count, Rate, Target};

/// A whole plan, as written by the user (defaults filled in by serde).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Short name of the scenario; used in run ids and report titles.
    pub name: String,
    /// One line saying what the plan shows.
    #[serde(default)]
    pub description: Option<String>,
    /// The broker to produce to and whose progress to read.
    pub broker: BrokerSpec,
    /// The messages to produce.
    pub workload: Workload,
    /// The team's consumer and how to supervise it.
    pub consumer: ConsumerSpec,
    /// Where the consumer's side effects are observed: the run's one boundary. Write either
    /// `effects` or `boundaries`.
    #[serde(default)]
    pub effects: Option<EffectSpec>,
    /// Several places the consumer's work lands, each judged on its own against its own
    /// promise (design §13). Write either `effects` or `boundaries`.
    #[serde(default)]
    pub boundaries: Vec<BoundarySpec>,
    /// Faults to inject, each with its trigger.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// The semantics the team claims; the run passes or fails against it. Required with
    /// `effects`; with `boundaries`, the promise of each boundary that names none.
    #[serde(default)]
    pub expect: Option<Semantics>,
    /// When the run ends.
    #[serde(default)]
    pub limits: Limits,
    /// Seed for every random choice (random triggers); `--seed` overrides it.
    #[serde(default)]
    pub seed: Option<u64>,
    /// What loading made of the rules above (not part of the YAML): filled by [`load_plan`]
    /// and [`parse_plan`] once the plan is valid.
    #[serde(skip)]
    pub loaded: Loaded,
}

/// The parts of a plan that later stages act on, checked and typed once when it is loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// One per entry of `faults`, in plan order (the index is the fault's number in events).
    pub faults: Vec<Fault>,
    /// The boundaries, in plan order: one per entry of `boundaries`, or the one of `effects`.
    pub boundaries: Vec<Boundary>,
}

/// What a plan that was never loaded holds: no faults and one `http` boundary with the default
/// ID rule (`json:/id`), promising exactly-once.
impl Default for Loaded {
    fn default() -> Self {
        Loaded {
            faults: Vec::new(),
            boundaries: vec![Boundary {
                name: DEFAULT_BOUNDARY.into(),
                declared: false,
                sink: SinkKind::Http,
                id_rule: default_effect_id(),
                id: Extractor::JsonPointer("/id".into()),
                idempotency_key: None,
                expect: Semantics::ExactlyOnce,
                output: None,
                postgres: None,
            }],
        }
    }
}

/// The name of the one boundary of a plan written with `effects`.
pub const DEFAULT_BOUNDARY: &str = "effects";

/// One boundary, typed: where effects are observed, how they name their message, and what the
/// team promises there.
#[derive(Debug, Clone)]
pub struct Boundary {
    /// Its name (`effects` for a plan written with `effects`).
    pub name: String,
    /// True when the plan declared it under `boundaries` (its events then carry its name);
    /// false for the one boundary of `effects`, whose events carry none.
    pub declared: bool,
    /// The sink that observes it.
    pub sink: SinkKind,
    /// The ID rule as written (reports name it).
    pub id_rule: String,
    /// The ID rule, parsed.
    pub id: Extractor,
    /// The idempotency-key rule, parsed.
    pub idempotency_key: Option<Extractor>,
    /// The promise at this boundary.
    pub expect: Semantics,
    /// `kafka-topic`: the output topic as written (`{run}` not yet replaced), its isolation
    /// and partitions.
    pub output: Option<OutputTopicSpec>,
    /// `postgres`: the database and table the consumer writes.
    pub postgres: Option<PostgresSpec>,
}

/// A `kafka-topic` boundary's output topic, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTopicSpec {
    /// The topic, `{run}` not yet replaced.
    pub topic: String,
    /// Which records are effects.
    pub isolation: TopicIsolation,
    /// Partitions.
    pub partitions: u64,
}

impl Boundary {
    /// The name its events carry: `None` for the one boundary of an `effects` plan.
    pub fn event_name(&self) -> Option<String> {
        self.declared.then(|| self.name.clone())
    }
}

/// Which kind of broker a plan targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// Apache Kafka (or the embedded librdkafka mock cluster when `bootstrap` is absent).
    Kafka,
    /// RabbitMQ over AMQP 0-9-1.
    Amqp,
}

/// Broker settings; which fields apply depends on `kind` (checked by validation).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerSpec {
    /// `kafka` or `amqp`.
    pub kind: BrokerKind,
    /// Kafka bootstrap servers. Absent: run on the embedded mock cluster (a demo, not evidence).
    #[serde(default)]
    pub bootstrap: Option<String>,
    /// Kafka topic; `{run}` is replaced by the run id. (For `amqp`, see `queue`.)
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Partitions of the fresh topic.
    #[serde(default = "default_partitions")]
    pub partitions: Count,
    /// Replication factor of the fresh topic (default 1; a multi-broker cluster may take 3).
    #[serde(default)]
    pub replication: Option<Count>,
    /// Consumer group of the consumer under test; `{run}` is replaced by the run id.
    #[serde(default = "default_group")]
    pub group: String,
    /// Create the topic/queue fresh (default). `false`: it must exist already.
    #[serde(default = "yes")]
    pub create: bool,
    /// Extra librdkafka settings for the harness's own clients (SASL, TLS...).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// AMQP URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f.
    #[serde(default)]
    pub url: Option<String>,
    /// AMQP queue; `{run}` is replaced by the run id (default `exactly-{run}`).
    #[serde(default)]
    pub queue: Option<String>,
    /// AMQP exchange to publish to (the queue is bound to it); default: the queue directly.
    #[serde(default)]
    pub exchange: Option<String>,
    /// AMQP routing key for `exchange` (default: the queue name).
    #[serde(default)]
    pub routing_key: Option<String>,
    /// AMQP prefetch handed to the consumer as `EXACTLY_PREFETCH`.
    #[serde(default)]
    pub prefetch: Option<Count>,
    /// Where the consumer diverts messages it cannot process (a dead-letter destination the
    /// harness reads after the run): Kafka, a topic created fresh (`{run}` replaced), handed
    /// to the consumer as `EXACTLY_DEAD_LETTER` / `{dead_letter}`; AMQP, a queue declared
    /// fresh, which the run's queue dead-letters to (`x-dead-letter-exchange` the default
    /// exchange, `x-dead-letter-routing-key` this queue), so `basic.nack(requeue=false)` and
    /// `basic.reject(requeue=false)` land there. IDs read there are judged `diverted`.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// How long to keep trying to reach the broker before giving up (exit 4).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
}

/// The messages the harness produces.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// How many messages (each with a unique ID `{run}-{seq}`).
    pub messages: Count,
    /// Produce rate, `N/s`, or `unlimited`.
    #[serde(default)]
    pub rate: Rate,
    /// `false`: produce everything before the consumer starts; `true`: produce while it consumes.
    #[serde(default)]
    pub during: bool,
    /// Payload template; `{id}`, `{seq}`, `{key}` and `{run}` are replaced.
    #[serde(default = "default_payload")]
    pub payload: String,
    /// Spread the messages round-robin over this many keys, each with its own sequence, so
    /// effects applied out of order for one key are reported (default: every message is its
    /// own key, and order is not checked).
    #[serde(default)]
    pub keys: Option<Count>,
    /// Poison messages: the chosen messages get `payload` instead of the template (made
    /// undecodable for the consumer) and keep their ID in key and `exactly-id` header, so they
    /// are still judged.
    #[serde(default)]
    pub poison: Option<PoisonSpec>,
}

/// `workload.poison`: which messages are poison (exactly one of `nth`, `every`) and their body.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoisonSpec {
    /// The one poison message, by its position in the workload (1 = the first).
    #[serde(default)]
    pub nth: Option<Count>,
    /// Every N-th message is poison (N, 2N, ...).
    #[serde(default)]
    pub every: Option<Count>,
    /// The poison body; `{id}`, `{seq}`, `{key}` and `{run}` are replaced (default: text no
    /// JSON decoder reads).
    #[serde(default = "default_poison_payload")]
    pub payload: String,
}

impl PoisonSpec {
    /// True when the `seq`-th message (from 1) is poison.
    pub fn is_poison(&self, seq: u64) -> bool {
        match (self.nth, self.every) {
            (Some(n), _) => seq == n.get(),
            (None, Some(e)) => seq.is_multiple_of(e.get()),
            (None, None) => false,
        }
    }
}

/// The consumer under test and its supervision.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    /// Program and arguments (no shell); placeholders such as `{bootstrap}` are replaced.
    pub command: Vec<String>,
    /// How many instances run side by side.
    #[serde(default = "one")]
    pub instances: Count,
    /// What the supervisor does when an incarnation dies.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Extra environment variables (placeholders are replaced).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Route the consumer through exactly's protocol-aware proxy (default: true).
    #[serde(default)]
    pub via_proxy: Option<bool>,
    /// Working directory of the consumer (default: where `exactly` was started).
    #[serde(default)]
    pub cwd: Option<String>,
    /// What a consumer connection straight to the broker, past the proxy, does to the run:
    /// `warn` (default: reported, and the faults it escapes are not counted as exercised) or
    /// `fatal` (the run ends at once, exit 4, naming the connection).
    #[serde(default)]
    pub bypass: BypassPolicy,
}

/// `consumer.bypass`: what a connection that bypasses the proxy does to the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BypassPolicy {
    /// Reported; network faults and proxy-counted triggers that fired while it was live are
    /// not counted as exercised.
    #[default]
    Warn,
    /// The run ends at once with exit 4, naming the connection.
    Fatal,
}

/// Supervisor behaviour when an incarnation exits or is killed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RestartPolicy {
    /// `never`: a dead instance stays dead.
    Never(NeverKeyword),
    /// `{ after: 500ms }`: start a new incarnation after this delay.
    After(RestartAfter),
}

/// The literal `never`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NeverKeyword {
    /// Do not restart.
    Never,
}

/// `{ after: D, max: N }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartAfter {
    /// Delay before the next incarnation starts.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub after: Duration,
    /// Give up restarting an instance after this many incarnations (crash-loop guard).
    #[serde(default = "default_max_incarnations")]
    pub max: Count,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::After(RestartAfter {
            after: Duration::from_millis(500),
            max: default_max_incarnations(),
        })
    }
}

impl RestartPolicy {
    /// The restart delay, or `None` for `never`.
    pub fn delay(&self) -> Option<Duration> {
        match self {
            RestartPolicy::Never(_) => None,
            RestartPolicy::After(a) => Some(a.after),
        }
    }

    /// Most incarnations one instance may have.
    pub fn max_incarnations(&self) -> u32 {
        match self {
            RestartPolicy::Never(_) => 1,
            // More than u32::MAX incarnations is "never give up": saturate, never wrap to 0.
            RestartPolicy::After(a) => u32::try_from(a.max.get()).unwrap_or(u32::MAX),
        }
    }
}

/// Which records of an output topic are effects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TopicIsolation {
    /// Committed transactions and non-transactional records (default); the records of aborted
    /// transactions are counted apart, never effects.
    #[default]
    ReadCommitted,
    /// Every record, as a non-transactional reader downstream sees them.
    ReadUncommitted,
}

/// One boundary of `boundaries`: a name, a sink, the ID rule and its own promise.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BoundarySpec {
    /// Its name, unique in the plan (letters, digits, `-` and `_`): it heads its row of the
    /// report and names its variables (`EXACTLY_EFFECT_URL_<NAME>`, `{effect_url:NAME}`).
    pub name: String,
    /// `http`, `file`, `stdout`, `kafka-topic` or `postgres`.
    pub sink: SinkKind,
    /// How to find the message ID in an effect (as `effects.id`).
    #[serde(default = "default_effect_id")]
    pub id: String,
    /// Optional idempotency key (as `effects.idempotency_key`).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The promise at this boundary (default: the plan's `expect`).
    #[serde(default)]
    pub expect: Option<Semantics>,
    /// `kafka-topic`: the output topic, created fresh; `{run}` is replaced (default
    /// `{name}-{run}`). The consumer is told it as `{output_topic}` / `EXACTLY_OUTPUT_TOPIC`.
    #[serde(default)]
    pub topic: Option<String>,
    /// `kafka-topic`: which records are effects (default `read_committed`).
    #[serde(default)]
    pub isolation: Option<TopicIsolation>,
    /// `kafka-topic`: partitions of the output topic (default: `broker.partitions`).
    #[serde(default)]
    pub partitions: Option<Count>,
    /// `postgres`: the database and table the consumer writes.
    #[serde(default)]
    pub postgres: Option<PostgresSpec>,
}

/// Where a `postgres` sink looks: the database and the table the consumer writes. Each
/// committed row change is read as a JSON object of its columns, so `effects.id` names a
/// column (`json:/message_id`) or a path into a json/jsonb column (`json:/payload/id`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSpec {
    /// Connection URL, `postgres://user:password@host:port/database`; the user needs the
    /// REPLICATION attribute and must own `table` (reports show it with the password hidden).
    pub url: String,
    /// The table the consumer writes (`name` or `schema.name`); it must exist when the run
    /// starts (see `setup`).
    pub table: String,
    /// Optional SQL run once before the run starts watching (e.g. `CREATE TABLE IF NOT
    /// EXISTS ...`), on the same connection.
    #[serde(default)]
    pub setup: Option<String>,
    /// Optional: more columns of each row to show beside its ID in the report.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Optional, Kafka only: a query giving the offsets the consumer stores with its data,
    /// one row per partition, `(partition, next offset)`; `{group}` and `{topic}` are
    /// replaced by the run's (as SQL string literals). Read once the consumers stopped, they
    /// count work done instead of the group's committed offsets, which a consumer that keeps
    /// its offsets in the database does not resume from.
    #[serde(default)]
    pub offsets: Option<String>,
}

/// Where effects are observed and how an effect names its message.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EffectSpec {
    /// `http`, `file`, `stdout`, `kafka-topic` or `postgres`.
    pub sink: SinkKind,
    /// How to find the message ID in an effect: `json:/pointer`, `regex:(...)`, `header:Name`
    /// or `body`.
    #[serde(default = "default_effect_id")]
    pub id: String,
    /// Optional: where the idempotency key is; the sink then behaves like an idempotent
    /// provider (a repeated key is replayed, not applied again).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// For `sink: kafka-topic`: the output topic, created fresh; `{run}` is replaced (default
    /// `effects-{run}`), as a boundary's `topic`.
    #[serde(default)]
    pub topic: Option<String>,
    /// For `sink: kafka-topic`: which records are effects (default `read_committed`).
    #[serde(default)]
    pub isolation: Option<TopicIsolation>,
    /// For `sink: kafka-topic`: partitions of the output topic (default: `broker.partitions`).
    #[serde(default)]
    pub partitions: Option<Count>,
    /// For `sink: postgres`: the database and table the consumer writes.
    #[serde(default)]
    pub postgres: Option<PostgresSpec>,
}

/// One fault: exactly one action field, its parameters and a trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// SIGKILL the process group of the target (`consumer` or `consumer[i]`).
    #[serde(default)]
    pub kill: Option<Target>,
    /// SIGTERM the target, then SIGKILL after `grace`.
    #[serde(default)]
    pub terminate: Option<Target>,
    /// SIGSTOP the target for `for`, then SIGCONT.
    #[serde(default)]
    pub pause: Option<Target>,
    /// Network blackhole through the proxy for `for`: nothing forwarded either way, sockets
    /// stay open.
    #[serde(default)]
    pub partition: Option<Target>,
    /// Delay every frame of `target`'s broker connections by this much, for `for`.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub latency: Option<Duration>,
    /// Close the target's broker connections with a TCP reset.
    #[serde(default)]
    pub sever: Option<Target>,
    /// A protocol fault the AMQP proxy injects toward the consumer (`redeliver`: re-send the
    /// next delivery it forwards, with `redelivered=true` and a tag of its own; `cancel`: a
    /// server-sent `basic.cancel`; `double-ack`: the channel closed with 406 PRECONDITION_FAILED
    /// as RabbitMQ answers a second ack of a tag; `blocked`: `connection.blocked` for `for:`,
    /// the connection's publishes held meanwhile). RabbitMQ only.
    #[serde(default)]
    pub amqp: Option<AmqpFault>,
    /// Who `latency`, `commit_error`, `fetch_error`, `heartbeat_error` and `amqp` apply to
    /// (default: every instance).
    #[serde(default)]
    pub target: Option<Target>,
    /// `group`: a transient member (the harness's own consumer) joins the consumer's group,
    /// holds its share of partitions for `for` without consuming or committing, then leaves:
    /// two rebalances (Kafka).
    #[serde(default)]
    pub rebalance: Option<String>,
    /// `+1`: start one more instance; `-1`: stop the highest-numbered live instance
    /// gracefully (SIGTERM, SIGKILL after `grace`) and do not restart it.
    #[serde(default)]
    pub scale: Option<i32>,
    /// Kafka: the target's next OffsetCommit is answered with this error code, by name
    /// (`REBALANCE_IN_PROGRESS`, `COORDINATOR_NOT_AVAILABLE`, `REQUEST_TIMED_OUT`...); `form`
    /// says whether the broker stores it.
    #[serde(default)]
    pub commit_error: Option<String>,
    /// With `commit_error`: `dropped` (the broker never sees the offsets) or `ambiguous` (the
    /// broker stores them; the consumer is told the commit failed).
    #[serde(default)]
    pub form: Option<String>,
    /// Kafka: the target's next Fetch response for the topic under test carries this error
    /// code on its partitions, with no records (`OFFSET_OUT_OF_RANGE`,
    /// `NOT_LEADER_OR_FOLLOWER`...).
    #[serde(default)]
    pub fetch_error: Option<String>,
    /// Kafka: the target's next Fetch response for the topic under test carries its records
    /// twice (`fetch_twice: consumer` or `consumer[i]`).
    #[serde(default)]
    pub fetch_twice: Option<Target>,
    /// Kafka: the target's next group heartbeat is answered with this error code, by name
    /// (`UNKNOWN_MEMBER_ID` for the classic protocol, `FENCED_MEMBER_EPOCH` for KIP-848).
    #[serde(default)]
    pub heartbeat_error: Option<String>,
    /// Duration of a pause, partition, latency or rebalance.
    #[serde(default, rename = "for", with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub for_: Option<Duration>,
    /// For `terminate` and `scale: -1`: how long to wait after SIGTERM before SIGKILL.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub grace: Option<Duration>,
    /// When the fault fires.
    pub when: When,
}

/// A trigger: exactly one of `at`, `after`/`before`/`during` + `nth`, `every` + `times`,
/// `random` + `within`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Fire once this long after the consumer first started.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub at: Option<Duration>,
    /// Fire right after the `nth` event of this kind (`on:` is the same).
    #[serde(default, alias = "on")]
    pub after: Option<EventKind>,
    /// Hold the `nth` event of this kind, fire, and drop it if the consumer died (proxy events).
    #[serde(default)]
    pub before: Option<EventKind>,
    /// Fire while the `nth` effect is held unanswered by the sink (http sink only).
    #[serde(default)]
    pub during: Option<EventKind>,
    /// Which occurrence of the event (1 = the first).
    #[serde(default)]
    pub nth: Option<Count>,
    /// Fire periodically, first after one period.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub every: Option<Duration>,
    /// With `every`: how many times.
    #[serde(default)]
    pub times: Option<Count>,
    /// Fire this many times at seeded random moments within `within`.
    #[serde(default)]
    pub random: Option<Count>,
    /// With `random`: the window, from the consumer's first start.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub within: Option<Duration>,
}

/// Timeline events a trigger can count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A side effect observed by the sink.
    Effect,
    /// A Kafka OffsetCommit (seen by the proxy).
    Commit,
    /// An AMQP basic.ack/nack/reject (seen by the proxy).
    Ack,
    /// A message handed to the consumer (seen by the proxy).
    Deliver,
    /// A group rebalance (seen by the proxy).
    Rebalance,
    /// A message acknowledged by the broker to the workload producer.
    Produced,
    /// A Kafka transaction committed: `after:` its EndTxn accepted by the broker, seen by the
    /// proxy before the client hears of it; `before:` its EndTxn (commit) request, held by the
    /// proxy before it reaches the broker.
    #[serde(rename = "end_txn")]
    EndTxn,
    /// A consumer's own Produce (to its output topic) acknowledged by the broker, seen by the
    /// proxy before the client hears of it (`after:` only).
    Produce,
}

impl EventKind {
    /// The plan's word for the event (`effect`, `commit`...), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Effect => "effect",
            EventKind::Commit => "commit",
            EventKind::Ack => "ack",
            EventKind::Deliver => "deliver",
            EventKind::Rebalance => "rebalance",
            EventKind::Produced => "produced",
            EventKind::EndTxn => "end_txn",
            EventKind::Produce => "produce",
        }
    }

    /// True for events only the protocol-aware proxy sees (the trigger needs the proxy).
    pub fn seen_by_proxy(self) -> bool {
        match self {
            EventKind::Commit
            | EventKind::Ack
            | EventKind::Deliver
            | EventKind::Rebalance
            | EventKind::EndTxn
            | EventKind::Produce => true,
            EventKind::Effect | EventKind::Produced => false,
        }
    }
}

/// Delivery semantics a consumer can claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Semantics {
    /// Fails on any duplicate.
    AtMostOnce,
    /// Fails on any loss.
    AtLeastOnce,
    /// Fails on any loss or duplicate.
    ExactlyOnce,
}

impl Plan {
    /// The boundaries, typed at load (one for a plan written with `effects`).
    pub fn boundaries(&self) -> &[Boundary] {
        &self.loaded.boundaries
    }

    /// True when the consumer talks to the broker through exactly's proxy.
    pub fn via_proxy(&self) -> bool {
        self.consumer.via_proxy.unwrap_or(true)
    }

    /// Most instances a run can have: `instances` plus one for every time a `scale: +1` fault
    /// can fire. The supervisor's roster and the proxy's listeners are sized for it up front,
    /// so a scaled-up instance is attributed like the first ones.
    pub fn instance_capacity(&self) -> u32 {
        // Saturating: loading bounds the sum (`MOST_INSTANCES`); a plan built in code that
        // skipped loading still gets a number, never an overflow.
        let reach = self
            .loaded
            .faults
            .iter()
            .fold(self.consumer.instances.get(), |n, f| {
                n.saturating_add(
                    u64::from(f.action.instances_added()).saturating_mul(f.when.firings()),
                )
            });
        u32::try_from(reach).unwrap_or(u32::MAX)
    }
}

impl BrokerSpec {
    /// The queue name (AMQP), `{run}` not yet replaced.
    pub fn queue_name(&self) -> &str {
        self.queue.as_deref().unwrap_or("exactly-{run}")
    }
}

impl Semantics {
    /// The plan spelling (`at-least-once`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Semantics::AtMostOnce => "at-most-once",
            Semantics::AtLeastOnce => "at-least-once",
            Semantics::ExactlyOnce => "exactly-once",
        }
    }
}

impl std::str::FromStr for Semantics {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "at-most-once" => Ok(Semantics::AtMostOnce),
            "at-least-once" => Ok(Semantics::AtLeastOnce),
            "exactly-once" => Ok(Semantics::ExactlyOnce),
            _ => Err(format!(
                "unknown semantics `{s}`: write at-most-once, at-least-once or exactly-once"
            )),
        }
    }
}

/// When the run ends.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Quiet time after the last fault (and once all work is done) before the run ends.
    #[serde(default = "default_settle", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub settle: Duration,
    /// Hard end of the run, from its start.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            settle: default_settle(),
            deadline: default_deadline(),
        }
    }
}

fn default_topic() -> String {
    "exactly-{run}".into()
}
fn default_group() -> String {
    "exactly-{run}".into()
}
fn default_partitions() -> Count {
    Count::new(3)
}
fn default_payload() -> String {
    r#"{"id":"{id}"}"#.into()
}
fn default_poison_payload() -> String {
    "poison {id}: not a message this consumer can decode".into()
}
fn default_effect_id() -> String {
    "json:/id".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_settle() -> Duration {
    Duration::from_secs(3)
}
fn default_deadline() -> Duration {
    Duration::from_secs(120)
}
fn default_max_incarnations() -> Count {
    Count::new(100)
}
fn one() -> Count {
    Count::new(1)
}
fn yes() -> bool {
    true
}

/// The plan's JSON Schema, for editors.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Plan)).expect("a schema always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kind_words_are_what_serde_reads_and_writes() {
        use EventKind::*;
        for kind in [
            Effect, Commit, Ack, Deliver, Rebalance, Produced, EndTxn, Produce,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
