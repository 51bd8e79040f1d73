//! Pipelines: every item ends exactly once (at the sink or the error
//! sink), per-key order through keyed stages, memory bounded by the
//! buffers under a slow sink, ordered drain under a deadline, fail-fast,
//! batches flushed on size, on time (a hand-moved clock) and on shutdown,
//! bad options refused, per-stage metrics.
#![cfg(not(loom))]

mod common;

use common::{until, Gate, ManualTime};
use ebbtide::pipeline::{ItemError, Pipeline, PipelineError, SendError, Stage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

#[test]
fn every_item_reaches_the_sink_or_the_error_sink_exactly_once() {
    const N: usize = 20_000;
    let seen: Arc<Vec<AtomicU8>> = Arc::new((0..N).map(|_| AtomicU8::new(0)).collect());
    let errors = Arc::new(Mutex::new(Vec::<ItemError>::new()));
    let (s, e) = (Arc::clone(&seen), Arc::clone(&errors));
    common::quiet_expected_panics();
    let pipeline = Pipeline::<usize>::builder()
        .try_map(Stage::new("check").workers(3).buffer(64), |i: usize| {
            if i % 7 == 0 {
                Err(format!("{i} is a multiple of 7"))
            } else {
                Ok(i)
            }
        })
        .map(
            Stage::new("explode").elastic(1, 4).buffer(16),
            |i: usize| {
                if i % 13 == 0 {
                    panic!("{}: {i}", common::MARK);
                }
                i
            },
        )
        // Odd items twice, the second marked: the sink must see both.
        .flat_map(Stage::new("split").workers(2), |i: usize| {
            if i % 2 == 1 {
                vec![(i, false), (i, true)]
            } else {
                vec![(i, false)]
            }
        })
        .sink(
            Stage::new("sink").workers(2),
            move |(i, second): (usize, bool)| {
                s[i].fetch_add(if second { 10 } else { 1 }, SeqCst);
            },
        )
        .on_error(move |err| e.lock().unwrap().push(err))
        .build()
        .unwrap();
    for i in 0..N {
        pipeline.send(i).unwrap();
    }
    let report = pipeline.shutdown();
    let errors = errors.lock().unwrap();
    let failed: Vec<usize> = errors
        .iter()
        .filter(|e| !e.panicked)
        .map(|e| e.message.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let panicked = errors.iter().filter(|e| e.panicked).count();
    assert!(errors.iter().all(|e| (e.stage == "check") != e.panicked));
    for i in 0..N {
        // Failed at "check" or panicked at "explode": never reached the
        // sink; odd items reach it twice (once marked).
        let expected = if i % 7 == 0 || i % 13 == 0 {
            0
        } else if i % 2 == 1 {
            11
        } else {
            1
        };
        assert_eq!(seen[i].load(SeqCst), expected, "item {i}");
    }
    assert_eq!(failed.len(), (0..N).filter(|i| i % 7 == 0).count());
    assert!(failed.iter().all(|i| i % 7 == 0));
    assert_eq!(
        panicked,
        (0..N).filter(|i| i % 7 != 0 && i % 13 == 0).count()
    );
    let by_name: HashMap<&str, _> = report.stages.iter().map(|s| (s.name.as_str(), s)).collect();
    assert_eq!(by_name["check"].received, N as u64);
    assert_eq!(by_name["check"].failed, failed.len() as u64);
    assert_eq!(by_name["explode"].panicked, panicked as u64);
    for s in &report.stages {
        assert_eq!(
            s.received,
            s.completed + s.failed + s.panicked + s.cancelled + s.abandoned + s.still_running,
            "{s:?}"
        );
        assert_eq!(s.abandoned + s.cancelled, 0, "{s:?}");
    }
}

#[test]
fn keyed_stages_keep_each_keys_order() {
    let log = Arc::new(Mutex::new(HashMap::<u32, Vec<u32>>::new()));
    let l = Arc::clone(&log);
    let pipeline = Pipeline::<(u32, u32)>::builder()
        .key_by(|(k, _)| *k)
        .map(Stage::new("work").workers(4), |(k, seq): (u32, u32)| {
            // Uneven work, so that unkeyed items would overtake.
            if seq % 3 == 0 {
                std::hint::black_box((0..2000).sum::<u32>());
            }
            (k, seq)
        })
        .key_by(|(k, _)| *k)
        .sink(Stage::new("sink").workers(3), move |(k, seq)| {
            l.lock().unwrap().entry(k).or_default().push(seq);
        })
        .build()
        .unwrap();
    for seq in 0..2000 {
        for k in 0..8 {
            pipeline.send((k, seq)).unwrap();
        }
    }
    pipeline.shutdown();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 8);
    for (k, seqs) in log.iter() {
        assert_eq!(*seqs, (0..2000).collect::<Vec<_>>(), "key {k}");
    }
}

#[test]
fn a_slow_sink_bounds_the_items_in_flight_by_the_buffers() {
    let gate = Gate::new();
    let g = gate.clone();
    let (b1, w1, b2, w2) = (8, 2, 4, 1);
    let pipeline = Arc::new(
        Pipeline::<u32>::builder()
            .map(Stage::new("first").workers(w1).buffer(b1), |x: u32| x)
            .sink(Stage::new("slow").workers(w2).buffer(b2), move |_x| {
                g.wait()
            })
            .build()
            .unwrap(),
    );
    let sent = Arc::new(AtomicUsize::new(0));
    let (p, s) = (Arc::clone(&pipeline), Arc::clone(&sent));
    let source = std::thread::spawn(move || {
        for i in 0..10_000 {
            p.send(i).unwrap();
            s.fetch_add(1, SeqCst);
        }
    });
    // Everything stalls: the sink's worker waits at the gate, its buffer is
    // full, both workers of the first stage wait for room in it, the first
    // buffer is full, and the source waits for room there (so its count of
    // sends that returned is settled).
    until(|| {
        let m = pipeline.metrics();
        m[0].blocked_submitters == 1
            && m[0].queued == b1
            && m[1].blocked_submitters == w1
            && m[1].queued == b2
            && m[1].running == w2
    });
    // Every item sent is in a buffer or held by a worker; one more waits in
    // the blocked send.
    let bound = b1 + w1 + b2 + w2;
    assert_eq!(sent.load(SeqCst), bound);
    gate.open();
    source.join().unwrap();
    let report = pipeline.shutdown();
    assert_eq!(report.stages[1].completed, 10_000);
}

#[test]
fn an_ordered_drain_under_a_deadline_accounts_for_every_item_per_stage() {
    let gate = Gate::new();
    let g = gate.clone();
    let pipeline = Arc::new(
        Pipeline::<u32>::builder()
            .map(Stage::new("first").workers(1), |x: u32| x)
            .sink(Stage::new("held").workers(1).buffer(100), move |_x| {
                g.wait()
            })
            .build()
            .unwrap(),
    );
    for i in 0..50 {
        pipeline.send(i).unwrap();
    }
    // The first stage is done; the sink holds one item and queues 49.
    until(|| {
        let m = pipeline.metrics();
        m[0].counts.completed == 50 && m[1].running == 1 && m[1].queued == 49
    });
    // No time left: the sink's queue is abandoned at once, and its running
    // item is reported as still running (it finishes when let go).
    let report = pipeline.shutdown_timeout(Duration::ZERO);
    gate.open();
    assert_eq!(report.stages[0].received, 50);
    assert_eq!(report.stages[0].completed, 50);
    assert_eq!(report.stages[1].received, 50);
    assert_eq!(report.stages[1].completed, 0);
    assert_eq!(report.stages[1].still_running, 1);
    assert_eq!(report.stages[1].abandoned, 49);
    assert!(matches!(pipeline.send(7), Err(SendError::Closed(7))));
}

/// Senders race a draining shutdown: a send that returned `Ok` has its
/// item run through to the sink; one that lost the race gets its own item
/// back; the first stage abandons nothing.
#[test]
fn a_send_that_returned_ok_is_drained_by_a_racing_shutdown() {
    for round in 0..200 {
        let reached = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&reached);
        let pipeline = Arc::new(
            Pipeline::<u32>::builder()
                .map(Stage::new("first").workers(2).buffer(4), |x: u32| x)
                .sink(Stage::new("sink").workers(1).buffer(4), move |_x| {
                    r.fetch_add(1, SeqCst);
                })
                .build()
                .unwrap(),
        );
        let taken = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let (p, taken) = (Arc::clone(&pipeline), Arc::clone(&taken));
                std::thread::spawn(move || {
                    for i in 0.. {
                        match p.send(i) {
                            Ok(()) => taken.fetch_add(1, SeqCst),
                            Err(SendError::Closed(back)) => {
                                assert_eq!(back, i, "the refused item is handed back");
                                return;
                            }
                            Err(e) => panic!("{e:?}"),
                        };
                    }
                })
            })
            .collect();
        // Senders are blocked for room now and then: the race covers sends
        // waiting inside the first stage as well as sends arriving.
        until(|| taken.load(SeqCst) > 20 + round % 50);
        let report = pipeline.shutdown();
        for s in senders {
            s.join().unwrap();
        }
        let taken = taken.load(SeqCst) as u64;
        let first = &report.stages[0];
        assert_eq!(first.abandoned, 0, "round {round}: {report:?}");
        assert_eq!((first.received, first.completed), (taken, taken));
        assert_eq!(report.stages[1].completed, taken);
        assert_eq!(reached.load(SeqCst) as u64, taken, "round {round}");
    }
}

