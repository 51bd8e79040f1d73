//! A pipeline stage on a pool of its own: its buffer is the pool's bounded
//! queue (`Block` when full, so a slow stage stalls the one before it), its
//! workers the pool's (fixed, or elastic under the pool's own Little's-law
//! supervisor), its per-key order the pool's keyed tasks.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::pool::Pool;
use crate::task::cancel::CancelToken;
use crate::Backpressure;

use super::{ItemError, KeyFn, Next, PipelineError, Shared, Stage, Workers};
use crate::task::job::panic_message;

/// What a stage did with its items; with its pool's cancelled and
/// abandoned tasks, `received = completed + failed + panicked + cancelled
/// + abandoned` once it has shut down.
#[derive(Default, Debug)]
pub(crate) struct StageCounts {
    pub(crate) received: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) emitted: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) abandoned: AtomicU64,
}

/// A stage's body: consumes one item, hands each output to `emit`.
pub(crate) type Body<O, P> = dyn Fn(O, &mut dyn FnMut(P)) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    + Send
    + Sync;

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
    let pool = builder.build().map_err(|e| PipelineError::Pool {
        stage: spec.name.clone(),
        error: e,
    })?;
    let counts = Arc::new(StageCounts::default());
    let handle = pool.handle();
    let name: Arc<str> = spec.name.into();
    let token: CancelToken = shared.token.clone();
    let submit_counts = Arc::clone(&counts);
    let shared = Arc::clone(shared);
    let submit: Next<O> = Arc::new(move |item: O| {
        submit_counts.received.fetch_add(1, Relaxed);
        let (key, item) = match &key {
            Some(k) => {
                let (k, item) = shared.key_of(k, item, &name, &submit_counts.panicked)?;
                (Some(k), item)
            }
            None => (None, item),
        };
        let (body, next, counts, shared, name) = (
            Arc::clone(&body),
            Arc::clone(&next),
            Arc::clone(&submit_counts),
            Arc::clone(&shared),
            Arc::clone(&name),
        );
        let deadline = shared.deadline.get().copied();
        let run = move || run_item(item, &*body, &next, &counts, &shared, &name);
        let task = handle.task().cancel_token(&token);
        // Past a shutdown's deadline nothing waits for room (a submission
        // already waiting is refused when this stage closes).
        let task = match deadline {
            Some(d) => task.wait_for_room(d.saturating_duration_since(Instant::now())),
            None => task,
        };
        let task = match key {
            Some(k) => task.key(&k),
            None => task,
        };
        if task.execute(run).is_err() {
            // Shut down (or cancelled) under the submitter: the item ends
            // here, counted.
            submit_counts.abandoned.fetch_add(1, Relaxed);
            return Err(());
        }
        Ok(())
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
    // A refused output was counted as abandoned by the next stage.
    let mut emit = |out: P| {
        if next(out).is_ok() {
            counts.emitted.fetch_add(1, Relaxed);
        }
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
