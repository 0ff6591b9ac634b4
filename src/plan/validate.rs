//! Rules that span several fields of a plan. Each problem names the path of the field to fix
//! (located afterwards through the span map) and says what to write instead. A valid plan
//! yields its [`Loaded`] parts: the typed faults (built by [`super::fault_rules`]) and the
//! parsed effect ID rules.

use super::fault_rules::{self, Context};
use super::{BrokerKind, Extractor, Loaded, Plan, SinkKind};

/// One thing wrong with a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Path of the field, such as `faults[0].when`.
    pub path: String,
    /// What is wrong and the fix.
    pub message: String,
}

impl Problem {
    fn at(path: &str, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The plan's typed parts, or the first problem in plan order (the plan-wide rules first, then
/// each fault's first broken rule).
pub fn validate(plan: &Plan) -> Result<Loaded, Problem> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push(Problem { path, message });

    let b = &plan.broker;
    match b.kind {
        BrokerKind::Amqp => {
            if b.url.is_none() {
                problem(
                    "broker".into(),
                    "an amqp broker needs `url`, e.g. url: amqp://guest:guest@127.0.0.1:5672/%2f"
                        .into(),
                );
            }
            if b.bootstrap.is_some() {
                problem(
                    "broker.bootstrap".into(),
                    "`bootstrap` is for Kafka; an amqp broker takes `url`".into(),
                );
            }
            if b.routing_key.is_some() && b.exchange.is_none() {
                problem(
                    "broker.routing_key".into(),
                    "`routing_key` needs an `exchange` to route through".into(),
                );
            }
        }
        BrokerKind::Kafka => {
            let amqp_only = [
                ("url", b.url.is_some()),
                ("queue", b.queue.is_some()),
                ("exchange", b.exchange.is_some()),
                ("routing_key", b.routing_key.is_some()),
                ("prefetch", b.prefetch.is_some()),
            ];
            for (field, present) in amqp_only {
                if present {
                    problem(
                        format!("broker.{field}"),
                        format!("`{field}` is for amqp brokers; a Kafka plan takes bootstrap, topic, partitions and group"),
                    );
                }
            }
        }
    }
    if plan.consumer.command.is_empty() || plan.consumer.command[0].trim().is_empty() {
        problem(
            "consumer.command".into(),
            "the command is empty: write the program and its arguments, e.g. [./my-consumer, --flag]".into(),
        );
    }
    let effect_id = match Extractor::parse(&plan.effects.id) {
        Err(e) => Err(Problem::at("effects.id", e)),
        Ok(rule) if rule.needs_headers() && plan.effects.sink != SinkKind::Http => Err(Problem::at(
            "effects.id",
            "file and stdout effects are lines without headers: use `json:/field`, `regex:...` or `body`",
        )),
        Ok(rule) => Ok(rule),
    };
    if let Err(p) = &effect_id {
        problem(p.path.clone(), p.message.clone());
    }
    let idempotency_key = match plan.effects.idempotency_key.as_deref() {
        Some(key) => Extractor::parse(key)
            .map(Some)
            .map_err(|e| Problem::at("effects.idempotency_key", e)),
        None => Ok(None),
    };
    if let Err(p) = &idempotency_key {
        problem(p.path.clone(), p.message.clone());
    }
    if plan.limits.deadline <= plan.limits.settle {
        problem(
            "limits.deadline".into(),
            "the deadline must be longer than `settle`".into(),
        );
    }
    let ctx = Context {
        sink: plan.effects.sink,
        instances: plan.consumer.instances.get(),
        proxy: plan.via_proxy(),
        kind: plan.broker.kind,
    };
    let mut faults = Vec::with_capacity(plan.faults.len());
    for (i, spec) in plan.faults.iter().enumerate() {
        match fault_rules::fault(spec, &ctx) {
            Ok(fault) => faults.push(fault),
            Err(broken) => problem(format!("faults[{i}]{}", broken.path), broken.message),
        }
    }
    if let Some(first) = problems.into_iter().next() {
        return Err(first);
    }
    Ok(Loaded {
        faults,
        effect_id: effect_id?,
        idempotency_key: idempotency_key?,
    })
}
