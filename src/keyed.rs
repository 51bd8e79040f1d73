//! Keyed submission with per-shard state: `Keyed<S>`.

use crate::error::{SubmitError, TaskError};
use crate::handle::{JoinHandle, Slot, TaskSlot};
use crate::job::{panic_message, Outcome, Runnable};
use crate::loom::sync::Arc;
use crate::pool::PoolHandle;
use std::cell::UnsafeCell;
use std::fmt;
use std::hash::Hash;
use std::panic::{self, AssertUnwindSafe};

/// One state per shard, created lazily by `init(shard_index)`.
struct States<S> {
    cells: Box<[UnsafeCell<Option<S>>]>,
    init: Box<dyn Fn(usize) -> S + Send + Sync>,
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
    unsafe fn with_state<R>(&self, shard: usize, f: impl FnOnce(&mut S) -> R) -> R {
        // SAFETY: exclusive by the contract (see the `Sync` impl).
        let cell = unsafe { &mut *self.cells[shard].get() };
        f(cell.get_or_insert_with(|| (self.init)(shard)))
    }
}

/// A handle for keyed tasks that own per-shard state `S` without locks:
/// [`execute`](Keyed::execute) and [`spawn`](Keyed::spawn) run a closure
/// with `&mut S`, the state of the key's shard. Tasks of one shard run one at
/// a time, in submission order, so the state needs no lock. States are
/// created on first use by `init(shard_index)`; after the work is done,
/// [`into_states`](Keyed::into_states) hands them back for merging.
///
/// A task that panics leaves the state as it left it (there is no
/// poisoning); later tasks of the shard still run.
///
/// ```
/// use std::collections::HashMap;
/// let pool = ebbtide::Pool::builder().workers(2).build()?;
/// let counts = pool.keyed_state(|_shard| HashMap::<String, u64>::new());
/// for word in "the tide comes in the tide goes out".split(' ') {
///     let word = word.to_string();
///     counts.execute(&word.clone(), move |map| *map.entry(word).or_default() += 1)?;
/// }
/// pool.wait_idle();
/// let merged: HashMap<String, u64> = counts
///     .into_states()
///     .unwrap_or_else(|_| unreachable!("no task is left"))
///     .into_iter()
///     .flatten()
///     .flatten()
///     .collect();
/// assert_eq!(merged["tide"], 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Keyed<S> {
    states: Arc<States<S>>,
    pool: PoolHandle,
}

impl<S> fmt::Debug for Keyed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("shards", &self.states.cells.len())
            .finish()
    }
}

struct StateTask<S, F> {
    states: Arc<States<S>>,
    shard: usize,
    f: F,
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

struct StateSpawn<S, F, T> {
    task: StateTask<S, F>,
    slot: Arc<TaskSlot<T>>,
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
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| unsafe { states.with_state(shard, f) }));
        let (result, payload) = match outcome {
            Ok(v) => (Ok(v), None),
            Err(p) => (
                Err(TaskError::Panicked {
                    message: panic_message(&*p),
                }),
                Some(p),
            ),
        };
        slot.complete(result);
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(slot)));
        payload.map_or(Outcome::Done, Outcome::Panicked)
    }

    fn discard(self, why: TaskError) {
        let StateSpawn { task, slot } = self;
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(task)));
        slot.complete(Err(why));
    }
}

impl<S: Send + 'static> Keyed<S> {
    pub(crate) fn new(pool: PoolHandle, init: impl Fn(usize) -> S + Send + Sync + 'static) -> Self {
        let cells = (0..pool.shards()).map(|_| UnsafeCell::new(None)).collect();
        Keyed {
            states: Arc::new(States {
                cells,
                init: Box::new(init),
            }),
            pool,
        }
    }

    /// Runs `f(&mut state)` with the state of `key`'s shard, after every
    /// earlier task of that shard.
    ///
    /// # Errors
    /// As [`PoolHandle::execute_keyed`]; the closure is handed back.
    pub fn execute<K, F>(&self, key: &K, f: F) -> Result<(), SubmitError<F>>
    where
        K: Hash + ?Sized,
        F: FnOnce(&mut S) + Send + 'static,
    {
        let shard = self.pool.shard_of(key);
        let task = StateTask {
            states: Arc::clone(&self.states),
            shard,
            f,
        };
        self.pool
            .submit_keyed(task, shard)
            .map(drop)
            .map_err(|e| e.map(|t| t.f))
    }

    /// Like [`execute`](Self::execute), returning a handle to `f`'s value.
    ///
    /// # Errors
    /// As [`PoolHandle::spawn_keyed`].
    pub fn spawn<K, F, T>(&self, key: &K, f: F) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        K: Hash + ?Sized,
        F: FnOnce(&mut S) -> T + Send + 'static,
        T: Send + 'static,
    {
        let shard = self.pool.shard_of(key);
        let slot = Arc::new(Slot::keyed(self.pool.registry_addr(), shard));
        let task = StateSpawn {
            task: StateTask {
                states: Arc::clone(&self.states),
                shard,
                f,
            },
            slot: Arc::clone(&slot),
        };
        match self.pool.submit_keyed(task, shard) {
            Ok(_) => Ok(JoinHandle::new(slot)),
            Err(e) => Err(e.map(|t| t.task.f)),
        }
    }

    /// The shard `key` maps to.
    pub fn shard_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        self.pool.shard_of(key)
    }

    /// Takes the states back, one per shard (`None` where no task ran),
    /// once no task of this handle is queued or running (e.g. after
    /// `wait_idle`).
    ///
    /// # Errors
    /// `Err(self)` while tasks of this handle are still queued or running.
    pub fn into_states(self) -> Result<Vec<Option<S>>, Self> {
        let Keyed { states, pool } = self;
        // Every queued or running task holds a reference to the states.
        match Arc::try_unwrap(states) {
            Ok(states) => Ok(states
                .cells
                .into_vec()
                .into_iter()
                .map(UnsafeCell::into_inner)
                .collect()),
            Err(states) => Err(Keyed { states, pool }),
        }
    }
}
