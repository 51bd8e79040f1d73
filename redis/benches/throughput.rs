//! Throughput and end-to-end latency of 1, 2 and 3 ebbtide consumer
//! processes against a plain consumer (one thread: `XREADGROUP`, handle,
//! `XACK`, one message at a time), all in the same run, on a redis-server
//! the bench starts itself. Every message's task blocks 1 ms.
//!
//! `cargo bench -p ebbtide-redis --bench throughput [-- ROUNDS]`
//!
//! - Throughput: a burst of messages sent at once, timed from the first
//!   send until the last is acked.
//! - Latency: messages sent at a steady 400/s for 5 s, each timed from
//!   its send to its handler's end.
//! - Entries left: what the burst's stream still holds in Redis once the
//!   steady phase is over (the plain consumer, and one ebbtide process
//!   run with `trim_acked(None)`, keep every acked entry; the others trim
//!   once a second).
//!
//! Rounds alternate the five consumers; the medians are printed.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{acked, pending_now, Proc, Server, TempDir};
use ebbtide_redis::{Consumer, Producer, Stream};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WORK: Duration = Duration::from_millis(1);
const PARTITIONS: u32 = 16;
const KEYS: usize = 1000;
const STEADY_RATE: f64 = 400.0;
const STEADY_FOR: Duration = Duration::from_secs(5);

