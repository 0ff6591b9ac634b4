//! The `rebalance: group` lever: transient members of the harness's own that join the group
//! under test straight at the broker (never through the proxy's fault path), hold their share
//! of partitions, and leave. Each hold runs as a task; the run waits for them all (bounded)
//! before it stops the consumers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::group_member::{self, GroupProtocol};
use crate::nemesis::action::GroupControl;
use crate::timeline::{Event, Timeline};

/// Longest wait for transient members to leave at the end of a run.
const MEMBER_LEAVE_DEADLINE: Duration = Duration::from_secs(30);

/// The transient members of one run's consumer group.
pub(super) struct TransientMembers {
    /// Kafka bootstrap servers (the broker itself, not the proxy).
    pub(super) bootstrap: String,
    /// The plan's client settings (SASL, TLS...).
    pub(super) config: BTreeMap<String, String>,
    /// The group under test.
    pub(super) group: String,
    /// Its topic.
    pub(super) topic: String,
    /// Where the members record what the group does to them.
    pub(super) timeline: Timeline,
    /// Ends every hold early (the member still leaves cleanly) when the run stops.
    pub(super) stop: CancellationToken,
    /// The holds started so far.
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl GroupControl for TransientMembers {
    fn rebalance(&self, hold: Duration, protocol: Option<&GroupProtocol>) -> Option<String> {
        let protocol = protocol.cloned().unwrap_or_default();
        // A member that cannot speak the group's protocol never joins: not applied (design §12).
        if let Err(e) = protocol.client_settings() {
            self.timeline.record(Event::Warning {
                message: format!("rebalance: group not applied: {e}"),
            });
            return None;
        }
        let described = match &protocol {
            GroupProtocol::Classic { assignors } => format!("classic, {}", assignors.join(",")),
            GroupProtocol::Consumer => "KIP-848 consumer protocol".into(),
        };
        let (bootstrap, config, group, topic, timeline, stop) = (
            self.bootstrap.clone(),
            self.config.clone(),
            self.group.clone(),
            self.topic.clone(),
            self.timeline.clone(),
            self.stop.clone(),
        );
        let task = tokio::spawn(async move {
            let held = group_member::hold_group(
                &bootstrap, &config, &group, &topic, &protocol, hold, &timeline, &stop,
            )
            .await;
            if let Err(e) = held {
                timeline.record(Event::Warning {
                    message: format!("the transient group member failed: {e}"),
                });
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        Some(format!(
            "transient member joins group {} for {} ({described})",
            self.group,
            humantime::format_duration(hold)
        ))
    }
}

impl TransientMembers {
    /// Waits (with a deadline) for every member to have left the group.
    pub(super) async fn join(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::time::timeout(MEMBER_LEAVE_DEADLINE, async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
    }
}
