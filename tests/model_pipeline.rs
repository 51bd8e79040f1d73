//! Model-based tests of pipelines: random chains of `map` (which may
//! panic), `try_map` (which may fail), `flat_map` (zero to two outputs)
//! and batch stages (each followed by a stage that unpacks the batch),
//! keyed or not, with random workers and buffers; items sent by `send`,
//! `try_send` or `send_timeout`; ended by a draining shutdown, a cancel, or
//! a shutdown whose deadline has passed, under `on_error` or `fail_fast`.
//!
//! What must hold for every run:
//! - every item value is dropped exactly once, whatever the ending (none
//!   is left in a stage or a batch), and each item reaches the sink at
//!   most once;
//! - each stage's report adds up once every stage is idle: `received =
//!   completed + failed + panicked + cancelled + abandoned`;
//! - drained under `on_error`, every item the pipeline took ends where the
//!   model says: at the sink, or at the error handler with the stage it
//!   failed in; each stage's counts, and each batch stage's full and
//!   shutdown batches, are the model's;
//! - when every stage is keyed, each key's items reach the sink in the
//!   order they were sent (a flat map's outputs in their order).

#![cfg(not(loom))]

mod common;

use common::{quiet_expected_panics, until, MARK};
use ebbtide::pipeline::{ItemError, Pipeline, PipelineBuilder, SendError, Stage};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Panics on the items `fate` picks, one in `every`.
    Map { every: u32 },
    /// Returns `Err` on the items `fate` picks.
    TryMap { every: u32 },
    /// Turns each item into `outputs` items.
    FlatMap { outputs: u32 },
    /// Batches of up to `max` items, then a stage that unpacks them.
    Batch { max: usize },
}

#[derive(Clone, Debug)]
struct StageSpec {
    kind: Kind,
    workers: usize,
    buffer: usize,
    elastic: bool,
    /// Its function sleeps 200 µs an item, so a deadline catches some
    /// items running.
    slow: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Drain,
    Cancel,
    Deadline,
}

#[derive(Clone, Copy, Debug)]
enum How {
    Send,
    TrySend,
    SendTimeout,
}

/// Counts item values made and dropped.
#[derive(Default)]
struct Live {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

/// An item: its sent id and its lineage through flat maps.
struct Item {
    id: u32,
    tag: u32,
    live: Arc<Live>,
}

impl Item {
    fn new(id: u32, tag: u32, live: &Arc<Live>) -> Item {
        live.made.fetch_add(1, SeqCst);
        Item {
            id,
            tag,
            live: Arc::clone(live),
        }
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        self.live.dropped.fetch_add(1, SeqCst);
    }
}

/// Whether stage `stage` picks item (`id`, `tag`): one in `every`.
fn fate(id: u32, tag: u32, stage: usize, every: u32) -> bool {
    let h = (id.wrapping_mul(2_654_435_761) ^ tag.wrapping_mul(40_503))
        .wrapping_add(stage as u32 * 97)
        .rotate_left(7);
    h % every == 0
}

fn key(x: &Item, keys: u32) -> u32 {
    x.id % keys
}

/// The stage names, in pipeline order (a batch is two: the batch stage
/// and the stage that unpacks it).
fn names(specs: &[StageSpec]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        match s.kind {
            Kind::Batch { .. } => {
                out.push(format!("batch{i}"));
                out.push(format!("unpack{i}"));
            }
            _ => out.push(format!("s{i}")),
        }
    }
    out.push("sink".into());
    out
}

/// What the model expects of a drained run: the sink's items in order,
/// the errors (stage, id, tag), and per stage name (received, completed,
/// failed, panicked, [full, shutdown] batches).
struct Expected {
    sunk: Vec<(u32, u32)>,
    errors: Vec<(String, u32, u32)>,
    stages: BTreeMap<String, (u64, u64, u64, u64, [u64; 2])>,
}

