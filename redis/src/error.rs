//! What can go wrong between a process and the broker.

use std::fmt;

/// An error from the adapter: every variant names what was wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL does not parse, or the server cannot be reached.
    Connect {
        /// The URL as given.
        url: String,
        /// Why.
        source: redis::RedisError,
    },
    /// A command failed.
    Redis {
        /// What the adapter was doing.
        doing: String,
        /// Why.
        source: redis::RedisError,
    },
    /// The stream was created with another number of partitions than this
    /// producer or consumer was configured with; keys would land in
    /// partitions nobody reads in order.
    PartitionMismatch {
        /// The stream's name.
        stream: String,
        /// The number this side was configured with.
        configured: u32,
        /// The number recorded with the stream.
        recorded: u32,
    },
    /// A payload over the configured limit; it was not sent.
    PayloadTooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A setting out of range.
    Invalid {
        /// The setting's name.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The consumer's pool refused a message's task for good (it shut
    /// down); the message stays pending in the broker for the next owner.
    PoolClosed,
}

impl Error {
    pub(crate) fn redis(doing: impl Into<String>, source: redis::RedisError) -> Self {
        Error::Redis {
            doing: doing.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        setting: &'static str,
        value: impl fmt::Display,
        expected: &'static str,
    ) -> Self {
        Error::Invalid {
            setting,
            value: value.to_string(),
            expected,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { url, source } => write!(f, "cannot connect to Redis at {url}: {source}"),
            Error::Redis { doing, source } => write!(f, "Redis failed while {doing}: {source}"),
            Error::PartitionMismatch {
                stream,
                configured,
                recorded,
            } => write!(
                f,
                "stream {stream:?} has {recorded} partitions, but this side was configured with {configured}"
            ),
            Error::PayloadTooLarge { size, limit } => {
                write!(f, "payload of {size} bytes is over the limit of {limit} bytes")
            }
            Error::Invalid {
                setting,
                value,
                expected,
            } => write!(f, "invalid {setting} {value:?}: expected {expected}"),
            Error::PoolClosed => write!(f, "the consumer's pool shut down"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } | Error::Redis { source, .. } => Some(source),
            _ => None,
        }
    }
}
