//! Errors that end a command, and the one place that maps them to the documented exit codes.
//! Findings about the consumer are not errors: they are verdicts (see `judge`), with their
//! own codes (0 met, 1 violated, 3 inconclusive).
//!
//! Invariant: what the user must fix (the plan, the command line, the folder given to
//! `report`) exits 2; what failed around the consumer (broker, consumer command, proxy,
//! runtime, the run folder's files) exits 4, never 2 and never a verdict.

use std::path::PathBuf;

use crate::consumer::SupervisorError;
use crate::plan::PlanError;
use crate::timeline::{EventsWriteError, ReadEventsError};

/// Exit codes (README "Exit codes").
pub mod exit {
    /// The plan's expected semantics held.
    pub const MET: i32 = 0;
    /// The plan's expected semantics were violated.
    pub const VIOLATED: i32 = 1;
    /// The plan or the command line is wrong.
    pub const USAGE: i32 = 2;
    /// Not enough evidence for a verdict.
    pub const INCONCLUSIVE: i32 = 3;
    /// The harness or its environment failed (broker unreachable, consumer missing).
    pub const INFRASTRUCTURE: i32 = 4;

    /// The exit code of a command line clap could not parse: `--help` and `--version` (printed
    /// on stdout) succeed, anything else is a usage error.
    pub fn command_line(printed_on_stderr: bool) -> i32 {
        if printed_on_stderr {
            USAGE
        } else {
            MET
        }
    }
}

/// The environment failed the run: not a finding about the consumer.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct InfraError {
    /// What failed and what to do about it.
    pub message: String,
}

impl InfraError {
    /// An infrastructure error with this message.
    pub fn new(message: impl Into<String>) -> InfraError {
        InfraError {
            message: message.into(),
        }
    }
}

/// Why a command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plan must be fixed.
    #[error("{0}")]
    Plan(#[from] PlanError),
    /// The command line must be fixed.
    #[error("{0}")]
    Usage(String),
    /// The run folder given has no readable timeline (`exactly report DIR`).
    #[error(transparent)]
    Events(#[from] ReadEventsError),
    /// The environment failed.
    #[error("{0}")]
    Infra(#[from] InfraError),
    /// The consumer command could not be run.
    #[error(transparent)]
    Consumer(#[from] SupervisorError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The reports could not be written into the run folder.
    #[error("cannot write reports in {}: {source}", dir.display())]
    Reports {
        /// The run folder.
        dir: PathBuf,
        /// What the write returned.
        #[source]
        source: std::io::Error,
    },
    /// The timeline file could not be written during the run: the evidence has a hole.
    #[error(transparent)]
    EventsUnwritable(#[from] EventsWriteError),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Plan(_) | Error::Usage(_) | Error::Events(_) => exit::USAGE,
            Error::Infra(_)
            | Error::Consumer(_)
            | Error::Runtime(_)
            | Error::Reports { .. }
            | Error::EventsUnwritable(_) => exit::INFRASTRUCTURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn io() -> std::io::Error {
        std::io::Error::from_raw_os_error(28)
    }

    #[test]
    fn what_the_user_must_fix_exits_2_and_what_failed_around_the_run_exits_4() {
        let missing = crate::timeline::read_events(std::path::Path::new("/nonexistent/e.jsonl"))
            .expect_err("no such file");
        let cases = [
            (Error::Usage("bad flag".into()), exit::USAGE),
            (Error::Events(missing), exit::USAGE),
            (
                Error::Infra(InfraError::new("broker down")),
                exit::INFRASTRUCTURE,
            ),
            (Error::Runtime(io()), exit::INFRASTRUCTURE),
            (
                Error::Reports {
                    dir: "reports/r1".into(),
                    source: io(),
                },
                exit::INFRASTRUCTURE,
            ),
            (
                Error::EventsUnwritable(EventsWriteError {
                    path: "reports/r1/events.jsonl".into(),
                    source: Arc::new(io()),
                }),
                exit::INFRASTRUCTURE,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error}");
        }
    }

    #[test]
    fn the_messages_name_what_failed() {
        let reports = Error::Reports {
            dir: "reports/r1".into(),
            source: io(),
        };
        assert!(reports
            .to_string()
            .starts_with("cannot write reports in reports/r1: "));
        let runtime = Error::Runtime(io());
        assert!(runtime
            .to_string()
            .starts_with("cannot start the async runtime: "));
        let events = Error::EventsUnwritable(EventsWriteError {
            path: "reports/r1/events.jsonl".into(),
            source: Arc::new(io()),
        });
        assert!(events
            .to_string()
            .starts_with("cannot write reports/r1/events.jsonl: "));
    }

    #[test]
    fn help_and_version_succeed_other_command_line_errors_are_usage() {
        assert_eq!(exit::command_line(false), exit::MET);
        assert_eq!(exit::command_line(true), exit::USAGE);
    }
}
