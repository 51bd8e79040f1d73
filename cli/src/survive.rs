//! `ebbtide survive`: the survival lab. Many producers push many tiny tasks
//! into a bounded pool with every failure mode at once — overflow, panics,
//! tasks past their deadline, an interrupt — and the verdict checks that
//! every task is accounted for exactly once: nothing ran twice, nothing was
//! lost, no thread and no task closure outlived the pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ebbtide::{Backpressure, Pool, SubmitError, TaskContext, TaskError};

use crate::progress::{Progress, Reading};
use crate::{serve, units};

/// What to do when the queue is full.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Policy {
    Block,
    Reject,
    DropNewest,
    DropOldest,
    CallerRuns,
}

impl From<Policy> for Backpressure {
    fn from(p: Policy) -> Backpressure {
        match p {
            Policy::Block => Backpressure::Block,
            Policy::Reject => Backpressure::Reject,
            Policy::DropNewest => Backpressure::DropNewest,
            Policy::DropOldest => Backpressure::DropOldest,
            Policy::CallerRuns => Backpressure::CallerRuns,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SurviveArgs {
    /// Tasks to submit.
    #[arg(long, default_value = "1000000", value_parser = units::count)]
    pub tasks: usize,
    /// Workers (a fixed pool; see --elastic).
    #[arg(long, default_value = "1000", value_parser = units::count)]
    pub workers: usize,
    /// An elastic pool sized between MIN and MAX workers instead.
    #[arg(long, value_name = "MIN..MAX", value_parser = units::worker_range)]
    pub elastic: Option<(usize, usize)>,
    /// Queue capacity (tasks waiting).
    #[arg(long, default_value = "20000", value_parser = units::count)]
    pub queue: usize,
    /// What a full queue does.
    #[arg(long, value_enum, default_value = "drop-newest")]
    pub policy: Policy,
    /// Each task's deadline, from submission.
    #[arg(long, default_value = "100ms", value_parser = units::positive_duration)]
    pub timeout: Duration,
    /// Fraction of tasks that panic.
    #[arg(long, default_value = "0.1%", value_parser = units::fraction)]
    pub panic_rate: f64,
    /// Fraction of tasks that run past their deadline (and stop there,
    /// cooperatively).
    #[arg(long, default_value = "0.02%", value_parser = units::fraction)]
    pub slow_rate: f64,
    /// How long shutdown may drain before it abandons what is left.
    #[arg(long, default_value = "5s", value_parser = units::duration)]
    pub drain: Duration,
    /// Threads submitting.
    #[arg(long, default_value = "4", value_parser = units::count)]
    pub producers: usize,
    /// Serve the pool's Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// After the verdict, keep serving /metrics until interrupted or until
    /// standard input closes.
    #[arg(long, requires = "metrics_addr")]
    pub linger: bool,
}

impl Default for SurviveArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            a: SurviveArgs,
        }
        Wrap::parse_from(["survive"]).a
    }
}

/// What each task is, from its index (spread evenly, the same every run).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Normal,
    Panics,
    Slow,
}

fn kind(i: usize, panic_rate: f64, slow_rate: f64) -> Kind {
    // A fixed permutation of the index into [0, 1).
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    let x = h as f64 / (1u64 << 53) as f64;
    if x < panic_rate {
        Kind::Panics
    } else if x < panic_rate + slow_rate {
        Kind::Slow
    } else {
        Kind::Normal
    }
}

/// The lab's own tallies, kept apart from the pool's. Relaxed throughout:
/// they order nothing else, the verdict reads them after the pool has shut
/// down (which joins its workers), and a second run of a task is caught
/// whatever the ordering, as read-modify-writes of one counter are totally
/// ordered.
struct Lab {
    runs: Vec<AtomicU8>,
    ran_twice: AtomicU64,
    offered: AtomicU64,
    closures_made: AtomicU64,
    closures_dropped: AtomicU64,
}

