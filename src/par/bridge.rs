//! The one driver every parallel loop shares: split the source in halves
//! with `join` while the splitter allows, run each leaf sequentially, and
//! combine the halves' results in order.
//!
//! Splitting is adaptive, as in rayon: a loop starts with as many splits
//! as the pool has workers, halving at each level; a half that another
//! worker stole (it ran on a thread other than its parent's) was wanted by
//! an idle worker, so it gets its splits back. Busy pools split little,
//! idle workers make the work split further, and uneven work balances.

use crate::forkjoin::join::join_on;
use crate::sched::WorkerThread;

use super::source::Source;

/// The per-item function a loop applies before its terminal: the identity,
/// or the composition of `map`s. Sealed; built by [`Par`](super::Par).
pub trait Stage<In>: Sync + sealed::Sealed {
    /// What the stage turns an item into.
    type Out;
    /// Applies the stage to one item.
    fn apply(&self, item: In) -> Self::Out;
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// The identity stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl sealed::Sealed for Identity {}
impl<In> Stage<In> for Identity {
    type Out = In;
    #[inline(always)]
    fn apply(&self, item: In) -> In {
        item
    }
}

/// A stage followed by a function.
pub struct Then<A, G> {
    pub(crate) first: A,
    pub(crate) then: G,
}

impl<A, G> sealed::Sealed for Then<A, G> {}
impl<In, A, G, O> Stage<In> for Then<A, G>
where
    A: Stage<In>,
    G: Fn(A::Out) -> O + Sync,
{
    type Out = O;
    #[inline(always)]
    fn apply(&self, item: In) -> O {
        (self.then)(self.first.apply(item))
    }
}

/// A stage applied to the second half of `(index, item)` pairs.
pub struct Second<A>(pub(crate) A);

impl<A> sealed::Sealed for Second<A> {}
impl<In, A: Stage<In>> Stage<(usize, In)> for Second<A> {
    type Out = (usize, A::Out);
    #[inline(always)]
    fn apply(&self, (i, item): (usize, In)) -> Self::Out {
        (i, self.0.apply(item))
    }
}

/// How a loop decides to split (see the module comment).
#[derive(Clone, Copy)]
pub(crate) struct Splitter {
    splits: usize,
    threads: usize,
    min: usize,
}

impl Splitter {
    pub(crate) fn new(threads: usize, min: usize) -> Self {
        let threads = threads.max(1);
        Splitter {
            splits: threads,
            threads,
            min: min.max(1),
        }
    }

