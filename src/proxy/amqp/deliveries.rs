//! The broker→client side: deliveries (`basic.deliver`, `basic.get-ok` and the content header
//! that names the message) as `delivered` events, remembered by delivery tag until an ack
//! settles them; consumer tags' no-ack, channel closes and `basic.recover-ok` that void the
//! outstanding tags (a channel RabbitMQ closes is a `channel_closed` event listing the IDs it
//! requeued). Publisher confirms (the broker's own `basic.ack` / `basic.nack`) are not
//! consumer acks and are ignored.
//!
//! Invariants: every broker frame is forwarded as it came (this side never holds or changes
//! one); a delivery's event is recorded when its content header arrives, before it is
//! forwarded; a delivery without an ID, or a frame that does not decode, is counted as
//! unobserved; at most [`MAX_OUTSTANDING`] deliveries are remembered per channel.

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::protocol::{basic, channel, parse_class, AMQPClass};
use amq_protocol::types::AMQPValue;

use super::conn::{Conn, Content};
use super::framing::{
    frame_parts, method_ids, BASIC, BASIC_CONSUME_OK, BASIC_DELIVER, BASIC_GET_EMPTY, BASIC_GET_OK,
    BASIC_RECOVER_OK, BASIC_RETURN, CHANNEL, CHANNEL_CLOSE, CHANNEL_CLOSE_OK,
};
use super::lock;
use crate::timeline::Event;

/// Outstanding deliveries remembered per channel; beyond it the oldest are forgotten (a
/// consumer that never acks must not grow the proxy without bound).
const MAX_OUTSTANDING: usize = 1_000_000;
/// The header carrying the message ID (design §4).
pub(super) const ID_HEADER: &str = "exactly-id";

/// The message ID of a delivery: `message_id`, else the `exactly-id` header.
pub(super) fn message_id(properties: &amq_protocol::protocol::BasicProperties) -> Option<String> {
    if let Some(id) = properties.message_id() {
        if !id.as_str().is_empty() {
            return Some(id.as_str().to_string());
        }
    }
    match properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ID_HEADER))
    {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
        _ => None,
    }
}

impl Conn {
    /// Observes one broker→client frame (never held: the caller forwards it). Records a
    /// `delivered` event when the content header of a delivery arrives, before it is forwarded.
    pub(super) fn on_broker_frame(&self, frame: &[u8]) {
        let Some((kind, ch, payload)) = frame_parts(frame) else {
            return;
        };
        match kind {
            1 => self.on_broker_method(ch, payload),
            2 => self.on_broker_header(ch, payload),
            // Body frames and heartbeats: nothing to see.
            _ => {}
        }
    }

    /// Observes a broker method frame: the deliveries and the settings this side follows.
    fn on_broker_method(&self, ch: u16, payload: &[u8]) {
        let Some((class, method)) = method_ids(payload) else {
            self.shared.unobserved(format!(
                "consumer[{}] broker method frame on channel {ch} shorter than its ids",
                self.instance
            ));
            return;
        };
        let interesting = matches!(
            (class, method),
            (
                BASIC,
                BASIC_DELIVER
                    | BASIC_GET_OK
                    | BASIC_GET_EMPTY
                    | BASIC_RETURN
                    | BASIC_CONSUME_OK
                    | BASIC_RECOVER_OK
            ) | (CHANNEL, CHANNEL_CLOSE | CHANNEL_CLOSE_OK)
        );
        if !interesting {
            // Publisher confirms (basic.ack / basic.nack from the broker) end here too.
            return;
        }
        let parsed = match parse_class(payload) {
            Ok((_, m)) => m,
            Err(e) => {
                if matches!((class, method), (BASIC, BASIC_DELIVER | BASIC_GET_OK)) {
                    // Its content header is not a delivery the proxy can attribute.
                    lock(&self.channels).entry(ch).or_default().content = Some(Content::Other);
                }
                self.unreadable("broker", class, method, ch, e);
                return;
            }
        };
        self.on_broker_setting(ch, parsed);
    }

