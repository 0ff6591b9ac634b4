//! The audit's cells: one kind of fault each, whether it applies to this plan and consumer
//! (and why not), and the plan faults one repeat of it runs with, drawn from the calibration
//! with the repeat's seed.
//!
//! Pure: the cell list and the faults are functions of the plan, the calibration and a seed.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::audit::calibrate::Calibration;
use crate::plan::{BrokerKind, Count, EventKind, FaultSpec, Plan, SinkKind, Target, When};

/// One kind of fault the audit measures. The closed set of cells, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    /// SIGKILL while the sink holds the answer to an effect.
    KillDuringEffect,
    /// SIGKILL right after an effect was observed.
    KillAfterEffect,
    /// SIGKILL while a commit (Kafka) or an ack (AMQP) is held before the broker gets it.
    KillBeforeMark,
    /// SIGKILL right after a commit or an ack.
    KillAfterMark,
    /// SIGKILL right after a delivery.
    KillAfterDeliver,
    /// SIGTERM, SIGKILL after the grace period.
    Terminate,
    /// SIGSTOP longer than the session or heartbeat timeout (the zombie), then SIGCONT.
    Pause,
    /// A transient member joins the group, holds its share, leaves (Kafka).
    Rebalance,
    /// Nothing forwarded either way, longer than the session or heartbeat timeout.
    Partition,
    /// The consumer's broker connections closed with a reset.
    Sever,
    /// One more instance, then one fewer.
    Scale,
}

/// Every cell, in report order.
pub const ALL: [CellKind; 11] = [
    CellKind::KillDuringEffect,
    CellKind::KillAfterEffect,
    CellKind::KillBeforeMark,
    CellKind::KillAfterMark,
    CellKind::KillAfterDeliver,
    CellKind::Terminate,
    CellKind::Pause,
    CellKind::Rebalance,
    CellKind::Partition,
    CellKind::Sever,
    CellKind::Scale,
];

/// The shortest and longest a pause or partition lasts when no liveness timeout was seen
/// (AMQP heartbeats off, KIP-848): then it is a third of the calibration's working time, within these.
const UNTIMED_LENGTH: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// What a transient member holds for in the rebalance cell.
const REBALANCE_HOLD: Duration = Duration::from_secs(2);

