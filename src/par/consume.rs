//! The terminals of a loop as consumers: each splits in step with its
//! source, consumes a leaf sequentially, and combines adjacent results.

use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use super::bridge::{Consumer, Reduce, Stage};

/// Consumers hold only references: copied freely, whatever they refer to.
macro_rules! copy_consumer {
    ($name:ident<$($p:ident),*>) => {
        impl<$($p),*> Clone for $name<'_, $($p),*> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($p),*> Copy for $name<'_, $($p),*> {}
    };
}

/// Calls `op` on every item.
pub(crate) struct ForEach<'f, St, Op> {
    pub(crate) stage: &'f St,
    pub(crate) op: &'f Op,
}

copy_consumer!(ForEach<St, Op>);

impl<St, Op> Reduce<()> for ForEach<'_, St, Op> {
    #[inline]
    fn reduce(self, _: (), _: ()) {}
}

impl<I, St, Op> Consumer<I> for ForEach<'_, St, Op>
where
    St: Stage<I>,
    Op: Fn(St::Out) + Sync,
{
    type Out = ();
    type Reducer = Self;
    fn split_at(self, _: usize) -> (Self, Self, Self) {
        (self, self, self)
    }
    #[inline]
    fn leaf<It: Iterator<Item = I>>(self, items: It) {
        let (stage, op) = (self.stage, self.op);
        items.for_each(move |x| op(stage.apply(x)));
    }
}

/// Folds each leaf from its own identity and combines leaves with `op`.
pub(crate) struct Fold<'f, St, Id, Op> {
    pub(crate) stage: &'f St,
    pub(crate) identity: &'f Id,
    pub(crate) op: &'f Op,
}

copy_consumer!(Fold<St, Id, Op>);

impl<T, St, Id, Op: Fn(T, T) -> T> Reduce<T> for Fold<'_, St, Id, Op> {
    #[inline]
    fn reduce(self, left: T, right: T) -> T {
        (self.op)(left, right)
    }
}

impl<I, St, Id, Op> Consumer<I> for Fold<'_, St, Id, Op>
where
    St: Stage<I>,
    St::Out: Send,
    Id: Fn() -> St::Out + Sync,
    Op: Fn(St::Out, St::Out) -> St::Out + Sync,
{
    type Out = St::Out;
    type Reducer = Self;
    fn split_at(self, _: usize) -> (Self, Self, Self) {
        (self, self, self)
    }
    #[inline]
    fn leaf<It: Iterator<Item = I>>(self, items: It) -> St::Out {
        let stage = self.stage;
        items
            .map(move |x| stage.apply(x))
            .fold((self.identity)(), self.op)
    }
}

/// Sums each leaf with `Sum` and the leaves' sums with `Sum` again.
pub(crate) struct Summing<'f, St, S> {
    pub(crate) stage: &'f St,
    pub(crate) sum: PhantomData<fn() -> S>,
}

copy_consumer!(Summing<St, S>);

impl<St, S: std::iter::Sum<S>> Reduce<S> for Summing<'_, St, S> {
    #[inline]
    fn reduce(self, left: S, right: S) -> S {
        [left, right].into_iter().sum()
    }
}

impl<I, St, S> Consumer<I> for Summing<'_, St, S>
where
    St: Stage<I>,
    S: std::iter::Sum<St::Out> + std::iter::Sum<S> + Send,
{
    type Out = S;
    type Reducer = Self;
    fn split_at(self, _: usize) -> (Self, Self, Self) {
        (self, self, self)
    }
    #[inline]
    fn leaf<It: Iterator<Item = I>>(self, items: It) -> S {
        let stage = self.stage;
        items.map(move |x| stage.apply(x)).sum()
    }
}

/// Keeps one item of each pair (`pick(left, right)`), as `Iterator::min`
/// and `max` do, leaves first, then across leaves in order.
pub(crate) struct Pick<'f, St, P> {
    pub(crate) stage: &'f St,
    pub(crate) pick: &'f P,
}

copy_consumer!(Pick<St, P>);

impl<T, St, P: Fn(T, T) -> T> Reduce<Option<T>> for Pick<'_, St, P> {
    #[inline]
    fn reduce(self, left: Option<T>, right: Option<T>) -> Option<T> {
        match (left, right) {
            (Some(l), Some(r)) => Some((self.pick)(l, r)),
            (l, r) => l.or(r),
        }
    }
}

