//! One million timers: each due at a uniformly random delay in [0, 1 s],
//! each submitting a tiny task when due that records how late it ran.
//! ebbtide (`task().delay(d).execute`, the timing wheel) against tokio
//! (`spawn` + `time::sleep_until`) and a binary heap under a mutex with one
//! timer thread feeding a channel pool (the `ScheduledThreadPoolExecutor`
//! design). Also the cost of a retry policy on tasks that succeed at once.
//!
//! ```text
//! cargo bench --bench timers            # 5 interleaved rounds of each
//! cargo bench --bench timers -- 9       # 9 rounds
//! ```
//!
//! Every (pool, round) runs in a fresh process, so that memory one run
//! freed does not flatter the next. Reported per pool: the median over
//! rounds of the schedule cost per timer (the submitting loop's time / N),
//! lateness p50/p99/max (run instant − due instant), and memory per pending
//! timer (resident-set growth over the scheduling loop / N; timers that
//! fired meanwhile have freed theirs, so it is a slight underestimate for
//! every pool alike). 2 workers everywhere.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::harness::{args, child_figures, median};
use common::peers::ChannelPool;
use common::Countdown;

const N: usize = 1_000_000;
const SPAN_US: u64 = 1_000_000;
const WORKERS: usize = 2;
/// 1 µs buckets up to 200 ms, then 1 ms buckets up to 5 s.
const FINE: usize = 200_000;
const BUCKETS: usize = FINE + 4_800;

fn bucket_of(us: u64) -> usize {
    let us = us as usize;
    if us < FINE {
        us
    } else {
        FINE + (us - FINE) / 1000
    }
}

fn bucket_top_us(i: usize) -> f64 {
    if i < FINE {
        i as f64 + 1.0
    } else {
        (FINE + (i - FINE + 1) * 1000) as f64
    }
}

struct Lateness {
    buckets: Vec<AtomicU64>,
    over: AtomicU64,
    max_ns: AtomicU64,
    /// The same, for timers that fired after the scheduling loop ended
    /// (the submitting thread no longer competing for the 2 cores).
    after: Vec<AtomicU64>,
    after_over: AtomicU64,
    after_max_ns: AtomicU64,
    loop_done: std::sync::atomic::AtomicBool,
    fired: AtomicUsize,
    done: Arc<Countdown>,
}

impl Lateness {
    fn new() -> Arc<Self> {
        Arc::new(Lateness {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            over: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            after: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            after_over: AtomicU64::new(0),
            after_max_ns: AtomicU64::new(0),
            loop_done: std::sync::atomic::AtomicBool::new(false),
            fired: AtomicUsize::new(0),
            done: Countdown::new(N),
        })
    }

    fn record(&self, due: Instant) {
        let late = Instant::now().saturating_duration_since(due);
        let ns = late.as_nanos() as u64;
        self.fired.fetch_add(1, Relaxed);
        let (buckets, over, max) = if self.loop_done.load(Relaxed) {
            (&self.after, &self.after_over, &self.after_max_ns)
        } else {
            (&self.buckets, &self.over, &self.max_ns)
        };
        max.fetch_max(ns, Relaxed);
        match buckets.get(bucket_of(ns / 1000)) {
            Some(b) => b.fetch_add(1, Relaxed),
            None => over.fetch_add(1, Relaxed),
        };
        self.done.count_down();
    }

    /// Quantile `q` of every timer, or (`after`) of those that fired after
    /// the scheduling loop.
    fn quantile_us(&self, q: f64, after: bool) -> f64 {
        let parts: Vec<&Vec<AtomicU64>> = if after {
            vec![&self.after]
        } else {
            vec![&self.buckets, &self.after]
        };
        let total: u64 = parts
            .iter()
            .flat_map(|p| p.iter())
            .map(|b| b.load(Relaxed))
            .sum::<u64>()
            + self.after_over.load(Relaxed)
            + if after { 0 } else { self.over.load(Relaxed) };
        let target = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for i in 0..BUCKETS {
            seen += parts.iter().map(|p| p[i].load(Relaxed)).sum::<u64>();
            if seen >= target {
                return bucket_top_us(i);
            }
        }
        f64::INFINITY
    }
}

