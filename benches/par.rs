//! Data-parallel loops, ebbtide's `par` against rayon, 2 workers each, in
//! the same process: each round runs every workload on both pools (which
//! goes first alternates), and the median over rounds is reported with the
//! ratio ebbtide / rayon.
//!
//! ```text
//! cargo bench --bench par            # 11 rounds
//! cargo bench --bench par -- 21      # 21 rounds
//! cargo bench --bench par -- 41 sort  # 41 rounds of the workloads named *sort*
//! ```
//!
//! Workloads: sum of squares over 0..100M; map + collect of 10M `u64`s;
//! unstable and stable sorts of 10M random `u64`s (a fresh copy each run,
//! copied outside the timing); `for_each` over the rows of a 1024×768
//! Mandelbrot image (rows through the set cost a hundred times more than
//! rows far from it). Each result is checked against the other pool's.

use std::hint::black_box;
use std::time::{Duration, Instant};

mod common;
use common::harness::median;
use common::par::{on_ebbtide, on_rayon, random_u64s, MANDEL_H, MANDEL_W};

const WORKERS: usize = 2;
const SUM_N: u64 = 100_000_000;
const COLLECT_N: u64 = 10_000_000;
const SORT_N: usize = 10_000_000;

struct Pools {
    ebbtide: ebbtide::Pool,
    rayon: rayon::ThreadPool,
}

impl Pools {
    /// Runs `f` on the named pool; returns its time and value.
    fn time<R: Send>(&self, ebb: bool, f: impl FnOnce() -> R + Send) -> (Duration, R) {
        let start = Instant::now();
        let r = if ebb {
            self.ebbtide.install(f)
        } else {
            self.rayon.install(f)
        };
        (start.elapsed(), r)
    }
}

/// One workload: runs on ebbtide (`true`) or rayon, checks its result,
/// returns its time.
type Workload<'a> = (&'static str, Box<dyn Fn(&Pools, bool) -> Duration + 'a>);

fn workloads(input: &[u64]) -> Vec<Workload<'_>> {
    vec![
        (
            "sum of squares 100M",
            Box::new(|p: &Pools, ebb: bool| {
                let (t, sum) = p.time(ebb, || {
                    if ebb {
                        on_ebbtide::sum_squares(SUM_N, black_box(0))
                    } else {
                        on_rayon::sum_squares(SUM_N, black_box(0))
                    }
                });
                let expected = (0..SUM_N).fold(0u64, |s, x| s.wrapping_add(x.wrapping_mul(x)));
                assert_eq!(sum, expected);
                t
            }),
        ),
        (
            "map+collect 10M",
            Box::new(|p: &Pools, ebb: bool| {
                let (t, v) = p.time(ebb, || {
                    if ebb {
                        on_ebbtide::map_collect(COLLECT_N)
                    } else {
                        on_rayon::map_collect(COLLECT_N)
                    }
                });
                assert_eq!(v.len(), COLLECT_N as usize);
                assert_eq!(v[12345], 12345u64.wrapping_mul(0x9E37_79B9) >> 7);
                t
            }),
        ),
        (
            "sort_unstable 10M",
            Box::new(move |p: &Pools, ebb: bool| {
                let mut v = input.to_vec();
                let (t, ()) = p.time(ebb, || {
                    if ebb {
                        on_ebbtide::sort_unstable(&mut v)
                    } else {
                        on_rayon::sort_unstable(&mut v)
                    }
                });
                assert!(v.windows(2).all(|w| w[0] <= w[1]));
                t
            }),
        ),
        (
            "sort (stable) 10M",
            Box::new(move |p: &Pools, ebb: bool| {
                let mut v = input.to_vec();
                let (t, ()) = p.time(ebb, || {
                    if ebb {
                        on_ebbtide::sort_stable(&mut v)
                    } else {
                        on_rayon::sort_stable(&mut v)
                    }
                });
                assert!(v.windows(2).all(|w| w[0] <= w[1]));
                t
            }),
        ),
        (
            "mandelbrot rows",
            Box::new(|p: &Pools, ebb: bool| {
                let mut image = vec![0u32; MANDEL_W * MANDEL_H];
                let (t, ()) = p.time(ebb, || {
                    if ebb {
                        on_ebbtide::mandelbrot(&mut image)
                    } else {
                        on_rayon::mandelbrot(&mut image)
                    }
                });
                let centre = MANDEL_H / 2 * MANDEL_W + MANDEL_W / 2;
                assert_eq!(image[centre], common::par::MANDEL_ITER);
                t
            }),
        ),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rounds: usize = args
        .first()
        .map(|a| a.parse().expect("ROUNDS is a number"))
        .unwrap_or(11);
    let only = args.get(1).cloned();
    let pools = Pools {
        ebbtide: ebbtide::Pool::builder().workers(WORKERS).build().unwrap(),
        rayon: rayon::ThreadPoolBuilder::new()
            .num_threads(WORKERS)
            .build()
            .unwrap(),
    };
    let input = random_u64s(SORT_N);
    let mut loads = workloads(&input);
    if let Some(only) = &only {
        loads.retain(|(name, _)| name.contains(only.as_str()));
    }
    let mut times: Vec<[Vec<Duration>; 2]> =
        loads.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    for round in 0..rounds {
        for (i, (_, run)) in loads.iter().enumerate() {
            // Which pool goes first alternates by round.
            for ebb in [round % 2 == 0, round % 2 != 0] {
                times[i][usize::from(!ebb)].push(run(&pools, ebb));
            }
        }
        eprint!(".");
    }
    eprintln!();
    println!("{rounds} interleaved rounds, {WORKERS} workers each; median ms (min–max)");
    println!(
        "{:<22} {:>24} {:>24} {:>8}",
        "workload", "ebbtide", "rayon", "ratio"
    );
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    for ((name, _), [e, r]) in loads.iter().zip(times) {
        let lo = |v: &[Duration]| v.iter().map(ms).fold(f64::MAX, f64::min);
        let hi = |v: &[Duration]| v.iter().map(ms).fold(0.0, f64::max);
        let (el, eh, rl, rh) = (lo(&e), hi(&e), lo(&r), hi(&r));
        let (em, rm) = (ms(&median(e)), ms(&median(r)));
        println!(
            "{name:<22} {em:>8.1} ({el:>6.1}–{eh:>6.1}) {rm:>8.1} ({rl:>6.1}–{rh:>6.1}) {:>7.2}×",
            em / rm
        );
    }
}
