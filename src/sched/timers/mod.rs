//! Delayed, periodic and retrying tasks: the pool's timing wheel and the
//! one thread that drives it.
//!
//! # Accounting
//! A task on the wheel holds no place in the admission word: it is not
//! queued, and `wait_idle` does not wait for it (a periodic task would
//! never let it return). It is counted in the timers' gauge instead, so
//! that `submitted = ends + queued + running + on the wheel`. When it comes
//! due, the driver takes its `queued` and `pending` places at once,
//! whatever the queue's capacity (it was accepted already), and enqueues
//! it as any task.
//!
//! # Closing
//! Shutdown closes the wheel *before* it closes admission, under the
//! wheel's lock: every place the driver took was taken before the close, so
//! no worker exits with a fired task queued. Closing empties the wheel at
//! once: periodic tasks stop; one-shot delayed tasks and retries the clock
//! has reached run (they are due, not pending), unless under
//! `shutdown_now`; the others are abandoned or run now, as the builder's
//! `PendingTimers` says (`shutdown_now` always abandons). A retry that
//! asks for the wheel after the close is treated the same way; its own
//! `pending` place, not yet retired, keeps the workers alive meanwhile.
//!
//! # The driver
//! Started by the first entry (a pool that never delays a task never runs
//! it), it sleeps until the wheel's next deadline; an insert due earlier
//! than that wakes it. With a user's clock it polls every millisecond of
//! real time, since it cannot sleep until a user's instant.

mod cancel;
mod driver;

use cancel::TimerWatch;

use super::admission::{PENDING_ONE, QUEUED_ONE};
use super::registry::Registry;
use super::Wait;
use crate::error::{SubmitError, TaskError};
use crate::loom::sync::atomic::Ordering::SeqCst;
use crate::loom::sync::{Condvar, Mutex};
use crate::metrics::{bump, AtomicHistogram};
use crate::task::cancel::Watcher;
use crate::task::job::{Again, Hold, JobRef, Runnable, TaskJob};
use crate::task::CancelToken;
use crate::time::clock::TimerClock;
use crate::time::wheel::{Refused, TimerId, Wheel};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc as StdArc;
use std::time::Instant;

const NO_SHARD: u32 = u32::MAX;

/// What the wheel holds for one task.
pub(crate) struct Entry {
    job: JobRef,
    shard: u32,
    /// A retry (a keyed one holds its shard until it runs).
    retry: bool,
    /// A periodic task's cell, or a tenant task's hold: boxed, so that
    /// the node stays small for the common entry that has neither.
    extra: Option<Box<Extra>>,
}

/// What few entries carry.
#[derive(Default)]
struct Extra {
    /// Where to record the entry's id (periodic tasks, for `cancel`).
    cell: Option<StdArc<AtomicU64>>,
    /// The tenant's queue it goes to when due, not the pool's queues.
    hold: Option<Hold>,
    /// What ends the entry when its task's token is cancelled.
    watch: Option<StdArc<TimerWatch>>,
}

impl Extra {
    fn of(
        cell: Option<StdArc<AtomicU64>>,
        hold: Option<Box<Hold>>,
        watch: Option<StdArc<TimerWatch>>,
    ) -> Option<Box<Extra>> {
        (cell.is_some() || hold.is_some() || watch.is_some()).then(|| {
            Box::new(Extra {
                cell,
                hold: hold.map(|h| *h),
                watch,
            })
        })
    }
}

impl Entry {
    fn shard(&self) -> Option<usize> {
        (self.shard != NO_SHARD).then_some(self.shard as usize)
    }

    fn cell(&self) -> Option<&StdArc<AtomicU64>> {
        self.extra.as_deref().and_then(|e| e.cell.as_ref())
    }

    fn watch(&self) -> Option<&StdArc<TimerWatch>> {
        self.extra.as_deref().and_then(|e| e.watch.as_ref())
    }
}

struct State {
    wheel: Wheel<Entry>,
    closed: bool,
    /// After the close: whether late arrivals are abandoned (else run now).
    abandon: bool,
    started: bool,
    /// The tick the driver sleeps until (`u64::MAX`: until woken), or
    /// `None` while it is awake.
    sleeping_until: Option<u64>,
}

/// The pool's timers.
pub(crate) struct Timers {
    state: Mutex<State>,
    cv: Condvar,
    pub(crate) clock: TimerClock,
    /// Fire time minus due time, in nanoseconds (the driver is the only
    /// writer).
    pub(crate) lateness: AtomicHistogram,
    /// Entries on the wheel (a gauge; relaxed, stored under the lock).
    pending: AtomicUsize,
    /// The wheel's next deadline tick (`u64::MAX`: empty), stored under
    /// the lock: a worker about to park fires what is due itself (see
    /// `poll_if_due`). A hint, relaxed: a stale value costs one look or
    /// leaves the firing to the driver.
    next_due: AtomicU64,
}

