//! How a message came to be lost: the consumer threw it away (a nack or reject without
//! requeue), or something marked it done before any effect (an accepted commit or ack, or a
//! no-ack delivery) and then: the marker was never handed it (an offset reset or a seek
//! ahead), it died (a crash in the at-most-once window), it was still working when the run was
//! cut off, or it lived on (it skipped the work).
//!
//! Invariants: without a commit, ack, nack, reject or no-ack delivery on the timeline the loss
//! is `unexplained`, and the evidence says what was missing. The harness's own stop after
//! `run_ended` is never a crash. Only the crash rules blame a fault: the last one that hit the
//! process that died, before it died.

use crate::judge::mechanism::evidence::{
    delivery_evidence, fault_evidence, name, Evidence, Finding,
};
use crate::judge::mechanism::index::{Exit, FetchError, Index};
use crate::judge::mechanism::kind::Mechanism;
use crate::judge::model::Anomaly;
use crate::timeline::{AckVerb, ProcessRef};

/// Who marked the message done, and how.
#[derive(Clone, Copy)]
struct Mark {
    /// When (µs).
    t_us: u64,
    /// The event's position.
    seq: u64,
    /// The consumer incarnation.
    who: ProcessRef,
    /// True: a no-ack delivery; false: an accepted commit or ack.
    no_ack: bool,
}

