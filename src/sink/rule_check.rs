//! Is the plan's effect ID rule wrong? When the first [`RULE_CHECK_EFFECTS`] effects a sink
//! receives all miss the rule and none is accepted, the oracle is blind: every message would
//! look lost. The run is then stopped (exit 2) with what this module found: the rule, a sample
//! body, and the rule that would have read it ([`suggest_rule`]: the run's own message ID
//! `{run}-{seq}` looked for in the sample).
//!
//! Invariant: the check only ever fires before the first accepted effect; one accepted effect
//! disarms it for the rest of the run (a rule that reads some effects is not wrong, and the
//! rejections it leaves are reported, not fatal).

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use crate::plan::Extractor;

/// How many effects, all missing the ID rule with none accepted, prove the rule wrong.
pub const RULE_CHECK_EFFECTS: u64 = 20;

/// Samples kept to look for a suggestion in.
const SAMPLES: usize = 3;

/// Most characters of the sample body shown.
const SAMPLE_CHARS: usize = 300;

/// The first effects all missed the ID rule: what the run tells the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongRule {
    /// The rule as the plan writes it (`json:/order_id`).
    pub rule: String,
    /// The sink that received the effects.
    pub sink: &'static str,
    /// Effects that missed it.
    pub rejected: u64,
    /// The start of the first effect's body.
    pub sample: String,
    /// A rule that reads the run's message ID from the samples, if one does.
    pub suggestion: Option<String>,
}

impl fmt::Display for WrongRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "effects.id: the rule `{}` found no message ID in any of the first {} effects the {} sink received (none was read), so the run was stopped: with no effect readable, nothing can be judged. A sample effect: {}",
            self.rule, self.rejected, self.sink, self.sample
        )?;
        match &self.suggestion {
            Some(rule) => write!(f, " — did you mean `{rule}`?"),
            None => write!(
                f,
                " — it holds no message ID of this run either: check what the consumer sends, and effects.sink / effects.id"
            ),
        }
    }
}

/// Counts the effects a sink read and missed until the first one is read.
#[derive(Clone, Default)]
pub struct RuleCheck(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// The run id, whose message IDs are `{run}-{seq}` (for the suggestion).
    run: OnceLock<String>,
    state: Mutex<State>,
    found: OnceLock<WrongRule>,
}

#[derive(Default)]
struct State {
    /// An effect was read: the check is off for good.
    disarmed: bool,
    rejected: u64,
    samples: Vec<(Vec<(String, String)>, String)>,
}

impl RuleCheck {
    /// Sets the run id the suggestion looks for (once; later calls are ignored).
    pub fn set_run(&self, run: &str) {
        let _ = self.0.run.set(run.to_owned());
    }

    /// An effect the rule read: the rule is not wrong.
    pub fn accepted(&self) {
        self.lock().disarmed = true;
    }

    /// An effect the rule found no ID in. Returns the finding when this one proves the rule
    /// wrong (once).
    pub fn missed(
        &self,
        rule: &Extractor,
        sink: &'static str,
        headers: &[(String, String)],
        body: &str,
    ) -> Option<WrongRule> {
        let mut state = self.lock();
        if state.disarmed || self.0.found.get().is_some() {
            return None;
        }
        state.rejected += 1;
        if state.samples.len() < SAMPLES {
            state.samples.push((headers.to_vec(), body.to_owned()));
        }
        if state.rejected < RULE_CHECK_EFFECTS {
            return None;
        }
        let run = self.0.run.get().map(String::as_str).unwrap_or_default();
        let written = rule_text(rule);
        let suggestion = state
            .samples
            .iter()
            .find_map(|(h, b)| suggest_rule(run, h, b))
            .filter(|s| *s != written);
        let first = state.samples.first().map(|(_, b)| b.as_str()).unwrap_or("");
        let mut sample: String = first.chars().take(SAMPLE_CHARS).collect();
        if sample.len() < first.len() {
            sample.push('…');
        }
        let found = WrongRule {
            rule: written,
            sink,
            rejected: state.rejected,
            sample,
            suggestion,
        };
        let _ = self.0.found.set(found.clone());
        Some(found)
    }

