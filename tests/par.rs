//! Data-parallel loops: each helper against its sequential counterpart on
//! random inputs (lengths around the split points included), early exits
//! that stop work, panics that propagate and leave the pool usable, items
//! dropped exactly once, sorts that keep order where they say so.
#![cfg(not(loom))]

mod common;

use common::{quiet_expected_panics, until, DropCounter, MARK};
use ebbtide::par::prelude::*;
use ebbtide::Pool;
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};

/// One pool per worker count, shared by every case of a property.
fn pool(workers: usize) -> &'static Pool {
    static POOLS: [OnceLock<Pool>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    POOLS[workers].get_or_init(|| Pool::builder().workers(workers).build().unwrap())
}

/// `len` pseudo-random numbers below `below`, from `seed`.
fn random(seed: u64, len: usize, below: u64) -> Vec<u64> {
    common::workloads::random_vec(len, seed | 1)
        .into_iter()
        .map(|x| x % below)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reductions_match_sequential(
        workers in 1usize..=3,
        v in prop::collection::vec(-1000i64..1000, 0..600),
        min_len in 1usize..40,
    ) {
        let p = pool(workers);
        let (sum, count, min, max, folded) = p.install(|| (
            v.par_iter().with_min_len(min_len).sum::<i64>(),
            v.par_iter().with_min_len(min_len).count(),
            v.par_iter().with_min_len(min_len).min(),
            v.par_iter().with_min_len(min_len).max(),
            v.par_iter().with_min_len(min_len).map(|x| x * 3).reduce(|| 0, |a, b| a + b),
        ));
        prop_assert_eq!(sum, v.iter().sum::<i64>());
        prop_assert_eq!(count, v.len());
        prop_assert_eq!(min, v.iter().min());
        prop_assert_eq!(max, v.iter().max());
        prop_assert_eq!(folded, v.iter().map(|x| x * 3).sum::<i64>());
        // Ties: the first least key and the last greatest, as `Iterator`.
        let (lo, hi) = p.install(|| (
            v.par_iter().with_min_len(min_len).enumerate().min_by_key(|(_, x)| *x % 7),
            v.par_iter().with_min_len(min_len).enumerate().max_by_key(|(_, x)| *x % 7),
        ));
        prop_assert_eq!(lo, v.iter().enumerate().min_by_key(|(_, x)| *x % 7));
        prop_assert_eq!(hi, v.iter().enumerate().max_by_key(|(_, x)| *x % 7));
    }

    #[test]
    fn map_collect_keeps_order_and_for_each_visits_each_once(
        workers in 1usize..=3,
        v in prop::collection::vec(any::<u32>(), 0..600),
        min_len in 1usize..40,
    ) {
        let p = pool(workers);
        let mapped: Vec<(usize, u64)> = p.install(|| {
            v.par_iter().with_min_len(min_len).map(|&x| x as u64 * 2).enumerate().collect()
        });
        let expected: Vec<(usize, u64)> = v.iter().map(|&x| x as u64 * 2).enumerate().collect();
        prop_assert_eq!(mapped, expected);

        let visits: Vec<AtomicUsize> = v.iter().map(|_| AtomicUsize::new(0)).collect();
        p.install(|| (0..v.len()).into_par().with_min_len(min_len).for_each(|i| {
            visits[i].fetch_add(1, SeqCst);
        }));
        prop_assert!(visits.iter().all(|n| n.load(SeqCst) == 1));

        let mut w = v.clone();
        p.install(|| w.par_iter_mut().with_min_len(min_len).for_each(|x| *x = x.wrapping_add(1)));
        prop_assert_eq!(w, v.iter().map(|x| x.wrapping_add(1)).collect::<Vec<_>>());
    }

    #[test]
    fn chunks_match_slice_chunks(
        workers in 1usize..=3,
        v in prop::collection::vec(any::<u16>(), 0..600),
        size in 1usize..50,
    ) {
        let p = pool(workers);
        let sums: Vec<u64> = p.install(|| {
            v.par_chunks(size).map(|c| c.iter().map(|&x| x as u64).sum()).collect()
        });
        let expected: Vec<u64> = v.chunks(size).map(|c| c.iter().map(|&x| x as u64).sum()).collect();
        prop_assert_eq!(sums, expected);

        let mut w = v.clone();
        p.install(|| w.par_chunks_mut(size).enumerate().for_each(|(i, c)| {
            c.iter_mut().for_each(|x| *x = i as u16);
        }));
        let mut expected = v.clone();
        expected.chunks_mut(size).enumerate().for_each(|(i, c)| c.iter_mut().for_each(|x| *x = i as u16));
        prop_assert_eq!(w, expected);
    }

    #[test]
    fn searches_match_sequential(
        workers in 1usize..=3,
        v in prop::collection::vec(0u32..500, 0..600),
        target in 0u32..500,
        min_len in 1usize..40,
    ) {
        let p = pool(workers);
        let (any, all, found) = p.install(|| (
            v.par_iter().with_min_len(min_len).any(|&x| x == target),
            v.par_iter().with_min_len(min_len).all(|&x| x != target),
            v.par_iter().with_min_len(min_len).find_any(|&&x| x % 100 == target % 100),
        ));
        prop_assert_eq!(any, v.contains(&target));
        prop_assert_eq!(all, !v.contains(&target));
        match found {
            Some(x) => prop_assert_eq!(x % 100, target % 100),
            None => prop_assert!(v.iter().all(|x| x % 100 != target % 100)),
        }
    }

    #[test]
    fn ranges_match_sequential(workers in 1usize..=3, a in -300i64..300, b in -300i64..300) {
        let p = pool(workers);
        let got: Vec<i64> = p.install(|| (a..b).into_par().collect());
        prop_assert_eq!(got, (a..b).collect::<Vec<_>>());
        let bytes: Vec<i8> = p.install(|| (-128i8..127).into_par().map(|x| x.wrapping_mul(3)).collect());
        prop_assert_eq!(bytes, (-128i8..127).map(|x| x.wrapping_mul(3)).collect::<Vec<_>>());
        let s: u64 = p.install(|| (0..(a.unsigned_abs() * 1000)).into_par().sum());
        prop_assert_eq!(s, (0..(a.unsigned_abs() * 1000)).sum::<u64>());
    }

    /// Lengths around and far beyond the sorts' sequential thresholds, with
    /// few distinct keys (many equal items) or many.
    #[test]
    fn sorts_match_std(
        workers in 1usize..=3,
        len in prop_oneof![0usize..40, 8000usize..8400, 16_000usize..17_000, 40_000usize..90_000],
        seed in any::<u64>(),
        distinct in prop_oneof![Just(2u64), Just(50), Just(u64::MAX)],
    ) {
        let p = pool(workers);
        let keys = random(seed, len, distinct);
        // Stable: equal keys keep their original order (the index shows it).
        let mut v: Vec<(u64, usize)> = keys.iter().copied().zip(0..).collect();
        let mut expected = v.clone();
        expected.sort_by_key(|e| e.0);
        p.install(|| v.par_sort_by_key(|e| e.0));
        prop_assert!(v == expected, "stable sort differs from std");

        let mut u = keys.clone();
        let mut expected = keys;
        expected.sort_unstable();
        p.install(|| u.par_sort_unstable());
        prop_assert!(u == expected, "unstable sort differs from std");
    }
}

