//! Bad input, measured: every shipped plan (`plans/*.yaml`), mutated the ways a hurried user or
//! a broken editor would (lines deleted, duplicated, swapped or re-indented; a value swapped
//! for another type or an extreme one; keys renamed or unknown ones inserted; the text cut
//! short; characters flipped; unicode dropped in), either loads or is refused with messages
//! that each start with `file:line:col` (or name the file when serde gives no position): never
//! a panic, never a hang. A plan that loads is also put through what a run does first with it
//! (instance capacity, fault descriptions, triggers armed, the deadline and connect timeout
//! added to the clock, the produce pacing, the resolved plan written back as YAML).
//!
//! Seeded and reproducible: each case is made from (`PLAN_FUZZ_SEED`, its index) alone.
//! `PLAN_FUZZ_CASES` (default 10000) cases go through the library's loader, each with a
//! deadline; `PLAN_FUZZ_CLI_CASES` (default 200) through `exactly validate`. A failure names
//! the case; `PLAN_FUZZ_ONLY=N` runs case N alone and prints its text.

mod common;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, LazyLock};
use std::time::{Duration, Instant};

use exactly::nemesis::{self, trigger::TriggerState};
use exactly::plan::{parse_plan, Plan, PlanError, Rate};
use exactly::workload;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use regex::Regex;

/// The default seed: any other finds its own cases; this one is what the README's figures used.
const DEFAULT_SEED: u64 = 0x5eed_0012;
/// One case through the library: far above what any case takes (a few ms in debug).
const CASE_DEADLINE: Duration = Duration::from_secs(5);
/// One case through the binary: process start and a plan check, in debug, on a busy machine.
const CLI_DEADLINE: Duration = Duration::from_secs(20);
/// The file name the library cases are loaded as (only used in messages).
const FUZZ_FILE: &str = "fuzz/plan.yaml";

/// A whole number from the environment, or `default`.
fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: write a whole number")),
        Err(_) => default,
    }
}

/// The shipped plans, by name, sorted: the seeds every case starts from.
fn seed_plans() -> Vec<(String, String)> {
    let mut plans: Vec<(String, String)> = std::fs::read_dir(common::root().join("plans"))
        .expect("plans/ exists")
        .map(|e| e.expect("a readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("a readable plan"))
        })
        .collect();
    plans.sort();
    assert!(plans.len() >= 10, "plans/*.yaml are the fuzz's seeds");
    plans
}

// ---------------------------------------------------------------------------------------------
// Values: what a field may be replaced with.

/// Plan keys, for renaming a key or inserting a known one where it does not belong.
const KEYS: &[&str] = &[
    "name",
    "description",
    "broker",
    "workload",
    "consumer",
    "effects",
    "faults",
    "expect",
    "limits",
    "seed",
    "kind",
    "bootstrap",
    "topic",
    "partitions",
    "replication",
    "group",
    "create",
    "config",
    "url",
    "queue",
    "exchange",
    "routing_key",
    "prefetch",
    "connect_timeout",
    "messages",
    "rate",
    "during",
    "payload",
    "keys",
    "command",
    "instances",
    "restart",
    "env",
    "via_proxy",
    "cwd",
    "after",
    "max",
    "sink",
    "id",
    "idempotency_key",
    "kill",
    "terminate",
    "pause",
    "partition",
    "latency",
    "sever",
    "target",
    "rebalance",
    "scale",
    "for",
    "grace",
    "when",
    "at",
    "before",
    "on",
    "nth",
    "every",
    "times",
    "random",
    "within",
    "settle",
    "deadline",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "3",
    "+1",
    "255",
    "256",
    "257",
    "10000",
    "10001",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1e99",
    "1e-300",
    "5e-324",
    "0.5",
    "-0.0",
    ".inf",
    "-.inf",
    ".nan",
    "0x10",
    "0o7",
    "1_000",
    "007",
];

const UNITS: &[&str] = &[
    "ns", "us", "µs", "ms", "s", "sec", "m", "min", "h", "d", "w", "M", "y", "years", "parsecs", "",
];

const DURATIONS: &[&str] = &[
    "0s",
    "-1s",
    "1ns",
    "1e99s",
    "1.5s",
    "1h 30m",
    "2s 2s",
    "18446744073709551615s",
    "18446744073709551616s",
    "584942417355y",
    "99999999999999999999999h",
    "7days",
    "8days",
    "604800s",
    "604801s",
    "soon",
    "∞",
];