fn model(specs: &[StageSpec], taken: &[u32], keys: u32, keyed: bool) -> Expected {
    let mut items: Vec<(u32, u32)> = taken.iter().map(|&id| (id, 0)).collect();
    let mut errors = Vec::new();
    let mut stages = BTreeMap::new();
    for (i, s) in specs.iter().enumerate() {
        let n = items.len() as u64;
        match s.kind {
            Kind::Map { every } | Kind::TryMap { every } => {
                let name = format!("s{i}");
                let (bad, good): (Vec<_>, Vec<_>) = items
                    .into_iter()
                    .partition(|&(id, tag)| fate(id, tag, i, every));
                for &(id, tag) in &bad {
                    errors.push((name.clone(), id, tag));
                }
                let b = bad.len() as u64;
                let (failed, panicked) = match s.kind {
                    Kind::Map { .. } => (0, b),
                    _ => (b, 0),
                };
                stages.insert(name, (n, n - b, failed, panicked, [0, 0]));
                items = good;
            }
            Kind::FlatMap { outputs } => {
                stages.insert(format!("s{i}"), (n, n, 0, 0, [0, 0]));
                items = items
                    .into_iter()
                    .flat_map(|(id, tag)| (0..outputs).map(move |j| (id, tag * 3 + j + 1)))
                    .collect();
            }
            Kind::Batch { max } => {
                let mut per_key: HashMap<u32, u64> = HashMap::new();
                for &(id, _) in &items {
                    *per_key
                        .entry(if keyed { id % keys } else { 0 })
                        .or_default() += 1;
                }
                let full: u64 = per_key.values().map(|c| c / max as u64).sum();
                let partial = per_key.values().filter(|&&c| c % max as u64 > 0).count() as u64;
                stages.insert(format!("batch{i}"), (n, n, 0, 0, [full, partial]));
                let batches = full + partial;
                stages.insert(format!("unpack{i}"), (batches, batches, 0, 0, [0, 0]));
            }
        }
    }
    let n = items.len() as u64;
    stages.insert("sink".into(), (n, n, 0, 0, [0, 0]));
    Expected {
        sunk: items,
        errors,
        stages,
    }
}

type Builder = PipelineBuilder<Item, Item>;

fn build(
    specs: &[StageSpec],
    keys: u32,
    keyed: bool,
    fail_fast: bool,
    sink: Arc<Mutex<Vec<(u32, u32)>>>,
    errors: Arc<Mutex<Vec<ItemError>>>,
    live: &Arc<Live>,
) -> Pipeline<Item> {
    let stage = |name: String, s: &StageSpec| {
        let st = Stage::new(name).buffer(s.buffer);
        if s.elastic {
            st.elastic(1, s.workers)
        } else {
            st.workers(s.workers)
        }
    };
    let keyed_next = |b: Builder| {
        if keyed {
            b.key_by(move |x: &Item| key(x, keys))
        } else {
            b
        }
    };
    let mut b: Builder = Pipeline::<Item>::builder();
    for (i, s) in specs.iter().enumerate() {
        let slow = s.slow;
        let pause = move || {
            if slow {
                std::thread::sleep(Duration::from_micros(200));
            }
        };
        b = keyed_next(b);
        b = match s.kind {
            Kind::Map { every } => b.map(stage(format!("s{i}"), s), move |x: Item| {
                pause();
                if fate(x.id, x.tag, i, every) {
                    panic!("{MARK}: {} {}", x.id, x.tag);
                }
                x
            }),
            Kind::TryMap { every } => b.try_map(stage(format!("s{i}"), s), move |x: Item| {
                pause();
                if fate(x.id, x.tag, i, every) {
                    Err(format!("{} {}", x.id, x.tag))
                } else {
                    Ok(x)
                }
            }),
            Kind::FlatMap { outputs } => {
                let live = Arc::clone(live);
                b.flat_map(stage(format!("s{i}"), s), move |x: Item| {
                    pause();
                    let live = Arc::clone(&live);
                    (0..outputs).map(move |j| Item::new(x.id, x.tag * 3 + j + 1, &live))
                })
            }
            Kind::Batch { max } => {
                let batched = b.batch(
                    Stage::new(format!("batch{i}")),
                    max,
                    Duration::from_secs(3600),
                );
                let batched = if keyed {
                    // Every item of a keyed batch has the batch's key.
                    batched.key_by(move |v: &Vec<Item>| v.first().map_or(0, |x| key(x, keys)))
                } else {
                    batched
                };
                batched.flat_map(stage(format!("unpack{i}"), s), |v: Vec<Item>| v)
            }
        };
    }
    let b = keyed_next(b);
    let b = if fail_fast {
        b.fail_fast()
    } else {
        b.on_error(move |e| errors.lock().unwrap().push(e))
    };
    b.sink(Stage::new("sink").workers(2).buffer(4), move |x: Item| {
        sink.lock().unwrap().push((x.id, x.tag));
    })
    .build()
    .expect("valid stages build")
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (2u32..6).prop_map(|every| Kind::Map { every }),
        (2u32..6).prop_map(|every| Kind::TryMap { every }),
        (0u32..3).prop_map(|outputs| Kind::FlatMap { outputs }),
        (1usize..5).prop_map(|max| Kind::Batch { max }),
    ]
}

fn stage_spec() -> impl Strategy<Value = StageSpec> {
    (
        kind(),
        1usize..4,
        1usize..9,
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(kind, workers, buffer, elastic, slow)| StageSpec {
            kind,
            workers,
            buffer,
            elastic,
            slow,
        })
}

