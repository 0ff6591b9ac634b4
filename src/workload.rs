//! The workload: messages with unique IDs `{run}-{seq}`, their payloads, and the produce pace.
//! What a broker does with them (and the ledger it keeps) is in `broker/`.

use std::time::Duration;

use crate::plan::Rate;

/// One message to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Unique ID, also the key.
    pub id: String,
    /// 1-based position in the workload.
    pub seq: u64,
    /// Payload with the template filled in.
    pub payload: String,
}

/// The `n`-th message (from 1) of run `run`.
pub fn message(run: &str, seq: u64, template: &str) -> Message {
    let id = format!("{run}-{seq}");
    let payload = template
        .replace("{id}", &id)
        .replace("{seq}", &seq.to_string())
        .replace("{run}", run);
    Message { id, seq, payload }
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
        let m = message("r1", 7, r#"{"order_id":"{id}","n":{seq}}"#);
        assert_eq!(m.id, "r1-7");
        assert_eq!(m.payload, r#"{"order_id":"r1-7","n":7}"#);
        assert_ne!(message("r1", 1, "").id, message("r1", 11, "").id);
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
