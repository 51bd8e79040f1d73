//! How long a burst takes to engage parked workers: a pool of 300 fixed
//! workers, all parked; one outside thread submits 300 tasks at once, each
//! of which holds its worker, asleep, until all 300 have started. Timed from the
//! first submission to the 300th start (stamped by that task; the timing
//! thread waits asleep, not spinning on a CPU the burst needs); median of
//! 9 runs.
//!
//! Then a wide pool draining a burst: 1,000 tasks sleeping 2 ms each on
//! the same 300 workers (ideal: 4 rounds, 8 ms), against `threadpool` with
//! 300 threads, the runs alternated; medians of 9. What it shows is the
//! cost of workers that look for work: hundreds of them on 2 CPUs.
//!
//! Run: `cargo bench --bench wake [-- WORKERS]`

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// 1,000 tasks of 2 ms submitted at once; the time until all are done.
fn drain(submit: &dyn Fn(Box<dyn FnOnce() + Send>), wait: &dyn Fn()) -> Duration {
    let t0 = Instant::now();
    for _ in 0..1_000 {
        submit(Box::new(|| std::thread::sleep(Duration::from_millis(2))));
    }
    wait();
    t0.elapsed()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let pool = ebbtide::Pool::builder().workers(n).build().unwrap();
    let mut times = Vec::new();
    for _ in 0..9 {
        // Every worker parked.
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.metrics().parked < n {
            assert!(Instant::now() < deadline, "workers did not park");
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Arc::new(AtomicUsize::new(0));
        // The last task to start tells the timer, which waits off the CPU
        // (a spinning timer would take one of the two CPUs the burst needs).
        let all = Arc::new((Mutex::new(None::<Instant>), Condvar::new()));
        // Each task sleeps on the gate (no CPU) until all have started.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let t0 = Instant::now();
        for _ in 0..n {
            let (s, g, a) = (Arc::clone(&started), Arc::clone(&gate), Arc::clone(&all));
            pool.execute(move || {
                if s.fetch_add(1, SeqCst) + 1 == n {
                    *a.0.lock().unwrap() = Some(Instant::now());
                    a.1.notify_one();
                }
                let (open, cv) = &*g;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait_timeout(open, Duration::from_secs(10)).unwrap().0;
                }
            })
            .unwrap();
        }
        let mut last = all.0.lock().unwrap();
        while last.is_none() {
            last = all.1.wait_timeout(last, Duration::from_secs(30)).unwrap().0;
            assert!(
                Instant::now() < deadline + Duration::from_secs(30),
                "not all started"
            );
        }
        times.push(last.unwrap() - t0);
        drop(last);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        pool.wait_idle();
    }
    times.sort();
    println!(
        "engaging {n} parked workers: median {:?} (min {:?}, max {:?})",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );

    let peer = threadpool::ThreadPool::new(n);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        std::thread::sleep(Duration::from_millis(50));
        ours.push(drain(&|task| pool.execute(task).unwrap(), &|| {
            pool.wait_idle()
        }));
        std::thread::sleep(Duration::from_millis(50));
        theirs.push(drain(&|task| peer.execute(task), &|| peer.join()));
    }
    ours.sort();
    theirs.sort();
    let (a, b) = (ours[4], theirs[4]);
    println!(
        "draining 1,000 tasks of 2 ms on {n} workers: ebbtide {a:.1?}, threadpool {b:.1?} ({:.2}×)",
        a.as_secs_f64() / b.as_secs_f64()
    );
}
