//! `Keyed<S>`: keyed submission whose tasks own per-shard state.

use crate::error::SubmitError;
use crate::keyed::state::{StateSpawn, StateTask, States};
use crate::loom::sync::Arc;
use crate::sched::{Registry, Wait};
use crate::task::job::Runnable;
use crate::task::{JoinHandle, Slot};
use crate::tenants::{Ask, Tenants};
use std::cell::UnsafeCell;
use std::fmt;
use std::hash::Hash;

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
    pool: Arc<Registry>,
}

impl<S> fmt::Debug for Keyed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("shards", &self.states.cells.len())
            .finish()
    }
}

impl<S: Send + 'static> Keyed<S> {
    pub(crate) fn new(
        pool: Arc<Registry>,
        init: impl Fn(usize) -> S + Send + Sync + 'static,
    ) -> Self {
        let cells = (0..pool.sharder.count())
            .map(|_| UnsafeCell::new(None))
            .collect();
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
    /// As [`TaskBuilder::execute`](crate::TaskBuilder::execute) with a key; the closure is handed back.
    pub fn execute<K, F>(&self, key: &K, f: F) -> Result<(), SubmitError<F>>
    where
        K: Hash + ?Sized,
        F: FnOnce(&mut S) + Send + 'static,
    {
        let shard = self.pool.sharder.shard_of(key);
        let task = StateTask {
            states: Arc::clone(&self.states),
            shard,
            f,
        };
        self.submit(task, shard).map_err(|e| e.map(|t| t.f))
    }

    /// Like [`execute`](Self::execute), returning a handle to `f`'s value.
    ///
    /// # Errors
    /// As [`TaskBuilder::spawn`](crate::TaskBuilder::spawn) with a key.
    pub fn spawn<K, F, T>(&self, key: &K, f: F) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        K: Hash + ?Sized,
        F: FnOnce(&mut S) -> T + Send + 'static,
        T: Send + 'static,
    {
        let shard = self.pool.sharder.shard_of(key);
        let slot = Arc::new(Slot::keyed(self.pool.id(), shard));
        let task = StateSpawn {
            task: StateTask {
                states: Arc::clone(&self.states),
                shard,
                f,
            },
            slot: Arc::clone(&slot),
        };
        match self.submit(task, shard) {
            Ok(()) => Ok(JoinHandle::new(slot)),
            Err(e) => Err(e.map(|t| t.task.f)),
        }
    }

    /// Into `shard`: straight there, or through the unnamed tenant's queue
    /// when the pool has a rate limit, or behind earlier tasks of the shard
    /// that wait there (they have a priority or a cost), so that the shard
    /// keeps its order.
    fn submit<R: Runnable>(&self, task: R, shard: usize) -> Result<(), SubmitError<R>> {
        if self.pool.config.rate_limit.is_some() || self.pool.shard_held(shard) {
            return Tenants::submit(
                &self.pool,
                task,
                Ask::plain(Some(shard)),
                Wait::Policy,
                None,
            );
        }
        self.pool.submit(task, Wait::Policy, Some(shard)).map(drop)
    }

    /// The shard `key` maps to.
    pub fn shard_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        self.pool.sharder.shard_of(key)
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
