//! Data-parallel loops over slices, `Vec`s and integer ranges, on the pool
//! they are called in.
//!
//! Bring the three traits into scope (`use ebbtide::par::prelude::*`),
//! then start a loop with [`ParSlice::par_iter`], [`ParSlice::par_chunks`],
//! [`ParSliceMut::par_iter_mut`], [`ParSliceMut::par_chunks_mut`] or
//! [`IntoPar::into_par`] (owned `Vec`s, ranges, slices), shape it with
//! [`Par::map`] and [`Par::enumerate`], and end it with one terminal:
//! [`for_each`](Par::for_each), [`collect`](Par::collect) (order kept),
//! [`reduce`](Par::reduce), [`sum`](Par::sum), [`count`](Par::count),
//! [`min`](Par::min)/[`max`](Par::max) (and `_by_key`), or the early-exit
//! [`any`](Par::any), [`all`](Par::all), [`find_any`](Par::find_any).
//! Slices also sort in parallel: [`ParSliceMut::par_sort`] (stable) and
//! [`ParSliceMut::par_sort_unstable`], each with `_by` and `_by_key`.
//!
//! ```
//! use ebbtide::par::prelude::*;
//!
//! let pool = ebbtide::Pool::builder().workers(2).build()?;
//! let squares: Vec<u64> = pool.install(|| (0..1000u64).into_par().map(|x| x * x).collect());
//! assert_eq!(squares[999], 998_001);
//! let total: u64 = pool.install(|| squares.par_iter().sum());
//! assert_eq!(total, squares.iter().sum());
//!
//! let mut words = vec!["pear", "fig", "apple", "kiwi"];
//! pool.install(|| words.par_sort_by_key(|w| w.len()));
//! assert_eq!(words, ["fig", "pear", "kiwi", "apple"]); // stable: pear before kiwi
//! # Ok::<(), ebbtide::BuildError>(())
//! ```
//!
//! ## Where loops run
//! A loop runs on the pool of the worker that starts it: inside a task,
//! inside [`PoolHandle::install`](crate::PoolHandle::install), inside a
//! `join` or scope. Started on any other thread it runs sequentially on
//! that thread, as [`join`](crate::join) does; to use a pool from outside,
//! wrap the loop in `pool.install(|| …)`.
//!
//! ## Splitting
//! A loop splits its items in halves with `join` while the pool has idle
//! workers to take them: it starts with as many splits as the pool has
//! workers, and a half that an idle worker stole may split again, so uneven
//! work (some items far dearer than others) spreads over the workers while
//! a busy pool splits little. No piece is split below
//! [`with_min_len`](Par::with_min_len) items (default 1): raise it when
//! items are so cheap that a split costs more than the work.
//!
//! ## Panics
//! A panic in one item's work stops that leaf; the other halves already
//! split off run to their end (or stop early in `any`/`all`/`find_any`),
//! then the first panic is resumed in the caller. Items already produced
//! are dropped, none twice, and the pool's workers carry on.

mod bridge;
mod consume;
mod sort;
mod source;

use std::cmp::Ordering;
use std::marker::PhantomData;
use std::sync::atomic::AtomicBool;

pub use bridge::{Identity, Second, Stage, Then};
pub use source::{Chunks, ChunksMut, Enumerate, Range, Slice, SliceMut, Source, VecItems, VecSeq};

use bridge::bridge;
use consume::{Collect, Find, Fold, ForEach, Pick, Summing};

/// The traits that start parallel loops.
pub mod prelude {
    pub use super::{IntoPar, ParSlice, ParSliceMut};
}

/// A parallel loop: a [`Source`] of items and the [`Stage`] (the `map`s)
/// applied to each, waiting for a terminal such as [`for_each`](Self::for_each)
/// or [`collect`](Self::collect). Nothing runs until the terminal.
#[must_use = "a parallel loop does nothing until a terminal such as `for_each` or `collect` runs it"]
pub struct Par<S, F = Identity> {
    src: S,
    stage: F,
    min_len: usize,
}

