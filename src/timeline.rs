//! The one event timeline of a run: typed events, stamped with a monotonic microsecond clock
//! since the run started, written to `events.jsonl` as they happen and handed to subscribers
//! (the nemesis, the progress display).
//!
//! Invariants: sequence numbers, timestamps and file order agree (stamping, queueing for the
//! writer and publishing happen under one lock); the writer thread writes whole lines in
//! batches, so a harness killed at any moment leaves a file whose every complete line parses,
//! missing at most the batch being written. A write that fails stops the writer and is kept
//! ([`Timeline::write_failure`]): the run watches for it and ends, since evidence with a hole
//! in it must not be judged.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

mod acked;
mod fast;
mod ids;
mod ranges;
mod read;
mod recorded;
mod sink_kind;

pub use acked::AckedOffsets;
pub use ids::{IdHasher, MessageIds, MessageNo, Numbering, SharedIds};
pub use ranges::{OffsetRange, UnresolvedOffsets, DELIVERY_RANGES_SWITCH};
pub use recorded::{
    Columns, DeliveredRecord, Delivery, Effect, Produced, Recorded, RecordedBuilder,
};
pub use sink_kind::SinkKind;

/// One event with its place in the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stamped {
    /// Position in the timeline, from 0.
    pub seq: u64,
    /// Microseconds since the run started (monotonic clock).
    pub t_us: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// Everything the timeline records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The run began; carries what the judge needs to know about the plan.
    RunStarted(Box<RunInfo>),
    /// The workload produced one message (or failed to).
    Produced {
        /// The message ID.
        id: String,
        /// Key order: the message's position among the messages of its key (1 when every
        /// message is its own key). Written as `key_seq` so it cannot clash with the
        /// timeline's own `seq`.
        #[serde(rename = "key_seq")]
        seq: u64,
        /// The message key, when it is not the ID itself (`workload.keys`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Partition the broker stored it in.
        partition: Option<i32>,
        /// Offset in that partition.
        offset: Option<i64>,
        /// Whether the broker acknowledged it.
        status: ProduceStatus,
        /// The broker's or client's error, when not acknowledged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// A poison message (`workload.poison`): its body is made undecodable.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        poison: bool,
    },
    /// The sink observed one side effect.
    Effect {
        /// The message ID the effect names.
        id: String,
        /// Instance that made it, when known.
        instance: Option<u32>,
        /// Incarnation (1 = first process of that instance) that made it, when known.
        incarnation: Option<u32>,
        /// Applied, or replayed by an idempotent sink (a repeated idempotency key).
        outcome: EffectOutcome,
        /// Which sink saw it.
        sink: SinkKind,
        /// The plan boundary whose sink saw it; absent for a plan with one `effects` sink (and
        /// in timelines from before boundaries), which is the run's one default boundary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boundary: Option<String>,
        /// How `instance` and `incarnation` were found (written flat: `attributed_by`, `pid`,
        /// `attribution_note`); empty in timelines from before it was recorded.
        #[serde(flatten)]
        attribution: Attribution,
    },
    /// The sink received something it could not read as an effect.
    EffectRejected {
        /// Why.
        reason: String,
        /// The start of what was received.
        sample: String,
        /// The plan boundary whose sink received it (absent: the one default boundary).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boundary: Option<String>,
    },
    /// A file or stdout sink's last line that never got its newline: the writer died
    /// mid-write (SIGKILL into a block-buffered stdout), or stopped there. Never an effect: a
    /// cut ID can read as another valid ID.
    TornLine {
        /// Instance whose file or stdout it was.
        instance: u32,
        /// Its incarnation.
        incarnation: u32,
        /// Which sink saw it (`file` or `stdout`).
        sink: SinkKind,
        /// The plan boundary whose sink saw it (absent: the one default boundary).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boundary: Option<String>,
        /// Its length in bytes.
        bytes: u64,
        /// Its end (at most 200 characters), as received.
        sample: String,
    },
    /// The end of what one consumer incarnation wrote on stderr, recorded as it exits (before
    /// its `process` exited event) when it wrote anything: what a crash said.
    StderrTail {
        /// Instance.
        instance: u32,
        /// Incarnation.
        incarnation: u32,
        /// Its last lines (at most 20 lines and 2 KiB).
        tail: String,
        /// Bytes it wrote on stderr in all.
        bytes: u64,
    },
    /// A consumer process started or exited.
    Process {
        /// Instance index, from 0.
        instance: u32,
        /// Incarnation, from 1.
        incarnation: u32,
        /// OS process id (also its process group id).
        pid: u32,
        /// Started or exited.
        phase: ProcessPhase,
        /// Exit status, such as `exit 0` or `signal SIGKILL`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    /// A fault was applied (or its trigger matched and the action could not be applied).
    Fault(Box<FaultRecord>),
    /// The broker's view of progress.
    Progress {
        /// Committed offset per partition (the next offset the group will read).
        #[serde(with = "partition_map")]
        committed: BTreeMap<i32, i64>,
        /// End offset (high watermark) per partition.
        #[serde(with = "partition_map")]
        end: BTreeMap<i32, i64>,
    },
    /// The proxy saw a record (or message) handed to a consumer.
    Delivered {
        /// The message ID (`exactly-id` header, else the key).
        id: String,
        /// Instance it went to.
        instance: u32,
        /// Incarnation it went to.
        incarnation: u32,
        /// Kafka partition (None for AMQP).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<i32>,
        /// Kafka offset, or AMQP delivery tag.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<i64>,
        /// AMQP: the broker marked it redelivered.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        redelivered: bool,
    },
    /// The Kafka proxy saw records of one partition handed to a consumer in one Fetch
    /// response: one event per partition and response, not per record (a `delivered` event per
    /// record cost the proxy more than forwarding the bytes).
    DeliveredBatch {
        /// Instance they went to.
        instance: u32,
        /// Incarnation they went to.
        incarnation: u32,
        /// Kafka partition.
        partition: i32,
        /// In the file only: the first records handed on, as the offsets of batches the ledger
        /// names, recorded from their headers without reading the records (in order; `records`
        /// follow them). [`read_events`] puts their records in front of `records` and empties
        /// it, so a timeline read back never carries one.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ranges: Vec<OffsetRange>,
        /// (offset, message ID) of each record, in offset order (a repeated batch repeats
        /// them).
        #[serde(default)]
        records: DeliveredIds,
    },
    /// A Kafka OffsetCommit seen by the proxy: the request, the broker's response, or a request
    /// the proxy dropped because the consumer died while it was held.
    Commit {
        /// Instance that sent it.
        instance: u32,
        /// Its incarnation.
        incarnation: u32,
        /// Consumer group.
        group: String,
        /// Member id (classic) or member id / epoch (KIP-848).
        member: String,
        /// Generation (classic) or member epoch (KIP-848).
        generation: i32,
        /// The offsets committed (the next offset to read, per partition).
        offsets: Vec<CommittedOffset>,
        /// Request, response or dropped.
        phase: CommitPhase,
        /// Broker error codes of the response, by name, when any partition failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Group membership seen by the proxy (JoinGroup, SyncGroup, LeaveGroup, Heartbeat errors,
    /// KIP-848 ConsumerGroupHeartbeat).
    Rebalance {
        /// Instance concerned.
        instance: u32,
        /// Its incarnation.
        incarnation: u32,
        /// Consumer group.
        group: String,
        /// What happened.
        change: RebalanceKind,
        /// Member id, when known.
        #[serde(default)]
        member: String,
        /// Generation or member epoch, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<i32>,
        /// For `assign`: the partitions of the topic under test now owned by this instance.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignment: Option<Vec<i32>>,
        /// Broker error, by name (REBALANCE_IN_PROGRESS, FENCED_MEMBER_EPOCH...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// For a classic `join`: the protocols (assignors) the member offered in its JoinGroup,
        /// in its order of preference, so the harness's own group member can speak the same.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocols: Option<Vec<String>>,
        /// For a classic `join`: the session timeout the member asked for (ms), so an audit
        /// can make a pause or a partition outlast it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_timeout_ms: Option<i32>,
    },
    /// An AMQP consumer acknowledgement seen by the proxy (client basic.ack / nack / reject;
    /// never the broker's publisher confirms), resolved to the IDs it covers.
    Ack {
        /// Instance that sent it.
        instance: u32,
        /// Its incarnation.
        incarnation: u32,
        /// AMQP channel.
        channel: u16,
        /// The delivery tag in the frame.
        delivery_tag: u64,
        /// `multiple`: it covers every unacknowledged tag up to `delivery_tag`.
        multiple: bool,
        /// ack, nack or reject.
        verb: AckVerb,
        /// For nack/reject: the message goes back to the queue.
        requeue: bool,
        /// The message IDs it covers (from the deliveries the proxy saw).
        ids: Vec<String>,
        /// Seen (held, when a `before: ack` trigger needs it), written to the broker, or dropped.
        phase: AckPhase,
    },
    /// How an AMQP consumer asked to be served, seen by the proxy (basic.qos, basic.consume).
    ConsumerSettings {
        /// Instance.
        instance: u32,
        /// Incarnation.
        incarnation: u32,
        /// `basic.consume` with no-ack: the broker forgets a message as soon as it sends it.
        no_ack: bool,
        /// The prefetch it asked for with basic.qos, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefetch: Option<u16>,
        /// The heartbeat timeout its connection negotiated (`connection.tune-ok`), seconds; 0:
        /// heartbeats off, so RabbitMQ never notices a consumer that stands still.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat_s: Option<u16>,
    },
    /// A consumer's proxied AMQP connection ended before the run did (missed heartbeats after
    /// a partition, a crash, a `sever`); its unacknowledged messages go back to the queue:
    /// `unacked` says how many the proxy saw outstanding. During a `partition` the proxy reads
    /// neither side, so a close that happened then is recorded when it heals.
    ConnectionClosed {
        /// Instance.
        instance: u32,
        /// Incarnation.
        incarnation: u32,
        /// Which side ended it.
        by: ClosedBy,
        /// Deliveries on the connection not yet acknowledged when it ended.
        unacked: u64,
        /// How it ended, in words.
        detail: String,
    },
    /// One channel of a consumer's proxied AMQP connection closed at RabbitMQ's end while the
    /// connection lived on: a channel exception RabbitMQ raised (a second ack of a tag is 406
    /// PRECONDITION_FAILED), or the proxy's `amqp: double-ack` fault. RabbitMQ put the
    /// deliveries the channel held unacknowledged back in the queue: `requeued` lists their
    /// IDs as the proxy tracked them.
    ChannelClosed {
        /// Instance.
        instance: u32,
        /// Incarnation.
        incarnation: u32,
        /// The channel number.
        channel: u16,
        /// The IDs of the deliveries it held unacknowledged (requeued by RabbitMQ).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        requeued: Vec<String>,
        /// Who closed it and why, in words.
        detail: String,
    },
    /// A consumer process connected straight to the broker, past the proxy (the run's watch
    /// reads every live consumer process's sockets from `/proc` about once a second); one
    /// event per connection, the first time it is seen. Network faults do not reach that
    /// connection and the proxy sees none of its commits, acks or deliveries.
    Bypass {
        /// Instance.
        instance: u32,
        /// Incarnation.
        incarnation: u32,
        /// The process holding the socket (the incarnation's group leader or a descendant).
        pid: u32,
        /// The socket's own address.
        local: String,
        /// The broker address it is connected to.
        remote: String,
    },
    /// An event held at a hold point for a trigger (every commit or ack while a
    /// `before:`/`after:` trigger needs them; the sink's answer to the effect a `during:
    /// effect` fault fired on), and how long: a held frame delays every later response on its
    /// connection.
    Held {
        /// Instance.
        instance: u32,
        /// Incarnation.
        incarnation: u32,
        /// Where.
        at: HeldAt,
        /// The held event's timeline position.
        event: u64,
        /// How long it was held (µs).
        held_us: u64,
        /// True when it went on; false when it was dropped (the consumer was being stopped).
        released: bool,
    },
    /// Messages ready in the AMQP queue (polled during the run).
    QueueDepth {
        /// Ready (not delivered) messages.
        ready: u64,
    },
    /// What the AMQP queue still held at the end, taken out after the consumers stopped (so
    /// their unacknowledged messages had returned). These IDs are pending; an acknowledged ID
    /// with no effect that is not here was removed from the queue: lost.
    QueueRemainder {
        /// IDs of the messages left: every ID a message may stand for (the plan's ID rule on
        /// its body and headers, its `message_id`, its `exactly-id` header), so a set to look
        /// IDs up in, not a count of messages.
        ids: Vec<String>,
        /// False when the drain could not finish (the remainder may be incomplete).
        complete: bool,
    },
    /// What the plan's dead-letter destination (`broker.dead_letter`) held once the consumers
    /// stopped, read by the harness from the real broker: the IDs there were diverted by the
    /// consumer, neither lost nor effected.
    DeadLetters {
        /// The dead-letter topic (Kafka) or queue (AMQP).
        destination: String,
        /// Records or messages read.
        records: u64,
        /// The IDs they carry (`exactly-id` header, else key or `message_id`), in read order.
        ids: Vec<String>,
        /// False when the read could not finish: an ID missing here may still be there.
        complete: bool,
    },
    /// A transactional request of a consumer and the broker's answer, seen by the Kafka proxy
    /// (recorded as the response passes).
    Txn {
        /// Instance.
        instance: u32,
        /// Incarnation.
        incarnation: u32,
        /// Which API.
        op: TxnOp,
        /// The transactional id (InitProducerId of an idempotent producer has none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transactional_id: Option<String>,
        /// The producer id (after InitProducerId: the one the broker gave).
        producer_id: i64,
        /// The producer epoch (after InitProducerId: the one the broker gave).
        producer_epoch: i16,
        /// EndTxn: commit (true) or abort (false).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        committed: Option<bool>,
        /// True for an EndTxn request on its way to the broker, recorded only when a
        /// `before: end_txn` trigger holds EndTxn requests (no answer yet); false for the
        /// broker's answer, the `txn` event every reader of transactions counts.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        request: bool,
        /// TxnOffsetCommit: the consumed offsets it adds to the transaction (they count as
        /// committed once the transaction commits).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        offsets: Vec<CommittedOffset>,
        /// The broker's error (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH: a fenced zombie).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A consumer's own Produce (to its output topic) and the broker's answer, seen by the Kafka
    /// proxy as the answer passes: who sent which records where, so each output record can be
    /// attributed to the incarnation that wrote it.
    ConsumerProduce {
        /// Instance.
        instance: u32,
        /// Incarnation.
        incarnation: u32,
        /// The transactional id, when the producer is transactional.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transactional_id: Option<String>,
        /// The producer id of its record batches (-1: not idempotent).
        producer_id: i64,
        /// Their producer epoch.
        producer_epoch: i16,
        /// One entry per partition written.
        batches: Vec<ProducedBatch>,
    },
    /// What the harness read back from a `kafka-topic` boundary's output topic once the run
    /// stopped: records under `read_committed` (the effects) and under `read_uncommitted`,
    /// whose extra records belong to aborted (or still open) transactions: never effects, but
    /// what a non-transactional reader downstream would have seen.
    OutputTopicRead {
        /// The boundary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boundary: Option<String>,
        /// The topic.
        topic: String,
        /// The isolation level the effects were read at.
        isolation: String,
        /// Records read under `read_committed`.
        committed_records: u64,
        /// Records read under `read_uncommitted`.
        uncommitted_records: u64,
        /// Records only `read_uncommitted` saw (aborted or never-committed transactions).
        aborted_records: u64,
        /// Their message IDs (the boundary's ID rule), the first 20, by partition and offset.
        aborted_ids: Vec<String>,
        /// How many of them name an ID at all.
        aborted_with_id: u64,
        /// Every one of them, by partition and offset, with the ID it names (absent in
        /// timelines written before it was recorded): what the judge names per ID.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        aborted: Vec<AbortedRecord>,
        /// False when a reader could not read every partition to its end once the run stopped
        /// (an open transaction, a broker that stopped answering): effects may be missing.
        complete: bool,
    },
    /// The consumer's own record of its progress, read by the harness once the consumers
    /// stopped from where the plan says the consumer keeps it (`postgres.offsets`: offsets
    /// stored with the data): the next offset it will read, per partition. Such a consumer
    /// resumes from these, not from the group's committed offsets, so the judge counts work
    /// done by them.
    StoredOffsets {
        /// Where they were read (`postgres <table>: <query>`).
        source: String,
        /// Next offset per partition.
        #[serde(with = "partition_map")]
        committed: BTreeMap<i32, i64>,
    },
    /// What the harness's own transient group member did (the `rebalance` fault): it joins the
    /// group under test, holds its share of partitions without consuming or committing, then
    /// leaves, forcing two rebalances on the consumer.
    GroupMember {
        /// Consumer group.
        group: String,
        /// What happened.
        change: MemberChange,
        /// For `assigned` and `revoked`: the partitions of the topic under test the change gave
        /// or took.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partitions: Option<Vec<i32>>,
        /// For `error` (and a `left` that was not clean): what went wrong.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// How the harness keeps each consumer incarnation's processes together (recorded once,
    /// before the first consumer starts): a cgroup per incarnation, or the harness as child
    /// subreaper walking `/proc`.
    Containment {
        /// The method in force.
        method: ContainmentMethod,
        /// What it covers and why the other one was not used, in words.
        detail: String,
    },
    /// A process of a consumer incarnation still there after the process the harness started
    /// had exited (a daemon, a child in another session or process group): the harness ended
    /// it, or could not.
    Descendant {
        /// Instance.
        instance: u32,
        /// Incarnation.
        incarnation: u32,
        /// Its process id.
        pid: u32,
        /// Its command name (`/proc/PID/comm`).
        command: String,
        /// Ended by the harness, or still alive after SIGKILL.
        fate: DescendantFate,
    },
    /// The proxy answered a consumer's request with a protocol fault's reply (`commit_error`,
    /// `fetch_error`) instead of the broker's answer: what the consumer was told, and what the
    /// broker had.
    Replied {
        /// Instance that sent the request.
        instance: u32,
        /// Its incarnation.
        incarnation: u32,
        /// The API answered (`OffsetCommit`, `Fetch`).
        api: String,
        /// The request's version: the reply is encoded at it.
        version: i16,
        /// The error code the consumer was told, by name.
        sent: String,
        /// The partitions the reply names, with the offsets concerned (committed offsets for
        /// OffsetCommit, fetch positions for Fetch).
        offsets: Vec<CommittedOffset>,
        /// What the broker had: whether it stored a commit, what a Fetch answer held.
        broker: String,
    },
    /// Something the report should mention that is not a finding about the consumer.
    Warning {
        /// What happened.
        message: String,
    },
    /// The run ended.
    RunEnded {
        /// Why it ended.
        reason: EndReason,
    },
}

/// What the timeline's judge needs from the plan, recorded at the start of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    /// The run id.
    pub run: String,
    /// Plan name.
    pub plan: String,
    /// Plan description.
    #[serde(default)]
    pub description: Option<String>,
    /// `kafka` or `amqp`.
    pub broker: String,
    /// True when the broker is the embedded mock cluster (a demo, not evidence).
    pub mock_broker: bool,
    /// Where the broker is.
    pub broker_address: String,
    /// Topic or queue.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// The claimed semantics (`at-least-once`...).
    pub expect: String,
    /// The seed in force.
    pub seed: u64,
    /// One line per planned fault, indexed like `FaultRecord::fault`.
    pub planned_faults: Vec<String>,
    /// How many messages the workload will produce.
    pub messages: u64,
    /// The command line that reproduces the run.
    pub reproduce: String,
    /// The plan's `effects.id` rule (`json:/order_id`...), so a report can name it when the
    /// sink could not read effects; absent in timelines written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects_id: Option<String>,
    /// The sink kind that observes those effects (`http`, `kafka-topic`...): a plan's
    /// `effects.sink`, or in a boundary's view of the timeline that boundary's; absent in
    /// timelines written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects_sink: Option<SinkKind>,
    /// The plan's boundaries, each judged on its own effects against its own promise; empty
    /// for a plan with one `effects` sink (its one boundary is the run itself: `expect`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boundaries: Vec<BoundaryInfo>,
    /// The plan's dead-letter topic or queue (`{run}` replaced), when it declares one: the
    /// judge then needs its `dead_letters` read before it may call a message lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// One boundary of a run as the judge needs it: which effects are its own, and its promise.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BoundaryInfo {
    /// Its name, as effect events carry it in `boundary`.
    pub name: String,
    /// The sink kind that observes it (`http`, `file`, `kafka-topic`...).
    pub sink: SinkKind,
    /// Its promise (`exactly-once`...).
    pub expect: String,
    /// Its ID rule, as written (`header:exactly-id`...).
    pub id: String,
}

/// One partition's committed offset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset the group will read.
    pub offset: i64,
}

/// The records one consumer Produce wrote to one partition, and the broker's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProducedBatch {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The offset the broker gave the first record (-1 when refused).
    pub base_offset: i64,
    /// Records sent (over every record batch of the partition).
    pub records: u32,
    /// The broker's error, when it refused them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where an OffsetCommit is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CommitPhase {
    /// On its way to the broker.
    Request,
    /// The broker answered.
    Response,
    /// Held by the proxy and never forwarded (the consumer died while it was held).
    Dropped,
}

