//! One proxied Kafka connection: its protocol state ([`Conn`]), its two directions as frame
//! handlers ([`Requests`], [`Responses`]), and the dispatch of each request and response to the
//! file that owns its API (`commit.rs`, `fetch.rs`, `group.rs`, `rewrite.rs`).
//!
//! Invariants: a request is registered in flight before it is forwarded, so its response always
//! finds what the request said; a response no request on this connection asked for closes the
//! connection; a Fetch response's records are read only once it is forwarded (a response that
//! never reaches the client delivers nothing).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, FetchRequest, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, OffsetCommitRequest, SyncGroupRequest,
};

use super::commit::CommitInfo;
use super::fetch::FetchedPartition;
use super::group::Membership;
use super::wire::{decode_request, request_ids, WireError};
use super::{lock, HoldPoint, Shared};
use crate::proxy::{FrameHandler, Handled};
use crate::timeline::{Event, Stamped};

/// Requests awaiting a response on one connection; more means a broken or hostile client.
const MAX_IN_FLIGHT: usize = 100_000;

/// What a request said that its response needs.
#[derive(Debug)]
pub(super) enum Ctx {
    /// Nothing: the response is rewritten or forwarded on its own.
    None,
    /// An OffsetCommit: what it commits.
    Commit(CommitInfo),
    /// A group request: who asked.
    Group(Membership),
    /// A transactional request: what it said (`txn.rs`).
    Txn(super::txn::TxnInfo),
    /// A consumer's own Produce: what it sent (`produce.rs`).
    Produce(super::produce::ProduceInfo),
    /// A Fetch: its isolation level.
    Fetch {
        /// The client reads committed records only (aborted transactions are not delivered).
        read_committed: bool,
    },
}

/// A request awaiting its response.
#[derive(Debug)]
pub(super) struct Pending {
    /// The request's api key, as sent (possibly one the crate does not know).
    pub(super) key: i16,
    /// The request's version (its response comes in the same).
    pub(super) version: i16,
    /// What the response needs from the request.
    pub(super) ctx: Ctx,
}

/// One proxied connection's protocol state, shared by its two directions.
pub(super) struct Conn {
    pub(super) shared: Arc<Shared>,
    pub(super) instance: u32,
    pub(super) incarnation: u32,
    /// Correlation id → the request awaiting its response.
    pub(super) inflight: Mutex<HashMap<i32, Pending>>,
    /// (topic, partition) → the fetch offset last requested on this connection (fetch
    /// sessions omit unchanged partitions).
    pub(super) positions: Mutex<HashMap<(String, i32), i64>>,
}

/// The client→broker direction.
pub(super) struct Requests(pub(super) Arc<Conn>);

/// The broker→client direction. A Fetch response is forwarded first and its records read
/// after (in [`FrameHandler::on_written`]), so the client never waits for the proxy to read
/// them; see [`super::KafkaProxy::set_deliveries_before_forwarding`] for the other order.
pub(super) struct Responses {
    pub(super) conn: Arc<Conn>,
    /// The records of the response being written, read once it is on the client's socket.
    pub(super) unread: Vec<FetchedPartition>,
}

impl Responses {
    /// The broker→client direction of `conn`.
    pub(super) fn new(conn: Arc<Conn>) -> Responses {
        Responses {
            conn,
            unread: Vec::new(),
        }
    }
}

impl FrameHandler for Requests {
    fn on_frame(&mut self, frame: Bytes) -> impl std::future::Future<Output = Handled> + Send {
        self.0.clone().on_request(frame)
    }
}

impl FrameHandler for Responses {
    async fn on_frame(&mut self, frame: Bytes) -> Handled {
        let (handled, fetched) = self.conn.on_response_deferred(frame).await;
        if !self.conn.shared.read_deliveries.load(Ordering::Relaxed) {
            return handled;
        }
        if self.conn.shared.deliveries_first.load(Ordering::Relaxed) {
            self.conn.record_deliveries(fetched);
        } else {
            self.unread = fetched;
        }
        handled
    }

    fn needs_written(&self) -> bool {
        !self.unread.is_empty()
    }

    fn on_written(&mut self) {
        // The client has the bytes; the pump reads nothing more until this returns, so the
        // events are in the timeline before the connection can end or the proxy report
        // itself stopped.
        let fetched = std::mem::take(&mut self.unread);
        self.conn.record_deliveries(fetched);
    }
}

