//! The stdout sink: the consumer prints its effects; the supervisor hands each stdout line here
//! and lines the ID rule matches become effects attributed to that incarnation. Lines that do
//! not match are ordinary log lines, not rejections.
//!
//! It knows nothing of the supervisor: it is a plain `(instance, incarnation, line)` callback,
//! which the run hands to the supervisor as its stdout observer.

use super::EffectRecorder;
use crate::timeline::{AttributedBy, Attribution};

/// A line observer, called with (instance, incarnation, line) for every stdout line, that
/// records matching lines as effects.
pub fn observer(recorder: EffectRecorder) -> impl Fn(u32, u32, &str) + Send + Sync + 'static {
    move |instance, incarnation, line| {
        if recorder.id_matches(line) {
            recorder.record(
                &[],
                line,
                Some(instance),
                Some(incarnation),
                Attribution::by(AttributedBy::Stdout),
            );
        }
    }
}

impl EffectRecorder {
    /// True when the ID rule finds an ID in `line`.
    fn id_matches(&self, line: &str) -> bool {
        self.id.extract(&[], line).is_some()
    }
}