/// What to do with delayed tasks still waiting, not yet due, when the pool
/// shuts down (a drain runs those the timer clock has reached). Periodic
/// tasks always stop; `shutdown_now` always abandons.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PendingTimers {
    /// Abandon them (the default): their handles resolve to
    /// [`TaskError::Abandoned`], and they are counted in `abandoned` and
    /// `timers_abandoned`.
    #[default]
    Abandon,
    /// Run them at once, ahead of their time, as part of the drain (a
    /// retrying task gets its next attempt now); counted in
    /// `timers_run_early`.
    RunNow,
}

impl Timers {
    pub(crate) fn new(clock: TimerClock) -> Self {
        let start = clock.elapsed_ticks(clock.now());
        Timers {
            state: Mutex::new(State {
                wheel: Wheel::new(start),
                closed: false,
                abandon: true,
                started: false,
                sleeping_until: None,
            }),
            cv: Condvar::new(),
            clock,
            lateness: AtomicHistogram::default(),
            pending: AtomicUsize::new(0),
            next_due: AtomicU64::new(u64::MAX),
        }
    }

    /// Tasks waiting on the wheel.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }

    /// Records the wheel's size and next deadline (under its lock).
    fn publish(&self, wheel: &Wheel<Entry>) {
        self.pending.store(wheel.len(), Relaxed);
        self.next_due
            .store(wheel.next_deadline().unwrap_or(u64::MAX), Relaxed);
    }
}

/// A periodic task's timer cell after its handle cancelled it. No entry
/// id has these bits: its index half would be `u32::MAX - 1`, an index the
/// wheel's slab would need four billion entries to reach.
pub(crate) const CANCELLED: u64 = u64::MAX - 1;

impl Registry {
    /// Accepts a task to run at `at`: onto the wheel, or, if `at` is not
    /// in the future, into the queues as any task.
    pub(crate) fn schedule_new<R: Runnable>(
        &self,
        body: R,
        at: Instant,
        shard: Option<usize>,
        cell: Option<StdArc<AtomicU64>>,
        hold: Option<Box<Hold>>,
        token: Option<&CancelToken>,
    ) -> Result<(), SubmitError<R>> {
        if self.breaker_refuses() {
            return Err(SubmitError::BreakerOpen(body));
        }
        let timers = &self.timers;
        let due = timers.clock.tick_of(at);
        let mut state = timers.state.lock();
        if state.closed || self.is_closed() {
            drop(state);
            self.breaker_no_outcome();
            return Err(SubmitError::ShutDown(body));
        }
        // A token cancelled already: ended by a worker now, not at its time.
        let cancelled = token.is_some_and(CancelToken::is_cancelled);
        if (due <= state.wheel.elapsed() || cancelled) && hold.is_none() {
            drop(state);
            // Past the breaker already: not through it a second time (a
            // half-open breaker's one trial place would refuse it).
            return self
                .submit_past_breaker(body, Wait::Policy, shard)
                .map(drop);
        }
        let slot = self.counters.slot(self.own_worker_index());
        // Counted before it can end (see `Counters::sum_settled`).
        bump(&slot.submitted);
        bump(&slot.delayed);
        let entry = Entry {
            job: TaskJob::into_job_ref(body),
            shard: shard.map_or(NO_SHARD, |s| s as u32),
            retry: false,
            // Its tenant's queue watches the token too, once it is due.
            extra: Extra::of(
                cell,
                hold.map(|h| h.watching(token)),
                self.timer_watch(token),
            ),
        };
        if let Err(entry) = self.insert_locked(&mut state, due, entry, None, token) {
            // Unreachable (checked above), but never lose a task.
            self.fire_now(state, entry);
        }
        Ok(())
    }

