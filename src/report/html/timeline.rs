//! The SVG timeline: a time axis; a faults lane (spans for timed faults, ticks for the rest,
//! with trigger and latency); one lane per consumer instance with each incarnation's life and
//! how it ended, accepted commits or acks per time bucket, the ones that did not count, held
//! frames, closed connections, bypasses, the anomalies it caused and its effects per bucket;
//! an unattributed lane; one lane per partition with its owner over time. Every mark has a
//! hover title saying the event it stands for.
//!
//! Invariant: one `mark fault` per fault event and one `mark anomaly` per anomaly (up to
//! [`MARKERS`](super::markers::MARKERS)); counts are exact, marks beyond a cap are said.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::activity::{self, Activity, BUCKETS};
use super::lives::{name, Lives};
use super::markers::{self, Marker, MARKERS};
use super::svg::{Scale, Svg, PLOT_LEFT, PLOT_WIDTH, WIDTH};
use crate::judge::{ExitStatus, Judgement, Outcome};
use crate::report::{latency, secs};
use crate::timeline::{FaultRecord, ProcessRef, Recorded};

const AXIS_H: f64 = 24.0;
const FAULT_H: f64 = 36.0;
const INSTANCE_H: f64 = 70.0;
const UNATTRIBUTED_H: f64 = 26.0;
const PARTITION_H: f64 = 14.0;
/// Partition lanes drawn at most.
pub const PARTITIONS: usize = 64;

const FAULT_GLYPH: &str = "M-5,-7L5,-7L0,1Z";
const DIAMOND: &str = "M0,-5L5,0L0,5L-5,0Z";
const DOT: &str = "M-4,0a4,4 0 1,0 8,0a4,4 0 1,0 -8,0";
const SQUARE: &str = "M-4,-4h8v8h-8Z";
const CROSS: &str = "M-4,-4L4,4M4,-4L-4,4";
const BAR: &str = "M0,-8V8";
const SMALL_X: &str = "M-3,-3L3,3M3,-3L-3,3";

/// The drawn timeline and what was left out of it.
#[derive(Debug)]
pub struct Drawn {
    /// The `<svg>` element.
    pub svg: String,
    /// Sentences about caps and sampling, for under the drawing.
    pub notes: Vec<String>,
}

/// Draws the run's timeline.
pub fn draw(rec: &Judgement, recorded: &Recorded, lives: &Lives) -> Drawn {
    let span = run_span(rec, recorded);
    let scale = Scale::new(span);
    let amqp = rec.run.as_ref().is_some_and(|r| r.broker == "amqp");
    let act = activity::collect(recorded, scale, amqp);
    let marks = markers::place(rec, lives);
    let instances = instances(rec, &act, &marks);
    let unattributed = marks.iter().any(|m| m.instance.is_none()) || act.unattributed_effects > 0;
    let partitions = partitions(rec);
    let height = AXIS_H
        + FAULT_H
        + INSTANCE_H * instances.len() as f64
        + if unattributed { UNATTRIBUTED_H } else { 0.0 }
        + PARTITION_H * partitions.len().min(PARTITIONS) as f64
        + 8.0;

    let mut svg = Svg::new();
    axis(&mut svg, scale, height);
    fault_lines(&mut svg, rec, scale, height);
    let mut y = AXIS_H;
    faults_lane(&mut svg, rec, scale, y);
    y += FAULT_H;
    let peak = act
        .buckets
        .values()
        .flat_map(|b| b.effects.iter())
        .copied()
        .max()
        .unwrap_or(0);
    for (row, &instance) in instances.iter().enumerate() {
        let lane = Lane {
            instance,
            y,
            row,
            peak,
        };
        instance_lane(&mut svg, rec, &act, scale, &lane);
        markers_on(&mut svg, &marks, Some(instance), scale, y + 42.0);
        y += INSTANCE_H;
    }
    if unattributed {
        lane_frame(&mut svg, y, UNATTRIBUTED_H, instances.len(), "unattributed");
        markers_on(&mut svg, &marks, None, scale, y + 13.0);
        y += UNATTRIBUTED_H;
    }
    ownership_lanes(&mut svg, rec, scale, y, &partitions);

    let label = format!(
        "Timeline of run {}",
        rec.run.as_ref().map_or("?", |r| r.run.as_str())
    );
    Drawn {
        svg: svg.finish(height, &label),
        notes: notes(rec, &act, &marks, &partitions),
    }
}

