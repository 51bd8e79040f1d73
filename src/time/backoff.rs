//! Retry policies and periodic schedules: plain values, validated at
//! submission, whose decisions are pure functions (unit-tested without a
//! clock or a thread).

use crate::error::InvalidOption;
use std::time::Duration;

/// How a retry's delay is randomised, so that tasks that failed together
/// do not retry together.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Jitter {
    /// The delay as computed (the default).
    #[default]
    None,
    /// Uniform in `[0, delay]` ("full jitter").
    Full,
    /// Uniform in `[delay / 2, delay]` ("equal jitter").
    Equal,
    /// Uniform in `[delay × (1 − r), delay × (1 + r)]`, capped at the
    /// policy's `max_delay`; `r` in `0.0..=1.0`.
    Proportional(f64),
}

/// When and how often a failed task is tried again.
///
/// The delay before attempt `n + 1` (after `n` failed attempts) is
/// `base × factor^(n−1)`, capped at `max_delay`, then jittered. The task
/// is tried at most `max_attempts` times in all (the first attempt
/// included); after the last, or an error the task's `retry_if` calls
/// permanent, it goes to the pool's dead letters.
///
/// ```
/// use std::time::Duration;
/// use ebbtide::{Jitter, RetryPolicy};
/// let policy = RetryPolicy::exponential(Duration::from_millis(100))
///     .factor(3.0)
///     .max_delay(Duration::from_secs(1))
///     .max_attempts(5);
/// let delays: Vec<_> = (1..5).map(|n| policy.delay_after(n, 0)).collect();
/// assert_eq!(delays, [100, 300, 900, 1000].map(Duration::from_millis));
/// let jittered = policy.jitter(Jitter::Full).delay_after(2, 12345);
/// assert!(jittered <= Duration::from_millis(300));
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    base: Duration,
    factor: f64,
    max_delay: Duration,
    jitter: Jitter,
    max_attempts: u32,
}

impl RetryPolicy {
    /// Exponential backoff from `base`: factor 2, at most 60 s (or `base`
    /// if larger) between attempts, 3 attempts in all, no jitter.
    pub fn exponential(base: Duration) -> Self {
        RetryPolicy {
            base,
            factor: 2.0,
            max_delay: base.max(Duration::from_secs(60)),
            jitter: Jitter::None,
            max_attempts: 3,
        }
    }

    /// The same delay before every retry; 3 attempts in all.
    pub fn fixed(delay: Duration) -> Self {
        RetryPolicy {
            factor: 1.0,
            max_delay: delay,
            ..Self::exponential(delay)
        }
    }

    /// The growth factor between successive delays (at least 1).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// The longest delay between attempts (at least `base`, at most
    /// [`MAX_DELAY`](crate::MAX_DELAY)).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// How delays are randomised.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Attempts in all, the first included (at least 1; 1 means no retry).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The attempts allowed in all.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay before the next attempt after `failed` failed attempts
    /// (`failed >= 1`), with `random` (any 64 random bits) for the jitter.
    /// Pure: the same arguments give the same delay.
    pub fn delay_after(&self, failed: u32, random: u64) -> Duration {
        let exponent = failed.saturating_sub(1).min(1024) as i32;
        let raw = self.base.as_secs_f64() * self.factor.powi(exponent);
        let cap = self.max_delay.as_secs_f64();
        let delay = if raw.is_finite() { raw.min(cap) } else { cap };
        // 53 random bits as a fraction in [0, 1].
        let unit = (random >> 11) as f64 / ((1u64 << 53) - 1) as f64;
        let jittered = match self.jitter {
            Jitter::None => delay,
            Jitter::Full => delay * unit,
            Jitter::Equal => delay / 2.0 + delay / 2.0 * unit,
            Jitter::Proportional(r) => (delay * (1.0 - r + 2.0 * r * unit)).min(cap),
        };
        Duration::from_secs_f64(jittered.max(0.0))
    }

    /// What is wrong with the policy, if anything (a submission under it
    /// fails with this).
    ///
    /// # Errors
    /// The option that is out of range, named.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        if self.max_attempts == 0 {
            return Err(InvalidOption::new(
                "retry.max_attempts",
                0,
                "at least 1 (the first attempt counts)",
            ));
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            return Err(InvalidOption::new(
                "retry.factor",
                self.factor,
                "a finite number of at least 1.0",
            ));
        }
        if self.max_delay < self.base {
            return Err(InvalidOption::new(
                "retry.max_delay",
                self.max_delay,
                "at least the base delay",
            ));
        }
        if self.max_delay > super::MAX_DELAY {
            return Err(InvalidOption::new(
                "retry.max_delay",
                self.max_delay,
                "at most MAX_DELAY (365 days)",
            ));
        }
        if let Jitter::Proportional(r) = self.jitter {
            if !(0.0..=1.0).contains(&r) {
                return Err(InvalidOption::new(
                    "retry.jitter",
                    r,
                    "a proportion between 0.0 and 1.0",
                ));
            }
        }
        Ok(())
    }
}

/// How a periodic task repeats.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Runs are due every `period` from the first: a run that overruns
    /// makes the next start late, and due times missed meanwhile are
    /// skipped (counted), never run in a bunch.
    FixedRate(Duration),
    /// The next run is due `period` after the previous one finished.
    FixedDelay(Duration),
}

