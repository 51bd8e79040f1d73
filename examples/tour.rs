//! `cargo run --release --example tour`: a tour of ebbtide on built-in defaults — result
//! handles, every backpressure policy under overload, and the exact
//! accounting of a shutdown with a deadline.

use ebbtide::{Backpressure, Pool, SubmitError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn busy(micros: u64) {
    let end = Instant::now() + Duration::from_micros(micros);
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new()?;
    println!(
        "ebbtide demo: {} workers (one per CPU)\n",
        pool.num_workers()
    );

    // 1. spawn + join: a sum of squares in 64 chunks.
    let t = Instant::now();
    let handles: Vec<_> = (0..64u64)
        .map(|chunk| {
            pool.spawn(move || {
                (chunk * 1_000_000..(chunk + 1) * 1_000_000)
                    .map(|x| x % 1_000 * (x % 1_000))
                    .sum::<u64>()
            })
        })
        .collect::<Result<_, _>>()?;
    let total: u64 = handles
        .into_iter()
        .map(|h| h.join())
        .sum::<Result<u64, _>>()?;
    println!("spawn/join: 64 tasks summed {total} in {:?}", t.elapsed());

    // 2. Backpressure: 200 tasks of 200 µs offered at once to 2 workers
    //    with room for 16 waiting.
    println!("\nbackpressure: 200 tasks of 200 µs offered to 2 workers, queue_capacity 16");
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>11} {:>10}",
        "policy", "ran", "rejected", "dropped", "caller-runs", "elapsed"
    );
    for policy in [
        Backpressure::Block,
        Backpressure::Reject,
        Backpressure::DropNewest,
        Backpressure::DropOldest,
        Backpressure::CallerRuns,
    ] {
        let p = Pool::builder()
            .workers(2)
            .queue_capacity(16)
            .backpressure(policy)
            .build()?;
        let ran = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        for _ in 0..200 {
            let ran = Arc::clone(&ran);
            match p.execute(move || {
                busy(200);
                ran.fetch_add(1, Ordering::Relaxed);
            }) {
                Ok(()) => {}
                Err(SubmitError::Full(_)) => {}
                Err(e) => return Err(e.to_string().into()),
            }
        }
        p.wait_idle();
        let c = p.metrics().counts;
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>11} {:>10.1?}",
            format!("{policy:?}"),
            ran.load(Ordering::Relaxed),
            c.rejected,
            c.dropped(),
            c.caller_runs,
            t.elapsed()
        );
        assert_eq!(c.submitted, c.completed + c.rejected + c.dropped());
    }

    // 3. Shutdown with a deadline: 2,000 tasks of 100 µs, 20 ms to drain.
    let p = Pool::builder().workers(2).build()?;
    let handles: Vec<_> = (0..2_000)
        .map(|i| {
            p.spawn(move || {
                busy(100);
                i
            })
        })
        .collect::<Result<_, _>>()?;
    let report = p.shutdown_timeout(Duration::from_millis(20));
    let abandoned = handles.into_iter().filter(|h| h.is_finished()).count();
    println!("\nshutdown_timeout(20 ms) with 2,000 queued tasks of 100 µs:");
    println!("  {report:?}");
    println!(
        "  submitted {} = completed {} + panicked {} + abandoned {} + still running {}",
        report.submitted, report.completed, report.panicked, report.abandoned, report.still_running
    );
    assert_eq!(
        report.submitted,
        report.completed + report.panicked + report.abandoned + report.still_running
    );
    println!("  handles resolved at return: {abandoned} of 2000");
    drop(p);

    println!("\n{}", pool.metrics());
    let report = pool.shutdown();
    println!("main pool shut down: {report:?}");
    Ok(())
}
