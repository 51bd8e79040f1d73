//! Time for tasks: the timing wheel that holds delayed, periodic and
//! retrying tasks, the clock it reads, and the pure retry policy.
//!
//! Nothing here runs a thread or touches a pool: the scheduler's timer
//! driver (`sched/timers/`) owns a [`wheel::Wheel`] and moves due tasks
//! into the pool's queues; task bodies (`task/retry.rs`,
//! `task/periodic.rs`) compute their next due instant with a
//! [`clock::TimerClock`] and a [`backoff::RetryPolicy`].

pub(crate) mod backoff;
pub(crate) mod clock;
pub(crate) mod wheel;

pub use backoff::{Jitter, RetryPolicy, Schedule};

/// The farthest ahead a task may be delayed or scheduled: 365 days. The
/// wheel spans 795 days at its 1 ms resolution; a delay beyond this is
/// refused as bad input rather than clamped.
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
