//! The stdout sink: the consumer prints its effects; the supervisor hands each stdout line here
//! and lines the ID rule matches become effects attributed to that incarnation. Lines that do
//! not match are ordinary log lines, not rejections. A last line without its newline (the
//! process died mid-write) is a torn line: recorded as such, never an effect.
//!
//! It knows nothing of the supervisor: [`StdoutSink`] has a plain `(instance, incarnation,
//! line)` method for complete lines and one for a torn last line; the run wires them to the
//! supervisor's stdout observer.

use super::EffectRecorder;
use crate::timeline::{AttributedBy, Attribution};

/// Reads effects from the consumers' stdout lines.
#[derive(Clone)]
pub struct StdoutSink {
    recorder: EffectRecorder,
}

impl StdoutSink {
    /// A stdout sink recording through `recorder`.
    pub fn new(recorder: EffectRecorder) -> StdoutSink {
        StdoutSink { recorder }
    }

    /// One complete stdout line of `instance`/`incarnation`: an effect when the ID rule matches
    /// it, else an ordinary log line.
    pub fn line(&self, instance: u32, incarnation: u32, line: &str) {
        if self.recorder.id_matches(line) {
            self.recorder.record(
                &[],
                line,
                Some(instance),
                Some(incarnation),
                Attribution::by(AttributedBy::Stdout),
            );
        }
    }

    /// The last bytes of an incarnation's stdout, which never got their newline: torn.
    pub fn torn(&self, instance: u32, incarnation: u32, bytes: &[u8]) {
        self.recorder.torn(instance, incarnation, bytes);
    }
}

impl EffectRecorder {
    /// True when the ID rule finds an ID in `line`.
    fn id_matches(&self, line: &str) -> bool {
        self.id.extract(&[], line).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Extractor;
    use crate::timeline::{Event, SinkKind, Timeline};

    #[test]
    fn a_torn_last_line_is_recorded_as_torn_and_never_as_an_effect() {
        let timeline = Timeline::in_memory();
        let mut events = timeline.subscribe();
        let rule = Extractor::parse("regex:^effect (\\S+)$").unwrap();
        let sink = StdoutSink::new(EffectRecorder::new(timeline, rule, None, SinkKind::Stdout));
        sink.line(0, 1, "effect r-1");
        sink.line(0, 1, "a log line");
        // `effect r-12` cut after `r-1`: another valid ID, had it been read as an effect.
        sink.torn(0, 1, b"effect r-1");
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e.event.clone());
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(matches!(&seen[0], Event::Effect { id, .. } if id == "r-1"));
        assert!(matches!(
            &seen[1],
            Event::TornLine { instance: 0, incarnation: 1, sink, bytes: 10, sample, boundary: None }
                if *sink == SinkKind::Stdout && sample == "effect r-1"
        ));
    }
}
