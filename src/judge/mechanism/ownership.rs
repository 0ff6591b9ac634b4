//! Partition ownership over time, as the proxy saw it: each consumer incarnation's assignments
//! (SyncGroup, KIP-848 heartbeats) and the transient group member's share.
//!
//! Invariant: only assignments recorded on the timeline; nothing is inferred.

use serde::Serialize;

use crate::judge::mechanism::index::pref;
use crate::timeline::{Event, MemberChange, ProcessRef, RebalanceKind, Stamped};

/// Who owned which partitions when, as the proxy saw it (SyncGroup / KIP-848 heartbeat
/// assignments of each consumer incarnation, and the transient member's share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnershipChange {
    /// When (µs).
    pub t_us: u64,
    /// The consumer incarnation, or `None` for the harness's transient group member.
    pub owner: Option<ProcessRef>,
    /// The partitions it owns from now on (consumers), or that it was given or gave back
    /// (the transient member: see `released`).
    pub partitions: Vec<i32>,
    /// True when the transient member gave these partitions back (revoked, or left).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// Every assignment change of the run, in time order.
pub fn ownership(events: &[Stamped]) -> Vec<OwnershipChange> {
    let mut out = Vec::new();
    for st in events {
        match &st.event {
            Event::Rebalance {
                instance,
                incarnation,
                change: RebalanceKind::Assign,
                assignment: Some(parts),
                ..
            } => out.push(OwnershipChange {
                t_us: st.t_us,
                owner: Some(pref(*instance, *incarnation)),
                partitions: parts.clone(),
                released: false,
            }),
            Event::GroupMember {
                change: change @ (MemberChange::Assigned | MemberChange::Revoked),
                partitions: Some(parts),
                ..
            } => out.push(OwnershipChange {
                t_us: st.t_us,
                owner: None,
                partitions: parts.clone(),
                released: *change == MemberChange::Revoked,
            }),
            _ => {}
        }
    }
    out
}