fn delays() -> Vec<Duration> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..N)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Duration::from_micros(state % SPAN_US)
        })
        .collect()
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A binary heap of due tasks under one mutex, one timer thread.
struct HeapTimer {
    state: Mutex<(std::collections::BinaryHeap<Entry>, bool)>,
    cv: Condvar,
}

struct Entry(Instant, u64, Box<dyn FnOnce() + Send>);

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.0, o.1).cmp(&(self.0, self.1)) // min-heap
    }
}

impl HeapTimer {
    fn start(pool: Arc<ChannelPool>) -> (Arc<Self>, std::thread::JoinHandle<()>) {
        let timer = Arc::new(HeapTimer {
            state: Mutex::new((std::collections::BinaryHeap::new(), false)),
            cv: Condvar::new(),
        });
        let t = Arc::clone(&timer);
        let thread = std::thread::spawn(move || {
            let mut state = t.state.lock().unwrap();
            loop {
                let now = Instant::now();
                match state.0.peek() {
                    Some(e) if e.0 <= now => {
                        let Entry(_, _, task) = state.0.pop().unwrap();
                        pool.execute(task);
                    }
                    Some(e) => {
                        let wait = e.0 - now;
                        state = t.cv.wait_timeout(state, wait).unwrap().0;
                    }
                    None if state.1 => return,
                    None => state = t.cv.wait(state).unwrap(),
                }
            }
        });
        (timer, thread)
    }

    fn schedule(&self, due: Instant, seq: u64, task: Box<dyn FnOnce() + Send>) {
        let mut state = self.state.lock().unwrap();
        let earliest = state.0.peek().map_or(true, |e| due < e.0);
        state.0.push(Entry(due, seq, task));
        if earliest {
            self.cv.notify_one();
        }
    }
}

/// Runs one pool once; prints `pool schedule_ns p50_us p99_us max_us
/// bytes_per_pending_timer after_p50_us after_p99_us after_max_us`.
fn one(pool: &str) {
    let delays = delays();
    let late = Lateness::new();
    let before = rss_bytes();
    let start;
    let elapsed;
    let grown;
    let pending;
    match pool {
        "ebbtide" => {
            let p = ebbtide::Pool::builder().workers(WORKERS).build().unwrap();
            start = Instant::now();
            for d in &delays {
                let (l, due) = (Arc::clone(&late), Instant::now() + *d);
                p.task().delay(*d).execute(move || l.record(due)).unwrap();
            }
            elapsed = start.elapsed();
            grown = rss_bytes().saturating_sub(before);
            late.loop_done.store(true, Relaxed);
            pending = N - late.fired.load(Relaxed);
            late.done.wait();
            let m = p.metrics();
            eprintln!(
                "ebbtide driver: fire lateness p50 {:?} p99 {:?} max {:?}; queue wait p99 {:?} max {:?}",
                m.timer_lateness.p50(),
                m.timer_lateness.p99(),
                m.timer_lateness.max(),
                m.queue_wait.p99(),
                m.queue_wait.max()
            );
        }
        "tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .enable_time()
                .build()
                .unwrap();
            start = Instant::now();
            for d in &delays {
                let (l, due) = (Arc::clone(&late), Instant::now() + *d);
                rt.spawn(async move {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                    l.record(due);
                });
            }
            elapsed = start.elapsed();
            grown = rss_bytes().saturating_sub(before);
            late.loop_done.store(true, Relaxed);
            pending = N - late.fired.load(Relaxed);
            late.done.wait();
        }
        "heap" => {
            let p = Arc::new(ChannelPool::new(WORKERS));
            let (timer, thread) = HeapTimer::start(Arc::clone(&p));
            start = Instant::now();
            for (i, d) in delays.iter().enumerate() {
                let (l, due) = (Arc::clone(&late), Instant::now() + *d);
                timer.schedule(due, i as u64, Box::new(move || l.record(due)));
            }
            elapsed = start.elapsed();
            grown = rss_bytes().saturating_sub(before);
            late.loop_done.store(true, Relaxed);
            pending = N - late.fired.load(Relaxed);
            late.done.wait();
            timer.state.lock().unwrap().1 = true;
            timer.cv.notify_one();
            thread.join().unwrap();
        }
        other => panic!("no pool {other:?}"),
    }
    let max = late
        .max_ns
        .load(Relaxed)
        .max(late.after_max_ns.load(Relaxed));
    println!(
        "{pool} {:.1} {:.0} {:.0} {:.0} {:.1} {:.0} {:.0} {:.0}",
        elapsed.as_nanos() as f64 / N as f64,
        late.quantile_us(0.5, false),
        late.quantile_us(0.99, false),
        max as f64 / 1e3,
        grown as f64 / pending.max(1) as f64,
        late.quantile_us(0.5, true),
        late.quantile_us(0.99, true),
        late.after_max_ns.load(Relaxed) as f64 / 1e3,
    );
}