/// The run's length: its end, or its last event, or the last fault's end.
fn run_span(rec: &Judgement, recorded: &Recorded) -> u64 {
    let others = recorded.others().iter().map(|e| e.t_us).max();
    let last = others.max(recorded.last_t_us_in_columns()).unwrap_or(0);
    let faults = rec
        .faults
        .iter()
        .map(|f| f.fired_at_us.saturating_add(f.length_us.unwrap_or(0)))
        .max()
        .unwrap_or(0);
    rec.ended_at_us.unwrap_or(0).max(last).max(faults).max(1)
}

/// Instances with a lane: those with an incarnation, an effect or a marker.
fn instances(rec: &Judgement, act: &Activity, marks: &[Marker]) -> Vec<u32> {
    let mut set: BTreeSet<u32> = rec.incarnations.iter().map(|i| i.instance).collect();
    set.extend(act.buckets.keys().copied());
    set.extend(marks.iter().filter_map(|m| m.instance));
    set.into_iter().collect()
}

/// Partitions with an ownership lane.
fn partitions(rec: &Judgement) -> Vec<i32> {
    let set: BTreeSet<i32> = rec
        .ownership
        .iter()
        .flat_map(|c| c.partitions.iter().copied())
        .collect();
    set.into_iter().collect()
}

/// Time ticks and their labels.
fn axis(svg: &mut Svg, scale: Scale, height: f64) {
    const STEPS_MS: [u64; 22] = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000,
        120_000, 300_000, 600_000, 1_200_000, 1_800_000, 3_600_000,
    ];
    let step_us = STEPS_MS
        .iter()
        .map(|ms| ms * 1_000)
        .find(|s| scale.span_us / s <= 12)
        .unwrap_or(scale.span_us);
    svg.open_group("axis");
    let mut t = 0;
    while t <= scale.span_us {
        let x = scale.x(t);
        svg.line((x, AXIS_H - 4.0), (x, height), "grid");
        let label = tick_label(t, step_us);
        svg.text((x + 2.0, AXIS_H - 8.0), "tick", &label);
        let Some(next) = t.checked_add(step_us) else {
            break;
        };
        t = next;
    }
    svg.close_group();
}

/// An axis label as short as the step allows: `12s`, `1.5s`, `250ms`.
fn tick_label(t_us: u64, step_us: u64) -> String {
    match step_us {
        s if s % 1_000_000 == 0 => format!("{}s", t_us / 1_000_000),
        s if s % 100_000 == 0 => format!("{}.{}s", t_us / 1_000_000, t_us % 1_000_000 / 100_000),
        _ => format!("{}ms", t_us / 1_000),
    }
}

/// A dashed line down the whole drawing at each fault that fired.
fn fault_lines(svg: &mut Svg, rec: &Judgement, scale: Scale, height: f64) {
    for f in rec.faults.iter().filter(|f| f.applied) {
        let x = scale.x(f.fired_at_us);
        svg.line((x, AXIS_H + 6.0), (x, height), "fault-line");
    }
}