/// A deadline holds when a batch waits for room in a held sink: the
/// batch stage's open batch is abandoned at the deadline (counted there),
/// the batch waiting for room is refused when the sink closes, and the
/// shutdown returns while the sink is still held.
#[test]
fn a_deadline_holds_behind_a_batch_that_waits_for_room() {
    let gate = Gate::new();
    let g = gate.clone();
    let pipeline = Arc::new(
        Pipeline::<u32>::builder()
            .map(Stage::new("first").workers(2).buffer(4), |x: u32| x)
            .batch(Stage::new("batch"), 2, Duration::from_secs(3600))
            .sink(
                Stage::new("held").workers(1).buffer(1),
                move |_b: Vec<u32>| g.wait(),
            )
            .build()
            .unwrap(),
    );
    // [0, 1] holds the sink's worker, [2, 3] fills its buffer.
    for i in 0..4 {
        pipeline.send(i).unwrap();
    }
    until(|| {
        let m = pipeline.metrics();
        m[1].running == 1 && m[1].queued == 1
    });
    // [4, 5] waits for room in the sink (holding the batch stage's
    // hand-off); 6 opens a batch behind it.
    for i in 4..7 {
        pipeline.send(i).unwrap();
    }
    until(|| {
        let m = pipeline.metrics();
        m[1].blocked_submitters == 1 && m[0].counts.completed == 6
    });
    let (tx, rx) = mpsc::channel();
    let p = Arc::clone(&pipeline);
    std::thread::spawn(move || {
        tx.send(p.shutdown_timeout(Duration::from_millis(20)))
            .unwrap()
    });
    let report = rx.recv_timeout(common::PATIENCE);
    gate.open();
    let report = report.expect("the shutdown returned while the sink was held");
    let [first, batch, held] = &report.stages[..] else {
        panic!("three stages: {report:?}")
    };
    assert_eq!(
        (first.received, first.completed, first.still_running),
        (7, 6, 1)
    );
    assert_eq!(
        (batch.received, batch.completed, batch.abandoned),
        (7, 4, 1),
        "{batch:?}"
    );
    assert_eq!(batch.batches, [2, 0, 0]);
    assert_eq!(
        (held.received, held.completed, held.still_running),
        (3, 0, 1)
    );
    // Once the refused batch's worker is done, every item is accounted
    // for: the sink ran [0, 1] and abandoned [2, 3] and [4, 5]; the batch
    // stage handed on 6 items and abandoned 1.
    until(|| pipeline.metrics()[0].running == 0 && pipeline.metrics()[1].running == 0);
    let after = pipeline.shutdown();
    let (batch, held) = (&after.stages[1], &after.stages[2]);
    assert_eq!((batch.completed, batch.abandoned), (6, 1));
    assert_eq!((held.received, held.completed, held.abandoned), (3, 1, 2));
}

