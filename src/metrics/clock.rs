//! A cheap monotonic tick counter for per-task timing.
//!
//! On x86-64 it is the time-stamp counter (`rdtsc`, ~9 ns here against ~21
//! ns for `Instant::now`): constant-rate and synchronized across cores on
//! every CPU of the last decade (`constant_tsc`, `nonstop_tsc`). Elsewhere,
//! and under loom, it is nanoseconds since a process-wide epoch. Ticks are
//! converted to time only when read, with [`Calibration`]: recording never
//! divides.

use std::time::{Duration, Instant};

/// The current tick count.
#[inline]
pub(crate) fn ticks() -> u64 {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    {
        // SAFETY: `rdtsc` has no preconditions; it reads a counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    {
        // Offset so that a tick count is never 0 (no stamp) nor below
        // `timing::LONG` (see `timing::submission_stamp`), as the
        // time-stamp counter never is; spans are differences.
        EPOCH_OFFSET + epoch().elapsed().as_nanos() as u64
    }
}

#[cfg(not(all(target_arch = "x86_64", not(loom))))]
const EPOCH_OFFSET: u64 = 1 << 32;

#[cfg(not(all(target_arch = "x86_64", not(loom))))]
fn epoch() -> Instant {
    use std::sync::OnceLock;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Converts ticks to time: the tick rate measured between the pool's start
/// and the moment of reading (both clocks read back to back).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Calibration {
    instant: Instant,
    ticks: u64,
}

impl Calibration {
    pub(crate) fn now() -> Self {
        Calibration {
            instant: Instant::now(),
            ticks: ticks(),
        }
    }

    /// Nanoseconds per tick, from `self` to now.
    pub(crate) fn ns_per_tick(&self) -> f64 {
        let ns = self.instant.elapsed().as_nanos() as f64;
        let t = ticks().saturating_sub(self.ticks) as f64;
        if t <= 0.0 || ns <= 0.0 {
            1.0
        } else {
            ns / t
        }
    }

    /// A tick span as a `Duration`, at `ns_per_tick`.
    pub(crate) fn to_duration(span: u64, ns_per_tick: f64) -> Duration {
        Duration::from_nanos((span as f64 * ns_per_tick) as u64)
    }
}

/// A time source given by the user (`Builder::metrics_clock`): the time
/// since any fixed epoch. It must never go backwards.
pub(crate) type ManualClock = std::sync::Arc<dyn Fn() -> Duration + Send + Sync>;

/// Where a pool reads time to time its tasks (histograms, the dump, the
/// stall watchdog, the supervisor's run-time sums): the tick counter, or
/// a manual clock in nanoseconds (tests and simulations).
#[derive(Clone)]
pub(crate) struct TaskClock {
    manual: Option<ManualClock>,
    calibration: Calibration,
}

impl TaskClock {
    pub(crate) fn new(manual: Option<ManualClock>) -> Self {
        TaskClock {
            manual,
            calibration: Calibration::now(),
        }
    }

    /// Now, in this clock's ticks.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match &self.manual {
            None => ticks(),
            Some(clock) => clock().as_nanos() as u64,
        }
    }

    /// Nanoseconds per tick of this clock.
    pub(crate) fn ns_per_tick(&self) -> f64 {
        match self.manual {
            None => self.calibration.ns_per_tick(),
            Some(_) => 1.0,
        }
    }
}
