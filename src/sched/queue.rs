//! A small trait in front of the task queues.
//!
//! The pool's scheduling logic talks to three kinds of queue: a worker's own
//! deque ([`LocalQueue`], owned by one thread), the handle other workers steal
//! from it with ([`StealQueue`]), and the global injector ([`GlobalQueue`]).
//! Normal builds use `crossbeam-deque`'s work-stealing deques and the pool's
//! own injector (`injector/`, model-checked on its own). crossbeam's deques
//! are not loom-aware, so loom models of the pool use [`simple`], a mutex
//! around a `VecDeque` built on the crate's sync shim, and loom explores the
//! pool's logic over that.

use crate::task::job::JobRef;

/// The outcome of a steal attempt.
#[derive(Debug)]
pub(crate) enum Steal {
    /// The queue was empty.
    Empty,
    /// A job was taken.
    Success(JobRef),
    /// Lost a race; the queue may still hold jobs. (Only the lock-free
    /// queues lose races; the loom backend never does.)
    #[cfg_attr(loom, allow(dead_code))]
    Retry,
}

/// A worker's own deque: LIFO for the owner, FIFO for thieves.
pub(crate) trait LocalQueue: Sized {
    /// The thief's handle.
    type Stealer: StealQueue<Local = Self>;
    /// A new, empty, LIFO deque.
    fn new_lifo() -> Self;
    /// A handle other threads can steal with.
    fn stealer(&self) -> Self::Stealer;
    /// Pushes a job at the owner's end.
    fn push(&self, job: JobRef);
    /// Pops the newest job (the owner's end).
    fn pop(&self) -> Option<JobRef>;
    /// Whether the deque is empty (exact for its owner, who alone pushes).
    fn is_empty(&self) -> bool;
}

/// Steals from another worker's deque.
pub(crate) trait StealQueue: Clone + Send + Sync {
    /// The deque type a batch can be stolen into.
    type Local;
    /// Steals the oldest job.
    fn steal(&self) -> Steal;
    /// Whether the deque is empty (a racy hint, as a steal's own check is;
    /// cheaper than a steal that finds nothing).
    fn is_empty(&self) -> bool;
    /// How many jobs the deque holds (a racy hint).
    fn len(&self) -> usize;
}

/// The global FIFO injector every thread may push to.
pub(crate) trait GlobalQueue: Send + Sync {
    /// The deque type a batch can be taken into.
    type Local;
    /// A new, empty queue.
    fn new() -> Self;
    /// Pushes a job at the back.
    fn push(&self, job: JobRef);
    /// Takes the oldest job (retrying lost races).
    fn pop(&self) -> Option<JobRef>;
    /// Takes a batch of the oldest jobs, at most `limit` (at least one):
    /// the oldest is returned, the others go to `dest` (popped from there
    /// oldest first).
    fn pop_batch(&self, dest: &Self::Local, limit: usize) -> Option<JobRef>;
    /// Whether it is empty (a racy hint).
    fn is_empty(&self) -> bool;
    /// How many jobs it holds (a racy hint).
    fn len(&self) -> usize;
}

#[cfg(not(loom))]
mod crossbeam {
    use super::{GlobalQueue, LocalQueue, Steal, StealQueue};
    use crate::sched::injector;
    use crate::task::job::JobRef;
    use crossbeam_deque as cd;

    fn convert(s: cd::Steal<JobRef>) -> Steal {
        match s {
            cd::Steal::Empty => Steal::Empty,
            cd::Steal::Success(job) => Steal::Success(job),
            cd::Steal::Retry => Steal::Retry,
        }
    }

    /// A worker's crossbeam deque (owner end).
    pub(crate) struct Local(cd::Worker<JobRef>);
    /// The thief's end of a [`Local`].
    #[derive(Clone)]
    pub(crate) struct Stealer(cd::Stealer<JobRef>);
    /// The pool's own injector (`injector/`).
    pub(crate) struct Injector(injector::Injector<JobRef>);

    impl LocalQueue for Local {
        type Stealer = Stealer;
        #[inline]
        fn new_lifo() -> Self {
            Local(cd::Worker::new_lifo())
        }
        #[inline]
        fn stealer(&self) -> Stealer {
            Stealer(self.0.stealer())
        }
        #[inline]
        fn push(&self, job: JobRef) {
            self.0.push(job)
        }
        #[inline]
        fn pop(&self) -> Option<JobRef> {
            self.0.pop()
        }
        #[inline]
        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    impl StealQueue for Stealer {
        type Local = Local;
        #[inline]
        fn steal(&self) -> Steal {
            convert(self.0.steal())
        }
        #[inline]
        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
        #[inline]
        fn len(&self) -> usize {
            self.0.len()
        }
    }

