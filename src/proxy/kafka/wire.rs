//! Kafka's wire format, as far as the proxy reads it: the framing (a 4-byte length prefix), the
//! request header fields every version shares, decoding and re-encoding a request or response
//! with the kafka-protocol crate, the versions the proxy can decode, and error codes by name.
//!
//! Pure functions of bytes: no I/O, no state. Invariant: every version the proxy lets a client
//! use (ApiVersions is capped to [`decodable_versions`]) is one in which the crate can decode,
//! and re-encode, every message of that API the proxy reads.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, DescribeClusterRequest, DescribeClusterResponse, FetchRequest,
    FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, LeaveGroupRequest, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, VersionRange};

use crate::proxy::{Framing, MAX_FRAME};

/// Kafka framing: a 4-byte big-endian length, then that many bytes.
pub struct KafkaFraming;

impl Framing for KafkaFraming {
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len < 0 {
            return Err(format!("negative frame length {len}"));
        }
        let len = len as usize;
        if len > MAX_FRAME {
            return Err(format!(
                "frame of {len} bytes exceeds the {MAX_FRAME}-byte cap"
            ));
        }
        Ok((buf.len() >= 4 + len).then_some(4 + len))
    }

    fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        let prefix = buf.get(..4)?;
        let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .map(|l| 4 + l)
    }
}

/// The versions of `key` the proxy can decode and re-encode: the broker-advertised range is
/// capped to this in every ApiVersions response.
pub fn decodable_versions(key: ApiKey) -> VersionRange {
    fn both<Q: Message, R: Message>() -> VersionRange {
        Q::VERSIONS.intersect(&R::VERSIONS)
    }
    let range = match key {
        ApiKey::ApiVersions => both::<ApiVersionsRequest, ApiVersionsResponse>(),
        ApiKey::Metadata => both::<MetadataRequest, MetadataResponse>(),
        ApiKey::FindCoordinator => both::<FindCoordinatorRequest, FindCoordinatorResponse>(),
        ApiKey::DescribeCluster => both::<DescribeClusterRequest, DescribeClusterResponse>(),
        ApiKey::Fetch => both::<FetchRequest, FetchResponse>(),
        ApiKey::Produce => both::<ProduceRequest, ProduceResponse>(),
        ApiKey::OffsetCommit => both::<OffsetCommitRequest, OffsetCommitResponse>(),
        ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
        ApiKey::SyncGroup => both::<SyncGroupRequest, SyncGroupResponse>(),
        ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
        ApiKey::Heartbeat => both::<HeartbeatRequest, HeartbeatResponse>(),
        ApiKey::ConsumerGroupHeartbeat => {
            both::<ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse>()
        }
        _ => key.valid_versions(),
    };
    range.intersect(&key.valid_versions())
}

/// The request header fields every version shares: api key, version, correlation id.
pub fn request_ids(frame: &[u8]) -> Option<(i16, i16, i32)> {
    let b = frame.get(4..12)?;
    Some((
        i16::from_be_bytes([b[0], b[1]]),
        i16::from_be_bytes([b[2], b[3]]),
        i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    ))
}

/// The kafka-protocol crate's error: an `anyhow::Error`, carried as the std error it boxes (its
/// text is the same).
pub(super) type CrateError = Box<dyn std::error::Error + Send + Sync>;

/// The part of a frame that failed to decode or encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    RequestHeader,
    Request,
    ResponseHeader,
    Response,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::RequestHeader => "request header",
            Part::Request => "request",
            Part::ResponseHeader => "response header",
            Part::Response => "response",
        })
    }
}

/// Why the proxy could not read or re-encode a Kafka frame (shown as e.g. "Metadata v12
/// response: ...", with the crate's reason).
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    /// The crate could not decode this part of the frame.
    #[error("{key:?} v{version} {part}: {source}")]
    Decode {
        key: ApiKey,
        version: i16,
        part: Part,
        #[source]
        source: CrateError,
    },
    /// The crate could not encode this part of a rewritten frame.
    #[error("{key:?} v{version} {part}: {source}")]
    Encode {
        key: ApiKey,
        version: i16,
        part: Part,
        #[source]
        source: CrateError,
    },
}