/// The kind of an AMQP consumer acknowledgement.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AckVerb {
    /// basic.ack
    Ack,
    /// basic.nack
    Nack,
    /// basic.reject
    Reject,
}

/// Where an AMQP acknowledgement is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AckPhase {
    /// Seen by the proxy, not yet forwarded (held here for `before: ack`).
    Request,
    /// Written to the broker's socket.
    Forwarded,
    /// Held and never forwarded (the consumer died while it was held).
    Dropped,
}

/// A transactional API seen by the Kafka proxy.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TxnOp {
    /// InitProducerId: a (transactional) producer starts, fencing older epochs.
    InitProducerId,
    /// AddPartitionsToTxn: partitions join the transaction.
    AddPartitionsToTxn,
    /// AddOffsetsToTxn: the consumer group's offsets join it.
    AddOffsetsToTxn,
    /// TxnOffsetCommit: the consumed offsets, committed with the transaction.
    TxnOffsetCommit,
    /// EndTxn: commit or abort.
    EndTxn,
}

/// Where a frame was held.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeldAt {
    /// An OffsetCommit request on its way to the broker.
    CommitRequest,
    /// The broker's OffsetCommit response on its way to the consumer.
    CommitResponse,
    /// An AMQP basic.ack/nack/reject on its way to the broker.
    AckRequest,
    /// An AMQP basic.publish of the consumer held while its connection was blocked
    /// (`amqp: blocked`); it has no event of its own, so the `held` event's `event` is 0.
    Publish,
    /// A Kafka EndTxn request (commit) on its way to the broker (`before: end_txn`).
    EndTxnRequest,
    /// The HTTP sink's answer to an effect (`during: effect`), held by the harness until the
    /// fault that fired on it ended (or withheld: the consumer was being stopped).
    Effect,
}

