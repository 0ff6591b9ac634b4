//! When a run ends: a pure state machine over what the watch observes, tested without
//! brokers, processes or clocks (the caller passes the time in).
//!
//! Each wake of the watch goes through [`EndWatch::on_wake`] first: an interrupt, or a failure
//! the run cannot go on after (the consumer command, the proxy, a bypass of the proxy the plan
//! makes fatal, the timeline file, a consumer that crash-loops, an effect ID rule that reads no
//! effect), ends the run at once, before the broker is read again. Otherwise the watch reads the broker's
//! progress and asks [`EndWatch::on_progress`]: past the deadline the run ends; it settles
//! once the work is done (every acknowledged ID effected, or the broker has nothing left and
//! the effects have stopped), no scheduled fault is still to come, and that has held for
//! `settle` since both the work was done and the last fault fired (or every instance ended).

use std::time::{Duration, Instant};

use crate::timeline::EndReason;

/// Why the watch woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// The progress interval passed.
    Tick,
    /// SIGINT/SIGTERM: the user asked the run to stop.
    StopRequested,
    /// Every consumer instance task ended (out of incarnations, or retired).
    InstancesEnded,
}

/// Failures the run cannot go on after, as the watch found them when it woke.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Health {
    /// The supervisor could not run the consumer command.
    pub(super) consumer_failed: bool,
    /// The proxy could not apply a fault, or a consumer slipped past it.
    pub(super) proxy_failure: Option<String>,
    /// A write to the timeline file failed: the evidence has a hole.
    pub(super) events_unwritable: bool,
    /// The consumer crash-loops (what to tell the user).
    pub(super) crash_loop: Option<String>,
    /// The first effects all missed the plan's ID rule (what to tell the user).
    pub(super) wrong_rule: Option<String>,
    /// A consumer connection bypassed the proxy and the plan makes that fatal (described).
    pub(super) fatal_bypass: Option<String>,
    /// The broker has not answered a progress read for the plan's connect timeout: why.
    pub(super) broker_lost: Option<String>,
}

/// What the watch saw after reading the broker's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    /// When it looked.
    pub(super) now: Instant,
    /// The workload is produced in full (or its task ended).
    pub(super) produced: bool,
    /// Something was acknowledged and every acknowledged ID has an effect.
    pub(super) all_effected: bool,
    /// When the last effect was seen.
    pub(super) last_effect_at: Option<Instant>,
    /// The broker's last snapshot says nothing is left for the consumer.
    pub(super) nothing_left: bool,
    /// A scheduled (time-based) fault or a deferred action is still to come.
    pub(super) faults_pending: bool,
    /// Time since the last fault fired; `None` when none has.
    pub(super) since_last_fault: Option<Duration>,
}

/// What the watch does next after a wake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Read the broker's progress, then ask [`EndWatch::on_progress`].
    ReadProgress,
    /// Nothing to read this time: wait for the next wake.
    Wait,
    /// The run ends.
    End(Ending),
}

/// How a run ended, in more detail than the timeline's [`EndReason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// The work was done and quiet for `settle`, every fault had its chance.
    Settled,
    /// The deadline passed first.
    Deadline,
    /// SIGINT/SIGTERM.
    Aborted,
    /// The supervisor could not run the consumer command.
    ConsumerFailed,
    /// The proxy failed, for this reason (it is on the timeline already).
    ProxyFailed(String),
    /// A consumer connection bypassed the proxy and the plan makes that fatal (the `bypass`
    /// event is on the timeline already).
    Bypassed(String),
    /// The timeline file could not be written.
    EventsUnwritable,
    /// Every incarnation exited at once with no work done, for this reason.
    CrashLoop(String),
    /// The plan's effect ID rule read none of the first effects, for this reason.
    WrongIdRule(String),
    /// The broker stopped answering, for this reason (it is on the timeline already).
    BrokerLost(String),
}

impl Ending {
    /// The reason the timeline records.
    pub(super) fn reason(&self) -> EndReason {
        match self {
            Ending::Settled => EndReason::Settled,
            Ending::Deadline => EndReason::Deadline,
            Ending::Aborted => EndReason::Aborted,
            Ending::ConsumerFailed
            | Ending::ProxyFailed(_)
            | Ending::EventsUnwritable
            | Ending::Bypassed(_)
            | Ending::CrashLoop(_)
            | Ending::BrokerLost(_) => EndReason::InfrastructureError,
            Ending::WrongIdRule(_) => EndReason::PlanError,
        }
    }
}

