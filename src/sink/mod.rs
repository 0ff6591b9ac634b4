//! Effect sinks: where the consumer's side effects are observed. Each sink turns what it sees
//! into `effect` events (or `effect_rejected` for input it cannot read, which never stops it).
//!
//! Contract: a sink never fails the run because of what a consumer sent it; it only reports.
//! Idempotent-provider behaviour (a repeated key is replayed, not applied) is shared here so
//! every sink behaves the same.

pub mod extract;
pub mod file;
pub mod http;
pub mod stdout;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::timeline::{EffectOutcome, Event, Stamped, Timeline};
use extract::Extractor;

/// Turns raw effects into timeline events: finds the ID, applies idempotency, records.
#[derive(Clone)]
pub struct EffectRecorder {
    timeline: Timeline,
    id: Extractor,
    idempotency_key: Option<Extractor>,
    seen_keys: Arc<Mutex<HashSet<String>>>,
    sink: &'static str,
}

impl EffectRecorder {
    /// A recorder for `sink` with the plan's ID and idempotency-key rules.
    pub fn new(
        timeline: Timeline,
        id: Extractor,
        idempotency_key: Option<Extractor>,
        sink: &'static str,
    ) -> Self {
        EffectRecorder {
            timeline,
            id,
            idempotency_key,
            seen_keys: Arc::default(),
            sink,
        }
    }

    /// Records one effect; `None` (and an `effect_rejected` event) when it names no ID.
    pub fn record(
        &self,
        headers: &[(String, String)],
        body: &str,
        instance: Option<u32>,
        incarnation: Option<u32>,
    ) -> Option<Arc<Stamped>> {
        let Some(id) = self.id.extract(headers, body) else {
            self.timeline.record(Event::EffectRejected {
                reason: "no message ID found by the `effects.id` rule".into(),
                sample: body.chars().take(200).collect(),
            });
            return None;
        };
        let outcome = match self
            .idempotency_key
            .as_ref()
            .and_then(|k| k.extract(headers, body))
        {
            Some(key) => {
                let fresh = self
                    .seen_keys
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key);
                if fresh {
                    EffectOutcome::Applied
                } else {
                    EffectOutcome::Replayed
                }
            }
            None => EffectOutcome::Applied,
        };
        Some(self.timeline.record(Event::Effect {
            id,
            instance,
            incarnation,
            outcome,
            sink: self.sink.into(),
        }))
    }

    /// Records input the sink could not read at all.
    pub fn reject(&self, reason: String, sample: &[u8]) {
        self.timeline.record(Event::EffectRejected {
            reason,
            sample: String::from_utf8_lossy(&sample[..sample.len().min(200)]).into_owned(),
        });
    }
}
