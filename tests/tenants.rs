//! Tenants: weighted fair shares, concurrency caps, a quiet tenant's task
//! overtaking a flood, rate limits under an injected clock, costed tasks,
//! priority aging, keyed order and exact accounting with tenants, 100,000
//! tenants forgotten once idle, and every bad input named. A pool of one
//! worker lets one tenant task through at a time, so orders are exact.

#![cfg(not(loom))]

mod common;

use common::{assert_identity, until, Arrivals, Gate, ManualTime};
use ebbtide::{
    Backpressure, GroupError, Pool, Priority, RateLimit, SubmitError, TaskError, TenantConfig,
};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

/// A task of tenant `gate` that holds the only worker until `gate` opens:
/// everything submitted meanwhile waits in its tenant's queue.
fn hold(pool: &Pool) -> Gate {
    let gate = Gate::new();
    let g = gate.clone();
    let started = Arrivals::new();
    let s = started.clone();
    pool.task()
        .tenant("gate")
        .execute(move || {
            s.arrive();
            g.wait();
        })
        .unwrap();
    started.wait_for(1);
    gate
}

fn tenant<'a>(m: &'a ebbtide::metrics::Metrics, name: &str) -> &'a ebbtide::metrics::TenantMetrics {
    m.tenants
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tenant {name} in {:?}", m.tenants))
}

#[test]
fn weights_share_the_workers_while_both_are_backlogged() {
    let pool = Pool::builder().workers(1).build().unwrap();
    pool.configure_tenant(&"heavy", TenantConfig::new().weight(3))
        .unwrap();
    let gate = hold(&pool);
    let order = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..4000 {
        for name in ["heavy", "light"] {
            let o = Arc::clone(&order);
            pool.task()
                .tenant(name)
                .execute(move || o.lock().unwrap().push(name))
                .unwrap();
        }
    }
    gate.open();
    common::idle(&pool);
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 8000);
    // Both are backlogged through the first 4,000 (heavy has 3,000 done).
    let heavy = order[..4000].iter().filter(|n| **n == "heavy").count();
    assert!(
        (2850..=3150).contains(&heavy),
        "heavy ran {heavy} of the first 4000 (3000 ± 5 %)"
    );
    // In fact exactly 3 : 1, in every window of 4.
    assert_eq!(heavy, 3000);
    assert_identity(&pool.metrics());
    assert_eq!(pool.shutdown().completed, 8001);
}

#[test]
fn a_quiet_tenants_task_overtakes_a_flooded_tenants_backlog() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let gate = hold(&pool);
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..1000 {
        let o = Arc::clone(&order);
        pool.task()
            .tenant("flood")
            .execute(move || o.lock().unwrap().push(i))
            .unwrap();
    }
    let o = Arc::clone(&order);
    pool.task()
        .tenant("quiet")
        .execute(move || o.lock().unwrap().push(-1))
        .unwrap();
    gate.open();
    common::idle(&pool);
    let order = order.lock().unwrap();
    let at = order.iter().position(|&i| i == -1).unwrap();
    assert!(
        at <= 1,
        "the quiet tenant's task ran {at}th, behind the flood"
    );
    // The flood kept its own order.
    let flood: Vec<i32> = order.iter().copied().filter(|&i| i >= 0).collect();
    assert_eq!(flood, (0..1000).collect::<Vec<_>>());
}

#[test]
fn a_tenants_concurrency_cap_is_never_exceeded() {
    let pool = Pool::builder().workers(4).build().unwrap();
    pool.configure_tenant(&"capped", TenantConfig::new().max_concurrency(2))
        .unwrap();
    let gate = Gate::new();
    let arrivals = Arrivals::new();
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for _ in 0..20 {
        let (g, a, n, m) = (
            gate.clone(),
            arrivals.clone(),
            Arc::clone(&now),
            Arc::clone(&max),
        );
        pool.task()
            .tenant("capped")
            .execute(move || {
                m.fetch_max(n.fetch_add(1, SeqCst) + 1, SeqCst);
                a.arrive();
                g.wait();
                n.fetch_sub(1, SeqCst);
            })
            .unwrap();
    }
    // Another tenant's tasks still get the other workers.
    for _ in 0..2 {
        let (g, a) = (gate.clone(), arrivals.clone());
        pool.task()
            .tenant("other")
            .execute(move || {
                a.arrive();
                g.wait();
            })
            .unwrap();
    }
    arrivals.wait_for(4);
    let m = pool.metrics();
    let capped = tenant(&m, "capped");
    assert_eq!((capped.running, capped.queued), (2, 18));
    assert_eq!(tenant(&m, "other").running, 2);
    let dump = pool.dump().to_string();
    assert!(
        dump.contains("  tenant capped: 18 queued, 2 units running"),
        "{dump}"
    );

    gate.open();
    common::idle(&pool);
    assert_eq!(max.load(SeqCst), 2);
    assert_eq!(pool.shutdown().completed, 22);
}

#[test]
fn costed_tasks_never_exceed_the_capacity() {
    let pool = Pool::builder().workers(4).build().unwrap();
    pool.configure_tenant(&"t", TenantConfig::new().max_concurrency(8))
        .unwrap();
    let (now, max) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    for i in 0..60u32 {
        let cost = [1, 3, 5, 8][i as usize % 4];
        let (n, m) = (Arc::clone(&now), Arc::clone(&max));
        pool.task()
            .tenant("t")
            .cost(cost)
            .execute(move || {
                m.fetch_max(n.fetch_add(cost, SeqCst) + cost, SeqCst);
                for _ in 0..2000 {
                    std::hint::spin_loop();
                }
                n.fetch_sub(cost, SeqCst);
            })
            .unwrap();
    }
    common::idle(&pool);
    assert!(
        max.load(SeqCst) <= 8,
        "{} units ran at once",
        max.load(SeqCst)
    );
    let e = pool.task().tenant("t").cost(9).execute(|| {}).unwrap_err();
    assert_eq!(
        e.invalid_option().unwrap().to_string(),
        "invalid cost = 9: expected at most its tenant's max_concurrency"
    );
    let e = pool.task().tenant("t").cost(0).execute(|| {}).unwrap_err();
    assert_eq!(
        e.invalid_option().unwrap().to_string(),
        "invalid cost = 0: expected at least 1"
    );
    assert_eq!(pool.shutdown().completed, 60);
}

