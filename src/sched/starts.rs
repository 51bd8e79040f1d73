//! Queue places returned in batches: a worker in one of a pool's first 64
//! worker slots retires the places of the tasks it starts, and of the tasks
//! it finished, in one read-modify-write of the admission word every
//! [`BATCH`] starts, not one a task.
//!
//! # Why
//!
//! Every submission adds to the admission word. When every start also took
//! from it, the word's cache line crossed between the submitting core and
//! the worker's core twice a task, and the submitter, which paces a flood
//! of small tasks, waited for it each time: half of such a flood's time on
//! two cores (`design/benchmarks.md` §36).
//!
//! # What a worker owes, and when it pays
//!
//! A worker counts the tasks it started and has not paid the `queued`
//! place of (`started`), and the tasks it finished and has not paid the
//! `pending` place of (`finished`). It pays both in one `retire`:
//! - at its [`BATCH`]-th unpaid start;
//! - before it looks beyond its current run of tasks, spins, parks, waits
//!   for anything (a join, `wait_idle`), or runs a job that is not a task
//!   (as it always paid `finished`);
//! - at once while anyone waits for room in the queue (it reads the
//!   waiter count at every start, as it did to wake them).
//!
//! So whoever waits for the pool to go idle, or for shutdown, sees every
//! place paid by the time the workers stop; in between, the word counts up
//! to `BATCH` started tasks per worker as still queued.
//!
//! # Reading the word exactly: the unpaid words
//!
//! Each worker publishes what it owes in its own cache line: its payment
//! count (`epoch`, high 32 bits), `started` (bits 16..32) and `finished`
//! (bits 0..16). A reader that needs the queue's true length (a submission
//! that finds the word at capacity, shutdown's abandon, the gauges, a
//! searcher's fan-out) reads every unpaid word, then the admission word
//! (a load, or a submission's `fetch_add`), then every unpaid word again,
//! and subtracts what a worker owed in the first reading if its epoch did
//! not change by the second. That never subtracts too much:
//! - the places a worker owed in the first reading belong to tasks
//!   accepted before it (acceptance → queue → start → the worker's store
//!   → this load, each happening before the next), so the admission word,
//!   read after, counts them, unless a payment took them out first;
//! - a payment stores the next epoch, then takes its places out of the
//!   word with a `SeqCst` (releasing) RMW; a reader whose load or RMW comes
//!   after that RMW in the word's order acquires it, so its second reading
//!   sees the new epoch and subtracts nothing for that worker. A payment
//!   whose RMW comes after the reader's leaves the places in the word the
//!   reader saw.
//!
//! A reading of a worker mid-store only lags (it subtracts less), so the
//! queue then reads a little fuller than it is, as a submission racing a
//! start always could. The capacity bound is never exceeded.
//!
//! # Which workers
//!
//! The workers in a pool's first [`BATCHED_SLOTS`] worker slots, fixed or
//! elastic: an exact reading reads one line per such slot, twice, so the
//! readings of a pool grown to hundreds of workers stay as cheap as those
//! of a pool of 64. A worker in a higher slot pays at every start, as
//! every worker once did, and owes the word nothing. A pool that runs a
//! flood of small tasks on a few workers (the sizing keeps compute-bound
//! work near one worker a CPU) so gets the batches whatever its
//! `max_workers`. An elastic pool's burst hint, read at every submission,
//! allows for the places its batching workers may owe (see
//! `Registry::enqueue_from`); its samples read the queue exactly. A worker
//! that leaves pays first, and the next one in its slot counts on from its
//! epoch (`UnpaidWords::first_epoch`).

use super::admission::{pending, queued};
use super::registry::Registry;
use crate::loom::sync::atomic::{AtomicU64, Ordering::SeqCst};
use crossbeam_utils::CachePadded;

/// A worker pays what it owes at its `BATCH`-th unpaid start. Eight takes
/// nearly all of the gain (§36: 4 gave about half of it, 16 no more).
#[cfg(not(loom))]
pub(crate) const BATCH: u64 = 8;
/// Under loom, a payment at every second start: the models then see a
/// payment between a task's start and the next one's.
#[cfg(loom)]
pub(crate) const BATCH: u64 = 2;

