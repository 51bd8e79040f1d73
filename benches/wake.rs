//! How long a burst takes to engage parked workers: a pool of 300 fixed
//! workers, all parked; one outside thread submits 300 tasks at once, each
//! of which holds its worker, asleep, until all 300 have started. Timed from the
//! first submission to the 300th start (stamped by that task; the timing
//! thread waits asleep, not spinning on a CPU the burst needs); median of
//! 9 runs.
//!
//! In the same runs, alternated, the floor this machine's kernel sets: 300
//! plain threads parked in `std::thread::park`, which the submitting
//! thread unparks one after another, each then doing what the pool's task
//! does (count, then sleep on the gate). No pool can engage its workers
//! faster than the wake-ups themselves take. On Linux also the same
//! threads waiting on one futex word and woken by a single system call:
//! the kernel's broadcast, the cheapest wake-up there is.
//!
//! Then a wide pool draining a burst: 1,000 tasks sleeping 2 ms each on
//! the same 300 workers (ideal: 4 rounds, 8 ms), against `threadpool` with
//! 300 threads, the runs alternated; medians of 9. What it shows is the
//! cost of workers that look for work: hundreds of them on 2 CPUs.
//!
//! Run: `cargo bench --bench wake [-- WORKERS]`

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
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

/// The gate the engaged workers sleep on until all have started.
type Gate = Arc<(Mutex<bool>, Condvar)>;
/// When the last of the burst started, once it has.
type Last = Arc<(Mutex<Option<Instant>>, Condvar)>;

/// What each engaged worker does: counts itself in (the last one stamps
/// the time and tells the timer), then sleeps on the gate until it opens.
fn engaged(started: &AtomicUsize, n: usize, last: &Last, gate: &Gate) {
    if started.fetch_add(1, SeqCst) + 1 == n {
        *last.0.lock().unwrap() = Some(Instant::now());
        last.1.notify_one();
    }
    let (open, cv) = &**gate;
    let mut open = open.lock().unwrap();
    while !*open {
        open = cv.wait_timeout(open, Duration::from_secs(10)).unwrap().0;
    }
}

/// Opens the gate: every engaged worker goes on.
fn open(gate: &Gate) {
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
}

/// Waits (asleep) until the last of the burst stamped its start.
fn last_start(last: &Last) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut at = last.0.lock().unwrap();
    while at.is_none() {
        at = last.1.wait_timeout(at, Duration::from_secs(1)).unwrap().0;
        assert!(Instant::now() < deadline, "not all started");
    }
    at.unwrap()
}

/// How the plain threads of the floor are woken.
#[derive(Clone, Copy)]
enum Wake {
    /// Each parked in `std::thread::park`, unparked one after another.
    OneByOne,
    /// All waiting on one futex word, woken by a single `FUTEX_WAKE`: the
    /// kernel's own broadcast, with no waker paying a call per thread.
    Broadcast,
}

/// Sleeps while `word` is 0 (a futex wait; spurious returns are fine).
#[cfg(target_os = "linux")]
fn futex_wait(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32 for the call's duration; a
    // null timeout waits without one; the kernel only reads the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            0u32,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes every thread waiting on `word`, in one system call.
#[cfg(target_os = "linux")]
fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; waking reads nothing else.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// The floor: `n` plain threads parked, then woken (`how`) by this
/// thread; the time from the first wake-up call to the `n`th start.
fn raw_threads(n: usize, how: Wake) -> Duration {
    let started = Arc::new(AtomicUsize::new(0));
    let parked = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(AtomicU32::new(0));
    let last: Last = Arc::new((Mutex::new(None), Condvar::new()));
    let gate: Gate = Arc::new((Mutex::new(false), Condvar::new()));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (s, p, g, l, gt) = (
                started.clone(),
                parked.clone(),
                go.clone(),
                last.clone(),
                gate.clone(),
            );
            std::thread::spawn(move || {
                p.fetch_add(1, SeqCst);
                let deadline = Instant::now() + Duration::from_secs(30);
                while g.load(SeqCst) == 0 {
                    match how {
                        Wake::OneByOne => std::thread::park_timeout(Duration::from_secs(1)),
                        #[cfg(target_os = "linux")]
                        Wake::Broadcast => futex_wait(&g),
                        #[cfg(not(target_os = "linux"))]
                        Wake::Broadcast => unreachable!("Linux only"),
                    }
                    assert!(Instant::now() < deadline, "never woken");
                }
                engaged(&s, n, &l, &gt);
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while parked.load(SeqCst) < n {
        assert!(Instant::now() < deadline, "threads did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the last ones reach their wait.
    std::thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    go.store(1, SeqCst);
    match how {
        Wake::OneByOne => {
            for t in &threads {
                t.thread().unpark();
            }
        }
        #[cfg(target_os = "linux")]
        Wake::Broadcast => futex_wake_all(&go),
        #[cfg(not(target_os = "linux"))]
        Wake::Broadcast => unreachable!("Linux only"),
    }
    let took = last_start(&last) - t0;
    open(&gate);
    for t in threads {
        t.join().unwrap();
    }
    took
}

/// Median, minimum and maximum.
fn spread(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let pool = ebbtide::Pool::builder().workers(n).build().unwrap();
    let broadcast = cfg!(target_os = "linux");
    let (mut times, mut floor, mut one_call) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..9 {
        floor.push(raw_threads(n, Wake::OneByOne));
        if broadcast {
            one_call.push(raw_threads(n, Wake::Broadcast));
        }
        // Every worker parked.
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.metrics().parked < n {
            assert!(Instant::now() < deadline, "workers did not park");
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Arc::new(AtomicUsize::new(0));
        // The last task to start tells the timer, which waits off the CPU
        // (a spinning timer would take one of the two CPUs the burst needs).
        let last: Last = Arc::new((Mutex::new(None), Condvar::new()));
        // Each task sleeps on the gate (no CPU) until all have started.
        let gate: Gate = Arc::new((Mutex::new(false), Condvar::new()));
        let t0 = Instant::now();
        for _ in 0..n {
            let (s, l, g) = (started.clone(), last.clone(), gate.clone());
            pool.execute(move || engaged(&s, n, &l, &g)).unwrap();
        }
        times.push(last_start(&last) - t0);
        open(&gate);
        pool.wait_idle();
    }
    let (ours, ours_min, ours_max) = spread(times);
    let (plain, plain_min, _) = spread(floor);
    println!(
        "engaging {n} parked workers: median {ours:.2?} (min {ours_min:.2?}, max {ours_max:.2?}); \
         {n} plain parked threads unparked one by one: median {plain:.2?} (min {plain_min:.2?}) ({:.2}×)",
        ours.as_secs_f64() / plain.as_secs_f64()
    );
    if broadcast {
        let (one, one_min, _) = spread(one_call);
        println!(
            "{n} plain threads on one futex word, woken by one call: median {one:.2?} \
             (min {one_min:.2?}); ebbtide against it {:.2}×",
            ours.as_secs_f64() / one.as_secs_f64()
        );
    }

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
