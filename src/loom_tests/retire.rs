//! loom models of retirement and the queues searches look at: only live
//! workers' queues are looked at, so nothing may be left in a retired
//! worker's.

use super::{elastic_pool, model};
use crate::loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::Arc;
use crate::sched::queue::GlobalQueue;
use crate::sched::Registry;

/// A keyed task whose shard's home is the top worker, submitted while that
/// worker retires: the submitter may read two live workers, then push the
/// shard's turn into the inbox of a worker that has left. The turn is moved
/// to a live inbox (by the submitter or by the retiring worker, whichever
/// sees the other) and runs, exactly once; without the move the remaining
/// worker, which looks only at live workers' queues, parks beside it.
#[test]
fn loom_a_turn_for_a_retiring_worker_is_moved_on() {
    model(2, || {
        let pool = elastic_pool();
        let registry = pool.registry.clone();
        assert!(matches!(Registry::spawn_worker(&registry, 2), Ok(Some(1))));
        let key = (0u32..)
            .find(|k| pool.shard_of(k) % 2 == 1)
            .expect("a key homed on worker 1");
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        registry.request_retire(1);
        pool.task()
            .key(&key)
            .execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap_or_else(|_| panic!("accepted"));
        pool.wait_idle();
        assert_eq!(ran.load(SeqCst), 1);
        drop(pool);
    });
}

/// The stray-turn handshake on its own (the model plays two workers'
/// parts; the pool's own worker 0 is paused, so it takes nothing): a shard
/// turn pushed into worker 2's inbox, as by a submitter that read three
/// live workers, while worker 2 retires (stores two live workers, fences,
/// looks at its inbox). Whichever runs first, the turn ends, once, in the
/// live inbox its shard maps to.
#[test]
fn loom_a_stray_turn_reaches_a_live_inbox() {
    model(3, || {
        let pool = crate::Pool::builder()
            .min_workers(1)
            .max_workers(3)
            .build()
            .expect("pool builds under loom");
        pool.pause();
        let registry = pool.registry.clone();
        // Parked, it looks again only paused.
        while registry.sleep.parked() < 1 {
            loom::thread::yield_now();
        }
        let first = registry.take_slot_for_model();
        let second = registry.take_slot_for_model();
        assert_eq!(registry.live_workers(), 3);
        let r = registry.clone();
        let retiring = loom::thread::spawn(move || r.finish_retire(2, second));
        // Shard 3's home among two live workers is worker 1.
        registry.push_inbox(2, crate::task::job::shard_job(3), 0);
        retiring.join().unwrap();
        assert_eq!(registry.live_workers(), 2);
        assert!(
            registry.inbox(2).pop().is_none(),
            "left past the live workers"
        );
        let moved = registry.inbox(1).pop().expect("moved to a live inbox");
        assert_eq!(moved.shard_index(), 3);
        assert!(registry.inbox(1).pop().is_none(), "moved once");
        assert!(registry.inbox(0).pop().is_none(), "moved once");
        registry.finish_retire(1, first);
        drop(pool);
    });
}

/// A shrink by two workers: the top worker retires and wakes the next,
/// which retires too, whenever each of them parked; the remaining worker
/// is untouched. (Without the wake the second waits, parked, forever.)
#[test]
fn loom_a_shrink_by_two_retires_both() {
    model(1, || {
        let pool = crate::Pool::builder()
            .min_workers(1)
            .max_workers(3)
            .build()
            .expect("pool builds under loom");
        let registry = pool.registry.clone();
        assert!(matches!(Registry::spawn_worker(&registry, 3), Ok(Some(1))));
        assert!(matches!(Registry::spawn_worker(&registry, 3), Ok(Some(2))));
        registry.request_retire(1);
        while registry.live_workers() > 1 {
            loom::thread::yield_now();
        }
        assert_eq!(registry.live_workers(), 1);
        drop(pool);
    });
}
