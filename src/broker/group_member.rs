//! The transient group member behind the `rebalance` fault: the harness's own rdkafka consumer
//! joins the consumer-under-test's group (same `group.id`, same topic, same group protocol),
//! holds its share of the partitions for a while without consuming or committing anything,
//! then leaves. The consumer under test goes through two rebalances: one that takes partitions
//! away, one that gives them back.
//!
//! Invariants: the member never commits and never stores an offset (`enable.auto.commit` and
//! `enable.auto.offset.store` off, no commit call), so it cannot move the group's progress; it
//! pauses every partition the moment it is assigned and drops anything fetched regardless; it
//! talks to the broker directly (never through exactly's proxy); every wait has a deadline, and
//! the stop token ends the hold early but still leaves the group cleanly.
//!
//! rdkafka's consumer is blocking: the member runs on a thread of its own, and
//! [`hold_group`] awaits its answer with an overall deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use crate::timeline::{Event, MemberChange, RebalanceKind, Stamped, Timeline};

/// How long the member waits for its first assignment before it gives up and leaves.
const ASSIGN_DEADLINE: Duration = Duration::from_secs(30);
/// How long the member's leave (revocation, LeaveGroup) may take.
const LEAVE_DEADLINE: Duration = Duration::from_secs(10);
/// How long one poll blocks: the granularity of the hold, the stop token and the deadlines.
const POLL: Duration = Duration::from_millis(50);
/// The assignors librdkafka (and so the member) speaks, eager ones first.
const EAGER: [&str; 2] = ["range", "roundrobin"];
/// The cooperative assignor librdkafka speaks.
const COOPERATIVE: &str = "cooperative-sticky";

/// The group's members offer no assignor the harness's member can speak, so it cannot join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the group's members offer the assignors {offered:?}; the harness's member (librdkafka) speaks only range, roundrobin and cooperative-sticky"
)]
pub struct UnsupportedAssignors {
    /// The assignors the consumer under test offered.
    pub offered: Vec<String>,
}

/// Why a hold of the group failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupMemberError {
    /// The group's protocol is one the member cannot speak.
    #[error(transparent)]
    Unsupported(#[from] UnsupportedAssignors),
    /// librdkafka refused the member's settings.
    #[error("bad settings for the group member: {0}")]
    Settings(#[source] KafkaError),
    /// The member could not subscribe to the topic.
    #[error("the group member cannot subscribe to {topic}: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// What librdkafka returned.
        #[source]
        source: KafkaError,
    },
    /// The member's thread could not be started.
    #[error("cannot start the group member's thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The member's thread ended without saying how the hold went.
    #[error("the group member's thread ended without an answer")]
    NoAnswer,
    /// The member did not finish within its overall deadline.
    #[error("the group member did not finish within {}", humantime::format_duration(*limit))]
    Deadline {
        /// The overall deadline.
        limit: Duration,
    },
    /// The member was given no partitions (not even none) before its deadline; it still left.
    #[error(
        "the group member got no assignment within {}",
        humantime::format_duration(ASSIGN_DEADLINE)
    )]
    NoAssignment,
}

/// How the group under test runs, so the member speaks the same protocol: a classic member
/// must offer an assignor every member supports (the broker refuses a join otherwise), and a
/// KIP-848 group is joined through ConsumerGroupHeartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupProtocol {
    /// The classic protocol (JoinGroup / SyncGroup), with the assignors the consumer offered
    /// in its JoinGroup, in its order of preference (empty: librdkafka's default).
    Classic {
        /// Protocol (assignor) names: `range`, `roundrobin`, `cooperative-sticky`...
        assignors: Vec<String>,
    },
    /// KIP-848 (`group.protocol=consumer`): the broker assigns.
    Consumer,
}

