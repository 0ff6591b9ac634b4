//! Reading a plan file: parse, then validate, turning every problem into one [`PlanError`]
//! that names the file, line and column, says what is wrong and what to write instead.

use std::fmt;
use std::path::{Path, PathBuf};

use super::span::{Position, SpanMap};
use super::validate::{validate, Problem};
use super::Plan;

/// A plan the user must fix (exit code 2).
#[derive(Debug)]
pub struct PlanError {
    /// The plan file.
    pub file: PathBuf,
    /// Where the problem is, when known.
    pub position: Option<Position>,
    /// What is wrong, and how to fix it.
    pub message: String,
    /// The offending source line, for display.
    pub source_line: Option<String>,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                p.line,
                p.col,
                self.message
            )?,
            None => write!(f, "{}: {}", self.file.display(), self.message)?,
        }
        if let (Some(p), Some(line)) = (self.position, &self.source_line) {
            write!(
                f,
                "\n  {:>4} | {line}\n       | {:>width$}^",
                p.line,
                "",
                width = p.col - 1
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanError {}

/// Reads, parses and validates the plan at `path` (see [`parse_plan`]).
pub fn load_plan(path: &Path) -> Result<Plan, PlanError> {
    let source = std::fs::read_to_string(path).map_err(|e| PlanError {
        file: path.to_owned(),
        position: None,
        message: format!("cannot read the plan ({e}); check the path"),
        source_line: None,
    })?;
    parse_plan(path, &source)
}

/// Parses and validates plan text, and fills [`Plan::loaded`]; `file` is only used in messages.
pub fn parse_plan(file: &Path, source: &str) -> Result<Plan, PlanError> {
    let at = |position: Option<Position>, message: String| PlanError {
        file: file.to_owned(),
        position,
        source_line: position.and_then(|p| source.lines().nth(p.line - 1).map(str::to_owned)),
        message,
    };
    let mut plan: Plan = serde_yaml::from_str(source).map_err(|e| {
        let position = e.location().map(|l| Position {
            line: l.line(),
            col: l.column(),
        });
        at(position, explain_serde_error(&e.to_string()))
    })?;
    plan.loaded = validate(&plan).map_err(|Problem { path, message }| {
        let position = SpanMap::build(source).find(&path);
        at(position, format!("{path}: {message}"))
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
    fn workload_keys_parse() {
        let plan = parse_plan(
            Path::new("p.yaml"),
            &MINIMAL.replace("{ messages: 10 }", "{ messages: 10, keys: 4 }"),
        )
        .unwrap();
        assert_eq!(plan.workload.keys.map(|k| k.get()), Some(4));
    }
}