    /// A running task asked to run again (`Outcome::Again`). Returns
    /// whether the task's shard is now held: a keyed retry keeps later
    /// tasks of its shard waiting until it has run again.
    pub(crate) fn reschedule(&self, again: Again, shard: Option<usize>) -> bool {
        let Again {
            job,
            at,
            retry,
            cell,
            hold,
            wait,
            token,
        } = again;
        let held = retry && shard.is_some();
        let entry = Entry {
            job,
            shard: shard.map_or(NO_SHARD, |s| s as u32),
            retry,
            extra: Extra::of(
                cell,
                hold.map(|h| h.watching(token.as_ref())),
                self.timer_watch(token.as_ref()),
            ),
        };
        let mut state = self.timers.state.lock();
        // Relaxed: `cancel_timer` writes the mark under this same lock.
        if entry.cell().is_some_and(|c| c.load(Relaxed) == CANCELLED) {
            // Its handle cancelled it while this run was going, after the
            // run's last look at its token: it stops here instead of
            // waiting on the wheel for a run that would only stop.
            drop(state);
            bump(&self.counters.slot(self.own_worker_index()).cancelled);
            entry.job.discard(TaskError::Cancelled);
            return false;
        }
        if state.closed {
            let abandon = state.abandon;
            drop(state);
            // Inside the shard's batch (held): the batch goes on, and a
            // retry run now is the next task it takes.
            self.settle_closed(entry, abandon, !held);
            return false;
        }
        let mut due = self.timers.clock.tick_of(at);
        if held {
            // A held shard resumes from the driver (with a new turn), never
            // inside the batch that is ending.
            due = due.max(state.wheel.elapsed() + 1);
        }
        match self.insert_locked(&mut state, due, entry, wait, token.as_ref()) {
            Ok(_) => held,
            Err(entry) => {
                self.fire_now(state, entry);
                false
            }
        }
    }

    /// Closes the wheel and empties it (see the module docs). Called by
    /// shutdown before admission closes. Idempotent. `run_due`: entries the
    /// clock has reached run whatever `abandon` says (a draining shutdown).
    pub(crate) fn close_timers(&self, abandon: bool, run_due: bool) {
        let entries = {
            let mut state = self.timers.state.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            state.abandon = abandon;
            self.timers.cv.notify_all();
            // What the clock has reached is due, not pending: a drain runs
            // it whatever the policy, as if the driver had polled first.
            let tick = if run_due {
                self.timers.clock.elapsed_ticks(self.timers.clock.now())
            } else {
                0
            };
            let entries = state.wheel.drain();
            self.timers.publish(&state.wheel);
            // The places of the tasks that run, taken before admission
            // closes (this thread closes it after).
            let run = entries
                .iter()
                .filter(|&&(due, ref e)| {
                    e.cell().is_none() && (!abandon || (run_due && due <= tick))
                })
                .count() as u64;
            self.admission
                .fetch_add(run * (QUEUED_ONE + PENDING_ONE), SeqCst);
            (entries, tick)
        };
        let (entries, tick) = entries;
        let slot = self.counters.slot(self.own_worker_index());
        for (due, entry) in entries {
            if entry.cell().is_some() {
                // A periodic task stops: its normal end.
                bump(&slot.cancelled);
                entry.job.discard(TaskError::Abandoned);
            } else if run_due && due <= tick {
                bump(&slot.timers_fired);
                self.fire(entry);
            } else if abandon {
                self.abandon_entry(entry);
            } else {
                bump(&slot.timers_run_early);
                self.fire(entry);
            }
        }
    }

    /// Inserts `entry` at `due`; hands it back when it is due already. A
    /// retry's `wait` gets the means to be hurried (`await_retry`); an
    /// entry with a watch is kept by `token` (cancelled already: due at the
    /// next tick instead, for the driver to end, never here, where the
    /// batch that holds its shard may still be ending).
    fn insert_locked(
        &self,
        state: &mut crate::loom::sync::MutexGuard<'_, State>,
        due: u64,
        entry: Entry,
        wait: Option<crate::task::job::RetryWait>,
        token: Option<&CancelToken>,
    ) -> Result<TimerId, Entry> {
        let cell = entry.cell().cloned();
        let watch = entry.watch().cloned();
        match state.wheel.insert(due, entry) {
            Ok(id) => {
                let watcher = watch.clone().map(|w| w as StdArc<dyn Watcher>);
                let (id, due) = match (token, watcher) {
                    // Kept under the wheel's lock, before the wheel's gauge
                    // shows the entry; a cancel that comes now waits for
                    // the lock, and finds the id recorded below.
                    (Some(token), Some(watcher)) if !token.watch(&watcher) => {
                        Self::retime_locked(state, id)
                    }
                    _ => wait
                        .and_then(|wait| self.await_retry(state, id, wait))
                        .unwrap_or((id, due)),
                };
                if let Some(cell) = cell {
                    // Relaxed: read and written only under this lock.
                    cell.store(id.to_bits(), Relaxed);
                }
                if let Some(watch) = watch {
                    // Relaxed: read and written only under this lock.
                    watch.id.store(id.to_bits(), Relaxed);
                }
                self.timers.publish(&state.wheel);
                match state.sleeping_until {
                    Some(until) if due < until => self.timers.cv.notify_one(),
                    _ => {}
                }
                if !state.started {
                    state.started = self.start_timer_driver();
                }
                Ok(id)
            }
            Err(Refused::Due(entry)) => Err(entry),
            Err(Refused::TooFar(entry)) => {
                // Delays are validated against `MAX_DELAY`, far inside the
                // wheel's span; should one slip through, it waits the span.
                let farthest = state.wheel.elapsed() + crate::time::wheel::SPAN - 1;
                self.insert_locked(state, farthest, entry, wait, token)
            }
        }
    }

