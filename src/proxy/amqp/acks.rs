//! The client→broker side: consumer acknowledgements (`basic.ack` / `basic.nack` /
//! `basic.reject`) resolved to the message IDs they cover, the hold of an ack at the gate for
//! `before: ack`, and the client's settings that decide how deliveries are tracked (`basic.qos`,
//! `basic.consume` and `basic.get` no-ack, `connection.tune-ok`'s frame max and heartbeat,
//! channel opens and closes, `basic.recover-async`).
//!
//! Invariants: an ack's `multiple` covers every outstanding tag up to its tag (tag 0: all); an
//! ack the proxy cannot decode while acks are held passes unheld and fails the run; every
//! hold ends, by the nemesis's verdict or after [`HOLD_CAP`] (which fails the run), and is
//! recorded as a `held` event.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use amq_protocol::protocol::{basic, channel, connection, parse_class, AMQPClass};
use tokio::time::Instant;

use super::conn::{ChannelState, Conn};
use super::framing::{
    frame_parts, method_ids, method_name, BASIC, BASIC_ACK, BASIC_CONSUME, BASIC_GET, BASIC_NACK,
    BASIC_QOS, BASIC_RECOVER_ASYNC, BASIC_REJECT, CHANNEL, CHANNEL_CLOSE, CHANNEL_CLOSE_OK,
    CHANNEL_OPEN, CONNECTION, CONNECTION_START_OK, CONNECTION_TUNE_OK,
};
use super::{lock, HoldDecision, HoldPoint};
use crate::timeline::{AckPhase, AckVerb, Event, HeldAt};

/// A hold the nemesis never decides is released after this long, and the run fails.
const HOLD_CAP: Duration = Duration::from_secs(300);

/// A consumer acknowledgement resolved to what it covers.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct AckRecord {
    pub(super) channel: u16,
    pub(super) delivery_tag: u64,
    pub(super) multiple: bool,
    pub(super) verb: AckVerb,
    pub(super) requeue: bool,
    pub(super) ids: Vec<String>,
    /// Tags it settles: every outstanding tag ≤ this (multiple) or this tag alone.
    pub(super) upto: u64,
}

