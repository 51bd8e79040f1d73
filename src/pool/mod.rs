//! The public face: [`Pool`] (owns the threads, shuts down on drop),
//! [`PoolHandle`] (a cheap, clonable reference), the [`Builder`] that
//! validates settings, the [`TaskBuilder`] every submission goes through,
//! and [`Keyed`] (keyed tasks that own per-shard state).

mod backlog;
pub(crate) mod builder;
pub(crate) mod fallible;
mod handle;
mod keyed;
mod methods;
mod owner;
mod submit;
mod task;
#[cfg(all(test, not(loom)))]
mod worker_status;

pub use backlog::Backlog;
pub use builder::{
    Builder, DEFAULT_DEAD_LETTER_CAPACITY, DEFAULT_QUEUE_CAPACITY, MAX_QUEUE_CAPACITY, MAX_SHARDS,
    MAX_WORKERS,
};
pub use fallible::{PeriodicHandle, Replayed};
pub use handle::PoolHandle;
pub use keyed::Keyed;
pub use owner::Pool;
pub use task::TaskBuilder;

/// The worker running an `install` body.
fn current_worker() -> &'static crate::sched::WorkerThread {
    crate::sched::WorkerThread::current().expect("install runs its closure on a worker")
}
