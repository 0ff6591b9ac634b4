//! The seeded soak (issue 12): random plans from a small grammar, run one after another against
//! both real brokers, each judged against the verdict class its consumer's semantics allows.
//!
//! A consumer that commits (acks) after its effect may duplicate but never lose; one that
//! commits before may lose but never duplicate; one with an idempotency key may do neither.
//! INCONCLUSIVE is allowed everywhere (a fault that hit nothing is not a finding). A run outside
//! its class is a **mismatch** (a false verdict, or a real bug in the example); a run that ends
//! with exit 2 or 4, a signal or no report.json is a **harness error**. Either fails the test and
//! keeps the run folder under `target/soak/`.
//!
//! Knobs: `SOAK_MINUTES` (run plans until that much time has passed; the README figures come
//! from `SOAK_MINUTES=30`), else `SOAK_RUNS` plans (default 4: CI's seeded slice);
//! `SOAK_SEED` (default 0x50a4). Peak RSS is the largest process this test waited for
//! (`getrusage(RUSAGE_CHILDREN)`: the harness, or a consumer it waited for).

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a consumer's semantics allows.
#[derive(Clone, Copy, Debug)]
enum Class {
    /// At-least-once: never LOST.
    MayDuplicate,
    /// At-most-once: never DUPLICATED.
    MayLose,
    /// Exactly-once: neither.
    Neither,
}