impl<S: Source> Par<S> {
    fn new(src: S) -> Self {
        Par {
            src,
            stage: Identity,
            min_len: 1,
        }
    }
}

impl<S, F> Par<S, F>
where
    S: Source,
    F: Stage<S::Item>,
{
    /// The number of items.
    pub fn len(&self) -> usize {
        self.src.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
    }

    /// Applies `f` to each item.
    ///
    /// ```
    /// use ebbtide::par::prelude::*;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let lengths: Vec<usize> =
    ///     pool.install(|| ["a", "bb", "ccc"].par_iter().map(|s| s.len()).collect());
    /// assert_eq!(lengths, [1, 2, 3]);
    /// # Ok::<(), ebbtide::BuildError>(())
    /// ```
    pub fn map<G, O>(self, f: G) -> Par<S, Then<F, G>>
    where
        G: Fn(F::Out) -> O + Sync,
    {
        Par {
            src: self.src,
            stage: Then {
                first: self.stage,
                then: f,
            },
            min_len: self.min_len,
        }
    }

    /// Pairs each item with its index.
    ///
    /// ```
    /// use ebbtide::par::prelude::*;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let mut v = vec![0usize; 100];
    /// pool.install(|| v.par_iter_mut().enumerate().for_each(|(i, x)| *x = i * 2));
    /// assert_eq!(v[42], 84);
    /// # Ok::<(), ebbtide::BuildError>(())
    /// ```
    pub fn enumerate(self) -> Par<Enumerate<S>, Second<F>> {
        Par {
            src: Enumerate {
                inner: self.src,
                offset: 0,
            },
            stage: Second(self.stage),
            min_len: self.min_len,
        }
    }

    /// Splits no piece below `min_len` items (default 1).
    ///
    /// # Panics
    /// Panics if `min_len` is 0.
    pub fn with_min_len(mut self, min_len: usize) -> Self {
        assert!(min_len != 0, "min_len must be at least 1");
        self.min_len = min_len;
        self
    }

    /// Calls `op` on every item.
    ///
    /// # Panics
    /// Resumes the first panic of `op` (see the [module docs](self#panics)).
    pub fn for_each<Op>(self, op: Op)
    where
        Op: Fn(F::Out) + Sync,
    {
        let cons = ForEach {
            stage: &self.stage,
            op: &op,
        };
        bridge(self.src, cons, self.min_len)
    }

    /// Collects the items, in order (into a `Vec`).
    ///
    /// # Panics
    /// Resumes the first panic of the loop's functions; the items already
    /// produced are dropped.
    pub fn collect<C>(self) -> C
    where
        C: FromPar<F::Out>,
        F::Out: Send,
    {
        C::from_par(self)
    }

    /// Folds each piece from `identity()` with `op`, then combines the
    /// pieces with `op`, keeping their order (so `op` need only be
    /// associative, not commutative).
    ///
    /// ```
    /// use ebbtide::par::prelude::*;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let longest = pool.install(|| {
    ///     ["a", "abc", "ab"].par_iter().map(|s| s.len()).reduce(|| 0, usize::max)
    /// });
    /// assert_eq!(longest, 3);
    /// # Ok::<(), ebbtide::BuildError>(())
    /// ```
    pub fn reduce<Id, Op>(self, identity: Id, op: Op) -> F::Out
    where
        F::Out: Send,
        Id: Fn() -> F::Out + Sync,
        Op: Fn(F::Out, F::Out) -> F::Out + Sync,
    {
        let cons = Fold {
            stage: &self.stage,
            identity: &identity,
            op: &op,
        };
        bridge(self.src, cons, self.min_len)
    }

    /// Sums the items (`Sum` per piece, then across pieces in order).
    ///
    /// ```
    /// use ebbtide::par::prelude::*;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let sum: u64 = pool.install(|| (1..=100u64).collect::<Vec<_>>().into_par().sum());
    /// assert_eq!(sum, 5050);
    /// # Ok::<(), ebbtide::BuildError>(())
    /// ```
    pub fn sum<Sm>(self) -> Sm
    where
        Sm: std::iter::Sum<F::Out> + std::iter::Sum<Sm> + Send,
    {
        let cons = Summing {
            stage: &self.stage,
            sum: PhantomData,
        };
        bridge(self.src, cons, self.min_len)
    }

    /// The number of items (each still goes through the `map`s).
    pub fn count(self) -> usize {
        self.map(|_| 1usize).sum()
    }

    /// The least item (the first of equal least ones), `None` if empty.
    pub fn min(self) -> Option<F::Out>
    where
        F::Out: Ord + Send,
    {
        self.pick(|a, b| if b < a { b } else { a })
    }

    /// The greatest item (the last of equal greatest ones), `None` if empty.
    pub fn max(self) -> Option<F::Out>
    where
        F::Out: Ord + Send,
    {
        self.pick(|a, b| if b >= a { b } else { a })
    }

    /// The item with the least key (the first of equal ones).
    pub fn min_by_key<K, KF>(self, key: KF) -> Option<F::Out>
    where
        F::Out: Send,
        K: Ord,
        KF: Fn(&F::Out) -> K + Sync,
    {
        self.pick(|a, b| if key(&b) < key(&a) { b } else { a })
    }

    /// The item with the greatest key (the last of equal ones).
    pub fn max_by_key<K, KF>(self, key: KF) -> Option<F::Out>
    where
        F::Out: Send,
        K: Ord,
        KF: Fn(&F::Out) -> K + Sync,
    {
        self.pick(|a, b| if key(&b) >= key(&a) { b } else { a })
    }

    fn pick<P>(self, pick: P) -> Option<F::Out>
    where
        F::Out: Send,
        P: Fn(F::Out, F::Out) -> F::Out + Sync,
    {
        let cons = Pick {
            stage: &self.stage,
            pick: &pick,
        };
        bridge(self.src, cons, self.min_len)
    }

    /// Some item matching `pred`, not necessarily the first; once one is
    /// found, pieces not yet started are skipped and running ones stop at
    /// their next item.
    ///
    /// ```
    /// use ebbtide::par::prelude::*;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let hit = pool.install(|| (0..1_000_000u32).into_par().find_any(|x| x % 77_777 == 77_776));
    /// assert_eq!(hit.map(|x| x % 77_777), Some(77_776));
    /// # Ok::<(), ebbtide::BuildError>(())
    /// ```
    pub fn find_any<P>(self, pred: P) -> Option<F::Out>
    where
        F::Out: Send,
        P: Fn(&F::Out) -> bool + Sync,
    {
        let found = AtomicBool::new(false);
        let cons = Find {
            stage: &self.stage,
            pred: &pred,
            found: &found,
        };
        bridge(self.src, cons, self.min_len)
    }

    /// Whether some item matches `pred`; stops early as
    /// [`find_any`](Self::find_any) does.
    pub fn any<P>(self, pred: P) -> bool
    where
        P: Fn(F::Out) -> bool + Sync,
    {
        self.map(pred).find_any(|hit| *hit).is_some()
    }

    /// Whether every item matches `pred` (true when empty); stops at the
    /// first item found not to.
    pub fn all<P>(self, pred: P) -> bool
    where
        P: Fn(F::Out) -> bool + Sync,
    {
        self.map(pred).find_any(|hit| !*hit).is_none()
    }
}

