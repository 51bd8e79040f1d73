//! What every stage of a pipeline shares: the intake, cancellation, the
//! error policy, the first failure, and the shutdown's deadline.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;

use super::intake::Intake;
use super::{ItemError, KeyFn};
use crate::sched::Wait;
use crate::task::cancel::CancelToken;
use crate::task::job::panic_message;

pub(crate) type ErrorSink = Arc<dyn Fn(ItemError) + Send + Sync>;

/// What every stage shares: the intake, cancellation, the error policy,
/// the first failure, the shutdown's deadline.
pub(crate) struct Shared {
    pub(crate) intake: Intake,
    pub(crate) token: CancelToken,
    /// Set once a shutdown with a deadline begins: from then on a stage's
    /// submission waits for room only until it.
    pub(crate) deadline: OnceLock<Instant>,
    pub(crate) fail_fast: bool,
    pub(crate) on_error: Option<ErrorSink>,
    pub(crate) failure: Mutex<Option<ItemError>>,
}

impl Shared {
    pub(crate) fn new(fail_fast: bool, on_error: Option<ErrorSink>) -> Shared {
        Shared {
            intake: Intake::new(),
            token: CancelToken::new(),
            deadline: OnceLock::new(),
            fail_fast,
            on_error,
            failure: Mutex::new(None),
        }
    }

    /// `item`'s key in `stage`, by the user's key function. When that
    /// panics, the item is that stage's panic: counted in `panicked`,
    /// reported like any panic there (the error handler, or failing a
    /// fail-fast pipeline), and dropped (its destructor contained); the
    /// caller refuses it (`Err`), so the stage before does not count it as
    /// handed on.
    pub(crate) fn key_of<T>(
        &self,
        key: &KeyFn<T>,
        item: T,
        stage: &str,
        panicked: &AtomicU64,
    ) -> Result<(u64, T), ()> {
        match catch_unwind(AssertUnwindSafe(|| key(&item))) {
            Ok(k) => Ok((k, item)),
            Err(payload) => {
                // Relaxed: a stage's tally (see `StageCounts`).
                panicked.fetch_add(1, Relaxed);
                self.fail(ItemError {
                    stage: stage.to_string(),
                    message: panic_message(&*payload),
                    panicked: true,
                });
                let _ = catch_unwind(AssertUnwindSafe(move || drop((item, payload))));
                Err(())
            }
        }
    }

    pub(crate) fn fail(&self, e: ItemError) {
        if self.fail_fast {
            let mut first = self.failure.lock();
            if first.is_none() {
                *first = Some(e);
            }
            drop(first);
            self.intake.close();
            self.token.cancel();
        } else if let Some(sink) = &self.on_error {
            sink(e);
        }
    }
}

/// How an item is offered to a stage.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Offer {
    /// From the stage before: waits for room (until a shutdown's deadline);
    /// a refused item ends in this stage, counted as abandoned.
    Emit,
    /// From `send`: waits for room; a refused item is handed back.
    Send,
    /// From `send_timeout`: waits for room until then.
    SendUntil(Instant),
    /// From `try_send`: does not wait.
    TrySend,
}

impl Offer {
    /// How the stage's pool waits for room, given the shutdown's deadline.
    pub(crate) fn wait(self, deadline: Option<Instant>) -> Wait {
        match (self, deadline) {
            (Offer::TrySend, _) => Wait::Never,
            (Offer::SendUntil(until), Some(d)) => Wait::Until(until.min(d)),
            (Offer::SendUntil(until), None) => Wait::Until(until),
            (Offer::Emit | Offer::Send, Some(d)) => Wait::Until(d),
            (Offer::Emit | Offer::Send, None) => Wait::Policy,
        }
    }
}

/// Why a stage did not take an item.
#[derive(Debug)]
pub(crate) enum Refused<T> {
    /// The item ended in the stage and is counted there (its key panicked,
    /// or it came from the stage before and the stage refused it).
    Counted,
    /// A send's item, handed back: no room in time.
    Full(T),
    /// A send's item, handed back: the stage is closed.
    Closed(T),
}
