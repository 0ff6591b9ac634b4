//! The rules of one written fault, applied while turning it into a typed [`Fault`]: a fault
//! either becomes one [`FaultAction`] with its [`Trigger`], or names every rule it breaks and
//! what to write instead.
//!
//! The rules are checked in a fixed order (the action and what it needs, `grace`, `target`, the
//! instance it names, then the trigger) and every broken one is kept, so a plan with several
//! mistakes gets them all at once, always the same list. A rule that cannot be checked because
//! an earlier one broke (the parameters of an action when the fault names two) is skipped, not
//! guessed at. Each kind of action and each trigger form is one arm of an exhaustive `match`.

use std::time::Duration;

use super::{
    AmqpFault, BrokerKind, CommitErrorForm, Count, EventKind, Fault, FaultAction, FaultSpec,
    KafkaError, Moment, ProtocolReply, ScaleStep, Target, Trigger, When, DEFAULT_GRACE,
};

/// Most times one `every` or `random` trigger may fire: the nemesis lays out every fire time
/// when it arms the trigger, so the count is bounded by what a run can hold, far beyond any
/// test's need.
pub(super) const MOST_FIRINGS: u64 = 10_000;

/// What the fault rules need to know about the rest of the plan.
pub(super) struct Context {
    /// Some boundary is observed by the `http` sink (the one sink that can hold an answer).
    pub http_sink: bool,
    /// Some boundary is observed by the `postgres` sink (it sees a row only once committed).
    pub postgres_sink: bool,
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

/// The broken rules found so far in one fault.
#[derive(Debug, Default)]
struct Findings(Vec<Broken>);

impl Findings {
    /// The value of a rule that held; a broken rule is kept and gives `None`.
    fn keep<T>(&mut self, checked: Result<T, Broken>) -> Option<T> {
        checked.map_err(|b| self.0.push(b)).ok()
    }

