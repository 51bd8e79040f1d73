//! # ebbtide
//!
//! A work-stealing thread pool with result handles, a bounded queue with
//! backpressure policies, panic isolation and exact shutdown accounting.
//!
//! * Each worker owns a deque; tasks from outside go to a global injector,
//!   tasks submitted by a task go to its worker's own deque; idle workers
//!   steal, then park (no busy waiting beyond a short bounded spin).
//! * [`PoolHandle::spawn`] returns a [`JoinHandle`]: `join()` it (on a worker
//!   it helps instead of blocking), `join_timeout` it, or `.await` it.
//! * `queue_capacity` bounds waiting tasks; [`Backpressure`] decides what a
//!   full queue does: `Block`, `Reject`, `DropNewest`, `DropOldest`,
//!   `CallerRuns`.
//! * A panicking task is counted, reported to the panic handler and returned
//!   through its handle; its worker carries on.
//! * [`TaskBuilder`] options delay a task ([`TaskBuilder::delay`]) onto a
//!   timing wheel, repeat it ([`TaskBuilder::periodic`]), or retry a
//!   fallible one with backoff ([`TaskBuilder::retry`],
//!   [`TaskBuilder::spawn_fallible`]) before it goes to the dead letters
//!   ([`DeadLetter`], [`PoolHandle::replay`]).
//! * [`par`] runs data-parallel loops on the pool they are called in
//!   (`v.par_iter().map(f).sum()`, `par_chunks_mut`, `into_par` on ranges
//!   and `Vec`s, early-exit searches, stable and unstable parallel sorts),
//!   splitting adaptively over [`join`].
//! * [`pipeline`] chains stages, each on a pool of its own with a bounded
//!   buffer, with batching, an error sink or fail-fast, and an ordered
//!   shutdown.
//! * [`Pool::shutdown`] drains, [`Pool::shutdown_timeout`] drains until a
//!   deadline, [`Pool::shutdown_now`] abandons; the [`ShutdownReport`]
//!   accounts for every task, and every thread is joined.
//!
//! ```
//! use ebbtide::{Backpressure, Pool, SubmitError};
//!
//! let pool = Pool::builder()
//!     .workers(2)
//!     .queue_capacity(64)
//!     .backpressure(Backpressure::Reject)
//!     .build()?;
//! let answer = pool.spawn(|| 6 * 7)?;
//! assert_eq!(answer.join()?, 42);
//!
//! let report = pool.shutdown();
//! assert_eq!(report.completed, 1);
//! assert!(matches!(pool.execute(|| ()), Err(SubmitError::ShutDown(_))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Waiting inside the pool
//!
//! `JoinHandle::join` and `wait_idle` called from a worker run other queued
//! work while they wait, so they never deadlock the pool, even with one
//! worker. The flip side, common to work-stealing pools: an unrelated task
//! may run on the waiting thread, so do not hold a lock across such a wait
//! that another task might take. `JoinHandle::join_timeout` waits without
//! helping.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Layers, top to bottom (each imports only from layers below it; see
// `design/architecture.md`):
//   pipelines     pipeline (stages on pools of their own)
//   public face   pool, par (data-parallel loops)
//   features      forkjoin, control, scaling
//   core          sched
//   leaves        keyed (shard type), task, metrics, time (wheel, clock,
//                 retry policy), error, loom
mod control;
mod error;
mod forkjoin;
mod keyed;
mod loom;
pub mod metrics;
pub mod par;
pub mod pipeline;
mod pool;
mod scaling;
mod sched;
mod task;
mod tenants;
mod time;

pub use control::group::{GroupError, TaskGroup};
pub use control::pause::PauseGuard;
pub use error::{BuildError, InvalidOption, SubmitError, TaskError};
pub use forkjoin::join::join;
pub use forkjoin::scope::{Scope, ScopedJoinHandle};
pub use pool::{
    Backlog, Builder, Keyed, PeriodicHandle, Pool, PoolHandle, Replayed, TaskBuilder,
    DEFAULT_DEAD_LETTER_CAPACITY, DEFAULT_QUEUE_CAPACITY, MAX_QUEUE_CAPACITY, MAX_SHARDS,
    MAX_WORKERS,
};
pub use scaling::block_in_place;
pub use sched::breaker::{BreakerClock, BreakerConfig};
pub use sched::config::{Backpressure, TaskPanic};
pub use sched::tenancy::{Priority, RateLimit, TenantConfig};
pub use sched::{PendingTimers, ShutdownReport};
pub use task::{AttemptError, CancelToken, DeadLetter, Failed, JoinHandle, TaskContext};
pub use time::{Jitter, RetryPolicy, Schedule, MAX_DELAY};

#[cfg(all(test, loom))]
mod loom_tests;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctest;