/// How the harness finds every process of a consumer incarnation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ContainmentMethod {
    /// A cgroup v2 per incarnation: every process in it, whatever it does, is ended with it.
    Cgroup,
    /// The harness is the child subreaper (orphans re-parent to it) and walks `/proc`: the
    /// incarnation's process tree, and the processes carrying its marker variable.
    Subreaper,
}

/// What became of a process that outlived its incarnation's first process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DescendantFate {
    /// The harness ended it (SIGTERM, then SIGKILL after a grace).
    Ended,
    /// Still alive after SIGKILL: it may go on working after the run.
    Survived,
}

/// Which side ended a proxied connection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    /// The broker closed it or reset it.
    Broker,
    /// The consumer closed it (or exited).
    Consumer,
    /// A `sever` fault reset it.
    Severed,
}

/// Group membership events.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RebalanceKind {
    /// JoinGroup request (a rebalance begins for this member).
    Join,
    /// SyncGroup (classic) completed.
    Sync,
    /// LeaveGroup.
    Leave,
    /// A new assignment took effect (SyncGroup response or KIP-848 heartbeat).
    Assign,
    /// A heartbeat or commit answered with a group error (the member must rejoin, or was
    /// fenced).
    Error,
}

/// What the harness's transient group member did.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    /// It subscribed: its first JoinGroup (or KIP-848 heartbeat) is on its way.
    Joined,
    /// Partitions were assigned to it (and paused at once: it never consumes them).
    Assigned,
    /// Partitions were taken from it.
    Revoked,
    /// It left the group (LeaveGroup, or a KIP-848 leave heartbeat).
    Left,
    /// The client reported an error.
    Error,
}

