//! One proxied AMQP connection's protocol state ([`Conn`]): per channel, the deliveries not yet
//! acknowledged, the consumers' no-ack settings and the content header expected next; shared by
//! the broker→client side (`deliveries.rs`) and the client→broker side (`acks.rs`).
//!
//! Invariant: the state is only observed from frames, never used to change one, except the
//! delivery tags an injected `amqp: redeliver` shifts (`inject.rs`) and the frames of a channel
//! an `amqp: double-ack` closes (`channel_close.rs`); a channel that closes or reopens starts
//! afresh.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};

use super::blocked::Block;
use super::channel_close::ChannelClose;
use super::framing::{method_name, AmqpFraming};
use super::inject::{Cancel, Capture};
use super::{lock, Shared};

/// What follows a content-bearing method from the broker on one channel.
#[derive(Debug, Clone, Copy)]
pub(super) enum Content {
    /// A message handed to the consumer (`basic.deliver`, `basic.get-ok`).
    Delivery {
        tag: u64,
        redelivered: bool,
        /// False for a no-ack consumer: the broker forgot it already, no ack will name it.
        tracked: bool,
    },
    /// Content the proxy does not follow (`basic.return`).
    Other,
}

/// One channel's consumer-side state.
#[derive(Debug, Default)]
pub(super) struct ChannelState {
    /// Delivery tag → message ID (None when the message had none), not yet acknowledged.
    pub(super) outstanding: BTreeMap<u64, Option<String>>,
    /// The content header expected next on this channel belongs to this.
    pub(super) content: Option<Content>,
    /// The prefetch count of the last `basic.qos`.
    pub(super) prefetch: Option<u16>,
    /// Consumer tag → no-ack.
    pub(super) no_ack_of: HashMap<String, bool>,
    /// `basic.consume`s awaiting their `consume-ok` (the broker may name the tag): no-ack.
    pub(super) consumes: VecDeque<bool>,
    /// `basic.get`s awaiting `get-ok` / `get-empty`: no-ack.
    pub(super) gets: VecDeque<bool>,
    /// Whether the outstanding cap was hit already (one warning).
    pub(super) capped: bool,
    /// Delivery tags the proxy made up (`amqp: redeliver`), ascending: the client's tag space
    /// is the broker's shifted by those below (`inject.rs`).
    pub(super) forged: Vec<u64>,
}

/// One proxied connection's protocol state, shared by its two directions.
pub(super) struct Conn {
    pub(super) shared: Arc<Shared>,
    pub(super) instance: u32,
    pub(super) incarnation: u32,
    pub(super) framing: AmqpFraming,
    /// Negotiated heartbeat interval in seconds (0 = none).
    pub(super) heartbeat: AtomicU32,
    pub(super) channels: Mutex<HashMap<u16, ChannelState>>,
    /// An armed `amqp: redeliver` and the delivery it copies.
    pub(super) capture: Mutex<Option<Capture>>,
    /// `capture` is armed (checked on every broker frame without the lock).
    pub(super) capturing: AtomicBool,
    /// Some channel has forged tags (acks and deliveries are then translated).
    pub(super) forged_any: AtomicBool,
    /// An armed `amqp: cancel`.
    pub(super) cancel: Mutex<Option<Cancel>>,
    /// An armed `amqp: double-ack`, until the consumer has closed the channel too.
    pub(super) closing: Mutex<Option<ChannelClose>>,
    /// The channel and client delivery tag of the last ack written to RabbitMQ.
    pub(super) last_ack: Mutex<Option<(u16, u64)>>,
    /// The client announced the `connection.blocked` capability (`connection.start-ok`).
    pub(super) blocked_capable: AtomicBool,
    /// An armed `amqp: blocked`, until `connection.unblocked` is written.
    pub(super) block: Mutex<Option<Block>>,
    /// Wakes the publishes a `blocked` holds once `connection.unblocked` is written.
    pub(super) unblocked: tokio::sync::Notify,
    /// Wakes the client→broker side when it has a frame to inject.
    pub(super) wake_broker_side: tokio::sync::Notify,
    /// Wakes the broker→client side when it has a frame to inject.
    pub(super) wake_client_side: tokio::sync::Notify,
}

impl Conn {
    /// Deliveries not yet acknowledged, over every channel.
    pub(super) fn unacked(&self) -> u64 {
        lock(&self.channels)
            .values()
            .map(|c| c.outstanding.len() as u64)
            .sum()
    }

    /// Some channel of this connection has a consumer (a `basic.consume` was answered).
    pub(super) fn consumes(&self) -> bool {
        lock(&self.channels)
            .values()
            .any(|c| !c.no_ack_of.is_empty())
    }

    /// The state of a new connection of `instance` in its `incarnation`.
    pub(super) fn new(shared: Arc<Shared>, instance: u32, incarnation: u32) -> Conn {
        Conn {
            shared,
            instance,
            incarnation,
            framing: AmqpFraming::new(),
            heartbeat: AtomicU32::new(0),
            channels: Mutex::default(),
            capture: Mutex::default(),
            capturing: AtomicBool::new(false),
            forged_any: AtomicBool::new(false),
            cancel: Mutex::default(),
            closing: Mutex::default(),
            last_ack: Mutex::default(),
            blocked_capable: AtomicBool::new(false),
            block: Mutex::default(),
            unblocked: tokio::sync::Notify::new(),
            wake_broker_side: tokio::sync::Notify::new(),
            wake_client_side: tokio::sync::Notify::new(),
        }
    }

    /// Counts a frame of `side` ("broker" or "client") the proxy forwarded without being able
    /// to decode it.
    pub(super) fn unreadable(
        &self,
        side: &str,
        class: u16,
        method: u16,
        channel: u16,
        e: impl ToString,
    ) {
        let e = e.to_string();
        let e: String = e.chars().take(200).collect();
        self.shared.unobserved(format!(
            "consumer[{}] {side} {} on channel {channel} could not be decoded: {e}",
            self.instance,
            method_name(class, method)
        ));
    }
}
