//! join, scope and install: results equal the sequential computation,
//! panics propagate as documented, and no nesting deadlocks.

#![cfg(not(loom))]

mod common;

use common::workloads::{fib, quicksort, random_vec};
use common::{quiet_expected_panics, until, Gate, MARK};
use ebbtide::{join, Pool, PoolHandle};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn sum(v: &[u64]) -> u64 {
    if v.len() <= 4096 {
        return v.iter().sum();
    }
    let (l, r) = v.split_at(v.len() / 2);
    let (a, b) = join(|| sum(l), || sum(r));
    a + b
}

fib!(fib, join);
quicksort!(quicksort, join, 256);

#[test]
fn divide_and_conquer_sum_of_ten_million_equals_the_sequential_sum() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let v: Vec<u64> = (0..10_000_000u64).map(|i| i % 1_000_003).collect();
    let expected: u64 = v.iter().sum();
    assert_eq!(pool.install(|| sum(&v)), expected);
}

#[test]
fn fib_with_a_join_at_every_node() {
    fn seq(n: u32) -> u64 {
        if n < 2 {
            n as u64
        } else {
            seq(n - 1) + seq(n - 2)
        }
    }
    let pool = Pool::builder().workers(2).build().unwrap();
    assert_eq!(pool.install(|| fib(24)), seq(24));
    assert_eq!(pool.join(|| fib(10), || fib(11)), (55, 89));
}

#[test]
fn quicksort_of_a_million_is_sorted_and_a_permutation() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let mut v = random_vec(1_000_000, 0x9E37_79B9_7F4A_7C15);
    let mut expected = v.clone();
    expected.sort_unstable();
    pool.install(|| quicksort(&mut v));
    assert_eq!(v, expected);
}

#[test]
fn join_outside_any_pool_runs_both_on_the_caller() {
    let me = std::thread::current().id();
    let (a, b) = join(
        || std::thread::current().id(),
        || std::thread::current().id(),
    );
    assert_eq!((a, b), (me, me));
}

#[test]
fn a_panic_in_a_propagates_after_b_ran() {
    quiet_expected_panics();
    let pool = Pool::builder().workers(2).build().unwrap();
    let b_ran = AtomicUsize::new(0);
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.join(|| panic!("{MARK}: a"), || b_ran.fetch_add(1, SeqCst))
    }))
    .unwrap_err();
    assert_eq!(panic_message(err), format!("{MARK}: a"));
    assert_eq!(b_ran.load(SeqCst), 1);
}

#[test]
fn a_panic_in_b_propagates() {
    quiet_expected_panics();
    let pool = Pool::builder().workers(2).build().unwrap();
    let err =
        std::panic::catch_unwind(|| pool.join(|| 1, || -> u8 { panic!("{MARK}: b") })).unwrap_err();
    assert_eq!(panic_message(err), format!("{MARK}: b"));
}

#[test]
fn when_both_panic_the_first_one_wins() {
    quiet_expected_panics();
    let pool = Pool::builder().workers(2).build().unwrap();
    for _ in 0..50 {
        let err = std::panic::catch_unwind(|| {
            pool.join(
                || -> u8 { panic!("{MARK}: a") },
                || -> u8 { panic!("{MARK}: b") },
            )
        })
        .unwrap_err();
        assert_eq!(panic_message(err), format!("{MARK}: a"));
    }
    // The pool is intact.
    assert_eq!(pool.install(|| fib(15)), 610);
}

#[test]
fn install_borrows_returns_and_resumes_panics() {
    quiet_expected_panics();
    let pool = Pool::builder().workers(2).build().unwrap();
    let data = vec![3u64; 1000];
    let on_worker = pool.install(|| {
        std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("ebbtide-worker"))
    });
    assert!(on_worker);
    assert_eq!(pool.install(|| data.iter().sum::<u64>()), 3000);
    let err = std::panic::catch_unwind(|| pool.install(|| -> u8 { panic!("{MARK}: install") }))
        .unwrap_err();
    assert_eq!(panic_message(err), format!("{MARK}: install"));
    pool.shutdown();
    let err = pool.try_install(|| 1).unwrap_err();
    assert!(err.is_shut_down());
}

#[test]
fn scope_tasks_borrow_and_mutate_disjoint_data() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let mut data = vec![0u64; 10_000];
    let total = AtomicUsize::new(0);
    pool.scope(|s| {
        for (i, chunk) in data.chunks_mut(100).enumerate() {
            let total = &total;
            s.spawn(move || {
                for (j, x) in chunk.iter_mut().enumerate() {
                    *x = (i * 100 + j) as u64;
                }
                total.fetch_add(chunk.len(), SeqCst);
            });
        }
    });
    assert_eq!(total.load(SeqCst), 10_000);
    assert!(data.iter().enumerate().all(|(i, &x)| x == i as u64));
}

