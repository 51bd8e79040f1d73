//! The data-parallel workloads, written once for ebbtide's `par` loops and
//! once for rayon's parallel iterators (the same code; only the traits in
//! scope differ): sum of squares over a range, map + collect, unstable and
//! stable sorts of random `u64`s, and Mandelbrot rows (uneven work).

/// Image size and iteration cap of the Mandelbrot workload.
pub const MANDEL_W: usize = 1024;
pub const MANDEL_H: usize = 768;
pub const MANDEL_ITER: u32 = 500;

/// The escape-time iterations of each pixel of row `y` (rows through the
/// set cost up to `MANDEL_ITER` per pixel, rows far from it a few).
#[inline]
pub fn mandel_row(row: &mut [u32], y: usize) {
    let ci = -1.25 + 2.5 * y as f64 / MANDEL_H as f64;
    for (x, out) in row.iter_mut().enumerate() {
        let cr = -2.25 + 3.0 * x as f64 / MANDEL_W as f64;
        let (mut zr, mut zi, mut i) = (0.0f64, 0.0f64, 0);
        while i < MANDEL_ITER && zr * zr + zi * zi <= 4.0 {
            let t = zr * zr - zi * zi + cr;
            zi = 2.0 * zr * zi + ci;
            zr = t;
            i += 1;
        }
        *out = i;
    }
}

/// `n` pseudo-random `u64`s, the same for every pool and run.
pub fn random_u64s(n: usize) -> Vec<u64> {
    super::workloads::random_vec(n, 0x2545_F491_4F6C_DD1D)
}

macro_rules! par_workloads {
    ($name:ident, [$($prelude:tt)*], $into:ident) => {
        pub mod $name {
            use $($prelude)*::*;

            /// `salt` is 0, passed through `black_box` by the caller:
            /// without it the compiler replaces the loop by its closed
            /// form and nothing is left to measure.
            pub fn sum_squares(n: u64, salt: u64) -> u64 {
                (0..n).$into().map(|x| {
                    let y = x ^ salt;
                    y.wrapping_mul(y)
                }).sum()
            }

            pub fn map_collect(n: u64) -> Vec<u64> {
                (0..n).$into().map(|x| x.wrapping_mul(0x9E37_79B9) >> 7).collect()
            }

            pub fn sort_unstable(v: &mut [u64]) {
                v.par_sort_unstable();
            }

            pub fn sort_stable(v: &mut [u64]) {
                v.par_sort();
            }

            pub fn mandelbrot(image: &mut [u32]) {
                image
                    .par_chunks_mut(super::MANDEL_W)
                    .enumerate()
                    .for_each(|(y, row)| super::mandel_row(row, y));
            }
        }
    };
}

par_workloads!(on_ebbtide, [ebbtide::par::prelude], into_par);
par_workloads!(on_rayon, [rayon::prelude], into_par_iter);
