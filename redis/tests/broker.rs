//! The adapter against a real redis-server that the test starts itself:
//! a consumer killed mid-run, consumers joining and leaving, a consumer
//! paused past its lease's margin, poison messages, backpressure, and bad
//! input. Consumer processes are this executable run again in child mode.
//!
//! Run with `cargo test -p ebbtide-redis --test broker [-- NAME…]`. Without
//! redis-server installed it says so and skips, unless
//! `EBBTIDE_REQUIRE_REDIS` is set (as under CI), when that fails the run.

mod common;

use common::{acked, drop_clients, entries, pending_now, Proc, Server, TempDir};
use ebbtide_redis::{Consumer, DeadLetter, DeadLetters, Error, Producer, Stream};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Scenario = fn(&Server);

fn main() {
    if std::env::var("EBBTIDE_CHILD").as_deref() == Ok("consumer") {
        child();
        return;
    }
    let scenarios: [(&str, Scenario); 16] = [
        ("bad_input", bad_input),
        ("dead_letters", dead_letters),
        ("dead_letter_cap", dead_letter_cap),
        ("trim", trim),
        ("broker_gone", broker_gone),
        ("backpressure", backpressure),
        ("poison", poison),
        ("graceful_scaling", graceful_scaling),
        ("pause", pause),
        ("dropped_connections", dropped_connections),
        ("dropped_acks", dropped_acks),
        ("clients_reconnect", clients_reconnect),
        ("own_leases", own_leases),
        ("unbounded_drain", unbounded_drain),
        ("broker_restart", broker_restart),
        ("crash", crash),
    ];
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if std::env::args().any(|a| a == "--list") {
        for (name, _) in scenarios {
            println!("{name}: test");
        }
        return;
    }
    let Some(server) = Server::start() else {
        if common::required() {
            eprintln!("redis-server is not installed, and EBBTIDE_REQUIRE_REDIS is set: failing");
            std::process::exit(1);
        }
        println!("SKIPPED: redis-server is not installed (Debian: apt-get install redis-server)");
        return;
    };
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, run) in scenarios {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        println!("test {name} ...");
        let t = Instant::now();
        match std::panic::catch_unwind(|| run(&server)) {
            Ok(()) => println!("test {name} ... ok ({:.1} s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(name);
            }
        }
    }
    println!(
        "\ntest result: {} passed; {} failed",
        ran - failed.len(),
        failed.len()
    );
    // `exit` runs no destructor: stop the server first.
    drop(server);
    if !failed.is_empty() {
        println!("failed: {failed:?}");
        std::process::exit(101);
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

/// Waits for `cond`, failing after `within`.
fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `keys × per_key` messages: key `k{i}`, payload its sequence
/// number 1..=per_key, in sequence order.
fn produce(server: &Server, stream: &Stream, keys: usize, per_key: usize) {
    produce_seqs(server, stream, keys, 1..=per_key);
}

/// Sequence numbers `seqs` of every key, each round of keys in turn.
fn produce_seqs(
    server: &Server,
    stream: &Stream,
    keys: usize,
    seqs: std::ops::RangeInclusive<usize>,
) {
    let mut producer = Producer::connect(&server.url, stream.clone()).expect("a producer");
    let expected = keys * seqs.clone().count();
    let items = seqs.flat_map(|seq| (0..keys).map(move |k| (format!("k{k}"), seq.to_string())));
    assert_eq!(producer.send_batch(items).expect("send"), expected);
}

// ---------------------------------------------------------------------------
// The consumer process.

fn child() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("child: {k} is not set"));
    let num = |k: &str| {
        var(k)
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("child: {k} is not a number"))
    };
    let name = var("CHILD_NAME");
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    ctrlc::set_handler(move || s.store(true, SeqCst)).expect("a SIGTERM handler");
    let s = Arc::clone(&stop);
    std::thread::spawn(move || {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        s.store(true, SeqCst);
    });
    let record = Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(var("RECORD"))
            .expect("the record file"),
    );
    let delay = Duration::from_micros(num("DELAY_US"));
    let stream = Stream::new(var("STREAM"))
        .and_then(|s| s.partitions(num("PARTITIONS") as u32))
        .expect("the stream");
    let pool = ebbtide::Pool::builder()
        .workers(num("WORKERS") as usize)
        .build()
        .expect("a pool");
    let ttl = Duration::from_millis(num("TTL_MS"));
    let me = name.clone();
    let consumer = Consumer::builder(var("URL"), stream)
        .group(var("GROUP"))
        .name(&name)
        .in_flight(num("IN_FLIGHT") as usize)
        .in_flight_per_partition(num("PER_PARTITION") as usize)
        .lease_ttl(ttl)
        .block((ttl / 5).min(Duration::from_millis(100)))
        .pool(pool.handle())
        .start(move |m| -> Result<(), String> {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            let line = format!(
                "{} {} {} {}\n",
                String::from_utf8_lossy(m.key()),
                String::from_utf8_lossy(m.payload()),
                now_ns(),
                me
            );
            // One write per line, appended: a kill loses no whole line.
            record
                .lock()
                .unwrap()
                .write_all(line.as_bytes())
                .map_err(|e| e.to_string())
        })
        .expect("start the consumer");
    println!("ready");
    while !stop.load(SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let m = consumer.stop().expect("a clean stop");
    let t = m.total();
    println!(
        "stopped acked={} redelivered={} acquired={} released={} lost={}",
        t.acked, t.redelivered, t.acquired, t.released, t.lost
    );
    pool.shutdown();
}

fn spawn(server: &Server, dir: &TempDir, name: &str, stream: &Stream, opts: &ChildOpts) -> Proc {
    Proc::spawn(
        name,
        &[
            ("URL", server.url.clone()),
            ("STREAM", stream.name().to_string()),
            ("PARTITIONS", stream.partition_count().to_string()),
            ("GROUP", "g".into()),
            ("IN_FLIGHT", opts.in_flight.to_string()),
            ("PER_PARTITION", opts.per_partition.to_string()),
            ("TTL_MS", opts.ttl_ms.to_string()),
            ("DELAY_US", opts.delay_us.to_string()),
            ("WORKERS", opts.workers.to_string()),
            (
                "RECORD",
                dir.path.join(format!("{name}.log")).display().to_string(),
            ),
        ],
    )
}

struct ChildOpts {
    in_flight: usize,
    per_partition: usize,
    ttl_ms: u64,
    delay_us: u64,
    workers: usize,
}

/// Lease owners of the stream's partitions now.
fn owners(con: &mut redis::Connection, stream: &Stream) -> Vec<Option<String>> {
    (0..stream.partition_count())
        .map(|p| {
            redis::cmd("GET")
                .arg(format!("{}:lease:g:{p}", stream.name()))
                .query::<Option<String>>(con)
                .expect("GET a lease")
        })
        .collect()
}