#[test]
fn scope_handles_return_values_and_tasks_spawn_more() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let words = ["ebb", "and", "flow"];
    let count = AtomicUsize::new(0);
    let lens: Vec<usize> = pool.scope(|s| {
        let handles: Vec<_> = words
            .iter()
            .map(|w| {
                let count = &count;
                s.spawn(move || {
                    // Capture the scope to spawn more.
                    for _ in 0..w.len() {
                        s.execute(move || {
                            count.fetch_add(1, SeqCst);
                        });
                    }
                    w.len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(lens, [3, 3, 4]);
    assert_eq!(count.load(SeqCst), 10);
}

#[test]
fn nested_scopes_and_joins_inside_scope_tasks() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let handle = pool.handle();
    let mut grid = vec![vec![0u32; 64]; 16];
    pool.scope(|outer| {
        for (r, row) in grid.iter_mut().enumerate() {
            let handle = &handle;
            outer.spawn(move || {
                let r = r as u32;
                let (left, right) = row.split_at_mut(32);
                // A join inside a scope task, and a scope inside each half.
                join(
                    || {
                        handle.scope(|s| {
                            for (c, x) in left.iter_mut().enumerate() {
                                s.execute(move || *x = r * 100 + c as u32);
                            }
                        })
                    },
                    || {
                        handle.scope(|s| {
                            for (c, x) in right.iter_mut().enumerate() {
                                s.execute(move || *x = r * 100 + 32 + c as u32);
                            }
                        })
                    },
                );
            });
        }
    });
    for (r, row) in grid.iter().enumerate() {
        assert!(row
            .iter()
            .enumerate()
            .all(|(c, &x)| x == r as u32 * 100 + c as u32));
    }
}

#[test]
fn scope_inside_scope_via_handle() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let handle = pool.handle();
    let total = AtomicUsize::new(0);
    pool.scope(|s| {
        for _ in 0..4 {
            let (handle, total) = (&handle, &total);
            s.spawn(move || {
                handle.scope(|inner| {
                    for _ in 0..8 {
                        inner.execute(move || {
                            total.fetch_add(1, SeqCst);
                        });
                    }
                });
            });
        }
    });
    assert_eq!(total.load(SeqCst), 32);
}

#[test]
fn a_scope_task_panic_is_raised_after_every_other_task_ran() {
    quiet_expected_panics();
    let pool = Pool::builder().workers(2).build().unwrap();
    let ran = AtomicUsize::new(0);
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.scope(|s| {
            s.execute(|| panic!("{MARK}: task"));
            for _ in 0..100 {
                s.execute(|| {
                    ran.fetch_add(1, SeqCst);
                });
            }
        })
    }))
    .unwrap_err();
    assert_eq!(panic_message(err), format!("{MARK}: task"));
    assert_eq!(ran.load(SeqCst), 100);
    // A joined panic is the joiner's, not re-raised.
    let r = pool.scope(|s| {
        let h = s.spawn(|| -> u8 { panic!("{MARK}: joined") });
        h.join()
    });
    assert_eq!(
        r,
        Err(ebbtide::TaskError::Panicked {
            message: format!("{MARK}: joined")
        })
    );
    // `join_unwind` hands back the payload itself.
    let payload = pool.scope(|s| {
        s.spawn(|| -> u8 { panic!("{MARK}: unwound") })
            .join_unwind()
            .unwrap_err()
    });
    assert_eq!(panic_message(payload), format!("{MARK}: unwound"));
}

#[test]
fn scope_fifo_starts_tasks_in_submission_order() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let order = Mutex::new(Vec::new());
    pool.scope_fifo(|s| {
        for i in 0..100 {
            let order = &order;
            s.execute(move || order.lock().unwrap().push(i));
        }
    });
    assert_eq!(order.into_inner().unwrap(), (0..100).collect::<Vec<_>>());
    // The LIFO scope runs the newest first on one worker, except that one
    // look in 61 starts at the oldest end (bounded waiting): of 10 tasks at
    // most one runs out of that order, and it is the oldest left then.
    let order = Mutex::new(Vec::new());
    pool.scope(|s| {
        for i in 0..10 {
            let order = &order;
            s.execute(move || order.lock().unwrap().push(i));
        }
    });
    let order = order.into_inner().unwrap();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "{order:?}");
    let lifo = (0..10).rev().collect::<Vec<_>>();
    let oldest_first = |k: usize| {
        let mut o = lifo.clone();
        let oldest = o.remove(9);
        o.insert(k, oldest);
        o
    };
    assert!(
        order == lifo || (0..10).any(|k| order == oldest_first(k)),
        "{order:?}"
    );
}