impl Schedule {
    /// The period.
    pub fn period(&self) -> Duration {
        match *self {
            Schedule::FixedRate(p) | Schedule::FixedDelay(p) => p,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidOption> {
        let p = self.period();
        if p.is_zero() {
            return Err(InvalidOption::new(
                "schedule.period",
                p,
                "a positive duration",
            ));
        }
        if p > super::MAX_DELAY {
            return Err(InvalidOption::new(
                "schedule.period",
                p,
                "at most MAX_DELAY (365 days)",
            ));
        }
        Ok(())
    }

    /// After a run that was due at `due` and finished at `now`: when the
    /// next run is due, and how many due times were skipped.
    pub fn next_after(
        &self,
        due: std::time::Instant,
        now: std::time::Instant,
    ) -> (std::time::Instant, u64) {
        match *self {
            Schedule::FixedDelay(p) => (now + p, 0),
            Schedule::FixedRate(p) => {
                let next = due + p;
                if next >= now {
                    return (next, 0);
                }
                // Missed `k` due times: the next is the first after now.
                // In nanoseconds: a short period far behind misses more
                // than `u32::MAX` times, which `Duration * u32` cannot
                // count (it wrapped, and put the next run in the past).
                let period = p.as_nanos();
                let behind = now.duration_since(next).as_nanos() / period;
                let skipped = behind + 1;
                // At most `now - next + period`: within the clock's range.
                let ahead = u64::try_from(skipped * period).unwrap_or(u64::MAX);
                let skipped = u64::try_from(skipped).unwrap_or(u64::MAX);
                (next + Duration::from_nanos(ahead), skipped)
            }
        }
    }
}

/// A small, fast pseudo-random sequence (splitmix64) for jitter.
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_delays_grow_and_cap() {
        let p = RetryPolicy::exponential(10 * MS)
            .max_delay(70 * MS)
            .max_attempts(6);
        let d: Vec<_> = (1..6).map(|n| p.delay_after(n, u64::MAX)).collect();
        assert_eq!(d, [10 * MS, 20 * MS, 40 * MS, 70 * MS, 70 * MS]);
        assert_eq!(RetryPolicy::fixed(5 * MS).delay_after(4, 0), 5 * MS);
        // Huge exponents saturate at the cap, never overflow.
        assert_eq!(p.delay_after(u32::MAX, 0), 70 * MS);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let mut seed = 7;
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Proportional(0.25)] {
            let p = RetryPolicy::exponential(100 * MS)
                .max_delay(400 * MS)
                .jitter(jitter);
            let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
            for n in 1..5u32 {
                let raw = RetryPolicy::exponential(100 * MS)
                    .max_delay(400 * MS)
                    .delay_after(n, 0);
                for _ in 0..1000 {
                    let d = p.delay_after(n, splitmix(&mut seed));
                    let (min, max) = match jitter {
                        Jitter::Full => (Duration::ZERO, raw),
                        Jitter::Equal => (raw / 2, raw),
                        _ => (raw.mul_f64(0.75), raw.mul_f64(1.25).min(400 * MS)),
                    };
                    assert!(
                        d >= min && d <= max,
                        "{jitter:?} {n}: {d:?} not in {min:?}..={max:?}"
                    );
                    lo = lo.min(d);
                    hi = hi.max(d);
                }
            }
            assert!(lo < hi, "{jitter:?} varies");
        }
    }

    #[test]
    fn bad_policies_are_named() {
        let base = RetryPolicy::exponential(10 * MS);
        let cases = [
            (base.clone().max_attempts(0), "retry.max_attempts"),
            (base.clone().factor(0.5), "retry.factor"),
            (base.clone().factor(f64::NAN), "retry.factor"),
            (base.clone().max_delay(MS), "retry.max_delay"),
            (
                base.clone().max_delay(crate::MAX_DELAY * 2),
                "retry.max_delay",
            ),
            (
                base.clone().jitter(Jitter::Proportional(1.5)),
                "retry.jitter",
            ),
        ];
        for (policy, option) in cases {
            assert_eq!(policy.validate().unwrap_err().option(), option);
        }
        assert!(base.validate().is_ok());
        assert!(Schedule::FixedRate(Duration::ZERO).validate().is_err());
        assert!(Schedule::FixedDelay(crate::MAX_DELAY * 2)
            .validate()
            .is_err());
        assert!(Schedule::FixedDelay(MS).validate().is_ok());
    }

    #[test]
    fn fixed_rate_skips_missed_ticks_and_fixed_delay_spaces() {
        let t0 = Instant::now();
        let rate = Schedule::FixedRate(10 * MS);
        assert_eq!(rate.next_after(t0, t0 + 3 * MS), (t0 + 10 * MS, 0));
        // Finished at 10 ms exactly: the 10 ms run is due now, not missed.
        assert_eq!(rate.next_after(t0, t0 + 10 * MS), (t0 + 10 * MS, 0));
        assert_eq!(rate.next_after(t0, t0 + 11 * MS), (t0 + 20 * MS, 1));
        assert_eq!(rate.next_after(t0, t0 + 35 * MS), (t0 + 40 * MS, 3));
        let delay = Schedule::FixedDelay(10 * MS);
        assert_eq!(delay.next_after(t0, t0 + 35 * MS), (t0 + 45 * MS, 0));
        // A nanosecond period ten seconds behind: ten billion due times
        // missed, more than a `u32` counts; the next is the first after now.
        let ns = Schedule::FixedRate(Duration::from_nanos(1));
        let now = t0 + Duration::from_secs(10);
        assert_eq!(
            ns.next_after(t0, now),
            (now + Duration::from_nanos(1), 10_000_000_000)
        );
    }
}
