//! report.html from small timelines: what the page carries, what it never does (fetch, let a
//! timeline's text open a tag), and the caps of large runs. How it looks and behaves in a
//! browser is tested in tests/report_html.rs with headless Chromium.

use super::*;
use crate::judge::analyze;
use crate::judge::fixtures::{duplicated_run, Tl};
use crate::timeline::{EndReason, ProcessPhase, Recorded, SinkKind, Stamped};

fn page(events: &[Stamped]) -> String {
    render(&analyze(events), &Recorded::from_events(events)).expect("the page renders")
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
    let lives = lives::collect(&rec, &Recorded::from_events(&duplicated_run().events));
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
    let lives = lives::collect(&rec, &Recorded::from_events(&tl.events));
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
    let html = render(&rec, &Recorded::from_events(&tl.events)).expect("renders");
    assert_eq!(
        html.matches(r#"class="mark anomaly duplicated""#).count(),
        markers::MARKERS
    );
    assert!(html.contains(&format!(
        "The first {} of {} anomalies are marked",
        markers::MARKERS,
        markers::MARKERS + 10
    )));
    let lives = lives::collect(&rec, &Recorded::from_events(&tl.events));
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

/// A random timeline: every kind of event the page draws, with odd values (unknown exit
/// statuses, holds longer than the run, huge times, commits that go back, IDs never produced).
fn random_timeline(seed: u64) -> Vec<Stamped> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut tl = Tl::new();
    if rng.random_bool(0.8) {
        tl.start(
            &[
                "kill: consumer when {at: 1s}",
                "pause: consumer for 1s when {at: 2s}",
            ],
            20,
            "exactly-once",
        );
    }
    for _ in 0..rng.random_range(0..120) {
        let event = random_event(&mut rng);
        tl.push(event);
    }
    if rng.random_bool(0.7) {
        tl.end(EndReason::Settled);
    }
    let mut jump = 0u64;
    for e in &mut tl.events {
        if rng.random_bool(0.02) {
            jump = jump.saturating_add(rng.random_range(0..u64::MAX / 4));
        }
        e.t_us = e.t_us.saturating_add(jump);
    }
    tl.events
}

/// A random `fault` event hitting `instance#incarnation`.
fn random_fault(
    rng: &mut rand_chacha::ChaCha8Rng,
    instance: u32,
    incarnation: u32,
) -> crate::timeline::Event {
    use crate::timeline::{Event, FaultRecord, ProcessRef};
    use rand::Rng;
    Event::Fault(Box::new(FaultRecord {
        fault: rng.random_range(0..3),
        action: "kill".into(),
        target: "consumer".into(),
        trigger: "at: 1s".into(),
        matched_at_us: rng.random_range(0..5_000_000),
        fired_at_us: rng.random_range(0..5_000_000),
        trigger_latency_us: 5,
        applied: rng.random_bool(0.7),
        detail: "<b>".into(),
        hit: vec![ProcessRef {
            instance,
            incarnation,
        }],
        length_us: rng.random_bool(0.5).then(|| rng.random_range(0..u64::MAX)),
        through_proxy: false,
    }))
}

/// A random `commit` event of `instance#incarnation`, in any phase.
fn random_commit(
    rng: &mut rand_chacha::ChaCha8Rng,
    instance: u32,
    incarnation: u32,
) -> crate::timeline::Event {
    use crate::timeline::{CommitPhase, CommittedOffset, Event};
    use rand::Rng;
    Event::Commit {
        instance,
        incarnation,
        group: "g".into(),
        member: "m".into(),
        generation: 1,
        offsets: vec![CommittedOffset {
            topic: "orders-r1".into(),
            partition: rng.random_range(0..4),
            offset: rng.random_range(-1..30),
        }],
        phase: [
            CommitPhase::Request,
            CommitPhase::Response,
            CommitPhase::Dropped,
        ][rng.random_range(0..3)],
        error: rng.random_bool(0.2).then(|| "FENCED".to_string()),
    }
}

/// One random event of a kind the page draws (see [`random_timeline`]).
fn random_event(rng: &mut rand_chacha::ChaCha8Rng) -> crate::timeline::Event {
    use crate::timeline::{
        AckPhase, AckVerb, ClosedBy, DeliveredIds, Event, HeldAt, MemberChange, RebalanceKind,
    };
    use rand::Rng;
    let id = |rng: &mut rand_chacha::ChaCha8Rng| format!("m-{}", rng.random_range(0..25));
    let (instance, incarnation) = (rng.random_range(0..3u32), rng.random_range(1..4u32));
    match rng.random_range(0..14) {
        0 | 1 => crate::judge::fixtures::produced_event(
            &id(rng),
            Some(rng.random_range(0..4)),
            Some(rng.random_range(0..30)),
            crate::timeline::ProduceStatus::Acked,
        ),
        2 | 3 => crate::judge::fixtures::effect_event(
            &id(rng),
            rng.random_bool(0.9).then_some(instance),
            Some(incarnation),
            crate::timeline::EffectOutcome::Applied,
        ),
        4 => Event::Process {
            instance,
            incarnation,
            pid: 7,
            phase: if rng.random_bool(0.5) {
                ProcessPhase::Started
            } else {
                ProcessPhase::Exited
            },
            status: ["exit 0", "signal SIGKILL", "signal SIGTERM", "?"]
                .get(rng.random_range(0..5))
                .map(|s| s.to_string()),
        },
        5 => random_fault(rng, instance, incarnation),
        6 => random_commit(rng, instance, incarnation),
        7 => Event::Ack {
            instance,
            incarnation,
            channel: 1,
            delivery_tag: 3,
            multiple: rng.random_bool(0.5),
            verb: [AckVerb::Ack, AckVerb::Nack, AckVerb::Reject][rng.random_range(0..3)],
            requeue: rng.random_bool(0.5),
            ids: vec![id(rng), id(rng)],
            phase: [AckPhase::Request, AckPhase::Forwarded, AckPhase::Dropped]
                [rng.random_range(0..3)],
        },
        8 => Event::Rebalance {
            instance,
            incarnation,
            group: "g".into(),
            change: RebalanceKind::Assign,
            member: String::new(),
            generation: None,
            assignment: Some((0..rng.random_range(0..4)).collect()),
            error: None,
            protocols: None,
            session_timeout_ms: None,
        },
        9 => Event::GroupMember {
            group: "g".into(),
            change: if rng.random_bool(0.5) {
                MemberChange::Assigned
            } else {
                MemberChange::Revoked
            },
            partitions: Some(vec![rng.random_range(0..4)]),
            error: None,
        },
        10 => Event::Held {
            instance,
            incarnation,
            at: HeldAt::CommitRequest,
            event: 1,
            held_us: rng.random_range(0..u64::MAX / 2),
            released: rng.random_bool(0.5),
        },
        11 => {
            let mut records = DeliveredIds::default();
            records.push(rng.random_range(0..30), &id(rng));
            Event::DeliveredBatch {
                instance,
                incarnation,
                partition: rng.random_range(0..4),
                ranges: Vec::new(),
                records,
            }
        }
        12 => Event::ConnectionClosed {
            instance,
            incarnation,
            by: ClosedBy::Severed,
            unacked: 3,
            detail: "reset".into(),
        },
        _ => Event::Progress {
            committed: [(0, rng.random_range(0..30))].into(),
            end: [(0, 30)].into(),
        },
    }
}

#[test]
fn random_timelines_render_with_one_marker_per_fault_and_anomaly() {
    for seed in 0..300 {
        let events = random_timeline(seed);
        let rec = analyze(&events);
        let html = render(&rec, &Recorded::from_events(&events))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let faults = html.matches(r#"class="mark fault "#).count();
        assert_eq!(
            faults,
            rec.faults.len(),
            "seed {seed}: one mark per fault event"
        );
        let fired = html.matches(r#"class="mark fault fired""#).count();
        assert_eq!(
            fired,
            rec.faults.iter().filter(|f| f.applied).count(),
            "seed {seed}"
        );
        let anomalies = html.matches(r#"class="mark anomaly "#).count();
        assert_eq!(
            anomalies,
            rec.anomalies.len().min(markers::MARKERS),
            "seed {seed}"
        );
        assert_eq!(html.matches("<script").count(), 2, "seed {seed}");
    }
}

/// Two boundaries over two messages, both committed: `out` (exactly-once) sees only m-0 (m-1
/// LOST there), `email` (at-least-once) sees m-0 once and m-1 twice, the second time from the
/// incarnation restarted after the kill (DUPLICATED there).
fn two_boundaries() -> Tl {
    use crate::timeline::{BoundaryInfo, EffectOutcome, Event};
    let mut tl = Tl::new();
    tl.start(&["kill: consumer"], 2, "exactly-once");
    if let Event::RunStarted(info) = &mut tl.events[0].event {
        info.boundaries = [("out", "exactly-once"), ("email", "at-least-once")]
            .iter()
            .map(|(name, expect)| BoundaryInfo {
                name: (*name).into(),
                sink: SinkKind::Http,
                expect: (*expect).into(),
                id: "json:/id".into(),
            })
            .collect();
    }
    tl.produced("m-0", 0, 0)
        .produced("m-1", 0, 1)
        .process(1, ProcessPhase::Started);
    let effect = |tl: &mut Tl, id: &str, boundary: &str, incarnation: u32| {
        tl.push(Event::Effect {
            boundary: Some(boundary.into()),
            id: id.into(),
            instance: Some(0),
            incarnation: Some(incarnation),
            outcome: EffectOutcome::Applied,
            sink: SinkKind::Http,
            attribution: Default::default(),
        });
    };
    effect(&mut tl, "m-0", "out", 1);
    effect(&mut tl, "m-0", "email", 1);
    effect(&mut tl, "m-1", "email", 1);
    tl.fault(0, true)
        .process(1, ProcessPhase::Exited)
        .process(2, ProcessPhase::Started);
    effect(&mut tl, "m-1", "email", 2);
    tl.progress(&[(0, 2)]).end(EndReason::Settled);
    tl
}

#[test]
fn a_run_with_boundaries_shows_each_boundary_verdict_counts_and_root_cause() {
    let tl = two_boundaries();
    let rec = analyze(&tl.events);
    let html = render(&rec, &Recorded::from_events(&tl.events)).expect("the page renders");
    assert!(
        html.contains(r#"<table class="boundaries" id="boundaries">"#),
        "{html}"
    );
    assert!(
        html.contains(r##"<tr class="boundary-row" data-boundary="out"><td><a href="#boundary-1">out</a></td><td>http</td><td>exactly-once</td><td><span class="verdict small bad">LOST</span></td><td><span class="promise bad">violated</span></td><td>1</td><td>1</td><td>0</td><td>1</td><td>0</td>"##),
        "{html}"
    );
    assert!(
        html.contains(r##"<tr class="boundary-row" data-boundary="email"><td><a href="#boundary-2">email</a></td><td>http</td><td>at-least-once</td><td><span class="verdict small bad">DUPLICATED</span></td><td><span class="promise exact">met</span></td><td>2</td><td>1</td><td>1</td><td>0</td><td>0</td>"##),
        "{html}"
    );
    // Each boundary's own section, its root cause and anomalies under it.
    for (n, verdict) in [(1, "LOST"), (2, "DUPLICATED")] {
        let at = html
            .find(&format!(r#"<section class="boundary" id="boundary-{n}">"#))
            .expect("a section per boundary");
        assert!(
            html[at..].contains(&format!(": {verdict} (http sink")),
            "{html}"
        );
        assert!(html.contains(&format!(r#"id="anomalies-{n}""#)), "{html}");
    }
    assert!(
        html.contains(r#"id="root-cause-2""#),
        "the email's duplicate is explained"
    );
    // One marker per anomaly of each boundary: m-1 lost at out and duplicated at email.
    assert_eq!(html.matches(r#"class="mark anomaly "#).count(), 2, "{html}");
    assert!(html.contains("m-1 lost at out"), "{html}");
    assert!(html.contains("m-1 duplicated at email"), "{html}");
    // The search names both outcomes and each effect's boundary.
    let lives = lives::collect(&rec, &Recorded::from_events(&tl.events));
    let data = lives::to_json(&lives, |_| None);
    assert_eq!(data["ids"]["m-1"]["o"], "lost at out; duplicated at email");
    let sinks: Vec<&serde_json::Value> = data["ids"]["m-1"]["s"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[1] == "e")
        .map(|s| &s[4])
        .collect();
    assert_eq!(sinks, ["email (http)", "email (http)"]);
    // The counts table keeps the shared ledger only: per-ID counts are per boundary.
    assert!(!html.contains("<th>duplicated</th><td>"), "{html}");
}
