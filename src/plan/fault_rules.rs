//! The rules of one written fault, applied while turning it into a typed [`Fault`]: a fault
//! either becomes one [`FaultAction`] with its [`Trigger`], or names the first rule it breaks
//! and what to write instead.
//!
//! The rules are checked in a fixed order (the action and what it needs, `grace`, `target`, the
//! instance it names, then the trigger), and only the first broken one is reported, so a plan
//! with several mistakes always gets the same message. Each kind of action and each trigger form
//! is one arm of an exhaustive `match`.

use std::time::Duration;

use super::{
    BrokerKind, Count, EventKind, Fault, FaultAction, FaultSpec, Moment, ScaleStep, SinkKind,
    Target, Trigger, When, DEFAULT_GRACE,
};

/// What the fault rules need to know about the rest of the plan.
pub(super) struct Context {
    /// The effect sink.
    pub sink: SinkKind,
    /// `consumer.instances`.
    pub instances: u64,
    /// The consumer goes through the proxy (on by default).
    pub proxy: bool,
    /// Kafka or AMQP.
    pub kind: BrokerKind,
}

/// A broken rule: the field to fix (a path relative to the fault, such as `.when.nth`) and
/// what to write instead.
#[derive(Debug)]
pub(super) struct Broken {
    /// Path relative to the fault; empty for the fault itself.
    pub path: String,
    /// What is wrong and the fix.
    pub message: String,
}

fn broken(path: impl Into<String>, message: impl Into<String>) -> Broken {
    Broken {
        path: path.into(),
        message: message.into(),
    }
}

const NEEDS_PROXY: &str = "needs the consumer to go through the proxy (`consumer.via_proxy`, on by default for Kafka plans)";

/// The typed fault, or the first rule the written one breaks.
pub(super) fn fault(spec: &FaultSpec, ctx: &Context) -> Result<Fault, Broken> {
    let action = action(spec, ctx)?;
    parameters_fit(spec, &action)?;
    if let Target::Instance(i) = action.target() {
        if u64::from(i) >= ctx.instances {
            return Err(broken(
                "",
                format!(
                    "`consumer[{i}]` does not exist: the plan runs {} instance(s), numbered from 0",
                    ctx.instances
                ),
            ));
        }
    }
    let when = trigger(&spec.when, ctx).map_err(|b| Broken {
        path: format!(".when{}", b.path),
        message: b.message,
    })?;
    Ok(Fault { action, when })
}

/// An action field of a written fault, with its value as written.
#[derive(Debug, Clone, Copy)]
enum Written<'a> {
    Kill(Target),
    Terminate(Target),
    Pause(Target),
    Partition(Target),
    Latency(Duration),
    Sever(Target),
    Rebalance(&'a str),
    Scale(i32),
}

impl Written<'_> {
    fn name(self) -> &'static str {
        match self {
            Written::Kill(_) => "kill",
            Written::Terminate(_) => "terminate",
            Written::Pause(_) => "pause",
            Written::Partition(_) => "partition",
            Written::Latency(_) => "latency",
            Written::Sever(_) => "sever",
            Written::Rebalance(_) => "rebalance",
            Written::Scale(_) => "scale",
        }
    }
}