impl Default for GroupProtocol {
    /// librdkafka's default: classic, `range,roundrobin`.
    fn default() -> GroupProtocol {
        GroupProtocol::Classic {
            assignors: EAGER.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl GroupProtocol {
    /// The protocol of `group` as the proxy saw it: the latest join of a consumer under test
    /// (a classic JoinGroup with the assignors it offered, or a KIP-848 heartbeat at epoch 0).
    /// `None` when the proxy saw no join (the consumer bypasses the proxy, or has not joined).
    pub fn seen<'a>(
        events: impl IntoIterator<Item = &'a Stamped>,
        group: &str,
    ) -> Option<GroupProtocol> {
        events
            .into_iter()
            .filter(|st| matches!(&st.event, Event::Rebalance { group: g, .. } if g == group))
            .filter_map(|st| GroupProtocol::of_join(&st.event))
            .last()
    }

    /// The protocol a join event shows: a classic JoinGroup with the assignors it offered, or
    /// a KIP-848 heartbeat at epoch 0; `None` for any other event.
    pub fn of_join(event: &Event) -> Option<GroupProtocol> {
        match event {
            Event::Rebalance {
                change: RebalanceKind::Join,
                generation,
                protocols,
                ..
            } => match (protocols, generation) {
                (Some(p), _) => Some(GroupProtocol::Classic {
                    assignors: p.clone(),
                }),
                (None, Some(0)) => Some(GroupProtocol::Consumer),
                _ => None,
            },
            _ => None,
        }
    }

    /// The librdkafka settings that make the member speak this protocol. For classic groups:
    /// the assignors the consumer offered that librdkafka knows, of the same kind (eager or
    /// cooperative, which librdkafka cannot mix) as the first of them, so the group keeps the
    /// assignor it would pick without the member.
    pub fn client_settings(&self) -> Result<Vec<(&'static str, String)>, UnsupportedAssignors> {
        match self {
            GroupProtocol::Consumer => Ok(vec![("group.protocol", "consumer".to_owned())]),
            GroupProtocol::Classic { assignors } => {
                let chosen = if assignors.is_empty() {
                    EAGER.join(",")
                } else {
                    let known: Vec<&str> = assignors
                        .iter()
                        .map(String::as_str)
                        .filter(|a| EAGER.contains(a) || *a == COOPERATIVE)
                        .collect();
                    let Some(first) = known.first() else {
                        return Err(UnsupportedAssignors {
                            offered: assignors.clone(),
                        });
                    };
                    let cooperative = *first == COOPERATIVE;
                    known
                        .iter()
                        .filter(|a| (**a == COOPERATIVE) == cooperative)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(",")
                };
                Ok(vec![
                    ("group.protocol", "classic".to_owned()),
                    ("partition.assignment.strategy", chosen),
                    // A member that vanished (harness killed) leaves the group soon.
                    ("session.timeout.ms", "10000".to_owned()),
                    ("heartbeat.interval.ms", "1000".to_owned()),
                ])
            }
        }
    }
}

/// What one hold did.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldOutcome {
    /// Every partition assigned to the member during the hold (empty when the group had more
    /// members than partitions).
    pub partitions: Vec<i32>,
    /// From the subscription to the first assignment (the first rebalance, as the member saw
    /// it); `None` when it never got one.
    pub assigned_after: Option<Duration>,
    /// How long it held partitions before it began to leave.
    pub held: Duration,
    /// How long the leave took (revocation and LeaveGroup, until the client was closed).
    pub leave: Duration,
    /// False when the client did not report itself closed within the leave deadline.
    pub left_cleanly: bool,
    /// Messages fetched despite the pause and dropped unread.
    pub dropped: u64,
    /// True when the stop token ended the hold early.
    pub stopped: bool,
}

/// Joins `group` on `topic` as a transient member speaking `protocol`, holds its share of the
/// partitions for `hold` (counted from its first non-empty assignment, or from an empty one
/// when nothing more comes), then leaves. Connects straight to `bootstrap` with the plan's
/// `client_config` (SASL, TLS...). Records `group_member` events on `timeline`. `stop` ends the
/// hold early; the member still leaves cleanly.
///
/// Errors: bad settings, no assignment within 30 s (the member still leaves), or a member
/// that did not finish within its deadline.
#[allow(clippy::too_many_arguments)]
pub async fn hold_group(
    bootstrap: &str,
    client_config: &BTreeMap<String, String>,
    group: &str,
    topic: &str,
    protocol: &GroupProtocol,
    hold: Duration,
    timeline: &Timeline,
    stop: &CancellationToken,
) -> Result<HoldOutcome, GroupMemberError> {
    let mut config = ClientConfig::new();
    for (k, v) in client_config {
        config.set(k, v);
    }
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", "exactly-group-member")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("log_level", "3");
    for (k, v) in protocol.client_settings()? {
        config.set(k, v);
    }
    let member = Member {
        timeline: timeline.clone(),
        group: group.to_owned(),
        state: Mutex::new(State::default()),
    };
    let topic = topic.to_owned();
    let stop = stop.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("exactly-group-member".into())
        .spawn(move || {
            let _ = tx.send(run(config, member, &topic, hold, &stop));
        })
        .map_err(GroupMemberError::Thread)?;
    let limit = ASSIGN_DEADLINE + hold * 2 + LEAVE_DEADLINE + Duration::from_secs(5);
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(GroupMemberError::NoAnswer),
        Err(_) => Err(GroupMemberError::Deadline { limit }),
    }
}

