//! `junit.xml`: the run as one test case, for CI gates.
//!
//! One suite named `exactly` with one case named after the plan (one per boundary, `PLAN /
//! BOUNDARY`, when the plan declared boundaries). The case passes only when
//! the expectation is met. A violated expectation is a `failure`; an INCONCLUSIVE run is also a
//! `failure` (a gate must not pass on missing evidence), with the reasons, and so is a claim
//! the evidence does not cover (`unknown`, with what hid it); an infrastructure error is an
//! `error`, since it says nothing about the consumer.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{summary_sentence, verdict_table};
use crate::judge::{ExpectationState, Judgement, Verdict};
use crate::timeline::EndReason;

/// How many diverted IDs the `diverted_ids` property lists.
const DIVERTED_LISTED: usize = 50;

/// The suite (and report) name.
pub const SUITE: &str = "exactly";

/// The failure message: "expected at-least-once, observed LOST: 3 lost".
pub fn failure_message(rec: &Judgement) -> String {
    let k = &rec.counts;
    let observed = match rec.verdict {
        Verdict::Lost => format!("{} lost", k.lost),
        Verdict::Duplicated => format!("{} duplicated", k.duplicated),
        Verdict::LostAndDuplicated => format!("{} lost, {} duplicated", k.lost, k.duplicated),
        Verdict::Exact => format!("{} exact", k.exact),
        Verdict::Inconclusive => rec
            .inconclusive_reasons
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("; "),
    };
    let mut message = format!(
        "expected {}, observed {}: {observed}",
        rec.expect_str(),
        rec.verdict
    );
    if rec.verdict != Verdict::Inconclusive && !rec.expectation_unknown.is_empty() {
        let hidden: Vec<String> = rec
            .expectation_unknown
            .iter()
            .map(|r| r.to_string())
            .collect();
        message.push_str("; the claim is unknown, not met: ");
        message.push_str(&hidden.join("; "));
    }
    message
}

/// Renders `junit.xml`: one case for the run, or one per boundary when the plan declared
/// boundaries (named `PLAN / BOUNDARY`, each passing only when its own promise is met).
pub fn render(rec: &Judgement) -> std::io::Result<String> {
    let plan = rec.run.as_ref().map_or("unknown-plan", |r| r.plan.as_str());
    let mut suite = TestSuite::new(SUITE);
    if rec.boundaries.is_empty() {
        suite.add_test_case(case(rec, plan.to_owned()));
    }
    for b in &rec.boundaries {
        let mut c = case(&b.judgement, format!("{plan} / {}", b.name));
        c.add_properties([
            Property::new("boundary", b.name.clone()),
            Property::new("sink", b.sink.as_str()),
        ]);
        suite.add_test_case(c);
    }
    let mut report = Report::new(SUITE);
    report.add_test_suite(suite);
    report.to_string().map_err(std::io::Error::other)
}

/// One test case: passes only when `rec`'s expectation is met.
fn case(rec: &Judgement, name: String) -> TestCase {
    let status = if rec.end_reason == Some(EndReason::InfrastructureError) {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
        s.set_type("infrastructure_error")
            .set_message(format!(
                "infrastructure error: the harness failed; {}",
                failure_message(rec)
            ))
            .set_description(details(rec));
        s
    } else if rec.expectation_met == Some(true) {
        TestCaseStatus::success()
    } else {
        let kind = match (rec.verdict, rec.expectation, rec.expectation_state) {
            (Verdict::Inconclusive, ..) => "inconclusive",
            (_, None, _) => "not_judged",
            (_, Some(_), ExpectationState::Unknown) => "unknown",
            (_, Some(_), ExpectationState::Violated | ExpectationState::Met) => "violated",
        };
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_type(kind)
            .set_message(failure_message(rec))
            .set_description(details(rec));
        s
    };
    let mut case = TestCase::new(name, status);
    case.set_classname(format!(
        "{SUITE}.{}",
        rec.run.as_ref().map_or("unknown", |r| r.broker.as_str())
    ));
    if let Some(t) = rec.ended_at_us {
        case.set_time(Duration::from_micros(t));
    }
    case.set_system_out(verdict_table(rec));
    let mut props = vec![
        ("verdict", rec.verdict.to_string()),
        ("expect", rec.expect_str().to_string()),
        ("exit_code", rec.exit_code().to_string()),
        ("mock_broker", rec.mock_broker().to_string()),
    ];
    if !rec.bypasses.is_empty() {
        props.push(("bypass_connections", rec.bypasses.len().to_string()));
    }
    if rec.counts.diverted > 0 {
        let diverted: Vec<&str> = rec
            .anomalies_of(crate::judge::Outcome::Diverted)
            .map(|a| a.id.as_str())
            .take(DIVERTED_LISTED)
            .collect();
        props.push(("diverted", rec.counts.diverted.to_string()));
        props.push(("diverted_ids", diverted.join(" ")));
    }
    if let Some(r) = &rec.run {
        props.push(("run", r.run.clone()));
        props.push(("seed", r.seed.to_string()));
    }
    case.add_properties(props.into_iter().map(|(k, v)| Property::new(k, v)));
    case
}