/// `try_send` and `send_timeout` hand the item back when the first
/// stage's buffer stays full; after shutdown every send hands it back.
#[test]
fn try_send_and_send_timeout_hand_the_item_back_when_the_first_stage_is_full() {
    let gate = Gate::new();
    let g = gate.clone();
    let sunk = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&sunk);
    let pipeline = Pipeline::<u32>::builder()
        .map(Stage::new("first").workers(1).buffer(2), move |x: u32| {
            g.wait();
            x
        })
        .sink(Stage::new("sink").workers(1), move |x| {
            s.lock().unwrap().push(x)
        })
        .build()
        .unwrap();
    pipeline.send(0).unwrap();
    until(|| pipeline.metrics()[0].running == 1);
    pipeline.try_send(1).unwrap();
    pipeline.send_timeout(2, Duration::ZERO).unwrap();
    // The worker is held and the buffer holds two: no room comes.
    assert!(matches!(pipeline.try_send(3), Err(SendError::Full(3))));
    assert!(matches!(
        pipeline.send_timeout(4, Duration::from_millis(5)),
        Err(SendError::Timeout(4))
    ));
    assert_eq!(SendError::Full(5).into_inner(), 5);
    gate.open();
    let report = pipeline.shutdown();
    assert_eq!(*sunk.lock().unwrap(), vec![0, 1, 2]);
    let first = &report.stages[0];
    assert_eq!(
        (first.received, first.completed, first.abandoned),
        (3, 3, 0)
    );
    assert!(matches!(pipeline.try_send(6), Err(SendError::Closed(6))));
    assert!(matches!(
        pipeline.send_timeout(7, Duration::from_secs(1)),
        Err(SendError::Closed(7))
    ));
}