/// Every action field present, in the order the plan format lists them.
fn written_actions(spec: &FaultSpec) -> Vec<Written<'_>> {
    [
        spec.kill.map(Written::Kill),
        spec.terminate.map(Written::Terminate),
        spec.pause.map(Written::Pause),
        spec.partition.map(Written::Partition),
        spec.latency.map(Written::Latency),
        spec.sever.map(Written::Sever),
        spec.rebalance.as_deref().map(Written::Rebalance),
        spec.scale.map(Written::Scale),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The one action of a fault, with what it needs (a length, the proxy, a Kafka group).
fn action(spec: &FaultSpec, ctx: &Context) -> Result<FaultAction, Broken> {
    let written = match written_actions(spec).as_slice() {
        [] => return Err(broken(
            "",
            "a fault needs an action: add `kill: consumer`, `terminate: consumer`, `pause: consumer`, `partition: consumer`, `latency: 200ms`, `sever: consumer`, `rebalance: group` or `scale: +1`",
        )),
        [one] => *one,
        several => {
            let names: Vec<&str> = several.iter().map(|w| w.name()).collect();
            return Err(broken(
                format!(".{}", names[1]),
                format!(
                    "one action per fault (found {}): split it into several faults",
                    names.join(", ")
                ),
            ));
        }
    };
    let name = written.name();
    let length = || {
        spec.for_.ok_or_else(|| {
            broken(
                format!(".{name}"),
                format!("`{name}` needs a length: add `for: 5s`"),
            )
        })
    };
    let proxied = || {
        if ctx.proxy {
            Ok(())
        } else {
            Err(broken(
                format!(".{name}"),
                format!("`{name}` {NEEDS_PROXY}"),
            ))
        }
    };
    let grace = spec.grace.unwrap_or(DEFAULT_GRACE);
    Ok(match written {
        Written::Kill(target) => FaultAction::Kill { target },
        Written::Terminate(target) => FaultAction::Terminate { target, grace },
        Written::Pause(target) => FaultAction::Pause {
            target,
            length: length()?,
        },
        Written::Partition(target) => {
            proxied()?;
            FaultAction::Partition {
                target,
                length: length()?,
            }
        }
        Written::Latency(delay) => {
            proxied()?;
            FaultAction::Latency {
                target: spec.target.unwrap_or(Target::AllInstances),
                delay,
                length: length()?,
            }
        }
        Written::Sever(target) => {
            proxied()?;
            FaultAction::Sever { target }
        }
        Written::Rebalance(what) => {
            if what != "group" {
                return Err(broken(
                    ".rebalance",
                    "`rebalance` takes `group`: a transient member joins the consumer's group for `for`, then leaves (write `rebalance: group`)",
                ));
            }
            if ctx.kind != BrokerKind::Kafka {
                return Err(broken(
                    ".rebalance",
                    "`rebalance: group` needs a Kafka consumer group; an AMQP queue has no rebalances (use `scale: +1` to add a competing consumer)",
                ));
            }
            FaultAction::Rebalance { hold: length()? }
        }
        Written::Scale(1) => FaultAction::Scale(ScaleStep::Up),
        Written::Scale(-1) => FaultAction::Scale(ScaleStep::Down { grace }),
        Written::Scale(_) => {
            return Err(broken(
                ".scale",
                "`scale` is `+1` (start one more instance) or `-1` (stop one gracefully)",
            ))
        }
    })
}

/// `grace` and `target` only where the action uses them.
fn parameters_fit(spec: &FaultSpec, action: &FaultAction) -> Result<(), Broken> {
    let (takes_grace, takes_target) = match action {
        FaultAction::Terminate { .. } | FaultAction::Scale(ScaleStep::Down { .. }) => (true, false),
        FaultAction::Latency { .. } => (false, true),
        FaultAction::Kill { .. }
        | FaultAction::Pause { .. }
        | FaultAction::Partition { .. }
        | FaultAction::Sever { .. }
        | FaultAction::Rebalance { .. }
        | FaultAction::Scale(ScaleStep::Up) => (false, false),
    };
    if spec.grace.is_some() && !takes_grace {
        return Err(broken(
            ".grace",
            "`grace` goes with `terminate` or `scale: -1` (the wait between SIGTERM and SIGKILL)",
        ));
    }
    if spec.target.is_some() && !takes_target {
        return Err(broken(
            ".target",
            "`target` goes with `latency`; other actions name their target themselves",
        ));
    }
    Ok(())
}

/// A trigger form of a written `when`, with its value as written.
#[derive(Debug, Clone, Copy)]
enum Form {
    At(Duration),
    Counted(Moment, EventKind),
    Every(Duration),
    Random(Count),
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::At(_) => "at",
            Form::Counted(moment, _) => moment.as_str(),
            Form::Every(_) => "every",
            Form::Random(_) => "random",
        }
    }
}

/// Every trigger form present, in the order the plan format lists them.
fn written_forms(when: &When) -> Vec<Form> {
    [
        when.at.map(Form::At),
        when.after.map(|e| Form::Counted(Moment::After, e)),
        when.before.map(|e| Form::Counted(Moment::Before, e)),
        when.during.map(|e| Form::Counted(Moment::During, e)),
        when.every.map(Form::Every),
        when.random.map(Form::Random),
    ]
    .into_iter()
    .flatten()
    .collect()
}

const TRIGGER_FIX: &str = "write one of `at: 2s`, `after: effect, nth: 3`, `during: effect, nth: 3`, `every: 2s, times: 3` or `random: 2, within: 10s`";

