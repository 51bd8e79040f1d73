//! What each worker is doing: its state, its task's start, its CPU clock.

use super::cpu::ThreadClock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// What a worker is doing, as the dump and the watchdog see it.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Between jobs, looking in its own queue and the injector.
    Idle,
    /// Looking in other workers' deques (stealing), or spinning before it
    /// parks.
    Searching,
    /// Asleep for want of work (or while it waits with nothing to help).
    Parked,
    /// Running a task.
    Running,
    /// Blocked in a wait that does not help (`join_blocking`).
    Blocked,
    /// Not tracked (`Builder::metrics(false)`), or not started.
    Unknown,
}

impl WorkerState {
    fn from_u8(v: u8) -> Self {
        match v & STATE_MASK as u8 {
            1 => WorkerState::Idle,
            2 => WorkerState::Searching,
            3 => WorkerState::Parked,
            4 => WorkerState::Running,
            5 => WorkerState::Blocked,
            _ => WorkerState::Unknown,
        }
    }

    pub(crate) fn as_u8(self) -> u8 {
        match self {
            WorkerState::Unknown => 0,
            WorkerState::Idle => 1,
            WorkerState::Searching => 2,
            WorkerState::Parked => 3,
            WorkerState::Running => 4,
            WorkerState::Blocked => 5,
        }
    }
}

/// The state's bits in the status word; the rest is the start tick.
const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// A status word: `state` in the low bits, the task's start tick above.
/// (Ticks below 2^61: decades of a time-stamp counter or nanoseconds.)
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatusWord(u64);

/// One worker's activity, written only by that worker (relaxed stores:
/// readers want a recent picture, not a synchronized one). The task's
/// sequence number is the worker's `started` counter. State and start
/// tick share one word: a task's start is one store.
pub(crate) struct WorkerStatus {
    word: AtomicU64,
    /// The worker thread's CPU clock (`ThreadClock::into_raw`), or
    /// `NO_CLOCK`: the supervisor reads it to tell blocking from compute.
    clock: AtomicI64,
    /// The running task's name, for named tasks (`TaskOptions::name`);
    /// only named tasks take this lock.
    name: parking_lot::Mutex<Option<std::sync::Arc<str>>>,
}

/// `WorkerStatus::clock` when the slot has no running thread or the
/// platform has no thread clocks.
const NO_CLOCK: i64 = i64::MIN;

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            word: AtomicU64::new(0),
            clock: AtomicI64::new(NO_CLOCK),
            name: parking_lot::Mutex::new(None),
        }
    }
}

impl WorkerStatus {
    /// Publishes (or, with `None`, withdraws) the CPU clock of the thread
    /// running in this slot. Relaxed: the supervisor's reading is an
    /// estimate, and a clock read after its thread exited fails cleanly.
    pub(crate) fn set_clock(&self, clock: Option<ThreadClock>) {
        self.clock
            .store(clock.map_or(NO_CLOCK, ThreadClock::into_raw), Relaxed);
    }

    /// The CPU clock of the thread running in this slot, if published.
    pub(crate) fn clock(&self) -> Option<ThreadClock> {
        match self.clock.load(Relaxed) {
            NO_CLOCK => None,
            raw => Some(ThreadClock::from_raw(raw)),
        }
    }

    /// Sets the state, keeping the start tick (a task that blocks keeps
    /// its start).
    #[inline]
    pub(crate) fn set(&self, state: WorkerState) {
        let word = self.word.load(Relaxed) & !STATE_MASK;
        self.word.store(word | u64::from(state.as_u8()), Relaxed);
    }

    /// `Running` a task started at tick `since`; returns the word it
    /// replaced, to be put back after the task (`restore`).
    #[inline]
    pub(crate) fn start_task(&self, since: u64) -> StatusWord {
        let outer = StatusWord(self.word.load(Relaxed));
        self.begin_task(since);
        outer
    }

    /// `Running` a task started at tick `since`, where the word it
    /// replaces is known (`Idle`, between tasks) and not kept.
    #[inline]
    pub(crate) fn begin_task(&self, since: u64) {
        self.word.store(
            since << STATE_BITS | u64::from(WorkerState::Running.as_u8()),
            Relaxed,
        );
    }

    /// Ends a task `begin_task` started: `Idle` since tick `end`.
    #[inline]
    pub(crate) fn end_task(&self, end: u64) {
        self.word.store(
            end << STATE_BITS | u64::from(WorkerState::Idle.as_u8()),
            Relaxed,
        );
    }

    /// Puts back a word `start_task` returned.
    #[inline]
    pub(crate) fn restore(&self, word: StatusWord) {
        self.word.store(word.0, Relaxed);
    }

    /// Records (or clears) the running task's name.
    pub(crate) fn set_name(&self, name: Option<std::sync::Arc<str>>) {
        *self.name.lock() = name;
    }

    /// The running task's name, if it has one.
    pub(crate) fn name(&self) -> Option<String> {
        self.name.lock().as_deref().map(str::to_owned)
    }

    pub(crate) fn read(&self) -> (WorkerState, u64) {
        let word = self.word.load(Relaxed);
        (WorkerState::from_u8(word as u8), word >> STATE_BITS)
    }
}
