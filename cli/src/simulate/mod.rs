//! `ebbtide simulate`: an open-loop load generator against an elastic
//! pool. Arrivals are Poisson at a rate the scenario moves over time;
//! service times follow a distribution; some tasks block (sleep) instead
//! of computing; keyed scenarios draw keys from a Zipf law. A sampler reads
//! the pool every 10 ms, and once more when the run has ended. The run ends
//! as an HTML report with charts, a CSV time series and a JSON summary, and
//! a table with the Little's-law check (time-averaged tasks in the system L
//! against λ·W).

mod load;
mod report;
mod target;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::progress::{Progress, Reading};
use crate::{serve, units};
use load::{Rng, Task};
use target::{Sizing, Target};

/// How the arrival rate moves over the run.
#[derive(Clone, Copy, Debug, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The base rate throughout.
    Steady,
    /// The base rate, with two bursts at five times it.
    Burst,
    /// From a fifth of the base rate up to twice it.
    Ramp,
    /// One compressed day: a trough, a peak at twice the base, a trough.
    Diurnal,
    /// The base rate; half the tasks block (sleep) instead of computing.
    BlockingMix,
    /// The base rate, keyed: keys drawn from a Zipf law.
    SkewedKeys,
    /// The base rate through a pipeline of elastic stages: parse (CPU, a
    /// fifth of the service time) → enrich (blocking) → batches of 100 or
    /// 100 ms → write (5 ms per batch).
    Pipeline,
}

impl Scenario {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Burst => "burst",
            Scenario::Ramp => "ramp",
            Scenario::Diurnal => "diurnal",
            Scenario::BlockingMix => "blocking-mix",
            Scenario::SkewedKeys => "skewed-keys",
            Scenario::Pipeline => "pipeline",
        }
    }
}

/// How long each task takes.
#[derive(Clone, Copy, Debug, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    Fixed,
    Exponential,
    LogNormal,
}

impl Service {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Service::Fixed => "fixed",
            Service::Exponential => "exponential",
            Service::LogNormal => "log-normal",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// The load's shape over time.
    #[arg(long, value_enum, default_value = "steady")]
    pub scenario: Scenario,
    /// How long arrivals go on.
    #[arg(long, default_value = "10s", value_parser = units::positive_duration)]
    pub duration: Duration,
    /// How long after the last arrival the run waits for accepted arrivals
    /// to finish; then it abandons those not started and fails.
    #[arg(long, default_value = "60s", value_parser = units::duration)]
    pub drain: Duration,
    /// Where the report goes.
    #[arg(long, default_value = "ebbtide-report")]
    pub out: PathBuf,
    /// The base arrival rate.
    #[arg(long, default_value = "1000/s", value_parser = units::rate)]
    pub rate: f64,
    /// Service-time distribution.
    #[arg(long, value_enum, default_value = "exponential")]
    pub service: Service,
    /// Mean service time.
    #[arg(long, default_value = "1ms", value_parser = units::positive_duration)]
    pub service_mean: Duration,
    /// Fraction of tasks that block (sleep their service time) instead of
    /// computing; blocking-mix defaults to 50%, the others to 0%.
    #[arg(long, value_parser = units::fraction)]
    pub blocking: Option<f64>,
    /// Keys for skewed-keys (Zipf, exponent --zipf).
    #[arg(long, default_value = "1000", value_parser = units::count)]
    pub keys: usize,
    /// The Zipf exponent for skewed-keys.
    #[arg(long, default_value = "1.0")]
    pub zipf: f64,
    /// The elastic pool's worker range.
    #[arg(long, default_value = "1..64", value_name = "MIN..MAX", value_parser = units::worker_range)]
    pub elastic: (usize, usize),
    /// How long the pool's (each stage's) workers must stay mostly idle
    /// before it shrinks, to what that quiet spell used.
    #[arg(long, default_value = "10s", value_parser = units::positive_duration)]
    pub keep_alive: Duration,
    /// How long tasks may wait in the pool's (each stage's) queue before
    /// it adds workers.
    #[arg(long, default_value = "20ms", value_parser = units::positive_duration)]
    pub queue_wait_target: Duration,
    /// Seed of the arrival, service and key draws.
    #[arg(long, default_value = "1")]
    pub seed: u64,
    /// Serve the pool's Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// After the report, keep serving /metrics until interrupted or until
    /// standard input closes.
    #[arg(long, requires = "metrics_addr")]
    pub linger: bool,
}

