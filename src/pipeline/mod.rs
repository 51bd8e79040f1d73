//! Pipelines: a source, stages and a sink, declared in order, each stage
//! on a pool of its own with a bounded buffer, so the slowest stage slows
//! the ones before it and memory stays bounded end to end; shut down in
//! order, stage by stage.
//!
//! ```
//! use ebbtide::pipeline::{Pipeline, Stage};
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let total = Arc::new(AtomicU64::new(0));
//! let sum = Arc::clone(&total);
//! let pipeline = Pipeline::<String>::builder()
//!     .map(Stage::new("parse").workers(2), |line: String| line.trim().parse::<u64>().unwrap_or(0))
//!     .map(Stage::new("square").elastic(1, 8), |x| x * x)
//!     .batch(Stage::new("batch"), 10, Duration::from_millis(50))
//!     .sink(Stage::new("write").workers(1), move |batch: Vec<u64>| {
//!         sum.fetch_add(batch.iter().sum::<u64>(), Ordering::Relaxed);
//!     })
//!     .build()?;
//! for i in 1..=100u64 {
//!     pipeline.send(format!(" {i} ")).unwrap();
//! }
//! let report = pipeline.shutdown();
//! assert_eq!(total.load(Ordering::Relaxed), (1..=100u64).map(|x| x * x).sum::<u64>());
//! assert!(report.stages.iter().all(|s| s.abandoned == 0));
//! # Ok::<(), ebbtide::pipeline::PipelineError>(())
//! ```
//!
//! - **Stages**: [`map`](PipelineBuilder::map) (one item in, one out),
//!   [`try_map`](PipelineBuilder::try_map) (an `Err` goes to the error
//!   handling), [`flat_map`](PipelineBuilder::flat_map) (zero or many out),
//!   [`batch`](PipelineBuilder::batch), and [`sink`](PipelineBuilder::sink)
//!   last. Each [`Stage`] has a fixed or elastic number of workers and a
//!   buffer; [`key_by`](PipelineBuilder::key_by) keys the next stage (per-key
//!   order through it).
//! - **Errors**: a failed or panicking item goes to the
//!   [`on_error`](PipelineBuilder::on_error) handler with its stage, or, with
//!   [`fail_fast`](PipelineBuilder::fail_fast), stops the pipeline: the
//!   source refuses more, and every queued item is cancelled.
//! - **Sending**: [`send`](Pipeline::send) waits for room in the first
//!   stage, [`try_send`](Pipeline::try_send) does not,
//!   [`send_timeout`](Pipeline::send_timeout) waits so long; a refused item
//!   is handed back in the [`SendError`].
//! - **Shutdown** ([`Pipeline::shutdown`], [`Pipeline::shutdown_timeout`]):
//!   the source stops (a send already taken is drained); each stage drains
//!   into the next, then closes; past the deadline what is left is
//!   abandoned and counted per stage.

mod batch;
pub(crate) mod intake;
mod report;
mod shared;
mod spec;
mod stage;

pub use report::{ItemError, PipelineError, PipelineReport, SendError, StageReport};
pub use spec::{Stage, DEFAULT_BUFFER};

use std::hash::Hash;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::pool::Pool;

use batch::{BatchCounts, Batcher};
use shared::{ErrorSink, Offer, Refused, Shared};
use stage::{pool_stage, Body, StageCounts};

/// What offers an item to a stage (see [`Offer`] and [`Refused`]).
type Next<T> = Arc<dyn Fn(T, Offer) -> Result<(), Refused<T>> + Send + Sync>;
/// An item's key, hashed.
type KeyFn<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;
/// The clock batch timers read.
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

enum Part {
    Pool {
        pool: Pool,
        counts: Arc<StageCounts>,
    },
    Batch {
        name: String,
        flush: Box<dyn Fn(Option<Instant>) + Send + Sync>,
        timer: Pool,
        counts: Arc<BatchCounts>,
    },
}

/// Stages collected while building (last stage first).
struct Parts {
    shared: Arc<Shared>,
    parts: Vec<Part>,
    clock: Option<Clock>,
}

type Link<I, O> = Box<dyn FnOnce(Next<O>, &mut Parts) -> Result<Next<I>, PipelineError>>;

