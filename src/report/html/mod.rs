//! `report.html`: one self-contained page per run for people (incident reviews, CI
//! artifacts): the verdict and the promise, an SVG timeline drawn here, the root cause, and a
//! search over per-ID lives.
//!
//! Layout: `svg` (primitives, scale, escaping), `activity` (per-instance counts over time),
//! `markers` (where each anomaly goes), `lives` (per-ID lives for the search), `timeline` (the
//! drawing); this file builds the page model and renders `templates/report.html` with the
//! stylesheet and script beside this file inlined.
//!
//! Invariants: built from the judgement and the events alone, with no clock and no
//! environment (`exactly report DIR` re-renders the same bytes); no external resource of any
//! kind (no URL is fetched: styles, script, data and drawing are inline); every text from the
//! timeline is escaped (the template escapes by default, the SVG through `svg::esc`, the data
//! through [`script_json`]); large runs are capped and the page says where.

use askama::Template;

use super::{expectation_line, redact_address, secs, summary_sentence, MOCK_WARNING};
use crate::judge::{ExpectationState, Judgement, Outcome, Verdict};
use crate::timeline::{EndReason, Recorded};

mod activity;
mod lives;
mod markers;
mod parts;
mod svg;
mod timeline;

/// IDs listed per outcome in the anomalies section (all are searchable when kept).
const IDS_PER_OUTCOME: usize = 50;
/// Rows of the commit-window, key-order and connection tables.
const TABLE_ROWS: usize = 20;
/// Warnings shown.
const WARNINGS: usize = 50;

/// The stylesheet (also the audit page's).
pub(crate) const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("search.js");

/// One mechanism group as the page shows it.
struct Group {
    title: String,
    count: u64,
    after: String,
    mechanism: &'static str,
    recommendation: String,
    harness_hold: bool,
    samples: Vec<(String, Vec<(String, String)>)>,
    more: u64,
}

/// The IDs of one outcome.
struct OutcomeIds {
    name: &'static str,
    count: usize,
    ids: Vec<String>,
}

/// One row of the header's boundary table.
struct BoundaryRow {
    name: String,
    sink: String,
    expect: String,
    verdict: &'static str,
    verdict_class: &'static str,
    kept: &'static str,
    kept_class: &'static str,
    effected: u64,
    exact: u64,
    duplicated: u64,
    lost: u64,
    pending: u64,
    mechanisms: String,
    anchor: String,
}

