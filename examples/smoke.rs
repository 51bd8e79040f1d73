use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
static C: AtomicUsize = AtomicUsize::new(0);
fn main() {
    let pool = ebbtide::Pool::builder().workers(2).build().unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..1_000_000 {
            pool.execute(|| {
                C.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        }
        pool.wait_idle();
        println!("{} in {:?}", C.load(Ordering::Relaxed), t.elapsed());
    }
    println!("{} parks={}", pool.metrics(), pool.metrics().counts.parks);
    println!("{:?}", pool.shutdown());
}
