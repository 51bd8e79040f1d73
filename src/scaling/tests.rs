//! Unit tests of the policy and the classification (no threads).
use super::policy::*;
use crate::metrics::{Observation, ResizeReason};
use crate::sched::config::ScalingConfig;
use std::time::Duration;

/// min 2, max 512, 2 CPUs.
const LIMITS: (usize, usize, usize) = (2, 512, 2);
const MS: Duration = Duration::from_millis(1);

fn obs(live: usize, busy: usize, queued: usize) -> Observation {
    Observation {
        elapsed: 100 * MS,
        live,
        busy,
        queued,
        ..Observation::default()
    }
}

/// `n` tasks of `w` each started and finished in the interval.
fn ran(mut o: Observation, n: u64, w: Duration) -> Observation {
    o.started = n;
    o.finished = n;
    o.run_time = w * n as u32;
    o
}

fn decide_now(o: &Observation) -> Decision {
    decide(
        o,
        Duration::ZERO,
        PolicyState::default(),
        &ScalingConfig::default(),
        LIMITS,
    )
    .0
}

#[test]
fn steady_load_inside_the_band_stays() {
    // λ = 1,000/s, W = 1 ms: L = 1, ÷ 0.7 → 2 workers, as live.
    let mut o = ran(obs(2, 1, 0), 100, MS);
    o.arrivals = 100;
    o.machine_load = Some(0.5);
    o.task_cpu_share = Some(1.0);
    assert_eq!(decide_now(&o), Decision::Stay);
    // A task queued for a moment at 70 % of 2 CPUs: the backlog term is
    // a twentieth of a worker, and the CPU cap holds 2 anyway.
    let mut o = ran(obs(2, 2, 1), 28, MS);
    o.elapsed = 20 * MS;
    o.mean_busy = 1.4;
    o.machine_load = Some(0.7);
    o.task_cpu_share = Some(1.0);
    assert_eq!(decide_now(&o), Decision::Stay);
    // The same without a CPU-share reading: capped at the CPUs.
    o.task_cpu_share = None;
    assert_eq!(decide_now(&o), Decision::Stay);
}

#[test]
fn a_blocking_burst_grows_straight_to_drain_the_queue_in_the_target() {
    // 2 workers stalled in 1 ms tasks using 0.5 % CPU, 4,000 queued.
    let mut o = ran(obs(2, 2, 4_000), 40, MS);
    o.arrivals = 4_000;
    o.mean_busy = 2.0;
    o.stalled = 2;
    o.machine_load = Some(0.01);
    o.task_cpu_share = Some(0.005);
    // λ = 400/s entered service, W = 1 ms: L = 0.4 → 0.57; the queue
    // 4,000 × 1 ms ÷ 20 ms = 200.
    assert_eq!(decide_now(&o), Decision::Grow(201, ResizeReason::Blocked));
    // A shorter queue-wait target asks for 401, capped at CPUs ÷ share.
    let scaling = ScalingConfig {
        queue_wait_target: 10 * MS,
        ..ScalingConfig::default()
    };
    let (d, target, _) = decide(&o, Duration::ZERO, PolicyState::default(), &scaling, LIMITS);
    assert_eq!(
        (d, target),
        (Decision::Grow(400, ResizeReason::Blocked), 400)
    );
}

#[test]
fn before_any_task_finished_the_running_age_bounds_the_run_time() {
    // A probe 250 µs into a burst: nothing finished, tasks 0.5 ms old.
    let mut o = obs(2, 2, 3_998);
    o.elapsed = Duration::from_micros(250);
    o.started = 2;
    o.running_age = Duration::from_micros(500);
    o.stalled = 2;
    o.machine_load = Some(0.02);
    o.task_cpu_share = Some(0.005);
    // No new arrivals entered service; the queue 3,998 × 0.5 ÷ 20 = 99.95.
    assert_eq!(decide_now(&o), Decision::Grow(100, ResizeReason::Blocked));
    // Without any timing: each waiting worker is replaced.
    o.running_age = Duration::ZERO;
    assert_eq!(decide_now(&o), Decision::Grow(4, ResizeReason::Blocked));
}