/// The findings of one part: the run's own, or one boundary's under its heading.
struct Section {
    /// Empty for a run with one sink; `Boundary email: DUPLICATED (http sink, promise ...)`.
    heading: String,
    /// Appended to the element IDs: empty for a run with one sink, `-1`, `-2`... per boundary.
    suffix: String,
    /// The boundary's own summary sentence (empty for a run with one sink: the header has it).
    summary: String,
    groups: Vec<Group>,
    outcomes: Vec<OutcomeIds>,
    commits_ahead: Vec<Vec<String>>,
    commits_ahead_count: u64,
    key_order: Vec<Vec<String>>,
    key_order_count: u64,
    topics: Vec<String>,
    reasons: Vec<(&'static str, Vec<String>)>,
}

/// The page.
#[derive(Template)]
#[template(path = "report.html")]
struct Page {
    title: String,
    about: String,
    description: String,
    verdict: &'static str,
    verdict_class: &'static str,
    expectation: String,
    promise_class: &'static str,
    summary: String,
    alerts: Vec<String>,
    reproduce: String,
    boundaries: Vec<BoundaryRow>,
    counts: Vec<(&'static str, String)>,
    svg: String,
    notes: Vec<String>,
    lives_note: String,
    sections: Vec<Section>,
    closed: Vec<Vec<String>>,
    warnings: Vec<String>,
    warnings_count: usize,
    css: &'static str,
    js: &'static str,
    data: String,
}

/// Renders `report.html` from the judgement and the events it was made from.
pub fn render(rec: &Judgement, recorded: &Recorded) -> Result<String, askama::Error> {
    let lives = lives::collect(rec, recorded);
    let drawn = timeline::draw(rec, recorded, &lives);
    let parts = parts::of(rec);
    let mut data = lives::to_json(&lives, |id| parts::mechanisms_of(&parts, id));
    data["faults"] = rec
        .faults
        .iter()
        .map(|f| {
            serde_json::json!([
                f.fired_at_us,
                f.length_us,
                format!(
                    "#{} {} {} (trigger `{}`, latency {}): {}",
                    f.fault,
                    f.action,
                    f.target,
                    f.trigger,
                    super::latency(f.trigger_latency_us),
                    f.detail
                ),
                f.applied
            ])
        })
        .collect();
    let (verdict_class, promise_class) = classes(rec);
    let page = Page {
        title: rec.run.as_ref().map_or("exactly: unknown run".into(), |r| {
            format!("{}: run {}", r.plan, r.run)
        }),
        about: about(rec),
        description: rec
            .run
            .as_ref()
            .and_then(|r| r.description.clone())
            .unwrap_or_default(),
        verdict: rec.verdict.as_str(),
        verdict_class,
        expectation: expectation_line(rec),
        promise_class,
        summary: summary_sentence(rec),
        alerts: alerts(rec),
        reproduce: rec
            .run
            .as_ref()
            .map_or(String::new(), |r| r.reproduce.clone()),
        boundaries: boundary_rows(rec),
        counts: counts(rec),
        svg: drawn.svg,
        notes: drawn.notes,
        lives_note: lives_note(&lives),
        sections: sections(rec),
        closed: closed(rec),
        warnings: rec.warnings.iter().take(WARNINGS).cloned().collect(),
        warnings_count: rec.warnings.len(),
        css: CSS,
        js: JS,
        data: script_json(&data),
    };
    page.render()
}

/// JSON safe inside a `<script>` element: no `<` at all (so no `</script>` or `<!--`).
fn script_json(value: &serde_json::Value) -> String {
    value.to_string().replace('<', "\\u003c")
}

/// CSS classes for the verdict and the promise.
fn classes(rec: &Judgement) -> (&'static str, &'static str) {
    (
        verdict_class(rec.verdict),
        promise_class(rec.expectation_state),
    )
}

/// The CSS class of a verdict (also the audit page's).
pub(crate) fn verdict_class(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Exact => "exact",
        Verdict::Duplicated | Verdict::Lost | Verdict::LostAndDuplicated => "bad",
        Verdict::Inconclusive => "unknown",
    }
}

/// The CSS class of a promise's state.
fn promise_class(state: ExpectationState) -> &'static str {
    match state {
        ExpectationState::Met => "exact",
        ExpectationState::Violated => "bad",
        ExpectationState::Unknown => "unknown",
    }
}

/// "kafka at 127.0.0.1:9092, topic t, group g, seed 42".
fn about(rec: &Judgement) -> String {
    let Some(r) = rec.run.as_ref() else {
        return "The timeline has no run_started event.".into();
    };
    let group = match r.group.as_str() {
        "" => String::new(),
        g => format!(", group {g}"),
    };
    let place = if r.broker == "amqp" { "queue" } else { "topic" };
    format!(
        "{} at {}, {place} {}{group}, seed {}; {} messages planned",
        r.broker,
        redact_address(&r.broker_address),
        r.topic,
        r.seed,
        r.messages
    )
}

/// What nobody may miss: the mock broker, a harness failure, a plan error, a bypass.
fn alerts(rec: &Judgement) -> Vec<String> {
    let mut out = Vec::new();
    if rec.mock_broker() {
        out.push(format!("Warning: {MOCK_WARNING}."));
    }
    match rec.end_reason {
        Some(EndReason::InfrastructureError) => out.push("The harness failed (infrastructure error, exit 4): read the warnings before drawing any conclusion about the consumer.".into()),
        Some(EndReason::PlanError) => out.push("The run was stopped early: the plan must be fixed (exit 2); the warnings show why.".into()),
        Some(EndReason::Aborted) => out.push("The run was interrupted: no claim can be met on this evidence.".into()),
        None => out.push("The timeline has no run_ended event: the harness stopped mid-run.".into()),
        Some(EndReason::Settled | EndReason::Deadline) => {}
    }
    if let Some(line) = super::bypass_line(rec) {
        out.push(format!("{line}."));
    }
    out
}

