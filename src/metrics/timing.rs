//! Per-worker task timing: the queue-wait and run-time histograms, sampled.
//!
//! Bucketing a span costs about twenty instructions, as much as the rest
//! of a tiny task's bookkeeping; two per task were a fifth of the spawn
//! path. So the spans of a task (its queue wait and its run time) are
//! recorded:
//!
//! - with weight 1, for a task that ran [`LONG`] ticks or more (the cost
//!   is nothing beside the run), and for each of the first [`WARM_UP`]
//!   tasks, so that small runs are exact;
//! - after that, for the shorter tasks, on one task in [`SAMPLE_EVERY`],
//!   with weight `SAMPLE_EVERY`.
//!
//! Every task's spans are thus recorded with expected weight 1: the
//! weighted buckets and sums estimate the full ones without bias, and the
//! exact count of tasks timed (the worker's `started` counter, less the
//! starts it did not time: [`TaskTiming::timed`]) scales them in the
//! snapshot (`Histogram::sampled`). The rule looks at the run only: a
//! long queue wait is no work of the worker's (in a backlog every wait is
//! long), so it is sampled like any other.
//!
//! Under the default metrics the sample is drawn at submission
//! ([`Stamps`]): reading the tick counter took the submitting thread tens
//! of cycles a task, most of what the metrics cost a pool fed by one
//! thread. The pool's first `WARM_UP` submissions are stamped, then one in
//! `SAMPLE_EVERY`, with the weight in the stamp's low bit; the worker
//! records both spans of a task that carries a stamp, with its weight,
//! and the run of any long task with weight 1
//! ([`TaskTiming::record_stamped`]): one comparison a task, no count of
//! its own. Which submission is stamped does not depend on how long its
//! task runs, so the sample stays unbiased. Other configurations (a
//! manual clock, the stall watchdog, histograms without worker states)
//! stamp every task; a worker's countdown picks the sample there
//! ([`TaskTiming::record`]).

use super::histogram::AtomicHistogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Tasks that ran this long (in ticks: 5–8 µs of a 2–3.5 GHz time-stamp
/// counter, 16 µs of a nanosecond clock) or longer are always recorded.
pub(crate) const LONG: u64 = 1 << 14;

/// Tasks recorded in full before sampling starts: each worker's first
/// (`TaskTiming::record`), or the pool's first submissions (`Stamps`).
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
    /// Tasks left until the next sample, counting the sample
    /// (`record`'s countdown).
    left: AtomicU64,
    /// Tasks counted down up to the last sample.
    through: AtomicU64,
    /// Starts on this worker's slot that were not timed (install jobs,
    /// tasks it ran as a caller).
    untimed: AtomicU64,
}

