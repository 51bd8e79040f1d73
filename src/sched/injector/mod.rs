//! The global injector: an unbounded multi-producer, multi-consumer FIFO of
//! fixed-size blocks, whose emptied blocks are kept for reuse.
//!
//! # The protocol
//!
//! A queue position is an index counting slots, shifted left by one: the
//! low bit of the head index says the head block has a successor
//! (`HAS_NEXT`, so a taker need not look at the tail). Each block holds
//! `BLOCK_CAP = LAP − 1` slots; the index offset `BLOCK_CAP` of every lap
//! marks "the next block is being installed", and whoever sees it waits.
//!
//! - **Push** claims a slot by a CAS on the tail index, then writes the job
//!   and sets the slot's `WRITE` bit (release). The pusher that claims a
//!   block's last slot installs the next block (prepared before its CAS,
//!   so others wait as briefly as possible): the tail block, then the tail
//!   index past the marker, then the old block's `next` link.
//! - **Pop** claims the head slot by a CAS on the head index (after
//!   checking the tail, unless `HAS_NEXT` says there is more), waits for
//!   the slot's `WRITE` bit, reads the job and sets the slot's `READ` bit.
//!   The taker of a block's last slot moves the head to the next block.
//!   **Pop a batch** claims a run of slots with the same CAS (up to a
//!   limit, at most half of what is queued, never past the head block) and
//!   reads and marks each; for the retiring walk the run is one reader.
//! - **Retiring a block.** Takers may still be reading earlier slots when
//!   the last slot is taken. The taker of the last slot walks the block's
//!   slots back to front: a slot whose `READ` bit is not yet set gets
//!   `DESTROY`, and the walk stops; that slot's reader, on setting `READ`
//!   and finding `DESTROY`, resumes the walk below it. Whoever finishes the
//!   walk owns the block alone: every slot has been read.
//!
//! Every wait (for a slot's `WRITE` bit, a block's link, the tail or head
//! to move past a marker) is for another thread to finish a step it has
//! begun, and it backs off: a few spins, then `yield_now`. The thread
//! waited for may have been preempted mid-step; with hundreds of workers
//! on a few CPUs, pure spinning kept it off a CPU for the scheduler's time
//! slices of every spinner, half a second and more. The waits are out of
//! line, so the push and claim paths carry no back-off state.
//!
//! A pointer to a block is only ever dereferenced after a successful CAS
//! on the index that names a slot of that block (the index is a full count,
//! never reused, so a stale index fails its CAS), or by the one thread the
//! retiring walk hands the block to. That is why a retired block can be
//! reused as well as freed: nobody holds a pointer to it that they will
//! follow.
//!
//! # Reuse
//!
//! A retired block is reset (its slot states and link cleared) and put in
//! one of `SPARES` slots for the next pusher that needs a block; if they
//! are all taken it is freed. A fresh block is allocated without zeroing
//! the job slots (only the state words are written), so a new block costs
//! a `malloc` and `BLOCK_CAP` stores, not a `calloc` of the whole block.

use crate::loom::cell::UnsafeCell;
use crate::loom::sync::atomic::{fence, AtomicPtr, AtomicUsize, Ordering};
use crate::loom::{spin_loop, Backoff};
use crossbeam_utils::CachePadded;
use std::alloc::{self, Layout};
use std::mem::MaybeUninit;
use std::ptr;

/// A slot's job has been written.
const WRITE: usize = 1;
/// A slot's job has been read.
const READ: usize = 2;
/// The block's retiring walk stopped at this slot: its reader resumes it.
const DESTROY: usize = 4;

/// Index units per block (one more than the slots: the install marker).
/// Small under loom (two slots), so that a model of three jobs crosses a
/// block and two takers can race over one.
#[cfg(not(loom))]
const LAP: usize = 64;
#[cfg(loom)]
const LAP: usize = 3;
/// Slots per block.
const BLOCK_CAP: usize = LAP - 1;
/// The index's low bit is `HAS_NEXT`; slots count from bit 1.
const SHIFT: usize = 1;
/// In the head index: the head block is not the tail block.
const HAS_NEXT: usize = 1;
/// Retired blocks kept for reuse.
const SPARES: usize = 4;

struct Slot<T> {
    job: UnsafeCell<MaybeUninit<T>>,
    state: AtomicUsize,
}