#[test]
fn rate_limited_tasks_start_no_faster_than_the_bucket_allows() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let limit = RateLimit::new(10.0, 2).unwrap();
    pool.configure_tenant(&"r", TenantConfig::new().rate_limit(limit))
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..7 {
        let r = Arc::clone(&ran);
        pool.task()
            .tenant("r")
            .execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap();
    }
    // Settled: `ran` tasks done, the rest waiting in the queue, none
    // running (nothing else can start until the clock moves).
    let settled = |n: usize| {
        until(|| {
            let m = pool.metrics();
            let r = tenant(&m, "r");
            ran.load(SeqCst) == n && r.queued == (7 - n) as u64 && r.running == 0
        })
    };
    settled(2); // the burst
    let e = pool.task().tenant("r").try_execute(|| {}).unwrap_err();
    assert!(matches!(e, SubmitError::RateLimited(_)), "{e:?}");
    time.advance(Duration::from_millis(99));
    settled(2);
    time.advance(Duration::from_millis(1));
    settled(3); // one token at 100 ms
    time.advance(Duration::from_millis(1000));
    settled(5); // a full bucket holds 2, however long it idles
    time.advance(Duration::from_millis(200));
    settled(7);
    let m = pool.metrics();
    assert!(tenant(&m, "r").rate_limited >= 3);
    assert_identity(&m);
    let report = pool.shutdown();
    assert_eq!((report.completed, report.rejected), (7, 1));
}

/// A pool's rate limit holds tasks without a tenant; delayed ones too,
/// when they come due, even before any other task made the pool's tenants.
#[test]
fn a_pool_rate_limit_holds_tasks_without_a_tenant_delayed_or_not() {
    for delayed in [false, true] {
        let time = ManualTime::new();
        let pool = time
            .pool(2)
            .rate_limit(RateLimit::new(1.0, 1).unwrap())
            .build()
            .unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let r = Arc::clone(&ran);
            let task = if delayed {
                pool.task().delay(10 * MS)
            } else {
                pool.task()
            };
            task.execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap();
        }
        time.advance(10 * MS);
        until(|| {
            let m = pool.metrics();
            m.timers_pending == 0 && m.queued == 2 && ran.load(SeqCst) == 1
        });
        time.advance(Duration::from_secs(1));
        until(|| ran.load(SeqCst) == 2 && pool.metrics().queued == 1);
        // Shutdown drains what waits, past the limit.
        let report = pool.shutdown();
        assert_eq!((report.completed, ran.load(SeqCst)), (3, 3));
    }
}

#[test]
fn a_low_task_starts_within_its_aging_bound_under_high_ones() {
    let time = ManualTime::new();
    let pool = time.pool(1).build().unwrap();
    pool.configure_tenant(&"p", TenantConfig::new().aging(Duration::from_millis(100)))
        .unwrap();
    let gate = hold(&pool);
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = Arc::clone(&order);
    pool.task()
        .tenant("p")
        .priority(Priority::Low)
        .execute(move || o.lock().unwrap().push(-1))
        .unwrap();
    for i in 0..20 {
        let (o, t) = (Arc::clone(&order), time.clone());
        pool.task()
            .tenant("p")
            .priority(Priority::High)
            .execute(move || {
                o.lock().unwrap().push(i);
                if i == 4 {
                    // The low task has now waited its aging bound.
                    t.advance(Duration::from_millis(100));
                }
            })
            .unwrap();
    }
    gate.open();
    common::idle(&pool);
    let order = order.lock().unwrap();
    assert_eq!(order[..7], [0, 1, 2, 3, 4, -1, 5]);
    assert_eq!(order.len(), 21);
}

#[test]
fn priorities_without_a_tenant_order_the_unnamed_tenants_queue() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let gate = hold(&pool);
    let order = Arc::new(Mutex::new(Vec::new()));
    for (i, p) in [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Normal,
    ]
    .into_iter()
    .enumerate()
    {
        let o = Arc::clone(&order);
        pool.task()
            .priority(p)
            .execute(move || o.lock().unwrap().push(i))
            .unwrap();
    }
    gate.open();
    common::idle(&pool);
    assert_eq!(*order.lock().unwrap(), [2, 1, 3, 0]);
}

#[test]
fn keyed_order_and_exact_accounting_hold_with_tenants() {
    let pool = Pool::builder().workers(3).build().unwrap();
    let logs: Arc<Vec<Mutex<Vec<u32>>>> =
        Arc::new((0..4).map(|_| Mutex::new(Vec::new())).collect());
    for seq in 0..200u32 {
        for t in 0..3 {
            for key in 0..4usize {
                let l = Arc::clone(&logs);
                pool.task()
                    .tenant(&format!("t{t}"))
                    .key(&key)
                    .execute(move || l[key].lock().unwrap().push(seq * 3 + t))
                    .unwrap();
            }
        }
    }
    common::idle(&pool);
    for key in 0..4 {
        let log = logs[key].lock().unwrap();
        assert_eq!(log.len(), 600);
        // Per key, each tenant's tasks ran in the order submitted.
        for t in 0..3 {
            let mine: Vec<u32> = log.iter().copied().filter(|v| v % 3 == t).collect();
            assert_eq!(
                mine,
                (0..200).map(|s| s * 3 + t).collect::<Vec<_>>(),
                "key {key}, t{t}"
            );
        }
    }
    let m = pool.metrics();
    assert_identity(&m);
    // Idle tenants were forgotten: their figures are in the rest.
    assert_eq!(m.tenants_live, 0);
    assert_eq!(m.tenants_other.as_ref().unwrap().dispatched, 2400);
    let report = pool.shutdown();
    assert_eq!((report.submitted, report.completed), (2400, 2400));
}

