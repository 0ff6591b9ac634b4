//! How a message came to be lost: who marked it done before any effect (an accepted commit or
//! ack, or a no-ack delivery), and whether that process then died (a crash in the at-most-once
//! window) or lived on (it skipped the work).
//!
//! Invariant: without a commit, ack or no-ack delivery on the timeline the loss is
//! `unexplained`, and the evidence says what was missing.

use crate::judge::mechanism::evidence::{
    delivery_evidence, fault_evidence, name, Evidence, Finding,
};
use crate::judge::mechanism::index::Index;
use crate::judge::mechanism::kind::Mechanism;
use crate::judge::model::Anomaly;
use crate::timeline::ProcessRef;

impl Index<'_> {
    /// The mechanism, decisive moment and evidence of a loss.
    pub(crate) fn lost(&self, a: &Anomaly) -> Finding {
        let mut ev: Vec<Evidence> = self
            .deliveries_of(&a.id)
            .map(|d| delivery_evidence(d.t_us, d.seq, d.to, ""))
            .collect();
        // Who marked it done: the first accepted commit (ack) covering it, or a no-ack
        // delivery.
        let no_ack = self
            .deliveries_of(&a.id)
            .find(|d| self.no_ack.contains(&d.to))
            .map(|d| (d.t_us, d.seq, d.to));
        let (mechanism_if_crash, (tm, seq, who)) = match (self.first_mark(a), no_ack) {
            (Some(m), _) => (Mechanism::CrashAfterCommit, m),
            (None, Some(d)) => (Mechanism::NoAckDelivery, d),
            (None, None) => {
                ev.push(self.unmarked(a));
                return Finding::new(Mechanism::Unexplained, None, ev);
            }
        };
        ev.push(Evidence {
            t_us: tm,
            seq: Some(seq),
            what: if mechanism_if_crash == Mechanism::NoAckDelivery {
                format!(
                    "{} consumes in no-ack mode: the broker forgot it on delivery",
                    name(who)
                )
            } else {
                format!("{} {} it before any effect", name(who), self.marked_word())
            },
        });
        self.died_after_marking(who, tm, mechanism_if_crash, ev)
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

    /// `who` marked the message done at `tm`: if it then ended other than by a clean exit, the
    /// crash is the mechanism; if it lived on, it skipped the work.
    fn died_after_marking(
        &self,
        who: ProcessRef,
        tm: u64,
        mechanism_if_crash: Mechanism,
        mut ev: Vec<Evidence>,
    ) -> Finding {
        match self.exit_of(who) {
            Some(exit) if exit.t_us >= tm && !exit.status.is_success() => {
                ev.push(Evidence {
                    t_us: exit.t_us,
                    seq: Some(exit.seq),
                    what: format!("{} exited ({}) before the effect", name(who), exit.text),
                });
                if let Some((fseq, f)) = self.fault_before(exit.t_us) {
                    ev.push(fault_evidence(fseq, f));
                }
                Finding::new(mechanism_if_crash, Some(exit.t_us), ev)
            }
            _ => Finding::new(Mechanism::Skipped, Some(tm), ev),
        }
    }
}