/// A collection a parallel loop can [`collect`](Par::collect) into.
pub trait FromPar<T>: Sized {
    /// Runs `par` and collects its items.
    fn from_par<S, F>(par: Par<S, F>) -> Self
    where
        S: Source,
        F: Stage<S::Item, Out = T>;
}

impl<T: Send> FromPar<T> for Vec<T> {
    fn from_par<S, F>(par: Par<S, F>) -> Self
    where
        S: Source,
        F: Stage<S::Item, Out = T>,
    {
        let len = par.src.len();
        let mut vec = Vec::with_capacity(len);
        let cons = Collect {
            stage: &par.stage,
            target: vec.as_mut_ptr(),
            len,
        };
        let written = bridge(par.src, cons, par.min_len);
        assert_eq!(
            written.len, len,
            "a parallel source yielded fewer items than its length"
        );
        std::mem::forget(written);
        // SAFETY: the loop wrote all `len` items, in place, and `written`
        // (their owner until now) was forgotten without dropping them.
        unsafe { vec.set_len(len) };
        vec
    }
}

/// Things that turn into a parallel loop by value: owned `Vec`s (items
/// moved out), integer ranges, slices and `Vec` references.
pub trait IntoPar {
    /// The loop's source.
    type Source: Source;
    /// Starts a parallel loop over the items.
    fn into_par(self) -> Par<Self::Source>;
}

