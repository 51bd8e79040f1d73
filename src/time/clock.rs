//! The clock delays, schedules and backoff read: `Instant::now`, or one
//! the user injects (`Builder::timer_clock`) so that tests drive time by
//! hand.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A user's time source for timers: must never go backwards.
pub(crate) type ClockFn = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Where timers read the time, and the wheel's tick conversion (1 ms
/// ticks since an epoch taken when the pool was built).
#[derive(Clone)]
pub(crate) struct TimerClock {
    manual: Option<ClockFn>,
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
        let epoch = match &manual {
            Some(clock) => clock(),
            None => Instant::now(),
        };
        TimerClock { manual, epoch }
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
            Some(clock) => clock(),
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