const TARGETS: &[&str] = &[
    "consumer",
    "consumer[0]",
    "consumer[1]",
    "consumer[255]",
    "consumer[256]",
    "consumer[4294967295]",
    "consumer[4294967296]",
    "consumer[-1]",
    "consumer[]",
    "consumer[0",
    "producer",
];

/// The events a trigger counts, then one it does not know.
const EVENTS: &[&str] = &[
    "effect",
    "commit",
    "ack",
    "deliver",
    "rebalance",
    "produced",
    "crash",
];

const ID_RULES: &[&str] = &[
    "json:/id",
    "json:/order_id",
    "json:id",
    "json:",
    "json:/a/~2",
    "regex:(",
    "regex:(a+)+$",
    "regex:id=(\\S+)",
    "regex:",
    "header:",
    "header:X-Id",
    "body",
    "xml:/a",
];

const WORDS: &[&str] = &[
    "effect",
    "commit",
    "ack",
    "kafka",
    "amqp",
    "http",
    "file",
    "stdout",
    "at-least-once",
    "exactly-once",
    "never",
    "group",
    "unlimited",
    "json:/id",
    "regex:(",
    "header:X-Id",
    "body",
];

const RATES: &[&str] = &[
    "0/s",
    "-5/s",
    "1/s",
    "60/s",
    "1e308/s",
    "1e-300/s",
    "5e-324/s",
    "0.0000001/s",
    "NaN/s",
    "inf/s",
    "/s",
    "1/m",
];

const YAML: &[&str] = &[
    "~",
    "null",
    "true",
    "false",
    "yes",
    "no",
    "[]",
    "{}",
    "\"\"",
    "''",
    "[a, b]",
    "{ a: 1 }",
    "[[[[[[[[[[]]]]]]]]]]",
    "&a 1",
    "*a",
    "*nope",
    "!!binary aGk=",
    "!!str 1",
    "!!int x",
    "!custom x",
    "? x",
    "|",
    ">",
    "- x",
    "%YAML 1.2",
    "---",
    "...",
    "\"\\u0000\"",
    "'a''b'",
    "\"{id}\"",
    "\"{run}\"",
    "[\"\"]",
    "[\"  \"]",
    "<<: *a",
];

const UNICODE: &[&str] = &[
    "ünïcødé",
    "💥",
    "\u{202e}evil",
    "日本語",
    "\u{feff}",
    "\u{0}",
    "\t",
    "\r",
    "\r\n",
    "\u{85}",
    "\u{2028}",
    "é",
    "\u{1F600}\u{200D}\u{1F4BB}",
    "ǅ",
];

/// Durations serde reads, some of which a plan's rules refuse.
const PLAUSIBLE_DURATIONS: &[&str] = &[
    "0s", "1ms", "500ms", "2s", "90s", "10m", "7days", "8days", "604801s", "1000000h",
];

/// Counts serde reads (or refuses as below 1), some of which a plan's rules refuse.
const PLAUSIBLE_NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "40",
    "256",
    "257",
    "10000",
    "10001",
    "65535",
    "65536",
    "4294967296",
    "9223372036854775807",
];

/// How a case damages its plan.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Anything: the parser refuses most of these.
    Wild,
    /// Values of the right type and faults from the grammar: the plan's rules judge these.
    Plausible,
}