fn how() -> impl Strategy<Value = How> {
    prop_oneof![
        6 => Just(How::Send),
        1 => Just(How::TrySend),
        1 => Just(How::SendTimeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_item_ends_once_where_the_model_says(
        specs in prop::collection::vec(stage_spec(), 1..5),
        sends in prop::collection::vec(how(), 0..60),
        keys in 1u32..5,
        keyed in any::<bool>(),
        fail_fast in prop::bool::weighted(0.2),
        end in prop_oneof![4 => Just(End::Drain), 1 => Just(End::Cancel), 1 => Just(End::Deadline)],
        cancel_after in 0usize..60,
    ) {
        quiet_expected_panics();
        let live = Arc::new(Live::default());
        let sink = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let pipeline = build(
            &specs, keys, keyed, fail_fast, Arc::clone(&sink), Arc::clone(&errors), &live,
        );
        let mut taken = Vec::new();
        for (id, how) in sends.iter().enumerate() {
            let id = id as u32;
            if end == End::Cancel && id as usize == cancel_after {
                pipeline.cancel();
            }
            let item = Item::new(id, 0, &live);
            let sent = match how {
                How::Send => pipeline.send(item),
                How::TrySend => pipeline.try_send(item),
                How::SendTimeout => pipeline.send_timeout(item, Duration::ZERO),
            };
            match sent {
                Ok(()) => taken.push(id),
                Err(SendError::Full(back) | SendError::Timeout(back)) => {
                    prop_assert!(matches!(how, How::TrySend | How::SendTimeout));
                    prop_assert_eq!(back.id, id);
                }
                Err(SendError::Closed(back)) => {
                    prop_assert!(end == End::Cancel && id as usize >= cancel_after);
                    prop_assert_eq!(back.id, id);
                }
                Err(SendError::Failed(back)) => {
                    prop_assert!(fail_fast);
                    prop_assert_eq!(back.id, id);
                }
            }
        }
        let first = match end {
            End::Deadline => pipeline.shutdown_timeout(Duration::ZERO),
            End::Drain | End::Cancel => pipeline.shutdown(),
        };
        prop_assert_eq!(first.stages.len(), names(&specs).len());
        // Let what still runs past a deadline finish, then read again.
        until(|| pipeline.metrics().iter().all(|m| m.running == 0));
        // No item is left in a batch stage once the shutdown flushed it.
        let text = pipeline.to_prometheus("p");
        for line in text.lines().filter(|l| l.starts_with("p_batch_items_buffered{")) {
            prop_assert!(line.ends_with(" 0"), "{}", line);
        }
        let report = pipeline.shutdown();
        for s in &report.stages {
            prop_assert_eq!(
                s.received,
                s.completed + s.failed + s.panicked + s.cancelled + s.abandoned,
                "{:?}", s
            );
        }
        let sunk = sink.lock().unwrap().clone();
        let mut once = sunk.clone();
        once.sort_unstable();
        once.dedup();
        prop_assert_eq!(once.len(), sunk.len(), "an item reached the sink twice");
        let expected = model(&specs, &taken, keys, keyed);
        let mut possible = expected.sunk.clone();
        possible.sort_unstable();
        for x in &once {
            prop_assert!(possible.binary_search(x).is_ok(), "{:?} should not reach the sink", x);
        }
        if end == End::Drain && !fail_fast {
            prop_assert_eq!(&once, &possible);
            let mut seen: Vec<(String, u32, u32)> = errors
                .lock()
                .unwrap()
                .iter()
                .map(|e| {
                    let msg = e.message.trim_start_matches(MARK).trim_start_matches(": ");
                    let mut it = msg.split(' ').map(|n| n.parse::<u32>().unwrap());
                    (e.stage.clone(), it.next().unwrap(), it.next().unwrap())
                })
                .collect();
            seen.sort();
            let mut want = expected.errors.clone();
            want.sort();
            prop_assert_eq!(seen, want);
            for s in &report.stages {
                let (received, completed, failed, panicked, batches) = expected.stages[&s.name];
                prop_assert_eq!(
                    (s.received, s.completed, s.failed, s.panicked),
                    (received, completed, failed, panicked),
                    "stage {}", s.name
                );
                prop_assert_eq!([s.batches[0], s.batches[2]], batches, "stage {}", s.name);
                prop_assert_eq!(s.cancelled + s.abandoned, 0);
            }
            if keyed {
                let order = |v: &[(u32, u32)]| {
                    let mut per: BTreeMap<u32, Vec<(u32, u32)>> = BTreeMap::new();
                    for &(id, tag) in v {
                        per.entry(id % keys).or_default().push((id, tag));
                    }
                    per
                };
                prop_assert_eq!(order(&sunk), order(&expected.sunk));
            }
        }
        drop(pipeline);
        drop(sink);
        prop_assert_eq!(live.made.load(SeqCst), live.dropped.load(SeqCst));
    }
}
