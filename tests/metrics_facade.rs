//! `Metrics::publish` through the `metrics` facade (feature `metrics`):
//! a capturing recorder sees the same figures as the snapshot.

#![cfg(all(feature = "metrics", not(loom)))]

mod common;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Capture(Mutex<HashMap<String, f64>>);

struct Cell(Arc<Capture>, String);

impl CounterFn for Cell {
    fn increment(&self, v: u64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += v as f64;
    }
    fn absolute(&self, v: u64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), v as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, v: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += v;
    }
    fn decrement(&self, v: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() -= v;
    }
    fn set(&self, v: f64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), v);
    }
}

impl HistogramFn for Cell {
    fn record(&self, v: f64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), v);
    }
}

struct TestRecorder(Arc<Capture>);

fn key_string(key: &Key) -> String {
    let mut labels: Vec<_> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(self.0.clone(), key_string(key))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Cell(self.0.clone(), key_string(key))))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Cell(self.0.clone(), key_string(key))))
    }
}

#[test]
fn publish_reports_the_snapshot_through_the_facade() {
    let pool = ebbtide::Pool::builder()
        .name("facade")
        .workers(2)
        .build()
        .unwrap();
    for _ in 0..30 {
        pool.execute(|| ()).unwrap();
    }
    common::idle(&pool);
    let snapshot = pool.metrics();
    let capture = Arc::new(Capture::default());
    let recorder = TestRecorder(capture.clone());
    metrics::with_local_recorder(&recorder, || snapshot.publish("ebbtide"));
    let seen = capture.0.lock().unwrap();
    assert_eq!(seen["ebbtide_tasks_completed_total{pool=facade}"], 30.0);
    assert_eq!(seen["ebbtide_tasks_submitted_total{pool=facade}"], 30.0);
    assert_eq!(seen["ebbtide_workers{pool=facade}"], 2.0);
    assert_eq!(
        seen["ebbtide_run_time_seconds{pool=facade,quantile=0.99}"],
        snapshot.run_time.p99().as_secs_f64()
    );
    assert!(seen.contains_key("ebbtide_lock_contended_total{lock=sleepers,pool=facade}"));
}