impl CellKind {
    /// The cell's name on this broker (`kill-before-commit` / `kill-before-ack`), as
    /// `--cells` takes it and the reports show it.
    pub fn name(self, broker: BrokerKind) -> &'static str {
        let kafka = broker == BrokerKind::Kafka;
        match self {
            CellKind::KillDuringEffect => "kill-during-effect",
            CellKind::KillAfterEffect => "kill-after-effect",
            CellKind::KillBeforeMark if kafka => "kill-before-commit",
            CellKind::KillBeforeMark => "kill-before-ack",
            CellKind::KillAfterMark if kafka => "kill-after-commit",
            CellKind::KillAfterMark => "kill-after-ack",
            CellKind::KillAfterDeliver => "kill-after-deliver",
            CellKind::Terminate => "terminate",
            CellKind::Pause => "pause",
            CellKind::Rebalance => "rebalance",
            CellKind::Partition => "partition",
            CellKind::Sever => "sever",
            CellKind::Scale => "scale",
        }
    }

    /// True for the cells whose fault kills a process outright (no graceful stop).
    pub fn is_kill(self) -> bool {
        match self {
            CellKind::KillDuringEffect
            | CellKind::KillAfterEffect
            | CellKind::KillBeforeMark
            | CellKind::KillAfterMark
            | CellKind::KillAfterDeliver => true,
            CellKind::Terminate
            | CellKind::Pause
            | CellKind::Rebalance
            | CellKind::Partition
            | CellKind::Sever
            | CellKind::Scale => false,
        }
    }

    /// `Ok` when the cell can run on this plan and consumer, else why not.
    pub fn applies(self, plan: &Plan, cal: &Calibration) -> Result<(), String> {
        let kafka = plan.broker.kind == BrokerKind::Kafka;
        let proxy = || {
            if plan.via_proxy() {
                Ok(())
            } else {
                Err("the consumer does not go through the proxy (consumer.via_proxy: false)".into())
            }
        };
        match self {
            CellKind::KillDuringEffect
                if !plan.boundaries().iter().any(|b| b.sink == SinkKind::Http) =>
            {
                Err("only the http sink can hold an effect's answer".into())
            }
            CellKind::KillDuringEffect | CellKind::KillAfterEffect | CellKind::Terminate => Ok(()),
            CellKind::KillBeforeMark | CellKind::KillAfterMark => {
                proxy()?;
                match (kafka, cal.commits, cal.acks) {
                    (true, 0, _) => Err("the consumer sent no OffsetCommit in calibration".into()),
                    (false, _, 0) => Err(
                        "the consumer sent no ack in calibration (no-ack mode: the broker \
                         counts a message done when it sends it)"
                            .into(),
                    ),
                    _ => Ok(()),
                }
            }
            CellKind::KillAfterDeliver | CellKind::Partition | CellKind::Sever => proxy(),
            CellKind::Pause if kafka && cal.session_timeout_ms.is_none() => Err(
                "no session timeout seen in a JoinGroup (KIP-848 keeps it on the broker)".into(),
            ),
            CellKind::Pause | CellKind::Scale => Ok(()),
            CellKind::Rebalance if !kafka => Err("AMQP has no consumer group to rebalance".into()),
            CellKind::Rebalance => {
                proxy()?;
                if cal.joins == 0 {
                    return Err("the consumer joined no group in calibration".into());
                }
                Ok(())
            }
        }
    }

    /// The faults of one repeat: the nth values drawn with `seed` within the calibrated run,
    /// lengths longer than the session timeout the consumer asked for.
    pub fn faults(self, plan: &Plan, cal: &Calibration, seed: u64) -> Vec<FaultSpec> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let kafka = plan.broker.kind == BrokerKind::Kafka;
        let consumer = Some(Target::AllInstances);
        // An effect a fifth to a half of the way through the work.
        let effects = cal.effected.max(1);
        let nth_effect = draw(&mut rng, effects / 5, effects / 2);
        let when = |kind, nth: u64, moment: Moment| When {
            after: (moment == Moment::After).then_some(kind),
            before: (moment == Moment::Before).then_some(kind),
            during: (moment == Moment::During).then_some(kind),
            nth: Some(Count::new(nth.max(1))),
            ..When::default()
        };
        let after_effect = when(EventKind::Effect, nth_effect, Moment::After);
        let mark = if kafka {
            EventKind::Commit
        } else {
            EventKind::Ack
        };
        let marks = if kafka { cal.commits } else { cal.acks };
        let nth_mark = draw(&mut rng, marks / 5, marks / 2);
        let length = self.length(cal);
        let fault = |when| FaultSpec {
            when,
            ..FaultSpec::default()
        };
        match self {
            CellKind::KillDuringEffect => vec![FaultSpec {
                kill: consumer,
                ..fault(when(EventKind::Effect, nth_effect, Moment::During))
            }],
            CellKind::KillAfterEffect => vec![FaultSpec {
                kill: consumer,
                ..fault(after_effect)
            }],
            CellKind::KillBeforeMark => vec![FaultSpec {
                kill: consumer,
                ..fault(when(mark, nth_mark, Moment::Before))
            }],
            CellKind::KillAfterMark => vec![FaultSpec {
                kill: consumer,
                ..fault(when(mark, nth_mark, Moment::After))
            }],
            CellKind::KillAfterDeliver => {
                let d = cal.deliveries.max(1);
                vec![FaultSpec {
                    kill: consumer,
                    ..fault(when(
                        EventKind::Deliver,
                        draw(&mut rng, d / 5, d / 2),
                        Moment::After,
                    ))
                }]
            }
            CellKind::Terminate => vec![FaultSpec {
                terminate: consumer,
                ..fault(after_effect)
            }],
            CellKind::Pause => vec![FaultSpec {
                pause: Some(Target::Instance(0)),
                for_: Some(length),
                ..fault(after_effect)
            }],
            CellKind::Rebalance => vec![FaultSpec {
                rebalance: Some("group".into()),
                for_: Some(length),
                ..fault(after_effect)
            }],
            CellKind::Partition => vec![FaultSpec {
                partition: consumer,
                for_: Some(length),
                ..fault(after_effect)
            }],
            CellKind::Sever => vec![FaultSpec {
                sever: consumer,
                ..fault(after_effect)
            }],
            CellKind::Scale => {
                let up = draw(&mut rng, effects / 10, effects / 4);
                let down = draw(&mut rng, effects / 2, effects * 3 / 4).max(up + 1);
                vec![
                    FaultSpec {
                        scale: Some(1),
                        ..fault(when(EventKind::Effect, up, Moment::After))
                    },
                    FaultSpec {
                        scale: Some(-1),
                        ..fault(when(EventKind::Effect, down, Moment::After))
                    },
                ]
            }
        }
    }

    /// How long the cell's fault lasts: past the liveness timeout (Kafka's session timeout,
    /// RabbitMQ's heartbeat timeout; half as long again, and a second) for a pause or a
    /// partition, so the broker takes the consumer for gone; with none seen (heartbeats off),
    /// a third of the calibration's working time (first start to last effect), so the
    /// consumer stands still for a third of its work whatever its pace, within
    /// [`UNTIMED_LENGTH`]; a fixed hold for a rebalance; none otherwise.
    pub fn length(self, cal: &Calibration) -> Duration {
        let (shortest, longest) = UNTIMED_LENGTH;
        let a_third_of_the_work = Duration::from_micros(cal.busy_us / 3).clamp(shortest, longest);
        let past_session = cal
            .liveness_timeout()
            .map_or(a_third_of_the_work, |s| s + s / 2 + Duration::from_secs(1));
        match self {
            CellKind::Pause | CellKind::Partition => past_session,
            CellKind::Rebalance => REBALANCE_HOLD,
            CellKind::KillDuringEffect
            | CellKind::KillAfterEffect
            | CellKind::KillBeforeMark
            | CellKind::KillAfterMark
            | CellKind::KillAfterDeliver
            | CellKind::Terminate
            | CellKind::Sever
            | CellKind::Scale => Duration::ZERO,
        }
    }
}

