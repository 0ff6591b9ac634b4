//! The workload: messages with unique IDs `{run}-{seq}`, their keys and per-key sequence, their
//! payloads, and the produce pace. What a broker does with them (and the ledger it keeps) is in
//! `broker/`.
//!
//! Keys: by default every message is its own key (the ID). With `workload.keys: K` the
//! messages are spread round-robin over K keys (`{run}-key{k}`), each with its own sequence
//! 1, 2, 3..., so the report can tell when effects for one key happen out of produce order.
//!
//! Poison (`workload.poison`): the chosen messages get the poison body instead of the template,
//! so the consumer cannot decode them; their ID stays in the key and the `exactly-id` header
//! (set by the brokers for every message), and their `produced` event says `poison`.

use std::time::Duration;

use crate::plan::{PoisonSpec, Rate};

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
    /// Payload with the template filled in (the poison body, for a poison message).
    pub payload: String,
    /// True for a poison message (`workload.poison`).
    pub poison: bool,
}

/// Fills a payload template with a message's fields.
fn fill(template: &str, id: &str, seq: u64, key: &str, run: &str) -> String {
    template
        .replace("{id}", id)
        .replace("{seq}", &seq.to_string())
        .replace("{key}", key)
        .replace("{run}", run)
}

/// The `seq`-th message (from 1) of run `run`; `keys` is `workload.keys` (None: every message
/// is its own key).
pub fn message(run: &str, seq: u64, keys: Option<u64>, template: &str) -> Message {
    let id = format!("{run}-{seq}");
    let (key, key_seq) = match keys {
        Some(k) if k > 0 => (format!("{run}-key{}", (seq - 1) % k), (seq - 1) / k + 1),
        _ => (id.clone(), 1),
    };
    let payload = fill(template, &id, seq, &key, run);
    Message {
        id,
        seq,
        key,
        key_seq,
        payload,
        poison: false,
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
    /// `workload.poison`: which messages are poison and their body.
    pub poison: Option<PoisonSpec>,
}

impl MessageFactory {
    /// Messages of run `run`, each its own key.
    pub fn new(run: &str, template: &str) -> MessageFactory {
        MessageFactory {
            run: run.to_owned(),
            keys: None,
            template: template.to_owned(),
            poison: None,
        }
    }

    /// The `seq`-th message, from 1.
    pub fn message(&self, seq: u64) -> Message {
        let mut m = message(&self.run, seq, self.keys, &self.template);
        if let Some(p) = self.poison.as_ref().filter(|p| p.is_poison(seq)) {
            m.payload = fill(&p.payload, &m.id, seq, &m.key, &self.run);
            m.poison = true;
        }
        m
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
            poison: self.poison,
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
    fn poison_messages_get_the_poison_body_and_keep_their_id() {
        let spec = |nth: Option<u64>, every: Option<u64>| PoisonSpec {
            nth: nth.map(crate::plan::Count::new),
            every: every.map(crate::plan::Count::new),
            payload: "bad {id}".into(),
        };
        let mut f = MessageFactory::new("r", r#"{"id":"{id}"}"#);
        f.poison = Some(spec(None, Some(3)));
        let poisoned: Vec<u64> = (1..=9).filter(|&s| f.message(s).poison).collect();
        assert_eq!(poisoned, [3, 6, 9]);
        let m = f.message(6);
        assert_eq!((m.id.as_str(), m.payload.as_str()), ("r-6", "bad r-6"));
        assert_eq!(f.message(5).payload, r#"{"id":"r-5"}"#);
        f.poison = Some(spec(Some(4), None));
        let poisoned: Vec<u64> = (1..=9).filter(|&s| f.message(s).poison).collect();
        assert_eq!(poisoned, [4]);
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
