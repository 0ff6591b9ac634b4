//! The effect gate: lets the nemesis decide whether the HTTP sink answers an effect, for
//! `during: effect` triggers. The sink records the effect, then waits for the verdict on that
//! event's sequence number; the nemesis gives one verdict per effect event. Either side may
//! arrive first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The nemesis's word on one effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer the consumer normally.
    Answer,
    /// Never answer: a fault fired while this effect was in flight.
    Withhold,
}

enum Slot {
    Waiting(oneshot::Sender<Verdict>),
    Decided(Verdict),
}

/// Shared between the HTTP sink and the nemesis. Disabled gates answer at once.
#[derive(Clone, Default)]
pub struct EffectGate {
    enabled: bool,
    slots: Arc<Mutex<HashMap<u64, Slot>>>,
}

impl EffectGate {
    /// A gate that holds every effect until the nemesis decides (plans with `during: effect`).
    pub fn enabled() -> EffectGate {
        EffectGate {
            enabled: true,
            slots: Arc::default(),
        }
    }

    /// A gate that never holds.
    pub fn disabled() -> EffectGate {
        EffectGate::default()
    }

    /// True when the sink must wait for a verdict.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The sink's side: waits for the verdict on effect event `seq`.
    pub async fn wait(&self, seq: u64) -> Verdict {
        if !self.enabled {
            return Verdict::Answer;
        }
        let rx = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.remove(&seq) {
                Some(Slot::Decided(v)) => return v,
                _ => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(seq, Slot::Waiting(tx));
                    rx
                }
            }
        };
        // A dropped sender means the nemesis is gone (end of run): answer.
        rx.await.unwrap_or(Verdict::Answer)
    }

    /// The nemesis's side: decides effect event `seq`.
    pub fn decide(&self, seq: u64, verdict: Verdict) {
        if !self.enabled {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.remove(&seq) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(verdict);
            }
            _ => {
                slots.insert(seq, Slot::Decided(verdict));
            }
        }
    }

    /// Releases every waiting effect (end of run).
    pub fn release_all(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for (_, slot) in slots.drain() {
            if let Slot::Waiting(tx) = slot {
                let _ = tx.send(Verdict::Answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verdict_reaches_the_sink_whichever_side_comes_first() {
        let gate = EffectGate::enabled();
        gate.decide(1, Verdict::Withhold);
        assert_eq!(gate.wait(1).await, Verdict::Withhold);

        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.wait(2).await });
        tokio::task::yield_now().await;
        gate.decide(2, Verdict::Answer);
        assert_eq!(waiter.await.unwrap(), Verdict::Answer);
    }

    #[tokio::test]
    async fn disabled_gate_answers_at_once() {
        assert_eq!(EffectGate::disabled().wait(7).await, Verdict::Answer);
    }
}
