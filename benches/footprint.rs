//! Footprint figures, printed as a table:
//! * memory per queued task beyond the closure (a counting allocator around
//!   the system one, one worker held at a gate while N tasks queue);
//! * idle CPU of a 64-worker pool (per-thread CPU time from
//!   `/proc/self/task/*/schedstat` over an idle interval, Linux only).
//!
//! Run: `cargo bench --bench footprint`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to `System`, only counting the bytes it hands out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn hold(pool: &ebbtide::Pool) -> Arc<(Mutex<bool>, Condvar)> {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let started = Arc::new((Mutex::new(false), Condvar::new()));
    let (g, s) = (gate.clone(), started.clone());
    pool.execute(move || {
        *s.0.lock().unwrap() = true;
        s.1.notify_all();
        let mut open = g.0.lock().unwrap();
        while !*open {
            open = g.1.wait(open).unwrap();
        }
    })
    .unwrap();
    let mut st = started.0.lock().unwrap();
    while !*st {
        st = started.1.wait(st).unwrap();
    }
    gate
}

fn release(gate: &(Mutex<bool>, Condvar)) {
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
}

/// Bytes per queued task beyond the closure's own size.
fn per_task<const N: usize>(tasks: usize) -> f64 {
    let pool = ebbtide::Pool::builder().workers(1).build().unwrap();
    let gate = hold(&pool);
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..tasks {
        let payload = [7u8; N];
        pool.execute(move || {
            std::hint::black_box(payload);
        })
        .unwrap();
    }
    let after = LIVE.load(Ordering::Relaxed);
    release(&gate);
    pool.shutdown();
    (after - before) as f64 / tasks as f64 - N as f64
}

fn thread_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    println!("ebbtide footprint ({} CPUs)", num_cpus::get());
    println!("| measure | value |");
    println!("|---|---|");
    for (name, bytes) in [
        (
            "bytes per queued task beyond a 16-byte closure (inline)",
            per_task::<16>(200_000),
        ),
        (
            "bytes per queued task beyond a 24-byte closure (inline)",
            per_task::<24>(200_000),
        ),
        (
            "bytes per queued task beyond a 64-byte closure (boxed)",
            per_task::<64>(200_000),
        ),
    ] {
        println!("| {name} | {bytes:.1} |");
    }

    let pool = ebbtide::Pool::builder().workers(64).build().unwrap();
    // Let every worker finish its start-up spin and park.
    std::thread::sleep(Duration::from_millis(500));
    let window = Duration::from_secs(5);
    match thread_cpu_ns() {
        Some(start) => {
            let t = Instant::now();
            std::thread::sleep(window);
            let used = thread_cpu_ns().unwrap() - start;
            let pct = used as f64 / t.elapsed().as_nanos() as f64 * 100.0;
            println!("| idle CPU of a 64-worker pool over {window:?} (% of one core) | {pct:.4} |");
        }
        None => println!("| idle CPU of a 64-worker pool | (needs /proc/self/task/*/schedstat) |"),
    }
    println!(
        "| parks / workers parked after idling | {} / {} |",
        pool.metrics().counts.parks,
        pool.metrics().parked
    );
    drop(pool);
}
