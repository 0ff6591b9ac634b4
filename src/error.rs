//! Errors that end a command, each with its documented exit code. Findings about the consumer
//! are not errors: they are verdicts (see `judge`).

use crate::plan::PlanError;

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
    /// The environment failed.
    #[error("{0}")]
    Infra(#[from] InfraError),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Plan(_) | Error::Usage(_) => exit::USAGE,
            Error::Infra(_) => exit::INFRASTRUCTURE,
        }
    }
}
