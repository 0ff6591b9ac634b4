//! The nemesis: watches the timeline, asks each fault's trigger whether it fires, applies the
//! fault's action, and records what happened as a `fault` event.
//!
//! Honesty rules (design §12): a fault counts as fired only when its action hit a live process;
//! when no targeted process is alive (between restarts) the action waits for the next
//! incarnation and the recorded latency includes that wait. When several faults match one event,
//! the first in plan order acts; the others record that they were pre-empted.
//!
//! A held event a fault fired on never goes on when the fault stops the consumer; otherwise it
//! goes on at once, except the sink's answer to the effect of a `during: effect` fault, which
//! goes on once the fault has ended (its length passed: a pause resumed, a partition healed),
//! so the harness never leaves a running consumer waiting on an answer it withholds. The
//! sink's hold is recorded as a `held` event (at `effect`), like the proxy's holds.

pub mod action;
pub mod trigger;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::broker::group_member::GroupProtocol;
use crate::gate::{Gate, HoldDecision, HoldPoint};
use crate::plan::{Fault, FaultAction, Target};
use crate::proxy::control::Injection;
use crate::timeline::{Event, FaultRecord, HeldAt, ProcessPhase, Stamped, Timeline};
use action::{Applied, Landing, Levers};
use trigger::{Match, TriggerState};

/// What the run loop needs to know to decide when the run may end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NemesisStatus {
    /// Faults in the plan.
    pub planned: usize,
    /// Faults applied so far (a repeating fault counts each time).
    pub fired: usize,
    /// When the last fault landed (since run start).
    pub last_fired_at: Option<Duration>,
    /// A scheduled (time-based) firing or a deferred action is still to come.
    pub scheduled_pending: bool,
}

struct ArmedFault {
    index: usize,
    action: FaultAction,
    trigger: TriggerState,
    /// The plan's trigger in words, for the `fault` events.
    description: String,
    /// The fault depends on the proxy seeing the consumer's connections.
    through_proxy: bool,
    /// Times (µs) at which the trigger matched while no target was alive.
    deferred: Vec<u64>,
}

/// The hold points a plan's triggers need the sink and the proxies to hold.
pub fn hold_points(faults: &[Fault]) -> Vec<HoldPoint> {
    faults
        .iter()
        .filter_map(|f| trigger::hold_point(&f.when))
        .collect()
}

/// The fault injector of one run.
pub struct Nemesis {
    faults: Vec<ArmedFault>,
    timeline: Timeline,
    levers: Levers,
    gate: Gate,
    /// How the group under test joined, last seen (for the transient member).
    protocol: Option<GroupProtocol>,
    status: watch::Sender<NemesisStatus>,
    /// µs since run start when the first incarnation started: time triggers count from here.
    origin_us: Option<u64>,
    fired: usize,
    last_fired_at: Option<Duration>,
}

impl Nemesis {
    /// Arms every fault of the plan. `seed` drives the random triggers (each fault gets its own
    /// stream derived from it); `levers` are what the actions act on.
    pub fn new(
        faults: &[Fault],
        seed: u64,
        timeline: Timeline,
        levers: Levers,
        gate: Gate,
    ) -> (Nemesis, watch::Receiver<NemesisStatus>) {
        let faults: Vec<ArmedFault> = faults
            .iter()
            .enumerate()
            .map(|(index, f)| {
                let instance = match f.action.target() {
                    Target::Instance(i) => Some(i),
                    Target::AllInstances => None,
                };
                ArmedFault {
                    index,
                    action: f.action,
                    trigger: TriggerState::new(&f.when, seed.wrapping_add(index as u64), instance),
                    description: f.when.to_string(),
                    through_proxy: f.through_proxy(),
                    deferred: Vec::new(),
                }
            })
            .collect();
        let (status, rx) = watch::channel(NemesisStatus {
            planned: faults.len(),
            ..NemesisStatus::default()
        });
        let nemesis = Nemesis {
            faults,
            timeline,
            levers,
            gate,
            protocol: None,
            status,
            origin_us: None,
            fired: 0,
            last_fired_at: None,
        };
        nemesis.publish();
        (nemesis, rx)
    }

