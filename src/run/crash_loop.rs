//! A consumer that crash-loops: its incarnations exit on their own at once (within
//! [`QUICK_EXIT`] of their start), [`CRASH_LOOP_EXITS`] in a row, or every one that was started
//! once no instance is left, with no sign of work since the first of them (no delivery, effect,
//! rejected effect, commit or ack). Waiting for the deadline would show nothing more, and the
//! verdict would only say nothing was processed: the run ends at once as an infrastructure
//! failure (exit 4) whose message carries the last stderr tail.
//!
//! [`CrashWatch`] is a pure state machine over timeline events; [`follow`] runs it on the live
//! timeline and publishes the current [`Streak`] for the watch to ask.
//!
//! Invariant: an exit the harness caused is never part of a streak: an incarnation a fault hit
//! (kill, terminate, scale, network faults) breaks it, even when the `fault` event is recorded
//! just after the exit it caused (the streak is only a crash loop once its last exit is
//! [`FAULT_RECORD_GRACE`] old), and nothing after `run_ended` counts.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use tokio::sync::watch;

use crate::timeline::{CommitPhase, Event, ProcessPhase, Stamped, Timeline};

/// Quick self-exits in a row that make a crash loop.
pub(super) const CRASH_LOOP_EXITS: usize = 3;
/// An incarnation that exits within this of its start exited "at once".
pub(super) const QUICK_EXIT: Duration = Duration::from_secs(2);
/// How long after an exit the `fault` event that caused it may still be recorded (the nemesis
/// records a fault once its signal returned; the supervisor may record the exit first).
pub(super) const FAULT_RECORD_GRACE: Duration = Duration::from_millis(250);

/// One incarnation that exited on its own, at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct QuickExit {
    instance: u32,
    incarnation: u32,
    status: String,
    lived_us: u64,
    /// When it exited (µs since the run started).
    exited_us: u64,
    stderr_tail: Option<String>,
}

/// The quick self-exits since the last sign of work, and how many incarnations started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Streak {
    exits: Vec<QuickExit>,
    started: u32,
}

impl Streak {
    /// The crash loop at `now_us` (µs since the run started), when there is one:
    /// [`CRASH_LOOP_EXITS`] quick self-exits in a row, or (`instances_done`: nothing will start
    /// again) every incarnation started was one; the last of them at least
    /// [`FAULT_RECORD_GRACE`] ago.
    pub(super) fn crash_loop(&self, instances_done: bool, now_us: u64) -> Option<CrashLoop> {
        let n = self.exits.len();
        let every_one = instances_done && n > 0 && n == self.started as usize;
        let settled = self.exits.last().is_some_and(|last| {
            now_us.saturating_sub(last.exited_us) >= FAULT_RECORD_GRACE.as_micros() as u64
        });
        ((n >= CRASH_LOOP_EXITS || every_one) && settled).then(|| CrashLoop {
            exits: self.exits.clone(),
        })
    }
}

/// The consumer crash-loops: what the run says as it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CrashLoop {
    exits: Vec<QuickExit>,
}

impl fmt::Display for CrashLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self
            .exits
            .iter()
            .map(|e| {
                format!(
                    "consumer[{}] incarnation {}: {} after {}ms",
                    e.instance,
                    e.incarnation,
                    e.status,
                    e.lived_us / 1000
                )
            })
            .collect();
        write!(
            f,
            "the consumer crash-loops: {} incarnation{} in a row exited on {} own within {} of starting, with no delivery, effect, commit or ack ({}); the run was stopped rather than wait for its deadline",
            self.exits.len(),
            if self.exits.len() == 1 { "" } else { "s" },
            if self.exits.len() == 1 { "its" } else { "their" },
            humantime::format_duration(QUICK_EXIT),
            list.join("; ")
        )?;
        match self.exits.iter().rev().find_map(|e| e.stderr_tail.as_ref()) {
            Some(tail) => {
                let indented: Vec<String> = tail.lines().map(|l| format!("  | {l}")).collect();
                write!(f, ". Its stderr ended with:\n{}", indented.join("\n"))
            }
            None => write!(f, ". It wrote nothing on stderr"),
        }?;
        write!(
            f,
            "\nCheck consumer.command: run it by hand with the EXACTLY_* variables (see the run folder's logs/)"
        )
    }
}

/// Follows process, fault and work events for the crash-loop rule.
#[derive(Debug, Default)]
pub(super) struct CrashWatch {
    /// Start time (µs) of each incarnation seen starting.
    started_at: HashMap<(u32, u32), u64>,
    /// Incarnations a fault hit.
    hit: HashSet<(u32, u32)>,
    /// The stderr tail of each incarnation that wrote one, until it exits.
    tails: HashMap<(u32, u32), String>,
    run_ended: bool,
    /// When the last sign of work was seen (µs).
    last_work_us: Option<u64>,
    streak: Streak,
}

