//! Group membership as `rebalance` events: joins, syncs, leaves, assignments and group errors,
//! from the classic protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) and KIP-848
//! (ConsumerGroupHeartbeat).
//!
//! Invariant: group frames are only observed, never changed or held; a response the proxy
//! cannot decode is forwarded as it came, and only the timeline misses its event (a warning
//! says so).

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    ConsumerProtocolAssignment, GroupId, HeartbeatResponse, JoinGroupRequest, LeaveGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Message, StrBytes};

use super::conn::{Conn, Ctx};
use super::lock;
use super::wire::{decode_response, error_name};
use crate::timeline::{Event, RebalanceKind};

/// Who sent a group request: what its response's events name.
#[derive(Debug)]
pub(super) struct Membership {
    group: String,
    member: String,
    /// The classic generation, or the KIP-848 member epoch, when the request carried one.
    generation: Option<i32>,
}

impl Membership {
    /// The member `member` of `group`, in `generation`.
    pub(super) fn new(group: &GroupId, member: &StrBytes, generation: Option<i32>) -> Membership {
        Membership {
            group: group.0.to_string(),
            member: member.to_string(),
            generation,
        }
    }
}

impl Conn {
    /// Records a `rebalance` event of this connection's instance.
    pub(super) fn rebalance(
        &self,
        group: &str,
        change: RebalanceKind,
        member: &str,
        generation: Option<i32>,
        assignment: Option<Vec<i32>>,
        error: Option<String>,
    ) {
        self.record(Event::Rebalance {
            instance: self.instance,
            incarnation: self.incarnation,
            group: group.to_string(),
            change,
            member: member.to_string(),
            generation,
            assignment,
            error,
            protocols: None,
            session_timeout_ms: None,
        });
    }

    /// Records a join, with the assignors it offers (so the harness's own group member can
    /// speak the same).
    pub(super) fn join_group_request(&self, r: &JoinGroupRequest) -> Membership {
        let who = Membership::new(&r.group_id, &r.member_id, None);
        self.record(Event::Rebalance {
            instance: self.instance,
            incarnation: self.incarnation,
            group: who.group.clone(),
            change: RebalanceKind::Join,
            member: who.member.clone(),
            generation: None,
            assignment: None,
            error: None,
            protocols: Some(r.protocols.iter().map(|p| p.name.to_string()).collect()),
            session_timeout_ms: Some(r.session_timeout_ms),
        });
        who
    }

    /// Records a leave for every member the request names (or its own member id).
    pub(super) fn leave_group_request(&self, r: &LeaveGroupRequest) {
        let group = r.group_id.0.to_string();
        let mut members: Vec<String> = r.members.iter().map(|m| m.member_id.to_string()).collect();
        if members.is_empty() {
            members.push(r.member_id.to_string());
        }
        for m in members {
            self.rebalance(&group, RebalanceKind::Leave, &m, None, None, None);
        }
    }

    /// Records a KIP-848 join (member epoch 0) or leave (a negative epoch).
    pub(super) fn consumer_group_heartbeat_request(
        &self,
        r: &ConsumerGroupHeartbeatRequest,
    ) -> Membership {
        let who = Membership::new(&r.group_id, &r.member_id, Some(r.member_epoch));
        let (group, member) = (&who.group, &who.member);
        match r.member_epoch {
            0 => self.rebalance(group, RebalanceKind::Join, member, Some(0), None, None),
            e if e < 0 => self.rebalance(group, RebalanceKind::Leave, member, Some(e), None, None),
            _ => {}
        }
        who
    }

    /// Records a classic sync: its error, else the sync and the partitions it assigns.
    pub(super) fn sync_group_response(&self, frame: &Bytes, version: i16, ctx: &Ctx) {
        let Ctx::Group(who) = ctx else {
            return;
        };
        let (group, member, generation) = (&who.group, &who.member, who.generation);
        match decode_response::<SyncGroupResponse>(frame, ApiKey::SyncGroup, version) {
            Ok((_, b)) if b.error_code != 0 => self.rebalance(
                group,
                RebalanceKind::Error,
                member,
                generation,
                None,
                Some(error_name(b.error_code)),
            ),
            Ok((_, b)) => {
                self.rebalance(group, RebalanceKind::Sync, member, generation, None, None);
                match assigned_partitions(&b.assignment, &self.shared.topic) {
                    Ok(parts) => self.rebalance(
                        group,
                        RebalanceKind::Assign,
                        member,
                        generation,
                        Some(parts),
                        None,
                    ),
                    Err(e) => self.shared.warn(format!(
                        "kafka proxy: cannot read consumer[{}]'s assignment, the timeline misses it: {e}",
                        self.instance
                    )),
                }
            }
            // Forwarded untouched: only the timeline misses this rebalance event.
            Err(e) => self.shared.warn(format!(
                "kafka proxy: cannot decode a SyncGroup response, the timeline misses this assignment: {e}"
            )),
        }
    }

