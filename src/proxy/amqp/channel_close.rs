//! The `amqp: double-ack` fault: RabbitMQ's answer to a second ack of a delivery tag, a
//! server-sent `channel.close` 406 PRECONDITION_FAILED ("unknown delivery tag N") on the ack's
//! channel, with the broker's side of it made real: the proxy closes the same channel at
//! RabbitMQ, so RabbitMQ requeues every delivery the channel held unacknowledged.
//!
//! The stages, one after the other ([`CloseStage`]):
//! 1. `channel.close` (200) to RabbitMQ on the channel of the consumer's last forwarded ack;
//! 2. once written, the client's frames on that channel are dropped (RabbitMQ ignores a closing
//!    channel's frames; an ack among them is recorded as dropped), and RabbitMQ's `close-ok`
//!    is swallowed: the channel is closed at RabbitMQ, recorded as a `channel_closed` event
//!    with the IDs it requeued;
//! 3. then `channel.close` 406 to the consumer (the fault's answer once it is written);
//! 4. the consumer's `close-ok` is swallowed, and its frames on the channel are dropped until
//!    then. A consumer that closes the channel itself meanwhile is answered `close-ok`, as
//!    RabbitMQ answers a `channel.close` on a closing channel.
//!
//! Invariants: the consumer hears of the close only once RabbitMQ has closed the channel (so a
//! `channel.open` of the same number that follows reaches a broker that has forgotten it); no
//! frame of the consumer on that channel reaches RabbitMQ from the close on; RabbitMQ's frames
//! before its `close-ok` are forwarded (deliveries it sent before the close, requeued with the
//! rest).

use bytes::Bytes;

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{channel, AMQPClass};

use super::acks::AckRecord;
use super::conn::Conn;
use super::framing::{
    frame_parts, method_ids, BASIC, BASIC_ACK, BASIC_NACK, BASIC_REJECT, CHANNEL, CHANNEL_CLOSE,
    CHANNEL_CLOSE_OK,
};
use super::inject::Answer;
use super::lock;
use crate::proxy::control::Sent;
use crate::timeline::{AckPhase, Event, CHANNEL_CLOSE_SENT};

/// RabbitMQ's reply code for a channel exception of a wrong precondition (a second ack).
const PRECONDITION_FAILED: u16 = 406;

/// Where an armed `double-ack` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CloseStage {
    /// `channel.close` to be written to RabbitMQ.
    ToBroker,
    /// Written to RabbitMQ; its `close-ok` awaited (swallowed).
    AwaitBrokerCloseOk,
    /// Closed at RabbitMQ; the 406 `channel.close` to be written to the consumer.
    ToClient,
    /// Written to the consumer; its `close-ok` awaited (swallowed).
    AwaitClientCloseOk,
    /// The consumer closed the channel itself; `close-ok` to be written to it.
    CloseOkToClient,
}

/// An armed `amqp: double-ack`.
#[derive(Debug)]
pub(super) struct ChannelClose {
    /// Answered once the 406 is on the consumer's socket (taken then).
    answer: Option<Answer>,
    channel: u16,
    /// The delivery tag whose second ack RabbitMQ refuses (the last one acked).
    tag: u64,
    stage: CloseStage,
    /// The consumer sent `channel.close` on the channel before it got the 406.
    client_closed: bool,
    /// Deliveries RabbitMQ requeued when it closed the channel.
    requeued: usize,
}

/// A `channel.close` or `channel.close-ok` on `channel`, encoded.
fn channel_frame(channel: u16, method: channel::AMQPMethod) -> Option<Bytes> {
    let frame = AMQPFrame::Method(channel, AMQPClass::Channel(method));
    let written = gen_frame(&frame)(WriteContext::from(Vec::new())).ok()?;
    Some(Bytes::from(written.write))
}

/// The (class, method) of a method frame on `channel`, if `frame` is one.
fn method_on(frame: &[u8]) -> Option<(u16, (u16, u16))> {
    let (kind, ch, payload) = frame_parts(frame)?;
    if kind != 1 {
        return None;
    }
    Some((ch, method_ids(payload)?))
}

