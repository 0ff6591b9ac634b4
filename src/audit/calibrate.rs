//! Calibration: what one fault-free run says about the consumer (effects arrive and name their
//! messages, the consumer finishes, how long a message takes, how often it commits or acks,
//! the session timeout it asks for), and whether an audit can go on from there.
//!
//! Pure: a function of the run's events and its judgement, so it is unit-tested on timelines.

use std::time::Duration;

use serde::Serialize;

use crate::judge::{InconclusiveReason, Judgement, Verdict};
use crate::timeline::{AckPhase, CommitPhase, EndReason, Event, RebalanceKind, Stamped};

/// What the fault-free run measured; the cells are built from it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Calibration {
    /// The calibration run's folder.
    pub run_dir: String,
    /// Messages the broker acknowledged.
    pub produced: u64,
    /// Messages with at least one applied effect.
    pub effected: u64,
    /// From the consumer's first start to its last effect, µs.
    pub busy_us: u64,
    /// The run's whole length, µs (start to `run_ended`).
    pub run_us: u64,
    /// Average time per message while the consumer worked, µs (`busy_us / effected`).
    pub per_message_us: u64,
    /// Kafka OffsetCommit requests the proxy saw.
    pub commits: u64,
    /// AMQP acks (and nacks, rejects) the proxy saw written to the broker.
    pub acks: u64,
    /// Messages handed to the consumer, as the proxy saw them.
    pub deliveries: u64,
    /// Group joins the proxy saw (a Kafka consumer group).
    pub joins: u64,
    /// The largest session timeout a classic JoinGroup asked for, ms.
    pub session_timeout_ms: Option<u64>,
    /// The largest heartbeat timeout an AMQP connection negotiated, s (0: heartbeats off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_s: Option<u64>,
}

/// Why the audit cannot go on after calibration.
#[derive(Debug, Clone, PartialEq)]
pub enum CalibrationStop {
    /// No effect at all named a produced message: nothing a fault does could be seen.
    NoEffect {
        /// Effects the sink could not read with `effects.id`.
        rejected: u64,
    },
    /// The fault-free run did not end EXACT: the cells could not tell a fault's doing from
    /// the consumer's own.
    NotExact {
        /// Its verdict.
        verdict: Verdict,
        /// Its exit code.
        exit_code: i32,
    },
    /// The run ended on a plan error or an infrastructure failure.
    Ended(EndReason),
}

impl std::fmt::Display for CalibrationStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalibrationStop::NoEffect { rejected: 0 } => f.write_str(
                "the consumer produced no effect naming a produced message in the fault-free \
                 calibration run: check that it reads the topic or queue it is given and sends \
                 its effects to the plan's sink",
            ),
            CalibrationStop::NoEffect { rejected } => write!(
                f,
                "the plan's effects.id rule read the ID of none of the effects in the \
                 fault-free calibration run ({rejected} unreadable): fix effects.id (the \
                 calibration run's report.md shows a sample)"
            ),
            CalibrationStop::NotExact { verdict, .. } => write!(
                f,
                "the fault-free calibration run was {verdict} for more than the missing faults: \
                 a cell could not tell what a fault did from what the consumer does anyway (see \
                 its report.md)"
            ),
            CalibrationStop::Ended(reason) => write!(
                f,
                "the calibration run ended on {}: see its report.md",
                serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        }
    }
}

impl CalibrationStop {
    /// The audit's exit code: 2 when the plan must change (nothing readable, a plan error),
    /// 3 when interrupted, 4 for a harness failure, else the calibration run's own.
    pub fn exit_code(&self) -> i32 {
        use crate::error::exit;
        match self {
            CalibrationStop::NoEffect { .. } => exit::USAGE,
            CalibrationStop::NotExact { exit_code, .. } => *exit_code,
            CalibrationStop::Ended(EndReason::PlanError) => exit::USAGE,
            // Interrupted: nothing is known yet.
            CalibrationStop::Ended(EndReason::Aborted) => exit::INCONCLUSIVE,
            CalibrationStop::Ended(
                EndReason::InfrastructureError | EndReason::Settled | EndReason::Deadline,
            ) => exit::INFRASTRUCTURE,
        }
    }
}

