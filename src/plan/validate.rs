//! Rules that span several fields of a plan, and the bounds a run can hold. Each problem names
//! the path of the field to fix (located afterwards through the span map) and says what to
//! write instead. Every rule is checked and every problem kept, so a plan with several mistakes
//! gets them all at once. A valid plan yields its [`Loaded`] parts: the typed faults (built by
//! [`super::fault_rules`]) and the parsed effect ID rules.
//!
//! The bounds are not taste: each keeps a value inside what the run does with it (a duration
//! added to the clock, a fire time laid out per firing, a listener per instance, a 16-bit
//! AMQP prefetch), so a plan that loads never overflows, truncates or exhausts the harness.

use std::time::Duration;

use super::fault_rules::{self, Context};
use super::{
    Boundary, BrokerKind, Count, Extractor, Fault, Loaded, OutputTopicSpec, Plan, PostgresSpec,
    RestartPolicy, SinkKind, TopicIsolation, DEFAULT_BOUNDARY,
};

/// One thing wrong with a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Path of the field, such as `faults[0].when`.
    pub path: String,
    /// What is wrong and the fix.
    pub message: String,
}

/// Longest duration a plan may write (a run's deadline, a fault's time or length...): far
/// beyond any test, and far from the clock arithmetic's overflow.
pub const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most consumer instances a run may have at once, counting every `scale: +1` firing: each has
/// its own proxy listener and sink URL, sized up front.
pub const MOST_INSTANCES: u64 = 256;

/// Most partitions of the fresh test topic.
pub const MOST_PARTITIONS: u64 = 10_000;

/// The problems found so far, in the order the rules run.
#[derive(Debug, Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// The plan's typed parts, or every problem found (plan-wide rules first, then each fault's
/// broken rules, then the bounds); never an empty list.
pub fn validate(plan: &Plan) -> Result<Loaded, Vec<Problem>> {
    let mut problems = Problems::default();
    broker_rules(plan, &mut problems);
    if plan.consumer.command.is_empty() || plan.consumer.command[0].trim().is_empty() {
        problems.add(
            "consumer.command",
            "the command is empty: write the program and its arguments, e.g. [./my-consumer, --flag]",
        );
    }
    poison_rules(plan, &mut problems);
    let boundaries = boundary_rules(plan, &mut problems);
    if plan.limits.deadline <= plan.limits.settle {
        problems.add(
            "limits.deadline",
            "the deadline must be longer than `settle`",
        );
    }
    let faults = fault_rules(plan, &mut problems);
    durations_bounded(plan, &mut problems);
    counts_bounded(plan, faults.as_deref(), &mut problems);
    match (boundaries, faults) {
        (Some(boundaries), Some(faults)) if problems.0.is_empty() => {
            Ok(Loaded { faults, boundaries })
        }
        // Every `None` above was kept as a problem, so the list is never empty.
        _ => Err(problems.0),
    }
}

/// `effects.postgres` goes with `sink: postgres`, and only with it.
fn postgres_rules(
    path: &str,
    (sink, kind): (SinkKind, BrokerKind),
    spec: Option<&PostgresSpec>,
    problems: &mut Problems,
) -> Option<PostgresSpec> {
    match (sink, spec) {
        (SinkKind::Postgres, None) => problems.add(
            path,
            "`sink: postgres` needs `postgres:` with `url` and `table`, e.g. postgres: {url: \
             \"postgres://exactly:exactly@127.0.0.1:5432/exactly\", table: orders}",
        ),
        (SinkKind::Postgres, Some(pg)) => {
            if <tokio_postgres::Config as std::str::FromStr>::from_str(&pg.url).is_err() {
                problems.add(
                    format!("{path}.postgres.url"),
                    "not a connection URL: use postgres://user:password@host:port/database",
                );
            }
            if !valid_table_name(&pg.table) {
                problems.add(
                    format!("{path}.postgres.table"),
                    "a table name is `name` or `schema.name` (letters, digits, `_`)",
                );
            }
            if pg.offsets.is_some() && kind != BrokerKind::Kafka {
                problems.add(
                    format!("{path}.postgres.offsets"),
                    "stored offsets are Kafka partitions' offsets: `offsets` needs `broker.kind: kafka`",
                );
            }
            return Some(pg.clone());
        }
        (SinkKind::Http | SinkKind::File | SinkKind::Stdout | SinkKind::KafkaTopic, Some(_)) => {
            problems.add(
                format!("{path}.postgres"),
                "`postgres:` is read only with `sink: postgres`",
            )
        }
        (SinkKind::Http | SinkKind::File | SinkKind::Stdout | SinkKind::KafkaTopic, None) => {}
    }
    None
}