    /// Runs until `stop` is cancelled or the timeline is closed.
    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Arc<Stamped>>,
        stop: CancellationToken,
    ) {
        loop {
            let sleep = match self.next_due_us() {
                Some(due) => Duration::from_micros(due.saturating_sub(self.timeline.now_us())),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                event = events.recv() => match event {
                    Some(e) => self.on_event(&e),
                    None => break,
                },
                _ = tokio::time::sleep(sleep) => self.on_tick(),
            }
        }
        self.record_unapplied_at_end();
        self.gate.release_all();
    }

    fn next_due_us(&self) -> Option<u64> {
        let origin = self.origin_us?;
        self.faults
            .iter()
            .filter_map(|f| f.trigger.next_due())
            .map(|d| origin + d.as_micros() as u64)
            .min()
    }

    fn on_tick(&mut self) {
        let Some(origin) = self.origin_us else { return };
        let now = Duration::from_micros(self.timeline.now_us().saturating_sub(origin));
        for i in 0..self.faults.len() {
            while let Some(due) = self.faults[i].trigger.take_due(now) {
                self.fire(i, origin + due.as_micros() as u64);
            }
        }
        self.publish();
    }

    fn on_event(&mut self, stamped: &Stamped) {
        if let Event::Process {
            phase: ProcessPhase::Started,
            ..
        } = stamped.event
        {
            self.origin_us.get_or_insert(stamped.t_us);
            self.retry_deferred();
        }
        if let Some(protocol) = GroupProtocol::of_join(&stamped.event) {
            self.protocol = Some(protocol);
        }
        let mut acted = false;
        let mut fate = HeldFate::GoesOn;
        for i in 0..self.faults.len() {
            let m = self.faults[i].trigger.on_event(&stamped.event);
            if m == Match::No {
                continue;
            }
            if acted {
                self.record_not_applied(
                    i,
                    stamped.t_us,
                    "pre-empted: another fault acted on the same event",
                );
                continue;
            }
            acted = true;
            let applied = self.fire(i, stamped.t_us);
            let f = &self.faults[i];
            if applied && m == Match::FireWhileHeld {
                fate = held_fate(&f.action, f.trigger.is_during());
            }
        }
        if let Some(point) = HoldPoint::of(&stamped.event) {
            self.decide(point, stamped, fate);
        }
        if acted {
            self.publish();
        }
    }

    /// Tells the source holding `held` at `point` what becomes of it; the sink's hold of an
    /// effect a fault fired on is recorded when it ends.
    fn decide(&self, point: HoldPoint, held: &Stamped, fate: HeldFate) {
        let seq = held.seq;
        match fate {
            HeldFate::GoesOn => self.gate.decide(point, seq, HoldDecision::Answer),
            HeldFate::Withheld => {
                self.gate.decide(point, seq, HoldDecision::Withhold);
                record_effect_hold(&self.timeline, held, false);
            }
            HeldFate::GoesOnAfter(length) => {
                let (gate, timeline) = (self.gate.clone(), self.timeline.clone());
                let stopping = self.levers.stopping.clone();
                let held = held.clone();
                tokio::spawn(async move {
                    let ended = tokio::select! {
                        _ = tokio::time::sleep(length) => true,
                        _ = stopping.cancelled() => false,
                    };
                    gate.decide(point, seq, HoldDecision::Answer);
                    // When the run stops first, every hold is let go with it: not recorded.
                    if ended {
                        record_effect_hold(&timeline, &held, true);
                    }
                });
            }
        }
    }

    /// Applies fault `i`, matched at `matched_at_us`; true if it hit a live process.
    fn fire(&mut self, i: usize, matched_at_us: u64) -> bool {
        let f = &self.faults[i];
        match action::apply(&f.action, &self.levers, self.protocol.as_ref()) {
            Some(Landing::Now(applied)) => {
                self.record_applied(i, matched_at_us, applied);
                true
            }
            Some(Landing::Sending(injection)) => {
                self.record_once_sent(i, matched_at_us, injection);
                true
            }
            None => {
                self.faults[i].deferred.push(matched_at_us);
                false
            }
        }
    }

    fn retry_deferred(&mut self) {
        for i in 0..self.faults.len() {
            let pending = std::mem::take(&mut self.faults[i].deferred);
            for matched in pending {
                if !self.fire(i, matched) {
                    break;
                }
            }
        }
        self.publish();
    }

    fn record_applied(&mut self, i: usize, matched_at_us: u64, applied: Applied) {
        let fired_at_us = self.timeline.now_us();
        let f = &self.faults[i];
        self.timeline.record(Event::Fault(Box::new(FaultRecord {
            fault: f.index,
            action: f.action.name().into(),
            target: f.action.target().to_string(),
            trigger: f.description.clone(),
            matched_at_us,
            fired_at_us,
            trigger_latency_us: fired_at_us.saturating_sub(matched_at_us),
            applied: true,
            detail: applied.detail,
            hit: applied.hit,
            length_us: f.action.length().map(|d| d.as_micros() as u64),
            through_proxy: f.through_proxy,
        })));
        self.fired += 1;
        self.last_fired_at = Some(Duration::from_micros(fired_at_us));
    }

    /// Records a protocol fault the proxy queued once it was written (applied, with what was
    /// sent) or given up (not applied, why): never before the frames reached the consumer's
    /// socket. Counted as fired at once, so the run does not end while it is on its way.
    fn record_once_sent(&mut self, i: usize, matched_at_us: u64, injection: Injection) {
        /// A queued fault not written within this is recorded as not applied.
        const SEND_DEADLINE: Duration = Duration::from_secs(10);
        self.fired += 1;
        self.last_fired_at = Some(Duration::from_micros(self.timeline.now_us()));
        let f = &self.faults[i];
        let mut record = FaultRecord {
            fault: f.index,
            action: f.action.name().into(),
            target: f.action.target().to_string(),
            trigger: f.description.clone(),
            matched_at_us,
            fired_at_us: 0,
            trigger_latency_us: 0,
            applied: false,
            detail: String::new(),
            hit: Vec::new(),
            length_us: f.action.length().map(|d| d.as_micros() as u64),
            through_proxy: f.through_proxy,
        };
        let timeline = self.timeline.clone();
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(SEND_DEADLINE, injection).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err("the proxy's connection ended before it was sent".into()),
                Err(_) => Err(format!(
                    "not sent within {}s (no frame could carry it)",
                    SEND_DEADLINE.as_secs()
                )),
            };
            record.fired_at_us = timeline.now_us();
            record.trigger_latency_us = record.fired_at_us.saturating_sub(matched_at_us);
            match outcome {
                Ok(sent) => {
                    record.applied = true;
                    record.detail = sent.detail;
                    record.hit = vec![crate::timeline::ProcessRef {
                        instance: sent.instance,
                        incarnation: sent.incarnation,
                    }];
                }
                Err(why) => record.detail = why,
            }
            timeline.record(Event::Fault(Box::new(record)));
        });
    }

    fn record_not_applied(&mut self, i: usize, matched_at_us: u64, why: &str) {
        let now = self.timeline.now_us();
        let f = &self.faults[i];
        self.timeline.record(Event::Fault(Box::new(FaultRecord {
            fault: f.index,
            action: f.action.name().into(),
            target: f.action.target().to_string(),
            trigger: f.description.clone(),
            matched_at_us,
            fired_at_us: now,
            trigger_latency_us: now.saturating_sub(matched_at_us),
            applied: false,
            detail: why.into(),
            hit: Vec::new(),
            length_us: None,
            through_proxy: f.through_proxy,
        })));
    }

    /// Records every fault whose action is still waiting for a live target (end of run).
    fn record_unapplied_at_end(&mut self) {
        for i in 0..self.faults.len() {
            for matched in std::mem::take(&mut self.faults[i].deferred) {
                self.record_not_applied(
                    i,
                    matched,
                    "no live consumer process to apply it to before the run ended",
                );
            }
        }
    }

    fn publish(&self) {
        let scheduled_pending = self
            .faults
            .iter()
            .any(|f| f.trigger.next_due().is_some() || !f.deferred.is_empty());
        self.status.send_replace(NemesisStatus {
            planned: self.faults.len(),
            fired: self.fired,
            last_fired_at: self.last_fired_at,
            scheduled_pending,
        });
    }
}