#[test]
fn every_nesting_finishes_on_a_one_worker_pool() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let h = pool.handle();
    let result = pool
        .spawn(move || {
            // install inside a task (runs inline), join inside that, a scope
            // inside the join, and a JoinHandle::join inside the scope.
            h.install(|| {
                let (a, b) = join(
                    || {
                        h.scope(|s| {
                            let inner = s.spawn(|| {
                                let task = h.spawn(|| 20).unwrap();
                                task.join().unwrap() + 1
                            });
                            inner.join().unwrap()
                        })
                    },
                    || h.install(|| fib(12)),
                );
                a + b as i32
            })
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(result, 21 + 144);
}

#[test]
fn two_one_worker_pools_installing_into_each_other() {
    let a = Pool::builder()
        .workers(1)
        .thread_name("pool-a")
        .build()
        .unwrap();
    let b = Pool::builder()
        .workers(1)
        .thread_name("pool-b")
        .build()
        .unwrap();
    let (ha, hb) = (a.handle(), b.handle());
    fn ping(depth: u32, me: &PoolHandle, other: &PoolHandle) -> u32 {
        if depth == 0 {
            return 0;
        }
        other.install(|| ping(depth - 1, other, me)) + 1
    }
    assert_eq!(a.install(|| ping(20, &ha, &hb)), 20);
    // And at the same time from both sides.
    let (x, y) = std::thread::scope(|s| {
        let x = s.spawn(|| a.install(|| ping(10, &ha, &hb)));
        let y = s.spawn(|| b.install(|| ping(10, &hb, &ha)));
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!((x, y), (10, 10));
}

#[test]
fn a_join_per_node_down_a_list_100_000_long() {
    struct Node {
        value: u64,
        next: Option<Box<Node>>,
    }
    fn walk(node: &Node) -> u64 {
        match &node.next {
            None => node.value,
            Some(next) => {
                let (a, b) = join(|| node.value, || walk(next));
                a + b
            }
        }
    }
    let mut list: Option<Box<Node>> = None;
    for value in 0..100_000u64 {
        list = Some(Box::new(Node { value, next: list }));
    }
    let list = list.unwrap();
    // The sequential recursion needs this much stack as well.
    let pool = Pool::builder()
        .workers(2)
        .stack_size(1 << 30)
        .build()
        .unwrap();
    assert_eq!(pool.install(|| walk(&list)), (0..100_000u64).sum::<u64>());
    // Drop the list without recursing.
    let mut next = list.next;
    while let Some(mut node) = next {
        next = node.next.take();
    }
}

#[test]
fn half_a_million_joins_in_a_row() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let total = pool.install(|| {
        let mut total = 0u64;
        for i in 0..500_000u64 {
            let (a, b) = join(|| i, || 1);
            total += a + b;
        }
        total
    });
    assert_eq!(total, (0..500_000u64).sum::<u64>() + 500_000);
    // Counts are exact once the pool is idle (the install's caller may
    // return a moment before its worker counts the completion).
    common::idle(&pool);
    let c = pool.metrics().counts;
    assert_eq!((c.submitted, c.completed), (1, 1));
}

#[test]
fn join_blocking_does_not_help_and_counts_the_worker_as_blocked() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let other = Pool::builder().workers(1).build().unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let gated = other
        .spawn(move || {
            g.wait();
            7
        })
        .unwrap();
    let waiting = pool.spawn(move || gated.join_blocking()).unwrap();
    until(|| pool.metrics().blocked_workers == 1);
    gate.open();
    assert_eq!(waiting.join(), Ok(Ok(7)));
    common::idle(&pool);
    assert_eq!(pool.metrics().blocked_workers, 0);
}

#[test]
fn a_lock_held_across_join_blocking_cannot_be_taken_by_a_helped_task() {
    // With one worker, `join` would help: the queued task below runs on the
    // waiting thread and deadlocks on the lock the waiter holds. The task
    // is in another pool here, and `join_blocking` runs nothing else.
    let pool = Pool::builder().workers(1).build().unwrap();
    let other = Pool::builder().workers(1).build().unwrap();
    let lock = Arc::new(Mutex::new(0));
    let (l1, l2) = (lock.clone(), lock.clone());
    let h = pool.handle();
    let result = pool
        .spawn(move || {
            let guard = l1.lock().unwrap();
            // A task of this pool that takes the lock: a helping wait could
            // run it right here.
            h.execute(move || *l2.lock().unwrap() += 1).unwrap();
            let value = other.spawn(|| 5).unwrap().join_blocking().unwrap();
            drop(guard);
            value
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(result, 5);
    common::idle(&pool);
    assert_eq!(*lock.lock().unwrap(), 1);
}
