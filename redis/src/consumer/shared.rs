//! What the consumer's threads share: each partition's state and in-flight
//! count, the total in flight, and the signal that room was made.
//!
//! Every atomic here uses `SeqCst`: none is on a per-message path hot
//! enough for a weaker ordering to matter.

use crate::error::Error;
use crate::message::Message;
use crate::metrics::{ConsumerMetrics, Counters};
use crate::stream::Stream;
use ebbtide::{PoolHandle, RetryPolicy};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The handler, with its error as text.
pub(crate) type Handler = dyn Fn(&Message) -> Result<(), String> + Send + Sync;

pub(crate) const FREE: u8 = 0;
/// Held: its reader reads.
pub(crate) const OWNED: u8 = 1;
/// Held and being handed back: nothing more is read; the lease goes when
/// the partition's in-flight messages are acked.
pub(crate) const RELEASING: u8 = 2;

pub(crate) struct Settings {
    pub(crate) url: String,
    pub(crate) stream: Stream,
    pub(crate) group: String,
    pub(crate) me: String,
    pub(crate) in_flight: usize,
    pub(crate) per_partition: usize,
    pub(crate) lease_ttl: Duration,
    pub(crate) block: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_payload: usize,
    pub(crate) drain_timeout: Duration,
    pub(crate) trim_every: Option<Duration>,
    pub(crate) dead_letter_max_len: Option<u64>,
}

impl Settings {
    pub(crate) fn ttl_ms(&self) -> u64 {
        self.lease_ttl.as_millis() as u64
    }

    /// How long before a lease's expiry its holder stops reading: a fifth
    /// of the lease.
    pub(crate) fn margin(&self) -> Duration {
        self.lease_ttl / 5
    }
}

pub(crate) struct Part {
    pub(crate) state: AtomicU8,
    /// Reads may start until then (the lease's expiry less the margin).
    pub(crate) valid_until: Mutex<Option<Instant>>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) reader: Mutex<Option<JoinHandle<()>>>,
    pub(crate) counters: Counters,
    /// Held at some time (shown in the metrics).
    pub(crate) seen: AtomicBool,
}

pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) parts: Vec<Part>,
    pub(crate) total: AtomicUsize,
    /// Set by `stop`: give every partition back, then end.
    pub(crate) stopping: AtomicBool,
    /// Set when the coordinator has ended: the acker ends once empty.
    pub(crate) closed: AtomicBool,
    pub(crate) lock: Mutex<()>,
    /// Signalled when room is made or a state changes.
    pub(crate) changed: Condvar,
    pub(crate) pool: PoolHandle,
    pub(crate) handler: Arc<Handler>,
    /// The first error that stopped the consumer on its own.
    pub(crate) failure: Mutex<Option<Error>>,
    /// Entries in the dead-letter stream when last read (`XLEN`), or
    /// [`UNREAD`] before the first reading.
    pub(crate) dead_letters: AtomicU64,
}

/// What a partition's reader does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Read: the partition is held and its lease lasts past the read.
    Read,
    /// Wait for the coordinator: the partition is held, but its lease
    /// ends (less the margin) before the read would. The coordinator
    /// either renews it, late (a paused process, a starved thread), and
    /// reading goes on, or finds it lost and frees the partition.
    Wait,
    /// End: the partition is not held (lost, or being handed back) or the
    /// consumer stops.
    End,
}

/// The reader's rule, a pure function of what it sees: `state` and
/// `valid_until` are its partition's, `now` the time, `block` the longest
/// read. Only the coordinator ends a holding, so a lease that merely
/// needs renewing never ends the reader: a reader that ended there would
/// leave a partition whose lease is renewed and which nobody reads.
pub(crate) fn next_read(
    stopping: bool,
    state: u8,
    valid_until: Option<Instant>,
    now: Instant,
    block: Duration,
) -> Next {
    if stopping || state != OWNED {
        Next::End
    } else if valid_until.is_some_and(|t| now + block < t) {
        Next::Read
    } else {
        Next::Wait
    }
}

/// `Shared::dead_letters` before its first reading.
pub(crate) const UNREAD: u64 = u64::MAX;

impl Shared {
    pub(crate) fn new(settings: Settings, pool: PoolHandle, handler: Arc<Handler>) -> Self {
        let parts = (0..settings.stream.partition_count())
            .map(|_| Part {
                state: AtomicU8::new(FREE),
                valid_until: Mutex::new(None),
                in_flight: AtomicUsize::new(0),
                reader: Mutex::new(None),
                counters: Counters::default(),
                seen: AtomicBool::new(false),
            })
            .collect();
        Shared {
            settings,
            parts,
            total: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            lock: Mutex::new(()),
            changed: Condvar::new(),
            pool,
            handler,
            failure: Mutex::new(None),
            dead_letters: AtomicU64::new(UNREAD),
        }
    }