    /// The finding, once the rule was proven wrong.
    pub fn wrong_rule(&self) -> Option<WrongRule> {
        self.0.found.get().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The rule as a plan writes it.
pub fn rule_text(rule: &Extractor) -> String {
    match rule {
        Extractor::JsonPointer(p) => format!("json:{p}"),
        Extractor::Regex(re) => format!("regex:{}", re.as_str()),
        Extractor::Header(name) => format!("header:{name}"),
        Extractor::Body => "body".into(),
        Extractor::Key => "key".into(),
    }
}

/// A rule that reads a message ID of run `run` (`{run}-{seq}`) from this effect, checked by
/// applying it: a JSON pointer to a string that is the ID, a header that is the ID, the whole
/// body, or a regex built from the text just before the ID. `None` when the effect holds no
/// ID of the run, or no rule tried reads it whole.
pub fn suggest_rule(run: &str, headers: &[(String, String)], body: &str) -> Option<String> {
    if run.is_empty() {
        return None;
    }
    let reads = |rule: &str, id: &str| {
        Extractor::parse(rule)
            .ok()
            .and_then(|r| r.extract(headers, body))
            .is_some_and(|got| got == id)
    };
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some((pointer, id)) = json_pointer_to_id(run, &json) {
            let rule = format!("json:{pointer}");
            if reads(&rule, &id) {
                return Some(rule);
            }
        }
    }
    for (name, value) in headers {
        let value = value.trim();
        if is_run_id(run, value) && reads(&format!("header:{name}"), value) {
            return Some(format!("header:{}", name.to_ascii_lowercase()));
        }
    }
    let (start, id) = find_run_id(run, body)?;
    if body.trim() == id {
        return Some("body".into());
    }
    regex_candidates(&body[..start])
        .into_iter()
        .map(|prefix| format!("regex:{prefix}([\\w-]+)"))
        .find(|rule| reads(rule, id))
}

/// True when `s` is a message ID of run `run`: `{run}-{digits}`.
fn is_run_id(run: &str, s: &str) -> bool {
    s.strip_prefix(run)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

/// The first message ID of run `run` in `text`: (byte index, the ID).
fn find_run_id<'t>(run: &str, text: &'t str) -> Option<(usize, &'t str)> {
    let mut from = 0;
    while let Some(at) = text[from..].find(run) {
        let start = from + at;
        let rest = &text[start + run.len()..];
        if let Some(seq) = rest.strip_prefix('-') {
            let digits = seq.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                return Some((start, &text[start..start + run.len() + 1 + digits]));
            }
        }
        from = start + run.len();
    }
    None
}

/// The shallowest JSON pointer (breadth first) to a string that is a message ID of the run.
fn json_pointer_to_id(run: &str, root: &serde_json::Value) -> Option<(String, String)> {
    let mut queue = std::collections::VecDeque::from([(String::new(), root)]);
    while let Some((pointer, value)) = queue.pop_front() {
        match value {
            serde_json::Value::String(s) if is_run_id(run, s) => {
                return Some((pointer, s.clone()));
            }
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    let key = key.replace('~', "~0").replace('/', "~1");
                    queue.push_back((format!("{pointer}/{key}"), v));
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    queue.push_back((format!("{pointer}/{i}"), v));
                }
            }
            _ => {}
        }
    }
    None
}