/// The end decision of one run: its limits and what it remembers between wakes.
#[derive(Debug, Clone)]
pub(super) struct EndWatch {
    deadline: Instant,
    settle: Duration,
    /// Since when the work has been done with no fault pending.
    quiet_since: Option<Instant>,
    /// Every instance task ended.
    instances_done: bool,
}

impl EndWatch {
    /// A watch for a run that must end by `deadline` and settles after `settle`.
    pub(super) fn new(deadline: Instant, settle: Duration) -> EndWatch {
        EndWatch {
            deadline,
            settle,
            quiet_since: None,
            instances_done: false,
        }
    }

    /// True once every instance task ended (the watch stops waiting for that).
    pub(super) fn instances_done(&self) -> bool {
        self.instances_done
    }

    /// A wake: ends the run on an interrupt or a failure, else says whether to read progress.
    pub(super) fn on_wake(&mut self, wake: Wake, health: &Health) -> Step {
        match wake {
            Wake::StopRequested => Step::End(Ending::Aborted),
            Wake::InstancesEnded => {
                self.instances_done = true;
                if health.consumer_failed {
                    Step::End(Ending::ConsumerFailed)
                } else {
                    Step::Wait
                }
            }
            Wake::Tick => {
                if health.consumer_failed {
                    Step::End(Ending::ConsumerFailed)
                } else if let Some(problem) = &health.proxy_failure {
                    // Evidence the proxy could not complete is an infrastructure error, never
                    // a pass (design §12).
                    Step::End(Ending::ProxyFailed(problem.clone()))
                } else if let Some(bypass) = &health.fatal_bypass {
                    // `consumer.bypass: fatal`: the faults cannot be trusted to reach it.
                    Step::End(Ending::Bypassed(bypass.clone()))
                } else if health.events_unwritable {
                    Step::End(Ending::EventsUnwritable)
                } else if let Some(why) = &health.crash_loop {
                    Step::End(Ending::CrashLoop(why.clone()))
                } else if let Some(why) = &health.wrong_rule {
                    // A blind oracle: every message would look lost (issue 12).
                    Step::End(Ending::WrongIdRule(why.clone()))
                } else if let Some(why) = &health.broker_lost {
                    // Waiting for the deadline would only wait: nothing can be read any more.
                    Step::End(Ending::BrokerLost(why.clone()))
                } else {
                    Step::ReadProgress
                }
            }
        }
    }

