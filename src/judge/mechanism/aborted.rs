//! Records of aborted transactions, named per ID: what a `read_uncommitted` (or
//! non-transactional) reader of an output topic saw that a `read_committed` one did not. An ID
//! whose record was aborted and then committed again was seen twice by such a reader
//! (`aborted_then_committed`); one with no committed record after it, as work that never
//! committed (`aborted_never_committed`).
//!
//! The evidence: the Produce that wrote the aborted record (the incarnation, its transactional
//! id, producer id and epoch), what ended its transaction (its own EndTxn abort, a refusal
//! that fenced it, its exit, or the InitProducerId of a later producer with the same
//! transactional id, which aborts an open transaction), and where the committed copy was
//! written. A fault is blamed when one hit the writer before its transaction ended.
//!
//! Invariant: these IDs are never effects at a `read_committed` boundary; their explanations
//! are a finding about downstream readers and change no count, outcome or verdict. Only a
//! boundary that reads its effects `read_committed` records aborted records at all.

use std::collections::{BTreeMap, HashMap};

use crate::judge::facts::fencing;
use crate::judge::mechanism::evidence::{name, Evidence};
use crate::judge::mechanism::index::{pref, Index};
use crate::judge::mechanism::kind::Mechanism;
use crate::judge::mechanism::Explanation;
use crate::judge::model::{Anomaly, Outcome};
use crate::judge::writers::{Write, Writers};
use crate::timeline::{EffectOutcome, Event, ProcessRef, Recorded, Stamped, TxnOp};

/// One aborted record: (partition, offset).
type Place = (i32, i64);

/// The output topic's read: its name, when it was recorded, and each aborted ID's places.
struct AbortedRead<'a> {
    topic: &'a str,
    t_us: u64,
    seq: u64,
    ids: BTreeMap<&'a str, Vec<Place>>,
}

/// One transactional answer: (time, seq, op, commit or abort, the broker's error).
type Answer<'a> = (u64, u64, TxnOp, Option<bool>, Option<&'a str>);

/// The transactional answers a writer's transaction may have ended by.
#[derive(Default)]
struct TxnEnds<'a> {
    /// Per incarnation: (time, seq, op, committed, error) of every answer.
    by_writer: HashMap<ProcessRef, Vec<Answer<'a>>>,
    /// Per transactional id: (time, seq, who, epoch) of each InitProducerId answered.
    inits: HashMap<&'a str, Vec<(u64, u64, ProcessRef, i16)>>,
}

impl<'a> TxnEnds<'a> {
    fn read(events: &'a [Stamped]) -> TxnEnds<'a> {
        let mut ends = TxnEnds::default();
        for st in events {
            let Event::Txn {
                instance,
                incarnation,
                op,
                transactional_id,
                producer_epoch,
                committed,
                error,
                request: false,
                ..
            } = &st.event
            else {
                continue;
            };
            let who = pref(*instance, *incarnation);
            ends.by_writer.entry(who).or_default().push((
                st.t_us,
                st.seq,
                *op,
                *committed,
                error.as_deref(),
            ));
            if let (TxnOp::InitProducerId, Some(tid), None) = (op, transactional_id, error) {
                ends.inits.entry(tid.as_str()).or_default().push((
                    st.t_us,
                    st.seq,
                    who,
                    *producer_epoch,
                ));
            }
        }
        ends
    }

    /// What ended `w`'s transaction after it wrote: the writer's own first EndTxn abort or
    /// refused request, and the first InitProducerId of another incarnation with its
    /// transactional id.
    fn after(&self, w: &Write) -> Vec<Evidence> {
        let mut out = Vec::new();
        let mut own = self.by_writer.get(&w.who).into_iter().flatten();
        let first_end = own.find(|(t, _, op, committed, error)| {
            let fenced = error.is_some_and(|e| fencing(*op, e).is_some());
            let aborted = *op == TxnOp::EndTxn && *committed == Some(false) && error.is_none();
            *t >= w.t_us && (fenced || aborted)
        });
        if let Some((t, seq, op, _, error)) = first_end {
            let what = match error {
                Some(e) => format!(
                    "{}'s {op:?} refused with {e}: fenced, its transaction cannot commit",
                    name(w.who)
                ),
                None => format!("{}'s EndTxn aborted its transaction", name(w.who)),
            };
            out.push(Evidence {
                t_us: *t,
                seq: Some(*seq),
                what,
            });
        }
        let tid = w.transactional_id.as_deref().unwrap_or_default();
        let fencer = self
            .inits
            .get(tid)
            .into_iter()
            .flatten()
            .find(|(t, _, who, _)| *t >= w.t_us && *who != w.who);
        if let Some((t, seq, who, epoch)) = fencer {
            out.push(Evidence {
                t_us: *t,
                seq: Some(*seq),
                what: format!(
                    "{}'s InitProducerId for transactional id {tid} (epoch {epoch}) fenced the older producer: the coordinator aborted its open transaction",
                    name(*who)
                ),
            });
        }
        out
    }
}

/// What the explanations are read from: the output topic's read, its writers, the
/// transactional answers and the index (exits, faults).
struct Sources<'a> {
    read: AbortedRead<'a>,
    writers: Writers,
    ends: TxnEnds<'a>,
    index: Index<'a>,
}

