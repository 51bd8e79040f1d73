//! 100,000 items through parse (20 µs of CPU) → enrich (1 ms blocking) →
//! write (batches of 100, 5 ms per batch): an ebbtide pipeline with elastic
//! stages (and one with the hand-written sizes, fixed) against the
//! hand-written design (crossbeam channels between
//! three fixed thread pools of 8, 100 and 8 threads; each writer batches
//! up to 100 items or 100 ms).
//!
//! ```text
//! cargo bench --bench pipeline          # 3 rounds of each, rotating
//! cargo bench --bench pipeline -- 5     # 5 rounds
//! PIPELINE_FIXED=8/250/8 cargo bench --bench pipeline   # other fixed sizes
//! cargo bench --bench pipeline -- held-up   # a fast stage before a slow one
//! ```
//!
//! `PIPELINE_TRACE=1` on a child (`… child ebbtide`) prints each stage's
//! workers and queue every 10,000 items and, at the end, every resize.
//!
//! Each (design, round) runs in a fresh process. Reported: the time from
//! the first item sent to the last batch written, throughput, the peak
//! number of threads of the process above its count before the run
//! (sampled every millisecond), and the peak resident-memory growth.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::harness::{args, child_figures, median};

const ITEMS: u64 = 100_000;
const PARSE: Duration = Duration::from_micros(20);
const ENRICH: Duration = Duration::from_millis(1);
const BATCH: usize = 100;
const WRITE: Duration = Duration::from_millis(5);

fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

fn status(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the thread count and resident memory until stopped.
struct Peaks {
    stop: Arc<AtomicBool>,
    threads: Arc<AtomicUsize>,
    rss_kb: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<()>,
}

impl Peaks {
    fn start() -> Peaks {
        let (stop, threads, rss_kb) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, t, r) = (stop.clone(), threads.clone(), rss_kb.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Relaxed) {
                t.fetch_max(status("Threads:"), Relaxed);
                r.fetch_max(status("VmRSS:"), Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Peaks {
            stop,
            threads,
            rss_kb,
            handle,
        }
    }

    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Relaxed);
        self.handle.join().unwrap();
        (self.threads.load(Relaxed), self.rss_kb.load(Relaxed))
    }
}

/// The fixed stages' sizes: the hand-written design's 8/100/8, or
/// `PIPELINE_FIXED=P/E/W` (to see what workers beyond the need cost).
fn fixed_sizes() -> [usize; 3] {
    let Ok(sizes) = std::env::var("PIPELINE_FIXED") else {
        return [8, 100, 8];
    };
    let sizes: Vec<usize> = sizes
        .split('/')
        .map(|n| n.parse().expect("PIPELINE_FIXED=P/E/W, three counts"))
        .collect();
    sizes
        .try_into()
        .expect("PIPELINE_FIXED=P/E/W, three counts")
}

