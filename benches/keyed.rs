//! Keyed submission against the classic sharded pool (one single-threaded
//! channel worker per shard, `hash(key) % shards`, shards = CPUs) and
//! against rayon `spawn` + a `Mutex` per key (no order guarantee; a
//! reference only), in the same run:
//! * 1M tiny keyed tasks over 1,000 keys, uniform and Zipf(s = 1);
//! * a skewed CPU-heavy load (tasks spinning 20 µs, Zipf(s = 1) over 100
//!   keys), whose makespan is compared with the lower bound
//!   max(total work ÷ CPUs, heaviest key's work), printed by the bench.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

mod common;
use common::peers::{zipf, ShardedPool};
use common::workloads::spin;
use common::Countdown;
use std::time::Duration;

const TASKS: usize = 1_000_000;
const KEYS: usize = 1_000;

fn keyed_tiny(c: &mut Criterion) {
    let n = num_cpus::get();
    let counts: &'static [AtomicU64] = Box::leak((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let locks: &'static [Mutex<u64>] = Box::leak((0..KEYS).map(|_| Mutex::new(0)).collect());
    let uniform: Vec<u32> = (0..TASKS).map(|i| (i % KEYS) as u32).collect();
    let skewed = zipf(TASKS, KEYS, 0x9E37_79B9_7F4A_7C15);

    let ebb = ebbtide::Pool::builder().workers(n).build().unwrap();
    let sharded = ShardedPool::new(n);
    let ray = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap();

    let mut g = c.benchmark_group("keyed_1m_tiny");
    g.throughput(Throughput::Elements(TASKS as u64));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    for (dist, keys) in [("uniform", &uniform), ("zipf1", &skewed)] {
        g.bench_function(BenchmarkId::new(format!("ebbtide_{dist}"), n), |b| {
            b.iter(|| {
                for &k in keys.iter() {
                    ebb.task()
                        .key(&k)
                        .execute(move || {
                            counts[k as usize].fetch_add(1, Ordering::Relaxed);
                        })
                        .unwrap();
                }
                ebb.wait_idle();
            })
        });
        g.bench_function(BenchmarkId::new(format!("sharded_pool_{dist}"), n), |b| {
            b.iter(|| {
                let latch = Countdown::new(keys.len());
                for &k in keys.iter() {
                    let l = Arc::clone(&latch);
                    sharded.execute(&k, move || {
                        counts[k as usize].fetch_add(1, Ordering::Relaxed);
                        l.count_down();
                    });
                }
                latch.wait();
            })
        });
        g.bench_function(BenchmarkId::new(format!("rayon_mutex_{dist}"), n), |b| {
            b.iter(|| {
                ray.scope(|s| {
                    for &k in keys.iter() {
                        s.spawn(move |_| *locks[k as usize].lock().unwrap() += 1);
                    }
                })
            })
        });
    }
    g.finish();
}

fn keyed_skew_cpu(c: &mut Criterion) {
    let n = num_cpus::get();
    const HEAVY_TASKS: usize = 20_000;
    const HOT_KEYS: usize = 100;
    let work = Duration::from_micros(20);
    let keys = zipf(HEAVY_TASKS, HOT_KEYS, 0x2545_F491_4F6C_DD1D);
    let mut per_key = vec![0usize; HOT_KEYS];
    for &k in &keys {
        per_key[k as usize] += 1;
    }
    let heaviest = *per_key.iter().max().unwrap();
    let total = work * HEAVY_TASKS as u32;
    let bound = (total / n as u32).max(work * heaviest as u32);
    println!(
        "keyed_skew_cpu: {HEAVY_TASKS} tasks of {work:?} over {HOT_KEYS} keys (Zipf 1); \
         heaviest key {heaviest} tasks ({:?}); total work {total:?}; lower bound on {n} CPUs: {bound:?}",
        work * heaviest as u32
    );

    let ebb = ebbtide::Pool::builder().workers(n).build().unwrap();
    let sharded = ShardedPool::new(n);
    let mut g = c.benchmark_group("keyed_skew_cpu_makespan");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function(BenchmarkId::new("ebbtide", n), |b| {
        b.iter(|| {
            for &k in &keys {
                ebb.task().key(&k).execute(move || spin(work)).unwrap();
            }
            ebb.wait_idle();
        })
    });
    g.bench_function(BenchmarkId::new("sharded_pool", n), |b| {
        b.iter(|| {
            let latch = Countdown::new(keys.len());
            for &k in &keys {
                let l = Arc::clone(&latch);
                sharded.execute(&k, move || {
                    spin(work);
                    l.count_down();
                });
            }
            latch.wait();
        })
    });
    g.finish();
}

criterion_group!(benches, keyed_tiny, keyed_skew_cpu);
criterion_main!(benches);