fn wait_for_owners(con: &mut redis::Connection, stream: &Stream, n: usize) {
    wait_until(
        &format!("{n} consumers holding every partition"),
        Duration::from_secs(60),
        || {
            let o = owners(con, stream);
            let distinct: HashSet<_> = o.iter().flatten().collect();
            o.iter().all(Option::is_some) && distinct.len() == n
        },
    );
}

/// One processing record: (key, seq, time, consumer).
struct Record {
    key: String,
    seq: u32,
    at: u128,
    by: String,
}

fn records(dir: &TempDir) -> Vec<Record> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir.path).expect("the record directory") {
        let text = std::fs::read_to_string(entry.expect("an entry").path()).expect("a record file");
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            // A line cut by a kill is not a processed message's record.
            if f.len() != 4 {
                continue;
            }
            let (Ok(seq), Ok(at)) = (f[1].parse(), f[2].parse()) else {
                continue;
            };
            out.push(Record {
                key: f[0].into(),
                seq,
                at,
                by: f[3].into(),
            });
        }
    }
    out.sort_by_key(|r| r.at);
    out
}

/// Checks every (key, seq) was processed and, per key, in order: each
/// record is the next sequence number, or (only where `replay_after_kill`
/// names the killed consumer) a return to an earlier one right after that
/// consumer's last record, replaying an unacked suffix. Returns the
/// number of duplicates.
/// Every message of `keys` keys × `per_key` ran exactly once and in its
/// key's order, by the records the consumers left in `dir`.
fn exactly_once_in_order(dir: &TempDir, keys: usize, per_key: u32) {
    let recs = records(dir);
    let dups = check_order(&recs, keys, per_key, None);
    assert_eq!(
        (recs.len(), dups),
        (keys * per_key as usize, 0),
        "every message exactly once"
    );
}

fn check_order(recs: &[Record], keys: usize, per_key: u32, killed: Option<&str>) -> usize {
    let mut by_key: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in recs {
        by_key.entry(&r.key).or_default().push(r);
    }
    assert_eq!(by_key.len(), keys, "keys processed");
    let mut duplicates = 0;
    for (key, rs) in &by_key {
        let mut max = 0;
        let mut prev: Option<&Record> = None;
        for r in rs {
            let next = prev.map_or(1, |p| p.seq + 1);
            if r.seq != next {
                let replay = prev.is_some_and(|p| Some(p.by.as_str()) == killed && r.by != p.by)
                    && r.seq <= max;
                assert!(
                    replay,
                    "key {key}: {} after {:?} by {} (a gap or a reordering, not a replay of an unacked suffix)",
                    r.seq,
                    prev.map(|p| (p.seq, &p.by)),
                    r.by
                );
            }
            if r.seq <= max {
                duplicates += 1;
            }
            max = max.max(r.seq);
            prev = Some(r);
        }
        assert_eq!(
            max, per_key,
            "key {key}: the last sequence number processed"
        );
        let seen: HashSet<u32> = rs.iter().map(|r| r.seq).collect();
        assert_eq!(seen.len(), per_key as usize, "key {key}: lost messages");
    }
    duplicates
}

fn all_acked(server: &Server, stream: &Stream, total: u64, within: Duration) {
    all_acked_by(server, stream, "g", total, within);
}

fn all_acked_by(server: &Server, stream: &Stream, group: &str, total: u64, within: Duration) {
    let mut con = server.con();
    let p = stream.partition_count();
    wait_until(
        &format!("{total} messages acked by {group}"),
        within,
        || {
            acked(&mut con, stream.name(), p, group) == total
                && pending_now(&mut con, stream.name(), p, group) == 0
        },
    );
}

/// Entries in the stream's partitions, in all.
fn stream_len(con: &mut redis::Connection, stream: &Stream) -> u64 {
    (0..stream.partition_count())
        .map(|p| {
            redis::cmd("XLEN")
                .arg(stream.partition_stream(p))
                .query::<u64>(con)
                .unwrap()
        })
        .sum()
}

// ---------------------------------------------------------------------------
// Scenarios.

/// Acked entries are trimmed once every group is done with them: a group
/// that has read nothing keeps them all; once it has read and acked them
/// too, none is left. A consumer that does not trim leaves them.
fn trim(server: &Server) {
    let stream = Stream::new("trim").unwrap().partitions(4).unwrap();
    let mut con = server.con();
    // A second group, from the start, before anything is sent.
    for p in 0..stream.partition_count() {
        let () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream.partition_stream(p))
            .arg("other")
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut con)
            .unwrap();
    }
    produce(server, &stream, 40, 10);
    // `acked_so_far`: the group's acks, counted from its creation, once
    // this run is done.
    let consume = |group: &str, every: Option<Duration>, acked_so_far: u64| {
        let ran = Arc::new(AtomicU64::new(0));
        let r = Arc::clone(&ran);
        let consumer = Consumer::builder(&server.url, stream.clone())
            .group(group)
            .trim_acked(every)
            .start(move |_m| -> Result<(), String> {
                r.fetch_add(1, SeqCst);
                Ok(())
            })
            .unwrap();
        all_acked_by(
            server,
            &stream,
            group,
            acked_so_far,
            Duration::from_secs(60),
        );
        let m = consumer.stop().unwrap().total();
        assert_eq!(ran.load(SeqCst), 400, "group {group}: messages run");
        m
    };
    // "g" reads and acks everything; "other" has read nothing yet.
    let g = consume("g", Some(Duration::ZERO), 400);
    assert_eq!((g.acked, g.trimmed), (400, 0));
    assert_eq!(stream_len(&mut con, &stream), 400);
    // A third group, not trimming, reads everything: nothing is trimmed.
    let third = consume("third", None, 400);
    assert_eq!((third.acked, third.trimmed), (400, 0));
    assert_eq!(stream_len(&mut con, &stream), 400);
    // "other" catches up: now every group is done with every entry.
    let other = consume("other", Some(Duration::ZERO), 400);
    assert_eq!((other.acked, other.trimmed), (400, 400));
    assert_eq!(stream_len(&mut con, &stream), 0);
    // Trimming read entries leaves the groups' lag known: 0.
    for group in ["g", "other", "third"] {
        for p in 0..stream.partition_count() {
            let lag = common::group_info(&mut con, &stream.partition_stream(p), group, "lag");
            assert_eq!(lag, Some(0), "{group}, partition {p}: lag");
        }
    }
    // What comes later is trimmed as the slowest group gets done with it.
    produce(server, &stream, 40, 10);
    let other = consume("other", Some(Duration::ZERO), 800);
    assert_eq!((other.acked, other.trimmed), (400, 0));
    assert_eq!(stream_len(&mut con, &stream), 400);
    let third = consume("third", None, 800);
    assert_eq!(third.trimmed, 0);
    let g = consume("g", Some(Duration::ZERO), 800);
    assert_eq!((g.acked, g.trimmed), (400, 400));
    assert_eq!(stream_len(&mut con, &stream), 0);
    println!("  trim: entries kept until the slowest of three groups was done, then trimmed");
}