/// Measures the fault-free run; `Err` when the audit cannot go on from it.
pub fn calibrate(
    run_dir: &str,
    events: &[Stamped],
    rec: &Judgement,
) -> Result<Calibration, CalibrationStop> {
    match rec.end_reason {
        Some(r @ (EndReason::PlanError | EndReason::InfrastructureError | EndReason::Aborted)) => {
            return Err(CalibrationStop::Ended(r))
        }
        Some(EndReason::Settled | EndReason::Deadline) | None => {}
    }
    if rec.counts.effected == 0 {
        return Err(CalibrationStop::NoEffect {
            rejected: rec.counts.rejected,
        });
    }
    if !clean(rec) {
        return Err(CalibrationStop::NotExact {
            verdict: rec.verdict,
            exit_code: rec.exit_code(),
        });
    }
    Ok(measure(run_dir, events, rec))
}

/// EXACT, or INCONCLUSIVE only because no fault was planned (what a fault-free run always is).
fn clean(rec: &Judgement) -> bool {
    match rec.verdict {
        Verdict::Exact => true,
        Verdict::Inconclusive => rec
            .inconclusive_reasons
            .iter()
            .all(|r| matches!(r, InconclusiveReason::NoFaultPlanned)),
        Verdict::Duplicated | Verdict::Lost | Verdict::LostAndDuplicated => false,
    }
}

fn measure(run_dir: &str, events: &[Stamped], rec: &Judgement) -> Calibration {
    let mut c = Calibration {
        run_dir: run_dir.to_owned(),
        produced: rec.counts.produced,
        effected: rec.counts.effected,
        busy_us: 0,
        run_us: rec.ended_at_us.unwrap_or(0),
        per_message_us: 0,
        commits: 0,
        acks: 0,
        deliveries: 0,
        joins: 0,
        session_timeout_ms: None,
        heartbeat_s: None,
    };
    let (mut first_start, mut last_effect) = (None, 0);
    for e in events {
        match &e.event {
            Event::Process { .. } => {
                first_start.get_or_insert(e.t_us);
            }
            Event::Effect { .. } => last_effect = e.t_us,
            Event::Commit {
                phase: CommitPhase::Request,
                ..
            } => c.commits += 1,
            Event::Ack {
                phase: AckPhase::Forwarded,
                ..
            } => c.acks += 1,
            Event::ConsumerSettings {
                heartbeat_s: Some(s),
                ..
            } => {
                let s = u64::from(*s);
                c.heartbeat_s = Some(c.heartbeat_s.map_or(s, |h| h.max(s)));
            }
            Event::Delivered { .. } => c.deliveries += 1,
            Event::DeliveredBatch { records, .. } => c.deliveries += records.len() as u64,
            Event::Rebalance {
                change: RebalanceKind::Join,
                session_timeout_ms,
                ..
            } => {
                c.joins += 1;
                if let Some(ms) = session_timeout_ms.and_then(|ms| u64::try_from(ms).ok()) {
                    c.session_timeout_ms = Some(c.session_timeout_ms.map_or(ms, |m| m.max(ms)));
                }
            }
            _ => {}
        }
    }
    c.busy_us = last_effect.saturating_sub(first_start.unwrap_or(0));
    c.per_message_us = c.busy_us / c.effected.max(1);
    c
}

impl Calibration {
    /// How long the broker waits before it takes a silent consumer for gone: the session
    /// timeout a Kafka consumer asked for, or three times the heartbeat timeout an AMQP
    /// connection negotiated (RabbitMQ checks what it received once per timeout and closes
    /// after two silent checks; measured on RabbitMQ with a 5 s timeout: a consumer stopped
    /// for 8.5 s kept its connection, one stopped for 16 s lost it 14.7 s in); `None` when the
    /// proxy saw neither or heartbeats are off.
    pub fn liveness_timeout(&self) -> Option<Duration> {
        let heartbeat = self
            .heartbeat_s
            .filter(|&s| s > 0)
            .map(|s| Duration::from_secs(3 * s));
        self.session_timeout_ms
            .map(Duration::from_millis)
            .or(heartbeat)
    }

