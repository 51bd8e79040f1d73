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

#[cfg(all(test, unix, not(loom)))]
mod tests {
    use super::AbortOnPanic;
    use std::os::unix::process::ExitStatusExt;

    /// Set in the child process this test starts.
    const CHILD: &str = "EBBTIDE_ABORT_ON_PANIC_CHILD";

    /// The test binary runs this test again as a child, where a panic passes
    /// the guard: the child must die of `SIGABRT`, with the message naming
    /// the thread, rather than carry on.
    #[test]
    fn a_panic_past_the_guard_aborts_naming_the_thread() {
        if std::env::var_os(CHILD).is_some() {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `setrlimit` reads the struct the pointer refers to, a
            // valid local; no core file from the abort that follows.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
            let _abort = AbortOnPanic("the test's thread");
            panic!("an error past the guard");
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sched::abort::tests::a_panic_past_the_guard_aborts_naming_the_thread",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
        assert!(
            stderr.contains(
                "ebbtide: the test's thread panicked outside any task (an internal error); aborting"
            ),
            "{stderr}"
        );
    }
}
