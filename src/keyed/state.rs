//! Per-shard state that keyed tasks reach without a lock, and the task
//! bodies that run a closure with it.

use crate::error::TaskError;
use crate::loom::sync::Arc;
use crate::task::job::{Outcome, Runnable};
use crate::task::slot::deliver;
use crate::task::TaskSlot;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};

/// One state per shard, created lazily by `init(shard_index)`.
pub(crate) struct States<S> {
    pub(crate) cells: Box<[UnsafeCell<Option<S>>]>,
    pub(crate) init: Box<dyn Fn(usize) -> S + Send + Sync>,
}

// SAFETY: cell `i` is only touched by tasks of shard `i` (through
// `with_state`), and a shard's tasks run one at a time; each task's accesses
// are ordered before the next one's by the shard's queue lock, which the
// runner takes between tasks. `S: Send` because successive tasks may run on
// different workers. `into_states` takes the cells only once no task holds a
// reference to them.
unsafe impl<S: Send> Sync for States<S> {}
// SAFETY: as above; the boxed `init` is `Send + Sync`.
unsafe impl<S: Send> Send for States<S> {}

impl<S> States<S> {
    /// Runs `f` with shard `shard`'s state.
    ///
    /// # Safety
    /// Called only from a task of shard `shard` running in its shard.
    pub(crate) unsafe fn with_state<R>(&self, shard: usize, f: impl FnOnce(&mut S) -> R) -> R {
        // SAFETY: exclusive by the contract (see the `Sync` impl).
        let cell = unsafe { &mut *self.cells[shard].get() };
        f(cell.get_or_insert_with(|| (self.init)(shard)))
    }
}

pub(crate) struct StateTask<S, F> {
    pub(crate) states: Arc<States<S>>,
    pub(crate) shard: usize,
    pub(crate) f: F,
}

impl<S, F> Runnable for StateTask<S, F>
where
    S: Send + 'static,
    F: FnOnce(&mut S) + Send + 'static,
{
    fn run(self) -> Outcome {
        let StateTask { states, shard, f } = self;
        // SAFETY: keyed tasks run only inside their shard (`CallerRuns`
        // does not apply to them).
        panic::catch_unwind(AssertUnwindSafe(|| unsafe { states.with_state(shard, f) })).into()
    }

    fn discard(self, _why: TaskError) {
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(self)));
    }
}

pub(crate) struct StateSpawn<S, F, T> {
    pub(crate) task: StateTask<S, F>,
    pub(crate) slot: Arc<TaskSlot<T>>,
}

impl<S, F, T> Runnable for StateSpawn<S, F, T>
where
    S: Send + 'static,
    F: FnOnce(&mut S) -> T + Send + 'static,
    T: Send + 'static,
{
    fn run(self) -> Outcome {
        let StateSpawn { task, slot } = self;
        if !slot.try_start() {
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(task)));
            return Outcome::Cancelled;
        }
        let StateTask { states, shard, f } = task;
        // SAFETY: as in `StateTask::run`.
        let ran = panic::catch_unwind(AssertUnwindSafe(|| unsafe { states.with_state(shard, f) }));
        deliver(slot, ran)
    }

    fn discard(self, why: TaskError) {
        let StateSpawn { task, slot } = self;
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(task)));
        slot.complete(Err(why));
    }
}
