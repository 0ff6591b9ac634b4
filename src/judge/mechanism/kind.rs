//! [`Mechanism`]: the closed set of ways a message comes to be lost or duplicated, each with
//! its heading and a plain recommendation, in Kafka's words or AMQP's.
//!
//! Invariant: a leaf of the mechanisms; every match on [`Mechanism`] is exhaustive.

use serde::Serialize;

/// How a message came to be lost or duplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Effect applied, the process crashed before its commit (ack) covered it, and the
    /// message was delivered again: the at-least-once window.
    CrashAfterEffect,
    /// The broker accepted a commit (ack) covering the message before its effect, then the
    /// process crashed: the at-most-once window.
    CrashAfterCommit,
    /// The message was removed from the queue on delivery (no-ack mode) and the process
    /// crashed before its effect.
    NoAckDelivery,
    /// The partition (or message) moved to another member while the one that applied the
    /// effect was alive, before it committed (acked) that finished work: a rebalance, a
    /// graceful stop, a requeue.
    RevokedUncommitted,
    /// A paused or cut-off member lost its partitions (messages) and kept working: it wrote
    /// after the new owner had started, or the new owner redid its uncommitted work.
    Zombie,
    /// The same process was handed the message again, with no change of ownership in
    /// between (it requeued it itself with a nack or reject, sought back, recovered, or its
    /// connection was reset), and applied it again.
    RedeliveredSameProcess,
    /// The same process applied the effect more than once from one delivery.
    ConsumerRetry,
    /// One Fetch response carried the same record twice (a repeated batch: `fetch_twice`, or a
    /// broker-side redelivery) and the client handed both copies to the application.
    FetchedTwice,
    /// The broker stored the message twice (a producer retry): two offsets, one ID.
    ProducerDuplicate,
    /// Delivered and applied again although the broker had accepted a commit (ack) covering
    /// it (an offset reset, or a commit that did not stick).
    RedeliveredAfterCommit,
    /// A live consumer committed past the message without applying it (a filter or an error
    /// path that skips work).
    Skipped,
    /// RabbitMQ closed the channel the message was delivered on (a channel error: a second ack
    /// of a tag is 406 PRECONDITION_FAILED) while the consumer held it unacknowledged, requeued
    /// it, and it was applied again.
    ChannelClosed,
    /// The consumer rejected the message without requeue (AMQP `basic.nack` / `basic.reject`
    /// with `requeue=false`) and never applied it.
    DroppedByConsumer,
    /// Committed past by a consumer that was never handed it (Kafka: no Fetch response
    /// carried its offset to the committer): an offset reset to the end, or a seek ahead.
    NeverDelivered,
    /// Committed past by a consumer that was never handed it, after a Fetch was answered
    /// OFFSET_OUT_OF_RANGE (a `fetch_error` fault) and its client reset its position past the
    /// message (`auto.offset.reset=latest`): a silent skip.
    OffsetResetSkipped,
    /// Committed (acked) before its effect by a consumer still running when the run ended
    /// before it settled: work cut off by the end of the run, or skipped; the evidence cannot
    /// tell which.
    UnfinishedAtEnd,
    /// Applied again by a transactional pipeline whose own output is exact: the effect was
    /// made outside the Kafka transaction, so the abort that undid the output did not undo it
    /// (named from the boundaries of one run: another boundary's output topic is EXACT under
    /// read_committed).
    EffectOutsideTransaction,
    /// Written twice to an output topic by a consumer that produces without transactions
    /// (produce, then a separate offset commit): killed between the two, its successor
    /// produced the result again (named from the proxy's `consumer_produce` events: none
    /// carried a transactional id).
    OutputWithoutTransaction,
    /// Its output record was written in a transaction that aborted, and the redone work
    /// committed it again: a `read_committed` reader saw it once, a `read_uncommitted` (or
    /// non-transactional) reader downstream twice. Never an effect at a `read_committed`
    /// boundary, so never counted lost or duplicated there (named from the output topic's
    /// `output_topic_read` event).
    AbortedThenCommitted,
    /// Its output record was written in a transaction that aborted and no committed record of
    /// it followed: a `read_uncommitted` reader downstream saw output of work that never
    /// committed (phantom work). Never an effect at a `read_committed` boundary.
    AbortedNeverCommitted,
    /// The timeline lacks what naming the mechanism needs (see the evidence).
    Unexplained,
}