#[test]
fn sorts_handle_presorted_reversed_equal_and_organ_pipe_inputs() {
    let p = pool(2);
    let n = 200_000u64;
    let inputs: Vec<Vec<u64>> = vec![
        (0..n).collect(),
        (0..n).rev().collect(),
        vec![7; n as usize],
        (0..n / 2).chain((0..n / 2).rev()).collect(),
        (0..n).map(|i| i % 3).collect(),
    ];
    for input in inputs {
        let mut expected = input.clone();
        expected.sort();
        let mut a = input.clone();
        p.install(|| a.par_sort());
        assert!(a == expected);
        let mut b = input;
        p.install(|| b.par_sort_unstable_by(|x, y| y.cmp(x)));
        expected.reverse();
        assert!(b == expected);
    }
}

#[test]
fn sorts_owning_items_leave_a_permutation_when_the_comparison_panics() {
    quiet_expected_panics();
    let p = pool(2);
    let words: Vec<String> = random(5, 60_000, 1 << 40)
        .iter()
        .map(|x| x.to_string())
        .collect();
    for stable in [true, false] {
        for limit in [10usize, 30_000, 200_000] {
            let mut v = words.clone();
            let calls = AtomicUsize::new(0);
            let compare = |a: &String, b: &String| {
                if calls.fetch_add(1, SeqCst) == limit {
                    panic!("{MARK}: comparison {limit}");
                }
                a.cmp(b)
            };
            let caught = catch_unwind(AssertUnwindSafe(|| {
                p.install(|| {
                    if stable {
                        v.par_sort_by(compare)
                    } else {
                        v.par_sort_unstable_by(compare)
                    }
                })
            }));
            assert!(caught.is_err(), "comparison {limit} should have panicked");
            let mut got = v;
            got.sort();
            let mut all = words.clone();
            all.sort();
            assert!(
                got == all,
                "not a permutation after a panic (stable: {stable}, at {limit})"
            );
        }
    }
    // The pool carries on.
    let mut v = words.clone();
    p.install(|| v.par_sort());
    assert!(v.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn early_exit_stops_work_exactly_on_one_worker() {
    let p = pool(1);
    let calls = AtomicUsize::new(0);
    let hit = p.install(|| {
        (0..100_000u32).into_par().find_any(|&x| {
            calls.fetch_add(1, SeqCst);
            x == 10
        })
    });
    assert_eq!(hit, Some(10));
    // 0..=10 in the first piece; the second piece sees the answer and
    // skips all of its items.
    assert_eq!(calls.load(SeqCst), 11);

    calls.store(0, SeqCst);
    let all = p.install(|| {
        (0..100_000u32).into_par().all(|x| {
            calls.fetch_add(1, SeqCst);
            x < 5
        })
    });
    assert!(!all);
    assert_eq!(calls.load(SeqCst), 6);
}

#[test]
fn early_exit_stops_each_piece_at_its_first_hit_on_many_workers() {
    let p = pool(3);
    let calls = AtomicUsize::new(0);
    let any = p.install(|| {
        (0..100_000u32).into_par().with_min_len(1000).any(|_| {
            calls.fetch_add(1, SeqCst);
            true
        })
    });
    assert!(any);
    // Pieces hold at least 1000 items, so there are at most 100, and each
    // calls the predicate at most once before it stops.
    let calls = calls.load(SeqCst);
    assert!((1..=100).contains(&calls), "{calls} predicate calls");
}

#[test]
fn a_panic_propagates_after_the_other_pieces_end_and_the_pool_carries_on() {
    quiet_expected_panics();
    let p = pool(2);
    let started = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        p.install(|| {
            (0..10_000u32).into_par().for_each(|x| {
                started.fetch_add(1, SeqCst);
                if x == 7_777 {
                    panic!("{MARK}: item {x}");
                }
                finished.fetch_add(1, SeqCst);
            })
        })
    }));
    let payload = caught.expect_err("the item's panic reaches the caller");
    let message = payload
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(message.contains("item 7777"), "{message}");
    // Nothing was still running when the panic arrived: every item that
    // started, except the panicking one, had finished.
    let (s, f) = (started.load(SeqCst), finished.load(SeqCst));
    assert_eq!(s, f + 1);
    // The pool works, and nothing of the failed loop runs later.
    let sum: u64 = p.install(|| (0..1000u64).into_par().sum());
    assert_eq!(sum, 499_500);
    assert_eq!((started.load(SeqCst), finished.load(SeqCst)), (s, f));
}

