//! Appending messages to a partitioned stream.

use crate::error::Error;
use crate::stream::{Link, Stream, KEY_FIELD, PAYLOAD_FIELD, SENT_FIELD};
use std::time::{SystemTime, UNIX_EPOCH};

/// The default payload limit: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// Appends keyed messages to a [`Stream`]: each to partition
/// `partition_of(key)`, so one key's messages are read in the order sent.
///
/// ```no_run
/// use ebbtide_redis::{Producer, Stream};
/// let mut producer = Producer::connect("redis://127.0.0.1/", Stream::new("orders")?)?;
/// producer.send("customer-7", b"{\"total\": 12}")?;
/// producer.send_batch((0..1000).map(|i| (format!("customer-{}", i % 50), i.to_string())))?;
/// # Ok::<(), ebbtide_redis::Error>(())
/// ```
///
/// A call that fails because the connection broke (a dropped connection, a
/// failover) returns the error, and the next call connects again. Whether
/// the failed call's messages were appended is then unknown: sending them
/// again may append some twice.
pub struct Producer {
    link: Link,
    stream: Stream,
    max_payload: usize,
    streams: Vec<String>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("stream", &self.stream)
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Connects and records (or checks) the stream's partition count.
    ///
    /// # Errors
    /// [`Error::Connect`] when the URL is bad or the server unreachable;
    /// [`Error::PartitionMismatch`] when the stream has another count.
    pub fn connect(url: &str, stream: Stream) -> Result<Self, Error> {
        let mut link = Link::open(url)?;
        link.run(String::new, |con| Ok(stream.check_partitions(con)))??;
        let streams = (0..stream.partition_count())
            .map(|p| stream.partition_stream(p))
            .collect();
        Ok(Producer {
            link,
            stream,
            max_payload: DEFAULT_MAX_PAYLOAD,
            streams,
        })
    }

    /// Refuses payloads over `bytes` (default 1 MiB).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// The stream it sends to.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Appends one message; returns its entry ID.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] (nothing sent); [`Error::Redis`] (after a
    /// broken connection the message may have been appended);
    /// [`Error::Connect`] when the connection broke earlier and connecting
    /// again fails.
    pub fn send(
        &mut self,
        key: impl AsRef<[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<String, Error> {
        let (key, payload) = (key.as_ref(), payload.as_ref());
        self.check(payload)?;
        let cmd = self.entry(key, payload);
        self.link
            .run(|| "appending a message".into(), |con| cmd.query(con))
    }

    /// Appends many messages in one round trip per 1,000; returns how many
    /// were sent. A payload over the limit stops the batch before anything
    /// of it is sent.
    ///
    /// # Errors
    /// As [`send`](Self::send); messages of earlier round trips were sent.
    /// After a broken connection, those of the failed round trip may have
    /// been sent.
    pub fn send_batch<K, P, I>(&mut self, items: I) -> Result<usize, Error>
    where
        K: AsRef<[u8]>,
        P: AsRef<[u8]>,
        I: IntoIterator<Item = (K, P)>,
    {
        let mut sent = 0;
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<(K, P)> = items.by_ref().take(1000).collect();
            for (_, payload) in &chunk {
                self.check(payload.as_ref())?;
            }
            let mut pipe = redis::pipe();
            for (key, payload) in &chunk {
                pipe.add_command(self.entry(key.as_ref(), payload.as_ref()))
                    .ignore();
            }
            self.link.run(
                || "appending a batch of messages".into(),
                |con| pipe.query::<()>(con),
            )?;
            sent += chunk.len();
        }
        Ok(sent)
    }

    fn check(&self, payload: &[u8]) -> Result<(), Error> {
        if payload.len() > self.max_payload {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                limit: self.max_payload,
            });
        }
        Ok(())
    }

    fn entry(&self, key: &[u8], payload: &[u8]) -> redis::Cmd {
        let p = self.stream.partition_of(key);
        let sent = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.streams[p as usize])
            .arg("*")
            .arg(KEY_FIELD)
            .arg(key)
            .arg(PAYLOAD_FIELD)
            .arg(payload)
            .arg(SENT_FIELD)
            .arg(sent);
        cmd
    }
}