    /// Applies a decoded broker method the proxy follows to its channel's state: the delivery
    /// whose content header comes next, consumer tags' no-ack, voided tags, closed channels.
    fn on_broker_setting(&self, ch: u16, parsed: AMQPClass) {
        let mut channels = lock(&self.channels);
        match parsed {
            AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) => {
                let state = channels.entry(ch).or_default();
                let no_ack = state
                    .no_ack_of
                    .get(d.consumer_tag.as_str())
                    .copied()
                    .unwrap_or(false);
                state.content = Some(Content::Delivery {
                    tag: d.delivery_tag,
                    redelivered: d.redelivered,
                    tracked: !no_ack,
                });
            }
            AMQPClass::Basic(basic::AMQPMethod::GetOk(g)) => {
                let state = channels.entry(ch).or_default();
                let no_ack = state.gets.pop_front().unwrap_or(false);
                state.content = Some(Content::Delivery {
                    tag: g.delivery_tag,
                    redelivered: g.redelivered,
                    tracked: !no_ack,
                });
            }
            AMQPClass::Basic(basic::AMQPMethod::GetEmpty(_)) => {
                channels.entry(ch).or_default().gets.pop_front();
            }
            AMQPClass::Basic(basic::AMQPMethod::Return(_)) => {
                channels.entry(ch).or_default().content = Some(Content::Other);
            }
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)) => {
                let state = channels.entry(ch).or_default();
                let no_ack = state.consumes.pop_front().unwrap_or(false);
                state
                    .no_ack_of
                    .insert(ok.consumer_tag.as_str().to_string(), no_ack);
            }
            AMQPClass::Basic(basic::AMQPMethod::RecoverOk(_)) => {
                // Every unacknowledged message goes back: the old tags are void.
                channels.entry(ch).or_default().outstanding.clear();
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(close)) => {
                let held = channels.remove(&ch).map(|s| s.outstanding);
                drop(channels);
                // A channel exception: RabbitMQ requeues what the channel held unacknowledged.
                self.shared.timeline.record(Event::ChannelClosed {
                    instance: self.instance,
                    incarnation: self.incarnation,
                    channel: ch,
                    requeued: held.unwrap_or_default().into_values().flatten().collect(),
                    detail: format!(
                        "RabbitMQ closed it: {} {} (class {}, method {})",
                        close.reply_code, close.reply_text, close.class_id, close.method_id
                    ),
                });
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                channels.remove(&ch);
            }
            _ => {}
        }
    }

    /// Observes a content header: if it belongs to a delivery, remembers the delivery's ID by
    /// its tag (unless its consumer is no-ack) and records its `delivered` event.
    fn on_broker_header(&self, ch: u16, payload: &[u8]) {
        let content = lock(&self.channels)
            .get_mut(&ch)
            .and_then(|s| s.content.take());
        let Some(Content::Delivery {
            tag,
            redelivered,
            tracked,
        }) = content
        else {
            return;
        };
        let id = match parse_content_header(payload) {
            Ok((_, header)) => message_id(&header.properties),
            Err(e) => {
                self.unreadable(
                    "broker",
                    BASIC,
                    BASIC_DELIVER,
                    ch,
                    format!("content header: {e}"),
                );
                None
            }
        };
        if tracked {
            let mut channels = lock(&self.channels);
            let state = channels.entry(ch).or_default();
            state.outstanding.insert(tag, id.clone());
            if state.outstanding.len() > MAX_OUTSTANDING {
                state.outstanding.pop_first();
                if !state.capped {
                    state.capped = true;
                    drop(channels);
                    self.shared.warn(format!(
                        "amqp proxy: consumer[{}] holds more than {MAX_OUTSTANDING} \
                         unacknowledged deliveries on channel {ch}: the oldest are forgotten \
                         (acks naming them resolve to no ID)",
                        self.instance
                    ));
                }
            }
        }
        match id {
            Some(id) => {
                self.shared.timeline.record(Event::Delivered {
                    id,
                    instance: self.instance,
                    incarnation: self.incarnation,
                    partition: None,
                    offset: i64::try_from(tag).ok(),
                    redelivered,
                });
            }
            None => self.shared.unobserved(format!(
                "consumer[{}] delivery {tag} on channel {ch} carries no message_id and no \
                 {ID_HEADER} header",
                self.instance
            )),
        }
    }
}