#[test]
fn shutdown_now_abandons_what_tenants_hold_and_counts_it() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    pool.configure_tenant(
        &"slow",
        TenantConfig::new().rate_limit(RateLimit::new(1.0, 1).unwrap()),
    )
    .unwrap();
    let handles: Vec<_> = (0..5)
        .map(|i| pool.task().tenant("slow").spawn(move || i).unwrap())
        .collect();
    until(|| pool.metrics().queued == 4 && pool.metrics().running == 0);
    let report = pool.shutdown_now();
    assert_eq!((report.completed, report.abandoned), (1, 4));
    let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    assert_eq!(results[0], Ok(0));
    assert!(
        results[1..].iter().all(|r| *r == Err(TaskError::Abandoned)),
        "{results:?}"
    );
}

#[test]
fn a_full_tenant_queue_rejects_or_drops_as_configured() {
    let pool = Pool::builder().workers(1).build().unwrap();
    pool.configure_tenant(
        &"rej",
        TenantConfig::new().queue_capacity(2, Backpressure::Reject),
    )
    .unwrap();
    pool.configure_tenant(
        &"old",
        TenantConfig::new().queue_capacity(2, Backpressure::DropOldest),
    )
    .unwrap();
    let gate = hold(&pool);
    let a = pool.task().tenant("rej").spawn(|| 1).unwrap();
    let b = pool.task().tenant("rej").spawn(|| 2).unwrap();
    let e = pool.task().tenant("rej").spawn(|| 3).unwrap_err();
    assert!(e.is_full(), "{e:?}");
    let c = pool.task().tenant("old").spawn(|| 4).unwrap();
    let d = pool.task().tenant("old").spawn(|| 5).unwrap();
    let f = pool.task().tenant("old").spawn(|| 6).unwrap();
    gate.open();
    assert_eq!((a.join(), b.join()), (Ok(1), Ok(2)));
    assert_eq!(
        (c.join(), d.join(), f.join()),
        (Err(TaskError::Dropped), Ok(5), Ok(6))
    );
    common::idle(&pool);
    let m = pool.metrics();
    assert_identity(&m);
    assert_eq!(
        (tenant(&m, "rej").rejected, tenant(&m, "old").dropped),
        (1, 1)
    );
}

#[test]
fn a_hundred_thousand_tenants_touched_once_are_forgotten_when_idle() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..100_000u32 {
        let r = Arc::clone(&ran);
        pool.task()
            .tenant(&i)
            .execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap();
    }
    common::idle(&pool);
    assert_eq!(ran.load(SeqCst), 100_000);
    let m = pool.metrics();
    assert_eq!(m.tenants_live, 0, "idle tenants are forgotten");
    assert!(m.tenants.is_empty());
    let other = m.tenants_other.unwrap();
    assert_eq!(
        (other.submitted, other.dispatched, other.queued),
        (100_000, 100_000, 0)
    );
    assert_eq!(other.queue_wait.count(), 100_000);
}

#[test]
fn bad_tenant_settings_and_options_are_named() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let cases: [(TenantConfig, &str); 4] = [
        (
            TenantConfig::new().weight(0),
            "invalid tenant.weight = 0: expected at least 1",
        ),
        (
            TenantConfig::new().max_concurrency(0),
            "invalid tenant.max_concurrency = 0: expected at least 1",
        ),
        (
            TenantConfig::new().queue_capacity(0, Backpressure::Reject),
            "invalid tenant.queue_capacity = 0: expected at least 1",
        ),
        (
            TenantConfig::new().queue_capacity(5, Backpressure::CallerRuns),
            "invalid tenant.backpressure = CallerRuns: expected Block, Reject, DropNewest or DropOldest (a task run by its caller would skip its turn)",
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(
            pool.configure_tenant(&"x", config).unwrap_err().to_string(),
            expected
        );
    }
    assert_eq!(
        RateLimit::new(0.0, 1).unwrap_err().to_string(),
        "invalid rate_limit.rate = 0.0: expected a finite number of tasks per second, \
         at least one task in MAX_DELAY (365 days)"
    );
    // A rate so low that a token's wait is past the clock: refused, where
    // it used to end the process from the worker that computed the wait.
    assert!(RateLimit::new(1e-300, 1).is_err());
    let per_year = 1.0 / ebbtide::MAX_DELAY.as_secs_f64();
    assert!(RateLimit::new(per_year, 1).is_ok());
    assert!(RateLimit::new(per_year * 0.99, 1).is_err());
    assert!(RateLimit::new(f64::NAN, 1)
        .unwrap_err()
        .to_string()
        .contains("NaN"));
    assert_eq!(
        RateLimit::new(5.0, 0).unwrap_err().to_string(),
        "invalid rate_limit.burst = 0: expected at least 1"
    );
    assert_eq!(
        "urgent".parse::<Priority>().unwrap_err().to_string(),
        "invalid priority = \"urgent\": expected high, normal or low"
    );
    assert_eq!("LOW".parse::<Priority>(), Ok(Priority::Low));
    // A periodic task's cost is checked as a one-shot task's.
    pool.configure_tenant(&"x", TenantConfig::new().max_concurrency(2))
        .unwrap();
    for (cost, why) in [
        (0, "invalid cost = 0: expected at least 1"),
        (
            3,
            "invalid cost = 3: expected at most its tenant's max_concurrency",
        ),
    ] {
        let e = pool
            .task()
            .tenant("x")
            .cost(cost)
            .periodic(ebbtide::Schedule::FixedRate(5 * MS), |_| {})
            .unwrap_err();
        assert_eq!(e.invalid_option().unwrap().to_string(), why);
    }
    let e = Pool::builder()
        .tenant_defaults(TenantConfig::new().weight(0))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("tenant.weight"), "{e}");
    // Nothing refused was counted as accepted.
    assert_eq!(pool.shutdown().submitted, 0);
}

