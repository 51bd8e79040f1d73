//! The injector's tests: sequential and threaded ones on real builds, and
//! loom models of the protocol (`RUSTFLAGS="--cfg loom" cargo test --lib
//! loom_injector`).

#[cfg(not(loom))]
mod real {
    use super::super::*;
    use std::sync::atomic::AtomicUsize as StdCount;
    use std::sync::Arc;

    fn take<T>(q: &Injector<T>) -> Option<T> {
        q.pop()
    }

    #[test]
    fn one_thread_gets_every_job_in_order_across_blocks() {
        let q = Injector::new();
        for round in 0..3 {
            let n = 1_000 * (round + 1);
            for i in 0..n {
                q.push(i);
                assert_eq!(q.len(), i + 1);
            }
            assert!(!q.is_empty());
            for i in 0..n {
                assert_eq!(take(&q), Some(i));
                assert_eq!(q.len(), n - i - 1);
            }
            assert!(q.is_empty());
            assert_eq!(q.pop(), None);
        }
    }

    #[test]
    fn the_count_skips_install_markers() {
        for head in 0..3 * LAP {
            for tail in head..4 * LAP {
                let (h, t) = (head << SHIFT, tail << SHIFT);
                if head % LAP == BLOCK_CAP || tail % LAP == BLOCK_CAP {
                    continue;
                }
                let slots = (head..tail).filter(|i| i % LAP != BLOCK_CAP).count();
                assert_eq!(count_between(h, t), slots, "head {head} tail {tail}");
            }
        }
    }

    #[test]
    fn a_batch_takes_at_most_its_limit_half_the_queue_and_keeps_the_order() {
        let q = Injector::new();
        for i in 0..100 {
            q.push(i);
        }
        // A limit of 3: the oldest is returned, the next two go to the
        // sink newest first.
        let mut sunk = Vec::new();
        assert_eq!(q.pop_batch(3, |v| sunk.push(v)), Some(0));
        assert_eq!(sunk, [2, 1]);
        // No limit: never past the head block (63 slots) nor more than
        // half of what is queued.
        sunk.clear();
        assert_eq!(q.pop_batch(usize::MAX, |v| sunk.push(v)), Some(3));
        assert_eq!(sunk, (4..BLOCK_CAP).rev().collect::<Vec<_>>());
        sunk.clear();
        let left = 100 - BLOCK_CAP;
        assert_eq!(q.pop_batch(usize::MAX, |v| sunk.push(v)), Some(BLOCK_CAP));
        assert_eq!(sunk.len() + 1, left.div_ceil(2));
        // Every job is taken exactly once, in order.
        let mut rest = Vec::new();
        while let Some(v) = q.pop_batch(5, |v| rest.push(v)) {
            rest.push(v);
        }
        let mut all: Vec<usize> = (0..BLOCK_CAP + 1).collect();
        all.extend(sunk.iter().rev());
        rest.sort_unstable();
        all.extend(rest);
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn concurrent_batch_takers_move_every_job_once() {
        const PER: usize = 100_000;
        let q = Arc::new(Injector::<usize>::new());
        let taken = Arc::new(StdCount::new(0));
        let takers: Vec<_> = (0..2)
            .map(|t| {
                let (q, taken) = (Arc::clone(&q), Arc::clone(&taken));
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    while taken.load(Ordering::SeqCst) < 2 * PER {
                        assert!(std::time::Instant::now() < deadline, "takers stalled");
                        let mut batch = Vec::new();
                        let first = if t == 0 {
                            q.pop_batch(8, |v| batch.push(v))
                        } else {
                            q.pop()
                        };
                        if let Some(v) = first {
                            taken.fetch_add(1 + batch.len(), Ordering::SeqCst);
                            got.push(v);
                            got.extend(batch.into_iter().rev());
                        }
                    }
                    got
                })
            })
            .collect();
        let pushers: Vec<_> = (0..2)
            .map(|p| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || (0..PER).for_each(|i| q.push(p * PER + i)))
            })
            .collect();
        for h in pushers {
            h.join().expect("pusher");
        }
        let mut all = Vec::new();
        for h in takers {
            all.extend(h.join().expect("taker"));
        }
        all.sort_unstable();
        assert_eq!(all, (0..2 * PER).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    struct Counted(Arc<StdCount>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn dropping_the_queue_drops_each_queued_job_once() {
        let drops = Arc::new(StdCount::new(0));
        let q = Injector::new();
        for _ in 0..500 {
            q.push(Counted(Arc::clone(&drops)));
        }
        for _ in 0..200 {
            drop(take(&q).expect("queued"));
        }
        assert_eq!(drops.load(Ordering::SeqCst), 200);
        drop(q);
        assert_eq!(drops.load(Ordering::SeqCst), 500);
    }

    #[test]
    fn concurrent_pushers_and_takers_move_every_job_once_in_order() {
        const PER: usize = 100_000;
        let q = Arc::new(Injector::<(usize, usize)>::new());
        let taken: Vec<_> = (0..2)
            .map(|_| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut last = [None::<usize>; 2];
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    while got.len() < PER {
                        assert!(std::time::Instant::now() < deadline, "takers stalled");
                        if let Some((p, i)) = take(&q) {
                            // Each pusher's jobs leave in the order pushed.
                            assert!(last[p].map_or(true, |l| l < i), "order broken");
                            last[p] = Some(i);
                            got.push((p, i));
                        }
                    }
                    got
                })
            })
            .collect();
        let pushers: Vec<_> = (0..2)
            .map(|p| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || (0..PER).for_each(|i| q.push((p, i))))
            })
            .collect();
        for h in pushers {
            h.join().expect("pusher");
        }
        let mut all: Vec<_> = taken
            .into_iter()
            .flat_map(|h| h.join().expect("taker"))
            .collect();
        all.sort_unstable();
        let want: Vec<_> = (0..2).flat_map(|p| (0..PER).map(move |i| (p, i))).collect();
        assert_eq!(all, want);
        assert!(q.is_empty());
    }
}

