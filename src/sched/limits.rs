//! How many more threads the operating system will give this process.
//!
//! Asking for a thread past a limit does not always fail cleanly: on Linux
//! each thread costs about four memory mappings (its stack, the stack's
//! guard page, the signal stack and its guard), and once
//! `vm.max_map_count` is reached the standard library cannot map a new
//! thread's signal stack and aborts the whole process. So the pool checks
//! the limits before it asks: a build that needs more threads than the
//! system has left fails with `BuildError::ThreadLimit`, and an elastic
//! pool stops growing at the ceiling.
//!
//! The ceiling is the smallest of
//! - `(vm.max_map_count − mappings in use − MAP_MARGIN) / MAPS_PER_THREAD`,
//! - `kernel.threads-max − threads on the system − THREAD_MARGIN`,
//! - `RLIMIT_NPROC − threads of this process − THREAD_MARGIN` (the limit
//!   counts all the user's threads; other processes' are not counted
//!   here, so this one is optimistic when the user runs many),
//!
//! read from `/proc` and `getrlimit` at the moment of asking. Elsewhere no
//! limit is known and the pool trusts thread creation to fail cleanly.

/// Memory mappings one more thread costs (measured: 4; one spare).
const MAPS_PER_THREAD: usize = 5;
/// Mappings kept free for the rest of the process (allocations, files).
const MAP_MARGIN: usize = 1_024;
/// Threads kept free for the rest of the process and the system.
const THREAD_MARGIN: usize = 64;

/// The limit that binds, and how many more threads it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ceiling {
    /// How many more threads may be started.
    pub(crate) threads: usize,
    /// Which limit gives that number.
    pub(crate) limit: &'static str,
}

/// What the limits are read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Readings {
    pub(crate) max_map_count: Option<usize>,
    pub(crate) maps_in_use: Option<usize>,
    pub(crate) threads_max: Option<usize>,
    pub(crate) threads_on_system: Option<usize>,
    pub(crate) nproc_limit: Option<usize>,
    pub(crate) threads_in_process: Option<usize>,
}

/// The ceiling the readings allow (pure); `None` when nothing is known.
pub(crate) fn ceiling(r: Readings) -> Option<Ceiling> {
    let maps = r
        .max_map_count
        .zip(r.maps_in_use)
        .map(|(max, used)| Ceiling {
            threads: max.saturating_sub(used + MAP_MARGIN) / MAPS_PER_THREAD,
            limit: "vm.max_map_count",
        });
    let system = r
        .threads_max
        .zip(r.threads_on_system)
        .map(|(max, used)| Ceiling {
            threads: max.saturating_sub(used + THREAD_MARGIN),
            limit: "kernel.threads-max",
        });
    let user = r
        .nproc_limit
        .zip(r.threads_in_process)
        .map(|(max, used)| Ceiling {
            threads: max.saturating_sub(used + THREAD_MARGIN),
            limit: "RLIMIT_NPROC",
        });
    [maps, system, user]
        .into_iter()
        .flatten()
        .min_by_key(|c| c.threads)
}

/// The ceiling now, from this system's readings.
pub(crate) fn current() -> Option<Ceiling> {
    ceiling(read())
}

#[cfg(all(target_os = "linux", not(loom)))]
fn read() -> Readings {
    fn number(path: &str) -> Option<usize> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
    /// Counts the lines of a file in small reads (a process's map list
    /// can be long; nothing of it needs keeping).
    fn lines(path: &str) -> Option<usize> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).ok()?;
        let mut buf = [0u8; 4096];
        let mut count = 0;
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Some(count),
                Ok(n) => count += buf[..n].iter().filter(|&&b| b == b'\n').count(),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
    // The fourth field of loadavg is "running/total" scheduling entities.
    let threads_on_system = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok());
    let threads_in_process = std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes the limit into the struct it is given.
    let nproc_limit = (unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY)
        .then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX));
    Readings {
        max_map_count: number("/proc/sys/vm/max_map_count"),
        maps_in_use: lines("/proc/self/maps"),
        threads_max: number("/proc/sys/kernel/threads-max"),
        threads_on_system,
        nproc_limit,
        threads_in_process,
    }
}

#[cfg(not(all(target_os = "linux", not(loom))))]
fn read() -> Readings {
    Readings::default()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_limit_binds() {
        let r = Readings {
            max_map_count: Some(65_530),
            maps_in_use: Some(506),
            threads_max: Some(100_000),
            threads_on_system: Some(900),
            nproc_limit: Some(5_000),
            threads_in_process: Some(36),
        };
        // (65,530 − 506 − 1,024) / 5 = 12,800 by mappings; 4,900 by nproc.
        assert_eq!(
            ceiling(r),
            Some(Ceiling {
                threads: 4_900,
                limit: "RLIMIT_NPROC"
            })
        );
        let r = Readings {
            nproc_limit: None,
            ..r
        };
        assert_eq!(
            ceiling(r),
            Some(Ceiling {
                threads: 12_800,
                limit: "vm.max_map_count"
            })
        );
    }

    #[test]
    fn exhausted_limits_allow_nothing_and_unknown_ones_no_ceiling() {
        let r = Readings {
            max_map_count: Some(1_000),
            maps_in_use: Some(900),
            ..Readings::default()
        };
        assert_eq!(ceiling(r).map(|c| c.threads), Some(0));
        assert_eq!(ceiling(Readings::default()), None);
    }

    #[test]
    fn this_system_has_a_ceiling_on_linux() {
        if cfg!(target_os = "linux") {
            let c = current().expect("linux exposes its limits");
            assert!(c.threads > 0, "{c:?}");
        }
    }
}