/// Fate of one produce request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProduceStatus {
    /// The broker acknowledged it: it is in the ledger and checked for loss.
    Acked,
    /// The broker refused it: not produced.
    Failed,
    /// No answer in time: it may or may not be stored (not checked for loss).
    Indeterminate,
}

/// Whether an effect changed the world.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EffectOutcome {
    /// The effect happened.
    Applied,
    /// An idempotent sink recognised the key and replayed its earlier answer.
    Replayed,
}

/// How an effect was tied to the process that made it: the evidence behind its `instance` and
/// `incarnation`, so a report can tell a proven writer from a claimed one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attribution {
    /// The witness that decided (`None` in timelines written before attribution was recorded).
    #[serde(
        rename = "attributed_by",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub by: Option<AttributedBy>,
    /// The process that owned the connection the effect came in on (socket attribution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Why the socket did not decide, or what the other witness said when they disagreed.
    #[serde(
        rename = "attribution_note",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub note: Option<String>,
    /// The committed database transaction the effect was read from (`postgres` sink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Box<RowCommit>>,
    /// `kafka-topic` sink: the output record the effect was read from, which the judge ties
    /// to the consumer Produce (`consumer_produce`) that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Box<RecordPlace>>,
}

/// Where a `postgres` effect was seen: its row change and the transaction that committed it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RowCommit {
    /// `insert` or `update`.
    pub op: String,
    /// The commit's log sequence number (`0/16B3748`).
    pub lsn: String,
    /// The commit time, by the database server's clock (RFC 3339).
    pub commit_time: String,
    /// The transaction ID.
    pub xid: u32,
    /// The plan's extra columns of the row (`effects.postgres.columns`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub columns: serde_json::Map<String, serde_json::Value>,
}

