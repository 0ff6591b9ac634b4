//! The plan's dead-letter destination (`broker.dead_letter`), read by the harness after the
//! run: what the consumer diverted there is recorded in one `dead_letters` event, which the
//! judge reads to call those IDs `diverted` (neither lost nor effected).
//!
//! Kafka: a topic made before the run (an existing one is kept: its older records name other
//! runs' IDs, which this run's ledger ignores) and read from its first offset to its end by an
//! assigned reader that never joins a group ([`super::output_topic`]'s reader). RabbitMQ: the
//! dead-letter queue, declared and drained in `amqp.rs` (the only module that imports lapin).
//!
//! *Architecture invariant:* the read happens once the consumers are stopped; an ID read here
//! is evidence the consumer diverted it; a read that did not finish says so (`complete:
//! false`), and the judge then proves no loss at all.

use tokio_util::sync::CancellationToken;

use super::output_topic::{Isolation, OutputRecord, OutputTopic};
use crate::error::InfraError;
use crate::timeline::Event;

/// The header that names a record's message ID (as the workload writes it).
const ID_HEADER: &str = "exactly-id";

/// What the dead-letter destination held once the run stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetters {
    /// Records or messages read.
    pub records: u64,
    /// Their IDs, in read order.
    pub ids: Vec<String>,
    /// False when the read did not finish.
    pub complete: bool,
}

impl DeadLetters {
    /// The timeline event that records this read of `destination`.
    pub fn event(self, destination: &str) -> Event {
        Event::DeadLetters {
            destination: destination.to_owned(),
            records: self.records,
            ids: self.ids,
            complete: self.complete,
        }
    }
}

/// The ID a dead-letter record names: its `exactly-id` header, else its key.
pub fn record_id(record: &OutputRecord) -> Option<String> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == ID_HEADER)
        .map(|(_, v)| v.clone())
        .or_else(|| record.key.clone())
}

/// Makes the Kafka dead-letter topic (one partition), keeping one that exists.
pub async fn create_topic(topic: &OutputTopic) -> Result<(), InfraError> {
    topic
        .create_or_keep()
        .await
        .map_err(|e| InfraError::new(format!("dead-letter topic {}: {e}", topic.topic)))
}

/// Reads the Kafka dead-letter topic from its first offset to its end (every record, as a
/// non-transactional reader downstream sees them), within the reader's deadline.
pub async fn read_topic(topic: &OutputTopic) -> Result<DeadLetters, InfraError> {
    let stop = CancellationToken::new();
    // The consumers are stopped already: read what is there, then end once quiet at the end.
    stop.cancel();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = topic.read(Isolation::ReadUncommitted, stop, move |record| {
        let _ = tx.send(record_id(&record));
    })?;
    let end = tokio::task::spawn_blocking(move || reader.join())
        .await
        .map_err(|e| InfraError::new(format!("dead-letter reader: {e}")))?
        .map_err(|_| InfraError::new("the dead-letter reader panicked"))?;
    let mut read = DeadLetters {
        complete: end.complete,
        ..DeadLetters::default()
    };
    for id in rx.try_iter() {
        read.records += 1;
        read.ids.extend(id);
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_named_by_its_header_then_its_key() {
        let record = |key: Option<&str>, header: Option<&str>| OutputRecord {
            partition: 0,
            offset: 0,
            key: key.map(str::to_owned),
            headers: header
                .map(|h| vec![(ID_HEADER.to_owned(), h.to_owned())])
                .unwrap_or_default(),
            payload: "poison".into(),
        };
        assert_eq!(
            record_id(&record(Some("k"), Some("r-1"))).as_deref(),
            Some("r-1")
        );
        assert_eq!(
            record_id(&record(Some("r-2"), None)).as_deref(),
            Some("r-2")
        );
        assert_eq!(record_id(&record(None, None)), None);
    }
}