    /// Fires an entry due now, its places taken under the wheel's lock.
    fn fire_now(&self, state: crate::loom::sync::MutexGuard<'_, State>, entry: Entry) {
        self.admission.fetch_add(QUEUED_ONE + PENDING_ONE, SeqCst);
        drop(state);
        self.fire(entry);
    }

    /// Puts a due entry (its places taken) where a worker finds it.
    fn fire(&self, entry: Entry) {
        let (shard, retry) = (entry.shard(), entry.retry);
        let mut job = entry.job;
        // Off the wheel: its cell and watch are done with.
        let hold = entry.extra.and_then(|extra| extra.hold);
        if let Some(held) = self.held() {
            let hold = match hold {
                // Back to its tenant's queue, with the places just taken.
                Some(hold) => Some(hold),
                // A keyed task due while earlier tasks of its shard
                // without a tenant wait in the unnamed tenant's queue:
                // behind them, so that it takes its key's place as of now.
                None if !retry && shard.is_some_and(|s| held.holds_shard(s)) => {
                    Some(held.unnamed_keyed_hold())
                }
                None => None,
            };
            if let Some(hold) = hold {
                match held.hold(job, shard, hold) {
                    None => return,
                    Some((back, _)) => job = back,
                }
            }
        }
        match shard {
            Some(index) if retry => {
                // The held shard takes its retry first, and a new turn.
                let now = self.stamp();
                job.stamp(now);
                self.shards[index].push_front(job, &self.counters.locks.shard);
                self.schedule_turn(index, now);
            }
            _ => self.enqueue(job, shard),
        }
    }

    /// A retry that met a closed wheel: abandon it, or run it now. `turn`:
    /// whether a keyed retry's shard needs a new turn (it is not inside its
    /// batch).
    fn settle_closed(&self, entry: Entry, abandon: bool, turn: bool) {
        if entry.cell().is_some() {
            bump(&self.counters.slot(self.own_worker_index()).cancelled);
            entry.job.discard(TaskError::Abandoned);
        } else if abandon {
            if turn {
                self.abandon_entry(entry);
            } else {
                let slot = self.counters.slot(self.own_worker_index());
                bump(&slot.abandoned);
                bump(&slot.timers_abandoned);
                entry.job.discard(TaskError::Abandoned);
            }
        } else {
            self.admission.fetch_add(QUEUED_ONE + PENDING_ONE, SeqCst);
            bump(&self.counters.slot(self.own_worker_index()).timers_run_early);
            match entry.shard() {
                Some(index) if entry.retry && !turn => {
                    let mut job = entry.job;
                    job.stamp(self.stamp());
                    self.shards[index].push_front(job, &self.counters.locks.shard);
                }
                _ => self.fire(entry),
            }
        }
    }

    /// Discards an entry at shutdown; a held shard is released.
    fn abandon_entry(&self, entry: Entry) {
        let slot = self.counters.slot(self.own_worker_index());
        let (shard, retry) = (entry.shard(), entry.retry);
        bump(&slot.abandoned);
        bump(&slot.timers_abandoned);
        entry.job.discard(TaskError::Abandoned);
        if let (Some(index), true) = (shard, retry) {
            if self.shards[index].release(&self.counters.locks.shard) {
                self.schedule_turn(index, self.stamp());
            }
        }
    }

    fn stamp(&self) -> u64 {
        self.full_stamp()
    }

    /// Gives a scheduled shard (with no turn anywhere) a turn.
    fn schedule_turn(&self, index: usize, now: u64) {
        let mut turn = crate::task::job::shard_job(index);
        turn.stamp(now);
        self.push_inbox(index % self.live_workers().max(1), turn, now);
        self.sleep.notify_one();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Entry;
    use crate::time::wheel::node_bytes;

    /// A pending timer costs one slab node: 24 of its bytes hold a small
    /// closure inline (a larger one is boxed, and the node holds the box).
    #[test]
    fn a_pending_timer_costs_at_most_80_bytes_with_24_of_closure() {
        assert!(
            node_bytes::<Entry>() <= 80,
            "{} bytes",
            node_bytes::<Entry>()
        );
    }
}
