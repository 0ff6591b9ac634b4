//! Protocol faults the proxy injects toward the consumer (`amqp:` faults), and the bookkeeping
//! that keeps RabbitMQ consistent with them.
//!
//! `redeliver`: once armed on a connection, the next delivery the broker sends on it is
//! forwarded, then sent again at once with `redelivered=true` under a delivery tag of the
//! proxy's own: the tag the broker's next delivery on that channel would have had. From then on
//! the channel has two tag spaces: the client's, where every forged tag is one more than the
//! broker's count below it, and the broker's. Broker deliveries (`basic.deliver`,
//! `basic.get-ok`) are shifted up by the forged tags issued before them; client acks
//! (`basic.ack` / `basic.nack` / `basic.reject`) are shifted back down, and one that names only
//! forged tags is absorbed (RabbitMQ never hears of a tag it did not issue). A `multiple` ack
//! up to a forged tag settles the broker's tags below it; tag 0 with `multiple` ("all") passes
//! as is.
//!
//! `cancel`: a `basic.cancel` (nowait) of the connection's first consumer is written to RabbitMQ
//! (so it delivers nothing more to it and expects no answer), then, once that is on the
//! broker's socket, to the consumer, as RabbitMQ's own consumer-cancel notification (nowait:
//! the client sends no `cancel-ok`). Each side's frame waits until that direction is between
//! frames and outside any content ([`ContentFollower`]).
//!
//! Invariants: the tag space of a channel changes only when a forged delivery was written; a
//! channel that closes forgets its forged tags with the rest of its state (both sides start
//! again from 1); the fault's outcome is answered only once the copy is on the consumer's
//! socket, or when the connection ends first (the sender dropped).

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use amq_protocol::frame::parsing::parse_content_header;

use super::blocked::BlockStage;
use super::channel_close::CloseStage;
use super::conn::Conn;
use super::deliveries::message_id;
use super::framing::{
    frame_parts, method_ids, BASIC, BASIC_ACK, BASIC_DELIVER, BASIC_GET_OK, BASIC_NACK,
    BASIC_REJECT,
};
use super::lock;
use crate::proxy::control::Sent;
use crate::timeline::{Event, CANCEL_SENT};

/// Where an injected fault's outcome goes: what was sent, or why not.
pub(super) type Answer = tokio::sync::oneshot::Sender<Result<Sent, String>>;

/// An armed `redeliver` and the delivery it copies, as far as it has arrived.
#[derive(Debug)]
pub(super) struct Capture {
    /// Answered once the copy was written (or dropped with the connection).
    pub(super) answer: tokio::sync::oneshot::Sender<Result<Sent, String>>,
    /// The delivery being copied: its channel, client tag, frames so far and body bytes left
    /// (None until its content header came).
    pub(super) copying: Option<Copying>,
}

/// The delivery a `redeliver` copies.
#[derive(Debug)]
pub(super) struct Copying {
    channel: u16,
    tag: u64,
    /// Its message ID, from its content header.
    id: Option<String>,
    frames: BytesMut,
    body_left: Option<u64>,
}

/// A forged delivery appended to a forwarded frame, waiting to be confirmed written.
#[derive(Debug)]
pub(super) struct Forged {
    answer: tokio::sync::oneshot::Sender<Result<Sent, String>>,
    id: Option<String>,
    channel: u16,
    tag: u64,
    original: u64,
}

/// Offset of the delivery tag in a method payload: after the consumer tag for `basic.deliver`,
/// first for `basic.get-ok` and the client's acks.
fn tag_offset(class: u16, method: u16, payload: &[u8]) -> Option<usize> {
    match (class, method) {
        (BASIC, BASIC_DELIVER) => Some(5 + usize::from(*payload.get(4)?)),
        (BASIC, BASIC_GET_OK | BASIC_ACK | BASIC_NACK | BASIC_REJECT) => Some(4),
        _ => None,
    }
    .filter(|at| payload.len() >= at + 9)
}

/// The frame's delivery tag (frame offset, value) for the methods above.
pub(super) fn frame_tag(frame: &[u8]) -> Option<(usize, u64)> {
    let (kind, _, payload) = frame_parts(frame)?;
    if kind != 1 {
        return None;
    }
    let (class, method) = method_ids(payload)?;
    let at = 7 + tag_offset(class, method, payload)?;
    let tag = u64::from_be_bytes(frame[at..at + 8].try_into().ok()?);
    Some((at, tag))
}

/// `frame` with its delivery tag (at frame offset `at`) replaced.
fn with_tag(frame: &[u8], at: usize, tag: u64) -> BytesMut {
    let mut out = BytesMut::from(frame);
    out[at..at + 8].copy_from_slice(&tag.to_be_bytes());
    out
}

