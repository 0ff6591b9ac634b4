//! The `heartbeat_error` protocol fault: the target's next group heartbeat is answered with an
//! error that fences the member (UNKNOWN_MEMBER_ID for the classic Heartbeat,
//! FENCED_MEMBER_EPOCH for KIP-848's ConsumerGroupHeartbeat), re-encoded at the request's
//! version, with a `replied` event saying what the consumer was told. The broker's own answer
//! (a live membership) is what it had.
//!
//! Invariant: only a heartbeat the proxy can decode and re-encode is changed; otherwise the
//! broker's answer goes on as it came and the run fails (the fault would be missing).

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ConsumerGroupHeartbeatResponse, HeartbeatResponse};

use super::conn::Conn;
use super::wire::{decode_response, encode_response, WireError};
use crate::plan::ProtocolReply;
use crate::timeline::Event;

impl Conn {
    /// The heartbeat response `frame` (api `key`: Heartbeat or ConsumerGroupHeartbeat), or,
    /// when a `heartbeat_error` is armed on this instance, the same answer with its error.
    pub(super) fn heartbeat_or_fence(&self, frame: Bytes, key: ApiKey, version: i16) -> Bytes {
        let armed = self.shared.registry.take_reply(self.instance, |r| {
            matches!(r, ProtocolReply::HeartbeatError { .. })
        });
        let error = match armed {
            Some(ProtocolReply::HeartbeatError { error }) => error,
            Some(
                ProtocolReply::CommitError { .. }
                | ProtocolReply::FetchError { .. }
                | ProtocolReply::FetchTwice,
            )
            | None => return frame,
        };
        match fenced(&frame, key, version, error.code()) {
            Ok(reply) => {
                self.record(Event::Replied {
                    instance: self.instance,
                    incarnation: self.incarnation,
                    api: format!("{key:?}"),
                    version,
                    sent: error.name().into(),
                    offsets: Vec::new(),
                    broker: "the broker's answer kept the member in the group".into(),
                });
                reply
            }
            Err(e) => {
                self.shared.fail(format!(
                    "cannot answer a heartbeat with {}: {e}",
                    error.name()
                ));
                frame
            }
        }
    }
}

/// The heartbeat response `frame` with `code` and (KIP-848) no assignment.
fn fenced(frame: &Bytes, key: ApiKey, version: i16, code: i16) -> Result<Bytes, WireError> {
    if key == ApiKey::ConsumerGroupHeartbeat {
        let (header, mut body) =
            decode_response::<ConsumerGroupHeartbeatResponse>(frame, key, version)?;
        body.error_code = code;
        body.assignment = None;
        return encode_response(&header, key, version, &body);
    }
    let (header, mut body) = decode_response::<HeartbeatResponse>(frame, key, version)?;
    body.error_code = code;
    encode_response(&header, key, version, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_group_heartbeat_response::Assignment;
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::StrBytes;

    use super::super::wire::decodable_versions;

    #[test]
    fn a_fenced_heartbeat_carries_the_error_at_every_version_and_no_assignment() {
        let header = ResponseHeader::default().with_correlation_id(9);
        let key = ApiKey::Heartbeat;
        let range = decodable_versions(key);
        for version in range.min..=range.max {
            let ok = encode_response(&header, key, version, &HeartbeatResponse::default()).unwrap();
            let reply = fenced(&ok, key, version, 25).unwrap();
            let (h, b) = decode_response::<HeartbeatResponse>(&reply, key, version).unwrap();
            assert_eq!((h.correlation_id, b.error_code), (9, 25), "v{version}");
        }
        let key = ApiKey::ConsumerGroupHeartbeat;
        let range = decodable_versions(key);
        for version in range.min..=range.max {
            let live = ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(StrBytes::from_static_str("m")))
                .with_member_epoch(4)
                .with_assignment(Some(Assignment::default()));
            let ok = encode_response(&header, key, version, &live).unwrap();
            let reply = fenced(&ok, key, version, 110).unwrap();
            let (_, b) =
                decode_response::<ConsumerGroupHeartbeatResponse>(&reply, key, version).unwrap();
            assert_eq!(b.error_code, 110, "v{version}");
            assert!(b.assignment.is_none(), "v{version}");
        }
    }
}
