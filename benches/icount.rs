//! One workload on one pool, once: the program `benches/icount.sh` runs
//! under `valgrind --tool=callgrind` to count the instructions each pool
//! executes (a count that, unlike wall-clock time on a shared 2-core
//! machine, is the same run after run).
//!
//! usage: icount WORKLOAD POOL
//! - `spawn`: one outside thread submits 1M tiny tasks (each captures an
//!   `Arc` and bumps a counter), then waits for all. Pools: `ebbtide`,
//!   `ebbtide_nometrics` (metrics and histograms off), `channel` (N
//!   threads on one crossbeam channel of boxed closures),
//!   `ebbtide_elastic` (2 to 16 workers, sized by the pool),
//!   `ebbtide_wide` (2 to 512 workers, as in `benches/scaling.rs`), `rayon`
//!   (`scope` + `spawn`), `threadpool`.
//! - `keyed`: 1M tiny keyed tasks over 1,024 keys drawn from Zipf(s = 1).
//!   Pools: `ebbtide`, `sharded` (one thread and channel per shard).
//! - `fib`: fib(27) with a `join` at every node. Pools: `ebbtide`,
//!   `rayon`.
//! - `retry`: 1M tiny tasks that succeed at once, each with a handle
//!   (dropped): `spawn` (plain), `spawn_with` (a context), `token` (a
//!   context under one token of the caller's), `fallible`
//!   (`spawn_fallible`), `retry` (`retry(..).spawn_fallible`), on ebbtide.
//! - `group`: 1M tiny tasks of one task group, then `wait_all`. Pool:
//!   `ebbtide`.
//! - `sum`, `collect`, `sort`, `stable`, `mandel`: the data-parallel
//!   workloads of `benches/par.rs` (sum of squares over 0..100M, map +
//!   collect of 10M, unstable and stable sorts of 10M random `u64`s,
//!   Mandelbrot rows). Pools: `ebbtide` (`par` loops), `rayon`.
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
        "ebbtide" | "ebbtide_nometrics" | "ebbtide_elastic" | "ebbtide_wide" => {
            let p = match pool {
                "ebbtide_elastic" | "ebbtide_wide" => ebbtide::Pool::builder()
                    .min_workers(WORKERS)
                    .max_workers(if pool == "ebbtide_wide" { 512 } else { 16 })
                    .build()
                    .expect("an elastic pool"),
                _ => ebbtide_pool(pool == "ebbtide"),
            };
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

/// 1M tiny tasks of one task group (`pool.group()`), then `wait_all`.
fn group() -> u64 {
    let counter = Arc::new(AtomicU64::new(0));
    let p = ebbtide_pool(true);
    let mut g = p.group::<u64, ()>();
    for _ in 0..TASKS {
        let c = Arc::clone(&counter);
        g.spawn(move |_| Ok(c.fetch_add(1, Relaxed)));
    }
    let ok = g.wait_all().into_iter().filter(Result::is_ok).count() as u64;
    counter.load(Relaxed) ^ ok
}

fn data_parallel(workload: &str, pool: &str) -> u64 {
    use common::par::{on_ebbtide as e, on_rayon as r, random_u64s, MANDEL_H, MANDEL_W};
    let ebb = match pool {
        "ebbtide" => Some(ebbtide_pool(true)),
        "rayon" => None,
        other => panic!("{workload} has no pool {other:?}"),
    };
    let ray = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .unwrap();
    let run = |f: &(dyn Fn(bool) -> u64 + Sync)| match &ebb {
        Some(p) => p.install(|| f(true)),
        None => ray.install(|| f(false)),
    };
    let salt = std::hint::black_box(0);
    let input = if workload.ends_with("sort") || workload == "stable" {
        random_u64s(10_000_000)
    } else {
        Vec::new()
    };
    let first_last = |v: &[u64]| v[0] ^ v[v.len() - 1] ^ v[v.len() / 2];
    match workload {
        "sum" => run(&|on_e| {
            if on_e {
                e::sum_squares(100_000_000, salt)
            } else {
                r::sum_squares(100_000_000, salt)
            }
        }),
        "collect" => run(&|on_e| {
            let v = if on_e {
                e::map_collect(10_000_000)
            } else {
                r::map_collect(10_000_000)
            };
            first_last(&v)
        }),
        "sort" | "stable" => {
            let mut v = input.clone();
            let v = std::sync::Mutex::new(&mut v[..]);
            run(&|on_e| {
                let mut v = v.lock().unwrap();
                match (on_e, workload) {
                    (true, "sort") => e::sort_unstable(&mut v),
                    (false, "sort") => r::sort_unstable(&mut v),
                    (true, _) => e::sort_stable(&mut v),
                    (false, _) => r::sort_stable(&mut v),
                }
                first_last(&v)
            })
        }
        "mandel" => {
            let image = std::sync::Mutex::new(vec![0u32; MANDEL_W * MANDEL_H]);
            run(&|on_e| {
                let mut image = image.lock().unwrap();
                if on_e {
                    e::mandelbrot(&mut image);
                } else {
                    r::mandelbrot(&mut image);
                }
                image.iter().map(|&i| u64::from(i)).sum()
            })
        }
        other => panic!("no workload {other:?}"),
    }
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
        "group" => group(),
        other => data_parallel(other, pool),
    };
    println!("{workload} {pool} checksum {sum}");
}
