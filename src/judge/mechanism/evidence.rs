//! Evidence: one timeline fact that supports an explanation, the names of consumer processes,
//! and the evidence every rule shares (an effect and who applied it, a fault and whom it hit,
//! the commits that were missing or refused, the group changes in between).
//!
//! Invariant: evidence says what the timeline recorded, in words; it never guesses.

use serde::Serialize;

pub(crate) use crate::judge::mechanism::index::name;
use crate::judge::mechanism::index::{pref, Index};
use crate::judge::mechanism::kind::Mechanism;
use crate::judge::model::EffectSeen;
use crate::timeline::{FaultRecord, ProcessRef};

/// One timeline fact that supports an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// When (µs since the run started).
    pub t_us: u64,
    /// The event's position in the timeline, when it is one event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What it shows, in words.
    pub what: String,
}

/// What a rule found for one ID: how it happened, the fault it blames (one whose trigger
/// matched before the evidence it is blamed for, and that reached the processes concerned),
/// and the facts that show it.
pub(crate) struct Finding {
    /// How.
    pub(crate) mechanism: Mechanism,
    /// The plan's fault blamed, by index; none when no fault preceded the evidence.
    pub(crate) fault: Option<usize>,
    /// The facts, in the order the rule found them.
    pub(crate) evidence: Vec<Evidence>,
}

impl Finding {
    /// A finding of `mechanism` that blames no fault, shown by `evidence`.
    pub(crate) fn new(mechanism: Mechanism, evidence: Vec<Evidence>) -> Finding {
        Finding {
            mechanism,
            fault: None,
            evidence,
        }
    }

    /// A finding of `mechanism` that blames `fault` (its timeline seq and record, when one
    /// was found), shown by `evidence`.
    pub(crate) fn blaming(
        mechanism: Mechanism,
        fault: Option<(u64, &FaultRecord)>,
        evidence: Vec<Evidence>,
    ) -> Finding {
        Finding {
            mechanism,
            fault: fault.map(|(_, f)| f.fault),
            evidence,
        }
    }
}

/// The fault, what it did and whom it hit.
pub(crate) fn fault_evidence(seq: u64, f: &FaultRecord) -> Evidence {
    Evidence {
        t_us: f.fired_at_us,
        seq: Some(seq),
        what: format!(
            "fault #{} `{}` ({}) hit {}",
            f.fault,
            f.action,
            f.trigger,
            if f.hit.is_empty() {
                f.target.clone()
            } else {
                f.hit
                    .iter()
                    .map(|p| name(*p))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    }
}

/// The effect could not be attributed to a process.
pub(crate) fn unattributed(e: &EffectSeen) -> Evidence {
    Evidence {
        t_us: e.t_us,
        seq: Some(e.seq),
        what: "this effect could not be attributed to a consumer process".into(),
    }
}

/// The effect and who applied it.
pub(crate) fn effect_evidence(e: &EffectSeen) -> Evidence {
    Evidence {
        t_us: e.t_us,
        seq: Some(e.seq),
        what: match (e.instance, e.incarnation) {
            (Some(i), Some(n)) => format!("effect applied by {}", name(pref(i, n))),
            _ => "effect applied by an unknown process".into(),
        },
    }
}

/// `who` delivered to (`note` says how).
pub(crate) fn delivery_evidence(t_us: u64, seq: u64, who: ProcessRef, note: &str) -> Evidence {
    Evidence {
        t_us,
        seq: Some(seq),
        what: format!("delivered to {}{note}", name(who)),
    }
}

impl Index<'_> {
    /// `who` committed (acked) the message at `(t_us, seq)`.
    pub(crate) fn marked_evidence(&self, who: ProcessRef, (t_us, seq): (u64, u64)) -> Evidence {
        Evidence {
            t_us,
            seq: Some(seq),
            what: format!("{} {} it", name(who), self.marked_word()),
        }
    }

    /// Says that `who` never got a commit (ack) for it accepted between `from` and `to`.
    pub(crate) fn push_no_mark(&self, ev: &mut Vec<Evidence>, who: ProcessRef, from: u64, to: u64) {
        let what = if !self.saw_marks {
            "commits and acks were not observed (the consumer did not go through the proxy)"
                .to_owned()
        } else {
            format!(
                "no {} by {} covered it before then",
                if self.amqp { "ack" } else { "commit" },
                name(who)
            )
        };
        ev.push(Evidence {
            t_us: to.max(from),
            seq: None,
            what,
        });
    }

    /// The first commit of `who` the broker refused at or after `after` (a fenced zombie).
    pub(crate) fn push_failed_commits(&self, ev: &mut Vec<Evidence>, who: ProcessRef, after: u64) {
        for (t, seq, e) in self.failed_commits.get(&who).into_iter().flatten() {
            if *t >= after {
                ev.push(Evidence {
                    t_us: *t,
                    seq: Some(*seq),
                    what: format!("{}'s commit refused: {e}", name(who)),
                });
                break;
            }
        }
    }

    /// The group changes of `who` (and the transient member) between `from` and `to`.
    pub(crate) fn push_group_changes(
        &self,
        ev: &mut Vec<Evidence>,
        from: u64,
        to: u64,
        who: &[ProcessRef],
    ) {
        let changes: Vec<_> = self
            .group_changes
            .iter()
            .filter(|(t, _, w, _)| *t >= from && *t <= to && w.is_none_or(|w| who.contains(&w)))
            .collect();
        // The first and the last few: how the work left, and how it arrived where it was redone.
        let keep = |i: usize| i < 3 || i + 4 > changes.len();
        for (t, seq, w, what) in changes
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, c)| *c)
        {
            ev.push(Evidence {
                t_us: *t,
                seq: Some(*seq),
                what: match w {
                    Some(w) => format!("{}: {what}", name(*w)),
                    None => what.clone(),
                },
            });
        }
    }
}
