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
    /// Instance index, from 0.
    pub instance: u32,
    /// Incarnation, from 1.
    pub incarnation: u32,
}

impl Contract {
    /// `(ENV_NAME, placeholder, value)` for every contract variable.
    fn entries(&self) -> [(&'static str, &'static str, String); 13] {
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
            ("EXACTLY_INSTANCE", "{instance}", self.instance.to_string()),
            (
                "EXACTLY_INCARNATION",
                "{incarnation}",
                self.incarnation.to_string(),
            ),
        ]
    }

    /// The environment variables to set.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.entries().into_iter().map(|(k, _, v)| (k, v)).collect()
    }

    /// `text` with every placeholder replaced.
    pub fn substitute(&self, text: &str) -> String {
        let mut out = text.to_owned();
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
        assert!(names.contains(&"EXACTLY_EFFECT_URL"));
        assert!(names.contains(&"EXACTLY_EFFECT_URL_SHARED"));
        assert!(names.contains(&"EXACTLY_INCARNATION"));
        assert_eq!(names.len(), 13);
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
