//! The tenants as the scheduler's held layer: shutdown takes every held
//! task back, metrics read the busiest tenants, a due wheel entry comes
//! back to its tenant's queue, and a keyed task without a tenant asks
//! whether its shard has tasks waiting in the unnamed tenant's queue.

use super::queue::{State, Tenant, Waiting};
use super::{Ask, TenantId, Tenants, KEYED};
use crate::loom::sync::atomic::Ordering::SeqCst;
use crate::metrics::TenantMetrics;
use crate::sched::held::{Held, Taken};
use crate::task::job::{Hold, JobRef};
use std::any::Any;
use std::cmp::Reverse;
use std::sync::Arc as StdArc;
use std::time::Instant;

impl Held for Tenants {
    fn take_all(&self) -> Vec<Taken> {
        let mut st = self.state.lock();
        st.closed = true;
        st.ring.clear();
        st.timers.clear();
        let mut out = Vec::new();
        let mut flushed = 0;
        for t in st.slots.values_mut() {
            // Lane by lane: a shard's tasks are in lanes that never rise,
            // so they leave in their order.
            for lane in &mut t.lanes {
                for w in lane.drain(..) {
                    if w.bare.is_none() {
                        // Its ticket ends as if let through.
                        t.running += w.cost;
                        flushed += 1;
                    }
                    out.push(Taken {
                        job: w.job,
                        shard: w.shard,
                        counted: w.counted,
                    });
                }
            }
            t.forget_keyed();
            t.queued = 0;
            t.figures.queued = 0;
            t.in_ring = false;
        }
        st.in_window += flushed;
        drop(st);
        self.wake.notify_all();
        self.room.notify_all();
        out
    }

    fn tenant_metrics(&self, top: usize) -> (Vec<TenantMetrics>, Option<TenantMetrics>, usize) {
        let st = self.state.lock();
        let mut all: Vec<&Tenant> = st.slots.values().collect();
        all.sort_by_key(|t| Reverse((t.figures.submitted, t.figures.queued)));
        let listed = all.iter().take(top).map(|t| t.figures.clone()).collect();
        let mut other = st.forgotten.clone();
        for t in all.iter().skip(top) {
            other.add(&t.figures);
        }
        (listed, Some(other), st.slots.len())
    }

    fn hold(
        &self,
        job: JobRef,
        shard: Option<usize>,
        mut hold: Hold,
    ) -> Option<(JobRef, Option<usize>)> {
        let now = self.clock.now();
        let mut st = self.state.lock();
        if st.closed {
            // Shutdown took the queues back: the pool's queues take it.
            return Some((job, shard));
        }
        let id = TenantId {
            hash: hold.tenant,
            name: StdArc::clone(&hold.name),
        };
        let i = st.slot_of(&id, &self.defaults, now);
        let t = st.slots.get_mut(&i).expect("a live tenant");
        t.figures.submitted += 1;
        let lane = usize::from(hold.lane & !KEYED);
        let token = hold.token.take();
        let lane = st.push(
            i,
            lane,
            Waiting {
                job,
                shard,
                cost: hold.cost,
                since: now,
                seq: 0,
                bare: Some(Box::new(hold)),
                counted: self.count_in(i, shard),
                watch: None,
            },
        );
        // Watched while it waits, as a task submitted to the queue is; a
        // keyed one keeps its place in its key's order.
        let taken = token
            .filter(|_| shard.is_none())
            .and_then(|token| self.watch_last(&mut st, i, lane, &token, now));
        self.pump_held(st, now, taken);
        None
    }

    fn holds_shard(&self, shard: usize) -> bool {
        self.unnamed_keyed[shard].load(SeqCst) > 0
    }

    fn unnamed_keyed_hold(&self) -> Hold {
        // Any shard: the hold only marks the task keyed.
        Ask::plain(Some(0)).hold(&TenantId::unnamed())
    }

    fn queued(&self, shard: usize) {
        self.count_out(&Some(shard), true);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Tenants {
    /// Lets through what a job back from the wheel allows, from a caller
    /// without the pool's `Arc` (the timer driver's `fire`).
    /// `taken`: a job its cancelled token already took out again.
    #[cfg(not(loom))]
    fn pump_held(
        &self,
        mut st: crate::loom::sync::MutexGuard<'_, State>,
        now: Instant,
        taken: Option<Waiting>,
    ) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut out = st.pump(self, &registry, now);
        out.extend(taken);
        let start_driver = st.needs_driver();
        drop(st);
        self.after(&registry, out, start_driver);
    }

    /// Under loom there is no `Weak`: the job waits for the next
    /// submission or end to let it through.
    /// (Nothing is taken out by a token under loom: see `watch_last`.)
    #[cfg(loom)]
    fn pump_held(
        &self,
        _st: crate::loom::sync::MutexGuard<'_, State>,
        _now: Instant,
        taken: Option<Waiting>,
    ) {
        debug_assert!(taken.is_none());
    }
}