#[test]
fn owned_items_are_dropped_exactly_once_even_when_a_piece_panics() {
    quiet_expected_panics();
    let p = pool(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let items = || {
        (0..5000)
            .map(|_| DropCounter(drops.clone()))
            .collect::<Vec<_>>()
    };

    p.install(|| items().into_par().for_each(drop));
    assert_eq!(drops.swap(0, SeqCst), 5000);

    // Collected values: made by the loop, dropped with the `Vec`.
    let made = AtomicUsize::new(0);
    let out: Vec<DropCounter> = p.install(|| {
        (0..5000u32)
            .into_par()
            .map(|_| {
                made.fetch_add(1, SeqCst);
                DropCounter(drops.clone())
            })
            .collect()
    });
    assert_eq!(out.len(), 5000);
    drop(out);
    assert_eq!(drops.swap(0, SeqCst), 5000);

    // A panic halfway: the moved-in items not yet taken, the ones taken,
    // and the values already collected are each dropped once.
    let made = AtomicUsize::new(0);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        p.install(|| {
            let out: Vec<DropCounter> = items()
                .into_par()
                .enumerate()
                .map(|(i, item)| {
                    if i == 2500 {
                        panic!("{MARK}: item {i}");
                    }
                    made.fetch_add(1, SeqCst);
                    item
                })
                .collect();
            out
        })
    }));
    assert!(caught.is_err());
    assert_eq!(drops.load(SeqCst), 5000, "every moved-in item dropped once");
}

