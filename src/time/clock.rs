//! The clock delays, schedules and backoff read: `Instant::now`, or one
//! the user injects (`Builder::timer_clock`) so that tests drive time by
//! hand; and the guard every clock a user gives the pool sits behind.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A user's time source for timers: must never go backwards.
pub(crate) type ClockFn = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The latest reading a user's clock gave (nanoseconds from the clock's
/// own origin): the guard that keeps a faulty clock from taking a pool
/// thread down or giving a span that runs backwards. A worker that died on
/// a clock read would leave its task unaccounted, and every wait for the
/// pool to go idle would hang.
struct LastReading(AtomicU64);

impl LastReading {
    fn new() -> Self {
        LastReading(AtomicU64::new(0))
    }

    /// `read()`, or the latest reading returned when `read` panics (the
    /// panic hook has reported it by then) or reads earlier than that.
    #[inline(never)]
    fn guard(&self, read: impl FnOnce() -> u64) -> u64 {
        // Relaxed: a running maximum of readings; no other memory is
        // published through it.
        match panic::catch_unwind(AssertUnwindSafe(read)) {
            Ok(n) => n.max(self.0.fetch_max(n, Relaxed)),
            Err(payload) => {
                let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
                self.0.load(Relaxed)
            }
        }
    }
}

/// A user's clock of durations since its own epoch (the metrics clock),
/// behind the same guard as [`GuardedClock`]: a panic, or a reading
/// earlier than the latest returned, reads as the latest returned.
pub(crate) fn guard_durations(clock: DurationClock) -> DurationClock {
    let last = LastReading::new();
    Arc::new(move || Duration::from_nanos(last.guard(|| clock().as_nanos() as u64)))
}

/// A user's time source of durations since any fixed epoch.
pub(crate) type DurationClock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// A user's clock of instants (the timers', the circuit breaker's) behind
/// a guard: a panic in it, or a reading earlier than the latest returned,
/// reads as the latest returned (`LastReading`), so that a faulty clock
/// takes no pool thread down (the timer thread, a worker retrying a task
/// or recording an outcome, a submitter). Time stands still while it
/// fails.
pub(crate) struct GuardedClock {
    clock: ClockFn,
    /// The first reading, taken when the pool is built (a panic in it
    /// reaches the builder's caller); later ones are kept as nanoseconds
    /// since.
    epoch: Instant,
    last: LastReading,
}

impl GuardedClock {
    pub(crate) fn new(clock: ClockFn) -> Self {
        GuardedClock {
            epoch: clock(),
            clock,
            last: LastReading::new(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        let since = self.last.guard(|| {
            (self.clock)()
                .saturating_duration_since(self.epoch)
                .as_nanos() as u64
        });
        self.epoch + Duration::from_nanos(since)
    }
}

/// Where timers read the time, and the wheel's tick conversion (1 ms
/// ticks since an epoch taken when the pool was built).
#[derive(Clone)]
pub(crate) struct TimerClock {
    manual: Option<Arc<GuardedClock>>,
    epoch: Instant,
}

impl fmt::Debug for TimerClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerClock")
            .field("manual", &self.manual.is_some())
            .finish()
    }
}

impl TimerClock {
    pub(crate) fn new(manual: Option<ClockFn>) -> Self {
        match manual {
            Some(clock) => {
                let clock = GuardedClock::new(clock);
                TimerClock {
                    epoch: clock.epoch,
                    manual: Some(Arc::new(clock)),
                }
            }
            None => TimerClock {
                manual: None,
                epoch: Instant::now(),
            },
        }
    }

    /// Whether the time comes from the user (then the driver polls it,
    /// since it cannot sleep until a user's instant).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Now.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        match &self.manual {
            Some(clock) => clock.now(),
            None => Instant::now(),
        }
    }

    /// The tick of `at`, rounded up, so that an entry firing at its tick
    /// never fires before `at`.
    pub(crate) fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        let ms = since.as_millis() as u64;
        if since > Duration::from_millis(ms) {
            ms + 1
        } else {
            ms
        }
    }

    /// The ticks that have fully elapsed at `now` (rounded down).
    pub(crate) fn elapsed_ticks(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The instant of tick `tick`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn instant_of(&self, tick: u64) -> Instant {
        self.epoch + Duration::from_millis(tick)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_so_nothing_fires_early() {
        let clock = TimerClock::new(None);
        let epoch = clock.epoch;
        assert_eq!(clock.tick_of(epoch), 0);
        assert_eq!(clock.tick_of(epoch + Duration::from_micros(1)), 1);
        assert_eq!(clock.tick_of(epoch + Duration::from_millis(7)), 7);
        assert_eq!(clock.elapsed_ticks(epoch + Duration::from_micros(7999)), 7);
        assert_eq!(clock.instant_of(7), epoch + Duration::from_millis(7));
        // Fired at tick t means now >= epoch + t ms >= the due instant.
        let at = epoch + Duration::from_micros(2500);
        let t = clock.tick_of(at);
        assert!(clock.instant_of(t) >= at);
    }
}