/// The counts table.
fn counts(rec: &Judgement) -> Vec<(&'static str, String)> {
    let k = &rec.counts;
    let mut rows = vec![
        (
            "produced",
            format!(
                "{} (failed {}, indeterminate {})",
                k.produced, k.failed, k.indeterminate
            ),
        ),
        ("effected", k.effected.to_string()),
        ("exact", k.exact.to_string()),
        ("duplicated", k.duplicated.to_string()),
        ("lost", k.lost.to_string()),
        ("pending", k.pending.to_string()),
        ("phantom", k.phantom.to_string()),
        (
            "faults",
            format!("{} of {} fired", rec.faults_fired.len(), rec.faults_planned),
        ),
        (
            "ended",
            rec.end_reason
                .map_or("never (no run_ended event)".into(), |r| {
                    format!(
                        "{} at {}",
                        super::end_reason_str(r),
                        rec.ended_at_us.map_or("?".into(), secs)
                    )
                }),
        ),
    ];
    if !rec.boundaries.is_empty() {
        // Per-ID outcomes belong to each boundary (the table above); the ledger and the run
        // are shared.
        rows.retain(|(k, _)| matches!(*k, "produced" | "faults" | "ended"));
        return rows;
    }
    if k.unconfirmed_loss > 0 || k.rejected > 0 {
        rows.push((
            "unconfirmed",
            format!(
                "{} counted done without a readable effect ({} effects rejected)",
                k.unconfirmed_loss, k.rejected
            ),
        ));
    }
    if k.harness_duplicated > 0 {
        rows.push((
            "harness-made",
            format!(
                "{} duplicated by the harness's hold (not counted against the consumer)",
                k.harness_duplicated
            ),
        ));
    }
    if k.not_counted_done > 0 {
        rows.push((
            "not done",
            format!(
                "{} effected, never counted done by the broker",
                k.not_counted_done
            ),
        ));
    }
    rows
}

/// What the search holds.
fn lives_note(lives: &lives::Lives) -> String {
    match lives.sampled {
        false => format!("Every one of the {} IDs can be searched.", lives.total),
        true => format!(
            "{} of {} IDs can be searched: every anomaly (up to {}) and an even sample of the others in produce order. For any other ID, grep the run folder's events.jsonl (a Kafka delivery recorded as an offset range names its partition and offsets, not the ID: look its offset up in the ID's produced line).",
            lives.ids.len(),
            lives.total,
            lives::ANOMALY_LIVES
        ),
    }
}

/// The header's table of a run with boundaries: each boundary's verdict, promise, counts and
/// mechanisms; empty for a run with one sink.
fn boundary_rows(rec: &Judgement) -> Vec<BoundaryRow> {
    rec.boundaries
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let j = &b.judgement;
            let mechanisms = j.mechanisms.summary();
            BoundaryRow {
                name: b.name.clone(),
                sink: b.sink.to_string(),
                expect: b.expect.clone(),
                verdict: j.verdict.as_str(),
                verdict_class: verdict_class(j.verdict),
                kept: j.expectation_state.as_str(),
                kept_class: promise_class(j.expectation_state),
                effected: j.counts.effected,
                exact: j.counts.exact,
                duplicated: j.counts.duplicated,
                lost: j.counts.lost,
                pending: j.counts.pending,
                mechanisms: mechanisms.join("; "),
                anchor: format!("boundary-{}", i + 1),
            }
        })
        .collect()
}

/// The findings of each part: the run's, or each boundary's under its heading.
fn sections(rec: &Judgement) -> Vec<Section> {
    parts::of(rec)
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let r = p.rec;
            let (heading, suffix, summary) = match rec.boundaries.get(i) {
                Some(b) if p.boundary.is_some() => (
                    format!(
                        "Boundary {}: {} ({} sink, promise {}: {})",
                        b.name,
                        r.verdict,
                        b.sink,
                        b.expect,
                        r.expectation_state.as_str()
                    ),
                    format!("-{}", i + 1),
                    summary_sentence(r),
                ),
                _ => (String::new(), String::new(), String::new()),
            };
            Section {
                heading,
                suffix,
                summary,
                groups: groups(r),
                outcomes: outcomes(r),
                commits_ahead: commits_ahead(r),
                commits_ahead_count: r.commits_ahead.count,
                key_order: key_order(r),
                key_order_count: r.key_order.count,
                topics: topics(r),
                reasons: reasons(r),
            }
        })
        .collect()
}

/// What was read back from an output topic, in a sentence each.
fn topics(rec: &Judgement) -> Vec<String> {
    rec.output_topics
        .iter()
        .map(|t| {
            let aborted = match t.aborted_records {
                0 => "no record of an aborted transaction".to_string(),
                n => format!(
                    "{n} record{} of aborted transactions ({} naming a message): never effects under read_committed, but a read_uncommitted reader downstream would have seen them",
                    if n == 1 { "" } else { "s" },
                    t.aborted_with_id
                ),
            };
            format!(
                "Output topic {}: effects read {}; {} records under read_committed, {} under read_uncommitted; {aborted}.{}",
                t.topic,
                t.isolation,
                t.committed_records,
                t.uncommitted_records,
                if t.complete { "" } else { " Not read to its end once the run stopped: effects may be missing." }
            )
        })
        .collect()
}