/// A send still waiting for room when the shutdown's deadline passes gets
/// its item back, and the first stage does not count it.
#[test]
fn a_send_waiting_for_room_at_the_deadline_gets_its_item_back() {
    let gate = Gate::new();
    let g = gate.clone();
    let pipeline = Arc::new(
        Pipeline::<u32>::builder()
            .sink(Stage::new("held").workers(1).buffer(1), move |_x| g.wait())
            .build()
            .unwrap(),
    );
    pipeline.send(0).unwrap();
    until(|| pipeline.metrics()[0].running == 1);
    pipeline.send(1).unwrap();
    let p = Arc::clone(&pipeline);
    let sender = std::thread::spawn(move || p.send(2));
    until(|| pipeline.metrics()[0].blocked_submitters == 1);
    let report = pipeline.shutdown_timeout(Duration::from_millis(20));
    let sent = sender.join().unwrap();
    gate.open();
    assert!(matches!(sent, Err(SendError::Closed(2))), "{sent:?}");
    let held = &report.stages[0];
    assert_eq!((held.still_running, held.abandoned), (1, 1));
    until(|| pipeline.metrics()[0].running == 0);
    let after = &pipeline.shutdown().stages[0];
    assert_eq!(
        (after.received, after.completed, after.abandoned),
        (2, 1, 1)
    );
}

/// An item a still-running stage hands to a batch stage after the
/// shutdown flushed it is refused and counted there as abandoned, not
/// left in a batch nothing will flush.
#[test]
fn a_batch_stage_counts_what_comes_after_its_flush() {
    let gate = Gate::new();
    let g = gate.clone();
    let batches = Arc::new(AtomicUsize::new(0));
    let b = Arc::clone(&batches);
    let pipeline = Pipeline::<u32>::builder()
        .map(Stage::new("slow").workers(1), move |x: u32| {
            g.wait();
            x
        })
        .batch(Stage::new("batch"), 10, Duration::from_secs(3600))
        .sink(Stage::new("sink").workers(1), move |_b: Vec<u32>| {
            b.fetch_add(1, SeqCst);
        })
        .build()
        .unwrap();
    pipeline.send(0).unwrap();
    until(|| pipeline.metrics()[0].running == 1);
    let report = pipeline.shutdown_timeout(Duration::ZERO);
    assert_eq!(report.stages[0].still_running, 1);
    gate.open();
    until(|| pipeline.metrics()[0].running == 0);
    let after = pipeline.shutdown();
    let batch = &after.stages[1];
    assert_eq!(
        (batch.received, batch.completed, batch.abandoned),
        (1, 0, 1),
        "{batch:?}"
    );
    assert_eq!(batches.load(SeqCst), 0);
}

