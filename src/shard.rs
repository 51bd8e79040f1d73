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

use crate::job::JobRef;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Mutex;
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

pub(crate) struct ShardQueue {
    pub(crate) tasks: VecDeque<JobRef>,
    pub(crate) scheduled: bool,
}

/// One virtual shard.
pub(crate) struct Shard {
    pub(crate) queue: Mutex<ShardQueue>,
    /// The worker that last ran it, plus one (0: never ran): a run on
    /// another worker is a hand-off.
    pub(crate) last_worker: AtomicUsize,
    /// The worker running it now, plus one (0: none); for `dump`.
    pub(crate) running_on: AtomicUsize,
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
    /// Records that `worker` runs this shard now; returns whether that is a
    /// hand-off (another worker ran it last). Relaxed: the shard lock
    /// already orders its runs; these are for the figures.
    pub(crate) fn enter(&self, worker: usize) -> bool {
        self.running_on.store(worker + 1, Ordering::Relaxed);
        let last = self.last_worker.swap(worker + 1, Ordering::Relaxed);
        last != 0 && last != worker + 1
    }

    pub(crate) fn leave(&self) {
        self.running_on.store(0, Ordering::Relaxed);
    }
}
