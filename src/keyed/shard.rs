//! Keyed shards: per-key order and exclusivity, scheduled as units of work.
//!
//! A key hashes (ahash, fixed seeds) to one of `shards` virtual shards; the
//! count does not depend on the workers, so resizing never remaps a key.
//! Each shard holds a FIFO of its tasks and a `scheduled` flag under one
//! mutex. Protocol (the shard hand-off):
//! 1. Submit: reserve a place (capacity and shutdown apply), lock, push the
//!    task; if the shard was not scheduled, mark it and — after unlocking —
//!    put a *shard job* (the shard, not the task) in its home worker's
//!    inbox (home = shard index mod workers) and wake a worker.
//! 2. Run: a worker that pops a shard job (from its inbox, or stolen from
//!    another's) runs up to `BATCH` tasks, popping each under the lock.
//!    Finding the queue empty, it clears `scheduled` under that same lock
//!    and stops.
//! 3. Yield: after `BATCH` tasks with more waiting, it keeps `scheduled` and
//!    puts the shard job at the back of its own inbox, so other shards on
//!    that worker get their turn.
//!
//! Invariants: (a) at most one shard job per shard exists (queued or
//! running) — it is created only on the not-scheduled → scheduled
//! transition and retired only on the reverse, both under the lock; so a
//! shard's tasks never run concurrently, and they run in queue order, which
//! is the order in which submissions took the lock. (b) "has tasks" implies
//! "scheduled": a push onto a non-scheduled shard schedules it, and the
//! runner clears the flag only when it sees the queue empty under the lock.
//! So a shard with work is never stranded.

use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Mutex;
use crate::metrics::{LockCounted, LockStat};
use crate::task::job::JobRef;
use std::collections::VecDeque;
use std::hash::Hash;

/// Tasks a shard runs before it yields its worker.
pub(crate) const BATCH: usize = 32;

/// The fixed seeds keys are hashed with (stable across runs and pools).
const SEEDS: [u64; 4] = [
    0x243F_6A88_85A3_08D3,
    0x1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0,
    0x082E_FA98_EC4E_6C89,
];

/// Maps keys to shards.
pub(crate) struct Sharder {
    hasher: ahash::RandomState,
    count: usize,
}

impl Sharder {
    pub(crate) fn new(count: usize) -> Self {
        Sharder {
            hasher: ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]),
            count,
        }
    }

    /// The shard of `key`.
    #[inline]
    pub(crate) fn shard_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) % self.count as u64) as usize
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }
}

struct ShardQueue {
    tasks: VecDeque<JobRef>,
    scheduled: bool,
}

/// One virtual shard. Its fields are private: the hand-off protocol above
/// is coded in these methods only.
pub(crate) struct Shard {
    queue: Mutex<ShardQueue>,
    /// The worker that last ran it, plus one (0: never ran): a run on
    /// another worker is a hand-off.
    last_worker: AtomicUsize,
    /// The worker running it now, plus one (0: none); for `dump`.
    running_on: AtomicUsize,
}

/// How a run of a shard's batch ended (step 2 or 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BatchEnd {
    /// The queue was empty: the shard is no longer scheduled.
    Drained,
    /// `BATCH` tasks ran and more wait, or the pool was paused: the shard
    /// stays scheduled, and the caller must put its shard job back in an
    /// inbox.
    Requeue,
    /// A task is waiting to be retried and holds the shard: it stays
    /// scheduled with no turn anywhere, so later tasks wait; the retry's
    /// return gives it a new turn (`push_front`), or shutdown releases it
    /// (`release`).
    Held,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            queue: Mutex::new(ShardQueue {
                tasks: VecDeque::new(),
                scheduled: false,
            }),
            last_worker: AtomicUsize::new(0),
            running_on: AtomicUsize::new(0),
        }
    }
}

