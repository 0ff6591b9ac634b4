//! The reports of a run that could not be judged because its evidence has a hole (the timeline
//! file could not be written): `report.md`, `report.json` and `junit.xml` say so and why, and
//! give no verdict, so nobody reads an absent report as a pass or a stale one as this run's.
//!
//! Invariant: nothing here looks at the (incomplete) timeline; the only input is the reason.

use std::path::Path;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use super::json::SCHEMA_VERSION;
use super::junit::SUITE;

/// `report.json` of an unjudged run.
#[derive(Serialize)]
struct Unjudged<'a> {
    schema_version: u32,
    judged: bool,
    verdict: Option<&'a str>,
    expectation_state: &'a str,
    evidence_incomplete: &'a str,
}

/// Writes the three reports of a run that was stopped and not judged because `why`.
pub fn write(dir: &Path, plan: &str, why: &str) -> std::io::Result<()> {
    let json = Unjudged {
        schema_version: SCHEMA_VERSION,
        judged: false,
        verdict: None,
        expectation_state: "unknown",
        evidence_incomplete: why,
    };
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    std::fs::write(dir.join("report.md"), markdown(plan, why))?;
    std::fs::write(dir.join("junit.xml"), junit(plan, why)?)?;
    Ok(())
}

fn markdown(plan: &str, why: &str) -> String {
    format!(
        "# exactly: `{plan}` NOT JUDGED\n\n\
         **The evidence is incomplete: no verdict.** {why}.\n\n\
         The timeline (`events.jsonl`) has a hole from that moment on, so no claim about the \
         messages can be shown either way: a loss or a duplicate could hide in what was not \
         recorded. The run was stopped when the write failed (exit 4). Free the space or fix the \
         folder and run the plan again.\n"
    )
}

fn junit(plan: &str, why: &str) -> std::io::Result<String> {
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
    status
        .set_type("evidence_incomplete")
        .set_message(format!("not judged, the evidence is incomplete: {why}"));
    let mut suite = TestSuite::new(SUITE);
    suite.add_test_case(TestCase::new(plan, status));
    let mut report = Report::new(SUITE);
    report.add_test_suite(suite);
    report.to_string().map_err(std::io::Error::other)
}