/// Regex prefixes (escaped) that could anchor the ID, from the text before it on its line:
/// the word and the punctuation or spaces just before the ID (`id=`, `effect `, `ref":"`), and
/// the line start when nothing else is before it.
fn regex_candidates(before: &str) -> Vec<String> {
    /// Longest anchor suggested: a longer one would hardly hold for other effects.
    const MOST: usize = 24;
    let line = before.rsplit('\n').next().unwrap_or(before);
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let rest_start = line.trim_end_matches(|c: char| !is_word(c)).len();
    let word_start = line[..rest_start].trim_end_matches(is_word).len();
    let anchor = &line[word_start..];
    let mut out = Vec::new();
    if !anchor.trim().is_empty() && anchor.len() <= MOST {
        out.push(regex::escape(anchor));
    }
    if line.trim().is_empty() {
        out.push("^\\s*".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "shop-20240101T000000-0a1b";

    fn check(headers: &[(&str, &str)], body: &str, expect: Option<&str>) {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            suggest_rule(RUN, &headers, body).as_deref(),
            expect,
            "{body:?} {headers:?}"
        );
    }

    #[test]
    fn a_json_body_gets_the_pointer_to_the_string_that_is_the_id() {
        let id = format!("{RUN}-17");
        check(
            &[],
            &format!(r#"{{"id":"{id}","amount":42}}"#),
            Some("json:/id"),
        );
        check(
            &[],
            &format!(r#"{{"amount":42,"order":{{"ref":"{id}"}}}}"#),
            Some("json:/order/ref"),
        );
        check(
            &[],
            &format!(r#"{{"items":[{{"n":1}},{{"a/b":"{id}"}}]}}"#),
            Some("json:/items/1/a~1b"),
        );
        // A key of the workload is not a message ID.
        check(&[], &format!(r#"{{"k":"{RUN}-key3"}}"#), None);
    }

    #[test]
    fn a_string_that_only_contains_the_id_gets_a_regex_not_a_pointer() {
        let body = format!(r#"{{"note":"order {RUN}-5 paid"}}"#);
        check(&[], &body, Some("regex:order ([\\w-]+)"));
    }

    #[test]
    fn a_header_that_is_the_id_is_named() {
        let id = format!("{RUN}-3");
        check(
            &[("Content-Type", "text/plain"), ("X-Message-Id", &id)],
            "paid",
            Some("header:x-message-id"),
        );
    }

    #[test]
    fn a_body_that_is_the_id_reads_whole_and_text_gets_a_checked_regex() {
        check(&[], &format!("{RUN}-9\n"), Some("body"));
        check(
            &[],
            &format!("paid id={RUN}-9 ok"),
            Some("regex:id=([\\w-]+)"),
        );
        check(
            &[],
            &format!("effect {RUN}-9 ok"),
            Some("regex:effect ([\\w-]+)"),
        );
        check(&[], &format!("{RUN}-9 done"), Some("regex:^\\s*([\\w-]+)"));
        check(
            &[],
            &format!(r#"ref="{RUN}-9" paid"#),
            Some(r#"regex:ref="([\w-]+)"#),
        );
    }

    #[test]
    fn no_id_of_the_run_means_no_suggestion() {
        check(&[], r#"{"order_id":"other-run-1"}"#, None);
        check(&[], "nothing here", None);
        check(&[], &format!("{RUN}-"), None);
        assert_eq!(suggest_rule("", &[], "x-1"), None);
    }

    #[test]
    fn a_suggestion_is_only_made_when_it_reads_the_whole_id() {
        // `[\w-]+` would take `-retry` too: no regex reads exactly the ID.
        check(&[], &format!("id={RUN}-4-retry"), None);
    }

    #[test]
    fn the_rule_is_proven_wrong_only_by_misses_before_any_read_effect() {
        let rule = Extractor::parse("json:/order_id").unwrap();
        let body = format!(r#"{{"id":"{RUN}-1"}}"#);
        let check = RuleCheck::default();
        check.set_run(RUN);
        for _ in 1..RULE_CHECK_EFFECTS {
            assert_eq!(check.missed(&rule, "http", &[], &body), None);
        }
        let found = check
            .missed(&rule, "http", &[], &body)
            .expect("the 20th miss");
        assert_eq!(found.rule, "json:/order_id");
        assert_eq!(found.suggestion.as_deref(), Some("json:/id"));
        assert_eq!(found.rejected, RULE_CHECK_EFFECTS);
        let text = found.to_string();
        assert!(text.contains("`json:/order_id`"), "{text}");
        assert!(text.contains(&body), "{text}");
        assert!(text.contains("did you mean `json:/id`?"), "{text}");
        assert_eq!(check.wrong_rule(), Some(found));
        assert_eq!(check.missed(&rule, "http", &[], &body), None, "said once");

        let read_one = RuleCheck::default();
        read_one.accepted();
        for _ in 0..100 {
            assert_eq!(read_one.missed(&rule, "http", &[], &body), None);
        }
        assert_eq!(read_one.wrong_rule(), None);
    }

    #[test]
    fn rules_are_shown_as_the_plan_writes_them() {
        for spec in ["json:/a/b", "regex:id=(\\S+)", "header:X-Id", "body"] {
            assert_eq!(rule_text(&Extractor::parse(spec).unwrap()), spec);
        }
    }
}
