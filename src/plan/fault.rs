//! A plan's fault as loaded: one [`FaultAction`] (what it does) and one [`Trigger`] (when),
//! built from the written [`super::FaultSpec`] while its rules are checked (`fault_rules.rs`).
//!
//! Invariant: a `Fault` is always whole and valid; nothing downstream re-reads the written form.
//! Everything that depends on the kind of fault (the rules, the description below, the hold
//! points, the instance capacity, the nemesis's action) is an exhaustive `match` on these enums,
//! so a new kind of fault does not compile until every one of those places handles it.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{Count, EventKind, Target};

/// Default wait between SIGTERM and SIGKILL (`terminate`, `scale: -1`) when `grace` is absent.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// One fault of a loaded plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What the fault does.
    pub action: FaultAction,
    /// When it fires.
    pub when: Trigger,
}

/// What a fault does, with every parameter resolved (defaults applied at load).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultAction {
    /// SIGKILL the target's process groups.
    Kill {
        /// Who is killed.
        target: Target,
    },
    /// SIGTERM, then SIGKILL after `grace`.
    Terminate {
        /// Who is stopped.
        target: Target,
        /// Wait between SIGTERM and SIGKILL.
        grace: Duration,
    },
    /// SIGSTOP, then SIGCONT after `length`.
    Pause {
        /// Who is paused.
        target: Target,
        /// How long.
        length: Duration,
    },
    /// The proxy forwards nothing on the target's connections for `length`.
    Partition {
        /// Whose connections.
        target: Target,
        /// How long.
        length: Duration,
    },
    /// The proxy delays the target's frames by `delay`, for `length`.
    Latency {
        /// Whose connections (`target:`, default every instance).
        target: Target,
        /// The delay per frame.
        delay: Duration,
        /// How long.
        length: Duration,
    },
    /// The proxy resets the target's connections.
    Sever {
        /// Whose connections.
        target: Target,
    },
    /// A transient member joins the consumer's group, holds its share for `hold`, then leaves.
    Rebalance {
        /// How long the member stays.
        hold: Duration,
    },
    /// One more instance, or one fewer.
    Scale(ScaleStep),
    /// The proxy answers the target's next request of one API with what the plan chose instead
    /// of the broker's answer (a Kafka protocol fault: `commit_error`, `fetch_error`...).
    Reply {
        /// Whose connections.
        target: Target,
        /// What is answered, to which request.
        reply: ProtocolReply,
    },
    /// The AMQP proxy sends the consumer a protocol answer RabbitMQ could have sent.
    Amqp {
        /// Whose connections (`target:`, default every instance; the first one that can take
        /// it).
        target: Target,
        /// What is sent.
        fault: AmqpFault,
        /// How long it lasts (`blocked`: until `connection.unblocked`); None for the others.
        length: Option<Duration>,
    },
}

/// A Kafka protocol fault: which request of the target is answered, and with what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolReply {
    /// The next OffsetCommit is answered with `error` on every partition.
    CommitError {
        /// The error code the consumer is told.
        error: KafkaError,
        /// Whether the broker stores the commit.
        form: CommitErrorForm,
    },
    /// The next Fetch response for the topic under test carries `error` on its partitions,
    /// with no records.
    FetchError {
        /// The error code the consumer is told.
        error: KafkaError,
    },
    /// The next Fetch response for the topic under test carries its first partition's
    /// records twice (the batch repeated right after itself): a redelivery the client must
    /// tolerate.
    FetchTwice,
    /// The next group heartbeat (classic Heartbeat or KIP-848 ConsumerGroupHeartbeat) is
    /// answered with `error` (UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH: the member is fenced).
    HeartbeatError {
        /// The error code the consumer is told.
        error: KafkaError,
    },
}

/// Whether the broker stores a commit the consumer is told failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitErrorForm {
    /// The proxy never forwards the offsets: the broker never stores them.
    Dropped,
    /// The proxy forwards the commit, the broker stores it, and the consumer is told it
    /// failed.
    Ambiguous,
}