impl Conn {
    /// Arms a `redeliver` on this connection: false when one is armed already.
    pub(super) fn arm_redeliver(
        &self,
        answer: tokio::sync::oneshot::Sender<Result<Sent, String>>,
    ) -> Result<(), tokio::sync::oneshot::Sender<Result<Sent, String>>> {
        let mut capture = lock(&self.capture);
        if capture.is_some() {
            return Err(answer);
        }
        *capture = Some(Capture {
            answer,
            copying: None,
        });
        self.capturing.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// A broker frame in the client's tag space: a delivery on a channel with forged tags has
    /// its tag shifted up by their number.
    pub(super) fn to_client(&self, frame: Bytes) -> Bytes {
        if !self.forged_any.load(Ordering::Relaxed) {
            return frame;
        }
        let Some((at, tag)) = frame_tag(&frame) else {
            return frame;
        };
        let Some((_, ch, _)) = frame_parts(&frame) else {
            return frame;
        };
        let shift = lock(&self.channels)
            .get(&ch)
            .map_or(0, |s| s.forged.len() as u64);
        if shift == 0 {
            return frame;
        }
        with_tag(&frame, at, tag + shift).freeze()
    }

    /// A client ack in the broker's tag space: `None` when it names only forged tags (absorbed).
    pub(super) fn to_broker(&self, frame: Bytes, multiple: bool) -> Option<Bytes> {
        if !self.forged_any.load(Ordering::Relaxed) {
            return Some(frame);
        }
        let Some((at, tag)) = frame_tag(&frame) else {
            return Some(frame);
        };
        let Some((_, ch, _)) = frame_parts(&frame) else {
            return Some(frame);
        };
        let channels = lock(&self.channels);
        let forged = channels.get(&ch).map_or(&[][..], |s| &s.forged[..]);
        if forged.is_empty() || (multiple && tag == 0) {
            return Some(frame);
        }
        if !multiple && forged.contains(&tag) {
            return None;
        }
        let below = forged.iter().filter(|f| **f <= tag).count() as u64;
        let broker_tag = tag - below;
        if broker_tag == 0 {
            return None;
        }
        Some(with_tag(&frame, at, broker_tag).freeze())
    }

    /// Follows an armed `redeliver` through one forwarded broker frame (already in the client's
    /// tag space): copies the next delivery's frames and, once it is whole, returns its copy
    /// with `redelivered=true` and the forged tag, to be written right after it.
    pub(super) fn capture(&self, frame: &[u8]) -> Option<(Bytes, Forged)> {
        if !self.capturing.load(Ordering::Relaxed) {
            return None;
        }
        let (kind, ch, payload) = frame_parts(frame)?;
        let mut guard = lock(&self.capture);
        if guard.as_ref().is_some_and(|c| c.answer.is_closed()) {
            // The nemesis gave up waiting (recorded as not applied): never send it late.
            *guard = None;
            self.capturing.store(false, Ordering::Relaxed);
            return None;
        }
        let capture = guard.as_mut()?;
        match (&mut capture.copying, kind) {
            (None, 1) => {
                if method_ids(payload)? != (BASIC, BASIC_DELIVER) {
                    return None;
                }
                let (_, tag) = frame_tag(frame)?;
                capture.copying = Some(Copying {
                    channel: ch,
                    tag,
                    id: None,
                    frames: BytesMut::from(frame),
                    body_left: None,
                });
                return None;
            }
            (Some(c), 2) if c.channel == ch && c.body_left.is_none() => {
                let size = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
                c.frames.extend_from_slice(frame);
                c.body_left = Some(size);
                c.id = parse_content_header(payload)
                    .ok()
                    .and_then(|(_, h)| message_id(&h.properties));
            }
            (Some(c), 3) if c.channel == ch && c.body_left.is_some() => {
                c.frames.extend_from_slice(frame);
                let left = c.body_left.unwrap_or(0);
                c.body_left = Some(left.saturating_sub(payload.len() as u64));
            }
            _ => return None,
        }
        let whole = capture
            .copying
            .as_ref()
            .is_some_and(|c| c.body_left == Some(0));
        if !whole {
            return None;
        }
        let Capture { answer, copying } = guard.take()?;
        self.capturing.store(false, Ordering::Relaxed);
        drop(guard);
        let c = copying?;
        Some(self.forge(c, answer))
    }

    /// The copy of a whole delivery under the channel's next tag, `redelivered=true`; the
    /// channel's tag space shifts from now on.
    fn forge(
        &self,
        c: Copying,
        answer: tokio::sync::oneshot::Sender<Result<Sent, String>>,
    ) -> (Bytes, Forged) {
        let forged_tag = c.tag + 1;
        let mut frames = c.frames;
        if let Some((at, _)) = frame_tag(&frames) {
            frames[at..at + 8].copy_from_slice(&forged_tag.to_be_bytes());
            // The bits after the tag: redelivered is bit 0.
            frames[at + 8] |= 1;
        }
        {
            let mut channels = lock(&self.channels);
            let state = channels.entry(c.channel).or_default();
            state.forged.push(forged_tag);
            // Tracked like the original: a no-ack consumer's copy awaits no ack either.
            if state.outstanding.contains_key(&c.tag) {
                state.outstanding.insert(forged_tag, c.id.clone());
            }
        }
        self.forged_any.store(true, Ordering::Relaxed);
        let forged = Forged {
            answer,
            id: c.id,
            channel: c.channel,
            tag: forged_tag,
            original: c.tag,
        };
        (frames.freeze(), forged)
    }

    /// A forged delivery is on the consumer's socket: its `delivered` event, and the fault's
    /// answer with what was sent.
    pub(super) fn forged_written(&self, forged: Forged) {
        let id = forged.id;
        if let Some(id) = &id {
            self.shared.timeline.record(Event::Delivered {
                id: id.clone(),
                instance: self.instance,
                incarnation: self.incarnation,
                partition: None,
                offset: i64::try_from(forged.tag).ok(),
                redelivered: true,
            });
        }
        let detail = format!(
            "re-sent delivery {} of consumer[{}] (ID {}) on channel {} as delivery {} with \
             redelivered=true; acks of tag {} are absorbed, later broker tags shifted by one",
            forged.original,
            self.instance,
            id.as_deref().unwrap_or("unknown"),
            forged.channel,
            forged.tag,
            forged.tag
        );
        let _ = forged.answer.send(Ok(Sent {
            detail,
            instance: self.instance,
            incarnation: self.incarnation,
        }));
    }
}

/// Where an armed `cancel` stands: first toward RabbitMQ (so it stops delivering to the
/// consumer), then toward the consumer (as RabbitMQ's own consumer-cancel notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CancelStage {
    /// `basic.cancel` (nowait) to be written to the broker.
    ToBroker,
    /// Written to the broker; `basic.cancel` (nowait) to be written to the consumer.
    ToClient,
}