/// Declares a pipeline's stages in order; [`build`](Self::build) starts it.
/// `I` is what the source sends, `O` what the stages so far produce.
pub struct PipelineBuilder<I, O> {
    link: Link<I, O>,
    key: Option<KeyFn<O>>,
    fail_fast: bool,
    on_error: Option<ErrorSink>,
    clock: Option<Clock>,
    /// The stages' names so far, in order (each must be its own: the
    /// metrics and reports tell the stages apart by name).
    names: Vec<String>,
}

impl<I: Send + 'static> Pipeline<I> {
    /// A pipeline whose source sends `I`s.
    pub fn builder() -> PipelineBuilder<I, I> {
        PipelineBuilder {
            link: Box::new(|next, _| Ok(next)),
            key: None,
            fail_fast: false,
            on_error: None,
            clock: None,
            names: Vec::new(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> PipelineBuilder<I, O> {
    fn then<P: Send + 'static>(
        mut self,
        name: &str,
        add: impl FnOnce(Option<KeyFn<O>>, Next<P>, &mut Parts) -> Result<Next<O>, PipelineError>
            + 'static,
    ) -> PipelineBuilder<I, P> {
        let (link, key) = (self.link, self.key);
        self.names.push(name.to_string());
        PipelineBuilder {
            link: Box::new(move |next: Next<P>, parts: &mut Parts| {
                let into_stage = add(key, next, parts)?;
                link(into_stage, parts)
            }),
            key: None,
            fail_fast: self.fail_fast,
            on_error: self.on_error,
            clock: self.clock,
            names: self.names,
        }
    }

    fn stage<P: Send + 'static>(self, spec: Stage, body: Arc<Body<O, P>>) -> PipelineBuilder<I, P> {
        let name = spec.name.clone();
        self.then(&name, move |key, next, parts| {
            spec.validate()?;
            let (submit, pool, counts) = pool_stage(spec, key, body, next, &parts.shared)?;
            parts.parts.push(Part::Pool { pool, counts });
            Ok(submit)
        })
    }

    /// A stage that turns each item into one.
    pub fn map<P, F>(self, stage: Stage, f: F) -> PipelineBuilder<I, P>
    where
        P: Send + 'static,
        F: Fn(O) -> P + Send + Sync + 'static,
    {
        self.stage(
            stage,
            Arc::new(move |x, emit: &mut dyn FnMut(P)| {
                emit(f(x));
                Ok(())
            }),
        )
    }

    /// A stage that may fail on an item: the `Err` goes to
    /// [`on_error`](Self::on_error), or stops the pipeline under
    /// [`fail_fast`](Self::fail_fast).
    pub fn try_map<P, E, F>(self, stage: Stage, f: F) -> PipelineBuilder<I, P>
    where
        P: Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: Fn(O) -> Result<P, E> + Send + Sync + 'static,
    {
        self.stage(
            stage,
            Arc::new(move |x, emit: &mut dyn FnMut(P)| {
                emit(f(x).map_err(Into::into)?);
                Ok(())
            }),
        )
    }

    /// A stage that turns each item into zero or more.
    pub fn flat_map<P, It, F>(self, stage: Stage, f: F) -> PipelineBuilder<I, P>
    where
        P: Send + 'static,
        It: IntoIterator<Item = P>,
        F: Fn(O) -> It + Send + Sync + 'static,
    {
        self.stage(
            stage,
            Arc::new(move |x, emit: &mut dyn FnMut(P)| {
                f(x).into_iter().for_each(&mut *emit);
                Ok(())
            }),
        )
    }

    /// The last stage: consumes each item.
    pub fn sink<F>(self, stage: Stage, f: F) -> PipelineBuilder<I, ()>
    where
        F: Fn(O) + Send + Sync + 'static,
    {
        self.map(stage, f)
    }

    /// Keys the next stage (a `map`, `try_map`, `flat_map`, `sink` or
    /// `batch`): items of one key go through it one at a time, in order;
    /// a keyed batch groups each key's items apart. An item whose `key`
    /// panics is that stage's panic: counted in its `panicked`, reported to
    /// [`on_error`](Self::on_error) (or failing a fail-fast pipeline), and
    /// not passed on; the other items flow on.
    pub fn key_by<K, KF>(mut self, key: KF) -> Self
    where
        K: Hash,
        KF: Fn(&O) -> K + Send + Sync + 'static,
    {
        let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
        self.key = Some(Arc::new(move |x: &O| hasher.hash_one(key(x))));
        self
    }

    /// A stage that groups items into batches of up to `max_items`, handing
    /// a batch on when it is full or `max_wait` after its first item,
    /// whichever comes first (per key after [`key_by`](Self::key_by)), and
    /// the partial batches at shutdown. Only the stage's name is used: a
    /// batch fills on the threads that hand it items.
    pub fn batch(
        self,
        stage: Stage,
        max_items: usize,
        max_wait: Duration,
    ) -> PipelineBuilder<I, Vec<O>> {
        let name = stage.name.clone();
        self.then(&name, move |key, next, parts| {
            let bad = |option, value: String, expected| PipelineError::Invalid {
                stage: stage.name.clone(),
                option,
                value,
                expected,
            };
            if max_items == 0 {
                return Err(bad("max_items", "0".into(), "at least 1"));
            }
            if max_wait.is_zero() {
                return Err(bad("max_wait", "0s".into(), "above zero"));
            }
            if max_wait > crate::MAX_DELAY {
                // Its timer could not be set: a partial batch would wait
                // for more items, never for the time.
                return Err(bad(
                    "max_wait",
                    format!("{max_wait:?}"),
                    "at most MAX_DELAY (365 days)",
                ));
            }
            let mut timer = Pool::builder()
                .name(format!("{}-timer", stage.name))
                .thread_name(format!("pipe-{}", stage.name))
                .workers(1);
            if let Some(clock) = &parts.clock {
                let clock = Arc::clone(clock);
                timer = timer.timer_clock(move || clock());
            }
            let timer = timer.build().map_err(|error| PipelineError::Pool {
                stage: stage.name.clone(),
                error,
            })?;
            let clock: Clock = match &parts.clock {
                Some(clock) => Arc::clone(clock),
                None => Arc::new(Instant::now),
            };
            let batcher = Batcher::new(
                max_items,
                max_wait,
                key,
                next,
                (&timer, clock),
                (Arc::clone(&parts.shared), stage.name.as_str().into()),
            );
            let counts = Arc::clone(&batcher.counts);
            let flusher = Arc::clone(&batcher);
            parts.parts.push(Part::Batch {
                name: stage.name,
                flush: Box::new(move |deadline| flusher.flush_all(deadline)),
                timer,
                counts,
            });
            Ok(Arc::new(move |item: O, offer| batcher.push(item, offer)) as Next<O>)
        })
    }

    /// Sends each failed item's [`ItemError`] to `handler` (the default
    /// drops them; they are counted either way).
    pub fn on_error(mut self, handler: impl Fn(ItemError) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(handler));
        self
    }

    /// Stops the pipeline at the first failed item: the source refuses
    /// more ([`SendError::Failed`]), every queued item is cancelled, and
    /// [`Pipeline::failure`] says which item failed where.
    pub fn fail_fast(mut self) -> Self {
        self.fail_fast = true;
        self
    }

    /// The clock batch timers read (default: `Instant::now`), for tests
    /// that move time by hand.
    pub fn clock(mut self, clock: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }
}