#[test]
fn the_cpu_share_caps_the_pool_at_cpus_over_share() {
    // Tasks that compute half their run time: 2 ÷ 0.5 = 4 workers.
    let mut o = ran(obs(2, 2, 1_000), 100, 10 * MS);
    o.machine_load = Some(0.6);
    o.task_cpu_share = Some(0.5);
    assert_eq!(decide_now(&o), Decision::Grow(4, ResizeReason::Load));
    // 5 % CPU: 40 workers, though the backlog asks for 500.
    o.task_cpu_share = Some(0.05);
    o.stalled = 2;
    assert_eq!(decide_now(&o), Decision::Grow(40, ResizeReason::Blocked));
}

#[test]
fn cpu_bound_work_is_capped_at_the_cpus() {
    // Every worker busy computing, a backlog.
    let mut o = ran(obs(2, 2, 1_000), 500, Duration::from_micros(200));
    o.machine_load = Some(1.0);
    o.task_cpu_share = Some(1.0);
    assert_eq!(
        decide_now(&o),
        Decision::Stay,
        "2 CPUs: no more than 2 workers"
    );
    // A noisy share (0.9) still rounds to the CPUs.
    o.task_cpu_share = Some(0.9);
    o.machine_load = Some(0.8);
    assert_eq!(decide_now(&o), Decision::Stay);
    // Oversubscribed already (4 live, CPUs saturated, so the share
    // reads 0.5): no further growth.
    let mut o = ran(obs(4, 4, 1_000), 400, MS);
    o.machine_load = Some(0.95);
    o.task_cpu_share = Some(0.5);
    assert_eq!(decide_now(&o), Decision::Stay);
    // Unknown CPU share (nothing measured yet): capped at the CPUs too.
    let o = obs(2, 2, 1_000);
    assert_eq!(decide_now(&o), Decision::Stay);
}

#[test]
fn classify_tells_sleep_from_waiting_for_a_cpu() {
    let us = Duration::from_micros;
    let asleep = |d| Some((us(d), false));
    // Half or more on a CPU: compute, whatever else.
    assert_eq!(classify(us(1_000), us(500), None), Use::Compute);
    assert_eq!(classify(us(1_000), us(990), asleep(0)), Use::Compute);
    // Short of CPU, no statistics yet: unsure.
    assert_eq!(classify(us(1_000), us(10), None), Use::Unsure);
    // Short of CPU, not waiting for one, asleep now: blocked.
    assert_eq!(classify(us(1_000), us(10), asleep(5)), Use::Blocked);
    // Short of CPU because it waited for one (four spinners on two
    // CPUs): starved, not blocked.
    assert_eq!(classify(us(1_000), us(480), asleep(500)), Use::Starved);
    // Runnable now: its wait in progress is not counted yet, so the
    // counters cannot show it asleep.
    assert_eq!(
        classify(us(1_000), us(10), Some((us(5), true))),
        Use::Starved
    );
    // Asleep exactly half the time counts as blocked.
    assert_eq!(classify(us(1_000), us(250), asleep(250)), Use::Blocked);
    assert_eq!(classify(us(1_000), us(250), asleep(251)), Use::Starved);
}

#[test]
fn a_queue_wait_above_the_target_grows_the_pool() {
    // 10 ms tasks at 200/s on 2 workers, 20 % CPU, one queued: the
    // queue's term is half a worker and utilization 0.75 is under the
    // watermark, but the tasks that started waited 30 ms.
    let mut o = ran(obs(2, 2, 1), 20, 10 * MS);
    o.arrivals = 20;
    o.mean_busy = 1.5;
    o.machine_load = Some(0.3);
    o.task_cpu_share = Some(0.2);
    assert_eq!(decide_now(&o), Decision::Stay);
    o.queue_wait = 30 * MS;
    // λ·W ÷ 0.7 = 2.86, + the queue's 0.5: 4 workers.
    assert_eq!(decide_now(&o), Decision::Grow(4, ResizeReason::Load));
}

