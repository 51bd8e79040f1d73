//! Parallel sorts of slices.
//!
//! - Unstable: quicksort whose two sides run under `join`; pivots are the
//!   median of three (of three medians on long pieces); a piece whose
//!   pivot equals the pivot of the piece it came from holds only copies of
//!   that value below it, so they are split off and never recursed into
//!   (many duplicates cannot make it quadratic); a piece whose split was
//!   very uneven twice in a row gives up parallel splitting and goes to the
//!   standard library's sort, which bounds the worst case. Pieces below
//!   [`QUICK_LEAF`] use `sort_unstable_by`. Partitioning only swaps, so a
//!   panicking comparison leaves the slice a permutation of its items.
//! - Stable: merge sort. The halves sort under `join` (pieces below
//!   [`MERGE_LEAF`] with `sort_by`), then merge through a buffer the size
//!   of the slice, the merge itself split in parallel at the median of the
//!   longer run and its binary-searched place in the other. A panicking
//!   comparison leaves the slice a permutation (each merge's unconsumed
//!   items are copied back as it unwinds).

use std::cmp::Ordering;
use std::mem::{size_of, MaybeUninit};
use std::ptr;

use super::bridge::{join2, threads};

/// No quicksort piece below this length is split further.
const QUICK_LEAF: usize = 1 << 13;
/// No merge-sort piece is split below this length.
const MERGE_LEAF: usize = 1 << 12;
/// Below this combined length a merge runs sequentially.
const MERGE_SEQ: usize = 1 << 14;

/// Sorts `v` by `cmp`, not keeping equal items' order.
pub(crate) fn unstable<T, F>(v: &mut [T], cmp: &F)
where
    T: Send,
    F: Fn(&T, &T) -> Ordering + Sync,
{
    let threads = threads();
    if threads == 1 || v.len() <= QUICK_LEAF {
        v.sort_unstable_by(cmp);
        return;
    }
    // Pieces: enough per worker to even out uneven partitions, no
    // smaller (the standard sort partitions a piece faster than the
    // parallel levels, which only swap).
    let leaf = (v.len() / (threads * 16)).max(QUICK_LEAF);
    quick(v, cmp, leaf, None, 0);
}

#[inline(always)]
fn lt<T, F: Fn(&T, &T) -> Ordering>(cmp: &F, a: &T, b: &T) -> bool {
    cmp(a, b) == Ordering::Less
}

/// `ancestor` is the pivot of an enclosing piece that bounds this one from
/// below (every item here is `>=` it); `uneven` counts consecutive very
/// uneven splits.
fn quick<T, F>(v: &mut [T], cmp: &F, leaf: usize, ancestor: Option<&mut T>, uneven: u32)
where
    T: Send,
    F: Fn(&T, &T) -> Ordering + Sync,
{
    if v.len() <= leaf || uneven >= 2 {
        v.sort_unstable_by(cmp);
        return;
    }
    let len = v.len();
    let p = choose_pivot(v, cmp);
    v.swap(0, p);
    let (pivot, rest) = v.split_at_mut(1);
    let pivot = &pivot[0];
    if let Some(a) = ancestor.as_deref() {
        if !lt(cmp, a, pivot) {
            // pivot == ancestor: items <= pivot here all equal it.
            let mid = partition(rest, |x| !lt(cmp, pivot, x));
            let (_, greater) = rest.split_at_mut(mid);
            return quick(greater, cmp, leaf, ancestor, uneven);
        }
    }
    let mid = partition(rest, |x| lt(cmp, x, pivot));
    let even = mid.min(len - 1 - mid) >= len / 8;
    let uneven = if even { 0 } else { uneven + 1 };
    v.swap(0, mid);
    let (less, rest) = v.split_at_mut(mid);
    let (pivot, greater) = rest.split_at_mut(1);
    let pivot = &mut pivot[0];
    // The pivot goes to the greater side as `&mut` (each side gets its own
    // bound), so only `T: Send` is needed.
    join2(
        || quick(less, cmp, leaf, ancestor, uneven),
        || quick(greater, cmp, leaf, Some(pivot), uneven),
    );
}

