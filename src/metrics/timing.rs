//! Per-worker task timing: the queue-wait and run-time histograms, sampled.
//!
//! Bucketing a span costs about twenty instructions, as much as the rest
//! of a tiny task's bookkeeping; two per task were a fifth of the spawn
//! path. So a worker counts every task it times exactly, and records both
//! spans of a task (its queue wait and its run time):
//!
//! - with weight 1, for a task that ran [`LONG`] ticks or more (the cost
//!   is nothing beside the run), and for each of the worker's first
//!   [`WARM_UP`] tasks, so that small runs are exact;
//! - after that, for the shorter tasks, on one task in [`SAMPLE_EVERY`]
//!   (every `SAMPLE_EVERY`-th timed task), with weight `SAMPLE_EVERY`.
//!
//! Every task's spans are thus recorded with expected weight 1: the
//! weighted buckets and sums estimate the full ones without bias, and the
//! exact count scales them in the snapshot (`Histogram::sampled`). The
//! rule looks at the run only: a long queue wait is no work of the
//! worker's (in a backlog every wait is long), so it is sampled like any
//! other. The hot path is a countdown to the next sample and one
//! comparison; the exact count is derived from the countdown.

use super::histogram::AtomicHistogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Tasks that ran this long (in ticks: 5–8 µs of a 2–3.5 GHz time-stamp
/// counter, 16 µs of a nanosecond clock) or longer are always recorded.
pub(crate) const LONG: u64 = 1 << 14;

/// Tasks per worker recorded in full before sampling starts.
pub(crate) const WARM_UP: u64 = 1024;

/// One short span recorded in this many, past the warm-up. (16 cost
/// about three instructions a task more in the slow path's bucketing; a
/// million tiny tasks still leave some 15,000 samples per worker.)
pub(crate) const SAMPLE_EVERY: u64 = 64;

/// One worker's task timing. Single writer (the owning worker): relaxed
/// loads and stores suffice, readers tolerate momentarily stale figures.
pub(crate) struct TaskTiming {
    /// Accepted → started, of the tasks this worker started.
    pub(crate) queue_wait: AtomicHistogram,
    /// Started → finished, of the tasks this worker ran.
    pub(crate) run_time: AtomicHistogram,
    /// Tasks left until the next sample, counting the sample.
    left: AtomicU64,
    /// Tasks timed up to the last sample, exactly.
    through: AtomicU64,
}

impl Default for TaskTiming {
    fn default() -> Self {
        TaskTiming {
            queue_wait: AtomicHistogram::default(),
            run_time: AtomicHistogram::default(),
            left: AtomicU64::new(period(0)),
            through: AtomicU64::new(0),
        }
    }
}

/// Tasks from one sample to the next once `through` tasks are counted:
/// every task during the warm-up, then one in `SAMPLE_EVERY` (the warm-up
/// is a multiple of it, so the samples fall on its multiples).
fn period(through: u64) -> u64 {
    if through < WARM_UP {
        1
    } else {
        SAMPLE_EVERY
    }
}

impl TaskTiming {
    /// Times one task: its queue wait and its run time, in ticks. (`run`
    /// may be a wrapped difference, from a clock that stepped back: it
    /// takes the slow path, which records it as 0.)
    ///
    /// The wait is `start − enqueued`, worked out only for a recorded
    /// task (the caller's stamp is read only on that path, too).
    #[inline(always)]
    pub(crate) fn record(&self, start: u64, enqueued: impl FnOnce() -> u64, run: u64) {
        let left = self.left.load(Relaxed).wrapping_sub(1);
        self.left.store(left, Relaxed);
        if left == 0 || run >= LONG {
            self.record_slow(left, start.saturating_sub(enqueued()), run);
        }
    }

    /// A long task, or a sample (`left` is 0).
    #[inline(never)]
    fn record_slow(&self, left: u64, wait: u64, run: u64) {
        let through = self.through.load(Relaxed);
        let mut weight = 1;
        if left == 0 {
            // A sample: the tasks since the last one are counted.
            let period = period(through);
            let through = through + period;
            self.through.store(through, Relaxed);
            self.left.store(self::period(through), Relaxed);
            if run < LONG {
                weight = period;
            }
        }
        let run = if run > u64::MAX / 2 { 0 } else { run };
        self.queue_wait.record_weighted(wait, weight);
        self.run_time.record_weighted(run, weight);
    }

    /// Tasks timed (exact when the worker is between tasks; a reading
    /// taken while it records may be off by the tasks since its last
    /// sample, for that moment).
    pub(crate) fn timed(&self) -> u64 {
        let left = self.left.load(Relaxed);
        let through = self.through.load(Relaxed);
        (through + period(through)).saturating_sub(left)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::metrics::Histogram;
    use std::time::Duration;

    fn snapshot(t: &TaskTiming) -> (Histogram, Histogram) {
        let count = t.timed();
        (
            Histogram::sampled(std::iter::once(&t.queue_wait), count, 1.0),
            Histogram::sampled(std::iter::once(&t.run_time), count, 1.0),
        )
    }

    #[test]
    fn the_warm_up_is_recorded_in_full() {
        let t = TaskTiming::default();
        for i in 0..WARM_UP {
            t.record(i, || 0, 2 * i);
        }
        let (wait, run) = snapshot(&t);
        assert_eq!((wait.count(), run.count()), (WARM_UP, WARM_UP));
        let sum: u64 = (0..WARM_UP).sum();
        assert_eq!(wait.sum(), Duration::from_nanos(sum));
        assert_eq!(run.sum(), Duration::from_nanos(2 * sum));
        assert_eq!(run.octave_buckets().last().unwrap().1, WARM_UP);
    }

    #[test]
    fn past_the_warm_up_short_spans_are_sampled_with_their_weight() {
        let t = TaskTiming::default();
        let n = WARM_UP + 100 * SAMPLE_EVERY;
        for _ in 0..n {
            t.record(500, || 0, 700);
        }
        // One record per SAMPLE_EVERY tasks after the warm-up, weighted:
        // the weights add up to the count exactly here.
        let (wait, run) = snapshot(&t);
        assert_eq!(wait.count(), n);
        assert_eq!(run.count(), n);
        assert_eq!(wait.sum(), Duration::from_nanos(500 * n));
        assert_eq!(run.sum(), Duration::from_nanos(700 * n));
        assert_eq!(run.octave_buckets().last().unwrap().1, n);
        // Seven more tasks: counted, not yet recorded; the figures scale.
        for _ in 0..7 {
            t.record(500, || 0, 700);
        }
        let (_, run) = snapshot(&t);
        assert_eq!(run.count(), n + 7);
        assert_eq!(run.sum(), Duration::from_nanos(700 * (n + 7)));
        assert_eq!(run.octave_buckets().last().unwrap().1, n + 7);
    }

    #[test]
    fn long_tasks_are_always_recorded_once() {
        let t = TaskTiming::default();
        for _ in 0..WARM_UP {
            t.record(0, || 0, 0);
        }
        // Past the warm-up: every run long, every wait short; then every
        // wait long, every run short.
        let n = 10 * SAMPLE_EVERY;
        for i in 0..n {
            t.record(100, || 0, LONG + i);
        }
        let (wait, run) = snapshot(&t);
        let long: u64 = (0..n).map(|i| LONG + i).sum();
        assert_eq!(run.count(), WARM_UP + n);
        assert_eq!(run.sum(), Duration::from_nanos(long));
        assert_eq!(run.octave_buckets().last().unwrap().1, WARM_UP + n);
        assert_eq!(wait.sum(), Duration::from_nanos(100 * n));
        for _ in 0..n {
            t.record(LONG, || 0, 100);
        }
        // The waits of short tasks: 10 samples of weight SAMPLE_EVERY.
        let (wait, run) = snapshot(&t);
        assert_eq!(wait.count(), WARM_UP + 2 * n);
        assert_eq!(wait.sum(), Duration::from_nanos(100 * n + LONG * n));
        assert_eq!(run.sum(), Duration::from_nanos(long + 100 * n));
        assert_eq!(wait.max(), bucket_mid(LONG));
        assert_eq!(run.p50(), bucket_mid(0));
    }

    /// The midpoint of the bucket holding `ns`, as quantiles report it.
    fn bucket_mid(ns: u64) -> Duration {
        let h = AtomicHistogram::default();
        h.record(ns);
        Histogram::sum_of(std::iter::once(&h), 1.0).max()
    }
}
