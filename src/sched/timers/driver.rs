//! The timing wheel's driver: the thread that sleeps until the next
//! deadline and fires what is due, and the workers' look at the wheel
//! before they park (see the parent module's docs).

use super::State;
use crate::loom::sync::atomic::Ordering::SeqCst;
use crate::sched::admission::{PENDING_ONE, QUEUED_ONE};
use crate::sched::registry::Registry;
use std::sync::atomic::Ordering::Relaxed;

impl Registry {
    /// Fires every entry due by the clock now; returns how many.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn poll_timers(&self) -> usize {
        let state = self.timers.state.lock();
        self.fire_due(state)
    }

    /// A worker about to park: if a timer is due (by the hint), fires what
    /// is due unless someone else (the driver) is at the wheel. Returns
    /// whether it fired anything. A pool that never used its wheel pays one
    /// relaxed load.
    #[inline]
    pub(crate) fn poll_if_due(&self) -> bool {
        let next = self.timers.next_due.load(Relaxed);
        next != u64::MAX && self.poll_due_now(next)
    }

    #[cold]
    #[inline(never)]
    fn poll_due_now(&self, next: u64) -> bool {
        let clock = &self.timers.clock;
        if clock.elapsed_ticks(clock.now()) < next {
            return false;
        }
        match self.timers.state.try_lock() {
            Some(state) => self.fire_due(state) > 0,
            None => false,
        }
    }

    /// Fires every entry due by the clock now, the wheel's lock held on
    /// entry; then moves part of the next block down the wheel (after the
    /// firing, so that it delays no due task).
    fn fire_due(&self, mut state: crate::loom::sync::MutexGuard<'_, State>) -> usize {
        let timers = &self.timers;
        if state.closed {
            return 0;
        }
        let now = timers.clock.now();
        let tick = timers.clock.elapsed_ticks(now);
        let mut due = Vec::new();
        state.wheel.poll(tick, |at, entry| due.push((at, entry)));
        if due.is_empty() {
            state.wheel.precascade();
            timers.publish(&state.wheel);
            return 0;
        }
        timers.publish(&state.wheel);
        // The places, under the lock: before any close (see module docs).
        self.admission
            .fetch_add(due.len() as u64 * (QUEUED_ONE + PENDING_ONE), SeqCst);
        drop(state);
        let fired = due.len();
        let slot = self.counters.slot(None);
        for (at, entry) in due {
            let late = now.saturating_duration_since(timers.clock.instant_of(at));
            timers.lateness.record(late.as_nanos() as u64);
            self.fire(entry);
        }
        // Release: as `bump` (a counter summed with acquire).
        slot.timers_fired
            .fetch_add(fired as u64, std::sync::atomic::Ordering::Release);
        let mut state = timers.state.lock();
        state.wheel.precascade();
        timers.publish(&state.wheel);
        fired
    }

    /// The driver's loop: fire what is due, sleep until the next deadline.
    #[cfg(not(loom))]
    pub(crate) fn drive_timers(&self) {
        let timers = &self.timers;
        loop {
            if self.poll_timers() > 0 {
                continue;
            }
            let mut state = timers.state.lock();
            if state.closed {
                return;
            }
            let next = state.wheel.next_deadline();
            if next.is_some_and(|t| t <= timers.clock.elapsed_ticks(timers.clock.now())) {
                continue;
            }
            state.sleeping_until = Some(next.unwrap_or(u64::MAX));
            // Empty: sleep until an insert wakes it. A user's clock cannot
            // be slept on: poll it every millisecond of real time.
            let wake = next.map(|t| {
                if timers.clock.is_manual() {
                    std::time::Instant::now() + std::time::Duration::from_millis(1)
                } else {
                    timers.clock.instant_of(t)
                }
            });
            match wake {
                Some(at) => {
                    timers.cv.wait_until(&mut state, at);
                }
                None => timers.cv.wait(&mut state),
            }
            state.sleeping_until = None;
        }
    }

    /// Starts the driver thread; `false` if it could not be started (the
    /// next insert tries again; entries wait on the wheel meanwhile).
    #[cfg(not(loom))]
    pub(super) fn start_timer_driver(&self) -> bool {
        let Some(registry) = self.this.get().and_then(std::sync::Weak::upgrade) else {
            return false;
        };
        let spawned = std::thread::Builder::new()
            .name(format!("{}-timers", self.config.thread_name))
            .spawn(move || {
                let _abort = crate::sched::abort::AbortOnPanic("the timer thread");
                registry.drive_timers();
            });
        match spawned {
            Ok(handle) => {
                self.add_thread(handle);
                true
            }
            Err(_) => false,
        }
    }

    /// Under loom the models poll the wheel themselves.
    #[cfg(loom)]
    pub(super) fn start_timer_driver(&self) -> bool {
        true
    }
}
