//! Ending what waits on the wheel before its time: a retry hurried by its
//! handle's `cancel`, a periodic task's next run taken off by its handle,
//! and any entry whose task's token is cancelled (see the parent module's
//! docs and `CancelToken::watch`).

use super::{Entry, State, CANCELLED};
use crate::error::TaskError;
use crate::metrics::bump;
use crate::sched::registry::Registry;
use crate::task::cancel::Watcher;
use crate::task::CancelToken;
use crate::time::wheel::TimerId;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc as StdArc;

/// Watches a waiting task's token (see `CancelToken::watch`): when it is
/// cancelled, the task's entry ends now, not at its due time.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct TimerWatch {
    registry: std::sync::Weak<Registry>,
    /// The entry's id on the wheel (`u64::MAX`: not there yet). Relaxed:
    /// stored and read under the wheel's lock.
    pub(super) id: AtomicU64,
}

impl Watcher for TimerWatch {
    fn cancelled(&self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.token_cancelled(&self.id);
        }
    }
}

impl Registry {
    /// Hands a retry just put on the wheel as `id` the means to be
    /// hurried by its handle's `cancel`; returns its id. Called under the
    /// wheel's lock, before the wheel's gauge shows the entry: whoever saw
    /// the retry waiting and then cancelled finds it hurriable (the lock
    /// order is the wheel's, then the slot's; `cancel` takes the slot's
    /// alone, then hurries). Cancelled already (while its attempt ended,
    /// after that attempt's last look at its token): due at the next tick
    /// instead, for the driver to fire (never fired here, where the batch
    /// that holds its shard may still be ending).
    #[cfg(not(loom))]
    pub(super) fn await_retry(
        &self,
        state: &mut crate::loom::sync::MutexGuard<'_, State>,
        id: TimerId,
        wait: crate::task::job::RetryWait,
    ) -> Option<(TimerId, u64)> {
        let weak = self.this.get().cloned();
        let hurry = move || {
            weak.and_then(|w| w.upgrade())
                .is_some_and(|registry| registry.hurry_retry(id))
        };
        if wait(Box::new(hurry)) {
            return None;
        }
        Some(Self::retime_locked(state, id))
    }

    /// Moves an entry just put on the wheel to the next tick, for the
    /// driver to fire; returns its new id and due tick.
    pub(super) fn retime_locked(
        state: &mut crate::loom::sync::MutexGuard<'_, State>,
        id: TimerId,
    ) -> (TimerId, u64) {
        let entry = state.wheel.cancel(id).expect("just inserted");
        let due = state.wheel.elapsed() + 1;
        let id = state
            .wheel
            .insert(due, entry)
            .unwrap_or_else(|_| unreachable!("the next tick is neither due nor too far"));
        (id, due)
    }

    /// What watches `token` for an entry of a task it cancels: none for
    /// the pool's own token (shutdown empties the wheel itself).
    #[cfg(not(loom))]
    pub(super) fn timer_watch(&self, token: Option<&CancelToken>) -> Option<StdArc<TimerWatch>> {
        token.filter(|t| !t.is_quiet())?;
        let registry = self.this.get()?.clone();
        Some(StdArc::new(TimerWatch {
            registry,
            id: AtomicU64::new(u64::MAX),
        }))
    }

    /// Under loom an entry waits for its time, as it would uncancelled.
    #[cfg(loom)]
    pub(super) fn timer_watch(&self, _token: Option<&CancelToken>) -> Option<StdArc<TimerWatch>> {
        None
    }

    /// A waiting task's token was cancelled (its [`TimerWatch`]). A retry
    /// is hurried, as by its handle's `cancel` (`hurry_retry`); any other
    /// entry (a delayed task, a periodic task's next run) ends now as
    /// `Cancelled`, as a periodic handle's `cancel` ends it. Nothing if it
    /// is no longer on the wheel.
    fn token_cancelled(&self, id: &AtomicU64) {
        let mut state = self.timers.state.lock();
        // Relaxed: stored under this lock.
        let id = id.load(Relaxed);
        if id == u64::MAX {
            return;
        }
        let Some(entry) = state.wheel.cancel(TimerId::from_bits(id)) else {
            return;
        };
        if entry.retry {
            self.due_next_tick(state, entry);
            return;
        }
        let periodic = entry.cell().is_some();
        if let Some(cell) = entry.cell() {
            // Relaxed: read and written only under this lock.
            cell.store(CANCELLED, Relaxed);
        }
        self.timers.publish(&state.wheel);
        drop(state);
        if !periodic {
            // A trial of a half-open breaker gives its place back, as a
            // task found cancelled when it starts does.
            self.breaker_no_outcome();
        }
        // Counted first: whoever sees the handle resolve sees it.
        bump(&self.counters.slot(self.own_worker_index()).cancelled);
        entry.job.discard(TaskError::Cancelled);
    }

    /// Under loom a retry waits for its time, as it would uncancelled.
    #[cfg(loom)]
    pub(super) fn await_retry(
        &self,
        _state: &mut crate::loom::sync::MutexGuard<'_, State>,
        _id: TimerId,
        _wait: crate::task::job::RetryWait,
    ) -> Option<(TimerId, u64)> {
        None
    }

    /// A waiting retry whose handle was cancelled: due at the next tick
    /// instead, so that the driver fires it now, and its attempt, seeing
    /// the cancellation, ends the task there (a keyed retry's shard goes
    /// on as when any retry comes due; it is never released from here,
    /// where the batch that held it may still be ending). `false` if it is
    /// no longer on the wheel (due, or run).
    #[cfg(not(loom))]
    fn hurry_retry(&self, id: TimerId) -> bool {
        let mut state = self.timers.state.lock();
        let Some(entry) = state.wheel.cancel(id) else {
            return false;
        };
        self.due_next_tick(state, entry);
        true
    }

    /// Puts an entry taken off the wheel back at the next tick, for the
    /// driver to fire.
    fn due_next_tick(&self, mut state: crate::loom::sync::MutexGuard<'_, State>, entry: Entry) {
        let due = state.wheel.elapsed() + 1;
        if let Err(entry) = self.insert_locked(&mut state, due, entry, None, None) {
            // Not reached: the next tick is never due yet.
            self.fire_now(state, entry);
        }
    }

    /// Takes a periodic task's next run off the wheel (its handle's
    /// `cancel`). Returns whether it was there.
    ///
    /// The cell is marked [`CANCELLED`] under the wheel's lock: a run
    /// going on now (its entry off the wheel) then stops in `reschedule`
    /// instead of going back on the wheel, however late it looked at its
    /// token.
    pub(crate) fn cancel_timer(&self, cell: &AtomicU64) -> bool {
        let removed = {
            let mut state = self.timers.state.lock();
            // Relaxed: read and written only under this lock.
            let id = cell.swap(CANCELLED, Relaxed);
            let removed = (id != u64::MAX && id != CANCELLED)
                .then(|| state.wheel.cancel(TimerId::from_bits(id)))
                .flatten();
            self.timers.publish(&state.wheel);
            removed
        };
        match removed {
            Some(entry) => {
                // Counted first: whoever sees the handle resolve sees it.
                bump(&self.counters.slot(self.own_worker_index()).cancelled);
                entry.job.discard(TaskError::Cancelled);
                true
            }
            None => false,
        }
    }
}