/// The side of a connection an injected frame goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// Toward RabbitMQ.
    Broker,
    /// Toward the consumer.
    Client,
}

/// An injected frame, named so that its fault hears once it is written.
#[derive(Debug, Clone, Copy)]
pub(super) enum Injected {
    /// A frame of an `amqp: cancel`.
    Cancel(CancelStage),
    /// A frame of an `amqp: double-ack`.
    Close(CloseStage),
    /// A frame of an `amqp: blocked`.
    Block(BlockStage),
}

/// An armed `amqp: cancel`.
#[derive(Debug)]
pub(super) struct Cancel {
    answer: tokio::sync::oneshot::Sender<Result<Sent, String>>,
    channel: u16,
    consumer_tag: String,
    stage: CancelStage,
}

/// Follows one direction's content (a method with content, its header, its body frames), so
/// nothing is injected on a channel between them.
#[derive(Debug, Default)]
pub(super) struct ContentFollower {
    /// The channel whose content is in flight, and its body bytes left (None: header next).
    on: Option<(u16, Option<u64>)>,
}

impl ContentFollower {
    /// Follows one frame of this direction.
    pub(super) fn follow(&mut self, frame: &[u8]) {
        let Some((kind, ch, payload)) = frame_parts(frame) else {
            return;
        };
        match (kind, self.on) {
            (1, _) => {
                let ids = method_ids(payload);
                // basic.publish, basic.return, basic.deliver, basic.get-ok carry content.
                if matches!(ids, Some((BASIC, 40 | 50 | BASIC_DELIVER | BASIC_GET_OK))) {
                    self.on = Some((ch, None));
                }
            }
            (2, Some((on, None))) if on == ch => {
                let size = payload
                    .get(4..12)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                self.on = (size > 0).then_some((ch, Some(size)));
            }
            (3, Some((on, Some(left)))) if on == ch => {
                let left = left.saturating_sub(payload.len() as u64);
                self.on = (left > 0).then_some((ch, Some(left)));
            }
            _ => {}
        }
    }

    /// No content is in flight: a frame may be injected.
    pub(super) fn between(&self) -> bool {
        self.on.is_none()
    }
}