impl<T> Slot<T> {
    /// Waits until the pusher that claimed this slot has written it.
    #[inline]
    fn wait_write(&self) {
        // Acquire: pairs with the pusher's release `fetch_or(WRITE)`, so the
        // job's bytes are visible.
        if self.state.load(Ordering::Acquire) & WRITE == 0 {
            self.wait_write_slow();
        }
    }

    /// The pusher has claimed the slot and not written it yet (it may have
    /// been preempted in between): back off until it has.
    #[cold]
    #[inline(never)]
    fn wait_write_slow(&self) {
        let backoff = Backoff::new();
        loop {
            backoff.snooze();
            // Acquire: as in `wait_write`.
            if self.state.load(Ordering::Acquire) & WRITE != 0 {
                return;
            }
        }
    }
}

struct Block<T> {
    next: AtomicPtr<Block<T>>,
    slots: [Slot<T>; BLOCK_CAP],
}

impl<T> Block<T> {
    /// A block with empty slots; the job bytes are left uninitialized.
    fn alloc() -> *mut Block<T> {
        let layout = Layout::new::<Block<T>>();
        // SAFETY: `Block<T>` has a non-zero size (a pointer and the slot
        // states at least).
        let block = unsafe { alloc::alloc(layout) }.cast::<Block<T>>();
        if block.is_null() {
            alloc::handle_alloc_error(layout);
        }
        // SAFETY: `block` is a fresh allocation of the right layout; each
        // field is written once, in place, before any use. The job cells
        // hold `MaybeUninit`, so they need no bytes, only (under loom) the
        // cell's own tracking state.
        unsafe {
            ptr::addr_of_mut!((*block).next).write(AtomicPtr::new(ptr::null_mut()));
            let slots = ptr::addr_of_mut!((*block).slots).cast::<Slot<T>>();
            for i in 0..BLOCK_CAP {
                let slot = slots.add(i);
                ptr::addr_of_mut!((*slot).job).write(UnsafeCell::new(MaybeUninit::uninit()));
                ptr::addr_of_mut!((*slot).state).write(AtomicUsize::new(0));
            }
        }
        block
    }

    /// Frees a block made by `alloc` (its jobs already moved out).
    ///
    /// # Safety
    /// `block` came from `alloc`, nobody else uses it, and it is not
    /// freed twice.
    unsafe fn free(block: *mut Block<T>) {
        // SAFETY: as the caller promises; dropping the block in place drops
        // its atomics and cells (the jobs are `MaybeUninit`, not dropped).
        unsafe {
            ptr::drop_in_place(block);
            alloc::dealloc(block.cast(), Layout::new::<Block<T>>());
        }
    }

    /// Waits until the block's successor is linked, and returns it.
    #[cold]
    fn wait_next(&self) -> *mut Block<T> {
        let backoff = Backoff::new();
        loop {
            // Acquire: pairs with the installing pusher's release store, so
            // the successor's initialized fields are visible.
            let next = self.next.load(Ordering::Acquire);
            if !next.is_null() {
                return next;
            }
            backoff.snooze();
        }
    }
}

/// A queue position: an index and the block it lies in.
struct Position<T> {
    index: AtomicUsize,
    block: AtomicPtr<Block<T>>,
}

/// The injector. See the module docs for the protocol.
pub(crate) struct Injector<T> {
    head: CachePadded<Position<T>>,
    tail: CachePadded<Position<T>>,
    spares: [AtomicPtr<Block<T>>; SPARES],
}

// SAFETY: the injector moves `T` values between threads (so `T: Send`) and
// never hands out shared references to them; its own state is atomics and
// blocks reached only through the protocol above.
unsafe impl<T: Send> Send for Injector<T> {}
// SAFETY: as above: `&Injector` only pushes and takes whole values.
unsafe impl<T: Send> Sync for Injector<T> {}

impl<T> Injector<T> {
    /// An empty injector with one block.
    pub(crate) fn new() -> Self {
        let block = Block::<T>::alloc();
        Injector {
            head: CachePadded::new(Position {
                index: AtomicUsize::new(0),
                block: AtomicPtr::new(block),
            }),
            tail: CachePadded::new(Position {
                index: AtomicUsize::new(0),
                block: AtomicPtr::new(block),
            }),
            spares: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        }
    }

    /// A block for the pusher about to claim a block's last slot: a spare,
    /// else a fresh one.
    #[cold]
    #[inline(never)]
    fn block_for_push(&self) -> *mut Block<T> {
        for spare in &self.spares {
            // Relaxed look first: an empty spare slot costs no RMW.
            if !spare.load(Ordering::Relaxed).is_null() {
                // Acquire: pairs with `keep`'s release CAS, so the reset
                // fields are visible.
                let block = spare.swap(ptr::null_mut(), Ordering::Acquire);
                if !block.is_null() {
                    return block;
                }
            }
        }
        Block::alloc()
    }

