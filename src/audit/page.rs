//! `audit.html`: the audit's index page for people and CI artifacts. The conclusion, the
//! contract table (a row per cell: verdicts over its repeats, the dominant mechanism, faults
//! hit vs armed), and each repeat's verdict as a link to that run's `report.html`, beside the
//! calibration run's.
//!
//! Invariants: self-contained like `report.html` (the same stylesheet inlined, no script, no
//! URL fetched; the links are relative, to the run folders inside the audit folder, so the
//! folder can be moved or attached whole); every text is escaped by the template; a pure
//! function of the [`AuditReport`].

use std::path::Path;

use askama::Template;

use crate::audit::output::{AuditReport, CellJson};
use crate::judge::Verdict;

/// One repeat's link.
struct RunLink {
    verdict: &'static str,
    class: &'static str,
    href: String,
    title: String,
}

/// One row of the contract table.
struct Row {
    fault: String,
    description: String,
    applicable: bool,
    reason: String,
    runs: String,
    counts: Vec<usize>,
    mechanisms: String,
    hit: String,
    links: Vec<RunLink>,
    /// The minimal fault set of a failing multi-fault cell, in a sentence (or empty).
    shrunk: String,
}

/// The page.
#[derive(Template)]
#[template(path = "audit.html")]
struct Page {
    title: String,
    conclusion: String,
    conclusion_class: &'static str,
    facts: String,
    interrupted: bool,
    calibration: String,
    calibration_href: String,
    verdicts: [&'static str; 5],
    rows: Vec<Row>,
    css: &'static str,
}

/// The verdict columns, in table order.
const VERDICTS: [Verdict; 5] = [
    Verdict::Exact,
    Verdict::Duplicated,
    Verdict::Lost,
    Verdict::LostAndDuplicated,
    Verdict::Inconclusive,
];

/// Renders `audit.html`.
pub fn render(r: &AuditReport) -> Result<String, askama::Error> {
    let (calibration, calibration_href) = match &r.calibration {
        Some(c) => (
            format!(
                "Calibration (no fault): {} of {} messages effected, {:.1} ms per message, {} commit(s), {} ack(s), {} deliveries, {}.",
                c.effected,
                c.produced,
                c.per_message_us as f64 / 1000.0,
                c.commits,
                c.acks,
                c.deliveries,
                c.liveness_text()
            ),
            report_href(&c.run_dir),
        ),
        None => (
            "The calibration run did not finish: no cell ran.".into(),
            String::new(),
        ),
    };
    let page = Page {
        title: format!("Audit of {} ({})", r.plan, r.broker),
        conclusion: r.conclusion.clone(),
        conclusion_class: match r.exit_code {
            0 => "exact",
            1 => "bad",
            _ => "unknown",
        },
        facts: format!(
            "Measured semantics: {}. Claimed: {} → exit {}. {} repeat(s) per cell, seed {}, {:.0} s in all.",
            r.semantics, r.expect, r.exit_code, r.repeats, r.seed, r.seconds
        ),
        interrupted: r.interrupted,
        calibration,
        calibration_href,
        verdicts: VERDICTS.map(Verdict::as_str),
        rows: r.cells.iter().map(row).collect(),
        css: crate::report::html::CSS,
    };
    page.render()
}

/// One cell's row.
fn row(c: &CellJson) -> Row {
    let links = c
        .details
        .iter()
        .map(|d| RunLink {
            verdict: d.verdict.as_str(),
            class: crate::report::html::verdict_class(d.verdict),
            href: report_href(&d.run_dir),
            title: format!(
                "seed {}, claim {}, exit {}{}",
                d.seed,
                d.expectation,
                d.exit_code,
                d.failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(", harness failure: {f}"))
            ),
        })
        .collect();
    Row {
        fault: c.fault.clone(),
        description: c.description.clone(),
        applicable: c.applicable,
        reason: c.reason.clone().unwrap_or_default(),
        runs: format!(
            "{}{}",
            c.runs,
            if c.interrupted { " (interrupted)" } else { "" }
        ),
        counts: VERDICTS
            .iter()
            .map(|v| c.verdicts.get(v.as_str()).copied().unwrap_or(0))
            .collect(),
        mechanisms: c.mechanisms.join(", "),
        hit: format!("{}/{}", c.faults_hit, c.faults_armed),
        links,
        shrunk: c
            .shrunk
            .as_ref()
            .map_or(String::new(), crate::audit::output::shrunk_line),
    }
}

