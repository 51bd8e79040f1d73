//! How long a burst takes to engage parked workers: a pool of 300 fixed
//! workers, all parked; one outside thread submits 300 tasks at once, each
//! of which holds its worker, asleep, until all 300 have started. Timed from the
//! first submission to the 300th start (stamped by that task; the timing
//! thread waits asleep, not spinning on a CPU the burst needs); median of
//! 9 runs.
//!
//! Run: `cargo bench --bench wake [-- WORKERS]`

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
}
