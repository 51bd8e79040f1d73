//! What a parallel loop runs over: a [`Source`] knows its exact length,
//! splits at any index into two independent halves, and turns into a
//! sequential iterator for one worker's share.

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::Arc;

mod sealed {
    pub trait Sealed {}
}

/// Something a parallel loop can run over: slices, mutable slices, chunks,
/// owned `Vec`s, integer ranges, and [`Par::enumerate`](super::Par::enumerate)
/// of any of them. The trait is sealed; its methods are the splitting
/// protocol the loops drive.
pub trait Source: Send + Sized + sealed::Sealed {
    /// The items it yields.
    type Item;
    /// The sequential iterator one worker runs over its share.
    type Seq: Iterator<Item = Self::Item>;
    /// The exact number of items.
    fn len(&self) -> usize;
    /// Whether it yields nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The first `index` items and the rest; `index <= self.len()`.
    fn split_at(self, index: usize) -> (Self, Self);
    /// The items, in order, on this thread.
    fn into_seq(self) -> Self::Seq;
}

/// The items of a shared slice, as `&T`.
pub struct Slice<'a, T>(pub(crate) &'a [T]);

impl<T: Sync> sealed::Sealed for Slice<'_, T> {}
impl<'a, T: Sync> Source for Slice<'a, T> {
    type Item = &'a T;
    type Seq = std::slice::Iter<'a, T>;
    fn len(&self) -> usize {
        self.0.len()
    }
    fn split_at(self, index: usize) -> (Self, Self) {
        let (a, b) = self.0.split_at(index);
        (Slice(a), Slice(b))
    }
    fn into_seq(self) -> Self::Seq {
        self.0.iter()
    }
}

/// The items of a mutable slice, as `&mut T`.
pub struct SliceMut<'a, T>(pub(crate) &'a mut [T]);

impl<T: Send> sealed::Sealed for SliceMut<'_, T> {}
impl<'a, T: Send> Source for SliceMut<'a, T> {
    type Item = &'a mut T;
    type Seq = std::slice::IterMut<'a, T>;
    fn len(&self) -> usize {
        self.0.len()
    }
    fn split_at(self, index: usize) -> (Self, Self) {
        let (a, b) = self.0.split_at_mut(index);
        (SliceMut(a), SliceMut(b))
    }
    fn into_seq(self) -> Self::Seq {
        self.0.iter_mut()
    }
}

/// Consecutive chunks of a shared slice (the last may be shorter).
pub struct Chunks<'a, T> {
    pub(crate) slice: &'a [T],
    pub(crate) size: usize,
}

impl<T: Sync> sealed::Sealed for Chunks<'_, T> {}
impl<'a, T: Sync> Source for Chunks<'a, T> {
    type Item = &'a [T];
    type Seq = std::slice::Chunks<'a, T>;
    fn len(&self) -> usize {
        self.slice.len().div_ceil(self.size)
    }
    fn split_at(self, index: usize) -> (Self, Self) {
        let at = (index * self.size).min(self.slice.len());
        let (a, b) = self.slice.split_at(at);
        let size = self.size;
        (Chunks { slice: a, size }, Chunks { slice: b, size })
    }
    fn into_seq(self) -> Self::Seq {
        self.slice.chunks(self.size)
    }
}

/// Consecutive chunks of a mutable slice (the last may be shorter).
pub struct ChunksMut<'a, T> {
    pub(crate) slice: &'a mut [T],
    pub(crate) size: usize,
}

impl<T: Send> sealed::Sealed for ChunksMut<'_, T> {}
impl<'a, T: Send> Source for ChunksMut<'a, T> {
    type Item = &'a mut [T];
    type Seq = std::slice::ChunksMut<'a, T>;
    fn len(&self) -> usize {
        self.slice.len().div_ceil(self.size)
    }
    fn split_at(self, index: usize) -> (Self, Self) {
        let at = (index * self.size).min(self.slice.len());
        let (a, b) = self.slice.split_at_mut(at);
        let size = self.size;
        (ChunksMut { slice: a, size }, ChunksMut { slice: b, size })
    }
    fn into_seq(self) -> Self::Seq {
        self.slice.chunks_mut(self.size)
    }
}

/// The integers of a range.
pub struct Range<T> {
    start: T,
    len: usize,
}

macro_rules! range_source {
    ($($t:ty => $u:ty),*) => {$(
        impl sealed::Sealed for Range<$t> {}
        impl Source for Range<$t> {
            type Item = $t;
            type Seq = std::ops::Range<$t>;
            fn len(&self) -> usize {
                self.len
            }
            fn split_at(self, index: usize) -> (Self, Self) {
                // Two's-complement wrapping lands on the true midpoint: it
                // lies inside the range, so it fits in `$t`.
                let mid = self.start.wrapping_add(index as $t);
                (
                    Range { start: self.start, len: index },
                    Range { start: mid, len: self.len - index },
                )
            }
            fn into_seq(self) -> Self::Seq {
                self.start..self.start.wrapping_add(self.len as $t)
            }
        }
        impl From<std::ops::Range<$t>> for Range<$t> {
            fn from(r: std::ops::Range<$t>) -> Self {
                let len = if r.end > r.start {
                    usize::try_from(r.end.wrapping_sub(r.start) as $u)
                        .expect("a parallel range's length fits in usize")
                } else {
                    0
                };
                Range { start: r.start, len }
            }
        }
    )*};
}