impl<T: Send> IntoPar for Vec<T> {
    type Source = VecItems<T>;
    fn into_par(self) -> Par<VecItems<T>> {
        Par::new(VecItems::new(self))
    }
}

impl<'a, T: Sync> IntoPar for &'a [T] {
    type Source = Slice<'a, T>;
    fn into_par(self) -> Par<Slice<'a, T>> {
        Par::new(Slice(self))
    }
}

impl<'a, T: Send> IntoPar for &'a mut [T] {
    type Source = SliceMut<'a, T>;
    fn into_par(self) -> Par<SliceMut<'a, T>> {
        Par::new(SliceMut(self))
    }
}

impl<'a, T: Sync> IntoPar for &'a Vec<T> {
    type Source = Slice<'a, T>;
    fn into_par(self) -> Par<Slice<'a, T>> {
        Par::new(Slice(self))
    }
}

impl<'a, T: Send> IntoPar for &'a mut Vec<T> {
    type Source = SliceMut<'a, T>;
    fn into_par(self) -> Par<SliceMut<'a, T>> {
        Par::new(SliceMut(self))
    }
}

macro_rules! into_par_range {
    ($($t:ty),*) => {$(
        impl IntoPar for std::ops::Range<$t> {
            type Source = Range<$t>;
            fn into_par(self) -> Par<Range<$t>> {
                Par::new(Range::from(self))
            }
        }
    )*};
}

into_par_range!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// Parallel loops over a shared slice (and so over a `Vec` or array).
pub trait ParSlice<T: Sync> {
    /// A loop over `&T`s.
    fn par_iter(&self) -> Par<Slice<'_, T>>;

    /// A loop over consecutive chunks of `size` items (the last may be
    /// shorter), as [`slice::chunks`].
    ///
    /// ```
    /// use ebbtide::par::prelude::*;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let data: Vec<u32> = (0..10).collect();
    /// let sums: Vec<u32> = pool.install(|| data.par_chunks(4).map(|c| c.iter().sum()).collect());
    /// assert_eq!(sums, [6, 22, 17]);
    /// # Ok::<(), ebbtide::BuildError>(())
    /// ```
    ///
    /// # Panics
    /// Panics if `size` is 0.
    fn par_chunks(&self, size: usize) -> Par<Chunks<'_, T>>;
}

impl<T: Sync> ParSlice<T> for [T] {
    fn par_iter(&self) -> Par<Slice<'_, T>> {
        Par::new(Slice(self))
    }

    fn par_chunks(&self, size: usize) -> Par<Chunks<'_, T>> {
        assert!(size != 0, "chunk size must be non-zero");
        Par::new(Chunks { slice: self, size })
    }
}

/// Parallel loops and sorts over a mutable slice (and so over a `Vec`).
pub trait ParSliceMut<T: Send> {
    /// A loop over `&mut T`s.
    fn par_iter_mut(&mut self) -> Par<SliceMut<'_, T>>;

