//! The `serde` feature: the pool's snapshots and reports serialize, and
//! those that can be rebuilt round-trip exactly.

#![cfg(feature = "serde")]

mod common;

use ebbtide::metrics::{
    BreakerState, Counts, Metrics, Observation, PoolDump, QueueAges, StallReport, WorkerState,
};
use ebbtide::{
    Backpressure, Jitter, PendingTimers, Pool, RetryPolicy, Schedule, ShutdownReport, TaskError,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::time::Duration;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let text = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, value, "{text}");
}

#[test]
fn reports_counts_and_settings_round_trip() {
    let pool = Pool::builder().workers(2).build().unwrap();
    for i in 0..10 {
        pool.execute(move || assert!(i < 10)).unwrap();
    }
    common::idle(&pool);
    let counts: Counts = pool.metrics().counts;
    assert_eq!(counts.completed, 10);
    round_trip(&counts);
    let report: ShutdownReport = pool.shutdown();
    assert_eq!(report.completed, 10);
    round_trip(&report);
    round_trip(
        &RetryPolicy::exponential(Duration::from_millis(5)).jitter(Jitter::Proportional(0.25)),
    );
    round_trip(&Schedule::FixedDelay(Duration::from_secs(1)));
    for b in [
        Backpressure::Block,
        Backpressure::DropOldest,
        Backpressure::CallerRuns,
    ] {
        round_trip(&b);
    }
    round_trip(&PendingTimers::RunNow);
    round_trip(&TaskError::Panicked {
        message: "boom".into(),
    });
    round_trip(&TaskError::BreakerOpen);
    round_trip(&BreakerState::HalfOpen);
    round_trip(&WorkerState::Parked);
    round_trip(&QueueAges::default());
    round_trip(&Observation::default());
    round_trip(&StallReport::QueueWait {
        waited: Duration::from_millis(7),
    });
}

#[test]
fn a_metrics_snapshot_and_a_dump_serialize_with_their_figures() {
    let pool = Pool::builder().workers(2).name("json").build().unwrap();
    for _ in 0..100 {
        pool.execute(|| ()).unwrap();
    }
    common::idle(&pool);
    let m: Metrics = pool.metrics();
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(v["name"], "json");
    assert_eq!(v["counts"]["completed"], 100);
    assert_eq!(v["queue_wait"]["count"], 100);
    assert_eq!(v["run_time"]["count"], 100);
    assert_eq!(v["timers_pending"], 0);
    assert!(v["locks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == "shard"));
    // Cumulative, as Prometheus `le` buckets: ascending, ending at the count
    // (no empty task outlasts the last octave's bound).
    let buckets: Vec<u64> = v["run_time"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(buckets.last(), Some(&100));
    let dump: PoolDump = pool.dump();
    let text = serde_json::to_string(&dump).unwrap();
    let back: PoolDump = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), text);
    assert_eq!(back.workers.len(), 2);
}

#[test]
fn a_failure_serializes_its_attempts_without_instants() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let failed = pool
        .task()
        .retry(RetryPolicy::fixed(Duration::from_millis(1)).max_attempts(2))
        .spawn_fallible(|_| -> Result<(), String> { Err("down".into()) })
        .unwrap()
        .join()
        .unwrap()
        .unwrap_err();
    let v = serde_json::to_value(&failed).unwrap();
    assert_eq!(v["attempts"][1]["attempt"], 2);
    assert_eq!(v["attempts"][1]["error"], "down");
    assert!(v["attempts"][0].get("at").is_none());
}
