//! Parking and waking idle workers. The protocol, its invariants and the
//! argument that no wake-up is lost are in `README.md` beside this file; the step
//! numbers below refer to it.
//!
//! State (`Sleep::state`, one atomic word): the number of *parked* workers
//! (on the sleeper list) in the high bits and the number of *searching*
//! workers (awake, out of local work, looking in other queues) in the low
//! 16 bits. Whether anyone sleeps is read from that one word, never against
//! the count of live workers, which a worker that starts or retires changes
//! apart from it. The sleeper list and the per-worker "woken to search" grants are
//! under one mutex, taken only to park, to wake, and after waking.

use crate::loom::sync::atomic::{fence, AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::{Arc, Mutex};
use crate::metrics::{LockCounted, LockStats};
use crate::task::Parker;
use crossbeam_utils::CachePadded;

const SEARCH_MASK: usize = (1 << 16) - 1;
const PARK_ONE: usize = 1 << 16;

fn searching(state: usize) -> usize {
    state & SEARCH_MASK
}

fn parked(state: usize) -> usize {
    state >> 16
}

/// The sleeper list: a bit per worker slot, set while the worker is on
/// the list. A wake takes the lowest-numbered sleeper, so work gathers on
/// the low workers and the high ones stay idle: a shrink retires the
/// highest workers first, and one of them busy holds the shrink up.
struct Sleepers {
    /// Bit `i % 64` of word `i / 64`: worker `i` is parked.
    list: Vec<u64>,
    /// `granted[i]`: worker `i` was taken off the list by `notify_one`,
    /// which counted it as searching on its behalf.
    granted: Vec<bool>,
}

impl Sleepers {
    /// Puts worker `index` on the list.
    fn insert(&mut self, index: usize) {
        self.list[index / 64] |= 1 << (index % 64);
    }

    /// Takes worker `index` off the list; returns whether it was on it.
    fn remove(&mut self, index: usize) -> bool {
        let (word, bit) = (&mut self.list[index / 64], 1u64 << (index % 64));
        let was = *word & bit != 0;
        *word &= !bit;
        was
    }

    /// Takes the lowest-numbered parked worker off the list.
    fn take_lowest(&mut self) -> Option<usize> {
        let (at, word) = self.list.iter_mut().enumerate().find(|(_, w)| **w != 0)?;
        let bit = word.trailing_zeros() as usize;
        *word &= *word - 1;
        Some(at * 64 + bit)
    }
}

/// The sleep/wake coordinator of one pool.
pub(crate) struct Sleep {
    state: CachePadded<AtomicUsize>,
    sleepers: Mutex<Sleepers>,
    parkers: Box<[Arc<Parker>]>,
    /// Live workers (the pool may grow and shrink); slots are allocated
    /// for the maximum. Only the searcher limit of step 2 reads it: whether
    /// anyone sleeps is read from `state` alone. Padded so wake-up traffic
    /// on nearby fields does not evict it.
    live: CachePadded<AtomicUsize>,
    /// At most this many search at once, however many workers are live:
    /// the CPUs. (A searcher computes; in a pool grown far past its CPUs
    /// for blocking tasks, more searchers than CPUs only take turns at
    /// scanning every deque.)
    max_searching: usize,
    stats: std::sync::Arc<LockStats>,
    /// Parked workers woken for work (only touched on the wake-up path,
    /// next to a syscall).
    unparks: CachePadded<std::sync::atomic::AtomicU64>,
}

impl Sleep {
    /// Slots for `max_workers`; the `live` first workers start unparked and
    /// not searching; at most `max_searching` (at least one) search at once.
    pub(crate) fn new(
        max_workers: usize,
        live: usize,
        max_searching: usize,
        stats: std::sync::Arc<LockStats>,
    ) -> Self {
        let num_workers = max_workers;
        assert!(
            num_workers < SEARCH_MASK,
            "worker count checked by the builder"
        );
        Sleep {
            state: CachePadded::new(AtomicUsize::new(0)),
            sleepers: Mutex::new(Sleepers {
                list: vec![0; num_workers.div_ceil(64)],
                granted: vec![false; num_workers],
            }),
            parkers: (0..num_workers)
                .map(|_| Arc::new(Parker::for_worker(std::sync::Arc::clone(&stats))))
                .collect(),
            live: CachePadded::new(AtomicUsize::new(live)),
            max_searching: max_searching.max(1),
            stats,
            unparks: CachePadded::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Worker `index`'s parker (handed to latches that must wake it).
    #[inline]
    pub(crate) fn parker(&self, index: usize) -> &Arc<Parker> {
        &self.parkers[index]
    }

    /// Step 2: a worker out of local work asks to search. Refused when half
    /// the workers, or as many as there are CPUs, already search (they will
    /// find the work; more would only contend). The limit is a heuristic:
    /// the check and the increment race.
    pub(crate) fn transition_to_searching(&self) -> bool {
        let state = self.state.load(SeqCst);
        let searching = searching(state);
        if 2 * searching >= self.live.load(SeqCst) || searching >= self.max_searching {
            return false;
        }
        self.state.fetch_add(1, SeqCst);
        true
    }

    /// Step 5, when the re-check finds work: the worker stays awake as a
    /// searcher whatever the limit of step 2, so it takes that work itself
    /// (a worker that could not search would find nothing and loop).
    pub(crate) fn force_searching(&self) {
        self.state.fetch_add(1, SeqCst);
    }

    /// Step 3: a searching worker found work. Returns `true` if it was the
    /// last searcher, in which case the caller wakes another worker to take
    /// over the search (there may be more work where this came from).
    pub(crate) fn transition_from_searching(&self) -> bool {
        searching(self.state.fetch_sub(1, SeqCst)) == 1
    }

    /// Step 4: worker `index` found no work and goes on the sleeper list.
    /// The caller must then issue a `SeqCst` fence and re-check every queue
    /// (and its own wait condition) before it actually parks.
    pub(crate) fn transition_to_parked(&self, index: usize, is_searching: bool) {
        let mut sleepers = self.sleepers.lock_counted(&self.stats.sleepers);
        // One more parked, one fewer searching if it searched (a searcher
        // is counted, so the subtraction cannot wrap the low field).
        self.state
            .fetch_add(PARK_ONE - usize::from(is_searching), SeqCst);
        sleepers.insert(index);
        sleepers.granted[index] = false;
    }

    /// Step 6: after `park` returned (or instead of parking): take worker
    /// `index` off the sleeper list if nobody did. Returns whether the
    /// worker was woken to search (`notify_one` counted it as searching).
    pub(crate) fn after_wake(&self, index: usize) -> bool {
        let mut sleepers = self.sleepers.lock_counted(&self.stats.sleepers);
        if sleepers.remove(index) {
            self.state.fetch_sub(PARK_ONE, SeqCst);
            false
        } else {
            std::mem::take(&mut sleepers.granted[index])
        }
    }

    #[inline]
    fn should_wake(&self) -> bool {
        let state = self.state.load(SeqCst);
        searching(state) == 0 && parked(state) > 0
    }

    /// Step 1 (submitter side), after the job is in a queue: wake one parked
    /// worker if nobody is searching. Returns whether one was woken.
    #[inline(always)]
    pub(crate) fn notify_one(&self) -> bool {
        // Pairs with the fence after `transition_to_parked`: either this load
        // sees the worker's decrement, or the worker's re-check sees the job.
        fence(SeqCst);
        if !self.should_wake() {
            return false;
        }
        self.wake_one()
    }

    /// `notify_one`'s slow half: take a sleeper and wake it.
    #[cold]
    #[inline(never)]
    fn wake_one(&self) -> bool {
        self.wake_sleeper(true)
    }

    /// Fan-out (step 3b): a searcher that found work while more waits
    /// wakes one more sleeper as a searcher, whatever the number searching,
    /// so that a burst engages parked workers in a doubling chain (each
    /// woken worker that finds work wakes another) instead of one at a
    /// time. Extra wake-ups only add takers: no wake-up can be lost by it.
    #[cold]
    #[inline(never)]
    pub(crate) fn wake_another(&self) -> bool {
        let state = self.state.load(SeqCst);
        if parked(state) == 0 {
            return false;
        }
        self.wake_sleeper(false)
    }

    /// Takes a sleeper off the list, counted as searching, and wakes it;
    /// `only_if_none_search`: as `notify_one` (re-checked under the lock).
    fn wake_sleeper(&self, only_if_none_search: bool) -> bool {
        let mut sleepers = self.sleepers.lock_counted(&self.stats.sleepers);
        if only_if_none_search && !self.should_wake() {
            return false;
        }
        let Some(index) = sleepers.take_lowest() else {
            return false;
        };
        // One fewer parked, one more searching.
        self.state.fetch_sub(PARK_ONE - 1, SeqCst);
        sleepers.granted[index] = true;
        drop(sleepers);
        // Relaxed: a counter.
        self.unparks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.parkers[index].unpark();
        true
    }

    /// A cheaper `notify_one` for work its owner is bound to run anyway (a
    /// `join` half, a scope's task pushed on the owner's deque): a plain
    /// load decides whether to wake someone, with no fence. A wake-up
    /// missed in the race costs parallelizm, never the work: the owner pops
    /// it back or runs it while it waits.
    #[inline]
    pub(crate) fn tickle(&self) {
        // Relaxed: a hint; `notify_one` re-checks with the full protocol.
        let state = self.state.load(std::sync::atomic::Ordering::Relaxed);
        if searching(state) == 0 && parked(state) > 0 {
            self.notify_one();
        }
    }

    /// Wakes every parked worker (shutdown, termination).
    pub(crate) fn wake_all(&self) {
        let mut sleepers = self.sleepers.lock_counted(&self.stats.sleepers);
        let woken: Vec<usize> = std::iter::from_fn(|| sleepers.take_lowest()).collect();
        for &index in &woken {
            self.state.fetch_sub(PARK_ONE, SeqCst);
            sleepers.granted[index] = false;
        }
        drop(sleepers);
        for index in woken {
            self.parkers[index].unpark();
        }
    }

    /// How many workers are on the sleeper list (a racy gauge).
    pub(crate) fn parked(&self) -> usize {
        parked(self.state.load(SeqCst))
    }

    /// Whether a worker is searching or parked (so new work has a taker).
    pub(crate) fn has_idle(&self) -> bool {
        let state = self.state.load(SeqCst);
        searching(state) > 0 || parked(state) > 0
    }

    /// A new worker joins, unparked (before its thread starts). The state
    /// word counts only parked and searching workers, so it is untouched.
    pub(crate) fn add_worker(&self) {
        self.live.fetch_add(1, SeqCst);
    }

    /// A retiring worker (unparked, not searching) leaves. It is on no
    /// count of the state word: a wake-up decided while it leaves reads
    /// one word, not that word against this count. (It did, once: a
    /// submitter that read the word before this worker left and the live
    /// count after saw nobody parked, and left the last worker asleep
    /// beside the job. Found by the retirement models.)
    pub(crate) fn remove_worker(&self) {
        self.live.fetch_sub(1, SeqCst);
    }

    /// Parked workers woken for work so far.
    pub(crate) fn unparks(&self) -> u64 {
        // Relaxed: a counter for the figures.
        self.unparks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many workers are searching (a racy gauge).
    pub(crate) fn searching(&self) -> usize {
        searching(self.state.load(SeqCst))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn sleep(workers: usize, max_searching: usize) -> Sleep {
        Sleep::new(
            workers,
            workers,
            max_searching,
            std::sync::Arc::new(LockStats::default()),
        )
    }

    /// Grants searching until refused; returns how many were granted.
    fn grant_all(sleep: &Sleep) -> usize {
        let mut granted = 0;
        while sleep.transition_to_searching() {
            granted += 1;
            assert!(granted <= 64, "the search limit never refused");
        }
        granted
    }

    #[test]
    fn searchers_are_capped_at_the_cpus_in_a_pool_wider_than_them() {
        let s = sleep(300, 2);
        assert_eq!(grant_all(&s), 2);
        assert_eq!(s.searching(), 2);
        // One leaves the search: one more may start, no more.
        assert!(!s.transition_from_searching());
        assert_eq!(grant_all(&s), 1);
        // A woken sleeper is counted as searching over the limit (fan-out).
        s.transition_to_parked(7, false);
        assert!(s.wake_another());
        assert_eq!(s.searching(), 3);
        assert!(s.after_wake(7));
    }

    #[test]
    fn a_wake_takes_the_lowest_numbered_sleeper() {
        // Over two words of the list: 3, 130, 64, 0 park, in that order.
        let s = sleep(200, 2);
        for i in [3, 130, 64, 0] {
            s.transition_to_parked(i, false);
        }
        assert_eq!(s.parked(), 4);
        let mut woken = Vec::new();
        while s.wake_another() {
            let i = (0..200)
                .find(|&i| s.parker(i).is_unparked())
                .expect("one unparked");
            // The woken worker takes its token and its grant.
            s.parker(i).park();
            assert!(s.after_wake(i), "woken to search");
            woken.push(i);
        }
        assert_eq!(woken, [0, 3, 64, 130]);
        assert_eq!((s.parked(), s.searching()), (0, 4));
    }

    #[test]
    fn a_sleeper_that_leaves_by_itself_is_off_the_list() {
        let s = sleep(70, 2);
        s.transition_to_parked(65, false);
        s.transition_to_parked(1, false);
        // Worker 1 re-checks, finds work, and takes itself off the list.
        assert!(!s.after_wake(1));
        assert_eq!(s.parked(), 1);
        assert!(s.wake_another());
        assert!(s.parker(65).is_unparked());
        assert!(!s.parker(1).is_unparked());
        assert!(!s.wake_another(), "nobody left on the list");
    }

    #[test]
    fn searchers_are_capped_at_half_the_workers_in_a_narrow_pool() {
        assert_eq!(grant_all(&sleep(6, 16)), 3);
        assert_eq!(grant_all(&sleep(1, 16)), 1);
        // At least one may always search.
        assert_eq!(grant_all(&sleep(4, 0)), 1);
    }
}
