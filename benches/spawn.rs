//! 1M tiny tasks submitted from one thread, then wait for all, against the
//! peers in the same run: rayon (`scope` + `spawn`), tokio
//! (`Runtime::spawn`), the `threadpool` crate and a plain crossbeam-channel
//! pool. Every pool has one worker per CPU.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

mod common;
use common::peers::ChannelPool;
use common::Countdown;
use std::time::Duration;

const TASKS: usize = 1_000_000;

/// Every peer runs this same task body.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn tiny() {
    COUNTER.fetch_add(1, Ordering::Relaxed);
}

fn spawn_1m(c: &mut Criterion) {
    let n = num_cpus::get();
    let mut group = c.benchmark_group("spawn_1m");
    group.throughput(Throughput::Elements(TASKS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    group.warm_up_time(Duration::from_secs(1));

    let pool = ebbtide::Pool::builder().workers(n).build().unwrap();
    group.bench_function(BenchmarkId::new("ebbtide", n), |b| {
        b.iter(|| {
            for _ in 0..TASKS {
                pool.execute(tiny).unwrap();
            }
            pool.wait_idle();
        })
    });
    drop(pool);

    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap();
    group.bench_function(BenchmarkId::new("rayon_scope_spawn", n), |b| {
        b.iter(|| {
            rayon.scope(|s| {
                for _ in 0..TASKS {
                    s.spawn(|_| tiny());
                }
            })
        })
    });
    drop(rayon);

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(n)
        .build()
        .unwrap();
    group.bench_function(BenchmarkId::new("tokio_spawn", n), |b| {
        b.iter(|| {
            let latch = Countdown::new(TASKS);
            for _ in 0..TASKS {
                let l = Arc::clone(&latch);
                drop(tokio.spawn(async move {
                    tiny();
                    l.count_down();
                }));
            }
            latch.wait();
        })
    });
    drop(tokio);

    let tp = threadpool::ThreadPool::new(n);
    group.bench_function(BenchmarkId::new("threadpool", n), |b| {
        b.iter(|| {
            for _ in 0..TASKS {
                tp.execute(tiny);
            }
            tp.join();
        })
    });
    drop(tp);

    let cp = ChannelPool::new(n);
    group.bench_function(BenchmarkId::new("crossbeam_channel_pool", n), |b| {
        b.iter(|| {
            let latch = Countdown::new(TASKS);
            for _ in 0..TASKS {
                let l = Arc::clone(&latch);
                cp.execute(move || {
                    tiny();
                    l.count_down();
                });
            }
            latch.wait();
        })
    });
    drop(cp);
    group.finish();
}

/// The cost of metrics: the same 1M-task run with everything on (the
/// default: counters, worker states, queue-wait and run-time histograms),
/// with histograms off, and with the optional metrics off (counters only:
/// shutdown accounting needs them).
fn spawn_1m_metrics(c: &mut Criterion) {
    let n = num_cpus::get();
    let mut group = c.benchmark_group("spawn_1m_metrics");
    group.throughput(Throughput::Elements(TASKS as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));
    group.warm_up_time(Duration::from_secs(1));
    let mut configs = vec![
        ("metrics_on", ebbtide::Pool::builder()),
        ("histograms_off", ebbtide::Pool::builder().histograms(false)),
        ("metrics_off", ebbtide::Pool::builder().metrics(false)),
    ];
    // EBBTIDE_BENCH_REVERSE=1 runs the configurations in reverse order, to
    // check that the order does not decide the result.
    if std::env::var_os("EBBTIDE_BENCH_REVERSE").is_some() {
        configs.reverse();
    }
    for (name, builder) in configs {
        let pool = builder.workers(n).build().unwrap();
        group.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| {
                for _ in 0..TASKS {
                    pool.execute(tiny).unwrap();
                }
                pool.wait_idle();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, spawn_1m, spawn_1m_metrics);
criterion_main!(benches);
