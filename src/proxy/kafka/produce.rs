//! A consumer's own Produce (consume-transform-produce writing its output topic), recorded as
//! one `consumer_produce` event when the broker's answer passes: the transactional id, the
//! producer id and epoch of its record batches, and per partition the records sent and the
//! offset the broker gave the first. Observed only: frames are forwarded as they came.
//!
//! Invariant: the record count and producer of a partition come from the v2 record batch
//! headers of the request (several batches per partition are summed); a partition whose
//! records cannot be read counts 0 records.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};

use super::conn::{Conn, Ctx};
use super::wire::{decode_request, decode_response, error_name, WireError};
use crate::timeline::{Event, ProducedBatch};

/// What a Produce request sent, for the event its response completes.
#[derive(Debug, Clone)]
pub(super) struct ProduceInfo {
    transactional_id: Option<String>,
    producer_id: i64,
    producer_epoch: i16,
    /// (topic, partition, records).
    sent: Vec<(String, i32, u32)>,
}

/// Byte offsets in a v2 record batch header.
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const RECORD_COUNT_AT: usize = 57;
/// Header bytes before a batch's length field counts (baseOffset, batchLength).
const LOG_OVERHEAD: usize = 12;

/// The producer (id, epoch) of the first batch and the records of every batch in `records`.
fn read_batches(records: &[u8]) -> (Option<(i64, i16)>, u32) {
    let mut at = 0usize;
    let mut producer = None;
    let mut count = 0u32;
    while records.len() >= at + RECORD_COUNT_AT + 4 {
        let b = &records[at..];
        let be_i64 = |i: usize| i64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let be_i32 = |i: usize| i32::from_be_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let epoch = i16::from_be_bytes([b[PRODUCER_EPOCH_AT], b[PRODUCER_EPOCH_AT + 1]]);
        producer.get_or_insert((be_i64(PRODUCER_ID_AT), epoch));
        count = count.saturating_add(be_i32(RECORD_COUNT_AT).max(0) as u32);
        let length = be_i32(8);
        if length <= 0 {
            break;
        }
        at += LOG_OVERHEAD + length as usize;
    }
    (producer, count)
}

impl Conn {
    /// Reads a Produce request.
    pub(super) fn produce_request(
        &self,
        frame: &Bytes,
        key: ApiKey,
        version: i16,
    ) -> Result<Ctx, WireError> {
        let r: ProduceRequest = decode_request(frame, key, version)?;
        let mut producer = None;
        let mut sent = Vec::new();
        for t in &r.topic_data {
            let topic = self
                .shared
                .topic_name(t.name.0.as_str(), t.topic_id.as_bytes());
            for p in &t.partition_data {
                let (who, records) = p.records.as_deref().map_or((None, 0), read_batches);
                producer = producer.or(who);
                sent.push((topic.clone(), p.index, records));
            }
        }
        let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
        Ok(Ctx::Produce(ProduceInfo {
            transactional_id: r.transactional_id.map(|t| t.0.to_string()),
            producer_id,
            producer_epoch,
            sent,
        }))
    }

    /// Records the `consumer_produce` event a Produce response completes (a response the proxy
    /// cannot read is a warning; the frame is forwarded either way).
    pub(super) fn produce_answered(&self, frame: &Bytes, version: i16, info: &ProduceInfo) {
        let r: ProduceResponse = match decode_response(frame, ApiKey::Produce, version) {
            Ok((_, r)) => r,
            Err(e) => {
                self.shared.warn(format!(
                    "kafka proxy: consumer[{}] got a Produce response the proxy cannot read: {e}",
                    self.instance
                ));
                return;
            }
        };
        let batches = info
            .sent
            .iter()
            .map(|(topic, partition, records)| {
                let answer = r
                    .responses
                    .iter()
                    .filter(|t| {
                        self.shared
                            .topic_name(t.name.0.as_str(), t.topic_id.as_bytes())
                            == *topic
                    })
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == *partition);
                ProducedBatch {
                    topic: topic.clone(),
                    partition: *partition,
                    base_offset: answer.map_or(-1, |a| a.base_offset),
                    records: *records,
                    error: match answer {
                        Some(a) if a.error_code == 0 => None,
                        Some(a) => Some(error_name(a.error_code)),
                        None => Some("NO_ANSWER".into()),
                    },
                }
            })
            .collect();
        self.record(Event::ConsumerProduce {
            instance: self.instance,
            incarnation: self.incarnation,
            transactional_id: info.transactional_id.clone(),
            producer_id: info.producer_id,
            producer_epoch: info.producer_epoch,
            batches,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 batch header of `count` records by producer (`pid`, `epoch`), `body` bytes after it.
    fn batch(pid: i64, epoch: i16, count: i32, body: usize) -> Vec<u8> {
        let mut b = vec![0u8; 61 + body];
        let length = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&length.to_be_bytes());
        b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&pid.to_be_bytes());
        b[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&epoch.to_be_bytes());
        b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
        b
    }

    #[test]
    fn batches_give_their_producer_and_the_sum_of_their_records() {
        let mut records = batch(7, 2, 3, 10);
        records.extend(batch(7, 2, 4, 0));
        assert_eq!(read_batches(&records), (Some((7, 2)), 7));
        assert_eq!(read_batches(&records[..20]), (None, 0), "a torn header");
    }
}
