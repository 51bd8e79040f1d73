//! Tasks as the scheduler carries them, and as their submitters see them.
//!
//! - [`job`]: `JobRef`, a type-erased job (a vtable and 24 bytes inline);
//!   task bodies (`Runnable`) and what became of them (`Outcome`);
//! - [`slot`] and [`handle`]: a spawned task's result slot and its
//!   `JoinHandle`;
//! - [`latch`]: completion latches and stack jobs for fork-join;
//! - [`cancel`]: cancellation tokens, deadlines and the task context;
//! - [`parker`]: how any waiting thread sleeps (`Parker`, `Waiter`);
//! - [`current`]: the worker of this thread, seen through a trait;
//! - [`retry`], [`periodic`], [`dead`]: fallible tasks retried with
//!   backoff, periodic tasks, and what a failed task leaves behind.
//!
//! A leaf layer: it imports nothing of the scheduler (a join on a worker
//! reaches the worker through [`current::Worker`]).

pub(crate) mod cancel;
pub(crate) mod current;
pub(crate) mod dead;
pub(crate) mod handle;
pub(crate) mod job;
pub(crate) mod latch;
pub(crate) mod parker;
pub(crate) mod periodic;
pub(crate) mod retry;
pub(crate) mod slot;

pub use cancel::{CancelToken, TaskContext};
pub use dead::{AttemptError, DeadLetter, Failed};
pub use handle::JoinHandle;
pub(crate) use parker::{Parker, Waiter};
pub(crate) use slot::{Slot, Spawn, TaskSlot};