/// True for `name` or `schema.name` made of letters, digits and `_` (not starting with a
/// digit): safe to put in SQL as it is.
fn valid_table_name(table: &str) -> bool {
    let parts: Vec<&str> = table.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// `workload.poison` names its messages one way, and a poison body is not the template.
fn poison_rules(plan: &Plan, problems: &mut Problems) {
    let Some(p) = &plan.workload.poison else {
        return;
    };
    match (p.nth, p.every) {
        (Some(_), Some(_)) => problems.add(
            "workload.poison",
            "write one of `nth` (one poison message) or `every` (every N-th), not both",
        ),
        (None, None) => problems.add(
            "workload.poison",
            "say which messages are poison: `nth: 5` (the 5th) or `every: 10` (every 10th)",
        ),
        (Some(n), None) if n.get() > plan.workload.messages.get() => problems.add(
            "workload.poison.nth",
            format!(
                "the workload has {} messages: `nth` must be at most that",
                plan.workload.messages.get()
            ),
        ),
        _ => {}
    }
    if p.payload == plan.workload.payload {
        problems.add(
            "workload.poison.payload",
            "the poison payload is the workload's own template: write a body the consumer cannot decode",
        );
    }
}

/// Which broker fields go with which kind of broker.
fn broker_rules(plan: &Plan, problems: &mut Problems) {
    let b = &plan.broker;
    let source = match b.kind {
        BrokerKind::Kafka => b.topic.as_str(),
        BrokerKind::Amqp => b.queue_name(),
    };
    if b.dead_letter.as_deref().is_some_and(|d| d == source) {
        problems.add(
            "broker.dead_letter",
            "the dead-letter destination is the run's own topic or queue: every message read there would count as diverted; name another, e.g. orders-dlq-{run}",
        );
    }
    match b.kind {
        BrokerKind::Amqp => {
            if b.url.is_none() {
                problems.add(
                    "broker",
                    "an amqp broker needs `url`, e.g. url: amqp://guest:guest@127.0.0.1:5672/%2f",
                );
            }
            if b.bootstrap.is_some() {
                problems.add(
                    "broker.bootstrap",
                    "`bootstrap` is for Kafka; an amqp broker takes `url`",
                );
            }
            if b.routing_key.is_some() && b.exchange.is_none() {
                problems.add(
                    "broker.routing_key",
                    "`routing_key` needs an `exchange` to route through",
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
                    problems.add(
                        format!("broker.{field}"),
                        format!("`{field}` is for amqp brokers; a Kafka plan takes bootstrap, topic, partitions and group"),
                    );
                }
            }
        }
    }
}

/// The boundaries, typed: the one of `effects`, or one per entry of `boundaries`; `None` when
/// a problem was kept.
fn boundary_rules(plan: &Plan, problems: &mut Problems) -> Option<Vec<Boundary>> {
    match (&plan.effects, plan.boundaries.is_empty()) {
        (Some(_), false) => {
            problems.add(
                "boundaries",
                "write either `effects` (one sink) or `boundaries` (several), not both",
            );
            None
        }
        (None, true) => {
            problems.add(
                "effects",
                "say where effects are observed: `effects: { sink: http, id: json:/id }`, or a list under `boundaries`",
            );
            None
        }
        (Some(effects), true) => {
            let Some(expect) = plan.expect else {
                problems.add(
                    "expect",
                    "say what the consumer promises: `expect: at-least-once`, `at-most-once` or `exactly-once`",
                );
                return None;
            };
            let written = Written {
                path: "effects".into(),
                sink: effects.sink,
                id: &effects.id,
                idempotency_key: effects.idempotency_key.as_deref(),
            };
            let postgres = postgres_rules(
                "effects",
                (effects.sink, plan.broker.kind),
                effects.postgres.as_ref(),
                problems,
            );
            let topic = TopicFields {
                name: DEFAULT_BOUNDARY,
                sink: effects.sink,
                topic: effects.topic.as_deref(),
                isolation: effects.isolation,
                partitions: effects.partitions,
            };
            let output = output_topic(plan, &topic, "effects", problems);
            let (id, idempotency_key) = effect_rules(&written, problems)?;
            Some(vec![Boundary {
                name: DEFAULT_BOUNDARY.into(),
                declared: false,
                sink: effects.sink,
                id_rule: effects.id.clone(),
                id,
                idempotency_key,
                expect,
                output,
                postgres,
            }])
        }
        (None, false) => declared_boundaries(plan, problems),
    }
}

/// Each entry of `boundaries`, typed, or `None` when one broke a rule.
fn declared_boundaries(plan: &Plan, problems: &mut Problems) -> Option<Vec<Boundary>> {
    let mut typed = Some(Vec::with_capacity(plan.boundaries.len()));
    let mut names = std::collections::HashSet::new();
    let mut stdout_sinks = 0;
    for (i, b) in plan.boundaries.iter().enumerate() {
        let path = format!("boundaries[{i}]");
        let good_name = !b.name.is_empty()
            && b.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !good_name {
            problems.add(format!("{path}.name"), format!("boundary name `{}`: use letters, digits, `-` and `_` (it names the boundary's variables)", b.name));
        } else if !names.insert(b.name.to_ascii_uppercase().replace('-', "_")) {
            problems.add(
                format!("{path}.name"),
                format!(
                    "boundary `{}` is named twice (names must differ, ignoring case and `-`/`_`)",
                    b.name
                ),
            );
        }
        if b.sink == SinkKind::Stdout {
            stdout_sinks += 1;
            if stdout_sinks > 1 {
                problems.add(
                    format!("{path}.sink"),
                    "a consumer has one standard output: only one boundary can use `sink: stdout`",
                );
            }
        }
        let expect = b.expect.or(plan.expect);
        if expect.is_none() {
            problems.add(format!("{path}.expect"), "say what this boundary promises: `expect: exactly-once`, `at-least-once` or `at-most-once` (or a plan-wide `expect`)");
        }
        let written = Written {
            path: path.clone(),
            sink: b.sink,
            id: &b.id,
            idempotency_key: b.idempotency_key.as_deref(),
        };
        let topic = TopicFields {
            name: &b.name,
            sink: b.sink,
            topic: b.topic.as_deref(),
            isolation: b.isolation,
            partitions: b.partitions,
        };
        let output = output_topic(plan, &topic, &path, problems);
        let postgres = postgres_rules(
            &path,
            (b.sink, plan.broker.kind),
            b.postgres.as_ref(),
            problems,
        );
        match (effect_rules(&written, problems), expect, &mut typed) {
            (Some((id, idempotency_key)), Some(expect), Some(list)) => list.push(Boundary {
                name: b.name.clone(),
                declared: true,
                sink: b.sink,
                id_rule: b.id.clone(),
                id,
                idempotency_key,
                expect,
                output,
                postgres,
            }),
            _ => typed = None,
        }
    }
    typed
}

/// A boundary's output-topic fields as written, under `effects` or an entry of `boundaries`.
struct TopicFields<'a> {
    name: &'a str,
    sink: SinkKind,
    topic: Option<&'a str>,
    isolation: Option<TopicIsolation>,
    partitions: Option<Count>,
}

