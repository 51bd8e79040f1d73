//! CPU readings, for the auto-scaling supervisor to tell compute from
//! blocking work.
//!
//! - [`ThreadClock`]: one thread's CPU time, readable from any thread of the
//!   process. Linux charges a running thread's pending run time when this
//!   clock is read, so it is exact at any moment: a worker spinning for 2 ms
//!   reads 2.05 ms over 2.07 ms of wall time, one sleeping reads 0 (measured
//!   here; ~0.3 µs a read).
//! - [`process_cpu_time`]: the whole process (all threads, not only the
//!   pool's). Linux folds other running threads' time into it only at
//!   scheduler ticks, so it is read over windows of 50 ms or more.
//! - [`SchedStat`]: one thread's time spent waiting on a run queue
//!   (Linux's `/proc/self/task/<tid>/schedstat`, ~0.9 µs a `pread` here). A
//!   busy worker that got little CPU either slept (blocked) or waited for a
//!   CPU (starved: by this process's other threads or another process); its
//!   run-queue wait tells which. Measured here: four spinners on two CPUs
//!   read 24 ms of CPU and 24 ms of wait over 50 ms; a thread sleeping 1 ms
//!   at a time read 0.5 ms and 0.
//!
//! Where a clock is missing (other platforms, loom) the reads return `None`
//! and the policy falls back to what it can see without it.

use std::time::Duration;

/// A thread's CPU-time clock (see the module docs), with the thread's id
/// (for its scheduler statistics), packed in one word for an atomic slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadClock(i64);

#[cfg(all(any(target_os = "linux", target_os = "android"), not(loom)))]
mod imp {
    use std::time::Duration;

    /// The calling thread's clock id (high half) and thread id (low half).
    pub(super) fn current() -> Option<i64> {
        let mut id: libc::clockid_t = 0;
        // SAFETY: `pthread_self` is always valid for the calling thread, and
        // `pthread_getcpuclockid` writes a clock id into `id` on success.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
        // SAFETY: `gettid` has no preconditions and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let tid = u32::try_from(tid).ok()?;
        (rc == 0).then_some((i64::from(id) << 32) | i64::from(tid))
    }

    pub(super) fn tid(raw: i64) -> Option<u32> {
        Some(raw as u32)
    }

