//! What both example consumers share: reading the contract's environment, and making one side
//! effect through the sink the plan observes (`--sink http|file|stdout`). Included by each
//! example with `#[path]`; not an example of its own.

use std::io::Write;
use std::time::Duration;

/// Where effects go.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Sink {
    /// POST to `EXACTLY_EFFECT_URL`.
    Http,
    /// One line appended to `EXACTLY_EFFECT_FILE`.
    File,
    /// A line `effect <payload>` on stdout.
    Stdout,
}

impl std::str::FromStr for Sink {
    type Err = String;
    fn from_str(s: &str) -> Result<Sink, String> {
        match s {
            "http" => Ok(Sink::Http),
            "file" => Ok(Sink::File),
            "stdout" => Ok(Sink::Stdout),
            other => Err(format!("unknown sink {other}")),
        }
    }
}

/// A contract variable; exits with a hint when it is missing (the program was not started by
/// `exactly run`).
pub fn env(program: &str, name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{program}: {name} is not set (run me under `exactly run`)");
        std::process::exit(2)
    })
}

/// How long one HTTP effect attempt waits for the sink's answer by default.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The open sink of one consumer process.
pub enum Effects {
    /// An HTTP client and the URL of this incarnation.
    Http { agent: ureq::Agent, url: String },
    /// This incarnation's effect file.
    File(std::fs::File),
    /// Standard output.
    Stdout,
}

impl Effects {
    /// Opens `sink` as the contract describes it; an HTTP attempt gives up after `timeout`
    /// ([`HTTP_TIMEOUT`] unless the example was told otherwise).
    pub fn open(program: &'static str, sink: Sink, timeout: Duration) -> Effects {
        match sink {
            Sink::Http => Effects::Http {
                agent: ureq::Agent::config_builder()
                    .timeout_global(Some(timeout))
                    .build()
                    .into(),
                url: env(program, "EXACTLY_EFFECT_URL"),
            },
            Sink::File => Effects::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(env(program, "EXACTLY_EFFECT_FILE"))
                    .expect("the effect file can be opened"),
            ),
            Sink::Stdout => Effects::Stdout,
        }
    }

    /// Makes one effect; a failed HTTP attempt is retried (3 attempts in all), as a real
    /// client would.
    pub fn apply(&self, program: &str, payload: &str, idempotency_key: Option<&str>) {
        match self {
            Effects::Http { agent, url } => {
                for attempt in 1..=3 {
                    let mut req = agent.post(url).header("Content-Type", "application/json");
                    if let Some(key) = idempotency_key {
                        req = req.header("Idempotency-Key", key);
                    }
                    match req.send(payload) {
                        Ok(_) => return,
                        Err(e) => {
                            eprintln!("{program}: effect attempt {attempt} failed: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            }
            Effects::File(file) => {
                let mut file = file;
                writeln!(file, "{payload}").expect("the effect file is writable");
            }
            Effects::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "effect {payload}").expect("stdout is writable");
                out.flush().expect("stdout is writable");
            }
        }
    }
}