#[test]
fn fail_fast_stops_the_source_and_cancels_the_rest() {
    let gate = Gate::new();
    let g = gate.clone();
    let pipeline = Pipeline::<u32>::builder()
        .try_map(
            Stage::new("check").workers(1).buffer(1000),
            move |x: u32| {
                g.wait();
                if x == 3 {
                    Err("three is not allowed")
                } else {
                    Ok(x)
                }
            },
        )
        .sink(Stage::new("sink").workers(1), |_x| {})
        .fail_fast()
        .build()
        .unwrap();
    for i in 0..100 {
        pipeline.send(i).unwrap();
    }
    gate.open();
    until(|| pipeline.failure().is_some());
    assert!(matches!(pipeline.send(1000), Err(SendError::Failed(1000))));
    let report = pipeline.shutdown();
    let failure = report.failure.clone().unwrap();
    assert_eq!(failure.stage, "check");
    assert_eq!(failure.message, "three is not allowed");
    let check = &report.stages[0];
    assert_eq!(check.received, 100);
    assert_eq!(check.failed, 1);
    // Items 0..3 passed before the failure; the rest were cancelled (or
    // had already started when it came).
    assert_eq!(
        check.completed + check.failed + check.cancelled + check.abandoned,
        100
    );
    assert_eq!((check.completed, check.cancelled), (3, 96), "{check:?}");
    assert_eq!(report.stages[1].received, check.completed);
}

#[test]
fn batches_flush_on_size_on_time_and_on_shutdown() {
    let time = ManualTime::new();
    let clock = time.clone();
    let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
    let b = Arc::clone(&batches);
    let pipeline = Pipeline::<u32>::builder()
        .batch(Stage::new("batch"), 10, Duration::from_millis(100))
        .sink(Stage::new("sink").workers(1), move |batch: Vec<u32>| {
            b.lock().unwrap().push(batch)
        })
        .clock(move || clock.now())
        .build()
        .unwrap();
    for i in 0..25 {
        pipeline.send(i).unwrap();
    }
    until(|| batches.lock().unwrap().len() == 2);
    // Five wait; the clock has not moved, so they stay.
    assert_eq!(batches.lock().unwrap().len(), 2);
    time.advance(Duration::from_millis(100));
    until(|| batches.lock().unwrap().len() == 3);
    for i in 25..28 {
        pipeline.send(i).unwrap();
    }
    let report = pipeline.shutdown();
    let batches = batches.lock().unwrap();
    assert_eq!(
        *batches,
        vec![
            (0..10).collect::<Vec<_>>(),
            (10..20).collect(),
            (20..25).collect(),
            (25..28).collect()
        ]
    );
    assert_eq!(report.stages[0].batches, [2, 1, 1]);
    assert_eq!(report.stages[0].received, 28);
    assert_eq!(report.stages[0].completed, 28);
}

#[test]
fn keyed_batches_group_each_key_apart() {
    let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
    let b = Arc::clone(&batches);
    let pipeline = Pipeline::<u32>::builder()
        .key_by(|x| x % 3)
        .batch(Stage::new("batch"), 4, Duration::from_secs(3600))
        .sink(Stage::new("sink").workers(1), move |batch: Vec<u32>| {
            b.lock().unwrap().push(batch)
        })
        .build()
        .unwrap();
    for i in 0..30 {
        pipeline.send(i).unwrap();
    }
    pipeline.shutdown();
    let batches = batches.lock().unwrap();
    let mut per_key: HashMap<u32, Vec<u32>> = HashMap::new();
    for batch in batches.iter() {
        let k = batch[0] % 3;
        assert!(batch.iter().all(|x| x % 3 == k), "{batch:?} mixes keys");
        assert!(batch.len() <= 4);
        per_key.entry(k).or_default().extend(batch);
    }
    for k in 0..3 {
        assert_eq!(
            per_key[&k],
            (0..30).filter(|x| x % 3 == k).collect::<Vec<_>>()
        );
    }
}