impl Class {
    /// The plan's `expect` for it.
    fn expect(self) -> &'static str {
        match self {
            Class::MayDuplicate => "at-least-once",
            Class::MayLose => "at-most-once",
            Class::Neither => "exactly-once",
        }
    }

    /// True when `verdict` is one this class allows.
    fn allows(self, verdict: &str) -> bool {
        matches!(
            (self, verdict),
            (_, "EXACT" | "INCONCLUSIVE")
                | (Class::MayDuplicate, "DUPLICATED")
                | (Class::MayLose, "LOST")
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Broker {
    Kafka,
    Amqp,
}

/// One example consumer mode and its class.
struct Consumer {
    broker: Broker,
    mode: &'static str,
    class: Class,
}

const CONSUMERS: &[Consumer] = &[
    Consumer {
        broker: Broker::Kafka,
        mode: "commit-after-effect",
        class: Class::MayDuplicate,
    },
    Consumer {
        broker: Broker::Kafka,
        mode: "commit-before-effect",
        class: Class::MayLose,
    },
    Consumer {
        broker: Broker::Kafka,
        mode: "idempotent",
        class: Class::Neither,
    },
    Consumer {
        broker: Broker::Amqp,
        mode: "ack-after-effect",
        class: Class::MayDuplicate,
    },
    Consumer {
        broker: Broker::Amqp,
        mode: "ack-before-effect",
        class: Class::MayLose,
    },
    Consumer {
        broker: Broker::Amqp,
        mode: "auto-ack",
        class: Class::MayLose,
    },
    Consumer {
        broker: Broker::Amqp,
        mode: "idempotent",
        class: Class::Neither,
    },
];

/// One random fault of the grammar, as plan YAML (a list item). Pauses stay shorter than the
/// session timeout and partitions are drawn only for at-least-once consumers: what a longer
/// outage does to the other classes depends on how the example handles a refused commit, which
/// is not what the class promises.
fn fault(rng: &mut ChaCha8Rng, c: &Consumer, messages: u64) -> String {
    let done = match c.broker {
        Broker::Kafka => "commit",
        Broker::Amqp => "ack",
    };
    let nth_effect = rng.random_range(3..=messages / 2);
    let nth_done = rng.random_range(1..=5);
    let kinds = if matches!(c.class, Class::MayDuplicate) {
        6
    } else {
        5
    };
    match rng.random_range(0..kinds) {
        0 => format!("  - kill: consumer\n    when: {{ during: effect, nth: {nth_effect} }}\n"),
        1 => format!("  - kill: consumer\n    when: {{ after: effect, nth: {nth_effect} }}\n"),
        2 => format!("  - kill: consumer\n    when: {{ before: {done}, nth: {nth_done} }}\n"),
        3 => format!("  - kill: consumer\n    when: {{ after: {done}, nth: {nth_done} }}\n"),
        4 => format!(
            "  - pause: consumer\n    for: {}ms\n    when: {{ after: effect, nth: {nth_effect} }}\n",
            rng.random_range(200..1200)
        ),
        _ => format!(
            "  - partition: consumer\n    for: {}ms\n    when: {{ after: effect, nth: {nth_effect} }}\n",
            rng.random_range(500..4000)
        ),
    }
}

/// A random plan: its text and the consumer it runs.
fn plan(rng: &mut ChaCha8Rng, n: usize) -> (String, &'static Consumer) {
    let c = &CONSUMERS[rng.random_range(0..CONSUMERS.len())];
    let messages: u64 = rng.random_range(40..=150);
    let examples = examples_dir();
    let broker = match c.broker {
        Broker::Kafka => format!(
            "  kind: kafka\n  bootstrap: 127.0.0.1:9092\n  topic: soak-{{run}}\n  partitions: {}\n  group: soak-{{run}}\n",
            rng.random_range(1..=3)
        ),
        Broker::Amqp => "  kind: amqp\n  url: amqp://guest:guest@127.0.0.1:5672/%2f\n  queue: soak-{run}\n  prefetch: 10\n".to_owned(),
    };
    let command = match c.broker {
        Broker::Kafka => format!(
            "[{}/kafka_consumer, --mode, {}, --work-ms, \"{}\", --session-timeout-ms, \"2000\"]",
            examples.display(),
            c.mode,
            rng.random_range(1..=8)
        ),
        Broker::Amqp => format!(
            "[{}/amqp_consumer, --mode, {}, --work-ms, \"{}\"]",
            examples.display(),
            c.mode,
            rng.random_range(1..=8)
        ),
    };
    let key = match c.class {
        Class::Neither => "  idempotency_key: header:Idempotency-Key\n",
        Class::MayDuplicate | Class::MayLose => "",
    };
    let mut faults = String::new();
    for _ in 0..rng.random_range(1..=2) {
        faults.push_str(&fault(rng, c, messages));
    }
    let text = format!(
        "name: soak-{n}\nbroker:\n{broker}workload:\n  messages: {messages}\n  payload: '{{\"order_id\":\"{{id}}\",\"amount\":42}}'\nconsumer:\n  command: {command}\n  restart: {{ after: 300ms }}\neffects:\n  sink: http\n  id: json:/order_id\n{key}faults:\n{faults}expect: {}\nlimits: {{ settle: 2s, deadline: 60s }}\nseed: {}\n",
        c.class.expect(),
        rng.random::<u32>()
    );
    (text, c)
}

/// How one soak run ended.
enum Outcome {
    /// Within its class: the verdict.
    Within(String),
    /// Outside its class: the verdict.
    Mismatch(String),
    /// Exit 2 or 4, a signal, or no report: what happened.
    HarnessError(String),
}

fn run_one(plan_text: &str, c: &Consumer, dir: &Path) -> Outcome {
    std::fs::create_dir_all(dir).unwrap();
    let plan = dir.join("plan.yaml");
    std::fs::write(&plan, plan_text).unwrap();
    let (out, report) = run_plan(&plan, &dir.join("run"), &[]);
    let verdict = report["verdict"].as_str().map(str::to_owned);
    match (out.status.code(), verdict) {
        (Some(0 | 1 | 3), Some(v)) if c.class.allows(&v) => Outcome::Within(v),
        (Some(0 | 1 | 3), Some(v)) => Outcome::Mismatch(v),
        (code, v) => Outcome::HarnessError(format!(
            "exit {code:?}, verdict {v:?}: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
    }
}

/// Largest resident set of any process this test waited for, in MiB.
fn peak_rss_mib() -> u64 {
    // SAFETY: getrusage writes one plain struct it is handed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    (usage.ru_maxrss as u64) / 1024
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn random_plans_on_both_brokers_stay_within_their_consumers_verdict_class() {
    require_kafka();
    require_rabbitmq();
    let seed = env_u64("SOAK_SEED").unwrap_or(0x50a4);
    let minutes = env_u64("SOAK_MINUTES");
    let runs = env_u64("SOAK_RUNS").unwrap_or(4);
    let keep = root().join("target/soak").join(format!("{seed:x}"));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut within, mut mismatches, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0.. {
        let more = match minutes {
            Some(m) => started.elapsed() < Duration::from_secs(m * 60),
            None => n < runs,
        };
        if !more {
            break;
        }
        let (text, c) = plan(&mut rng, n as usize);
        let dir: PathBuf = keep.join(format!("{n:04}"));
        let outcome = run_one(&text, c, &dir);
        let line = format!("soak {n:04} {:?} {} ({:?})", c.broker, c.mode, c.class);
        match outcome {
            Outcome::Within(v) => {
                eprintln!("{line}: {v}");
                within.push(v);
                let _ = std::fs::remove_dir_all(&dir);
            }
            Outcome::Mismatch(v) => {
                eprintln!("{line}: MISMATCH {v}, kept {}", dir.display());
                mismatches.push(format!("{line}: {v} in {}", dir.display()));
            }
            Outcome::HarnessError(e) => {
                eprintln!("{line}: HARNESS ERROR {e}, kept {}", dir.display());
                errors.push(format!("{line}: {e} in {}", dir.display()));
            }
        }
    }
    let mut summary = format!(
        "soak seed {seed:#x}: {} runs in {:.0?}, {} within class, {} mismatches, {} harness errors, peak RSS {} MiB;",
        within.len() + mismatches.len() + errors.len(),
        started.elapsed(),
        within.len(),
        mismatches.len(),
        errors.len(),
        peak_rss_mib()
    );
    for v in ["EXACT", "DUPLICATED", "LOST", "INCONCLUSIVE"] {
        let _ = write!(
            summary,
            " {v} {}",
            within.iter().filter(|w| *w == v).count()
        );
    }
    eprintln!("{summary}");
    assert!(
        mismatches.is_empty() && errors.is_empty(),
        "{summary}\nmismatches:\n{}\nharness errors:\n{}",
        mismatches.join("\n"),
        errors.join("\n")
    );
}