#[cfg(loom)]
mod models {
    use super::super::Injector;
    use crate::loom::sync::atomic::Ordering::SeqCst;
    use crate::loom::sync::Arc;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(f);
    }

    /// The injector (two slots per block under loom, so
    /// three jobs cross a block boundary): a pusher and a taker race while
    /// the pusher installs the next block and the taker retires the first one
    /// into the spares. Each job comes out exactly once, in the order pushed.
    #[test]
    fn loom_injector_push_races_pop_across_blocks() {
        model(|| {
            let q = Arc::new(Injector::<usize>::new());
            let pusher = {
                let q = q.clone();
                loom::thread::spawn(move || (1..=3).for_each(|v| q.push(v)))
            };
            let taker = {
                let q = q.clone();
                loom::thread::spawn(move || (0..3).filter_map(|_| q.pop()).collect::<Vec<_>>())
            };
            pusher.join().expect("pusher");
            let mut got = taker.join().expect("taker");
            while let Some(v) = q.pop() {
                got.push(v);
            }
            assert_eq!(got, [1, 2, 3], "each job once, in order");
            // The retired block is reused: the queue still works.
            q.push(4);
            assert_eq!(q.pop(), Some(4));
            assert!(q.is_empty());
        });
    }

    /// Two takers race over one block: whichever takes the last slot retires
    /// the block while the other may still be reading the first slot (the
    /// `DESTROY` hand-off), and the block is reused by the next push. Each
    /// job is dropped exactly once: by its taker, or with the queue.
    #[test]
    fn loom_injector_takers_race_over_a_retiring_block() {
        struct Counted(usize, std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.1.fetch_add(1, SeqCst);
            }
        }
        model(|| {
            let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let q = Arc::new(Injector::<Counted>::new());
            for v in 1..=3 {
                q.push(Counted(v, drops.clone()));
            }
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    let q = q.clone();
                    loom::thread::spawn(move || q.pop().map(|c| c.0))
                })
                .collect();
            let mut got: Vec<usize> = takers
                .into_iter()
                .filter_map(|t| t.join().expect("taker"))
                .collect();
            got.sort_unstable();
            assert_eq!(got, [1, 2], "the two oldest, once each");
            assert_eq!(drops.load(SeqCst), 2, "dropped by their takers");
            q.push(Counted(4, drops.clone()));
            drop(q);
            assert_eq!(drops.load(SeqCst), 4, "the rest with the queue, once each");
        });
    }

    /// A batch taker and a single taker race over a block, while a pusher
    /// adds a job that crosses into the next block: each job is taken
    /// exactly once, and a batch comes out in order.
    #[test]
    fn loom_injector_batch_races_a_single_take() {
        model(|| {
            let q = Arc::new(Injector::<usize>::new());
            q.push(1);
            q.push(2);
            let pusher = {
                let q = q.clone();
                loom::thread::spawn(move || q.push(3))
            };
            let batcher = {
                let q = q.clone();
                loom::thread::spawn(move || {
                    let mut batch = Vec::new();
                    let first = q.pop_batch(usize::MAX, |v| batch.push(v));
                    first
                        .into_iter()
                        .chain(batch.into_iter().rev())
                        .collect::<Vec<_>>()
                })
            };
            let single = q.pop();
            pusher.join().expect("pusher");
            let batch = batcher.join().expect("batcher");
            assert!(batch.windows(2).all(|w| w[0] < w[1]), "{batch:?}");
            let mut got: Vec<usize> = batch.into_iter().chain(single).collect();
            while let Some(v) = q.pop() {
                got.push(v);
            }
            got.sort_unstable();
            assert_eq!(got, [1, 2, 3]);
        });
    }
}