/// The Kafka error codes a protocol fault may answer with (a closed set: the ones a consumer
/// meets on the paths the proxy can fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaError {
    /// 1: the fetch offset is outside the log.
    OffsetOutOfRange,
    /// 3: the topic or partition is unknown to this broker.
    UnknownTopicOrPartition,
    /// 6: this broker does not lead the partition.
    NotLeaderOrFollower,
    /// 7: the request timed out on the broker.
    RequestTimedOut,
    /// 15: the group coordinator is not available.
    CoordinatorNotAvailable,
    /// 16: this broker is not the group's coordinator.
    NotCoordinator,
    /// 22: the generation is stale.
    IllegalGeneration,
    /// 25: the member is unknown to the coordinator (fenced).
    UnknownMemberId,
    /// 27: the group is rebalancing.
    RebalanceInProgress,
    /// 110: the member epoch is fenced (KIP-848).
    FencedMemberEpoch,
}

impl KafkaError {
    /// Every code, in code order.
    pub const ALL: [KafkaError; 10] = [
        KafkaError::OffsetOutOfRange,
        KafkaError::UnknownTopicOrPartition,
        KafkaError::NotLeaderOrFollower,
        KafkaError::RequestTimedOut,
        KafkaError::CoordinatorNotAvailable,
        KafkaError::NotCoordinator,
        KafkaError::IllegalGeneration,
        KafkaError::UnknownMemberId,
        KafkaError::RebalanceInProgress,
        KafkaError::FencedMemberEpoch,
    ];

    /// The wire code.
    pub fn code(self) -> i16 {
        match self {
            KafkaError::OffsetOutOfRange => 1,
            KafkaError::UnknownTopicOrPartition => 3,
            KafkaError::NotLeaderOrFollower => 6,
            KafkaError::RequestTimedOut => 7,
            KafkaError::CoordinatorNotAvailable => 15,
            KafkaError::NotCoordinator => 16,
            KafkaError::IllegalGeneration => 22,
            KafkaError::UnknownMemberId => 25,
            KafkaError::RebalanceInProgress => 27,
            KafkaError::FencedMemberEpoch => 110,
        }
    }

    /// Kafka's name for it (`REBALANCE_IN_PROGRESS`), as the plan writes it.
    pub fn name(self) -> &'static str {
        match self {
            KafkaError::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            KafkaError::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            KafkaError::NotLeaderOrFollower => "NOT_LEADER_OR_FOLLOWER",
            KafkaError::RequestTimedOut => "REQUEST_TIMED_OUT",
            KafkaError::CoordinatorNotAvailable => "COORDINATOR_NOT_AVAILABLE",
            KafkaError::NotCoordinator => "NOT_COORDINATOR",
            KafkaError::IllegalGeneration => "ILLEGAL_GENERATION",
            KafkaError::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            KafkaError::RebalanceInProgress => "REBALANCE_IN_PROGRESS",
            KafkaError::FencedMemberEpoch => "FENCED_MEMBER_EPOCH",
        }
    }

    /// The code named `name` (Kafka's spelling), if it is one a fault may answer with.
    pub fn from_name(name: &str) -> Option<KafkaError> {
        KafkaError::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl CommitErrorForm {
    /// The plan's word: `dropped` or `ambiguous`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitErrorForm::Dropped => "dropped",
            CommitErrorForm::Ambiguous => "ambiguous",
        }
    }
}

impl ProtocolReply {
    /// The plan's word for the fault (`commit_error`, `fetch_error`).
    pub fn name(self) -> &'static str {
        match self {
            ProtocolReply::CommitError { .. } => "commit_error",
            ProtocolReply::FetchError { .. } => "fetch_error",
            ProtocolReply::FetchTwice => "fetch_twice",
            ProtocolReply::HeartbeatError { .. } => "heartbeat_error",
        }
    }

    /// What the consumer is told, in words: `REBALANCE_IN_PROGRESS (dropped)`.
    pub fn describe(self) -> String {
        match self {
            ProtocolReply::CommitError { error, form } => {
                format!("{} ({})", error.name(), form.as_str())
            }
            ProtocolReply::FetchError { error } | ProtocolReply::HeartbeatError { error } => {
                error.name().to_string()
            }
            ProtocolReply::FetchTwice => "its records twice".to_string(),
        }
    }
}

