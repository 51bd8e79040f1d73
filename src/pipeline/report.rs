//! What a pipeline reports: build errors, failed items, refused sends,
//! and each stage's accounting at shutdown.

use std::fmt;

use crate::error::BuildError;

/// A pipeline that could not be built.
#[derive(Debug)]
pub enum PipelineError {
    /// An option out of range.
    Invalid {
        /// The stage.
        stage: String,
        /// The option.
        option: &'static str,
        /// What was given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// Two stages of the pipeline have one name (the metrics, the
    /// reports and the errors tell the stages apart by name).
    DuplicateStage {
        /// The name.
        stage: String,
    },
    /// A stage's pool could not be built.
    Pool {
        /// The stage.
        stage: String,
        /// Why.
        error: BuildError,
    },
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::Invalid {
                stage,
                option,
                value,
                expected,
            } => write!(
                f,
                "stage {stage:?}: {option} = {value} is out of range: expected {expected}"
            ),
            PipelineError::DuplicateStage { stage } => write!(
                f,
                "two stages are named {stage:?}: each stage needs a name of its own"
            ),
            PipelineError::Pool { stage, error } => {
                write!(f, "stage {stage:?}: its pool could not be built: {error}")
            }
        }
    }
}

impl std::error::Error for PipelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PipelineError::Pool { error, .. } => Some(error),
            PipelineError::Invalid { .. } | PipelineError::DuplicateStage { .. } => None,
        }
    }
}

/// An item a stage failed on (its function returned `Err` or panicked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemError {
    /// The stage.
    pub stage: String,
    /// The error's message (or the panic's).
    pub message: String,
    /// Whether the stage panicked on it.
    pub panicked: bool,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.panicked { "panicked" } else { "failed" };
        write!(f, "stage {:?} {what}: {}", self.stage, self.message)
    }
}

impl std::error::Error for ItemError {}

/// An item the pipeline did not take, handed back.
#[derive(PartialEq, Eq)]
pub enum SendError<T> {
    /// The pipeline is shutting down or shut down.
    Closed(T),
    /// The pipeline failed fast (see [`Pipeline::failure`](super::Pipeline::failure)).
    Failed(T),
    /// [`try_send`](super::Pipeline::try_send) found the first stage's
    /// buffer full.
    Full(T),
    /// [`send_timeout`](super::Pipeline::send_timeout) found no room in
    /// time.
    Timeout(T),
}

impl<T> SendError<T> {
    /// The item.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(t)
            | SendError::Failed(t)
            | SendError::Full(t)
            | SendError::Timeout(t) => t,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::Failed(_) => f.write_str("Failed(..)"),
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Timeout(_) => f.write_str("Timeout(..)"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("the pipeline is shut down"),
            SendError::Failed(_) => f.write_str("the pipeline failed and stopped"),
            SendError::Full(_) => f.write_str("the pipeline's first stage is full"),
            SendError::Timeout(_) => f.write_str("the pipeline's first stage had no room in time"),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}

/// What each stage did with its items, in pipeline order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageReport {
    /// The stage's name.
    pub name: String,
    /// Items handed to it (batches, for the stage after a batch stage).
    pub received: u64,
    /// Items it finished (a batch stage: items it handed on in batches).
    pub completed: u64,
    /// Items its function returned `Err` on.
    pub failed: u64,
    /// Items its function, or the key function keying it, panicked on.
    pub panicked: u64,
    /// Items cancelled before they ran (fail-fast).
    pub cancelled: u64,
    /// Items abandoned: refused while closing, or left past the deadline.
    pub abandoned: u64,
    /// Items still running when the deadline passed (they finish, but
    /// after the report).
    pub still_running: u64,
    /// Batches handed on full, by timer, at shutdown (batch stages).
    pub batches: [u64; 3],
}

/// The outcome of a pipeline's shutdown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineReport {
    /// Each stage, in order.
    pub stages: Vec<StageReport>,
    /// The failure that stopped a fail-fast pipeline.
    pub failure: Option<ItemError>,
}