/// The pipeline's stages: elastic (the design under test), or fixed at
/// the hand-written design's sizes (to tell the sizing from the rest) or
/// at `PIPELINE_FIXED`'s.
fn ebbtide_pipeline(written: &Arc<AtomicU64>, elastic: bool) {
    use ebbtide::pipeline::{Pipeline, Stage};
    let w = Arc::clone(written);
    let fixed = fixed_sizes();
    let (parse, enrich, write) = if elastic {
        (
            Stage::new("parse").elastic(1, 8),
            Stage::new("enrich").elastic(1, 512),
            Stage::new("write").elastic(1, 64),
        )
    } else {
        (
            Stage::new("parse").workers(fixed[0]),
            Stage::new("enrich").workers(fixed[1]),
            Stage::new("write").workers(fixed[2]),
        )
    };
    let pipeline = Pipeline::<u64>::builder()
        .map(parse, |x: u64| {
            spin(PARSE);
            x
        })
        .map(enrich, |x: u64| {
            std::thread::sleep(ENRICH);
            x
        })
        .batch(Stage::new("batch"), BATCH, Duration::from_millis(100))
        .sink(write, move |batch: Vec<u64>| {
            std::thread::sleep(WRITE);
            w.fetch_add(batch.len() as u64, Relaxed);
        })
        .build()
        .unwrap();
    let verbose = std::env::var_os("PIPELINE_TRACE").is_some();
    let started = Instant::now();
    for i in 0..ITEMS {
        pipeline.send(i).unwrap();
        if verbose && i % 10_000 == 0 {
            let m = pipeline.metrics();
            eprintln!(
                "{:>6.3}s sent {i}: {}",
                started.elapsed().as_secs_f64(),
                m.iter()
                    .map(|m| format!(
                        "{} w{} busy{} q{} blk{} bp{}",
                        m.name,
                        m.workers,
                        m.busy_workers,
                        m.queued,
                        m.blocked_workers,
                        m.backpressured_workers
                    ))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
    }
    if verbose {
        for (name, r) in pipeline.resize_history() {
            eprintln!("{name}: {r:?}");
        }
    }
    pipeline.shutdown();
}

fn hand_written(written: &Arc<AtomicU64>) {
    use crossbeam_channel::bounded;
    let (parse_tx, parse_rx) = bounded::<u64>(1000);
    let (enrich_tx, enrich_rx) = bounded::<u64>(1000);
    let (write_tx, write_rx) = bounded::<u64>(1000);
    let mut threads = Vec::new();
    for _ in 0..8 {
        let (rx, tx) = (parse_rx.clone(), enrich_tx.clone());
        threads.push(std::thread::spawn(move || {
            for x in rx {
                spin(PARSE);
                tx.send(x).unwrap();
            }
        }));
    }
    drop(enrich_tx);
    let mut enrichers = Vec::new();
    for _ in 0..100 {
        let (rx, tx) = (enrich_rx.clone(), write_tx.clone());
        enrichers.push(std::thread::spawn(move || {
            for x in rx {
                std::thread::sleep(ENRICH);
                tx.send(x).unwrap();
            }
        }));
    }
    drop(write_tx);
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (rx, w) = (write_rx.clone(), Arc::clone(written));
        writers.push(std::thread::spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let mut since = Instant::now();
            loop {
                let left = Duration::from_millis(100).saturating_sub(since.elapsed());
                match rx.recv_timeout(left) {
                    Ok(x) => {
                        if batch.is_empty() {
                            since = Instant::now();
                        }
                        batch.push(x);
                        if batch.len() < BATCH {
                            continue;
                        }
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        since = Instant::now();
                        if batch.is_empty() {
                            continue;
                        }
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        if !batch.is_empty() {
                            std::thread::sleep(WRITE);
                            w.fetch_add(batch.len() as u64, Relaxed);
                        }
                        return;
                    }
                }
                std::thread::sleep(WRITE);
                w.fetch_add(batch.len() as u64, Relaxed);
                batch.clear();
            }
        }));
    }
    for i in 0..ITEMS {
        parse_tx.send(i).unwrap();
    }
    // Close stage by stage: the source, then each pool as it drains.
    drop(parse_tx);
    for t in threads {
        t.join().unwrap();
    }
    for t in enrichers {
        t.join().unwrap();
    }
    for t in writers {
        t.join().unwrap();
    }
}

/// One run in this process: prints `seconds peak_threads peak_rss_kb`.
fn child(design: &str) {
    let written = Arc::new(AtomicU64::new(0));
    let (threads0, rss0) = (status("Threads:"), status("VmRSS:"));
    let peaks = Peaks::start();
    let start = Instant::now();
    match design {
        "ebbtide" => ebbtide_pipeline(&written, true),
        "ebbtide-fixed" => ebbtide_pipeline(&written, false),
        "hand" => hand_written(&written),
        other => panic!("no design {other}"),
    }
    let secs = start.elapsed().as_secs_f64();
    let (threads, rss) = peaks.finish();
    assert_eq!(written.load(Relaxed), ITEMS, "every item written");
    // The sampler thread itself is not the design's.
    println!(
        "{secs} {} {}",
        threads.saturating_sub(threads0 + 1),
        rss.saturating_sub(rss0)
    );
}

