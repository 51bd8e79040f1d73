//! `ebbtide worker` and `ebbtide produce`: consume a Redis stream on an
//! elastic pool, and feed it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebbtide_redis::{Consumer, ConsumerMetrics, Producer, Stream};

use crate::units;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The Redis server, such as redis://127.0.0.1:6379/.
    #[arg(long, value_name = "URL")]
    pub redis: String,
    /// The stream to consume.
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// The consumer group: workers of one group share the partitions.
    #[arg(long, default_value = "ebbtide")]
    pub group: String,
    /// The stream's partition count (must match the producer's).
    #[arg(long, default_value = "16", value_parser = partitions)]
    pub partitions: u32,
    /// Simulated I/O per message (the demo handler sleeps this long after
    /// hashing the payload), such as 1ms.
    #[arg(long, default_value = "0ms", value_parser = units::duration)]
    pub io: Duration,
    /// The share of messages the demo handler fails on every attempt (by
    /// a hash of key and payload, so the same ones each time), such as 1%:
    /// they are retried with backoff, then go to the dead letters, for
    /// `ebbtide dead-letters` to show and send back.
    #[arg(long, default_value = "0%", value_parser = units::fraction)]
    pub fail_rate: f64,
    /// Messages read and not yet acked, at most.
    #[arg(long, default_value = "256", value_parser = units::count)]
    pub in_flight: usize,
    /// This worker's name in the group (default: host, process, counter).
    #[arg(long)]
    pub name: Option<String>,
    /// Keep acked messages in the stream (by default they are trimmed
    /// once every group is done with them).
    #[arg(long)]
    pub keep_acked: bool,
    /// Keep at most this many dead letters (the oldest go first; by
    /// default every one is kept until `dead-letters` redrives or removes
    /// it).
    #[arg(long, value_name = "N", value_parser = units::count)]
    pub dead_letter_max_len: Option<usize>,
    /// Serve Prometheus text at http://HOST:PORT/metrics while running.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// Stop after this long (default: run until interrupted).
    #[arg(long, value_parser = units::positive_duration)]
    pub duration: Option<Duration>,
}

#[derive(clap::Args)]
pub struct ProduceArgs {
    /// The Redis server, such as redis://127.0.0.1:6379/.
    #[arg(long, value_name = "URL")]
    pub redis: String,
    /// The stream to append to.
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// How many messages.
    #[arg(long, default_value = "100000", value_parser = units::count)]
    pub messages: usize,
    /// How many distinct keys (message i has key `key-{i mod K}`).
    #[arg(long, default_value = "1000", value_parser = units::count)]
    pub keys: usize,
    /// The stream's partition count (recorded by the first producer).
    #[arg(long, default_value = "16", value_parser = partitions)]
    pub partitions: u32,
    /// Bytes of payload per message.
    #[arg(long, default_value = "64")]
    pub payload_bytes: usize,
    /// Messages per second (default: as fast as Redis takes them).
    #[arg(long, value_parser = units::rate)]
    pub rate: Option<f64>,
}

pub(crate) fn partitions(s: &str) -> Result<u32, String> {
    let n = units::count(s)?;
    if n > ebbtide_redis::MAX_PARTITIONS as usize {
        return Err(format!("`{s}` is over {}", ebbtide_redis::MAX_PARTITIONS));
    }
    Ok(n as u32)
}

pub(crate) fn stream(name: &str, partitions: u32) -> Result<Stream, String> {
    Stream::new(name)
        .and_then(|s| s.partitions(partitions))
        .map_err(|e| e.to_string())
}

/// The demo handler's work: FNV-1a of the payload.
fn digest(bytes: &[u8]) -> u64 {
    digest_from(0xcbf2_9ce4_8422_2325, bytes)
}