#[test]
fn a_ramp_grows_to_the_backlogs_demand() {
    // 8 workers on 8 ms tasks of 0.5 % CPU, 100 queued.
    let mut o = ran(obs(8, 8, 100), 10, 8 * MS);
    o.arrivals = 10;
    o.machine_load = Some(0.005);
    o.task_cpu_share = Some(0.005);
    // L = 100/s × 8 ms = 0.8 → 1.14; the queue 100 × 8 ÷ 20 = 40.
    assert_eq!(decide_now(&o), Decision::Grow(42, ResizeReason::Load));
}

#[test]
fn a_worker_held_by_a_long_task_is_added_though_short_tasks_set_w() {
    // One worker blocked in a long task; the tasks that finished were
    // 10 µs each, and 50 wait: W alone asks for one worker, which the
    // long task holds.
    let mut o = ran(obs(1, 1, 50), 20, Duration::from_micros(10));
    o.blocked = 1;
    o.mean_busy = 1.0;
    o.held = 1;
    o.machine_load = Some(0.01);
    let limits = (1, 4, 2);
    let (d, _, _) = decide(
        &o,
        Duration::ZERO,
        PolicyState::default(),
        &ScalingConfig::default(),
        limits,
    );
    assert_eq!(d, Decision::Grow(2, ResizeReason::Blocked));
}

#[test]
fn a_steady_pool_is_sized_from_the_recent_past_not_a_short_probe() {
    // 10,000/s of 10 ms blocking tasks (L = 100) seen over 20 ms, on 130
    // workers: 100/0.7 → 143 (held workers, with nobody waiting behind
    // them, add nothing).
    let mut long = ran(obs(130, 100, 0), 200, 10 * MS);
    long.elapsed = 20 * MS;
    long.arrivals = 200;
    long.mean_busy = 100.0;
    long.held = 14;
    long.stalled = 100;
    long.machine_load = Some(0.05);
    long.task_cpu_share = Some(0.005);
    let cfg = ScalingConfig::default();
    let (d, _, s) = decide(&long, MS, PolicyState::default(), &cfg, LIMITS);
    assert_eq!(d, Decision::Stay, "inside the band");
    // Then a probe of 250 µs with 3 arrivals and 5 finishes averaging
    // 11.5 ms, while 112 of the 130 are busy (above the grow watermark).
    // Alone it reads λ·W = 12,000/s × 11.5 ms = 138 and asks for 198; with
    // the last 20 ms it reads 100.6 and asks for 144.
    let mut probe = ran(obs(130, 112, 0), 5, Duration::from_micros(11_500));
    probe.elapsed = Duration::from_micros(250);
    probe.arrivals = 3;
    probe.started = 3;
    probe.mean_busy = 112.0;
    probe.held = 14;
    probe.stalled = 112;
    probe.machine_load = Some(0.05);
    probe.task_cpu_share = Some(0.005);
    let alone = decide(&probe, 2 * MS, PolicyState::default(), &cfg, LIMITS).0;
    assert_eq!(alone, Decision::Grow(198, ResizeReason::Blocked));
    let (d, _, _) = decide(&probe, 2 * MS, s, &cfg, LIMITS);
    assert_eq!(d, Decision::Grow(144, ResizeReason::Blocked));
    // With a backlog the held workers count too: 143.7 + 40 queued ×
    // 10.04 ms ÷ 20 ms (20.1), rounded up, + 14 held; from the probe alone
    // it would be 197.1 + 23 + 14.
    probe.queued = 40;
    let (d, _, _) = decide(&probe, 2 * MS, s, &cfg, LIMITS);
    assert_eq!(d, Decision::Grow(178, ResizeReason::Blocked));
    let alone = decide(&probe, 2 * MS, PolicyState::default(), &cfg, LIMITS).0;
    assert_eq!(alone, Decision::Grow(235, ResizeReason::Blocked));
}

