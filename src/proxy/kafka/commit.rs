//! OffsetCommit: what a consumer commits and what the broker answers, as `commit` events
//! (request, response, dropped), the holds at the gate for `before: commit` (the request),
//! `after: commit` (the response) and a transaction commit for `before: end_txn`, and the
//! `commit_error` protocol fault.
//!
//! Invariants: the `commit` event of a request is in the timeline before the request can be
//! held or forwarded; a withheld request is never forwarded and is recorded as dropped; a
//! withheld response never reaches the client; every hold ends, by the nemesis's verdict or
//! after [`HOLD_CAP`] (which fails the run), and is recorded as a `held` event.
//!
//! A `commit_error` armed on the instance is taken by its next OffsetCommit once any hold has
//! ended: `dropped`, the request goes on with no partition (so the connection's responses stay
//! in order and the broker stores nothing; the `commit` event is `dropped`); `ambiguous`, it
//! goes on whole and the broker's answer is recorded as it is (the broker's word). Either way
//! the consumer gets the error on every partition it committed, encoded at the request's
//! version, and a `replied` event says what it was told and what the broker stored. The
//! `commit` events therefore stay the truth the judge reads.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse, ResponseHeader};
use tokio::time::Instant;

use super::conn::{Conn, Ctx, Pending};
use super::wire::{
    decode_request_with_header, decode_response, encode_request, encode_response, error_name,
    is_group_error, WireError,
};
use super::{lock, HoldDecision, HoldPoint};
use crate::plan::{CommitErrorForm, KafkaError, ProtocolReply};
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
    /// The request's topics as it names them (name or id) with their partitions: the shape
    /// of an error answer the proxy writes itself.
    shape: Vec<OffsetCommitRequestTopic>,
    /// The `commit_error` this commit took, if any.
    refused: Option<(KafkaError, CommitErrorForm)>,
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
        let mut shape = Vec::new();
        for t in &r.topics {
            shape.push(t.clone());
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
            shape,
            refused: None,
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
        let armed = self.shared.registry.take_reply(self.instance, |r| {
            matches!(r, ProtocolReply::CommitError { .. })
        });
        match armed {
            Some(ProtocolReply::CommitError { error, form }) => {
                self.refuse_commit(corr, info, frame, error, form)
            }
            Some(
                ProtocolReply::FetchError { .. }
                | ProtocolReply::FetchTwice
                | ProtocolReply::HeartbeatError { .. },
            )
            | None => Handled::Forward(frame),
        }
    }

    /// Marks the commit in flight as refused with `error`; `dropped`, forwards it with no
    /// partition (the broker stores nothing) and records it as dropped.
    fn refuse_commit(
        &self,
        corr: i32,
        info: &CommitInfo,
        frame: Bytes,
        error: KafkaError,
        form: CommitErrorForm,
    ) -> Handled {
        if let Some(Pending {
            ctx: Ctx::Commit(pending),
            ..
        }) = lock(&self.inflight).get_mut(&corr)
        {
            pending.refused = Some((error, form));
        }
        match form {
            CommitErrorForm::Ambiguous => Handled::Forward(frame),
            CommitErrorForm::Dropped => match emptied_commit(&frame) {
                Ok(empty) => {
                    self.commit_event(info, CommitPhase::Dropped, None);
                    Handled::Forward(empty)
                }
                Err(e) => {
                    self.shared
                        .fail(format!("cannot rewrite an OffsetCommit to drop it: {e}"));
                    Handled::Forward(frame)
                }
            },
        }
    }

    /// Records an OffsetCommit response (with its partitions' errors, and a `rebalance` error
    /// when one says the member must rejoin) and, when the gate holds commit responses, waits
    /// for the nemesis. A response that cannot be decoded is forwarded but fails the run.
    pub(super) async fn commit_response(&self, frame: Bytes, version: i16, ctx: Ctx) -> Handled {
        let Ctx::Commit(info) = ctx else {
            return Handled::Forward(frame);
        };
        let key = ApiKey::OffsetCommit;
        let (header, body) = match decode_response::<OffsetCommitResponse>(&frame, key, version) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.shared
                    .fail(format!("cannot decode an OffsetCommit response: {e}"));
                return Handled::Forward(frame);
            }
        };
        if let Some((error, form)) = info.refused {
            let answer = (&header, version);
            return self.refused_response(frame, answer, &info, &body, error, form);
        }
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

    /// The answer to a refused commit: the broker's answer recorded when it stored the commit
    /// (`ambiguous`), then `error` on every partition, encoded at the request's version.
    fn refused_response(
        &self,
        frame: Bytes,
        (header, version): (&ResponseHeader, i16),
        info: &CommitInfo,
        body: &OffsetCommitResponse,
        error: KafkaError,
        form: CommitErrorForm,
    ) -> Handled {
        let broker = match form {
            CommitErrorForm::Dropped => {
                "never forwarded: the broker stored none of these offsets".to_string()
            }
            CommitErrorForm::Ambiguous => {
                let errors = partition_errors(body);
                let named = (!errors.is_empty()).then(|| {
                    errors
                        .iter()
                        .map(|c| error_name(*c))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                self.commit_event(info, CommitPhase::Response, named.clone());
                match named {
                    None => "forwarded: the broker stored these offsets".to_string(),
                    Some(e) => format!("forwarded: the broker answered {e}"),
                }
            }
        };
        match refusal_frame(header, version, info, error.code()) {
            Ok(reply) => {
                self.record(Event::Replied {
                    instance: self.instance,
                    incarnation: self.incarnation,
                    api: "OffsetCommit".into(),
                    version,
                    sent: error.name().into(),
                    offsets: info.offsets.clone(),
                    broker,
                });
                Handled::Forward(reply)
            }
            Err(e) => {
                self.shared
                    .fail(format!("cannot encode the commit_error answer: {e}"));
                Handled::Forward(frame)
            }
        }
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

/// The OffsetCommit request of `frame` with no partition: the broker checks the member and
/// stores nothing.
fn emptied_commit(frame: &Bytes) -> Result<Bytes, WireError> {
    let key = ApiKey::OffsetCommit;
    let Some((_, version, _)) = super::wire::request_ids(frame) else {
        return Ok(frame.clone());
    };
    let (header, mut body) =
        decode_request_with_header::<OffsetCommitRequest>(frame, key, version)?;
    body.topics.clear();
    encode_request(&header, key, version, &body)
}

/// An OffsetCommit response (correlation of `header`, at `version`) with `code` on every
/// partition the request committed.
fn refusal_frame(
    header: &ResponseHeader,
    version: i16,
    info: &CommitInfo,
    code: i16,
) -> Result<Bytes, WireError> {
    let topics = info
        .shape
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    let body = OffsetCommitResponse::default().with_topics(topics);
    encode_response(header, ApiKey::OffsetCommit, version, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition;
    use kafka_protocol::messages::{GroupId, RequestHeader, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::super::wire::{decodable_versions, decode_request};

    fn request() -> OffsetCommitRequest {
        let partition = |p, o| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(o)
        };
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_member_id(StrBytes::from_static_str("m-1"))
            .with_generation_id_or_member_epoch(3)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![partition(0, 12), partition(2, 40)])])
    }

    fn frame(version: i16) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::OffsetCommit as i16)
            .with_request_api_version(version)
            .with_correlation_id(77);
        encode_request(&header, ApiKey::OffsetCommit, version, &request()).unwrap()
    }

    /// Versions with topic names (v10+ names topics by id only).
    fn named_versions() -> impl Iterator<Item = i16> {
        let range = decodable_versions(ApiKey::OffsetCommit);
        (range.min..=range.max.min(9)).filter(|v| *v >= 2)
    }

    #[test]
    fn a_dropped_commit_goes_on_with_no_partition_and_the_same_member() {
        for version in named_versions() {
            let empty = emptied_commit(&frame(version)).unwrap();
            assert_eq!(
                super::super::wire::request_ids(&empty),
                Some((ApiKey::OffsetCommit as i16, version, 77))
            );
            let r: OffsetCommitRequest =
                decode_request(&empty, ApiKey::OffsetCommit, version).unwrap();
            assert!(r.topics.is_empty(), "v{version}");
            assert_eq!(r.member_id.as_str(), "m-1");
            assert_eq!(
                r.generation_id_or_member_epoch,
                request().generation_id_or_member_epoch
            );
        }
    }

    #[test]
    fn the_refusal_names_every_committed_partition_with_the_error_at_the_request_version() {
        let info = CommitInfo {
            group: "g".into(),
            member: "m-1".into(),
            generation: 3,
            offsets: Vec::new(),
            shape: request().topics,
            refused: Some((KafkaError::RebalanceInProgress, CommitErrorForm::Dropped)),
        };
        for version in named_versions() {
            let header = ResponseHeader::default().with_correlation_id(77);
            let code = KafkaError::RebalanceInProgress.code();
            let reply = refusal_frame(&header, version, &info, code).unwrap();
            let (h, body) =
                decode_response::<OffsetCommitResponse>(&reply, ApiKey::OffsetCommit, version)
                    .unwrap();
            assert_eq!(h.correlation_id, 77);
            let got: Vec<(String, i32, i16)> = body
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
                })
                .collect();
            assert_eq!(
                got,
                [("orders".to_string(), 0, 27), ("orders".to_string(), 2, 27)],
                "v{version}"
            );
            assert_eq!(partition_errors(&body), [27]);
        }
    }
}