    /// The liveness timeout as the audit's outputs show it ("session timeout 45000 ms",
    /// "heartbeat timeout 5 s", "heartbeats off", "session timeout not seen").
    pub fn liveness_text(&self) -> String {
        match (self.session_timeout_ms, self.heartbeat_s) {
            (Some(ms), _) => format!("session timeout {ms} ms"),
            (None, Some(0)) => "heartbeats off (RabbitMQ never notices a still consumer)".into(),
            (None, Some(s)) => format!("heartbeat timeout {s} s"),
            (None, None) => "session timeout not seen".into(),
        }
    }

    /// Effects per commit (Kafka) or per ack (AMQP), when it committed or acked at all.
    pub fn messages_per_mark(&self) -> Option<f64> {
        let marks = self.commits + self.acks;
        (marks > 0).then(|| self.effected as f64 / marks as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::analyze;
    use crate::judge::fixtures::{commit_event, committed, Tl};
    use crate::timeline::ProcessPhase;

    /// A fault-free run of two messages with `effects` effects (the third repeats `a`).
    fn fault_free(effects: usize) -> Tl {
        let mut tl = Tl::new();
        tl.start(&[], 2, "at-least-once")
            .produced("a", 0, 0)
            .produced("b", 0, 1)
            .process(1, ProcessPhase::Started);
        for id in ["a", "b", "a"].into_iter().take(effects) {
            tl.effect(id, 1);
        }
        tl.push(commit_event(
            "g",
            (0, 1),
            vec![committed("t", 0, 2)],
            CommitPhase::Request,
        ))
        .progress(&[(0, 2)])
        .end(EndReason::Settled);
        tl
    }

    #[test]
    fn a_fault_free_run_measures_time_per_message_and_commits() {
        let tl = fault_free(2);
        let cal = calibrate("d", &tl.events, &analyze(&tl.events)).unwrap();
        assert_eq!((cal.produced, cal.effected, cal.commits), (2, 2, 1));
        // Started at 4 ms, effects at 5 and 6 ms: 2 ms busy, 1 ms a message.
        assert_eq!((cal.busy_us, cal.per_message_us), (2_000, 1_000));
        assert_eq!(cal.messages_per_mark(), Some(2.0));
    }

    #[test]
    fn the_largest_negotiated_amqp_heartbeat_is_the_liveness_timeout() {
        let mut tl = fault_free(2);
        for (incarnation, heartbeat_s) in [(1, Some(0)), (2, Some(5)), (3, None)] {
            tl.push(Event::ConsumerSettings {
                instance: 0,
                incarnation,
                no_ack: false,
                prefetch: None,
                heartbeat_s,
            });
        }
        let cal = calibrate("d", &tl.events, &analyze(&tl.events)).unwrap();
        assert_eq!(cal.heartbeat_s, Some(5));
        assert_eq!(cal.liveness_timeout(), Some(Duration::from_secs(15)));
    }

    #[test]
    fn no_effect_stops_the_audit_with_exit_2() {
        let tl = fault_free(0);
        let stop = calibrate("d", &tl.events, &analyze(&tl.events)).unwrap_err();
        assert_eq!(stop, CalibrationStop::NoEffect { rejected: 0 });
        assert_eq!(stop.exit_code(), 2);
        assert!(stop.to_string().contains("no effect"), "{stop}");
    }

    #[test]
    fn a_duplicate_without_faults_stops_the_audit_with_the_run_s_exit() {
        let tl = fault_free(3);
        let rec = analyze(&tl.events);
        let stop = calibrate("d", &tl.events, &rec).unwrap_err();
        assert!(matches!(
            stop,
            CalibrationStop::NotExact {
                verdict: Verdict::Duplicated,
                ..
            }
        ));
        assert_eq!(stop.exit_code(), rec.exit_code());
    }
}