fn main() {
    if std::env::var("EBBTIDE_CHILD").as_deref() == Ok("consumer") {
        child();
        return;
    }
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let Some(server) = Server::start() else {
        eprintln!("redis-server is not installed (Debian: apt-get install redis-server)");
        std::process::exit(1);
    };
    // (consumer processes, whether they keep acked entries)
    let kinds = [
        ("plain", 0, true),
        ("ebbtide x1", 1, false),
        ("ebbtide x1, acks kept", 1, true),
        ("ebbtide x2", 2, false),
        ("ebbtide x3", 3, false),
    ];
    let mut results: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); kinds.len()];
    let mut run = 0;
    for round in 0..rounds {
        for (i, &(kind, procs, keep)) in kinds.iter().enumerate() {
            run += 1;
            let r = if procs == 0 {
                plain(&server, run)
            } else {
                ebbtide(&server, run, procs, keep)
            };
            println!(
                "round {round} {kind:<21} {:>8.0} msg/s   p50 {:>7.2} ms   p99 {:>7.2} ms   {:>6.0} left",
                r.0, r.1, r.2, r.3
            );
            results[i].push(r);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("\nmedians over {rounds} rounds (1 ms tasks, {PARTITIONS} partitions, {KEYS} keys):");
    println!("| consumer | throughput (msg/s) | × plain | latency p50 | p99 | burst entries left in Redis |");
    println!("|---|---|---|---|---|---|");
    let base = median(results[0].iter().map(|r| r.0).collect());
    for ((kind, ..), rs) in kinds.iter().zip(&results) {
        let tput = median(rs.iter().map(|r| r.0).collect());
        println!(
            "| {kind} | {tput:.0} | {:.1}× | {:.2} ms | {:.2} ms | {:.0} |",
            tput / base,
            median(rs.iter().map(|r| r.1).collect()),
            median(rs.iter().map(|r| r.2).collect()),
            median(rs.iter().map(|r| r.3).collect())
        );
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

/// Sends `n` messages, in chunks, at `rate` per second if given.
fn send(url: &str, stream: &Stream, n: usize, rate: Option<f64>) {
    let mut producer = Producer::connect(url, stream.clone()).expect("a producer");
    let start = Instant::now();
    let chunk = if rate.is_some() { 4 } else { 1000 };
    let mut sent = 0;
    while sent < n {
        let m = chunk.min(n - sent);
        producer
            .send_batch((sent..sent + m).map(|i| (format!("k{}", i % KEYS), i.to_string())))
            .expect("send");
        sent += m;
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / r);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
        }
    }
}

fn wait_acked(server: &Server, stream: &Stream, total: u64) {
    let mut con = server.con();
    let deadline = Instant::now() + Duration::from_secs(300);
    while acked(&mut con, stream.name(), PARTITIONS, "g") < total
        || pending_now(&mut con, stream.name(), PARTITIONS, "g") > 0
    {
        assert!(Instant::now() < deadline, "not all acked within 300 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Latencies (µs) of `stream`'s messages, from the files of `dir`
/// (lines `STREAM MICROSECONDS`).
fn latencies(dir: &TempDir, stream: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir.path).expect("a directory") {
        let text = std::fs::read_to_string(e.expect("an entry").path()).expect("a file");
        out.extend(
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(s, _)| *s == stream)
                .filter_map(|(_, v)| v.parse::<u64>().ok()),
        );
    }
    out.sort_unstable();
    out
}

fn pct(v: &[u64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

/// Throughput of a burst, then latency at a steady rate: (msg/s, p50 ms,
/// p99 ms).
fn measure(
    server: &Server,
    burst: usize,
    dir: &TempDir,
    stream_of: impl Fn(&str) -> Stream,
) -> (f64, f64, f64, f64) {
    let burst_stream = stream_of("burst");
    let start = Instant::now();
    send(&server.url, &burst_stream, burst, None);
    wait_acked(server, &burst_stream, burst as u64);
    let tput = burst as f64 / start.elapsed().as_secs_f64();
    let steady = stream_of("steady");
    let n = (STEADY_RATE * STEADY_FOR.as_secs_f64()) as usize;
    send(&server.url, &steady, n, Some(STEADY_RATE));
    wait_acked(server, &steady, n as u64);
    // Every handler ended before its ack; give the children's buffered
    // records a moment to reach their files.
    std::thread::sleep(Duration::from_millis(100));
    let lat = latencies(dir, steady.name());
    // What the burst left in Redis, its acks 5 s old.
    let mut con = server.con();
    let left: u64 = (0..PARTITIONS)
        .map(|p| {
            redis::cmd("XLEN")
                .arg(burst_stream.partition_stream(p))
                .query::<u64>(&mut con)
                .expect("XLEN")
        })
        .sum();
    (tput, pct(&lat, 0.5), pct(&lat, 0.99), left as f64)
}

fn ebbtide(server: &Server, run: usize, consumers: usize, keep: bool) -> (f64, f64, f64, f64) {
    let dir = TempDir::new("bench");
    let name = format!("e{run}");
    // One consumer group over two streams (burst and steady): each child
    // consumes both, in turn.
    let procs: Vec<Proc> = (0..consumers)
        .map(|i| {
            Proc::spawn(
                &format!("{name}-{i}"),
                &[
                    ("URL", server.url.clone()),
                    ("STREAMS", format!("{name}-burst,{name}-steady")),
                    ("KEEP_ACKED", u8::from(keep).to_string()),
                    (
                        "RECORD",
                        dir.path.join(format!("{i}.log")).display().to_string(),
                    ),
                ],
            )
        })
        .collect();
    let stream_of = |phase: &str| {
        Stream::new(format!("{name}-{phase}"))
            .unwrap()
            .partitions(PARTITIONS)
            .unwrap()
    };
    let mut con = server.con();
    for phase in ["burst", "steady"] {
        let s = stream_of(phase);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let owners: Vec<Option<String>> = (0..PARTITIONS)
                .map(|p| {
                    redis::cmd("GET")
                        .arg(format!("{}:lease:g:{p}", s.name()))
                        .query(&mut con)
                        .expect("GET")
                })
                .collect();
            let distinct: std::collections::HashSet<_> = owners.iter().flatten().collect();
            if owners.iter().all(Option::is_some) && distinct.len() == consumers {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "consumers did not share the partitions"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let r = measure(server, 20_000, &dir, stream_of);
    for p in procs {
        p.finish();
    }
    r
}

fn child() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("child: {k} is not set"));
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    std::thread::spawn(move || {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        s.store(true, SeqCst);
    });
    let record = Arc::new(Mutex::new(std::io::BufWriter::new(
        std::fs::File::create(var("RECORD")).expect("the record file"),
    )));
    let consumers: Vec<Consumer> = var("STREAMS")
        .split(',')
        .map(|name| {
            let record = Arc::clone(&record);
            let stream = name.to_string();
            Consumer::builder(
                var("URL"),
                Stream::new(name).unwrap().partitions(PARTITIONS).unwrap(),
            )
            .group("g")
            .lease_ttl(Duration::from_secs(2))
            .trim_acked((var("KEEP_ACKED") == "0").then_some(Duration::from_secs(1)))
            .start(move |m| -> Result<(), String> {
                std::thread::sleep(WORK);
                let sent = m.sent_at().map_or(0, |t| {
                    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
                });
                let _ = writeln!(
                    record.lock().unwrap(),
                    "{stream} {}",
                    now_us().saturating_sub(sent)
                );
                Ok(())
            })
            .expect("start a consumer")
        })
        .collect();
    println!("ready");
    // The parent reads the latencies once everything is acked: flush often.
    while !stop.load(SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        let _ = record.lock().unwrap().flush();
    }
    for c in consumers {
        c.stop().expect("a clean stop");
    }
    let _ = record.lock().unwrap().flush();
    println!("stopped");
}

/// One thread: read one message, handle it, ack it.
fn plain(server: &Server, run: usize) -> (f64, f64, f64, f64) {
    let dir = TempDir::new("plain");
    let name = format!("p{run}");
    let stream_of = |phase: &str| {
        Stream::new(format!("{name}-{phase}"))
            .unwrap()
            .partitions(PARTITIONS)
            .unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = ["burst", "steady"]
        .into_iter()
        .map(|phase| {
            let (url, s, stop) = (server.url.clone(), stream_of(phase), Arc::clone(&stop));
            let path = dir.path.join(format!("{phase}.log"));
            std::thread::spawn(move || plain_consumer(&url, &s, &stop, &path))
        })
        .collect();
    let r = measure(server, 2_000, &dir, stream_of);
    stop.store(true, SeqCst);
    for t in threads {
        t.join().expect("the plain consumer");
    }
    r
}

fn plain_consumer(url: &str, stream: &Stream, stop: &AtomicBool, path: &std::path::Path) {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = (0..PARTITIONS)
        .map(|p| stream.partition_stream(p))
        .collect();
    for k in &keys {
        let _: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(k)
            .arg("g")
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut con);
    }
    while !stop.load(SeqCst) {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg("g")
            .arg("plain")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(50)
            .arg("STREAMS");
        cmd.arg(&keys);
        for _ in &keys {
            cmd.arg(">");
        }
        let reply: redis::streams::StreamReadReply = match cmd.query(&mut con) {
            Ok(r) => r,
            Err(_) => continue,
        };
        for key in reply.keys {
            for entry in key.ids {
                std::thread::sleep(WORK);
                let sent: u64 = entry.get("sent_us").unwrap_or(0);
                let lat = now_us().saturating_sub(sent);
                let _: () = redis::cmd("XACK")
                    .arg(&key.key)
                    .arg("g")
                    .arg(&entry.id)
                    .query(&mut con)
                    .unwrap();
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                let _ = writeln!(f, "{} {lat}", stream.name());
            }
        }
    }
}