impl CrashWatch {
    /// Takes in one event; true when the streak changed.
    pub(super) fn observe(&mut self, st: &Stamped) -> bool {
        if self.run_ended {
            return false;
        }
        match &st.event {
            Event::RunEnded { .. } => {
                self.run_ended = true;
                false
            }
            Event::Fault(rec) => {
                self.hit
                    .extend(rec.hit.iter().map(|p| (p.instance, p.incarnation)));
                // Recorded after the exit it caused: that exit was the harness's.
                let caused = self.streak.exits.iter().any(|e| {
                    rec.hit
                        .iter()
                        .any(|p| (p.instance, p.incarnation) == (e.instance, e.incarnation))
                });
                caused && self.break_streak()
            }
            Event::StderrTail {
                instance,
                incarnation,
                tail,
                ..
            } => {
                self.tails.insert((*instance, *incarnation), tail.clone());
                false
            }
            Event::Process {
                instance,
                incarnation,
                phase,
                status,
                ..
            } => self.process(st.t_us, (*instance, *incarnation), *phase, status),
            Event::Delivered { .. }
            | Event::DeliveredBatch { .. }
            | Event::Effect { .. }
            | Event::EffectRejected { .. }
            | Event::Ack { .. }
            | Event::Commit {
                phase: CommitPhase::Request,
                ..
            } => {
                self.last_work_us = Some(st.t_us);
                self.break_streak()
            }
            _ => false,
        }
    }

    /// The streak so far.
    pub(super) fn streak(&self) -> &Streak {
        &self.streak
    }

    fn break_streak(&mut self) -> bool {
        let changed = !self.streak.exits.is_empty();
        self.streak.exits.clear();
        changed
    }

    fn process(
        &mut self,
        t_us: u64,
        key: (u32, u32),
        phase: ProcessPhase,
        status: &Option<String>,
    ) -> bool {
        match phase {
            ProcessPhase::Started => {
                self.started_at.insert(key, t_us);
                self.streak.started += 1;
                true
            }
            ProcessPhase::Exited => {
                let started_at = self.started_at.remove(&key);
                let stderr_tail = self.tails.remove(&key);
                let worked = self
                    .last_work_us
                    .is_some_and(|w| started_at.is_none_or(|s| w >= s));
                let quick = started_at
                    .map(|at| t_us.saturating_sub(at))
                    .filter(|us| *us < QUICK_EXIT.as_micros() as u64);
                match quick {
                    Some(lived_us) if !worked && !self.hit.contains(&key) => {
                        self.streak.exits.push(QuickExit {
                            instance: key.0,
                            incarnation: key.1,
                            status: status.clone().unwrap_or_else(|| "exit ?".into()),
                            lived_us,
                            exited_us: t_us,
                            stderr_tail,
                        });
                        true
                    }
                    // It lived long enough, worked, or the harness stopped it: not a crash
                    // "at once, by itself".
                    _ => self.break_streak(),
                }
            }
        }
    }
}