    /// What the progress read shows: `Some` when the run ends.
    pub(super) fn on_progress(&mut self, seen: &Seen) -> Option<Ending> {
        if seen.now >= self.deadline {
            return Some(Ending::Deadline);
        }
        // An AMQP queue does not count delivered, unacknowledged messages: "nothing left"
        // only counts once the effects have stopped too.
        let effects_quiet = seen
            .last_effect_at
            .is_none_or(|t| seen.now.saturating_duration_since(t) >= self.settle);
        let work_done =
            seen.produced && (seen.all_effected || (effects_quiet && seen.nothing_left));
        if !work_done || seen.faults_pending {
            self.quiet_since = None;
            return None;
        }
        let quiet_since = *self.quiet_since.get_or_insert(seen.now);
        let quiet_for = seen.now.saturating_duration_since(quiet_since);
        let since_fault = seen.since_last_fault.unwrap_or(Duration::MAX);
        let settled =
            quiet_for >= self.settle && (since_fault >= self.settle || self.instances_done);
        settled.then_some(Ending::Settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(2);

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// A watch whose run started at `t0`, with a 60 s deadline.
    fn watch(t0: Instant) -> EndWatch {
        EndWatch::new(t0 + s(60), SETTLE)
    }

    /// Work done at `now`: produced, every acknowledged ID effected, no fault ever fired.
    fn done(now: Instant) -> Seen {
        Seen {
            now,
            produced: true,
            all_effected: true,
            last_effect_at: None,
            nothing_left: false,
            faults_pending: false,
            since_last_fault: None,
        }
    }

    fn healthy() -> Health {
        Health::default()
    }

    #[test]
    fn a_stop_request_ends_the_run_as_aborted_without_reading_progress() {
        let mut w = watch(Instant::now());
        assert_eq!(
            w.on_wake(Wake::StopRequested, &healthy()),
            Step::End(Ending::Aborted)
        );
        assert_eq!(Ending::Aborted.reason(), EndReason::Aborted);
    }

    #[test]
    fn a_tick_reads_progress_while_all_is_well() {
        let mut w = watch(Instant::now());
        assert_eq!(w.on_wake(Wake::Tick, &healthy()), Step::ReadProgress);
    }

    #[test]
    fn failures_end_the_run_as_infrastructure_errors_consumer_then_proxy_then_bypass() {
        let mut w = watch(Instant::now());
        let all = Health {
            consumer_failed: true,
            proxy_failure: Some("bypassed".into()),
            events_unwritable: true,
            crash_loop: Some("boom".into()),
            wrong_rule: Some("json:/x".into()),
            fatal_bypass: Some("a -> b".into()),
            broker_lost: Some("gone".into()),
        };
        assert_eq!(
            w.on_wake(Wake::Tick, &all),
            Step::End(Ending::ConsumerFailed)
        );
        let proxy = Health {
            consumer_failed: false,
            ..all.clone()
        };
        assert_eq!(
            w.on_wake(Wake::Tick, &proxy),
            Step::End(Ending::ProxyFailed("bypassed".into()))
        );
        let bypass = Health {
            proxy_failure: None,
            ..proxy.clone()
        };
        assert_eq!(
            w.on_wake(Wake::Tick, &bypass),
            Step::End(Ending::Bypassed("a -> b".into()))
        );
        for ending in [
            Ending::ConsumerFailed,
            Ending::ProxyFailed(String::new()),
            Ending::Bypassed(String::new()),
            Ending::EventsUnwritable,
            Ending::CrashLoop(String::new()),
            Ending::BrokerLost(String::new()),
        ] {
            assert_eq!(ending.reason(), EndReason::InfrastructureError);
        }
    }

    #[test]
    fn a_crash_loop_and_then_a_wrong_id_rule_end_the_run_before_progress_is_read() {
        let mut w = watch(Instant::now());
        let both = Health {
            crash_loop: Some("boom".into()),
            wrong_rule: Some("json:/x".into()),
            ..healthy()
        };
        assert_eq!(
            w.on_wake(Wake::Tick, &both),
            Step::End(Ending::CrashLoop("boom".into()))
        );
        let rule = Health {
            crash_loop: None,
            ..both
        };
        let ending = Ending::WrongIdRule("json:/x".into());
        assert_eq!(w.on_wake(Wake::Tick, &rule), Step::End(ending.clone()));
        assert_eq!(
            ending.reason(),
            EndReason::PlanError,
            "the plan must be fixed: exit 2"
        );
    }

    #[test]
    fn a_broker_that_stopped_answering_ends_the_run() {
        let mut w = watch(Instant::now());
        let lost = Health {
            broker_lost: Some("no answer for 5s".into()),
            ..healthy()
        };
        assert_eq!(
            w.on_wake(Wake::Tick, &lost),
            Step::End(Ending::BrokerLost("no answer for 5s".into()))
        );
    }

    #[test]
    fn a_failed_write_to_the_timeline_file_ends_the_run() {
        let mut w = watch(Instant::now());
        let unwritable = Health {
            events_unwritable: true,
            ..healthy()
        };
        assert_eq!(
            w.on_wake(Wake::Tick, &unwritable),
            Step::End(Ending::EventsUnwritable)
        );
    }

    #[test]
    fn instances_ending_is_remembered_and_ends_the_run_only_if_the_consumer_failed() {
        let mut w = watch(Instant::now());
        assert!(!w.instances_done());
        assert_eq!(w.on_wake(Wake::InstancesEnded, &healthy()), Step::Wait);
        assert!(w.instances_done());
        let failed = Health {
            consumer_failed: true,
            ..healthy()
        };
        let mut w = watch(Instant::now());
        assert_eq!(
            w.on_wake(Wake::InstancesEnded, &failed),
            Step::End(Ending::ConsumerFailed)
        );
        // Only the consumer's failure is looked at then: the proxy's waits for the next tick.
        let proxy = Health {
            proxy_failure: Some("x".into()),
            ..healthy()
        };
        assert_eq!(w.on_wake(Wake::InstancesEnded, &proxy), Step::Wait);
    }

    #[test]
    fn the_deadline_ends_the_run_even_with_work_left() {
        let t0 = Instant::now();
        let mut w = watch(t0);
        let late = Seen {
            produced: false,
            ..done(t0 + s(60))
        };
        assert_eq!(w.on_progress(&late), Some(Ending::Deadline));
        assert_eq!(Ending::Deadline.reason(), EndReason::Deadline);
        assert_eq!(w.on_progress(&done(t0 + s(59))), None, "work just done");
    }

    #[test]
    fn done_work_settles_once_quiet_for_settle() {
        let t0 = Instant::now();
        let mut w = watch(t0);
        assert_eq!(w.on_progress(&done(t0 + s(1))), None, "quiet from now");
        assert_eq!(w.on_progress(&done(t0 + s(2))), None);
        assert_eq!(w.on_progress(&done(t0 + s(3))), Some(Ending::Settled));
        assert_eq!(Ending::Settled.reason(), EndReason::Settled);
    }

    #[test]
    fn work_not_done_or_a_pending_fault_restarts_the_quiet_period() {
        let t0 = Instant::now();
        let mut w = watch(t0);
        assert_eq!(w.on_progress(&done(t0 + s(1))), None);
        let unproduced = Seen {
            produced: false,
            ..done(t0 + s(2))
        };
        assert_eq!(w.on_progress(&unproduced), None);
        assert_eq!(
            w.on_progress(&done(t0 + s(3))),
            None,
            "quiet again from 3 s"
        );
        let pending = Seen {
            faults_pending: true,
            ..done(t0 + s(4))
        };
        assert_eq!(w.on_progress(&pending), None);
        assert_eq!(
            w.on_progress(&done(t0 + s(5))),
            None,
            "quiet again from 5 s"
        );
        assert_eq!(w.on_progress(&done(t0 + s(7))), Some(Ending::Settled));
    }

    #[test]
    fn nothing_left_at_the_broker_counts_only_once_the_effects_have_stopped() {
        let t0 = Instant::now();
        let drained = |now: Instant, last_effect: Instant| Seen {
            all_effected: false,
            nothing_left: true,
            last_effect_at: Some(last_effect),
            ..done(now)
        };
        let mut w = watch(t0);
        // Effects still coming: not done, whatever the broker says.
        assert_eq!(w.on_progress(&drained(t0 + s(10), t0 + s(9))), None);
        assert_eq!(w.on_progress(&drained(t0 + s(13), t0 + s(12))), None);
        // The effects stopped 2 s ago: done from here, settled 2 s later.
        assert_eq!(w.on_progress(&drained(t0 + s(14), t0 + s(12))), None);
        assert_eq!(
            w.on_progress(&drained(t0 + s(16), t0 + s(12))),
            Some(Ending::Settled)
        );
        // Nothing effected and nothing left: still not done until produced.
        let mut w = watch(t0);
        let not_produced = Seen {
            produced: false,
            ..drained(t0 + s(20), t0)
        };
        assert_eq!(w.on_progress(&not_produced), None);
    }

    #[test]
    fn a_recent_fault_delays_settling_unless_every_instance_has_ended() {
        let t0 = Instant::now();
        let after_fault = |now: Instant, since: u64| Seen {
            since_last_fault: Some(s(since)),
            ..done(now)
        };
        let mut w = watch(t0);
        assert_eq!(w.on_progress(&after_fault(t0, 0)), None);
        assert_eq!(
            w.on_progress(&after_fault(t0 + s(2), 1)),
            None,
            "quiet for 2 s, but the fault fired 1 s ago"
        );
        assert_eq!(
            w.on_progress(&after_fault(t0 + s(3), 2)),
            Some(Ending::Settled)
        );
        // With every instance ended, the fault's recency does not matter.
        let mut w = watch(t0);
        assert_eq!(w.on_wake(Wake::InstancesEnded, &healthy()), Step::Wait);
        assert_eq!(w.on_progress(&after_fault(t0, 0)), None);
        assert_eq!(
            w.on_progress(&after_fault(t0 + s(2), 0)),
            Some(Ending::Settled)
        );
    }
}