#[test]
fn a_past_of_short_tasks_does_not_hide_a_block_now() {
    // Earlier, tasks that ran 10 µs each; now both workers have been
    // blocked for 5 ms with 38 queued and nothing finishing. The past's W
    // alone would read the queue as drained in no time (and stay at 2);
    // the running age says otherwise: 38 × 5 ms ÷ 20 ms → 10 more.
    let cfg = ScalingConfig::default();
    let mut past = ran(obs(2, 0, 0), 40, Duration::from_micros(10));
    past.arrivals = 40;
    let (_, _, s) = decide(&past, MS, PolicyState::default(), &cfg, LIMITS);
    let mut now = obs(2, 2, 38);
    now.blocked = 2;
    now.mean_busy = 2.0;
    now.running_age = 5 * MS;
    now.elapsed = 2 * MS;
    let (d, _, _) = decide(&now, 200 * MS, s, &cfg, LIMITS);
    assert!(
        matches!(d, Decision::Grow(n, ResizeReason::Blocked) if n >= 4),
        "{d:?}"
    );
}

#[test]
fn blocked_workers_with_idle_ones_beside_them_hold_nothing_up() {
    // A stage of 100 workers on 1.3 ms blocking tasks at 55,000/s, 75 %
    // busy, 15 queued for the moment it takes the 25 idle ones to wake:
    // Little's law asks for 103 at 70 %, but utilization is inside the
    // band and nothing waits for want of a worker.
    let mut o = ran(obs(100, 75, 15), 55, Duration::from_micros(1_300));
    o.elapsed = MS;
    o.arrivals = 55;
    o.mean_busy = 75.0;
    o.stalled = 75;
    o.machine_load = Some(0.5);
    o.task_cpu_share = Some(0.01);
    assert_eq!(decide_now(&o), Decision::Stay);
    assert!(
        !probe(&o, Decision::Stay, 512),
        "no backlog: the normal interval"
    );
    // More queued than idle workers: the blocked ones hold it up.
    o.queued = 26;
    assert_eq!(decide_now(&o), Decision::Grow(104, ResizeReason::Blocked));
    assert!(probe(&o, Decision::Stay, 512));
}

#[test]
fn workers_waiting_for_room_downstream_stop_growth() {
    // A pipeline stage: its 4 workers asleep, 200 items queued behind
    // them. Seen as blocking, that grows the pool to drain the queue.
    let mut o = ran(obs(4, 4, 200), 40, MS);
    o.arrivals = 40;
    o.mean_busy = 4.0;
    o.stalled = 4;
    o.machine_load = Some(0.05);
    o.task_cpu_share = Some(0.01);
    assert!(matches!(decide_now(&o), Decision::Grow(n, _) if n > 4));
    assert!(probe(&o, Decision::Stay, 512));
    // But one of them waits for room in the next stage's full queue: the
    // next stage is the bottleneck, and more workers would wait too.
    o.backpressured = 1;
    assert_eq!(decide_now(&o), Decision::Stay);
    assert!(!probe(&o, Decision::Stay, 512), "nothing to hurry for");
    // All four waiting downstream and nothing queued: they count as idle
    // for shrinking, which then waits for `keep_alive` as usual and goes
    // to min (none of them did this pool's work).
    let mut o = obs(4, 4, 0);
    o.backpressured = 4;
    let scaling = ScalingConfig::default();
    let (d, _, state) = decide(&o, MS, PolicyState::default(), &scaling, LIMITS);
    assert_eq!(d, Decision::Stay);
    assert_eq!(state.low_since, Some(MS));
    let later = MS + scaling.keep_alive;
    let (d, _, _) = decide(&o, later, state, &scaling, LIMITS);
    assert_eq!(d, Decision::Shrink(2));
}

#[test]
fn announced_blocking_with_a_backlog_adds_workers() {
    // Both workers blocked, work waiting, nothing measured: each
    // blocked worker is replaced (the CPU cap counts them out).
    let mut o = obs(2, 2, 10);
    o.blocked = 2;
    assert_eq!(decide_now(&o), Decision::Grow(4, ResizeReason::Blocked));
    // Without demand, blocking alone adds nothing.
    let mut o = obs(2, 2, 0);
    o.blocked = 2;
    assert_eq!(decide_now(&o), Decision::Stay);
}

