//! The only responses the proxy re-encodes: those that carry broker addresses (Metadata,
//! FindCoordinator, DescribeCluster, and Fetch and Produce when they carry KIP-951
//! `node_endpoints`), rewritten to the instance's own loopback listener for each node, and
//! ApiVersions, whose advertised versions are capped to those the proxy can decode.
//!
//! Invariants: a node's listeners (one per instance) are open before any response naming the
//! node is forwarded, so a client never learns an address the proxy does not listen on; a
//! response whose addresses cannot be rewritten is never forwarded: its connection closes and
//! the run fails (exit 4), so the client cannot bypass the proxy.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, DescribeClusterResponse, FindCoordinatorResponse,
    MetadataResponse, ProduceResponse, ResponseHeader,
};
use kafka_protocol::protocol::StrBytes;

use super::conn::Conn;
use super::wire::{correlation, decodable_versions, decode_response, encode_response, WireError};
use super::{lock, Route, Shared};
use crate::proxy::{bind_loopback, Handled};

/// Why a response's addresses or advertised versions could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub(super) enum RewriteError {
    /// The response could not be decoded, or its rewrite encoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The instance has no listener for a node the response names.
    #[error(transparent)]
    Listener(#[from] ListenerError),
}

/// Why an instance's listener for a node could not be had.
#[derive(Debug, thiserror::Error)]
pub(super) enum ListenerError {
    /// The instance is not one the proxy was started for.
    #[error("no listener for instance {0}")]
    NoInstance(u32),
    /// A loopback listener for the node could not be opened.
    #[error("cannot listen for node {node}: {source}")]
    Bind {
        node: i32,
        #[source]
        source: io::Error,
    },
    /// The new listener's port could not be read.
    #[error("{0}")]
    LocalAddr(#[source] io::Error),
}

impl Conn {
    /// The handled response, or, when it could not be rewritten, a closed connection and a
    /// failed run.
    pub(super) fn rewritten(
        &self,
        key: ApiKey,
        version: i16,
        rewritten: Result<Handled, RewriteError>,
    ) -> Handled {
        match rewritten {
            Ok(h) => h,
            Err(e) => {
                let msg = format!(
                    "cannot rewrite broker addresses in a {key:?} v{version} response for \
                     consumer[{}] ({e}); the connection was closed so the client cannot bypass \
                     the proxy",
                    self.instance
                );
                self.shared.fail(msg.clone());
                Handled::Close(msg)
            }
        }
    }

    /// ApiVersions, with every advertised range capped to what the proxy decodes.
    pub(super) fn api_versions_response(
        &self,
        frame: Bytes,
        version: i16,
    ) -> Result<Handled, RewriteError> {
        let key = ApiKey::ApiVersions;
        let ours = decodable_versions(key);
        if version > ours.max {
            return Ok(Handled::Forward(unsupported_version_answer(&frame)?));
        }
        // A broker that does not support the request's version answers in v0 with
        // UNSUPPORTED_VERSION (the error code is the first field in every version).
        let error = frame.get(8..10).map(|b| i16::from_be_bytes([b[0], b[1]]));
        if error.is_some_and(|e| e != 0) {
            return Ok(Handled::Forward(capped_error_answer(frame, version)));
        }
        let (header, mut body) = decode_response::<ApiVersionsResponse>(&frame, key, version)?;
        cap_versions(&mut body);
        Ok(Handled::Forward(encode_response(
            &header, key, version, &body,
        )?))
    }

    /// Metadata: remembers its topic ids, and rewrites every broker's address.
    pub(super) fn metadata_response(
        &self,
        frame: &Bytes,
        version: i16,
    ) -> Result<Handled, RewriteError> {
        let key = ApiKey::Metadata;
        let (header, mut body) = decode_response::<MetadataResponse>(frame, key, version)?;
        self.shared.remember_topic_ids(&body);
        for b in &mut body.brokers {
            self.redirect(b.node_id.0, &mut b.host, &mut b.port)?;
        }
        Ok(Handled::Forward(encode_response(
            &header, key, version, &body,
        )?))
    }

    /// FindCoordinator: rewrites the coordinator's address (v0-3) and every coordinator's
    /// (v4+), for those it found.
    pub(super) fn find_coordinator_response(
        &self,
        frame: &Bytes,
        version: i16,
    ) -> Result<Handled, RewriteError> {
        let key = ApiKey::FindCoordinator;
        let (header, mut body) = decode_response::<FindCoordinatorResponse>(frame, key, version)?;
        if body.node_id.0 >= 0 && !body.host.is_empty() {
            self.redirect(body.node_id.0, &mut body.host, &mut body.port)?;
        }
        for c in &mut body.coordinators {
            if c.node_id.0 >= 0 && !c.host.is_empty() {
                self.redirect(c.node_id.0, &mut c.host, &mut c.port)?;
            }
        }
        Ok(Handled::Forward(encode_response(
            &header, key, version, &body,
        )?))
    }

