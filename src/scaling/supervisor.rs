//! The supervisor thread: samples the pool, asks the policy, resizes.

use super::policy::{decide, probe, takes_batches, Decision, PolicyState, PROBE};
use super::sampler::Sampler;
use crate::loom::sync::Arc;
use crate::metrics::{ResizeEvent, ResizeReason};
use crate::sched::Registry;
use std::time::Instant;

pub(crate) fn spawn(
    registry: Arc<Registry>,
) -> std::io::Result<crate::loom::thread::JoinHandle<()>> {
    crate::loom::thread::Builder::new()
        .name(format!("{}-supervisor", registry.config.thread_name))
        .spawn(move || {
            #[cfg(not(loom))]
            let _abort = crate::sched::abort::AbortOnPanic("the supervisor");
            run(&registry);
        })
}

fn run(registry: &Arc<Registry>) {
    let scaling = registry.config.scaling;
    let probe_period = PROBE.min(scaling.interval);
    let started = Instant::now();
    let slot = registry.counters.slot(None);
    let limits = (
        registry.config.min_workers,
        registry.max_workers(),
        num_cpus::get().max(1),
    );
    let mut state = PolicyState::default();
    let mut sampler = Sampler::new(registry, limits.2);
    let mut period = scaling.interval;
    let mut at_ceiling = false;
    loop {
        let due = sampler.at + period;
        registry.supervisor.park_until(due);
        if Instant::now() >= due {
            // A timed sample: the next nudge may wake the supervisor early.
            registry.rearm_nudge();
        }
        // A nudge wakes the supervisor early, but no sooner than a probe
        // after the last sample: rates over a shorter window mean little.
        let soonest = sampler.at + probe_period;
        if let Some(wait) = soonest.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if registry.is_closed() {
            return;
        }
        registry.reap_retired();
        crate::metrics::bump(&slot.scaling_samples);
        let obs = sampler.observe(registry);
        let (decision, target, next) = decide(&obs, started.elapsed(), state, &scaling, limits);
        state = next;
        if let Some(on) = takes_batches(&obs) {
            registry.set_batches(on);
        }
        period = if probe(&obs, decision, limits.1) {
            probe_period
        } else {
            scaling.interval
        };
        // Relaxed: a gauge for the figures.
        registry
            .target
            .store(target, std::sync::atomic::Ordering::Relaxed);
        match decision {
            Decision::Stay => {}
            Decision::Grow(to, reason) => {
                let from = obs.live;
                let at = started.elapsed();
                let (reached, capped) = Registry::grow_to(registry, to);
                // At the thread limit the pool says so once, then stays.
                let first_cap = capped.is_some() && !at_ceiling;
                at_ceiling = capped.is_some();
                if reached > from || first_cap {
                    registry.record_resize(ResizeEvent {
                        at,
                        from,
                        to: reached,
                        reason: capped.map_or(reason, |limit| ResizeReason::ThreadLimit { limit }),
                        observation: obs,
                    });
                }
            }
            Decision::Shrink(to) if registry.shrinking_to().is_some_and(|at| at <= to) => {
                // A shrink at least this deep is still under way (its
                // highest worker was busy, or has not yet run): the same
                // shrink, not a new one to record.
                registry.wake_highest();
            }
            Decision::Shrink(to) => {
                // Recorded first: the workers retire within microseconds,
                // and whoever sees fewer of them must find the resize.
                registry.record_resize(ResizeEvent {
                    at: started.elapsed(),
                    from: obs.live,
                    to,
                    reason: ResizeReason::Idle,
                    observation: obs,
                });
                registry.request_retire(to);
            }
        }
    }
}
