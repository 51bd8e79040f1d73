//! Resizing: starting workers, retiring them without losing a task,
//! nudging the supervisor, and the resize history.

use super::queue::{GlobalQueue, Local, LocalQueue};
use super::registry::Registry;
use crate::loom::sync::atomic::{fence, Ordering::SeqCst};
use crate::loom::sync::Arc;
use crate::loom::thread;
use crate::metrics::bump;
use std::panic::{self, AssertUnwindSafe};

impl Registry {
    /// Starts the next worker (index `live`) unless the pool already has
    /// `limit` workers or its threads are being joined (shutdown): then
    /// `Ok(None)`. Step 1 of resizing: under the spare-slot lock, take the
    /// slot's deque, count the worker live and unparked, then start its
    /// thread.
    pub(crate) fn spawn_worker(this: &Arc<Self>, limit: usize) -> std::io::Result<Option<usize>> {
        let self_ = &**this;
        if self_.threads.lock().joining {
            return Ok(None);
        }
        let mut spare = self_.spare.lock();
        let index = self_.live.load(SeqCst);
        if index >= limit {
            return Ok(None);
        }
        let Some(local) = spare.get_mut(index).and_then(Option::take) else {
            return Err(std::io::Error::other("no free worker slot"));
        };
        self_.sleep.add_worker();
        self_.live.store(index + 1, SeqCst);
        drop(spare);
        let mut builder = thread::Builder::new().name(self_.worker_name(index));
        if let Some(size) = self_.config.stack_size {
            builder = builder.stack_size(size);
        }
        let registry = Arc::clone(this);
        match builder.spawn(move || super::worker::run(registry, index, local)) {
            Ok(handle) => {
                let mut threads = self_.threads.lock();
                if threads.joining {
                    // Shutdown took the handles to join after this worker
                    // was counted: join it here (the pool is closed and
                    // drained, so it leaves at once) rather than leak it.
                    drop(threads);
                    let _ = handle.join();
                    return Ok(Some(index));
                }
                let old = threads.workers[index].replace(handle);
                drop(threads);
                if let Some(old) = old {
                    // A retired worker of this slot; it has left its loop.
                    let _ = old.join();
                }
                Ok(Some(index))
            }
            Err(e) => {
                // The slot's deque went with the closure: this slot stays
                // unused (the pool can no longer grow past it).
                self_.live.store(index, SeqCst);
                self_.sleep.remove_worker();
                Err(e)
            }
        }
    }

    /// Counts slot `live` live without starting its thread, and hands its
    /// deque to the model, which plays that worker's part.
    #[cfg(all(loom, test))]
    pub(crate) fn take_slot_for_model(&self) -> Local {
        let mut spare = self.spare.lock();
        let index = self.live.load(SeqCst);
        let local = spare[index].take().expect("a free slot");
        self.sleep.add_worker();
        self.live.store(index + 1, SeqCst);
        local
    }

    /// Worker threads started and not yet joined (loom models check that
    /// shutdown leaves none).
    #[cfg(all(loom, test))]
    pub(crate) fn unjoined_workers(&self) -> usize {
        self.threads.lock().workers.iter().flatten().count()
    }

    /// The most live workers the system's thread limits allow, and the
    /// limit that binds (`None`: no limit known). Read from the system when
    /// the pool is built and again, at most once a second, while growth
    /// presses against it (the reading scans `/proc`).
    pub(crate) fn worker_ceiling(&self, wanted: usize) -> Option<(usize, &'static str)> {
        let mut cached = self.ceiling.lock();
        let stale = cached.map_or(true, |(max, _, at)| {
            wanted > max && at.elapsed() >= std::time::Duration::from_secs(1)
        });
        if stale {
            *cached = super::limits::current().map(|c| {
                (
                    self.live_workers() + c.threads,
                    c.limit,
                    std::time::Instant::now(),
                )
            });
        }
        cached.map(|(max, limit, _)| (max, limit))
    }

    /// Grows the pool towards `target` workers, capped at the system's
    /// thread limits, with help: every worker started meanwhile first
    /// starts one more (`help_grow`). Returns the live workers after, and
    /// the limit that capped the growth, if one did (fewer workers may also
    /// start if the OS refuses a thread or shutdown began).
    pub(crate) fn grow_to(this: &Arc<Self>, target: usize) -> (usize, Option<&'static str>) {
        let (target, capped) = match this.worker_ceiling(target) {
            Some((max, limit)) if target > max => (max, Some(limit)),
            _ => (target, None),
        };
        // Relaxed: a hint for helpers; `spawn_worker` checks the limit
        // under the spare-slot lock.
        this.grow_target
            .store(target, std::sync::atomic::Ordering::Relaxed);
        // A shrink asked for earlier is over: the workers started now, and
        // those it had not yet retired, stay until the next one.
        this.retire_at.store(usize::MAX, SeqCst);
        while let Ok(Some(_)) = Registry::spawn_worker(this, target) {}
        this.grow_target
            .store(0, std::sync::atomic::Ordering::Relaxed);
        (this.live_workers(), capped)
    }

    /// On a new worker's thread, before it looks for work: while the pool
    /// grows, start one more worker.
    pub(crate) fn help_grow(this: &Arc<Self>) {
        // Relaxed: see `grow_to`.
        let target = this.grow_target.load(std::sync::atomic::Ordering::Relaxed);
        if target != 0 && this.live_workers() < target {
            let _ = Registry::spawn_worker(this, target);
        }
    }

    /// Asks the workers from the highest down to index `target` to retire
    /// when idle, the highest first, and wakes it; each one that retires
    /// wakes the next (`finish_retire`).
    pub(crate) fn request_retire(&self, target: usize) {
        self.retire_at.store(target, SeqCst);
        let live = self.live.load(SeqCst);
        if live > 0 {
            // A parked worker re-checks `should_retire` when woken.
            self.sleep.parker(live - 1).unpark();
        }
    }

