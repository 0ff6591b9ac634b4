//! Per-ID lives for the page's search: for each kept message ID, its produce record, the
//! deliveries the proxy saw, every effect with its writer, and the commits or acks that
//! covered it, read from the events in one pass.
//!
//! Large runs stay usable: every anomaly's life is kept (up to [`ANOMALY_LIVES`]), and the
//! other IDs up to [`LIVES`] in all, spread evenly in produce order when there are more; the page
//! says which.
//!
//! Invariant: nothing here is inferred; a commit covers an ID only when the broker accepted
//! it (a response without error) for the ID's partition past its offset.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::parts;
use crate::judge::Judgement;
use crate::timeline::{
    AckPhase, AckVerb, AttributedBy, Attribution, CommitPhase, EffectOutcome, Event, MessageNo,
    ProcessRef, ProduceStatus, Recorded,
};

/// Anomalies whose lives are kept at most.
pub const ANOMALY_LIVES: usize = 5_000;
/// Lives kept at most in all.
pub const LIVES: usize = 20_000;
/// Deliveries, effects and covering acks kept per ID (the rest counted).
const PER_ID: usize = 8;

/// One process at one time, with what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When (µs).
    pub t_us: u64,
    /// Which consumer incarnation, when known.
    pub by: Option<ProcessRef>,
    /// What happened.
    pub what: What,
}

/// What happened to an ID at one step (the page's script puts it in words: the data stays
/// small for large runs).
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// The workload produced it.
    Produced {
        /// (partition, offset) where the broker stored it.
        place: Option<(i32, i64)>,
        /// The broker's answer.
        status: ProduceStatus,
    },
    /// The proxy saw it handed to a consumer.
    Delivered {
        /// Kafka partition.
        partition: Option<i32>,
        /// Kafka offset or AMQP delivery tag.
        offset: Option<i64>,
        /// AMQP: marked redelivered.
        redelivered: bool,
    },
    /// The sink saw an effect for it.
    Effect {
        /// Applied (or replayed by an idempotency key).
        applied: bool,
        /// Which sink.
        sink: String,
        /// How the writer was found.
        how: Option<AttributedBy>,
        /// The writer's pid, when the socket told.
        pid: Option<u32>,
    },
    /// An AMQP ack, nack or reject covering it, in words.
    Ack(String),
    /// The first Kafka commit the broker accepted past its offset.
    Commit {
        /// Partition.
        partition: i32,
        /// The committed offset (the next to read).
        offset: i64,
    },
}

/// One message ID's life.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Life {
    /// Its outcome when it is an anomaly (`duplicated`; with boundaries, where:
    /// `duplicated at email; lost at ledger`); `None` for an exact (or failed) ID.
    pub outcome: Option<String>,
    /// When it was produced, and where it was stored.
    pub produced: Option<Step>,
    /// Deliveries the proxy saw.
    pub delivered: Vec<Step>,
    /// Effects the sink saw, with their writer.
    pub effects: Vec<Step>,
    /// Commits or acks that covered it.
    pub covered: Vec<Step>,
    /// Deliveries, effects or acks beyond [`PER_ID`] each, not kept.
    pub more: u64,
    /// Where it is stored (partition, offset), for the commit that covers it.
    place: Option<(i32, i64)>,
}

/// The kept lives of one run.
#[derive(Debug, Default)]
pub struct Lives {
    /// Kept lives by ID.
    pub ids: HashMap<String, Life>,
    /// Distinct IDs the run produced or saw effects for.
    pub total: usize,
    /// True when not every ID is kept (the others were sampled evenly in produce order).
    pub sampled: bool,
}

impl Lives {
    /// The life of `id`, when kept.
    pub fn get(&self, id: &str) -> Option<&Life> {
        self.ids.get(id)
    }
}

