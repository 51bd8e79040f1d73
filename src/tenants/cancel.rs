//! A waiting task whose token is cancelled leaves its tenant's queue at
//! once, let through free to end unrun, instead of waiting for its
//! tenant's turn (a refill an hour away under an hourly rate); so does a
//! task back from the timing wheel (a delayed task, a retry, a periodic
//! run), whose token came with its `Hold`. Keyed tasks keep their place
//! (their key's order) and still go through free when their turn comes.

use super::queue::{State, Waiting};
use super::Tenants;
use crate::sched::Registry;
#[cfg(not(loom))]
use crate::task::cancel::Watcher;
use crate::task::CancelToken;
#[cfg(not(loom))]
use std::sync::Arc as StdArc;
use std::sync::Weak;
use std::time::Instant;

/// Where a watched task waits: its tenant's slot and generation, its lane
/// and its arrival number (lanes are in arrival order).
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct TenantWatch {
    registry: Weak<Registry>,
    slot: u64,
    generation: u64,
    lane: usize,
    seq: u64,
}

#[cfg(not(loom))]
impl Watcher for TenantWatch {
    fn cancelled(&self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let this = Tenants::of(&registry);
        let now = this.clock.now();
        let mut st = this.state.lock();
        let out = st.take_cancelled(self.slot, self.generation, self.lane, self.seq, now);
        drop(st);
        if let Some(w) = out {
            this.after(&registry, vec![w], false);
        }
    }
}

impl Tenants {
    /// Watches `token` for the task just queued last in lane `lane` of
    /// tenant `i`, under the tenants' lock (the lock order is this one,
    /// then a token's). Returns the task, taken out free, if the token is
    /// cancelled already.
    #[cfg(not(loom))]
    pub(super) fn watch_last(
        &self,
        st: &mut State,
        i: u64,
        lane: usize,
        token: &CancelToken,
        now: Instant,
    ) -> Option<Waiting> {
        if token.is_quiet() {
            return None;
        }
        let t = st.slots.get_mut(&i).expect("a live tenant");
        let generation = t.generation;
        let last = t.lanes[lane].back_mut().expect("just queued");
        let seq = last.seq;
        let watch = StdArc::new(TenantWatch {
            registry: self.registry.clone(),
            slot: i,
            generation,
            lane,
            seq,
        });
        let watcher: StdArc<dyn Watcher> = watch.clone();
        last.watch = Some(watch);
        if token.watch(&watcher) {
            None
        } else {
            st.take_cancelled(i, generation, lane, seq, now)
        }
    }

    /// Under loom a waiting task waits for its turn, as it would
    /// uncancelled.
    #[cfg(loom)]
    pub(super) fn watch_last(
        &self,
        _st: &mut State,
        _i: u64,
        _lane: usize,
        _token: &CancelToken,
        _now: Instant,
    ) -> Option<Waiting> {
        None
    }
}