/// 100,000 messages over 1,000 keys, 16 partitions, 3 consumer processes;
/// one is SIGKILLed at 30,000 acked. Nothing is lost, order holds except
/// for replays, and the duplicates are at most the killed one's in-flight
/// cap.
fn crash(server: &Server) {
    let stream = Stream::new("crash").unwrap().partitions(16).unwrap();
    let dir = TempDir::new("crash");
    // Leases of 5 s, the default: the killed consumer's partitions wait
    // that long for a new owner, and the survivors, which must lose none,
    // may go unscheduled for seconds on a loaded machine.
    let opts = ChildOpts {
        in_flight: 128,
        per_partition: 32,
        ttl_ms: 5_000,
        delay_us: 0,
        workers: 4,
    };
    let mut procs: Vec<Proc> = (0..3)
        .map(|i| spawn(server, &dir, &format!("c{i}"), &stream, &opts))
        .collect();
    let mut con = server.con();
    wait_for_owners(&mut con, &stream, 3);
    let producer = {
        let url = server.url.clone();
        let s = stream.clone();
        std::thread::spawn(move || {
            let mut producer = Producer::connect(&url, s).expect("a producer");
            let items = (1..=100)
                .flat_map(|seq| (0..1000).map(move |k| (format!("k{k}"), seq.to_string())));
            producer.send_batch(items).expect("send")
        })
    };
    wait_until("30,000 acked", Duration::from_secs(60), || {
        acked(&mut con, "crash", 16, "g") >= 30_000
    });
    procs[0].kill();
    let at_kill = acked(&mut con, "crash", 16, "g");
    assert_eq!(producer.join().expect("the producer"), 100_000);
    all_acked(server, &stream, 100_000, Duration::from_secs(80));
    for p in procs.drain(1..) {
        let name = p.name.clone();
        let line = p.finish();
        println!("  {name}: {line}");
        assert!(line.contains("lost=0"), "a survivor lost a lease: {line}");
    }
    let recs = records(&dir);
    let dups = check_order(&recs, 1000, 100, Some("c0"));
    println!(
        "  crash: killed at {at_kill} acked; 100,000 messages, {} processed, 0 lost, {dups} duplicates (bound: {})",
        recs.len(),
        opts.in_flight
    );
    assert_eq!(recs.len(), 100_000 + dups);
    assert!(
        dups <= opts.in_flight,
        "{dups} duplicates over the killed consumer's in-flight cap"
    );
    let mut con = server.con();
    assert_eq!(pending_now(&mut con, "crash", 16, "g"), 0);
    lag_is_zero(&mut con, &stream);
}

fn lag_is_zero(con: &mut redis::Connection, stream: &Stream) {
    for p in 0..stream.partition_count() {
        let lag = common::group_info(con, &stream.partition_stream(p), "g", "lag");
        assert_eq!(lag, Some(0), "partition {p}: lag");
    }
}

/// Two consumers; a third joins at 30 %; one is stopped with SIGTERM at
/// 60 %: nothing lost, nothing twice, order held.
fn graceful_scaling(server: &Server) {
    let stream = Stream::new("graceful").unwrap().partitions(16).unwrap();
    let dir = TempDir::new("graceful");
    // Leases of 5 s, the default: every hand-off here is graceful, so none
    // may lapse, even where a loaded machine leaves a process unscheduled
    // for a second (a lapsed lease allows a replay, as after a crash).
    let opts = ChildOpts {
        in_flight: 128,
        per_partition: 32,
        ttl_ms: 5_000,
        delay_us: 1000,
        workers: 8,
    };
    let mut a = spawn(server, &dir, "a", &stream, &opts);
    let b = spawn(server, &dir, "b", &stream, &opts);
    let mut con = server.con();
    wait_for_owners(&mut con, &stream, 2);
    let total = 40_000u64;
    // The first 60 messages of each key now, the rest once the newcomer
    // holds its share: it then has work whatever its start-up took.
    produce_seqs(server, &stream, 400, 1..=60);
    wait_until("30 % acked", Duration::from_secs(60), || {
        acked(&mut con, "graceful", 16, "g") >= total * 3 / 10
    });
    let c = spawn(server, &dir, "c", &stream, &opts);
    wait_for_owners(&mut con, &stream, 3);
    produce_seqs(server, &stream, 400, 61..=100);
    wait_until("60 % acked", Duration::from_secs(60), || {
        acked(&mut con, "graceful", 16, "g") >= total * 6 / 10
    });
    let a_stop = a.terminate();
    all_acked(server, &stream, total, Duration::from_secs(80));
    let (b_stop, c_stop) = (b.finish(), c.finish());
    exactly_once_in_order(&dir, 400, 100);
    let recs = records(&dir);
    let by = |n: &str| recs.iter().filter(|r| r.by == n).count();
    println!(
        "  graceful: a {} (then stopped), b {}, c {} (joined at 30 %); 0 lost, 0 duplicates\n  a: {a_stop}\n  b: {b_stop}\n  c: {c_stop}",
        by("a"),
        by("b"),
        by("c")
    );
    assert!(by("c") > 0, "the consumer that joined took partitions over");
    assert!(
        !a_stop.contains("released=0"),
        "the stopped consumer handed partitions back: {a_stop}"
    );
    for line in [&a_stop, &b_stop, &c_stop] {
        assert!(
            line.contains("lost=0") && line.contains("redelivered=0"),
            "{line}"
        );
    }
}

/// A consumer process paused (SIGSTOP) past its lease's margin but within
/// the lease, then resumed: its renewal comes late, and it reads every
/// partition on. Nothing lost, nothing twice, order held.
fn pause(server: &Server) {
    let stream = Stream::new("pause").unwrap().partitions(4).unwrap();
    let dir = TempDir::new("pause");
    // A lease of 5 s: reads stop starting 1 s before it ends (its
    // margin), and reads block for 100 ms.
    let opts = ChildOpts {
        in_flight: 64,
        per_partition: 16,
        ttl_ms: 5_000,
        delay_us: 0,
        workers: 2,
    };
    let a = spawn(server, &dir, "a", &stream, &opts);
    let mut con = server.con();
    wait_for_owners(&mut con, &stream, 1);
    produce_seqs(server, &stream, 40, 1..=50);
    all_acked(server, &stream, 2_000, Duration::from_secs(60));
    // Right after a renewal (the lease's remaining time near the whole
    // lease), stop the process for 4.2 s: past the margin, so its readers
    // find the lease due when they resume, and 0.8 s before the lease
    // ends in Redis, so the late renewal succeeds.
    let lease = format!("{}:lease:g:0", stream.name());
    wait_until("a renewal", Duration::from_secs(60), || {
        redis::cmd("PTTL")
            .arg(&lease)
            .query::<i64>(&mut con)
            .expect("PTTL")
            >= 4_950
    });
    a.signal("STOP");
    std::thread::sleep(Duration::from_millis(4_200));
    a.signal("CONT");
    produce_seqs(server, &stream, 40, 51..=100);
    all_acked(server, &stream, 4_000, Duration::from_secs(60));
    let line = a.finish();
    println!("  pause: stopped 4.2 s of a 5 s lease; 4,000 messages, 0 lost\n  a: {line}");
    // Nothing was in flight during the pause, so nothing is read twice.
    // The late renewal normally succeeds (`lost=0`): the case where
    // readers that had ended left renewed partitions unread. On a loaded
    // machine it may come after the lease ended; the consumer then takes
    // the partitions again, with new readers.
    assert!(line.contains("redelivered=0"), "{line}");
    exactly_once_in_order(&dir, 40, 100);
}