/// Reads the kept IDs' lives from the events.
pub fn collect(rec: &Judgement, recorded: &Recorded) -> Lives {
    let mut lives = choose(rec, recorded);
    // The kept IDs by number: the columns are walked by number, not by text.
    let ids = recorded.ids();
    let kept: HashMap<MessageNo, String> = lives
        .ids
        .keys()
        .filter_map(|id| Some((ids.get(id)?, id.clone())))
        .collect();
    fn life<'l>(
        lives: &'l mut Lives,
        kept: &HashMap<MessageNo, String>,
        no: MessageNo,
    ) -> Option<&'l mut Life> {
        lives.ids.get_mut(kept.get(&no)?.as_str())
    }
    for p in recorded.produced() {
        if let Some(life) = life(&mut lives, &kept, p.no) {
            on_produced(life, p.t_us, p.partition.zip(p.offset), p.status);
        }
    }
    for (d, r) in recorded.delivered_records() {
        let Some(life) = life(&mut lives, &kept, r.id) else {
            continue;
        };
        // A `delivered` event (AMQP) is drawn without its partition, as it always was.
        let what = match d.batch {
            true => What::Delivered {
                partition: d.partition,
                offset: Some(r.offset),
                redelivered: false,
            },
            false => What::Delivered {
                partition: None,
                offset: d.offset(),
                redelivered: d.redelivered,
            },
        };
        let s = step(d.t_us, d.instance, d.incarnation, what);
        push(&mut life.delivered, &mut life.more, s);
    }
    for e in recorded.effects() {
        let Some(life) = life(&mut lives, &kept, e.no) else {
            continue;
        };
        let by = e.instance.zip(e.incarnation).map(|(i, n)| ProcessRef {
            instance: i,
            incarnation: n,
        });
        // With boundaries the sink is named by its boundary: `email (http)`.
        let sink = e
            .boundary
            .map_or_else(|| e.sink.to_string(), |b| format!("{b} ({})", e.sink));
        let s = effect_step(e.t_us, by, e.outcome, &sink, &e.attribution());
        push(&mut life.effects, &mut life.more, s);
    }
    let mut commits: HashMap<i32, Vec<(u64, i64, ProcessRef)>> = HashMap::new();
    let topic = rec.run.as_ref().map(|r| r.topic.as_str());
    for st in recorded.others() {
        let t = st.t_us;
        match &st.event {
            Event::Ack {
                instance,
                incarnation,
                multiple,
                verb,
                requeue,
                ids,
                phase,
                delivery_tag,
                ..
            } => {
                let what = ack_words(*verb, *requeue, *multiple, *phase, *delivery_tag);
                if let Some(what) = what {
                    let by = step(t, *instance, *incarnation, What::Ack(what));
                    for id in ids {
                        if let Some(life) = lives.ids.get_mut(id.as_str()) {
                            push(&mut life.covered, &mut life.more, by.clone());
                        }
                    }
                }
            }
            Event::Commit {
                instance,
                incarnation,
                offsets,
                phase: CommitPhase::Response,
                error: None,
                ..
            } => {
                let by = ProcessRef {
                    instance: *instance,
                    incarnation: *incarnation,
                };
                for o in offsets
                    .iter()
                    .filter(|o| topic.is_none_or(|t| t == o.topic))
                {
                    commits
                        .entry(o.partition)
                        .or_default()
                        .push((t, o.offset, by));
                }
            }
            _ => {}
        }
    }
    cover_by_commits(&mut lives, &commits);
    lives
}

/// Keeps the first produce record of an ID that says where it was stored (a retry may).
fn on_produced(life: &mut Life, t_us: u64, place: Option<(i32, i64)>, status: ProduceStatus) {
    if life.produced.is_some() && life.place.is_some() {
        return;
    }
    life.produced = Some(Step {
        t_us,
        by: None,
        what: What::Produced { place, status },
    });
    life.place = place;
}

/// One effect, with its writer and how the writer was known.
fn effect_step(
    t_us: u64,
    by: Option<ProcessRef>,
    outcome: EffectOutcome,
    sink: &str,
    attribution: &Attribution,
) -> Step {
    Step {
        t_us,
        by,
        what: What::Effect {
            applied: outcome == EffectOutcome::Applied,
            sink: sink.to_string(),
            how: attribution.by,
            pid: attribution.pid,
        },
    }
}

/// One step as the page's script reads it.
fn step_json(s: &Step) -> Value {
    let t = s.t_us;
    let who = s.by.map_or(String::new(), |p| {
        format!("{}#{}", p.instance, p.incarnation)
    });
    let lower = |v: String| v.to_lowercase();
    match &s.what {
        What::Produced { place, status } => json!([
            t,
            "p",
            who,
            place.map(|p| p.0),
            place.map(|p| p.1),
            lower(format!("{status:?}"))
        ]),
        What::Delivered {
            partition,
            offset,
            redelivered,
        } => json!([t, "d", who, partition, offset, u8::from(*redelivered)]),
        What::Effect {
            applied,
            sink,
            how,
            pid,
        } => json!([
            t,
            "e",
            who,
            u8::from(*applied),
            sink,
            how.map(|h| lower(format!("{h:?}"))),
            pid
        ]),
        What::Ack(words) => json!([t, "a", who, words]),
        What::Commit { partition, offset } => json!([t, "k", who, partition, offset]),
    }
}

/// `consumer[0]#2`.
pub fn name(p: ProcessRef) -> String {
    format!("consumer[{}]#{}", p.instance, p.incarnation)
}

fn step(t_us: u64, instance: u32, incarnation: u32, what: What) -> Step {
    Step {
        t_us,
        by: Some(ProcessRef {
            instance,
            incarnation,
        }),
        what,
    }
}

/// Adds a delivery to `id`'s life, when kept.
fn push(list: &mut Vec<Step>, more: &mut u64, s: Step) {
    if list.len() < PER_ID {
        list.push(s);
    } else {
        *more += 1;
    }
}

/// What an ack frame did to the IDs it covers; `None` for a frame only seen (its forwarded or
/// dropped record follows).
fn ack_words(
    verb: AckVerb,
    requeue: bool,
    multiple: bool,
    phase: AckPhase,
    tag: u64,
) -> Option<String> {
    let verb = match (verb, requeue) {
        (AckVerb::Ack, _) => "ack",
        (AckVerb::Nack, true) => "nack with requeue",
        (AckVerb::Nack, false) => "nack without requeue",
        (AckVerb::Reject, true) => "reject with requeue",
        (AckVerb::Reject, false) => "reject without requeue",
    };
    let multiple = if multiple { " (multiple)" } else { "" };
    match phase {
        AckPhase::Request => None,
        AckPhase::Forwarded => Some(format!("{verb}{multiple} of tag {tag} reached the broker")),
        AckPhase::Dropped => Some(format!(
            "{verb}{multiple} of tag {tag} held and dropped (never reached the broker)"
        )),
    }
}

