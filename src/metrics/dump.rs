//! What every worker is doing now: the thread dump of a stuck pool.

use super::status::WorkerState;
use std::fmt;
use std::time::Duration;

/// One worker in a [`PoolDump`].
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerDump {
    /// The worker's thread name.
    pub thread_name: String,
    /// What it is doing.
    pub state: WorkerState,
    /// The sequence number (on this worker) of the task it runs or ran last.
    pub task: u64,
    /// How long the current task has been running (when `Running` and
    /// timing is on).
    pub running_for: Option<Duration>,
    /// Jobs in its own deque.
    pub queue_len: usize,
    /// The keyed shard it is running, if any.
    pub shard: Option<usize>,
    /// The running task's name, if it was given one.
    pub task_name: Option<String>,
}

/// What every worker is doing now, from [`PoolHandle::dump`]: the thread
/// dump of a stuck pool. `Display` prints one line per worker.
///
/// [`PoolHandle::dump`]: crate::PoolHandle::dump
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PoolDump {
    /// The pool's name.
    pub name: String,
    /// One entry per worker.
    pub workers: Vec<WorkerDump>,
    /// Jobs in the global injector.
    pub injector_len: usize,
    /// Tasks accepted and not started.
    pub queued: usize,
    /// The busiest tenants now: at most 10, then the rest summed as
    /// `(other)`.
    pub tenants: Vec<TenantDump>,
}

/// A tenant's queue and running work, as the dump shows it.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantDump {
    /// The tenant (`(other)` for the rest).
    pub name: String,
    /// Tasks waiting in its queue.
    pub queued: u64,
    /// Cost units of its tasks running now.
    pub running: u64,
}

impl fmt::Display for PoolDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pool {}: {} queued ({} in the injector)",
            self.name, self.queued, self.injector_len
        )?;
        for w in &self.workers {
            write!(f, "  {} {:?}", w.thread_name, w.state)?;
            if w.state == WorkerState::Running {
                write!(f, " task #{}", w.task)?;
                if let Some(d) = w.running_for {
                    write!(f, " for {d:?}")?;
                }
            }
            if let Some(name) = &w.task_name {
                write!(f, " ({name})")?;
            }
            if let Some(shard) = w.shard {
                write!(f, " in shard {shard}")?;
            }
            writeln!(f, ", deque {}", w.queue_len)?;
        }
        for t in &self.tenants {
            writeln!(
                f,
                "  tenant {}: {} queued, {} units running",
                t.name, t.queued, t.running
            )?;
        }
        Ok(())
    }
}

/// What the stall watchdog reports.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StallReport {
    /// A task has run longer than the stall threshold.
    Task {
        /// The worker thread running it.
        thread_name: String,
        /// The task's sequence number on that worker (as in `dump`).
        task: u64,
        /// How long it had been running when seen.
        running_for: Duration,
        /// The task's name, if it was given one (`TaskOptions::name`).
        name: Option<String>,
        /// The keyed shard it belongs to, for a keyed task.
        shard: Option<usize>,
    },
    /// A queued task has waited longer than the stall threshold (an upper
    /// bound, see `Metrics::queue_ages`): some queue is not being served.
    /// Reported once until the wait falls below the threshold again.
    QueueWait {
        /// The bound on the oldest queued task's wait.
        waited: Duration,
    },
    /// `parking_lot`'s deadlock detector found a cycle of threads blocked
    /// on each other's locks (feature `deadlock_detection`).
    Deadlock {
        /// The ids of the threads in the cycle.
        threads: Vec<String>,
    },
}

impl fmt::Display for StallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StallReport::Task {
                thread_name,
                task,
                running_for,
                name,
                shard,
            } => {
                write!(f, "stalled task: task #{task}")?;
                if let Some(name) = name {
                    write!(f, " ({name})")?;
                }
                if let Some(shard) = shard {
                    write!(f, " of shard {shard}")?;
                }
                write!(f, " on {thread_name} has been running for {running_for:?}")
            }
            StallReport::QueueWait { waited } => {
                write!(f, "queue wait: a queued task has waited up to {waited:?}")
            }
            StallReport::Deadlock { threads } => write!(
                f,
                "deadlock: threads {} wait on each other's locks",
                threads.join(", ")
            ),
        }
    }
}
