//! `exactly audit` on the real brokers: the example consumers' modes measured cell by cell.
//! Each audit here runs a subset of the cells once (`--cells`, `--repeats 1`) to keep CI
//! short; the full default audit is measured once in README.

mod common;

use std::path::Path;
use std::process::Output;

use common::{exactly, plan_copy, require_kafka, require_rabbitmq};
use serde_json::Value;

/// `exactly audit` on the shipped plan `name` with `--mode MODE` (and `edit` on its text);
/// returns the output and audit.json.
fn audit(
    name: &str,
    mode: &str,
    cells: &str,
    extra: &[&str],
    edit: &dyn Fn(String) -> String,
) -> (Output, Value) {
    let dir = tempfile::tempdir().unwrap().keep();
    let plan = plan_copy(name, &dir, |t| {
        let t = t
            .replace("commit-after-effect", mode)
            .replace("ack-after-effect", mode);
        edit(t)
    });
    let out = dir.join("audit");
    let mut args = vec![
        "audit",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--repeats",
        "1",
        "--cells",
        cells,
    ];
    args.extend_from_slice(extra);
    let output = exactly(&args);
    (output, read_json(&out.join("audit.json")))
}

fn read_json(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

/// A readable account of an audit, for assertion messages.
fn explain(output: &Output, audit: &Value) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}\naudit.json: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        serde_json::to_string_pretty(audit).unwrap_or_default()
    )
}