impl Conn {
    /// Remembers the channel and client tag of an ack that reached RabbitMQ's socket (the one
    /// a `double-ack` acks twice).
    pub(super) fn ack_forwarded(&self, ack: &AckRecord) {
        *lock(&self.last_ack) = Some((ack.channel, ack.delivery_tag));
    }

    /// Arms a `double-ack` on the channel of this connection's last forwarded ack; gives the
    /// answer back when one is armed already, no ack was forwarded, or its channel closed.
    pub(super) fn arm_double_ack(&self, answer: Answer) -> Result<(), Answer> {
        let Some((channel, tag)) = *lock(&self.last_ack) else {
            return Err(answer);
        };
        if !lock(&self.channels).contains_key(&channel) {
            return Err(answer);
        }
        let mut closing = lock(&self.closing);
        if closing.is_some() {
            return Err(answer);
        }
        *closing = Some(ChannelClose {
            answer: Some(answer),
            channel,
            tag,
            stage: CloseStage::ToBroker,
            client_closed: false,
            requeued: 0,
        });
        drop(closing);
        self.wake_broker_side.notify_one();
        Ok(())
    }

    /// The armed `double-ack`'s frame due toward RabbitMQ (`to_broker`) or the consumer, with
    /// its stage; `None` when none is due there. Changes nothing but forgetting a fault the
    /// nemesis gave up on before anything was written.
    pub(super) fn close_due(&self, to_broker: bool) -> Option<(Bytes, CloseStage)> {
        let mut closing = lock(&self.closing);
        let c = closing.as_ref()?;
        if c.stage == CloseStage::ToBroker && c.answer.as_ref().is_none_or(|a| a.is_closed()) {
            // The nemesis gave up waiting (recorded as not applied): never start it late.
            *closing = None;
            return None;
        }
        let method = match (c.stage, to_broker) {
            (CloseStage::ToBroker, true) => channel::AMQPMethod::Close(channel::Close {
                reply_code: 200,
                reply_text: "exactly: amqp double-ack fault".into(),
                class_id: 0,
                method_id: 0,
            }),
            (CloseStage::ToClient, false) => channel::AMQPMethod::Close(channel::Close {
                reply_code: PRECONDITION_FAILED,
                reply_text: format!("PRECONDITION_FAILED - unknown delivery tag {}", c.tag).into(),
                class_id: BASIC,
                method_id: BASIC_ACK,
            }),
            (CloseStage::CloseOkToClient, false) => {
                channel::AMQPMethod::CloseOk(channel::CloseOk {})
            }
            _ => return None,
        };
        Some((channel_frame(c.channel, method)?, c.stage))
    }

    /// The `double-ack` frame of `stage` was written: on to the next stage, or answered.
    pub(super) fn close_written(&self, stage: CloseStage) {
        let mut closing = lock(&self.closing);
        let Some(c) = closing.as_mut().filter(|c| c.stage == stage) else {
            return;
        };
        match stage {
            CloseStage::ToBroker => c.stage = CloseStage::AwaitBrokerCloseOk,
            CloseStage::ToClient => {
                c.stage = CloseStage::AwaitClientCloseOk;
                let detail = format!(
                    "{CHANNEL_CLOSE_SENT} - unknown delivery tag {} (channel {}) to consumer[{}], \
                     as RabbitMQ answers a second ack of a tag; the proxy had closed channel {} \
                     at RabbitMQ first, which requeued the {} deliveries it held unacknowledged",
                    c.tag, c.channel, self.instance, c.channel, c.requeued
                );
                if let Some(answer) = c.answer.take() {
                    let _ = answer.send(Ok(Sent {
                        detail,
                        instance: self.instance,
                        incarnation: self.incarnation,
                    }));
                }
            }
            CloseStage::CloseOkToClient => *closing = None,
            CloseStage::AwaitBrokerCloseOk | CloseStage::AwaitClientCloseOk => {}
        }
    }

