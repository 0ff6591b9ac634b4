//! Kafka transactions seen through the proxy: InitProducerId, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn, each recorded as one `txn` event when its
//! response passes (who asked, the transactional id, the producer id and epoch, commit or
//! abort, the offsets a TxnOffsetCommit adds, and the broker's error: PRODUCER_FENCED /
//! INVALID_PRODUCER_EPOCH show a fenced
//! zombie). Observed only: the frames are forwarded as they came.

use bytes::Bytes;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use super::commit::CommitHold;
use super::conn::{Conn, Ctx};
use super::wire::{decode_request, decode_response, error_name, WireError};
use super::{lock, HoldDecision};
use crate::proxy::Handled;
use crate::timeline::{CommittedOffset, Event, TxnOp};

/// What a transactional request said, for the event its response completes.
#[derive(Debug, Clone)]
pub(super) struct TxnInfo {
    op: TxnOp,
    transactional_id: Option<String>,
    producer_id: i64,
    producer_epoch: i16,
    committed: Option<bool>,
    /// TxnOffsetCommit: the offsets it adds to the transaction.
    offsets: Vec<CommittedOffset>,
}

/// The transactional APIs, or `None` for any other.
pub(super) fn txn_op(key: ApiKey) -> Option<TxnOp> {
    match key {
        ApiKey::InitProducerId => Some(TxnOp::InitProducerId),
        ApiKey::AddPartitionsToTxn => Some(TxnOp::AddPartitionsToTxn),
        ApiKey::AddOffsetsToTxn => Some(TxnOp::AddOffsetsToTxn),
        ApiKey::TxnOffsetCommit => Some(TxnOp::TxnOffsetCommit),
        ApiKey::EndTxn => Some(TxnOp::EndTxn),
        _ => None,
    }
}

impl TxnInfo {
    /// True for an EndTxn that commits its transaction.
    pub(super) fn commits(&self) -> bool {
        self.op == TxnOp::EndTxn && self.committed == Some(true)
    }
}

/// The offsets a TxnOffsetCommit adds to its transaction.
fn txn_offsets(r: &TxnOffsetCommitRequest) -> Vec<CommittedOffset> {
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| CommittedOffset {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
            })
        })
        .collect()
}

/// The first non-zero error code, as Kafka names it.
fn first_error(codes: impl IntoIterator<Item = i16>) -> Option<String> {
    codes.into_iter().find(|c| *c != 0).map(error_name)
}

impl Conn {
    /// Reads a transactional request.
    pub(super) fn txn_request(
        &self,
        frame: &Bytes,
        key: ApiKey,
        version: i16,
        op: TxnOp,
    ) -> Result<Ctx, WireError> {
        let info = |tid: Option<String>, pid: i64, epoch: i16, committed: Option<bool>| TxnInfo {
            op,
            transactional_id: tid,
            producer_id: pid,
            producer_epoch: epoch,
            committed,
            offsets: Vec::new(),
        };
        let info = match op {
            TxnOp::InitProducerId => {
                let r: InitProducerIdRequest = decode_request(frame, key, version)?;
                let tid = r.transactional_id.map(|t| t.0.to_string());
                info(tid, r.producer_id.0, r.producer_epoch, None)
            }
            TxnOp::AddPartitionsToTxn => {
                let r: AddPartitionsToTxnRequest = decode_request(frame, key, version)?;
                match r.transactions.first() {
                    Some(t) => info(
                        Some(t.transactional_id.0.to_string()),
                        t.producer_id.0,
                        t.producer_epoch,
                        None,
                    ),
                    None => info(
                        Some(r.v3_and_below_transactional_id.0.to_string()),
                        r.v3_and_below_producer_id.0,
                        r.v3_and_below_producer_epoch,
                        None,
                    ),
                }
            }
            TxnOp::AddOffsetsToTxn => {
                let r: AddOffsetsToTxnRequest = decode_request(frame, key, version)?;
                let tid = Some(r.transactional_id.0.to_string());
                info(tid, r.producer_id.0, r.producer_epoch, None)
            }
            TxnOp::TxnOffsetCommit => {
                let r: TxnOffsetCommitRequest = decode_request(frame, key, version)?;
                let tid = Some(r.transactional_id.0.to_string());
                TxnInfo {
                    offsets: txn_offsets(&r),
                    ..info(tid, r.producer_id.0, r.producer_epoch, None)
                }
            }
            TxnOp::EndTxn => {
                let r: EndTxnRequest = decode_request(frame, key, version)?;
                let tid = Some(r.transactional_id.0.to_string());
                info(tid, r.producer_id.0, r.producer_epoch, Some(r.committed))
            }
        };
        Ok(Ctx::Txn(info))
    }

