//! The pool's error types.

use std::fmt;

/// Why a submission was not accepted. Every variant hands the closure back,
/// so nothing is silently lost: retry it, run it elsewhere, or drop it.
///
/// `Debug` and `Display` do not require the closure to be `Debug`. New
/// variants may come (rate limits, tenants), so a `match` needs a wildcard
/// arm; [`into_inner`](Self::into_inner) always gives the closure back.
#[non_exhaustive]
pub enum SubmitError<F> {
    /// The queue held `queue_capacity` waiting tasks and the policy is
    /// [`Backpressure::Reject`](crate::Backpressure::Reject), or a
    /// non-blocking `try_*` call found no room; or the task's tenant's own
    /// queue was full under `Reject`.
    Full(F),
    /// The pool is shutting down or shut down; the task will never run.
    ShutDown(F),
    /// A bounded wait for room
    /// ([`TaskBuilder::wait_for_room`](crate::TaskBuilder::wait_for_room)) ran out.
    Timeout(F),
    /// The pool's circuit breaker is open (or half-open with its trials
    /// taken): too many recent tasks failed.
    BreakerOpen(F),
    /// An option of the task builder was out of range (a zero period, a
    /// delay beyond [`MAX_DELAY`](crate::MAX_DELAY), a retry policy that
    /// contradicts itself); the error names it.
    Invalid(F, InvalidOption),
    /// A non-blocking `try_*` submission found its tenant's (or the
    /// pool's) rate limit with no token left: the task would have waited
    /// for the refill.
    RateLimited(F),
}

impl<F> SubmitError<F> {
    /// The closure that was not accepted.
    pub fn into_inner(self) -> F {
        match self {
            SubmitError::Full(f)
            | SubmitError::ShutDown(f)
            | SubmitError::Timeout(f)
            | SubmitError::BreakerOpen(f)
            | SubmitError::RateLimited(f)
            | SubmitError::Invalid(f, _) => f,
        }
    }

    /// The option at fault, if the task was refused as invalid.
    pub fn invalid_option(&self) -> Option<&InvalidOption> {
        match self {
            SubmitError::Invalid(_, why) => Some(why),
            _ => None,
        }
    }

    /// Whether the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, SubmitError::Full(_))
    }

    /// Whether the pool was shut down.
    pub fn is_shut_down(&self) -> bool {
        matches!(self, SubmitError::ShutDown(_))
    }

    /// Whether the circuit breaker refused it.
    pub fn is_breaker_open(&self) -> bool {
        matches!(self, SubmitError::BreakerOpen(_))
    }

    /// Whether a rate limit refused a non-blocking submission.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, SubmitError::RateLimited(_))
    }

    /// Whether a bounded wait for room ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SubmitError::Timeout(_))
    }

    fn name(&self) -> &'static str {
        match self {
            SubmitError::Full(_) => "Full",
            SubmitError::ShutDown(_) => "ShutDown",
            SubmitError::Timeout(_) => "Timeout",
            SubmitError::BreakerOpen(_) => "BreakerOpen",
            SubmitError::Invalid(..) => "Invalid",
            SubmitError::RateLimited(_) => "RateLimited",
        }
    }
}

impl<F> fmt::Debug for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(..)", self.name())
    }
}

impl<F> fmt::Display for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str(
                "task rejected: the queue is full (the pool's queue_capacity or its tenant's)",
            ),
            SubmitError::RateLimited(_) => f.write_str(
                "task rejected: its rate limit has no token left (a try_ submission does not wait for the refill)",
            ),
            SubmitError::ShutDown(_) => {
                f.write_str("task rejected: the pool is shutting down or shut down")
            }
            SubmitError::Timeout(_) => {
                f.write_str("task rejected: no room in the pool's queue before the timeout")
            }
            SubmitError::BreakerOpen(_) => f.write_str(
                "task rejected: the circuit breaker is open after too many recent failures",
            ),
            SubmitError::Invalid(_, why) => write!(f, "task rejected: {why}"),
        }
    }
}

impl<F> std::error::Error for SubmitError<F> {}

/// A task option out of range: which one, the value given, and what it
/// must be.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidOption {
    pub(crate) option: &'static str,
    pub(crate) value: String,
    pub(crate) expected: &'static str,
}

impl InvalidOption {
    pub(crate) fn new(
        option: &'static str,
        value: impl fmt::Debug,
        expected: &'static str,
    ) -> Self {
        InvalidOption {
            option,
            value: format!("{value:?}"),
            expected,
        }
    }

    /// The option, e.g. `"retry.max_attempts"`.
    pub fn option(&self) -> &'static str {
        self.option
    }

    /// The value given, rendered.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the value must be.
    pub fn expected(&self) -> &'static str {
        self.expected
    }
}

impl fmt::Display for InvalidOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} = {}: expected {}",
            self.option, self.value, self.expected
        )
    }
}

impl std::error::Error for InvalidOption {}