impl<I: Send + 'static> PipelineBuilder<I, ()> {
    /// Starts every stage's workers.
    ///
    /// # Errors
    /// [`PipelineError::Invalid`] for a buffer, worker count, batch size or
    /// batch time of 0, or a batch time above
    /// [`MAX_DELAY`](crate::MAX_DELAY) (naming the stage and option);
    /// [`PipelineError::DuplicateStage`] for two stages of one name;
    /// [`PipelineError::Pool`] for a stage whose pool cannot be built.
    pub fn build(self) -> Result<Pipeline<I>, PipelineError> {
        for (at, name) in self.names.iter().enumerate() {
            if self.names[..at].contains(name) {
                return Err(PipelineError::DuplicateStage {
                    stage: name.clone(),
                });
            }
        }
        let shared = Arc::new(Shared::new(self.fail_fast, self.on_error));
        let mut parts = Parts {
            shared: Arc::clone(&shared),
            parts: Vec::new(),
            clock: self.clock,
        };
        let end: Next<()> = Arc::new(|(), _| Ok(()));
        let source = (self.link)(end, &mut parts)?;
        let mut stages = parts.parts;
        stages.reverse();
        Ok(Pipeline {
            source,
            shared,
            stages,
        })
    }
}

/// A running pipeline: [`send`](Self::send) items in, shut it down in
/// order. Dropping it shuts it down (draining).
pub struct Pipeline<I> {
    source: Next<I>,
    shared: Arc<Shared>,
    stages: Vec<Part>,
}