/// A replacement value for `key`: in [`Mode::Wild`] usually of a type that fits, often of
/// another; in [`Mode::Plausible`] of the type that fits, when `key` has one.
fn value(rng: &mut ChaCha8Rng, key: &str, mode: Mode) -> String {
    let plausible = mode == Mode::Plausible;
    let fitting: Option<&[&str]> = match key {
        "for" | "grace" | "at" | "every" | "within" | "settle" | "deadline" | "latency"
        | "connect_timeout"
            if plausible =>
        {
            Some(PLAUSIBLE_DURATIONS)
        }
        "for" | "grace" | "at" | "every" | "within" | "settle" | "deadline" | "latency"
        | "connect_timeout" => Some(DURATIONS),
        "messages" | "nth" | "times" | "random" | "instances" | "partitions" | "replication"
        | "prefetch" | "keys" | "max" | "seed"
            if plausible =>
        {
            Some(PLAUSIBLE_NUMBERS)
        }
        "messages" | "nth" | "times" | "random" | "instances" | "partitions" | "replication"
        | "prefetch" | "keys" | "max" | "seed" => Some(NUMBERS),
        "kill" | "terminate" | "pause" | "partition" | "sever" | "target" if plausible => Some(&[
            "consumer",
            "consumer[0]",
            "consumer[1]",
            "consumer[4294967295]",
        ]),
        "kill" | "terminate" | "pause" | "partition" | "sever" | "target" => Some(TARGETS),
        "rate" => Some(RATES),
        "before" | "during" | "on" if plausible => Some(&EVENTS[..6]),
        "before" | "during" | "on" => Some(EVENTS),
        // `after` is an event in a trigger and a duration in `restart`.
        "after" => Some(match (plausible, rng.random_bool(0.5)) {
            (true, true) => &EVENTS[..6],
            (false, true) => EVENTS,
            (true, false) => PLAUSIBLE_DURATIONS,
            (false, false) => DURATIONS,
        }),
        "kind" => Some(&["kafka", "amqp", "rabbitmq"]),
        "sink" => Some(&["http", "file", "stdout", "kafka"]),
        "expect" => Some(&["at-least-once", "at-most-once", "exactly-once", "maybe"]),
        "id" | "idempotency_key" => Some(ID_RULES),
        "rebalance" => Some(&["group", "everyone", "1"]),
        "scale" => Some(&["+1", "-1", "0", "2", "-2", "2147483648"]),
        "via_proxy" | "create" => Some(&["true", "false"]),
        _ => None,
    };
    match (fitting, rng.random_range(0..10)) {
        (Some(pool), 0..=5) => pool.choose(rng).unwrap().to_string(),
        (Some(pool), _) if plausible => pool.choose(rng).unwrap().to_string(),
        (None, _) if plausible => ["ünïcødé", "日本語", "💥", "{run}", "{nope}", "x"]
            .choose(rng)
            .unwrap()
            .repeat(rng.random_range(1..=2000)),
        (_, 0..=1) => format!(
            "{}{}",
            NUMBERS.choose(rng).unwrap().trim_start_matches('-'),
            UNITS.choose(rng).unwrap()
        ),
        (_, 2) => NUMBERS.choose(rng).unwrap().to_string(),
        (_, 3) => DURATIONS.choose(rng).unwrap().to_string(),
        (_, 4) => TARGETS.choose(rng).unwrap().to_string(),
        (_, 5) => RATES.choose(rng).unwrap().to_string(),
        (_, 6..=7) => WORDS.choose(rng).unwrap().to_string(),
        (_, 8) => UNICODE.choose(rng).unwrap().to_string(),
        (_, _) => match rng.random_range(0..4) {
            0 => "x".repeat(10_000),
            1 => format!("{}", rng.random::<i64>()),
            _ => YAML.choose(rng).unwrap().to_string(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// One way to damage a plan.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    DeleteLine,
    DuplicateLine,
    SwapLines,
    ReplaceValue,
    RenameKey,
    InsertKey,
    InsertForeignLine,
    InsertFault,
    Reindent,
    Truncate,
    FlipChar,
    InsertUnicode,
}

/// Value replacement weighs most: it is what reaches the rules past the parser.
const MUTATIONS: &[Mutation] = &[
    Mutation::DeleteLine,
    Mutation::DuplicateLine,
    Mutation::SwapLines,
    Mutation::ReplaceValue,
    Mutation::ReplaceValue,
    Mutation::ReplaceValue,
    Mutation::ReplaceValue,
    Mutation::RenameKey,
    Mutation::InsertKey,
    Mutation::InsertKey,
    Mutation::InsertForeignLine,
    Mutation::InsertFault,
    Mutation::InsertFault,
    Mutation::InsertFault,
    Mutation::Reindent,
    Mutation::Truncate,
    Mutation::FlipChar,
    Mutation::InsertUnicode,
];

/// The mutations of [`Mode::Plausible`]: what keeps a plan parseable, mostly.
const PLAUSIBLE_MUTATIONS: &[Mutation] = &[
    Mutation::ReplaceValue,
    Mutation::ReplaceValue,
    Mutation::InsertFault,
    Mutation::InsertFault,
    Mutation::DeleteLine,
];

/// What the mutations work with: the `key: value` pattern and the other plans.
struct Mutator {
    pair: Regex,
    others: Vec<String>,
}

impl Mutator {
    fn new(plans: &[(String, String)]) -> Mutator {
        Mutator {
            // A key and its value, in block or flow style; the value stops at a flow delimiter.
            pair: Regex::new(r"([A-Za-z_]+):[ \t]+([^\s,{}\[\]#][^,{}\[\]\n#]*)").unwrap(),
            others: plans.iter().map(|(_, text)| text.clone()).collect(),
        }
    }

    fn apply(&self, m: Mutation, mode: Mode, text: &str, rng: &mut ChaCha8Rng) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        let line = rng.random_range(0..n);
        match m {
            Mutation::DeleteLine => {
                lines.remove(line);
            }
            Mutation::DuplicateLine => lines.insert(line, lines[line].clone()),
            Mutation::SwapLines => lines.swap(line, rng.random_range(0..n)),
            Mutation::ReplaceValue => return self.replace_value(text, mode, rng),
            Mutation::RenameKey => return self.rename_key(text, rng),
            Mutation::InsertKey => {
                let key = if rng.random_bool(0.7) {
                    KEYS.choose(rng).unwrap().to_string()
                } else {
                    format!("bogus_{}", rng.random_range(0..100))
                };
                let v = value(rng, &key, mode);
                let target = &lines[line];
                if let (true, Some(i)) = (rng.random_bool(0.4), target.find("{ ")) {
                    lines[line] = format!("{}{{ {key}: {v}, {}", &target[..i], &target[i + 2..]);
                } else {
                    let indent: String = target
                        .chars()
                        .take_while(|c| *c == ' ' || *c == '-')
                        .map(|_| ' ')
                        .collect();
                    lines.insert(line, format!("{indent}{key}: {v}"));
                }
            }
            Mutation::InsertForeignLine => {
                let other: Vec<&str> = self.others.choose(rng).unwrap().lines().collect();
                lines.insert(line, other.choose(rng).unwrap_or(&"").to_string());
            }
            Mutation::InsertFault => {
                let block = fault_block(rng, mode);
                match lines.iter().position(|l| l.starts_with("faults:")) {
                    Some(at) => lines.insert(at + 1, block),
                    None => lines.push(format!("faults:\n{block}")),
                }
            }
            Mutation::Reindent => {
                if rng.random_bool(0.5) {
                    lines[line].insert_str(0, "  ");
                } else {
                    lines[line] = lines[line]
                        .strip_prefix("  ")
                        .unwrap_or(&lines[line])
                        .to_owned();
                }
            }
            Mutation::Truncate => return cut(text, rng),
            Mutation::FlipChar => return flip(text, rng),
            Mutation::InsertUnicode => {
                let at = char_boundary(text, rng);
                return format!(
                    "{}{}{}",
                    &text[..at],
                    UNICODE.choose(rng).unwrap(),
                    &text[at..]
                );
            }
        }
        lines.join("\n") + "\n"
    }

    fn replace_value(&self, text: &str, mode: Mode, rng: &mut ChaCha8Rng) -> String {
        let found: Vec<_> = self.pair.captures_iter(text).collect();
        let Some(caps) = found.choose(rng) else {
            return text.to_owned();
        };
        let (key, v) = (caps.get(1).unwrap().as_str(), caps.get(2).unwrap());
        format!(
            "{}{}{}",
            &text[..v.start()],
            value(rng, key, mode),
            &text[v.end()..]
        )
    }

    fn rename_key(&self, text: &str, rng: &mut ChaCha8Rng) -> String {
        let found: Vec<_> = self.pair.captures_iter(text).collect();
        let Some(caps) = found.choose(rng) else {
            return text.to_owned();
        };
        let k = caps.get(1).unwrap();
        let mut key = if rng.random_bool(0.6) {
            KEYS.choose(rng).unwrap().to_string()
        } else {
            k.as_str().to_owned()
        };
        if rng.random_bool(0.4) && key.len() > 1 {
            // A typo: one letter dropped.
            key.remove(rng.random_range(0..key.len()));
        }
        format!("{}{key}{}", &text[..k.start()], &text[k.end()..])
    }
}

/// A fault from the plan grammar, mostly well-formed, with parameters and trigger fields
/// picked at random (so that the fault rules, not the parser, judge it).
fn fault_block(rng: &mut ChaCha8Rng, mode: Mode) -> String {
    const ACTIONS: &[&str] = &[
        "kill",
        "terminate",
        "pause",
        "partition",
        "latency",
        "sever",
        "rebalance",
        "scale",
    ];
    let mut fields: Vec<String> = Vec::new();
    for _ in 0..rng.random_range(1..=2) {
        let action = *ACTIONS.choose(rng).unwrap();
        fields.push(format!("{action}: {}", value(rng, action, mode)));
    }
    for param in ["for", "grace", "target"] {
        if rng.random_bool(0.3) {
            fields.push(format!("{param}: {}", value(rng, param, mode)));
        }
    }
    let mut when: Vec<String> = Vec::new();
    const FORMS: &[&str] = &["at", "after", "before", "during", "every", "random"];
    for _ in 0..rng.random_range(0..=2) {
        let form = *FORMS.choose(rng).unwrap();
        let v = match form {
            "after" | "before" | "during" => value(rng, "on", mode),
            "random" => value(rng, "times", mode),
            _ => value(rng, form, mode),
        };
        when.push(format!("{form}: {v}"));
    }
    for field in ["nth", "times", "within"] {
        if rng.random_bool(0.4) {
            when.push(format!("{field}: {}", value(rng, field, mode)));
        }
    }
    if mode == Mode::Plausible {
        // serde refuses a key written twice; the rules are what this mode is for.
        dedupe_keys(&mut fields);
        dedupe_keys(&mut when);
    }
    fields.push(format!("when: {{ {} }}", when.join(", ")));
    let mut block = String::new();
    for (i, field) in fields.iter().enumerate() {
        block.push_str(if i == 0 { "  - " } else { "    " });
        block.push_str(field);
        block.push('\n');
    }
    block.trim_end().to_owned()
}

/// Keeps the first `key: value` of each key.
fn dedupe_keys(fields: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    fields.retain(|f| seen.insert(f.split(':').next().unwrap_or("").to_owned()));
}

/// A random char boundary of `text` (0 and `len` included).
fn char_boundary(text: &str, rng: &mut ChaCha8Rng) -> usize {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    *boundaries.choose(rng).unwrap()
}

fn cut(text: &str, rng: &mut ChaCha8Rng) -> String {
    text[..char_boundary(text, rng)].to_owned()
}

fn flip(text: &str, rng: &mut ChaCha8Rng) -> String {
    const CHARS: &[char] = &[
        ':', '{', '}', '[', ']', '-', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', ',',
        '?', ' ', '\t', '\n', '\r', '\0', 'é', '💥', '\u{feff}', 'x', '0', '9',
    ];
    let at = char_boundary(text, rng);
    let rest = &text[at..];
    let skip = rest.chars().next().map_or(0, char::len_utf8);
    let with = if rng.random_bool(0.2) {
        String::new()
    } else {
        CHARS.choose(rng).unwrap().to_string()
    };
    format!("{}{with}{}", &text[..at], &rest[skip..])
}

/// Case `index` of `seed`: a shipped plan and one to five mutations (wild ones, or in half the
/// cases plausible ones), from those two numbers alone. Returns the seed plan's name and the text.
fn case(plans: &[(String, String)], mutator: &Mutator, seed: u64, index: u64) -> (String, String) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (name, mut text) = plans.choose(&mut rng).unwrap().clone();
    let (mode, mutations) = if rng.random_bool(0.5) {
        (Mode::Plausible, PLAUSIBLE_MUTATIONS)
    } else {
        (Mode::Wild, MUTATIONS)
    };
    let rounds = match rng.random_range(0..10) {
        0..=4 => 1,
        5..=7 => 2,
        _ => rng.random_range(3..=5),
    };
    for _ in 0..rounds {
        let m = *mutations.choose(&mut rng).unwrap();
        text = mutator.apply(m, mode, &text, &mut rng);
    }
    (name, text)
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// What became of one case.
#[derive(Debug)]
enum Outcome {
    Loaded,
    /// Refused: how many problems, and whether serde parsed it (the plan's rules refused it).
    Refused {
        problems: usize,
        by_rules: bool,
    },
    Failed(String),
}

/// Every message starts with the file and, when known, a position inside the text.
fn located(e: &PlanError, text: &str) -> Result<(), String> {
    if e.problems.is_empty() {
        return Err("refused with no problem".into());
    }
    // Lines as serde's parser counts them (the most breaks of the two parsers; see
    // plan::span::LineBreaks), `\r\n` once.
    let lines = 1 + text
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count();
    for p in &e.problems {
        if let Some(at) = p.position {
            // libyaml puts the end of a text without a final break on the line after it.
            if at.line == 0 || at.line > lines + 1 || at.col == 0 {
                return Err(format!("position {at:?} outside the text ({lines} lines)"));
            }
        }
        if p.message.trim().is_empty() {
            return Err("a problem with an empty message".into());
        }
    }
    let shown = e.to_string();
    let first = shown.lines().next().unwrap_or("");
    static PREFIX: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^fuzz/plan\.yaml(:[1-9][0-9]*:[1-9][0-9]*)?: \S").unwrap());
    if !PREFIX.is_match(first) {
        return Err(format!("message not located: {first:?}"));
    }
    Ok(())
}

/// What a run does first with a loaded plan, none of which may panic.
fn exercise(plan: &Plan) {
    let _ = plan.instance_capacity();
    let _ = plan.consumer.restart.max_incarnations();
    let _ = nemesis::hold_points(&plan.loaded.faults);
    for f in &plan.loaded.faults {
        let _ = f.to_string();
        let _ = TriggerState::new(&f.when, 7, None);
    }
    let now = Instant::now();
    let _ = now + plan.limits.deadline;
    let _ = now + plan.broker.connect_timeout;
    let messages = plan.workload.messages.get();
    // The pace of the first messages, and of the last one a run can reach by its deadline.
    let last = match plan.workload.rate {
        Rate::Unlimited => messages,
        Rate::PerSecond(r) => (r * plan.limits.deadline.as_secs_f64()).min(messages as f64) as u64,
    };
    for sent in [0, 1, 2, last] {
        let _ = workload::delay_before(plan.workload.rate, sent, Duration::ZERO);
    }
    let keys = plan.workload.keys.map(|k| k.get());
    let _ = workload::message("run", messages, keys, &plan.workload.payload);
    let _ = serde_yaml::to_string(plan);
}

fn check(text: &str) -> Outcome {
    let file = Path::new(FUZZ_FILE);
    let loaded = catch_unwind(AssertUnwindSafe(|| {
        let result = parse_plan(file, text);
        if let Ok(plan) = &result {
            exercise(plan);
        }
        result
    }));
    match loaded {
        Err(panic) => Outcome::Failed(format!("panicked: {}", panic_text(&panic))),
        Ok(Ok(_)) => Outcome::Loaded,
        Ok(Err(e)) => match located(&e, text) {
            Ok(()) => Outcome::Refused {
                problems: e.problems.len(),
                by_rules: serde_yaml::from_str::<Plan>(text).is_ok(),
            },
            Err(why) => Outcome::Failed(why),
        },
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `texts` through [`check`] on a worker thread, each within [`CASE_DEADLINE`]: a case
/// that takes longer fails the test by its index (the worker is left behind).
///
/// A case that aborts the process (an allocation the system refuses is not a panic, and takes
/// the test binary down) cannot be reported by this test: each case's index is written to a
/// file first, named on stderr once, to be read after such a death.
fn check_all(cases: impl Iterator<Item = (u64, String, String)>) -> Tally {
    let marker = std::env::temp_dir().join(format!("plan-fuzz-case-{}", std::process::id()));
    // Straight to stderr, past the test harness's capture, which an abort would lose.
    let _ = writeln!(
        std::io::stderr(),
        "plan fuzz: the case in progress is written to {} (if this test dies by a signal, that is the case)",
        marker.display()
    );
    let (to_worker, work) = mpsc::channel::<(u64, String)>();
    let (answer, from_worker) = mpsc::channel::<(Outcome, Duration)>();
    let in_progress = marker.clone();
    std::thread::spawn(move || {
        for (index, text) in work {
            let _ = std::fs::write(&in_progress, index.to_string());
            let started = Instant::now();
            let outcome = check(&text);
            if answer.send((outcome, started.elapsed())).is_err() {
                return;
            }
        }
    });
    let mut tally = Tally::default();
    for (index, seed_plan, text) in cases {
        to_worker
            .send((index, text.clone()))
            .expect("the worker is alive");
        let (outcome, took) = match from_worker.recv_timeout(CASE_DEADLINE) {
            Ok(answer) => answer,
            Err(_) => (
                Outcome::Failed(format!("no answer within {CASE_DEADLINE:?} (a hang)")),
                CASE_DEADLINE,
            ),
        };
        let hung = took >= CASE_DEADLINE;
        tally.record(index, &seed_plan, &text, outcome, took);
        if hung {
            break;
        }
    }
    let _ = std::fs::remove_file(&marker);
    tally
}

/// What the cases came to.
#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    loaded: u64,
    refused_by_parser: u64,
    refused_by_rules: u64,
    refused_several: u64,
    slowest: Duration,
    failures: Vec<String>,
}

impl Tally {
    fn record(
        &mut self,
        index: u64,
        seed_plan: &str,
        text: &str,
        outcome: Outcome,
        took: Duration,
    ) {
        self.cases += 1;
        self.slowest = self.slowest.max(took);
        match outcome {
            Outcome::Loaded => self.loaded += 1,
            Outcome::Refused { problems, by_rules } => {
                if by_rules {
                    self.refused_by_rules += 1;
                } else {
                    self.refused_by_parser += 1;
                }
                if problems > 1 {
                    self.refused_several += 1;
                }
            }
            Outcome::Failed(why) => self.failures.push(format!(
                "case {index} (from {seed_plan}): {why}\n--- text ---\n{}\n------------",
                text.chars().take(3000).collect::<String>()
            )),
        }
    }
}

#[test]
fn mutated_plans_load_or_are_refused_with_located_messages_never_a_panic_or_a_hang() {
    let plans = seed_plans();
    let mutator = Mutator::new(&plans);
    let seed = knob("PLAN_FUZZ_SEED", DEFAULT_SEED);
    let indices: Vec<u64> = match std::env::var("PLAN_FUZZ_ONLY") {
        Ok(i) => vec![i.parse().expect("PLAN_FUZZ_ONLY is a case index")],
        Err(_) => (0..knob("PLAN_FUZZ_CASES", 10_000)).collect(),
    };
    if let [only] = indices.as_slice() {
        println!("{}", case(&plans, &mutator, seed, *only).1);
    }
    let started = Instant::now();
    let tally = check_all(indices.iter().map(|&i| {
        let (name, text) = case(&plans, &mutator, seed, i);
        (i, name, text)
    }));
    println!(
        "plan fuzz (seed {seed:#x}): {} cases in {:.1?}: {} loaded, {} refused by the parser, {} by the plan's rules ({} with several problems); slowest case {:.1?}; {} failed",
        tally.cases,
        started.elapsed(),
        tally.loaded,
        tally.refused_by_parser,
        tally.refused_by_rules,
        tally.refused_several,
        tally.slowest,
        tally.failures.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{} of {} cases failed:\n{}",
        tally.failures.len(),
        tally.cases,
        tally
            .failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `exactly validate FILE` within [`CLI_DEADLINE`]: the exit code and stderr, or why not.
fn validate_cli(plan: &Path) -> Result<(i32, String, String), String> {
    let mut child = Command::new(common::exactly_bin())
        .args(["validate", plan.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start exactly: {e}"))?;
    let started = Instant::now();
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        if started.elapsed() > CLI_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no exit within {CLI_DEADLINE:?} (a hang)"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    ))
}

#[test]
fn mutated_plans_through_exactly_validate_exit_0_or_2_with_located_messages() {
    let plans = seed_plans();
    let mutator = Mutator::new(&plans);
    // Another stream than the library's: the same checks on other cases.
    let seed = knob("PLAN_FUZZ_SEED", DEFAULT_SEED) ^ 0xc11;
    let cases = knob("PLAN_FUZZ_CLI_CASES", 200);
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("plan.yaml");
    let prefix = format!("exactly: error: {}", file.display());
    let started = Instant::now();
    let (mut ok, mut refused, mut failures) = (0, 0, Vec::new());
    for index in 0..cases {
        let (name, text) = case(&plans, &mutator, seed, index);
        std::fs::write(&file, &text).unwrap();
        let verdict = match validate_cli(&file) {
            Err(why) => Err(why),
            Ok((0, stdout, _)) if stdout.contains(": ok") => Ok(&mut ok),
            Ok((2, _, stderr))
                if stderr.starts_with(&format!("{prefix}:")) && !stderr.contains("panicked") =>
            {
                Ok(&mut refused)
            }
            Ok((code, stdout, stderr)) => Err(format!("exit {code}: {stdout}{stderr}")),
        };
        match verdict {
            Ok(count) => *count += 1,
            Err(why) => failures.push(format!("case {index} (from {name}): {why}\n{text}")),
        }
    }
    println!(
        "plan fuzz through the binary: {cases} cases in {:.1?}: {ok} valid, {refused} refused, {} failed",
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{}",
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
