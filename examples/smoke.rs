use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
static C: AtomicUsize = AtomicUsize::new(0);
fn run(label: &str, b: ebbtide::Builder) {
    let pool = b.workers(2).build().unwrap();
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..1_000_000 {
            pool.execute(|| {
                C.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        }
        pool.wait_idle();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("{label}: best {best:.1} ms");
}
fn main() {
    for _ in 0..2 {
        run("full", ebbtide::Pool::builder());
        run("histograms off", ebbtide::Pool::builder().histograms(false));
        run("metrics off", ebbtide::Pool::builder().metrics(false));
    }
}