/// A fast elastic stage feeding a slow fixed one (`-- held-up`): fetch
/// (200 µs asleep, elastic 1..256) → a sink of 2 workers (1 ms asleep),
/// 4,000 items. The sink sets the pace (2,000 items a second); fetch's
/// workers beyond the few that keep the sink's buffer full only wait for
/// room. Prints the sink's time, fetch's peak workers and the process's
/// peak threads.
fn held_up() {
    use ebbtide::pipeline::{Pipeline, Stage};
    let threads0 = status("Threads:");
    let peaks = Peaks::start();
    let pipeline = Pipeline::<u64>::builder()
        .map(Stage::new("fetch").elastic(1, 256), |x: u64| {
            std::thread::sleep(Duration::from_micros(200));
            x
        })
        .sink(Stage::new("sink").workers(2), |_: u64| {
            std::thread::sleep(Duration::from_millis(1));
        })
        .build()
        .unwrap();
    let start = Instant::now();
    for i in 0..4_000 {
        pipeline.send(i).unwrap();
    }
    let fetch_peak = pipeline
        .resize_history()
        .iter()
        .filter(|(stage, _)| stage == "fetch")
        .map(|(_, r)| r.to)
        .max()
        .unwrap_or(1);
    let report = pipeline.shutdown();
    let secs = start.elapsed().as_secs_f64();
    let (threads, _) = peaks.finish();
    assert!(
        report.stages.iter().all(|s| s.completed == 4_000),
        "{report:?}"
    );
    println!(
        "held-up: 4,000 items in {secs:.3} s; fetch grew to {fetch_peak} workers (of 256); \
         peak threads {}",
        threads.saturating_sub(threads0 + 1)
    );
}

fn main() {
    let args = args();
    if let [flag, design] = args.as_slice() {
        if flag == "child" {
            return child(design);
        }
    }
    if args.first().is_some_and(|a| a == "held-up") {
        return held_up();
    }
    let rounds: usize = args
        .first()
        .map(|a| a.parse().expect("ROUNDS"))
        .unwrap_or(3);
    let designs = ["ebbtide", "ebbtide-fixed", "hand"];
    let mut results: [(Vec<f64>, Vec<f64>, Vec<f64>); 3] = Default::default();
    for round in 0..rounds {
        let mut order = designs;
        order.rotate_left(round % 3);
        for design in order {
            let v = child_figures(&["child", design], 0);
            let r = &mut results[designs.iter().position(|d| *d == design).unwrap()];
            r.0.push(v[0]);
            r.1.push(v[1]);
            r.2.push(v[2]);
            eprintln!(
                "{design:>8}: {:.3} s, {} threads, {:.1} MiB",
                v[0],
                v[1],
                v[2] / 1024.0
            );
        }
    }
    println!("{rounds} rounds each, medians; {ITEMS} items, parse 20 µs CPU → enrich 1 ms blocking → write batches of {BATCH} at 5 ms");
    println!(
        "{:<28} {:>9} {:>12} {:>13} {:>12}",
        "design", "time", "items/s", "peak threads", "peak RSS +"
    );
    let [p, e, w] = fixed_sizes();
    let fixed = format!("{p}/{e}/{w}");
    let names = [
        "ebbtide pipeline (elastic)".to_string(),
        format!("ebbtide pipeline {fixed}"),
        "hand-written 8/100/8".to_string(),
    ];
    let mut tput = [0.0; 3];
    for (i, (t, th, rss)) in results.into_iter().enumerate() {
        let t = median(t);
        tput[i] = ITEMS as f64 / t;
        println!(
            "{:<28} {:>7.3} s {:>12.0} {:>13.0} {:>9.1} MiB",
            names[i],
            t,
            tput[i],
            median(th),
            median(rss) / 1024.0
        );
    }
    println!(
        "throughput against hand-written: elastic {:.2}×, fixed {fixed} {:.2}×",
        tput[0] / tput[2],
        tput[1] / tput[2]
    );
}