    /// The target of a shrink still under way: asked for, and some of the
    /// workers it retires not yet gone (the highest was busy, or has not
    /// run since it was woken).
    pub(crate) fn shrinking_to(&self) -> Option<usize> {
        let at = self.retire_at.load(SeqCst);
        (at != usize::MAX && self.live.load(SeqCst) > at.max(self.config.min_workers)).then_some(at)
    }

    /// Wakes the highest live worker (to look at `should_retire` again).
    pub(crate) fn wake_highest(&self) {
        let live = self.live.load(SeqCst);
        if live > 0 {
            self.sleep.parker(live - 1).unpark();
        }
    }

    /// Whether worker `index` should retire now: it is the highest live
    /// worker and above the retirement target (never below `min_workers`).
    pub(crate) fn should_retire(&self, index: usize) -> bool {
        index >= self.retire_at.load(SeqCst)
            && index >= self.config.min_workers
            && index + 1 == self.live.load(SeqCst)
    }

    /// Step 2 of retiring, on the retiring worker while it is still live:
    /// its deque's jobs go to the injector, its inbox's shards to the
    /// inboxes of the workers that remain.
    pub(crate) fn hand_over(&self, index: usize, local: &Local) {
        let mut moved = false;
        while let Some(job) = local.pop() {
            self.injector.push(job);
            moved = true;
        }
        // Worker 0 has nobody to hand its inbox to: the slot's next
        // worker finds what is left there.
        if index > 0 {
            moved |= self.rehome(index, index);
        }
        if moved {
            self.sleep.notify_one();
        }
    }

    /// Step 3 of retiring, after the worker left its loop: under the
    /// spare-slot lock, give the deque back to its slot and stop counting
    /// the worker. Then the other half of the stray-turn handshake (see
    /// `push_inbox`): a shard turn that a submitter pushed into this
    /// inbox after step 2, on a stale count of live workers, is either
    /// seen here or the submitter sees this worker gone; whoever sees it
    /// moves it to a live inbox. Searches look only at live workers'
    /// queues, so a turn left here would wait for the slot's next worker.
    pub(crate) fn finish_retire(&self, index: usize, local: Local) {
        let mut spare = self.spare.lock();
        spare[index] = Some(local);
        self.live.store(index, SeqCst);
        self.sleep.remove_worker();
        drop(spare);
        fence(SeqCst);
        if index > 0 && self.rehome(index, index) {
            self.sleep.notify_one();
        }
        // The next worker down, now the highest, retires too if the shrink
        // reaches it: wake it to see (a parked worker looks only when woken).
        if index > 0 && self.should_retire(index - 1) {
            self.sleep.parker(index - 1).unpark();
        }
    }

    /// Moves the shard turns in retired worker `from`'s inbox to the
    /// inboxes of the first `live` workers (`live > 0`); returns whether
    /// it moved any. The caller wakes a worker for them.
    pub(crate) fn rehome(&self, from: usize, live: usize) -> bool {
        let mut moved = false;
        while let Some(job) = self.inboxes[from].pop() {
            let at = job.enqueued();
            self.push_inbox(job.shard_index() % live, job, at);
            moved = true;
        }
        moved
    }

    /// Wakes the supervisor early: at most once between two of its timed
    /// samples (see `rearm_nudge`).
    #[inline]
    pub(crate) fn nudge(&self) {
        // Relaxed first load: a filter; the swap decides.
        if self.config.min_workers < self.max_workers()
            && !self.nudged.load(std::sync::atomic::Ordering::Relaxed)
            && !self.nudged.swap(true, SeqCst)
        {
            self.supervisor.unpark();
        }
    }

    /// Lets the next `nudge` wake the supervisor again. The supervisor calls
    /// it at its timed samples only, so a standing backlog (say, of compute
    /// work the pool will not grow for) wakes it at most once per interval.
    pub(crate) fn rearm_nudge(&self) {
        self.nudged.store(false, SeqCst);
    }

    /// Records a resize (bounded history, counters, callback).
    pub(crate) fn record_resize(&self, event: crate::metrics::ResizeEvent) {
        #[cfg(feature = "tracing")]
        tracing::info!(
            target: "ebbtide",
            pool = %self.config.name,
            from = event.from,
            to = event.to,
            reason = ?event.reason,
            "resize"
        );
        let slot = self.counters.slot(None);
        if event.to > event.from {
            bump(&slot.resizes_up);
        } else {
            bump(&slot.resizes_down);
        }
        if let Some(callback) = &self.config.on_resize {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| callback(&event)));
        }
        let mut history = self.resizes.lock();
        if history.len() == 256 {
            history.pop_front();
        }
        history.push_back(event);
    }

    /// The recorded resizes, oldest first (the last 256).
    pub(crate) fn resize_history(&self) -> Vec<crate::metrics::ResizeEvent> {
        self.resizes.lock().iter().cloned().collect()
    }

    /// Joins retired workers' threads that have left.
    #[cfg(not(loom))]
    pub(crate) fn reap_retired(&self) {
        let live = self.live.load(SeqCst);
        let finished: Vec<_> = {
            let mut threads = self.threads.lock();
            threads.workers[live..]
                .iter_mut()
                .filter(|h| h.as_ref().is_some_and(thread::JoinHandle::is_finished))
                .filter_map(Option::take)
                .collect()
        };
        for handle in finished {
            let _ = handle.join();
        }
    }

    /// loom's join handles cannot tell whether a thread has left; retired
    /// workers are joined at shutdown there.
    #[cfg(loom)]
    pub(crate) fn reap_retired(&self) {}
}
