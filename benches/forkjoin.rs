//! Fork-join against rayon, same algorithm, same run, one worker per CPU:
//! * fib(30) with a `join` at every node (no sequential cut-off), reported
//!   per join (fib(30) makes 1,346,268 joins);
//! * quicksort of 10M u64 written with `join` (cut-off 1024 elements);
//! * a scope spawning 100k tasks that borrow a slice element each.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

mod common;
use common::workloads::{fib, quicksort, random_vec};

const FIB_N: u32 = 30;
/// Joins made by `fib(FIB_N)`: fib(n + 1) - 1.
const FIB_JOINS: u64 = 1_346_268;

fib!(fib_ebbtide, ebbtide::join);
fib!(fib_rayon, rayon::join);
quicksort!(quicksort_ebbtide, ebbtide::join, 1024);
quicksort!(quicksort_rayon, rayon::join, 1024);

fn forkjoin(c: &mut Criterion) {
    let n = num_cpus::get();
    let ebb = ebbtide::Pool::builder().workers(n).build().unwrap();
    let ray = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap();

    let mut g = c.benchmark_group("fib30_join_per_node");
    g.throughput(Throughput::Elements(FIB_JOINS));
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function(BenchmarkId::new("ebbtide", n), |b| {
        b.iter(|| ebb.install(|| fib_ebbtide(FIB_N)))
    });
    g.bench_function(BenchmarkId::new("rayon", n), |b| {
        b.iter(|| ray.install(|| fib_rayon(FIB_N)))
    });
    g.finish();

    let input = random_vec(10_000_000, 0x2545_F491_4F6C_DD1D);
    let mut g = c.benchmark_group("quicksort_10m_u64");
    g.throughput(Throughput::Elements(input.len() as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function(BenchmarkId::new("ebbtide", n), |b| {
        b.iter_batched_ref(
            || input.clone(),
            |v| ebb.install(|| quicksort_ebbtide(v)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function(BenchmarkId::new("rayon", n), |b| {
        b.iter_batched_ref(
            || input.clone(),
            |v| ray.install(|| quicksort_rayon(v)),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut cells = vec![0u64; 100_000];
    let mut g = c.benchmark_group("scope_100k_borrowed_tasks");
    g.throughput(Throughput::Elements(cells.len() as u64));
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function(BenchmarkId::new("ebbtide_execute", n), |b| {
        b.iter(|| {
            ebb.scope(|s| {
                for (i, cell) in cells.iter_mut().enumerate() {
                    s.execute(move || *cell = cell.wrapping_add(i as u64));
                }
            })
        })
    });
    g.bench_function(BenchmarkId::new("ebbtide_spawn_with_handles", n), |b| {
        b.iter(|| {
            ebb.scope(|s| {
                for (i, cell) in cells.iter_mut().enumerate() {
                    drop(s.spawn(move || *cell = cell.wrapping_add(i as u64)));
                }
            })
        })
    });
    g.bench_function(BenchmarkId::new("rayon", n), |b| {
        b.iter(|| {
            ray.scope(|s| {
                for (i, cell) in cells.iter_mut().enumerate() {
                    s.spawn(move |_| *cell = cell.wrapping_add(i as u64));
                }
            })
        })
    });
    g.finish();
    std::hint::black_box(&cells);
}

criterion_group!(benches, forkjoin);
criterion_main!(benches);
