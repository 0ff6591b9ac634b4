//! How a message came to be applied twice, from who applied it and what happened in between:
//! stored twice by the broker, one process applying it again (a retry, or handed it again), a
//! zombie writing after its work moved, a commit that did not stick, or the first writer losing
//! the work before it committed it (a crash, a revocation, a stall).
//!
//! Invariant: every path names what it read from the timeline; without an attributed effect
//! the mechanism is `unexplained`.

use crate::judge::mechanism::evidence::{
    delivery_evidence, effect_evidence, fault_evidence, name, unattributed, Evidence, Finding,
};
use crate::judge::mechanism::index::{pref, Index};
use crate::judge::mechanism::kind::Mechanism;
use crate::judge::model::{Anomaly, EffectSeen};
use crate::timeline::{EffectOutcome, ProcessRef};

/// The first two processes that applied the message, and when.
#[derive(Clone, Copy)]
struct Writers {
    /// The first writer.
    first: ProcessRef,
    /// The first process other than it that applied it again.
    second: ProcessRef,
    /// When the first applied it.
    t1: u64,
    /// When the second applied it.
    t2: u64,
}

/// Who applied an effect, when the sink could tell.
fn writer(e: &EffectSeen) -> Option<ProcessRef> {
    Some(pref(e.instance?, e.incarnation?))
}

