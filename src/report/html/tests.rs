//! report.html from small timelines: what the page carries, what it never does (fetch, let a
//! timeline's text open a tag), and the caps of large runs. How it looks and behaves in a
//! browser is tested in tests/report_html.rs with headless Chromium.

use super::*;
use crate::judge::analyze;
use crate::judge::fixtures::{duplicated_run, Tl};
use crate::timeline::{EndReason, ProcessPhase};

fn page(events: &[Stamped]) -> String {
    render(&analyze(events), events).expect("the page renders")
}

#[test]
fn the_page_marks_each_fired_fault_and_each_anomaly_once() {
    let tl = duplicated_run();
    let html = page(&tl.events);
    assert_eq!(
        html.matches(r#"class="mark fault fired""#).count(),
        1,
        "{html}"
    );
    assert_eq!(
        html.matches(r#"class="mark anomaly duplicated""#).count(),
        1
    );
    assert!(html.contains(r#"data-id="m-1""#), "the marker names its ID");
    assert!(html.contains(r#"<span class="verdict bad" id="verdict">DUPLICATED</span>"#));
    assert!(html.contains("at-least-once: met"));
    assert!(html.contains("1 of 4 messages was processed twice after the consumer was killed."));
}

#[test]
fn the_duplicate_is_drawn_on_the_lane_of_the_process_that_applied_it_again() {
    let rec = analyze(&duplicated_run().events);
    let lives = lives::collect(&rec, &duplicated_run().events);
    let marks = markers::place(&rec, &lives);
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].instance, Some(0));
    let second = &rec.anomalies[0].effects[1];
    assert_eq!(marks[0].t_us, second.t_us, "at its second application");
}

#[test]
fn a_searched_duplicate_shows_both_effects_with_their_writers() {
    let tl = duplicated_run();
    let rec = analyze(&tl.events);
    let lives = lives::collect(&rec, &tl.events);
    let data = lives::to_json(&lives, |_| None);
    let steps = data["ids"]["m-1"]["s"].as_array().expect("m-1 is kept");
    let effects: Vec<&serde_json::Value> = steps.iter().filter(|s| s[1] == "e").collect();
    assert_eq!(effects.len(), 2, "{steps:?}");
    assert_eq!(effects[0][2], "0#1", "the first writer");
    assert_eq!(effects[1][2], "0#2", "the second writer");
    assert_eq!(effects[1][3], 1, "applied");
    assert_eq!(data["ids"]["m-1"]["o"], "duplicated");
    assert_eq!(data["total"], 4);
    assert_eq!(data["sampled"], false, "a small run keeps every life");
}

#[test]
fn the_page_fetches_nothing() {
    let html = page(&duplicated_run().events);
    for needle in [
        "src=",
        "href=\"http",
        "@import",
        "url(",
        "<link",
        "<img",
        "<iframe",
    ] {
        assert!(!html.contains(needle), "{needle} in the page");
    }
    // The one URL is the SVG namespace, an identifier that is never fetched.
    let urls: Vec<&str> = html
        .match_indices("://")
        .map(|(i, _)| &html[i - 4..i + 22])
        .collect();
    assert_eq!(urls, ["http://www.w3.org/2000/svg"]);
    assert!(
        html.contains("default-src 'none'"),
        "the page forbids itself any fetch"
    );
}

#[test]
fn text_from_the_timeline_cannot_open_a_tag_or_end_the_script() {
    let evil = "</script><script>alert(1)</script>";
    let mut tl = Tl::new();
    tl.start(
        &["kill: consumer when {after: effect, nth: 1}"],
        1,
        "at-least-once",
    )
    .produced(evil, 0, 0)
    .process(1, ProcessPhase::Started)
    .effect(evil, 1)
    .fault(0, true)
    .effect(evil, 1)
    .warning("<b>bold</b>")
    .progress(&[(0, 1)])
    .end(EndReason::Settled);
    let html = page(&tl.events);
    assert_eq!(
        html.matches("<script").count(),
        2,
        "only the page's own two scripts"
    );
    assert!(!html.contains("<b>bold"), "a warning is text");
    assert!(html.contains("&lt;/script&gt;&lt;script&gt;alert(1)"));
}

#[test]
fn rendering_is_a_pure_function_of_the_judgement_and_the_events() {
    let tl = duplicated_run();
    assert_eq!(page(&tl.events), page(&tl.events));
}

#[test]
fn an_empty_timeline_renders() {
    let html = page(&[]);
    assert!(html.contains("INCONCLUSIVE"), "{html}");
    assert!(html.contains("no run_started event"));
}

#[test]
fn a_large_run_keeps_every_anomaly_and_samples_the_rest() {
    let mut tl = Tl::new();
    let n = lives::LIVES as i64 * 2;
    tl.start(
        &["kill: consumer when {after: effect, nth: 1}"],
        n as u64,
        "at-least-once",
    )
    .process(1, ProcessPhase::Started);
    for i in 0..n {
        tl.produced(&format!("m-{i}"), 0, i);
    }
    for i in 0..n {
        tl.effect(&format!("m-{i}"), 1);
    }
    tl.fault(0, true);
    for i in 0..(markers::MARKERS as i64 + 10) {
        tl.effect(&format!("m-{i}"), 1);
    }
    tl.progress(&[(0, n)]).end(EndReason::Settled);
    let rec = analyze(&tl.events);
    let html = render(&rec, &tl.events).expect("renders");
    assert_eq!(
        html.matches(r#"class="mark anomaly duplicated""#).count(),
        markers::MARKERS
    );
    assert!(html.contains(&format!(
        "The first {} of {} anomalies are marked",
        markers::MARKERS,
        markers::MARKERS + 10
    )));
    let lives = lives::collect(&rec, &tl.events);
    assert_eq!(
        lives.ids.len(),
        lives::LIVES,
        "every anomaly and a sample of the rest, up to the cap"
    );
    assert!(
        lives.get(&format!("m-{}", markers::MARKERS + 9)).is_some(),
        "every anomaly is kept"
    );
    assert!(html.contains(&format!("{} of {} IDs can be searched", lives::LIVES, n)));
}