#[test]
fn tenants_are_in_the_prometheus_text_and_the_metrics() {
    let pool = Pool::builder().name("shop").workers(1).build().unwrap();
    pool.configure_tenant(&"acme \"inc\"", TenantConfig::new().weight(2))
        .unwrap();
    for _ in 0..3 {
        pool.task().tenant("acme \"inc\"").execute(|| {}).unwrap();
    }
    common::idle(&pool);
    let m = pool.metrics();
    assert_eq!(m.tenants_live, 1);
    let acme = tenant(&m, "acme \"inc\"");
    assert_eq!(
        (
            acme.weight,
            acme.submitted,
            acme.dispatched,
            acme.completed,
            acme.queue_wait.count()
        ),
        (2, 3, 3, 3, 3)
    );
    let text = m.to_prometheus("ebbtide");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let dispatched = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "ebbtide_tenant_tasks_dispatched_total"
                && s.labels.get("tenant").is_some_and(|t| t.contains("acme"))
        })
        .expect("the tenant's series");
    assert!(
        matches!(dispatched.value, prometheus_parse::Value::Counter(v) if v == 3.0),
        "{dispatched:?}"
    );
    assert!(
        text.contains(
            "ebbtide_tenant_queue_wait_seconds_count{pool=\"shop\",tenant=\"acme \\\"inc\\\"\"} 3"
        ),
        "{text}"
    );
    assert!(text.contains("tenant=\"(other)\""));
}

/// A delayed tenant task waits on the timing wheel, then in its tenant's
/// queue: its rate limit holds it too.
#[test]
fn delayed_tenant_tasks_join_their_tenants_queue_when_due() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    pool.configure_tenant(
        &"d",
        TenantConfig::new().rate_limit(RateLimit::new(10.0, 1).unwrap()),
    )
    .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let r = Arc::clone(&ran);
        pool.task()
            .tenant("d")
            .delay(Duration::from_millis(50))
            .execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap();
    }
    assert_eq!(pool.metrics().timers_pending, 3);
    time.advance(Duration::from_millis(50));
    // One token: one runs, two wait in the tenant's queue.
    until(|| {
        let m = pool.metrics();
        ran.load(SeqCst) == 1
            && m.timers_pending == 0
            && tenant(&m, "d").queued == 2
            && m.running == 0
    });
    time.advance(Duration::from_millis(100));
    until(|| ran.load(SeqCst) == 2 && tenant(&pool.metrics(), "d").queued == 1);
    time.advance(Duration::from_millis(100));
    until(|| ran.load(SeqCst) == 3);
    common::idle(&pool);
    let m = pool.metrics();
    assert_identity(&m);
    assert_eq!(tenant(&m, "d").submitted, 3);
    assert_eq!(pool.shutdown().completed, 3);
}

/// A tenant task's retry goes back to its tenant's queue when due: a rate
/// limit holds the retry as it held the first attempt.
#[test]
fn a_tenant_tasks_retries_wait_in_its_queue() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    pool.configure_tenant(
        &"r",
        TenantConfig::new().rate_limit(RateLimit::new(1.0, 1).unwrap()),
    )
    .unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&attempts);
    let handle = pool
        .task()
        .tenant("r")
        .retry(ebbtide::RetryPolicy::fixed(Duration::from_millis(10)).max_attempts(3))
        .spawn_fallible(move |_| {
            if a.fetch_add(1, SeqCst) == 0 {
                Err("first attempt fails")
            } else {
                Ok(7)
            }
        })
        .unwrap();
    until(|| attempts.load(SeqCst) == 1 && pool.metrics().timers_pending == 1);
    time.advance(Duration::from_millis(10));
    // Due, but the bucket is empty until a second has passed.
    until(|| {
        let m = pool.metrics();
        m.timers_pending == 0 && tenant(&m, "r").queued == 1 && tenant(&m, "r").rate_limited >= 1
    });
    assert_eq!(attempts.load(SeqCst), 1);
    time.advance(Duration::from_millis(990));
    assert_eq!(handle.join(), Ok(Ok(7)));
    assert_eq!(attempts.load(SeqCst), 2);
    common::idle(&pool);
    assert_identity(&pool.metrics());
}

/// A group's limit counts cost units: a task of cost 5 takes five of 8.
#[test]
fn a_groups_costed_tasks_never_exceed_its_limit() {
    let pool = Pool::builder().workers(4).build().unwrap();
    let (now, max) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let mut group = pool.group::<u32, String>().limit(8);
    for i in 0..40u32 {
        let cost = [1u32, 3, 5, 8][i as usize % 4];
        let (n, m) = (Arc::clone(&now), Arc::clone(&max));
        group
            .spawn_with_cost(cost as usize, move |_| {
                m.fetch_max(n.fetch_add(cost, SeqCst) + cost, SeqCst);
                for _ in 0..2000 {
                    std::hint::spin_loop();
                }
                n.fetch_sub(cost, SeqCst);
                Ok(i)
            })
            .unwrap();
    }
    let e = group.spawn_with_cost(9, |_| Ok(0)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid cost = 9: expected at most the group's limit"
    );
    let e = group.spawn_with_cost(0, |_| Ok(0)).unwrap_err();
    assert_eq!(e.to_string(), "invalid cost = 0: expected at least 1");
    assert_eq!(group.wait(), Ok((0..40).collect::<Vec<_>>()));
    assert!(max.load(SeqCst) <= 8, "{} units at once", max.load(SeqCst));
}

/// A group without a limit takes any cost: two tasks of `usize::MAX`
/// units each (together past what a `usize` counts) run one after the
/// other, the second once the first has left the pool.
#[test]
fn costs_past_a_usize_together_take_turns_in_a_group() {
    let pool = Pool::builder().workers(2).build().unwrap();
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut group = pool.group::<u32, String>();
    for i in 0..2u32 {
        let (n, m) = (Arc::clone(&now), Arc::clone(&max));
        group
            .spawn_with_cost(usize::MAX, move |_| {
                m.fetch_max(n.fetch_add(1, SeqCst) + 1, SeqCst);
                n.fetch_sub(1, SeqCst);
                Ok(i)
            })
            .unwrap();
    }
    assert_eq!(group.wait(), Ok(vec![0, 1]));
    assert_eq!(max.load(SeqCst), 1);
}