impl Default for TaskTiming {
    fn default() -> Self {
        TaskTiming {
            queue_wait: AtomicHistogram::default(),
            run_time: AtomicHistogram::default(),
            left: AtomicU64::new(period(0)),
            through: AtomicU64::new(0),
            untimed: AtomicU64::new(0),
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
        let weight = self.count_sample(left, run);
        let run = if run > u64::MAX / 2 { 0 } else { run };
        self.queue_wait.record_weighted(wait, weight);
        self.run_time.record_weighted(run, weight);
    }

    /// Times one task under the default metrics, where submissions are
    /// stamped one in `SAMPLE_EVERY` (see [`Stamps`]): both spans of a
    /// task that carries a stamp, with the stamp's weight; the run of a
    /// long task, with weight 1. A stamp is a tick count, never below
    /// `LONG` (the clock's counts are far above it), so one test covers a
    /// long run and a stamped task.
    #[inline(always)]
    pub(crate) fn record_stamped(&self, start: u64, stamp: u64, run: u64) {
        // A sum, not an `|`: one `lea` where the `|` took a copy first. (A
        // stamp with a wrapped run may wrap below `LONG`: one sample
        // lost, the snapshot scales.)
        if run.wrapping_add(stamp) >= LONG {
            self.record_stamped_slow(start, stamp, run);
        }
    }

    /// A stamped task or a long one.
    #[inline(never)]
    fn record_stamped_slow(&self, start: u64, stamp: u64, run: u64) {
        let long = run >= LONG;
        // A wrapped difference (a clock that stepped back) counts as 0.
        let run = if run > u64::MAX / 2 { 0 } else { run };
        if stamp != 0 {
            let (at, weight) = stamp_parts(stamp);
            self.queue_wait
                .record_weighted(start.saturating_sub(at), weight);
            if !long {
                self.run_time.record_weighted(run, weight);
            }
        }
        if long {
            self.run_time.record_weighted(run, 1);
        }
    }

    /// Counts a start on this worker's slot that is not timed (an install
    /// job, a task run as a caller on this worker's thread). Called by the
    /// worker's own thread only.
    pub(crate) fn note_untimed(&self) {
        self.untimed.store(self.untimed.load(Relaxed) + 1, Relaxed);
    }

    /// Tasks timed, of the `started` this worker's slot counts (exact when
    /// the worker is between tasks; a task started and not yet recorded
    /// counts already).
    pub(crate) fn timed(&self, started: u64) -> u64 {
        started.saturating_sub(self.untimed.load(Relaxed))
    }

    /// The weight of a recorded run: at a sample (`left` is 0), the tasks
    /// since the last one are counted and the countdown restarts.
    fn count_sample(&self, left: u64, run: u64) -> u64 {
        if left != 0 {
            return 1;
        }
        let through = self.through.load(Relaxed);
        let period = period(through);
        let through = through + period;
        self.through.store(through, Relaxed);
        self.left.store(self::period(through), Relaxed);
        if run < LONG {
            period
        } else {
            1
        }
    }
}

/// The low bit of a stamp taken one in `SAMPLE_EVERY`: its queue wait
/// weighs `SAMPLE_EVERY`. (A stamp without it weighs 1; its tick count
/// loses nothing that matters in its lowest bit.)
pub(crate) const SPARSE: u64 = 1;

/// A stamp's tick and weight.
fn stamp_parts(stamp: u64) -> (u64, u64) {
    if stamp & SPARSE != 0 {
        (stamp & !SPARSE, SAMPLE_EVERY)
    } else {
        (stamp, 1)
    }
}

/// A pool's submissions under the default metrics, counted down to the
/// next stamped one: every one of the first `WARM_UP`, then one in
/// `SAMPLE_EVERY`. Reading the tick counter costs the submitting thread
/// tens of cycles, most of what the default metrics cost a pool fed by one
/// thread; a stamp on one submission in 64 estimates the queue waits
/// without bias (the workers weigh each by its period).
///
/// It sits beside the admission word, on the line every submission
/// writes anyway. Relaxed loads and stores, not read-modify-writes:
/// submitters racing may lose a count or stamp twice, which moves a
/// sample, not a task (the snapshot scales the weights to the exact
/// count).
///
/// A pool that needs every submission stamped (a manual clock, the stall
/// watchdog, histograms without worker states) runs the same countdown
/// with a period of 1 ([`Stamps::every`]): its stamps are taken on the
/// countdown's cold path, so the default's path at submission is the one
/// test for timing at all, and the countdown.
// `repr(C)`, `left` second: its store then takes the registry's address
// plus an offset, and the address of `self` for the cold call is worked
// out on the cold path only (first, it was hoisted onto the hot one).
#[repr(C)]
pub(crate) struct Stamps {
    /// Submissions up to the last stamp.
    through: AtomicU64,
    /// Submissions left until the next stamp, counting it.
    left: AtomicU64,
    /// Every submission is stamped, with weight 1 and the time as given.
    every: bool,
}

impl Default for Stamps {
    fn default() -> Self {
        Stamps {
            left: AtomicU64::new(1),
            through: AtomicU64::new(0),
            every: false,
        }
    }
}

impl Stamps {
    /// Stamps for a pool that stamps every submission.
    pub(crate) fn every() -> Self {
        Stamps {
            every: true,
            ..Stamps::default()
        }
    }

    /// The stamp of the next submission, if it gets one: `now()` with
    /// the weight bit (as given, when every submission is stamped).
    ///
    /// The countdown only ever holds 1 or more: a submission stores its
    /// decrement only when that is not 0, and the stamped one's cold path
    /// stores the next period instead. So whatever value a racing
    /// submitter loads, it is at least 1: a race loses a count or stamps
    /// twice (moving a sample), and the countdown cannot wrap below 0 and
    /// stop stamping.
    #[inline(always)]
    pub(crate) fn next(&self, now: impl FnOnce() -> u64) -> Option<u64> {
        let left = self.left.load(Relaxed).wrapping_sub(1);
        if left != 0 {
            self.left.store(left, Relaxed);
            None
        } else {
            Some(self.stamp(now()))
        }
    }

