//! Fork-join on a pool: [`join`](join::join) with stack-allocated jobs,
//! `scope`/`scope_fifo` whose tasks may borrow from the caller, and
//! `install`. Every wait here runs other work of the pool (never a
//! deadlock, even on one worker). The protocol and its loom models are in
//! `design/fork-join.md`.

pub(crate) mod install;
pub(crate) mod join;
pub(crate) mod scope;