impl WireError {
    fn decode(key: ApiKey, version: i16, part: Part, e: impl Into<CrateError>) -> WireError {
        WireError::Decode {
            key,
            version,
            part,
            source: e.into(),
        }
    }

    fn encode(key: ApiKey, version: i16, part: Part, e: impl Into<CrateError>) -> WireError {
        WireError::Encode {
            key,
            version,
            part,
            source: e.into(),
        }
    }
}

/// Decodes a request of type `T` (api `key`, `version`) from its whole frame.
pub(super) fn decode_request<T: Decodable>(
    frame: &Bytes,
    key: ApiKey,
    version: i16,
) -> Result<T, WireError> {
    let mut b = frame.slice(4..);
    RequestHeader::decode(&mut b, key.request_header_version(version))
        .map_err(|e| WireError::decode(key, version, Part::RequestHeader, e))?;
    T::decode(&mut b, version).map_err(|e| WireError::decode(key, version, Part::Request, e))
}

/// Decodes a response of type `T` (api `key`, `version`) and its header from its whole frame.
pub(super) fn decode_response<T: Decodable>(
    frame: &Bytes,
    key: ApiKey,
    version: i16,
) -> Result<(ResponseHeader, T), WireError> {
    let mut b = frame.slice(4..);
    let header = ResponseHeader::decode(&mut b, key.response_header_version(version))
        .map_err(|e| WireError::decode(key, version, Part::ResponseHeader, e))?;
    let body = T::decode(&mut b, version)
        .map_err(|e| WireError::decode(key, version, Part::Response, e))?;
    Ok((header, body))
}

/// Decodes a request of type `T` with its header from its whole frame (to rewrite it).
pub(super) fn decode_request_with_header<T: Decodable>(
    frame: &Bytes,
    key: ApiKey,
    version: i16,
) -> Result<(RequestHeader, T), WireError> {
    let mut b = frame.slice(4..);
    let header = RequestHeader::decode(&mut b, key.request_header_version(version))
        .map_err(|e| WireError::decode(key, version, Part::RequestHeader, e))?;
    let body = T::decode(&mut b, version)
        .map_err(|e| WireError::decode(key, version, Part::Request, e))?;
    Ok((header, body))
}

/// Encodes a request (its header, then `body`) into a whole frame.
pub(super) fn encode_request<T: Encodable>(
    header: &RequestHeader,
    key: ApiKey,
    version: i16,
    body: &T,
) -> Result<Bytes, WireError> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    header
        .encode(&mut out, key.request_header_version(version))
        .map_err(|e| WireError::encode(key, version, Part::RequestHeader, e))?;
    body.encode(&mut out, version)
        .map_err(|e| WireError::encode(key, version, Part::Request, e))?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}

/// Encodes a response (its header, then `body`) into a whole frame.
pub(super) fn encode_response<T: Encodable>(
    header: &ResponseHeader,
    key: ApiKey,
    version: i16,
    body: &T,
) -> Result<Bytes, WireError> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    header
        .encode(&mut out, key.response_header_version(version))
        .map_err(|e| WireError::encode(key, version, Part::ResponseHeader, e))?;
    body.encode(&mut out, version)
        .map_err(|e| WireError::encode(key, version, Part::Response, e))?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}

/// `ILLEGAL_GENERATION` for 22, `UNKNOWN_ERROR_CODE_123` for codes the crate does not know.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

/// Group errors that mean the member must rejoin or was fenced.
pub(super) fn is_group_error(code: i16) -> bool {
    matches!(
        ResponseError::try_from_code(code),
        Some(
            ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::RebalanceInProgress
                | ResponseError::FencedInstanceId
                | ResponseError::FencedMemberEpoch
                | ResponseError::UnreleasedInstanceId
                | ResponseError::StaleMemberEpoch
        )
    )
}

/// The correlation id of a response frame (0 when the frame is too short for one).
pub(super) fn correlation(frame: &[u8]) -> i32 {
    frame
        .get(4..8)
        .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