impl Index<'_> {
    /// The mechanism, blamed fault and evidence of a loss.
    pub(crate) fn lost(&self, a: &Anomaly) -> Finding {
        let mut ev: Vec<Evidence> = self
            .deliveries_of(&a.id)
            .map(|d| delivery_evidence(d.t_us, d.seq, d.to, ""))
            .collect();
        if let Some(r) = self.returns_of(&a.id).find(|r| !r.requeue) {
            ev.push(Evidence {
                t_us: r.t_us,
                seq: Some(r.seq),
                what: format!(
                    "{} {} it without requeue, before any effect: the broker dropped it",
                    name(r.by),
                    match r.verb {
                        AckVerb::Nack => "nacked",
                        AckVerb::Reject | AckVerb::Ack => "rejected",
                    }
                ),
            });
            return Finding::new(Mechanism::DroppedByConsumer, ev);
        }
        let Some(mark) = self.mark_of(a) else {
            ev.push(self.unmarked(a));
            return Finding::new(Mechanism::Unexplained, ev);
        };
        ev.push(Evidence {
            t_us: mark.t_us,
            seq: Some(mark.seq),
            what: if mark.no_ack {
                format!(
                    "{} consumes in no-ack mode: the broker forgot it on delivery",
                    name(mark.who)
                )
            } else {
                format!(
                    "{} {} it before any effect",
                    name(mark.who),
                    self.marked_word()
                )
            },
        });
        if !self.amqp && !mark.no_ack && !self.deliveries_of(&a.id).any(|d| d.to == mark.who) {
            if let Some(reset) = self.reset_before(a, mark) {
                return self.offset_reset(a, mark, reset, ev);
            }
            return self.never_delivered(a, mark.who, ev);
        }
        self.after_marking(mark, ev)
    }

    /// Who marked the message done first: an accepted commit (ack) covering it, else a no-ack
    /// delivery.
    fn mark_of(&self, a: &Anomaly) -> Option<Mark> {
        if let Some((t_us, seq, who)) = self.first_mark(a) {
            return Some(Mark {
                t_us,
                seq,
                who,
                no_ack: false,
            });
        }
        self.deliveries_of(&a.id)
            .find(|d| self.no_ack.contains(&d.to))
            .map(|d| Mark {
                t_us: d.t_us,
                seq: d.seq,
                who: d.to,
                no_ack: true,
            })
    }

    /// Why nothing on the timeline marked the message done.
    fn unmarked(&self, a: &Anomaly) -> Evidence {
        let what = if self.saw_marks {
            format!(
                "the broker counts it done, but no {} seen by the proxy covered it",
                if self.amqp { "ack" } else { "commit" }
            )
        } else {
            "no commits or acks on the timeline: the consumer did not go through the proxy".into()
        };
        Evidence {
            t_us: a.produced_at_us.unwrap_or(0),
            seq: None,
            what,
        }
    }

    /// The proxy's OFFSET_OUT_OF_RANGE answer to a Fetch of `mark.who` from at or before the
    /// message's offset, before the commit that passed it: the consumer's position was reset
    /// over it (`auto.offset.reset=latest`).
    fn reset_before(&self, a: &Anomaly, mark: Mark) -> Option<&FetchError<'_>> {
        let (partition, offset) = (a.partition?, a.offset?);
        self.fetch_errors.iter().find(|f| {
            f.to == mark.who
                && f.t_us <= mark.t_us
                && f.sent == "OFFSET_OUT_OF_RANGE"
                && f.positions
                    .iter()
                    .any(|p| p.partition == partition && p.offset <= offset)
        })
    }

    /// Lost to an offset reset: the proxy told `mark.who` its fetch position was out of range,
    /// the client reset it past the message, and its commit then passed the message it was
    /// never handed. The `fetch_error` fault that armed the reply is named.
    fn offset_reset(
        &self,
        a: &Anomaly,
        mark: Mark,
        reset: &FetchError<'_>,
        mut ev: Vec<Evidence>,
    ) -> Finding {
        let from: Vec<String> = reset
            .positions
            .iter()
            .map(|p| format!("offset {} of partition {}", p.offset, p.partition))
            .collect();
        ev.push(Evidence {
            t_us: reset.t_us,
            seq: Some(reset.seq),
            what: format!(
                "the proxy answered {}'s Fetch from {} with {}: its client reset its position \
                 (auto.offset.reset) past {}, which no Fetch response ever carried to it",
                name(mark.who),
                from.join(", "),
                reset.sent,
                match (a.partition, a.offset) {
                    (Some(p), Some(o)) => format!("offset {o} of partition {p}"),
                    _ => "the message".to_owned(),
                }
            ),
        });
        let fault = self.fault_on(&[mark.who], (0, reset.t_us), false);
        if let Some((fseq, f)) = fault {
            ev.push(fault_evidence(fseq, f));
        }
        Finding::blaming(Mechanism::OffsetResetSkipped, fault, ev)
    }

    /// Kafka: `who` committed past the message without any Fetch response carrying it to
    /// `who`: its position jumped over it (an offset reset to the end, a seek ahead).
    fn never_delivered(&self, a: &Anomaly, who: ProcessRef, mut ev: Vec<Evidence>) -> Finding {
        let at = match (a.partition, a.offset) {
            (Some(p), Some(o)) => format!("offset {o} of partition {p}"),
            _ => "it".to_owned(),
        };
        let others = self.deliveries_of(&a.id).count();
        ev.push(Evidence {
            t_us: a.produced_at_us.unwrap_or(0),
            seq: None,
            what: if others == 0 {
                format!("no Fetch response through the proxy carried {at} to any consumer")
            } else {
                format!(
                    "no Fetch response through the proxy carried {at} to {} (it went only to \
                     other incarnations)",
                    name(who)
                )
            },
        });
        Finding::new(Mechanism::NeverDelivered, ev)
    }

    /// The marker then died (a crash), was still working when the run was cut off, or lived on
    /// (it skipped the work).
    fn after_marking(&self, mark: Mark, mut ev: Vec<Evidence>) -> Finding {
        let who = mark.who;
        let exit = self.exit_of(who).filter(|exit| exit.t_us >= mark.t_us);
        if let Some(exit) = exit.filter(|e| !e.status.is_success()) {
            if !self.stopped_by_harness(who, exit) {
                ev.push(Evidence {
                    t_us: exit.t_us,
                    seq: Some(exit.seq),
                    what: format!("{} exited ({}) before the effect", name(who), exit.text),
                });
                let fault = self.fault_on(&[who], (0, exit.t_us), false);
                if let Some((fseq, f)) = fault {
                    ev.push(fault_evidence(fseq, f));
                }
                let mechanism = if mark.no_ack {
                    Mechanism::NoAckDelivery
                } else {
                    Mechanism::CrashAfterCommit
                };
                return Finding::blaming(mechanism, fault, ev);
            }
        }
        ev.push(self.lived_on(who, exit));
        match self.end {
            Some((_, false)) if self.alive_at_end(who) => {
                Finding::new(Mechanism::UnfinishedAtEnd, ev)
            }
            _ => Finding::new(Mechanism::Skipped, ev),
        }
    }

    /// How `who` lived on after marking the message done: to a clean exit, to the end of the
    /// run (settled or cut off), or to the harness's stop after it.
    fn lived_on(&self, who: ProcessRef, exit: Option<&Exit>) -> Evidence {
        let ended = match self.end {
            Some((_, true)) => {
                "the run ended settled (the work done, no effect for the settle time)"
            }
            Some((_, false)) => {
                "the run was cut off (deadline, abort or harness failure) while it still ran"
            }
            None => "the timeline has no run_ended event",
        };
        match exit {
            Some(exit) if self.stopped_by_harness(who, exit) => Evidence {
                t_us: exit.t_us,
                seq: Some(exit.seq),
                what: format!(
                    "{} lived on without applying it; {ended}, then the harness stopped it ({}), \
                     which is not a crash",
                    name(who),
                    exit.text
                ),
            },
            Some(exit) => Evidence {
                t_us: exit.t_us,
                seq: Some(exit.seq),
                what: format!(
                    "{} lived on without applying it and exited ({})",
                    name(who),
                    exit.text
                ),
            },
            None => Evidence {
                t_us: self.end.map_or(0, |(t, _)| t),
                seq: None,
                what: format!("{} lived on without applying it; {ended}", name(who)),
            },
        }
    }
}