/// A protocol fault of the AMQP proxy (`amqp:` in a plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AmqpFault {
    /// The last delivery the proxy forwarded is sent again with `redelivered=true` under a
    /// delivery tag of the proxy's own (the broker's tags after it are shifted; an ack of the
    /// proxy's tag is absorbed, never reaching RabbitMQ).
    Redeliver,
    /// A server-sent `basic.cancel` (nowait) of the consumer, as RabbitMQ sends when its
    /// queue is deleted or fails over; the proxy cancels it at RabbitMQ first, so nothing more
    /// is delivered to it. The consumer must subscribe again or exit loudly.
    Cancel,
    /// RabbitMQ's answer to a second ack of a delivery tag, after the consumer's last ack (which
    /// was forwarded: the broker settled it): a server-sent `channel.close` 406
    /// PRECONDITION_FAILED ("unknown delivery tag N") on that ack's channel. The proxy closes
    /// the same channel at RabbitMQ first, so RabbitMQ requeues every delivery the channel held
    /// unacknowledged, as in the real incident. The consumer must open a channel and subscribe
    /// again, or exit loudly.
    DoubleAck,
    /// `connection.blocked` ("low on memory", as RabbitMQ says under a memory alarm) to a
    /// consumer whose client announced the `connection.blocked` capability, for the fault's
    /// `for:`; the connection's publishes are held meanwhile (RabbitMQ stops reading a
    /// blocked connection that publishes), then `connection.unblocked`.
    Blocked,
}

impl AmqpFault {
    /// The plan's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            AmqpFault::Redeliver => "redeliver",
            AmqpFault::Cancel => "cancel",
            AmqpFault::DoubleAck => "double-ack",
            AmqpFault::Blocked => "blocked",
        }
    }
}

/// The step of a `scale` fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleStep {
    /// `+1`: start one more instance.
    Up,
    /// `-1`: retire the highest-numbered live instance: SIGTERM, SIGKILL after `grace`.
    Down {
        /// Wait between SIGTERM and SIGKILL.
        grace: Duration,
    },
}

/// When a fault fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// Once, this long after the consumer first started.
    At(Duration),
    /// On the `nth` event of a kind, after it, before it (held) or during it (held).
    Count {
        /// After, before or during the event.
        moment: Moment,
        /// Which events count.
        event: EventKind,
        /// Which occurrence fires (1 = the first).
        nth: Count,
    },
    /// `times` times, one `period` apart, the first after one period.
    Every {
        /// The period.
        period: Duration,
        /// How many times.
        times: Count,
    },
    /// `count` times at seeded random moments within `within` of the first start.
    Random {
        /// How many times.
        count: Count,
        /// The window.
        within: Duration,
    },
}

/// Where a counting trigger stands relative to its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// `after:` the event happened (for commits: the broker accepted it).
    After,
    /// `before:` the request is held on its way to the broker.
    Before,
    /// `during:` the sink holds its answer.
    During,
}