/// How many runs of cell `fault` had `verdict`.
fn count(audit: &Value, fault: &str, verdict: &str) -> u64 {
    let cell = audit["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["fault"] == fault)
        .unwrap_or_else(|| panic!("no cell {fault}"));
    cell["verdicts"][verdict].as_u64().unwrap()
}

/// Every cell that ran, with `verdict` counted over its runs.
fn total(audit: &Value, verdict: &str) -> u64 {
    audit["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["verdicts"][verdict].as_u64().unwrap_or(0))
        .sum()
}

fn same(t: String) -> String {
    t
}

#[test]
fn commit_before_effect_is_at_most_once_losing_the_work_committed_before_its_effect() {
    require_kafka();
    let cells = "kill-during-effect,kill-after-effect,kill-after-commit";
    let (output, a) = audit(
        "audit-kafka.yaml",
        "commit-before-effect",
        cells,
        &[],
        &same,
    );
    let why = explain(&output, &a);
    assert_eq!(a["semantics"], "at-most-once", "{why}");
    assert!(count(&a, "kill-after-commit", "LOST") >= 1, "{why}");
    assert_eq!(
        total(&a, "DUPLICATED") + total(&a, "LOST+DUPLICATED"),
        0,
        "{why}"
    );
    // The plan claims at-least-once: a proven loss breaks it.
    assert_eq!(output.status.code(), Some(1), "{why}");
    assert!(
        a["conclusion"]
            .as_str()
            .unwrap()
            .starts_with("at-most-once"),
        "{why}"
    );
}

#[test]
fn commit_after_effect_is_at_least_once_duplicating_and_never_losing() {
    require_kafka();
    let cells = "kill-during-effect,kill-before-commit,kill-after-commit";
    let (output, a) = audit("audit-kafka.yaml", "commit-after-effect", cells, &[], &same);
    let why = explain(&output, &a);
    assert_eq!(a["semantics"], "at-least-once", "{why}");
    assert_eq!(count(&a, "kill-during-effect", "DUPLICATED"), 1, "{why}");
    assert_eq!(count(&a, "kill-before-commit", "DUPLICATED"), 1, "{why}");
    assert_eq!(total(&a, "LOST") + total(&a, "LOST+DUPLICATED"), 0, "{why}");
    assert_eq!(output.status.code(), Some(0), "{why}");
    // The calibration measured the consumer: one commit per message, the session timeout.
    assert_eq!(a["calibration"]["session_timeout_ms"], 2000, "{why}");
    assert!(a["calibration"]["commits"].as_u64().unwrap() > 0, "{why}");
    // junit.xml has a testcase per cell.
    let dir = Path::new(a["cells"][0]["run_dirs"][0].as_str().unwrap())
        .parent()
        .unwrap();
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(
        junit.contains(r#"tests="3""#) && junit.contains(r#"name="kill-before-commit""#),
        "{junit}"
    );
}

#[test]
fn an_idempotent_consumer_is_exact_in_every_cell_it_runs() {
    require_kafka();
    let cells = "kill-during-effect,kill-after-effect,kill-before-commit,pause,rebalance,sever";
    let key = |t: String| {
        t.replace(
            "  id: json:/order_id\n",
            "  id: json:/order_id\n  idempotency_key: header:Idempotency-Key\n",
        )
        .replace("expect: at-least-once", "expect: exactly-once")
    };
    let (output, a) = audit("audit-kafka.yaml", "idempotent", cells, &[], &key);
    let why = explain(&output, &a);
    assert_eq!(total(&a, "EXACT"), 6, "{why}");
    assert_eq!(a["semantics"], "exactly-once", "{why}");
    assert_eq!(output.status.code(), Some(0), "{why}");
    assert!(
        a["conclusion"]
            .as_str()
            .unwrap()
            .contains("no loss or duplicate in 6 runs"),
        "{why}"
    );
}

#[test]
fn periodic_commits_repeat_revoked_work_in_the_rebalance_cell_and_commit_on_revoke_does_not() {
    require_kafka();
    let (output, a) = audit(
        "audit-kafka.yaml",
        "commit-periodic",
        "rebalance",
        &[],
        &same,
    );
    let why = explain(&output, &a);
    assert_eq!(count(&a, "rebalance", "DUPLICATED"), 1, "{why}");
    assert_eq!(
        a["cells"][0]["mechanisms"][0], "revoked_uncommitted",
        "{why}"
    );

    let (output, a) = audit(
        "audit-kafka.yaml",
        "commit-on-revoke",
        "rebalance",
        &[],
        &same,
    );
    let why = explain(&output, &a);
    assert_eq!(count(&a, "rebalance", "EXACT"), 1, "{why}");
    assert_eq!(a["semantics"], "exactly-once", "{why}");
}

#[test]
fn rabbitmq_auto_ack_loses_and_ack_after_effect_duplicates_without_loss() {
    require_rabbitmq();
    let cells = "kill-during-effect,kill-after-effect,kill-after-ack";
    let (output, a) = audit("audit-amqp.yaml", "auto-ack", cells, &[], &same);
    let why = explain(&output, &a);
    assert!(total(&a, "LOST") >= 1, "{why}");
    assert!(
        a["semantics"] == "at-most-once" || a["semantics"] == "none",
        "{why}"
    );
    // Auto-ack sends no ack: the ack cell cannot apply, and says why.
    let ack = a["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["fault"] == "kill-after-ack");
    let ack = ack.unwrap_or_else(|| panic!("{why}"));
    assert_eq!(ack["applicable"], false, "{why}");
    assert!(ack["reason"].as_str().unwrap().contains("no-ack"), "{why}");
    assert_eq!(output.status.code(), Some(1), "{why}");

    let cells = "kill-during-effect,kill-before-ack,kill-after-ack";
    let (output, a) = audit("audit-amqp.yaml", "ack-after-effect", cells, &[], &same);
    let why = explain(&output, &a);
    assert!(total(&a, "DUPLICATED") >= 1, "{why}");
    assert_eq!(total(&a, "LOST") + total(&a, "LOST+DUPLICATED"), 0, "{why}");
    assert_eq!(a["semantics"], "at-least-once", "{why}");
    assert_eq!(output.status.code(), Some(0), "{why}");
    // The plan's URL asks for heartbeat=2: the proxy saw the negotiated value, and the pause
    // and partition cells are sized past it.
    assert_eq!(a["calibration"]["heartbeat_s"], 2, "{why}");
}

/// True when Chromium can be run; false (with a message) when it is missing outside CI.
fn chromium_or_skip() -> bool {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .any(|c| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {c}")])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is missing and CI is set: install it (scripts/test does)"
        );
        eprintln!("SKIPPED: Chromium is not installed; the audit.html browser check did not run");
    }
    found
}

#[test]
fn the_audit_page_shows_the_contract_and_links_every_run_report() {
    require_rabbitmq();
    let cells = "kill-after-effect,kill-before-ack";
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("audit-amqp.yaml", dir.path(), same);
    let out = dir.path().join("audit");
    let output = exactly(&[
        "audit",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--repeats",
        "2",
        "--cells",
        cells,
    ]);
    let a = read_json(&out.join("audit.json"));
    let why = explain(&output, &a);
    let page = out.join("audit.html");
    let html = std::fs::read_to_string(&page).unwrap_or_else(|_| panic!("no audit.html: {why}"));
    assert!(html.contains(a["conclusion"].as_str().unwrap()), "{why}");
    // Every run of every cell is a link to its own report.html, which exists, with its verdict.
    let mut links = 0;
    for c in a["cells"].as_array().unwrap() {
        let fault = c["fault"].as_str().unwrap();
        assert!(
            html.contains(&format!(r#"<tr class="cell" data-cell="{fault}">"#)),
            "{fault}'s row: {why}"
        );
        for d in c["details"].as_array().unwrap() {
            let name = Path::new(d["run_dir"].as_str().unwrap())
                .file_name()
                .unwrap();
            let href = format!("{}/report.html", name.to_str().unwrap());
            assert!(out.join(&href).is_file(), "{href} exists: {why}");
            let verdict = d["verdict"].as_str().unwrap();
            assert!(
                html.contains(&format!(r#"href="{href}" title="seed {}"#, d["seed"])),
                "{href} is linked: {why}"
            );
            assert!(html.contains(&format!(">{verdict}</a>")), "{why}");
            links += 1;
        }
    }
    assert_eq!(links, 4, "two cells, two repeats: {why}");
    assert!(out.join("calibration/report.html").is_file(), "{why}");
    assert!(
        html.contains(r#"<a href="calibration/report.html">"#),
        "{why}"
    );
    if !chromium_or_skip() {
        return;
    }
    let seen = std::process::Command::new(common::root().join("scripts/view-report"))
        .arg(&page)
        .args(["--screenshot", out.join("audit.png").to_str().unwrap()])
        .args([
            "--count",
            "#contract tr.cell",
            "--count",
            "#contract a.verdict",
        ])
        .output()
        .expect("view-report runs");
    let seen: Value = serde_json::from_slice(&seen.stdout).expect("view-report prints JSON");
    assert_eq!(seen["console_errors"], Value::Array(vec![]), "{seen}");
    assert_eq!(seen["requests"], Value::Array(vec![]), "{seen}");
    assert_eq!(seen["counts"]["#contract tr.cell"], 2, "{seen}");
    assert_eq!(seen["counts"]["#contract a.verdict"], 4, "{seen}");
    assert!(seen["load_ms"].as_f64().unwrap() < 2_000.0, "{seen}");
}

#[test]
fn on_a_terminal_the_progress_is_one_line_per_cell_rewritten_in_place() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("audit-amqp.yaml", dir.path(), same);
    let out = dir.path().join("audit");
    let command = format!(
        "{} audit {} --out {} --repeats 2 --cells kill-after-effect,sever",
        common::exactly_bin().display(),
        plan.display(),
        out.display()
    );
    // util-linux `script` gives the audit a pseudo-terminal and copies what it wrote.
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(common::root())
        .output()
        .expect("script (util-linux) runs");
    let tty = String::from_utf8_lossy(&output.stdout);
    // What the cells find is not this test's concern (a sever run can be INCONCLUSIVE, exit 3);
    // the audit must have finished and judged (0, 1 or 3), not failed (2, 4).
    assert!(
        matches!(output.status.code(), Some(0 | 1 | 3)),
        "{:?} {tty}",
        output.status
    );
    // Lines as the terminal shows them: each \r rewrites the line it is on.
    let shown: Vec<&str> = tty
        .split('\n')
        .map(|l| l.trim_end_matches('\r').rsplit('\r').next().unwrap_or(""))
        .filter(|l| l.contains("] "))
        .collect();
    assert_eq!(shown.len(), 2, "one line per cell: {shown:?}\n{tty}");
    assert!(
        shown[0].contains("] 2/4 kill-after-effect 2/2: "),
        "{shown:?}"
    );
    assert!(shown[1].contains("] 4/4 sever 2/2: "), "{shown:?}");
    assert!(tty.contains("\r\x1b[2K"), "rewritten in place: {tty}");
    assert!(!tty.contains("exactly: run "), "no line per run: {tty}");
}

#[test]
fn a_consumer_whose_effects_cannot_be_read_stops_the_audit_at_calibration_with_exit_2() {
    require_kafka();
    let wrong_rule = |t: String| t.replace("id: json:/order_id", "id: json:/nowhere");
    let (output, a) = audit(
        "audit-kafka.yaml",
        "commit-after-effect",
        "sever",
        &[],
        &wrong_rule,
    );
    let why = explain(&output, &a);
    assert_eq!(output.status.code(), Some(2), "{why}");
    assert_eq!(a["semantics"], "unknown", "{why}");
    assert!(a["cells"].as_array().unwrap().is_empty(), "{why}");
    assert!(
        a["conclusion"].as_str().unwrap().contains("not audited"),
        "{why}"
    );
}

#[test]
fn an_unknown_cell_is_a_usage_error_naming_the_cells() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("audit-kafka.yaml", dir.path(), same);
    let output = exactly(&["audit", plan.to_str().unwrap(), "--cells", "kill-after-ack"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("kill-after-commit"), "{stderr}");
}

#[test]
fn ctrl_c_keeps_the_runs_that_finished_and_says_so() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_copy("audit-kafka.yaml", dir.path(), same);
    let out = dir.path().join("audit");
    let child = std::process::Command::new(common::exactly_bin())
        .args([
            "audit",
            plan.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--repeats", "2", "--cells", "kill-after-effect,sever"])
        .current_dir(common::root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first repeat is judged, interrupt the second.
    let first = out.join("kill-after-effect-1").join("report.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !first.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(first.exists(), "the first repeat never finished");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    let a = read_json(&out.join("audit.json"));
    let why = explain(&output, &a);
    assert_eq!(a["interrupted"], true, "{why}");
    assert_eq!(output.status.code(), Some(3), "{why}");
    let cells = a["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1, "the sever cell never started: {why}");
    assert_eq!(cells[0]["runs"], 1, "the cut repeat is not counted: {why}");
    assert_eq!(cells[0]["interrupted"], true, "{why}");
    let md = std::fs::read_to_string(out.join("audit.md")).unwrap();
    assert!(md.contains("Interrupted"), "{md}");
}

#[test]
fn a_failing_cell_of_several_faults_names_its_minimal_fault_set() {
    require_kafka();
    // Periodic commits repeat the work a rebalance revokes: the scale cell (+1, then -1) breaks
    // exactly-once, and the audit shrinks its first failing run to the faults that matter.
    let (output, a) = audit(
        "audit-kafka.yaml",
        "commit-periodic",
        "scale",
        &["--expect", "exactly-once"],
        &same,
    );
    let why = explain(&output, &a);
    let cell = &a["cells"][0];
    assert_eq!(cell["fault"], "scale", "{why}");
    let failed = cell["details"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["exit_code"] == 1);
    assert!(failed, "the scale cell broke exactly-once: {why}");
    assert_eq!(output.status.code(), Some(1), "{why}");
    let shrunk = &cell["shrunk"];
    let faults = shrunk["faults"]
        .as_array()
        .unwrap_or_else(|| panic!("{why}"));
    assert_eq!(shrunk["faults_before"], 2, "{why}");
    // The scale-up alone repeats revoked work (measured: `scale: +1 when after: effect, nth: 1`,
    // 5 of 5 confirmations, in 10 replays).
    assert_eq!(faults.len(), 1, "{why}");
    assert!(faults[0].as_str().unwrap().starts_with("scale:"), "{why}");
    let plan = Path::new(shrunk["plan"].as_str().unwrap());
    assert!(plan.ends_with("plans/scale-shrunk.yaml"), "{why}");
    let text = std::fs::read_to_string(plan).unwrap();
    assert!(text.contains("exactly run"), "{text}");
    // audit.md and audit.html name it under the cell; junit carries it as a property.
    let out = plan.parent().unwrap().parent().unwrap();
    for file in ["audit.md", "audit.html"] {
        let page = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(
            page.contains("Minimal fault set (shrunk from 2 faults"),
            "{file}: {page}"
        );
    }
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains(r#"name="minimal_faults""#), "{junit}");
}

#[test]
fn shrink_reduces_five_kills_where_one_matters_to_that_one() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    // Against exactly-once, only the kill while an effect is in flight makes a duplicate; the
    // kills after a delivery or a commit of this commit-after-effect consumer lose nothing and
    // repeat nothing (EXACT in every audit cell of them).
    let five = "faults:\n\
                \x20 - {kill: consumer, when: {after: deliver, nth: 15}}\n\
                \x20 - {kill: consumer, when: {after: deliver, nth: 50}}\n\
                \x20 - {kill: consumer, when: {during: effect, nth: 40}}\n\
                \x20 - {kill: consumer, when: {after: commit, nth: 70}}\n\
                \x20 - {kill: consumer, when: {after: deliver, nth: 90}}\n\
                expect: exactly-once\n";
    let plan = plan_copy("audit-kafka.yaml", dir.path(), |t| {
        t.replace("expect: at-least-once\n", five)
    });
    let run = dir.path().join("run");
    let (output, report) = common::run_plan(&plan, &run, &[]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        common::explain(&output, &report)
    );
    let shrunk = dir.path().join("shrunk.yaml");
    let output = exactly(&[
        "shrink",
        run.to_str().unwrap(),
        "--out",
        shrunk.to_str().unwrap(),
        "--confirm",
        "2",
    ]);
    let why = format!(
        "exit {:?}\n{}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{why}");
    let text = std::fs::read_to_string(&shrunk).unwrap();
    let plan: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let faults = plan["faults"].as_sequence().unwrap();
    assert_eq!(faults.len(), 1, "{text}\n{why}");
    assert_eq!(faults[0]["when"]["during"], "effect", "{text}\n{why}");
    // An earlier nth that still fails (the first effect's, unless that replay happened not to).
    assert!(
        faults[0]["when"]["nth"].as_u64().unwrap() <= 40,
        "{text}\n{why}"
    );
    assert!(text.contains("exactly run"), "{text}");
    // The shrunk plan runs as it is and still fails.
    let again = dir.path().join("again");
    let (output, report) = common::run_plan(&shrunk, &again, &[]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        common::explain(&output, &report)
    );
}