impl Conn {
    /// The state of a new connection of `instance` in its `incarnation`.
    pub(super) fn new(shared: Arc<Shared>, instance: u32, incarnation: u32) -> Conn {
        Conn {
            shared,
            instance,
            incarnation,
            inflight: Mutex::default(),
            positions: Mutex::default(),
        }
    }

    /// Records `event` in the run's timeline.
    pub(super) fn record(&self, event: Event) -> Arc<Stamped> {
        self.shared.timeline.record(event)
    }

    /// Handles one client request: reads what its response will need, registers it in flight,
    /// and holds an OffsetCommit when the gate asks.
    pub(super) async fn on_request(self: Arc<Conn>, frame: Bytes) -> Handled {
        let Some((raw_key, version, corr)) = request_ids(&frame) else {
            return Handled::Close("request shorter than its header".into());
        };
        let ctx = match ApiKey::try_from(raw_key) {
            Ok(key) => self.read_request(&frame, key, version),
            Err(_) => Ctx::None,
        };
        let commit = if let Ctx::Commit(info) = &ctx {
            Some(info.clone())
        } else {
            None
        };
        let end_txn = match &ctx {
            Ctx::Txn(info) if self.shared.gate.holds(HoldPoint::EndTxnRequest) => {
                info.commits().then(|| info.clone())
            }
            _ => None,
        };
        {
            let mut inflight = lock(&self.inflight);
            if inflight.len() >= MAX_IN_FLIGHT {
                return Handled::Close(format!(
                    "more than {MAX_IN_FLIGHT} requests without a response"
                ));
            }
            // Registered before forwarding, so the response always finds it.
            inflight.insert(
                corr,
                Pending {
                    key: raw_key,
                    version,
                    ctx,
                },
            );
        }
        match (commit, end_txn) {
            (Some(info), _) => self.pass_commit_request(corr, &info, frame).await,
            (None, Some(info)) => self.pass_end_txn_request(corr, info, frame).await,
            (None, None) => Handled::Forward(frame),
        }
    }

    /// What a request says that its response will need (request-side events recorded). A
    /// request the proxy cannot decode is forwarded as is with a warning, or fails the run when
    /// it is an OffsetCommit the gate must hold.
    fn read_request(&self, frame: &Bytes, key: ApiKey, version: i16) -> Ctx {
        match self.request_ctx(frame, key, version) {
            Ok(ctx) => ctx,
            Err(e) => {
                if key == ApiKey::OffsetCommit && self.shared.gate.holds(HoldPoint::CommitRequest) {
                    self.shared
                        .fail(format!("cannot decode an OffsetCommit to hold it: {e}"));
                } else {
                    self.shared.warn(format!(
                        "kafka proxy: consumer[{}] sent a request the proxy cannot read \
                         (forwarded as is): {e}",
                        self.instance
                    ));
                }
                Ctx::None
            }
        }
    }

    /// Decodes the requests whose responses need context, and records request-side events.
    fn request_ctx(&self, frame: &Bytes, key: ApiKey, version: i16) -> Result<Ctx, WireError> {
        Ok(match key {
            ApiKey::OffsetCommit => {
                let r: OffsetCommitRequest = decode_request(frame, key, version)?;
                Ctx::Commit(self.commit_request(&r))
            }
            ApiKey::Fetch => {
                let r: FetchRequest = decode_request(frame, key, version)?;
                self.fetch_request(&r)
            }
            ApiKey::Produce => self.produce_request(frame, key, version)?,
            ApiKey::JoinGroup => {
                let r: JoinGroupRequest = decode_request(frame, key, version)?;
                Ctx::Group(self.join_group_request(&r))
            }
            ApiKey::SyncGroup => {
                let r: SyncGroupRequest = decode_request(frame, key, version)?;
                Ctx::Group(Membership::new(
                    &r.group_id,
                    &r.member_id,
                    Some(r.generation_id),
                ))
            }
            ApiKey::Heartbeat => {
                let r: HeartbeatRequest = decode_request(frame, key, version)?;
                Ctx::Group(Membership::new(
                    &r.group_id,
                    &r.member_id,
                    Some(r.generation_id),
                ))
            }
            ApiKey::LeaveGroup => {
                let r: LeaveGroupRequest = decode_request(frame, key, version)?;
                self.leave_group_request(&r);
                Ctx::None
            }
            ApiKey::ConsumerGroupHeartbeat => {
                let r: ConsumerGroupHeartbeatRequest = decode_request(frame, key, version)?;
                Ctx::Group(self.consumer_group_heartbeat_request(&r))
            }
            _ => match super::txn::txn_op(key) {
                Some(op) => self.txn_request(frame, key, version, op)?,
                None => Ctx::None,
            },
        })
    }

