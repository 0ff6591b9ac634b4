//! The gate: lets the nemesis decide whether a source lets a held event go on. Sources that can
//! hold an event in flight (the HTTP sink holding its answer to an effect, the proxy holding an
//! OffsetCommit request or its response, an EndTxn request, or an AMQP ack) record the event, then wait for the
//! [`HoldDecision`] on that event's sequence number; the nemesis gives one decision per event at
//! the hold points the plan uses. Either side may arrive first. Points the plan does not use are
//! never held.
//!
//! This is the one place where data flows back from the nemesis to a source, and it carries a
//! yes/no only. It is a leaf: it knows timeline events and nothing of the nemesis, the sinks or
//! the proxies, so both sides import it without importing each other.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::timeline::{AckPhase, CommitPhase, Event, TxnOp};

/// What the nemesis tells the side holding an event: let it go on, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldDecision {
    /// Let it go on: answer the consumer, forward the frame.
    Answer,
    /// Never let it go on: a fault fired while it was held (the consumer is being killed).
    Withhold,
}

/// Where an event can be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldPoint {
    /// The HTTP sink's answer to an effect (`during: effect`).
    Effect,
    /// An OffsetCommit request on its way to the broker (`before: commit`).
    CommitRequest,
    /// The broker's OffsetCommit response on its way to the consumer (`after: commit`).
    CommitResponse,
    /// An AMQP basic.ack/nack/reject on its way to the broker (`before: ack`).
    AckRequest,
    /// A Kafka EndTxn request committing a transaction, on its way to the broker
    /// (`before: end_txn`).
    EndTxnRequest,
}

impl HoldPoint {
    /// The hold point of an event, if it has one.
    pub fn of(event: &Event) -> Option<HoldPoint> {
        match event {
            Event::Effect { .. } => Some(HoldPoint::Effect),
            Event::Commit {
                phase: CommitPhase::Request,
                ..
            } => Some(HoldPoint::CommitRequest),
            Event::Commit {
                phase: CommitPhase::Response,
                ..
            } => Some(HoldPoint::CommitResponse),
            Event::Ack {
                phase: AckPhase::Request,
                ..
            } => Some(HoldPoint::AckRequest),
            Event::Txn {
                op: TxnOp::EndTxn,
                request: true,
                ..
            } => Some(HoldPoint::EndTxnRequest),
            _ => None,
        }
    }
}

enum Slot {
    Waiting(oneshot::Sender<HoldDecision>),
    Decided(HoldDecision),
}

/// Shared between the sources that hold and the nemesis.
#[derive(Clone, Default)]
pub struct Gate {
    points: Arc<HashSet<HoldPoint>>,
    slots: Arc<Mutex<HashMap<u64, Slot>>>,
}

impl Gate {
    /// A gate that holds events at these points until the nemesis decides.
    pub fn holding(points: impl IntoIterator<Item = HoldPoint>) -> Gate {
        Gate {
            points: Arc::new(points.into_iter().collect()),
            slots: Arc::default(),
        }
    }

    /// A gate that never holds.
    pub fn open() -> Gate {
        Gate::default()
    }

    /// True when events at `point` wait for a decision.
    pub fn holds(&self, point: HoldPoint) -> bool {
        self.points.contains(&point)
    }

    /// The source's side: waits for the decision on event `seq` held at `point`.
    pub async fn wait(&self, point: HoldPoint, seq: u64) -> HoldDecision {
        if !self.holds(point) {
            return HoldDecision::Answer;
        }
        let rx = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.remove(&seq) {
                Some(Slot::Decided(v)) => return v,
                Some(Slot::Waiting(_)) | None => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(seq, Slot::Waiting(tx));
                    rx
                }
            }
        };
        // A dropped sender means the nemesis is gone (end of run): let it go on.
        rx.await.unwrap_or(HoldDecision::Answer)
    }

    /// The nemesis's side: decides event `seq` held at `point` (ignored if not held there).
    pub fn decide(&self, point: HoldPoint, seq: u64, decision: HoldDecision) {
        if !self.holds(point) {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.remove(&seq) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(decision);
            }
            Some(Slot::Decided(_)) | None => {
                slots.insert(seq, Slot::Decided(decision));
            }
        }
    }

    /// Lets every waiting event go on (end of run).
    pub fn release_all(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for (_, slot) in slots.drain() {
            if let Slot::Waiting(tx) = slot {
                let _ = tx.send(HoldDecision::Answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verdict_reaches_the_source_whichever_side_comes_first() {
        let gate = Gate::holding([HoldPoint::Effect]);
        gate.decide(HoldPoint::Effect, 1, HoldDecision::Withhold);
        assert_eq!(
            gate.wait(HoldPoint::Effect, 1).await,
            HoldDecision::Withhold
        );

        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.wait(HoldPoint::Effect, 2).await });
        tokio::task::yield_now().await;
        gate.decide(HoldPoint::Effect, 2, HoldDecision::Answer);
        assert_eq!(waiter.await.unwrap(), HoldDecision::Answer);
    }

    #[tokio::test]
    async fn points_the_plan_does_not_use_are_never_held() {
        let gate = Gate::holding([HoldPoint::CommitRequest]);
        assert_eq!(gate.wait(HoldPoint::Effect, 7).await, HoldDecision::Answer);
        assert_eq!(
            Gate::open().wait(HoldPoint::CommitResponse, 8).await,
            HoldDecision::Answer
        );
    }
}