/// Picks the IDs to keep: every anomaly (up to [`ANOMALY_LIVES`]), then the others in produce
/// order, all of them or an even spread of them up to [`LIVES`].
fn choose(rec: &Judgement, recorded: &Recorded) -> Lives {
    let mut lives = Lives::default();
    let parts = parts::of(rec);
    let mut anomalous: HashSet<&str> = HashSet::new();
    for (part, a) in parts::anomalies(&parts) {
        anomalous.insert(a.id.as_str());
        if lives.ids.len() >= ANOMALY_LIVES && !lives.ids.contains_key(&a.id) {
            continue;
        }
        let words = format!("{}{}", a.outcome.as_str(), part.at());
        let life = lives.ids.entry(a.id.clone()).or_default();
        life.outcome = Some(match life.outcome.take() {
            Some(before) => format!("{before}; {words}"),
            None => words,
        });
    }
    // Two passes over the produce records and no list of every ID: a run of millions of IDs
    // costs no memory here. A retried ID counts once per record (a rare few).
    let others = || {
        recorded
            .produced()
            .map(|p| p.id())
            .filter(|id| !anomalous.contains(id))
    };
    let k = &rec.counts;
    lives.total = (k.produced + k.failed + k.indeterminate + k.phantom) as usize;
    let n = others().count();
    let room = LIVES.saturating_sub(lives.ids.len());
    lives.sampled = n > room || anomalous.len() > ANOMALY_LIVES;
    // `room` positions spread evenly over the others, first and last included (strictly
    // increasing when there are more others than room).
    let step = |i: usize| i * n.saturating_sub(1) / room.saturating_sub(1).max(1);
    let mut wanted = (0..room).map(step).peekable();
    for (at, id) in others().enumerate() {
        if n > room {
            if wanted.peek() != Some(&at) {
                continue;
            }
            wanted.next();
        }
        lives.ids.entry(id.to_owned()).or_default();
    }
    lives
}

/// Adds to each kept Kafka ID the first accepted commit past its offset.
fn cover_by_commits(lives: &mut Lives, commits: &HashMap<i32, Vec<(u64, i64, ProcessRef)>>) {
    // Per partition, the running maximum of committed offsets over time: the first commit
    // past an offset is the first whose running maximum exceeds it.
    let running: HashMap<i32, Vec<(i64, usize)>> = commits
        .iter()
        .map(|(p, list)| {
            let mut max = i64::MIN;
            let mut out = Vec::with_capacity(list.len());
            for (i, (_, offset, _)) in list.iter().enumerate() {
                if *offset > max {
                    max = *offset;
                    out.push((max, i));
                }
            }
            (*p, out)
        })
        .collect();
    for life in lives.ids.values_mut() {
        let Some((partition, offset)) = life.place else {
            continue;
        };
        let Some(steps) = running.get(&partition) else {
            continue;
        };
        let at = steps.partition_point(|(max, _)| *max <= offset);
        if let Some(&(committed, i)) = steps.get(at) {
            let (t, _, by) = commits[&partition][i];
            life.covered.push(Step {
                t_us: t,
                by: Some(by),
                what: What::Commit {
                    partition,
                    offset: committed,
                },
            });
        }
    }
}

/// The lives as the page's search reads them (JSON): per ID its outcome (`o`, absent when
/// exact), mechanism (`m`), how many steps were not kept (`x`) and its steps in time order
/// (`s`), each `[t_us, kind, "instance#incarnation" or "", fields...]`:
/// `p` partition, offset, status; `d` partition, offset or tag, redelivered (0/1); `e` applied
/// (0/1), sink, how the writer was found, pid; `a` words; `k` partition, offset.
pub fn to_json(lives: &Lives, mechanism_of: impl Fn(&str) -> Option<String>) -> Value {
    let mut ids = serde_json::Map::with_capacity(lives.ids.len());
    for (id, life) in &lives.ids {
        let mut steps: Vec<&Step> = life.produced.iter().collect();
        steps.extend(
            life.delivered
                .iter()
                .chain(&life.effects)
                .chain(&life.covered),
        );
        steps.sort_by_key(|s| s.t_us);
        let steps: Vec<Value> = steps.into_iter().map(step_json).collect();
        let mut v = json!({ "s": steps });
        if let Some(o) = &life.outcome {
            v["o"] = json!(o);
        }
        if let Some(m) = mechanism_of(id) {
            v["m"] = json!(m);
        }
        if life.more > 0 {
            v["x"] = json!(life.more);
        }
        ids.insert(id.clone(), v);
    }
    json!({
        "total": lives.total,
        "kept": lives.ids.len(),
        "sampled": lives.sampled,
        "ids": ids,
    })
}