    /// Keeps a block nobody else uses for reuse (reset), or frees it.
    ///
    /// # Safety
    /// The caller owns `block` alone (the retiring walk ended with it, or
    /// it was taken for a push that did not need it).
    unsafe fn keep(&self, block: *mut Block<T>) {
        // SAFETY: the caller owns the block; these are plain resets before
        // it is published again (the CAS below releases them).
        unsafe {
            (*block).next.store(ptr::null_mut(), Ordering::Relaxed);
            for slot in &(*block).slots {
                slot.state.store(0, Ordering::Relaxed);
            }
        }
        for spare in &self.spares {
            // Release: the resets above happen before the next pusher's
            // acquire swap takes the block.
            if spare
                .compare_exchange(ptr::null_mut(), block, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
        // SAFETY: owned by the caller, and no spare slot took it.
        unsafe { Block::free(block) }
    }

    /// Waits while another pusher installs the next block (the tail sits
    /// on the block's end marker); returns the tail and block after. Out of
    /// line: the push path carries no back-off state.
    #[cold]
    #[inline(never)]
    fn wait_tail_block(&self) -> (usize, *mut Block<T>) {
        let backoff = Backoff::new();
        loop {
            backoff.snooze();
            // Acquire: as in `push`.
            let tail = self.tail.index.load(Ordering::Acquire);
            if (tail >> SHIFT) % LAP != BLOCK_CAP {
                return (tail, self.tail.block.load(Ordering::Acquire));
            }
        }
    }

    /// Waits while another taker moves the head past `head`, the end of a
    /// block.
    #[cold]
    #[inline(never)]
    fn wait_head_block(&self, head: usize) {
        let backoff = Backoff::new();
        loop {
            backoff.snooze();
            // Under loom one yield and back: the caller looks again (an
            // extra load here only multiplies the models' states).
            // Acquire: as in `claim`.
            if cfg!(loom) || self.head.index.load(Ordering::Acquire) != head {
                return;
            }
        }
    }

    /// Pushes a job at the back.
    #[inline]
    pub(crate) fn push(&self, job: T) {
        // Acquire: pairs with the release stores that install a block, so
        // a loaded block's fields are initialized.
        let mut tail = self.tail.index.load(Ordering::Acquire);
        let mut block = self.tail.block.load(Ordering::Acquire);
        let mut next_block: *mut Block<T> = ptr::null_mut();
        loop {
            let offset = (tail >> SHIFT) % LAP;
            if offset == BLOCK_CAP {
                // Another pusher is installing the next block.
                (tail, block) = self.wait_tail_block();
                continue;
            }
            if offset + 1 == BLOCK_CAP && next_block.is_null() {
                next_block = self.block_for_push();
            }
            let new_tail = tail + (1 << SHIFT);
            // SeqCst: the claim is ordered with a taker's fence and tail
            // load (a taker that finds the queue empty missed only pushes
            // that come after it in the total order, and the worker's
            // sleep handshake covers those).
            match self.tail.index.compare_exchange_weak(
                tail,
                new_tail,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if offset + 1 == BLOCK_CAP {
                        // The last slot: install the next block, then move
                        // the tail past the marker, then link it for takers.
                        // Release: the block's initialized fields go with it.
                        let next_index = new_tail.wrapping_add(1 << SHIFT);
                        self.tail.block.store(next_block, Ordering::Release);
                        self.tail.index.store(next_index, Ordering::Release);
                        // SAFETY: `block` holds the slot just claimed, so it
                        // is live until that slot is read.
                        unsafe { (*block).next.store(next_block, Ordering::Release) };
                    } else if !next_block.is_null() {
                        // Prepared for a last slot another pusher took.
                        // SAFETY: never published; this thread owns it.
                        unsafe { self.keep(next_block) };
                    }
                    // SAFETY: the CAS gave this thread slot `offset` of
                    // `block`, which no taker reads before `WRITE` is set.
                    unsafe {
                        let slot = (*block).slots.get_unchecked(offset);
                        slot.job.with_mut(|p| p.write(MaybeUninit::new(job)));
                        // Release: the job's bytes before the bit.
                        slot.state.fetch_or(WRITE, Ordering::Release);
                    }
                    return;
                }
                Err(current) => {
                    tail = current;
                    block = self.tail.block.load(Ordering::Acquire);
                    spin_loop();
                }
            }
        }
    }

    /// Takes the oldest job, retrying lost races.
    #[inline]
    pub(crate) fn pop(&self) -> Option<T> {
        let (block, offset, count, new_head) = self.claim(1)?;
        // SAFETY: `claim` gave this thread these slots.
        Some(unsafe { self.read_batch(block, offset, count, new_head, &mut |_| {}) })
    }

    /// Takes the oldest job and up to `limit − 1` more after it, claimed
    /// with one CAS (at most half of what is queued, and never past the
    /// head block): the extra jobs go to `sink` newest first (so a LIFO
    /// deque pops them oldest first), then the oldest is returned. Fewer
    /// claims than `pop` per job, where takers contend for the head.
    #[inline]
    pub(crate) fn pop_batch(&self, limit: usize, mut sink: impl FnMut(T)) -> Option<T> {
        let (block, offset, count, new_head) = self.claim(limit.max(1))?;
        // SAFETY: `claim` gave this thread these slots.
        Some(unsafe { self.read_batch(block, offset, count, new_head, &mut sink) })
    }

    /// Claims the head slot and up to `limit − 1` after it (`limit ≥ 1`;
    /// at most half of what is queued, never past the head block), by one
    /// CAS on the head index, retrying lost races. Returns the block, the
    /// first slot's offset, the count and the new head; `None` when empty.
    #[inline(always)]
    fn claim(&self, limit: usize) -> Option<(*mut Block<T>, usize, usize, usize)> {
        // Two loads first: an empty queue (a worker's look at an idle
        // inbox) costs no fence. A hint either way, as the fenced check
        // below is: the pool's sleep protocol re-checks before parking.
        if self.is_empty() {
            return None;
        }
        loop {
            // Acquire: pairs with the release stores moving the head to a
            // new block.
            let head = self.head.index.load(Ordering::Acquire);
            let block = self.head.block.load(Ordering::Acquire);
            let offset = (head >> SHIFT) % LAP;
            if offset == BLOCK_CAP {
                // Another taker is moving the head to the next block.
                self.wait_head_block(head);
                continue;
            }
            let mut new_head = head;
            let room = BLOCK_CAP - offset;
            let count = if head & HAS_NEXT == 0 {
                // SeqCst fence, then the tail: pairs with the pushers'
                // SeqCst claims (see `push`).
                fence(Ordering::SeqCst);
                // Relaxed: ordered by the fence; a claimed slot not yet
                // written is waited for when read.
                let tail = self.tail.index.load(Ordering::Relaxed);
                if head >> SHIFT == tail >> SHIFT {
                    return None;
                }
                if (head >> SHIFT) / LAP != (tail >> SHIFT) / LAP {
                    new_head |= HAS_NEXT;
                    room
                } else {
                    // Half of what is queued, rounded up.
                    ((tail >> SHIFT) - (head >> SHIFT)).div_ceil(2)
                }
            } else {
                room
            }
            .min(limit);
            new_head += count << SHIFT;
            // SeqCst: the claim (one total order with the other claims).
            if self
                .head
                .index
                .compare_exchange_weak(head, new_head, Ordering::SeqCst, Ordering::Acquire)
                .is_err()
            {
                // Another taker won: look again.
                spin_loop();
                continue;
            }
            return Some((block, offset, count, new_head));
        }
    }

    /// Reads claimed slots `offset..offset + count` of `block`: the first
    /// returned, the others to `sink`, last first; then marks them read
    /// (or retires the block, when they end it).
    ///
    /// # Safety
    /// This thread claimed the slots, with `new_head` the head it set.
    #[inline(always)]
    unsafe fn read_batch(
        &self,
        block: *mut Block<T>,
        offset: usize,
        count: usize,
        new_head: usize,
        sink: &mut impl FnMut(T),
    ) -> T {
        let end = offset + count;
        // SAFETY: as the caller promises.
        unsafe {
            if end == BLOCK_CAP {
                // The claim ends the block: move the head to the next one.
                let next = (*block).wait_next();
                let mut next_index = (new_head & !HAS_NEXT).wrapping_add(1 << SHIFT);
                // Relaxed: a hint that the next block has a successor too,
                // confirmed by the acquire loads of whoever follows it.
                if !(*next).next.load(Ordering::Relaxed).is_null() {
                    next_index |= HAS_NEXT;
                }
                // Release: the successor's fields go with the pointer.
                self.head.block.store(next, Ordering::Release);
                self.head.index.store(next_index, Ordering::Release);
            }
            for i in (offset + 1..end).rev() {
                let slot = (*block).slots.get_unchecked(i);
                slot.wait_write();
                sink(slot.job.with(|p| p.read().assume_init()));
            }
            let slot = (*block).slots.get_unchecked(offset);
            slot.wait_write();
            let job = slot.job.with(|p| p.read().assume_init());
            if end == BLOCK_CAP {
                // The block's last slot is ours: the walk starts below ours.
                self.retire(block, offset);
            } else {
                for i in offset..end {
                    let slot = (*block).slots.get_unchecked(i);
                    // AcqRel: our reads happen before the retirer's walk
                    // (release), and its marks before ours (acquire). A
                    // retirer stopped at one of our slots: the walk resumes
                    // below them all.
                    if slot.state.fetch_or(READ, Ordering::AcqRel) & DESTROY != 0 {
                        self.retire(block, offset);
                        break;
                    }
                }
            }
            job
        }
    }

    /// The retiring walk over slots `0..count` of `block` (see the module
    /// docs); whoever finishes it keeps or frees the block.
    ///
    /// # Safety
    /// Every slot from `count` up has been read, and the caller is the one
    /// the walk was handed to.
    #[cold]
    #[inline(never)]
    unsafe fn retire(&self, block: *mut Block<T>, count: usize) {
        for i in (0..count).rev() {
            // SAFETY: the block lives until this walk ends.
            let slot = unsafe { (*block).slots.get_unchecked(i) };
            // Acquire: a slot already read was read before we reuse it.
            // AcqRel on the mark: its reader, finding it, sees our view.
            if slot.state.load(Ordering::Acquire) & READ == 0
                && slot.state.fetch_or(DESTROY, Ordering::AcqRel) & READ == 0
            {
                // Still being read: its reader resumes the walk.
                return;
            }
        }
        // SAFETY: every slot has been read; nobody else holds the block.
        unsafe { self.keep(block) }
    }

    /// Whether the queue is empty (a racy hint, exact when quiescent).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        let head = self.head.index.load(Ordering::SeqCst);
        let tail = self.tail.index.load(Ordering::SeqCst);
        head >> SHIFT == tail >> SHIFT
    }

