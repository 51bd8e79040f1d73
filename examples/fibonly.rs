fn fib(n: u32) -> u64 {
    if n < 2 {
        return n as u64;
    }
    let (a, b) = ebbtide::join(|| fib(n - 1), || fib(n - 2));
    a + b
}
fn rfib(n: u32) -> u64 {
    if n < 2 {
        return n as u64;
    }
    let (a, b) = rayon::join(|| rfib(n - 1), || rfib(n - 2));
    a + b
}
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let mut s = 0;
    if which != "rayon" {
        let pool = ebbtide::Pool::builder().workers(2).build().unwrap();
        let t = std::time::Instant::now();
        for _ in 0..40 {
            s += pool.install(|| fib(30));
        }
        println!("ebbtide {:?} per fib", t.elapsed() / 40);
        let m = pool.metrics();
        println!("steals {} parks {}", m.counts.steals, m.counts.parks);
    }
    if which != "ebbtide" {
        let rp = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let t = std::time::Instant::now();
        for _ in 0..40 {
            s += rp.install(|| rfib(30));
        }
        println!("rayon: {:?} per fib {s}", t.elapsed() / 40);
    }
}
