//! The run's live tally: follows the timeline and counts acknowledged and effected IDs, for the
//! end decision and the progress bar. (The judge counts again, from the file, at the end.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::timeline::{Event, ProduceStatus, Stamped, Timeline};

/// Acknowledged and effected IDs so far.
#[derive(Debug, Clone, Default)]
pub(super) struct Tally {
    /// IDs the broker acknowledged.
    acked: usize,
    /// IDs with at least one effect.
    pub(super) effected: usize,
    /// Every acknowledged ID has an effect.
    all_acked_effected: bool,
    /// When the last effect was seen.
    pub(super) last_effect_at: Option<Instant>,
}

impl Tally {
    /// True once something was acknowledged and every acknowledged ID has an effect.
    pub(super) fn all_effected(&self) -> bool {
        self.acked > 0 && self.all_acked_effected
    }

    /// Follows `timeline` from now on (a task that ends with the timeline's last sender).
    pub(super) fn follow(timeline: &Timeline) -> watch::Receiver<Tally> {
        let mut events = timeline.subscribe();
        let (tx, rx) = watch::channel(Tally::default());
        tokio::spawn(async move {
            let mut acked: HashSet<String> = HashSet::new();
            let mut effected: HashSet<String> = HashSet::new();
            let mut waiting = 0usize;
            while let Some(e) = events.recv().await {
                let e: Arc<Stamped> = e;
                match &e.event {
                    Event::Produced {
                        id,
                        status: ProduceStatus::Acked,
                        ..
                    } => {
                        if acked.insert(id.clone()) && !effected.contains(id) {
                            waiting += 1;
                        }
                    }
                    Event::Effect { id, .. } => {
                        if effected.insert(id.clone()) && acked.contains(id) {
                            waiting -= 1;
                        }
                    }
                    _ => continue,
                }
                let last_effect_at = match &e.event {
                    Event::Effect { .. } => Some(Instant::now()),
                    _ => tx.borrow().last_effect_at,
                };
                tx.send_replace(Tally {
                    acked: acked.len(),
                    effected: effected.len(),
                    all_acked_effected: waiting == 0,
                    last_effect_at,
                });
            }
        });
        rx
    }
}
