//! Data-parallel loops, ebbtide's `par` against rayon, 2 workers each, in
//! the same process: each round runs every workload on both pools (which
//! goes first alternates), and the median over rounds is reported with the
//! ratio ebbtide / rayon.
//!
//! ```text
//! cargo bench --bench par            # 11 rounds
//! cargo bench --bench par -- 21      # 21 rounds
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("ROUNDS is a number"))
        .unwrap_or(11);
    let pools = Pools {
        ebbtide: ebbtide::Pool::builder().workers(WORKERS).build().unwrap(),
        rayon: rayon::ThreadPoolBuilder::new()
            .num_threads(WORKERS)
            .build()
            .unwrap(),
    };
    let input = random_u64s(SORT_N);
    let names = [
        "sum of squares 100M",
        "map+collect 10M",
        "sort_unstable 10M",
        "sort (stable) 10M",
        "mandelbrot rows",
    ];
    let mut times: Vec<[Vec<Duration>; 2]> =
        names.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    for round in 0..rounds {
        for first_ebb in [round % 2 == 0] {
            for side in [first_ebb, !first_ebb] {
                let i = usize::from(!side); // 0 = ebbtide, 1 = rayon
                let (t, a) = pools.time(side, || {
                    if side {
                        on_ebbtide::sum_squares(SUM_N, black_box(0))
                    } else {
                        on_rayon::sum_squares(SUM_N, black_box(0))
                    }
                });
                assert_eq!(
                    a,
                    (0..SUM_N)
                        .map(|x| x.wrapping_mul(x))
                        .fold(0u64, u64::wrapping_add)
                );
                times[0][i].push(t);

                let (t, v) = pools.time(side, || {
                    if side {
                        on_ebbtide::map_collect(COLLECT_N)
                    } else {
                        on_rayon::map_collect(COLLECT_N)
                    }
                });
                assert_eq!(v.len(), COLLECT_N as usize);
                assert_eq!(v[12345], 12345u64.wrapping_mul(0x9E37_79B9) >> 7);
                times[1][i].push(t);
                drop(v);

                let mut v = input.clone();
                let (t, ()) = pools.time(side, || {
                    if side {
                        on_ebbtide::sort_unstable(&mut v)
                    } else {
                        on_rayon::sort_unstable(&mut v)
                    }
                });
                assert!(v.windows(2).all(|w| w[0] <= w[1]));
                times[2][i].push(t);

                v.copy_from_slice(&input);
                let (t, ()) = pools.time(side, || {
                    if side {
                        on_ebbtide::sort_stable(&mut v)
                    } else {
                        on_rayon::sort_stable(&mut v)
                    }
                });
                assert!(v.windows(2).all(|w| w[0] <= w[1]));
                times[3][i].push(t);
                drop(v);

                let mut image = vec![0u32; MANDEL_W * MANDEL_H];
                let (t, ()) = pools.time(side, || {
                    if side {
                        on_ebbtide::mandelbrot(&mut image)
                    } else {
                        on_rayon::mandelbrot(&mut image)
                    }
                });
                assert_eq!(
                    image[MANDEL_H / 2 * MANDEL_W + MANDEL_W / 2],
                    common::par::MANDEL_ITER
                );
                times[4][i].push(t);
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
    for (name, [e, r]) in names.iter().zip(times) {
        let span = |v: &[Duration]| {
            let ms = |d: &Duration| d.as_secs_f64() * 1e3;
            let lo = v.iter().map(ms).fold(f64::MAX, f64::min);
            let hi = v.iter().map(ms).fold(0.0, f64::max);
            (lo, hi)
        };
        let (el, eh) = span(&e);
        let (rl, rh) = span(&r);
        let (em, rm) = (median(e), median(r));
        println!(
            "{:<22} {:>8.1} ({:>6.1}–{:>6.1}) {:>8.1} ({:>6.1}–{:>6.1}) {:>7.2}×",
            name,
            em.as_secs_f64() * 1e3,
            el,
            eh,
            rm.as_secs_f64() * 1e3,
            rl,
            rh,
            em.as_secs_f64() / rm.as_secs_f64()
        );
    }
}
