//! What a failed task leaves behind: its handle's [`Failed`] (every
//! attempt's error, typed) and the pool's [`DeadLetter`] (the same as
//! text, with the task itself, so that it can be replayed).

use super::cancel::TaskContext;
use crate::time::RetryPolicy;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// One failed attempt of a task.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptError<E> {
    /// Which attempt (1 is the first).
    pub attempt: u32,
    /// When it failed (by the pool's timer clock). Not serialized: an
    /// `Instant` means nothing outside the process.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub at: Instant,
    /// What it returned.
    pub error: E,
}

/// A fallible task that failed for good: every attempt's error, in order.
/// The last attempt's error is [`last`](Self::last).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed<E> {
    pub(crate) attempts: Vec<AttemptError<E>>,
    pub(crate) dead_lettered: bool,
}

impl<E> Failed<E> {
    /// Every attempt's error, first to last.
    pub fn attempts(&self) -> &[AttemptError<E>] {
        &self.attempts
    }

    /// The last attempt's error.
    pub fn last(&self) -> &E {
        &self
            .attempts
            .last()
            .expect("a failure has an attempt")
            .error
    }

    /// Whether the task went to the pool's dead letters (a task submitted
    /// with a retry policy does; one without, which failed once, does not).
    pub fn dead_lettered(&self) -> bool {
        self.dead_lettered
    }

    /// The errors, first to last.
    pub fn into_errors(self) -> Vec<E> {
        self.attempts.into_iter().map(|a| a.error).collect()
    }
}

impl<E: fmt::Display> fmt::Display for Failed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task failed after {} attempt(s): {}",
            self.attempts.len(),
            self.last()
        )
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for Failed<E> {}

/// A task body as kept by a dead letter: the value dropped, the error as
/// text.
pub(crate) type ReplayBody = Box<dyn FnMut(&TaskContext) -> Result<(), String> + Send>;

/// A task that exhausted its retry policy (or returned an error its
/// `retry_if` called permanent), with everything needed to look into it
/// or run it again: its name, shard, policy, and each attempt's error text
/// and time. Delivered to `Builder::on_dead_letter` and kept in the pool's
/// bounded dead-letter queue (`PoolHandle::take_dead_letters`); replay it
/// with `PoolHandle::replay`.
pub struct DeadLetter {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) shard: Option<usize>,
    pub(crate) attempts: Vec<AttemptError<String>>,
    pub(crate) policy: RetryPolicy,
    pub(crate) body: ReplayBody,
    /// Resolves the task's handle; called once the letter is kept, so
    /// that whoever sees the handle's failure finds the letter.
    pub(crate) resolve: Option<Box<dyn FnOnce() + Send>>,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("name", &self.name)
            .field("shard", &self.shard)
            .field("attempts", &self.attempts)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl DeadLetter {
    /// The task's name, if it had one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The keyed shard it ran in, if it was keyed (a replay runs in the
    /// same shard, so it keeps its place in its key's order from then on).
    pub fn shard(&self) -> Option<usize> {
        self.shard
    }

    /// Every attempt's error as text, first to last.
    pub fn attempts(&self) -> &[AttemptError<String>] {
        &self.attempts
    }

    /// The retry policy it ran under (a replay runs under it again).
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}