    impl GlobalQueue for Injector {
        type Local = Local;
        #[inline]
        fn new() -> Self {
            Injector(injector::Injector::new())
        }
        #[inline]
        fn push(&self, job: JobRef) {
            self.0.push(job)
        }
        #[inline]
        fn pop(&self) -> Option<JobRef> {
            self.0.pop()
        }
        #[inline]
        fn pop_batch(&self, dest: &Local, limit: usize) -> Option<JobRef> {
            self.0.pop_batch(limit, |job| dest.0.push(job))
        }
        #[inline]
        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
        #[inline]
        fn len(&self) -> usize {
            self.0.len()
        }
    }
}

/// A plain mutex-and-`VecDeque` queue on the sync shim, for loom models.
#[cfg_attr(not(loom), allow(dead_code))]
pub(crate) mod simple {
    use super::{GlobalQueue, LocalQueue, Steal, StealQueue};
    use crate::loom::sync::{Arc, Mutex};
    use crate::task::job::JobRef;
    use std::collections::VecDeque;

    /// Shared storage of one simple queue.
    #[derive(Clone)]
    pub(crate) struct Shared(Arc<Mutex<VecDeque<JobRef>>>);

    impl Shared {
        #[inline]
        fn new() -> Self {
            Shared(Arc::new(Mutex::new(VecDeque::new())))
        }
        #[inline]
        fn pop_front(&self) -> Steal {
            match self.0.lock().pop_front() {
                Some(job) => Steal::Success(job),
                None => Steal::Empty,
            }
        }
    }

    /// A worker's deque: owner pops from the back, thieves from the front.
    pub(crate) struct Local(Shared);
    /// The thief's handle of a [`Local`].
    #[derive(Clone)]
    pub(crate) struct Stealer(Shared);
    /// The global queue.
    pub(crate) struct Injector(Shared);

    impl LocalQueue for Local {
        type Stealer = Stealer;
        #[inline]
        fn new_lifo() -> Self {
            Local(Shared::new())
        }
        #[inline]
        fn stealer(&self) -> Stealer {
            Stealer(self.0.clone())
        }
        #[inline]
        fn push(&self, job: JobRef) {
            self.0 .0.lock().push_back(job);
        }
        #[inline]
        fn pop(&self) -> Option<JobRef> {
            self.0 .0.lock().pop_back()
        }
        #[inline]
        fn is_empty(&self) -> bool {
            self.0 .0.lock().is_empty()
        }
    }

    impl StealQueue for Stealer {
        type Local = Local;
        #[inline]
        fn steal(&self) -> Steal {
            self.0.pop_front()
        }
        #[inline]
        fn is_empty(&self) -> bool {
            self.0 .0.lock().is_empty()
        }
        #[inline]
        fn len(&self) -> usize {
            self.0 .0.lock().len()
        }
    }

    impl GlobalQueue for Injector {
        type Local = Local;
        #[inline]
        fn new() -> Self {
            Injector(Shared::new())
        }
        #[inline]
        fn pop_batch(&self, dest: &Local, limit: usize) -> Option<JobRef> {
            let mut src = self.0 .0.lock();
            let first = src.pop_front()?;
            let extra = (src.len() / 2).min(limit.saturating_sub(1));
            let moved: Vec<JobRef> = src.drain(..extra).collect();
            drop(src);
            let mut dst = dest.0 .0.lock();
            // The owner pops from the back: the oldest goes last.
            for job in moved.into_iter().rev() {
                dst.push_back(job);
            }
            Some(first)
        }
        #[inline]
        fn push(&self, job: JobRef) {
            self.0 .0.lock().push_back(job);
        }
        #[inline]
        fn pop(&self) -> Option<JobRef> {
            self.0 .0.lock().pop_front()
        }
        #[inline]
        fn is_empty(&self) -> bool {
            self.0 .0.lock().is_empty()
        }
        #[inline]
        fn len(&self) -> usize {
            self.0 .0.lock().len()
        }
    }
}

#[cfg(not(loom))]
pub(crate) use self::crossbeam::{Injector, Local, Stealer};
#[cfg(loom)]
pub(crate) use self::simple::{Injector, Local, Stealer};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{simple, GlobalQueue, LocalQueue};
    use crate::task::job::shard_job;

    /// A batch through the trait: the oldest job returned, at most
    /// `limit − 1` more moved to the deque, which pops them oldest first;
    /// every job taken once.
    fn batch_keeps_the_order<G: GlobalQueue<Local = L>, L: LocalQueue>(injector: G, local: L) {
        for i in 0..100 {
            injector.push(shard_job(i));
        }
        let first = injector.pop_batch(&local, 3).expect("100 queued");
        assert_eq!(first.shard_index(), 0);
        let mut moved = Vec::new();
        while let Some(job) = local.pop() {
            moved.push(job.shard_index());
        }
        assert_eq!(moved, [1, 2]);
        let mut seen = vec![0, 1, 2];
        while let Some(job) = injector.pop_batch(&local, usize::MAX) {
            seen.push(job.shard_index());
            while let Some(job) = local.pop() {
                seen.push(job.shard_index());
            }
        }
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert!(injector.is_empty() && injector.pop().is_none());
    }

    #[test]
    fn a_batch_keeps_the_order_on_the_lock_free_queues() {
        batch_keeps_the_order(super::Injector::new(), super::Local::new_lifo());
    }

    #[test]
    fn a_batch_keeps_the_order_on_the_loom_queues() {
        batch_keeps_the_order(simple::Injector::new(), simple::Local::new_lifo());
    }
}