#[test]
fn bad_options_are_refused_naming_the_stage_and_option() {
    let cases: Vec<(Result<Pipeline<u32>, PipelineError>, &str)> = vec![
        (
            Pipeline::<u32>::builder()
                .sink(Stage::new("s").buffer(0), |_| {})
                .build(),
            "stage \"s\": buffer = 0 is out of range: expected at least 1 item",
        ),
        (
            Pipeline::<u32>::builder()
                .sink(Stage::new("s").workers(0), |_| {})
                .build(),
            "stage \"s\": workers = 0 is out of range: expected at least 1",
        ),
        (
            Pipeline::<u32>::builder()
                .sink(Stage::new("s").elastic(4, 2), |_| {})
                .build(),
            "stage \"s\": elastic = 4..2 is out of range: expected min at most max",
        ),
        (
            Pipeline::<u32>::builder()
                .sink(Stage::new("s").keep_alive(Duration::ZERO), |_| {})
                .build(),
            "stage \"s\": keep_alive = 0s is out of range: expected above zero",
        ),
        (
            Pipeline::<u32>::builder()
                .sink(Stage::new("s").queue_wait_target(Duration::ZERO), |_| {})
                .build(),
            "stage \"s\": queue_wait_target = 0s is out of range: expected above zero",
        ),
        (
            Pipeline::<u32>::builder()
                .batch(Stage::new("b"), 0, Duration::from_millis(1))
                .sink(Stage::new("s"), |_| {})
                .build(),
            "stage \"b\": max_items = 0 is out of range: expected at least 1",
        ),
        (
            Pipeline::<u32>::builder()
                .batch(Stage::new("b"), 10, Duration::ZERO)
                .sink(Stage::new("s"), |_| {})
                .build(),
            "stage \"b\": max_wait = 0s is out of range: expected above zero",
        ),
        (
            // Its timer could not be set: batches would leave only full.
            Pipeline::<u32>::builder()
                .batch(Stage::new("b"), 10, Duration::from_secs(400 * 86_400))
                .sink(Stage::new("s"), |_| {})
                .build(),
            "stage \"b\": max_wait = 34560000s is out of range: expected at most MAX_DELAY (365 days)",
        ),
        (
            // Two stages of one name: their metrics could not be told apart.
            Pipeline::<u32>::builder()
                .map(Stage::new("parse"), |x| x)
                .batch(Stage::new("b"), 10, Duration::from_millis(1))
                .flat_map(Stage::new("parse"), |v| v)
                .sink(Stage::new("s"), |_| {})
                .build(),
            "two stages are named \"parse\": each stage needs a name of its own",
        ),
    ];
    for (built, message) in cases {
        match built {
            Err(e @ (PipelineError::Invalid { .. } | PipelineError::DuplicateStage { .. })) => {
                assert_eq!(e.to_string(), message)
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("built despite: {message}"),
        }
    }
}

/// Each elastic stage sizes itself with its own settings: both grow for
/// items that block; the second, with a short keep-alive, gives its
/// workers back once idle, while the first, which never retires
/// (`Duration::MAX`), keeps them although it went idle earlier. (Were the
/// settings ignored, both would keep the default 10 s, and the first would
/// shrink before the second.)
#[test]
fn each_elastic_stage_keeps_its_workers_for_its_own_keep_alive() {
    let (first_gate, second_gate) = (Gate::new(), Gate::new());
    let done = Arc::new(AtomicUsize::new(0));
    let (g1, g2, d) = (first_gate.clone(), second_gate.clone(), Arc::clone(&done));
    let pipeline = Pipeline::<u32>::builder()
        .map(
            Stage::new("keeps").elastic(1, 4).keep_alive(Duration::MAX),
            move |x: u32| {
                ebbtide::block_in_place(|| g1.wait());
                x
            },
        )
        .sink(
            Stage::new("gives")
                .elastic(1, 4)
                .keep_alive(Duration::from_millis(30))
                .queue_wait_target(Duration::from_millis(5)),
            move |_| {
                ebbtide::block_in_place(|| g2.wait());
                d.fetch_add(1, SeqCst);
            },
        )
        .build()
        .unwrap();
    for i in 0..16 {
        pipeline.send(i).unwrap();
    }
    until(|| pipeline.metrics()[0].workers == 4);
    first_gate.open();
    until(|| pipeline.metrics()[1].workers == 4);
    second_gate.open();
    until(|| done.load(SeqCst) == 16);
    until(|| pipeline.metrics()[1].workers == 1);
    assert_eq!(
        pipeline.metrics()[0].workers,
        4,
        "the first stage kept its workers"
    );
    let history = pipeline.resize_history();
    let shrinks: Vec<_> = history.iter().filter(|(_, e)| e.to < e.from).collect();
    // Only the second stage shrank (in one step or more, as its quiet
    // spell's samples found its workers: on a loaded machine the last
    // items may still be running at the first of them).
    assert!(
        !shrinks.is_empty() && shrinks.iter().all(|(stage, _)| stage == "gives"),
        "{history:?}"
    );
    let report = pipeline.shutdown();
    assert_eq!(report.stages[1].completed, 16);
}

#[test]
fn each_stage_is_visible_in_one_prometheus_text() {
    let pipeline = Pipeline::<u32>::builder()
        .map(Stage::new("parse").workers(1), |x: u32| x + 1)
        .batch(Stage::new("group"), 5, Duration::from_secs(3600))
        .sink(Stage::new("write").workers(1), |_b: Vec<u32>| {})
        .build()
        .unwrap();
    for i in 0..12 {
        pipeline.send(i).unwrap();
    }
    until(|| pipeline.metrics()[1].counts.completed == 2);
    let text = pipeline.to_prometheus("app");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, label: (&str, &str)| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} {label:?}"))
    };
    assert_eq!(value("app_tasks_completed_total", ("pool", "parse")), 12.0);
    assert_eq!(value("app_tasks_completed_total", ("pool", "write")), 2.0);
    assert_eq!(value("app_batch_items_buffered", ("stage", "group")), 2.0);
    assert_eq!(text.matches("# TYPE app_workers gauge").count(), 1);
    pipeline.shutdown();
}