/// The worker slots whose workers return places in batches: the first 64.
#[cfg(not(loom))]
pub(crate) const BATCHED_SLOTS: usize = 64;
/// Under loom, the first two: a model of three workers then has a worker
/// that pays at every start beside two that pay in batches.
#[cfg(loom)]
pub(crate) const BATCHED_SLOTS: usize = 2;

const EPOCH_ONE: u64 = 1 << 32;
const STARTED_SHIFT: u32 = 16;
const COUNT_MASK: u64 = (1 << STARTED_SHIFT) - 1;

/// The unpaid words of a pool's batching workers (its first
/// [`BATCHED_SLOTS`] slots): one cache line each, written only by its
/// worker.
pub(crate) struct UnpaidWords(Box<[CachePadded<AtomicU64>]>);

impl UnpaidWords {
    /// Words for the first [`BATCHED_SLOTS`] of a pool's `max_workers`
    /// slots.
    pub(crate) fn new(max_workers: usize) -> Self {
        UnpaidWords(
            (0..max_workers.min(BATCHED_SLOTS))
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        )
    }

    /// The epoch a worker starting in slot `index` counts on from: the one
    /// after its predecessor's last, so a slot an elastic pool reuses never
    /// shows an epoch it showed before, and a reading that spans the change
    /// subtracts nothing for it. (The predecessor paid everything before it
    /// left.)
    pub(crate) fn first_epoch(&self, index: usize) -> u64 {
        match self.0.get(index) {
            // Relaxed: the predecessor's stores happened before this worker
            // was started (it left, its slot was freed under the registry's
            // lock, and this worker was spawned into it).
            Some(word) => {
                let last = word.load(std::sync::atomic::Ordering::Relaxed);
                next_epoch(last & !(EPOCH_ONE - 1))
            }
            None => 0,
        }
    }

    /// Whether the worker in slot `index` returns places in batches.
    #[inline]
    pub(crate) fn covers(&self, index: usize) -> bool {
        index < self.0.len()
    }

    /// How many slots return places in batches.
    #[inline]
    pub(crate) fn slots(&self) -> usize {
        self.0.len()
    }

    /// Worker `index` publishes that it owes `started` and `finished`
    /// places since payment `epoch` (a count of payments, shifted).
    #[inline]
    pub(crate) fn owe(&self, index: usize, epoch: u64, started: u64, finished: u64) {
        debug_assert!(started <= COUNT_MASK && finished <= COUNT_MASK);
        // SeqCst (an `xchg` on x86, on a line only this worker writes):
        // the first half of the handshake with a waiter for room, which
        // registers, then reads this word (`Registry::block_for_room`); the
        // worker then reads the waiter count (see `Worker::start_batched`).
        self.0[index].store(epoch | started << STARTED_SHIFT | finished, SeqCst);
    }

    /// Worker `index` paid everything: its next epoch, nothing owed.
    #[inline]
    pub(crate) fn paid(&self, index: usize, epoch: u64) {
        // Relaxed suffices: the payment's `SeqCst` RMW on the admission
        // word follows in program order and releases this store to every
        // reader that acquires the RMW (see the module docs).
        self.0[index].store(epoch, std::sync::atomic::Ordering::Relaxed);
    }

    fn read(&self) -> Reading {
        let mut words = [0; BATCHED_SLOTS];
        for (w, unpaid) in words.iter_mut().zip(self.0.iter()) {
            // SeqCst: the second half of a waiter's handshake (see `owe`);
            // for every other reader Acquire would do (it pairs with
            // `owe`'s store, after the task's acceptance).
            *w = unpaid.load(SeqCst);
        }
        Reading(words)
    }
}

/// The epoch after `epoch`.
#[inline]
pub(crate) fn next_epoch(epoch: u64) -> u64 {
    epoch.wrapping_add(EPOCH_ONE)
}

