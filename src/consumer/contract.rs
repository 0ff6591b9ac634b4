//! The consumer contract (design §4): the environment variables a consumer is started with,
//! each also usable as a `{placeholder}` in its command line and `env` values.

/// What one incarnation is told about its world.
#[derive(Debug, Clone, Default)]
pub struct Contract {
    /// Run id.
    pub run: String,
    /// `kafka` or `amqp`.
    pub broker: String,
    /// Kafka bootstrap servers the consumer should use.
    pub bootstrap: String,
    /// Topic to consume.
    pub topic: String,
    /// Consumer group to join.
    pub group: String,
    /// AMQP URL (empty for Kafka plans).
    pub amqp_url: String,
    /// AMQP queue (empty for Kafka plans).
    pub queue: String,
    /// AMQP prefetch the plan asks for (empty when it sets none).
    pub prefetch: String,
    /// Where to POST effects (http sink), specific to this incarnation.
    pub effect_url: String,
    /// Where any incarnation may POST effects (http sink): the URL names no instance, and the
    /// sink attributes each effect by the process that owns the connection.
    pub effect_url_shared: String,
    /// Where to append effect lines (file sink), specific to this incarnation.
    pub effect_file: String,
    /// The output topic to produce to (the first `kafka-topic` boundary; empty without one).
    pub output_topic: String,
    /// The dead-letter topic (Kafka) or queue (AMQP) of `broker.dead_letter` (empty without one).
    pub dead_letter: String,
    /// Instance index, from 0.
    pub instance: u32,
    /// Incarnation, from 1.
    pub incarnation: u32,
    /// Where each declared boundary's effects go (plan `boundaries`; empty for `effects`).
    pub boundaries: Vec<BoundaryContract>,
}

/// Where one declared boundary's effects go: `EXACTLY_EFFECT_URL_<NAME>`,
/// `EXACTLY_EFFECT_URL_SHARED_<NAME>`, `EXACTLY_EFFECT_FILE_<NAME>` and
/// `EXACTLY_OUTPUT_TOPIC_<NAME>` (the name upper-cased, `-` as `_`), and the placeholders
/// `{effect_url:NAME}`, `{effect_url_shared:NAME}`, `{effect_file:NAME}`,
/// `{output_topic:NAME}`.
#[derive(Debug, Clone, Default)]
pub struct BoundaryContract {
    /// The boundary's name as the plan writes it.
    pub name: String,
    /// Its HTTP sink's URL for this incarnation (empty unless `sink: http`).
    pub effect_url: String,
    /// Its HTTP sink's shared URL (empty unless `sink: http`).
    pub effect_url_shared: String,
    /// This incarnation's effect file (empty unless `sink: file`).
    pub effect_file: String,
    /// Its output topic (empty unless `sink: kafka-topic`).
    pub output_topic: String,
}

impl BoundaryContract {
    /// `(ENV_NAME, placeholder, value)` for this boundary's variables.
    fn entries(&self) -> [(String, String, String); 4] {
        let env = self.name.to_ascii_uppercase().replace('-', "_");
        [
            (
                format!("EXACTLY_EFFECT_URL_{env}"),
                format!("{{effect_url:{}}}", self.name),
                self.effect_url.clone(),
            ),
            (
                format!("EXACTLY_EFFECT_URL_SHARED_{env}"),
                format!("{{effect_url_shared:{}}}", self.name),
                self.effect_url_shared.clone(),
            ),
            (
                format!("EXACTLY_EFFECT_FILE_{env}"),
                format!("{{effect_file:{}}}", self.name),
                self.effect_file.clone(),
            ),
            (
                format!("EXACTLY_OUTPUT_TOPIC_{env}"),
                format!("{{output_topic:{}}}", self.name),
                self.output_topic.clone(),
            ),
        ]
    }
}