/// Moves the items matching `goes_left` to the front (branch-free Lomuto:
/// always swap, advance the boundary by the comparison); returns their
/// count.
fn partition<T>(v: &mut [T], goes_left: impl Fn(&T) -> bool) -> usize {
    let mut left = 0;
    for i in 0..v.len() {
        let l = goes_left(&v[i]);
        v.swap(left, i);
        left += l as usize;
    }
    left
}

fn choose_pivot<T, F: Fn(&T, &T) -> Ordering>(v: &[T], cmp: &F) -> usize {
    let len = v.len();
    let median3 = |a: usize, b: usize, c: usize| {
        let ab = lt(cmp, &v[a], &v[b]);
        let bc = lt(cmp, &v[b], &v[c]);
        if ab == bc {
            return b;
        }
        let ac = lt(cmp, &v[a], &v[c]);
        if ab == ac {
            c
        } else {
            a
        }
    };
    let (a, b, c) = (len / 4, len / 2, len / 4 * 3);
    if len < 128 {
        return median3(a, b, c);
    }
    median3(
        median3(a - 1, a, a + 1),
        median3(b - 1, b, b + 1),
        median3(c - 1, c, c + 1),
    )
}

/// Sorts `v` by `cmp`, keeping equal items in their order.
pub(crate) fn stable<T, F>(v: &mut [T], cmp: &F)
where
    T: Send,
    F: Fn(&T, &T) -> Ordering + Sync,
{
    let threads = threads();
    if threads == 1 || v.len() <= MERGE_LEAF * 2 || size_of::<T>() == 0 {
        v.sort_by(cmp);
        return;
    }
    // Pieces: a few per worker, so a slow one can be helped with.
    let leaf = (v.len() / (threads * 4)).max(MERGE_LEAF);
    let mut buf: Vec<MaybeUninit<T>> = Vec::with_capacity(v.len());
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { buf.set_len(v.len()) };
    merge_sort(v, &mut buf, cmp, leaf);
}

fn merge_sort<T, F>(v: &mut [T], buf: &mut [MaybeUninit<T>], cmp: &F, leaf: usize)
where
    T: Send,
    F: Fn(&T, &T) -> Ordering + Sync,
{
    let len = v.len();
    if len <= leaf {
        v.sort_by(cmp);
        return;
    }
    let mid = len / 2;
    {
        let (v1, v2) = v.split_at_mut(mid);
        let (b1, b2) = buf.split_at_mut(mid);
        join2(
            || merge_sort(v1, b1, cmp, leaf),
            || merge_sort(v2, b2, cmp, leaf),
        );
    }
    if !lt(cmp, &v[mid], &v[mid - 1]) {
        return; // already in order
    }
    // SAFETY: `buf` has room for `len` items and does not overlap `v`;
    // from here until the merge has written every slot of `v` back, each
    // item lives in `buf` only, and every path (unwinding included)
    // writes it back exactly once (see `Hole` and `merge`).
    unsafe {
        let src = buf.as_mut_ptr().cast::<T>();
        ptr::copy_nonoverlapping(v.as_ptr(), src, len);
        merge(
            Run::new(src, mid),
            Run::new(src.add(mid), len - mid),
            Out(v.as_mut_ptr()),
            cmp,
        );
    }
}

/// A sorted run of items in the buffer.
struct Run<T> {
    ptr: *const T,
    len: usize,
}

/// Where a merge writes.
struct Out<T>(*mut T);

impl<T> Clone for Run<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Run<T> {}
impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<T> {}

// SAFETY: a `Run`/`Out` is the exclusive right to move the items of that
// range (merges are split into disjoint ranges), so sending it sends `T`s.
unsafe impl<T: Send> Send for Run<T> {}
// SAFETY: as for `Run`.
unsafe impl<T: Send> Send for Out<T> {}

impl<T> Run<T> {
    fn new(ptr: *const T, len: usize) -> Self {
        Run { ptr, len }
    }
    /// # Safety
    /// `i < self.len`.
    unsafe fn at(&self, i: usize) -> &T {
        // SAFETY: the caller keeps `i` inside the run, whose items are
        // initialised.
        unsafe { &*self.ptr.add(i) }
    }
    fn split(self, at: usize) -> (Self, Self) {
        (
            Run::new(self.ptr, at),
            Run::new(self.ptr.wrapping_add(at), self.len - at),
        )
    }
}

