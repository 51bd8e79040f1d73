//! Shared by the benchmarks: a countdown latch for the peers that have no
//! "wait for all" of their own, the workloads (also used by the tests), and
//! the child-process harness.
#![allow(dead_code)]

pub mod harness;
pub mod par;
pub mod peers;
pub mod workloads;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Opens when `count_down` has been called `n` times.
pub struct Countdown {
    left: AtomicUsize,
    done: Mutex<bool>,
    cv: Condvar,
}

impl Countdown {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Countdown {
            left: AtomicUsize::new(n),
            done: Mutex::new(false),
            cv: Condvar::new(),
        })
    }

    pub fn count_down(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.done.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    pub fn wait(&self) {
        let mut done = self.done.lock().unwrap();
        while !*done {
            done = self.cv.wait(done).unwrap();
        }
    }
}

/// Submits one tiny task that succeeds at once, with a handle (dropped), in
/// one of the forms whose costs the benchmarks compare: `spawn` (plain),
/// `spawn_with` (a context), `token` (a context under a token of the
/// caller's, one for every task), `fallible` (`spawn_fallible`), `retry`
/// (with a retry policy).
pub fn submit_variant(
    pool: &ebbtide::Pool,
    variant: &str,
    counter: &Arc<std::sync::atomic::AtomicU64>,
    policy: &ebbtide::RetryPolicy,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let c = Arc::clone(counter);
    match variant {
        "spawn" => drop(pool.spawn(move || c.fetch_add(1, Relaxed)).unwrap()),
        "spawn_with" => drop(
            pool.task()
                .spawn_with(move |_| Ok(c.fetch_add(1, Relaxed)))
                .unwrap(),
        ),
        "token" => {
            static TOKEN: std::sync::OnceLock<ebbtide::CancelToken> = std::sync::OnceLock::new();
            let token = TOKEN.get_or_init(ebbtide::CancelToken::new);
            drop(
                pool.task()
                    .cancel_token(token)
                    .spawn_with(move |_| Ok(c.fetch_add(1, Relaxed)))
                    .unwrap(),
            )
        }
        "fallible" => drop(
            pool.task()
                .spawn_fallible(move |_| Ok::<_, &str>(c.fetch_add(1, Relaxed)))
                .unwrap(),
        ),
        "retry" => drop(
            pool.task()
                .retry(policy.clone())
                .spawn_fallible(move |_| Ok::<_, &str>(c.fetch_add(1, Relaxed)))
                .unwrap(),
        ),
        other => panic!("no variant {other:?}"),
    }
}