impl Contract {
    /// `(ENV_NAME, placeholder, value)` for every contract variable.
    fn entries(&self) -> [(&'static str, &'static str, String); 15] {
        [
            ("EXACTLY_RUN", "{run}", self.run.clone()),
            ("EXACTLY_BROKER", "{broker}", self.broker.clone()),
            (
                "EXACTLY_KAFKA_BOOTSTRAP",
                "{bootstrap}",
                self.bootstrap.clone(),
            ),
            ("EXACTLY_TOPIC", "{topic}", self.topic.clone()),
            ("EXACTLY_GROUP", "{group}", self.group.clone()),
            ("EXACTLY_AMQP_URL", "{amqp_url}", self.amqp_url.clone()),
            ("EXACTLY_QUEUE", "{queue}", self.queue.clone()),
            ("EXACTLY_PREFETCH", "{prefetch}", self.prefetch.clone()),
            (
                "EXACTLY_EFFECT_URL",
                "{effect_url}",
                self.effect_url.clone(),
            ),
            (
                "EXACTLY_EFFECT_URL_SHARED",
                "{effect_url_shared}",
                self.effect_url_shared.clone(),
            ),
            (
                "EXACTLY_EFFECT_FILE",
                "{effect_file}",
                self.effect_file.clone(),
            ),
            (
                "EXACTLY_OUTPUT_TOPIC",
                "{output_topic}",
                self.output_topic.clone(),
            ),
            (
                "EXACTLY_DEAD_LETTER",
                "{dead_letter}",
                self.dead_letter.clone(),
            ),
            ("EXACTLY_INSTANCE", "{instance}", self.instance.to_string()),
            (
                "EXACTLY_INCARNATION",
                "{incarnation}",
                self.incarnation.to_string(),
            ),
        ]
    }

    /// The environment variables to set.
    pub fn env(&self) -> Vec<(String, String)> {
        let fixed = self
            .entries()
            .into_iter()
            .map(|(k, _, v)| (k.to_owned(), v));
        let per_boundary = self
            .boundaries
            .iter()
            .flat_map(|b| b.entries())
            .map(|(k, _, v)| (k, v));
        fixed.chain(per_boundary).collect()
    }

    /// `text` with every placeholder replaced.
    pub fn substitute(&self, text: &str) -> String {
        let mut out = text.to_owned();
        // Per-boundary placeholders first: `{effect_url:NAME}` is not `{effect_url}`.
        for (_, placeholder, value) in self.boundaries.iter().flat_map(|b| b.entries()) {
            if out.contains(&placeholder) {
                out = out.replace(&placeholder, &value);
            }
        }
        for (_, placeholder, value) in self.entries() {
            if out.contains(placeholder) {
                out = out.replace(placeholder, &value);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_in_arguments() {
        let c = Contract {
            topic: "orders-r1".into(),
            instance: 2,
            ..Contract::default()
        };
        assert_eq!(
            c.substitute("--topic={topic} -i {instance}"),
            "--topic=orders-r1 -i 2"
        );
        assert_eq!(c.substitute("{unknown}"), "{unknown}");
    }

    #[test]
    fn every_variable_is_exported() {
        let names: Vec<_> = Contract::default()
            .env()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(names.contains(&"EXACTLY_EFFECT_URL".to_owned()));
        assert!(names.contains(&"EXACTLY_EFFECT_URL_SHARED".to_owned()));
        assert!(names.contains(&"EXACTLY_INCARNATION".to_owned()));
        assert!(names.contains(&"EXACTLY_DEAD_LETTER".to_owned()));
        assert_eq!(names.len(), 15);
    }

    #[test]
    fn each_boundary_has_its_own_variables_and_placeholders() {
        let c = Contract {
            effect_url: "http://h/effect/0/1".into(),
            boundaries: vec![BoundaryContract {
                name: "email-out".into(),
                effect_url: "http://e/effect/0/1".into(),
                ..BoundaryContract::default()
            }],
            ..Contract::default()
        };
        assert_eq!(
            c.substitute("{effect_url:email-out} {effect_url}"),
            "http://e/effect/0/1 http://h/effect/0/1"
        );
        let env = c.env();
        assert!(env.contains(&(
            "EXACTLY_EFFECT_URL_EMAIL_OUT".to_owned(),
            "http://e/effect/0/1".to_owned()
        )));
        assert_eq!(env.len(), 19);
    }

    #[test]
    fn the_shared_effect_url_placeholder_is_not_confused_with_the_per_incarnation_one() {
        let c = Contract {
            effect_url: "http://h/effect/0/1".into(),
            effect_url_shared: "http://h/effect".into(),
            ..Contract::default()
        };
        assert_eq!(
            c.substitute("{effect_url_shared} {effect_url}"),
            "http://h/effect http://h/effect/0/1"
        );
    }
}
