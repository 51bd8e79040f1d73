//! Per-partition figures of a consumer, and their Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// The live counters of one partition.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) acked: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) acquired: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) lost: AtomicU64,
    /// Entries in the group not yet delivered to anyone (`XINFO GROUPS`
    /// lag), as last read.
    pub(crate) lag: AtomicU64,
    /// Entries delivered and not acked (`XPENDING`), as last read.
    pub(crate) pending: AtomicU64,
}

/// A partition's figures, as seen by one consumer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionMetrics {
    /// The partition.
    pub partition: u32,
    /// Whether this consumer holds its lease now.
    pub owned: bool,
    /// Entries not yet read by the group, when last looked at (while
    /// owned).
    pub lag: u64,
    /// Entries read and not acked, when last looked at (while owned).
    pub pending: u64,
    /// Messages read by this consumer and not yet acked.
    pub in_flight: u64,
    /// Messages acked after their task ran (dead letters included).
    pub acked: u64,
    /// Attempts that failed and were tried again.
    pub retried: u64,
    /// Messages sent to the dead-letter stream.
    pub dead_lettered: u64,
    /// Messages this consumer read that an earlier owner had read and not
    /// acked.
    pub redelivered: u64,
    /// Times this consumer took the partition's lease.
    pub acquired: u64,
    /// Times it handed the partition back after draining it.
    pub released: u64,
    /// Times it found its lease taken or expired.
    pub lost: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self, partition: u32, owned: bool, in_flight: u64) -> PartitionMetrics {
        PartitionMetrics {
            partition,
            owned,
            lag: self.lag.load(SeqCst),
            pending: self.pending.load(SeqCst),
            in_flight,
            acked: self.acked.load(SeqCst),
            retried: self.retried.load(SeqCst),
            dead_lettered: self.dead_lettered.load(SeqCst),
            redelivered: self.redelivered.load(SeqCst),
            acquired: self.acquired.load(SeqCst),
            released: self.released.load(SeqCst),
            lost: self.lost.load(SeqCst),
        }
    }
}

/// A consumer's figures: every partition it has held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerMetrics {
    /// The stream.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// This consumer's name.
    pub consumer: String,
    /// One entry per partition this consumer has held at some time.
    pub partitions: Vec<PartitionMetrics>,
}

impl ConsumerMetrics {
    /// The sum over partitions.
    pub fn total(&self) -> PartitionMetrics {
        let mut t = PartitionMetrics::default();
        for p in &self.partitions {
            t.owned |= p.owned;
            t.lag += p.lag;
            t.pending += p.pending;
            t.in_flight += p.in_flight;
            t.acked += p.acked;
            t.retried += p.retried;
            t.dead_lettered += p.dead_lettered;
            t.redelivered += p.redelivered;
            t.acquired += p.acquired;
            t.released += p.released;
            t.lost += p.lost;
        }
        t
    }

    /// The partitions it owns now.
    pub fn owned(&self) -> Vec<u32> {
        self.partitions
            .iter()
            .filter(|p| p.owned)
            .map(|p| p.partition)
            .collect()
    }

    /// Prometheus text: one series per partition, labelled with the
    /// stream, group, consumer and partition; names start with `prefix`.
    pub fn to_prometheus(&self, prefix: &str) -> String {
        type Get = fn(&PartitionMetrics) -> u64;
        let series: [(&str, &str, &str, Get); 11] = [
            (
                "owned",
                "gauge",
                "1 while this consumer holds the partition's lease",
                |p| u64::from(p.owned),
            ),
            ("lag", "gauge", "entries not yet read by the group", |p| {
                p.lag
            }),
            ("pending", "gauge", "entries read and not acked", |p| {
                p.pending
            }),
            (
                "in_flight",
                "gauge",
                "messages read by this consumer and not yet acked",
                |p| p.in_flight,
            ),
            (
                "acked_total",
                "counter",
                "messages acked after their task ran",
                |p| p.acked,
            ),
            (
                "retried_total",
                "counter",
                "failed attempts tried again",
                |p| p.retried,
            ),
            (
                "dead_lettered_total",
                "counter",
                "messages sent to the dead-letter stream",
                |p| p.dead_lettered,
            ),
            (
                "redelivered_total",
                "counter",
                "messages an earlier owner had read and not acked",
                |p| p.redelivered,
            ),
            (
                "acquired_total",
                "counter",
                "times the partition's lease was taken",
                |p| p.acquired,
            ),
            (
                "released_total",
                "counter",
                "times the partition was drained and handed back",
                |p| p.released,
            ),
            (
                "lost_total",
                "counter",
                "times the lease was found taken or expired",
                |p| p.lost,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP {prefix}_redis_partition_{name} {help}");
            let _ = writeln!(out, "# TYPE {prefix}_redis_partition_{name} {kind}");
            for p in &self.partitions {
                let _ = writeln!(
                    out,
                    "{prefix}_redis_partition_{name}{{stream=\"{}\",group=\"{}\",consumer=\"{}\",partition=\"{}\"}} {}",
                    escape(&self.stream),
                    escape(&self.group),
                    escape(&self.consumer),
                    p.partition,
                    get(p)
                );
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