impl Shard {
    /// Step 1: queues `job`; returns whether the shard became scheduled
    /// (then the caller puts one shard job in the home worker's inbox).
    pub(crate) fn push(&self, job: JobRef, stat: &LockStat) -> bool {
        let mut queue = self.queue.lock_counted(stat);
        queue.tasks.push_back(job);
        !std::mem::replace(&mut queue.scheduled, true)
    }

    /// Steps 2 and 3 on worker `worker`: runs up to `BATCH` tasks with
    /// `run`, in queue order, while `paused()` is false. Returns whether
    /// the shard must be put back in an inbox, and whether this run was a
    /// hand-off from another worker.
    pub(crate) fn run_batch(
        &self,
        worker: usize,
        stat: &LockStat,
        paused: impl Fn() -> bool,
        mut run: impl FnMut(JobRef) -> bool,
    ) -> (BatchEnd, bool) {
        // Relaxed: the shard lock already orders its runs; these are for
        // the figures and the dump.
        self.running_on.store(worker + 1, Ordering::Relaxed);
        let last = self.last_worker.swap(worker + 1, Ordering::Relaxed);
        let handoff = last != 0 && last != worker + 1;
        let mut ran = 0;
        let end = loop {
            if paused() {
                // Still scheduled: it waits in an inbox for `resume`.
                break BatchEnd::Requeue;
            }
            let next = {
                let mut queue = self.queue.lock_counted(stat);
                let next = queue.tasks.pop_front();
                if next.is_none() {
                    queue.scheduled = false;
                }
                next
            };
            let Some(job) = next else {
                break BatchEnd::Drained;
            };
            if run(job) {
                // Still scheduled, with no turn: held until the retry.
                break BatchEnd::Held;
            }
            ran += 1;
            // Still scheduled: only this runner clears it, so no second
            // shard job can appear meanwhile.
            if ran == BATCH && !self.queue.lock_counted(stat).tasks.is_empty() {
                break BatchEnd::Requeue;
            }
        };
        // Relaxed: as at the start, for the figures and the dump.
        self.running_on.store(0, Ordering::Relaxed);
        (end, handoff)
    }

    /// Puts a held shard's retry back at its front. The shard is still
    /// scheduled (held) and has no turn: the caller gives it one.
    pub(crate) fn push_front(&self, job: JobRef, stat: &LockStat) {
        let mut queue = self.queue.lock_counted(stat);
        debug_assert!(queue.scheduled, "only a held shard takes a retry back");
        queue.tasks.push_front(job);
    }

    /// Releases a held shard whose retry will not come back (shutdown
    /// abandoned it). Returns whether tasks wait (then the caller gives it
    /// a turn); otherwise it is no longer scheduled.
    pub(crate) fn release(&self, stat: &LockStat) -> bool {
        let mut queue = self.queue.lock_counted(stat);
        if queue.tasks.is_empty() {
            queue.scheduled = false;
            false
        } else {
            true
        }
    }

    /// Takes every queued task (shutdown abandons them). The shard stays
    /// scheduled if it was: its shard job finds the queue empty and retires
    /// it.
    pub(crate) fn take_all(&self, stat: &LockStat) -> VecDeque<JobRef> {
        std::mem::take(&mut self.queue.lock_counted(stat).tasks)
    }

    /// The oldest queued task (`DropOldest` evicts it; the order of the
    /// rest holds).
    pub(crate) fn pop_oldest(&self, stat: &LockStat) -> Option<JobRef> {
        self.queue.lock_counted(stat).tasks.pop_front()
    }

    /// Tasks queued in this shard.
    pub(crate) fn len(&self, stat: &LockStat) -> usize {
        self.queue.lock_counted(stat).tasks.len()
    }

    /// Whether worker `worker` is running this shard now.
    pub(crate) fn runs_on(&self, worker: usize) -> bool {
        // Relaxed: set and read by the running worker itself for the
        // deadlock check; a dump's reading is a hint.
        self.running_on.load(Ordering::Relaxed) == worker + 1
    }
}
