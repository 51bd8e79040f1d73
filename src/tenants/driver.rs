//! The refill driver: one thread that sleeps until the next rate-limit
//! refill is due, then brings the tenant back into the ring.

use super::Tenants;
use crate::sched::held::Held;
use crate::sched::Registry;
use std::cmp::Reverse;
use std::sync::Arc as StdArc;

/// The driver's loop: it ends when the tenants close (shutdown) or the
/// pool is gone.
pub(super) fn drive(weak: &std::sync::Weak<Registry>, held: &StdArc<dyn Held>) {
    use std::time::Duration;
    let this = held
        .as_any()
        .downcast_ref::<Tenants>()
        .expect("the held layer is the tenants");
    let mut st = this.state.lock();
    loop {
        if st.closed || weak.strong_count() == 0 {
            st.driver = false;
            return;
        }
        let now = this.clock.now();
        let next = st.timers.peek().map(|Reverse((at, _))| *at);
        if next.is_some_and(|at| at <= now) {
            let Some(registry) = weak.upgrade() else {
                st.driver = false;
                return;
            };
            let out = st.fire_due(this, &registry, now);
            drop(st);
            this.after(&registry, out, false);
            drop(registry);
            st = this.state.lock();
            continue;
        }
        // Under a user's clock, poll each millisecond; else sleep until
        // the next refill (at most a second, to notice a dropped pool).
        let wait = match next {
            _ if this.clock.is_manual() => Duration::from_millis(1),
            Some(at) => at
                .saturating_duration_since(now)
                .min(Duration::from_secs(1)),
            None => Duration::from_secs(1),
        };
        this.wake
            .wait_until(&mut st, std::time::Instant::now() + wait);
    }
}