    /// Whether a broker frame is RabbitMQ's `close-ok` to the proxy's own `channel.close`
    /// (swallowed: the consumer never asked). On it, the channel is closed at RabbitMQ: its
    /// state is forgotten, a `channel_closed` event lists what RabbitMQ requeued, and the 406
    /// is due to the consumer.
    pub(super) fn swallow_broker_frame(&self, frame: &[u8]) -> bool {
        let Some((ch, ids)) = method_on(frame) else {
            return false;
        };
        let mut closing = lock(&self.closing);
        let Some(c) = closing.as_mut().filter(|c| {
            c.channel == ch
                && c.stage == CloseStage::AwaitBrokerCloseOk
                && ids == (CHANNEL, CHANNEL_CLOSE_OK)
        }) else {
            return false;
        };
        let held = lock(&self.channels)
            .remove(&ch)
            .map(|s| s.outstanding)
            .unwrap_or_default();
        c.requeued = held.len();
        c.stage = if c.client_closed {
            CloseStage::CloseOkToClient
        } else {
            CloseStage::ToClient
        };
        if c.client_closed {
            if let Some(answer) = c.answer.take() {
                let _ = answer.send(Err(format!(
                    "consumer[{}] closed channel {ch} itself before the 406 could be sent \
                     (the channel was closed at RabbitMQ, which requeued the {} deliveries it \
                     held unacknowledged)",
                    self.instance,
                    held.len()
                )));
            }
        }
        drop(closing);
        self.shared.timeline.record(Event::ChannelClosed {
            instance: self.instance,
            incarnation: self.incarnation,
            channel: ch,
            requeued: held.into_values().flatten().collect(),
            detail: "the proxy closed it for an `amqp: double-ack` fault, as RabbitMQ closes \
                     a channel on a second ack of a tag"
                .into(),
        });
        self.wake_client_side.notify_one();
        true
    }

    /// Whether a client frame is on a channel the `double-ack` is closing (dropped, as RabbitMQ
    /// ignores a closing channel's frames): an ack among them is recorded as a request that
    /// was dropped; the consumer's `close-ok` ends the fault; its own `channel.close` is
    /// answered with `close-ok`.
    pub(super) fn drop_client_frame(&self, frame: &[u8]) -> bool {
        let Some((kind, ch, payload)) = frame_parts(frame) else {
            return false;
        };
        let mut closing = lock(&self.closing);
        let Some(c) = closing
            .as_mut()
            .filter(|c| c.channel == ch && c.stage != CloseStage::ToBroker)
        else {
            return false;
        };
        let ids = if kind == 1 { method_ids(payload) } else { None };
        match (ids, c.stage) {
            (Some((CHANNEL, CHANNEL_CLOSE_OK)), CloseStage::AwaitClientCloseOk) => {
                *closing = None;
            }
            (Some((CHANNEL, CHANNEL_CLOSE)), CloseStage::AwaitBrokerCloseOk) => {
                c.client_closed = true;
            }
            (Some((CHANNEL, CHANNEL_CLOSE)), CloseStage::ToClient) => {
                c.stage = CloseStage::CloseOkToClient;
                if let Some(answer) = c.answer.take() {
                    let _ = answer.send(Err(format!(
                        "consumer[{}] closed channel {ch} itself before the 406 could be sent \
                         (the channel was closed at RabbitMQ, which requeued the {} \
                         deliveries it held unacknowledged)",
                        self.instance, c.requeued
                    )));
                }
                drop(closing);
                self.wake_client_side.notify_one();
            }
            (Some((CHANNEL, CHANNEL_CLOSE)), CloseStage::AwaitClientCloseOk) => {
                c.stage = CloseStage::CloseOkToClient;
                drop(closing);
                self.wake_client_side.notify_one();
            }
            (Some((BASIC, BASIC_ACK | BASIC_NACK | BASIC_REJECT)), _) => {
                drop(closing);
                if let Some(ack) = self.on_client_frame(frame) {
                    self.ack_event(&ack, AckPhase::Request);
                    self.ack_event(&ack, AckPhase::Dropped);
                }
            }
            _ => {}
        }
        true
    }
}