/// A `kafka-topic` boundary's output topic; the topic fields on any other sink are problems.
fn output_topic(
    plan: &Plan,
    b: &TopicFields<'_>,
    path: &str,
    problems: &mut Problems,
) -> Option<OutputTopicSpec> {
    if b.sink != SinkKind::KafkaTopic {
        for (field, present) in [
            ("topic", b.topic.is_some()),
            ("isolation", b.isolation.is_some()),
            ("partitions", b.partitions.is_some()),
        ] {
            if present {
                problems.add(
                    format!("{path}.{field}"),
                    format!("`{field}` is for `sink: kafka-topic`"),
                );
            }
        }
        return None;
    }
    if plan.broker.kind != BrokerKind::Kafka {
        problems.add(
            format!("{path}.sink"),
            "`kafka-topic` reads an output topic on the plan's Kafka broker: use it with `broker.kind: kafka`",
        );
    }
    Some(OutputTopicSpec {
        topic: b
            .topic
            .map_or_else(|| format!("{}-{{run}}", b.name), str::to_owned),
        isolation: b.isolation.unwrap_or_default(),
        partitions: b.partitions.unwrap_or(plan.broker.partitions).get(),
    })
}

/// One boundary's written sink and rules, with the path its problems name.
struct Written<'a> {
    path: String,
    sink: SinkKind,
    id: &'a str,
    idempotency_key: Option<&'a str>,
}