/// The broker drops every client connection, again and again, while a
/// consumer has messages in flight (a failover, a proxy restart, a
/// network blip): the consumer reconnects and goes on, and runs every
/// message exactly once and in order. Each reader, after a failed read,
/// reads again only what was delivered after the last entry it had
/// already handed on; the entries before it are still in flight.
fn dropped_connections(server: &Server) {
    let stream = Stream::new("dropped").unwrap().partitions(4).unwrap();
    let dir = TempDir::new("dropped");
    let opts = ChildOpts {
        in_flight: 64,
        per_partition: 16,
        ttl_ms: 5_000,
        delay_us: 500,
        workers: 4,
    };
    let a = spawn(server, &dir, "a", &stream, &opts);
    let mut con = server.con();
    wait_for_owners(&mut con, &stream, 1);
    produce_seqs(server, &stream, 40, 1..=100);
    let mut kills = 0u64;
    // Drop every connection but this one each 50 ms while the consumer
    // works through the 4,000 messages (2 s of handler time at least).
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(50));
        kills += drop_clients(&mut con);
    }
    all_acked(server, &stream, 4_000, Duration::from_secs(60));
    let line = a.finish();
    println!("  dropped connections: {kills} dropped in 1.5 s; 4,000 messages\n  a: {line}");
    assert!(kills > 0, "connections were dropped");
    // The lease outlives every outage here: nothing is taken over.
    assert!(line.contains("lost=0"), "{line}");
    exactly_once_in_order(&dir, 40, 100);
}