/// Where a counted trigger fires relative to its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    Before,
    After,
    During,
}

/// A number in `low..=high`, at least 1.
fn draw(rng: &mut ChaCha8Rng, low: u64, high: u64) -> u64 {
    let low = low.max(1);
    rng.random_range(low..=high.max(low))
}

/// The cells `--cells` names, in report order; `Err` names an unknown one and lists the rest.
pub fn select(names: &[String], broker: BrokerKind) -> Result<Vec<CellKind>, String> {
    if names.is_empty() {
        return Ok(ALL.to_vec());
    }
    for n in names {
        if !ALL.iter().any(|c| c.name(broker) == n) {
            let known: Vec<&str> = ALL.iter().map(|c| c.name(broker)).collect();
            return Err(format!(
                "--cells: no cell `{n}` on this broker; the cells are {}",
                known.join(", ")
            ));
        }
    }
    Ok(ALL
        .into_iter()
        .filter(|c| names.iter().any(|n| n == c.name(broker)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calibration(commits: u64, acks: u64, session_ms: Option<u64>) -> Calibration {
        Calibration {
            run_dir: "r".into(),
            produced: 200,
            effected: 200,
            busy_us: 2_000_000,
            run_us: 6_000_000,
            per_message_us: 10_000,
            commits,
            acks,
            deliveries: 200,
            joins: 1,
            session_timeout_ms: session_ms,
            heartbeat_s: None,
        }
    }

    fn plan(kind: &str) -> Plan {
        let broker = match kind {
            "kafka" => "{kind: kafka, bootstrap: '127.0.0.1:9092'}",
            _ => "{kind: amqp, url: 'amqp://127.0.0.1:5672/%2f'}",
        };
        let text = format!(
            "name: t\nbroker: {broker}\nworkload: {{messages: 200}}\n\
             consumer: {{command: [c]}}\neffects: {{sink: http}}\nexpect: at-least-once\n"
        );
        crate::plan::parse_plan(std::path::Path::new("t.yaml"), &text).unwrap()
    }

    #[test]
    fn every_cell_makes_faults_a_plan_accepts_with_nth_inside_the_calibrated_run() {
        for broker in ["kafka", "amqp"] {
            let p = plan(broker);
            let cal = calibration(20, 200, Some(2000));
            for cell in ALL {
                if cell.applies(&p, &cal).is_err() {
                    continue;
                }
                for seed in 0..20 {
                    let mut with = p.clone();
                    with.faults = cell.faults(&p, &cal, seed);
                    let text = serde_yaml::to_string(&with).unwrap();
                    let loaded = crate::plan::parse_plan(std::path::Path::new("c.yaml"), &text);
                    let loaded = loaded.unwrap_or_else(|e| panic!("{broker} {cell:?}: {e}"));
                    for f in &with.faults {
                        let nth = f.when.nth.unwrap().get();
                        assert!((1..=200).contains(&nth), "{cell:?} nth {nth}");
                    }
                    assert!(!loaded.loaded.faults.is_empty());
                }
            }
        }
    }

    #[test]
    fn seeds_vary_the_nth_and_the_same_seed_repeats_it() {
        let (p, cal) = (plan("kafka"), calibration(20, 0, Some(2000)));
        let nth = |seed| CellKind::KillAfterEffect.faults(&p, &cal, seed)[0].when.nth;
        assert_eq!(nth(7), nth(7));
        assert!((0..10).any(|s| nth(s) != nth(7)));
    }

    #[test]
    fn a_pause_and_a_partition_outlast_the_session_timeout() {
        let cal = calibration(20, 0, Some(2000));
        assert!(CellKind::Pause.length(&cal) > Duration::from_millis(2000));
        assert!(CellKind::Partition.length(&cal) > Duration::from_millis(2000));
    }

    #[test]
    fn an_amqp_pause_and_partition_outlast_the_negotiated_heartbeat_timeout() {
        let mut cal = calibration(0, 100, None);
        cal.heartbeat_s = Some(5);
        // Three timeouts (RabbitMQ's two silent checks, measured), half as long again, and 1 s.
        let past = Duration::from_millis(23_500);
        assert_eq!(CellKind::Pause.length(&cal), past);
        assert_eq!(CellKind::Partition.length(&cal), past);
        assert_eq!(cal.liveness_text(), "heartbeat timeout 5 s");
        cal.heartbeat_s = Some(0);
        cal.busy_us = 9_000_000;
        assert_eq!(
            CellKind::Pause.length(&cal),
            Duration::from_secs(3),
            "heartbeats off: nothing to outlast, a third of the work"
        );
    }

    #[test]
    fn without_a_session_timeout_a_pause_lasts_a_third_of_the_calibrated_work() {
        let mut cal = calibration(0, 100, None);
        cal.busy_us = 9_000_000;
        assert_eq!(CellKind::Pause.length(&cal), Duration::from_secs(3));
        assert_eq!(CellKind::Partition.length(&cal), Duration::from_secs(3));
        cal.busy_us = 1_200_000;
        assert_eq!(
            CellKind::Pause.length(&cal),
            Duration::from_secs(1),
            "at least 1 s"
        );
        cal.busy_us = 600_000_000;
        assert_eq!(
            CellKind::Pause.length(&cal),
            Duration::from_secs(30),
            "at most 30 s"
        );
    }

    #[test]
    fn cells_that_cannot_apply_say_why() {
        let (k, a) = (plan("kafka"), plan("amqp"));
        let no_commit = calibration(0, 0, None);
        assert!(CellKind::KillBeforeMark
            .applies(&k, &no_commit)
            .unwrap_err()
            .contains("OffsetCommit"));
        assert!(CellKind::KillAfterMark
            .applies(&a, &no_commit)
            .unwrap_err()
            .contains("no-ack"));
        assert!(CellKind::Rebalance
            .applies(&a, &no_commit)
            .unwrap_err()
            .contains("AMQP"));
        assert!(CellKind::Pause
            .applies(&k, &no_commit)
            .unwrap_err()
            .contains("session timeout"));
        assert_eq!(CellKind::Pause.applies(&a, &no_commit), Ok(()));
    }

    #[test]
    fn cells_are_selected_by_their_broker_name_in_report_order() {
        let names = vec!["sever".to_string(), "kill-after-ack".to_string()];
        let picked = select(&names, BrokerKind::Amqp).unwrap();
        assert_eq!(picked, vec![CellKind::KillAfterMark, CellKind::Sever]);
        let e = select(&names, BrokerKind::Kafka).unwrap_err();
        assert!(
            e.contains("kill-after-ack") && e.contains("kill-after-commit"),
            "{e}"
        );
    }
}
