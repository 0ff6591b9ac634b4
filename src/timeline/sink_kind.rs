//! The kinds of effect sink: a closed set the plan names (`effects.sink`, a boundary's
//! `sink`) and every effect on the timeline carries, so the judge and the reports match on the
//! enum, never on its name.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Kinds of effect sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// The consumer POSTs each effect to `EXACTLY_EFFECT_URL`.
    Http,
    /// The consumer appends one line per effect to `EXACTLY_EFFECT_FILE`.
    File,
    /// The consumer prints effects on its standard output.
    Stdout,
    /// The consumer produces one record per effect to a fresh output topic
    /// (`EXACTLY_OUTPUT_TOPIC`), read back by the harness under `read_committed`.
    #[serde(rename = "kafka-topic")]
    KafkaTopic,
    /// The consumer writes rows into a PostgreSQL table (`postgres`), observed by logical
    /// replication: every committed insert or update of a row is an effect.
    Postgres,
}

impl SinkKind {
    /// Every kind.
    pub const ALL: [SinkKind; 5] = [
        SinkKind::Http,
        SinkKind::File,
        SinkKind::Stdout,
        SinkKind::KafkaTopic,
        SinkKind::Postgres,
    ];

    /// The kind named `name` as [`SinkKind::as_str`] writes it.
    pub fn named(name: &str) -> Option<SinkKind> {
        SinkKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The sink's name in events and reports (`http`, `file`, `stdout`).
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Http => "http",
            SinkKind::File => "file",
            SinkKind::Stdout => "stdout",
            SinkKind::KafkaTopic => "kafka-topic",
            SinkKind::Postgres => "postgres",
        }
    }

    /// True when an effect carries headers an ID rule can read (`header:`).
    pub fn has_headers(self) -> bool {
        match self {
            SinkKind::Http | SinkKind::KafkaTopic => true,
            SinkKind::File | SinkKind::Stdout | SinkKind::Postgres => false,
        }
    }
}

impl std::fmt::Display for SinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_in_events_as_serde_writes_it() {
        for kind in SinkKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(SinkKind::named(kind.as_str()), Some(kind));
        }
        assert_eq!(SinkKind::named("smtp"), None);
    }
}
