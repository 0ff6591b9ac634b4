//! Rules that span several fields of a plan. Each problem names the path of the field to fix
//! (located afterwards through the span map) and says what to write instead.

use super::{BrokerKind, EventKind, FaultSpec, Plan, SinkKind, Target, When};
use crate::sink::extract::Extractor;

/// One thing wrong with a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Path of the field, such as `faults[0].when`.
    pub path: String,
    /// What is wrong and the fix.
    pub message: String,
}

/// Every problem found, in plan order.
pub fn validate(plan: &Plan) -> Vec<Problem> {
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
    match Extractor::parse(&plan.effects.id) {
        Err(e) => problem("effects.id".into(), e),
        Ok(rule) if rule.needs_headers() && plan.effects.sink != SinkKind::Http => problem(
            "effects.id".into(),
            "file and stdout effects are lines without headers: use `json:/field`, `regex:...` or `body`".into(),
        ),
        Ok(_) => {}
    }
    if let Some(key) = &plan.effects.idempotency_key {
        if let Err(e) = Extractor::parse(key) {
            problem("effects.idempotency_key".into(), e);
        }
    }
    if plan.limits.deadline <= plan.limits.settle {
        problem(
            "limits.deadline".into(),
            "the deadline must be longer than `settle`".into(),
        );
    }
    let instances = plan.consumer.instances.get();
    for (i, fault) in plan.faults.iter().enumerate() {
        let ctx = Context {
            sink: plan.effects.sink,
            instances,
            proxy: plan.via_proxy(),
            kind: plan.broker.kind,
        };
        for (path, message) in fault_problems(fault, &ctx) {
            problem(format!("faults[{i}]{path}"), message);
        }
    }
    problems
}

/// What the fault rules need to know about the rest of the plan.
struct Context {
    sink: SinkKind,
    instances: u64,
    /// The consumer goes through the proxy (on by default).
    proxy: bool,
    /// Kafka or AMQP.
    kind: BrokerKind,
}

const NEEDS_PROXY: &str = "needs the consumer to go through the proxy (`consumer.via_proxy`, on by default for Kafka plans)";

