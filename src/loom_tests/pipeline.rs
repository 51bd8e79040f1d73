//! loom model of the pipeline's intake: a send racing the shutdown that
//! closes it.

use super::model;
use crate::loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use crate::loom::sync::Arc;
use crate::pipeline::intake::Intake;

/// Two sends race a close. Each send either is refused (and keeps its
/// item) or puts its item in before the closer goes on to close the first
/// stage; and the closer is always woken (a lost wake-up is a deadlock
/// here: the timed wait is an untimed one under loom).
#[test]
fn loom_a_send_lands_before_the_close_goes_on() {
    model(2, || {
        let intake = Arc::new(Intake::new());
        let stage_closed = Arc::new(AtomicBool::new(false));
        let (landed, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let (intake, stage_closed) = (intake.clone(), stage_closed.clone());
                let (landed, refused) = (landed.clone(), refused.clone());
                loom::thread::spawn(move || match intake.enter() {
                    Some(_inside) => {
                        assert!(!stage_closed.load(SeqCst), "an item reached a closed stage");
                        landed.fetch_add(1, SeqCst);
                    }
                    None => {
                        refused.fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        assert!(intake.close_and_wait(Some(std::time::Instant::now())));
        stage_closed.store(true, SeqCst);
        let landed_by_close = landed.load(SeqCst);
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(
            landed.load(SeqCst),
            landed_by_close,
            "a send landed after the close"
        );
        assert_eq!(landed.load(SeqCst) + refused.load(SeqCst), 2);
    });
}