/// A record of an output topic that only `read_uncommitted` read: its transaction aborted
/// (or never ended).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AbortedRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The message ID it names by the boundary's rule, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Where an output record sits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordPlace {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl Attribution {
    /// Attributed by `by`, with no pid and no note.
    pub fn by(by: AttributedBy) -> Attribution {
        Attribution {
            by: Some(by),
            ..Attribution::default()
        }
    }
}

/// Which witness attributed an effect to its instance and incarnation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttributedBy {
    /// The HTTP connection's client socket belongs to a process of that incarnation's group.
    Socket,
    /// The per-incarnation URL it was posted to (`/effect/I/N`); the socket did not decide.
    Url,
    /// The per-incarnation effect file it was appended to.
    File,
    /// The stdout of the incarnation that printed it.
    Stdout,
    /// The Kafka proxy saw that incarnation's Produce write the output record (its partition
    /// and offset within the records the broker acknowledged).
    Producer,
    /// Nothing tied it to a consumer process; the note says why.
    Unknown,
}

/// Process lifecycle.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProcessPhase {
    /// Spawned.
    Started,
    /// Exited or killed.
    Exited,
}

/// A fault, as it happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRecord {
    /// Index of the fault in the plan.
    pub fault: usize,
    /// `kill`, `terminate`, `pause`...
    pub action: String,
    /// `consumer`, `consumer[0]`...
    pub target: String,
    /// The trigger as written (`after: effect, nth: 3`).
    pub trigger: String,
    /// When the trigger matched (µs since run start).
    pub matched_at_us: u64,
    /// When the action landed (signal sent), µs since run start.
    pub fired_at_us: u64,
    /// From the triggering event to the action landing.
    pub trigger_latency_us: u64,
    /// True when the action was applied to at least one live process.
    pub applied: bool,
    /// Which processes it hit, or why it could not be applied.
    pub detail: String,
    /// The consumer incarnations it hit (signalled, or whose connections it touched).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hit: Vec<ProcessRef>,
    /// How long a timed fault (pause, partition, latency, rebalance) lasts, in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_us: Option<u64>,
    /// The fault acts on the proxied connections (partition, latency, sever) or its trigger
    /// counts what the proxy sees (commits, acks, deliveries, rebalances): a consumer
    /// connection that bypasses the proxy escapes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub through_proxy: bool,
}

/// How the detail of an applied `amqp: cancel` fault begins (the judge reads it to find the
/// consumers a server-sent `basic.cancel` reached).
pub const CANCEL_SENT: &str = "sent basic.cancel";

/// How the detail of an applied `amqp: double-ack` fault begins.
pub const CHANNEL_CLOSE_SENT: &str = "sent channel.close 406 PRECONDITION_FAILED";

/// One consumer incarnation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessRef {
    /// Instance index, from 0.
    pub instance: u32,
    /// Incarnation of that instance, from 1.
    pub incarnation: u32,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Every planned fault had its chance and the work was done, quiet for `settle`.
    Settled,
    /// The deadline passed first.
    Deadline,
    /// The harness was interrupted (SIGINT/SIGTERM).
    Aborted,
    /// The harness failed (broker lost, consumer missing, a consumer that crash-loops...).
    InfrastructureError,
    /// The plan must be fixed: its effect ID rule read none of the first effects (exit 2).
    PlanError,
}

/// The (offset, message ID) pairs of a batch of Kafka deliveries, in offset order.
///
/// Stored as one string holding every ID and one list of (offset, end of its ID), so a Fetch
/// response of thousands of records costs the proxy a few allocations rather than one per
/// record (the proxy shares two cores with the consumer it measures: its CPU is the
/// consumer's). Serialized as `[[offset, "id"], ...]`, as a list of pairs would be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveredIds {
    text: String,
    /// (offset, byte index in `text` where its ID ends); each ID starts where the previous
    /// one ended.
    entries: Vec<(i64, u32)>,
}

impl DeliveredIds {
    /// Appends a record; an ID that is not UTF-8 is kept lossily (invalid bytes become
    /// U+FFFD), as the rest of the timeline shows IDs.
    pub fn push_bytes(&mut self, offset: i64, id: &[u8]) {
        match std::str::from_utf8(id) {
            Ok(s) => self.push(offset, s),
            Err(_) => self.push(offset, &String::from_utf8_lossy(id)),
        }
    }

