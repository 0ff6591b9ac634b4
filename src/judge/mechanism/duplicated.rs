//! How a message came to be applied twice, from who applied it and what happened in between:
//! stored twice by the broker, one process applying it again (a retry; or handed it again: a
//! revocation when its ownership moved, else a same-process redelivery), a zombie writing after
//! its work moved, a commit that did not stick, a channel RabbitMQ closed (and requeued) while
//! it held the message unacked, or the first writer losing the work before it committed it (a
//! crash, a revocation, a stall).
//!
//! Invariants: every path names what it read from the timeline; without an attributed effect
//! the mechanism is `unexplained`. `revoked_uncommitted` needs an ownership change on the
//! timeline (another consumer, or the transient member, took the message or its partition).
//! The harness's own stop after `run_ended` is never a crash. A fault is blamed only when its
//! trigger matched before the evidence it is blamed for and it reached the processes concerned
//! (or the group, for a revocation).

use crate::judge::mechanism::evidence::{
    delivery_evidence, effect_evidence, fault_evidence, name, unattributed, Evidence, Finding,
};
use crate::judge::mechanism::index::{pref, ChannelRequeue, Index};
use crate::judge::mechanism::kind::Mechanism;
use crate::judge::model::{Anomaly, EffectSeen};
use crate::timeline::{AckVerb, EffectOutcome, FaultRecord, ProcessRef};

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
    /// The mechanism, blamed fault and evidence of a duplicate.
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
            return Finding::new(Mechanism::ProducerDuplicate, ev);
        }
        let Some(w1) = writer(first) else {
            ev.push(unattributed(first));
            return self.unexplained(first.t_us, applied[1].t_us, ev);
        };
        let Some(second) = applied.iter().skip(1).find(|e| writer(e) != Some(w1)) else {
            return self.one_writer(a, w1, first.t_us, applied[1], ev);
        };
        ev.push(effect_evidence(second));
        let Some(w2) = writer(second) else {
            ev.push(unattributed(second));
            return self.unexplained(first.t_us, second.t_us, ev);
        };
        let w = Writers {
            first: w1,
            second: w2,
            t1: first.t_us,
            t2: second.t_us,
        };
        self.two_writers(a, w, ev)
    }

    /// Not enough to name the mechanism: the fault named is one between the first effect and
    /// the one that repeated it, if any.
    fn unexplained(&self, t1: u64, t2: u64, ev: Vec<Evidence>) -> Finding {
        Finding::blaming(Mechanism::Unexplained, self.fault_between(t1, t2), ev)
    }

    /// One process applied it every time: a retry inside the process, unless the broker handed
    /// it the message again: a revocation when its ownership moved in between (its partition
    /// went to another member, or it left or rejoined the group; AMQP: the message went to
    /// another consumer), else a same-process redelivery (its own requeue, a seek back, a
    /// recover, a reconnect).
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
        let first_handed = handed.first().map_or(t1, |d| d.t_us.min(t1));
        if handed.len() < 2 {
            let fault = self.fault_on(&[w1], (first_handed, t2), false);
            if let Some((seq, f)) = fault {
                ev.push(fault_evidence(seq, f));
            }
            return Finding::blaming(Mechanism::ConsumerRetry, fault, ev);
        }
        for d in &handed {
            let note = if d.redelivered {
                " (marked redelivered)"
            } else {
                ""
            };
            ev.push(delivery_evidence(d.t_us, d.seq, w1, note));
        }
        let window = (first_handed, t2);
        if let Some(d) = handed
            .windows(2)
            .find(|pair| pair[0].seq == pair[1].seq)
            .map(|pair| pair[0])
        {
            ev.push(Evidence {
                t_us: d.t_us,
                seq: Some(d.seq),
                what: format!(
                    "one Fetch response carried it twice to {} (the same offset in a repeated \
                     batch), and its client handed both copies to the application",
                    name(w1)
                ),
            });
            let fault = self.fault_on(&[w1], (0, d.t_us), false);
            if let Some((seq, f)) = fault {
                ev.push(fault_evidence(seq, f));
            }
            return Finding::blaming(Mechanism::FetchedTwice, fault, ev);
        }
        if let Some(mark) = self.marked_done(a, w1, t2) {
            ev.push(self.marked_evidence(w1, mark));
            let fault = self.fault_on(&[w1], window, true);
            return Finding::blaming(Mechanism::RedeliveredAfterCommit, fault, ev);
        }
        let again_at = handed[handed.len() - 1].t_us;
        if let Some(r) = self.channel_requeue(&a.id, w1, (first_handed, again_at)) {
            return self.channel_closed(r, ev);
        }
        self.push_no_mark(&mut ev, w1, t1, t2);
        if let Some((t, seq, what)) = self.moved_away(a, w1, (first_handed, again_at)) {
            ev.push(Evidence { t_us: t, seq, what });
            self.push_group_changes(&mut ev, t1, t2, &[w1]);
            let fault = self.fault_on(&[w1], (0, again_at), true);
            return Finding::blaming(Mechanism::RevokedUncommitted, fault, ev);
        }
        self.push_handed_back(&mut ev, a, w1, (first_handed, again_at));
        let fault = self.fault_on(&[w1], (first_handed, again_at), false);
        if let Some((seq, f)) = fault {
            ev.push(fault_evidence(seq, f));
        }
        Finding::blaming(Mechanism::RedeliveredSameProcess, fault, ev)
    }

    /// RabbitMQ closed the channel holding the message unacknowledged (a channel error, or the
    /// `amqp: double-ack` fault that makes one) and requeued it: the fault blamed is the last
    /// one that reached the holder before the close.
    fn channel_closed(&self, r: &ChannelRequeue<'_>, mut ev: Vec<Evidence>) -> Finding {
        ev.push(Evidence {
            t_us: r.t_us,
            seq: Some(r.seq),
            what: format!(
                "channel {} of {} closed at RabbitMQ while it held this message unacknowledged \
                 ({}): RabbitMQ requeued it",
                r.channel,
                name(r.who),
                r.detail
            ),
        });
        let fault = self.fault_on(&[r.who], (0, r.t_us), false);
        if let Some((seq, f)) = fault {
            ev.push(fault_evidence(seq, f));
        }
        Finding::blaming(Mechanism::ChannelClosed, fault, ev)
    }

    /// The nacks and rejects with requeue by which `who` handed the message back to the queue
    /// between `from` and `to`.
    fn push_requeues(
        &self,
        ev: &mut Vec<Evidence>,
        a: &Anomaly,
        who: ProcessRef,
        (from, to): (u64, u64),
    ) {
        for r in self
            .returns_of(&a.id)
            .filter(|r| r.by == who && r.requeue && r.t_us >= from && r.t_us <= to)
        {
            ev.push(Evidence {
                t_us: r.t_us,
                seq: Some(r.seq),
                what: format!(
                    "{} {} it with requeue: the broker put it back in the queue",
                    name(who),
                    match r.verb {
                        AckVerb::Nack => "nacked",
                        AckVerb::Reject | AckVerb::Ack => "rejected",
                    }
                ),
            });
        }
    }

    /// Why one process was handed the message again with no ownership change: its own nack or
    /// reject with requeue, a connection of its that closed (the broker requeued what it held),
    /// or, with neither on the timeline, its own doing (a seek back, a recover).
    fn push_handed_back(
        &self,
        ev: &mut Vec<Evidence>,
        a: &Anomaly,
        w1: ProcessRef,
        (from, to): (u64, u64),
    ) {
        let before = ev.len();
        self.push_requeues(ev, a, w1, (from, to));
        for (t, seq, unacked, detail) in self.closed_between(w1, from, to) {
            ev.push(Evidence {
                t_us: *t,
                seq: Some(*seq),
                what: format!(
                    "a connection of {} closed ({detail}) with {unacked} unacknowledged: the \
                     broker requeued them",
                    name(w1)
                ),
            });
        }
        self.push_group_changes(ev, from, to, &[w1]);
        if ev.len() == before {
            ev.push(Evidence {
                t_us: to,
                seq: None,
                what: format!(
                    "no rebalance, requeue or reconnect of {} in between, and nobody else owned \
                     it: the consumer went back over it itself ({})",
                    name(w1),
                    if self.amqp {
                        "a recover, or a channel it reopened"
                    } else {
                        "a seek back, or a reset to the committed offset"
                    }
                ),
            });
        }
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
        if let Some(fault) = self.resumed_zombie(a, w, &mut ev) {
            return Finding::blaming(Mechanism::Zombie, fault, ev);
        }
        // Not a zombie. Did the first writer's commit (ack) cover it before the second effect?
        if let Some(mark) = self.marked_done(a, w.first, w.t2) {
            ev.push(self.marked_evidence(w.first, mark));
            let fault = self.fault_on(&[w.first, w.second], (w.t1, w.t2), true);
            return Finding::blaming(Mechanism::RedeliveredAfterCommit, fault, ev);
        }
        if let Some(r) = self.channel_requeue(&a.id, w.first, (0, w.t2)) {
            return self.channel_closed(r, ev);
        }
        if let Some(fault) = self.stalled_first_writer(w, &mut ev) {
            return Finding::blaming(Mechanism::Zombie, Some(fault), ev);
        }
        self.push_requeues(&mut ev, a, w.first, (w.t1, w.t2));
        self.first_writer_ended(w, ev)
    }

    /// The zombie, resumed: the second writer wrote for a partition another member had been
    /// given since (or was paused or cut off while the first writer did the work). Pushes the
    /// evidence and returns the fault to blame (the stall, else the last fault that reached
    /// the second writer or the group before the takeover) when it was.
    fn resumed_zombie(
        &self,
        a: &Anomaly,
        w: Writers,
        ev: &mut Vec<Evidence>,
    ) -> Option<Option<(u64, &FaultRecord)>> {
        let stalled = self.stall_of(w.second, w.t1);
        let taken_over = if self.amqp {
            None
        } else {
            a.partition
                .and_then(|p| self.taken_over(w.second, p, w.t2).map(|t| (p, t)))
        };
        if taken_over.is_none() && stalled.is_none() {
            return None;
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
        let takeover_at = taken_over.map_or(w.t2, |(_, (t, _))| t);
        Some(stalled.or_else(|| self.fault_on(&[w.second], (0, takeover_at), true)))
    }

    /// The first writer lost the work while a pause or partition stalled it, before it
    /// committed it. Pushes the evidence and returns the stall when it did.
    fn stalled_first_writer(
        &self,
        w: Writers,
        ev: &mut Vec<Evidence>,
    ) -> Option<(u64, &FaultRecord)> {
        let (seq, f) = self.stall_between(w.first, w.t1, w.t2)?;
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
        Some((seq, f))
    }

    /// The first writer exited before it committed the work (a crash, unless SIGTERM, an exit
    /// code or the harness's own stop after the run ended ended it), or lived on while the
    /// work moved to the second writer (revoked).
    fn first_writer_ended(&self, w: Writers, mut ev: Vec<Evidence>) -> Finding {
        let Some(exit) = self.exit_of(w.first).filter(|exit| exit.t_us < w.t2) else {
            self.push_no_mark(&mut ev, w.first, w.t1, w.t2);
            self.push_group_changes(&mut ev, w.t1, w.t2, &[w.first, w.second]);
            let fault = self.fault_on(&[w.first, w.second], (0, w.t2), true);
            return Finding::blaming(Mechanism::RevokedUncommitted, fault, ev);
        };
        let by_harness = self.stopped_by_harness(w.first, exit);
        ev.push(Evidence {
            t_us: exit.t_us,
            seq: Some(exit.seq),
            what: format!(
                "{} exited ({}{}) before it {} it",
                name(w.first),
                exit.text,
                if by_harness {
                    ": the harness stopped it after the run ended"
                } else {
                    ""
                },
                self.marked_word()
            ),
        });
        self.push_no_mark(&mut ev, w.first, w.t1, exit.t_us);
        if by_harness {
            return Finding::new(Mechanism::RevokedUncommitted, ev);
        }
        let fault = self.fault_on(&[w.first], (0, exit.t_us), false);
        if let Some((fseq, f)) = fault {
            ev.push(fault_evidence(fseq, f));
        }
        let mechanism = if exit.status.is_crash() {
            Mechanism::CrashAfterEffect
        } else {
            Mechanism::RevokedUncommitted
        };
        Finding::blaming(mechanism, fault, ev)
    }
}