/// 1M tiny tasks that succeed at once, with a handle each: a plain spawn,
/// and a fallible task with a retry policy. Prints `variant ns_per_task`.
fn retry_one(variant: &str) {
    let p = ebbtide::Pool::builder().workers(WORKERS).build().unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let policy = ebbtide::RetryPolicy::exponential(Duration::from_millis(10));
    let start = Instant::now();
    for _ in 0..N {
        common::submit_variant(&p, variant, &counter, &policy);
    }
    p.wait_idle();
    assert_eq!(counter.load(Relaxed), N as u64);
    println!(
        "{variant} {:.1}",
        start.elapsed().as_nanos() as f64 / N as f64
    );
}

fn main() {
    let args = args();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["one", pool] => return one(pool),
        ["retry-one", variant] => return retry_one(variant),
        _ => {}
    }
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let pools = ["ebbtide", "tokio", "heap"];
    let mut results: Vec<Vec<Vec<f64>>> = vec![Vec::new(); pools.len()];
    let mut retry: Vec<Vec<f64>> = vec![Vec::new(); 2];
    for round in 0..rounds {
        for (i, pool) in pools.iter().enumerate() {
            results[i].push(child_figures(&["one", pool], 1));
        }
        for (i, v) in ["spawn", "retry"].iter().enumerate() {
            retry[i].push(child_figures(&["retry-one", v], 1)[0]);
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    println!(
        "1M timers, delays uniform in [0, 1 s], 2 workers; medians of {rounds} interleaved rounds"
    );
    println!("lateness in µs (all timers | those firing after the scheduling loop); memory per pending timer at the loop's end");
    println!(
        "{:<8} {:>12} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>10}",
        "pool", "schedule ns", "p50", "p99", "max", "p50", "p99", "max", "B/pending"
    );
    let col = |i: usize, k: usize| median(results[i].iter().map(|r| r[k]).collect());
    for (i, pool) in pools.iter().enumerate() {
        println!(
            "{:<8} {:>12.1} {:>9.0} {:>9.0} {:>9.0} | {:>9.0} {:>9.0} {:>9.0} {:>10.1}",
            pool,
            col(i, 0),
            col(i, 1),
            col(i, 2),
            col(i, 3),
            col(i, 5),
            col(i, 6),
            col(i, 7),
            col(i, 4)
        );
    }
    println!(
        "schedule cost: ebbtide/tokio {:.2}, ebbtide/heap {:.2}",
        col(0, 0) / col(1, 0),
        col(0, 0) / col(2, 0)
    );
    for (i, pool) in pools.iter().enumerate() {
        let p99: Vec<f64> = results[i].iter().map(|r| r[2]).collect();
        let after: Vec<f64> = results[i].iter().map(|r| r[6]).collect();
        println!("{pool} p99 per round (all | after the loop), µs: {p99:?} | {after:?}");
    }
    let (s, r) = (median(retry[0].clone()), median(retry[1].clone()));
    println!("1M tasks that succeed at once: spawn {s:.1} ns, retry policy {r:.1} ns ({:.2}×); runs: spawn {:?}, retry {:?}", r / s, retry[0], retry[1]);
}
