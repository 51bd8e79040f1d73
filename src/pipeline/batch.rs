//! The batch stage: groups items (per key, when keyed) until `max_items`
//! or until `max_wait` has passed since the batch's first item, whichever
//! comes first, and hands each batch on as one item. It has no workers: a
//! batch fills on the threads that hand it items, and one timer on the
//! stage's own timing wheel flushes the batches that waited long enough.
//! Every batch waits the same `max_wait`, so the oldest open batch is the
//! next due: the timer is armed for it alone, and re-armed for the next
//! when it fires. A batch that leaves full leaves nothing on the wheel.
//! Batches leave in the order they were closed (one lock orders the
//! hand-offs), so per-key order holds through the stage. A key has an
//! entry only while its batch is open, so memory follows the open batches,
//! not every key ever seen.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::pool::{Pool, PoolHandle};

use super::{Clock, KeyFn, Next, Offer, Refused, Shared};
use std::collections::hash_map::Entry;

/// Why a batch left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    Full,
    Timer,
    Shutdown,
}

/// A batch stage's tallies. `Relaxed` throughout: each is a count that
/// orders nothing else, read by a report after the stage's flush, or by the
/// metrics as a gauge.
#[derive(Default, Debug)]
pub(crate) struct BatchCounts {
    pub(crate) received: AtomicU64,
    /// Items handed on in batches (whether or not the next stage, closing,
    /// refused the batch: that stage counts it).
    pub(crate) handed_items: AtomicU64,
    /// Items left in open batches that shutdown could not hand on before
    /// its deadline.
    pub(crate) abandoned: AtomicU64,
    pub(crate) batches_full: AtomicU64,
    pub(crate) batches_timer: AtomicU64,
    pub(crate) batches_shutdown: AtomicU64,
    /// Items in open batches: kept under the `open` lock, published here
    /// for the metrics.
    pub(crate) buffered: AtomicU64,
    /// Items whose key function panicked.
    pub(crate) panicked: AtomicU64,
}

struct Open<T> {
    items: Vec<T>,
    /// Its place in `by_age`.
    id: u64,
    /// When its first item came.
    opened: Instant,
}

/// Keys come hashed already (by `key_by`'s hasher): the map uses them as
/// they are.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The open batches by key and by age, the id the next one gets, whether
/// the timer is armed, and the items they hold.
struct Batches<T> {
    by_key: HashMap<u64, Open<T>, BuildHasherDefault<Prehashed>>,
    /// Open batches' keys by id: ids rise in the order batches open, so
    /// the first is the oldest, the next due.
    by_age: BTreeMap<u64, u64>,
    next_id: u64,
    armed: bool,
    buffered: u64,
    /// Set by the shutdown's flush: later items are refused.
    closed: bool,
}

impl<T> Batches<T> {
    /// Takes `k`'s batch out; `counts` learns how many items are left.
    fn take(&mut self, k: u64, counts: &BatchCounts) -> Vec<T> {
        let batch = self.by_key.remove(&k).expect("an open batch");
        self.by_age.remove(&batch.id);
        self.buffered -= batch.items.len() as u64;
        // Relaxed: a gauge for the metrics, written only under the lock.
        counts.buffered.store(self.buffered, Relaxed);
        batch.items
    }
}

type OpenGuard<'a, T> = parking_lot::MutexGuard<'a, Batches<T>>;

pub(crate) struct Batcher<T> {
    max_items: usize,
    max_wait: Duration,
    key: Option<KeyFn<T>>,
    open: Mutex<Batches<T>>,
    /// Held from taking a batch out until it was handed on: batches leave
    /// in the order they were taken.
    handing: Mutex<()>,
    next: Next<Vec<T>>,
    timer: PoolHandle,
    clock: Clock,
    pub(crate) counts: Arc<BatchCounts>,
    /// Where an item whose key panics is reported, and the stage's name.
    shared: Arc<Shared>,
    name: Arc<str>,
}

