//! One tenant's figures, as `Metrics` lists them.

use super::Histogram;

/// One tenant's figures (or, as `Metrics::tenants_other`, the sum over
/// the tenants not listed and those reclaimed while idle).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TenantMetrics {
    /// The tenant, as `Display` printed it when it was first used.
    pub name: String,
    /// Its weight in the fair share.
    pub weight: u32,
    /// Tasks waiting in its queue.
    pub queued: u64,
    /// Cost units running now (a task of cost n counts n).
    pub running: u64,
    /// Tasks offered to it.
    pub submitted: u64,
    /// Tasks it let through to the workers.
    pub dispatched: u64,
    /// Tasks refused because its queue was full.
    pub rejected: u64,
    /// Tasks dropped because its queue was full.
    pub dropped: u64,
    /// Times its next task had to wait for its rate limit's refill.
    pub rate_limited: u64,
    /// Time in its queue, accepted → let through.
    pub queue_wait: Histogram,
}

impl TenantMetrics {
    pub(crate) fn new(name: String, weight: u32) -> Self {
        TenantMetrics {
            name,
            weight,
            queued: 0,
            running: 0,
            submitted: 0,
            dispatched: 0,
            rejected: 0,
            dropped: 0,
            rate_limited: 0,
            queue_wait: Histogram::empty(),
        }
    }

    /// Adds `other`'s figures into these.
    pub(crate) fn add(&mut self, other: &TenantMetrics) {
        self.queued += other.queued;
        self.running += other.running;
        self.submitted += other.submitted;
        self.dispatched += other.dispatched;
        self.rejected += other.rejected;
        self.dropped += other.dropped;
        self.rate_limited += other.rate_limited;
        self.queue_wait.merge(&other.queue_wait);
    }
}
