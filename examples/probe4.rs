use ebbtide::*;
fn main() {
    let pool = Pool::builder()
        .workers(1)
        .name("we\"ird\\name\nx")
        .build()
        .unwrap();
    pool.task()
        .tenant("ten\"ant\n")
        .spawn(|| 1)
        .unwrap()
        .join()
        .unwrap();
    let m = pool.metrics();
    let text = m.to_prometheus("my-app.x");
    for l in text
        .lines()
        .filter(|l| l.contains("pool=") || l.starts_with("# HELP"))
        .take(6)
    {
        println!("{l}");
    }
    println!("---");
    for l in text.lines().filter(|l| l.contains("tenant")).take(4) {
        println!("{l}");
    }
}