    /// A loop over consecutive mutable chunks of `size` items (the last
    /// may be shorter), as [`slice::chunks_mut`].
    ///
    /// # Panics
    /// Panics if `size` is 0.
    fn par_chunks_mut(&mut self, size: usize) -> Par<ChunksMut<'_, T>>;

    /// Sorts the slice, keeping equal items in their order (a parallel
    /// merge sort; it allocates a buffer the size of the slice).
    ///
    /// # Panics
    /// Resumes a panic of `T::cmp`; the slice then holds all its items in
    /// some order.
    fn par_sort(&mut self)
    where
        T: Ord,
    {
        self.par_sort_by(T::cmp)
    }

    /// [`par_sort`](Self::par_sort) by a comparison function.
    ///
    /// # Panics
    /// As [`par_sort`](Self::par_sort), for `compare`.
    fn par_sort_by<C>(&mut self, compare: C)
    where
        C: Fn(&T, &T) -> Ordering + Sync;

    /// [`par_sort`](Self::par_sort) by a key.
    ///
    /// # Panics
    /// As [`par_sort`](Self::par_sort), for `key`.
    fn par_sort_by_key<K, KF>(&mut self, key: KF)
    where
        K: Ord,
        KF: Fn(&T) -> K + Sync,
    {
        self.par_sort_by(|a, b| key(a).cmp(&key(b)))
    }

    /// Sorts the slice, equal items in any order (a parallel quicksort; no
    /// allocation).
    ///
    /// ```
    /// use ebbtide::par::prelude::*;
    /// let pool = ebbtide::Pool::builder().workers(2).build()?;
    /// let mut v: Vec<u64> = (0..100_000).map(|i| (i * 7919) % 100_003).collect();
    /// pool.install(|| v.par_sort_unstable());
    /// assert!(v.windows(2).all(|w| w[0] <= w[1]));
    /// # Ok::<(), ebbtide::BuildError>(())
    /// ```
    ///
    /// # Panics
    /// Resumes a panic of `T::cmp`; the slice then holds all its items in
    /// some order.
    fn par_sort_unstable(&mut self)
    where
        T: Ord,
    {
        self.par_sort_unstable_by(T::cmp)
    }

    /// [`par_sort_unstable`](Self::par_sort_unstable) by a comparison
    /// function.
    ///
    /// # Panics
    /// As [`par_sort_unstable`](Self::par_sort_unstable), for `compare`.
    fn par_sort_unstable_by<C>(&mut self, compare: C)
    where
        C: Fn(&T, &T) -> Ordering + Sync;

    /// [`par_sort_unstable`](Self::par_sort_unstable) by a key.
    ///
    /// # Panics
    /// As [`par_sort_unstable`](Self::par_sort_unstable), for `key`.
    fn par_sort_unstable_by_key<K, KF>(&mut self, key: KF)
    where
        K: Ord,
        KF: Fn(&T) -> K + Sync,
    {
        self.par_sort_unstable_by(|a, b| key(a).cmp(&key(b)))
    }
}

impl<T: Send> ParSliceMut<T> for [T] {
    fn par_iter_mut(&mut self) -> Par<SliceMut<'_, T>> {
        Par::new(SliceMut(self))
    }

    fn par_chunks_mut(&mut self, size: usize) -> Par<ChunksMut<'_, T>> {
        assert!(size != 0, "chunk size must be non-zero");
        Par::new(ChunksMut { slice: self, size })
    }

    fn par_sort_by<C>(&mut self, compare: C)
    where
        C: Fn(&T, &T) -> Ordering + Sync,
    {
        sort::stable(self, &compare)
    }

    fn par_sort_unstable_by<C>(&mut self, compare: C)
    where
        C: Fn(&T, &T) -> Ordering + Sync,
    {
        sort::unstable(self, &compare)
    }
}