/// The member's client context: records what the group does to it, and pauses what it is
/// given.
struct Member {
    timeline: Timeline,
    group: String,
    state: Mutex<State>,
}

/// What the member knows about its assignment (written from rebalance callbacks, which run on
/// the member's own thread inside `poll`).
#[derive(Default)]
struct State {
    /// Every partition ever assigned.
    ever: BTreeSet<i32>,
    /// When the first assignment (even empty) arrived.
    first_assigned: Option<Instant>,
    /// When the first non-empty assignment arrived.
    first_partitions: Option<Instant>,
    /// The last error recorded, so a repeated client error is recorded once.
    last_error: Option<String>,
}

impl Member {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written in a way that
        // matters (plain fields); keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, change: MemberChange, partitions: Option<Vec<i32>>, error: Option<String>) {
        self.timeline.record(Event::GroupMember {
            group: self.group.clone(),
            change,
            partitions,
            error,
        });
    }

    fn error(&self, message: String) {
        let mut state = self.state();
        if state.last_error.as_deref() == Some(message.as_str()) {
            return;
        }
        state.last_error = Some(message.clone());
        drop(state);
        self.record(MemberChange::Error, None, Some(message));
    }
}

impl ClientContext for Member {
    fn log(&self, _level: RDKafkaLogLevel, _fac: &str, _message: &str) {
        // Errors come through `error`; librdkafka's log lines would only add noise.
    }

    fn error(&self, error: KafkaError, reason: &str) {
        Member::error(self, format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Member {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.record(MemberChange::Revoked, Some(partitions_of(tpl)), None);
            }
            Rebalance::Error(e) => Member::error(self, format!("rebalance: {e}")),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        // Paused before the first fetch can hand anything over: the member holds, never reads.
        if let Err(e) = consumer.pause(tpl) {
            Member::error(self, format!("cannot pause its partitions: {e}"));
        }
        let partitions = partitions_of(tpl);
        {
            let mut state = self.state();
            let now = Instant::now();
            state.first_assigned.get_or_insert(now);
            if !partitions.is_empty() {
                state.first_partitions.get_or_insert(now);
            }
            state.ever.extend(partitions.iter().copied());
        }
        self.record(MemberChange::Assigned, Some(partitions), None);
    }
}

/// The partition numbers in `tpl`, sorted.
fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    let mut p: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    p.sort_unstable();
    p
}

