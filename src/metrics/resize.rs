//! Resize records: what the supervisor saw and why it resized the pool.

use std::time::Duration;

/// What the supervisor saw over one interval.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Observation {
    /// The interval's length.
    pub elapsed: Duration,
    /// Tasks submitted in the interval.
    pub arrivals: u64,
    /// Tasks that started running in the interval (entered service).
    pub started: u64,
    /// How long, on average, the tasks that started in the interval had
    /// waited in the queue (zero when tasks are not timed).
    pub queue_wait: Duration,
    /// Tasks that finished in the interval.
    pub finished: u64,
    /// Their summed run time.
    pub run_time: Duration,
    /// How long, on average, the tasks running at the end of the interval
    /// (blocked ones included) had run so far: a lower bound of the mean run time before any task
    /// finished (zero when tasks are not timed).
    pub running_age: Duration,
    /// CPU use as a share of all CPUs: the larger of the workers' own (exact
    /// thread clocks, over the interval) and the whole process's (over the
    /// last window of at least 50 ms: Linux folds other running threads'
    /// time into it only at scheduler ticks); `None` before any reading.
    pub machine_load: Option<f64>,
    /// CPU time ÷ time able to run, of the workers that ran tasks for most
    /// of the interval (time spent waiting for a CPU left out): near 1 for
    /// compute, near 0 for blocking work; `None` without thread clocks or
    /// without such a worker.
    pub task_cpu_share: Option<f64>,
    /// Live workers.
    pub live: usize,
    /// Workers running a task at the sample (blocked ones included).
    pub busy: usize,
    /// Workers running tasks on average over the interval: the tasks in
    /// service, as measured (Little's L).
    pub mean_busy: f64,
    /// Workers in a task that has run more than twice the mean run time of
    /// the tasks that finished in the interval (zero when none finished, or
    /// tasks are not timed).
    pub held: usize,
    /// Workers announced as blocked.
    pub blocked: usize,
    /// Workers that ran a task for most of the interval but slept (neither
    /// on a CPU nor waiting for one) for at least half of it: blocked
    /// without announcing it: its run-queue wait was short, so it was not
    /// waiting for a CPU either.
    pub stalled: usize,
    /// Workers that ran a task for most of the interval on less than half
    /// a CPU, whose run-queue wait is read for the first time: classified
    /// at the next sample.
    pub unsure: usize,
    /// Tasks queued.
    pub queued: usize,
    /// Workers waiting for room in another pool's full queue (a pipeline
    /// stage whose next stage is full): the bottleneck is downstream, so
    /// the pool does not grow while any wait.
    #[cfg_attr(feature = "serde", serde(default))]
    pub backpressured: usize,
}

/// Why the pool was resized.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResizeReason {
    /// Little's law (or the backlog) asked for more workers.
    Load,
    /// Workers blocked (announced or seen) while work waited.
    Blocked,
    /// Utilization stayed below the shrink watermark for `keep_alive`: the
    /// pool shrinks to what that quiet spell used.
    Idle,
    /// Growth stopped at the system's thread limit (`limit`: see
    /// `BuildError::ThreadLimit`); the pool keeps working at that size.
    ThreadLimit {
        /// The limit that binds.
        limit: &'static str,
    },
}

/// A resize, as recorded in the history and passed to `on_resize`.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResizeEvent {
    /// When, since the pool was built.
    pub at: Duration,
    /// Live workers before.
    pub from: usize,
    /// Live workers after (for a shrink: asked for; the worker retires
    /// when idle).
    pub to: usize,
    /// Why.
    pub reason: ResizeReason,
    /// What the supervisor saw.
    pub observation: Observation,
}