/// A key by item modulo 4 that panics on item `bad` (read as
/// `x - offset`).
fn key_panicking_on(bad: u32, offset: u32) -> impl Fn(&u32) -> u32 + Send + Sync + 'static {
    move |x: &u32| {
        if x - offset == bad {
            panic!("{}: the key of {bad}", common::MARK);
        }
        x % 4
    }
}

#[test]
fn an_item_whose_key_panics_is_that_stages_panic_and_the_rest_flow_on() {
    common::quiet_expected_panics();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sunk = Arc::new(Mutex::new(Vec::new()));
    let (e, s) = (Arc::clone(&errors), Arc::clone(&sunk));
    // Keyed at the first stage (its key read on the sending thread), at a
    // middle one (read on the stage before's worker), and at a batch.
    let pipeline = Pipeline::<u32>::builder()
        .key_by(key_panicking_on(13, 0))
        .map(Stage::new("first").workers(2), |x: u32| x + 100)
        .key_by(key_panicking_on(14, 100))
        .map(Stage::new("middle").workers(2), |x: u32| x - 100)
        .key_by(key_panicking_on(15, 0))
        .batch(Stage::new("batch"), 10, Duration::from_secs(3600))
        .sink(Stage::new("sink").workers(1), move |batch: Vec<u32>| {
            s.lock().unwrap().extend(batch);
        })
        .on_error(move |err| e.lock().unwrap().push(err))
        .build()
        .unwrap();
    for x in 0..40 {
        pipeline.send(x).unwrap();
    }
    let report = pipeline.shutdown();
    let errors = errors.lock().unwrap();
    let mut seen: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.stage.as_str(), &e.message[common::MARK.len()..]))
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            ("batch", ": the key of 15"),
            ("first", ": the key of 13"),
            ("middle", ": the key of 14"),
        ]
    );
    assert!(errors.iter().all(|e| e.panicked), "{errors:?}");
    let counts = |i: usize| {
        let s = &report.stages[i];
        (s.name.as_str(), s.received, s.completed, s.panicked)
    };
    assert_eq!(counts(0), ("first", 40, 39, 1));
    assert_eq!(counts(1), ("middle", 39, 38, 1));
    assert_eq!(counts(2), ("batch", 38, 37, 1));
    assert_eq!(counts(3), ("sink", 4, 4, 0));
    let mut sunk = sunk.lock().unwrap().clone();
    sunk.sort_unstable();
    let expected: Vec<u32> = (0..40).filter(|x| ![13, 14, 15].contains(x)).collect();
    assert_eq!(sunk, expected);
}
