//! The consumer: a builder, its threads, and the handle that stops it.

mod acker;
mod coordinator;
mod reader;
mod shared;
mod trim;

use crate::error::Error;
use crate::message::Message;
use crate::metrics::ConsumerMetrics;
use crate::producer::DEFAULT_MAX_PAYLOAD;
use crate::stream::{connect, Stream};
use ebbtide::{Pool, PoolHandle, RetryPolicy};
use shared::{Settings, Shared};
use std::fmt;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The shards of a consumer's own pool.
const DEFAULT_SHARDS: usize = 1 << 14;

/// Configures a [`Consumer`]: from [`Consumer::builder`].
///
/// | setting | default |
/// |---|---|
/// | [`group`](Self::group) | `"ebbtide"` |
/// | [`name`](Self::name) | host, process ID and a counter |
/// | [`in_flight`](Self::in_flight) | 256 messages read and not acked, in all |
/// | [`in_flight_per_partition`](Self::in_flight_per_partition) | 64 |
/// | [`lease_ttl`](Self::lease_ttl) | 5 s |
/// | [`block`](Self::block) | 100 ms (at most a quarter of the lease) |
/// | [`retry`](Self::retry) | exponential from 100 ms, 5 attempts |
/// | [`max_payload`](Self::max_payload) | 1 MiB |
/// | [`drain_timeout`](Self::drain_timeout) | 30 s |
/// | [`trim_acked`](Self::trim_acked) | every second |
/// | [`dead_letter_max_len`](Self::dead_letter_max_len) | none: every dead letter is kept |
/// | [`pool`](Self::pool) | its own elastic pool: CPUs up to `in_flight` workers |
#[must_use = "a builder does nothing until `start`"]
pub struct ConsumerBuilder {
    url: String,
    stream: Stream,
    group: String,
    name: Option<String>,
    in_flight: usize,
    per_partition: usize,
    lease_ttl: Duration,
    block: Duration,
    retry: RetryPolicy,
    max_payload: usize,
    drain_timeout: Duration,
    trim_every: Option<Duration>,
    dead_letter_max_len: Option<u64>,
    pool: Option<PoolHandle>,
}

