//! The protocol faults' replies: each `replied` event (the proxy answered a consumer's request
//! with a `commit_error` or `fetch_error` instead of the broker's answer), as the report lists
//! them: what the consumer was told, at which version, and what the broker had.
//!
//! Invariant: a pure function of the timeline, in timeline order. The `commit` events already
//! carry what the broker stored (a dropped commit has no accepted response; an ambiguous one
//! has the broker's own answer), so nothing here changes what the judge counts.

use serde::Serialize;

use crate::timeline::{CommittedOffset, Event, Stamped};

/// One request the proxy answered with a protocol fault's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    /// When (µs).
    pub t_us: u64,
    /// The instance that sent the request.
    pub instance: u32,
    /// Its incarnation.
    pub incarnation: u32,
    /// The API answered (`OffsetCommit`, `Fetch`).
    pub api: String,
    /// The request's version, at which the reply was encoded.
    pub version: i16,
    /// The error code the consumer was told.
    pub sent: String,
    /// The partitions concerned: committed offsets (OffsetCommit) or fetch positions (Fetch).
    pub offsets: Vec<CommittedOffset>,
    /// What the broker had.
    pub broker: String,
}

/// Every `replied` event of the timeline, in order.
pub fn replies(events: &[Stamped]) -> Vec<Reply> {
    events
        .iter()
        .filter_map(|st| match &st.event {
            Event::Replied {
                instance,
                incarnation,
                api,
                version,
                sent,
                offsets,
                broker,
            } => Some(Reply {
                t_us: st.t_us,
                instance: *instance,
                incarnation: *incarnation,
                api: api.clone(),
                version: *version,
                sent: sent.clone(),
                offsets: offsets.clone(),
                broker: broker.clone(),
            }),
            _ => None,
        })
        .collect()
}

impl Reply {
    /// The reply in words, for the report's timeline: `proxy answered consumer[0]
    /// incarnation 1's OffsetCommit v8 (orders[0]@20) with REBALANCE_IN_PROGRESS; never
    /// forwarded: ...`.
    pub fn describe(&self) -> String {
        let at: Vec<String> = self
            .offsets
            .iter()
            .map(|o| format!("{}[{}]@{}", o.topic, o.partition, o.offset))
            .collect();
        format!(
            "the proxy answered consumer[{}] incarnation {}'s {} v{} ({}) with {}; {}",
            self.instance,
            self.incarnation,
            self.api,
            self.version,
            at.join(", "),
            self.sent,
            self.broker
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replied_event_is_listed_in_order_and_in_words() {
        let offsets = vec![CommittedOffset {
            topic: "orders".into(),
            partition: 0,
            offset: 20,
        }];
        let replied = |sent: &str| Event::Replied {
            instance: 0,
            incarnation: 1,
            api: "OffsetCommit".into(),
            version: 8,
            sent: sent.into(),
            offsets: offsets.clone(),
            broker: "never forwarded: the broker stored none of these offsets".into(),
        };
        let events = vec![
            Stamped {
                seq: 0,
                t_us: 5,
                event: replied("REBALANCE_IN_PROGRESS"),
            },
            Stamped {
                seq: 1,
                t_us: 9,
                event: Event::Warning {
                    message: "w".into(),
                },
            },
            Stamped {
                seq: 2,
                t_us: 12,
                event: replied("REQUEST_TIMED_OUT"),
            },
        ];
        let got = replies(&events);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].t_us, 12);
        assert_eq!(
            got[0].describe(),
            "the proxy answered consumer[0] incarnation 1's OffsetCommit v8 (orders[0]@20) with \
             REBALANCE_IN_PROGRESS; never forwarded: the broker stored none of these offsets"
        );
    }
}
