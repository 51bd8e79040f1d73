//! Counters of what the pool did, in cache-padded per-thread slots.
//!
//! Every worker owns one slot and is its only writer; threads outside the
//! pool share a few striped slots picked by a per-thread index. Updates are
//! relaxed `fetch_add`s on a line no other worker writes, so the hot path
//! never contends on a shared counter. A snapshot sums the slots: each sum is
//! exact once the pool is quiescent (after `wait_idle` or shutdown, whose
//! synchronization orders every earlier update before the read) and may lag
//! by in-flight updates otherwise.
//!
//! These are plain `std` atomics, not the loom shim's: they take part in no
//! protocol, and leaving them out keeps the loom models small.//!
//! The public types here are the pool's observability surface, kept apart
//! from the pool itself (as `ebbtide::metrics`): [`Metrics`] snapshots with
//! their Prometheus and `metrics`-facade exports, [`PoolDump`], stall and
//! resize records. This module is a leaf: it imports nothing of the
//! scheduler, so every layer may record into it.

pub(crate) mod clock;
mod counters;
pub(crate) mod cpu;
mod dump;
mod export;
mod histogram;
mod locks;
mod resize;
mod snapshot;
mod status;
mod tenants;
pub(crate) mod timing;

pub use counters::Counts;
pub(crate) use counters::{add_at, bump, bump_at, Counters, Slot};
pub use dump::{PoolDump, StallReport, TenantDump, WorkerDump};
pub(crate) use export::escape_label;
pub use export::prometheus_prefix;
pub(crate) use histogram::AtomicHistogram;
pub use histogram::Histogram;
pub use locks::LockContention;
pub(crate) use locks::{LockCounted, LockStat, LockStats};
pub use resize::{Observation, ResizeEvent, ResizeReason};
pub use snapshot::{BreakerState, Metrics, QueueAges};
pub(crate) use status::StatusWord;
pub use status::WorkerState;
pub use tenants::TenantMetrics;
pub(crate) use timing::TaskTiming;
