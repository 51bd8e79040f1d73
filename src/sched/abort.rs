//! The pool's own threads fail loudly rather than leave a pool that hangs.

/// Aborts the process when dropped by a panic, naming the thread. Every
/// piece of user code a pool thread calls is caught where it is called
/// (tasks, handlers, clocks, destructors), so a panic that leaves one of
/// its threads' loops is the pool's own bug; a pool missing a worker (or
/// its timer thread, its supervisor) would leave tasks unaccounted and
/// every wait for them hanging, and failing loudly beats hanging. Not under
/// loom, which reports a model thread's panic itself.
#[cfg(not(loom))]
pub(crate) struct AbortOnPanic(pub(crate) &'static str);

#[cfg(not(loom))]
impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "ebbtide: {} panicked outside any task (an internal error); aborting",
                self.0
            );
            std::process::abort();
        }
    }
}