    /// Whether a piece of `len` items splits again; `stolen` says it runs
    /// on another worker than the piece it was split from.
    #[inline]
    pub(crate) fn try_split(&mut self, len: usize, stolen: bool) -> bool {
        if len / 2 < self.min {
            return false;
        }
        if stolen {
            self.splits = self.threads.max(self.splits / 2);
            true
        } else if self.splits > 0 {
            self.splits /= 2;
            true
        } else {
            false
        }
    }
}

/// The terminal of a loop, split in step with its source.
pub(crate) trait Consumer<I>: Send + Sized {
    /// A leaf's result.
    type Out: Send;
    /// Combines the results of two adjacent halves.
    type Reducer: Reduce<Self::Out>;
    /// The consumers of the first `index` items and of the rest.
    fn split_at(self, index: usize) -> (Self, Self, Self::Reducer);
    /// Consumes one leaf's items, in order.
    fn leaf<It: Iterator<Item = I>>(self, items: It) -> Self::Out;
    /// Whether the loop already has its answer (early exit): no more
    /// splitting, and leaves that have not started skip their items.
    #[inline]
    fn full(&self) -> bool {
        false
    }
}

/// Combines the results of two adjacent halves, left first.
pub(crate) trait Reduce<T> {
    fn reduce(self, left: T, right: T) -> T;
}

/// Runs `cons` over `src` on the current thread's pool (sequentially when
/// this thread is no pool's worker), splitting no piece below `min` items.
pub(crate) fn bridge<S, C>(src: S, cons: C, min: usize) -> C::Out
where
    S: Source,
    C: Consumer<S::Item>,
{
    match WorkerThread::current() {
        Some(worker) => {
            let splitter = Splitter::new(worker.registry().live_workers(), min);
            on_worker(worker, src, cons, splitter, false)
        }
        None => cons.leaf(src.into_seq()),
    }
}

/// The pool's live worker count, as a split count for loops that size
/// their pieces themselves (the sorts); 1 off the pool.
pub(crate) fn threads() -> usize {
    WorkerThread::current().map_or(1, |w| w.registry().live_workers().max(1))
}

fn on_worker<S, C>(
    worker: &WorkerThread,
    src: S,
    cons: C,
    mut splitter: Splitter,
    stolen: bool,
) -> C::Out
where
    S: Source,
    C: Consumer<S::Item>,
{
    let len = src.len();
    if cons.full() {
        return cons.leaf(src.into_seq());
    }
    if !splitter.try_split(len, stolen) {
        return leaf(worker, src, cons, splitter);
    }
    let mid = len / 2;
    let (left, right) = src.split_at(mid);
    let (cons_left, cons_right, reduce) = cons.split_at(mid);
    let parent = identity(worker);
    let (a, b) = join_on(
        worker,
        || on_worker(worker, left, cons_left, splitter, false),
        move || match here(parent) {
            Some((w, stolen)) => on_worker(w, right, cons_right, splitter, stolen),
            None => cons_right.leaf(right.into_seq()),
        },
    );
    reduce.reduce(a, b)
}

/// Runs a piece the splitter no longer splits, in blocks of about a
/// sixteenth of it. Between blocks, if a worker of the pool has gone idle
/// (the other pieces ran out while this one still has work), the rest is
/// halved with `join`: the half a thief takes splits as any stolen piece;
/// a half popped back unstolen goes on in the same blocks. So uneven work
/// keeps every worker busy to the end, a piece splits at most once per
/// block, and when nobody is idle the cost is one load per block.
fn leaf<S, C>(worker: &WorkerThread, src: S, cons: C, splitter: Splitter) -> C::Out
where
    S: Source,
    C: Consumer<S::Item>,
{
    let block = (src.len() / LEAF_BLOCKS).max(splitter.min);
    blocks(worker, src, cons, splitter, block)
}

fn blocks<S, C>(
    worker: &WorkerThread,
    mut src: S,
    mut cons: C,
    splitter: Splitter,
    block: usize,
) -> C::Out
where
    S: Source,
    C: Consumer<S::Item>,
{
    let mut done: Option<(C::Out, C::Reducer)> = None;
    let out = loop {
        let len = src.len();
        if cons.full() || len < 2 * block {
            break cons.leaf(src.into_seq());
        }
        if done.is_some() && worker.registry().sleep.has_idle() {
            let mid = len / 2;
            let (left, right) = src.split_at(mid);
            let (cons_left, cons_right, reducer) = cons.split_at(mid);
            let parent = identity(worker);
            let (a, b) = join_on(
                worker,
                || blocks(worker, left, cons_left, splitter, block),
                move || match here(parent) {
                    Some((w, true)) => {
                        let fresh = Splitter::new(splitter.threads, splitter.min);
                        on_worker(w, right, cons_right, fresh, true)
                    }
                    Some((w, false)) => blocks(w, right, cons_right, splitter, block),
                    None => cons_right.leaf(right.into_seq()),
                },
            );
            break reducer.reduce(a, b);
        }
        let (next, rest) = src.split_at(block);
        let (cons_next, cons_rest, reducer) = cons.split_at(block);
        let out = cons_next.leaf(next.into_seq());
        done = Some(match done {
            Some((before, r)) => (r.reduce(before, out), reducer),
            None => (out, reducer),
        });
        src = rest;
        cons = cons_rest;
    };
    match done {
        Some((before, reducer)) => reducer.reduce(before, out),
        None => out,
    }
}

/// A worker's identity: its address, compared and never followed.
fn identity(worker: &WorkerThread) -> usize {
    worker as *const WorkerThread as usize
}

/// The worker running a split-off half, and whether it was stolen (runs on
/// another worker than `parent`, which split it); `None` off any pool.
fn here(parent: usize) -> Option<(&'static WorkerThread, bool)> {
    WorkerThread::current().map(|w| (w, identity(w) != parent))
}

/// Into how many blocks a leaf is cut to look for idle workers between
/// them.
const LEAF_BLOCKS: usize = 16;

/// Runs `a` and `b` as `join` does on this thread's pool (sequentially off
/// the pool); for the sorts' own recursion.
pub(crate) fn join2<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA,
    B: FnOnce() -> RB + Send,
    RB: Send,
{
    match WorkerThread::current() {
        Some(worker) => join_on(worker, a, b),
        None => (a(), b()),
    }
}
