//! The proxies' fault lever: the network faults a protocol-aware proxy applies to one consumer
//! instance's broker connections. The nemesis decides when; a proxy implements this trait and
//! does it. It lives with the proxies so that they need nothing from the nemesis.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::plan::{AmqpFault, ProtocolReply, Target};

/// Network faults on a consumer's broker connections, applied by a protocol-aware proxy.
/// Each returns a description of what it hit, or `None` when the target has no connection
/// through the proxy (not applied). Timed faults heal themselves after `length`, and at once
/// when the run stops.
pub trait NetworkControl: Send + Sync {
    /// Stop forwarding both ways on the target's connections for `length`; sockets stay open.
    fn partition(&self, target: Target, length: Duration) -> Option<String>;
    /// Delay every frame on the target's connections by `delay`, for `length`.
    fn latency(&self, target: Target, delay: Duration, length: Duration) -> Option<String>;
    /// Close the target's connections with a TCP reset.
    fn sever(&self, target: Target) -> Option<String>;
    /// Answer the target's next request of `reply`'s API with `reply` instead of the broker's
    /// answer (Kafka protocol faults). A proxy that cannot fault that protocol applies nothing.
    fn reply(&self, target: Target, reply: ProtocolReply) -> Option<String> {
        let _ = (target, reply);
        None
    }

    /// Queue an AMQP protocol fault on one of the target's connections. `None` when no
    /// connection of the target can take it now (or this proxy speaks another protocol); else
    /// the answer comes once the proxy has written it to the consumer's socket (what was sent),
    /// or given up (why).
    /// `length` is how long a timed one lasts (`blocked`).
    fn amqp_fault(
        &self,
        _target: Target,
        _fault: AmqpFault,
        _length: Option<Duration>,
    ) -> Option<Injection> {
        None
    }
}

/// The outcome of a queued protocol fault, known once its frames were written or given up.
pub type Injection = oneshot::Receiver<Result<Sent, String>>;

/// A protocol fault the proxy wrote to a consumer's socket.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// What was sent, in words.
    pub detail: String,
    /// The instance whose connection carried it.
    pub instance: u32,
    /// Its incarnation.
    pub incarnation: u32,
}
