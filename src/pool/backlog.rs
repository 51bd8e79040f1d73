//! `Backlog`: work waiting outside the pool, reported to its auto-scaler.

use crate::loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::Arc;
use crate::sched::Registry;
use std::fmt;

/// A gauge of work waiting outside the pool — a broker's unread
/// messages, a file of jobs not yet read — that the auto-scaler counts as
/// queued, so that a growing backlog grows an elastic pool before the work
/// reaches its queues. From [`PoolHandle::backlog`](crate::PoolHandle::backlog).
/// Each gauge adds its latest value to the pool's; dropping it removes it.
/// The value is shown as [`Metrics::external_backlog`](crate::metrics::Metrics::external_backlog).
///
/// ```
/// let pool = ebbtide::Pool::builder().min_workers(1).max_workers(8).build()?;
/// let lag = pool.backlog();
/// lag.set(120);
/// assert_eq!(pool.metrics().external_backlog, 120);
/// drop(lag);
/// assert_eq!(pool.metrics().external_backlog, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Backlog {
    registry: Arc<Registry>,
    value: AtomicUsize,
}

impl fmt::Debug for Backlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backlog")
            .field("value", &self.get())
            .finish()
    }
}

impl Backlog {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Backlog {
            registry,
            value: AtomicUsize::new(0),
        }
    }

    /// Reports `n` items waiting now.
    pub fn set(&self, n: usize) {
        // The pool's sum moves by the difference. Concurrent `set`s on one
        // gauge stay exact: the swaps are ordered, so their differences
        // add up to the last value less the first (wrapping arithmetic).
        let old = self.value.swap(n, SeqCst);
        self.registry
            .external
            .fetch_add(n.wrapping_sub(old), SeqCst);
    }

    /// The value last reported.
    pub fn get(&self) -> usize {
        self.value.load(SeqCst)
    }
}

impl Drop for Backlog {
    fn drop(&mut self) {
        self.set(0);
    }
}