    /// Appends a record.
    pub fn push(&mut self, offset: i64, id: &str) {
        self.text.push_str(id);
        // IDs beyond 4 GiB in one Fetch response cannot happen (a response is at most 2 GiB).
        let end = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        self.entries.push((offset, end));
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the records as JSON array items, `[offset,"id"],...` (no brackets around them),
    /// exactly as serde_json would write them. IDs that need no escaping (no quote, backslash
    /// or control character, checked once over all of them) are copied as they are.
    pub fn write_json_items(&self, out: &mut Vec<u8>) {
        // No early exit: the compiler can then check many bytes at a time.
        let needs_escaping = self.text.bytes().fold(false, |found, b| {
            found | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        // Each item adds at most 24 bytes around its ID: brackets, quotes, comma, offset.
        out.reserve(self.text.len() + 24 * self.entries.len());
        let mut number = itoa::Buffer::new();
        let mut start = 0;
        for (i, &(offset, end)) in self.entries.iter().enumerate() {
            let id = &self.text[start..end as usize];
            start = end as usize;
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            out.extend_from_slice(number.format(offset).as_bytes());
            out.push(b',');
            if needs_escaping {
                // Writing a string into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, id);
            } else {
                out.push(b'"');
                out.extend_from_slice(id.as_bytes());
                out.push(b'"');
            }
            out.push(b']');
        }
    }

    /// (offset, ID) of each record, in order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &str)> + '_ {
        let mut start = 0usize;
        self.entries.iter().map(move |&(offset, end)| {
            let end = end as usize;
            let id = self.text.get(start..end).unwrap_or_default();
            start = end;
            (offset, id)
        })
    }
}

impl<S: AsRef<str>> FromIterator<(i64, S)> for DeliveredIds {
    fn from_iter<I: IntoIterator<Item = (i64, S)>>(iter: I) -> DeliveredIds {
        let mut ids = DeliveredIds::default();
        for (offset, id) in iter {
            ids.push(offset, id.as_ref());
        }
        ids
    }
}

impl Serialize for DeliveredIds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for DeliveredIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DeliveredIds, D::Error> {
        Ok(Vec::<(i64, String)>::deserialize(d)?.into_iter().collect())
    }
}

/// Partition maps as JSON objects (`{"0": 12}`). serde buffers tagged enums before
/// deserializing them, and buffered string keys do not parse back as integers by themselves.
mod partition_map {
    use std::collections::BTreeMap;

    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<i32, i64>, s: S) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<BTreeMap<String, i64>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<i32, i64>, D::Error> {
        BTreeMap::<String, i64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((k.parse().map_err(D::Error::custom)?, v)))
            .collect()
    }
}

/// The shared recorder.
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
    /// Set once by the writer thread when a write failed (it writes nothing more after).
    write_failure: Arc<OnceLock<EventsWriteError>>,
}

/// The timeline file could not be written: the events recorded from then on are missing from
/// it, so the run must end and not be judged.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "cannot write {}: {source} (the timeline is incomplete: the run was stopped and not judged)",
    path.display()
)]
pub struct EventsWriteError {
    /// The timeline file.
    pub path: PathBuf,
    /// What the write returned.
    #[source]
    pub source: Arc<std::io::Error>,
}

/// `events.jsonl` could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadEventsError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the read returned.
        #[source]
        source: std::io::Error,
    },
    /// A line other than a torn last one is not an event.
    #[error("{}:{line}: {source}", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// Deliveries recorded as offset ranges name offsets the ledger does not resolve.
    #[error("{}: {source}", path.display())]
    Unresolved {
        /// The file.
        path: PathBuf,
        /// Which offsets.
        #[source]
        source: UnresolvedOffsets,
    },
}

struct Inner {
    /// The writer thread's queue; `None` in memory, or after a write failed.
    writer: Option<std::sync::mpsc::Sender<ToWriter>>,
    next_seq: u64,
    subscribers: Vec<mpsc::UnboundedSender<Arc<Stamped>>>,
}

/// What the writer thread is asked to do.
enum ToWriter {
    /// Append this event.
    Event(Arc<Stamped>),
    /// Append these events, in order (one [`Timeline::record_many`]).
    Events(Vec<Arc<Stamped>>),
    /// Say when everything sent before has been written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Most events [`Timeline::record_many`] stamps under one lock.
const MANY_CHUNK: usize = 512;

/// Most events serialized into one `write`.
const WRITE_BATCH: usize = 1024;

impl Timeline {
    /// A timeline that writes to `path` (created or truncated). A thread of its own serializes
    /// and writes the events in order, in batches of whatever is queued (one `write` per batch),
    /// so recording never waits for the disk; see [`Timeline::flush`].
    pub fn create(path: &Path) -> std::io::Result<Timeline> {
        Timeline::writing_to(File::create(path)?, path)
    }

    /// A timeline whose writer thread writes to `out`; `path` names it in a write failure.
    fn writing_to(out: impl Write + Send + 'static, path: &Path) -> std::io::Result<Timeline> {
        let (tx, rx) = std::sync::mpsc::channel();
        let write_failure: Arc<OnceLock<EventsWriteError>> = Arc::default();
        let (failure, path) = (write_failure.clone(), path.to_owned());
        std::thread::Builder::new()
            .name("exactly-timeline".into())
            .spawn(move || {
                write_events(out, rx, |e| {
                    let _ = failure.set(EventsWriteError {
                        path,
                        source: Arc::new(e),
                    });
                })
            })?;
        Ok(Timeline {
            inner: Arc::new(Mutex::new(Inner {
                writer: Some(tx),
                next_seq: 0,
                subscribers: Vec::new(),
            })),
            start: Instant::now(),
            write_failure,
        })
    }

    /// A timeline kept only in memory (tests).
    pub fn in_memory() -> Timeline {
        Timeline {
            inner: Arc::new(Mutex::new(Inner {
                writer: None,
                next_seq: 0,
                subscribers: Vec::new(),
            })),
            start: Instant::now(),
            write_failure: Arc::default(),
        }
    }

    /// The failed write that stopped the timeline file, if one did. Events recorded since are
    /// still published to subscribers but missing from the file.
    pub fn write_failure(&self) -> Option<EventsWriteError> {
        self.write_failure.get().cloned()
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Receives every event recorded from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<Stamped>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        rx
    }

    /// Stamps, queues for writing and publishes one event; returns it stamped.
    pub fn record(&self, event: Event) -> Arc<Stamped> {
        let mut inner = self.lock();
        let stamped = Arc::new(Stamped {
            seq: inner.next_seq,
            t_us: self.now_us(),
            event,
        });
        inner.next_seq += 1;
        if let Some(writer) = &inner.writer {
            if writer.send(ToWriter::Event(stamped.clone())).is_err() {
                inner.writer = None;
            }
        }
        inner
            .subscribers
            .retain(|tx| tx.send(stamped.clone()).is_ok());
        stamped
    }