impl Index<'_> {
    /// The mechanism, decisive moment and evidence of a duplicate.
    pub(crate) fn duplicated(&self, a: &Anomaly) -> Finding {
        let applied: Vec<&EffectSeen> = a
            .effects
            .iter()
            .filter(|e| e.outcome == EffectOutcome::Applied)
            .collect();
        let first = applied[0];
        let mut ev: Vec<Evidence> = vec![effect_evidence(first)];
        if self.stored_twice(&a.id) {
            ev.push(Evidence {
                t_us: a.produced_at_us.unwrap_or(0),
                seq: None,
                what: "the broker acknowledged this ID at two different offsets".into(),
            });
            return Finding::new(Mechanism::ProducerDuplicate, None, ev);
        }
        let Some(w1) = writer(first) else {
            ev.push(unattributed(first));
            return Finding::new(Mechanism::Unexplained, Some(applied[1].t_us), ev);
        };
        let Some(second) = applied.iter().skip(1).find(|e| writer(e) != Some(w1)) else {
            return self.one_writer(a, w1, first.t_us, applied[1], ev);
        };
        ev.push(effect_evidence(second));
        let Some(w2) = writer(second) else {
            ev.push(unattributed(second));
            return Finding::new(Mechanism::Unexplained, Some(second.t_us), ev);
        };
        let w = Writers {
            first: w1,
            second: w2,
            t1: first.t_us,
            t2: second.t_us,
        };
        self.two_writers(a, w, ev)
    }

    /// One process applied it every time: a retry inside the process, unless the broker handed
    /// it the message again (its partition went away and came back, or the message was
    /// requeued to it).
    fn one_writer(
        &self,
        a: &Anomaly,
        w1: ProcessRef,
        t1: u64,
        again: &EffectSeen,
        mut ev: Vec<Evidence>,
    ) -> Finding {
        let t2 = again.t_us;
        ev.push(effect_evidence(again));
        let handed: Vec<_> = self
            .deliveries_of(&a.id)
            .filter(|d| d.to == w1 && d.t_us <= t2)
            .collect();
        if handed.len() < 2 {
            return Finding::new(Mechanism::ConsumerRetry, Some(t2), ev);
        }
        for d in handed {
            ev.push(delivery_evidence(d.t_us, d.seq, w1, ""));
        }
        if let Some(mark) = self.marked_done(a, w1, t2) {
            ev.push(self.marked_evidence(w1, mark));
            return Finding::new(Mechanism::RedeliveredAfterCommit, Some(t2), ev);
        }
        self.push_no_mark(&mut ev, w1, t1, t2);
        self.push_group_changes(&mut ev, t1, t2, &[w1]);
        Finding::new(Mechanism::RevokedUncommitted, Some(t2), ev)
    }

    /// Two processes applied it: a zombie, a commit that did not stick, or the first writer
    /// lost the work before it committed it.
    fn two_writers(&self, a: &Anomaly, w: Writers, mut ev: Vec<Evidence>) -> Finding {
        // The delivery the second writer acted on: its last one before the second effect.
        let redelivery = self
            .deliveries_of(&a.id)
            .filter(|d| d.to == w.second && d.t_us <= w.t2)
            .last();
        if let Some(d) = redelivery {
            let note = if d.redelivered {
                " (marked redelivered)"
            } else {
                ""
            };
            ev.push(delivery_evidence(d.t_us, d.seq, w.second, note));
        }
        if self.resumed_zombie(a, w, &mut ev) {
            return Finding::new(Mechanism::Zombie, Some(w.t2), ev);
        }
        // Not a zombie. Did the first writer's commit (ack) cover it before the second effect?
        if let Some(mark) = self.marked_done(a, w.first, w.t2) {
            ev.push(self.marked_evidence(w.first, mark));
            return Finding::new(Mechanism::RedeliveredAfterCommit, Some(w.t2), ev);
        }
        if self.stalled_first_writer(w, &mut ev) {
            return Finding::new(Mechanism::Zombie, Some(w.t2), ev);
        }
        self.first_writer_ended(w, ev)
    }

    /// The zombie, resumed: the second writer wrote for a partition another member had been
    /// given since (or was paused or cut off while the first writer did the work). Pushes the
    /// evidence when it was.
    fn resumed_zombie(&self, a: &Anomaly, w: Writers, ev: &mut Vec<Evidence>) -> bool {
        let stalled = self.stall_of(w.second, w.t1);
        let taken_over = if self.amqp {
            None
        } else {
            a.partition
                .and_then(|p| self.taken_over(w.second, p, w.t2).map(|t| (p, t)))
        };
        if taken_over.is_none() && stalled.is_none() {
            return false;
        }
        if let Some((seq, f)) = stalled {
            ev.push(fault_evidence(seq, f));
        }
        if let Some((p, (t, owner))) = taken_over {
            ev.push(Evidence {
                t_us: t,
                seq: None,
                what: format!(
                    "{} (the new owner) is assigned partition {p}: {} no longer owns it",
                    name(owner),
                    name(w.second)
                ),
            });
        }
        ev.push(Evidence {
            t_us: w.t2,
            seq: None,
            what: format!(
                "{} writes after the new owner had started: a zombie write",
                name(w.second)
            ),
        });
        self.push_failed_commits(ev, w.second, w.t1);
        self.push_group_changes(ev, w.t1.saturating_sub(1), w.t2, &[w.first, w.second]);
        true
    }

    /// The first writer lost the work while a pause or partition stalled it, before it
    /// committed it. Pushes the evidence when it did.
    fn stalled_first_writer(&self, w: Writers, ev: &mut Vec<Evidence>) -> bool {
        let Some((seq, f)) = self.stall_between(w.first, w.t1, w.t2) else {
            return false;
        };
        ev.push(fault_evidence(seq, f));
        ev.push(Evidence {
            t_us: w.t2,
            seq: None,
            what: format!(
                "{} lost its work while stalled, before it {} it; {} redid it",
                name(w.first),
                self.marked_word(),
                name(w.second)
            ),
        });
        self.push_failed_commits(ev, w.first, w.t1);
        self.push_group_changes(ev, w.t1, w.t2, &[w.first, w.second]);
        true
    }

    /// The first writer exited before it committed the work (a crash, unless SIGTERM or an
    /// exit code ended it), or lived on while the work moved away (revoked).
    fn first_writer_ended(&self, w: Writers, mut ev: Vec<Evidence>) -> Finding {
        match self.exit_of(w.first) {
            Some(exit) if exit.t_us < w.t2 => {
                ev.push(Evidence {
                    t_us: exit.t_us,
                    seq: Some(exit.seq),
                    what: format!(
                        "{} exited ({}) before it {} it",
                        name(w.first),
                        exit.text,
                        self.marked_word()
                    ),
                });
                if let Some((fseq, f)) = self.fault_before(exit.t_us) {
                    ev.push(fault_evidence(fseq, f));
                }
                self.push_no_mark(&mut ev, w.first, w.t1, exit.t_us);
                let mechanism = if exit.status.is_crash() {
                    Mechanism::CrashAfterEffect
                } else {
                    Mechanism::RevokedUncommitted
                };
                Finding::new(mechanism, Some(exit.t_us), ev)
            }
            _ => {
                self.push_no_mark(&mut ev, w.first, w.t1, w.t2);
                self.push_group_changes(&mut ev, w.t1, w.t2, &[w.first, w.second]);
                Finding::new(Mechanism::RevokedUncommitted, Some(w.t2), ev)
            }
        }
    }
}