/// The faults lane: a span for each timed fault, a tick for each fault event.
fn faults_lane(svg: &mut Svg, rec: &Judgement, scale: Scale, y: f64) {
    lane_frame(svg, y, FAULT_H, 1, "faults");
    for f in &rec.faults {
        let x = scale.x(f.fired_at_us);
        let title = fault_title(rec, f);
        if let Some(len) = f.length_us.filter(|_| f.applied) {
            let w = scale.x(f.fired_at_us.saturating_add(len)) - x;
            svg.rect((x, y + 16.0, w, 12.0), "fault-span", &title);
        }
        let class = if f.applied {
            "mark fault fired"
        } else {
            "mark fault unapplied"
        };
        svg.mark(
            (x, y + 14.0),
            FAULT_GLYPH,
            class,
            &format!(r#"data-fault="{}""#, f.fault),
            &title,
        );
        if rec.faults.len() <= 40 {
            svg.text(
                (x + 6.0, y + 10.0),
                "fault-label",
                &format!("#{} {}", f.fault, f.action),
            );
        }
    }
}

/// What a fault mark says on hover: the plan's line, trigger, latency, length and whom it hit.
fn fault_title(rec: &Judgement, f: &FaultRecord) -> String {
    let plan = rec
        .run
        .as_ref()
        .and_then(|r| r.planned_faults.get(f.fault))
        .map_or(String::new(), |p| format!(" ({p})"));
    let hit: Vec<String> = f.hit.iter().map(|p| name(*p)).collect();
    format!(
        "fault #{} {} {}{plan}: trigger `{}` matched at {}, {} at {} (latency {}){}{}; {}",
        f.fault,
        f.action,
        f.target,
        f.trigger,
        secs(f.matched_at_us),
        if f.applied {
            "fired"
        } else {
            "could not be applied"
        },
        secs(f.fired_at_us),
        latency(f.trigger_latency_us),
        f.length_us
            .map_or(String::new(), |l| format!(", lasting {}", latency(l))),
        if hit.is_empty() {
            String::new()
        } else {
            format!(", hit {}", hit.join(", "))
        },
        f.detail
    )
}

/// The frame and label of one lane.
fn lane_frame(svg: &mut Svg, y: f64, h: f64, row: usize, label: &str) {
    let class = if row.is_multiple_of(2) {
        "lane even"
    } else {
        "lane odd"
    };
    svg.rect((0.0, y, WIDTH, h), class, "");
    svg.text((6.0, y + h / 2.0 + 4.0), "lane-label", label);
}

/// Where one instance's lane is.
struct Lane {
    instance: u32,
    y: f64,
    row: usize,
    peak: u32,
}

/// One instance's lane: commits or acks, incarnations, held frames, closed connections,
/// bypasses and effects.
fn instance_lane(svg: &mut Svg, rec: &Judgement, act: &Activity, scale: Scale, lane: &Lane) {
    let (i, y) = (lane.instance, lane.y);
    lane_frame(svg, y, INSTANCE_H, lane.row + 1, &format!("consumer[{i}]"));
    let empty = activity::Buckets::default();
    let buckets = act.buckets.get(&i).unwrap_or(&empty);
    let done = if act.amqp {
        "acks reached the broker"
    } else {
        "commits accepted"
    };
    bars(
        svg,
        scale,
        &buckets.done,
        (y + 2.0, 8.0, 1),
        "done",
        &format!("{done} from consumer[{i}]"),
    );
    incarnations(svg, rec, scale, i, y + 14.0);
    let hits = rec
        .faults
        .iter()
        .filter(|f| f.applied && f.hit.iter().any(|p| p.instance == i));
    for f in hits {
        let x = scale.x(f.fired_at_us);
        let w = scale.x(f.fired_at_us.saturating_add(f.length_us.unwrap_or(0))) - x;
        svg.rect(
            (x, y + 11.0, w.max(2.0), 20.0),
            "fault-span",
            &fault_title(rec, f),
        );
    }
    for t in act.held.shown.iter().filter(|t| t.instance == i) {
        let x = scale.x(t.from_us);
        svg.rect((x, y + 30.0, scale.x(t.to_us) - x, 4.0), "held", &t.what);
    }
    for t in act.not_done.shown.iter().filter(|t| t.instance == i) {
        svg.mark(
            (scale.x(t.from_us), y + 6.0),
            SMALL_X,
            "notdone",
            "",
            &t.what,
        );
    }
    for c in rec.connections_closed.iter().filter(|c| c.instance == i) {
        let title = format!(
            "connection of consumer[{i}]#{} closed by {:?} with {} unacked: {}",
            c.incarnation, c.by, c.unacked, c.detail
        );
        svg.mark(
            (scale.x(c.t_us), y + 22.0),
            SQUARE,
            "closed",
            "",
            &title.to_lowercase(),
        );
    }
    for b in rec.bypasses.iter().filter(|b| b.instance == i) {
        let title = format!("bypass: {} connected straight to the broker", b.describe());
        svg.mark((scale.x(b.t_us), y + 22.0), DIAMOND, "bypass", "", &title);
    }
    let label = format!("effects applied by consumer[{i}]");
    bars(
        svg,
        scale,
        &buckets.effects,
        (y + 50.0, 18.0, lane.peak),
        "effects",
        &label,
    );
}

/// Bars per time bucket, bottom-aligned in `(top, height)`, scaled to `peak`.
fn bars(
    svg: &mut Svg,
    scale: Scale,
    counts: &[u32],
    (top, h, peak): (f64, f64, u32),
    class: &str,
    what: &str,
) {
    let peak = counts.iter().copied().max().unwrap_or(0).max(peak).max(1);
    let w = PLOT_WIDTH / BUCKETS as f64;
    for (b, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let (from, to) = scale.bucket_range(b, BUCKETS);
        let bh = (h * n as f64 / peak as f64).max(1.5);
        let title = format!("{n} {what} from {} to {}", secs(from), secs(to));
        svg.rect(
            (PLOT_LEFT + b as f64 * w, top + h - bh, w.max(1.0), bh),
            class,
            &title,
        );
    }
}

/// Each incarnation of instance `i` as a bar from start to exit, with how it ended.
fn incarnations(svg: &mut Svg, rec: &Judgement, scale: Scale, i: u32, y: f64) {
    for inc in rec.incarnations.iter().filter(|n| n.instance == i) {
        let from = inc.started_us.unwrap_or(0);
        let to = inc.exited_us.unwrap_or(scale.span_us);
        let status = inc
            .status
            .as_deref()
            .unwrap_or("still running when the timeline ends");
        let title = format!(
            "consumer[{i}] incarnation {} (pid {}): started {}, {}",
            inc.incarnation,
            inc.pid,
            inc.started_us.map_or("before the timeline".into(), secs),
            match inc.exited_us {
                Some(t) => format!("exited {} ({status})", secs(t)),
                None => status.to_string(),
            }
        );
        let class = format!("life c{} n{}", i % 8, inc.incarnation % 2);
        let x = scale.x(from);
        svg.rect((x, y, scale.x(to) - x, 14.0), &class, &title);
        if scale.x(to) - x > 18.0 {
            svg.text(
                (x + 3.0, y + 11.0),
                "life-label",
                &format!("#{}", inc.incarnation),
            );
        }
        if let (Some(t), Some(text)) = (inc.exited_us, inc.status.as_deref()) {
            let (glyph, class) = match ExitStatus::parse(text) {
                s if s.is_crash() => (CROSS, "exit crash"),
                ExitStatus::Terminated => (BAR, "exit term"),
                _ => (BAR, "exit clean"),
            };
            svg.mark((scale.x(t), y + 7.0), glyph, class, "", &title);
        }
    }
}

/// The anomaly markers of one lane (`None`: the unattributed lane).
fn markers_on(svg: &mut Svg, marks: &[Marker], lane: Option<u32>, scale: Scale, y: f64) {
    for m in marks.iter().filter(|m| m.instance == lane) {
        let glyph = match m.outcome {
            Outcome::Duplicated | Outcome::Phantom => DIAMOND,
            Outcome::Lost | Outcome::UnconfirmedLoss => DOT,
            Outcome::Pending | Outcome::Unconfirmed | Outcome::Diverted | Outcome::Exact => SQUARE,
        };
        let class = format!("mark anomaly {}", m.outcome.as_str());
        let attrs = format!(r#"data-id="{}" tabindex="0""#, super::svg::esc(&m.id));
        svg.mark((scale.x(m.t_us), y), glyph, &class, &attrs, &m.title);
    }
}

/// One lane per partition: who owned it when, as the proxy saw the assignments.
fn ownership_lanes(svg: &mut Svg, rec: &Judgement, scale: Scale, y: f64, partitions: &[i32]) {
    let exits: HashMap<ProcessRef, u64> = rec
        .incarnations
        .iter()
        .filter_map(|n| {
            n.exited_us.map(|t| {
                (
                    ProcessRef {
                        instance: n.instance,
                        incarnation: n.incarnation,
                    },
                    t,
                )
            })
        })
        .collect();
    let segments = segments(rec, scale.span_us, &exits);
    for (row, p) in partitions.iter().take(PARTITIONS).enumerate() {
        let top = y + row as f64 * PARTITION_H;
        lane_frame(svg, top, PARTITION_H, row, &format!("partition {p}"));
        for (from, to, owner) in segments.get(p).into_iter().flatten() {
            let (class, who) = match owner {
                Some(o) => (
                    format!("own c{} n{}", o.instance % 8, o.incarnation % 2),
                    name(*o),
                ),
                None => (
                    "own member".to_string(),
                    "the harness's transient group member".to_string(),
                ),
            };
            let title = format!(
                "partition {p} owned by {who} from {} to {} (as the proxy saw the assignments)",
                secs(*from),
                secs(*to)
            );
            let x = scale.x(*from);
            svg.rect(
                (x, top + 2.0, scale.x(*to) - x, PARTITION_H - 4.0),
                &class,
                &title,
            );
        }
    }
}

/// Per partition, `(from, to, owner)` spans: an owner holds a partition from its assignment to
/// the next assignment that leaves it out, another owner's, or its process's exit.
fn segments(
    rec: &Judgement,
    span: u64,
    exits: &HashMap<ProcessRef, u64>,
) -> BTreeMap<i32, Vec<(u64, u64, Option<ProcessRef>)>> {
    let mut open: BTreeMap<i32, (u64, Option<ProcessRef>)> = BTreeMap::new();
    let mut out: BTreeMap<i32, Vec<(u64, u64, Option<ProcessRef>)>> = BTreeMap::new();
    let close = |out: &mut BTreeMap<i32, Vec<_>>,
                 p: i32,
                 (from, owner): (u64, Option<ProcessRef>),
                 t: u64| {
        let end = owner
            .and_then(|o| exits.get(&o).copied())
            .map_or(t, |e| e.min(t))
            .max(from);
        out.entry(p).or_default().push((from, end, owner));
    };
    for c in &rec.ownership {
        match (c.owner, c.released) {
            (Some(o), _) => {
                let dropped: Vec<i32> = open
                    .iter()
                    .filter(|(p, (_, w))| *w == Some(o) && !c.partitions.contains(p))
                    .map(|(p, _)| *p)
                    .collect();
                for p in dropped {
                    let seg = open.remove(&p).expect("listed above");
                    close(&mut out, p, seg, c.t_us);
                }
                for p in &c.partitions {
                    match open.get(p) {
                        Some((_, w)) if *w == Some(o) => {}
                        _ => {
                            if let Some(seg) = open.insert(*p, (c.t_us, Some(o))) {
                                close(&mut out, *p, seg, c.t_us);
                            }
                        }
                    }
                }
            }
            (None, released) => {
                for p in &c.partitions {
                    let seg = if released {
                        open.remove(p)
                    } else {
                        open.insert(*p, (c.t_us, None))
                    };
                    if let Some(seg) = seg {
                        close(&mut out, *p, seg, c.t_us);
                    }
                }
            }
        }
    }
    for (p, seg) in open {
        close(&mut out, p, seg, span);
    }
    out
}

/// Sentences about what the drawing leaves out.
fn notes(rec: &Judgement, act: &Activity, marks: &[Marker], partitions: &[i32]) -> Vec<String> {
    let mut notes = Vec::new();
    let anomalies = super::parts::anomalies(&super::parts::of(rec)).count();
    if anomalies > marks.len() {
        notes.push(format!(
            "The first {} of {anomalies} anomalies are marked (cap {MARKERS}); report.json lists them all.",
            marks.len(),
        ));
    }
    for (what, m) in [
        ("held frames", &act.held),
        ("commits or acks that did not count", &act.not_done),
    ] {
        if m.total > m.shown.len() as u64 {
            notes.push(format!(
                "The first {} of {} {what} are drawn.",
                m.shown.len(),
                m.total
            ));
        }
    }
    if partitions.len() > PARTITIONS {
        notes.push(format!(
            "The first {PARTITIONS} of {} partitions have an ownership lane.",
            partitions.len()
        ));
    }
    if act.unattributed_effects > 0 {
        notes.push(format!(
            "{} applied effects could not be tied to a consumer process (not in any lane's bars).",
            act.unattributed_effects
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::analyze;
    use crate::judge::fixtures::{commit_event, committed, Tl};
    use crate::timeline::{CommitPhase, Event, MemberChange, ProcessPhase, RebalanceKind};

    fn assign(instance: u32, incarnation: u32, parts: &[i32]) -> Event {
        Event::Rebalance {
            instance,
            incarnation,
            group: "g".into(),
            change: RebalanceKind::Assign,
            member: String::new(),
            generation: None,
            assignment: Some(parts.to_vec()),
            error: None,
            protocols: None,
            session_timeout_ms: None,
        }
    }

    fn member(change: MemberChange, parts: &[i32]) -> Event {
        Event::GroupMember {
            group: "g".into(),
            change,
            partitions: Some(parts.to_vec()),
            error: None,
        }
    }

    #[test]
    fn a_partition_is_owned_until_the_next_assignment_or_its_owners_exit() {
        let p = |instance, incarnation| {
            Some(ProcessRef {
                instance,
                incarnation,
            })
        };
        let mut tl = Tl::new();
        tl.process(1, ProcessPhase::Started) // t 1 ms
            .push(assign(0, 1, &[0, 1])) // 2 ms: consumer[0]#1 owns 0 and 1
            .push(member(MemberChange::Assigned, &[1])) // 3 ms: the member takes 1
            .push(member(MemberChange::Revoked, &[1])) // 4 ms: and gives it back
            .push(assign(0, 1, &[0])) // 5 ms: consumer[0]#1 keeps 0 only
            .process(1, ProcessPhase::Exited); // 6 ms: and dies
        let rec = analyze(&tl.events);
        let exits: HashMap<ProcessRef, u64> = [(
            ProcessRef {
                instance: 0,
                incarnation: 1,
            },
            6_000,
        )]
        .into();
        let segs = segments(&rec, 10_000, &exits);
        assert_eq!(
            segs[&0],
            vec![(2_000, 6_000, p(0, 1))],
            "held until its owner died"
        );
        assert_eq!(
            segs[&1],
            vec![(2_000, 3_000, p(0, 1)), (3_000, 4_000, None)],
            "moved to the member, then nobody the proxy saw"
        );
    }

    #[test]
    fn axis_labels_are_as_short_as_the_step() {
        assert_eq!(tick_label(12_000_000, 2_000_000), "12s");
        assert_eq!(tick_label(1_500_000, 500_000), "1.5s");
        assert_eq!(tick_label(250_000, 50_000), "250ms");
    }

    #[test]
    fn a_lost_id_is_marked_on_the_lane_of_the_consumer_that_committed_past_it() {
        let mut tl = Tl::new();
        tl.start(
            &["kill: consumer when {after: effect, nth: 1}"],
            2,
            "at-least-once",
        )
        .produced("a", 0, 0)
        .produced("b", 0, 1)
        .process(1, ProcessPhase::Started)
        .push(commit_event(
            "billing-r1",
            (0, 1),
            vec![committed("orders-r1", 0, 2)],
            CommitPhase::Response,
        ))
        .effect("a", 1)
        .fault(0, true)
        .progress(&[(0, 2)])
        .end(crate::timeline::EndReason::Settled);
        let rec = analyze(&tl.events);
        assert_eq!(
            rec.verdict,
            crate::judge::Verdict::Lost,
            "{:?}",
            rec.anomalies
        );
        let lives = super::super::lives::collect(&rec, &Recorded::from_events(&tl.events));
        let marks = markers::place(&rec, &lives);
        assert_eq!(marks.len(), 1);
        assert_eq!((marks[0].id.as_str(), marks[0].instance), ("b", Some(0)));
        assert!(
            marks[0].title.contains("counted done"),
            "{}",
            marks[0].title
        );
    }
}