/// A boundary's `id` and `idempotency_key`, parsed; `None` where a problem was kept.
fn effect_rules(
    written: &Written<'_>,
    problems: &mut Problems,
) -> Option<(Extractor, Option<Extractor>)> {
    let effect_id = match Extractor::parse(written.id) {
        Err(e) => Err(e),
        Ok(rule) if rule.needs_headers() && written.sink == SinkKind::Postgres => Err(
            "a postgres effect is a row, read as a JSON object of its columns: use `json:/column` \
             or `json:/column/path` (into a json or jsonb column)"
                .to_owned(),
        ),
        Ok(rule) if rule.needs_headers() && !written.sink.has_headers() => Err(
            "file and stdout effects are lines without headers: use `json:/field`, `regex:...` or `body`"
                .to_owned(),
        ),
        Ok(rule) if rule.needs_key() && written.sink != SinkKind::KafkaTopic => Err(
            "`key` reads a Kafka record's key: only the `kafka-topic` sink has one".to_owned(),
        ),
        Ok(rule) => Ok(rule),
    };
    let effect_id = effect_id
        .map_err(|e| problems.add(format!("{}.id", written.path), e))
        .ok();
    let idempotency_key = match written.idempotency_key {
        Some(key) => Extractor::parse(key)
            .map(Some)
            .map_err(|e| problems.add(format!("{}.idempotency_key", written.path), e))
            .ok(),
        None => Some(None),
    };
    Some((effect_id?, idempotency_key?))
}

/// Each fault typed, or every broken rule of every fault kept (`None`).
fn fault_rules(plan: &Plan, problems: &mut Problems) -> Option<Vec<Fault>> {
    let sinks = || {
        plan.effects
            .as_ref()
            .map(|e| e.sink)
            .into_iter()
            .chain(plan.boundaries.iter().map(|b| b.sink))
    };
    let ctx = Context {
        http_sink: sinks().any(|s| s == SinkKind::Http),
        postgres_sink: sinks().any(|s| s == SinkKind::Postgres),
        instances: plan.consumer.instances.get(),
        proxy: plan.via_proxy(),
        kind: plan.broker.kind,
    };
    let mut faults = Some(Vec::with_capacity(plan.faults.len()));
    for (i, spec) in plan.faults.iter().enumerate() {
        match fault_rules::fault(spec, &ctx) {
            Ok(fault) => {
                if let Some(typed) = &mut faults {
                    typed.push(fault);
                }
            }
            Err(broken) => {
                faults = None;
                for b in broken {
                    problems.add(format!("faults[{i}]{}", b.path), b.message);
                }
            }
        }
    }
    faults
}

