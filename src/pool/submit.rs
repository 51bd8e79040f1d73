//! How a described task reaches the pool: validation, the choice between
//! the lean bodies and the context body, and the route (straight to
//! admission, through the tenants' queues, or onto the timing wheel).

use super::task::TaskBuilder;
use crate::error::{InvalidOption, SubmitError, TaskError};
use crate::loom::sync::Arc;
use crate::sched::Wait;
use crate::task::cancel::{meta, ContextTask, CxBody, NoCx, TaskOptions};
use crate::task::job::{Execute, Runnable};
use crate::task::{CancelToken, JoinHandle, Slot, Spawn};
use crate::tenants::{Ask, Tenants};
use std::time::Instant;

impl TaskBuilder<'_> {
    #[inline]
    pub(super) fn wait(&self) -> Wait {
        match self.room {
            None => Wait::Policy,
            // A wait past what an `Instant` holds is the policy's own
            // wait, as long as it takes.
            Some(d) => Instant::now()
                .checked_add(d)
                .map_or(Wait::Policy, Wait::Until),
        }
    }

    /// Whether no option needs the context body (a name, a deadline or a
    /// token): plain and keyed tasks take the lean bodies.
    #[inline]
    pub(super) fn plain(&self) -> bool {
        self.options.as_ref().map_or(true, |o| o.is_plain())
    }

    /// Into the queues, or onto the timing wheel when the task is due
    /// later.
    #[inline]
    pub(super) fn submit<R: Runnable>(&self, body: R, wait: Wait) -> Result<(), SubmitError<R>> {
        if self.options.is_some() || self.routed() {
            return self.submit_with_options(body, wait);
        }
        self.registry.submit(body, wait, self.shard).map(drop)
    }

    /// Where the task waits when it comes off the timing wheel: its
    /// tenant's queue, if it has a tenant, a priority or a cost, or the
    /// pool a rate limit (the tenants are made now, so that the wheel finds
    /// them); else `None`, the pool's queues.
    pub(super) fn hold(&self) -> Option<crate::task::job::Hold> {
        if self.share.is_none() && self.registry.config.rate_limit.is_none() {
            return None;
        }
        let ask = self.ask();
        Tenants::of(self.registry);
        Some(ask.hold(&ask.tenant_id()))
    }

    /// What the task asks of its tenant: the options given, in its shard.
    fn ask(&self) -> Ask {
        let mut ask = self
            .share
            .as_deref()
            .cloned()
            .unwrap_or_else(|| Ask::plain(None));
        ask.shard = self.shard;
        ask
    }

    /// Whether the task goes through the tenants' queues: it has a tenant,
    /// a priority or a cost, or the pool has a rate limit, or it is keyed
    /// and an earlier task of its shard without a tenant waits there.
    #[inline]
    pub(super) fn routed(&self) -> bool {
        self.share.is_some()
            || self.registry.config.rate_limit.is_some()
            || self.shard.is_some_and(|s| self.registry.shard_held(s))
    }

    #[inline(never)]
    fn submit_with_options<R: Runnable>(&self, body: R, wait: Wait) -> Result<(), SubmitError<R>> {
        let at = self.options.as_ref().and_then(|o| o.at);
        // Watched while the task waits on the wheel or in a tenant's
        // queue.
        let token = self.options.as_ref().and_then(|o| o.parent.as_ref());
        if self.routed() {
            return match at {
                // On the wheel until due, then into its tenant's queue.
                Some(at) => {
                    let hold = self.hold().map(Box::new);
                    self.registry
                        .schedule_new(body, at, self.shard, None, hold, token)
                }
                None => Tenants::submit(self.registry, body, self.ask(), wait, token),
            };
        }
        match at {
            Some(at) => self
                .registry
                .schedule_new(body, at, self.shard, None, None, token),
            None => self.registry.submit(body, wait, self.shard).map(drop),
        }
    }

    /// What is wrong with the options, if anything (`fallible`: the
    /// terminal call runs a task that can fail).
    #[inline]
    pub(super) fn invalid(&self, fallible: bool) -> Option<InvalidOption> {
        if self.options.is_none() && self.share.is_none() {
            return None;
        }
        self.invalid_options(fallible)
    }

    #[cold]
    #[inline(never)]
    pub(super) fn invalid_options(&self, fallible: bool) -> Option<InvalidOption> {
        if let Some(share) = self.share.as_deref() {
            if let Err(why) = Tenants::check_cost(self.registry, share) {
                return Some(why);
            }
        }
        let options = self.options.as_deref()?;
        if let Some(why) = &options.invalid {
            return Some(why.clone());
        }
        match &options.retry {
            Some(_) if !fallible => Some(InvalidOption::new(
                "retry",
                "a closure that cannot fail",
                "a fallible task (spawn_fallible, spawn_fallible_if, execute_fallible)",
            )),
            Some(policy) => policy.validate().err(),
            None => None,
        }
    }

    pub(super) fn slot<T>(&self, token: Option<CancelToken>) -> Arc<Slot<Result<T, TaskError>>> {
        let pool = self.shard.map(|shard| (self.registry.id(), shard));
        Arc::new(Slot::with(token, pool))
    }

    #[inline]
    pub(super) fn execute_waiting<F>(self, f: F, wait: Wait) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        if self.options.is_none() && !self.routed() {
            // No option: the lean body, straight to admission.
            return self
                .registry
                .submit(Execute(f), wait, self.shard)
                .map(drop)
                .map_err(|e| e.map(|Execute(f)| f));
        }
        self.execute_with_options(f, wait)
    }

    #[inline(never)]
    pub(super) fn execute_with_options<F>(self, f: F, wait: Wait) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        if let Some(why) = self.invalid(false) {
            return Err(SubmitError::Invalid(f, why));
        }
        if self.plain() {
            return self
                .submit(Execute(f), wait)
                .map_err(|e| e.map(|Execute(f)| f));
        }
        self.submit_context(NoCx(f), wait).map(drop)
    }

    pub(super) fn spawn_waiting<F, T>(
        self,
        f: F,
        wait: Wait,
    ) -> Result<JoinHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if let Some(why) = self.invalid(false) {
            return Err(SubmitError::Invalid(f, why));
        }
        if !self.plain() {
            return self.submit_context(NoCx(f), wait);
        }
        let slot = self.slot(None);
        let body = Spawn {
            f,
            slot: Arc::clone(&slot),
        };
        match self.submit(body, wait) {
            Ok(()) => Ok(JoinHandle::new(slot)),
            Err(e) => Err(e.map(|s| s.f)),
        }
    }

    /// Submits a task body of a layer above as it is, fire and forget,
    /// waiting for room as `wait` says, so that a refusal hands the body
    /// itself back (a pipeline gets its item back, not a closure around
    /// it). The builder carries no option that needs a context (a name, a
    /// deadline, a token): the body runs as a plain task.
    pub(crate) fn execute_runnable<R: Runnable>(
        self,
        body: R,
        wait: Wait,
    ) -> Result<(), SubmitError<R>> {
        debug_assert!(self.plain(), "a runnable body takes no context option");
        if let Some(why) = self.invalid(false) {
            return Err(SubmitError::Invalid(body, why));
        }
        self.submit(body, wait)
    }

    pub(super) fn submit_context<B, T>(
        mut self,
        body: B,
        wait: Wait,
    ) -> Result<JoinHandle<T>, SubmitError<B::Inner>>
    where
        B: CxBody<T>,
        T: Send + 'static,
    {
        let options = self.take_options();
        let slot = self.slot(Some(self.token(&options)));
        let task = ContextTask {
            f: body,
            slot: Arc::clone(&slot),
            meta: meta(options.resolve(), options.name),
        };
        match self.submit(task, wait) {
            Ok(()) => Ok(JoinHandle::new(slot)),
            Err(e) => Err(e.map(|t| t.f.into_inner())),
        }
    }

    /// The options, taken out of the builder; a task due later keeps its
    /// instant, and one that waits (on the wheel, or in a tenant's queue)
    /// the token watched meanwhile, in the builder for `submit`.
    pub(super) fn take_options(&mut self) -> TaskOptions {
        let options = self
            .options
            .take()
            .map_or_else(TaskOptions::default, |o| *o);
        if options.at.is_some() || (options.parent.is_some() && self.routed()) {
            let (at, parent) = (options.at, options.parent.clone());
            let kept = self.options();
            kept.at = at;
            kept.parent = parent;
        }
        options
    }

    /// The token that cancels a new task from above: the one given, or
    /// the pool's (the task's own is made only if its context asks).
    pub(super) fn token(&self, options: &TaskOptions) -> CancelToken {
        let root = &self.registry.token;
        match &options.parent {
            // Shutdown already cancelled the pool's tasks: this one too.
            Some(parent) if root.is_cancelled() => {
                let token = parent.child();
                token.cancel();
                token
            }
            Some(parent) => parent.clone(),
            None => root.clone(),
        }
    }
}
