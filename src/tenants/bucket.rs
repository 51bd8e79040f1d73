//! A token bucket as a pure function of time.

use crate::sched::tenancy::RateLimit;
use std::time::{Duration, Instant};

/// Tokens, and when they were last counted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn full(limit: &RateLimit, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(limit.burst),
            at: now,
        }
    }

    fn refill(&mut self, limit: &RateLimit, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * limit.rate).min(f64::from(limit.burst));
        self.at = self.at.max(now);
    }

    /// Whether a token is there now (refilled to `now`).
    pub(crate) fn ready(&mut self, limit: &RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        self.tokens >= 1.0 - 1e-9
    }

    /// Takes a token (call after `ready` said yes).
    pub(crate) fn take(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    /// When to look again: once a millisecond's worth of tokens is there
    /// (at least one, at most the burst), so that a fast limit lets a few
    /// tasks through per wake-up instead of waking for each token, and a
    /// slow one wakes once per token.
    pub(crate) fn next_token(&self, limit: &RateLimit) -> Instant {
        let want = (limit.rate / 1000.0).clamp(1.0, f64::from(limit.burst));
        let missing = (want - self.tokens).max(0.0);
        // At most a token's time, which `RateLimit::new` bounds by
        // `MAX_DELAY`; saturating all the same, as a clock sum must not
        // panic on a worker.
        let wait = Duration::try_from_secs_f64(missing / limit.rate)
            .map_or(crate::MAX_DELAY, |d| d.min(crate::MAX_DELAY));
        self.at.checked_add(wait).unwrap_or(self.at)
    }

    /// Whether it is full at `now` (an idle tenant with a full bucket can
    /// be forgotten: a new one starts full too).
    pub(crate) fn is_full(&mut self, limit: &RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        self.tokens >= f64::from(limit.burst) - 1e-9
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn starts_full_spends_and_refills_at_the_rate() {
        let limit = RateLimit::new(10.0, 3).unwrap();
        let t0 = Instant::now();
        let mut b = Bucket::full(&limit, t0);
        for _ in 0..3 {
            assert!(b.ready(&limit, t0));
            b.take();
        }
        assert!(!b.ready(&limit, t0));
        assert_eq!(b.next_token(&limit), t0 + Duration::from_millis(100));
        assert!(!b.ready(&limit, t0 + Duration::from_millis(99)));
        assert!(b.ready(&limit, t0 + Duration::from_millis(100)));
        b.take();
        // Never more than the burst, however long it idles.
        assert!(b.is_full(&limit, t0 + Duration::from_secs(60)));
        for _ in 0..3 {
            assert!(b.ready(&limit, t0 + Duration::from_secs(60)));
            b.take();
        }
        assert!(!b.ready(&limit, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_fast_limit_is_looked_at_once_a_millisecond() {
        let t0 = Instant::now();
        let fast = RateLimit::new(10_000.0, 100).unwrap();
        let mut b = Bucket::full(&fast, t0);
        for _ in 0..100 {
            assert!(b.ready(&fast, t0));
            b.take();
        }
        // 10 tokens, a millisecond's worth, by the next look.
        assert_eq!(b.next_token(&fast), t0 + Duration::from_millis(1));
        // A burst of 1 caps it at one token.
        let tight = RateLimit::new(10_000.0, 1).unwrap();
        let mut b = Bucket::full(&tight, t0);
        b.take();
        assert_eq!(b.next_token(&tight), t0 + Duration::from_micros(100));
    }

    #[test]
    fn bad_limits_are_named() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = RateLimit::new(bad, 1).unwrap_err();
            assert!(e.to_string().contains("rate_limit.rate"), "{e}");
        }
        let e = RateLimit::new(1.0, 0).unwrap_err();
        assert!(e.to_string().contains("rate_limit.burst"), "{e}");
    }
}
