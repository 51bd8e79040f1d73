//! What a pipeline's stages cost per item, against hand-written threads
//! on bounded crossbeam channels, 1,000,000 items each:
//!
//! - `batch`: items batched by 10 (or after 10 s) and counted by a sink:
//!   an ebbtide batch stage against a hand-written batcher (a thread that
//!   collects up to 10 items or waits out the time, handing batches on
//!   another channel to one sink thread). Nearly every batch leaves full,
//!   long before its time is up: the memory figure shows what a stage
//!   keeps for the batches that are gone.
//! - `map`: each item through a one-worker `map` stage (adding one) into
//!   a one-worker sink that sums them, against a map thread and a sink
//!   thread on two channels of 256.
//!
//! ```text
//! cargo bench --bench stages -- batch      # 3 rounds of each, rotating
//! cargo bench --bench stages -- map 7      # 7 rounds
//! ```
//!
//! Each (design, round) runs in a fresh process. Reported: the time from
//! the first item sent to the last one counted, and the peak growth of the
//! process's resident memory (sampled every millisecond).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::harness::{args, child_figures, median};

const ITEMS: u64 = 1_000_000;
const BATCH: usize = 10;
const MAX_WAIT: Duration = Duration::from_secs(10);

fn rss_kb() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn ebbtide(counted: &Arc<AtomicU64>) {
    use ebbtide::pipeline::{Pipeline, Stage};
    let c = Arc::clone(counted);
    let pipeline = Pipeline::<u64>::builder()
        .batch(Stage::new("batch"), BATCH, MAX_WAIT)
        .sink(Stage::new("count").workers(1), move |batch: Vec<u64>| {
            c.fetch_add(batch.len() as u64, Relaxed);
        })
        .build()
        .unwrap();
    for i in 0..ITEMS {
        pipeline.send(i).unwrap();
    }
    pipeline.shutdown();
}

fn ebbtide_map(counted: &Arc<AtomicU64>) {
    use ebbtide::pipeline::{Pipeline, Stage};
    let c = Arc::clone(counted);
    let pipeline = Pipeline::<u64>::builder()
        .map(Stage::new("add").workers(1), |x: u64| x + 1)
        .sink(Stage::new("count").workers(1), move |_x: u64| {
            c.fetch_add(1, Relaxed);
        })
        .build()
        .unwrap();
    for i in 0..ITEMS {
        pipeline.send(i).unwrap();
    }
    pipeline.shutdown();
}

fn hand_map(counted: &Arc<AtomicU64>) {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(256);
    let (otx, orx) = crossbeam_channel::bounded::<u64>(256);
    let map = std::thread::spawn(move || {
        for x in rx {
            otx.send(x + 1).unwrap();
        }
    });
    let c = Arc::clone(counted);
    let sink = std::thread::spawn(move || {
        for _x in orx {
            c.fetch_add(1, Relaxed);
        }
    });
    for i in 0..ITEMS {
        tx.send(i).unwrap();
    }
    drop(tx);
    map.join().unwrap();
    sink.join().unwrap();
}

fn hand(counted: &Arc<AtomicU64>) {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(256);
    let (btx, brx) = crossbeam_channel::bounded::<Vec<u64>>(256);
    let batcher = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(BATCH);
        let mut due = Instant::now();
        loop {
            let got = if batch.is_empty() {
                rx.recv().ok()
            } else {
                match rx.recv_deadline(due) {
                    Ok(x) => Some(x),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        btx.send(std::mem::take(&mut batch)).unwrap();
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => None,
                }
            };
            let Some(x) = got else {
                if !batch.is_empty() {
                    btx.send(batch).unwrap();
                }
                return;
            };
            if batch.is_empty() {
                due = Instant::now() + MAX_WAIT;
            }
            batch.push(x);
            if batch.len() == BATCH {
                btx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                    .unwrap();
            }
        }
    });
    let c = Arc::clone(counted);
    let sink = std::thread::spawn(move || {
        for batch in brx {
            c.fetch_add(batch.len() as u64, Relaxed);
        }
    });
    for i in 0..ITEMS {
        tx.send(i).unwrap();
    }
    drop(tx);
    batcher.join().unwrap();
    sink.join().unwrap();
}

fn child(design: &str) {
    let before = rss_kb();
    let peak = Arc::new(AtomicUsize::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (Arc::clone(&peak), Arc::clone(&stop));
    let sampler = std::thread::spawn(move || {
        while !s.load(Relaxed) {
            p.fetch_max(rss_kb(), Relaxed);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let counted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    match design {
        "batch-ebbtide" => ebbtide(&counted),
        "batch-hand" => hand(&counted),
        "map-ebbtide" => ebbtide_map(&counted),
        "map-hand" => hand_map(&counted),
        other => panic!("no design {other}"),
    }
    let took = start.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    sampler.join().unwrap();
    assert_eq!(counted.load(Relaxed), ITEMS, "every item counted once");
    let grew = peak.load(Relaxed).saturating_sub(before);
    println!("{took} {grew}");
}

fn main() {
    let args = args();
    if let [flag, design] = args.as_slice() {
        if flag == "child" {
            return child(design);
        }
    }
    let workload = args.first().map_or("batch", String::as_str);
    assert!(
        workload == "batch" || workload == "map",
        "the workload is `batch` or `map`, not {workload:?}"
    );
    let rounds: usize = args.get(1).map(|a| a.parse().expect("ROUNDS")).unwrap_or(3);
    let designs = [format!("{workload}-ebbtide"), format!("{workload}-hand")];
    let mut results: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for round in 0..rounds {
        let mut order = designs.clone();
        order.rotate_left(round % 2);
        for design in &order {
            let v = child_figures(&["child", design.as_str()], 0);
            let r = &mut results[designs.iter().position(|d| d == design).unwrap()];
            r.0.push(v[0]);
            r.1.push(v[1]);
            eprintln!("{design:>8}: {:.3} s, {:.1} MiB", v[0], v[1] / 1024.0);
        }
    }
    if workload == "batch" {
        println!(
            "{rounds} rounds each, medians; {ITEMS} items in batches of {BATCH} (or {MAX_WAIT:?})"
        );
    } else {
        println!("{rounds} rounds each, medians; {ITEMS} items through a map stage into a sink");
    }
    println!(
        "{:<26} {:>9} {:>12} {:>12}",
        "design", "time", "items/s", "peak RSS +"
    );
    let names = if workload == "batch" {
        ["ebbtide batch stage", "hand-written batcher"]
    } else {
        ["ebbtide map stage", "hand-written threads"]
    };
    let mut time = [0.0; 2];
    for (i, (t, rss)) in results.into_iter().enumerate() {
        time[i] = median(t);
        println!(
            "{:<26} {:>7.3} s {:>12.0} {:>8.1} MiB",
            names[i],
            time[i],
            ITEMS as f64 / time[i],
            median(rss) / 1024.0
        );
    }
    println!("time against hand-written: {:.2}×", time[0] / time[1]);
}
