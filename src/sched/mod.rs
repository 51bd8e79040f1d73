//! The scheduler: the shared state of a pool and the workers that run it.
//!
//! - [`registry`]: the passive shared state (queues, admission word,
//!   sleep coordinator, waiters, counters, threads);
//! - [`admission`]: reserving a place, backpressure, enqueueing;
//! - [`worker`]: the worker loop, the only place that runs queued tasks
//!   and records their outcomes ([`outcome`]);
//! - [`sleep`]: parking and waking workers (its protocol is in
//!   `sleep/README.md`);
//! - [`wait`], [`shutdown`], [`resize`], [`snapshot`]: waiting for the pool,
//!   the closing sequence, growing and retiring workers, and reading the
//!   pool without stopping it;
//! - [`queue`]: the queues behind a trait (crossbeam, or a mutex queue
//!   under loom); [`breaker`]: the circuit breaker admission consults;
//!   [`config`]: the validated settings; [`watchdog`]: the stall watchdog;
//!   [`timers`]: the timing wheel's driver (delays, periodic tasks,
//!   retries) and the dead letters' sink (in `outcome`).
//!
//! It imports the leaf layers only (`task`, `keyed`'s shard type,
//! `metrics`, `loom`); nothing here calls up into the pool's public face,
//! fork-join, groups or the auto-scaling supervisor.

pub(crate) mod abort;
pub(crate) mod admission;
pub(crate) mod breaker;
pub(crate) mod config;
pub(crate) mod fair;
pub(crate) mod held;
// Loom models of the pool run on the simple queue; the injector has loom
// models of its own.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) mod injector;
pub(crate) mod limits;
mod outcome;
pub(crate) mod queue;
pub(crate) mod registry;
pub(crate) mod resize;
pub(crate) mod shutdown;
pub(crate) mod sleep;
mod snapshot;
pub(crate) mod starts;
pub(crate) mod tenancy;
pub(crate) mod timers;
pub(crate) mod wait;
pub(crate) mod watchdog;
pub(crate) mod worker;

pub(crate) use admission::Wait;
pub(crate) use registry::Registry;
pub(crate) use shutdown::ShutdownMode;
pub use shutdown::ShutdownReport;
pub use timers::PendingTimers;
pub(crate) use worker::WorkerThread;