/// Connections dropped every few milliseconds while half the messages go
/// to the dead letters: a dead letter is appended with its entry's ack in
/// one atomic step that does nothing once the entry is acked, so an ack
/// batch sent again after a lost reply appends no letter twice. Every
/// message runs once; exactly the failing ones are dead letters, once each.
fn dropped_acks(server: &Server) {
    let stream = Stream::new("dropped-acks").unwrap().partitions(4).unwrap();
    produce(server, &stream, 400, 10);
    let runs = Arc::new(Mutex::new(HashMap::<(String, u32), u32>::new()));
    let r2 = Arc::clone(&runs);
    let consumer = Consumer::builder(&server.url, stream.clone())
        .group("g")
        .in_flight(64)
        .block(Duration::from_millis(20))
        .retry(ebbtide::RetryPolicy::fixed(Duration::from_millis(1)).max_attempts(1))
        .start(move |m| {
            let key = String::from_utf8_lossy(m.key()).into_owned();
            let seq: u32 = String::from_utf8_lossy(m.payload()).parse().unwrap();
            *r2.lock().unwrap().entry((key, seq)).or_insert(0) += 1;
            // Slow enough that the drops land while messages are in flight.
            std::thread::sleep(Duration::from_micros(200));
            if seq % 2 == 1 {
                Err(format!("odd {seq}"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    // One connection both drops the others and watches the acks. The
    // drops stop after 1,000 rounds (3 s or more), so that a starved
    // consumer still finishes.
    let mut con = server.con();
    let (mut kills, mut rounds) = (0u64, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked(&mut con, stream.name(), 4, "g") < 4_000
        || pending_now(&mut con, stream.name(), 4, "g") > 0
    {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for 4,000 acks"
        );
        rounds += 1;
        if rounds > 1_000 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        kills += drop_clients(&mut con);
        std::thread::sleep(Duration::from_millis(3));
    }
    let m = consumer.stop().unwrap().total();
    assert!(kills > 0, "connections were dropped");
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 4_000, "messages run");
    assert!(runs.values().all(|&n| n == 1), "every message ran once");
    let dead = entries(&mut con, &stream.dead_letter_stream());
    let mut letters = HashMap::<(String, String), u32>::new();
    for (_, f) in &dead {
        assert_eq!(f["error"], format!("odd {}", f["payload"]));
        *letters
            .entry((f["key"].clone(), f["payload"].clone()))
            .or_insert(0) += 1;
    }
    let twice = letters.values().filter(|&&n| n > 1).count();
    assert_eq!(
        (dead.len(), letters.len(), twice),
        (2_000, 2_000, 0),
        "each odd message a dead letter exactly once"
    );
    assert!(letters
        .keys()
        .all(|(_, seq)| seq.parse::<u32>().unwrap() % 2 == 1));
    assert_eq!((m.acked, m.dead_lettered), (4_000, 2_000));
    println!("  dropped acks: {kills} connections dropped; 2,000 dead letters, none twice");
}

/// A producer and a dead-letter client whose connections the broker
/// dropped: the next call fails, naming what it was doing, and the one
/// after connects again and works. Nothing of the failed calls was
/// appended (the broker closed the connections before they were sent).
fn clients_reconnect(server: &Server) {
    let stream = Stream::new("reconnect").unwrap().partitions(2).unwrap();
    let mut producer = Producer::connect(&server.url, stream.clone()).unwrap();
    let mut dead = DeadLetters::connect(&server.url, stream.clone()).unwrap();
    let mut con = server.con();
    let mut drop_all = || drop_clients(&mut con);
    producer.send("k", "1").unwrap();
    assert_eq!(
        drop_all(),
        2,
        "the producer's and the dead letters' connections"
    );
    match producer.send("k", "lost") {
        Err(Error::Redis { doing, .. }) => assert_eq!(doing, "appending a message"),
        other => panic!("a send on a dropped connection: {other:?}"),
    }
    producer.send("k", "2").unwrap();
    assert_eq!(producer.send_batch([("k", "3"), ("j", "1")]).unwrap(), 2);
    match dead.len() {
        Err(Error::Redis { doing, .. }) => {
            assert_eq!(
                doing,
                format!("counting the entries of {}", stream.dead_letter_stream())
            )
        }
        other => panic!("a call on a dropped connection: {other:?}"),
    }
    assert_eq!(dead.len().unwrap(), 0);
    // Again, with a batch.
    assert_eq!(drop_all(), 2);
    assert!(producer.send_batch([("k", "lost")]).is_err());
    assert_eq!(producer.send_batch([("k", "4")]).unwrap(), 1);
    assert!(dead.list(None, 10).is_err());
    assert!(dead.list(None, 10).unwrap().is_empty());
    let mut con = server.con();
    let mut payloads: Vec<String> = (0..2)
        .flat_map(|p| entries(&mut con, &stream.partition_stream(p)))
        .map(|(_, f)| format!("{}{}", f["key"], f["payload"]))
        .collect();
    payloads.sort();
    assert_eq!(payloads, ["j1", "k1", "k2", "k3", "k4"]);
    println!("  clients reconnect: the call after a dropped connection fails, the next one works");
}

/// A consumer takes at once a lease that is already its own: one whose
/// taking succeeded in Redis but whose reply a dropped connection lost, or
/// one an earlier run under the same name held. A lease another consumer
/// holds it leaves alone until that one is gone.
fn own_leases(server: &Server) {
    let stream = Stream::new("own").unwrap().partitions(2).unwrap();
    let mut con = server.con();
    // As an earlier run would have left them: partition 0 held by this
    // consumer's name, partition 1 by another's, each for two minutes.
    let lease = |p: u32| format!("{}:lease:g:{p}", stream.name());
    for (p, holder) in [(0, "r"), (1, "other")] {
        let _: () = redis::cmd("SET")
            .arg(lease(p))
            .arg(holder)
            .arg("PX")
            .arg(120_000)
            .query(&mut con)
            .unwrap();
    }
    produce(server, &stream, 20, 5);
    let on_0 = (0..20)
        .filter(|k| stream.partition_of(format!("k{k}").as_bytes()) == 0)
        .count() as u64
        * 5;
    assert!(on_0 > 0 && on_0 < 100, "both partitions have messages");
    let consumer = Consumer::builder(&server.url, stream.clone())
        .group("g")
        .name("r")
        .start(|_| Ok::<(), String>(()))
        .unwrap();
    // Long before the two minutes are up.
    wait_until(
        "partition 0's messages acked",
        Duration::from_secs(30),
        || acked(&mut con, stream.name(), 2, "g") == on_0,
    );
    let holder = |con: &mut redis::Connection, p: u32| -> Option<String> {
        redis::cmd("GET").arg(lease(p)).query(con).unwrap()
    };
    assert_eq!(holder(&mut con, 1).as_deref(), Some("other"));
    assert_eq!(
        acked(&mut con, stream.name(), 2, "g"),
        on_0,
        "partition 1 unread"
    );
    // The other consumer is gone (its lease expired): partition 1 is taken.
    let _: () = redis::cmd("DEL").arg(lease(1)).query(&mut con).unwrap();
    all_acked(server, &stream, 100, Duration::from_secs(30));
    assert_eq!(holder(&mut con, 1).as_deref(), Some("r"));
    let m = consumer.stop().unwrap().total();
    assert_eq!((m.acked, m.acquired, m.redelivered), (100, 2, 0));
    println!("  own leases: its own taken at once, another's left until it was gone");
}

/// `drain_timeout(Duration::MAX)`: a stop that drains however long it
/// takes. The stop returns once everything read was acked, and hands every
/// partition back.
fn unbounded_drain(server: &Server) {
    let stream = Stream::new("unbounded").unwrap().partitions(2).unwrap();
    produce(server, &stream, 10, 10);
    let consumer = Consumer::builder(&server.url, stream.clone())
        .group("g")
        .drain_timeout(Duration::MAX)
        .start(|_| {
            std::thread::sleep(Duration::from_millis(1));
            Ok::<(), String>(())
        })
        .unwrap();
    let mut con = server.con();
    wait_until("a first ack", Duration::from_secs(30), || {
        acked(&mut con, stream.name(), 2, "g") > 0
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(consumer.stop());
    });
    let m = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("stop returned")
        .expect("a clean stop")
        .total();
    assert_eq!(m.acquired, m.released, "every partition handed back");
    assert_eq!(pending_now(&mut con, stream.name(), 2, "g"), 0);
    assert_eq!(acked(&mut con, stream.name(), 2, "g"), m.acked);
    println!(
        "  unbounded drain: stopped after {} acked, nothing pending",
        m.acked
    );
}

/// The broker crashes (SIGKILL) while a consumer has messages in flight,
/// and comes back 300 ms later from its append-only file (each write
/// synced before its reply). The consumer reconnects, keeps its leases,
/// and runs every message exactly once and in order, those sent before
/// the crash and those sent after.
fn broker_restart(_shared: &Server) {
    let mut server = Server::start_persistent().expect("a second redis-server");
    let stream = Stream::new("restart").unwrap().partitions(4).unwrap();
    let dir = TempDir::new("restart");
    let opts = ChildOpts {
        in_flight: 64,
        per_partition: 16,
        ttl_ms: 5_000,
        delay_us: 500,
        workers: 4,
    };
    let a = spawn(&server, &dir, "a", &stream, &opts);
    let mut con = server.con();
    wait_for_owners(&mut con, &stream, 1);
    produce_seqs(&server, &stream, 40, 1..=50);
    wait_until("500 acked", Duration::from_secs(60), || {
        acked(&mut con, stream.name(), 4, "g") >= 500
    });
    server.restart(Duration::from_millis(300));
    produce_seqs(&server, &stream, 40, 51..=100);
    all_acked(&server, &stream, 4_000, Duration::from_secs(60));
    let line = a.finish();
    println!("  broker restart: crashed at 500 of 2,000 acked, back after 300 ms; 4,000 messages\n  a: {line}");
    // The leases outlived the outage: nothing was taken over.
    assert!(line.contains("lost=0"), "{line}");
    exactly_once_in_order(&dir, 40, 100);
}

/// 100 of 10,000 messages always fail, 5 attempts: exactly those 100 are
/// dead-lettered, everything else completes once, and the other keys are
/// not held up (each poison message's last attempt waits until every
/// message of an unrelated key has completed).
fn poison(server: &Server) {
    let stream = Stream::new("poison").unwrap().partitions(16).unwrap();
    // Many shards, so that few keys share one with a poison key (a
    // retrying task holds its shard).
    let pool = ebbtide::Pool::builder()
        .workers(32)
        .shards(1 << 16)
        .build()
        .unwrap();
    let poison_keys: HashSet<String> = (0..10).map(|k| format!("k{k}")).collect();
    let poison_keys_2 = poison_keys.clone();
    let poison_shards: HashSet<usize> = poison_keys
        .iter()
        .map(|k| pool.shard_of(k.as_bytes()))
        .collect();
    let independent: HashSet<String> = (0..1000)
        .map(|k| format!("k{k}"))
        .filter(|k| !poison_shards.contains(&pool.shard_of(k.as_bytes())))
        .collect();
    let independent_total = independent.len() * 10;
    let done_independent = Arc::new(AtomicUsize::new(0));
    let processed = Arc::new(Mutex::new(HashMap::<(String, String), u32>::new()));
    let held_up = Arc::new(AtomicBool::new(false));
    produce(server, &stream, 1000, 10);
    let (p2, d2, h2) = (
        Arc::clone(&processed),
        Arc::clone(&done_independent),
        Arc::clone(&held_up),
    );
    let consumer = Consumer::builder(&server.url, stream.clone())
        .group("g")
        .pool(pool.handle())
        .retry(ebbtide::RetryPolicy::fixed(Duration::from_millis(10)).max_attempts(5))
        .start(move |m| {
            let key = String::from_utf8_lossy(m.key()).into_owned();
            let seq = String::from_utf8_lossy(m.payload()).into_owned();
            let attempt = {
                let mut p = p2.lock().unwrap();
                let n = p.entry((key.clone(), seq)).or_insert(0);
                *n += 1;
                *n
            };
            if poison_keys.contains(&key) {
                if attempt == 5 {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while d2.load(SeqCst) < independent_total {
                        if Instant::now() > deadline {
                            h2.store(true, SeqCst);
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                return Err(format!("poison message of {key}"));
            }
            if independent.contains(&key) {
                d2.fetch_add(1, SeqCst);
            }
            Ok(())
        })
        .unwrap();
    all_acked(server, &stream, 10_000, Duration::from_secs(80));
    let m = consumer.stop().unwrap().total();
    pool.shutdown();
    assert!(
        !held_up.load(SeqCst),
        "unrelated keys were held up behind the poison messages"
    );
    let processed = processed.lock().unwrap();
    assert_eq!(processed.len(), 10_000);
    for ((key, seq), n) in processed.iter() {
        let want = if poison_keys_2.contains(key) { 5 } else { 1 };
        assert_eq!(*n, want, "{key}/{seq}: attempts");
    }
    let mut con = server.con();
    let dead = entries(&mut con, &stream.dead_letter_stream());
    let mut dead_pairs = HashSet::new();
    for (_, f) in &dead {
        assert_eq!(f["attempts"], "5");
        assert_eq!(f["error"], format!("poison message of {}", f["key"]));
        dead_pairs.insert((f["key"].clone(), f["payload"].clone()));
    }
    let want: HashSet<(String, String)> = (0..10)
        .flat_map(|k| (1..=10).map(move |s| (format!("k{k}"), s.to_string())))
        .collect();
    assert_eq!(dead.len(), 100);
    assert_eq!(dead_pairs, want);
    assert_eq!((m.acked, m.dead_lettered, m.retried), (10_000, 100, 400));
    println!("  poison: 100 dead letters after 5 attempts each; {independent_total} messages of unrelated keys completed while they retried");
}

/// Dead letters listed page by page with every field, one removed, the
/// rest redriven by three processes' worth of connections at once once
/// the fault is fixed: each sent back exactly once, run exactly once, in
/// its key's order; an entry that was never a message is kept.
fn dead_letters(server: &Server) {
    let stream = Stream::new("dead").unwrap().partitions(4).unwrap();
    produce(server, &stream, 10, 5);
    // An entry that is not an ebbtide message.
    let mut con = server.con();
    let foreign: String = redis::cmd("XADD")
        .arg(stream.partition_stream(2))
        .arg("*")
        .arg("colour")
        .arg("red")
        .query(&mut con)
        .unwrap();
    let broken: HashSet<String> = (0..3).map(|k| format!("k{k}")).collect();
    let fixed = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let start = |name: &str| {
        let (broken, fixed, ran) = (broken.clone(), Arc::clone(&fixed), Arc::clone(&ran));
        Consumer::builder(&server.url, stream.clone())
            .group("g")
            .name(name)
            .retry(ebbtide::RetryPolicy::fixed(Duration::from_millis(1)).max_attempts(2))
            .start(move |m| {
                let key = String::from_utf8_lossy(m.key()).into_owned();
                if broken.contains(&key) && !fixed.load(SeqCst) {
                    return Err(format!("{key} is broken"));
                }
                let seq = String::from_utf8_lossy(m.payload()).into_owned();
                ran.lock().unwrap().push((key, seq));
                Ok(())
            })
            .unwrap()
    };
    let consumer = start("first");
    all_acked(server, &stream, 51, Duration::from_secs(60));
    wait_until("the dead-letter gauge", Duration::from_secs(60), || {
        consumer.metrics().dead_letters == Some(16)
    });
    assert!(consumer
        .to_prometheus("t")
        .lines()
        .any(|l| l.starts_with("t_redis_dead_letters{") && l.ends_with("} 16")));
    let m = consumer.stop().unwrap().total();
    assert_eq!((m.acked, m.dead_lettered), (51, 16));
    assert_eq!(ran.lock().unwrap().len(), 35);

    let mut dead = DeadLetters::connect(&server.url, stream.clone()).unwrap();
    assert_eq!(dead.len().unwrap(), 16);
    // Pages of 5, oldest first.
    let mut letters: Vec<DeadLetter> = Vec::new();
    loop {
        let after = letters.last().map(|l| l.id().to_string());
        let page = dead.list(after.as_deref(), 5).unwrap();
        assert!(page.len() <= 5);
        if page.is_empty() {
            break;
        }
        letters.extend(page);
    }
    assert_eq!(letters.len(), 16);
    let (messages, others): (Vec<&DeadLetter>, Vec<&DeadLetter>) =
        letters.iter().partition(|l| l.is_redrivable());
    assert_eq!(others.len(), 1);
    let other = others[0];
    assert_eq!(other.source(), Some(stream.partition_stream(2).as_str()));
    assert_eq!(other.source_id(), Some(foreign.as_str()));
    assert_eq!(other.attempts(), Some(0));
    assert!(
        other.error().unwrap().contains("not an ebbtide message"),
        "{other:?}"
    );
    assert_eq!(
        other.original_fields().collect::<Vec<_>>(),
        vec![(&b"colour"[..], &b"red"[..])]
    );
    let mut seen = HashSet::new();
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for l in &messages {
        let key = String::from_utf8(l.key().unwrap().to_vec()).unwrap();
        let seq: u32 = std::str::from_utf8(l.payload().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(broken.contains(&key), "{l:?}");
        assert_eq!(l.error(), Some(format!("{key} is broken").as_str()));
        assert_eq!(l.attempts(), Some(2));
        assert_eq!(l.consumer(), Some("first"));
        let partition = stream.partition_of(key.as_bytes());
        assert_eq!(
            l.source(),
            Some(stream.partition_stream(partition).as_str())
        );
        assert!(seen.insert((key.clone(), seq)), "{l:?} twice");
        per_key.entry(key).or_default().push(seq);
    }
    for (key, seqs) in &per_key {
        assert_eq!(seqs, &[1, 2, 3, 4, 5], "{key}: dead letters in its order");
    }

    // Bad input, named; nothing changes.
    let other_id = other.id().to_string();
    let e = dead.redrive(&other_id).unwrap_err().to_string();
    assert!(
        e.contains(&other_id) && e.contains("cannot be sent back"),
        "{e}"
    );
    let e = dead.list(None, 0).unwrap_err().to_string();
    assert!(e.contains("count"), "{e}");
    let e = dead.remove("last-week").unwrap_err().to_string();
    assert!(e.contains("entry ID") && e.contains("last-week"), "{e}");
    let e = DeadLetters::connect(
        &server.url,
        Stream::new("dead").unwrap().partitions(8).unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::PartitionMismatch { recorded: 4, .. }),
        "{e}"
    );
    assert_eq!(dead.len().unwrap(), 16);

    // One removed: gone, and not redriven.
    let removed = messages[0];
    assert!(dead.remove(removed.id()).unwrap());
    assert!(!dead.remove(removed.id()).unwrap());
    assert_eq!(dead.get(removed.id()).unwrap(), None);
    assert_eq!(dead.redrive(removed.id()).unwrap(), None);
    assert_eq!(
        dead.get(messages[1].id()).unwrap().as_ref(),
        Some(messages[1])
    );

    // Fixed: three redrive them all at once; each is sent back once.
    fixed.store(true, SeqCst);
    ran.lock().unwrap().clear();
    let go = Arc::new(std::sync::Barrier::new(3));
    let redrivers: Vec<_> = (0..3)
        .map(|_| {
            let (url, stream, go) = (server.url.clone(), stream.clone(), Arc::clone(&go));
            std::thread::spawn(move || {
                let mut d = DeadLetters::connect(&url, stream).unwrap();
                go.wait();
                d.redrive_all().unwrap()
            })
        })
        .collect();
    let done: Vec<_> = redrivers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(done.iter().map(|d| d.sent).sum::<u64>(), 14, "{done:?}");
    for d in &done {
        assert_eq!(d.kept, vec![other_id.clone()], "{done:?}");
    }
    assert_eq!(dead.len().unwrap(), 1);
    assert!(dead.get(&other_id).unwrap().is_some());

    let consumer = start("second");
    all_acked(server, &stream, 65, Duration::from_secs(60));
    wait_until("the dead-letter gauge", Duration::from_secs(60), || {
        consumer.metrics().dead_letters == Some(1)
    });
    let m = consumer.stop().unwrap().total();
    assert_eq!((m.acked, m.dead_lettered), (14, 0));
    let ran = ran.lock().unwrap();
    let removed_pair = (
        String::from_utf8(removed.key().unwrap().to_vec()).unwrap(),
        String::from_utf8(removed.payload().unwrap().to_vec()).unwrap(),
    );
    let mut want: Vec<(String, String)> = seen
        .iter()
        .map(|(k, s)| (k.clone(), s.to_string()))
        .filter(|p| *p != removed_pair)
        .collect();
    let mut got = ran.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "each redriven message ran exactly once");
    for key in &broken {
        let seqs: Vec<u32> = ran
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, s)| s.parse().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{key}: {seqs:?} out of order"
        );
    }
    println!("  dead letters: 16 listed, 1 removed, 14 redriven by three at once and run once each, 1 kept");
}

/// A consumer with `dead_letter_max_len(3)` keeps the three newest dead
/// letters; `Some(0)` is refused. Then `remove_if` and `redrive_if` act on
/// the letters they choose and leave the rest.
fn dead_letter_cap(server: &Server) {
    let stream = Stream::new("dead-cap").unwrap().partitions(2).unwrap();
    produce(server, &stream, 1, 10);
    let e = Consumer::builder(&server.url, stream.clone())
        .dead_letter_max_len(Some(0))
        .start(|_| Ok::<(), String>(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("dead_letter_max_len"), "{e}");
    let consumer = Consumer::builder(&server.url, stream.clone())
        .group("g")
        .retry(ebbtide::RetryPolicy::fixed(Duration::from_millis(1)).max_attempts(1))
        .dead_letter_max_len(Some(3))
        .start(|m| Err(format!("no to {}", String::from_utf8_lossy(m.payload()))))
        .unwrap();
    all_acked(server, &stream, 10, Duration::from_secs(60));
    let m = consumer.stop().unwrap().total();
    assert_eq!((m.acked, m.dead_lettered), (10, 10));
    let mut dead = DeadLetters::connect(&server.url, stream.clone()).unwrap();
    let kept: Vec<String> = dead
        .list(None, 100)
        .unwrap()
        .iter()
        .map(|l| String::from_utf8(l.payload().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(kept, ["8", "9", "10"]);

    // Chosen ones: one removed, one redriven, the third left.
    let payload = |l: &DeadLetter| String::from_utf8(l.payload().unwrap().to_vec()).unwrap();
    assert_eq!(dead.remove_if(|l| payload(l) == "9").unwrap(), 1);
    let done = dead
        .redrive_if(|l| l.error().is_some_and(|e| e.ends_with(" 10")))
        .unwrap();
    assert_eq!((done.sent, done.passed, done.kept.len()), (1, 1, 0));
    let left: Vec<String> = dead.list(None, 100).unwrap().iter().map(payload).collect();
    assert_eq!(left, ["8"]);
    // The stream was trimmed to nothing as the consumer stopped: the
    // redriven message is all its partition holds.
    let partition = stream.partition_stream(stream.partition_of(b"k0"));
    let mut con = server.con();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&partition)
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    assert_eq!(entries.ids.len(), 1);
    let field = |f: &str| match entries.ids[0].map.get(f) {
        Some(redis::Value::BulkString(b)) => b.clone(),
        other => panic!("{f}: {other:?}"),
    };
    assert_eq!(
        (field("key"), field("payload")),
        (b"k0".to_vec(), b"10".to_vec())
    );
    println!("  dead-letter cap: 10 dead letters, the newest 3 kept; one removed and one redriven by choice");
}

/// 10 ms tasks and an in-flight cap of 64: never more than 64 messages
/// read and unacked (sampled atomically in Redis), nor running. The unread
/// messages reach the pool's auto-scaler as its external backlog (the
/// first task waits until the pool shows it: at most 64 of the 3,000 can
/// have been read by then).
fn backpressure(server: &Server) {
    let stream = Stream::new("backpressure").unwrap().partitions(16).unwrap();
    produce(server, &stream, 300, 10);
    let pool = ebbtide::Pool::builder()
        .min_workers(2)
        .max_workers(64)
        .build()
        .unwrap();
    let backlog_seen = Arc::new(AtomicUsize::new(0));
    let (b2, p2) = (Arc::clone(&backlog_seen), pool.handle());
    let running = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicU64::new(0));
    let (r2, m2, h2) = (
        Arc::clone(&running),
        Arc::clone(&max_running),
        Arc::clone(&handled),
    );
    let consumer = Consumer::builder(&server.url, stream.clone())
        .group("g")
        .pool(pool.handle())
        .in_flight(64)
        .in_flight_per_partition(64)
        .start(move |_m| -> Result<(), String> {
            if h2.load(SeqCst) == 0 {
                let deadline = Instant::now() + Duration::from_secs(30);
                while b2.load(SeqCst) == 0 && Instant::now() < deadline {
                    b2.fetch_max(p2.metrics().external_backlog, SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let now = r2.fetch_add(1, SeqCst) + 1;
            m2.fetch_max(now, SeqCst);
            std::thread::sleep(Duration::from_millis(10));
            r2.fetch_sub(1, SeqCst);
            h2.fetch_add(1, SeqCst);
            Ok(())
        })
        .unwrap();
    let mut con = server.con();
    let mut max_pending = 0;
    let mut max_in_flight = 0;
    let deadline = Instant::now() + Duration::from_secs(80);
    while acked(&mut con, "backpressure", 16, "g") < 3000 {
        assert!(
            Instant::now() < deadline,
            "timed out: {} handled",
            handled.load(SeqCst)
        );
        max_pending = max_pending.max(pending_now(&mut con, "backpressure", 16, "g"));
        max_in_flight = max_in_flight.max(consumer.metrics().total().in_flight);
        std::thread::sleep(Duration::from_millis(2));
    }
    let m = consumer.stop().unwrap().total();
    assert_eq!(
        pool.metrics().external_backlog,
        0,
        "a stopped consumer reports no backlog"
    );
    pool.shutdown();
    let seen = backlog_seen.load(SeqCst);
    println!(
        "  backpressure: at most {max_pending} pending in Redis, {max_in_flight} in flight, {} running (cap 64); backlog reported to the pool: {seen}",
        max_running.load(SeqCst)
    );
    assert!(
        seen >= 3000 - 64,
        "the unread messages reached the auto-scaler: {seen}"
    );
    assert!(max_pending <= 64, "{max_pending} read and unacked");
    assert!(max_in_flight <= 64, "{max_in_flight} in flight");
    assert!(max_running.load(SeqCst) <= 64);
    assert!(max_pending > 0, "the sampler saw the consumer at work");
    assert_eq!((m.acked, handled.load(SeqCst)), (3000, 3000));
}

/// Unreachable servers, mismatched partition counts, oversized payloads,
/// entries that are not messages, bad settings: each named, nothing lost.
fn bad_input(server: &Server) {
    let stream = Stream::new("bad").unwrap().partitions(16).unwrap();
    let unreachable = "redis://127.0.0.1:1/";
    let e = Producer::connect(unreachable, stream.clone()).unwrap_err();
    assert!(
        matches!(e, Error::Connect { .. }) && e.to_string().contains(unreachable),
        "{e}"
    );
    let e = Consumer::builder(unreachable, stream.clone())
        .start(|_| Ok::<(), String>(()))
        .unwrap_err();
    assert!(
        matches!(e, Error::Connect { .. }) && e.to_string().contains(unreachable),
        "{e}"
    );
    let e = Producer::connect("not a url", stream.clone()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot connect to Redis at not a url"),
        "{e}"
    );
    let e = Consumer::builder(&server.url, stream.clone())
        .in_flight(0)
        .start(|_| Ok::<(), String>(()))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid in_flight \"0\": expected at least 1"
    );
    let e = Consumer::builder(&server.url, stream.clone())
        .block(Duration::from_secs(2))
        .start(|_| Ok::<(), String>(()))
        .unwrap_err();
    assert!(e.to_string().starts_with("invalid block \"2s\""), "{e}");

    let mut producer = Producer::connect(&server.url, stream.clone())
        .unwrap()
        .max_payload(64);
    let e = producer.send("k", [7u8; 65]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "payload of 65 bytes is over the limit of 64 bytes"
    );
    let e = Producer::connect(
        &server.url,
        Stream::new("bad").unwrap().partitions(8).unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "stream \"bad\" has 16 partitions, but this side was configured with 8"
    );
    let e = Consumer::builder(
        &server.url,
        Stream::new("bad").unwrap().partitions(8).unwrap(),
    )
    .start(|_| Ok::<(), String>(()))
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::PartitionMismatch {
                recorded: 16,
                configured: 8,
                ..
            }
        ),
        "{e}"
    );

    // Entries a consumer must refuse, among good messages.
    let mut con = server.con();
    let _: String = redis::cmd("XADD")
        .arg("bad:3")
        .arg("*")
        .arg("foo")
        .arg("bar")
        .query(&mut con)
        .unwrap();
    let home = stream.partition_of(b"stray");
    let wrong = (home + 1) % 16;
    let _: String = redis::cmd("XADD")
        .arg(format!("bad:{wrong}"))
        .arg("*")
        .arg("key")
        .arg("stray")
        .arg("payload")
        .arg("x")
        .query(&mut con)
        .unwrap();
    producer.send("big", [1u8; 40]).unwrap();
    for i in 0..10 {
        producer.send(format!("good{i}"), "ok").unwrap();
    }
    let ran = Arc::new(Mutex::new(Vec::new()));
    let r2 = Arc::clone(&ran);
    let consumer = Consumer::builder(&server.url, stream.clone())
        .group("g")
        .max_payload(32)
        .start(move |m| {
            r2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(m.key()).into_owned());
            Ok::<(), String>(())
        })
        .unwrap();
    all_acked(server, &stream, 13, Duration::from_secs(30));
    let m = consumer.stop().unwrap().total();
    let mut ran = ran.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, (0..10).map(|i| format!("good{i}")).collect::<Vec<_>>());
    assert_eq!((m.acked, m.dead_lettered), (13, 3));
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("bad:dead")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    let errors: BTreeMap<String, String> = dead
        .ids
        .iter()
        .map(|e| {
            let f = |n: &str| match e.map.get(n) {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            (f("source"), f("error"))
        })
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors["bad:3"].ends_with("is not an ebbtide message: no key or payload field"),
        "{errors:?}"
    );
    assert!(
        errors[&format!("bad:{wrong}")].contains(&format!(
            "key hashes to partition {home} of 16 but was read from partition {wrong}"
        )),
        "{errors:?}"
    );
    let big = format!("bad:{}", stream.partition_of(b"big"));
    assert_eq!(
        errors[&big],
        "payload of 40 bytes is over the consumer's limit of 32 bytes"
    );
    println!(
        "  bad input: {} dead letters, each naming what was wrong",
        errors.len()
    );
}

/// The broker dies under a running consumer: `stop` still returns (after
/// the drain timeout and a lease), with everything acked before the death
/// counted.
fn broker_gone(_shared: &Server) {
    let server = Server::start().expect("a second redis-server");
    let stream = Stream::new("gone").unwrap().partitions(4).unwrap();
    produce(&server, &stream, 10, 10);
    let consumer = Consumer::builder(&server.url, stream.clone())
        .group("g")
        .lease_ttl(Duration::from_millis(800))
        .block(Duration::from_millis(100))
        .drain_timeout(Duration::from_millis(500))
        .start(|_| Ok::<(), String>(()))
        .unwrap();
    all_acked(&server, &stream, 100, Duration::from_secs(30));
    drop(server);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(consumer.stop());
    });
    let stopped = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("stop returned without the broker")
        .expect("a consumer that had not failed");
    assert_eq!(stopped.total().acked, 100);
    println!("  broker gone: stop returned; 100 acked before the server died");
}