/// The mechanism groups with their evidence chains.
fn groups(rec: &Judgement) -> Vec<Group> {
    rec.mechanisms
        .groups
        .iter()
        .map(|g| Group {
            title: g.title.clone(),
            count: g.count,
            after: g.fault.map_or(String::new(), |f| {
                let plan = rec
                    .run
                    .as_ref()
                    .and_then(|r| r.planned_faults.get(f))
                    .map_or(String::new(), |p| format!(" ({p})"));
                format!("after fault #{f}{plan}")
            }),
            mechanism: g.mechanism.as_str(),
            recommendation: g.recommendation.clone(),
            harness_hold: g.harness_hold,
            samples: g
                .samples
                .iter()
                .map(|e| {
                    (
                        e.id.clone(),
                        e.evidence
                            .iter()
                            .map(|x| (secs(x.t_us), x.what.clone()))
                            .collect(),
                    )
                })
                .collect(),
            more: g.count.saturating_sub(g.samples.len() as u64),
        })
        .collect()
}

/// The anomalous IDs per outcome.
fn outcomes(rec: &Judgement) -> Vec<OutcomeIds> {
    Outcome::ANOMALIES
        .iter()
        .map(|o| OutcomeIds {
            name: o.as_str(),
            count: rec.anomalies_of(*o).count(),
            ids: rec
                .anomalies_of(*o)
                .take(IDS_PER_OUTCOME)
                .map(|a| a.id.clone())
                .collect(),
        })
        .filter(|o| o.count > 0)
        .collect()
}

/// Commits and acks ahead of effects: id, place, accepted at, by, effect at.
fn commits_ahead(rec: &Judgement) -> Vec<Vec<String>> {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    rec.commits_ahead
        .samples
        .iter()
        .take(TABLE_ROWS)
        .map(|c| {
            vec![
                c.id.clone(),
                format!(
                    "{}/{}",
                    dash(c.partition.map(|p| p.to_string())),
                    dash(c.offset.map(|o| o.to_string()))
                ),
                secs(c.commit_t_us),
                format!("consumer[{}]#{}", c.instance, c.incarnation),
                c.effect_t_us.map_or("never".into(), secs),
            ]
        })
        .collect()
}

/// Key-order findings: key, applied first, applied later, owner change.
fn key_order(rec: &Judgement) -> Vec<Vec<String>> {
    let who = |p: Option<crate::timeline::ProcessRef>| p.map_or("unknown".into(), lives::name);
    rec.key_order
        .samples
        .iter()
        .take(TABLE_ROWS)
        .map(|r| {
            vec![
                r.key.clone(),
                format!(
                    "{} (#{}) at {} by {}",
                    r.later.id,
                    r.later.key_seq,
                    secs(r.later.t_us),
                    who(r.later.by)
                ),
                format!(
                    "{} (#{}) at {} by {}",
                    r.earlier.id,
                    r.earlier.key_seq,
                    secs(r.earlier.t_us),
                    who(r.earlier.by)
                ),
                if r.ownership_changed { "yes" } else { "no" }.into(),
            ]
        })
        .collect()
}

/// Connections closed before the run ended: at, by whom, unacked, how.
fn closed(rec: &Judgement) -> Vec<Vec<String>> {
    rec.connections_closed
        .iter()
        .take(TABLE_ROWS)
        .map(|c| {
            vec![
                secs(c.t_us),
                format!("consumer[{}]#{}", c.instance, c.incarnation),
                format!("{:?}", c.by).to_lowercase(),
                c.unacked.to_string(),
                c.detail.clone(),
            ]
        })
        .collect()
}

/// Why inconclusive, the caveats, and what hides an unknown claim.
fn reasons(rec: &Judgement) -> Vec<(&'static str, Vec<String>)> {
    let text = |list: &[crate::judge::InconclusiveReason]| {
        list.iter().map(|r| r.to_string()).collect::<Vec<_>>()
    };
    let mut out = vec![
        ("Why inconclusive", text(&rec.inconclusive_reasons)),
        ("Caveats", text(&rec.caveats)),
    ];
    if rec.verdict != Verdict::Inconclusive {
        out.push(("Why the claim is unknown", text(&rec.expectation_unknown)));
    }
    out.retain(|(_, l)| !l.is_empty());
    out
}

#[cfg(test)]
mod tests;
