//! Fetch: the offsets the client asks from (per connection, since fetch sessions omit
//! unchanged partitions), and the deliveries of each Fetch response: one `delivered_batch` event
//! per partition of the topic under test, listing the records the client hands to its
//! application (batches the ledger names as offset ranges, see `records.rs`).
//!
//! Invariants: taking a response's partitions reads no record (the records stay handles on the
//! response's bytes) so the response is forwarded without waiting for them; records before the
//! offset the client asked from are never counted as delivered; a partition whose records cannot
//! be read fails the run (the evidence would be incomplete).
//!
//! A `fetch_error` armed on the instance is taken by its next Fetch response that carries
//! records of the topic under test: those partitions go to the client with the error code and
//! no records (re-encoded at the request's version), nothing of them counts as delivered, and
//! a `replied` event names the positions the client had asked from.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse};

use super::conn::{Conn, Ctx};
use super::lock;
use super::records::deliveries;
use super::rewrite::RewriteError;
use super::wire::{decode_response, encode_response};
use crate::plan::{KafkaError, ProtocolReply};
use crate::proxy::Handled;
use crate::timeline::{CommittedOffset, Event};

/// One partition's records in a Fetch response, and what reading their deliveries needs.
pub(super) struct FetchedPartition {
    topic: String,
    partition: i32,
    /// A handle on the response's bytes (no copy).
    records: Bytes,
    /// The offset the client asked from (records before it are not handed to it).
    fetch_offset: i64,
    /// Aborted transactions: (producer id, first offset).
    aborted: Vec<(i64, i64)>,
    read_committed: bool,
}

impl Conn {
    /// Remembers the offsets a Fetch request asks from (and forgets the partitions it drops
    /// from its fetch session); its response needs its isolation level.
    pub(super) fn fetch_request(&self, r: &FetchRequest) -> Ctx {
        let mut positions = lock(&self.positions);
        for t in &r.topics {
            let topic = self
                .shared
                .topic_name(t.topic.0.as_str(), t.topic_id.as_bytes());
            for p in &t.partitions {
                positions.insert((topic.clone(), p.partition), p.fetch_offset);
            }
        }
        for t in &r.forgotten_topics_data {
            let topic = self
                .shared
                .topic_name(t.topic.0.as_str(), t.topic_id.as_bytes());
            for p in &t.partitions {
                positions.remove(&(topic.clone(), *p));
            }
        }
        Ctx::Fetch {
            read_committed: r.isolation_level == 1,
        }
    }

    /// Takes a Fetch response's partitions of the topic under test into `fetched` (their
    /// records are read by the caller), and rewrites its KIP-951 node endpoints if it has any
    /// (else it is forwarded as it came).
    pub(super) fn fetch_response(
        &self,
        frame: Bytes,
        version: i16,
        ctx: &Ctx,
        fetched: &mut Vec<FetchedPartition>,
    ) -> Result<Handled, RewriteError> {
        let key = ApiKey::Fetch;
        let (header, mut body) = decode_response::<FetchResponse>(&frame, key, version)?;
        let read_committed = matches!(
            ctx,
            Ctx::Fetch {
                read_committed: true
            }
        );
        // Only what the records' reading needs is taken now (the fetch positions as this
        // response answers them); the records are read by the caller.
        *fetched = self.fetched_partitions(&body, read_committed);
        let armed = if fetched.is_empty() {
            None
        } else {
            self.shared.registry.take_reply(self.instance, |r| {
                matches!(
                    r,
                    ProtocolReply::FetchError { .. } | ProtocolReply::FetchTwice
                )
            })
        };
        let refused = match armed {
            Some(ProtocolReply::FetchError { error }) => {
                self.refuse_fetch(&mut body, std::mem::take(fetched), error, version);
                true
            }
            Some(ProtocolReply::FetchTwice) => {
                self.fetch_twice(&mut body, fetched, version);
                true
            }
            Some(ProtocolReply::CommitError { .. } | ProtocolReply::HeartbeatError { .. })
            | None => false,
        };
        if body.node_endpoints.is_empty() && !refused {
            return Ok(Handled::Forward(frame));
        }
        for n in &mut body.node_endpoints {
            self.redirect(n.node_id.0, &mut n.host, &mut n.port)?;
        }
        Ok(Handled::Forward(encode_response(
            &header, key, version, &body,
        )?))
    }

