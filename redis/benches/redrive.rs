//! Sending 10,000 dead letters back to their partitions, on a redis-server
//! the bench starts itself, three ways in the same run:
//!
//! - `redrive_all`: pages of 100, each page's atomic redrive scripts in
//!   one round trip;
//! - `redrive(id)` for each ID of a listed page: one round trip a letter;
//! - hand-written: pages of 100 read with `XRANGE`, each page's `XADD`s
//!   and `XDEL`s in one pipeline. No letter is checked before it is
//!   appended, so two such redrivers at once append each letter twice.
//!
//! Each run starts from the same 10,000 dead letters (100 keys, a 64-byte
//! payload each) and checks that every one moved exactly once. Runs
//! alternate the three ways; the medians are printed.
//!
//! `cargo bench -p ebbtide-redis --bench redrive [-- ROUNDS]`

#[path = "../tests/common/mod.rs"]
mod common;

use common::Server;
use ebbtide_redis::{DeadLetters, Stream};
use std::time::Instant;

const LETTERS: usize = 10_000;
const KEYS: usize = 100;
const PARTITIONS: u32 = 16;

/// One way of redriving every dead letter of a stream.
type Way = fn(&Server, &Stream);

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let Some(server) = Server::start() else {
        eprintln!("redis-server is not installed (Debian: apt-get install redis-server)");
        std::process::exit(1);
    };
    let ways: [(&str, Way); 3] = [
        ("redrive_all", |s, stream| {
            let mut dead = DeadLetters::connect(&s.url, stream.clone()).unwrap();
            let done = dead.redrive_all().unwrap();
            assert_eq!((done.sent, done.kept.len()), (LETTERS as u64, 0));
        }),
        ("redrive(id), one by one", |s, stream| {
            let mut dead = DeadLetters::connect(&s.url, stream.clone()).unwrap();
            loop {
                let page = dead.list(None, 100).unwrap();
                if page.is_empty() {
                    break;
                }
                for l in &page {
                    assert!(dead.redrive(l.id()).unwrap().is_some());
                }
            }
        }),
        ("hand-written XADD + XDEL", |s, stream| {
            hand_written(s, stream)
        }),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    for round in 0..rounds {
        for (i, (name, way)) in ways.iter().enumerate() {
            let stream = Stream::new(format!("redrive-{round}-{i}"))
                .unwrap()
                .partitions(PARTITIONS)
                .unwrap();
            let mut con = server.con();
            fill(&mut con, &stream);
            let t = Instant::now();
            way(&server, &stream);
            let secs = t.elapsed().as_secs_f64();
            check(&mut con, &stream);
            println!(
                "round {round} {name:<26} {:>8.1} ms  {:>9.0} letters/s",
                secs * 1e3,
                LETTERS as f64 / secs
            );
            times[i].push(secs);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(times[2].clone());
    println!("\nmedians over {rounds} rounds ({LETTERS} dead letters, {KEYS} keys, {PARTITIONS} partitions):");
    println!("| way | time | letters/s | × hand-written time |");
    println!("|---|---|---|---|");
    for ((name, _), t) in ways.iter().zip(&times) {
        let m = median(t.clone());
        println!(
            "| {name} | {:.1} ms | {:.0} | {:.2}× |",
            m * 1e3,
            LETTERS as f64 / m,
            m / base
        );
    }
}

/// The dead letters a consumer writes: where from, why, then the message.
fn fill(con: &mut redis::Connection, stream: &Stream) {
    redis::cmd("HSET")
        .arg(format!("{}:meta", stream.name()))
        .arg("partitions")
        .arg(PARTITIONS)
        .query::<()>(con)
        .unwrap();
    let payload = vec![b'x'; 64];
    for chunk in (0..LETTERS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let key = format!("k{}", i % KEYS);
            pipe.cmd("XADD")
                .arg(stream.dead_letter_stream())
                .arg("*")
                .arg("source")
                .arg(stream.partition_stream(stream.partition_of(key.as_bytes())))
                .arg("id")
                .arg(format!("{i}-0"))
                .arg("error")
                .arg("it failed")
                .arg("attempts")
                .arg(5)
                .arg("consumer")
                .arg("c")
                .arg("key")
                .arg(&key)
                .arg("payload")
                .arg(&payload)
                .arg("redelivered")
                .arg(0)
                .ignore();
        }
        pipe.query::<()>(con).unwrap();
    }
}

/// Every letter moved once: none left, each partition holding its keys'.
fn check(con: &mut redis::Connection, stream: &Stream) {
    let left: u64 = redis::cmd("XLEN")
        .arg(stream.dead_letter_stream())
        .query(con)
        .unwrap();
    assert_eq!(left, 0);
    let mut want = vec![0u64; PARTITIONS as usize];
    for i in 0..LETTERS {
        want[stream.partition_of(format!("k{}", i % KEYS).as_bytes()) as usize] += 1;
    }
    for (p, &n) in want.iter().enumerate() {
        let len: u64 = redis::cmd("XLEN")
            .arg(stream.partition_stream(p as u32))
            .query(con)
            .unwrap();
        assert_eq!(len, n, "partition {p}");
    }
}

/// What one writes without the adapter: read a page, append its messages
/// and delete its letters in one pipeline.
fn hand_written(server: &Server, stream: &Stream) {
    let mut con = server.con();
    let dead = stream.dead_letter_stream();
    loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&dead)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(100)
            .query(&mut con)
            .unwrap();
        if page.ids.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for e in &page.ids {
            let field = |f: &str| match e.map.get(f) {
                Some(redis::Value::BulkString(b)) => b.clone(),
                other => panic!("{f}: {other:?}"),
            };
            let key = field("key");
            pipe.cmd("XADD")
                .arg(stream.partition_stream(stream.partition_of(&key)))
                .arg("*")
                .arg("key")
                .arg(key)
                .arg("payload")
                .arg(field("payload"))
                .ignore();
            pipe.cmd("XDEL").arg(&dead).arg(&e.id).ignore();
        }
        pipe.query::<()>(&mut con).unwrap();
    }
}