    /// DescribeCluster: rewrites every broker's address.
    pub(super) fn describe_cluster_response(
        &self,
        frame: &Bytes,
        version: i16,
    ) -> Result<Handled, RewriteError> {
        let key = ApiKey::DescribeCluster;
        let (header, mut body) = decode_response::<DescribeClusterResponse>(frame, key, version)?;
        for b in &mut body.brokers {
            self.redirect(b.broker_id.0, &mut b.host, &mut b.port)?;
        }
        Ok(Handled::Forward(encode_response(
            &header, key, version, &body,
        )?))
    }

    /// Produce: rewrites its KIP-951 node endpoints if it has any (else forwarded as it came).
    pub(super) fn produce_response(
        &self,
        frame: Bytes,
        version: i16,
    ) -> Result<Handled, RewriteError> {
        let key = ApiKey::Produce;
        let (header, mut body) = decode_response::<ProduceResponse>(&frame, key, version)?;
        if body.node_endpoints.is_empty() {
            return Ok(Handled::Forward(frame));
        }
        for n in &mut body.node_endpoints {
            self.redirect(n.node_id.0, &mut n.host, &mut n.port)?;
        }
        Ok(Handled::Forward(encode_response(
            &header, key, version, &body,
        )?))
    }

    /// Learns node `node`'s real address from `host` and `port`, then points them at this
    /// instance's listener for the node (opened first if the node is new).
    pub(super) fn redirect(
        &self,
        node: i32,
        host: &mut StrBytes,
        port: &mut i32,
    ) -> Result<(), ListenerError> {
        self.learn_node(node, host.as_str(), *port);
        *port = self.listener(node)?;
        *host = loopback();
        Ok(())
    }

    fn learn_node(&self, node: i32, host: &str, port: i32) {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        lock(&self.shared.nodes).insert(node, addr);
    }

    fn listener(&self, node: i32) -> Result<i32, ListenerError> {
        self.shared.node_port(node, self.instance).map(|p| p as i32)
    }
}

impl Shared {
    /// The port of `instance`'s listener for node `node`, opening one listener per instance
    /// for that node first if the node is new.
    fn node_port(self: &Arc<Shared>, node: i32, instance: u32) -> Result<u16, ListenerError> {
        let mut ports = lock(&self.node_ports);
        if let Some(p) = ports.get(&node) {
            return p
                .get(instance as usize)
                .copied()
                .ok_or(ListenerError::NoInstance(instance));
        }
        let mut opened = Vec::new();
        for i in 0..self.bootstrap_ports.len() as u32 {
            let l = bind_loopback().map_err(|source| ListenerError::Bind { node, source })?;
            let port = l.local_addr().map_err(ListenerError::LocalAddr)?.port();
            Shared::spawn_listener(self, l, i, Route::Node(node));
            opened.push(port);
        }
        let port = opened.get(instance as usize).copied();
        ports.insert(node, opened);
        port.ok_or(ListenerError::NoInstance(instance))
    }
}

/// The proxy's own answer to an ApiVersions request in a version the crate cannot read: what a
/// broker that does not support it answers (v0, UNSUPPORTED_VERSION, our range), so the client
/// retries in a version the proxy can rewrite.
fn unsupported_version_answer(frame: &Bytes) -> Result<Bytes, WireError> {
    let key = ApiKey::ApiVersions;
    let ours = decodable_versions(key);
    let header = ResponseHeader::default().with_correlation_id(correlation(frame));
    let mut body =
        ApiVersionsResponse::default().with_error_code(ResponseError::UnsupportedVersion.code());
    body.api_keys.push(
        ApiVersion::default()
            .with_api_key(ApiKey::ApiVersions as i16)
            .with_min_version(ours.min)
            .with_max_version(ours.max),
    );
    encode_response(&header, key, 0, &body)
}

/// An ApiVersions error answer (librdkafka's mock sends UNSUPPORTED_VERSION in the request's
/// own format, not v0). It holds no addresses: what it lists is capped if it decodes, else it
/// passes on as it came (a retry above our range is answered by the proxy itself).
fn capped_error_answer(frame: Bytes, version: i16) -> Bytes {
    let key = ApiKey::ApiVersions;
    for v in [0, version] {
        if let Ok((header, mut body)) = decode_response::<ApiVersionsResponse>(&frame, key, v) {
            cap_versions(&mut body);
            if let Ok(bytes) = encode_response(&header, key, v, &body) {
                return bytes;
            }
        }
    }
    frame
}

/// The address every rewritten response names: the instance's listeners are on loopback.
fn loopback() -> StrBytes {
    StrBytes::from_static_str("127.0.0.1")
}

/// Caps every advertised version range to what the proxy decodes; drops APIs left with none.
pub(super) fn cap_versions(body: &mut ApiVersionsResponse) {
    body.api_keys.retain_mut(|a| {
        let Ok(key) = ApiKey::try_from(a.api_key) else {
            return true; // unknown to the crate: never decoded, forwarded as is
        };
        let ours = decodable_versions(key);
        a.min_version = a.min_version.max(ours.min);
        a.max_version = a.max_version.min(ours.max);
        a.min_version <= a.max_version
    });
}
