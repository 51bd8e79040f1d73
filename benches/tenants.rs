//! Tenants, in the same run as the FIFO peers:
//!
//! - **Noisy neighbour**: tenant A floods 200,000 tasks of 50 µs (spun) at
//!   once; tenant B submits 1,000 tasks of 50 µs at a steady 200/s. B's
//!   queue wait (submit → start) p50/p99, and A's throughput, for ebbtide
//!   with tenants, ebbtide without (one FIFO queue), tokio `spawn` and a
//!   channel pool, all on the CPU count of workers; and A alone on ebbtide
//!   with tenants, for A's throughput against it.
//! - **Rate limit**: 10,000 tasks/s for 10 s through a tenant's token
//!   bucket (burst 100) with 200,000 tasks waiting: tasks started against
//!   the target, and the process's CPU time against an idle pool's.
//!
//! Run: `cargo bench --bench tenants [-- ROUNDS] [noisy|rate]`

mod common;
use common::harness::median;

use common::peers::ChannelPool;
use common::workloads::spin;
use common::Countdown;
use ebbtide::{Pool, RateLimit, TenantConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FLOOD: usize = 200_000;
const QUIET: usize = 1_000;
const QUIET_RATE: f64 = 200.0;
const WORK: Duration = Duration::from_micros(50);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(3);
    let only = |name: &str| {
        !args.iter().any(|a| a.parse::<usize>().is_err()) || args.iter().any(|a| a == name)
    };
    if only("noisy") {
        noisy(rounds);
    }
    if only("rate") {
        rate();
    }
}

