//! A token's watchers against its cancellation: every watcher kept is told,
//! and one not kept hears `false` from `watch` (no lost wake-up).

use super::model;
use crate::loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use crate::task::cancel::Watcher;
use crate::CancelToken;
use loom::thread;
use std::sync::Arc;

#[derive(Default)]
struct Count(AtomicUsize);

impl Watcher for Count {
    fn cancelled(&self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// `watch` on a child races `cancel` on its parent: a watcher kept is told
/// exactly once, one refused is told by no one, and each token that kept
/// it tells it once when cancelled.
#[test]
fn loom_token_watch_races_cancel() {
    model(3, || {
        let parent = CancelToken::new();
        let child = parent.child();
        let count = Arc::new(Count::default());
        let watcher: Arc<dyn Watcher> = count.clone();
        let canceller = {
            let parent = parent.clone();
            thread::spawn(move || parent.cancel())
        };
        let kept = child.watch(&watcher);
        assert!(
            kept || child.is_cancelled(),
            "refused while nothing was cancelled"
        );
        canceller.join().unwrap();
        assert!(child.is_cancelled());
        // Kept on the way up (the parent too): told once, by the parent.
        // Refused at the parent: told by no one yet.
        assert_eq!(count.0.load(SeqCst), usize::from(kept));
        // The child kept it either way (it was not cancelled): once more.
        child.cancel();
        assert_eq!(count.0.load(SeqCst), usize::from(kept) + 1);
    });
}

/// A watcher dropped before the cancellation is not told, and a quiet
/// token tells no one.
#[test]
fn loom_token_forgets_dropped_and_quiet_watchers() {
    model(3, || {
        let quiet = CancelToken::quiet();
        let child = quiet.child();
        let count = Arc::new(Count::default());
        let watcher: Arc<dyn Watcher> = count.clone();
        assert!(child.watch(&watcher));
        let gone: Arc<dyn Watcher> = Arc::new(Count::default());
        assert!(child.watch(&gone));
        drop(gone);
        let canceller = {
            let quiet = quiet.clone();
            thread::spawn(move || quiet.cancel())
        };
        canceller.join().unwrap();
        assert!(child.is_cancelled());
        assert_eq!(count.0.load(SeqCst), 0, "a quiet root told a watcher");
        child.cancel();
        assert_eq!(count.0.load(SeqCst), 1);
    });
}