/// One 10 ms sample.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    pub t: f64,
    pub workers: usize,
    pub busy: usize,
    pub queued: usize,
    pub in_system: u64,
    pub arrival_rate: f64,
    pub throughput: f64,
    pub offered_workers: f64,
    pub mean_time_in_system_ms: f64,
    pub queue_wait_p50_ms: f64,
    pub queue_wait_p99_ms: f64,
    /// Per stage (the pipeline scenario): workers, busy, queued.
    pub stages: Vec<(usize, usize, usize)>,
}

/// What tasks report back, shared with the sampler. The counts are relaxed:
/// tallies that order nothing else; the sampler's readings may lag by a
/// task, and the report reads them after the pool has shut down (which
/// joins its workers).
#[derive(Default)]
pub struct Tally {
    arrived: AtomicU64,
    finished: AtomicU64,
    /// Time in system of finished tasks, ns (for the run's mean W).
    time_in_system_ns: AtomicU64,
    /// Queue waits (µs) and times in system (µs) since the last sample.
    window: Mutex<(Vec<u32>, Vec<u32>)>,
    /// The number of tasks in the system, integrated over time at every
    /// arrival and departure: its time average is L, measured exactly.
    occupancy: Mutex<Occupancy>,
}

#[derive(Default)]
struct Occupancy {
    count: u64,
    last: Option<Instant>,
    area: f64,
}

impl Occupancy {
    fn step(&mut self, now: Instant, arrive: bool) {
        if let Some(last) = self.last {
            self.area += self.count as f64 * now.saturating_duration_since(last).as_secs_f64();
        }
        self.last = Some(now.max(self.last.unwrap_or(now)));
        if arrive {
            self.count += 1;
        } else {
            self.count -= 1;
        }
    }
}

impl Tally {
    fn arrive(&self, now: Instant) {
        self.occupancy.lock().unwrap().step(now, true);
        self.arrived.fetch_add(1, Relaxed);
    }

    /// Tasks in the system, averaged over time from the first arrival.
    pub fn mean_in_system(&self, over: Duration) -> f64 {
        self.occupancy.lock().unwrap().area / over.as_secs_f64().max(1e-9)
    }