    pub(super) fn read(raw: i64) -> Option<Duration> {
        let id = libc::clockid_t::try_from(raw >> 32).ok()?;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` writes a `timespec` into the pointer on
        // success; an id whose thread has exited fails with EINVAL (and is
        // reported as `None`), it is never undefined behavior.
        let rc = unsafe { libc::clock_gettime(id, &mut ts) };
        (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
}

#[cfg(not(all(any(target_os = "linux", target_os = "android"), not(loom))))]
mod imp {
    use std::time::Duration;

    pub(super) fn current() -> Option<i64> {
        None
    }

    pub(super) fn tid(_: i64) -> Option<u32> {
        None
    }

    pub(super) fn read(_: i64) -> Option<Duration> {
        None
    }
}

impl ThreadClock {
    /// The calling thread's clock, where the platform has one.
    pub(crate) fn current() -> Option<Self> {
        imp::current().map(ThreadClock)
    }

    /// The thread's CPU time so far; `None` once the thread has exited.
    pub(crate) fn read(self) -> Option<Duration> {
        imp::read(self.0)
    }

    /// The thread's id, where the platform has one.
    pub(crate) fn tid(self) -> Option<u32> {
        imp::tid(self.0)
    }

    /// The clock as one word, for an atomic slot (see `from_raw`).
    pub(crate) fn into_raw(self) -> i64 {
        self.0
    }

    /// A clock stored with `into_raw`.
    pub(crate) fn from_raw(raw: i64) -> Self {
        ThreadClock(raw)
    }
}

/// The process's CPU time (user + system, all threads).
pub(crate) fn process_cpu_time() -> Option<Duration> {
    #[cfg(all(unix, not(loom)))]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
        // SAFETY: `getrusage` writes a `rusage` into the pointer on success.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: initialized by the successful call above.
        let usage = unsafe { usage.assume_init() };
        let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
        Some(t(usage.ru_utime) + t(usage.ru_stime))
    }
    #[cfg(not(all(unix, not(loom))))]
    {
        None
    }
}

/// One thread's scheduler statistics (see the module docs): kept-open
/// `/proc/self/task/<tid>/schedstat` and `stat`, each re-read with one
/// `pread`.
#[derive(Debug)]
pub(crate) struct SchedStat {
    #[cfg(all(target_os = "linux", not(loom)))]
    files: (std::fs::File, std::fs::File),
}

/// What [`SchedStat::read`] tells of a thread now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sched {
    /// The time it has spent runnable but waiting for a CPU, up to its
    /// last switch onto a CPU: a wait in progress is not in it yet.
    pub(crate) run_delay: Duration,
    /// Whether it is running or waiting for a CPU now (state `R`), rather
    /// than asleep.
    pub(crate) runnable: bool,
}

impl SchedStat {
    /// The statistics of thread `tid` of this process; `None` where the
    /// platform or kernel does not keep them.
    pub(crate) fn open(tid: u32) -> Option<Self> {
        #[cfg(all(target_os = "linux", not(loom)))]
        {
            let open = |name: &str| std::fs::File::open(format!("/proc/self/task/{tid}/{name}"));
            let stat = SchedStat {
                files: (open("schedstat").ok()?, open("stat").ok()?),
            };
            stat.read().map(|_| stat)
        }
        #[cfg(not(all(target_os = "linux", not(loom))))]
        {
            let _ = tid;
            None
        }
    }

    /// The thread's run-queue wait and state; `None` once it has exited.
    pub(crate) fn read(&self) -> Option<Sched> {
        #[cfg(all(target_os = "linux", not(loom)))]
        {
            use std::os::unix::fs::FileExt;
            let mut buf = [0u8; 512];
            let n = self.files.0.read_at(&mut buf, 0).ok()?;
            let run_delay = parse_schedstat(std::str::from_utf8(&buf[..n]).ok()?)?;
            let n = self.files.1.read_at(&mut buf, 0).ok()?;
            let runnable = parse_state(std::str::from_utf8(&buf[..n]).ok()?)? == 'R';
            Some(Sched {
                run_delay,
                runnable,
            })
        }
        #[cfg(not(all(target_os = "linux", not(loom))))]
        {
            None
        }
    }
}

/// The state letter of a `stat` line (`"<tid> (<name>) <state> ..."`; the
/// name may hold spaces and parentheses, so the state follows the last
/// `)`).
#[cfg_attr(not(all(target_os = "linux", not(loom))), allow(dead_code))]
fn parse_state(line: &str) -> Option<char> {
    line.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The run-queue wait of a `schedstat` line (`"<on-CPU ns> <waiting ns>
/// <timeslices>"`: the second field).
#[cfg_attr(not(all(target_os = "linux", not(loom))), allow(dead_code))]
fn parse_schedstat(line: &str) -> Option<Duration> {
    let mut fields = line.split_ascii_whitespace();
    fields.next()?;
    fields.next()?.parse().ok().map(Duration::from_nanos)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn schedstat_lines_give_the_run_queue_wait() {
        assert_eq!(
            parse_schedstat("24007697 23993417 312\n"),
            Some(Duration::from_nanos(23_993_417))
        );
        assert_eq!(parse_schedstat("0 0 0"), Some(Duration::ZERO));
        assert_eq!(parse_schedstat("17"), None);
        assert_eq!(parse_schedstat("a b c"), None);
    }

    #[test]
    fn stat_lines_give_the_state_after_the_name() {
        assert_eq!(parse_state("1234 (ebbtide-3) S 1 2 3"), Some('S'));
        assert_eq!(parse_state("1234 (a (b) c) R 1 2 3"), Some('R'));
        assert_eq!(parse_state("1234 (x)"), None);
        assert_eq!(parse_state("no name"), None);
    }

    #[test]
    fn a_threads_statistics_say_whether_it_runs_or_sleeps() {
        let Some(own) = ThreadClock::current() else {
            return; // no thread ids on this platform
        };
        #[cfg(target_os = "linux")]
        {
            // This thread reads its own statistics while running.
            let stat = SchedStat::open(own.tid().unwrap()).expect("Linux keeps them");
            assert!(stat.read().unwrap().runnable);
            // A thread blocked in `recv` is asleep.
            let (tx, rx) = mpsc::channel();
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let t = std::thread::spawn(move || {
                tx.send(ThreadClock::current().unwrap()).unwrap();
                go_rx.recv().unwrap();
            });
            let other = SchedStat::open(rx.recv().unwrap().tid().unwrap()).unwrap();
            // It blocks in `recv` until told to go: it is seen asleep once
            // it got there (a bounded number of looks; it has nothing else
            // to do on the way).
            let seen_asleep = (0..1_000_000).any(|_| {
                std::thread::yield_now();
                !other.read().unwrap().runnable
            });
            assert!(seen_asleep, "a thread blocked in recv reads as runnable");
            go_tx.send(()).unwrap();
            t.join().unwrap();
        }
        // No such thread: no statistics.
        assert!(SchedStat::open(u32::MAX).is_none());
        let _ = own;
    }

    #[test]
    fn another_threads_clock_counts_its_cpu() {
        let Some(own) = ThreadClock::current() else {
            return; // no thread clocks on this platform
        };
        assert!(own.read().is_some());
        assert_eq!(ThreadClock::from_raw(own.into_raw()), own);
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let clock = ThreadClock::current().unwrap();
            // Burn CPU until this thread's own clock shows it, then block.
            while clock.read().unwrap() < Duration::from_millis(5) {
                std::hint::spin_loop();
            }
            tx.send(clock).unwrap();
            go_rx.recv().unwrap();
        });
        let clock = rx.recv().unwrap();
        assert_ne!(clock, own, "each thread has its own clock");
        // Read from this thread: the other thread's time, not this one's.
        assert!(clock.read().unwrap() >= Duration::from_millis(5));
        go_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