impl FaultAction {
    /// The plan's word for the action (`kill`, `terminate`... `scale`), as recorded in events.
    pub fn name(&self) -> &'static str {
        match self {
            FaultAction::Kill { .. } => "kill",
            FaultAction::Terminate { .. } => "terminate",
            FaultAction::Pause { .. } => "pause",
            FaultAction::Partition { .. } => "partition",
            FaultAction::Latency { .. } => "latency",
            FaultAction::Sever { .. } => "sever",
            FaultAction::Rebalance { .. } => "rebalance",
            FaultAction::Scale(_) => "scale",
            FaultAction::Reply { reply, .. } => reply.name(),
            FaultAction::Amqp { .. } => "amqp",
        }
    }

    /// Whom the action hits; a rebalance or a scale acts on the consumer as a whole.
    pub fn target(&self) -> Target {
        match *self {
            FaultAction::Kill { target }
            | FaultAction::Terminate { target, .. }
            | FaultAction::Pause { target, .. }
            | FaultAction::Partition { target, .. }
            | FaultAction::Latency { target, .. }
            | FaultAction::Sever { target }
            | FaultAction::Reply { target, .. } => target,
            FaultAction::Amqp { target, .. } => target,
            FaultAction::Rebalance { .. } | FaultAction::Scale(_) => Target::AllInstances,
        }
    }

    /// How long a timed action lasts.
    pub fn length(&self) -> Option<Duration> {
        match *self {
            FaultAction::Pause { length, .. }
            | FaultAction::Partition { length, .. }
            | FaultAction::Latency { length, .. } => Some(length),
            FaultAction::Rebalance { hold } => Some(hold),
            FaultAction::Amqp { length, .. } => length,
            FaultAction::Kill { .. }
            | FaultAction::Terminate { .. }
            | FaultAction::Sever { .. }
            | FaultAction::Scale(_)
            | FaultAction::Reply { .. } => None,
        }
    }

    /// True for actions that end the consumer process (a held event then never goes on).
    pub fn stops_consumer(&self) -> bool {
        match self {
            FaultAction::Kill { .. } | FaultAction::Terminate { .. } => true,
            FaultAction::Pause { .. }
            | FaultAction::Partition { .. }
            | FaultAction::Latency { .. }
            | FaultAction::Sever { .. }
            | FaultAction::Amqp { .. }
            | FaultAction::Rebalance { .. }
            | FaultAction::Scale(_)
            | FaultAction::Reply { .. } => false,
        }
    }

    /// True for actions the proxy applies to the consumer's connections (partition, latency,
    /// sever, protocol replies): a connection that bypasses the proxy escapes them.
    pub fn on_proxied_connections(&self) -> bool {
        match self {
            FaultAction::Partition { .. }
            | FaultAction::Latency { .. }
            | FaultAction::Sever { .. }
            | FaultAction::Reply { .. }
            | FaultAction::Amqp { .. } => true,
            FaultAction::Kill { .. }
            | FaultAction::Terminate { .. }
            | FaultAction::Pause { .. }
            | FaultAction::Rebalance { .. }
            | FaultAction::Scale(_) => false,
        }
    }

    /// Instances one firing adds to the run (`scale: +1`), for sizing the roster up front.
    pub fn instances_added(&self) -> u32 {
        match self {
            FaultAction::Scale(ScaleStep::Up) => 1,
            FaultAction::Kill { .. }
            | FaultAction::Terminate { .. }
            | FaultAction::Pause { .. }
            | FaultAction::Partition { .. }
            | FaultAction::Latency { .. }
            | FaultAction::Sever { .. }
            | FaultAction::Rebalance { .. }
            | FaultAction::Scale(ScaleStep::Down { .. })
            | FaultAction::Reply { .. }
            | FaultAction::Amqp { .. } => 0,
        }
    }
}

impl Fault {
    /// True when the fault depends on the proxy seeing the consumer's connections: its action
    /// is applied to them (partition, latency, sever) or its trigger counts what only the
    /// proxy sees (commits, acks, deliveries, rebalances). A consumer connection that bypasses
    /// the proxy escapes such a fault.
    pub fn through_proxy(&self) -> bool {
        let counted_by_proxy = match self.when {
            Trigger::Count { event, .. } => event.seen_by_proxy(),
            Trigger::At(_) | Trigger::Every { .. } | Trigger::Random { .. } => false,
        };
        counted_by_proxy || self.action.on_proxied_connections()
    }
}

impl Trigger {
    /// The most times the trigger fires in a run.
    pub fn firings(&self) -> u64 {
        match self {
            Trigger::At(_) | Trigger::Count { .. } => 1,
            Trigger::Every { times, .. } => times.get(),
            Trigger::Random { count, .. } => count.get(),
        }
    }
}

impl Moment {
    /// The plan's key: `after`, `before` or `during`.
    pub fn as_str(self) -> &'static str {
        match self {
            Moment::After => "after",
            Moment::Before => "before",
            Moment::During => "during",
        }
    }
}

/// The fault as a user would write it, for reports: `kill: consumer when after: effect, nth: 3`.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.action.name();
        match self.action {
            FaultAction::Kill { target }
            | FaultAction::Terminate { target, .. }
            | FaultAction::Pause { target, .. }
            | FaultAction::Partition { target, .. }
            | FaultAction::Latency { target, .. }
            | FaultAction::Sever { target } => write!(f, "{name}: {target}")?,
            FaultAction::Rebalance { hold } => write!(f, "{name}: group for {}", duration(hold))?,
            FaultAction::Scale(ScaleStep::Up) => write!(f, "{name}: +1")?,
            FaultAction::Scale(ScaleStep::Down { .. }) => write!(f, "{name}: -1")?,
            FaultAction::Reply { target, reply } => {
                write!(f, "{name}: {} on {target}", reply.describe())?
            }
            FaultAction::Amqp {
                target,
                fault,
                length,
            } => {
                write!(f, "{name}: {} on {target}", fault.as_str())?;
                if let Some(length) = length {
                    write!(f, " for {}", duration(length))?;
                }
            }
        }
        write!(f, " when {}", self.when)
    }
}

