//! A pipeline stage on a pool of its own: its buffer is the pool's bounded
//! queue (`Block` when full, so a slow stage stalls the one before it), its
//! workers the pool's (fixed, or elastic under the pool's own Little's-law
//! supervisor), its per-key order the pool's keyed tasks.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::error::{SubmitError, TaskError};
use crate::pool::Pool;
use crate::task::job::{Outcome, Runnable};
use crate::Backpressure;

use super::spec::Workers;
use super::{ItemError, KeyFn, Next, Offer, PipelineError, Refused, Shared, Stage};
use crate::task::job::panic_message;

/// What a stage did with its items; with its pool's cancelled and
/// abandoned tasks, `received = completed + failed + panicked + cancelled
/// + abandoned` once it has shut down.
///
/// Every access is `Relaxed`: each count is a tally that orders nothing
/// else, and a report reads them after the stage's pool has shut down
/// (which joins its workers, or reports those still running).
///
/// `received` and `abandoned` are written by the stage's senders,
/// `completed` and the failures by its workers: a cache line each, so that
/// neither side's tally moves the other's line.
#[derive(Default, Debug)]
pub(crate) struct StageCounts {
    pub(crate) received: CachePadded<AtomicU64>,
    pub(crate) abandoned: AtomicU64,
    pub(crate) completed: CachePadded<AtomicU64>,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
}

/// A stage's body: consumes one item, hands each output to `emit`.
pub(crate) type Body<O, P> = dyn Fn(O, &mut dyn FnMut(P)) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    + Send
    + Sync;

/// What a stage's item task carries besides the item: one `Arc` a task.
/// The `Arc`'s counts change with every item, on the sender's thread and
/// then the worker's; the fields are read by every item. Padded
/// (`Arc<CachePadded<Ctx>>`), they sit on a cache line the counts do not
/// move.
struct Ctx<O, P> {
    body: Arc<Body<O, P>>,
    next: Next<P>,
    counts: Arc<StageCounts>,
    shared: Arc<Shared>,
    name: Arc<str>,
}

/// An item queued in a stage: runs the stage's body on it (unless the
/// pipeline was cancelled meanwhile), or hands the item back when the
/// stage refuses it.
struct ItemTask<O, P> {
    item: O,
    ctx: Arc<CachePadded<Ctx<O, P>>>,
}

impl<O: Send + 'static, P: Send + 'static> Runnable for ItemTask<O, P> {
    fn run(self) -> Outcome {
        let c = &**self.ctx;
        if c.shared.token.is_cancelled() {
            // Cancelled (fail-fast, or `Pipeline::cancel`) before it
            // started: the pool counts it so.
            let item = self.item;
            let _ = catch_unwind(AssertUnwindSafe(move || drop(item)));
            return Outcome::Cancelled;
        }
        run_item(self.item, &*c.body, &c.next, &c.counts, &c.shared, &c.name);
        Outcome::Done
    }

    fn discard(self, _why: TaskError) {
        // An item's destructor may panic; the pool must survive it.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(self)));
    }
}

/// Builds the pool of `spec` and returns what submits an item into it.
pub(crate) fn pool_stage<O, P>(
    spec: Stage,
    key: Option<KeyFn<O>>,
    body: Arc<Body<O, P>>,
    next: Next<P>,
    shared: &Arc<Shared>,
) -> Result<(Next<O>, Pool, Arc<StageCounts>), PipelineError>
where
    O: Send + 'static,
    P: Send + 'static,
{
    let builder = Pool::builder()
        .name(spec.name.clone())
        .thread_name(format!("pipe-{}", spec.name))
        .queue_capacity(spec.buffer)
        .backpressure(Backpressure::Block);
    let builder = match spec.workers {
        Workers::Fixed(n) => builder.workers(n),
        Workers::Elastic(lo, hi) => builder.min_workers(lo).max_workers(hi),
    };
    let builder = match spec.keep_alive {
        Some(d) => builder.keep_alive(d),
        None => builder,
    };
    let builder = match spec.queue_wait_target {
        Some(d) => builder.queue_wait_target(d),
        None => builder,
    };
    let pool = builder.build().map_err(|e| PipelineError::Pool {
        stage: spec.name.clone(),
        error: e,
    })?;
    let counts = Arc::new(StageCounts::default());
    let handle = pool.handle();
    let ctx = Arc::new(CachePadded::new(Ctx {
        body,
        next,
        counts: Arc::clone(&counts),
        shared: Arc::clone(shared),
        name: spec.name.into(),
    }));
    let submit: Next<O> = Arc::new(move |item: O, offer: Offer| {
        let c = &**ctx;
        // Counted first, so a report never shows an item done that was
        // not received; a send's item handed back is taken off again.
        c.counts.received.fetch_add(1, Relaxed);
        let (key, item) = match &key {
            Some(k) => match c.shared.key_of(k, item, &c.name, &c.counts.panicked) {
                Ok((k, item)) => (Some(k), item),
                Err(()) => return Err(Refused::Counted),
            },
            None => (None, item),
        };
        let task = handle.task();
        let task = match key {
            Some(k) => task.key(&k),
            None => task,
        };
        let wait = offer.wait(c.shared.deadline.get().copied());
        let job = ItemTask {
            item,
            ctx: Arc::clone(&ctx),
        };
        match task.execute_runnable(job, wait) {
            Ok(()) => Ok(()),
            Err(refused) => {
                let full = matches!(refused, SubmitError::Full(_) | SubmitError::Timeout(_));
                let item = refused.into_inner().item;
                if let Offer::Emit = offer {
                    // From the stage before: the item ends here, counted.
                    c.counts.abandoned.fetch_add(1, Relaxed);
                    drop(item);
                    return Err(Refused::Counted);
                }
                c.counts.received.fetch_sub(1, Relaxed);
                Err(if full && !c.shared.intake.is_closed() {
                    Refused::Full(item)
                } else {
                    Refused::Closed(item)
                })
            }
        }
    });
    Ok((submit, pool, counts))
}

fn run_item<O, P>(
    item: O,
    body: &Body<O, P>,
    next: &Next<P>,
    counts: &StageCounts,
    shared: &Shared,
    name: &str,
) {
    // A refused output is counted as abandoned by the next stage.
    let mut emit = |out: P| {
        let _ = next(out, Offer::Emit);
    };
    match catch_unwind(AssertUnwindSafe(|| body(item, &mut emit))) {
        Ok(Ok(())) => {
            counts.completed.fetch_add(1, Relaxed);
        }
        Ok(Err(e)) => {
            counts.failed.fetch_add(1, Relaxed);
            shared.fail(ItemError {
                stage: name.to_string(),
                message: e.to_string(),
                panicked: false,
            });
        }
        Err(payload) => {
            counts.panicked.fetch_add(1, Relaxed);
            shared.fail(ItemError {
                stage: name.to_string(),
                message: panic_message(&*payload),
                panicked: true,
            });
        }
    }
}
