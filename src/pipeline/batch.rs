//! The batch stage: groups items (per key, when keyed) until `max_items`
//! or until `max_wait` has passed since the batch's first item, whichever
//! comes first, and hands each batch on as one item. It has no workers: a
//! batch fills on the threads that hand it items, and a timer on the
//! pipeline's own timing wheel flushes a batch that waited long enough.
//! Batches leave in the order they were closed (one lock orders the
//! hand-offs), so per-key order holds through the stage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::pool::{Pool, PoolHandle};

use super::{KeyFn, Next, Shared};

/// Why a batch left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    Full,
    Timer,
    Shutdown,
}

#[derive(Default, Debug)]
pub(crate) struct BatchCounts {
    pub(crate) received: AtomicU64,
    pub(crate) emitted_items: AtomicU64,
    pub(crate) batches_full: AtomicU64,
    pub(crate) batches_timer: AtomicU64,
    pub(crate) batches_shutdown: AtomicU64,
    pub(crate) buffered: AtomicU64,
    /// Items whose key function panicked.
    pub(crate) panicked: AtomicU64,
}

struct Open<T> {
    items: Vec<T>,
    /// Which batch of this key this is; a timer flushes only its own.
    generation: u64,
}

pub(crate) struct Batcher<T> {
    max_items: usize,
    max_wait: Duration,
    key: Option<KeyFn<T>>,
    open: Mutex<HashMap<u64, Open<T>>>,
    /// Held from taking a batch out until it was handed on: batches leave
    /// in the order they were taken.
    handing: Mutex<()>,
    next: Next<Vec<T>>,
    timer: PoolHandle,
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
        timer: &Pool,
        (shared, name): (Arc<Shared>, Arc<str>),
    ) -> Arc<Self> {
        Arc::new(Batcher {
            max_items,
            max_wait,
            key,
            open: Mutex::new(HashMap::new()),
            handing: Mutex::new(()),
            next,
            timer: timer.handle(),
            counts: Arc::new(BatchCounts::default()),
            shared,
            name,
        })
    }

    /// Adds an item; hands the batch on if it is full.
    pub(crate) fn push(self: &Arc<Self>, item: T) -> Result<(), ()> {
        self.counts.received.fetch_add(1, Relaxed);
        let (k, item) = match &self.key {
            Some(key) => self
                .shared
                .key_of(key, item, &self.name, &self.counts.panicked)?,
            None => (0, item),
        };
        let mut open = self.open.lock();
        let batch = open.entry(k).or_insert_with(|| Open {
            items: Vec::new(),
            generation: 0,
        });
        batch.items.push(item);
        self.counts.buffered.fetch_add(1, Relaxed);
        if batch.items.len() == 1 && self.max_items > 1 {
            // The first item: the batch leaves after `max_wait` at the
            // latest.
            let (me, generation) = (Arc::clone(self), batch.generation);
            let timer = self
                .timer
                .task()
                .delay(self.max_wait)
                .execute(move || me.flush_if(k, generation));
            if timer.is_err() {
                // The pipeline is closing; shutdown flushes this batch.
            }
        }
        if batch.items.len() >= self.max_items {
            let items = std::mem::take(&mut batch.items);
            batch.generation += 1;
            return self.hand_on(open, items, Flush::Full);
        }
        Ok(())
    }

    fn flush_if(&self, k: u64, generation: u64) {
        let mut open = self.open.lock();
        let Some(batch) = open.get_mut(&k) else {
            return;
        };
        if batch.generation != generation || batch.items.is_empty() {
            return;
        }
        let items = std::mem::take(&mut batch.items);
        batch.generation += 1;
        let _ = self.hand_on(open, items, Flush::Timer);
    }

    /// Hands every partial batch on (at shutdown), keys in ascending order.
    pub(crate) fn flush_all(&self) {
        loop {
            let mut open = self.open.lock();
            let Some(k) = open
                .iter()
                .filter(|(_, b)| !b.items.is_empty())
                .map(|(k, _)| *k)
                .min()
            else {
                return;
            };
            let batch = open.get_mut(&k).expect("the key just found");
            let items = std::mem::take(&mut batch.items);
            batch.generation += 1;
            let _ = self.hand_on(open, items, Flush::Shutdown);
        }
    }

    fn hand_on(
        &self,
        open: parking_lot::MutexGuard<'_, HashMap<u64, Open<T>>>,
        items: Vec<T>,
        why: Flush,
    ) -> Result<(), ()> {
        // Ordering: take `handing` before letting go of `open`, so the
        // batches of a key are handed on in the order they were taken.
        let handing = self.handing.lock();
        drop(open);
        let n = items.len() as u64;
        self.counts.buffered.fetch_sub(n, Relaxed);
        let r = (self.next)(items);
        drop(handing);
        match r {
            Ok(()) => {
                self.counts.emitted_items.fetch_add(n, Relaxed);
                let c = match why {
                    Flush::Full => &self.counts.batches_full,
                    Flush::Timer => &self.counts.batches_timer,
                    Flush::Shutdown => &self.counts.batches_shutdown,
                };
                c.fetch_add(1, Relaxed);
                Ok(())
            }
            // Refused downstream: the next stage counted the batch as
            // abandoned there.
            Err(()) => Err(()),
        }
    }
}