    /// Stamps, queues for writing and publishes several events, in order: what
    /// [`Timeline::record`] does for each, minus most of the locking and writer hand-offs. For
    /// bursts of events that happen at one moment (the proxy's `delivered` events of one fetched
    /// batch of records). They are taken in chunks (of 512), each under one lock with
    /// one clock reading (the chunk shares its `t_us`) and handed to the writer at once; the
    /// lock is let go between chunks, so a long burst never keeps another source (a commit, a
    /// fault) waiting for more than one chunk.
    pub fn record_many(&self, events: impl IntoIterator<Item = Event>) {
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let mut chunk: Vec<Arc<Stamped>> =
                Vec::with_capacity(events.size_hint().0.min(MANY_CHUNK));
            let mut inner = self.lock();
            let t_us = self.now_us();
            for event in events.by_ref().take(MANY_CHUNK) {
                let s = Arc::new(Stamped {
                    seq: inner.next_seq,
                    t_us,
                    event,
                });
                inner.next_seq += 1;
                inner.subscribers.retain(|tx| tx.send(s.clone()).is_ok());
                chunk.push(s);
            }
            if let Some(writer) = &inner.writer {
                if writer.send(ToWriter::Events(chunk)).is_err() {
                    inner.writer = None;
                }
            }
        }
    }