/// A group's rate limit holds its tasks in its own tenant's queue.
#[test]
fn a_groups_rate_limit_holds_its_tasks_until_the_refill() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let mut group = pool
        .group::<(), String>()
        .rate_limit(RateLimit::new(10.0, 2).unwrap());
    for _ in 0..5 {
        let r = Arc::clone(&ran);
        group.spawn(move |_| {
            r.fetch_add(1, SeqCst);
            Ok(())
        });
    }
    let settled = |n: usize| {
        until(|| {
            let m = pool.metrics();
            ran.load(SeqCst) == n && m.queued == 5 - n && m.running == 0
        })
    };
    settled(2);
    time.advance(Duration::from_millis(100));
    settled(3);
    time.advance(Duration::from_millis(200));
    settled(5);
    assert_eq!(group.wait(), Ok(vec![(); 5]));
    common::idle(&pool);
    assert_identity(&pool.metrics());
}

/// Under `Block`, a submitter to a full tenant queue waits for room; `try_`
/// calls are refused with `Full`, a bounded wait with `Timeout`.
#[test]
fn a_full_tenant_queue_under_block_makes_the_submitter_wait() {
    let pool = Arc::new(Pool::builder().workers(1).build().unwrap());
    pool.configure_tenant(
        &"b",
        TenantConfig::new().queue_capacity(2, Backpressure::Block),
    )
    .unwrap();
    let gate = hold(&pool);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let r = Arc::clone(&ran);
        pool.task()
            .tenant("b")
            .execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap();
    }
    let e = pool.task().tenant("b").try_execute(|| {}).unwrap_err();
    assert!(e.is_full(), "{e:?}");
    let e = pool
        .task()
        .tenant("b")
        .wait_for_room(Duration::from_millis(10))
        .execute(|| {})
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    let (p, r) = (Arc::clone(&pool), Arc::clone(&ran));
    let blocked = std::thread::spawn(move || {
        p.task().tenant("b").execute(move || {
            r.fetch_add(1, SeqCst);
        })
    });
    // It is waiting: offered (counted) but not queued.
    until(|| tenant(&pool.metrics(), "b").submitted == 5);
    assert_eq!(tenant(&pool.metrics(), "b").queued, 2);
    gate.open();
    assert!(blocked.join().unwrap().is_ok());
    common::idle(&pool);
    assert_eq!(ran.load(SeqCst), 3);
    let m = pool.metrics();
    assert_identity(&m);
    assert_eq!(tenant(&m, "b").rejected, 2);
}

#[test]
fn a_keys_tasks_keep_their_order_whatever_their_priorities() {
    // Tasks of key "k" without a tenant: low, high, none (straight to the
    // shard unless an earlier one of its key waits), normal, high, none.
    // The only worker is held by a tenant task, so all six wait together.
    // No task ages while the test runs.
    let pool = Pool::builder()
        .workers(1)
        .tenant_defaults(TenantConfig::new().aging(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let gate = hold(&pool);
    let log = Arc::new(Mutex::new(Vec::new()));
    let lanes = [
        Some(Priority::Low),
        Some(Priority::High),
        None,
        Some(Priority::Normal),
        Some(Priority::High),
        None,
    ];
    for (i, lane) in lanes.into_iter().enumerate() {
        let log = Arc::clone(&log);
        let mut task = pool.task().key(&"k");
        if let Some(p) = lane {
            task = task.priority(p);
        }
        task.execute(move || log.lock().unwrap().push(i)).unwrap();
    }
    // An unkeyed high task still goes first among those waiting.
    let l = Arc::clone(&log);
    pool.task()
        .priority(Priority::High)
        .execute(move || l.lock().unwrap().push(99))
        .unwrap();
    gate.open();
    common::idle(&pool);
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.iter()
            .filter(|&&i| i != 99)
            .copied()
            .collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    assert_eq!(log.len(), 7);
    // The high unkeyed task passed the low keyed one (and so every task
    // of the key behind it).
    assert_eq!(log[0], 99, "{log:?}");
    assert_eq!(pool.shutdown().completed, 8);
}

#[test]
fn a_delayed_keyed_task_comes_due_behind_the_earlier_tasks_of_its_key() {
    // A task of key "k" delayed 5 ms; then a low task of "k", which waits
    // in the unnamed tenant's queue behind the held worker. The delayed
    // one comes due meanwhile: it takes its key's place as of then, behind
    // the low one.
    let time = ManualTime::new();
    let pool = time.pool(1).build().unwrap();
    let gate = hold(&pool);
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&log);
    pool.task()
        .key(&"k")
        .delay(5 * MS)
        .execute(move || l.lock().unwrap().push("delayed"))
        .unwrap();
    let l = Arc::clone(&log);
    pool.task()
        .key(&"k")
        .priority(Priority::Low)
        .execute(move || l.lock().unwrap().push("low"))
        .unwrap();
    time.advance(5 * MS);
    until(|| pool.metrics().timers_pending == 0);
    gate.open();
    common::idle(&pool);
    assert_eq!(*log.lock().unwrap(), ["low", "delayed"]);
    let report = pool.shutdown();
    assert_eq!((report.submitted, report.completed), (3, 3), "{report:?}");
}

#[test]
fn a_keyed_state_task_runs_behind_the_earlier_tasks_of_its_shard() {
    // A low task of key "k" waits in the unnamed tenant's queue behind the
    // held worker; a `keyed_state` task of "k" submitted after it runs
    // after it, as `execute`'s "after every earlier task of that shard"
    // says.
    let pool = Pool::builder().workers(1).build().unwrap();
    let state = pool.keyed_state(|_| Vec::new());
    let gate = hold(&pool);
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&log);
    pool.task()
        .key(&"k")
        .priority(Priority::Low)
        .execute(move || l.lock().unwrap().push("low"))
        .unwrap();
    let l = Arc::clone(&log);
    let handle = state
        .spawn(&"k", move |seen: &mut Vec<&str>| {
            seen.push("state");
            l.lock().unwrap().push("state");
            seen.len()
        })
        .unwrap();
    gate.open();
    match handle.join_timeout(common::PATIENCE) {
        Ok(result) => assert_eq!(result, Ok(1)),
        Err(_) => panic!("the keyed_state task never ended"),
    }
    common::idle(&pool);
    assert_eq!(*log.lock().unwrap(), ["low", "state"]);
    assert_eq!(pool.shutdown().completed, 3);
}