/// Rides in every task closure; counts its drop.
struct Token(Arc<Lab>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.closures_dropped.fetch_add(1, Relaxed);
    }
}

fn body(lab: &Lab, i: usize, kind: Kind, cx: &TaskContext) -> Result<u64, TaskError> {
    if lab.runs[i].fetch_add(1, Relaxed) > 0 {
        lab.ran_twice.fetch_add(1, Relaxed);
    }
    match kind {
        Kind::Panics => panic!("{INJECTED} {i}"),
        Kind::Slow => {
            // Past the deadline, a millisecond at a time, then stop there.
            while !cx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            cx.check()?;
            Ok(0)
        }
        Kind::Normal => {
            let mut x = i as u64 | 1;
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            Ok(std::hint::black_box(x))
        }
    }
}

/// The panic message of the tasks made to panic (kept off stderr).
const INJECTED: &str = "survival lab: injected panic in task";

/// The pool's threads: workers, supervisor, timer driver and watchdog are
/// all named from this prefix.
const THREADS: &str = "lab";

/// Threads of this process whose name starts with [`THREADS`] (Linux;
/// `None` elsewhere), for the leak check: the pool's threads that are
/// still alive. Other threads of the program (the metrics server's
/// connection handlers, the progress thread) are not the pool's.
fn pool_threads_alive() -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with(THREADS))
            .count(),
    )
}

