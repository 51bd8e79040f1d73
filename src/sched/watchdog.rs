//! The stall watchdog: a thread that reports tasks running longer than a
//! threshold (and, with the `deadlock_detection` feature, lock cycles found
//! by `parking_lot`'s deadlock detector).
//!
//! Every quarter threshold (1 ms .. 1 s) it reads each worker's status
//! (state, task sequence number, start tick); a task that has been running
//! longer than the threshold and was not reported yet is reported once.
//! It exits when the pool has shut down and drained; shutdown unparks it so
//! joining it does not wait out a check interval.

use crate::loom::sync::Arc;
use crate::loom::thread::{self, JoinHandle};
use crate::metrics::clock::Calibration;
use crate::metrics::{bump, StallReport, WorkerState};
use crate::sched::Registry;
use std::time::{Duration, Instant};

pub(crate) fn spawn(
    registry: Arc<Registry>,
    threshold: Duration,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("{}-watchdog", registry.config.thread_name))
        .spawn(move || {
            #[cfg(not(loom))]
            let _abort = super::abort::AbortOnPanic("the stall watchdog");
            run(&registry, threshold);
        })
}

fn report(registry: &Registry, stall: &StallReport) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "ebbtide", pool = %registry.config.name, report = %stall, "stall");
    match &registry.config.on_stall {
        Some(handler) => {
            // A panicking handler must not take the watchdog down.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(stall)));
        }
        None => eprintln!("ebbtide: {stall}"),
    }
}

fn run(registry: &Registry, threshold: Duration) {
    let interval = (threshold / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
    let mut reported = vec![0u64; registry.max_workers()];
    let mut starving = false;
    loop {
        registry.watchdog.park_until(Instant::now() + interval);
        if registry.should_exit() {
            return;
        }
        let now = registry.clock.now();
        let ns_per_tick = registry.clock.ns_per_tick();
        for (i, last) in reported
            .iter_mut()
            .enumerate()
            .take(registry.live_workers())
        {
            let (state, since) = registry.counters.worker(i).status.read();
            // Relaxed: the worker's own count, compared with the last look;
            // a stale value only delays a report to the next look.
            let task = registry
                .counters
                .slot(Some(i))
                .started
                .load(std::sync::atomic::Ordering::Relaxed);
            if state != WorkerState::Running || task == *last {
                continue;
            }
            let running_for = Calibration::to_duration(now.saturating_sub(since), ns_per_tick);
            if running_for >= threshold {
                *last = task;
                bump(&registry.counters.slot(None).stalls);
                report(
                    registry,
                    &StallReport::Task {
                        thread_name: registry.worker_name(i),
                        task,
                        running_for,
                        name: registry.counters.worker(i).status.name(),
                        shard: registry.shard_running_on(i),
                    },
                );
            }
        }
        // A queue whose oldest task has waited past the threshold: once
        // per episode (until its wait falls below the threshold again).
        let waiting = registry.queue_ages().oldest().filter(|&w| w >= threshold);
        match (waiting, starving) {
            (Some(waited), false) => {
                starving = true;
                bump(&registry.counters.slot(None).stalls);
                report(registry, &StallReport::QueueWait { waited });
            }
            (None, true) => starving = false,
            _ => {}
        }
        #[cfg(feature = "deadlock_detection")]
        for cycle in parking_lot::deadlock::check_deadlock() {
            let threads = cycle
                .iter()
                .map(|t| format!("{:?}", t.thread_id()))
                .collect();
            report(registry, &StallReport::Deadlock { threads });
        }
    }
}