    /// Waits (at most 10 s) until every event recorded so far is in the file. The run calls it
    /// before the file is read back and judged.
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let sent = self
            .lock()
            .writer
            .as_ref()
            .is_some_and(|w| w.send(ToWriter::Flush(tx)).is_ok());
        if sent {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a subscriber panicked mid-send; the data is still whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer thread: whole lines only, one `write` per batch, so a harness killed at any
/// moment leaves a file whose every complete line parses (at most the last batch is missing).
/// A failed write stops it (rather than leave a torn file) and goes to `failed`, before the
/// flushes waiting on that batch are let go (so a flush that returns sees the failure).
fn write_events(
    mut out: impl Write,
    rx: std::sync::mpsc::Receiver<ToWriter>,
    failed: impl FnOnce(std::io::Error),
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut acks = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            taken += match &msg {
                ToWriter::Events(events) => events.len(),
                _ => 1,
            };
            match msg {
                ToWriter::Event(e) => write_line(&mut buf, &e),
                ToWriter::Events(events) => {
                    for e in events {
                        write_line(&mut buf, &e);
                    }
                }
                ToWriter::Flush(ack) => acks.push(ack),
            }
            if taken < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if let Err(e) = out.write_all(&buf) {
                failed(e);
                return;
            }
            buf.clear();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// Appends one event's JSON line to `buf` (nothing if it cannot be serialized).
///
/// A `delivered_batch` event takes a faster path for its records, the bulk of a busy Kafka
/// run's file: serde writes the event with no records, ending in `"records":[]}`, and the
/// records go in by hand ([`DeliveredIds::write_json_items`]), the same JSON serde would write
/// (`lines_written_by_hand_read_back_as_serde_writes_them`), at a fraction of the cost.
fn write_line(buf: &mut Vec<u8>, e: &Stamped) {
    let start = buf.len();
    let written = match &e.event {
        Event::DeliveredBatch {
            instance,
            incarnation,
            partition,
            ranges,
            records,
        } if !records.is_empty() => {
            let empty = Stamped {
                seq: e.seq,
                t_us: e.t_us,
                event: Event::DeliveredBatch {
                    instance: *instance,
                    incarnation: *incarnation,
                    partition: *partition,
                    ranges: ranges.clone(),
                    records: DeliveredIds::default(),
                },
            };
            let ok = serde_json::to_writer(&mut *buf, &empty).is_ok();
            if ok && buf.ends_with(b"[]}") {
                buf.truncate(buf.len() - 2);
                records.write_json_items(buf);
                buf.extend_from_slice(b"]}");
                true
            } else {
                // The records are not last any more: serde writes the whole event.
                buf.truncate(start);
                serde_json::to_writer(&mut *buf, e).is_ok()
            }
        }
        _ => serde_json::to_writer(&mut *buf, e).is_ok(),
    };
    if written {
        buf.push(b'\n');
    } else {
        buf.truncate(start);
    }
}

/// Reads `events.jsonl`; a torn last line (harness killed mid-write) is ignored, any other
/// bad line is an error naming its line number. Blocks of lines are parsed in parallel, the
/// hot kinds by a fast path that reads exactly what serde would (`read`, `fast`). Deliveries
/// recorded as offset ranges come back as records (`ranges`), or as an error naming the
/// offsets the ledger does not resolve.
pub fn read_events(path: &Path) -> Result<Vec<Stamped>, ReadEventsError> {
    Ok(read_recorded(path)?.to_events())
}

/// The bytes of `events.jsonl` per message a run of millions writes (the judge bench: 343),
/// for sizing what reading it back holds.
const BYTES_PER_MESSAGE: u64 = 340;

/// Reads `events.jsonl` as [`read_events`] does, into columns ([`Recorded`]) as it goes: what
/// the judge reads, since the events of a large file as `Stamped` values would not fit.
pub fn read_recorded(path: &Path) -> Result<Recorded, ReadEventsError> {
    // A message takes at least ~300 bytes of a file (its produce and its effect, ~130 each, and
    // its share of the deliveries), so this rarely over-reserves by much; memory reserved and
    // never touched is not resident.
    let messages = std::fs::metadata(path).map_or(0, |m| m.len() / BYTES_PER_MESSAGE);
    let messages = usize::try_from(messages).unwrap_or(0);
    let ids = SharedIds::with_capacity(messages);
    let mut columns = Columns::with_capacity(messages);
    read::read_blocks(
        path,
        || Columns::for_block(&ids),
        |block| columns.append(block.columns),
    )?;
    columns
        .finish(ids.into_ids())
        .map_err(|source| ReadEventsError::Unresolved {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_ids_serialize_as_offset_id_pairs_and_read_back() {
        let ids: DeliveredIds = [(7, "a"), (8, ""), (9, "é-ü")].into_iter().collect();
        let json = serde_json::to_string(&ids).unwrap();
        assert_eq!(json, r#"[[7,"a"],[8,""],[9,"é-ü"]]"#);
        let back: DeliveredIds = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ids);
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            [(7, "a"), (8, ""), (9, "é-ü")]
        );
        let mut lossy = DeliveredIds::default();
        lossy.push_bytes(1, b"ok");
        lossy.push_bytes(2, b"bad\xff");
        assert_eq!(
            lossy.iter().collect::<Vec<_>>(),
            [(1, "ok"), (2, "bad\u{fffd}")]
        );
    }

    proptest::proptest! {
        #[test]
        fn lines_written_by_hand_read_back_as_serde_writes_them(
            // Printable IDs that need no escaping (the copy path), or any characters at all.
            ids in proptest::prop_oneof![
                proptest::collection::vec((proptest::prelude::any::<i64>(), "[ -!#-\\[\\]-~é]{0,12}"), 0..20),
                proptest::collection::vec((proptest::prelude::any::<i64>(), ".{0,12}"), 0..20),
            ],
            seq in proptest::prelude::any::<u64>(),
            ranges in proptest::collection::vec(proptest::prelude::any::<(i64, i64)>(), 0..3),
        ) {
            let records: DeliveredIds = ids.iter().map(|(o, id)| (*o, id.as_str())).collect();
            let ranges = ranges.into_iter().map(OffsetRange::from).collect();
            let e = Stamped {
                seq,
                t_us: 5,
                event: Event::DeliveredBatch { instance: 1, incarnation: 2, partition: 3, ranges, records },
            };
            let mut fast = Vec::new();
            write_line(&mut fast, &e);
            let mut by_serde = serde_json::to_vec(&e).unwrap();
            by_serde.push(b'\n');
            proptest::prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(by_serde).unwrap());
        }
    }

    #[test]
    fn recorded_events_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let timeline = Timeline::create(&path).unwrap();
        for i in 0..3 {
            timeline.record(Event::Warning {
                message: format!("w{i}"),
            });
        }
        timeline.flush();
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 3);
        assert!(events
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].t_us <= w[1].t_us));
    }

    #[test]
    fn events_recorded_together_keep_their_order_between_single_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let timeline = Timeline::create(&path).unwrap();
        let mut rx = timeline.subscribe();
        let warning = |i: u32| Event::Warning {
            message: format!("w{i}"),
        };
        // Beyond one chunk, so the lock is taken more than once.
        let last = 3 + 2 * MANY_CHUNK as u32;
        timeline.record(warning(0));
        timeline.record_many((1..last).map(warning));
        timeline.record_many(std::iter::empty());
        timeline.record(warning(last));
        timeline.flush();
        let events = read_events(&path).unwrap();
        assert!(events.windows(2).all(|w| w[0].t_us <= w[1].t_us));
        let seen: Vec<(u64, Event)> = events.into_iter().map(|e| (e.seq, e.event)).collect();
        let want: Vec<(u64, Event)> = (0..=last).map(|i| (i as u64, warning(i))).collect();
        assert_eq!(seen, want);
        for i in 0..=last {
            assert_eq!(rx.try_recv().unwrap().event, warning(i));
        }
    }

    /// A writer that takes `room` bytes, then fails as a full disk would.
    struct FillsUp {
        room: usize,
    }

    impl Write for FillsUp {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_is_reported_with_the_file_and_later_events_still_reach_subscribers() {
        let path = Path::new("/runs/r1/events.jsonl");
        let timeline = Timeline::writing_to(FillsUp { room: 10 }, path).unwrap();
        let mut rx = timeline.subscribe();
        assert!(timeline.write_failure().is_none(), "nothing written yet");
        let warning = |i: u32| Event::Warning {
            message: format!("w{i}"),
        };
        timeline.record(warning(0));
        timeline.flush();
        let failure = timeline.write_failure().expect("the write failed");
        assert_eq!(failure.path, path);
        let message = failure.to_string();
        assert!(message.contains("/runs/r1/events.jsonl"), "{message}");
        assert!(message.contains("os error 28"), "{message}");
        // The writer is gone; recording goes on for the subscribers (the run is ending).
        timeline.record(warning(1));
        timeline.flush();
        assert_eq!(rx.try_recv().unwrap().event, warning(0));
        assert_eq!(rx.try_recv().unwrap().event, warning(1));
    }

    #[test]
    fn a_timeline_that_writes_has_no_failure() {
        let dir = tempfile::tempdir().unwrap();
        let timeline = Timeline::create(&dir.path().join("events.jsonl")).unwrap();
        timeline.record(Event::Warning {
            message: "ok".into(),
        });
        timeline.flush();
        assert!(timeline.write_failure().is_none());
    }

    #[test]
    fn read_errors_name_the_file_and_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let missing = read_events(&path).unwrap_err();
        assert!(matches!(missing, ReadEventsError::Io { .. }), "{missing:?}");
        assert!(missing.to_string().starts_with(&path.display().to_string()));
        std::fs::write(
            &path,
            "not json\n{\"seq\":0,\"t_us\":1,\"kind\":\"warning\",\"message\":\"m\"}\n",
        )
        .unwrap();
        let bad = read_events(&path).unwrap_err();
        assert!(
            bad.to_string()
                .starts_with(&format!("{}:1: ", path.display())),
            "{bad}"
        );
    }

    #[test]
    fn progress_events_round_trip() {
        let event = Event::Progress {
            committed: [(0, 5), (2, 7)].into_iter().collect(),
            end: [(0, 9)].into_iter().collect(),
        };
        let stamped = Stamped {
            seq: 3,
            t_us: 10,
            event,
        };
        let line = serde_json::to_string(&stamped).unwrap();
        assert_eq!(serde_json::from_str::<Stamped>(&line).unwrap(), stamped);
    }

    /// Every event of a run is held in memory while it is judged (two or three per message):
    /// the payloads of rare large kinds (the run's plan, a fault, a postgres row) are boxed so
    /// they do not set the size of every event.
    #[test]
    fn an_event_stays_small_whatever_its_kind() {
        assert!(
            std::mem::size_of::<Stamped>() <= 176,
            "Stamped is {} bytes",
            std::mem::size_of::<Stamped>()
        );
    }

    #[test]
    fn torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let timeline = Timeline::create(&path).unwrap();
        timeline.record(Event::Warning {
            message: "ok".into(),
        });
        timeline.flush();
        drop(timeline);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"seq\":1,\"t_us\":5,\"kind\":\"war")
            .unwrap();
        assert_eq!(read_events(&path).unwrap().len(), 1);
    }
}
