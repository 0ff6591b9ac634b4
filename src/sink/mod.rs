//! Effect sinks: where the consumer's side effects are observed. Each sink turns what it sees
//! into `effect` events (or `effect_rejected` for input it cannot read, which never stops it).
//!
//! Contract: a sink never fails the run because of what a consumer sent it; it only reports.
//! Idempotent-provider behaviour (a repeated key is replayed, not applied) is shared here so
//! every sink behaves the same. The one exception to "only reports" is a blind oracle: when the
//! first effects all miss the ID rule, [`rule_check`] says so and the run stops (exit 2).
//! File and stdout sinks take complete lines only: a last line without its newline is a
//! `torn_line` event, never an effect.

pub mod file;
pub mod http;
pub mod kafka_topic;
pub mod owner;
pub mod postgres;
pub mod rule_check;
pub mod stdout;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::plan::Extractor;
use crate::timeline::{Attribution, EffectOutcome, Event, SinkKind, Stamped, Timeline};
use rule_check::{RuleCheck, WrongRule};

/// Most characters of a torn line kept as its sample (its end).
const TORN_SAMPLE_CHARS: usize = 200;

/// Turns raw effects into timeline events: finds the ID, applies idempotency, records.
#[derive(Clone)]
pub struct EffectRecorder {
    timeline: Timeline,
    id: Extractor,
    idempotency_key: Option<Extractor>,
    seen_keys: Arc<Mutex<HashSet<String>>>,
    sink: SinkKind,
    boundary: Option<String>,
    check: RuleCheck,
}

impl EffectRecorder {
    /// A recorder for `sink` with the plan's ID and idempotency-key rules, parsed at load.
    pub fn new(
        timeline: Timeline,
        id: Extractor,
        idempotency_key: Option<Extractor>,
        sink: SinkKind,
    ) -> Self {
        EffectRecorder {
            timeline,
            id,
            idempotency_key,
            seen_keys: Arc::default(),
            sink,
            boundary: None,
            check: RuleCheck::default(),
        }
    }

    /// Names the plan boundary this sink observes on every event it records (`None`: the one
    /// boundary of a plan written with `effects`, whose events name none).
    pub fn for_boundary(mut self, boundary: Option<String>) -> Self {
        self.boundary = boundary;
        self
    }

    /// Names the run whose message IDs (`{run}-{seq}`) a wrong ID rule's suggestion looks for.
    pub fn for_run(self, run: &str) -> Self {
        self.check.set_run(run);
        self
    }

    /// The finding when the first effects all missed the ID rule (the run must stop).
    pub fn wrong_rule(&self) -> Option<WrongRule> {
        self.check.wrong_rule()
    }

    /// Records one effect made by `instance`/`incarnation` (as `attribution` found them);
    /// `None` (and an `effect_rejected` event) when it names no ID.
    pub fn record(
        &self,
        headers: &[(String, String)],
        body: &str,
        instance: Option<u32>,
        incarnation: Option<u32>,
        attribution: Attribution,
    ) -> Option<Arc<Stamped>> {
        let made_by = (instance, incarnation, attribution);
        self.record_made(headers, None, body, made_by, None)
    }

    /// [`EffectRecorder::record`] for an effect with a key (a Kafka record).
    pub fn record_keyed(
        &self,
        headers: &[(String, String)],
        key: Option<&str>,
        body: &str,
        made_by: (Option<u32>, Option<u32>, Attribution),
    ) -> Option<Arc<Stamped>> {
        self.record_made(headers, key, body, made_by, None)
    }

    /// Records one committed row change (`body`: the row as JSON) like [`Self::record`];
    /// `unchanged` (an update that changed no column) is recorded as `replayed`, the
    /// idempotent provider's replay, whatever the idempotency key says.
    pub fn record_row(
        &self,
        body: &str,
        unchanged: bool,
        (instance, incarnation): (Option<u32>, Option<u32>),
        attribution: Attribution,
    ) -> Option<Arc<Stamped>> {
        let forced = unchanged.then_some(EffectOutcome::Replayed);
        let made_by = (instance, incarnation, attribution);
        self.record_made(&[], None, body, made_by, forced)
    }

