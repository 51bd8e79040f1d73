//! An opt-in circuit breaker for a pool.
//!
//! States (`BreakerState`):
//!
//! | state     | submissions                         | moves on                                                  |
//! |-----------|-------------------------------------|-----------------------------------------------------------|
//! | Closed    | accepted                            | failure rate over the window > threshold (with at least `min_calls` outcomes) → Open |
//! | Open      | refused (`SubmitError::BreakerOpen`)| cool-down elapsed (checked at the next submission) → HalfOpen |
//! | HalfOpen  | `trial_calls` accepted, then refused | a trial fails → Open; `trial_calls` trials succeed → Closed |
//!
//! Outcomes: a task that returns counts as a success; one that panics or
//! times out as a failure; a cancelled one as neither. Outcomes of tasks
//! accepted before the breaker opened are ignored while it is open.
//!
//! A trial that ends with neither (cancelled, abandoned, or refused by a
//! full queue after the breaker let it through) gives its place back
//! (`no_outcome`). One that never ends in an outcome the breaker hears of
//! (dropped by backpressure, a periodic task, one still running) is taken
//! as lost once a cool-down passes with no trial let through or ended: one
//! more trial goes then. Without both, spent places kept the breaker
//! half-open, refusing every submission, for good.

use crate::metrics::BreakerState;
use crate::time::clock::GuardedClock;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A clock for the breaker (injectable for deterministic tests).
pub type BreakerClock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The settings of a circuit breaker (`Builder::circuit_breaker`).
#[derive(Clone)]
pub struct BreakerConfig {
    pub(crate) window: usize,
    pub(crate) min_calls: usize,
    pub(crate) failure_rate: f64,
    pub(crate) cool_down: Duration,
    pub(crate) trial_calls: usize,
    pub(crate) clock: Option<BreakerClock>,
}

impl fmt::Debug for BreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerConfig")
            .field("window", &self.window)
            .field("min_calls", &self.min_calls)
            .field("failure_rate", &self.failure_rate)
            .field("cool_down", &self.cool_down)
            .field("trial_calls", &self.trial_calls)
            .finish()
    }
}

impl Default for BreakerConfig {
    /// A window of 50 outcomes, at least 20 of them, opening above 50 %
    /// failures, for 5 s, then 3 trials.
    fn default() -> Self {
        BreakerConfig {
            window: 50,
            min_calls: 20,
            failure_rate: 0.5,
            cool_down: Duration::from_secs(5),
            trial_calls: 3,
            clock: None,
        }
    }
}

impl BreakerConfig {
    /// The defaults (see `Default`).
    pub fn new() -> Self {
        Self::default()
    }

    /// How many recent outcomes the failure rate is computed over.
    pub fn window(mut self, n: usize) -> Self {
        self.window = n;
        self
    }

    /// The fewest outcomes in the window before the breaker may open.
    pub fn min_calls(mut self, n: usize) -> Self {
        self.min_calls = n;
        self
    }

    /// The failure rate (0.0 ..= 1.0) above which the breaker opens.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    /// How long the breaker stays open before it lets trials through (at
    /// most [`MAX_DELAY`](crate::MAX_DELAY)).
    pub fn cool_down(mut self, d: Duration) -> Self {
        self.cool_down = d;
        self
    }

    /// How many trial tasks the half-open breaker lets through (and how
    /// many must succeed to close it).
    pub fn trial_calls(mut self, n: usize) -> Self {
        self.trial_calls = n;
        self
    }

    /// Replaces the breaker's clock (`Instant::now` by default), e.g. with
    /// a manual clock in tests. It is first read when the pool is built (a
    /// panic then reaches `build`'s caller); after that, a reading earlier
    /// than the latest one reads as the latest, and so does a panic (the
    /// panic hook still reports it): the breaker's time stands still while
    /// the clock fails.
    pub fn clock(mut self, clock: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// What is wrong with the settings, if anything: `(field, expected)`.
    pub(crate) fn invalid(&self) -> Option<(&'static str, String, &'static str)> {
        if self.window == 0 {
            Some(("circuit_breaker.window", "0".into(), "at least 1"))
        } else if self.min_calls == 0 || self.min_calls > self.window {
            Some((
                "circuit_breaker.min_calls",
                self.min_calls.to_string(),
                "between 1 and the window",
            ))
        } else if !(0.0..=1.0).contains(&self.failure_rate) || self.failure_rate.is_nan() {
            Some((
                "circuit_breaker.failure_rate",
                self.failure_rate.to_string(),
                "between 0.0 and 1.0",
            ))
        } else if self.cool_down > crate::MAX_DELAY {
            Some((
                "circuit_breaker.cool_down",
                format!("{:?}", self.cool_down),
                "at most MAX_DELAY (365 days)",
            ))
        } else if self.trial_calls == 0 {
            Some(("circuit_breaker.trial_calls", "0".into(), "at least 1"))
        } else {
            None
        }
    }
}

enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// `outstanding` trials let through and not ended, `succeeded` ended
    /// well; `since`: the last trial let through or ended.
    HalfOpen {
        outstanding: usize,
        succeeded: usize,
        since: Instant,
    },
}