/// Every duration the plan writes, with its path.
fn durations(plan: &Plan) -> Vec<(String, Duration)> {
    let mut all = vec![
        (
            "broker.connect_timeout".to_owned(),
            Some(plan.broker.connect_timeout),
        ),
        ("limits.settle".to_owned(), Some(plan.limits.settle)),
        ("limits.deadline".to_owned(), Some(plan.limits.deadline)),
    ];
    if let RestartPolicy::After(restart) = &plan.consumer.restart {
        all.push(("consumer.restart.after".to_owned(), Some(restart.after)));
    }
    for (i, f) in plan.faults.iter().enumerate() {
        let at = |field: &str| format!("faults[{i}].{field}");
        all.extend([
            (at("latency"), f.latency),
            (at("for"), f.for_),
            (at("grace"), f.grace),
            (at("when.at"), f.when.at),
            (at("when.every"), f.when.every),
            (at("when.within"), f.when.within),
        ]);
    }
    all.into_iter()
        .filter_map(|(path, d)| Some((path, d?)))
        .collect()
}

/// No duration longer than [`LONGEST`].
fn durations_bounded(plan: &Plan, problems: &mut Problems) {
    for (path, d) in durations(plan) {
        if d > LONGEST {
            problems.add(
                path,
                format!(
                    "`{}` is longer than any run: a plan's durations are at most 7 days",
                    humantime::format_duration(d)
                ),
            );
        }
    }
}

/// Partitions, replication, prefetch and the instances a run may reach stay within what the
/// broker's protocol and the harness can hold. `faults` is `None` when a fault is broken (the
/// scale-ups are then not counted).
fn counts_bounded(plan: &Plan, faults: Option<&[Fault]>, problems: &mut Problems) {
    let b = &plan.broker;
    if b.partitions.get() > MOST_PARTITIONS {
        problems.add(
            "broker.partitions",
            format!("at most {MOST_PARTITIONS} partitions: a test topic needs a handful"),
        );
    }
    if b.replication.is_some_and(|r| r.get() > i16::MAX as u64) {
        problems.add(
            "broker.replication",
            "Kafka's replication factor is at most 32767, and at most the number of brokers",
        );
    }
    if b.prefetch.is_some_and(|p| p.get() > u64::from(u16::MAX)) {
        problems.add(
            "broker.prefetch",
            "AMQP's prefetch count (basic.qos) is at most 65535",
        );
    }
    let instances = plan.consumer.instances.get();
    if instances > MOST_INSTANCES {
        problems.add(
            "consumer.instances",
            format!("at most {MOST_INSTANCES} instances: each one is a process, a proxy listener and a sink URL"),
        );
        return;
    }
    let mut reach = instances;
    for (i, f) in faults.unwrap_or_default().iter().enumerate() {
        let added = u64::from(f.action.instances_added()).saturating_mul(f.when.firings());
        reach = reach.saturating_add(added);
        if added > 0 && reach > MOST_INSTANCES {
            problems.add(
                format!("faults[{i}]"),
                format!("the run could reach {reach} instances with this scale-up: at most {MOST_INSTANCES} (each one is a process, a proxy listener and a sink URL); fire it fewer times"),
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_table_name;

    #[test]
    fn postgres_tables_are_plain_identifiers() {
        assert!(valid_table_name("orders") && valid_table_name("shop.orders_2"));
        assert!(!valid_table_name("orders; drop table x") && !valid_table_name("1x"));
        assert!(!valid_table_name("a.b.c") && !valid_table_name(""));
    }
}
