//! The workload: messages with unique IDs `{run}-{seq}`, their keys and per-key sequence, their
//! payloads, and the produce pace. What a broker does with them (and the ledger it keeps) is in
//! `broker/`.
//!
//! Keys: by default every message is its own key (the ID). With `workload.keys: K` the
//! messages are spread round-robin over K keys (`{run}-key{k}`), each with its own sequence
//! 1, 2, 3..., so the report can tell when effects for one key happen out of produce order.

use std::time::Duration;

use crate::plan::Rate;

/// One message to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Unique ID.
    pub id: String,
    /// 1-based position in the workload.
    pub seq: u64,
    /// The message key (the broker partitions by it): the ID, or one of `workload.keys` keys.
    pub key: String,
    /// 1-based position among the messages of the same key.
    pub key_seq: u64,
    /// Payload with the template filled in.
    pub payload: String,
}

/// The `seq`-th message (from 1) of run `run`; `keys` is `workload.keys` (None: every message
/// is its own key).
pub fn message(run: &str, seq: u64, keys: Option<u64>, template: &str) -> Message {
    let id = format!("{run}-{seq}");
    let (key, key_seq) = match keys {
        Some(k) if k > 0 => (format!("{run}-key{}", (seq - 1) % k), (seq - 1) / k + 1),
        _ => (id.clone(), 1),
    };
    let payload = template
        .replace("{id}", &id)
        .replace("{seq}", &seq.to_string())
        .replace("{key}", &key)
        .replace("{run}", run);
    Message {
        id,
        seq,
        key,
        key_seq,
        payload,
    }
}

/// Makes the messages of one run: its ID scheme, keys and payload template.
#[derive(Debug, Clone)]
pub struct MessageFactory {
    /// The run id (IDs are `{run}-{seq}`).
    pub run: String,
    /// `workload.keys`.
    pub keys: Option<u64>,
    /// The payload template.
    pub template: String,
}

impl MessageFactory {
    /// Messages of run `run`, each its own key.
    pub fn new(run: &str, template: &str) -> MessageFactory {
        MessageFactory {
            run: run.to_owned(),
            keys: None,
            template: template.to_owned(),
        }
    }

    /// The `seq`-th message, from 1.
    pub fn message(&self, seq: u64) -> Message {
        message(&self.run, seq, self.keys, &self.template)
    }
}

impl Message {
    /// The `produced` event of this message, once its fate is known. The key is recorded
    /// only when it is not the ID itself.
    pub fn produced(
        &self,
        partition: Option<i32>,
        offset: Option<i64>,
        status: crate::timeline::ProduceStatus,
        error: Option<String>,
    ) -> crate::timeline::Event {
        crate::timeline::Event::Produced {
            id: self.id.clone(),
            seq: self.key_seq,
            key: (self.key != self.id).then(|| self.key.clone()),
            partition,
            offset,
            status,
            error,
        }
    }
}

/// Waits `wait` while driving the sends still in flight, so their delivery reports (the
/// ledger) are recorded when they arrive, and a send future that only starts on its first poll
/// (rdkafka's) leaves on time instead of in a burst after the last message.
pub async fn wait_driving<F: std::future::Future>(
    wait: Duration,
    in_flight: &mut futures::stream::FuturesUnordered<F>,
) {
    use futures::StreamExt;
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return,
            Some(_) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
}

/// Paces sends to a rate: how long to wait before sending message number `sent` (from 0),
/// `elapsed` after the first one.
pub fn delay_before(rate: Rate, sent: u64, elapsed: Duration) -> Duration {
    match rate {
        Rate::Unlimited => Duration::ZERO,
        Rate::PerSecond(r) => Duration::from_secs_f64(sent as f64 / r).saturating_sub(elapsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_fill_the_template() {
        let m = message("r1", 7, None, r#"{"order_id":"{id}","n":{seq}}"#);
        assert_eq!(m.id, "r1-7");
        assert_eq!(m.payload, r#"{"order_id":"r1-7","n":7}"#);
        assert_ne!(
            message("r1", 1, None, "").id,
            message("r1", 11, None, "").id
        );
    }

    #[test]
    fn without_keys_every_message_is_its_own_key() {
        let m = message("r1", 7, None, "");
        assert_eq!((m.key.as_str(), m.key_seq), ("r1-7", 1));
    }

    #[test]
    fn keys_spread_messages_round_robin_each_with_its_own_sequence() {
        let keyed: Vec<(String, u64)> = (1..=7)
            .map(|seq| message("r", seq, Some(3), "{key}"))
            .map(|m| (m.payload, m.key_seq))
            .collect();
        let expected = [
            ("r-key0", 1),
            ("r-key1", 1),
            ("r-key2", 1),
            ("r-key0", 2),
            ("r-key1", 2),
            ("r-key2", 2),
            ("r-key0", 3),
        ];
        let expected: Vec<(String, u64)> =
            expected.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        assert_eq!(keyed, expected);
    }

    #[test]
    fn pacing_spreads_messages_over_time() {
        let rate = Rate::PerSecond(100.0);
        assert_eq!(delay_before(rate, 0, Duration::ZERO), Duration::ZERO);
        assert_eq!(
            delay_before(rate, 50, Duration::from_millis(200)),
            Duration::from_millis(300)
        );
        assert_eq!(
            delay_before(rate, 50, Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(
            delay_before(Rate::Unlimited, 9, Duration::ZERO),
            Duration::ZERO
        );
    }
}
