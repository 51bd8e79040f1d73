//! One workload on one pool, once: the program `benches/icount.sh` runs
//! under `valgrind --tool=callgrind` to count the instructions each pool
//! executes (a count that, unlike wall-clock time on a shared 2-core
//! machine, is the same run after run).
//!
//! usage: icount WORKLOAD POOL
//! - `spawn`: one outside thread submits 1M tiny tasks (each captures an
//!   `Arc` and bumps a counter), then waits for all. Pools: `ebbtide`,
//!   `ebbtide_nometrics` (metrics and histograms off), `channel` (N
//!   threads on one crossbeam channel of boxed closures), `rayon`
//!   (`scope` + `spawn`), `threadpool`.
//! - `keyed`: 1M tiny keyed tasks over 1,024 keys drawn from Zipf(s = 1).
//!   Pools: `ebbtide`, `sharded` (one thread and channel per shard).
//! - `fib`: fib(27) with a `join` at every node. Pools: `ebbtide`,
//!   `rayon`.
//! - `retry`: 1M tiny tasks that succeed at once, each with a handle
//!   (dropped): `spawn` (plain), `spawn_with` (a context), `fallible`
//!   (`spawn_fallible`), `retry` (`retry(..).spawn_fallible`), on ebbtide.
//!
//! Every pool has 2 workers. Prints the workload's checksum, so a pool that
//! skipped work would show.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

mod common;
use common::peers::{zipf, ChannelPool, ShardedPool};
use common::workloads::fib;

const TASKS: usize = 1_000_000;
const KEYS: usize = 1_024;
const FIB_N: u32 = 27;
const WORKERS: usize = 2;

fib!(fib_ebbtide, ebbtide::join);
fib!(fib_rayon, rayon::join);

fn ebbtide_pool(metrics: bool) -> ebbtide::Pool {
    ebbtide::Pool::builder()
        .workers(WORKERS)
        .metrics(metrics)
        .histograms(metrics)
        .build()
        .expect("a 2-worker pool")
}

fn spawn(pool: &str) -> u64 {
    let counter = Arc::new(AtomicU64::new(0));
    match pool {
        "ebbtide" | "ebbtide_nometrics" => {
            let p = ebbtide_pool(pool == "ebbtide");
            for _ in 0..TASKS {
                let c = Arc::clone(&counter);
                p.execute(move || {
                    c.fetch_add(1, Relaxed);
                })
                .unwrap();
            }
            p.wait_idle();
        }
        "channel" => {
            let p = ChannelPool::new(WORKERS);
            for _ in 0..TASKS {
                let c = Arc::clone(&counter);
                p.execute(move || {
                    c.fetch_add(1, Relaxed);
                });
            }
            // Dropping closes the channel and joins the threads once
            // every task ran.
            drop(p);
        }
        "rayon" => {
            let p = rayon::ThreadPoolBuilder::new()
                .num_threads(WORKERS)
                .build()
                .unwrap();
            p.scope(|s| {
                for _ in 0..TASKS {
                    let c = Arc::clone(&counter);
                    s.spawn(move |_| {
                        c.fetch_add(1, Relaxed);
                    });
                }
            });
        }
        "threadpool" => {
            let p = threadpool::ThreadPool::new(WORKERS);
            for _ in 0..TASKS {
                let c = Arc::clone(&counter);
                p.execute(move || {
                    c.fetch_add(1, Relaxed);
                });
            }
            p.join();
        }
        other => panic!("spawn has no pool {other:?}"),
    }
    counter.load(Relaxed)
}

fn keyed(pool: &str) -> u64 {
    let keys = zipf(TASKS, KEYS, 0x9E37_79B9_7F4A_7C15);
    let counter = Arc::new(AtomicU64::new(0));
    match pool {
        "ebbtide" => {
            let p = ebbtide_pool(true);
            for &k in &keys {
                let c = Arc::clone(&counter);
                p.task()
                    .key(&k)
                    .execute(move || {
                        c.fetch_add(1, Relaxed);
                    })
                    .unwrap();
            }
            p.wait_idle();
        }
        "sharded" => {
            let p = ShardedPool::new(WORKERS);
            for &k in &keys {
                let c = Arc::clone(&counter);
                p.execute(&k, move || {
                    c.fetch_add(1, Relaxed);
                });
            }
            drop(p);
        }
        other => panic!("keyed has no pool {other:?}"),
    }
    counter.load(Relaxed)
}

fn fork_join(pool: &str) -> u64 {
    match pool {
        "ebbtide" => ebbtide_pool(true).install(|| fib_ebbtide(FIB_N)),
        "rayon" => rayon::ThreadPoolBuilder::new()
            .num_threads(WORKERS)
            .build()
            .unwrap()
            .install(|| fib_rayon(FIB_N)),
        other => panic!("fib has no pool {other:?}"),
    }
}

fn retry(variant: &str) -> u64 {
    let counter = Arc::new(AtomicU64::new(0));
    let p = ebbtide_pool(true);
    let policy = ebbtide::RetryPolicy::exponential(std::time::Duration::from_millis(10));
    for _ in 0..TASKS {
        common::submit_variant(&p, variant, &counter, &policy);
    }
    p.wait_idle();
    counter.load(Relaxed)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; the script passes the two names.
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (workload, pool) = match args.as_slice() {
        [w, p] => (*w, *p),
        [] => {
            eprintln!("usage: icount WORKLOAD POOL (see benches/icount.sh)");
            return;
        }
        _ => panic!("usage: icount WORKLOAD POOL"),
    };
    let sum = match workload {
        "spawn" => spawn(pool),
        "keyed" => keyed(pool),
        "fib" => fork_join(pool),
        "retry" => retry(pool),
        other => panic!("no workload {other:?}"),
    };
    println!("{workload} {pool} checksum {sum}");
}
