//! Log-linear (HDR-style) histograms of durations, recorded in clock ticks.
//!
//! Buckets: an underflow bucket below 2^10 ticks, then 30 octaves
//! [2^k, 2^(k+1)) for k = 10..40, each split into 16 equal sub-buckets, then
//! an overflow bucket. At 1–3.5 GHz tick rates that spans below 1 µs to
//! beyond 300 s. A value is reported as the midpoint of its sub-bucket, so
//! the relative error of any quantile is at most 1/32 (3.1 %).
//!
//! Each worker records into its own [`AtomicHistogram`] (single writer:
//! relaxed load + store, no locked instruction); a snapshot sums them.
//!
//! A record may carry a weight: a sampled record stands for that many
//! durations (`metrics/timing.rs`). Buckets and the sum then hold
//! weighted figures, and the snapshot's exact count, kept apart, scales
//! them: quantiles are ranks over the weights, and the sum and the
//! cumulative buckets are scaled to the count.

use super::clock::Calibration;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
const LOW_BITS: u32 = 10;
const OCTAVES: usize = 30;
/// Number of buckets: underflow, 30 × 16, overflow.
pub(crate) const BUCKETS: usize = 1 + OCTAVES * SUB + 1;

/// The bucket of a tick span.
#[inline]
pub(crate) fn bucket_of(span: u64) -> usize {
    if span < (1 << LOW_BITS) {
        return 0;
    }
    let msb = 63 - span.leading_zeros();
    let octave = (msb - LOW_BITS) as usize;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let sub = ((span >> (msb - SUB_BITS)) as usize) & (SUB - 1);
    1 + octave * SUB + sub
}

/// The tick range `[low, high)` of a bucket (`high` of overflow is MAX).
pub(crate) fn bucket_range(index: usize) -> (u64, u64) {
    if index == 0 {
        return (0, 1 << LOW_BITS);
    }
    if index >= BUCKETS - 1 {
        return (1 << (LOW_BITS as usize + OCTAVES), u64::MAX);
    }
    let octave = (index - 1) / SUB;
    let sub = ((index - 1) % SUB) as u64;
    let base = 1u64 << (LOW_BITS as usize + octave);
    let width = base >> SUB_BITS;
    (base + sub * width, base + (sub + 1) * width)
}

/// One worker's histogram.
pub(crate) struct AtomicHistogram {
    // Inline, not boxed: a record is one address computation from `self`.
    buckets: [AtomicU64; BUCKETS],
    sum: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Records a span. Single writer (the owning worker): relaxed load and
    /// store suffice; readers tolerate a momentarily stale count.
    #[inline]
    pub(crate) fn record(&self, span: u64) {
        self.record_weighted(span, 1);
    }

    /// Records a span standing for `weight` spans like it (a sample).
    #[inline]
    pub(crate) fn record_weighted(&self, span: u64, weight: u64) {
        let b = &self.buckets[bucket_of(span)];
        b.store(b.load(Relaxed) + weight, Relaxed);
        self.sum.store(
            self.sum
                .load(Relaxed)
                .wrapping_add(span.wrapping_mul(weight)),
            Relaxed,
        );
    }

    /// The sum of the recorded spans, in ticks (relaxed: a recent value).
    #[inline]
    pub(crate) fn sum_ticks(&self) -> u64 {
        self.sum.load(Relaxed)
    }

    /// The total weight recorded (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn weight(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Adds this histogram's counts into `counts` and returns its sum.
    fn add_into(&self, counts: &mut [u64]) -> u64 {
        for (c, b) in counts.iter_mut().zip(self.buckets.iter()) {
            *c += b.load(Relaxed);
        }
        self.sum.load(Relaxed)
    }
}

/// Serialized as its summary and its buckets: `count`, `sum`, `mean`,
/// `p50`, `p90`, `p99`, `p999`, `max` (durations) and `buckets` (as
/// [`octave_buckets`](Histogram::octave_buckets): cumulative counts at each
/// octave's upper bound).
#[cfg(feature = "serde")]
impl serde::Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Histogram", 9)?;
        s.serialize_field("count", &self.count())?;
        s.serialize_field("sum", &self.sum())?;
        s.serialize_field("mean", &self.mean())?;
        s.serialize_field("p50", &self.p50())?;
        s.serialize_field("p90", &self.p90())?;
        s.serialize_field("p99", &self.p99())?;
        s.serialize_field("p999", &self.p999())?;
        s.serialize_field("max", &self.max())?;
        s.serialize_field("buckets", &self.octave_buckets())?;
        s.end()
    }
}

