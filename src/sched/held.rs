//! Tasks a layer above holds before they are queued (the tenants' queues):
//! admitted and counted here when they are accepted, queued when the layer
//! releases them.
//!
//! A held task has its `queued` and `pending` places from acceptance on,
//! so capacity, `wait_idle`, the shutdown drain and the accounting identity
//! treat it as any queued task. Shutdown takes every held task back and
//! queues it (a drain runs them whatever their tenant's limits; an abandon
//! then discards them with the rest).

use super::admission::{Reserve, PENDING_ONE, QUEUED_ONE};
use super::registry::Registry;
use crate::error::TaskError;
use crate::metrics::{bump, TenantMetrics};
use crate::task::job::{Hold, JobRef};
use std::any::Any;
use std::sync::Arc as StdArc;

/// The layer that holds tasks.
pub(crate) trait Held: Send + Sync + 'static {
    /// Every task held now, with its shard, to be queued; `counted`: hand
    /// its shard to `queued` once it is in it.
    fn take_all(&self) -> Vec<Taken>;
    /// The busiest `top` tenants' figures and the rest summed.
    fn tenant_metrics(&self, top: usize) -> (Vec<TenantMetrics>, Option<TenantMetrics>, usize);
    /// Takes back a job due on the timing wheel (its places taken) into
    /// the queue `hold` names; hands it back if that queue is closed
    /// (shutdown), for the pool's queues to take.
    fn hold(
        &self,
        job: JobRef,
        shard: Option<usize>,
        hold: Hold,
    ) -> Option<(JobRef, Option<usize>)>;
    /// Whether a keyed task of `shard` with no tenant waits in the layer
    /// (then a task of that shard that would go straight to it waits
    /// behind, so that its key keeps its order).
    fn holds_shard(&self, shard: usize) -> bool;
    /// Where a keyed task without a tenant waits when `holds_shard` says
    /// an earlier one of its shard waits.
    fn unnamed_keyed_hold(&self) -> Hold;
    /// A task `take_all` returned as counted is in its shard.
    fn queued(&self, shard: usize);
    /// Itself, for the layer to find its own type again.
    fn as_any(&self) -> &dyn Any;
}

/// A held task taken back at shutdown.
pub(crate) struct Taken {
    pub(crate) job: JobRef,
    pub(crate) shard: Option<usize>,
    /// Counted by the layer until it is in its shard (see `holds_shard`).
    pub(crate) counted: bool,
}

/// Why a held task could not be admitted.
pub(crate) enum HeldRefusal {
    Full,
    Closed,
}

impl Registry {
    /// The holding layer, if one was made.
    pub(crate) fn held(&self) -> Option<&StdArc<dyn Held>> {
        self.held.get()
    }

    /// Whether a task of `shard` without a tenant must go through the
    /// holding layer to keep its key's order (see `Held::holds_shard`).
    #[inline]
    pub(crate) fn shard_held(&self, shard: usize) -> bool {
        match self.held.get() {
            None => false,
            Some(held) => holds_shard(held, shard),
        }
    }

    /// The holding layer, made by `make` on first use.
    pub(crate) fn held_or_init(
        &self,
        make: impl FnOnce() -> StdArc<dyn Held>,
    ) -> &StdArc<dyn Held> {
        self.held.get_or_init(make)
    }

    /// Takes a queued place for a task that will be held, and counts it
    /// as submitted. The pool's queue being full refuses it whatever the
    /// backpressure policy (the holding layer's own limits come first).
    pub(crate) fn admit_held(&self) -> Result<(), HeldRefusal> {
        let slot = self.counters.slot(self.own_worker_index());
        match self.try_reserve() {
            Reserve::Ok => {
                bump(&slot.submitted);
                Ok(())
            }
            Reserve::Closed => Err(HeldRefusal::Closed),
            Reserve::Full => {
                bump(&slot.submitted);
                bump(&slot.rejected);
                Err(HeldRefusal::Full)
            }
        }
    }

    /// Counts a held task refused by the holding layer (its tenant's queue
    /// full under `Reject`).
    pub(crate) fn count_refused_held(&self) {
        let slot = self.counters.slot(self.own_worker_index());
        bump(&slot.submitted);
        bump(&slot.rejected);
    }

    /// Counts a task the holding layer dropped unadmitted (its tenant's
    /// queue full under `DropNewest`); its handle resolves to `Dropped`.
    pub(crate) fn count_dropped_unheld(&self) {
        let slot = self.counters.slot(self.own_worker_index());
        bump(&slot.submitted);
        bump(&slot.dropped_newest);
    }

    /// Queues a held task.
    pub(crate) fn release_held(&self, job: JobRef, shard: Option<usize>) {
        self.enqueue(job, shard);
    }

    /// Drops a held task to make room (its tenant's queue full under
    /// `DropOldest`): its handle resolves to `Dropped`.
    pub(crate) fn drop_held(&self, job: JobRef) {
        job.discard(TaskError::Dropped);
        bump(&self.counters.slot(self.own_worker_index()).dropped_oldest);
        self.retire(QUEUED_ONE + PENDING_ONE);
        self.notify_room();
    }

    /// Queues every held task (shutdown).
    pub(crate) fn flush_held(&self) {
        if let Some(held) = self.held.get() {
            for Taken {
                job,
                shard,
                counted,
            } in held.take_all()
            {
                self.enqueue(job, shard);
                if let (true, Some(shard)) = (counted, shard) {
                    held.queued(shard);
                }
            }
        }
    }
}

/// Out of line: only pools that have tenants get here.
#[cold]
#[inline(never)]
fn holds_shard(held: &StdArc<dyn Held>, shard: usize) -> bool {
    held.holds_shard(shard)
}