/// Why a task produced no value.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the panic's message is kept (a non-string payload
    /// is reported as `<non-string panic payload>`).
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The task never ran: the pool was shut down (`shutdown_timeout` past
    /// its deadline, or `shutdown_now`) while it waited.
    Abandoned,
    /// The task never ran: [`Backpressure::DropOldest`](crate::Backpressure::DropOldest)
    /// evicted it to make room for a newer one.
    Dropped,
    /// Refused to wait: a keyed task waited for a task of its own shard
    /// that had not run yet, and a shard runs its tasks one at a time, so
    /// that task could only start after the waiter returned.
    WouldDeadlock,
    /// The task's deadline passed before it started, or the task returned
    /// early at its deadline (`TaskContext::check`).
    TimedOut,
    /// The task was cancelled before it started (`JoinHandle::cancel`, its
    /// token, its group), or returned early on cancellation (which
    /// `shutdown_now` also signals to running tasks; a task it catches
    /// unstarted is `Abandoned`).
    Cancelled,
    /// The task never ran: its group's circuit breaker, or its pool's
    /// for a group's task, was open.
    BreakerOpen,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked { message } => write!(f, "task panicked: {message}"),
            TaskError::Abandoned => f.write_str("task abandoned: the pool shut down before it ran"),
            TaskError::Dropped => {
                f.write_str("task dropped: evicted from a full queue by the DropOldest policy")
            }
            TaskError::TimedOut => f.write_str("task timed out: its deadline passed"),
            TaskError::Cancelled => f.write_str("task cancelled"),
            TaskError::BreakerOpen => {
                f.write_str("task refused: a circuit breaker (its group's or its pool's) is open")
            }
            TaskError::WouldDeadlock => f.write_str(
                "wait refused: a keyed task waited for a later task of its own shard, \
                 which cannot start before the waiting task returns",
            ),
        }
    }
}

impl std::error::Error for TaskError {}

/// A mistake in a [`Builder`](crate::Builder)'s settings, or a failure to
/// start the pool's threads. Each variant names the setting and the value.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting has a value it cannot take.
    Invalid {
        /// The builder method, e.g. `"workers"`.
        field: &'static str,
        /// The value given, rendered.
        value: String,
        /// What the value must be.
        expected: &'static str,
    },
    /// `min_workers` is greater than `max_workers`.
    MinAboveMax {
        /// The minimum given.
        min: usize,
        /// The maximum given.
        max: usize,
    },
    /// `workers(n)` contradicts `min_workers`/`max_workers`.
    Conflict {
        /// The value of `workers`.
        workers: usize,
        /// The other setting's name.
        other: &'static str,
        /// The other setting's value.
        value: usize,
    },
    /// The pool would start more threads than the system has left: past
    /// `limit`, starting a thread can fail or, on Linux, abort the whole
    /// process. Nothing was started.
    ThreadLimit {
        /// The threads the pool must start (its workers, plus its watchdog
        /// and supervisor when configured).
        requested: usize,
        /// The threads the system allows this process to start now.
        available: usize,
        /// The limit that binds: `"vm.max_map_count"`,
        /// `"kernel.threads-max"` or `"RLIMIT_NPROC"`.
        limit: &'static str,
    },
    /// The operating system refused to start a worker thread; every thread
    /// already started was stopped and joined.
    Spawn {
        /// The index of the worker that could not start.
        worker: usize,
        /// The OS error.
        source: std::io::Error,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Invalid {
                field,
                value,
                expected,
            } => write!(f, "invalid {field} = {value}: expected {expected}"),
            BuildError::MinAboveMax { min, max } => write!(
                f,
                "invalid worker bounds: min_workers = {min} is greater than max_workers = {max}"
            ),
            BuildError::Conflict {
                workers,
                other,
                value,
            } => write!(
                f,
                "conflicting settings: workers = {workers} but {other} = {value} \
                 (workers(n) means min_workers = max_workers = n)"
            ),
            BuildError::ThreadLimit {
                requested,
                available,
                limit,
            } => write!(
                f,
                "too many threads: the pool needs {requested} but {limit} allows only \
                 {available} more in this process"
            ),
            BuildError::Spawn { worker, source } => {
                write!(f, "could not start worker thread {worker}: {source}")
            }
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl<F> SubmitError<F> {
    /// The same error around another value.
    pub(crate) fn map<G>(self, f: impl FnOnce(F) -> G) -> SubmitError<G> {
        match self {
            SubmitError::Full(x) => SubmitError::Full(f(x)),
            SubmitError::ShutDown(x) => SubmitError::ShutDown(f(x)),
            SubmitError::Timeout(x) => SubmitError::Timeout(f(x)),
            SubmitError::BreakerOpen(x) => SubmitError::BreakerOpen(f(x)),
            SubmitError::Invalid(x, why) => SubmitError::Invalid(f(x), why),
            SubmitError::RateLimited(x) => SubmitError::RateLimited(f(x)),
        }
    }
}