    /// Puts `error` on the partitions of `refused` in `body` in place of their records, and
    /// records what the client was told (a `replied` event).
    fn refuse_fetch(
        &self,
        body: &mut FetchResponse,
        refused: Vec<FetchedPartition>,
        error: KafkaError,
        version: i16,
    ) {
        let mut withheld = 0usize;
        for t in &mut body.responses {
            let topic = self
                .shared
                .topic_name(t.topic.0.as_str(), t.topic_id.as_bytes());
            if topic != self.shared.topic {
                continue;
            }
            for p in &mut t.partitions {
                if refused.iter().any(|f| f.partition == p.partition_index) {
                    withheld += p.records.as_ref().map_or(0, Bytes::len);
                    p.error_code = error.code();
                    // Empty, not null: librdkafka refuses a null record set in a flexible
                    // Fetch ("invalid MessageSetSize -1") before it reads the error.
                    p.records = Some(Bytes::new());
                    p.aborted_transactions = None;
                }
            }
        }
        let offsets = refused
            .iter()
            .map(|f| CommittedOffset {
                topic: f.topic.clone(),
                partition: f.partition,
                offset: f.fetch_offset,
            })
            .collect();
        self.record(Event::Replied {
            instance: self.instance,
            incarnation: self.incarnation,
            api: "Fetch".into(),
            version,
            sent: error.name().into(),
            offsets,
            broker: format!(
                "the broker's answer carried {withheld} bytes of records from the fetch positions; none reached the client"
            ),
        });
    }

    /// Repeats the records of the first partition of `fetched` right after themselves in
    /// `body` (the deliveries then list what was sent: every record twice), and records it.
    fn fetch_twice(
        &self,
        body: &mut FetchResponse,
        fetched: &mut [FetchedPartition],
        version: i16,
    ) {
        let Some(first) = fetched.first_mut() else {
            return;
        };
        let mut twice = Vec::with_capacity(first.records.len() * 2);
        twice.extend_from_slice(&first.records);
        twice.extend_from_slice(&first.records);
        let twice = Bytes::from(twice);
        for t in &mut body.responses {
            let topic = self
                .shared
                .topic_name(t.topic.0.as_str(), t.topic_id.as_bytes());
            if topic != self.shared.topic {
                continue;
            }
            for p in &mut t.partitions {
                if p.partition_index == first.partition {
                    p.records = Some(twice.clone());
                }
            }
        }
        let bytes = first.records.len();
        first.records = twice;
        self.record(Event::Replied {
            instance: self.instance,
            incarnation: self.incarnation,
            api: "Fetch".into(),
            version,
            sent: "RECORDS_TWICE".into(),
            offsets: vec![CommittedOffset {
                topic: first.topic.clone(),
                partition: first.partition,
                offset: first.fetch_offset,
            }],
            broker: format!(
                "the broker's answer carried {bytes} bytes of records; the client got them twice in a row"
            ),
        });
    }

    /// The partitions of the topic under test in a Fetch response that carry records, with
    /// what reading their deliveries needs. Cheap (no record is read): the records stay
    /// handles on the response's bytes.
    fn fetched_partitions(
        &self,
        body: &FetchResponse,
        read_committed: bool,
    ) -> Vec<FetchedPartition> {
        let mut out = Vec::new();
        for t in &body.responses {
            let topic = self
                .shared
                .topic_name(t.topic.0.as_str(), t.topic_id.as_bytes());
            if topic != self.shared.topic {
                continue;
            }
            for p in &t.partitions {
                let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) else {
                    continue;
                };
                let fetch_offset = lock(&self.positions)
                    .get(&(topic.clone(), p.partition_index))
                    .copied()
                    .unwrap_or(0);
                out.push(FetchedPartition {
                    topic: topic.clone(),
                    partition: p.partition_index,
                    records: records.clone(),
                    fetch_offset,
                    aborted: p
                        .aborted_transactions
                        .iter()
                        .flatten()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect(),
                    read_committed,
                });
            }
        }
        out
    }

    /// Records one `delivered_batch` event per fetched partition, listing the records the
    /// client will hand to the application: batches the ledger names as offset ranges (when
    /// the run handed the proxy its acknowledged offsets), the rest read record by record. A
    /// partition whose records cannot be read fails the run.
    pub(super) fn record_deliveries(&self, fetched: Vec<FetchedPartition>) {
        let acked = self.shared.acked.get();
        for f in fetched {
            let vouched_below = acked.map_or(0, |a| a.below(f.partition));
            let (delivered, err) = deliveries(
                &f.records,
                f.fetch_offset,
                &f.aborted,
                f.read_committed,
                vouched_below,
            );
            if !delivered.is_empty() {
                self.shared.timeline.record(Event::DeliveredBatch {
                    instance: self.instance,
                    incarnation: self.incarnation,
                    partition: f.partition,
                    ranges: delivered.ranges,
                    records: delivered.records,
                });
            }
            if let Some(e) = err {
                self.shared.fail(format!(
                    "cannot read the records fetched by consumer[{}] from {}[{}]: {e}",
                    self.instance, f.topic, f.partition
                ));
            }
        }
    }
}
