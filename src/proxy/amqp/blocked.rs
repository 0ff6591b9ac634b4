//! The `amqp: blocked` fault: what RabbitMQ does to a connection under a resource alarm. The
//! proxy sends the consumer `connection.blocked` ("low on memory", RabbitMQ's reason under a
//! memory alarm), holds the connection's publishes for the fault's length (RabbitMQ stops
//! reading a blocked connection once it publishes, so everything after a publish waits too),
//! then sends `connection.unblocked` and lets them go, each recorded as a `held` event at
//! `publish`.
//!
//! RabbitMQ notifies only a client that announced the `connection.blocked` capability in its
//! `connection.start-ok` client-properties; the proxy reads that announcement and arms the
//! fault only on such a connection (a target without one: not applied, and the fault event
//! says why).
//!
//! Invariants: a publish is held only between `connection.blocked` written and
//! `connection.unblocked` written; every hold ends once `connection.unblocked` is written, or
//! when the connection ends; the fault's answer is sent once `connection.blocked` is on the
//! consumer's socket.

use std::sync::atomic::Ordering;
use std::time::Duration;

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use tokio::time::Instant;

use super::conn::Conn;
use super::framing::{frame_parts, method_ids, BASIC, BASIC_PUBLISH};
use super::inject::Answer;
use super::lock;
use crate::proxy::control::Sent;
use crate::timeline::{Event, HeldAt};

/// RabbitMQ's reason in `connection.blocked` under a memory alarm.
pub(super) const BLOCKED_REASON: &str = "low on memory";

/// Where an armed `blocked` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockStage {
    /// `connection.blocked` to be written to the consumer.
    Notify,
    /// Written; publishes held until this instant.
    Blocked(Instant),
    /// `connection.unblocked` to be written to the consumer.
    Unblock,
}

/// An armed `amqp: blocked`.
#[derive(Debug)]
pub(super) struct Block {
    /// Answered once `connection.blocked` is on the consumer's socket (taken then).
    answer: Option<Answer>,
    length: Duration,
    stage: BlockStage,
}

/// Whether `client_properties` announce the `connection.blocked` capability.
pub(super) fn announces_blocked(client_properties: &FieldTable) -> bool {
    let Some(AMQPValue::FieldTable(capabilities)) = client_properties.inner().get("capabilities")
    else {
        return false;
    };
    matches!(
        capabilities.inner().get("connection.blocked"),
        Some(AMQPValue::Boolean(true))
    )
}

/// A method frame on channel 0 of the connection class, encoded.
fn connection_frame(method: connection::AMQPMethod) -> Option<Bytes> {
    let frame = AMQPFrame::Method(0, AMQPClass::Connection(method));
    let written = gen_frame(&frame)(WriteContext::from(Vec::new())).ok()?;
    Some(Bytes::from(written.write))
}

impl Conn {
    /// Whether the consumer's client announced the `connection.blocked` capability.
    pub(super) fn announced_blocked(&self) -> bool {
        self.blocked_capable.load(Ordering::Relaxed)
    }

    /// Arms a `blocked` of `length`; gives the answer back when this connection's client did
    /// not announce the capability or a `blocked` is armed already.
    pub(super) fn arm_blocked(&self, answer: Answer, length: Duration) -> Result<(), Answer> {
        if !self.announced_blocked() {
            return Err(answer);
        }
        let mut block = lock(&self.block);
        if block.is_some() {
            return Err(answer);
        }
        *block = Some(Block {
            answer: Some(answer),
            length,
            stage: BlockStage::Notify,
        });
        drop(block);
        self.wake_client_side.notify_one();
        Ok(())
    }

    /// The `blocked` frame due toward the consumer, with its stage; `None` when none is due.
    /// Changes nothing but forgetting a fault the nemesis gave up on before it was sent, and
    /// turning a block whose time is up into a due `connection.unblocked` (publishes stay held
    /// until it is written).
    pub(super) fn block_due(&self) -> Option<(Bytes, BlockStage)> {
        let mut block = lock(&self.block);
        let b = block.as_mut()?;
        let method = match b.stage {
            BlockStage::Notify if b.answer.as_ref().is_none_or(|a| a.is_closed()) => {
                // The nemesis gave up waiting (recorded as not applied): never send it late.
                *block = None;
                return None;
            }
            BlockStage::Notify => connection::AMQPMethod::Blocked(connection::Blocked {
                reason: BLOCKED_REASON.into(),
            }),
            BlockStage::Blocked(until) if Instant::now() >= until => {
                b.stage = BlockStage::Unblock;
                connection::AMQPMethod::Unblocked(connection::Unblocked {})
            }
            BlockStage::Unblock => connection::AMQPMethod::Unblocked(connection::Unblocked {}),
            BlockStage::Blocked(_) => return None,
        };
        Some((connection_frame(method)?, b.stage))
    }

    /// When the armed `blocked` is due to end (the consumer side wakes then).
    pub(super) fn block_ends(&self) -> Option<Instant> {
        match lock(&self.block).as_ref()?.stage {
            BlockStage::Blocked(until) => Some(until),
            BlockStage::Notify | BlockStage::Unblock => None,
        }
    }

    /// The `blocked` frame of `stage` was written: publishes are held from now on, or let go.
    pub(super) fn block_written(&self, stage: BlockStage) {
        let mut block = lock(&self.block);
        let Some(b) = block.as_mut() else { return };
        match stage {
            BlockStage::Notify => {
                b.stage = BlockStage::Blocked(Instant::now() + b.length);
                let detail = format!(
                    "sent connection.blocked (reason \"{BLOCKED_REASON}\", as RabbitMQ under a \
                     memory alarm) to consumer[{}] for {:.1}s: its publishes were held \
                     meanwhile, then connection.unblocked",
                    self.instance,
                    b.length.as_secs_f64()
                );
                if let Some(answer) = b.answer.take() {
                    let _ = answer.send(Ok(Sent {
                        detail,
                        instance: self.instance,
                        incarnation: self.incarnation,
                    }));
                }
            }
            BlockStage::Blocked(_) | BlockStage::Unblock => {
                *block = None;
                drop(block);
                self.unblocked.notify_waiters();
            }
        }
    }

    /// Holds a client frame while the connection is blocked, if it is a `basic.publish`: until
    /// `connection.unblocked` is written. Records the hold as a `held` event at `publish`.
    pub(super) async fn hold_if_publishing(&self, frame: &[u8]) {
        let publishes = frame_parts(frame)
            .filter(|(kind, _, _)| *kind == 1)
            .and_then(|(_, _, payload)| method_ids(payload))
            == Some((BASIC, BASIC_PUBLISH));
        if !publishes {
            return;
        }
        let start = Instant::now();
        let mut waited = false;
        loop {
            let unblocked = self.unblocked.notified();
            tokio::pin!(unblocked);
            // Registered before the state is read: an unblock in between still wakes it.
            unblocked.as_mut().enable();
            let blocked = matches!(
                lock(&self.block).as_ref().map(|b| b.stage),
                Some(BlockStage::Blocked(_) | BlockStage::Unblock)
            );
            if !blocked {
                break;
            }
            waited = true;
            unblocked.await;
        }
        if !waited {
            return;
        }
        let held = start.elapsed();
        self.shared.timeline.record(Event::Held {
            instance: self.instance,
            incarnation: self.incarnation,
            at: HeldAt::Publish,
            event: 0,
            held_us: held.as_micros() as u64,
            released: true,
        });
    }
}
