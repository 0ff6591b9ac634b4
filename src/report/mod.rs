//! The run's reports, rendered from a [`Judgement`]: `report.json` (versioned, for
//! machines), `report.md` (incident style, for people), `report.html` (one self-contained
//! page with the timeline drawn, for people and CI artifacts; it also reads the events),
//! `junit.xml` (for CI gates) and the verdict table printed on the terminal.
//!
//! Invariants: rendering is a pure function of the judgement (no clock, no environment),
//! so `exactly report DIR` re-renders the same bytes from `events.jsonl`; only this module knows
//! output formats; a run that is INCONCLUSIVE never renders as a pass anywhere; credentials in a
//! broker address never reach a report.

use std::fmt::Write as _;
use std::path::Path;

use crate::judge::{ExpectationState, Judgement, Verdict};
use crate::timeline::{EndReason, FaultRecord, Recorded};

pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod unjudged;

/// The loud line shown whenever the broker was the embedded mock cluster.
pub const MOCK_WARNING: &str = "embedded mock cluster: a demo, not evidence about a real broker";

/// Writes `report.json`, `report.md`, `report.html` and `junit.xml` into `dir` (created if
/// missing); `recorded` is the timeline `rec` was judged from.
pub fn write_reports(dir: &Path, rec: &Judgement, recorded: &Recorded) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), json::render(rec)?)?;
    std::fs::write(dir.join("report.md"), markdown::render(rec))?;
    let page = html::render(rec, recorded).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.html"), page)?;
    std::fs::write(dir.join("junit.xml"), junit::render(rec)?)?;
    Ok(())
}

/// One line on the consumer connections that bypassed the proxy, when there were any.
pub(crate) fn bypass_line(rec: &Judgement) -> Option<String> {
    let first = rec.bypasses.first()?;
    let n = rec.bypasses.len();
    Some(format!(
        "the consumer bypassed the proxy: {n} connection{} straight to the broker (first: {}); {} fault{} not counted as exercised",
        if n == 1 { "" } else { "s" },
        first.describe(),
        rec.faults_bypassed.len(),
        if rec.faults_bypassed.len() == 1 { "" } else { "s" }
    ))
}

/// The summary of a run with boundaries: each boundary's verdict against its promise.
fn boundaries_sentence(rec: &Judgement) -> String {
    let each: Vec<String> = rec
        .boundaries
        .iter()
        .map(|b| {
            format!(
                "{} {} ({} {})",
                b.name,
                b.judgement.verdict,
                b.expect,
                b.judgement.expectation_state.as_str()
            )
        })
        .collect();
    format!(
        "{} boundaries, each judged on its own effects: {}.",
        rec.boundaries.len(),
        each.join("; ")
    )
}