#[test]
fn outside_a_pool_loops_run_on_the_calling_thread() {
    let me = std::thread::current().id();
    let threads = std::sync::Mutex::new(Vec::new());
    (0..1000u32)
        .into_par()
        .for_each(|_| threads.lock().unwrap().push(std::thread::current().id()));
    let threads = threads.into_inner().unwrap();
    assert_eq!(threads.len(), 1000);
    assert!(threads.iter().all(|t| *t == me));
    let mut v = random(1, 50_000, 1000);
    let mut expected = v.clone();
    expected.sort();
    v.par_sort();
    assert_eq!(v, expected);
}

#[test]
fn uneven_work_is_taken_by_idle_workers() {
    // Three workers; the first item and the middle one block until the
    // other items are mostly done. The two workers running them hold their
    // pieces; the third must do the rest, which it can only if the
    // blocked workers' pieces were split off for it: the starter's first
    // split halves, and the half a thief took splits again (a stolen piece
    // gets its splits back) so that little stays behind its blocked item.
    let p = pool(3);
    let n = 4096usize;
    let done = AtomicUsize::new(0);
    let needed = n / 2 + n / 8;
    p.install(|| {
        (0..n).into_par().for_each(|i| {
            if i == 0 || i == n / 2 {
                until(|| done.load(SeqCst) >= needed);
            }
            done.fetch_add(1, SeqCst);
        })
    });
    assert_eq!(done.load(SeqCst), n);
}

#[test]
fn zero_sizes_are_refused_with_the_std_message() {
    quiet_expected_panics();
    let v = [1, 2, 3];
    let e = catch_unwind(|| v.par_chunks(0).count()).unwrap_err();
    assert_eq!(
        e.downcast_ref::<&str>(),
        Some(&"chunk size must be non-zero")
    );
    let mut w = [1, 2, 3];
    let e = catch_unwind(AssertUnwindSafe(|| w.par_chunks_mut(0).count())).unwrap_err();
    assert_eq!(
        e.downcast_ref::<&str>(),
        Some(&"chunk size must be non-zero")
    );
    let e = catch_unwind(|| v.par_iter().with_min_len(0).count()).unwrap_err();
    assert_eq!(
        e.downcast_ref::<&str>(),
        Some(&"min_len must be at least 1")
    );
}

#[test]
fn empty_and_one_item_inputs_give_the_sequential_answers() {
    let p = pool(2);
    for v in [Vec::<u32>::new(), vec![41]] {
        let (sum, count, min, max) = p.install(|| {
            (
                v.par_iter().sum::<u32>(),
                v.par_iter().count(),
                v.par_iter().min(),
                v.par_iter().max_by_key(|x| **x),
            )
        });
        assert_eq!(sum, v.iter().sum::<u32>());
        assert_eq!(count, v.len());
        assert_eq!(min, v.iter().min());
        assert_eq!(max, v.iter().max());
        let (any, all, found) = p.install(|| {
            (
                v.par_iter().any(|&x| x == 41),
                v.par_iter().all(|&x| x == 41),
                v.par_iter().find_any(|&&x| x == 41),
            )
        });
        assert_eq!((any, all, found), (!v.is_empty(), true, v.first()));
        let collected: Vec<u32> = p.install(|| v.clone().into_par().map(|x| x + 1).collect());
        assert_eq!(collected, v.iter().map(|x| x + 1).collect::<Vec<_>>());
        let chunks: Vec<usize> = p.install(|| v.par_chunks(3).map(<[u32]>::len).collect());
        assert_eq!(chunks, v.chunks(3).map(<[u32]>::len).collect::<Vec<_>>());
        let reduced = p.install(|| v.par_iter().map(|&x| x * 2).reduce(|| 7, |a, b| a + b));
        assert_eq!(reduced, 7 + v.iter().map(|&x| x * 2).sum::<u32>());
        let mut s = v.clone();
        p.install(|| s.par_sort());
        assert_eq!(s, v);
        p.install(|| s.par_sort_unstable());
        assert_eq!(s, v);
    }
}
