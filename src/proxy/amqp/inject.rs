//! Protocol faults the proxy injects toward the consumer (`amqp:` faults), and the delivery-tag
//! bookkeeping that keeps RabbitMQ unaware of them.
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
//! Invariants: the tag space of a channel changes only when a forged delivery was written; a
//! channel that closes forgets its forged tags with the rest of its state (both sides start
//! again from 1); the fault's outcome is answered only once the copy is on the consumer's
//! socket, or when the connection ends first (the sender dropped).

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::conn::Conn;
use super::framing::{
    frame_parts, method_ids, BASIC, BASIC_ACK, BASIC_DELIVER, BASIC_GET_OK, BASIC_NACK,
    BASIC_REJECT,
};
use super::lock;
use crate::proxy::control::Sent;
use crate::timeline::Event;

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
    frames: BytesMut,
    body_left: Option<u64>,
}

/// A forged delivery appended to a forwarded frame, waiting to be confirmed written.
#[derive(Debug)]
pub(super) struct Forged {
    answer: tokio::sync::oneshot::Sender<Result<Sent, String>>,
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
                    frames: BytesMut::from(frame),
                    body_left: None,
                });
                return None;
            }
            (Some(c), 2) if c.channel == ch && c.body_left.is_none() => {
                let size = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
                c.frames.extend_from_slice(frame);
                c.body_left = Some(size);
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
            let id = state.outstanding.get(&c.tag).cloned().flatten();
            state.outstanding.insert(forged_tag, id);
        }
        self.forged_any.store(true, Ordering::Relaxed);
        let forged = Forged {
            answer,
            channel: c.channel,
            tag: forged_tag,
            original: c.tag,
        };
        (frames.freeze(), forged)
    }

    /// A forged delivery is on the consumer's socket: its `delivered` event, and the fault's
    /// answer with what was sent.
    pub(super) fn forged_written(&self, forged: Forged) {
        let id = lock(&self.channels)
            .get(&forged.channel)
            .and_then(|s| s.outstanding.get(&forged.tag).cloned())
            .flatten();
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