/// A small aligned table for the terminal: verdict, expectation, counts, faults, and why the
/// run is inconclusive when it is.
pub fn verdict_table(rec: &Judgement) -> String {
    let k = &rec.counts;
    let mut rows: Vec<(String, String)> = vec![
        ("verdict".into(), rec.verdict.to_string()),
        ("expectation".into(), expectation_line(rec)),
    ];
    if rec.boundaries.is_empty() {
        count_rows(&mut rows, k);
    }
    for b in &rec.boundaries {
        let j = &b.judgement;
        rows.push((
            format!("boundary {}", b.name),
            format!(
                "{} ({} {}; lost {}, duplicated {}, pending {})",
                j.verdict,
                b.expect,
                j.expectation_state.as_str(),
                j.counts.lost,
                j.counts.duplicated,
                j.counts.pending
            ),
        ));
    }
    rows.push((
        "faults".into(),
        format!("{} of {} fired", rec.faults_fired.len(), rec.faults_planned),
    ));
    if let Some(reason) = rec.end_reason {
        rows.push(("ended".into(), end_reason_str(reason).to_string()));
    } else {
        rows.push(("ended".into(), "never (no run_ended event)".to_string()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in &rows {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "  {key:<width$}  {value}");
    }
    for (title, reasons) in [
        ("inconclusive because", &rec.inconclusive_reasons),
        ("caveats", &rec.caveats),
    ] {
        if reasons.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {title}:");
        for r in reasons {
            let _ = writeln!(out, "    - {r}");
        }
    }
    if k.harness_duplicated > 0 {
        let _ = writeln!(
            out,
            "  ({} more duplicated by the harness's hold, not counted against the consumer)",
            k.harness_duplicated
        );
    }
    if rec.mock_broker() {
        let _ = writeln!(out, "  !! {MOCK_WARNING} !!");
    }
    if let Some(line) = bypass_line(rec) {
        let _ = writeln!(out, "  !! {line} !!");
    }
    out
}

/// The counts of a one-sink run, for the terminal table.
fn count_rows(rows: &mut Vec<(String, String)>, k: &crate::judge::Counts) {
    let mut add = |key: &str, value: String| rows.push((key.to_owned(), value));
    add(
        "produced",
        format!(
            "{} (failed {}, indeterminate {})",
            k.produced, k.failed, k.indeterminate
        ),
    );
    add("effected", k.effected.to_string());
    add("exact", k.exact.to_string());
    add("duplicated", k.duplicated.to_string());
    add("lost", k.lost.to_string());
    add("pending", k.pending.to_string());
    add("phantom", k.phantom.to_string());
    if k.poison > 0 || k.diverted > 0 {
        add(
            "diverted",
            format!(
                "{} to the dead-letter destination (of {} poison)",
                k.diverted, k.poison
            ),
        );
    }
    // Shown only when they apply: the blind oracle's counts.
    if k.unconfirmed_loss > 0 || k.rejected > 0 {
        add(
            "unconfirmed",
            format!(
                "{} counted done without a readable effect ({} effects rejected by the sink)",
                k.unconfirmed_loss, k.rejected
            ),
        );
    }
    if k.not_counted_done > 0 {
        add(
            "not done",
            format!(
                "{} effected, never counted done by the broker",
                k.not_counted_done
            ),
        );
    }
}

/// `at-least-once: met`, `exactly-once: VIOLATED`, `at-most-once: not judged (inconclusive)`,
/// `at-least-once: UNKNOWN, not met (the evidence does not cover it: pending, aborted)`.
pub(crate) fn expectation_line(rec: &Judgement) -> String {
    let judged = match (rec.expectation, rec.expectation_state) {
        (_, ExpectationState::Met) => "met".to_string(),
        (_, ExpectationState::Violated) => "VIOLATED".to_string(),
        (None, ExpectationState::Unknown) if rec.run.is_some() => {
            "not judged (unknown expectation)".to_string()
        }
        (None, ExpectationState::Unknown) => "not judged (no run information)".to_string(),
        (Some(_), ExpectationState::Unknown) if rec.verdict == Verdict::Inconclusive => {
            "not judged (inconclusive)".to_string()
        }
        (Some(_), ExpectationState::Unknown) => {
            let codes: Vec<&str> = rec.expectation_unknown.iter().map(|r| r.code()).collect();
            format!(
                "UNKNOWN, not met (the evidence does not cover it: {})",
                codes.join(", ")
            )
        }
    };
    format!("{}: {judged}", rec.expect_str())
}

/// The end reason as written in the reports.
pub(crate) fn end_reason_str(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Settled => "settled",
        EndReason::Deadline => "deadline",
        EndReason::Aborted => "aborted",
        EndReason::InfrastructureError => "infrastructure error",
        EndReason::PlanError => "plan error",
    }
}

/// Microseconds since the run started as seconds with milliseconds: `12.034s`.
pub(crate) fn secs(us: u64) -> String {
    format!("{}.{:03}s", us / 1_000_000, (us / 1_000) % 1_000)
}

/// A latency in the most readable unit: `850µs`, `12.3ms`.
pub(crate) fn latency(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else {
        format!("{}.{}ms", us / 1_000, (us % 1_000) / 100)
    }
}

/// Hides the password of a `scheme://user:password@host` address.
pub(crate) fn redact_address(address: &str) -> String {
    let Some(scheme_end) = address.find("://") else {
        return address.to_string();
    };
    let rest = &address[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return address.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &address[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => address.to_string(),
    }
}

/// One plain sentence of what happened, such as "12 of 200 messages were processed twice after
/// the consumer was killed."
pub(crate) fn summary_sentence(rec: &Judgement) -> String {
    if !rec.boundaries.is_empty() {
        return boundaries_sentence(rec);
    }
    let k = &rec.counts;
    let n = k.produced + k.indeterminate;
    let context = fault_context(&rec.faults);
    let times = |max: usize| if max == 2 { "twice" } else { "more than once" };
    let max_applied = rec.anomalies.iter().map(|a| a.applied()).max().unwrap_or(0);
    let were = |c: u64| if c == 1 { "was" } else { "were" };
    match rec.verdict {
        Verdict::LostAndDuplicated => format!(
            "{} of {n} messages {} never processed and {} {} processed {} {context}.",
            k.lost,
            were(k.lost),
            k.duplicated,
            were(k.duplicated),
            times(max_applied)
        ),
        Verdict::Duplicated => format!(
            "{} of {n} messages {} processed {} {context}.",
            k.duplicated,
            were(k.duplicated),
            times(max_applied)
        ),
        Verdict::Lost => format!(
            "{} of {n} messages {} never processed although the broker counts them as consumed {context}.",
            k.lost,
            were(k.lost)
        ),
        Verdict::Exact if k.exact == n => format!(
            "All {n} messages were processed exactly once {context}{}.",
            not_done(k.not_counted_done)
        ),
        Verdict::Exact if k.diverted > 0 => format!(
            "{} of {n} messages were processed exactly once {context}; {} {} diverted to the dead-letter destination (accounted for, never applied){}{}.",
            k.exact,
            k.diverted,
            were(k.diverted),
            if k.unconfirmed > 0 {
                format!("; {} had an indeterminate produce and were never seen", k.unconfirmed)
            } else {
                String::new()
            },
            not_done(k.not_counted_done)
        ),
        Verdict::Exact => format!(
            "{} of {n} messages were processed exactly once {context}; the other {} had an indeterminate produce and were never seen, which is allowed{}.",
            k.exact,
            k.unconfirmed,
            not_done(k.not_counted_done)
        ),
        Verdict::Inconclusive => {
            let reasons: Vec<String> =
                rec.inconclusive_reasons.iter().map(|r| r.to_string()).collect();
            format!(
                "Nothing was proven wrong, but the evidence is not enough to say EXACT: {}.",
                reasons.join("; ")
            )
        }
    }
}

/// "; but the broker never counted 3 of them done", or nothing.
fn not_done(count: u64) -> String {
    match count {
        0 => String::new(),
        n => format!(
            "; but the broker never counted {n} of them done, so a restart would process {} again",
            if n == 1 { "it" } else { "them" }
        ),
    }
}

/// "after the consumer was killed (3 times)", or "with no fault fired".
fn fault_context(faults: &[FaultRecord]) -> String {
    let mut groups: Vec<(&str, &str, usize)> = Vec::new();
    for f in faults
        .iter()
        .filter(|f| f.applied && !crate::judge::hit_nothing(f))
    {
        match groups
            .iter_mut()
            .find(|(a, t, _)| *a == f.action && *t == f.target)
        {
            Some(g) => g.2 += 1,
            None => groups.push((&f.action, &f.target, 1)),
        }
    }
    if groups.is_empty() {
        return "with no fault fired".to_string();
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(action, target, n)| {
            let who = match *target {
                "consumer" => "the consumer".to_string(),
                "group" => "the group".to_string(),
                t => t.to_string(),
            };
            let done = match *action {
                "kill" => "killed".to_string(),
                "terminate" => "terminated".to_string(),
                "pause" => "paused".to_string(),
                "partition" => "partitioned from the broker".to_string(),
                "latency" => "slowed down".to_string(),
                "sever" => "cut off from the broker".to_string(),
                "rebalance" => "rebalanced".to_string(),
                "scale" => "scaled".to_string(),
                "amqp" => "sent a protocol fault by the proxy".to_string(),
                other => format!("hit by `{other}`"),
            };
            if *n == 1 {
                format!("{who} was {done}")
            } else {
                format!("{who} was {done} ({n} times)")
            }
        })
        .collect();
    format!("after {}", parts.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::analyze;
    use crate::judge::fixtures::{duplicated_run, exact_never_counted_done, Tl};
    use crate::timeline::{EndReason, Event};

    #[test]
    fn table_shows_verdict_expectation_counts_and_faults() {
        let rec = analyze(&duplicated_run().events);
        let t = verdict_table(&rec);
        assert!(t.contains("verdict      DUPLICATED"), "{t}");
        assert!(t.contains("at-least-once: met"), "{t}");
        assert!(t.contains("duplicated   1"), "{t}");
        assert!(t.contains("faults       1 of 1 fired"), "{t}");
        assert!(!t.contains("mock"), "{t}");
    }

    #[test]
    fn table_lists_why_a_run_is_inconclusive() {
        let mut tl = Tl::new();
        tl.start(&[], 1, "at-least-once")
            .produced("a", 0, 0)
            .effect("a", 1)
            .end(EndReason::Settled);
        let t = verdict_table(&analyze(&tl.events));
        assert!(t.contains("INCONCLUSIVE"), "{t}");
        assert!(t.contains("not judged (inconclusive)"), "{t}");
        assert!(
            t.contains("inconclusive because:\n    - no fault was planned"),
            "{t}"
        );
    }

    #[test]
    fn table_says_when_a_claim_is_unknown_and_shows_the_blind_counts() {
        let tl = exact_never_counted_done();
        let t = verdict_table(&analyze(&tl.events));
        assert!(t.contains("verdict      EXACT"), "{t}");
        assert!(
            t.contains(
                "exactly-once: UNKNOWN, not met (the evidence does not cover it: not_counted_done)"
            ),
            "{t}"
        );
        assert!(
            t.contains("not done     1 effected, never counted done"),
            "{t}"
        );
        assert!(
            t.contains("caveats:\n    - the broker never counted 1"),
            "{t}"
        );
    }

    #[test]
    fn table_shouts_when_the_broker_was_the_mock() {
        let mut events = duplicated_run().events;
        if let Event::RunStarted(info) = &mut events[0].event {
            info.mock_broker = true;
        }
        let t = verdict_table(&analyze(&events));
        assert!(t.contains(MOCK_WARNING), "{t}");
    }

    #[test]
    fn summary_names_the_fault_and_how_often_work_repeated() {
        let rec = analyze(&duplicated_run().events);
        assert_eq!(
            summary_sentence(&rec),
            "1 of 4 messages was processed twice after the consumer was killed."
        );
    }

    #[test]
    fn addresses_lose_their_password() {
        assert_eq!(
            redact_address("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_address("127.0.0.1:9092"), "127.0.0.1:9092");
        assert_eq!(redact_address("amqp://host/vhost@x"), "amqp://host/vhost@x");
    }

    #[test]
    fn times_read_as_seconds_and_milliseconds() {
        assert_eq!(secs(1_204_999), "1.204s");
        assert_eq!(secs(0), "0.000s");
        assert_eq!(latency(850), "850µs");
        assert_eq!(latency(12_345), "12.3ms");
    }

    #[test]
    fn write_reports_writes_the_four_files() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let out = dir.path().join("run-1");
        let events = duplicated_run().events;
        write_reports(&out, &analyze(&events), &Recorded::from_events(&events))
            .expect("reports written");
        for f in ["report.json", "report.md", "report.html", "junit.xml"] {
            let text = std::fs::read_to_string(out.join(f)).expect(f);
            assert!(text.contains("DUPLICATED"), "{f}: {text}");
        }
    }
}
