//! The scheduler's configuration, as validated by the pool's `Builder`,
//! and the public settings types it carries.

use super::breaker::BreakerConfig;
use crate::metrics::clock::ManualClock;
use crate::metrics::{ResizeEvent, StallReport};
use std::time::Duration;

/// What a submission does when `queue_capacity` tasks are already waiting.
///
/// `try_execute`/`try_spawn` never block whatever the policy: under `Block`
/// and `CallerRuns` they return [`SubmitError::Full`](crate::SubmitError::Full)
/// instead.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backpressure {
    /// Wait for room (the default). An outside thread sleeps until a worker
    /// starts a task; a worker of the same pool runs queued work meanwhile,
    /// so it never deadlocks on its own pool. `execute_timeout` bounds it.
    #[default]
    Block,
    /// Return [`SubmitError::Full`](crate::SubmitError::Full) with the task.
    Reject,
    /// Discard the new task (counted); its handle resolves to
    /// [`TaskError::Dropped`](crate::TaskError::Dropped).
    DropNewest,
    /// Evict the oldest waiting task (counted; its handle resolves to
    /// [`TaskError::Dropped`](crate::TaskError::Dropped)) and queue the new
    /// one. "Oldest" is the front of the global queue, or, when that is
    /// empty, the front of a worker's deque.
    DropOldest,
    /// Run the task on the submitting thread, now. Not after shutdown: then
    /// the submission fails with `ShutDown` like any other.
    CallerRuns,
}

/// A report of a task's panic, handed to the pool's panic handler.
#[derive(Clone, Debug)]
pub struct TaskPanic {
    pub(crate) thread: Option<String>,
    pub(crate) message: String,
}

impl TaskPanic {
    /// The name of the thread the task panicked on (a worker's
    /// `thread_name`-based name, or the caller's under `CallerRuns`).
    pub fn thread_name(&self) -> Option<&str> {
        self.thread.as_deref()
    }

    /// The panic message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A plain `std` `Arc`: the handler takes part in no protocol (and loom's
/// `Arc` cannot hold a trait object).
pub(crate) type PanicHandler = std::sync::Arc<dyn Fn(&TaskPanic) + Send + Sync + 'static>;

/// A validated configuration: what the scheduler is built from.
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) max_workers: usize,
    pub(crate) min_workers: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) backpressure: Backpressure,
    pub(crate) thread_name: String,
    pub(crate) stack_size: Option<usize>,
    pub(crate) panic_handler: Option<PanicHandler>,
    pub(crate) histograms: bool,
    pub(crate) track_workers: bool,
    pub(crate) stall_threshold: Option<Duration>,
    pub(crate) on_stall: Option<StallHandler>,
    pub(crate) shards: usize,
    pub(crate) breaker: Option<BreakerConfig>,
    pub(crate) scaling: ScalingConfig,
    pub(crate) on_resize: Option<ResizeHandler>,
    /// The time source of task timing, if not the tick counter.
    pub(crate) clock: Option<ManualClock>,
    /// The time source of timers and backoff, if not `Instant::now`.
    pub(crate) timer_clock: Option<crate::time::clock::ClockFn>,
    /// What shutdown does with delayed tasks still waiting.
    pub(crate) pending_timers: super::timers::PendingTimers,
    pub(crate) on_dead_letter: Option<DeadLetterHandler>,
    /// How many dead letters the pool keeps.
    pub(crate) dead_letter_capacity: usize,
    /// The pool's rate limit: every task then goes through the tenants'
    /// queues (those without a tenant in the unnamed one).
    pub(crate) rate_limit: Option<super::tenancy::RateLimit>,
    /// What a tenant starts with.
    pub(crate) tenant_defaults: super::tenancy::TenantConfig,
}

/// A plain `std` `Arc`, like [`PanicHandler`].
pub(crate) type DeadLetterHandler =
    std::sync::Arc<dyn Fn(&crate::task::DeadLetter) + Send + Sync + 'static>;

/// A plain `std` `Arc`, like [`PanicHandler`].
pub(crate) type ResizeHandler = std::sync::Arc<dyn Fn(&ResizeEvent) + Send + Sync + 'static>;

/// A plain `std` `Arc`, like [`PanicHandler`].
pub(crate) type StallHandler = std::sync::Arc<dyn Fn(&StallReport) + Send + Sync + 'static>;

/// The scaling settings (`Builder` knobs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ScalingConfig {
    pub(crate) interval: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) grow_above: f64,
    pub(crate) shrink_below: f64,
    pub(crate) target_utilization: f64,
    pub(crate) queue_wait_target: Duration,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            interval: Duration::from_millis(20),
            keep_alive: Duration::from_secs(10),
            grow_above: 0.8,
            shrink_below: 0.3,
            target_utilization: 0.7,
            queue_wait_target: Duration::from_millis(20),
        }
    }
}
