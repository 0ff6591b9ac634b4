//! The `kafka-topic` sink: the consumer's output topic is the boundary. The harness reads it
//! back twice, from the first offset: under the boundary's isolation (`read_committed` by
//! default) every record is an effect; under `read_uncommitted` too, and the records only
//! that reader saw (aborted or never-committed transactions) are counted and named in one
//! `output_topic_read` event at the end (each with its place and ID, for the judge to name
//! per ID): what a non-transactional reader downstream would have seen, never effects.
//!
//! Effects are not attributed to a process here (the record names none): each carries its
//! record's place, which the judge ties to the consumer Produce the proxy saw write it; each
//! names its message by the boundary's rule (`header:`, `key`, `json:`, `regex:`, `body`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::EffectRecorder;
use crate::broker::output_topic::{Isolation, OutputRecord, OutputTopic, ReadEnd};
use crate::error::InfraError;
use crate::timeline::{AbortedRecord, Attribution, Event, RecordPlace};

/// How many aborted records' IDs the event names.
const ABORTED_SAMPLES: usize = 20;
/// The longest wait for a reader to finish once the run stopped (its own drain is shorter).
const JOIN_DEADLINE: Duration = Duration::from_secs(30);

/// `(partition, offset)` of a record.
type Place = (i32, i64);

/// An effect's attribution as this sink knows it: no process, the record's place (the judge
/// finds the incarnation whose Produce wrote it).
fn record_attribution(topic: &str, partition: i32, offset: i64) -> Attribution {
    Attribution {
        record: Some(Box::new(RecordPlace {
            topic: topic.to_owned(),
            partition,
            offset,
        })),
        ..Attribution::default()
    }
}

/// The two readers of one output topic.
pub struct KafkaTopicSink {
    topic: String,
    isolation: Isolation,
    effects: std::thread::JoinHandle<ReadEnd>,
    other: std::thread::JoinHandle<ReadEnd>,
    effect_places: Arc<Mutex<BTreeSet<Place>>>,
    other_records: Arc<Mutex<BTreeMap<Place, OutputRecord>>>,
    recorder: EffectRecorder,
}

impl KafkaTopicSink {
    /// Creates the output topic fresh and starts both readers; they read until `stop`.
    pub async fn start(
        output: OutputTopic,
        isolation: Isolation,
        recorder: EffectRecorder,
        stop: CancellationToken,
    ) -> Result<KafkaTopicSink, InfraError> {
        output.create().await?;
        let effect_places: Arc<Mutex<BTreeSet<Place>>> = Arc::default();
        let places = effect_places.clone();
        let effect_recorder = recorder.clone();
        let topic = output.topic.clone();
        let effects = output.read(isolation, stop.clone(), move |r| {
            places
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((r.partition, r.offset));
            effect_recorder.record_keyed(
                &r.headers,
                r.key.as_deref(),
                &r.payload,
                (
                    None,
                    None,
                    record_attribution(&topic, r.partition, r.offset),
                ),
            );
        })?;
        let other_isolation = match isolation {
            Isolation::ReadCommitted => Isolation::ReadUncommitted,
            Isolation::ReadUncommitted => Isolation::ReadCommitted,
        };
        let other_records: Arc<Mutex<BTreeMap<Place, OutputRecord>>> = Arc::default();
        let records = other_records.clone();
        let other = output.read(other_isolation, stop, move |r| {
            records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((r.partition, r.offset), r);
        })?;
        Ok(KafkaTopicSink {
            topic: output.topic,
            isolation,
            effects,
            other,
            effect_places,
            other_records,
            recorder,
        })
    }

    /// Waits for both readers to drain (the run has stopped) and records what they read.
    pub async fn finish(self) {
        let join = |h: std::thread::JoinHandle<ReadEnd>| async move {
            let waited = tokio::task::spawn_blocking(move || h.join());
            match tokio::time::timeout(JOIN_DEADLINE, waited).await {
                Ok(Ok(Ok(end))) => end,
                _ => ReadEnd::default(),
            }
        };
        let (effects_end, other_end) = (join(self.effects).await, join(self.other).await);
        let places = self
            .effect_places
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let others =
            std::mem::take(&mut *self.other_records.lock().unwrap_or_else(|p| p.into_inner()));
        let (committed, uncommitted) = match self.isolation {
            Isolation::ReadCommitted => (places.len(), others.len()),
            Isolation::ReadUncommitted => (others.len(), places.len()),
        };
        // Records under read_uncommitted that read_committed never saw.
        let aborted: Vec<&OutputRecord> = match self.isolation {
            Isolation::ReadCommitted => others
                .iter()
                .filter(|(place, _)| !places.contains(place))
                .map(|(_, r)| r)
                .collect(),
            // Effects read uncommitted: the committed reader's places are the subset.
            Isolation::ReadUncommitted => Vec::new(),
        };
        let aborted: Vec<AbortedRecord> = aborted
            .iter()
            .map(|r| AbortedRecord {
                partition: r.partition,
                offset: r.offset,
                id: self
                    .recorder
                    .id_of(&r.headers, r.key.as_deref(), &r.payload),
            })
            .collect();
        let ids: Vec<String> = aborted.iter().filter_map(|r| r.id.clone()).collect();
        self.recorder.note(Event::OutputTopicRead {
            boundary: self.recorder.boundary(),
            topic: self.topic,
            isolation: self.isolation.as_str().into(),
            committed_records: committed as u64,
            uncommitted_records: uncommitted as u64,
            aborted_records: aborted.len() as u64,
            aborted_with_id: ids.len() as u64,
            aborted_ids: ids.into_iter().take(ABORTED_SAMPLES).collect(),
            aborted,
            complete: effects_end.complete && other_end.complete,
        });
    }
}
