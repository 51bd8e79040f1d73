use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
fn main() {
    let pool = ebbtide::Pool::builder().workers(2).build().unwrap();
    let c = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    for _ in 0..1_000_000 {
        let c = c.clone();
        pool.execute(move || { c.fetch_add(1, Ordering::Relaxed); }).unwrap();
    }
    pool.wait_idle();
    println!("{} in {:?}", c.load(Ordering::Relaxed), t.elapsed());
    let h = pool.spawn(|| 42).unwrap();
    println!("{:?}", h.join());
    println!("{}", pool.metrics());
    println!("{:?}", pool.shutdown());
}