/// Spreads a hash's bits over the whole word (MurmurHash3's finaliser), so
/// that comparing it with a fraction of the space picks that fraction.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// FNV-1a of `bytes`, going on from `h`.
fn digest_from(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub fn worker(
    args: &WorkerArgs,
    stop: &AtomicBool,
    metrics: Option<&crate::serve::Source>,
) -> bool {
    let stream = match stream(&args.stream, args.partitions) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let io = args.io;
    // Fails a message when its hash, as a fraction of the hash space, is
    // under the rate.
    let fail_below = (args.fail_rate * u64::MAX as f64) as u64;
    let mut builder = Consumer::builder(&args.redis, stream)
        .group(&args.group)
        .in_flight(args.in_flight)
        .in_flight_per_partition(args.in_flight.min(64));
    if args.keep_acked {
        builder = builder.trim_acked(None);
    }
    if let Some(n) = args.dead_letter_max_len {
        builder = builder.dead_letter_max_len(Some(n as u64));
    }
    if let Some(n) = &args.name {
        builder = builder.name(n);
    }
    let consumer = match builder.start(move |m| -> Result<(), String> {
        let hash = std::hint::black_box(digest(m.payload()));
        if fail_below > 0 && mix(digest_from(hash, m.key())) < fail_below {
            return Err(format!(
                "simulated failure (--fail-rate) of a message of key {}",
                String::from_utf8_lossy(m.key())
            ));
        }
        if !io.is_zero() {
            std::thread::sleep(io);
        }
        Ok(())
    }) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    println!(
        "worker {} consuming {:?} ({} partitions) as group {:?}; interrupt to stop",
        consumer.name(),
        args.stream,
        args.partitions,
        args.group
    );
    let snapshot: Arc<Mutex<ConsumerMetrics>> = Arc::default();
    if let Some(source) = metrics {
        let pool = consumer.pool().clone();
        let snap = Arc::clone(&snapshot);
        source.set_text(move || {
            let mut text = pool.metrics().to_prometheus("ebbtide");
            text.push_str(&snap.lock().unwrap().to_prometheus("ebbtide"));
            text
        });
    }
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    while !stop.load(Ordering::SeqCst) && args.duration.is_none_or(|d| started.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(100));
        let m = consumer.metrics();
        *snapshot.lock().unwrap() = m.clone();
        if last.0.elapsed() >= Duration::from_secs(1) {
            let t = m.total();
            let rate = (t.acked - last.1) as f64 / last.0.elapsed().as_secs_f64();
            let pool = consumer.pool();
            println!(
                "{:>6.1}s  partitions {:?}  acked {}  {:.0}/s  in flight {}  lag {}  retried {}  dead {} (waiting in the stream: {})  workers {}",
                started.elapsed().as_secs_f64(),
                m.owned(),
                t.acked,
                rate,
                t.in_flight,
                t.lag,
                t.retried,
                t.dead_lettered,
                m.dead_letters.map_or_else(|| "?".to_string(), |n| n.to_string()),
                pool.metrics().workers
            );
            last = (Instant::now(), t.acked);
        }
        if let Some(why) = consumer.failure() {
            return fail(&why);
        }
    }
    println!("stopping: draining what is in flight, then handing the partitions back");
    match consumer.stop() {
        Ok(m) => {
            let t = m.total();
            println!(
                "stopped: acked {}, retried {}, dead-lettered {}, redelivered {}, partitions taken {} and handed back {}",
                t.acked, t.retried, t.dead_lettered, t.redelivered, t.acquired, t.released
            );
            true
        }
        Err(e) => fail(&e.to_string()),
    }
}

pub fn produce(args: &ProduceArgs, stop: &AtomicBool) -> bool {
    let stream = match stream(&args.stream, args.partitions) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let mut producer = match Producer::connect(&args.redis, stream) {
        Ok(p) => p.max_payload(args.payload_bytes.max(ebbtide_redis::DEFAULT_MAX_PAYLOAD)),
        Err(e) => return fail(&e.to_string()),
    };
    let payload = vec![b'x'; args.payload_bytes];
    let started = Instant::now();
    let chunk = args
        .rate
        .map_or(1000, |r| ((r / 100.0).ceil() as usize).clamp(1, 1000));
    let mut sent = 0;
    while sent < args.messages && !stop.load(Ordering::SeqCst) {
        let n = chunk.min(args.messages - sent);
        let items = (sent..sent + n).map(|i| (format!("key-{}", i % args.keys), &payload[..]));
        if let Err(e) = producer.send_batch(items) {
            return fail(&format!(
                "{e}; {sent} messages were sent before it, and the failed batch of {n} \
                 may have been sent in part"
            ));
        }
        sent += n;
        if let Some(rate) = args.rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {sent} messages over {} keys to {:?} in {secs:.2} s ({:.0}/s)",
        args.keys.min(sent.max(1)),
        args.stream,
        sent as f64 / secs.max(1e-9)
    );
    true
}

fn fail(why: &str) -> bool {
    eprintln!("error: {why}");
    false
}