range_source!(u8 => u8, u16 => u16, u32 => u32, u64 => u64, usize => usize,
    i8 => u8, i16 => u16, i32 => u32, i64 => u64, isize => usize);

/// The items of an owned `Vec`, moved out one by one; items no worker
/// took (after a panic or an early stop) are dropped with their share.
pub struct VecItems<T> {
    buf: Arc<Allocation<T>>,
    start: *mut T,
    len: usize,
}

/// The allocation of a `Vec` whose items have been handed to
/// [`VecItems`]: freed, without touching the items, when the last share
/// is gone.
struct Allocation<T> {
    ptr: *mut T,
    cap: usize,
}

// SAFETY: `Allocation` only frees memory (it never reads or drops a `T`);
// freeing from any thread is what `Vec<T>: Send` relies on too.
unsafe impl<T> Send for Allocation<T> {}
// SAFETY: as above; shared access does nothing but hold the memory.
unsafe impl<T> Sync for Allocation<T> {}

impl<T> Drop for Allocation<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`cap` come from a `Vec<T>` taken apart in
        // `VecItems::new`; length 0 frees the memory and drops no item
        // (every item was moved out or dropped by its share).
        drop(unsafe { Vec::from_raw_parts(self.ptr, 0, self.cap) });
    }
}

// SAFETY: a `VecItems` owns the items in `start..start + len` exclusively
// (shares never overlap), so sending it sends those `T`s, which `T: Send`
// allows; the shared `Allocation` is `Send + Sync`.
unsafe impl<T: Send> Send for VecItems<T> {}

impl<T> VecItems<T> {
    pub(crate) fn new(vec: Vec<T>) -> Self {
        let mut vec = ManuallyDrop::new(vec);
        let (ptr, len, cap) = (vec.as_mut_ptr(), vec.len(), vec.capacity());
        VecItems {
            buf: Arc::new(Allocation { ptr, cap }),
            start: ptr,
            len,
        }
    }

    /// Takes the fields out without running `Drop` (which would drop the
    /// items).
    fn into_parts(self) -> (Arc<Allocation<T>>, *mut T, usize) {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the `Arc` is
        // moved out exactly once.
        let buf = unsafe { ptr::read(&this.buf) };
        (buf, this.start, this.len)
    }
}

impl<T> Drop for VecItems<T> {
    fn drop(&mut self) {
        // SAFETY: this share owns `len` initialised items from `start`,
        // none of them moved out; they are dropped once, here.
        unsafe { ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.start, self.len)) };
    }
}

impl<T: Send> sealed::Sealed for VecItems<T> {}
impl<T: Send> Source for VecItems<T> {
    type Item = T;
    type Seq = VecSeq<T>;
    fn len(&self) -> usize {
        self.len
    }
    fn split_at(self, index: usize) -> (Self, Self) {
        assert!(index <= self.len);
        let (buf, start, len) = self.into_parts();
        // SAFETY: `index <= len`, so `start + index` stays within (or one
        // past the end of) this share's items.
        let mid = unsafe { start.add(index) };
        let left = VecItems {
            buf: Arc::clone(&buf),
            start,
            len: index,
        };
        let right = VecItems {
            buf,
            start: mid,
            len: len - index,
        };
        (left, right)
    }
    fn into_seq(self) -> Self::Seq {
        let (buf, next, left) = self.into_parts();
        VecSeq {
            _buf: buf,
            next,
            left,
            _items: PhantomData,
        }
    }
}

/// The sequential side of [`VecItems`].
pub struct VecSeq<T> {
    _buf: Arc<Allocation<T>>,
    next: *mut T,
    left: usize,
    _items: PhantomData<T>,
}

impl<T> Iterator for VecSeq<T> {
    type Item = T;
    #[inline]
    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        // SAFETY: `next` points at this share's first unread item; it is
        // read once, then the share no longer counts it.
        let item = unsafe { ptr::read(self.next) };
        // SAFETY: at most one past this share's last item.
        self.next = unsafe { self.next.add(1) };
        self.left -= 1;
        Some(item)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> Drop for VecSeq<T> {
    fn drop(&mut self) {
        // SAFETY: the unread items of this share, dropped once.
        unsafe { ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.next, self.left)) };
    }
}

/// Items paired with their index.
pub struct Enumerate<S> {
    pub(crate) inner: S,
    pub(crate) offset: usize,
}

impl<S: Source> sealed::Sealed for Enumerate<S> {}
impl<S: Source> Source for Enumerate<S> {
    type Item = (usize, S::Item);
    type Seq = std::iter::Zip<std::ops::Range<usize>, S::Seq>;
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn split_at(self, index: usize) -> (Self, Self) {
        let (a, b) = self.inner.split_at(index);
        let offset = self.offset;
        (
            Enumerate { inner: a, offset },
            Enumerate {
                inner: b,
                offset: offset + index,
            },
        )
    }
    fn into_seq(self) -> Self::Seq {
        let len = self.inner.len();
        (self.offset..self.offset + len).zip(self.inner.into_seq())
    }
}