/// Where each design runs a task.
trait Exec: Sync {
    fn run(&self, tenant: &'static str, f: Box<dyn FnOnce() + Send>);
}

struct Tenants(Pool);
impl Exec for Tenants {
    fn run(&self, tenant: &'static str, f: Box<dyn FnOnce() + Send>) {
        self.0.task().tenant(tenant).execute(f).unwrap();
    }
}

struct Fifo(Pool);
impl Exec for Fifo {
    fn run(&self, _: &'static str, f: Box<dyn FnOnce() + Send>) {
        self.0.execute(f).unwrap();
    }
}

struct Tokio(tokio::runtime::Runtime);
impl Exec for Tokio {
    fn run(&self, _: &'static str, f: Box<dyn FnOnce() + Send>) {
        self.0.spawn(async move { f() });
    }
}

struct Channel(ChannelPool);
impl Exec for Channel {
    fn run(&self, _: &'static str, f: Box<dyn FnOnce() + Send>) {
        self.0.execute(f);
    }
}

struct Outcome {
    b_p50: Duration,
    b_p99: Duration,
    /// A's tasks per second over its whole flood.
    a_rate: f64,
}

/// A's flood at once, B's steady trickle beside it.
fn scenario(exec: &dyn Exec, with_b: bool) -> Outcome {
    let a_done = Countdown::new(FLOOD);
    let b_done = Countdown::new(QUIET);
    let waits = Arc::new(Mutex::new(Vec::with_capacity(QUIET)));
    let start = Instant::now();
    let a_end = Arc::new(Mutex::new(start));
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..FLOOD {
                let (done, end) = (Arc::clone(&a_done), Arc::clone(&a_end));
                exec.run(
                    "A",
                    Box::new(move || {
                        spin(WORK);
                        *end.lock().unwrap() = Instant::now();
                        done.count_down();
                    }),
                );
            }
        });
        if with_b {
            s.spawn(|| {
                for i in 0..QUIET {
                    let due = start + Duration::from_secs_f64(i as f64 / QUIET_RATE);
                    if let Some(w) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(w);
                    }
                    let (done, waits) = (Arc::clone(&b_done), Arc::clone(&waits));
                    let submitted = Instant::now();
                    exec.run(
                        "B",
                        Box::new(move || {
                            waits.lock().unwrap().push(submitted.elapsed());
                            spin(WORK);
                            done.count_down();
                        }),
                    );
                }
            });
        }
    });
    a_done.wait();
    if with_b {
        b_done.wait();
    }
    let a_secs = a_end.lock().unwrap().duration_since(start).as_secs_f64();
    let mut w = waits.lock().unwrap().clone();
    w.sort();
    let q = |p: f64| {
        w.get(((w.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Outcome {
        b_p50: q(0.5),
        b_p99: q(0.99),
        a_rate: FLOOD as f64 / a_secs,
    }
}

fn noisy(rounds: usize) {
    let cpus = num_cpus::get();
    let designs = [
        "ebbtide tenants",
        "ebbtide FIFO",
        "tokio spawn",
        "channel pool",
        "A alone (tenants)",
    ];
    let mut results: Vec<Vec<Outcome>> = designs.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..designs.len() {
            // Rotate the order by round.
            let i = (k + round) % designs.len();
            let r = match i {
                0 => scenario(
                    &Tenants(Pool::builder().workers(cpus).build().unwrap()),
                    true,
                ),
                1 => scenario(&Fifo(Pool::builder().workers(cpus).build().unwrap()), true),
                2 => scenario(
                    &Tokio(
                        tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(cpus)
                            .build()
                            .unwrap(),
                    ),
                    true,
                ),
                3 => scenario(&Channel(ChannelPool::new(cpus)), true),
                _ => scenario(
                    &Tenants(Pool::builder().workers(cpus).build().unwrap()),
                    false,
                ),
            };
            println!(
                "round {round} {:<18} B wait p50 {:>10.3?} p99 {:>10.3?}   A {:>7.0} tasks/s",
                designs[i], r.b_p50, r.b_p99, r.a_rate
            );
            results[i].push(r);
        }
    }
    let alone = median(results[4].iter().map(|r| r.a_rate).collect());
    let fifo_p99 = median(results[1].iter().map(|r| r.b_p99.as_secs_f64()).collect());
    println!("\nnoisy neighbour, medians of {rounds} ({cpus} workers; A: {FLOOD} × 50 µs at once; B: {QUIET} × 50 µs at {QUIET_RATE}/s):");
    println!(
        "| design | B wait p50 | B wait p99 | B p99 × ebbtide FIFO's | A tasks/s | A × alone |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, rs) in designs.iter().zip(&results) {
        let p50 = median(rs.iter().map(|r| r.b_p50.as_secs_f64()).collect());
        let p99 = median(rs.iter().map(|r| r.b_p99.as_secs_f64()).collect());
        let a = median(rs.iter().map(|r| r.a_rate).collect());
        if name.starts_with("A alone") {
            println!("| {name} | – | – | – | {a:.0} | 1.00× |");
        } else {
            println!(
                "| {name} | {:.3} ms | {:.3} ms | {:.4}× | {a:.0} | {:.2}× |",
                p50 * 1e3,
                p99 * 1e3,
                p99 / fifo_p99,
                a / alone
            );
        }
    }
}

/// The process's CPU time (user + system).
fn cpu_time() -> Duration {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `struct rusage` into the buffer given,
    // which is one and zeroed.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) } != 0 {
        return Duration::ZERO;
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn rate() {
    const RATE: f64 = 10_000.0;
    const FOR: Duration = Duration::from_secs(10);
    let cpus = num_cpus::get();
    // An idle pool's CPU over the same time.
    let idle = Pool::builder().workers(cpus).build().unwrap();
    let c0 = cpu_time();
    std::thread::sleep(FOR);
    let idle_cpu = cpu_time() - c0;
    drop(idle);

    let pool = Pool::builder().workers(cpus).build().unwrap();
    pool.configure_tenant(
        &"r",
        TenantConfig::new().rate_limit(RateLimit::new(RATE, 100).unwrap()),
    )
    .unwrap();
    let started = Arc::new(Mutex::new(Vec::with_capacity(200_000)));
    let t0 = Instant::now();
    let c0 = cpu_time();
    for _ in 0..200_000 {
        let s = Arc::clone(&started);
        pool.task()
            .tenant("r")
            .execute(move || s.lock().unwrap().push(Instant::now()))
            .unwrap();
    }
    std::thread::sleep(FOR.saturating_sub(t0.elapsed()));
    let cpu = cpu_time() - c0;
    let n = started
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.duration_since(t0) < FOR)
        .count();
    let target = RATE * FOR.as_secs_f64() + 100.0; // the burst, then the rate
    println!(
        "\nrate limit {RATE}/s (burst 100) for {FOR:?}: {n} started against {target:.0} ({:+.2} %); \
         CPU {:.2} s (idle pool over the same time: {:.3} s)",
        (n as f64 / target - 1.0) * 100.0,
        cpu.as_secs_f64(),
        idle_cpu.as_secs_f64()
    );
    pool.shutdown_now();
    // A slow limit: tasks mostly wait for tokens; CPU then against idle.
    let slow = Pool::builder().workers(cpus).build().unwrap();
    slow.configure_tenant(
        &"s",
        TenantConfig::new().rate_limit(RateLimit::new(10.0, 1).unwrap()),
    )
    .unwrap();
    for _ in 0..10_000 {
        slow.task().tenant("s").execute(|| {}).unwrap();
    }
    let c0 = cpu_time();
    std::thread::sleep(FOR);
    let waiting_cpu = cpu_time() - c0;
    println!(
        "rate limit 10/s with 10,000 tasks waiting, over {FOR:?}: CPU {:.3} s (idle pool: {:.3} s)",
        waiting_cpu.as_secs_f64(),
        idle_cpu.as_secs_f64()
    );
    slow.shutdown_now();
}