    /// Keeps every broken rule of `checks`; `Some` when all of them held.
    fn all<const N: usize>(&mut self, checks: [Result<(), Broken>; N]) -> Option<()> {
        let before = self.0.len();
        for check in checks {
            self.keep(check);
        }
        (self.0.len() == before).then_some(())
    }
}

const NEEDS_PROXY: &str = "needs the consumer to go through the proxy (`consumer.via_proxy`, on by default for Kafka plans)";

/// The typed fault, or every rule the written one breaks (never an empty list).
pub(super) fn fault(spec: &FaultSpec, ctx: &Context) -> Result<Fault, Vec<Broken>> {
    let mut found = Findings::default();
    let action = action(spec, ctx, &mut found);
    if let Some(action) = &action {
        parameters_fit(spec, action, &mut found);
        found.keep(instance_exists(action.target(), ctx));
    }
    let mut in_when = Findings::default();
    let when = trigger(&spec.when, ctx, &mut in_when);
    found.0.extend(in_when.0.into_iter().map(|b| Broken {
        path: format!(".when{}", b.path),
        message: b.message,
    }));
    match (action, when) {
        (Some(action), Some(when)) if found.0.is_empty() => Ok(Fault { action, when }),
        // Every `None` above was kept as a broken rule, so the list is never empty.
        _ => Err(found.0),
    }
}

/// The instance a target names exists in the plan.
fn instance_exists(target: Target, ctx: &Context) -> Result<(), Broken> {
    match target {
        Target::Instance(i) if u64::from(i) >= ctx.instances => Err(broken(
            "",
            format!(
                "`consumer[{i}]` does not exist: the plan runs {} instance(s), numbered from 0",
                ctx.instances
            ),
        )),
        Target::Instance(_) | Target::AllInstances => Ok(()),
    }
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
    Reply(WrittenReply<'a>),
    Amqp(AmqpFault),
}

/// A protocol-fault field of a written fault, with its value as written.
#[derive(Debug, Clone, Copy)]
enum WrittenReply<'a> {
    CommitError(&'a str),
    FetchError(&'a str),
    FetchTwice(Target),
    HeartbeatError(&'a str),
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
            Written::Reply(WrittenReply::CommitError(_)) => "commit_error",
            Written::Reply(WrittenReply::FetchError(_)) => "fetch_error",
            Written::Reply(WrittenReply::FetchTwice(_)) => "fetch_twice",
            Written::Reply(WrittenReply::HeartbeatError(_)) => "heartbeat_error",
            Written::Amqp(_) => "amqp",
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
        spec.commit_error
            .as_deref()
            .map(|e| Written::Reply(WrittenReply::CommitError(e))),
        spec.fetch_error
            .as_deref()
            .map(|e| Written::Reply(WrittenReply::FetchError(e))),
        spec.fetch_twice
            .map(|t| Written::Reply(WrittenReply::FetchTwice(t))),
        spec.heartbeat_error
            .as_deref()
            .map(|e| Written::Reply(WrittenReply::HeartbeatError(e))),
        spec.amqp.map(Written::Amqp),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The one action of a fault, with what it needs (a length, the proxy, a Kafka group); every
/// need it lacks is kept in `found`.
fn action(spec: &FaultSpec, ctx: &Context, found: &mut Findings) -> Option<FaultAction> {
    let written = match written_actions(spec).as_slice() {
        [] => {
            found.0.push(broken(
                "",
                "a fault needs an action: add `kill: consumer`, `terminate: consumer`, `pause: consumer`, `partition: consumer`, `latency: 200ms`, `sever: consumer`, `rebalance: group`, `scale: +1`, `commit_error: REBALANCE_IN_PROGRESS`, `fetch_error: OFFSET_OUT_OF_RANGE` or `amqp: redeliver|cancel|double-ack|blocked`",
            ));
            return None;
        }
        [one] => *one,
        several => {
            let names: Vec<&str> = several.iter().map(|w| w.name()).collect();
            found.0.push(broken(
                format!(".{}", names[1]),
                format!(
                    "one action per fault (found {}): split it into several faults",
                    names.join(", ")
                ),
            ));
            return None;
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
    Some(match written {
        Written::Kill(target) => FaultAction::Kill { target },
        Written::Terminate(target) => FaultAction::Terminate { target, grace },
        Written::Pause(target) => FaultAction::Pause {
            target,
            length: found.keep(length())?,
        },
        Written::Partition(target) => {
            let (through_proxy, length) = (found.keep(proxied()), found.keep(length()));
            through_proxy?;
            FaultAction::Partition {
                target,
                length: length?,
            }
        }
        Written::Latency(delay) => {
            let (through_proxy, length) = (found.keep(proxied()), found.keep(length()));
            through_proxy?;
            FaultAction::Latency {
                target: spec.target.unwrap_or(Target::AllInstances),
                delay,
                length: length?,
            }
        }
        Written::Sever(target) => {
            found.keep(proxied())?;
            FaultAction::Sever { target }
        }
        Written::Rebalance(what) => {
            let fits = found.all([rebalance_group(what), rebalance_broker(ctx.kind)]);
            let hold = found.keep(length());
            fits?;
            FaultAction::Rebalance { hold: hold? }
        }
        Written::Amqp(fault) => {
            let (through_proxy, on_amqp) =
                (found.keep(proxied()), found.keep(amqp_broker(ctx.kind)));
            let length = match fault {
                AmqpFault::Blocked => Some(found.keep(length())),
                AmqpFault::Redeliver | AmqpFault::Cancel | AmqpFault::DoubleAck => None,
            };
            through_proxy?;
            on_amqp?;
            let length = match length {
                Some(checked) => Some(checked?),
                None => None,
            };
            FaultAction::Amqp {
                target: spec.target.unwrap_or(Target::AllInstances),
                fault,
                length,
            }
        }
        Written::Scale(1) => FaultAction::Scale(ScaleStep::Up),
        Written::Scale(-1) => FaultAction::Scale(ScaleStep::Down { grace }),
        Written::Scale(_) => {
            found.0.push(broken(
                ".scale",
                "`scale` is `+1` (start one more instance) or `-1` (stop one gracefully)",
            ));
            return None;
        }
        Written::Reply(written) => {
            let action = protocol_reply(spec, written, found);
            found.all([proxied(), kafka_only(&format!(".{name}"), ctx.kind)])?;
            action?
        }
    })
}

/// A protocol fault, with its error code by name and (`commit_error`) its form; every broken
/// rule is kept in `found`.
fn protocol_reply(
    spec: &FaultSpec,
    written: WrittenReply<'_>,
    found: &mut Findings,
) -> Option<FaultAction> {
    Some(match written {
        WrittenReply::CommitError(name) => {
            let error = found.keep(kafka_error(".commit_error", name));
            let form = found.keep(commit_form(spec.form.as_deref()));
            reply(
                spec,
                ProtocolReply::CommitError {
                    error: error?,
                    form: form?,
                },
            )
        }
        WrittenReply::FetchError(name) => {
            let error = found.keep(kafka_error(".fetch_error", name))?;
            reply(spec, ProtocolReply::FetchError { error })
        }
        WrittenReply::HeartbeatError(name) => {
            let error = found.keep(kafka_error(".heartbeat_error", name))?;
            reply(spec, ProtocolReply::HeartbeatError { error })
        }
        WrittenReply::FetchTwice(target) => FaultAction::Reply {
            target,
            reply: ProtocolReply::FetchTwice,
        },
    })
}

/// A protocol reply on `target:` (default every instance).
fn reply(spec: &FaultSpec, reply: ProtocolReply) -> FaultAction {
    FaultAction::Reply {
        target: spec.target.unwrap_or(Target::AllInstances),
        reply,
    }
}

/// A Kafka error code a protocol fault may answer with, by Kafka's name.
fn kafka_error(path: &str, name: &str) -> Result<KafkaError, Broken> {
    KafkaError::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = KafkaError::ALL.iter().map(|e| e.name()).collect();
        broken(
            path,
            format!(
                "unknown Kafka error `{name}`: write one of {}",
                names.join(", ")
            ),
        )
    })
}

/// `form:` of a `commit_error`: `dropped` or `ambiguous` (required: the two differ in what
/// the broker stores).
fn commit_form(form: Option<&str>) -> Result<CommitErrorForm, Broken> {
    match form {
        Some("dropped") => Ok(CommitErrorForm::Dropped),
        Some("ambiguous") => Ok(CommitErrorForm::Ambiguous),
        Some(_) | None => Err(broken(
            ".form",
            "`commit_error` needs `form: dropped` (the broker never stores the offsets) or `form: ambiguous` (the broker stores them; the consumer is told the commit failed)",
        )),
    }
}

/// A Kafka protocol fault needs a Kafka plan.
fn kafka_only(path: &str, kind: BrokerKind) -> Result<(), Broken> {
    match kind {
        BrokerKind::Kafka => Ok(()),
        BrokerKind::Amqp => Err(broken(
            path,
            "a Kafka protocol fault needs a Kafka plan (`broker.kind: kafka`)",
        )),
    }
}

/// `rebalance` names `group`, the one thing it can do.
fn rebalance_group(what: &str) -> Result<(), Broken> {
    if what == "group" {
        return Ok(());
    }
    Err(broken(
        ".rebalance",
        "`rebalance` takes `group`: a transient member joins the consumer's group for `for`, then leaves (write `rebalance: group`)",
    ))
}

/// A rebalance needs a Kafka consumer group.
fn rebalance_broker(kind: BrokerKind) -> Result<(), Broken> {
    match kind {
        BrokerKind::Kafka => Ok(()),
        BrokerKind::Amqp => Err(broken(
            ".rebalance",
            "`rebalance: group` needs a Kafka consumer group; an AMQP queue has no rebalances (use `scale: +1` to add a competing consumer)",
        )),
    }
}

/// An `amqp:` protocol fault needs a RabbitMQ broker.
fn amqp_broker(kind: BrokerKind) -> Result<(), Broken> {
    match kind {
        BrokerKind::Amqp => Ok(()),
        BrokerKind::Kafka => Err(broken(
            ".amqp",
            "`amqp:` faults are AMQP protocol answers the RabbitMQ proxy sends; this plan's broker is Kafka (use `broker.kind: amqp`, or a Kafka fault)",
        )),
    }
}

/// `grace` and `target` only where the action uses them.
fn parameters_fit(spec: &FaultSpec, action: &FaultAction, found: &mut Findings) {
    let (takes_grace, takes_target) = match action {
        FaultAction::Terminate { .. } | FaultAction::Scale(ScaleStep::Down { .. }) => (true, false),
        FaultAction::Latency { .. } | FaultAction::Reply { .. } | FaultAction::Amqp { .. } => {
            (false, true)
        }
        FaultAction::Kill { .. }
        | FaultAction::Pause { .. }
        | FaultAction::Partition { .. }
        | FaultAction::Sever { .. }
        | FaultAction::Rebalance { .. }
        | FaultAction::Scale(ScaleStep::Up) => (false, false),
    };
    if spec.grace.is_some() && !takes_grace {
        found.0.push(broken(
            ".grace",
            "`grace` goes with `terminate` or `scale: -1` (the wait between SIGTERM and SIGKILL)",
        ));
    }
    if spec.target.is_some() && !takes_target {
        found.0.push(broken(
            ".target",
            "`target` goes with `latency`, `commit_error`, `fetch_error`, `heartbeat_error` or `amqp`; other actions name their target themselves",
        ));
    }
    let takes_form = matches!(
        action,
        FaultAction::Reply {
            reply: ProtocolReply::CommitError { .. },
            ..
        }
    );
    if spec.form.is_some() && !takes_form {
        found.0.push(broken(
            ".form",
            "`form` goes with `commit_error` (`dropped` or `ambiguous`)",
        ));
    }
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
/// Every broken rule is kept in `found`.
fn trigger(when: &When, ctx: &Context, found: &mut Findings) -> Option<Trigger> {
    let form = match written_forms(when).as_slice() {
        [] => {
            found
                .0
                .push(broken("", format!("the trigger is empty: {TRIGGER_FIX}")));
            return None;
        }
        [one] => *one,
        several => {
            let names: Vec<&str> = several.iter().map(|f| f.name()).collect();
            found.0.push(broken(
                format!(".{}", names[1]),
                format!(
                    "one trigger form per fault (found {}): {TRIGGER_FIX}",
                    names.join(", ")
                ),
            ));
            return None;
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
            found.all([no_nth(), no_times(), no_within()])?;
            Some(Trigger::At(at))
        }
        Form::Counted(moment, event) => {
            let nth = counted(when, moment, event, ctx, found);
            found.all([no_times(), no_within()])?;
            Some(Trigger::Count {
                moment,
                event,
                nth: nth?,
            })
        }
        Form::Every(period) => {
            let times = found.keep(when.times.ok_or_else(every_and_times));
            let positive = if period.is_zero() {
                Err(broken(".every", "`every` must be longer than 0s"))
            } else {
                Ok(())
            };
            let times_bounded = times.map_or(Ok(()), |t| at_most_firings(".times", t));
            found.all([no_nth(), no_within(), positive, times_bounded])?;
            Some(Trigger::Every {
                period,
                times: times?,
            })
        }
        Form::Random(count) => {
            let within = found.keep(when.within.ok_or_else(random_and_within));
            found.all([no_nth(), no_times(), at_most_firings(".random", count)])?;
            Some(Trigger::Random {
                count,
                within: within?,
            })
        }
    }
}

/// A scheduled trigger fires at most [`MOST_FIRINGS`] times.
fn at_most_firings(path: &str, count: Count) -> Result<(), Broken> {
    if count.get() <= MOST_FIRINGS {
        return Ok(());
    }
    Err(broken(
        path,
        format!(
            "a trigger fires at most {MOST_FIRINGS} times (got {}): write a smaller count",
            count.get()
        ),
    ))
}

/// The rules of `after:`, `before:` and `during:` on `event`; gives `nth`. A missing `nth` and
/// an event the moment cannot count are both kept.
fn counted(
    when: &When,
    moment: Moment,
    event: EventKind,
    ctx: &Context,
    found: &mut Findings,
) -> Option<Count> {
    let form = moment.as_str();
    let nth = found.keep(when.nth.ok_or_else(|| {
        broken(
            format!(".{form}"),
            format!("`{form}: ...` needs `nth`: which occurrence fires it (1 = the first)"),
        )
    }));
    found.keep(countable(moment, event, ctx))?;
    nth
}

/// `moment` can count `event` on this broker, sink and proxy setting.
fn countable(moment: Moment, event: EventKind, ctx: &Context) -> Result<(), Broken> {
    let (form, name) = (moment.as_str(), event.as_str());
    let path = format!(".{form}");
    let wrong_broker = wrong_broker(event, ctx.kind);
    let is_request = match event {
        // `before: end_txn` holds the transaction's commit request.
        EventKind::Commit | EventKind::Ack | EventKind::EndTxn => true,
        EventKind::Effect
        | EventKind::Deliver
        | EventKind::Rebalance
        | EventKind::Produced
        | EventKind::Produce => false,
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
                "`before:` holds a protocol request: use `before: commit` or `before: end_txn` (Kafka), or `before: ack` (AMQP)",
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
    if moment == Moment::During && !ctx.http_sink && ctx.postgres_sink {
        return Err(broken(
            ".during",
            "`during: effect` holds the sink's answer, and a postgres sink answers nothing: it sees \
             a row only once its transaction has committed, so no fault can land inside the \
             write. Use `after: effect` (fires when the committed row is seen)",
        ));
    }
    if moment == Moment::During && !ctx.http_sink {
        return Err(broken(
            ".during",
            "`during: effect` holds the sink's answer, which only the `http` sink has: use `after: effect`",
        ));
    }
    Ok(())
}

/// Why `event` cannot be counted on this broker, if it cannot.
fn wrong_broker(event: EventKind, kind: BrokerKind) -> Option<&'static str> {
    match kind {
        BrokerKind::Amqp => match event {
            EventKind::Commit | EventKind::Rebalance | EventKind::EndTxn | EventKind::Produce => {
                Some("an AMQP plan counts `ack`s, not commits, rebalances, transactions or a consumer's Kafka produce")
            }
            EventKind::Effect | EventKind::Ack | EventKind::Deliver | EventKind::Produced => None,
        },
        BrokerKind::Kafka => match event {
            EventKind::Ack => Some("a Kafka plan counts `commit`s; `ack` is AMQP"),
            EventKind::Effect
            | EventKind::Commit
            | EventKind::Deliver
            | EventKind::Rebalance
            | EventKind::Produced
            | EventKind::EndTxn
            | EventKind::Produce => None,
        },
    }
}