impl Conn {
    /// Observes one client→broker frame: consumer settings, the negotiated frame max and
    /// heartbeat, channel resets; returns the acknowledgement it carries, resolved to its IDs
    /// (the caller records, holds and forwards it).
    pub(super) fn on_client_frame(&self, frame: &[u8]) -> Option<AckRecord> {
        let (kind, ch, payload) = frame_parts(frame)?;
        if kind != 1 {
            return None;
        }
        let (class, method) = method_ids(payload)?;
        let is_ack = matches!(
            (class, method),
            (BASIC, BASIC_ACK | BASIC_NACK | BASIC_REJECT)
        );
        let interesting = is_ack
            || matches!(
                (class, method),
                (
                    BASIC,
                    BASIC_QOS | BASIC_CONSUME | BASIC_GET | BASIC_RECOVER_ASYNC
                ) | (CHANNEL, CHANNEL_OPEN | CHANNEL_CLOSE | CHANNEL_CLOSE_OK)
                    | (CONNECTION, CONNECTION_START_OK | CONNECTION_TUNE_OK)
            );
        if !interesting {
            return None;
        }
        let parsed = match parse_class(payload) {
            Ok((_, m)) => m,
            Err(e) => {
                if is_ack && self.shared.gate.holds(HoldPoint::AckRequest) {
                    self.shared.fail(format!(
                        "cannot decode a {} of consumer[{}] to hold it: {e}",
                        method_name(class, method),
                        self.instance
                    ));
                } else {
                    self.unreadable("client", class, method, ch, e);
                }
                return None;
            }
        };
        let (tag, multiple, verb, requeue) = match parsed {
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                (a.delivery_tag, a.multiple, AckVerb::Ack, false)
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                (n.delivery_tag, n.multiple, AckVerb::Nack, n.requeue)
            }
            AMQPClass::Basic(basic::AMQPMethod::Reject(r)) => {
                (r.delivery_tag, false, AckVerb::Reject, r.requeue)
            }
            other => {
                self.on_client_setting(ch, other);
                return None;
            }
        };
        let (ids, upto) = {
            let channels = lock(&self.channels);
            let empty = BTreeMap::new();
            covered(
                channels.get(&ch).map_or(&empty, |s| &s.outstanding),
                tag,
                multiple,
            )
        };
        Some(AckRecord {
            channel: ch,
            delivery_tag: tag,
            multiple,
            verb,
            requeue,
            ids,
            upto,
        })
    }

    /// Applies a client setting the proxy follows (frame max and heartbeat, channel opens and
    /// closes, qos, consume and get no-ack, recover), recording `consumer_settings` for a
    /// consume.
    fn on_client_setting(&self, ch: u16, method: AMQPClass) {
        let mut channels = lock(&self.channels);
        match method {
            AMQPClass::Connection(connection::AMQPMethod::StartOk(s)) => {
                let announced = super::blocked::announces_blocked(&s.client_properties);
                self.blocked_capable.store(announced, Ordering::Relaxed);
            }
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(t)) => {
                self.framing.set_frame_max(t.frame_max);
                self.heartbeat
                    .store(u32::from(t.heartbeat), Ordering::Relaxed);
            }
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                channels.insert(ch, ChannelState::default());
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(_) | channel::AMQPMethod::CloseOk(_)) => {
                channels.remove(&ch);
            }
            AMQPClass::Basic(basic::AMQPMethod::Qos(q)) => {
                channels.entry(ch).or_default().prefetch = Some(q.prefetch_count);
            }
            AMQPClass::Basic(basic::AMQPMethod::Get(g)) => {
                channels.entry(ch).or_default().gets.push_back(g.no_ack);
            }
            AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(_)) => {
                channels.entry(ch).or_default().outstanding.clear();
            }
            AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => {
                let state = channels.entry(ch).or_default();
                if !c.consumer_tag.as_str().is_empty() {
                    state
                        .no_ack_of
                        .insert(c.consumer_tag.as_str().to_string(), c.no_ack);
                }
                if !c.nowait {
                    state.consumes.push_back(c.no_ack);
                }
                let prefetch = state.prefetch;
                drop(channels);
                self.shared.timeline.record(Event::ConsumerSettings {
                    instance: self.instance,
                    incarnation: self.incarnation,
                    no_ack: c.no_ack,
                    prefetch,
                    heartbeat_s: u16::try_from(self.heartbeat.load(Ordering::Relaxed)).ok(),
                });
            }
            _ => {}
        }
    }

    /// Forgets the deliveries an ack settles (it is on its way to the broker).
    pub(super) fn settle(&self, ack: &AckRecord) {
        let mut channels = lock(&self.channels);
        let Some(state) = channels.get_mut(&ack.channel) else {
            return;
        };
        if ack.multiple {
            let rest = state.outstanding.split_off(&(ack.upto.saturating_add(1)));
            if ack.upto == u64::MAX {
                state.outstanding.clear();
            } else {
                state.outstanding = rest;
            }
        } else {
            state.outstanding.remove(&ack.upto);
        }
    }

    pub(super) fn ack_event(&self, ack: &AckRecord, phase: AckPhase) -> u64 {
        self.shared
            .timeline
            .record(Event::Ack {
                instance: self.instance,
                incarnation: self.incarnation,
                channel: ack.channel,
                delivery_tag: ack.delivery_tag,
                multiple: ack.multiple,
                verb: ack.verb,
                requeue: ack.requeue,
                ids: ack.ids.clone(),
                phase,
            })
            .seq
    }

    /// Waits for the nemesis's verdict on ack event `seq`, measuring the hold and warning when
    /// it nears the heartbeat timeout.
    pub(super) async fn hold(&self, seq: u64) -> HoldDecision {
        let start = Instant::now();
        let heartbeat = self.heartbeat.load(Ordering::Relaxed);
        let warn_after = Duration::from_secs(u64::from(heartbeat.max(1)));
        let wait = self.shared.gate.wait(HoldPoint::AckRequest, seq);
        tokio::pin!(wait);
        let mut warned = heartbeat == 0;
        let verdict = loop {
            tokio::select! {
                v = &mut wait => break v,
                _ = tokio::time::sleep_until(start + warn_after), if !warned => {
                    warned = true;
                    self.shared.warn(format!(
                        "amqp proxy: an ack of consumer[{}] held for {heartbeat}s: every later \
                         frame of that connection (heartbeats too) waits behind it, and \
                         RabbitMQ closes a connection silent for two heartbeat intervals",
                        self.instance
                    ));
                }
                _ = tokio::time::sleep_until(start + HOLD_CAP) => {
                    self.shared.fail(format!(
                        "an ack of consumer[{}] (event {seq}) held for {}s without a verdict; \
                         released",
                        self.instance,
                        HOLD_CAP.as_secs()
                    ));
                    break HoldDecision::Answer;
                }
            }
        };
        let held = start.elapsed();
        self.shared.timeline.record(Event::Held {
            instance: self.instance,
            incarnation: self.incarnation,
            at: HeldAt::AckRequest,
            event: seq,
            held_us: held.as_micros() as u64,
            released: verdict == HoldDecision::Answer,
        });
        verdict
    }
}

/// The IDs an ack of `tag` covers among a channel's `outstanding` deliveries, and the last tag
/// it settles: with `multiple`, every outstanding tag up to `tag` (tag 0: all of them), else
/// `tag` alone.
fn covered(
    outstanding: &BTreeMap<u64, Option<String>>,
    tag: u64,
    multiple: bool,
) -> (Vec<String>, u64) {
    if multiple {
        let upto = if tag == 0 {
            outstanding.last_key_value().map_or(0, |(t, _)| *t)
        } else {
            tag
        };
        let ids = outstanding
            .range(..=upto)
            .filter_map(|(_, id)| id.clone())
            .collect();
        (ids, upto)
    } else {
        (
            outstanding
                .get(&tag)
                .cloned()
                .flatten()
                .into_iter()
                .collect(),
            tag,
        )
    }
}
