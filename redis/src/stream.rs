//! A partitioned stream: its name, its partitions, where a key lands, and
//! the Redis keys that hold it.

use crate::error::Error;

/// The default number of partitions.
pub const DEFAULT_PARTITIONS: u32 = 16;
/// The most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 4096;

/// The entry field holding a message's key.
pub(crate) const KEY_FIELD: &str = "key";
/// The entry field holding a message's payload.
pub(crate) const PAYLOAD_FIELD: &str = "payload";
/// The entry field holding when the producer sent it (µs since the Unix
/// epoch), for end-to-end latency.
pub(crate) const SENT_FIELD: &str = "sent_us";

/// A stream split into `P` partition streams `{name}:{p}`. A key always
/// lands in partition `fnv1a64(key) mod P`, so the messages of one key are
/// read in the order they were sent. `P` is recorded with the stream (in
/// `{name}:meta`) by the first producer or consumer; a side configured
/// with another `P` is refused with [`Error::PartitionMismatch`].
///
/// ```
/// let stream = ebbtide_redis::Stream::new("orders")?.partitions(8)?;
/// assert_eq!(stream.partition_stream(3), "orders:3");
/// assert_eq!(stream.partition_of(b"customer-7"), stream.partition_of(b"customer-7"));
/// assert!(stream.partition_of(b"customer-7") < 8);
/// # Ok::<(), ebbtide_redis::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    name: String,
    partitions: u32,
}

impl Stream {
    /// A stream of [`DEFAULT_PARTITIONS`] partitions.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty name or one with whitespace or
    /// control characters.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                "stream name",
                name,
                "a non-empty name without spaces or control characters",
            ));
        }
        Ok(Stream {
            name,
            partitions: DEFAULT_PARTITIONS,
        })
    }

    /// Sets the number of partitions.
    ///
    /// # Errors
    /// [`Error::Invalid`] unless `1 ≤ partitions ≤` [`MAX_PARTITIONS`].
    pub fn partitions(mut self, partitions: u32) -> Result<Self, Error> {
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(Error::invalid(
                "partitions",
                partitions,
                "between 1 and 4096",
            ));
        }
        self.partitions = partitions;
        Ok(self)
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions
    }

    /// The partition a key lands in: FNV-1a (64-bit) of its bytes, modulo
    /// the partition count. Stable across processes, machines and
    /// versions.
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        (fnv1a64(key) % u64::from(self.partitions)) as u32
    }

    /// The Redis stream of partition `p`.
    pub fn partition_stream(&self, p: u32) -> String {
        format!("{}:{p}", self.name)
    }

    /// The Redis stream that dead letters go to.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}:dead", self.name)
    }

    pub(crate) fn meta_key(&self) -> String {
        format!("{}:meta", self.name)
    }

    pub(crate) fn lease_key(&self, group: &str, p: u32) -> String {
        format!("{}:lease:{group}:{p}", self.name)
    }

    pub(crate) fn members_key(&self, group: &str) -> String {
        format!("{}:members:{group}", self.name)
    }

    /// Records the partition count with the stream, or checks it against
    /// the one recorded.
    pub(crate) fn check_partitions(&self, con: &mut redis::Connection) -> Result<(), Error> {
        let recorded: String = redis::Script::new(
            "redis.call('HSETNX', KEYS[1], 'partitions', ARGV[1]) \
             return redis.call('HGET', KEYS[1], 'partitions')",
        )
        .key(self.meta_key())
        .arg(self.partitions)
        .invoke(con)
        .map_err(|e| Error::redis(format!("recording the partitions of {:?}", self.name), e))?;
        match recorded.parse::<u32>() {
            Ok(n) if n == self.partitions => Ok(()),
            Ok(n) => Err(Error::PartitionMismatch {
                stream: self.name.clone(),
                configured: self.partitions,
                recorded: n,
            }),
            Err(_) => Err(Error::invalid(
                "recorded partition count",
                recorded,
                "a number in the stream's meta hash",
            )),
        }
    }
}

/// FNV-1a, 64-bit.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A connection that is opened again at the next call after it broke (a
/// dropped connection, a failover, a timed-out reply). The call that broke
/// it fails; the next one reconnects. A connection that saw an I/O error
/// or a timeout is never used again: a late reply would answer the next
/// command.
pub(crate) struct Link {
    url: String,
    con: Option<redis::Connection>,
}

impl Link {
    /// Connects now, so that a bad URL or an unreachable server is an
    /// error at once.
    pub(crate) fn open(url: &str) -> Result<Self, Error> {
        Ok(Link {
            url: url.to_string(),
            con: Some(connect(url)?),
        })
    }

    /// Runs `run` on the connection, reconnecting first if the last one
    /// broke. Its error is `Error::Redis` about `doing`, or `Error::Connect`
    /// when reconnecting fails.
    pub(crate) fn run<T>(
        &mut self,
        doing: impl FnOnce() -> String,
        run: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        let con = match self.con.as_mut() {
            Some(con) => con,
            None => self.con.insert(connect(&self.url)?),
        };
        match run(con) {
            Ok(v) => Ok(v),
            Err(e) => {
                if broken(&e, con) {
                    self.con = None;
                }
                Err(Error::redis(doing(), e))
            }
        }
    }
}

/// Whether `e` left `con` unusable: closed, or an I/O error or a timeout
/// after which a reply may still be on its way.
pub(crate) fn broken(e: &redis::RedisError, con: &redis::Connection) -> bool {
    use redis::ConnectionLike;
    !con.is_open() || e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error()
}

/// Opens a connection, naming the URL when it fails.
pub(crate) fn connect(url: &str) -> Result<redis::Connection, Error> {
    let client = redis::Client::open(url).map_err(|source| Error::Connect {
        url: url.to_string(),
        source,
    })?;
    let fail = |source| Error::Connect {
        url: url.to_string(),
        source,
    };
    let con = client
        .get_connection_with_timeout(std::time::Duration::from_secs(5))
        .map_err(fail)?;
    // A server that stops answering fails the call (and the caller
    // reconnects) instead of hanging it: blocking reads last at most 10 s.
    con.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(fail)?;
    con.set_write_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(fail)?;
    Ok(con)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn bad_names_and_counts_are_named() {
        for bad in ["", "a b", "tab\there"] {
            let e = Stream::new(bad).unwrap_err().to_string();
            assert!(e.contains("invalid stream name"), "{e}");
        }
        for bad in [0, MAX_PARTITIONS + 1] {
            let e = Stream::new("s").unwrap().partitions(bad).unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("invalid partitions \"{bad}\"")),
                "{e}"
            );
        }
    }

    #[test]
    fn keys_spread_over_every_partition() {
        let s = Stream::new("s").unwrap().partitions(16).unwrap();
        let mut seen = [0u32; 16];
        for k in 0..1600 {
            seen[s.partition_of(format!("key-{k}").as_bytes()) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