/// A `basic.cancel` with `nowait` on `channel` for `consumer_tag`, encoded.
fn cancel_frame(channel: u16, consumer_tag: &str) -> Option<Bytes> {
    use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
    use amq_protocol::protocol::{basic, AMQPClass};
    let frame = AMQPFrame::Method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: consumer_tag.into(),
            nowait: true,
        })),
    );
    let written = gen_frame(&frame)(WriteContext::from(Vec::new())).ok()?;
    Some(Bytes::from(written.write))
}

impl Conn {
    /// Arms a `cancel` of this connection's first consumer; gives the answer back when a fault
    /// is armed already or no consumer is known.
    pub(super) fn arm_cancel(
        &self,
        answer: tokio::sync::oneshot::Sender<Result<Sent, String>>,
    ) -> Result<(), tokio::sync::oneshot::Sender<Result<Sent, String>>> {
        let consumer = {
            let channels = lock(&self.channels);
            let mut all: Vec<(u16, String)> = channels
                .iter()
                .flat_map(|(ch, s)| s.no_ack_of.keys().map(|t| (*ch, t.clone())))
                .collect();
            all.sort();
            all.into_iter().next()
        };
        let mut cancel = lock(&self.cancel);
        let Some((channel, consumer_tag)) = consumer.filter(|_| cancel.is_none()) else {
            return Err(answer);
        };
        *cancel = Some(Cancel {
            answer,
            channel,
            consumer_tag,
            stage: CancelStage::ToBroker,
        });
        drop(cancel);
        self.wake_broker_side.notify_one();
        Ok(())
    }

    /// The armed cancel's frame for the side at `stage`, if one is due there. Changes nothing
    /// but forgetting a cancel the nemesis gave up on.
    fn cancel_frame(&self, stage: CancelStage) -> Option<Bytes> {
        let mut cancel = lock(&self.cancel);
        if cancel.as_ref().is_some_and(|c| c.answer.is_closed()) {
            // The nemesis gave up waiting (recorded as not applied).
            *cancel = None;
        }
        cancel
            .as_ref()
            .filter(|c| c.stage == stage)
            .and_then(|c| cancel_frame(c.channel, &c.consumer_tag))
    }

    /// The next frame an armed fault has due toward `side`, once one is; waits. Cancel-safe:
    /// the state changes only when [`Conn::injected_written`] hears it was written.
    pub(super) async fn due(&self, side: Side) -> (Bytes, Injected) {
        let (wake, stage) = match side {
            Side::Broker => (&self.wake_broker_side, CancelStage::ToBroker),
            Side::Client => (&self.wake_client_side, CancelStage::ToClient),
        };
        loop {
            if let Some(frame) = self.cancel_frame(stage) {
                return (frame, Injected::Cancel(stage));
            }
            if let Some((frame, stage)) = self.close_due(side == Side::Broker) {
                return (frame, Injected::Close(stage));
            }
            let block_ends = match side {
                Side::Client => self.block_ends(),
                Side::Broker => None,
            };
            if let Some((frame, stage)) = (side == Side::Client).then(|| self.block_due()).flatten()
            {
                return (frame, Injected::Block(stage));
            }
            match block_ends {
                Some(at) => {
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => wake.notified().await,
            }
        }
    }

    /// An injected frame was written: its fault goes on to its next stage, or is answered.
    pub(super) fn injected_written(&self, injected: Injected) {
        match injected {
            Injected::Cancel(stage) => self.cancel_written(stage),
            Injected::Close(stage) => self.close_written(stage),
            Injected::Block(stage) => self.block_written(stage),
        }
    }

    /// The armed cancel's frame at `stage` was written: on to the consumer, or answered.
    fn cancel_written(&self, stage: CancelStage) {
        let mut cancel = lock(&self.cancel);
        match stage {
            CancelStage::ToBroker => {
                if let Some(c) = cancel.as_mut() {
                    c.stage = CancelStage::ToClient;
                }
                drop(cancel);
                self.wake_client_side.notify_one();
            }
            CancelStage::ToClient => {
                let Some(c) = cancel.take() else { return };
                drop(cancel);
                if let Some(state) = lock(&self.channels).get_mut(&c.channel) {
                    state.no_ack_of.remove(&c.consumer_tag);
                }
                let detail = format!(
                    "{CANCEL_SENT} (consumer tag {}, channel {}) to consumer[{}], as \
                     RabbitMQ does when a queue is deleted or fails over; the consumer was \
                     cancelled at RabbitMQ first (basic.cancel nowait), so nothing more is \
                     delivered to it",
                    c.consumer_tag, c.channel, self.instance
                );
                let _ = c.answer.send(Ok(Sent {
                    detail,
                    instance: self.instance,
                    incarnation: self.incarnation,
                }));
            }
        }
    }
}
