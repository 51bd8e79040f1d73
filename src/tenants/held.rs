//! The tenants as the scheduler's held layer: shutdown takes every held
//! task back, metrics read the busiest tenants, a due wheel entry comes
//! back to its tenant's queue, and a keyed task without a tenant asks
//! whether its shard has tasks waiting in the unnamed tenant's queue.

use super::queue::{Tenant, Waiting};
use super::{Ask, TenantId, Tenants, KEYED};
use crate::loom::sync::atomic::Ordering::SeqCst;
use crate::metrics::TenantMetrics;
use crate::sched::held::{Held, Taken};
use crate::task::job::{Hold, JobRef};
use std::any::Any;
use std::cmp::Reverse;
use std::sync::Arc as StdArc;

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
        hold: Hold,
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
        st.push(
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
        self.pump_held(st, now);
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