/// The member's life, on its own thread: join, hold, leave.
fn run(
    config: ClientConfig,
    member: Member,
    topic: &str,
    hold: Duration,
    stop: &CancellationToken,
) -> Result<HoldOutcome, GroupMemberError> {
    let consumer: BaseConsumer<Member> = config
        .create_with_context(member)
        .map_err(GroupMemberError::Settings)?;
    let started = Instant::now();
    consumer
        .subscribe(&[topic])
        .map_err(|source| GroupMemberError::Subscribe {
            topic: topic.to_owned(),
            source,
        })?;
    consumer.context().record(MemberChange::Joined, None, None);

    let mut dropped = 0u64;
    let mut failure = None;
    let mut stopped = false;
    let hold_from = loop {
        if stop.is_cancelled() {
            stopped = true;
            break consumer.context().state().first_assigned;
        }
        let (first, first_partitions) = {
            let s = consumer.context().state();
            (s.first_assigned, s.first_partitions)
        };
        match first_partitions.or(first) {
            Some(t) if t.elapsed() >= hold => break Some(t),
            Some(_) => {}
            None if started.elapsed() >= ASSIGN_DEADLINE => {
                failure = Some(GroupMemberError::NoAssignment);
                break None;
            }
            None => {}
        }
        match consumer.poll(POLL) {
            Some(Ok(msg)) => {
                // Fetched before the pause took effect: dropped unread, and everything it
                // holds paused again.
                dropped += 1;
                drop(msg);
                if let Ok(tpl) = consumer.assignment() {
                    let _ = consumer.pause(&tpl);
                }
            }
            Some(Err(e)) => consumer.context().error(format!("poll: {e}")),
            None => {}
        }
    };
    let held = hold_from.map(|t| t.elapsed()).unwrap_or_default();

    // Leave: close the consumer queue, serving the revocation through the callbacks, until
    // librdkafka says the member has left.
    let leaving = Instant::now();
    let closed = match consumer.close_queue() {
        Ok(()) => {
            while !consumer.closed() && leaving.elapsed() < LEAVE_DEADLINE {
                if let Some(Ok(_)) = consumer.poll(POLL) {
                    dropped += 1;
                }
            }
            consumer.closed()
        }
        Err(e) => {
            consumer
                .context()
                .error(format!("cannot begin to leave the group: {e}"));
            false
        }
    };
    let leave = leaving.elapsed();
    let (partitions, first) = {
        let s = consumer.context().state();
        (s.ever.iter().copied().collect(), s.first_assigned)
    };
    consumer.context().record(
        MemberChange::Left,
        None,
        (!closed).then(|| {
            format!(
                "not closed within {}: the broker drops the member when its session expires",
                humantime::format_duration(LEAVE_DEADLINE)
            )
        }),
    );
    drop(consumer);
    if let Some(f) = failure {
        return Err(f);
    }
    Ok(HoldOutcome {
        partitions,
        assigned_after: first.map(|t| t.duration_since(started)),
        held,
        leave,
        left_cleanly: closed,
        dropped,
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classic(a: &[&str]) -> GroupProtocol {
        GroupProtocol::Classic {
            assignors: a.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn strategy(p: &GroupProtocol) -> Option<String> {
        p.client_settings()
            .unwrap()
            .into_iter()
            .find(|(k, _)| *k == "partition.assignment.strategy")
            .map(|(_, v)| v)
    }

    #[test]
    fn the_member_offers_the_consumers_assignors_of_the_kind_it_prefers() {
        assert_eq!(strategy(&classic(&[])).as_deref(), Some("range,roundrobin"));
        assert_eq!(
            strategy(&classic(&["roundrobin", "range"])).as_deref(),
            Some("roundrobin,range")
        );
        // librdkafka cannot mix eager and cooperative: keep the kind the consumer prefers.
        assert_eq!(
            strategy(&classic(&["range", "cooperative-sticky"])).as_deref(),
            Some("range")
        );
        assert_eq!(
            strategy(&classic(&["cooperative-sticky", "range"])).as_deref(),
            Some("cooperative-sticky")
        );
        // Unknown assignors (a Java client's `sticky`) are skipped when another is shared.
        assert_eq!(
            strategy(&classic(&["sticky", "range"])).as_deref(),
            Some("range")
        );
        assert!(classic(&["sticky"]).client_settings().is_err());
        assert_eq!(strategy(&GroupProtocol::Consumer), None);
    }

    #[test]
    fn member_events_read_back_as_written() {
        let event = Event::GroupMember {
            group: "g".into(),
            change: MemberChange::Assigned,
            partitions: Some(vec![0, 2]),
            error: None,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "group_member", "group": "g", "change": "assigned", "partitions": [0, 2]})
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }

    #[test]
    fn the_protocol_is_read_from_the_latest_join_the_proxy_saw() {
        let join = |seq, generation, protocols: Option<&[&str]>| Stamped {
            seq,
            t_us: seq,
            event: Event::Rebalance {
                instance: 0,
                incarnation: 1,
                group: "g".into(),
                change: RebalanceKind::Join,
                member: String::new(),
                generation,
                assignment: None,
                error: None,
                protocols: protocols.map(|p| p.iter().map(|s| s.to_string()).collect()),
                session_timeout_ms: None,
            },
        };
        let events = [
            join(0, None, Some(&["range", "roundrobin"])),
            join(1, None, Some(&["cooperative-sticky"])),
        ];
        assert_eq!(
            GroupProtocol::seen(&events, "g"),
            Some(classic(&["cooperative-sticky"]))
        );
        assert_eq!(GroupProtocol::seen(&events, "other"), None);
        let kip848 = [join(0, Some(0), None)];
        assert_eq!(
            GroupProtocol::seen(&kip848, "g"),
            Some(GroupProtocol::Consumer)
        );
    }
}