/// The one trigger form of a `when` and the fields that go with it; paths relative to `when`.
fn trigger(when: &When, ctx: &Context) -> Result<Trigger, Broken> {
    let form = match written_forms(when).as_slice() {
        [] => return Err(broken("", format!("the trigger is empty: {TRIGGER_FIX}"))),
        [one] => *one,
        several => {
            let names: Vec<&str> = several.iter().map(|f| f.name()).collect();
            return Err(broken(
                format!(".{}", names[1]),
                format!(
                    "one trigger form per fault (found {}): {TRIGGER_FIX}",
                    names.join(", ")
                ),
            ));
        }
    };
    let no_nth = || match when.nth {
        None => Ok(()),
        Some(_) => Err(broken(
            ".nth",
            "`nth` counts events: use it with `after:`, `before:` or `during:`",
        )),
    };
    let every_and_times = || {
        broken(
            ".every",
            "`every` and `times` go together: e.g. `every: 2s, times: 3`",
        )
    };
    let random_and_within = || {
        broken(
            ".random",
            "`random` and `within` go together: e.g. `random: 2, within: 10s`",
        )
    };
    let no_times = || when.times.map_or(Ok(()), |_| Err(every_and_times()));
    let no_within = || when.within.map_or(Ok(()), |_| Err(random_and_within()));
    match form {
        Form::At(at) => {
            no_nth()?;
            no_times()?;
            no_within()?;
            Ok(Trigger::At(at))
        }
        Form::Counted(moment, event) => {
            let nth = counted(when, moment, event, ctx)?;
            no_times()?;
            no_within()?;
            Ok(Trigger::Count { moment, event, nth })
        }
        Form::Every(period) => {
            no_nth()?;
            let times = when.times.ok_or_else(every_and_times)?;
            no_within()?;
            if period.is_zero() {
                return Err(broken(".every", "`every` must be longer than 0s"));
            }
            Ok(Trigger::Every { period, times })
        }
        Form::Random(count) => {
            no_nth()?;
            no_times()?;
            let within = when.within.ok_or_else(random_and_within)?;
            Ok(Trigger::Random { count, within })
        }
    }
}

/// The rules of `after:`, `before:` and `during:` on `event`; returns `nth`.
fn counted(when: &When, moment: Moment, event: EventKind, ctx: &Context) -> Result<Count, Broken> {
    let (form, name) = (moment.as_str(), event.as_str());
    let path = format!(".{form}");
    let Some(nth) = when.nth else {
        return Err(broken(
            path,
            format!("`{form}: ...` needs `nth`: which occurrence fires it (1 = the first)"),
        ));
    };
    let wrong_broker = wrong_broker(event, ctx.kind);
    let is_request = match event {
        EventKind::Commit | EventKind::Ack => true,
        EventKind::Effect | EventKind::Deliver | EventKind::Rebalance | EventKind::Produced => {
            false
        }
    };
    let supported = match moment {
        Moment::After => wrong_broker.is_none(),
        Moment::Before => is_request && wrong_broker.is_none(),
        Moment::During => event == EventKind::Effect,
    };
    if !supported {
        let fix = match moment {
            Moment::During => "`during:` holds the sink's answer: use `during: effect`",
            Moment::After | Moment::Before => wrong_broker.unwrap_or(
                "`before:` holds a protocol request: use `before: commit` (Kafka) or `before: ack` (AMQP)",
            ),
        };
        return Err(broken(
            path,
            format!("`{form}: {name}` is not supported: {fix}"),
        ));
    }
    if event.seen_by_proxy() && !ctx.proxy {
        return Err(broken(path, format!("`{form}: {name}` {NEEDS_PROXY}")));
    }
    if moment == Moment::During && ctx.sink != SinkKind::Http {
        return Err(broken(
            ".during",
            "`during: effect` holds the sink's answer, which only the `http` sink has: use `after: effect`",
        ));
    }
    Ok(nth)
}

/// Why `event` cannot be counted on this broker, if it cannot.
fn wrong_broker(event: EventKind, kind: BrokerKind) -> Option<&'static str> {
    match kind {
        BrokerKind::Amqp => match event {
            EventKind::Commit | EventKind::Rebalance => {
                Some("an AMQP plan counts `ack`s, not commits or rebalances")
            }
            EventKind::Effect | EventKind::Ack | EventKind::Deliver | EventKind::Produced => None,
        },
        BrokerKind::Kafka => match event {
            EventKind::Ack => Some("a Kafka plan counts `commit`s; `ack` is AMQP"),
            EventKind::Effect
            | EventKind::Commit
            | EventKind::Deliver
            | EventKind::Rebalance
            | EventKind::Produced => None,
        },
    }
}