/// Runs a [`CrashWatch`] over `timeline` from now on and publishes its streak whenever it
/// changes (a task that ends with the timeline's last sender).
pub(super) fn follow(timeline: &Timeline) -> watch::Receiver<Streak> {
    let mut events = timeline.subscribe();
    let (tx, rx) = watch::channel(Streak::default());
    tokio::spawn(async move {
        let mut crashes = CrashWatch::default();
        while let Some(e) = events.recv().await {
            if crashes.observe(&e) {
                tx.send_replace(crashes.streak().clone());
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{EndReason, FaultRecord, ProcessRef, SinkKind};

    /// Events fed one at a time, stamped in order.
    struct Feed {
        watch: CrashWatch,
        seq: u64,
        last_us: u64,
    }

    impl Feed {
        fn new() -> Feed {
            Feed {
                watch: CrashWatch::default(),
                seq: 0,
                last_us: 0,
            }
        }

        fn at(&mut self, ms: u64, event: Event) -> &mut Feed {
            self.seq += 1;
            self.last_us = ms * 1000;
            self.watch.observe(&Stamped {
                seq: self.seq,
                t_us: ms * 1000,
                event,
            });
            self
        }

        fn start(&mut self, ms: u64, incarnation: u32) -> &mut Feed {
            self.at(ms, process(incarnation, ProcessPhase::Started, None))
        }

        fn exit(&mut self, ms: u64, incarnation: u32, status: &str) -> &mut Feed {
            self.at(ms, process(incarnation, ProcessPhase::Exited, Some(status)))
        }

        /// Starts incarnation `n` at `ms` and has it exit 3 ms later, saying `boom n`.
        fn crash(&mut self, ms: u64, n: u32) -> &mut Feed {
            self.start(ms, n);
            self.at(
                ms + 2,
                Event::StderrTail {
                    instance: 0,
                    incarnation: n,
                    tail: format!("boom {n}"),
                    bytes: 7,
                },
            );
            self.exit(ms + 3, n, "exit 3")
        }

        /// The crash loop a second after the last event.
        fn found(&self, instances_done: bool) -> Option<CrashLoop> {
            self.watch
                .streak()
                .crash_loop(instances_done, self.last_us + 1_000_000)
        }
    }

    fn process(incarnation: u32, phase: ProcessPhase, status: Option<&str>) -> Event {
        Event::Process {
            instance: 0,
            incarnation,
            pid: 100 + incarnation,
            phase,
            status: status.map(str::to_owned),
        }
    }

    fn effect() -> Event {
        Event::Effect {
            boundary: None,
            id: "r-1".into(),
            instance: Some(0),
            incarnation: Some(1),
            outcome: crate::timeline::EffectOutcome::Applied,
            sink: SinkKind::Http,
            attribution: Default::default(),
        }
    }

    #[test]
    fn three_quick_exits_in_a_row_with_no_work_are_a_crash_loop_with_the_last_stderr() {
        let mut feed = Feed::new();
        feed.crash(0, 1).crash(500, 2);
        assert_eq!(feed.found(false), None, "two are not yet a loop");
        feed.crash(1000, 3);
        let found = feed.found(false).expect("three in a row");
        let text = found.to_string();
        assert!(text.contains("3 incarnations in a row"), "{text}");
        assert!(
            text.contains("consumer[0] incarnation 3: exit 3 after 3ms"),
            "{text}"
        );
        assert!(text.contains("  | boom 3"), "{text}");
    }

    #[test]
    fn any_sign_of_work_breaks_the_streak() {
        let mut feed = Feed::new();
        feed.crash(0, 1)
            .crash(500, 2)
            .at(900, effect())
            .crash(1000, 3);
        assert_eq!(feed.found(false), None);
        feed.crash(1500, 4).crash(2000, 5);
        assert!(feed.found(false).is_some(), "three since the effect");
    }

    #[test]
    fn an_incarnation_that_lived_or_was_hit_by_a_fault_breaks_the_streak() {
        let mut feed = Feed::new();
        feed.crash(0, 1).crash(500, 2);
        feed.start(1000, 3).exit(5000, 3, "exit 1");
        feed.crash(6000, 4).crash(6500, 5);
        assert_eq!(feed.found(false), None, "incarnation 3 lived 4 s");

        let mut feed = Feed::new();
        feed.crash(0, 1).crash(500, 2).start(1000, 3);
        feed.at(1001, kill(3)).exit(1002, 3, "signal SIGKILL");
        assert_eq!(feed.found(false), None, "the harness killed incarnation 3");
    }

    #[test]
    fn a_fault_recorded_just_after_the_exit_it_caused_still_breaks_the_streak() {
        let mut feed = Feed::new();
        feed.crash(0, 1).crash(500, 2).start(1000, 3);
        feed.exit(1001, 3, "signal SIGKILL");
        let streak = feed.watch.streak().clone();
        assert_eq!(
            streak.crash_loop(false, 1_100_000),
            None,
            "not yet: its fault may still be recorded"
        );
        assert!(streak.crash_loop(false, 1_251_000).is_some());
        feed.at(1002, kill(3));
        assert_eq!(feed.found(false), None, "the kill came after all");
    }

    /// A `kill` fault that hit consumer[0]'s `incarnation`.
    fn kill(incarnation: u32) -> Event {
        Event::Fault(Box::new(FaultRecord {
            fault: 0,
            action: "kill".into(),
            target: "consumer".into(),
            trigger: "at: 1s".into(),
            matched_at_us: 1_000_000,
            fired_at_us: 1_001_000,
            trigger_latency_us: 1000,
            applied: true,
            through_proxy: false,
            detail: String::new(),
            hit: vec![ProcessRef {
                instance: 0,
                incarnation,
            }],
            length_us: None,
        }))
    }

    #[test]
    fn when_nothing_will_start_again_every_incarnation_exiting_at_once_is_enough() {
        let mut feed = Feed::new();
        feed.crash(0, 1);
        assert_eq!(feed.found(false), None);
        let found = feed
            .found(true)
            .expect("restart: never, and it exited at once");
        assert!(found
            .to_string()
            .contains("1 incarnation in a row exited on its own"));

        let mut feed = Feed::new();
        feed.start(0, 1).at(10, effect()).exit(20, 1, "exit 0");
        assert_eq!(feed.found(true), None, "it worked before it exited");
    }

    #[test]
    fn exits_after_the_run_ended_are_the_harness_stopping_it() {
        let mut feed = Feed::new();
        feed.crash(0, 1).crash(500, 2).start(1000, 3);
        feed.at(
            1001,
            Event::RunEnded {
                reason: EndReason::Deadline,
            },
        );
        feed.exit(1002, 3, "exit 143");
        assert_eq!(feed.found(false), None);
    }
}
