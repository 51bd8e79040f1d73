//! The `tracing` feature: every task runs inside a span carrying its pool,
//! worker, shard and name; resizes, dead letters, breaker changes and
//! shutdown are events. A collecting subscriber, installed globally (the
//! tasks run on the pool's threads), records what it is given.

#![cfg(feature = "tracing")]

mod common;

use ebbtide::{Backpressure, BreakerConfig, Pool, RetryPolicy};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type Fields = BTreeMap<String, String>;

#[derive(Default)]
struct Seen {
    /// Span id → (name, fields).
    spans: BTreeMap<u64, (String, Fields)>,
    /// Span id → its metadata (for `current_span`).
    meta: BTreeMap<u64, &'static Metadata<'static>>,
    /// Events: fields (the message under "message").
    events: Vec<Fields>,
}

struct Collector {
    next: AtomicU64,
    seen: Mutex<Seen>,
}

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, SeqCst) + 1;
        let mut fields = Fields::new();
        span.record(&mut Visitor(&mut fields));
        let name = span.metadata().name().to_string();
        let mut seen = self.lock();
        seen.spans.insert(id, (name, fields));
        seen.meta.insert(id, span.metadata());
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut seen = self.lock();
        if let Some((_, fields)) = seen.spans.get_mut(&span.into_u64()) {
            values.record(&mut Visitor(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        self.lock().events.push(fields);
    }
    fn enter(&self, span: &Id) {
        STACK.with(|s| s.borrow_mut().push(span.into_u64()));
    }
    fn exit(&self, _: &Id) {
        STACK.with(|s| s.borrow_mut().pop());
    }
    fn current_span(&self) -> tracing_core::span::Current {
        match STACK.with(|s| s.borrow().last().copied()) {
            Some(id) => match self.lock().meta.get(&id) {
                Some(meta) => tracing_core::span::Current::new(Id::from_u64(id), meta),
                None => tracing_core::span::Current::none(),
            },
            None => tracing_core::span::Current::none(),
        }
    }
}

thread_local! {
    /// The spans this thread is in, innermost last.
    static STACK: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Collector {
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        // A failed assertion must not turn the workers' events into aborts.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let c: &'static Collector = Box::leak(Box::new(Collector {
            next: AtomicU64::new(0),
            seen: Mutex::new(Seen::default()),
        }));
        tracing::subscriber::set_global_default(CollectorRef(c)).unwrap();
        c
    })
}

/// The installed subscriber: a reference to the collector.
struct CollectorRef(&'static Collector);

impl Subscriber for CollectorRef {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.0.new_span(span)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        self.0.record(span, values)
    }
    fn record_follows_from(&self, a: &Id, b: &Id) {
        self.0.record_follows_from(a, b)
    }
    fn event(&self, event: &Event<'_>) {
        self.0.event(event)
    }
    fn enter(&self, span: &Id) {
        self.0.enter(span)
    }
    fn exit(&self, span: &Id) {
        self.0.exit(span)
    }
    fn current_span(&self) -> tracing_core::span::Current {
        self.0.current_span()
    }
}

#[test]
fn tasks_run_in_spans_and_failures_and_shutdown_are_events() {
    let c = collector();
    let pool = Pool::builder()
        .name("traced")
        .workers(2)
        .circuit_breaker(
            BreakerConfig::new()
                .window(1)
                .min_calls(1)
                .failure_rate(0.5),
        )
        .build()
        .unwrap();
    let shard = pool.shard_of(&"k");
    pool.task().key(&"k").name("named").execute(|| ()).unwrap();
    let h = pool
        .task()
        .name("doomed")
        .retry(RetryPolicy::fixed(Duration::from_millis(1)).max_attempts(2))
        .spawn_fallible(|_| -> Result<(), String> { Err("no".into()) })
        .unwrap();
    assert!(h.join().unwrap().is_err());
    assert_eq!(pool.install(|| 7), 7);
    common::idle(&pool);
    let report = pool.shutdown();
    assert_eq!(report.dead_lettered, 1);

    // A task run on the submitting thread (`CallerRuns`) has its span too,
    // with no worker.
    let callers = Pool::builder()
        .name("callers")
        .workers(1)
        .queue_capacity(1)
        .backpressure(Backpressure::CallerRuns)
        .build()
        .unwrap();
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    callers
        .execute(move || {
            started_tx.send(()).unwrap();
            released.recv_timeout(Duration::from_secs(120)).unwrap();
        })
        .unwrap();
    started.recv_timeout(Duration::from_secs(120)).unwrap();
    callers.execute(|| ()).unwrap(); // queued: the queue is full now
    callers.execute(|| ()).unwrap(); // run here
    release.send(()).unwrap();
    let report = callers.shutdown();
    assert_eq!((report.completed, report.submitted), (3, 3));

    let seen = c.lock();
    // The task spans of one pool.
    let task_spans = |pool: &str| -> Vec<&Fields> {
        seen.spans
            .values()
            .filter(|(name, f)| {
                name == "ebbtide.task" && f.get("pool").map(String::as_str) == Some(pool)
            })
            .map(|(_, f)| f)
            .collect()
    };
    let tasks = task_spans("traced");
    // The keyed task, the fallible task's two attempts, the install body.
    assert_eq!(tasks.len(), 4, "{tasks:?}");
    assert!(tasks.iter().all(|f| f.contains_key("worker")));
    let named = tasks
        .iter()
        .find(|f| f.get("name").map(String::as_str) == Some("named"))
        .expect("the named task's span");
    assert_eq!(named.get("shard"), Some(&shard.to_string()));
    assert_eq!(
        tasks
            .iter()
            .filter(|f| f.get("name").map(String::as_str) == Some("doomed"))
            .count(),
        2
    );
    let events = |message: &str| -> Vec<&Fields> {
        seen.events
            .iter()
            .filter(|e| e.get("message").map(String::as_str) == Some(message))
            .filter(|e| e.get("pool").map_or(true, |p| p == "traced"))
            .collect()
    };
    let letters = events("dead letter");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].get("attempts").map(String::as_str), Some("2"));
    assert_eq!(letters[0].get("last_error").map(String::as_str), Some("no"));
    assert!(events("circuit breaker")
        .iter()
        .any(|e| e.get("state").map(String::as_str) == Some("Open")));
    let on_caller = task_spans("callers");
    assert_eq!(on_caller.len(), 3);
    assert_eq!(
        on_caller
            .iter()
            .filter(|f| !f.contains_key("worker"))
            .count(),
        1
    );
    let shutdowns = events("shutdown");
    assert_eq!(shutdowns.len(), 1);
    assert!(shutdowns[0]["report"].contains("dead_lettered: 1"));
}