    #[cold]
    #[inline(never)]
    fn stamp(&self, now: u64) -> u64 {
        if self.every {
            self.left.store(1, Relaxed);
            return now;
        }
        let through = self.through.load(Relaxed);
        let period = period(through);
        let through = through + period;
        self.through.store(through, Relaxed);
        self.left.store(self::period(through), Relaxed);
        // A tick count is never below `LONG` (`clock::ticks`).
        let ticks = now.max(LONG);
        if period == 1 {
            ticks & !SPARSE
        } else {
            ticks | SPARSE
        }
    }
}

/// A full stamp (weight 1) in a pool whose submissions are stamped
/// sparsely: `now` without the weight bit.
pub(crate) fn full_stamp(now: u64) -> u64 {
    now & !SPARSE
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::metrics::Histogram;
    use std::time::Duration;

    /// The histograms of `t`, after `count` timed tasks.
    fn snapshot(t: &TaskTiming, count: u64) -> (Histogram, Histogram) {
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
        let (wait, run) = snapshot(&t, WARM_UP);
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
        let (wait, run) = snapshot(&t, n);
        assert_eq!(wait.count(), n);
        assert_eq!(run.count(), n);
        assert_eq!(wait.sum(), Duration::from_nanos(500 * n));
        assert_eq!(run.sum(), Duration::from_nanos(700 * n));
        assert_eq!(run.octave_buckets().last().unwrap().1, n);
        // Seven more tasks: counted, not yet recorded; the figures scale.
        for _ in 0..7 {
            t.record(500, || 0, 700);
        }
        let (_, run) = snapshot(&t, n + 7);
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
        let (wait, run) = snapshot(&t, WARM_UP + n);
        let long: u64 = (0..n).map(|i| LONG + i).sum();
        assert_eq!(run.count(), WARM_UP + n);
        assert_eq!(run.sum(), Duration::from_nanos(long));
        assert_eq!(run.octave_buckets().last().unwrap().1, WARM_UP + n);
        assert_eq!(wait.sum(), Duration::from_nanos(100 * n));
        for _ in 0..n {
            t.record(LONG, || 0, 100);
        }
        // The waits of short tasks: 10 samples of weight SAMPLE_EVERY.
        let (wait, run) = snapshot(&t, WARM_UP + 2 * n);
        assert_eq!(wait.count(), WARM_UP + 2 * n);
        assert_eq!(wait.sum(), Duration::from_nanos(100 * n + LONG * n));
        assert_eq!(run.sum(), Duration::from_nanos(long + 100 * n));
        assert_eq!(wait.max(), bucket_mid(LONG));
        assert_eq!(run.p50(), bucket_mid(0));
    }

    #[test]
    fn submissions_are_stamped_in_full_then_one_in_sample_every() {
        let s = Stamps::default();
        for i in 0..WARM_UP {
            let t = 2 * LONG + 2 * i;
            assert_eq!(s.next(|| t), Some(t), "submission {i}: stamped, weight 1");
        }
        let mut stamped = Vec::new();
        for i in 1..=10 * SAMPLE_EVERY {
            if let Some(stamp) = s.next(|| 4 * LONG) {
                assert_eq!(stamp_parts(stamp), (4 * LONG, SAMPLE_EVERY));
                stamped.push(i);
            }
        }
        let every: Vec<u64> = (1..=10).map(|k| k * SAMPLE_EVERY).collect();
        assert_eq!(stamped, every);
        // A clock reading below `LONG` is raised to it: a stamp is never
        // mistaken for none, nor missed by the long-task test.
        let s = Stamps::default();
        assert_eq!(s.next(|| 0), Some(LONG));
    }

    #[test]
    fn the_countdown_never_holds_zero() {
        // What keeps racing submitters from wrapping it: every value it
        // holds is at least 1, also while a stamp is being taken (the
        // clock is read on the cold path: a submitter racing that one
        // would load what the clock reading sees here).
        for s in [Stamps::default(), Stamps::every()] {
            for i in 0..WARM_UP + 10 * SAMPLE_EVERY {
                let mut during = None;
                s.next(|| {
                    during = Some(s.left.load(Relaxed));
                    2 * LONG + i
                });
                let after = s.left.load(Relaxed);
                for left in during.into_iter().chain([after]) {
                    assert!((1..=SAMPLE_EVERY).contains(&left), "{left} at {i}");
                }
            }
        }
    }

    #[test]
    fn stamps_for_every_submission_are_the_time_as_given() {
        let s = Stamps::every();
        for i in 0..3 * WARM_UP {
            // Whatever the time (a manual clock may read 0 or an odd
            // tick), it is the stamp, every time.
            assert_eq!(s.next(|| i), Some(i), "submission {i}");
        }
    }

    #[test]
    fn stamped_tasks_weigh_their_period_in_both_spans() {
        let t = TaskTiming::default();
        let s = Stamps::default();
        // Queued at a clock far above LONG, started 500 later, running
        // 700: every task alike, from one submitter.
        let base = 8 * LONG;
        let n = WARM_UP + 100 * SAMPLE_EVERY;
        for _ in 0..n {
            let stamp = s.next(|| base).unwrap_or(0);
            t.record_stamped(base + 500, stamp, 700);
        }
        let (wait, run) = snapshot(&t, n);
        assert_eq!((wait.count(), run.count()), (n, n));
        assert_eq!(wait.sum(), Duration::from_nanos(500 * n));
        assert_eq!(run.sum(), Duration::from_nanos(700 * n));
        assert_eq!(wait.octave_buckets().last().unwrap().1, n);
        assert_eq!(run.octave_buckets().last().unwrap().1, n);
        // Seven more tasks before the next stamp: counted, not recorded;
        // the figures scale to the count.
        for _ in 0..7 {
            let stamp = s.next(|| base).unwrap_or(0);
            assert_eq!(stamp, 0);
            t.record_stamped(base + 500, stamp, 700);
        }
        let (wait, run) = snapshot(&t, n + 7);
        assert_eq!(wait.sum(), Duration::from_nanos(500 * (n + 7)));
        assert_eq!(run.sum(), Duration::from_nanos(700 * (n + 7)));
        // Unstamped short tasks record nothing; a stamp of weight 1 (a
        // timer's task, say) records both spans once.
        let t = TaskTiming::default();
        for _ in 0..WARM_UP {
            t.record_stamped(0, 0, 0);
        }
        assert_eq!((t.queue_wait.weight(), t.run_time.weight()), (0, 0));
        t.record_stamped(base + 300, full_stamp(base), 5);
        assert_eq!((t.queue_wait.sum_ticks(), t.run_time.sum_ticks()), (300, 5));
        assert_eq!((t.queue_wait.weight(), t.run_time.weight()), (1, 1));
    }

    #[test]
    fn long_runs_are_recorded_once_whether_stamped_or_not() {
        // Unstamped long runs: each recorded with weight 1, no wait.
        let t = TaskTiming::default();
        let n = 10 * SAMPLE_EVERY;
        for i in 0..n {
            t.record_stamped(100, 0, LONG + i);
        }
        let long: u64 = (0..n).map(|i| LONG + i).sum();
        let (wait, run) = snapshot(&t, n);
        assert_eq!(run.sum(), Duration::from_nanos(long));
        assert_eq!(run.octave_buckets().last().unwrap().1, n);
        assert_eq!(t.queue_wait.weight(), 0);
        assert_eq!(wait.sum(), Duration::ZERO);
        // Stamped long runs (the warm-up's, then one in SAMPLE_EVERY):
        // the run still once with weight 1, the wait with the stamp's.
        let t = TaskTiming::default();
        let s = Stamps::default();
        let base = 8 * LONG;
        let total = WARM_UP + n;
        for i in 0..total {
            let stamp = s.next(|| base).unwrap_or(0);
            t.record_stamped(base + 100, stamp, LONG + i);
        }
        let long: u64 = (0..total).map(|i| LONG + i).sum();
        assert_eq!(t.run_time.weight(), total);
        assert_eq!(t.run_time.sum_ticks(), long);
        assert_eq!(t.queue_wait.weight(), total);
        assert_eq!(
            t.queue_wait.sum_ticks(),
            100 * WARM_UP + 100 * SAMPLE_EVERY * (n / SAMPLE_EVERY)
        );
    }

    #[test]
    fn the_count_timed_is_the_starts_less_the_untimed_ones() {
        let t = TaskTiming::default();
        assert_eq!(t.timed(5), 5);
        t.note_untimed();
        t.note_untimed();
        assert_eq!(t.timed(5), 3);
        // Read while the worker counts a start not yet reflected.
        assert_eq!(t.timed(1), 0);
    }

    /// The midpoint of the bucket holding `ns`, as quantiles report it.
    fn bucket_mid(ns: u64) -> Duration {
        let h = AtomicHistogram::default();
        h.record(ns);
        Histogram::sum_of(std::iter::once(&h), 1.0).max()
    }
}
