//! A stage's declaration: its name, workers, buffer and sizing settings.

use std::time::Duration;

use super::PipelineError;

/// How many workers a stage has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Workers {
    Fixed(usize),
    Elastic(usize, usize),
}

/// A stage's name, workers and buffer (and, for an elastic stage, its
/// pool's sizing settings).
#[derive(Clone, Debug)]
pub struct Stage {
    pub(super) name: String,
    pub(super) workers: Workers,
    pub(super) buffer: usize,
    pub(super) keep_alive: Option<Duration>,
    pub(super) queue_wait_target: Option<Duration>,
}

/// The default buffer of a stage: items waiting for its workers.
pub const DEFAULT_BUFFER: usize = 256;

impl Stage {
    /// A stage with one worker per CPU and a buffer of [`DEFAULT_BUFFER`]
    /// items.
    pub fn new(name: impl Into<String>) -> Stage {
        Stage {
            name: name.into(),
            workers: Workers::Fixed(num_cpus::get().max(1)),
            buffer: DEFAULT_BUFFER,
            keep_alive: None,
            queue_wait_target: None,
        }
    }

    /// A fixed number of workers.
    pub fn workers(mut self, n: usize) -> Stage {
        self.workers = Workers::Fixed(n);
        self
    }

    /// Between `min` and `max` workers, sized by the pool's supervisor
    /// from this stage's own load (Little's law), so the stage that is
    /// the bottleneck gets the workers. A stage whose workers wait for
    /// room in the next stage's full buffer does not grow: the next stage
    /// is the bottleneck (`Metrics::backpressured_workers` counts them).
    pub fn elastic(mut self, min: usize, max: usize) -> Stage {
        self.workers = Workers::Elastic(min, max);
        self
    }

    /// Items that may wait for this stage's workers; a full buffer blocks
    /// the stage before it (or the source).
    pub fn buffer(mut self, n: usize) -> Stage {
        self.buffer = n;
        self
    }

    /// An elastic stage's keep-alive: how long its workers must stay mostly
    /// idle before it shrinks (see
    /// [`Builder::keep_alive`](crate::Builder::keep_alive); default
    /// 10 s). A fixed stage never shrinks, whatever this says.
    pub fn keep_alive(mut self, d: Duration) -> Stage {
        self.keep_alive = Some(d);
        self
    }

    /// An elastic stage's queue-wait target: how long its items may wait
    /// in its buffer before it adds workers (see
    /// [`Builder::queue_wait_target`](crate::Builder::queue_wait_target);
    /// default 20 ms).
    pub fn queue_wait_target(mut self, d: Duration) -> Stage {
        self.queue_wait_target = Some(d);
        self
    }

    pub(super) fn validate(&self) -> Result<(), PipelineError> {
        let bad = |option: &'static str, value: String, expected: &'static str| {
            Err(PipelineError::Invalid {
                stage: self.name.clone(),
                option,
                value,
                expected,
            })
        };
        if self.buffer == 0 {
            return bad("buffer", "0".into(), "at least 1 item");
        }
        match self.workers {
            Workers::Fixed(0) => bad("workers", "0".into(), "at least 1"),
            Workers::Elastic(0, _) => bad("elastic", "min 0".into(), "min at least 1"),
            Workers::Elastic(lo, hi) if lo > hi => {
                bad("elastic", format!("{lo}..{hi}"), "min at most max")
            }
            _ if self.keep_alive.is_some_and(|d| d.is_zero()) => {
                bad("keep_alive", "0s".into(), "above zero")
            }
            _ if self.queue_wait_target.is_some_and(|d| d.is_zero()) => {
                bad("queue_wait_target", "0s".into(), "above zero")
            }
            _ => Ok(()),
        }
    }
}