/// The trigger as a user would write it: `at: 2s`, `after: effect, nth: 3`...
impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Trigger::At(at) => write!(f, "at: {}", duration(at)),
            Trigger::Count { moment, event, nth } => {
                write!(
                    f,
                    "{}: {}, nth: {}",
                    moment.as_str(),
                    event.as_str(),
                    nth.get()
                )
            }
            Trigger::Every { period, times } => {
                write!(f, "every: {}, times: {}", duration(period), times.get())
            }
            Trigger::Random { count, within } => {
                write!(f, "random: {}, within: {}", count.get(), duration(within))
            }
        }
    }
}

fn duration(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(action: FaultAction, when: Trigger) -> String {
        Fault { action, when }.to_string()
    }

    #[test]
    fn each_fault_is_described_as_the_plan_writes_it() {
        let s = Duration::from_secs;
        let nth = |event, moment| Trigger::Count {
            moment,
            event,
            nth: Count::new(3),
        };
        let cases = [
            (
                FaultAction::Kill {
                    target: Target::AllInstances,
                },
                nth(EventKind::Effect, Moment::After),
                "kill: consumer when after: effect, nth: 3",
            ),
            (
                FaultAction::Terminate {
                    target: Target::Instance(1),
                    grace: s(3),
                },
                Trigger::At(Duration::from_millis(1500)),
                "terminate: consumer[1] when at: 1s 500ms",
            ),
            (
                FaultAction::Pause {
                    target: Target::AllInstances,
                    length: s(1),
                },
                nth(EventKind::Commit, Moment::Before),
                "pause: consumer when before: commit, nth: 3",
            ),
            (
                FaultAction::Partition {
                    target: Target::Instance(0),
                    length: s(2),
                },
                nth(EventKind::Rebalance, Moment::After),
                "partition: consumer[0] when after: rebalance, nth: 3",
            ),
            (
                FaultAction::Latency {
                    target: Target::AllInstances,
                    delay: Duration::from_millis(200),
                    length: s(2),
                },
                nth(EventKind::Effect, Moment::During),
                "latency: consumer when during: effect, nth: 3",
            ),
            (
                FaultAction::Sever {
                    target: Target::AllInstances,
                },
                nth(EventKind::Ack, Moment::Before),
                "sever: consumer when before: ack, nth: 3",
            ),
            (
                FaultAction::Rebalance { hold: s(3) },
                Trigger::Every {
                    period: s(2),
                    times: Count::new(3),
                },
                "rebalance: group for 3s when every: 2s, times: 3",
            ),
            (
                FaultAction::Scale(ScaleStep::Up),
                Trigger::Random {
                    count: Count::new(2),
                    within: s(10),
                },
                "scale: +1 when random: 2, within: 10s",
            ),
            (
                FaultAction::Scale(ScaleStep::Down { grace: s(1) }),
                nth(EventKind::Produced, Moment::After),
                "scale: -1 when after: produced, nth: 3",
            ),
        ];
        for (action, when, expect) in cases {
            assert_eq!(fault(action, when), expect);
        }
    }

    #[test]
    fn only_a_scale_up_adds_instances_and_a_schedule_fires_its_count() {
        assert_eq!(FaultAction::Scale(ScaleStep::Up).instances_added(), 1);
        let down = FaultAction::Scale(ScaleStep::Down {
            grace: DEFAULT_GRACE,
        });
        assert_eq!(down.instances_added(), 0);
        let every = Trigger::Every {
            period: Duration::from_secs(1),
            times: Count::new(4),
        };
        assert_eq!(every.firings(), 4);
        assert_eq!(Trigger::At(Duration::ZERO).firings(), 1);
    }

    #[test]
    fn network_actions_and_proxy_counted_triggers_go_through_the_proxy() {
        let s = Duration::from_secs;
        let nth = |event| Trigger::Count {
            moment: Moment::After,
            event,
            nth: Count::new(3),
        };
        let kill = FaultAction::Kill {
            target: Target::AllInstances,
        };
        let partition = FaultAction::Partition {
            target: Target::AllInstances,
            length: s(1),
        };
        let through = |action, when| Fault { action, when }.through_proxy();
        assert!(through(partition, Trigger::At(s(1))));
        assert!(through(kill, nth(EventKind::Commit)));
        assert!(through(kill, nth(EventKind::Deliver)));
        assert!(!through(kill, nth(EventKind::Effect)));
        assert!(!through(kill, Trigger::At(s(1))));
    }
}