/// What becomes of an event held at its hold point when a fault fired on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldFate {
    /// It goes on now (nothing fired on it, or the fault leaves the consumer running and is
    /// not a `during:` fault).
    GoesOn,
    /// It never goes on: the fault stops the consumer.
    Withheld,
    /// `during: effect` with a fault that leaves the consumer running: the sink answers once
    /// the fault has ended (at once for one without a length: sever, scale).
    GoesOnAfter(Duration),
}

/// The fate of a held event a fault with `action` fired on (`during`: a `during:` trigger).
fn held_fate(action: &FaultAction, during: bool) -> HeldFate {
    if action.stops_consumer() {
        HeldFate::Withheld
    } else if during {
        HeldFate::GoesOnAfter(action.length().unwrap_or(Duration::ZERO))
    } else {
        HeldFate::GoesOn
    }
}

/// Records the sink's hold of the effect `held` (a `held` event at `effect`) when it ends:
/// answered (`released`) or withheld. An effect the sink could not attribute has no instance
/// to name, so its hold is not recorded (the fault event still is).
fn record_effect_hold(timeline: &Timeline, held: &Stamped, released: bool) {
    let Event::Effect {
        instance: Some(instance),
        incarnation: Some(incarnation),
        ..
    } = held.event
    else {
        return;
    };
    timeline.record(Event::Held {
        instance,
        incarnation,
        at: HeldAt::Effect,
        event: held.seq,
        held_us: timeline.now_us().saturating_sub(held.t_us),
        released,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ScaleStep;

    #[test]
    fn a_held_event_goes_on_unless_the_fault_stops_the_consumer_and_during_waits_for_its_end() {
        let all = Target::AllInstances;
        let ms = Duration::from_millis;
        let pause = FaultAction::Pause {
            target: all,
            length: ms(300),
        };
        let kill = FaultAction::Kill { target: all };
        let sever = FaultAction::Sever { target: all };
        assert_eq!(held_fate(&kill, true), HeldFate::Withheld);
        assert_eq!(held_fate(&kill, false), HeldFate::Withheld);
        assert_eq!(held_fate(&pause, true), HeldFate::GoesOnAfter(ms(300)));
        assert_eq!(held_fate(&pause, false), HeldFate::GoesOn);
        assert_eq!(
            held_fate(&sever, true),
            HeldFate::GoesOnAfter(Duration::ZERO)
        );
        let up = FaultAction::Scale(ScaleStep::Up);
        assert_eq!(held_fate(&up, true), HeldFate::GoesOnAfter(Duration::ZERO));
    }
}
