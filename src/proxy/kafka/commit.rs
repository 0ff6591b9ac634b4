//! OffsetCommit: what a consumer commits and what the broker answers, as `commit` events
//! (request, response, dropped), and the holds at the gate for `before: commit` (the request)
//! and `after: commit` (the response), and of a transaction's commit for `before: end_txn`.
//!
//! Invariants: the `commit` event of a request is in the timeline before the request can be
//! held or forwarded; a withheld request is never forwarded and is recorded as dropped; a
//! withheld response never reaches the client; every hold ends, by the nemesis's verdict or
//! after [`HOLD_CAP`] (which fails the run), and is recorded as a `held` event.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};
use tokio::time::Instant;

use super::conn::{Conn, Ctx};
use super::wire::{decode_response, error_name, is_group_error};
use super::{lock, HoldDecision, HoldPoint};
use crate::proxy::Handled;
use crate::timeline::{CommitPhase, CommittedOffset, Event, HeldAt, RebalanceKind};

/// Kafka's default `request.timeout.ms`: a hold longer than 80% of it gets a warning, since
/// every later response on that connection waits behind the held frame.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A hold the nemesis never decides is released after this long, and the run fails.
const HOLD_CAP: Duration = Duration::from_secs(300);

/// What an OffsetCommit request commits, for its events.
#[derive(Debug, Clone)]
pub(super) struct CommitInfo {
    group: String,
    member: String,
    generation: i32,
    offsets: Vec<CommittedOffset>,
}

/// Which side of an OffsetCommit a hold stops.
#[derive(Debug, Clone, Copy)]
pub(super) enum CommitHold {
    /// The request, on its way to the broker (`before: commit`).
    Request,
    /// The response, on its way to the consumer (`after: commit`).
    Response,
    /// A transaction's EndTxn (commit) request, on its way to the broker (`before: end_txn`).
    EndTxn,
}

impl CommitHold {
    fn point(self) -> HoldPoint {
        match self {
            CommitHold::Request => HoldPoint::CommitRequest,
            CommitHold::Response => HoldPoint::CommitResponse,
            CommitHold::EndTxn => HoldPoint::EndTxnRequest,
        }
    }

    fn held_at(self) -> HeldAt {
        match self {
            CommitHold::Request => HeldAt::CommitRequest,
            CommitHold::Response => HeldAt::CommitResponse,
            CommitHold::EndTxn => HeldAt::EndTxnRequest,
        }
    }
}