impl<T: Send + 'static> Batcher<T> {
    pub(crate) fn new(
        max_items: usize,
        max_wait: Duration,
        key: Option<KeyFn<T>>,
        next: Next<Vec<T>>,
        (timer, clock): (&Pool, Clock),
        (shared, name): (Arc<Shared>, Arc<str>),
    ) -> Arc<Self> {
        Arc::new(Batcher {
            max_items,
            max_wait,
            key,
            open: Mutex::new(Batches {
                by_key: HashMap::default(),
                by_age: BTreeMap::new(),
                next_id: 0,
                armed: false,
                buffered: 0,
                closed: false,
            }),
            handing: Mutex::new(()),
            next,
            timer: timer.handle(),
            clock,
            counts: Arc::new(BatchCounts::default()),
            shared,
            name,
        })
    }

    /// Adds an item; hands the batch on if it is full. Refuses items only
    /// once the shutdown flushed the stage (an item from the stage before
    /// is then counted as abandoned here; a send's is handed back).
    pub(crate) fn push(self: &Arc<Self>, item: T, offer: Offer) -> Result<(), Refused<T>> {
        self.counts.received.fetch_add(1, Relaxed);
        let (k, item) = match &self.key {
            Some(key) => match self
                .shared
                .key_of(key, item, &self.name, &self.counts.panicked)
            {
                Ok(keyed) => keyed,
                Err(()) => return Err(Refused::Counted),
            },
            None => (0, item),
        };
        let mut open = self.open.lock();
        if open.closed {
            drop(open);
            if let Offer::Emit = offer {
                self.counts.abandoned.fetch_add(1, Relaxed);
                drop(item);
                return Err(Refused::Counted);
            }
            self.counts.received.fetch_sub(1, Relaxed);
            return Err(Refused::Closed(item));
        }
        let batches = &mut *open;
        let batch = match batches.by_key.entry(k) {
            Entry::Occupied(batch) => batch.into_mut(),
            Entry::Vacant(place) => {
                batches.next_id += 1;
                batches.by_age.insert(batches.next_id, k);
                place.insert(Open {
                    // Room for a full batch, up to a page's worth of items
                    // (a batch of a million grows as it fills).
                    items: Vec::with_capacity(self.max_items.min(4096 / size_of::<T>().max(1))),
                    id: batches.next_id,
                    opened: (self.clock)(),
                })
            }
        };
        batch.items.push(item);
        let full = batch.items.len() >= self.max_items;
        open.buffered += 1;
        // Relaxed: a gauge for the metrics, written only under the lock.
        self.counts.buffered.store(open.buffered, Relaxed);
        if full {
            let items = open.take(k, &self.counts);
            // The item is in the batch: whatever the stage after does with
            // the batch, it counts.
            let _ = self.hand_on(open, items, Flush::Full, None);
            return Ok(());
        }
        if !open.armed {
            // The only open batch: it leaves `max_wait` from now at the
            // latest.
            open.armed = true;
            self.arm(self.max_wait);
        }
        Ok(())
    }

    /// Sets the timer `after` from now. Called under the `open` lock.
    fn arm(self: &Arc<Self>, after: Duration) {
        let me = Arc::clone(self);
        let timer = self
            .timer
            .task()
            .delay(after)
            .execute(move || me.on_timer());
        if timer.is_err() {
            // The pipeline is closing; shutdown flushes what is open.
        }
    }

    /// Hands on every batch whose `max_wait` has passed, oldest first,
    /// then sets the timer for the next oldest (or leaves it unset when
    /// none is open).
    fn on_timer(self: &Arc<Self>) {
        loop {
            let mut open = self.open.lock();
            let Some((_, &k)) = open.by_age.first_key_value() else {
                open.armed = false;
                return;
            };
            let due = open.by_key[&k].opened + self.max_wait;
            let now = (self.clock)();
            if now < due {
                self.arm(due - now);
                return;
            }
            let items = open.take(k, &self.counts);
            let _ = self.hand_on(open, items, Flush::Timer, None);
        }
    }

    /// Hands every partial batch on (at shutdown), keys in ascending order.
    /// With a deadline, what cannot be handed on by then (the next stage
    /// full, or a batch ahead still waiting for room in it) is abandoned
    /// and counted.
    pub(crate) fn flush_all(&self, deadline: Option<Instant>) {
        loop {
            let mut open = self.open.lock();
            open.closed = true;
            let Some(k) = open.by_key.keys().min().copied() else {
                return;
            };
            let items = open.take(k, &self.counts);
            let _ = self.hand_on(open, items, Flush::Shutdown, deadline);
        }
    }

    /// The open batches' keys (for tests).
    #[cfg(all(test, not(loom)))]
    fn open_keys(&self) -> usize {
        self.open.lock().by_key.len()
    }

    fn hand_on(
        &self,
        open: OpenGuard<'_, T>,
        items: Vec<T>,
        why: Flush,
        deadline: Option<Instant>,
    ) -> Result<(), ()> {
        // Ordering: take `handing` before letting go of `open`, so the
        // batches of a key are handed on in the order they were taken.
        let handing = match deadline {
            None => Some(self.handing.lock()),
            Some(d) => self.handing.try_lock_until(d),
        };
        drop(open);
        let n = items.len() as u64;
        let Some(handing) = handing else {
            // An earlier batch still waits for room in the next stage past
            // the deadline: this one is abandoned here.
            self.counts.abandoned.fetch_add(n, Relaxed);
            return Err(());
        };
        // A refused batch (the next stage closing, or full past the
        // deadline) is counted there, as abandoned.
        let r = match (self.next)(items, Offer::Emit) {
            Ok(()) => Ok(()),
            Err(_) => Err(()),
        };
        drop(handing);
        self.counts.handed_items.fetch_add(n, Relaxed);
        let c = match why {
            Flush::Full => &self.counts.batches_full,
            Flush::Timer => &self.counts.batches_timer,
            Flush::Shutdown => &self.counts.batches_shutdown,
        };
        c.fetch_add(1, Relaxed);
        r
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A keyed batch stage keeps an entry per open batch only: after many
    /// keys' batches filled, and then a partial one flushed, none is left.
    #[test]
    fn a_key_has_an_entry_only_while_its_batch_is_open() {
        let timer = Pool::builder().workers(1).build().unwrap();
        let out = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
        let o = Arc::clone(&out);
        let next: Next<Vec<u64>> = Arc::new(move |batch, _| {
            o.lock().push(batch);
            Ok(())
        });
        let key: KeyFn<u64> = Arc::new(|x: &u64| *x / 2);
        let shared = Arc::new(Shared::new(false, None));
        let batcher = Batcher::new(
            2,
            Duration::from_secs(3600),
            Some(key),
            next,
            (&timer, Arc::new(Instant::now)),
            (shared, "batch".into()),
        );
        for i in 0..1_000 {
            batcher.push(i, Offer::Emit).unwrap();
        }
        assert_eq!(batcher.open_keys(), 0);
        // One timer was armed, for the first batch; the batches that left
        // full left nothing else on the wheel.
        assert_eq!(timer.metrics().timers_pending, 1);
        batcher.push(5_000, Offer::Emit).unwrap();
        assert_eq!(batcher.open_keys(), 1);
        batcher.flush_all(None);
        assert_eq!(batcher.open_keys(), 0);
        let out = out.lock();
        assert_eq!(out.len(), 501);
        assert_eq!(out[499], vec![998, 999]);
        assert_eq!(out[500], vec![5_000]);
        let c = &batcher.counts;
        assert_eq!(c.received.load(Relaxed), 1_001);
        assert_eq!(c.handed_items.load(Relaxed), 1_001);
        assert_eq!(c.batches_full.load(Relaxed), 500);
        assert_eq!(c.batches_shutdown.load(Relaxed), 1);
        assert_eq!(c.buffered.load(Relaxed), 0);
        timer.shutdown_now();
    }

    /// Batches opened at different times leave as each one's `max_wait`
    /// passes, oldest first, with one timer on the wheel at a time.
    #[test]
    fn the_timer_hands_on_each_batch_when_its_wait_is_over() {
        let start = Instant::now();
        let now = Arc::new(Mutex::new(start));
        let n = Arc::clone(&now);
        let clock: Clock = Arc::new(move || *n.lock());
        let c = Arc::clone(&clock);
        let timer = Pool::builder()
            .workers(1)
            .timer_clock(move || c())
            .build()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
        let o = Arc::clone(&out);
        let next: Next<Vec<u64>> = Arc::new(move |batch, _| {
            o.lock().push(batch);
            Ok(())
        });
        let key: KeyFn<u64> = Arc::new(|x: &u64| *x % 10);
        let batcher = Batcher::new(
            100,
            Duration::from_millis(100),
            Some(key),
            next,
            (&timer, clock),
            (Arc::new(Shared::new(false, None)), "batch".into()),
        );
        let advance = |ms: u64| *now.lock() += Duration::from_millis(ms);
        let wait_for = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while out.lock().len() < n {
                assert!(Instant::now() < deadline, "no batch {n} within a minute");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // Key 1 opens at 0 ms, key 2 at 30 ms, key 3 at 60 ms.
        batcher.push(1, Offer::Emit).unwrap();
        advance(30);
        batcher.push(2, Offer::Emit).unwrap();
        batcher.push(12, Offer::Emit).unwrap();
        advance(30);
        batcher.push(3, Offer::Emit).unwrap();
        assert_eq!(timer.metrics().timers_pending, 1);
        advance(40); // 100 ms: key 1's wait is over
        wait_for(1);
        // Re-armed for key 2 (once the timer's run is through).
        let deadline = Instant::now() + Duration::from_secs(60);
        while timer.metrics().timers_pending != 1 {
            assert!(Instant::now() < deadline, "the timer was not re-armed");
            std::thread::yield_now();
        }
        advance(35); // 135 ms: key 2's too, not key 3's
        wait_for(2);
        batcher.push(21, Offer::Emit).unwrap(); // key 1 again, opened at 135 ms
        advance(25); // 160 ms: key 3's
        wait_for(3);
        advance(75); // 235 ms: key 1's second batch
        wait_for(4);
        assert_eq!(*out.lock(), vec![vec![1], vec![2, 12], vec![3], vec![21]]);
        assert_eq!(batcher.open_keys(), 0);
        assert_eq!(batcher.counts.batches_timer.load(Relaxed), 4);
        assert_eq!(
            timer.metrics().timers_pending,
            0,
            "nothing open, nothing armed"
        );
        timer.shutdown_now();
    }
}
