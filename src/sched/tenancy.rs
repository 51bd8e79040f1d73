//! What a tenant is configured with, and priorities: plain settings,
//! validated here and kept in the pool's configuration; the tenants layer
//! (`tenants/`) acts on them.

use super::config::Backpressure;
use crate::error::InvalidOption;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A task's priority lane inside its tenant's queue. Higher lanes go
/// first; a task that has waited its tenant's
/// [`aging`](TenantConfig::aging) goes before any newer one, whatever its
/// lane, so a low task waits a bounded time under a stream of high ones.
/// Parses from `"high"`, `"normal"` and `"low"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Before normal and low tasks.
    High,
    /// The default.
    #[default]
    Normal,
    /// After high and normal tasks, until aged.
    Low,
}

impl Priority {
    pub(crate) fn lane(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        })
    }
}

impl FromStr for Priority {
    type Err = InvalidOption;

    fn from_str(s: &str) -> Result<Self, InvalidOption> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            _ => Err(InvalidOption::new("priority", s, "high, normal or low")),
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub(crate) rate: f64,
    pub(crate) burst: u32,
}

impl RateLimit {
    /// `rate` tasks a second with bursts of up to `burst`.
    ///
    /// # Errors
    /// A rate that is not a finite number, or below one task in
    /// [`MAX_DELAY`](crate::MAX_DELAY) (365 days), or a burst of 0.
    pub fn new(rate: f64, burst: u32) -> Result<Self, InvalidOption> {
        if !(rate.is_finite() && rate * crate::MAX_DELAY.as_secs_f64() >= 1.0) {
            return Err(InvalidOption::new(
                "rate_limit.rate",
                rate,
                "a finite number of tasks per second, at least one task in MAX_DELAY (365 days)",
            ));
        }
        if burst == 0 {
            return Err(InvalidOption::new("rate_limit.burst", burst, "at least 1"));
        }
        Ok(RateLimit { rate, burst })
    }

    /// Tasks per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Tokens saved at most.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// A tenant's settings: give them with
/// [`PoolHandle::configure_tenant`](crate::PoolHandle::configure_tenant),
/// or to every tenant with
/// [`Builder::tenant_defaults`](crate::Builder::tenant_defaults).
///
/// | setting | default |
/// |---|---|
/// | [`weight`](Self::weight) | 1 |
/// | [`max_concurrency`](Self::max_concurrency) | none (cost units running at once) |
/// | [`rate_limit`](Self::rate_limit) | none |
/// | [`queue_capacity`](Self::queue_capacity) | 1,048,576, `Reject` when full |
/// | [`aging`](Self::aging) | 100 ms |
#[derive(Clone, Debug, PartialEq)]
pub struct TenantConfig {
    pub(crate) weight: u32,
    pub(crate) max_concurrency: Option<u32>,
    pub(crate) rate: Option<RateLimit>,
    pub(crate) capacity: usize,
    pub(crate) backpressure: Backpressure,
    pub(crate) aging: Duration,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            weight: 1,
            max_concurrency: None,
            rate: None,
            capacity: 1 << 20,
            backpressure: Backpressure::Reject,
            aging: Duration::from_millis(100),
        }
    }
}

impl TenantConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Its share of the workers while other tenants have work queued too:
    /// a tenant of weight 3 gets three times the throughput of one of
    /// weight 1.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The most cost units of its tasks running at once (a task's
    /// [`cost`](crate::TaskBuilder::cost) is 1 unless given). A task
    /// queued before the limit was lowered below its cost runs alone.
    pub fn max_concurrency(mut self, units: u32) -> Self {
        self.max_concurrency = Some(units);
        self
    }

    /// At most `limit.rate()` of its tasks start a second, in bursts of up
    /// to `limit.burst()`; the others wait in its queue (not on a worker),
    /// until the refill.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate = Some(limit);
        self
    }

    /// Its queue's capacity and what a full queue does: `Reject`
    /// (`SubmitError::Full`), `Block` (the submitter waits for room; a
    /// worker helps meanwhile; `try_` calls get `Full`, a
    /// `wait_for_room` that runs out `Timeout`), `DropNewest` or
    /// `DropOldest`.
    pub fn queue_capacity(mut self, capacity: usize, when_full: Backpressure) -> Self {
        self.capacity = capacity;
        self.backpressure = when_full;
        self
    }

    /// How long a task may wait before it goes ahead of higher-priority
    /// tasks queued after it.
    pub fn aging(mut self, d: Duration) -> Self {
        self.aging = d;
        self
    }

    /// What is wrong, if anything.
    pub(crate) fn validate(&self) -> Result<(), InvalidOption> {
        if self.weight == 0 {
            return Err(InvalidOption::new("tenant.weight", 0, "at least 1"));
        }
        if self.max_concurrency == Some(0) {
            return Err(InvalidOption::new(
                "tenant.max_concurrency",
                0,
                "at least 1",
            ));
        }
        if self.capacity == 0 {
            return Err(InvalidOption::new("tenant.queue_capacity", 0, "at least 1"));
        }
        if self.backpressure == Backpressure::CallerRuns {
            return Err(InvalidOption::new(
                "tenant.backpressure",
                self.backpressure,
                "Block, Reject, DropNewest or DropOldest (a task run by its caller would skip its turn)",
            ));
        }
        if self.aging.is_zero() {
            return Err(InvalidOption::new("tenant.aging", self.aging, "above zero"));
        }
        Ok(())
    }
}