/// A run folder's report, relative to the audit folder the runs live in (`kill-after-effect-1/report.html`).
fn report_href(run_dir: &str) -> String {
    let name = Path::new(run_dir)
        .file_name()
        .map_or_else(|| run_dir.to_owned(), |n| n.to_string_lossy().into_owned());
    format!("{name}/report.html")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::contract::RunResult;

    fn run(dir: &str, verdict: Verdict, expectation: &'static str) -> RunResult {
        RunResult {
            run_dir: dir.into(),
            seed: 7,
            verdict,
            expectation,
            exit_code: if expectation == "met" { 0 } else { 1 },
            mechanisms: vec!["crash_after_effect".into()],
            faults_planned: 1,
            faults_hit: 1,
            failure: None,
        }
    }

    fn report() -> AuditReport {
        let cell = |fault: &str, runs: Vec<RunResult>| CellJson {
            fault: fault.into(),
            description: "kill: consumer when {during: effect, nth: 20}".into(),
            applicable: true,
            reason: None,
            runs: runs.len(),
            verdicts: VERDICTS
                .iter()
                .map(|v| (v.as_str(), runs.iter().filter(|r| r.verdict == *v).count()))
                .collect(),
            mechanisms: vec!["crash_after_effect".into()],
            faults_armed: runs.len(),
            faults_hit: runs.len(),
            run_dirs: runs.iter().map(|r| r.run_dir.clone()).collect(),
            details: runs,
            interrupted: false,
            shrunk: None,
        };
        let mut scale = cell(
            "scale",
            vec![run("/tmp/a/scale-1", Verdict::Duplicated, "violated")],
        );
        scale.shrunk = Some(crate::audit::contract::Shrunk {
            from: "/tmp/a/scale-1".into(),
            plan: "/tmp/a/plans/scale-shrunk.yaml".into(),
            faults: vec!["scale -1 when {after: effect, nth: 60}".into()],
            faults_before: 2,
            confirmed: (4, 5),
        });
        let mut na = cell("rebalance", Vec::new());
        (na.applicable, na.reason) = (false, Some("no group <here>".into()));
        AuditReport {
            plan: "audit-kafka".into(),
            broker: "kafka".into(),
            expect: "at-least-once".into(),
            semantics: "at-least-once",
            conclusion: "at-least-once: duplicates after crash_after_effect; no loss in 2 runs"
                .into(),
            exit_code: 0,
            repeats: 2,
            seed: 5,
            interrupted: false,
            seconds: 61.0,
            calibration: None,
            cells: vec![
                cell(
                    "kill-during-effect",
                    vec![
                        run("/tmp/a/kill-during-effect-1", Verdict::Duplicated, "met"),
                        run("/tmp/a/kill-during-effect-2", Verdict::Exact, "met"),
                    ],
                ),
                scale,
                na,
            ],
        }
    }

    #[test]
    fn each_repeat_links_to_its_report_and_the_cell_row_counts_its_verdicts() {
        let html = render(&report()).expect("renders");
        assert!(
            html.contains(
                r#"<a class="verdict small bad" href="kill-during-effect-1/report.html""#
            ),
            "{html}"
        );
        assert!(
            html.contains(
                r#"<a class="verdict small exact" href="kill-during-effect-2/report.html""#
            ),
            "{html}"
        );
        assert!(
            html.contains(r#"<tr class="cell" data-cell="kill-during-effect"><th title="kill: consumer when {during: effect, nth: 20}">kill-during-effect</th><td>2</td><td>1</td><td>1</td><td>0</td><td>0</td><td>0</td>"#),
            "{html}"
        );
        assert!(
            html.contains("not applicable: no group &#60;here&#62;"),
            "{html}"
        );
        assert!(html.contains("at-least-once: duplicates after crash_after_effect"));
        assert!(
            html.contains(r#"<tr class="shrunk" data-cell="scale"><td colspan="10">Minimal fault set (shrunk from 2 faults of `/tmp/a/scale-1`): `scale -1 when {after: effect, nth: 60}`; it broke the claim in 4 of 5"#),
            "{html}"
        );
    }

    #[test]
    fn the_page_fetches_nothing_and_runs_no_script() {
        let html = render(&report()).expect("renders");
        for needle in ["src=", "href=\"http", "@import", "url(", "<link", "<script"] {
            assert!(!html.contains(needle), "{needle} in the page");
        }
    }
}