struct Inner {
    state: State,
    window: VecDeque<bool>,
}

/// A state change, as a `tracing` event (feature `tracing`).
#[inline]
fn changed(to: BreakerState) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "ebbtide", state = ?to, "circuit breaker");
    #[cfg(not(feature = "tracing"))]
    let _ = to;
}

pub(crate) struct Breaker {
    config: BreakerConfig,
    /// The configured clock, behind its guard (`None`: `Instant::now`).
    clock: Option<GuardedClock>,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Breaker {
            clock: config.clock.clone().map(GuardedClock::new),
            inner: Mutex::new(Inner {
                state: State::Closed,
                window: VecDeque::with_capacity(config.window),
            }),
            config,
        }
    }

    fn now(&self) -> Instant {
        self.clock
            .as_ref()
            .map_or_else(Instant::now, GuardedClock::now)
    }

    /// Whether a submission may pass (moving Open → HalfOpen when the
    /// cool-down has ended).
    pub(crate) fn admit(&self) -> bool {
        let mut inner = self.inner.lock();
        match inner.state {
            State::Closed => true,
            State::Open { until } => {
                let now = self.now();
                if now >= until {
                    inner.state = State::HalfOpen {
                        outstanding: 1,
                        succeeded: 0,
                        since: now,
                    };
                    changed(BreakerState::HalfOpen);
                    true
                } else {
                    false
                }
            }
            State::HalfOpen {
                ref mut outstanding,
                succeeded,
                ref mut since,
            } => {
                let now = self.now();
                if *outstanding + succeeded < self.config.trial_calls {
                    *outstanding += 1;
                    *since = now;
                    true
                } else if now.saturating_duration_since(*since) >= self.config.cool_down {
                    // No trial let through or ended for a cool-down: one
                    // outstanding is taken as lost, and this one goes.
                    *since = now;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// A task the breaker let through ended with no outcome (cancelled,
    /// abandoned, refused after it passed): a half-open breaker gives its
    /// trial place back.
    pub(crate) fn no_outcome(&self) {
        let mut inner = self.inner.lock();
        if let State::HalfOpen {
            ref mut outstanding,
            ref mut since,
            ..
        } = inner.state
        {
            *outstanding = outstanding.saturating_sub(1);
            *since = self.now();
        }
    }

    /// Records a task's outcome.
    pub(crate) fn record(&self, success: bool) {
        let mut inner = self.inner.lock();
        match inner.state {
            State::Closed => {
                if inner.window.len() == self.config.window {
                    inner.window.pop_front();
                }
                inner.window.push_back(success);
                let calls = inner.window.len();
                let failures = inner.window.iter().filter(|ok| !**ok).count();
                if calls >= self.config.min_calls
                    && failures as f64 / calls as f64 > self.config.failure_rate
                {
                    inner.state = State::Open {
                        until: self.now() + self.config.cool_down,
                    };
                    inner.window.clear();
                    changed(BreakerState::Open);
                }
            }
            State::Open { .. } => {}
            State::HalfOpen {
                ref mut outstanding,
                ref mut succeeded,
                ref mut since,
            } => {
                // An outcome of a task let through before the breaker
                // opened counts as a trial's: it may find none outstanding.
                *outstanding = outstanding.saturating_sub(1);
                *since = self.now();
                if !success {
                    inner.state = State::Open {
                        until: self.now() + self.config.cool_down,
                    };
                    changed(BreakerState::Open);
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.config.trial_calls {
                        inner.state = State::Closed;
                        inner.window.clear();
                        changed(BreakerState::Closed);
                    }
                }
            }
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.inner.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}