/// Merges `a` then `b` into `out` (`a.len + b.len` slots), stably.
///
/// # Safety
/// The runs are sorted, initialised, and owned by this call; `out` is
/// writable for their combined length and overlaps neither.
unsafe fn merge<T, F>(a: Run<T>, b: Run<T>, out: Out<T>, cmp: &F)
where
    T: Send,
    F: Fn(&T, &T) -> Ordering + Sync,
{
    if a.len + b.len <= MERGE_SEQ || a.len == 0 || b.len == 0 {
        // SAFETY: forwarded.
        return unsafe { merge_seq(a, b, out, cmp) };
    }
    // Until the split is known, unwinding copies both runs out unmerged.
    let hole = Hole {
        a,
        b,
        out: out.0,
        a_done: 0,
        b_done: 0,
    };
    let (ai, bi) = if a.len >= b.len {
        let ai = a.len / 2;
        // SAFETY: `a.len > 0`, so `a.len / 2 < a.len`.
        let pivot = unsafe { a.at(ai) };
        // b's items strictly less than a[ai] precede it (stability).
        (ai, partition_point(b, |x| lt(cmp, x, pivot)))
    } else {
        let bi = b.len / 2;
        // SAFETY: `b.len > 0`, so `b.len / 2 < b.len`.
        let pivot = unsafe { b.at(bi) };
        // a's items not greater than b[bi] precede it.
        (partition_point(a, |x| !lt(cmp, pivot, x)), bi)
    };
    std::mem::forget(hole);
    let (a1, a2) = a.split(ai);
    let (b1, b2) = b.split(bi);
    let out2 = Out(out.0.wrapping_add(ai + bi));
    join2(
        // SAFETY: disjoint halves of what this call owns.
        || unsafe { merge(a1, b1, out, cmp) },
        // SAFETY: as above.
        move || unsafe { merge(a2, b2, out2, cmp) },
    );
}

fn partition_point<T>(run: Run<T>, pred: impl Fn(&T) -> bool) -> usize {
    let (mut lo, mut hi) = (0, run.len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        // SAFETY: `mid < hi <= run.len`.
        if pred(unsafe { run.at(mid) }) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// # Safety
/// As for [`merge`].
unsafe fn merge_seq<T, F>(a: Run<T>, b: Run<T>, out: Out<T>, cmp: &F)
where
    F: Fn(&T, &T) -> Ordering,
{
    let mut hole = Hole {
        a,
        b,
        out: out.0,
        a_done: 0,
        b_done: 0,
    };
    while hole.a_done < a.len && hole.b_done < b.len {
        // SAFETY: both indices are inside their runs; the taken item is
        // copied to the next free output slot and counted as moved.
        unsafe {
            let (x, y) = (a.at(hole.a_done), b.at(hole.b_done));
            let dst = hole.out.add(hole.a_done + hole.b_done);
            if lt(cmp, y, x) {
                ptr::copy_nonoverlapping(y, dst, 1);
                hole.b_done += 1;
            } else {
                ptr::copy_nonoverlapping(x, dst, 1);
                hole.a_done += 1;
            }
        }
    }
    // `hole`'s drop copies whatever remains of either run.
}

/// The unmerged rest of two runs: copied, in order, behind what was
/// merged, when the merge ends or unwinds.
struct Hole<T> {
    a: Run<T>,
    b: Run<T>,
    out: *mut T,
    a_done: usize,
    b_done: usize,
}

impl<T> Drop for Hole<T> {
    fn drop(&mut self) {
        // SAFETY: the output slots from `a_done + b_done` on are exactly as
        // many as the items left in both runs; each is moved once.
        unsafe {
            let mut dst = self.out.add(self.a_done + self.b_done);
            let rest_a = self.a.len - self.a_done;
            ptr::copy_nonoverlapping(self.a.ptr.add(self.a_done), dst, rest_a);
            dst = dst.add(rest_a);
            let rest_b = self.b.len - self.b_done;
            ptr::copy_nonoverlapping(self.b.ptr.add(self.b_done), dst, rest_b);
        }
    }
}