    pub(crate) fn notify(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    /// Waits for a change, at most `d`.
    pub(crate) fn wait(&self, d: Duration) {
        let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.changed.wait_timeout(g, d);
    }

    /// What partition `p`'s reader does next (see [`next_read`]) before a
    /// read that lasts up to `block`.
    pub(crate) fn next_read(&self, p: u32, block: Duration) -> Next {
        let part = &self.parts[p as usize];
        let until = *part.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        next_read(
            self.stopping.load(SeqCst),
            part.state.load(SeqCst),
            until,
            Instant::now(),
            block,
        )
    }

    /// Reserves up to the free in-flight slots of `p` and of the whole
    /// consumer; 0 when there are none. Only `p`'s reader reserves for
    /// `p` (the acker only gives back), so its count cannot rise between
    /// the look and the add.
    pub(crate) fn reserve(&self, p: u32) -> usize {
        let part = &self.parts[p as usize];
        let s = &self.settings;
        let here = s.per_partition.saturating_sub(part.in_flight.load(SeqCst));
        if here == 0 {
            return 0;
        }
        let mut got = 0;
        let _ = self.total.fetch_update(SeqCst, SeqCst, |t| {
            got = here.min(s.in_flight.saturating_sub(t));
            (got > 0).then_some(t + got)
        });
        part.in_flight.fetch_add(got, SeqCst);
        got
    }

    /// Reserves one slot of `p`, if there is room; 0 or 1.
    pub(crate) fn reserve_one(&self, p: u32) -> usize {
        let part = &self.parts[p as usize];
        let s = &self.settings;
        if part.in_flight.load(SeqCst) >= s.per_partition {
            return 0;
        }
        let got = self
            .total
            .fetch_update(SeqCst, SeqCst, |t| (t < s.in_flight).then_some(t + 1))
            .is_ok();
        if got {
            part.in_flight.fetch_add(1, SeqCst);
        }
        usize::from(got)
    }

    /// Gives back `n` slots of `p` (reserved and not used, or acked).
    pub(crate) fn unreserve(&self, p: u32, n: usize) {
        if n == 0 {
            return;
        }
        self.parts[p as usize].in_flight.fetch_sub(n, SeqCst);
        self.total.fetch_sub(n, SeqCst);
        self.notify();
    }

    /// Records the first error that stops the consumer, and stops it.
    pub(crate) fn fail(&self, e: Error) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
        drop(f);
        self.stopping.store(true, SeqCst);
        self.notify();
    }

    pub(crate) fn metrics(&self) -> ConsumerMetrics {
        let s = &self.settings;
        ConsumerMetrics {
            stream: s.stream.name().to_string(),
            group: s.group.clone(),
            consumer: s.me.clone(),
            // Reserved before a partition's slots and given back after
            // them, so it covers every message the partitions count.
            in_flight: self.total.load(SeqCst) as u64,
            dead_letters: Some(self.dead_letters.load(SeqCst)).filter(|&n| n != UNREAD),
            partitions: self
                .parts
                .iter()
                .enumerate()
                .filter(|(_, p)| p.seen.load(SeqCst))
                .map(|(i, p)| {
                    p.counters.snapshot(
                        i as u32,
                        p.state.load(SeqCst) != FREE,
                        p.in_flight.load(SeqCst) as u64,
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_reads_while_its_lease_lasts_past_the_read() {
        let now = Instant::now();
        let block = Duration::from_millis(100);
        let later = |ms| Some(now + Duration::from_millis(ms));
        assert_eq!(next_read(false, OWNED, later(101), now, block), Next::Read);
        assert_eq!(
            next_read(false, OWNED, later(5_000), now, block),
            Next::Read
        );
    }

    #[test]
    fn a_reader_whose_lease_is_due_waits_for_the_renewal_instead_of_ending() {
        let now = Instant::now();
        let block = Duration::from_millis(100);
        // Due within the read, due now, and past (a renewal that is late).
        for until in [
            now + Duration::from_millis(100),
            now,
            now - Duration::from_secs(3),
        ] {
            assert_eq!(next_read(false, OWNED, Some(until), now, block), Next::Wait);
        }
        assert_eq!(next_read(false, OWNED, None, now, block), Next::Wait);
    }

    #[test]
    fn a_reader_ends_only_when_its_partition_is_not_held_or_the_consumer_stops() {
        let now = Instant::now();
        let block = Duration::from_millis(100);
        let fresh = Some(now + Duration::from_secs(5));
        for until in [fresh, None] {
            assert_eq!(next_read(true, OWNED, until, now, block), Next::End);
            assert_eq!(next_read(false, RELEASING, until, now, block), Next::End);
            assert_eq!(next_read(false, FREE, until, now, block), Next::End);
        }
    }
}
