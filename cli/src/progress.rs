//! Progress while a run goes: a bar on a terminal, a plain line every
//! second otherwise (logs, CI), both on stderr so stdout stays the result.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One reading of a run.
pub struct Reading {
    pub submitted: u64,
    pub done: u64,
    pub queued: usize,
    pub workers: usize,
}

pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Reads `read` every 100 ms (bar) or every second (lines) until
    /// [`finish`](Self::finish).
    pub fn start(total: u64, read: impl Fn() -> Reading + Send + 'static) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ebbtide-progress".into())
            .spawn(move || {
                if std::io::stderr().is_terminal() {
                    bar(total, &flag, &read)
                } else {
                    lines(total, &flag, &read)
                }
            })
            .expect("a progress thread");
        Progress {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        // SeqCst: a stop flag read once per tick; nothing else hangs on it.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.end();
    }
}

fn rate(done: u64, since: Instant) -> f64 {
    done as f64 / since.elapsed().as_secs_f64().max(1e-9)
}

fn bar(total: u64, stop: &AtomicBool, read: &dyn Fn() -> Reading) {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:32}] {pos}/{len} done  {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let r = read();
        bar.set_position(r.done.min(total));
        bar.set_message(format!(
            "submitted {}  {:.0}/s  queued {}  workers {}",
            r.submitted,
            rate(r.done, start),
            r.queued,
            r.workers
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

fn lines(total: u64, stop: &AtomicBool, read: &dyn Fn() -> Reading) {
    let start = Instant::now();
    let mut next = start + Duration::from_secs(1);
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            let r = read();
            eprintln!(
                "[{:>5.1}s] submitted {} / {}, done {}, {:.0}/s, queued {}, workers {}",
                start.elapsed().as_secs_f64(),
                r.submitted,
                total,
                r.done,
                rate(r.done, start),
                r.queued,
                r.workers
            );
            next += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
