//! loom models of the tenants' protocols: a submission racing shutdown, a
//! task's end letting the next through, and a key's order across the
//! unnamed tenant's queue and the direct path.

use super::{model, pool};
use crate::loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::{Arc, Mutex};
use crate::SubmitError;

/// A tenant's task submitted while shutdown closes the pool: it is either
/// refused with `ShutDown`, or held and then flushed by shutdown and run;
/// never left in its tenant's queue.
#[test]
fn loom_tenant_submit_races_shutdown() {
    model(2, || {
        let pool = Arc::new(pool(1));
        let ran = Arc::new(AtomicUsize::new(0));
        let (p, r) = (pool.clone(), ran.clone());
        let submitter = loom::thread::spawn(move || {
            let r2 = r.clone();
            match p.task().tenant("t").execute(move || {
                r2.fetch_add(1, SeqCst);
            }) {
                Ok(()) => 1,
                Err(SubmitError::ShutDown(_)) => 0,
                Err(_) => panic!("unexpected refusal"),
            }
        });
        let report = pool.shutdown();
        let accepted = submitter.join().unwrap();
        assert_eq!(ran.load(SeqCst), accepted);
        assert_eq!(report.completed as usize, accepted);
        assert_eq!(report.still_running, 0);
    });
}

/// One worker, so one tenant task out at a time: a second task held while
/// the first runs is let through when the first ends, whichever comes
/// first (a lost hand-off would leave `wait_idle` waiting forever).
#[test]
fn loom_tenant_end_lets_the_held_task_through() {
    model(2, || {
        let pool = Arc::new(pool(1));
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        pool.task()
            .tenant("t")
            .execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap();
        let (p, r) = (pool.clone(), ran.clone());
        let second = loom::thread::spawn(move || {
            p.task()
                .tenant("u")
                .execute(move || {
                    r.fetch_add(1, SeqCst);
                })
                .unwrap();
        });
        second.join().unwrap();
        pool.wait_idle();
        assert_eq!(ran.load(SeqCst), 2);
        assert_eq!(pool.shutdown().completed, 2);
    });
}

/// A key's order across the unnamed tenant: a keyed task with a priority
/// waits in the unnamed tenant's queue (the window is full); a later task
/// of its key with no option, submitted while the worker's end of the
/// window's task lets the first through, still runs after it, whichever
/// comes first (the shard's count in the tenants is lowered only once the
/// first is in its shard).
#[test]
fn loom_keyed_order_holds_across_the_unnamed_tenant() {
    model(2, || {
        let pool = pool(1);
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        pool.task()
            .tenant("t")
            .execute(move || l.lock().push(0))
            .unwrap();
        for (i, priority) in [(1, Some(crate::Priority::Low)), (2, None)] {
            let l = log.clone();
            let mut task = pool.task().key(&7u8);
            if let Some(p) = priority {
                task = task.priority(p);
            }
            task.execute(move || l.lock().push(i)).unwrap();
        }
        pool.wait_idle();
        let log = log.lock().clone();
        assert_eq!(
            log.iter().filter(|&&i| i != 0).copied().collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(pool.shutdown().completed, 3);
    });
}

/// `shutdown_now` with a task its tenant holds back (the tenant's one
/// slot taken by a task still running): the held task is abandoned, never
/// run, though the second worker may be awake as shutdown moves it to the
/// queues. (A worker once ran it there, before the abandon began.)
#[test]
fn loom_shutdown_now_abandons_a_held_task() {
    use crate::loom::sync::Condvar;
    use crate::TenantConfig;
    model(1, || {
        let pool = pool(2);
        pool.configure_tenant(&"t", TenantConfig::new().max_concurrency(1))
            .unwrap();
        // (the first task started, it may end)
        let gate = Arc::new((Mutex::new((false, false)), Condvar::new()));
        let g = gate.clone();
        pool.task()
            .tenant("t")
            .execute(move || {
                let (m, cv) = &*g;
                let mut s = m.lock();
                s.0 = true;
                cv.notify_all();
                while !s.1 {
                    cv.wait(&mut s);
                }
            })
            .unwrap();
        {
            let (m, cv) = &*gate;
            let mut s = m.lock();
            while !s.0 {
                cv.wait(&mut s);
            }
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        pool.task()
            .tenant("t")
            .execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap();
        let report = pool.shutdown_now();
        assert_eq!(ran.load(SeqCst), 0, "a held task ran");
        assert_eq!((report.abandoned, report.still_running), (1, 1));
        {
            let (m, cv) = &*gate;
            m.lock().1 = true;
            cv.notify_all();
        }
        drop(pool);
        assert_eq!(ran.load(SeqCst), 0);
    });
}
