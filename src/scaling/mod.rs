//! Auto-scaling: a supervisor that sizes the pool between `min_workers` and
//! `max_workers`, and the pure policy it follows.
//!
//! Every `interval` (sooner when nudged: a submission finding no idle
//! worker, `block_in_place`; and every [`PROBE`] while a backlog waits and
//! the pool is growing or still gathering evidence) the supervisor observes
//! the pool (`Sampler`) and asks [`decide`]:
//!
//! 1. **Blocking or compute.** Each worker publishes its thread's CPU clock,
//!    which Linux keeps exact even for a running thread. A worker that spent
//!    most of the interval in tasks but less than half of that time on a CPU
//!    either slept or waited for a CPU; its run-queue wait (scheduler
//!    statistics, read for such workers only) tells which ([`classify`]).
//!    One that slept is *stalled*: blocked without announcing it. One that
//!    waited is *starved*: its waiting time is not held against its tasks'
//!    CPU share. Workers announced as blocked (`block_in_place`,
//!    `join_blocking`) count as blocked at once.
//! 2. **Little's law.** With λ the rate of new tasks entering service
//!    (arrivals, less those still queued) and W their mean run time (before
//!    any task finished: the running tasks' age, a lower bound), the tasks
//!    in service are L = λ·W and need L ÷ target utilization workers. λ and
//!    W come from the recent past ([`Recent`](policy::Recent): each earlier
//!    sample weighed down by e^(−age ÷ 100 ms)), since a probe of a quarter
//!    of a millisecond sees a handful of tasks. The queue needs Q·W ÷ `queue_wait_target` more:
//!    enough to drain it within that target. Workers *held* by a task that
//!    has run more than 2·W (a long block the mean does not foresee) are
//!    added on top while work waits behind them (once their tasks end they
//!    are in λ·W already). Before W can be known at all, each waiting
//!    worker is replaced.
//! 3. **CPU cap.** The tasks' CPU share s (CPU time ÷ busy time of the
//!    workers busy most of the interval) caps the pool at CPUs ÷ s (plus the
//!    announced-blocked workers): compute tasks (s ≈ 1) never get more
//!    workers than CPUs, extra threads only add switching; tasks that block
//!    90 % of the time may use ten per CPU. With the CPUs saturated the pool
//!    does not grow beyond max(live − blocked, CPUs) + blocked whatever s
//!    says (CPU-bound run times stretch under oversubscription, which lowers
//!    s). Without a reading the cap is CPUs + blocked.
//! 4. **Hysteresis.** Grow straight to the target when utilization (the
//!    mean busy workers over live) is above the grow watermark, the queue
//!    needs a worker, the tasks that started waited longer than the
//!    queue-wait target, or blocked or held workers hold up queued work.
//!    Shrink only after utilization stayed below the shrink watermark for
//!    `keep_alive`, and then to what that quiet spell used: the most
//!    workers in use at any of its samples (or on average over one of its
//!    intervals; blocked workers are in use) ÷ the target utilization, at
//!    least one worker fewer, never below min; the next shrink waits
//!    another `keep_alive`. In between, stay. A steady load inside the
//!    band never resizes.
//!
//! Retiring a worker never loses a task: the highest-numbered idle worker
//! hands its deque to the injector and its shards to the remaining workers'
//! inboxes, gives its deque back to its slot, wakes the next one down if
//! the shrink reaches it too, and leaves; the supervisor joins it. Work
//! for a parked pool wakes the lowest-numbered sleeper, so the workers a
//! shrink retires are the idle ones. A shrink still under way at the next
//! decision (its highest worker busy) is not asked or recorded again.
//! Growth cancels whatever of a shrink has not happened yet. A key's shard
//! never changes (the shard count is fixed); only its home worker does.

mod block;
mod policy;
mod sampler;
mod supervisor;
#[cfg(all(test, not(loom)))]
mod tests;

pub use block::block_in_place;
pub(crate) use supervisor::spawn;