    /// Handles one response and records its deliveries at once (before it is forwarded).
    #[cfg(test)]
    pub(super) async fn on_response(self: Arc<Conn>, frame: Bytes) -> Handled {
        let (handled, fetched) = self.on_response_deferred(frame).await;
        if matches!(handled, Handled::Forward(_)) {
            self.record_deliveries(fetched);
        }
        handled
    }

    /// Handles one response; a Fetch response's records to read for `delivered_batch` events
    /// come back apart, to be read once the response is forwarded (see [`Responses`]).
    async fn on_response_deferred(&self, frame: Bytes) -> (Handled, Vec<FetchedPartition>) {
        let mut fetched = Vec::new();
        let handled = self.response_of(frame, &mut fetched).await;
        if !matches!(handled, Handled::Forward(_)) {
            // Never reaches the client: nothing was delivered.
            fetched.clear();
        }
        (handled, fetched)
    }

    /// Finds the request a response answers, then handles the response.
    async fn response_of(&self, frame: Bytes, fetched: &mut Vec<FetchedPartition>) -> Handled {
        let Some(b) = frame.get(4..8) else {
            return Handled::Close("response shorter than a correlation id".into());
        };
        let corr = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let Some(p) = lock(&self.inflight).remove(&corr) else {
            return Handled::Close(format!(
                "response with correlation id {corr} that no request on this connection used"
            ));
        };
        let Ok(key) = ApiKey::try_from(p.key) else {
            return Handled::Forward(frame);
        };
        self.response(frame, key, p, fetched).await
    }

    /// Handles one response by its api key: the responses that carry addresses or versions are
    /// rewritten (a failure to rewrite closes the connection and fails the run), the others
    /// observed and forwarded as they came (or dropped, for a withheld OffsetCommit response).
    /// A Fetch response's partitions of the topic under test are put in `fetched`, for the
    /// caller to read its deliveries from.
    async fn response(
        &self,
        frame: Bytes,
        key: ApiKey,
        p: Pending,
        fetched: &mut Vec<FetchedPartition>,
    ) -> Handled {
        let version = p.version;
        match key {
            ApiKey::ApiVersions => {
                let rewritten = self.api_versions_response(frame, version);
                self.rewritten(key, version, rewritten)
            }
            ApiKey::Metadata => {
                let rewritten = self.metadata_response(&frame, version);
                self.rewritten(key, version, rewritten)
            }
            ApiKey::FindCoordinator => {
                let rewritten = self.find_coordinator_response(&frame, version);
                self.rewritten(key, version, rewritten)
            }
            ApiKey::DescribeCluster => {
                let rewritten = self.describe_cluster_response(&frame, version);
                self.rewritten(key, version, rewritten)
            }
            ApiKey::Produce => {
                if let Ctx::Produce(info) = &p.ctx {
                    self.produce_answered(&frame, version, info);
                }
                let rewritten = self.produce_response(frame, version);
                self.rewritten(key, version, rewritten)
            }
            ApiKey::Fetch => {
                let rewritten = self.fetch_response(frame, version, &p.ctx, fetched);
                self.rewritten(key, version, rewritten)
            }
            ApiKey::OffsetCommit => self.commit_response(frame, version, p.ctx).await,
            ApiKey::SyncGroup => {
                self.sync_group_response(&frame, version, &p.ctx);
                Handled::Forward(frame)
            }
            ApiKey::Heartbeat => {
                let frame = self.heartbeat_or_fence(frame, key, version);
                self.heartbeat_response(&frame, version, &p.ctx);
                Handled::Forward(frame)
            }
            ApiKey::ConsumerGroupHeartbeat => {
                let frame = self.heartbeat_or_fence(frame, key, version);
                self.consumer_group_heartbeat_response(&frame, version, &p.ctx)
                    .await;
                Handled::Forward(frame)
            }
            _ => {
                if let Ctx::Txn(info) = p.ctx {
                    self.txn_response(&frame, key, version, info);
                }
                Handled::Forward(frame)
            }
        }
    }
}