impl Conn {
    /// What an OffsetCommit request commits (topics named by id are named from the topic ids
    /// the proxy learned).
    pub(super) fn commit_request(&self, r: &OffsetCommitRequest) -> CommitInfo {
        let mut offsets = Vec::new();
        for t in &r.topics {
            let topic = self
                .shared
                .topic_name(t.name.0.as_str(), t.topic_id.as_bytes());
            for p in &t.partitions {
                offsets.push(CommittedOffset {
                    topic: topic.clone(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                });
            }
        }
        CommitInfo {
            group: r.group_id.0.to_string(),
            member: r.member_id.to_string(),
            generation: r.generation_id_or_member_epoch,
            offsets,
        }
    }

    /// Records an OffsetCommit request (correlation id `corr`) and, when the gate holds commit
    /// requests, waits for the nemesis: a withheld request is never forwarded (nor awaited).
    pub(super) async fn pass_commit_request(
        &self,
        corr: i32,
        info: &CommitInfo,
        frame: Bytes,
    ) -> Handled {
        let seq = self.commit_event(info, CommitPhase::Request, None);
        if self.shared.gate.holds(HoldPoint::CommitRequest)
            && self.hold(CommitHold::Request, seq).await == HoldDecision::Withhold
        {
            lock(&self.inflight).remove(&corr);
            self.commit_event(info, CommitPhase::Dropped, None);
            return Handled::Drop;
        }
        Handled::Forward(frame)
    }

    /// Records an OffsetCommit response (with its partitions' errors, and a `rebalance` error
    /// when one says the member must rejoin) and, when the gate holds commit responses, waits
    /// for the nemesis. A response that cannot be decoded is forwarded but fails the run.
    pub(super) async fn commit_response(&self, frame: Bytes, version: i16, ctx: Ctx) -> Handled {
        let Ctx::Commit(info) = ctx else {
            return Handled::Forward(frame);
        };
        let key = ApiKey::OffsetCommit;
        let body = match decode_response::<OffsetCommitResponse>(&frame, key, version) {
            Ok((_, b)) => b,
            Err(e) => {
                self.shared
                    .fail(format!("cannot decode an OffsetCommit response: {e}"));
                return Handled::Forward(frame);
            }
        };
        let errors = partition_errors(&body);
        let error = (!errors.is_empty()).then(|| {
            errors
                .iter()
                .map(|c| error_name(*c))
                .collect::<Vec<_>>()
                .join(",")
        });
        let seq = self.commit_event(&info, CommitPhase::Response, error);
        if let Some(&g) = errors.iter().find(|c| is_group_error(**c)) {
            self.rebalance(
                &info.group,
                RebalanceKind::Error,
                &info.member,
                Some(info.generation),
                None,
                Some(error_name(g)),
            );
        }
        if self.shared.gate.holds(HoldPoint::CommitResponse)
            && self.hold(CommitHold::Response, seq).await == HoldDecision::Withhold
        {
            return Handled::Drop;
        }
        Handled::Forward(frame)
    }

    fn commit_event(&self, info: &CommitInfo, phase: CommitPhase, error: Option<String>) -> u64 {
        self.record(Event::Commit {
            instance: self.instance,
            incarnation: self.incarnation,
            group: info.group.clone(),
            member: info.member.clone(),
            generation: info.generation,
            offsets: info.offsets.clone(),
            phase,
            error,
        })
        .seq
    }

    /// Waits for the nemesis's verdict on event `seq`, measuring the hold and warning when it
    /// nears the client's request timeout.
    pub(super) async fn hold(&self, side: CommitHold, seq: u64) -> HoldDecision {
        let point = side.point();
        let start = Instant::now();
        let warn_after = CLIENT_REQUEST_TIMEOUT.mul_f64(0.8);
        let wait = self.shared.gate.wait(point, seq);
        tokio::pin!(wait);
        let mut warned = false;
        let verdict = loop {
            tokio::select! {
                v = &mut wait => break v,
                _ = tokio::time::sleep_until(start + warn_after), if !warned => {
                    warned = true;
                    self.shared.warn(format!(
                        "kafka proxy: {point:?} of consumer[{}] held for {}s: every later \
                         response on its connection waits behind it, and the client gives up \
                         at request.timeout.ms (30 s by default)",
                        self.instance,
                        warn_after.as_secs()
                    ));
                }
                _ = tokio::time::sleep_until(start + HOLD_CAP) => {
                    self.shared.fail(format!(
                        "{point:?} of consumer[{}] (event {seq}) held for {}s without a \
                         verdict; released",
                        self.instance,
                        HOLD_CAP.as_secs()
                    ));
                    break HoldDecision::Answer;
                }
            }
        };
        let held = start.elapsed();
        self.record(Event::Held {
            instance: self.instance,
            incarnation: self.incarnation,
            at: side.held_at(),
            event: seq,
            held_us: held.as_micros() as u64,
            released: verdict == HoldDecision::Answer,
        });
        verdict
    }
}

/// The distinct error codes of an OffsetCommit response's partitions, sorted (none: success).
fn partition_errors(body: &OffsetCommitResponse) -> Vec<i16> {
    let mut errors: Vec<i16> = body
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .filter(|c| *c != 0)
        .collect();
    errors.sort_unstable();
    errors.dedup();
    errors
}