impl<I: Send + 'static> Pipeline<I> {
    /// Sends an item into the first stage, waiting while its buffer is
    /// full (backpressure from the slowest stage reaches here).
    ///
    /// `Ok` means the pipeline took the item: a shutdown that races this
    /// call begins its drain only once the item is in the first stage, so
    /// [`shutdown`](Self::shutdown) runs it through.
    ///
    /// # Errors
    /// [`SendError::Closed`] once shutdown began (or the deadline of
    /// [`shutdown_timeout`](Self::shutdown_timeout) passed while this call
    /// waited for room), [`SendError::Failed`] after a fail-fast failure;
    /// the item is handed back and counted nowhere.
    pub fn send(&self, item: I) -> Result<(), SendError<I>> {
        self.offer(item, Offer::Send)
    }

    /// Sends an item only if the first stage has room for it now. A batch
    /// stage first always has room: the item joins a batch (handing a
    /// full batch on may wait for room in the stage after).
    ///
    /// # Errors
    /// [`SendError::Full`] when the first stage's buffer is full; else as
    /// [`send`](Self::send). The item is handed back.
    pub fn try_send(&self, item: I) -> Result<(), SendError<I>> {
        self.offer(item, Offer::TrySend)
    }

    /// Sends an item, waiting at most `timeout` for room in the first
    /// stage.
    ///
    /// # Errors
    /// [`SendError::Timeout`] when no room came in time; else as
    /// [`send`](Self::send). The item is handed back.
    pub fn send_timeout(&self, item: I, timeout: Duration) -> Result<(), SendError<I>> {
        match Instant::now().checked_add(timeout) {
            Some(until) => self.offer(item, Offer::SendUntil(until)),
            None => self.offer(item, Offer::Send),
        }
    }

    fn offer(&self, item: I, offer: Offer) -> Result<(), SendError<I>> {
        let closed = |item| {
            if self.shared.failure.lock().is_some() {
                SendError::Failed(item)
            } else {
                SendError::Closed(item)
            }
        };
        let Some(_inside) = self.shared.intake.enter() else {
            return Err(closed(item));
        };
        match (self.source)(item, offer) {
            // `Counted`: the first stage's key function panicked on it; it
            // is that stage's failed item, as if its function had.
            Ok(()) | Err(Refused::Counted) => Ok(()),
            Err(Refused::Full(item)) => Err(match offer {
                Offer::TrySend => SendError::Full(item),
                _ => SendError::Timeout(item),
            }),
            Err(Refused::Closed(item)) => Err(closed(item)),
        }
    }

    /// The failure that stopped a fail-fast pipeline, if any.
    pub fn failure(&self) -> Option<ItemError> {
        self.shared.failure.lock().clone()
    }

    /// Stops the pipeline now: the source refuses more, queued items are
    /// cancelled (counted per stage at shutdown).
    pub fn cancel(&self) {
        self.shared.intake.close();
        self.shared.token.cancel();
    }

    /// Stops the source, drains each stage into the next and closes it, in
    /// order; returns what each stage did.
    pub fn shutdown(&self) -> PipelineReport {
        self.close(None)
    }

    /// As [`shutdown`](Self::shutdown), but past `timeout` (for the whole
    /// pipeline) what is still queued is abandoned, counted per stage. A
    /// `timeout` too far off for the clock (`Duration::MAX`) is
    /// [`shutdown`](Self::shutdown).
    pub fn shutdown_timeout(&self, timeout: Duration) -> PipelineReport {
        // A timeout past what an `Instant` holds drains everything.
        self.close(Instant::now().checked_add(timeout))
    }

    fn close(&self, deadline: Option<Instant>) -> PipelineReport {
        if let Some(d) = deadline {
            let _ = self.shared.deadline.set(d);
        }
        // Sends already inside put their items into the first stage before
        // it closes (until the deadline: past it, a send still waiting for
        // room is refused when the first stage closes, counted there).
        self.shared.intake.close_and_wait(deadline);
        let mut stages = Vec::with_capacity(self.stages.len());
        for part in &self.stages {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            stages.push(match part {
                Part::Pool { pool, counts } => {
                    let r = match left {
                        Some(left) => pool.shutdown_timeout(left),
                        None => pool.shutdown(),
                    };
                    StageReport {
                        name: pool.name().to_string(),
                        received: counts.received.load(Relaxed),
                        completed: counts.completed.load(Relaxed),
                        failed: counts.failed.load(Relaxed),
                        panicked: counts.panicked.load(Relaxed),
                        cancelled: r.cancelled,
                        abandoned: r.abandoned + counts.abandoned.load(Relaxed),
                        still_running: r.still_running,
                        batches: [0; 3],
                    }
                }
                Part::Batch {
                    name,
                    flush,
                    timer,
                    counts,
                } => {
                    timer.shutdown_now();
                    flush(deadline);
                    StageReport {
                        name: name.clone(),
                        received: counts.received.load(Relaxed),
                        completed: counts.handed_items.load(Relaxed),
                        panicked: counts.panicked.load(Relaxed),
                        abandoned: counts.abandoned.load(Relaxed),
                        batches: [
                            counts.batches_full.load(Relaxed),
                            counts.batches_timer.load(Relaxed),
                            counts.batches_shutdown.load(Relaxed),
                        ],
                        ..StageReport::default()
                    }
                }
            });
        }
        PipelineReport {
            stages,
            failure: self.failure(),
        }
    }

    /// Each pool stage's metrics (queue depth, in flight, throughput,
    /// queue wait and service time histograms, workers), in order; each
    /// snapshot's `name` is its stage's.
    pub fn metrics(&self) -> Vec<Metrics> {
        self.stages
            .iter()
            .filter_map(|p| match p {
                Part::Pool { pool, .. } => Some(pool.metrics()),
                Part::Batch { .. } => None,
            })
            .collect()
    }

    /// Each pool stage's resizes so far, with the stage's name.
    pub fn resize_history(&self) -> Vec<(String, crate::metrics::ResizeEvent)> {
        let mut all = Vec::new();
        for part in &self.stages {
            if let Part::Pool { pool, .. } = part {
                let name = pool.name().to_string();
                all.extend(pool.resize_history().into_iter().map(|r| (name.clone(), r)));
            }
        }
        all
    }

    /// Every stage's metrics as one Prometheus text (a `pool` label per
    /// stage), plus each batch stage's buffered items.
    pub fn to_prometheus(&self, prefix: &str) -> String {
        let mut out = String::new();
        Metrics::write_prometheus_all(&self.metrics(), prefix, &mut out)
            .expect("writing to a String cannot fail");
        let batches: Vec<(&str, u64)> = self
            .stages
            .iter()
            .filter_map(|p| match p {
                Part::Batch { name, counts, .. } => {
                    Some((name.as_str(), counts.buffered.load(Relaxed)))
                }
                Part::Pool { .. } => None,
            })
            .collect();
        if !batches.is_empty() {
            let prefix = crate::metrics::prometheus_prefix(prefix);
            out.push_str(&format!(
                "# HELP {prefix}_batch_items_buffered Items waiting in a batch stage's open batches.\n# TYPE {prefix}_batch_items_buffered gauge\n"
            ));
            for (name, n) in batches {
                let name = crate::metrics::escape_label(name);
                out.push_str(&format!(
                    "{prefix}_batch_items_buffered{{stage=\"{name}\"}} {n}\n"
                ));
            }
        }
        out
    }
}

impl<I> Drop for Pipeline<I> {
    fn drop(&mut self) {
        // Drain in order, as `shutdown` does (a no-op if it already ran).
        // No send can be inside: it would borrow the pipeline.
        self.shared.intake.close();
        for part in &self.stages {
            match part {
                Part::Pool { pool, .. } => {
                    pool.shutdown();
                }
                Part::Batch { flush, timer, .. } => {
                    timer.shutdown_now();
                    flush(None);
                }
            }
        }
    }
}