/// A tenant's new limits take hold at once, not when its next task ends
/// or its old refill comes due: raising a concurrency cap starts waiting
/// tasks now; lifting a slow rate limit lets its queue through without
/// the clock moving.
#[test]
fn a_reconfigured_tenants_new_limits_take_hold_at_once() {
    let time = ManualTime::new();
    let pool = time.pool(4).build().unwrap();
    pool.configure_tenant(&"capped", TenantConfig::new().max_concurrency(1))
        .unwrap();
    let gate = Gate::new();
    let arrivals = Arrivals::new();
    for _ in 0..3 {
        let (g, a) = (gate.clone(), arrivals.clone());
        pool.task()
            .tenant("capped")
            .execute(move || {
                a.arrive();
                g.wait();
            })
            .unwrap();
    }
    arrivals.wait_for(1);
    let m = pool.metrics();
    assert_eq!(
        (tenant(&m, "capped").running, tenant(&m, "capped").queued),
        (1, 2)
    );
    // The running task holds its worker; the raise alone starts the rest.
    pool.configure_tenant(&"capped", TenantConfig::new().max_concurrency(3))
        .unwrap();
    arrivals.wait_for(3);

    let hourly = RateLimit::new(1.0 / 3600.0, 1).unwrap();
    pool.configure_tenant(&"slow", TenantConfig::new().rate_limit(hourly))
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..4 {
        let r = Arc::clone(&ran);
        pool.task()
            .tenant("slow")
            .execute(move || {
                r.fetch_add(1, SeqCst);
            })
            .unwrap();
    }
    until(|| ran.load(SeqCst) == 1 && tenant(&pool.metrics(), "slow").queued == 3);
    // A faster rate refills the bucket: its burst goes now.
    let fast = RateLimit::new(10.0, 2).unwrap();
    pool.configure_tenant(&"slow", TenantConfig::new().rate_limit(fast))
        .unwrap();
    until(|| ran.load(SeqCst) == 3);
    // No limit at all: the last one goes too, the clock never having moved.
    pool.configure_tenant(&"slow", TenantConfig::new()).unwrap();
    until(|| ran.load(SeqCst) == 4);

    gate.open();
    common::idle(&pool);
    let report = pool.shutdown();
    assert_eq!((report.submitted, report.completed), (7, 7));
}

/// A task accepted with a cost its tenant's limit allowed then, and
/// queued while the limit is lowered below that cost, still runs: alone,
/// once nothing else of its tenant runs, taking the whole capacity.
#[test]
fn a_task_costlier_than_a_lowered_limit_runs_alone() {
    let pool = Pool::builder().workers(4).build().unwrap();
    pool.configure_tenant(&"t", TenantConfig::new().max_concurrency(8))
        .unwrap();
    let (first, heavy) = (Gate::new(), Gate::new());
    let arrivals = Arrivals::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let task = |name: &'static str, gate: Option<Gate>| {
        let (a, l) = (arrivals.clone(), Arc::clone(&log));
        move || {
            l.lock().unwrap().push(name);
            a.arrive();
            if let Some(g) = gate {
                g.wait();
            }
        }
    };
    pool.task()
        .tenant("t")
        .execute(task("light", Some(first.clone())))
        .unwrap();
    arrivals.wait_for(1);
    // 1 + 8 > 8: the heavy task waits for the light one.
    pool.task()
        .tenant("t")
        .cost(8)
        .execute(task("heavy", Some(heavy.clone())))
        .unwrap();
    pool.configure_tenant(&"t", TenantConfig::new().max_concurrency(4))
        .unwrap();
    // Behind the heavy one in its tenant's queue.
    pool.task()
        .tenant("t")
        .execute(task("after", None))
        .unwrap();
    assert_eq!(tenant(&pool.metrics(), "t").queued, 2);
    first.open();
    arrivals.wait_for(2);
    until(|| {
        let m = pool.metrics();
        (tenant(&m, "t").running, tenant(&m, "t").queued) == (8, 1)
    });
    heavy.open();
    arrivals.wait_for(3);
    common::idle(&pool);
    assert_eq!(*log.lock().unwrap(), ["light", "heavy", "after"]);
    assert_eq!(pool.shutdown().completed, 3);
}

/// Tasks cancelled while they wait for their tenant's rate limit take no
/// rate token: those cancelled by their token leave at once, the one
/// cancelled by its handle goes through free at the refill, and the live
/// task behind them takes the token. (They used to take one token each,
/// so that the live task waited one refill for each cancelled task ahead
/// of it.)
#[test]
fn cancelled_tasks_take_no_rate_token() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let limit = RateLimit::new(1.0, 1).unwrap();
    pool.configure_tenant(&"r", TenantConfig::new().rate_limit(limit))
        .unwrap();
    let first = pool.task().tenant("r").spawn(|| 0).unwrap();
    assert_eq!(first.join_timeout(common::PATIENCE).ok(), Some(Ok(0)));
    // The bucket is empty: these wait for the refill at one second.
    let token = ebbtide::CancelToken::new();
    let by_token: Vec<_> = (0..4)
        .map(|i| {
            pool.task()
                .tenant("r")
                .cancel_token(&token)
                .spawn(move || i)
                .unwrap()
        })
        .collect();
    let by_handle = pool.task().tenant("r").spawn(|| 5).unwrap();
    let live = pool.task().tenant("r").spawn(|| 6).unwrap();
    until(|| tenant(&pool.metrics(), "r").queued == 6);
    token.cancel();
    assert!(by_handle.cancel());
    time.advance(Duration::from_secs(1));
    assert_eq!(live.join_timeout(common::PATIENCE).ok(), Some(Ok(6)));
    for handle in by_token {
        assert_eq!(
            handle.join_timeout(common::PATIENCE).ok(),
            Some(Err(TaskError::Cancelled))
        );
    }
    common::idle(&pool);
    let m = pool.metrics();
    let r = tenant(&m, "r");
    assert_eq!(
        (r.queued, r.running, r.dispatched, r.completed),
        (0, 0, 7, 7)
    );
    assert_eq!(m.counts.cancelled, 5);
    assert_identity(&m);
}

