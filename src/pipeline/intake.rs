//! The pipeline's intake: the gate every `send` passes, so that a
//! shutdown begins its drain only once each send that got through has put
//! its item into the first stage.
//!
//! A send counts itself in (`sending`), then reads `closed`; the closer
//! sets `closed`, then waits for `sending` to reach zero. Both orders are
//! `SeqCst`, so of a send and a close that race, at least one sees the
//! other: either the send sees `closed` and hands its item back, or the
//! closer sees the send counted and waits until it has left. The last send
//! to leave after `closed` was set wakes the closer under the lock the
//! closer checks `sending` under, so the wake-up cannot fall between the
//! closer's check and its wait.

use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::loom::handshake_fence;
use crate::loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::{Condvar, Mutex};

pub(crate) struct Intake {
    /// On a cache line of its own: every send writes it twice, and the
    /// stages' workers read the fields beside it (`Shared`) for every item.
    sending: CachePadded<AtomicUsize>,
    closed: AtomicBool,
    lock: Mutex<()>,
    left: Condvar,
}

/// A send inside the intake; leaves it when dropped.
pub(crate) struct Entry<'a>(&'a Intake);

impl Intake {
    pub(crate) fn new() -> Self {
        Intake {
            sending: CachePadded::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            lock: Mutex::new(()),
            left: Condvar::new(),
        }
    }

    /// Lets a send in, or `None` once the intake is closed.
    pub(crate) fn enter(&self) -> Option<Entry<'_>> {
        self.sending.fetch_add(1, SeqCst);
        let entry = Entry(self);
        // Handshake with `close_and_wait`: this count, then `closed`.
        handshake_fence();
        if self.closed.load(SeqCst) {
            return None; // `entry` leaves on the way out
        }
        Some(entry)
    }

    /// Refuses every later send; does not wait.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    /// Closes the intake and waits until every send that got in has left,
    /// or until `deadline`; returns whether they all left.
    pub(crate) fn close_and_wait(&self, deadline: Option<Instant>) -> bool {
        self.close();
        // Handshake with `enter` and with a send leaving: `closed`, then
        // `sending`.
        handshake_fence();
        let mut guard = self.lock.lock();
        while self.sending.load(SeqCst) > 0 {
            match deadline {
                None => self.left.wait(&mut guard),
                Some(d) => {
                    if self.left.wait_until(&mut guard, d) {
                        return self.sending.load(SeqCst) == 0;
                    }
                }
            }
        }
        true
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let intake = self.0;
        let last = intake.sending.fetch_sub(1, SeqCst) == 1;
        // Handshake with `close_and_wait`: this count, then `closed`.
        handshake_fence();
        if last && intake.closed.load(SeqCst) {
            // The last send out after the close: wake the closer, under its
            // lock so the wake-up cannot fall between its check and its wait.
            let _guard = intake.lock.lock();
            intake.left.notify_all();
        }
    }
}