    /// Records one effect made by `made_by`; `forced` overrides the outcome the idempotency
    /// key would give.
    fn record_made(
        &self,
        headers: &[(String, String)],
        key: Option<&str>,
        body: &str,
        (instance, incarnation, attribution): (Option<u32>, Option<u32>, Attribution),
        forced: Option<EffectOutcome>,
    ) -> Option<Arc<Stamped>> {
        let Some(id) = self.id.extract_record(headers, key, body) else {
            self.timeline.record(Event::EffectRejected {
                reason: "no message ID found by the `effects.id` rule".into(),
                sample: body.chars().take(200).collect(),
                boundary: self.boundary.clone(),
            });
            if let Some(found) = self
                .check
                .missed(&self.id, self.sink.as_str(), headers, body)
            {
                self.timeline.record(Event::Warning {
                    message: found.to_string(),
                });
            }
            return None;
        };
        self.check.accepted();
        let outcome = match self
            .idempotency_key
            .as_ref()
            .and_then(|k| k.extract_record(headers, key, body))
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
        let outcome = forced.unwrap_or(outcome);
        Some(self.timeline.record(Event::Effect {
            id,
            instance,
            incarnation,
            outcome,
            sink: self.sink,
            boundary: self.boundary.clone(),
            attribution,
        }))
    }

    /// The message ID this boundary's rule reads in a record, without recording anything.
    pub fn id_of(
        &self,
        headers: &[(String, String)],
        key: Option<&str>,
        body: &str,
    ) -> Option<String> {
        self.id.extract_record(headers, key, body)
    }

    /// Records an event of this sink's making (it carries the boundary itself).
    pub fn note(&self, event: Event) {
        self.timeline.record(event);
    }

    /// The boundary this sink observes, as its events name it.
    pub fn boundary(&self) -> Option<String> {
        self.boundary.clone()
    }

    /// Records a warning about how effects are attributed (it explains the evidence).
    pub fn warn(&self, message: String) {
        self.timeline.record(Event::Warning { message });
    }

    /// Records the last bytes of `instance`/`incarnation`'s file or stdout, which never got
    /// their newline: a torn line, never an effect. Blank ones are left out.
    pub fn torn(&self, instance: u32, incarnation: u32, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        if text.trim().is_empty() {
            return;
        }
        let n = text.chars().count();
        let mut sample: String = text
            .chars()
            .skip(n.saturating_sub(TORN_SAMPLE_CHARS))
            .collect();
        if n > TORN_SAMPLE_CHARS {
            sample.insert(0, '…');
        }
        self.timeline.record(Event::TornLine {
            instance,
            incarnation,
            sink: self.sink,
            boundary: self.boundary.clone(),
            bytes: bytes.len() as u64,
            sample,
        });
    }

    /// Records input the sink could not read at all.
    pub fn reject(&self, reason: String, sample: &[u8]) {
        self.timeline.record(Event::EffectRejected {
            reason,
            sample: String::from_utf8_lossy(&sample[..sample.len().min(200)]).into_owned(),
            boundary: self.boundary.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::timeline::{AttributedBy, Attribution, EffectOutcome, Event, SinkKind, Stamped};

    #[test]
    fn effect_attribution_is_written_flat_and_older_lines_still_read() {
        let event = Stamped {
            seq: 3,
            t_us: 10,
            event: Event::Effect {
                id: "m-1".into(),
                instance: Some(1),
                incarnation: Some(2),
                outcome: EffectOutcome::Applied,
                sink: SinkKind::Http,
                boundary: None,
                attribution: Attribution {
                    by: Some(AttributedBy::Socket),
                    pid: Some(4242),
                    note: None,
                    row: None,
                    record: None,
                },
            },
        };
        let line = serde_json::to_string(&event).unwrap();
        assert!(
            line.contains(r#""attributed_by":"socket","pid":4242"#),
            "{line}"
        );
        assert!(!line.contains("attribution_note"), "{line}");
        assert_eq!(serde_json::from_str::<Stamped>(&line).unwrap(), event);

        let older = r#"{"seq":1,"t_us":5,"kind":"effect","id":"m-2","instance":null,"incarnation":null,"outcome":"applied","sink":"http"}"#;
        let Event::Effect { attribution, .. } =
            serde_json::from_str::<Stamped>(older).unwrap().event
        else {
            panic!("an effect");
        };
        assert_eq!(attribution, Attribution::default());
    }
}