    fn finish(&self, arrived: Instant, started: Instant) {
        let now = Instant::now();
        self.occupancy.lock().unwrap().step(now, false);
        let w = now - arrived;
        self.time_in_system_ns
            .fetch_add(w.as_nanos() as u64, Relaxed);
        let mut window = self.window.lock().unwrap();
        window
            .0
            .push((started - arrived).as_micros().min(u32::MAX as u128) as u32);
        window.1.push(w.as_micros().min(u32::MAX as u128) as u32);
        drop(window);
        self.finished.fetch_add(1, Relaxed);
    }
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

pub fn run(args: &SimulateArgs, stop: &Arc<AtomicBool>, server: Option<&serve::Source>) -> bool {
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("error: cannot create --out {}: {e}", args.out.display());
        return false;
    }
    let blocking = args.blocking.unwrap_or(match args.scenario {
        Scenario::BlockingMix => 0.5,
        _ => 0.0,
    });
    let (lo, hi) = args.elastic;
    let tally = Arc::new(Tally::default());
    let sizing = Sizing {
        workers: (lo, hi),
        keep_alive: args.keep_alive,
        queue_wait_target: args.queue_wait_target,
    };
    let built = match args.scenario {
        Scenario::Pipeline => Target::pipeline(sizing, &tally),
        _ => Target::pool(sizing),
    };
    let target = match built {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("error: the pool could not be built: {e}");
            return false;
        }
    };
    if let Some(source) = server {
        source.set_text(target.prometheus());
    }
    println!(
        "simulate: {} for {}, base rate {}/s, {} service times of mean {}, {:.0}% blocking, {lo}..{hi} workers",
        args.scenario.name(),
        units::show(args.duration),
        args.rate,
        args.service.name(),
        units::show(args.service_mean),
        blocking * 100.0
    );

    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let start = Instant::now();
    let done_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (target, tally, samples, done) = (
            Arc::clone(&target),
            Arc::clone(&tally),
            Arc::clone(&samples),
            Arc::clone(&done_sampling),
        );
        let (scenario, rate, mean) = (args.scenario, args.rate, args.service_mean);
        let duration = args.duration;
        std::thread::spawn(move || {
            let tick = Duration::from_millis(10);
            let mut next = start + tick;
            let (mut last_arrived, mut last_finished, mut last_at) = (0, 0, start);
            let mut recent: std::collections::VecDeque<(Vec<u32>, Vec<u32>)> = Default::default();
            loop {
                // One last sample once the run has ended, so that the
                // series reaches its end however late this thread ran.
                // Acquire: pairs with the Release store of the flag.
                let last = done.load(Acquire);
                let now = Instant::now();
                if !last && now < next {
                    std::thread::sleep(next - now);
                    continue;
                }
                // A sampler that ran late skips the ticks it missed rather
                // than taking them back to back, and its rates are over
                // the time that really passed.
                while next <= now {
                    next += tick;
                }
                let interval = (now - last_at).as_secs_f64().max(1e-6);
                let stages = target.metrics();
                // Finished before arrived: every task counts as arrived
                // before it finishes, so the later reading is normally the
                // larger (Relaxed promises no order between the two
                // counters, hence the saturating difference below).
                let finished = tally.finished.load(Relaxed);
                let arrived = tally.arrived.load(Relaxed);
                recent.push_back(std::mem::take(&mut *tally.window.lock().unwrap()));
                if recent.len() > 10 {
                    recent.pop_front();
                }
                let mut waits: Vec<u32> = recent.iter().flat_map(|w| w.0.iter().copied()).collect();
                let times: Vec<u32> = recent.iter().flat_map(|w| w.1.iter().copied()).collect();
                waits.sort_unstable();
                let t = (now - start).as_secs_f64();
                let lambda = arrived.saturating_sub(last_arrived) as f64 / interval;
                let target = load::rate_at(scenario, rate, (now - start).min(duration), duration);
                samples.lock().unwrap().push(Sample {
                    t,
                    workers: stages.iter().map(|m| m.workers).sum(),
                    busy: stages.iter().map(|m| m.busy_workers).sum(),
                    queued: stages.iter().map(|m| m.queued).sum(),
                    in_system: arrived.saturating_sub(finished),
                    arrival_rate: lambda,
                    throughput: (finished - last_finished) as f64 / interval,
                    offered_workers: target * mean.as_secs_f64(),
                    mean_time_in_system_ms: if times.is_empty() {
                        0.0
                    } else {
                        times.iter().map(|&x| x as f64).sum::<f64>() / times.len() as f64 / 1000.0
                    },
                    queue_wait_p50_ms: percentile(&waits, 0.5),
                    queue_wait_p99_ms: percentile(&waits, 0.99),
                    stages: if stages.len() > 1 {
                        stages
                            .iter()
                            .map(|m| (m.workers, m.busy_workers, m.queued))
                            .collect()
                    } else {
                        Vec::new()
                    },
                });
                last_arrived = arrived;
                last_finished = finished;
                last_at = now;
                if last {
                    break;
                }
            }
        })
    };

    let watched = (Arc::clone(&target), Arc::clone(&tally));
    let expected = load::expected_arrivals(args.scenario, args.rate, args.duration) as u64;
    let progress = Progress::start(expected, move || {
        let m = watched.0.metrics();
        Reading {
            submitted: watched.1.arrived.load(Relaxed),
            done: watched.1.finished.load(Relaxed),
            queued: m.iter().map(|m| m.queued).sum(),
            workers: m.iter().map(|m| m.workers).sum(),
        }
    });

    // The open-loop generator: arrivals are due at Poisson instants and are
    // submitted when due, whether or not the pool keeps up.
    let mut rng = Rng::new(args.seed);
    let keys = load::Zipf::new(args.keys, args.zipf);
    let mut due = start;
    let mut submit_errors = 0u64;
    // Whether the generator could not submit as fast as the rate asked and
    // stopped at the run's end with arrivals still due.
    let mut fell_behind = false;
    // Relaxed: a request to stop early; it publishes nothing.
    while !stop.load(Relaxed) {
        let elapsed = due - start;
        if elapsed >= args.duration {
            break;
        }
        let now = Instant::now();
        if now - start >= args.duration && now - due > Duration::from_millis(10) {
            fell_behind = true;
            break;
        }
        let lambda = load::rate_at(args.scenario, args.rate, elapsed, args.duration);
        due += Duration::from_secs_f64(rng.exponential(1.0 / lambda));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let arrived = Instant::now();
        let task = Task {
            arrived,
            service: load::service_time(args.service, args.service_mean, &mut rng),
            blocks: rng.unit() < blocking,
        };
        tally.arrive(arrived);
        let key = match args.scenario {
            Scenario::SkewedKeys => Some(keys.draw(&mut rng)),
            _ => None,
        };
        let submitted = target.submit(task, key, &tally);
        if !submitted {
            // Never entered: leave again at once, and do not count it.
            tally.occupancy.lock().unwrap().step(Instant::now(), false);
            tally.arrived.fetch_sub(1, Relaxed);
            submit_errors += 1;
        }
    }
    let interrupted = stop.load(Relaxed);
    // Every accepted arrival finishes (a pipeline's last batch within its
    // 100 ms); `--drain` more is the bound before the run is judged.
    let bound = Instant::now() + args.drain;
    let unfinished = || tally.finished.load(Relaxed) < tally.arrived.load(Relaxed);
    while unfinished() && Instant::now() < bound {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Past the bound, what has not started is abandoned: the run ends.
    let abandon = unfinished();
    let elapsed = start.elapsed();
    // Release: the sampler's last sample, after its Acquire load of the
    // flag, reads the counts at least as new as the ones read above.
    done_sampling.store(true, Release);
    let _ = sampler.join();
    progress.finish();
    let (metrics, resizes, accounted) = match Arc::try_unwrap(target) {
        Ok(target) => target.finish(abandon),
        // The sampler and the progress thread, which held the other
        // handles, have ended; nothing else keeps one.
        Err(_) => unreachable!("the target has one owner once sampling stopped"),
    };
    let samples = std::mem::take(&mut *samples.lock().unwrap());

    let summary = report::Summary::new(
        args,
        blocking,
        &samples,
        &tally,
        elapsed,
        &metrics,
        &resizes,
        interrupted,
        fell_behind,
    );
    summary.print();
    match report::write(&args.out, args, &summary, &samples, &resizes) {
        Ok(()) => println!(
            "report: {} (charts), {} and {}",
            args.out.join("report.html").display(),
            args.out.join("timeseries.csv").display(),
            args.out.join("summary.json").display()
        ),
        Err(e) => {
            eprintln!("error: writing the report to {}: {e}", args.out.display());
            return false;
        }
    }
    if abandon {
        println!(
            "FAILED: accepted arrivals had not finished {} after the last one (--drain); \
             those not started were abandoned (the pool could not keep up with the load)",
            units::show(args.drain)
        );
        return false;
    }
    if submit_errors > 0 || !accounted {
        println!(
            "FAILED: {submit_errors} submissions refused; every accepted arrival accounted for: {accounted}"
        );
        return false;
    }
    true
}
