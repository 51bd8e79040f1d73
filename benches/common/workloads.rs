//! The workloads shared by the benchmarks and the tests, written once:
//! fib and quicksort over any `join` (so each pool runs the identical
//! algorithm), a random vector, and a CPU spin of a given length.

#![allow(dead_code, unused_macros)]

use std::time::{Duration, Instant};

/// `fn $name(n: u32) -> u64`: fib(n) with a `$join` at every node (no
/// sequential cut-off).
macro_rules! fib {
    ($name:ident, $join:path) => {
        fn $name(n: u32) -> u64 {
            if n < 2 {
                return n as u64;
            }
            let (a, b) = $join(|| $name(n - 1), || $name(n - 2));
            a + b
        }
    };
}
#[allow(unused_imports)]
pub(crate) use fib;

/// `fn $name(v: &mut [u64])`: quicksort that sorts runs of at most
/// `$cutoff` sequentially and recurses through `$join`.
macro_rules! quicksort {
    ($name:ident, $join:path, $cutoff:expr) => {
        fn $name(v: &mut [u64]) {
            if v.len() <= $cutoff {
                v.sort_unstable();
                return;
            }
            let (lt, gt) = $crate::common::workloads::partition(v);
            let (left, rest) = v.split_at_mut(lt);
            let right = &mut rest[gt - lt..];
            $join(|| $name(left), || $name(right));
        }
    };
}
#[allow(unused_imports)]
pub(crate) use quicksort;

/// Three-way partition around the middle element: `v[..lt] < pivot`,
/// `v[lt..gt] == pivot`, `v[gt..] > pivot`.
pub fn partition(v: &mut [u64]) -> (usize, usize) {
    let pivot = v[v.len() / 2];
    let (mut lt, mut i, mut gt) = (0, 0, v.len());
    while i < gt {
        if v[i] < pivot {
            v.swap(lt, i);
            lt += 1;
            i += 1;
        } else if v[i] > pivot {
            gt -= 1;
            v.swap(i, gt);
        } else {
            i += 1;
        }
    }
    (lt, gt)
}

/// `n` pseudo-random values (xorshift from `seed`, non-zero), the same on
/// every run.
pub fn random_vec(n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect()
}

/// Keeps a CPU busy for `d`.
pub fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}