/// One reading of every worker's unpaid word.
pub(crate) struct Reading([u64; BATCHED_SLOTS]);

/// The places owed in `first` by workers that made no payment by `second`
/// (read later): `(started, finished)`, places the admission word read
/// between the two certainly counts.
pub(crate) fn settled(first: &Reading, second: &Reading) -> (usize, usize) {
    let (mut started, mut finished) = (0, 0);
    for (&a, &b) in first.0.iter().zip(second.0.iter()) {
        if a >> 32 == b >> 32 {
            started += ((a >> STARTED_SHIFT) & COUNT_MASK) as usize;
            finished += (a & COUNT_MASK) as usize;
        }
    }
    (started, finished)
}

impl Registry {
    /// The admission word's `queued` and `pending`, less the places the
    /// workers owe (see the module docs): tasks accepted and not started,
    /// and accepted and not finished.
    pub(crate) fn settled_counts(&self) -> (usize, usize) {
        let first = self.unpaid.read();
        let word = self.admission.load(SeqCst);
        let (started, finished) = settled(&first, &self.unpaid.read());
        (
            queued(word).saturating_sub(started),
            pending(word).saturating_sub(finished),
        )
    }

    /// A first reading of the unpaid words.
    pub(crate) fn read_unpaid(&self) -> Reading {
        self.unpaid.read()
    }

    /// The started places owed in `first` and still owed now (see
    /// `settled`).
    pub(crate) fn unpaid_since(&self, first: &Reading) -> usize {
        settled(first, &self.unpaid.read()).0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn reading(words: &[u64]) -> Reading {
        let mut r = [0; BATCHED_SLOTS];
        r[..words.len()].copy_from_slice(words);
        Reading(r)
    }

    fn word(epoch: u64, started: u64, finished: u64) -> u64 {
        epoch << 32 | started << STARTED_SHIFT | finished
    }

    #[test]
    fn a_worker_that_paid_between_the_readings_counts_for_nothing() {
        let first = reading(&[word(3, 5, 4), word(7, 2, 2), word(0, 1, 0)]);
        // Worker 0 paid (epoch 4) and started again; worker 1 started one
        // more in the same epoch; worker 2 paid.
        let second = reading(&[word(4, 1, 0), word(7, 3, 2), word(1, 0, 0)]);
        assert_eq!(settled(&first, &second), (2, 2));
    }

    #[test]
    fn unchanged_epochs_count_what_the_first_reading_owed() {
        let first = reading(&[word(9, 7, 6), word(u32::MAX as u64, 3, 3)]);
        let second = reading(&[word(9, 7, 7), word(u32::MAX as u64, 4, 3)]);
        assert_eq!(settled(&first, &second), (10, 9));
    }

    #[test]
    fn the_epoch_wraps_without_touching_the_counts() {
        let last = word(u32::MAX as u64, 0, 0);
        assert_eq!(next_epoch(last), 0);
        assert_eq!(next_epoch(word(5, 0, 0)), word(6, 0, 0));
    }

    #[test]
    fn the_first_slots_of_any_pool_return_places_in_batches() {
        let small = UnpaidWords::new(4);
        assert_eq!(small.slots(), 4);
        assert!(small.covers(3) && !small.covers(4));
        let wide = UnpaidWords::new(512);
        assert_eq!(wide.slots(), BATCHED_SLOTS);
        assert!(wide.covers(BATCHED_SLOTS - 1) && !wide.covers(BATCHED_SLOTS));
    }

    #[test]
    fn a_reused_slot_counts_on_from_its_predecessors_epoch() {
        let words = UnpaidWords::new(2);
        assert_eq!(words.first_epoch(0), EPOCH_ONE);
        words.owe(1, 7 * EPOCH_ONE, 3, 2);
        assert_eq!(words.first_epoch(1), 8 * EPOCH_ONE);
        words.paid(1, 9 * EPOCH_ONE);
        assert_eq!(words.first_epoch(1), 10 * EPOCH_ONE);
        assert_eq!(UnpaidWords::new(512).first_epoch(BATCHED_SLOTS), 0);
    }
}