/// A task waiting for its tenant's refill (an hour away) whose token is
/// cancelled leaves the queue at once and ends unrun; the live task ahead
/// of it keeps waiting.
#[test]
fn a_cancelled_token_takes_its_task_out_of_a_waiting_tenants_queue() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let hourly = RateLimit::new(1.0 / 3600.0, 1).unwrap();
    pool.configure_tenant(&"r", TenantConfig::new().rate_limit(hourly))
        .unwrap();
    let first = pool.task().tenant("r").spawn(|| 0).unwrap();
    assert_eq!(first.join_timeout(common::PATIENCE).ok(), Some(Ok(0)));
    let live = pool.task().tenant("r").spawn(|| 1).unwrap();
    let token = ebbtide::CancelToken::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let behind: Vec<_> = (0..3)
        .map(|_| {
            let dropped = common::DropCounter(Arc::clone(&drops));
            pool.task()
                .tenant("r")
                .cancel_token(&token.child())
                .spawn(move || {
                    let _dropped = &dropped;
                    2
                })
                .unwrap()
        })
        .collect();
    until(|| tenant(&pool.metrics(), "r").queued == 4);
    token.cancel();
    for handle in behind {
        assert_eq!(
            handle.join_timeout(common::PATIENCE).ok(),
            Some(Err(TaskError::Cancelled))
        );
    }
    until(|| pool.metrics().counts.cancelled == 3);
    assert_eq!(drops.load(SeqCst), 3, "each closure dropped once, unrun");
    // Given a token cancelled already: out at once too.
    let late = pool
        .task()
        .tenant("r")
        .cancel_token(&token)
        .spawn(|| 3)
        .unwrap();
    assert_eq!(
        late.join_timeout(common::PATIENCE).ok(),
        Some(Err(TaskError::Cancelled))
    );
    until(|| pool.metrics().counts.cancelled == 4);
    let m = pool.metrics();
    let r = tenant(&m, "r");
    assert_eq!((r.queued, r.dispatched), (1, 5), "the live task waits");
    assert!(!live.is_finished());
    assert_identity(&m);
    let report = pool.shutdown_now();
    assert_eq!(
        live.join_timeout(common::PATIENCE).ok(),
        Some(Err(TaskError::Abandoned))
    );
    assert_eq!(
        (report.completed, report.cancelled, report.abandoned),
        (1, 4, 1),
        "{report:?}"
    );
}

/// A fail-fast group under an hourly rate limit: when its first task
/// fails, the tasks waiting for the refill end at once, not in an hour.
#[test]
fn a_failing_rate_limited_group_ends_its_waiting_tasks_at_once() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let mut group = pool
        .group::<u32, String>()
        .rate_limit(RateLimit::new(1.0 / 3600.0, 1).unwrap());
    let gate = Gate::new();
    let g = gate.clone();
    group.spawn(move |_| {
        g.wait();
        Err("down".to_string())
    });
    for i in 0..3 {
        group.spawn(move |_| Ok(i));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(group.wait_all()).unwrap());
    gate.open();
    let results = rx.recv_timeout(common::PATIENCE).unwrap();
    assert_eq!(
        results,
        [
            Err(GroupError::Failed("down".to_string())),
            Err(GroupError::Task(TaskError::Cancelled)),
            Err(GroupError::Task(TaskError::Cancelled)),
            Err(GroupError::Task(TaskError::Cancelled)),
        ]
    );
    common::idle(&pool);
    let m = pool.metrics();
    assert_eq!(m.counts.cancelled, 3);
    assert_identity(&m);
}

/// A tenant whose last waiting task its token took out, while the tenant
/// waited in the fair ring for the window, leaves the ring with it: once
/// that task has ended the tenant is idle and forgotten, and the pool goes
/// on. (It used to stay in the ring; the next look at the ring found a
/// forgotten tenant, and the worker's panic aborted the process.)
#[test]
fn a_tenant_emptied_by_a_cancelled_token_leaves_the_ring() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let gate = Gate::new();
    let started = Arrivals::new();
    let (g, s) = (gate.clone(), started.clone());
    // Fills the window of one: what comes next waits in its tenant's
    // queue, its tenant in the ring.
    let blocker = pool
        .task()
        .tenant("a")
        .spawn(move || {
            s.arrive();
            g.wait();
        })
        .unwrap();
    started.wait_for(1);
    let token = ebbtide::CancelToken::new();
    let waiting = pool
        .task()
        .tenant("t")
        .cancel_token(&token)
        .spawn(|| 1)
        .unwrap();
    assert_eq!(tenant(&pool.metrics(), "t").queued, 1);
    token.cancel();
    assert_eq!(tenant(&pool.metrics(), "t").queued, 0);
    gate.open();
    assert_eq!(blocker.join_timeout(common::PATIENCE).ok(), Some(Ok(())));
    assert_eq!(
        waiting.join_timeout(common::PATIENCE).ok(),
        Some(Err(TaskError::Cancelled))
    );
    common::idle(&pool);
    // The pool goes on, for the forgotten tenant too.
    let again = pool.task().tenant("t").spawn(|| 2).unwrap();
    assert_eq!(again.join_timeout(common::PATIENCE).ok(), Some(Ok(2)));
    let report = pool.shutdown();
    assert_eq!((report.completed, report.cancelled), (2, 1));
}

