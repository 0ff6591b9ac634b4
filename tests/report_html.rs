//! report.html as a person sees it: real runs (the demo on the embedded mock, an AMQP plan and
//! the rebalance plan and kafka-eos-email, with its two boundaries, on the real brokers) and a
//! synthetic 100,000-message run, each opened in
//! headless Chromium through `scripts/view-report` (the DevTools protocol over a pipe). The page
//! must load with no console error and no request, carry one marker per fired fault and per
//! anomaly, show both effects of a duplicated ID with their writers when searched, and open in
//! under 2 s; a screenshot is written beside each report for reviewers.
//!
//! Without Chromium these tests skip with a message, unless `CI` is set: then they fail.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use common::*;
use exactly::timeline::{read_events, Event};
use serde_json::Value;

/// The most a page may take to load (navigation start to the load event's end).
const LOAD_MS: f64 = 2_000.0;
/// The most a 100,000-message run's page may weigh.
const MAX_BYTES: u64 = 5 * 1024 * 1024;

/// True when Chromium can be run; false (with a message) when it is missing outside CI.
fn chromium_or_skip() -> bool {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .any(|c| {
            Command::new("sh")
                .args(["-c", &format!("command -v {c}")])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("Chromium is missing and CI is set: install it (apt-get install chromium; scripts/test does)");
        }
        eprintln!("SKIPPED: Chromium is not installed (apt-get install chromium); the report.html browser checks did not run");
    }
    found
}