impl Mechanism {
    /// True for what only a `read_uncommitted` reader of an output topic saw (records of
    /// aborted transactions): a finding about downstream readers, never a loss or a duplicate
    /// of the boundary it was named at.
    pub fn read_uncommitted_only(self) -> bool {
        match self {
            Mechanism::AbortedThenCommitted | Mechanism::AbortedNeverCommitted => true,
            Mechanism::CrashAfterEffect
            | Mechanism::CrashAfterCommit
            | Mechanism::NoAckDelivery
            | Mechanism::RevokedUncommitted
            | Mechanism::Zombie
            | Mechanism::RedeliveredSameProcess
            | Mechanism::ConsumerRetry
            | Mechanism::FetchedTwice
            | Mechanism::ProducerDuplicate
            | Mechanism::RedeliveredAfterCommit
            | Mechanism::ChannelClosed
            | Mechanism::Skipped
            | Mechanism::DroppedByConsumer
            | Mechanism::NeverDelivered
            | Mechanism::OffsetResetSkipped
            | Mechanism::UnfinishedAtEnd
            | Mechanism::EffectOutsideTransaction
            | Mechanism::OutputWithoutTransaction
            | Mechanism::Unexplained => false,
        }
    }

    /// Snake-case name, as in report.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::CrashAfterEffect => "crash_after_effect",
            Mechanism::CrashAfterCommit => "crash_after_commit",
            Mechanism::NoAckDelivery => "no_ack_delivery",
            Mechanism::RevokedUncommitted => "revoked_uncommitted",
            Mechanism::Zombie => "zombie",
            Mechanism::RedeliveredSameProcess => "redelivered_same_process",
            Mechanism::ConsumerRetry => "consumer_retry",
            Mechanism::FetchedTwice => "fetched_twice",
            Mechanism::ProducerDuplicate => "producer_duplicate",
            Mechanism::RedeliveredAfterCommit => "redelivered_after_commit",
            Mechanism::ChannelClosed => "channel_closed",
            Mechanism::Skipped => "skipped",
            Mechanism::DroppedByConsumer => "dropped_by_consumer",
            Mechanism::NeverDelivered => "never_delivered",
            Mechanism::OffsetResetSkipped => "offset_reset_skipped",
            Mechanism::UnfinishedAtEnd => "unfinished_at_end",
            Mechanism::EffectOutsideTransaction => "effect_outside_transaction",
            Mechanism::OutputWithoutTransaction => "output_without_transaction",
            Mechanism::AbortedThenCommitted => "aborted_then_committed",
            Mechanism::AbortedNeverCommitted => "aborted_never_committed",
            Mechanism::Unexplained => "unexplained",
        }
    }

    /// One line for a heading; `amqp` words it in acks and queues.
    pub fn title(self, amqp: bool) -> &'static str {
        match (self, amqp) {
            (Mechanism::CrashAfterEffect, false) => {
                "Crash after the effect, before the offset commit (redelivered, applied again)"
            }
            (Mechanism::CrashAfterEffect, true) => {
                "Crash after the effect, before the ack (requeued, applied again)"
            }
            (Mechanism::CrashAfterCommit, false) => {
                "Offset committed before the effect, then a crash (never applied)"
            }
            (Mechanism::CrashAfterCommit, true) => {
                "Acked before the effect, then a crash (never applied)"
            }
            (Mechanism::NoAckDelivery, _) => {
                "Removed from the queue on delivery (no-ack), then a crash (never applied)"
            }
            (Mechanism::RevokedUncommitted, false) => {
                "Partition revoked before finished work was committed (the new owner redid it)"
            }
            (Mechanism::RevokedUncommitted, true) => {
                "Requeued from a live consumer before it acked finished work (another redid it)"
            }
            (Mechanism::Zombie, _) => {
                "Zombie: a paused or cut-off member kept working after its work moved"
            }
            (Mechanism::RedeliveredSameProcess, false) => {
                "Handed again to the same process without a rebalance (a seek back), applied again"
            }
            (Mechanism::RedeliveredSameProcess, true) => {
                "Handed again to the same process (its own requeue, a recover or a reconnect), applied again"
            }
            (Mechanism::ConsumerRetry, _) => "Consumer-side retry: one process applied it twice",
            (Mechanism::FetchedTwice, _) => {
                "Delivered twice in one Fetch response (a repeated batch), applied once per copy"
            }
            (Mechanism::ProducerDuplicate, _) => {
                "Stored twice by the broker (a producer retry), applied once per copy"
            }
            (Mechanism::RedeliveredAfterCommit, false) => {
                "Applied again although its offset commit had been accepted"
            }
            (Mechanism::RedeliveredAfterCommit, true) => {
                "Applied again although its ack had reached the broker"
            }
            (Mechanism::ChannelClosed, _) => {
                "Requeued when RabbitMQ closed the channel holding it unacked (a channel error such as a second ack of a tag), applied again"
            }
            (Mechanism::Skipped, false) => "Committed past by a live consumer, never applied",
            (Mechanism::Skipped, true) => "Acked by a live consumer, never applied",
            (Mechanism::DroppedByConsumer, _) => {
                "Rejected by the consumer without requeue, never applied"
            }
            (Mechanism::NeverDelivered, _) => {
                "Committed past by a consumer that never received it (offset reset or seek ahead)"
            }
            (Mechanism::OffsetResetSkipped, _) => {
                "Skipped by an offset reset: a Fetch answered OFFSET_OUT_OF_RANGE, the position jumped past it (never received, committed past)"
            }
            (Mechanism::UnfinishedAtEnd, false) => {
                "Committed before its effect; the run ended with the consumer still running (never applied)"
            }
            (Mechanism::UnfinishedAtEnd, true) => {
                "Acked before its effect; the run ended with the consumer still running (never applied)"
            }
            (Mechanism::EffectOutsideTransaction, _) => {
                "Effect outside the transaction: the transaction was aborted and redone, but this effect was not part of it and went out again"
            }
            (Mechanism::OutputWithoutTransaction, _) => {
                "Produced again: the output was written without a transaction, so the produce before the crash stayed when its offset commit never happened"
            }
            (Mechanism::AbortedThenCommitted, _) => {
                "Aborted, then committed again: read_committed saw it once, a read_uncommitted (non-transactional) reader downstream saw it twice (not counted as effects here)"
            }
            (Mechanism::AbortedNeverCommitted, _) => {
                "Aborted, never committed: a read_uncommitted (non-transactional) reader downstream saw output of work that never committed (phantom work; not counted as effects here)"
            }
            (Mechanism::Unexplained, _) => "Not enough evidence to name the mechanism",
        }
    }

    /// A short, plain recommendation.
    pub fn recommendation(self, amqp: bool) -> &'static str {
        match (self, amqp) {
            (Mechanism::CrashAfterEffect, _) => {
                "Make the effect idempotent (send an idempotency key the provider deduplicates on), or record the effect and the consumed position in one transaction (transactional outbox)."
            }
            (Mechanism::CrashAfterCommit, false) => {
                "Commit only after the effect has completed (disable auto-commit, or store offsets after processing); pair it with an idempotency key for the redeliveries that follow."
            }
            (Mechanism::CrashAfterCommit, true) => {
                "Ack only after the effect has completed; pair it with an idempotency key for the redeliveries that follow."
            }
            (Mechanism::NoAckDelivery, _) => {
                "Do not consume in no-ack (auto-ack) mode when losing work matters: use manual acks after the effect and a bounded prefetch."
            }
            (Mechanism::RevokedUncommitted, false) => {
                "Commit finished work in the partition-revoked callback (commit on revoke) and before a graceful shutdown; keep an idempotency key for the work still in flight."
            }
            (Mechanism::RevokedUncommitted, true) => {
                "Ack each message as soon as its effect is done (not in batches that a disconnect requeues), and keep an idempotency key for the work still in flight."
            }
            (Mechanism::Zombie, false) => {
                "Fence zombies: keep processing time well under max.poll.interval.ms and the session timeout, stop work when partitions are revoked or a commit fails with ILLEGAL_GENERATION / FENCED_MEMBER_EPOCH, and make effects idempotent."
            }
            (Mechanism::Zombie, true) => {
                "Stop work when the connection or channel closes (its unacked messages were requeued), and make effects idempotent."
            }
            (Mechanism::RedeliveredSameProcess, false) => {
                "The consumer moved its position back over finished work (a seek, a reset to the committed offset): commit finished work before seeking, and make the effect idempotent."
            }
            (Mechanism::RedeliveredSameProcess, true) => {
                "Do not requeue (nack or reject with requeue, recover) a message whose effect is already done: ack it, or make the effect idempotent so the redelivery is harmless."
            }
            (Mechanism::ConsumerRetry, _) => {
                "The consumer retried an effect within one process: send the same idempotency key on every retry, or check the first attempt's outcome before retrying."
            }
            (Mechanism::FetchedTwice, _) => {
                "The client does not drop a record repeated within one Fetch answer: make the effect idempotent (an idempotency key keyed by the message ID), or skip records at or below the last offset processed per partition."
            }
            (Mechanism::ProducerDuplicate, _) => {
                "Enable the idempotent producer (enable.idempotence=true) or deduplicate on the message ID."
            }
            (Mechanism::RedeliveredAfterCommit, false) => {
                "Check for offset resets (auto.offset.reset) or commits that did not stick; an idempotency key makes the repeat harmless."
            }
            (Mechanism::RedeliveredAfterCommit, true) => {
                "RabbitMQ may deliver a message again (marked redelivered) after its ack, when the ack was lost to a failover or a closed channel: deduplicate on the message ID, or send an idempotency key that makes the repeat harmless."
            }
            (Mechanism::ChannelClosed, _) => {
                "A channel error (a second ack of a delivery tag, an ack on another channel: 406 PRECONDITION_FAILED) closes the channel, and RabbitMQ requeues every delivery it held unacknowledged, finished work included: ack each tag once and on the channel that delivered it, drop the closed channel's deliveries (their acks can no longer land), and make the effect idempotent (keyed by the message ID) for the redeliveries that follow."
            }
            (Mechanism::Skipped, _) => {
                "The consumer marked work done that it never did: check filters, error handlers and early returns that commit (ack) without the effect."
            }
            (Mechanism::DroppedByConsumer, _) => {
                "The consumer threw the message away (nack or reject with requeue=false): requeue it, or route it to a dead-letter queue that something processes, unless dropping it is intended."
            }
            (Mechanism::NeverDelivered, _) => {
                "The consumer jumped over messages it never read: use auto.offset.reset=earliest for a group that must not miss work, and do not seek past uncommitted offsets."
            }
            (Mechanism::OffsetResetSkipped, _) => {
                "auto.offset.reset=latest turns an out-of-range fetch into silent loss: use `earliest` (or `none` and handle the error: alert, then seek to the committed offset or the log start), and monitor resets."
            }
            (Mechanism::UnfinishedAtEnd, _) => {
                "Mark work done only after its effect: a stop (a deploy, or the end of this run) loses whatever was marked done and not yet applied. If the run's deadline cut the work short, raise `limits.deadline`."
            }
            (Mechanism::EffectOutsideTransaction, _) => {
                "Kafka transactions cover only the records and offsets they write: an HTTP call, an email or a database write inside the loop is not undone when the transaction aborts. Make that effect idempotent (key it by the message ID), or produce it as a record inside the transaction and let a separate idempotent consumer of that topic perform it (transactional outbox)."
            }
            (Mechanism::OutputWithoutTransaction, _) => {
                "Produce and commit the consumed offsets in one Kafka transaction (transactional.id, sendOffsetsToTransaction, isolation.level=read_committed downstream), or have downstream readers deduplicate on the message ID."
            }
            (Mechanism::AbortedThenCommitted | Mechanism::AbortedNeverCommitted, _) => {
                "Aborted records stay in the log: read a transactionally written topic with isolation.level=read_committed everywhere downstream (Kafka's Java consumer defaults to read_uncommitted; connectors, stream processors and ad-hoc tools may read uncommitted). A reader that cannot must deduplicate on the message ID and must not act on output whose transaction never committed."
            }
            (Mechanism::Unexplained, _) => {
                "Route the consumer through the proxy (`consumer.via_proxy: true`) and use the http sink so commits, deliveries and effect owners are on the timeline."
            }
        }
    }
}
