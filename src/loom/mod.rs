//! The one place that chooses between the real synchronization types and
//! loom's model-checked ones.
//!
//! Everything in the crate that takes part in a concurrency protocol imports
//! its atomics, locks, condition variables, cells, threads and thread-locals
//! from here, never from `std`/`parking_lot` directly. Built with
//! `RUSTFLAGS="--cfg loom"`, the same code runs under loom's scheduler, which
//! explores the interleavings of the pool's protocols (sleep/wake, shutdown
//! against submit, join latches).
//!
//! Both implementations expose one API: `Mutex::lock` returns a guard (no
//! poisoning) and `Condvar::wait` takes `&mut guard`. The shim depends on
//! nothing of the pool's (lock statistics wrap it from `metrics`).

#[cfg(not(loom))]
mod real;
#[cfg(not(loom))]
pub(crate) use real::*;

#[cfg(loom)]
mod model;
#[cfg(loom)]
pub(crate) use model::*;