/// Problems of one fault; paths are relative to the fault.
fn fault_problems(fault: &FaultSpec, ctx: &Context) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let actions: Vec<&str> = [
        ("kill", fault.kill.is_some()),
        ("terminate", fault.terminate.is_some()),
        ("pause", fault.pause.is_some()),
        ("partition", fault.partition.is_some()),
        ("latency", fault.latency.is_some()),
        ("sever", fault.sever.is_some()),
        ("rebalance", fault.rebalance.is_some()),
        ("scale", fault.scale.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    match actions.as_slice() {
        [] => out.push((
            String::new(),
            "a fault needs an action: add `kill: consumer`, `terminate: consumer`, `pause: consumer`, `partition: consumer`, `latency: 200ms`, `sever: consumer`, `rebalance: group` or `scale: +1`".into(),
        )),
        [one] => {
            if *one == "rebalance" {
                if fault.rebalance.as_deref() != Some("group") {
                    out.push((
                        ".rebalance".into(),
                        "`rebalance` takes `group`: a transient member joins the consumer's group for `for`, then leaves (write `rebalance: group`)".into(),
                    ));
                }
                if ctx.kind != BrokerKind::Kafka {
                    out.push((
                        ".rebalance".into(),
                        "`rebalance: group` needs a Kafka consumer group; an AMQP queue has no rebalances (use `scale: +1` to add a competing consumer)".into(),
                    ));
                }
            }
            if *one == "scale" && !matches!(fault.scale, Some(1 | -1)) {
                out.push((
                    ".scale".into(),
                    "`scale` is `+1` (start one more instance) or `-1` (stop one gracefully)".into(),
                ));
            }
            if matches!(*one, "partition" | "latency" | "sever") && !ctx.proxy {
                out.push((format!(".{one}"), format!("`{one}` {NEEDS_PROXY}")));
            }
            if matches!(*one, "pause" | "partition" | "latency" | "rebalance") && fault.for_.is_none() {
                out.push((
                    format!(".{one}"),
                    format!("`{one}` needs a length: add `for: 5s`"),
                ));
            }
        }
        several => out.push((
            format!(".{}", several[1]),
            format!(
                "one action per fault (found {}): split it into several faults",
                several.join(", ")
            ),
        )),
    }
    if fault.grace.is_some() && fault.terminate.is_none() && fault.scale != Some(-1) {
        out.push((
            ".grace".into(),
            "`grace` goes with `terminate` or `scale: -1` (the wait between SIGTERM and SIGKILL)"
                .into(),
        ));
    }
    if fault.target.is_some() && fault.latency.is_none() {
        out.push((
            ".target".into(),
            "`target` goes with `latency`; other actions name their target themselves".into(),
        ));
    }
    let targets = [
        fault.kill,
        fault.terminate,
        fault.pause,
        fault.partition,
        fault.sever,
        fault.target,
    ];
    for target in targets.into_iter().flatten() {
        if let Target::Instance(i) = target {
            if u64::from(i) >= ctx.instances {
                out.push((
                    String::new(),
                    format!(
                        "`consumer[{i}]` does not exist: the plan runs {} instance(s), numbered from 0",
                        ctx.instances
                    ),
                ));
            }
        }
    }
    for (path, message) in when_problems(&fault.when, ctx) {
        out.push((format!(".when{path}"), message));
    }
    out
}

/// Problems of one trigger; paths are relative to `when`.
fn when_problems(when: &When, ctx: &Context) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let forms: Vec<&str> = [
        ("at", when.at.is_some()),
        ("after", when.after.is_some()),
        ("before", when.before.is_some()),
        ("during", when.during.is_some()),
        ("every", when.every.is_some()),
        ("random", when.random.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    let fix = "write one of `at: 2s`, `after: effect, nth: 3`, `during: effect, nth: 3`, `every: 2s, times: 3` or `random: 2, within: 10s`";
    match forms.as_slice() {
        [] => out.push((String::new(), format!("the trigger is empty: {fix}"))),
        [_] => {}
        several => out.push((
            format!(".{}", several[1]),
            format!(
                "one trigger form per fault (found {}): {fix}",
                several.join(", ")
            ),
        )),
    }
    let counted = [
        ("after", when.after),
        ("before", when.before),
        ("during", when.during),
    ];
    for (form, event) in counted {
        let Some(event) = event else { continue };
        if when.nth.is_none() {
            out.push((
                format!(".{form}"),
                format!("`{form}: ...` needs `nth`: which occurrence fires it (1 = the first)"),
            ));
        }
        let name = serde_json::to_value(event).ok();
        let name = name
            .as_ref()
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned();
        let proxied = matches!(
            event,
            EventKind::Commit | EventKind::Deliver | EventKind::Rebalance | EventKind::Ack
        );
        let wrong_broker = match (event, ctx.kind) {
            (EventKind::Commit | EventKind::Rebalance, BrokerKind::Amqp) => {
                Some("an AMQP plan counts `ack`s, not commits or rebalances")
            }
            (EventKind::Ack, BrokerKind::Kafka) => {
                Some("a Kafka plan counts `commit`s; `ack` is AMQP")
            }
            _ => None,
        };
        let supported = match form {
            "after" => wrong_broker.is_none(),
            "before" => {
                matches!(event, EventKind::Commit | EventKind::Ack) && wrong_broker.is_none()
            }
            _ => event == EventKind::Effect,
        };
        if !supported {
            let fix = match form {
                "during" => "`during:` holds the sink's answer: use `during: effect`",
                _ => wrong_broker.unwrap_or("`before:` holds a protocol request: use `before: commit` (Kafka) or `before: ack` (AMQP)"),
            };
            out.push((
                format!(".{form}"),
                format!("`{form}: {name}` is not supported: {fix}"),
            ));
        } else if proxied && !ctx.proxy {
            out.push((
                format!(".{form}"),
                format!("`{form}: {name}` {NEEDS_PROXY}"),
            ));
        }
        if form == "during" && ctx.sink != SinkKind::Http {
            out.push((
                ".during".into(),
                "`during: effect` holds the sink's answer, which only the `http` sink has: use `after: effect`".into(),
            ));
        }
    }
    if when.nth.is_some() && counted.iter().all(|(_, e)| e.is_none()) {
        out.push((
            ".nth".into(),
            "`nth` counts events: use it with `after:`, `before:` or `during:`".into(),
        ));
    }
    if when.every.is_some() != when.times.is_some() {
        out.push((
            ".every".into(),
            "`every` and `times` go together: e.g. `every: 2s, times: 3`".into(),
        ));
    }
    if when.random.is_some() != when.within.is_some() {
        out.push((
            ".random".into(),
            "`random` and `within` go together: e.g. `random: 2, within: 10s`".into(),
        ));
    }
    if matches!(when.every, Some(d) if d.is_zero()) {
        out.push((".every".into(), "`every` must be longer than 0s".into()));
    }
    out
}
