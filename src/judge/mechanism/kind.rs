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
    /// The same process applied the effect more than once.
    ConsumerRetry,
    /// The broker stored the message twice (a producer retry): two offsets, one ID.
    ProducerDuplicate,
    /// Delivered and applied again although the broker had accepted a commit (ack) covering
    /// it (an offset reset, or a commit that did not stick).
    RedeliveredAfterCommit,
    /// A live consumer committed past the message without applying it (a filter or an error
    /// path that skips work).
    Skipped,
    /// The timeline lacks what naming the mechanism needs (see the evidence).
    Unexplained,
}

impl Mechanism {
    /// Snake-case name, as in report.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::CrashAfterEffect => "crash_after_effect",
            Mechanism::CrashAfterCommit => "crash_after_commit",
            Mechanism::NoAckDelivery => "no_ack_delivery",
            Mechanism::RevokedUncommitted => "revoked_uncommitted",
            Mechanism::Zombie => "zombie",
            Mechanism::ConsumerRetry => "consumer_retry",
            Mechanism::ProducerDuplicate => "producer_duplicate",
            Mechanism::RedeliveredAfterCommit => "redelivered_after_commit",
            Mechanism::Skipped => "skipped",
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
            (Mechanism::ConsumerRetry, _) => "Consumer-side retry: one process applied it twice",
            (Mechanism::ProducerDuplicate, _) => {
                "Stored twice by the broker (a producer retry), applied once per copy"
            }
            (Mechanism::RedeliveredAfterCommit, false) => {
                "Applied again although its offset commit had been accepted"
            }
            (Mechanism::RedeliveredAfterCommit, true) => {
                "Applied again although its ack had reached the broker"
            }
            (Mechanism::Skipped, false) => "Committed past by a live consumer, never applied",
            (Mechanism::Skipped, true) => "Acked by a live consumer, never applied",
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
            (Mechanism::ConsumerRetry, _) => {
                "The consumer retried an effect within one process: send the same idempotency key on every retry, or check the first attempt's outcome before retrying."
            }
            (Mechanism::ProducerDuplicate, _) => {
                "Enable the idempotent producer (enable.idempotence=true) or deduplicate on the message ID."
            }
            (Mechanism::RedeliveredAfterCommit, _) => {
                "Check for offset resets (auto.offset.reset) or commits that did not stick; an idempotency key makes the repeat harmless."
            }
            (Mechanism::Skipped, _) => {
                "The consumer marked work done that it never did: check filters, error handlers and early returns that commit (ack) without the effect."
            }
            (Mechanism::Unexplained, _) => {
                "Route the consumer through the proxy (`consumer.via_proxy: true`) and use the http sink so commits, deliveries and effect owners are on the timeline."
            }
        }
    }
}
