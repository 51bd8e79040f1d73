//! A cheap monotonic tick counter for per-task timing.
//!
//! On x86-64 it is the time-stamp counter (`rdtsc`, ~9 ns here against ~21
//! ns for `Instant::now`): constant-rate and synchronised across cores on
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
        epoch().elapsed().as_nanos() as u64
    }
}

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