impl Sources<'_> {
    /// The evidence of the aborted record at `(p, o)` (its writer, what ended its transaction)
    /// and the fault that hit its writer before then.
    fn aborted_record(&self, (p, o): Place) -> (Vec<Evidence>, Option<usize>) {
        let topic = self.read.topic;
        let Some(w) = self.writers.of(topic, p, o) else {
            let what = format!(
                "{topic}[{p}]@{o} holds it, read only under read_uncommitted: its transaction \
                 never committed (no Produce of it was seen through the proxy)"
            );
            return (vec![self.at_read(what)], None);
        };
        let mut evidence = vec![written(topic, (p, o), w, false)];
        let ended = self.ends.after(w);
        let exit = self.index.exit_of(w.who).filter(|x| x.t_us >= w.t_us);
        let until = ended
            .iter()
            .map(|e| e.t_us)
            .chain(exit.map(|x| x.t_us))
            .min()
            .unwrap_or(u64::MAX);
        let fault = self
            .index
            .fault_on(&[w.who], (0, until), false)
            .map(|(_, f)| f.fault);
        evidence.extend(ended);
        if let Some(x) = exit {
            evidence.push(Evidence {
                t_us: x.t_us,
                seq: Some(x.seq),
                what: format!(
                    "{} exited ({}) with that transaction open",
                    name(w.who),
                    x.text
                ),
            });
        }
        (evidence, fault)
    }

    /// The committed copy at `(p, o)`, read at `(t_us, seq)`.
    fn committed_copy(&self, (p, o): Place, (t_us, seq): (u64, u64)) -> Evidence {
        let topic = self.read.topic;
        match self.writers.of(topic, p, o) {
            Some(w) => written(topic, (p, o), w, true),
            None => Evidence {
                t_us,
                seq: Some(seq),
                what: format!("committed at {topic}[{p}]@{o}, read under read_committed"),
            },
        }
    }

    /// A fact the output topic's read shows.
    fn at_read(&self, what: String) -> Evidence {
        Evidence {
            t_us: self.read.t_us,
            seq: Some(self.read.seq),
            what,
        }
    }
}

