//! Reading a plan file: parse, then validate, turning every problem into a located message
//! (`file:line:col: message` with the fix). serde stops at the first problem it meets while
//! parsing, so a plan that does not parse gets that one; every rule checked afterwards is
//! checked in full, and all its problems come at once, in the order of their position.

use std::fmt;
use std::path::{Path, PathBuf};

use super::span::{LineBreaks, Position, SpanMap};
use super::validate::{validate, Problem};
use super::Plan;

/// A plan the user must fix (exit code 2): every problem found, in file order.
#[derive(Debug)]
pub struct PlanError {
    /// The plan file.
    pub file: PathBuf,
    /// What is wrong, located, sorted by position (those without one last); never empty.
    pub problems: Vec<PlanProblem>,
}

/// One problem in a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanProblem {
    /// Where the problem is, when known.
    pub position: Option<Position>,
    /// What is wrong, and how to fix it.
    pub message: String,
    /// The offending source line, for display.
    pub source_line: Option<String>,
}

impl PlanError {
    /// A problem with the file as a whole (it cannot be read, it does not parse...).
    fn single(file: &Path, problem: PlanProblem) -> PlanError {
        PlanError {
            file: file.to_owned(),
            problems: vec![problem],
        }
    }
}

/// Each problem as `file:line:col: message` (or `file: message` without a position) with its
/// source line and a caret; several problems end with their count.
impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match problem.position {
                Some(p) => write!(f, "{file}:{}:{}: {}", p.line, p.col, problem.message)?,
                None => write!(f, "{file}: {}", problem.message)?,
            }
            if let (Some(p), Some(line)) = (problem.position, &problem.source_line) {
                write!(
                    f,
                    "\n  {:>4} | {line}\n       | {:>width$}^",
                    p.line,
                    "",
                    width = p.col.saturating_sub(1)
                )?;
            }
        }
        if self.problems.len() > 1 {
            write!(f, "\n{file}: {} problems", self.problems.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanError {}

/// Reads, parses and validates the plan at `path` (see [`parse_plan`]).
pub fn load_plan(path: &Path) -> Result<Plan, PlanError> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        PlanError::single(
            path,
            PlanProblem {
                position: None,
                message: format!("cannot read the plan ({e}); check the path"),
                source_line: None,
            },
        )
    })?;
    parse_plan(path, &source)
}

/// Parses and validates plan text, and fills [`Plan::loaded`]; `file` is only used in messages.
pub fn parse_plan(file: &Path, source: &str) -> Result<Plan, PlanError> {
    // Each parser's positions are shown with the line it means, counted with its own breaks.
    let at = |breaks: LineBreaks, position: Option<Position>, message: String| PlanProblem {
        source_line: position.and_then(|p| breaks.line(source, p.line).map(str::to_owned)),
        position,
        message,
    };
    let mut plan: Plan = serde_yaml::from_str(source).map_err(|e| {
        let position = e.location().map(|l| Position {
            line: l.line(),
            col: l.column(),
        });
        let message = explain_serde_error(&e.to_string());
        PlanError::single(file, at(LineBreaks::Serde, position, message))
    })?;
    plan.loaded = validate(&plan).map_err(|problems| {
        let spans = SpanMap::build(source);
        let mut problems: Vec<PlanProblem> = problems
            .into_iter()
            .map(|Problem { path, message }| {
                let message = format!("{path}: {message}");
                at(LineBreaks::SpanMap, spans.find(&path), message)
            })
            .collect();
        // Stable: problems at one position keep the order the rules found them in.
        problems.sort_by_key(|p| (p.position.is_none(), p.position));
        PlanError {
            file: file.to_owned(),
            problems,
        }
    })?;
    Ok(plan)
}

