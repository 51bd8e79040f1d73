use std::time::Instant;
fn fib(n: u32) -> u64 {
    if n < 2 {
        return n as u64;
    }
    let (a, b) = ebbtide::join(|| fib(n - 1), || fib(n - 2));
    a + b
}
fn main() {
    let pool = ebbtide::Pool::builder().workers(2).build().unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let r = pool.install(|| fib(30));
        println!("fib(30)={} in {:?}", r, t.elapsed());
    }
    let rp = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    fn rfib(n: u32) -> u64 {
        if n < 2 {
            return n as u64;
        }
        let (a, b) = rayon::join(|| rfib(n - 1), || rfib(n - 2));
        a + b
    }
    for _ in 0..3 {
        let t = Instant::now();
        let r = rp.install(|| rfib(30));
        println!("rayon fib(30)={} in {:?}", r, t.elapsed());
    }
    let mut v = vec![0u64; 100_000];
    let t = Instant::now();
    pool.scope(|s| {
        for (i, x) in v.iter_mut().enumerate() {
            s.execute(move || *x = i as u64 * 2);
        }
    });
    println!(
        "scope 100k {:?} ok={}",
        t.elapsed(),
        v.iter().enumerate().all(|(i, &x)| x == i as u64 * 2)
    );
    let p2 = ebbtide::Pool::builder().workers(1).build().unwrap();
    let p1 = ebbtide::Pool::builder().workers(1).build().unwrap();
    let h2 = p2.handle();
    let h1 = p1.handle();
    let r = p1.install(|| h2.install(|| h1.install(|| 5) + 1) + 1);
    println!("cross install {r}");
    println!("{}", pool.metrics());
}