    /// How many jobs are queued (a racy hint, exact when quiescent).
    pub(crate) fn len(&self) -> usize {
        loop {
            let tail = self.tail.index.load(Ordering::SeqCst);
            let head = self.head.index.load(Ordering::SeqCst);
            // A consistent pair: the tail did not move meanwhile.
            if self.tail.index.load(Ordering::SeqCst) == tail {
                return count_between(head, tail);
            }
            spin_loop();
        }
    }
}

/// The jobs between a head and a tail index (markers are not jobs).
fn count_between(head: usize, tail: usize) -> usize {
    // A position on the install marker counts as the next block's start.
    let norm = |i: usize| {
        let i = i >> SHIFT;
        if i % LAP == BLOCK_CAP {
            i + 1
        } else {
            i
        }
    };
    let (head, tail) = (norm(head), norm(tail));
    let laps = tail / LAP - head / LAP;
    (tail - head).saturating_sub(laps)
}

impl<T> Drop for Injector<T> {
    fn drop(&mut self) {
        // Exclusive access: no push or take runs.
        let mut head = self.head.index.load(Ordering::Relaxed) & !HAS_NEXT;
        let tail = self.tail.index.load(Ordering::Relaxed) & !HAS_NEXT;
        let mut block = self.head.block.load(Ordering::Relaxed);
        // SAFETY: every slot between head and tail holds a written, unread
        // job (nothing runs concurrently), and each block is freed once:
        // the walk moves to `next` as it frees.
        unsafe {
            while head != tail {
                let offset = (head >> SHIFT) % LAP;
                if offset < BLOCK_CAP {
                    let slot = (*block).slots.get_unchecked(offset);
                    slot.job.with_mut(|p| ptr::drop_in_place((*p).as_mut_ptr()));
                } else {
                    let next = (*block).next.load(Ordering::Relaxed);
                    Block::free(block);
                    block = next;
                }
                head = head.wrapping_add(1 << SHIFT);
            }
            Block::free(block);
            for spare in &self.spares {
                let spare = spare.load(Ordering::Relaxed);
                if !spare.is_null() {
                    Block::free(spare);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