/// Opens `html` in headless Chromium; returns what `scripts/view-report` saw.
fn view(html: &Path, searches: &[&str]) -> Value {
    let shot = html.with_file_name("report.png");
    let mut cmd = Command::new(root().join("scripts/view-report"));
    cmd.arg(html)
        .args(["--screenshot", shot.to_str().unwrap()])
        .args(["--count", ".mark.fault.fired", "--count", ".mark.anomaly"])
        .args(["--hover", ".mark.fault", "--click", ".mark.anomaly"]);
    for id in searches {
        cmd.args(["--search", id]);
    }
    let out = cmd.output().expect("scripts/view-report runs");
    assert!(
        out.status.success(),
        "view-report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("view-report prints JSON");
    let png = std::fs::read(&shot).expect("the screenshot is written beside the report");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    seen
}

/// Fault events that fired, counted from events.jsonl.
fn fired_faults(dir: &Path) -> u64 {
    let events = read_events(&dir.join("events.jsonl")).expect("events.jsonl reads");
    events
        .iter()
        .filter(|e| matches!(&e.event, Event::Fault(f) if f.applied))
        .count() as u64
}

/// Every anomaly of the run (report.json caps its list and says how many it left out), and
/// of each boundary of a run with boundaries (their overall ruling lists none).
fn anomalies(report: &Value) -> u64 {
    let one = |r: &Value| {
        r["anomalies"].as_array().unwrap().len() as u64 + r["anomalies_truncated"].as_u64().unwrap()
    };
    one(report)
        + report["boundaries"]
            .as_array()
            .map_or(0, |bs| bs.iter().map(one).sum())
}

/// The first duplicated ID (of the run, else of a boundary) with its applied effects'
/// writers (`consumer[I]#N`).
fn a_duplicate(report: &Value) -> Option<(String, Vec<String>)> {
    let boundaries = report["boundaries"].as_array().cloned().unwrap_or_default();
    let dup = std::iter::once(report)
        .chain(boundaries.iter())
        .filter_map(|r| r["anomalies"].as_array())
        .flatten()
        .find(|a| a["outcome"] == "duplicated")?;
    let writers = dup["effects"]
        .as_array()?
        .iter()
        .filter(|e| e["outcome"] == "applied")
        .map(|e| format!("consumer[{}]#{}", e["instance"], e["incarnation"]))
        .collect();
    Some((dup["id"].as_str()?.to_string(), writers))
}

/// What every page must show in the browser, for the run in `dir`.
fn check_page(dir: &Path, report: &Value) -> Value {
    let html = dir.join("report.html");
    assert!(html.is_file(), "report.html is written beside report.md");
    let dup = a_duplicate(report);
    let searches: Vec<&str> = dup.iter().map(|(id, _)| id.as_str()).collect();
    let seen = view(&html, &searches);
    assert_eq!(seen["console_errors"], Value::Array(vec![]), "{seen}");
    assert_eq!(seen["requests"], Value::Array(vec![]), "{seen}");
    assert_eq!(
        seen["counts"][".mark.fault.fired"],
        fired_faults(dir),
        "one marker per fired fault: {seen}"
    );
    assert_eq!(
        seen["counts"][".mark.anomaly"],
        anomalies(report).min(2_000),
        "one marker per anomaly: {seen}"
    );
    if let Some((id, writers)) = dup {
        let text = seen["searches"][&id]
            .as_str()
            .expect("the search shows text");
        let applied = text.matches("effect applied").count();
        assert!(applied >= 2, "both effects of {id} are shown: {text}");
        for w in &writers {
            assert!(
                text.contains(&format!("by {w}")),
                "{id}'s writer {w} is shown: {text}"
            );
        }
    }
    if fired_faults(dir) > 0 {
        let hover = seen["hovers"][".mark.fault"].as_str().unwrap_or("");
        assert!(
            hover.starts_with("fault #") && hover.contains("trigger"),
            "hovering a fault shows its event: {hover}"
        );
    }
    if anomalies(report) > 0 {
        let click = &seen["clicks"][".mark.anomaly"];
        let (id, life) = (
            click["data-id"].as_str().unwrap(),
            click["text"].as_str().unwrap(),
        );
        assert!(
            life.starts_with(&format!("{id}: ")),
            "clicking an anomaly shows its life: {click}"
        );
    }
    let load = seen["load_ms"].as_f64().unwrap();
    assert!(load < LOAD_MS, "the page loads in under 2 s: {load} ms");
    seen
}

/// Runs a shipped plan into `dir/run` and checks its page.
/// With REPORT_HTML_KEEP=DIR the run folder (report.html, report.png...) is kept in DIR/NAME.
fn run_and_check(plan: &str, tmp: &Path, verdicts: &[&str]) {
    let name = plan.trim_end_matches(".yaml");
    let out =
        std::env::var_os("REPORT_HTML_KEEP").map_or(tmp.join("run"), |d| Path::new(&d).join(name));
    let plan = plan_copy(plan, tmp, |t| t);
    let (output, report) = run_plan(&plan, &out, &[]);
    assert!(
        verdicts.contains(&report["verdict"].as_str().unwrap_or("")),
        "{}",
        explain(&output, &report)
    );
    let seen = check_page(&out, &report);
    eprintln!(
        "{}: load {} ms, {} bytes",
        plan.display(),
        seen["load_ms"],
        std::fs::metadata(out.join("report.html")).unwrap().len()
    );
}

#[test]
fn the_demo_page_loads_clean_and_shows_the_duplicates() {
    if !chromium_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    run_and_check("demo.yaml", tmp.path(), &["DUPLICATED"]);
}

#[test]
fn an_amqp_page_loads_clean_and_shows_the_duplicates() {
    if !chromium_or_skip() {
        return;
    }
    require_rabbitmq();
    let tmp = tempfile::tempdir().unwrap();
    run_and_check("amqp-ack-after-effect.yaml", tmp.path(), &["DUPLICATED"]);
}

#[test]
fn the_rebalance_page_loads_clean_with_its_ownership_lanes() {
    if !chromium_or_skip() {
        return;
    }
    require_kafka();
    let tmp = tempfile::tempdir().unwrap();
    run_and_check(
        "kafka-rebalance.yaml",
        tmp.path(),
        &["DUPLICATED", "EXACT", "INCONCLUSIVE"],
    );
    let dir = std::env::var_os("REPORT_HTML_KEEP").map_or(tmp.path().join("run"), |d| {
        Path::new(&d).join("kafka-rebalance")
    });
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains(">partition 5</text>"), "six partition lanes");
    assert!(
        html.contains("the harness&#39;s transient group member"),
        "the member's share is drawn"
    );
}