    /// Records an EndTxn (commit) request (correlation id `corr`) as a `txn` event with
    /// `request`, and waits for the nemesis (`before: end_txn`): a withheld request is never
    /// forwarded (nor awaited), so the transaction never commits.
    pub(super) async fn pass_end_txn_request(
        &self,
        corr: i32,
        info: TxnInfo,
        frame: Bytes,
    ) -> Handled {
        let seq = self
            .record(Event::Txn {
                instance: self.instance,
                incarnation: self.incarnation,
                op: info.op,
                transactional_id: info.transactional_id,
                producer_id: info.producer_id,
                producer_epoch: info.producer_epoch,
                committed: info.committed,
                request: true,
                offsets: Vec::new(),
                error: None,
            })
            .seq;
        if self.hold(CommitHold::EndTxn, seq).await == HoldDecision::Withhold {
            lock(&self.inflight).remove(&corr);
            return Handled::Drop;
        }
        Handled::Forward(frame)
    }

    /// Records the `txn` event a transactional response completes (a response the proxy
    /// cannot read is a warning; the frame is forwarded either way).
    pub(super) fn txn_response(&self, frame: &Bytes, key: ApiKey, version: i16, info: TxnInfo) {
        match self.txn_outcome(frame, key, version, &info) {
            Ok((producer_id, producer_epoch, error)) => {
                self.record(Event::Txn {
                    instance: self.instance,
                    incarnation: self.incarnation,
                    op: info.op,
                    transactional_id: info.transactional_id,
                    producer_id,
                    producer_epoch,
                    committed: info.committed,
                    request: false,
                    offsets: info.offsets,
                    error,
                });
            }
            Err(e) => self.shared.warn(format!(
                "kafka proxy: consumer[{}] got a transactional response the proxy cannot read: {e}",
                self.instance
            )),
        }
    }

    /// The producer id and epoch after the response, and its error.
    fn txn_outcome(
        &self,
        frame: &Bytes,
        key: ApiKey,
        version: i16,
        info: &TxnInfo,
    ) -> Result<(i64, i16, Option<String>), WireError> {
        let asked = (info.producer_id, info.producer_epoch);
        Ok(match info.op {
            TxnOp::InitProducerId => {
                let (_, r): (_, InitProducerIdResponse) = decode_response(frame, key, version)?;
                (
                    r.producer_id.0,
                    r.producer_epoch,
                    first_error([r.error_code]),
                )
            }
            TxnOp::AddPartitionsToTxn => {
                let (_, r): (_, AddPartitionsToTxnResponse) = decode_response(frame, key, version)?;
                let v3 = r
                    .results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| t.results_by_partition.iter())
                    .map(|p| p.partition_error_code);
                let v4 = r
                    .results_by_transaction
                    .iter()
                    .flat_map(|t| t.topic_results.iter())
                    .flat_map(|t| t.results_by_partition.iter())
                    .map(|p| p.partition_error_code);
                let codes: Vec<i16> = std::iter::once(r.error_code).chain(v3).chain(v4).collect();
                (asked.0, asked.1, first_error(codes))
            }
            TxnOp::AddOffsetsToTxn => {
                let (_, r): (_, AddOffsetsToTxnResponse) = decode_response(frame, key, version)?;
                (asked.0, asked.1, first_error([r.error_code]))
            }
            TxnOp::TxnOffsetCommit => {
                let (_, r): (_, TxnOffsetCommitResponse) = decode_response(frame, key, version)?;
                let codes: Vec<i16> = r
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                    .collect();
                (asked.0, asked.1, first_error(codes))
            }
            TxnOp::EndTxn => {
                let (_, r): (_, EndTxnResponse) = decode_response(frame, key, version)?;
                (asked.0, asked.1, first_error([r.error_code]))
            }
        })
    }
}