/// Runs the lab; returns whether it survived.
pub fn run(args: &SurviveArgs, stop: &Arc<AtomicBool>, server: Option<&serve::Source>) -> bool {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied());
        if !msg.is_some_and(|m| m.starts_with(INJECTED)) {
            default_hook(info);
        }
    }));

    let threads_before = pool_threads_alive();
    let lab = Arc::new(Lab {
        runs: (0..args.tasks).map(|_| AtomicU8::new(0)).collect(),
        ran_twice: AtomicU64::new(0),
        offered: AtomicU64::new(0),
        closures_made: AtomicU64::new(0),
        closures_dropped: AtomicU64::new(0),
    });
    let builder = Pool::builder()
        .name("survive")
        .thread_name(THREADS)
        .queue_capacity(args.queue)
        .backpressure(args.policy.into())
        .panic_handler(|_| {});
    let builder = match args.elastic {
        Some((lo, hi)) => builder.min_workers(lo).max_workers(hi),
        None => builder.workers(args.workers),
    };
    let pool = match builder.build() {
        Ok(pool) => pool,
        Err(e) => {
            println!("FAILED: the pool could not be built: {e}");
            return false;
        }
    };
    if let Some(source) = server {
        source.set(pool.handle());
    }
    let workers_desc = match args.elastic {
        Some((lo, hi)) => format!("{lo}..{hi} workers (elastic)"),
        None => format!("{} workers", args.workers),
    };
    println!(
        "survive: {} tasks, {workers_desc}, queue {} ({} when full), deadline {}, {}% panic, {}% slow, drain {}, {} producers",
        args.tasks,
        args.queue,
        args.policy
            .to_possible_value()
            .expect("every policy has a name")
            .get_name(),
        units::show(args.timeout),
        args.panic_rate * 100.0,
        args.slow_rate * 100.0,
        units::show(args.drain),
        args.producers
    );

    let handle = pool.handle();
    let watched = Arc::clone(&lab);
    let progress = Progress::start(args.tasks as u64, move || {
        let m = handle.metrics();
        let c = &m.counts;
        Reading {
            submitted: watched.offered.load(Relaxed),
            done: c.completed
                + c.panicked
                + c.timed_out
                + c.dropped_newest
                + c.dropped_oldest
                + c.rejected,
            queued: m.queued,
            workers: m.workers,
        }
    });

    let start = Instant::now();
    std::thread::scope(|s| {
        for p in 0..args.producers {
            let (lab, pool) = (&lab, &pool);
            s.spawn(move || {
                let mut i = p;
                // Relaxed: a request to stop early; it publishes nothing.
                while i < args.tasks && !stop.load(Relaxed) {
                    let k = kind(i, args.panic_rate, args.slow_rate);
                    lab.closures_made.fetch_add(1, Relaxed);
                    let token = Token(Arc::clone(lab));
                    lab.offered.fetch_add(1, Relaxed);
                    let submitted = pool.task().timeout(args.timeout).spawn_with(move |cx| {
                        let token = token;
                        body(&token.0, i, k, cx)
                    });
                    match submitted {
                        // The handle is not needed: the pool accounts.
                        Ok(_) | Err(SubmitError::Full(_)) => {}
                        Err(e) => {
                            // Shut down under us (an interrupt): stop.
                            drop(e);
                            break;
                        }
                    }
                    i += args.producers;
                }
            });
        }
    });
    let interrupted = stop.load(Relaxed);
    let report = pool.shutdown_timeout(args.drain);
    let elapsed = start.elapsed();
    let metrics = pool.metrics();
    drop(pool);
    progress.finish();
    let threads_after = pool_threads_alive();

    let offered = lab.offered.load(Relaxed);
    let accounted = report.completed
        + report.failed
        + report.dead_lettered
        + report.panicked
        + report.abandoned
        + report.dropped
        + report.rejected
        + report.timed_out
        + report.cancelled
        + report.still_running;
    let lost = offered.abs_diff(report.submitted) + report.submitted.saturating_sub(accounted);
    let ran_twice = lab.ran_twice.load(Relaxed);
    let closures_leaked = lab
        .closures_made
        .load(Relaxed)
        .saturating_sub(lab.closures_dropped.load(Relaxed));
    let threads_leaked = match (threads_before, threads_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };

    let row = |name: &str, value: String, note: &str| {
        println!("{}", format!("  {name:<22} {value:>18}  {note}").trim_end())
    };
    println!();
    row("submitted", report.submitted.to_string(), "");
    row("completed", report.completed.to_string(), "");
    row("panicked", report.panicked.to_string(), "");
    row("timed out", report.timed_out.to_string(), "");
    row("dropped", report.dropped.to_string(), "");
    row("rejected", report.rejected.to_string(), "");
    row("abandoned", report.abandoned.to_string(), "");
    row("still running", report.still_running.to_string(), "");
    row("ran twice", ran_twice.to_string(), "must be 0");
    row("lost", lost.to_string(), "must be 0");
    row(
        "threads leaked",
        threads_leaked.map_or("unknown".into(), |n| n.to_string()),
        "must be 0",
    );
    row(
        "task closures leaked",
        closures_leaked.to_string(),
        "must be 0",
    );
    let finished = report.completed + report.panicked + report.timed_out;
    row(
        "throughput",
        format!("{:.0}/s", finished as f64 / elapsed.as_secs_f64().max(1e-9)),
        &format!("{finished} tasks ended in {}", units::show(elapsed)),
    );
    row(
        "queue wait p50 / p99",
        format!(
            "{} / {}",
            units::show(metrics.queue_wait.p50()),
            units::show(metrics.queue_wait.p99())
        ),
        "",
    );
    println!();

    let mut failures = Vec::new();
    for (what, n) in [
        ("ran twice", ran_twice),
        ("lost", lost),
        ("task closures leaked", closures_leaked),
        ("threads leaked", threads_leaked.unwrap_or(0) as u64),
    ] {
        if n > 0 {
            failures.push(format!("{n} {what}"));
        }
    }
    let how = if interrupted {
        format!("interrupted after {offered} of {} tasks; ", args.tasks)
    } else {
        String::new()
    };
    if failures.is_empty() {
        println!(
            "survived: {how}{} tasks accounted for exactly once on {workers_desc}; no task ran twice or was lost, no thread or closure leaked",
            report.submitted
        );
        true
    } else {
        println!("FAILED: {how}{}", failures.join(", "));
        false
    }
}