/// A periodic task of a tenant: each run, when due, waits in its tenant's
/// queue and takes its turn and a rate token there like any task of the
/// tenant.
#[test]
fn a_periodic_tasks_runs_wait_for_their_tenants_rate() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let limit = RateLimit::new(1.0, 1).unwrap();
    pool.configure_tenant(&"p", TenantConfig::new().rate_limit(limit))
        .unwrap();
    let runs = Arrivals::new();
    let r = runs.clone();
    let periodic = pool
        .task()
        .tenant("p")
        .priority(Priority::High)
        .periodic(ebbtide::Schedule::FixedDelay(100 * MS), move |_| r.arrive())
        .unwrap();
    runs.wait_for(1);
    until(|| pool.metrics().timers_pending == 1);
    time.advance(100 * MS);
    // Due, but the bucket refills only at one second.
    until(|| {
        let m = pool.metrics();
        m.timers_pending == 0 && tenant(&m, "p").queued == 1 && tenant(&m, "p").rate_limited >= 1
    });
    assert_eq!(periodic.runs(), 1);
    time.advance(900 * MS);
    runs.wait_for(2);
    until(|| pool.metrics().timers_pending == 1);
    periodic.cancel();
    assert_eq!(periodic.join(), Ok(2));
    common::idle(&pool);
    let m = pool.metrics();
    let p = tenant(&m, "p");
    assert_eq!((p.dispatched, p.queued, p.running), (2, 0, 0));
    assert_eq!((m.counts.cancelled, m.timers_pending), (1, 0));
    assert_identity(&m);
}

/// A pool's rate limit holds a periodic task's runs, and a cancelled one
/// waiting for the refill ends at once, without waiting for it.
#[test]
fn a_pool_rate_limit_holds_periodic_runs_and_cancel_ends_a_waiting_one() {
    let time = ManualTime::new();
    let hourly = RateLimit::new(1.0 / 3600.0, 1).unwrap();
    let pool = time.pool(2).rate_limit(hourly).build().unwrap();
    let runs = Arrivals::new();
    let r = runs.clone();
    let periodic = pool
        .task()
        .periodic(ebbtide::Schedule::FixedRate(10 * MS), move |_| r.arrive())
        .unwrap();
    runs.wait_for(1);
    time.advance(10 * MS);
    until(|| {
        let m = pool.metrics();
        m.timers_pending == 0 && m.queued == 1
    });
    assert_eq!(periodic.runs(), 1);
    // Ended now, not at the refill an hour away.
    periodic.cancel();
    assert_eq!(
        common::within("the periodic task", move || periodic.join()),
        Ok(1)
    );
    common::idle(&pool);
    let m = pool.metrics();
    assert_eq!((m.queued, m.counts.cancelled), (0, 1));
    assert_identity(&m);
}

/// Tasks back from the timing wheel (a delayed task, a retry) waiting in
/// their tenant's queue for a refill an hour away end at once when their
/// token is cancelled, and take no rate token.
#[test]
fn a_cancelled_token_takes_a_due_timer_out_of_its_tenants_queue() {
    let time = ManualTime::new();
    let pool = time.pool(2).build().unwrap();
    let hourly = RateLimit::new(1.0 / 3600.0, 1).unwrap();
    pool.configure_tenant(&"h", TenantConfig::new().rate_limit(hourly))
        .unwrap();
    let token = ebbtide::CancelToken::new();
    let attempts = Arrivals::new();
    let a = attempts.clone();
    // The retry's first attempt takes the only token.
    let retried = pool
        .task()
        .tenant("h")
        .cancel_token(&token)
        .retry(ebbtide::RetryPolicy::fixed(10 * MS).max_attempts(3))
        .spawn_fallible(move |_| {
            a.arrive();
            Err::<(), _>("down")
        })
        .unwrap();
    attempts.wait_for(1);
    let delayed = pool
        .task()
        .tenant("h")
        .cancel_token(&token)
        .delay(10 * MS)
        .spawn(|| "ran")
        .unwrap();
    let live = pool.task().tenant("h").delay(10 * MS).spawn(|| 9).unwrap();
    until(|| pool.metrics().timers_pending == 3);
    time.advance(10 * MS);
    until(|| {
        let m = pool.metrics();
        m.timers_pending == 0 && tenant(&m, "h").queued == 3
    });
    token.cancel();
    assert_eq!(
        delayed.join_timeout(common::PATIENCE).ok(),
        Some(Err(TaskError::Cancelled))
    );
    assert_eq!(
        retried.join_timeout(common::PATIENCE).ok(),
        Some(Err(TaskError::Cancelled))
    );
    until(|| tenant(&pool.metrics(), "h").queued == 1);
    assert_eq!(attempts.seen(), 1);
    // The live task behind them waits for the refill, and gets its token.
    time.advance(Duration::from_secs(3600));
    assert_eq!(live.join_timeout(common::PATIENCE).ok(), Some(Ok(9)));
    common::idle(&pool);
    let m = pool.metrics();
    let h = tenant(&m, "h");
    assert_eq!((h.queued, h.running, h.dispatched), (0, 0, 4));
    assert_eq!(m.counts.cancelled, 2);
    assert_identity(&m);
}

/// A pool's rate limit holds a group's tasks and `keyed_state` tasks too:
/// they wait in the unnamed tenant's queue for their tokens, a shard's
/// tasks in their order.
#[test]
fn a_pool_rate_limit_holds_group_and_keyed_state_tasks() {
    let time = ManualTime::new();
    let pool = time
        .pool(2)
        .rate_limit(RateLimit::new(1.0, 1).unwrap())
        .build()
        .unwrap();
    let started = Arrivals::new();
    let mut group = pool.group::<usize, ()>();
    for i in 0..2 {
        let s = started.clone();
        group.spawn(move |_| {
            s.arrive();
            Ok(i)
        });
    }
    let states = pool.keyed_state(|_| Vec::new());
    for i in 0..2 {
        let s = started.clone();
        states
            .execute(&"k", move |seen: &mut Vec<usize>| {
                seen.push(i);
                s.arrive();
            })
            .unwrap();
    }
    // One token at a time: one task started, three wait for a refill.
    until(|| started.seen() == 1 && pool.metrics().queued == 3);
    for n in 2..=4 {
        time.advance(Duration::from_secs(1));
        until(|| started.seen() == n && pool.metrics().queued == 4 - n);
    }
    assert_eq!(group.wait(), Ok(vec![0, 1]));
    common::idle(&pool);
    let seen: Vec<usize> = states
        .into_states()
        .unwrap_or_else(|_| panic!("no task is left"))
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert_eq!(seen, vec![0, 1]);
    let m = pool.metrics();
    assert_eq!(m.counts.completed, 4);
    assert_identity(&m);
}
