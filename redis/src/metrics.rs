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
    pub(crate) trimmed: AtomicU64,
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
    /// Entries this consumer trimmed from the partition once every group
    /// was done with them.
    pub trimmed: u64,
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
            trimmed: self.trimmed.load(SeqCst),
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
    /// Messages read by this consumer and not yet acked, in all: read from
    /// the one counter its `in_flight` cap is enforced on, so never above
    /// the cap. The partitions' own figures are read one after another,
    /// and while messages move their sum can pass it.
    pub in_flight: u64,
    /// Entries in the stream's dead-letter stream, as this consumer last
    /// read them (with the partitions' lag; `None` before its first
    /// reading). Unlike the `dead_lettered` counts, this covers every
    /// consumer's dead letters, less those redriven or removed.
    pub dead_letters: Option<u64>,
    /// One entry per partition this consumer has held at some time.
    pub partitions: Vec<PartitionMetrics>,
}

impl ConsumerMetrics {
    /// The sum over partitions, but for `in_flight`, which is the
    /// consumer's own figure (see [`ConsumerMetrics::in_flight`]).
    pub fn total(&self) -> PartitionMetrics {
        let mut t = PartitionMetrics::default();
        for p in &self.partitions {
            t.owned |= p.owned;
            t.lag += p.lag;
            t.pending += p.pending;
            t.acked += p.acked;
            t.retried += p.retried;
            t.dead_lettered += p.dead_lettered;
            t.redelivered += p.redelivered;
            t.acquired += p.acquired;
            t.released += p.released;
            t.lost += p.lost;
            t.trimmed += p.trimmed;
        }
        t.in_flight = self.in_flight;
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
    /// stream, group, consumer and partition; names start with `prefix`
    /// (made a valid name as [`ebbtide::metrics::prometheus_prefix`] does).
    pub fn to_prometheus(&self, prefix: &str) -> String {
        let prefix = &*ebbtide::metrics::prometheus_prefix(prefix);
        type Get = fn(&PartitionMetrics) -> u64;
        let series: [(&str, &str, &str, Get); 12] = [
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
            (
                "trimmed_total",
                "counter",
                "entries trimmed once every group was done with them",
                |p| p.trimmed,
            ),
        ];
        let mut out = String::new();
        let who = format!(
            "stream=\"{}\",group=\"{}\",consumer=\"{}\"",
            escape(&self.stream),
            escape(&self.group),
            escape(&self.consumer)
        );
        let _ = writeln!(
            out,
            "# HELP {prefix}_redis_consumer_in_flight messages read by this consumer and not yet acked, in all"
        );
        let _ = writeln!(out, "# TYPE {prefix}_redis_consumer_in_flight gauge");
        let _ = writeln!(
            out,
            "{prefix}_redis_consumer_in_flight{{{who}}} {}",
            self.in_flight
        );
        if let Some(n) = self.dead_letters {
            let _ = writeln!(
                out,
                "# HELP {prefix}_redis_dead_letters entries in the stream's dead-letter stream"
            );
            let _ = writeln!(out, "# TYPE {prefix}_redis_dead_letters gauge");
            let _ = writeln!(out, "{prefix}_redis_dead_letters{{{who}}} {n}");
        }
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP {prefix}_redis_partition_{name} {help}");
            let _ = writeln!(out, "# TYPE {prefix}_redis_partition_{name} {kind}");
            for p in &self.partitions {
                let _ = writeln!(
                    out,
                    "{prefix}_redis_partition_{name}{{{who},partition=\"{}\"}} {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: u32, in_flight: u64, acked: u64) -> PartitionMetrics {
        PartitionMetrics {
            partition,
            owned: true,
            in_flight,
            acked,
            trimmed: acked / 2,
            ..PartitionMetrics::default()
        }
    }

    /// Partition figures read one after another can sum past the cap; the
    /// total's in-flight count is the consumer's own.
    #[test]
    fn total_takes_in_flight_from_the_consumer() {
        let m = ConsumerMetrics {
            stream: "s".into(),
            group: "g".into(),
            consumer: "c".into(),
            in_flight: 64,
            dead_letters: None,
            partitions: vec![part(0, 40, 5), part(3, 27, 7)],
        };
        let t = m.total();
        assert_eq!((t.in_flight, t.acked, t.owned), (64, 12, true));
        assert_eq!(t.trimmed, 2 + 3);
        assert_eq!(m.owned(), vec![0, 3]);
    }

    #[test]
    fn prometheus_names_the_consumer_and_each_partition() {
        let m = ConsumerMetrics {
            stream: "a\"b".into(),
            group: "g".into(),
            consumer: "c\nd".into(),
            in_flight: 9,
            dead_letters: Some(4),
            partitions: vec![part(2, 9, 30)],
        };
        let text = m.to_prometheus("x");
        let who = r#"stream="a\"b",group="g",consumer="c\nd""#;
        for line in [
            format!("x_redis_consumer_in_flight{{{who}}} 9"),
            format!("x_redis_partition_in_flight{{{who},partition=\"2\"}} 9"),
            format!("x_redis_partition_acked_total{{{who},partition=\"2\"}} 30"),
            format!("x_redis_partition_trimmed_total{{{who},partition=\"2\"}} 15"),
            "# TYPE x_redis_partition_acked_total counter".to_string(),
            "# TYPE x_redis_consumer_in_flight gauge".to_string(),
            format!("x_redis_dead_letters{{{who}}} 4"),
            "# TYPE x_redis_dead_letters gauge".to_string(),
        ] {
            assert_eq!(
                text.lines().filter(|l| *l == line).count(),
                1,
                "{line} in\n{text}"
            );
        }
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 14);
        let unread = ConsumerMetrics {
            dead_letters: None,
            ..m
        };
        assert!(!unread.to_prometheus("x").contains("dead_letters{"));
        // A prefix a metric name cannot hold is made one.
        let text = unread.to_prometheus("my-app");
        assert!(text.lines().all(|l| l.starts_with("my_app_redis_")
            || l.starts_with("# HELP my_app_redis_")
            || l.starts_with("# TYPE my_app_redis_")));
    }
}