impl fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("name", &self.name)
            .field("in_flight", &self.in_flight)
            .field("per_partition", &self.per_partition)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    /// The consumer group (default `"ebbtide"`): consumers of one group
    /// share the partitions; each group reads every message.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// This consumer's name among the group's members (unique per
    /// process; default: host, process ID and a counter).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The most messages read and not yet acked, over all partitions.
    pub fn in_flight(mut self, n: usize) -> Self {
        self.in_flight = n;
        self
    }

    /// The most messages read and not yet acked, per partition.
    pub fn in_flight_per_partition(mut self, n: usize) -> Self {
        self.per_partition = n;
        self
    }

    /// How long a partition's lease lasts unrenewed: a crashed consumer's
    /// partitions are taken over this long after its last renewal.
    /// Renewed every quarter; reading stops a fifth before expiry.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long one read waits for new messages.
    pub fn block(mut self, d: Duration) -> Self {
        self.block = d;
        self
    }

    /// The retry policy of failing messages; after its last attempt a
    /// message goes to the dead-letter stream and is acked.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Messages with a larger payload go to the dead-letter stream unrun.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// How long [`Consumer::stop`] waits for in-flight messages before
    /// handing their partitions back anyway (they are then delivered
    /// again to the next owner).
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// How often each partition this consumer acks in is trimmed of the
    /// entries every group of the stream is done with (`None`: never).
    /// Without trimming, acked messages stay in Redis until something else
    /// removes them. An entry is trimmed only once each group has read it
    /// and none has it pending, so a group that reads the stream at its
    /// own pace keeps what it has not read. A group created later, from
    /// the stream's start, finds only what is left.
    pub fn trim_acked(mut self, every: Option<Duration>) -> Self {
        self.trim_every = every;
        self
    }

    /// Keeps at most `n` entries in the dead-letter stream: each dead
    /// letter this consumer appends removes the oldest beyond `n`
    /// (`XADD … MAXLEN n`). `None` (the default) keeps every dead letter
    /// until [`DeadLetters`](crate::DeadLetters) redrives or removes it.
    pub fn dead_letter_max_len(mut self, n: Option<u64>) -> Self {
        self.dead_letter_max_len = n;
        self
    }

    /// Runs the messages' tasks on this pool (default: the consumer's own
    /// elastic pool). The pool's auto-scaler sees the partitions' lag and
    /// pending entries as queued work.
    pub fn pool(mut self, pool: PoolHandle) -> Self {
        self.pool = Some(pool);
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if self.group.is_empty()
            || self
                .group
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid(
                "group",
                &self.group,
                "a non-empty name without spaces",
            ));
        }
        if let Some(n) = &self.name {
            if n.is_empty() || n.chars().any(char::is_control) {
                return Err(Error::invalid("consumer name", n, "a non-empty name"));
            }
        }
        if self.in_flight == 0 {
            return Err(Error::invalid("in_flight", 0, "at least 1"));
        }
        if self.per_partition == 0 {
            return Err(Error::invalid("in_flight_per_partition", 0, "at least 1"));
        }
        if self.lease_ttl < Duration::from_millis(100) || self.lease_ttl > Duration::from_secs(3600)
        {
            return Err(Error::invalid(
                "lease_ttl",
                format!("{:?}", self.lease_ttl),
                "between 100 ms and 1 hour",
            ));
        }
        if self.block < Duration::from_millis(1)
            || self.block > self.lease_ttl / 4
            || self.block > Duration::from_secs(10)
        {
            return Err(Error::invalid(
                "block",
                format!("{:?}", self.block),
                "at least 1 ms, and at most 10 s and a quarter of lease_ttl",
            ));
        }
        if self.dead_letter_max_len == Some(0) {
            return Err(Error::invalid(
                "dead_letter_max_len",
                0,
                "at least 1 (or None, to keep every dead letter)",
            ));
        }
        if let Err(e) = self.retry.validate() {
            return Err(Error::invalid("retry", e, "a valid retry policy"));
        }
        Ok(())
    }

    /// Connects, checks the stream, and starts consuming: each message
    /// runs `handler` as a task keyed by the message's key, and is acked
    /// after it ran (or after its last failed attempt, once it is in the
    /// dead-letter stream).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a setting out of range; [`Error::Connect`]
    /// when Redis cannot be reached; [`Error::PartitionMismatch`] when the
    /// stream has another partition count.
    pub fn start<H, E>(self, handler: H) -> Result<Consumer, Error>
    where
        H: Fn(&Message) -> Result<(), E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        self.validate()?;
        let mut con = connect(&self.url)?;
        self.stream.check_partitions(&mut con)?;
        drop(con);
        let (own_pool, pool) = match self.pool {
            Some(p) => (None, p),
            None => {
                let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
                let pool = Pool::builder()
                    .name(format!("redis-{}", self.stream.name()))
                    .thread_name("ebbtide-redis-worker")
                    .min_workers(cpus.min(self.in_flight))
                    .max_workers(self.in_flight.max(cpus.min(self.in_flight)))
                    // A retrying message holds its shard: with many shards,
                    // few other keys share it.
                    .shards(DEFAULT_SHARDS)
                    .build()
                    .map_err(|e| Error::invalid("pool", e, "a pool the settings allow"))?;
                let handle = pool.handle();
                (Some(pool), handle)
            }
        };
        let name = self.name.unwrap_or_else(default_name);
        let settings = Settings {
            url: self.url,
            stream: self.stream,
            group: self.group,
            me: name,
            in_flight: self.in_flight,
            per_partition: self.per_partition,
            lease_ttl: self.lease_ttl,
            block: self.block,
            retry: self.retry,
            max_payload: self.max_payload,
            drain_timeout: self.drain_timeout,
            trim_every: self.trim_every,
            dead_letter_max_len: self.dead_letter_max_len,
        };
        let handler: Arc<shared::Handler> =
            Arc::new(move |m: &Message| handler(m).map_err(|e| e.to_string()));
        let backlog = pool.backlog();
        let shared = Arc::new(Shared::new(settings, pool, handler));
        let (tx, rx) = std::sync::mpsc::channel();
        let sh = Arc::clone(&shared);
        let acker = std::thread::Builder::new()
            .name("ebbtide-redis-acker".into())
            .spawn(move || acker::run(sh, rx))
            .map_err(|e| Error::invalid("threads", e, "a thread for the acker"))?;
        let sh = Arc::clone(&shared);
        let coordinator = std::thread::Builder::new()
            .name("ebbtide-redis-leases".into())
            .spawn(move || coordinator::run(sh, tx, backlog))
            .map_err(|e| Error::invalid("threads", e, "a thread for the leases"))?;
        Ok(Consumer {
            shared,
            coordinator: Some(coordinator),
            acker: Some(acker),
            own_pool,
        })
    }
}