#[test]
fn a_page_with_boundaries_shows_each_boundary_verdict_and_root_cause() {
    if !chromium_or_skip() {
        return;
    }
    require_kafka();
    let tmp = tempfile::tempdir().unwrap();
    run_and_check("kafka-eos-email.yaml", tmp.path(), &["DUPLICATED", "EXACT"]);
    let dir = std::env::var_os("REPORT_HTML_KEEP").map_or(tmp.path().join("run"), |d| {
        Path::new(&d).join("kafka-eos-email")
    });
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let boundaries = report["boundaries"].as_array().expect("boundaries");
    assert_eq!(boundaries.len(), 2, "{report}");
    let seen = Command::new(root().join("scripts/view-report"))
        .arg(dir.join("report.html"))
        .args(["--count", "#boundaries .boundary-row"])
        .args(["--count", "section.boundary"])
        .output()
        .expect("view-report runs");
    let seen: Value = serde_json::from_slice(&seen.stdout).expect("view-report prints JSON");
    assert_eq!(seen["counts"]["#boundaries .boundary-row"], 2, "{seen}");
    assert_eq!(seen["counts"]["section.boundary"], 2, "{seen}");
    for (i, b) in boundaries.iter().enumerate() {
        let (name, verdict, kept) = (
            b["name"].as_str().unwrap(),
            b["verdict"].as_str().unwrap(),
            b["expectation_state"].as_str().unwrap(),
        );
        let c = &b["counts"];
        let row = format!(
            r#"<tr class="boundary-row" data-boundary="{name}"><td><a href="{}">{name}</a></td><td>{}</td><td>{}</td><td><span class="verdict small {}">{verdict}</span></td><td><span class="promise {}">{kept}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"#,
            format_args!("#boundary-{}", i + 1),
            b["sink"].as_str().unwrap(),
            b["expect"].as_str().unwrap(),
            if verdict == "EXACT" { "exact" } else { "bad" },
            if kept == "met" { "exact" } else { "bad" },
            c["effected"],
            c["exact"],
            c["duplicated"],
            c["lost"],
            c["pending"],
        );
        assert!(html.contains(&row), "{name}'s row: {row}");
        let section = format!(r#"<section class="boundary" id="boundary-{}">"#, i + 1);
        assert!(html.contains(&section), "{name}'s section");
        if !b["mechanisms"].as_array().unwrap().is_empty() {
            assert!(
                html.contains(&format!(r#"<section id="root-cause-{}">"#, i + 1)),
                "{name}'s root cause is shown"
            );
        }
    }
    // The email's duplicates are effects outside the transaction, in its root cause.
    if boundaries[1]["verdict"] == "DUPLICATED" {
        assert!(html.contains("<code>effect_outside_transaction</code>"));
    }
    assert!(
        html.contains("Output topic orders-out-"),
        "the output topic read is told"
    );
}

/// A synthetic 100,000-message Kafka run (3 instances, 12 partitions, 10 s): consumer[0]
/// killed at 5 s redoes its uncommitted half second of work (duplicates), and consumer[1]
/// commits past 50 messages it never applied (lost). Written as events.jsonl lines.
fn large_run(dir: &Path, messages: u64) {
    const PARTS: u64 = 12;
    const KILL: u64 = 5_000_000;
    const RESTART: u64 = 5_300_000;
    let run = "big-run";
    let mut lines: Vec<(u64, String)> = Vec::new();
    let mut ev = |t: u64, body: String| lines.push((t, body));
    ev(
        0,
        format!(
            r#""kind":"run_started","run":"{run}","plan":"large","broker":"kafka","mock_broker":false,"broker_address":"127.0.0.1:9092","topic":"t","group":"g","expect":"at-least-once","seed":1,"planned_faults":["kill: consumer[0] when at: 5s"],"messages":{messages},"reproduce":"exactly run large.yaml""#
        ),
    );
    for i in 0..3u64 {
        ev(
            10,
            format!(
                r#""kind":"process","instance":{i},"incarnation":1,"pid":{},"phase":"started""#,
                100 + i
            ),
        );
        let parts: Vec<String> = (0..PARTS)
            .filter(|p| p % 3 == i)
            .map(|p| p.to_string())
            .collect();
        ev(
            20,
            format!(
                r#""kind":"rebalance","instance":{i},"incarnation":1,"group":"g","change":"assign","member":"m{i}","assignment":[{}]"#,
                parts.join(",")
            ),
        );
    }
    ev(KILL, r#""kind":"fault","fault":0,"action":"kill","target":"consumer[0]","trigger":"at: 5s","matched_at_us":4999900,"fired_at_us":5000000,"trigger_latency_us":100,"applied":true,"detail":"SIGKILL consumer[0] incarnation 1 (pid 100)","hit":[{"instance":0,"incarnation":1}]"#.into());
    ev(KILL + 1, r#""kind":"process","instance":0,"incarnation":1,"pid":100,"phase":"exited","status":"signal SIGKILL""#.into());
    ev(
        RESTART,
        r#""kind":"process","instance":0,"incarnation":2,"pid":103,"phase":"started""#.into(),
    );
    ev(RESTART + 10, r#""kind":"rebalance","instance":0,"incarnation":2,"group":"g","change":"assign","member":"m3","assignment":[0,3,6,9]"#.into());
    let mut batches: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let mut done: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for seq in 0..messages {
        let (p, offset, t) = (seq % PARTS, seq / PARTS, 1_000 + seq * 100);
        let id = format!("{run}-{seq}");
        ev(
            t,
            format!(
                r#""kind":"produced","id":"{id}","key_seq":1,"partition":{p},"offset":{offset},"status":"acked""#
            ),
        );
        batches
            .entry((t / 100_000, p))
            .or_default()
            .push(format!(r#"[{offset},"{id}"]"#));
        let owner = p % 3;
        let effect = |inc: u64| {
            format!(
                r#""kind":"effect","id":"{id}","instance":{owner},"incarnation":{inc},"outcome":"applied","sink":"http","attributed_by":"socket","pid":{}"#,
                100 + owner + 3 * (inc - 1)
            )
        };
        let te = t + 5_000;
        let skipped = owner == 1 && (20_000..20_150).contains(&seq);
        if owner == 0 && te >= KILL {
            ev(te.max(RESTART + 50_000), effect(2));
        } else if !skipped {
            ev(te, effect(1));
        }
        if owner == 0 && (4_500_000..KILL).contains(&te) {
            ev(RESTART + 60_000 + seq, effect(2));
        }
        done.insert((owner, te / 500_000), seq);
    }
    for ((window, p), records) in batches {
        let owner = p % 3;
        let inc = if owner == 0 && window * 100_000 >= KILL {
            2
        } else {
            1
        };
        ev(
            window * 100_000 + 99_000,
            format!(
                r#""kind":"delivered_batch","instance":{owner},"incarnation":{inc},"partition":{p},"records":[{}]"#,
                records.join(",")
            ),
        );
    }
    // Each instance commits its partitions every half second (consumer[0] not while dead).
    for window in 1..=(messages * 100 / 500_000 + 2) {
        let t = window * 500_000;
        for owner in 0..3u64 {
            if owner == 0 && (KILL..RESTART + 500_000).contains(&t) {
                continue;
            }
            let inc = if owner == 0 && t >= KILL { 2 } else { 1 };
            let upto = messages.min((t.saturating_sub(6_000)) / 100);
            let offsets: Vec<String> = (0..PARTS)
                .filter(|p| p % 3 == owner)
                .map(|p| {
                    format!(
                        r#"{{"topic":"t","partition":{p},"offset":{}}}"#,
                        (upto + PARTS - 1 - p) / PARTS
                    )
                })
                .collect();
            ev(
                t,
                format!(
                    r#""kind":"commit","instance":{owner},"incarnation":{inc},"group":"g","member":"m","generation":1,"offsets":[{}],"phase":"response""#,
                    offsets.join(",")
                ),
            );
        }
    }
    let end = messages * 100 + 1_500_000;
    let all: Vec<String> = (0..PARTS)
        .map(|p| format!(r#""{p}":{}"#, (messages + PARTS - 1 - p) / PARTS))
        .collect();
    ev(
        end - 10,
        format!(
            r#""kind":"progress","committed":{{{0}}},"end":{{{0}}}"#,
            all.join(",")
        ),
    );
    ev(end, r#""kind":"run_ended","reason":"settled""#.into());
    lines.sort_by_key(|(t, _)| *t);
    let mut text = String::new();
    for (seq, (t, body)) in lines.iter().enumerate() {
        let _ = writeln!(text, r#"{{"seq":{seq},"t_us":{t},{body}}}"#);
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("events.jsonl"), text).unwrap();
}

#[test]
fn a_100k_message_run_stays_under_5_mb_and_opens_in_under_2_s() {
    // REPORT_HTML_KEEP=DIR keeps the run folder (events, report.html, report.png) in DIR/large.
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("REPORT_HTML_KEEP")
        .map_or(tmp.path().join("large"), |d| Path::new(&d).join("large"));
    // REPORT_HTML_MESSAGES=N measures another size (the limits asserted stay the same).
    let messages =
        std::env::var("REPORT_HTML_MESSAGES").map_or(100_000, |n| n.parse().expect("a number"));
    large_run(&dir, messages);
    let started = std::time::Instant::now();
    let out = exactly(&["report", dir.to_str().unwrap()]);
    let rendered = started.elapsed();
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["verdict"],
        "LOST+DUPLICATED",
        "{}",
        explain(&out, &report)
    );
    let bytes = std::fs::metadata(dir.join("report.html")).unwrap().len();
    let events = std::fs::metadata(dir.join("events.jsonl")).unwrap().len();
    assert!(bytes <= MAX_BYTES, "report.html is {bytes} bytes");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("IDs can be searched: every anomaly"),
        "the page says it sampled"
    );
    if !chromium_or_skip() {
        return;
    }
    let seen = check_page(&dir, &report);
    eprintln!(
        "{messages} messages: events.jsonl {events} bytes, report.html {bytes} bytes, `exactly report` {} ms, load {} ms, first frame after load {} ms",
        rendered.as_millis(),
        seen["load_ms"],
        seen["ready_ms"]
    );
}
