//! Topic ids → names. Recent Fetch and OffsetCommit versions and KIP-848 assignments name
//! topics by id; the proxy learns the names from the Metadata responses it forwards, and asks
//! the cluster itself (a Metadata request on a connection of its own) when an assignment names
//! an id it has not seen.
//!
//! Invariant: an id the proxy cannot name is shown as `topic-id:<hex>`, never taken for the
//! topic under test; the proxy's own request is bounded by a deadline.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

use tokio::io::AsyncWriteExt;

use super::wire::{decode_response, CrateError, KafkaFraming, WireError};
use super::{connect_any, lock, Shared};
use crate::proxy::{FrameReader, ReadError};

/// Why the proxy could not learn the topic ids from the cluster.
#[derive(Debug, thiserror::Error)]
pub(super) enum TopicIdsError {
    /// No bootstrap address could be reached.
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    /// The Metadata request could not be encoded.
    #[error("{0}")]
    Encode(#[source] CrateError),
    /// The Metadata request could not be sent.
    #[error("{0}")]
    Send(#[source] std::io::Error),
    /// The response could not be read.
    #[error("{0:?}")]
    Read(ReadError),
    /// The broker closed the connection before answering.
    #[error("the broker closed the connection")]
    Closed,
    /// The response could not be decoded.
    #[error(transparent)]
    Decode(#[from] WireError),
    /// No answer within the deadline.
    #[error("the Metadata request timed out")]
    TimedOut,
}

impl Shared {
    /// Remembers the name of every topic a Metadata response names with an id.
    pub(super) fn remember_topic_ids(&self, resp: &MetadataResponse) {
        let mut ids = lock(&self.topic_ids);
        for t in &resp.topics {
            if let Some(name) = &t.name {
                if !t.topic_id.is_nil() {
                    ids.insert(*t.topic_id.as_bytes(), name.0.to_string());
                }
            }
        }
    }

    /// Asks the cluster for every topic's id (a Metadata request on a connection of the
    /// proxy's own, bounded by a deadline).
    pub(super) async fn learn_topic_ids(&self) -> Result<(), TopicIdsError> {
        let resp = tokio::time::timeout(Duration::from_secs(5), ask_metadata(&self.bootstrap))
            .await
            .map_err(|_| TopicIdsError::TimedOut)??;
        self.remember_topic_ids(&resp);
        Ok(())
    }

    /// The name of a topic given by `name`, or, when that is empty, by its `id`.
    pub(super) fn topic_name(&self, name: &str, id: &[u8; 16]) -> String {
        if !name.is_empty() {
            return name.to_string();
        }
        lock(&self.topic_ids)
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("topic-id:{}", hex(id)))
    }
}

/// Every topic's metadata, asked of the cluster at one of `bootstrap` on a connection of the
/// proxy's own.
async fn ask_metadata(bootstrap: &[String]) -> Result<MetadataResponse, TopicIdsError> {
    const VERSION: i16 = 12;
    let mut stream = connect_any(bootstrap)
        .await
        .map_err(TopicIdsError::Connect)?;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("exactly-proxy")));
    let body = MetadataRequest::default().with_topics(None);
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, ApiKey::Metadata.request_header_version(VERSION))
        .map_err(|e| TopicIdsError::Encode(e.into()))?;
    body.encode(&mut out, VERSION)
        .map_err(|e| TopicIdsError::Encode(e.into()))?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&out).await.map_err(TopicIdsError::Send)?;
    let (r, _w) = stream.into_split();
    let mut reader = FrameReader::new(r);
    let frame = reader
        .read_frame(&KafkaFraming)
        .await
        .map_err(TopicIdsError::Read)?
        .ok_or(TopicIdsError::Closed)?;
    let (_, resp) = decode_response::<MetadataResponse>(&frame, ApiKey::Metadata, VERSION)?;
    Ok(resp)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