fn default_name() -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, SeqCst)
    )
}

/// A running consumer of a partitioned [`Stream`]: it holds a fair share
/// of the partitions through leases, reads each held partition (what an
/// earlier owner left unacked first), runs every message as a task keyed
/// by its key on an ebbtide pool — one key's messages in order, different
/// keys in parallel — and acks each after its task ran. It reads only as
/// many messages as it has free in-flight slots.
///
/// A failing message is retried under the retry policy while holding its
/// key (other keys run on); after the last attempt it is appended to
/// `{stream}:dead` with its error and attempts, then acked.
///
/// [`stop`](Self::stop) stops reading, drains what is in flight, flushes
/// the acks and hands the partitions back, so a graceful stop delivers
/// nothing twice. A consumer that dies loses nothing: its partitions'
/// leases expire and their next owners read its unacked messages again.
///
/// ```no_run
/// use ebbtide_redis::{Consumer, Stream};
/// let consumer = Consumer::builder("redis://127.0.0.1/", Stream::new("orders")?)
///     .group("billing")
///     .start(|msg| -> Result<(), String> {
///         println!("{:?}: {} bytes", msg.key(), msg.payload().len());
///         Ok(())
///     })?;
/// // … later:
/// let metrics = consumer.stop()?;
/// println!("acked {}", metrics.total().acked);
/// # Ok::<(), ebbtide_redis::Error>(())
/// ```
pub struct Consumer {
    shared: Arc<Shared>,
    coordinator: Option<JoinHandle<()>>,
    acker: Option<JoinHandle<()>>,
    own_pool: Option<Pool>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.shared.settings.me)
            .field("stream", &self.shared.settings.stream)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A builder for a consumer of `stream` on the Redis at `url`.
    pub fn builder(url: impl Into<String>, stream: Stream) -> ConsumerBuilder {
        ConsumerBuilder {
            url: url.into(),
            stream,
            group: "ebbtide".into(),
            name: None,
            in_flight: 256,
            per_partition: 64,
            lease_ttl: Duration::from_secs(5),
            block: Duration::from_millis(100),
            retry: RetryPolicy::exponential(Duration::from_millis(100)).max_attempts(5),
            max_payload: DEFAULT_MAX_PAYLOAD,
            drain_timeout: Duration::from_secs(30),
            trim_every: Some(Duration::from_secs(1)),
            dead_letter_max_len: None,
            pool: None,
        }
    }

    /// This consumer's name among the group's members.
    pub fn name(&self) -> &str {
        &self.shared.settings.me
    }

    /// The pool its tasks run on.
    pub fn pool(&self) -> &PoolHandle {
        &self.shared.pool
    }

    /// Its figures now.
    pub fn metrics(&self) -> ConsumerMetrics {
        self.shared.metrics()
    }

    /// Its figures and its pool's, as Prometheus text (names start with
    /// `prefix`).
    pub fn to_prometheus(&self, prefix: &str) -> String {
        let mut text = self.shared.pool.metrics().to_prometheus(prefix);
        text.push_str(&self.metrics().to_prometheus(prefix));
        text
    }

    /// Whether it stopped on its own (its pool shut down); the error says
    /// why.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(ToString::to_string)
    }

    /// Stops gracefully: reads nothing more, lets every message in flight
    /// finish (at most the drain timeout), flushes the acks, hands the
    /// partitions back and leaves the group. Returns the final figures.
    ///
    /// # Errors
    /// The error that had already stopped the consumer on its own, if any
    /// (its unacked messages stay pending for the next owner).
    pub fn stop(mut self) -> Result<ConsumerMetrics, Error> {
        self.finish();
        let metrics = self.metrics();
        match self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(e) => Err(e),
            None => Ok(metrics),
        }
    }

    fn finish(&mut self) {
        self.shared.stopping.store(true, SeqCst);
        self.shared.notify();
        if let Some(c) = self.coordinator.take() {
            let _ = c.join();
        }
        self.shared.closed.store(true, SeqCst);
        if let Some(a) = self.acker.take() {
            let _ = a.join();
        }
        if let Some(pool) = self.own_pool.take() {
            pool.shutdown();
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.finish();
    }
}