/// The failure's text body: the summary sentence and every reason or caveat.
fn details(rec: &Judgement) -> String {
    let mut lines = vec![summary_sentence(rec)];
    let reasons = if rec.verdict == Verdict::Inconclusive {
        &rec.inconclusive_reasons
    } else {
        &rec.caveats
    };
    lines.extend(reasons.iter().map(|r| format!("- {r}")));
    if rec.mock_broker() {
        lines.push(format!("- {}", super::MOCK_WARNING));
    }
    if let Some(line) = super::bypass_line(rec) {
        lines.push(format!("- {line}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use quick_junit::Report;

    use super::*;
    use crate::judge::analyze;
    use crate::judge::fixtures::{duplicated_run, Tl};
    use crate::timeline::EndReason;

    fn lost_run(expect: &str) -> Judgement {
        let mut tl = Tl::new();
        tl.start(&["kill: consumer"], 4, expect)
            .produced("a", 0, 0)
            .produced("b", 0, 1)
            .produced("c", 0, 2)
            .produced("d", 0, 3)
            .effect("a", 1)
            .fault(0, true)
            .progress(&[(0, 4)])
            .end(EndReason::Settled);
        analyze(&tl.events)
    }

    #[test]
    fn met_expectation_is_a_passing_case() {
        let xml = render(&analyze(&duplicated_run().events)).expect("renders");
        assert!(
            xml.contains(r#"<testsuite name="exactly" tests="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase name="kafka-commit-after-effect""#),
            "{xml}"
        );
        assert!(!xml.contains("<failure"), "{xml}");
        assert!(!xml.contains("<error"), "{xml}");
        let parsed = Report::deserialize_from_str(&xml).expect("valid junit");
        assert_eq!(parsed.failures, 0);
    }

    #[test]
    fn violated_expectation_is_a_failure_with_the_counts() {
        let rec = lost_run("at-least-once");
        assert_eq!(
            failure_message(&rec),
            "expected at-least-once, observed LOST: 3 lost"
        );
        let xml = render(&rec).expect("renders");
        assert!(
            xml.contains(r#"<failure message="expected at-least-once, observed LOST: 3 lost" type="violated">"#),
            "{xml}"
        );
        let parsed = Report::deserialize_from_str(&xml).expect("valid junit");
        assert_eq!(parsed.failures, 1);
    }

    #[test]
    fn at_most_once_accepts_a_loss() {
        let xml = render(&lost_run("at-most-once")).expect("renders");
        assert!(!xml.contains("<failure"), "{xml}");
    }

    #[test]
    fn inconclusive_never_passes_the_gate() {
        let mut tl = Tl::new();
        tl.start(&[], 1, "at-least-once")
            .produced("a", 0, 0)
            .effect("a", 1)
            .progress(&[(0, 1)])
            .end(EndReason::Settled);
        let xml = render(&analyze(&tl.events)).expect("renders");
        assert!(xml.contains(r#"type="inconclusive""#), "{xml}");
        assert!(
            xml.contains("observed INCONCLUSIVE: no fault was planned"),
            "{xml}"
        );
        let parsed = Report::deserialize_from_str(&xml).expect("valid junit");
        assert_eq!(parsed.failures, 1);
    }

    #[test]
    fn an_unknown_claim_fails_the_gate_with_what_hid_it() {
        let mut tl = duplicated_run();
        tl.events.pop();
        tl.end(EndReason::Aborted);
        let rec = analyze(&tl.events);
        let xml = render(&rec).expect("renders");
        assert!(xml.contains(r#"type="unknown""#), "{xml}");
        assert!(
            failure_message(&rec).starts_with(
                "expected at-least-once, observed DUPLICATED: 1 duplicated; the claim is unknown, not met: the run was aborted"
            ),
            "{}",
            failure_message(&rec)
        );
        let parsed = Report::deserialize_from_str(&xml).expect("valid junit");
        assert_eq!(parsed.failures, 1);
    }

    #[test]
    fn infrastructure_error_is_an_error_not_a_finding() {
        let mut tl = duplicated_run();
        tl.events.pop();
        tl.end(EndReason::InfrastructureError);
        let xml = render(&analyze(&tl.events)).expect("renders");
        assert!(xml.contains("<error"), "{xml}");
        assert!(xml.contains(r#"type="infrastructure_error""#), "{xml}");
        assert!(!xml.contains("<failure"), "{xml}");
    }
}