    /// Records a classic heartbeat's error (a rebalance in progress, a fenced member...).
    pub(super) fn heartbeat_response(&self, frame: &Bytes, version: i16, ctx: &Ctx) {
        let Ctx::Group(who) = ctx else {
            return;
        };
        match decode_response::<HeartbeatResponse>(frame, ApiKey::Heartbeat, version) {
            Ok((_, b)) if b.error_code != 0 => self.rebalance(
                &who.group,
                RebalanceKind::Error,
                &who.member,
                who.generation,
                None,
                Some(error_name(b.error_code)),
            ),
            Ok(_) => {}
            Err(e) => self.shared.warn(format!(
                "kafka proxy: cannot decode a Heartbeat response, the timeline misses it: {e}"
            )),
        }
    }

    /// Records a KIP-848 heartbeat's error, or the assignment it carries.
    pub(super) async fn consumer_group_heartbeat_response(
        &self,
        frame: &Bytes,
        version: i16,
        ctx: &Ctx,
    ) {
        let Ctx::Group(who) = ctx else {
            return;
        };
        let key = ApiKey::ConsumerGroupHeartbeat;
        match decode_response::<ConsumerGroupHeartbeatResponse>(frame, key, version) {
            Ok((_, b)) => self.group_heartbeat(&who.group, &who.member, &b).await,
            Err(e) => self.shared.warn(format!(
                "kafka proxy: cannot decode a ConsumerGroupHeartbeat response, the timeline misses it: {e}"
            )),
        }
    }

    async fn group_heartbeat(&self, group: &str, member: &str, b: &ConsumerGroupHeartbeatResponse) {
        let member = b
            .member_id
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| member.to_string());
        if b.error_code != 0 {
            self.rebalance(
                group,
                RebalanceKind::Error,
                &member,
                Some(b.member_epoch),
                None,
                Some(error_name(b.error_code)),
            );
            return;
        }
        if let Some(a) = &b.assignment {
            let parts = self.partitions_by_topic_id(a).await;
            self.rebalance(
                group,
                RebalanceKind::Assign,
                &member,
                Some(b.member_epoch),
                Some(parts),
                None,
            );
        }
    }

    /// The partitions of the topic under test in a KIP-848 assignment, sorted. KIP-848 names
    /// topics by id, and the client may learn the names only after this response: the cluster
    /// is asked for ids the proxy has not seen yet (a failure to name them fails the run).
    async fn partitions_by_topic_id(
        &self,
        a: &kafka_protocol::messages::consumer_group_heartbeat_response::Assignment,
    ) -> Vec<i32> {
        let unknown = {
            let ids = lock(&self.shared.topic_ids);
            a.topic_partitions
                .iter()
                .any(|tp| !ids.contains_key(tp.topic_id.as_bytes()))
        };
        if unknown {
            if let Err(e) = self.shared.learn_topic_ids().await {
                self.shared.fail(format!(
                    "cannot name the topics of consumer[{}]'s assignment: {e}",
                    self.instance
                ));
            }
        }
        let mut parts = Vec::new();
        for tp in &a.topic_partitions {
            if self.shared.topic_name("", tp.topic_id.as_bytes()) == self.shared.topic {
                parts.extend(tp.partitions.iter().copied());
            }
        }
        parts.sort_unstable();
        parts
    }
}

/// Why a classic-protocol SyncGroup assignment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    /// Fewer than the two bytes of its version.
    #[error("assignment shorter than its version")]
    TooShort,
    /// The kafka-protocol crate could not decode it.
    #[error("consumer protocol assignment: {0}")]
    Decode(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The partitions of `topic` in a classic-protocol SyncGroup assignment
/// (ConsumerProtocolAssignment, prefixed with its version).
pub fn assigned_partitions(assignment: &Bytes, topic: &str) -> Result<Vec<i32>, AssignmentError> {
    if assignment.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = assignment.clone();
    if b.remaining() < 2 {
        return Err(AssignmentError::TooShort);
    }
    // Newer versions only add fields: read them with the newest version the crate knows.
    let version = b.get_i16().clamp(
        ConsumerProtocolAssignment::VERSIONS.min,
        ConsumerProtocolAssignment::VERSIONS.max,
    );
    let a = ConsumerProtocolAssignment::decode(&mut b, version)
        .map_err(|e| AssignmentError::Decode(e.into()))?;
    let mut parts: Vec<i32> = a
        .assigned_partitions
        .iter()
        .filter(|tp| tp.topic.0.as_str() == topic)
        .flat_map(|tp| tp.partitions.iter().copied())
        .collect();
    parts.sort_unstable();
    Ok(parts)
}