impl<I, St, P> Consumer<I> for Pick<'_, St, P>
where
    St: Stage<I>,
    St::Out: Send,
    P: Fn(St::Out, St::Out) -> St::Out + Sync,
{
    type Out = Option<St::Out>;
    type Reducer = Self;
    fn split_at(self, _: usize) -> (Self, Self, Self) {
        (self, self, self)
    }
    #[inline]
    fn leaf<It: Iterator<Item = I>>(self, items: It) -> Option<St::Out> {
        let stage = self.stage;
        items.map(move |x| stage.apply(x)).reduce(self.pick)
    }
}

/// Finds some item matching `pred` and stops every leaf once one has.
pub(crate) struct Find<'f, St, P> {
    pub(crate) stage: &'f St,
    pub(crate) pred: &'f P,
    pub(crate) found: &'f AtomicBool,
}

copy_consumer!(Find<St, P>);

impl<T, St, P> Reduce<Option<T>> for Find<'_, St, P> {
    #[inline]
    fn reduce(self, left: Option<T>, right: Option<T>) -> Option<T> {
        left.or(right)
    }
}

impl<I, St, P> Consumer<I> for Find<'_, St, P>
where
    St: Stage<I>,
    St::Out: Send,
    P: Fn(&St::Out) -> bool + Sync,
{
    type Out = Option<St::Out>;
    type Reducer = Self;
    fn split_at(self, _: usize) -> (Self, Self, Self) {
        (self, self, self)
    }
    fn leaf<It: Iterator<Item = I>>(self, items: It) -> Option<St::Out> {
        for x in items {
            // Relaxed: the flag only cuts work short; the found item itself
            // travels back through `join`, which synchronises.
            if self.found.load(Ordering::Relaxed) {
                return None;
            }
            let x = self.stage.apply(x);
            if (self.pred)(&x) {
                self.found.store(true, Ordering::Relaxed);
                return Some(x);
            }
        }
        None
    }
    #[inline]
    fn full(&self) -> bool {
        // Relaxed: as in `leaf`.
        self.found.load(Ordering::Relaxed)
    }
}

/// Writes each item at its index into uninitialised memory reserved for
/// exactly the source's length (a `Vec`'s spare capacity).
pub(crate) struct Collect<'f, St, T> {
    pub(crate) stage: &'f St,
    pub(crate) target: *mut T,
    pub(crate) len: usize,
}

// SAFETY: a `Collect` writes only its own `target..target + len`, which no
// other consumer of the same loop covers (splits are disjoint), so sending
// it sends the right to write those `T`s: `T: Send`. The stage is `Sync`.
unsafe impl<St: Sync, T: Send> Send for Collect<'_, St, T> {}

/// The items a leaf (or adjacent leaves) wrote: dropped if the loop
/// unwinds, so nothing written leaks and nothing unwritten is dropped.
pub(crate) struct Written<T> {
    pub(crate) start: *mut T,
    pub(crate) len: usize,
}

// SAFETY: it owns the `len` items at `start`, which no one else touches.
unsafe impl<T: Send> Send for Written<T> {}

impl<T> Drop for Written<T> {
    fn drop(&mut self) {
        // SAFETY: the first `len` items at `start` were written by a leaf
        // and are owned by this value alone.
        unsafe { ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.start, self.len)) };
    }
}

pub(crate) struct Join;

impl<T> Reduce<Written<T>> for Join {
    fn reduce(self, mut left: Written<T>, right: Written<T>) -> Written<T> {
        // Adjacent only when the left part is complete; a short left part
        // (its leaf unwound) keeps its own items and `right` drops its.
        if left.start.wrapping_add(left.len) == right.start {
            left.len += right.len;
            std::mem::forget(right);
        }
        left
    }
}

impl<I, St, T> Consumer<I> for Collect<'_, St, T>
where
    St: Stage<I, Out = T>,
    T: Send,
{
    type Out = Written<T>;
    type Reducer = Join;
    fn split_at(self, index: usize) -> (Self, Self, Join) {
        assert!(index <= self.len);
        let right = Collect {
            stage: self.stage,
            // SAFETY: `index <= len`: within (or one past) this range.
            target: unsafe { self.target.add(index) },
            len: self.len - index,
        };
        let left = Collect { len: index, ..self };
        (left, right, Join)
    }
    fn leaf<It: Iterator<Item = I>>(self, items: It) -> Written<T> {
        let mut written = Written {
            start: self.target,
            len: 0,
        };
        for x in items {
            assert!(
                written.len < self.len,
                "a parallel source yielded more items than its length"
            );
            let value = self.stage.apply(x);
            // SAFETY: `written.len < self.len`: a slot of this consumer's
            // range, not yet written.
            unsafe { self.target.add(written.len).write(value) };
            written.len += 1;
        }
        written
    }
}