/// Makes serde's message shorter and adds a suggestion for a misspelt field.
fn explain_serde_error(raw: &str) -> String {
    // serde_yaml appends " at line L column C"; the position is printed in front instead.
    let msg = match raw.find(" at line ") {
        Some(i) => &raw[..i],
        None => raw,
    };
    // serde_yaml prefixes the path of the field ("workload: unknown field ...").
    let (path, msg) = match msg.find("unknown field `") {
        Some(i) if i > 0 => (&msg[..i], &msg[i..]),
        _ => ("", msg),
    };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let best = candidates
                .iter()
                .map(|c| (strsim::jaro_winkler(field, c), *c))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            return match best {
                Some((score, c)) if score > 0.8 => {
                    format!("{path}unknown field `{field}`: did you mean `{c}`?")
                }
                _ => format!(
                    "{path}unknown field `{field}`: remove it; known fields here are {}",
                    candidates.join(", ")
                ),
            };
        }
    }
    if msg.contains("invalid value") && msg.contains("duration") || msg.contains("time unit") {
        return format!("{msg}; write a duration such as `500ms`, `3s` or `2m`");
    }
    msg.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(src: &str) -> String {
        parse_plan(Path::new("p.yaml"), src)
            .unwrap_err()
            .to_string()
    }

    const MINIMAL: &str = "name: t\nbroker: { kind: kafka }\nworkload: { messages: 10 }\n\
consumer: { command: [c] }\neffects: { sink: http }\nexpect: at-least-once\n";

    #[test]
    fn minimal_plan_parses_with_defaults() {
        let plan = parse_plan(Path::new("p.yaml"), MINIMAL).unwrap();
        assert_eq!(plan.workload.messages.get(), 10);
        assert_eq!(plan.broker.partitions.get(), 3);
    }

    #[test]
    fn misspelt_field_is_located_and_corrected() {
        let src = MINIMAL.replace("{ messages: 10 }", "{ messages: 10, durring: true }");
        let e = error_of(&src);
        assert!(e.starts_with("p.yaml:3:"), "{e}");
        assert!(e.contains("did you mean `during`?"), "{e}");
    }

    #[test]
    fn zero_count_is_rejected_at_its_line() {
        let e = error_of(&MINIMAL.replace("messages: 10", "messages: 0"));
        assert!(e.starts_with("p.yaml:3:"), "{e}");
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let src = format!("{MINIMAL}limits: {{ settle: 3 parsecs }}\n");
        let e = error_of(&src);
        assert!(e.starts_with("p.yaml:7:"), "{e}");
        assert!(e.contains("500ms"), "{e}");
    }

    #[test]
    fn proxy_faults_and_triggers_need_the_proxy() {
        let no_proxy = MINIMAL.replace("{ command: [c] }", "{ command: [c], via_proxy: false }");
        let e = error_of(&format!(
            "{no_proxy}faults:\n  - partition: consumer\n    for: 2s\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.contains("via_proxy"), "{e}");
        let e = error_of(&format!(
            "{no_proxy}faults:\n  - kill: consumer\n    when: {{ before: commit, nth: 2 }}\n"
        ));
        assert!(e.starts_with("p.yaml:9:"), "{e}");
        assert!(e.contains("via_proxy"), "{e}");
        // With the proxy (the default for Kafka) both are fine.
        let with_proxy = format!(
            "{MINIMAL}faults:\n  - kill: consumer\n    when: {{ before: commit, nth: 2 }}\n  - partition: consumer[0]\n    for: 2s\n    when: {{ on: rebalance, nth: 1 }}\n"
        );
        parse_plan(Path::new("p.yaml"), &with_proxy).unwrap();
    }

    #[test]
    fn before_is_only_for_commits() {
        let e = error_of(&format!(
            "{MINIMAL}faults:\n  - kill: consumer\n    when: {{ before: deliver, nth: 2 }}\n"
        ));
        assert!(e.contains("before: commit"), "{e}");
    }

    #[test]
    fn cross_field_rule_is_located_by_path() {
        let src = format!("{MINIMAL}faults:\n  - kill: consumer\n    when: {{ after: effect }}\n");
        let e = error_of(&src);
        assert!(e.starts_with("p.yaml:9:"), "{e}");
        assert!(e.contains("nth"), "{e}");
    }

    #[test]
    fn rebalance_group_and_scale_steps_parse_and_size_the_instance_capacity() {
        let src = format!(
            "{MINIMAL}faults:\n  - rebalance: group\n    for: 3s\n    when: {{ every: 2s, times: 3 }}\n  - scale: +1\n    when: {{ every: 1s, times: 2 }}\n  - scale: -1\n    grace: 1s\n    when: {{ at: 5s }}\n"
        );
        let plan = parse_plan(Path::new("p.yaml"), &src).unwrap();
        assert_eq!(plan.faults[1].scale, Some(1));
        assert_eq!(plan.faults[2].scale, Some(-1));
        assert_eq!(plan.instance_capacity(), 3);
    }

    #[test]
    fn rebalance_needs_group_a_length_and_kafka() {
        let e = error_of(&format!(
            "{MINIMAL}faults:\n  - rebalance: everyone\n    for: 3s\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.starts_with("p.yaml:8:"), "{e}");
        assert!(e.contains("rebalance: group"), "{e}");
        let e = error_of(&format!(
            "{MINIMAL}faults:\n  - rebalance: group\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.contains("for: 5s"), "{e}");
        let amqp = MINIMAL.replace(
            "kind: kafka",
            "kind: amqp, url: \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        );
        let e = error_of(&format!(
            "{amqp}faults:\n  - rebalance: group\n    for: 3s\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.contains("AMQP queue has no rebalances"), "{e}");
    }

    #[test]
    fn an_amqp_fault_needs_rabbitmq_and_takes_a_target() {
        let e = error_of(&format!(
            "{MINIMAL}faults:\n  - amqp: redeliver\n    when: {{ after: ack, nth: 2 }}\n"
        ));
        assert!(e.starts_with("p.yaml:8:"), "{e}");
        assert!(e.contains("this plan's broker is Kafka"), "{e}");
        let e = error_of(&format!(
            "{MINIMAL}faults:\n  - amqp: resend\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.contains("redeliver"), "{e}");
        let amqp = MINIMAL.replace(
            "kind: kafka",
            "kind: amqp, url: \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        );
        let plan = parse_plan(
            Path::new("p.yaml"),
            &format!(
                "{amqp}faults:\n  - amqp: redeliver\n    target: consumer\n    when: {{ after: ack, nth: 2 }}\n"
            ),
        )
        .unwrap();
        let fault = &plan.loaded.faults[0];
        assert_eq!(
            fault.to_string(),
            "amqp: redeliver on consumer when after: ack, nth: 2"
        );
    }

    #[test]
    fn amqp_blocked_needs_a_length_and_double_ack_takes_none() {
        let amqp = MINIMAL.replace(
            "kind: kafka",
            "kind: amqp, url: \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        );
        let e = error_of(&format!(
            "{amqp}faults:\n  - amqp: blocked\n    when: {{ after: ack, nth: 2 }}\n"
        ));
        assert!(e.contains("`amqp` needs a length: add `for: 5s`"), "{e}");
        let plan = parse_plan(
            Path::new("p.yaml"),
            &format!(
                "{amqp}faults:\n  - amqp: blocked\n    for: 3s\n    when: {{ after: ack, nth: 2 }}\n  - amqp: double-ack\n    when: {{ after: ack, nth: 4 }}\n"
            ),
        )
        .unwrap();
        let faults = &plan.loaded.faults;
        assert_eq!(
            faults[0].to_string(),
            "amqp: blocked on consumer for 3s when after: ack, nth: 2"
        );
        assert_eq!(
            faults[0].action.length(),
            Some(std::time::Duration::from_secs(3))
        );
        assert_eq!(
            faults[1].to_string(),
            "amqp: double-ack on consumer when after: ack, nth: 4"
        );
    }

    #[test]
    fn scale_is_plus_or_minus_one_and_grace_goes_with_a_stop() {
        let e = error_of(&format!(
            "{MINIMAL}faults:\n  - scale: 2\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.contains("`+1`"), "{e}");
        let e = error_of(&format!(
            "{MINIMAL}faults:\n  - scale: +1\n    grace: 2s\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.contains("`grace` goes with"), "{e}");
    }

    #[test]
    fn protocol_faults_parse_with_their_error_by_name_and_form() {
        let src = format!(
            "{MINIMAL}faults:\n  - commit_error: REBALANCE_IN_PROGRESS\n    form: dropped\n    when: {{ before: commit, nth: 5 }}\n  - commit_error: REQUEST_TIMED_OUT\n    form: ambiguous\n    target: consumer[0]\n    when: {{ before: commit, nth: 7 }}\n  - fetch_error: OFFSET_OUT_OF_RANGE\n    when: {{ at: 2s }}\n  - fetch_twice: consumer[0]\n    when: {{ after: effect, nth: 3 }}\n  - heartbeat_error: UNKNOWN_MEMBER_ID\n    when: {{ at: 4s }}\n"
        );
        let plan = parse_plan(Path::new("p.yaml"), &src).unwrap();
        let faults: Vec<String> = plan.loaded.faults.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            faults,
            [
                "commit_error: REBALANCE_IN_PROGRESS (dropped) on consumer when before: commit, nth: 5",
                "commit_error: REQUEST_TIMED_OUT (ambiguous) on consumer[0] when before: commit, nth: 7",
                "fetch_error: OFFSET_OUT_OF_RANGE on consumer when at: 2s",
                "fetch_twice: its records twice on consumer[0] when after: effect, nth: 3",
                "heartbeat_error: UNKNOWN_MEMBER_ID on consumer when at: 4s",
            ]
        );
        assert!(plan.loaded.faults.iter().all(|f| f.through_proxy()));
    }

    #[test]
    fn protocol_faults_name_a_known_error_a_form_and_need_kafka_and_the_proxy() {
        let e = error_of(&format!(
            "{MINIMAL}faults:\n  - commit_error: REBALANCING\n    form: dropped\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.starts_with("p.yaml:8:"), "{e}");
        assert!(e.contains("REBALANCE_IN_PROGRESS"), "{e}");
        let e = error_of(&format!(
            "{MINIMAL}faults:\n  - commit_error: REBALANCE_IN_PROGRESS\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.contains("form: dropped"), "{e}");
        let e = error_of(&format!(
            "{MINIMAL}faults:\n  - fetch_error: OFFSET_OUT_OF_RANGE\n    form: dropped\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.contains("`form` goes with `commit_error`"), "{e}");
        let no_proxy = MINIMAL.replace("{ command: [c] }", "{ command: [c], via_proxy: false }");
        let e = error_of(&format!(
            "{no_proxy}faults:\n  - fetch_error: NOT_LEADER_OR_FOLLOWER\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.contains("via_proxy"), "{e}");
        let amqp = MINIMAL.replace(
            "kind: kafka",
            "kind: amqp, url: \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        );
        let e = error_of(&format!(
            "{amqp}faults:\n  - fetch_error: NOT_LEADER_OR_FOLLOWER\n    when: {{ at: 1s }}\n"
        ));
        assert!(e.contains("needs a Kafka plan"), "{e}");
    }

    /// The `file:line` of every problem, in the order shown.
    fn lines_of(e: &PlanError) -> Vec<usize> {
        e.problems
            .iter()
            .map(|p| p.position.unwrap().line)
            .collect()
    }

    #[test]
    fn every_problem_of_a_plan_is_reported_at_once_in_file_order() {
        let src = "name: t
broker: { kind: kafka, queue: q }
workload: { messages: 10 }
consumer: { command: [c] }
effects: { sink: http, id: xml:/id }
expect: at-least-once
faults:
  - kill: consumer
    when: { after: effect }
limits: { settle: 5s, deadline: 5s }
";
        let e = parse_plan(Path::new("p.yaml"), src).unwrap_err();
        assert_eq!(lines_of(&e), [2, 5, 9, 10], "{e}");
        let shown = e.to_string();
        for (line, text) in [
            (2, "`queue` is for amqp"),
            (5, "json:/field"),
            (9, "nth"),
            (10, "deadline"),
        ] {
            assert!(shown.contains(&format!("p.yaml:{line}:")), "{shown}");
            assert!(shown.contains(text), "{shown}");
        }
        assert!(shown.ends_with("p.yaml: 4 problems"), "{shown}");
    }

    #[test]
    fn every_broken_rule_of_one_fault_is_reported() {
        let e = parse_plan(
            Path::new("p.yaml"),
            &format!(
                "{MINIMAL}faults:\n  - kill: consumer[3]\n    grace: 1s\n    target: consumer\n    when: {{ at: 1s, nth: 2, times: 3 }}\n"
            ),
        )
        .unwrap_err();
        let shown = e.to_string();
        for text in [
            "`consumer[3]` does not exist",
            "`grace` goes with",
            "`target` goes with",
            "`nth` counts events",
            "`every` and `times`",
        ] {
            assert!(shown.contains(text), "{text} in {shown}");
        }
        assert_eq!(lines_of(&e), [8, 9, 10, 11, 11], "{shown}");
    }

    #[test]
    fn a_partition_without_the_proxy_or_a_length_gets_both_fixes() {
        let no_proxy = MINIMAL.replace("{ command: [c] }", "{ command: [c], via_proxy: false }");
        let e = error_of(&format!(
            "{no_proxy}faults:\n  - partition: consumer\n    when: {{ before: deliver }}\n"
        ));
        for text in [
            "via_proxy",
            "for: 5s",
            "needs `nth`",
            "`before: deliver` is not supported",
        ] {
            assert!(e.contains(text), "{text} in {e}");
        }
    }

    #[test]
    fn values_a_run_cannot_hold_are_rejected_at_their_line() {
        let cases = [
            (
                "faults:\n  - kill: consumer\n    when: { every: 1s, times: 100000 }\n",
                9,
                "at most 10000 times",
            ),
            (
                "faults:\n  - kill: consumer\n    when: { random: 20000, within: 10s }\n",
                9,
                "at most 10000 times",
            ),
            (
                "faults:\n  - kill: consumer\n    when: { at: 30000000000s }\n",
                9,
                "at most 7 days",
            ),
            (
                "faults:\n  - scale: +1\n    when: { every: 1s, times: 300 }\n",
                8,
                "at most 256",
            ),
            ("limits: { deadline: 100years }\n", 7, "at most 7 days"),
            // What tests/plan_fuzz.rs finds with these bounds switched off: arming the trigger
            // asks for 64 GiB (the process aborts), `period * k` overflows, the deadline
            // added to the clock overflows.
            ("faults:\n  - kill: consumer\n    when: { every: 1ms, times: 9223372036854775807 }\n", 9, "at most 10000 times"),
            ("faults:\n  - kill: consumer\n    when: { every: 18446744073709551615s, times: 3 }\n", 9, "at most 7 days"),
            ("limits: { settle: 2s, deadline: 18446744073709551615s }\n", 7, "at most 7 days"),
        ];
        for (extra, line, text) in cases {
            let e = error_of(&format!("{MINIMAL}{extra}"));
            assert!(e.starts_with(&format!("p.yaml:{line}:")), "{e}");
            assert!(e.contains(text), "{e}");
        }
        let e = error_of(&MINIMAL.replace("{ command: [c] }", "{ command: [c], instances: 1000 }"));
        assert!(
            e.starts_with("p.yaml:4:") && e.contains("at most 256"),
            "{e}"
        );
        let e = error_of(&MINIMAL.replace("kind: kafka", "kind: kafka, partitions: 4294967297"));
        assert!(
            e.starts_with("p.yaml:2:") && e.contains("partitions"),
            "{e}"
        );
        let amqp = MINIMAL.replace("kind: kafka", "kind: amqp, url: amqp://h, prefetch: 65536");
        assert!(error_of(&amqp).contains("65535"));
    }

    #[test]
    fn incarnations_beyond_u32_saturate_instead_of_wrapping_to_zero() {
        let plan = parse_plan(
            Path::new("p.yaml"),
            &MINIMAL.replace(
                "{ command: [c] }",
                "{ command: [c], restart: { after: 1s, max: 4294967296 } }",
            ),
        )
        .unwrap();
        assert_eq!(plan.consumer.restart.max_incarnations(), u32::MAX);
    }

    #[test]
    fn the_line_shown_is_the_one_the_position_names_whatever_the_line_breaks() {
        // Found by tests/plan_fuzz.rs: serde counts U+2028 as a line break and `str::lines`
        // does not, so the line shown under the message was another one (or none).
        let e = parse_plan(Path::new("p.yaml"), "name: t # a\u{2028}broker: 5\n").unwrap_err();
        let p = &e.problems[0];
        assert_eq!(p.position.map(|p| p.line), Some(2), "{e}");
        assert_eq!(p.source_line.as_deref(), Some("broker: 5"), "{e}");
        // Lone `\r` breaks lines for both parsers.
        let src = MINIMAL
            .replace('\n', "\r")
            .replace("messages: 10", "messages: 0");
        let e = parse_plan(Path::new("p.yaml"), &src).unwrap_err();
        assert_eq!(
            e.problems[0].source_line.as_deref(),
            Some("workload: { messages: 0 }"),
            "{e}"
        );
    }

    #[test]
    fn workload_keys_parse() {
        let plan = parse_plan(
            Path::new("p.yaml"),
            &MINIMAL.replace("{ messages: 10 }", "{ messages: 10, keys: 4 }"),
        )
        .unwrap();
        assert_eq!(plan.workload.keys.map(|k| k.get()), Some(4));
    }

    #[test]
    fn poison_names_its_messages_one_way() {
        let with = |poison: &str| {
            MINIMAL.replace(
                "{ messages: 10 }",
                &format!("{{ messages: 10, poison: {poison} }}"),
            )
        };
        let plan = parse_plan(Path::new("p.yaml"), &with("{ every: 5 }")).unwrap();
        let poison = plan.workload.poison.expect("poison");
        assert!(poison.is_poison(5) && poison.is_poison(10) && !poison.is_poison(4));
        for (bad, text) in [
            ("{ nth: 2, every: 5 }", "not both"),
            ("{ payload: x }", "say which messages are poison"),
            ("{ nth: 11 }", "at most that"),
        ] {
            let e = error_of(&with(bad));
            assert!(e.starts_with("p.yaml:3:") && e.contains(text), "{e}");
        }
        let same = MINIMAL.replace(
            "{ messages: 10 }",
            "{ messages: 10, payload: x, poison: { nth: 1, payload: x } }",
        );
        assert!(error_of(&same).contains("the workload's own template"));
        let own = MINIMAL.replace(
            "kind: kafka",
            "kind: kafka, topic: 't-{run}', dead_letter: 't-{run}'",
        );
        assert!(error_of(&own).contains("the run's own topic or queue"));
    }
}
