//! `block_in_place`: announced blocking.

use crate::sched::WorkerThread;

/// Runs `f`, announcing that it blocks (I/O, a lock, a sleep): on a worker
/// of an auto-scaling pool the worker is counted as blocked rather than busy
/// and the supervisor is woken at once, so it can add a worker while this
/// one waits (as Java's managed blocking and tokio's `block_in_place` do).
/// Elsewhere it just runs `f`.
///
/// ```
/// let pool = ebbtide::Pool::builder().min_workers(1).max_workers(4).build()?;
/// let read = pool.spawn(|| ebbtide::block_in_place(|| {
///     std::thread::sleep(std::time::Duration::from_millis(1)); // stands for I/O
///     42
/// }))?;
/// assert_eq!(read.join()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn block_in_place<R>(f: impl FnOnce() -> R) -> R {
    match WorkerThread::current() {
        Some(worker) => {
            let _blocked = worker.registry().block_guard();
            worker.registry().nudge();
            f()
        }
        None => f(),
    }
}