#[test]
fn blocking_tasks_are_taken_one_at_a_time_and_compute_in_batches() {
    let mut o = obs(4, 4, 100);
    assert_eq!(takes_batches(&o), None, "no evidence yet");
    o.task_cpu_share = Some(0.95);
    assert_eq!(takes_batches(&o), Some(true));
    o.task_cpu_share = Some(0.05);
    assert_eq!(takes_batches(&o), Some(false));
    // Workers seen blocked decide it, whatever the others compute.
    o.task_cpu_share = Some(0.9);
    o.stalled = 1;
    assert_eq!(takes_batches(&o), Some(false));
    o.stalled = 0;
    o.blocked = 2;
    assert_eq!(takes_batches(&o), Some(false));
}

#[test]
fn probes_while_growing_or_unsure_and_not_otherwise() {
    let mut o = obs(2, 2, 1_000);
    // Backlog, CPU share unknown: look again soon.
    assert!(probe(&o, Decision::Stay, 512));
    // Known to compute: the normal interval.
    o.task_cpu_share = Some(1.0);
    o.machine_load = Some(1.0);
    assert!(!probe(&o, Decision::Stay, 512));
    // Just grew: does it suffice?
    assert!(probe(&o, Decision::Grow(4, ResizeReason::Load), 512));
    // Blocked workers with work waiting, or workers not yet classified.
    o.blocked = 1;
    assert!(probe(&o, Decision::Stay, 512));
    o.blocked = 0;
    o.unsure = 3;
    assert!(probe(&o, Decision::Stay, 512));
    // At max, or with nothing queued: never.
    o.live = 512;
    assert!(!probe(&o, Decision::Stay, 512));
    let o = obs(2, 2, 0);
    assert!(!probe(&o, Decision::Stay, 512));
}

#[test]
fn shrink_waits_for_keep_alive_then_goes_to_what_the_quiet_spell_used() {
    let scaling = ScalingConfig {
        keep_alive: Duration::from_secs(1),
        ..ScalingConfig::default()
    };
    let at = |ms: u64| Duration::from_millis(ms);
    // 20 workers, at most 5 of them busy (4.2 on average over one
    // interval) while below the watermark: 5 ÷ 0.7 → 8.
    // The first quiet sample's interval was busy until the quiet began:
    // only its moment counts.
    let mut first = obs(20, 3, 0);
    first.mean_busy = 9.0;
    let (d, _, s) = decide(&first, at(5_000), PolicyState::default(), &scaling, LIMITS);
    assert_eq!(d, Decision::Stay);
    assert_eq!(s.low_peak, 3);
    let mut quiet = obs(20, 3, 0);
    quiet.mean_busy = 2.5;
    let mut peak = obs(20, 5, 0);
    peak.mean_busy = 4.2;
    let (d, _, s) = decide(&peak, at(5_400), s, &scaling, LIMITS);
    assert_eq!(d, Decision::Stay, "below the watermark for only 0.4 s");
    assert_eq!(s.low_peak, 5);
    let (d, _, s) = decide(&obs(20, 1, 0), at(5_800), s, &scaling, LIMITS);
    assert_eq!((d, s.low_peak), (Decision::Stay, 5), "the peak is kept");
    let (d, target, s) = decide(&quiet, at(6_000), s, &scaling, LIMITS);
    assert_eq!((d, target), (Decision::Shrink(8), 8));
    // The next step waits another keep-alive, with a peak of its own.
    let (d, _, s) = decide(&obs(8, 0, 0), at(6_500), s, &scaling, LIMITS);
    assert_eq!(
        (d, s.low_since, s.low_peak),
        (Decision::Stay, Some(at(6_000)), 0)
    );
    let (d, _, _) = decide(&obs(8, 0, 0), at(7_000), s, &scaling, LIMITS);
    assert_eq!(d, Decision::Shrink(2), "nothing used: down to min");
    // 2 busy of 7 (under 0.3): 2 ÷ 0.7 → 3; 1 busy of 4 → 2 (min); and
    // never below min.
    let (d, _, _) = decide(
        &obs(7, 2, 0),
        at(1_100),
        PolicyState {
            low_since: Some(at(0)),
            low_peak: 2,
            ..PolicyState::default()
        },
        &scaling,
        LIMITS,
    );
    assert_eq!(d, Decision::Shrink(3));
    let (d, _, _) = decide(
        &obs(4, 1, 0),
        at(1_100),
        PolicyState {
            low_since: Some(at(0)),
            low_peak: 0,
            ..PolicyState::default()
        },
        &scaling,
        LIMITS,
    );
    assert_eq!(d, Decision::Shrink(2));
    let (d, _, _) = decide(
        &obs(2, 0, 0),
        Duration::from_secs(100),
        PolicyState {
            low_since: Some(Duration::ZERO),
            low_peak: 0,
            ..PolicyState::default()
        },
        &scaling,
        LIMITS,
    );
    assert_eq!(d, Decision::Stay);
}

