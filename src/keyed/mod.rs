//! Keyed execution: keys map to virtual shards, and each shard runs its
//! tasks one at a time, in submission order.
//!
//! - [`shard`]: the shard type and its hand-off protocol (push, run a
//!   batch, yield), which the scheduler drives through its methods only;
//! - [`state`]: per-shard state that keyed tasks reach without a lock.
//!
//! This layer sits below the scheduler (it knows jobs, not workers or
//! queues); the public keyed API is on `PoolHandle` and `Keyed<S>`.

pub(crate) mod shard;
pub(crate) mod state;

pub(crate) use shard::{BatchEnd, Shard, Sharder};