/// The aborted records of the boundary whose view `events` is, one explanation per ID, with
/// `anomalies` giving each ID's outcome at the boundary (exact when not among them).
pub(crate) fn explain(recorded: &Recorded, anomalies: &[Anomaly]) -> Vec<Explanation> {
    let events = recorded.others();
    let Some(read) = aborted_read(events) else {
        return Vec::new();
    };
    let committed = committed_copies(recorded, read.topic, &read.ids);
    let sources = Sources {
        read,
        writers: Writers::read(events),
        ends: TxnEnds::read(events),
        index: Index::build(recorded, &[]),
    };
    let outcome: HashMap<&str, Outcome> = anomalies
        .iter()
        .map(|a| (a.id.as_str(), a.outcome))
        .collect();
    let mut out = Vec::with_capacity(sources.read.ids.len());
    for (id, places) in &sources.read.ids {
        let copies = committed.get(id).map_or(&[][..], Vec::as_slice);
        let (mut evidence, mut fault) = (Vec::new(), None);
        for &place in places {
            let (facts, hit) = sources.aborted_record(place);
            evidence.extend(facts);
            fault = fault.or(hit);
        }
        for &(p, o, t_us, seq) in copies {
            evidence.push(sources.committed_copy((p, o), (t_us, seq)));
        }
        let (mechanism, default) = if copies.is_empty() {
            let topic = sources.read.topic;
            evidence.push(sources.at_read(format!(
                "no committed record of it in {topic}: only a read_uncommitted reader saw it"
            )));
            (Mechanism::AbortedNeverCommitted, Outcome::Phantom)
        } else {
            (Mechanism::AbortedThenCommitted, Outcome::Exact)
        };
        evidence.sort_by_key(|e| (e.t_us, e.seq));
        evidence.dedup();
        out.push(Explanation {
            id: (*id).to_owned(),
            outcome: outcome.get(id).copied().unwrap_or(default),
            mechanism,
            fault,
            evidence,
            harness_hold: false,
        });
    }
    out
}

/// The boundary's output-topic read, when it names aborted records (read_committed effects).
fn aborted_read(events: &[Stamped]) -> Option<AbortedRead<'_>> {
    events.iter().find_map(|st| match &st.event {
        Event::OutputTopicRead {
            topic,
            isolation,
            aborted,
            ..
        } if isolation == "read_committed" && !aborted.is_empty() => {
            let mut ids: BTreeMap<&str, Vec<Place>> = BTreeMap::new();
            for r in aborted {
                if let Some(id) = &r.id {
                    ids.entry(id.as_str())
                        .or_default()
                        .push((r.partition, r.offset));
                }
            }
            Some(AbortedRead {
                topic: topic.as_str(),
                t_us: st.t_us,
                seq: st.seq,
                ids,
            })
        }
        _ => None,
    })
}

/// The committed records (applied effects read under read_committed) of the aborted IDs:
/// (partition, offset, time, seq) each.
fn committed_copies<'a>(
    recorded: &'a Recorded,
    topic: &str,
    ids: &BTreeMap<&'a str, Vec<Place>>,
) -> HashMap<&'a str, Vec<(i32, i64, u64, u64)>> {
    let mut copies: HashMap<&str, Vec<(i32, i64, u64, u64)>> = HashMap::new();
    for e in recorded.effects() {
        if e.outcome != EffectOutcome::Applied {
            continue;
        }
        let Some(place) = e.record.filter(|r| r.topic == topic) else {
            continue;
        };
        if ids.contains_key(e.id()) {
            copies
                .entry(e.id())
                .or_default()
                .push((place.partition, place.offset, e.t_us, e.seq));
        }
    }
    copies
}

/// `who` wrote the record at `place`: aborted, or (`committed`) the copy that committed.
fn written(topic: &str, (p, o): Place, w: &Write, committed: bool) -> Evidence {
    let txn = match &w.transactional_id {
        Some(tid) => format!(
            "in a transaction of {tid} (producer {}, epoch {})",
            w.producer_id, w.producer_epoch
        ),
        None => "outside any transaction".to_owned(),
    };
    let who = name(w.who);
    let what = if committed {
        format!(
            "{who}'s Produce wrote it again to {topic}[{p}]@{o} {txn}, and that record \
             committed (read under read_committed)"
        )
    } else {
        format!(
            "{who}'s Produce wrote it to {topic}[{p}]@{o} {txn}; only read_uncommitted reads \
             that record: its transaction never committed"
        )
    };
    Evidence {
        t_us: w.t_us,
        seq: Some(w.seq),
        what,
    }
}