#[test]
fn workers_blocked_in_long_tasks_do_not_keep_the_rest() {
    // 64 workers grown for a flood; three of them stay blocked (announced)
    // in tasks that outlast keep_alive. They count as in use: the pool
    // shrinks to 3 ÷ 0.7 → 5, not to min, and not never (it kept all 64
    // while any worker was blocked).
    let scaling = ScalingConfig {
        keep_alive: Duration::from_secs(1),
        ..ScalingConfig::default()
    };
    let mut o = obs(64, 3, 0);
    o.blocked = 3;
    o.mean_busy = 3.0;
    let at = |ms: u64| Duration::from_millis(ms);
    let (d, _, s) = decide(&o, at(5_000), PolicyState::default(), &scaling, LIMITS);
    assert_eq!(d, Decision::Stay);
    let (d, _, s) = decide(&o, at(5_500), s, &scaling, LIMITS);
    assert_eq!(d, Decision::Stay);
    let (d, target, _) = decide(&o, at(6_000), s, &scaling, LIMITS);
    assert_eq!((d, target), (Decision::Shrink(5), 5));
}

#[test]
fn a_quiet_spell_that_used_most_of_the_pool_takes_one_worker() {
    // 1 busy of 4 is below the watermark, but a peak of 3 in use ÷ 0.7 is
    // more than the pool: it still gives back one worker, not none.
    let scaling = ScalingConfig {
        keep_alive: Duration::from_secs(1),
        ..ScalingConfig::default()
    };
    let state = PolicyState {
        low_since: Some(Duration::ZERO),
        low_peak: 3,
        ..PolicyState::default()
    };
    let (d, _, _) = decide(
        &obs(4, 1, 0),
        Duration::from_secs(2),
        state,
        &scaling,
        (1, 8, 2),
    );
    assert_eq!(d, Decision::Shrink(3));
}

#[test]
fn busy_again_resets_the_shrink_clock() {
    let scaling = ScalingConfig {
        keep_alive: Duration::from_secs(1),
        ..ScalingConfig::default()
    };
    let (_, _, s) = decide(
        &obs(10, 0, 0),
        Duration::from_secs(1),
        PolicyState::default(),
        &scaling,
        LIMITS,
    );
    let (_, _, s) = decide(
        &obs(10, 5, 0),
        Duration::from_millis(1_500),
        s,
        &scaling,
        LIMITS,
    );
    assert_eq!((s.low_since, s.low_peak), (None, 0));
    let (d, _, _) = decide(
        &obs(10, 0, 0),
        Duration::from_millis(2_100),
        s,
        &scaling,
        LIMITS,
    );
    assert_eq!(d, Decision::Stay);
}

#[test]
fn a_pool_with_no_workers_starts_one_for_what_waits() {
    let limits = (0, 8, 2);
    let decide_at = |o: &Observation| {
        decide(
            o,
            Duration::ZERO,
            PolicyState::default(),
            &ScalingConfig::default(),
            limits,
        )
        .0
    };
    // One tiny task queued, nothing seen run: no pressure by any other
    // measure, but nobody runs it unless a worker starts.
    assert_eq!(
        decide_at(&obs(0, 0, 1)),
        Decision::Grow(1, ResizeReason::Load)
    );
    // The same after tiny tasks ran in the interval (their backlog term is
    // far below one worker).
    assert_eq!(
        decide_at(&ran(obs(0, 0, 3), 10, Duration::from_micros(1))),
        Decision::Grow(1, ResizeReason::Load)
    );
    // Nothing queued: it stays at none.
    assert_eq!(decide_at(&obs(0, 0, 0)), Decision::Stay);
}