/// A snapshot of a duration histogram (queue wait or run time).
///
/// The pool's task histograms sample. Under the default metrics both
/// spans of a task are recorded for the pool's first 1,024 submissions,
/// then for one submission in 64, standing for all 64; a run of 2^14
/// ticks or more (5–8 µs of the time-stamp counter) is always recorded.
/// (With a manual clock, the stall watchdog or histograms without worker
/// states, the sample is each worker's first 1,024 tasks, then one short
/// task in 64, long runs always.)
/// [`count`](Self::count) is exact; the quantiles, the sum and the
/// buckets are then unbiased estimates, exact for the long tasks' run
/// times and for small runs (see `design/metrics.md`).
#[derive(Clone)]
pub struct Histogram {
    /// Weighted bucket counts.
    counts: Box<[u64]>,
    /// Weighted sum, in ticks.
    sum_ticks: u64,
    /// The exact number of durations the buckets stand for.
    count: u64,
    ns_per_tick: f64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .field("p50", &self.p50())
            .field("p99", &self.p99())
            .field("max", &self.max())
            .finish()
    }
}

impl Histogram {
    pub(crate) fn sum_of<'a>(
        parts: impl Iterator<Item = &'a AtomicHistogram>,
        ns_per_tick: f64,
    ) -> Histogram {
        let mut counts = vec![0u64; BUCKETS].into_boxed_slice();
        let mut sum_ticks = 0u64;
        for part in parts {
            sum_ticks = sum_ticks.wrapping_add(part.add_into(&mut counts));
        }
        Histogram {
            count: counts.iter().sum(),
            counts,
            sum_ticks,
            ns_per_tick,
        }
    }

    /// A sum of sampled parts, standing for `count` durations in all.
    pub(crate) fn sampled<'a>(
        parts: impl Iterator<Item = &'a AtomicHistogram>,
        count: u64,
        ns_per_tick: f64,
    ) -> Histogram {
        Histogram {
            count,
            ..Histogram::sum_of(parts, ns_per_tick)
        }
    }

    /// The total weight of the buckets.
    fn weight(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Scales a weighted figure to the exact count.
    fn scale(&self, weighted: u64) -> u64 {
        match self.weight() {
            0 => 0,
            w if w == self.count => weighted,
            w => (u128::from(weighted) * u128::from(self.count) / u128::from(w)) as u64,
        }
    }

    /// Records a span in nanoseconds (a histogram made by `empty`, which
    /// counts nanoseconds).
    pub(crate) fn record_ns(&mut self, ns: u64) {
        self.counts[bucket_of(ns)] += 1;
        self.sum_ticks = self.sum_ticks.wrapping_add(ns);
        self.count += 1;
    }

    /// Adds `other`'s counts into this one (both in nanoseconds).
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_ticks = self.sum_ticks.wrapping_add(other.sum_ticks);
        self.count += other.count;
    }

    /// An empty histogram (histograms switched off).
    pub(crate) fn empty() -> Histogram {
        Histogram {
            counts: vec![0u64; BUCKETS].into_boxed_slice(),
            sum_ticks: 0,
            count: 0,
            ns_per_tick: 1.0,
        }
    }

    /// How many durations were recorded (exact, sampled or not).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of all recorded durations (for a sampled histogram, the
    /// samples' weighted sum scaled to the count).
    pub fn sum(&self) -> Duration {
        let ticks = match self.weight() {
            0 => 0,
            w if w == self.count => self.sum_ticks,
            w => (self.sum_ticks as f64 * self.count as f64 / w as f64) as u64,
        };
        Calibration::to_duration(ticks, self.ns_per_tick)
    }

    /// The mean duration (zero when empty).
    pub fn mean(&self) -> Duration {
        match self.count() {
            0 => Duration::ZERO,
            n => Duration::from_nanos((self.sum().as_nanos() / u128::from(n)) as u64),
        }
    }

    /// The `q`-quantile (`0.0..=1.0`), as the midpoint of the bucket that
    /// holds it (relative error ≤ 3.1 %); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.weight();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, high) = bucket_range(i);
                let mid = if high == u64::MAX {
                    low
                } else {
                    low + (high - low) / 2
                };
                return Calibration::to_duration(mid, self.ns_per_tick);
            }
        }
        Duration::ZERO
    }

    /// The median.
    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    /// The 90th percentile.
    pub fn p90(&self) -> Duration {
        self.quantile(0.9)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// The 99.9th percentile.
    pub fn p999(&self) -> Duration {
        self.quantile(0.999)
    }

    /// The largest recorded duration's bucket midpoint.
    pub fn max(&self) -> Duration {
        self.quantile(1.0)
    }

    /// Cumulative counts at octave boundaries: `(upper bound, count of
    /// durations ≤ bound)`, ascending, ending below the overflow bucket;
    /// what the Prometheus export prints as `le` buckets. (Sampled, the
    /// weighted counts scaled to [`count`](Self::count).)
    pub fn octave_buckets(&self) -> Vec<(Duration, u64)> {
        let mut out = Vec::with_capacity(OCTAVES + 1);
        let mut cumulative = self.counts[0];
        out.push((
            Calibration::to_duration(1 << LOW_BITS, self.ns_per_tick),
            self.scale(cumulative),
        ));
        for octave in 0..OCTAVES {
            for sub in 0..SUB {
                cumulative += self.counts[1 + octave * SUB + sub];
            }
            let bound = 1u64 << (LOW_BITS as usize + octave + 1);
            out.push((
                Calibration::to_duration(bound, self.ns_per_tick),
                self.scale(cumulative),
            ));
        }
        out
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn within(actual: Duration, expected_ns: f64) -> bool {
        (actual.as_nanos() as f64 - expected_ns).abs() <= expected_ns / 32.0 + 1.0
    }

    #[test]
    fn quantiles_of_known_values_are_within_bucket_error() {
        let h = AtomicHistogram::default();
        for _ in 0..990 {
            h.record(10_000);
        }
        for _ in 0..9 {
            h.record(1_000_000);
        }
        h.record(300_000_000);
        // One tick per nanosecond.
        let snap = Histogram::sum_of(std::iter::once(&h), 1.0);
        assert_eq!(snap.count(), 1000);
        assert_eq!(
            snap.sum(),
            Duration::from_nanos(990 * 10_000 + 9 * 1_000_000 + 300_000_000)
        );
        assert!(within(snap.p50(), 10_000.0), "{:?}", snap.p50());
        assert!(within(snap.p90(), 10_000.0));
        // Rank 990 of 1000 is still the last 10 µs value; rank 999 is 1 ms.
        assert!(within(snap.p99(), 10_000.0), "{:?}", snap.p99());
        assert!(within(snap.quantile(0.991), 1_000_000.0));
        assert!(within(snap.p999(), 1_000_000.0), "{:?}", snap.p999());
        assert!(within(snap.max(), 300_000_000.0), "{:?}", snap.max());
        let buckets = snap.octave_buckets();
        assert_eq!(buckets.last().unwrap().1, 1000);
        assert!(buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let mut expected_low = 0;
        for i in 0..BUCKETS - 1 {
            let (low, high) = bucket_range(i);
            assert_eq!(low, expected_low, "bucket {i}");
            assert!(high > low);
            assert_eq!(bucket_of(low), i);
            assert_eq!(bucket_of(high - 1), i);
            expected_low = high;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn the_midpoint_is_within_a_thirty_second_of_any_value_in_its_bucket() {
        for i in 1..BUCKETS - 1 {
            let (low, high) = bucket_range(i);
            let mid = low + (high - low) / 2;
            for v in [low, high - 1] {
                let err = (mid as f64 - v as f64).abs() / v as f64;
                assert!(err <= 1.0 / 32.0 + 1e-9, "bucket {i}: {v} vs {mid}: {err}");
            }
        }
    }
}
