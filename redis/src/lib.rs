//! Keyed, auto-scaled consumption of [Redis Streams] on an [`ebbtide`]
//! pool, with ack after run and nothing lost when a consumer dies.
//!
//! - A [`Producer`] appends `(key, payload)` messages to a [`Stream`] of
//!   `P` partition streams `{name}:{p}`; a key always lands in one
//!   partition, in order.
//! - A [`Consumer`] holds a fair share of the partitions through leases
//!   in Redis, runs each message as a task keyed by the message's key
//!   (per-key order, parallel across keys), acks it only after it ran, and
//!   reads only as many messages as it has free in-flight slots.
//! - A failing message is retried with backoff while holding its key,
//!   then appended to `{name}:dead` with its error and acked.
//!   [`DeadLetters`] lists them, sends them back once the fault is fixed
//!   (each in one atomic step: removed there, appended to its partition),
//!   or removes them.
//! - Consumers join and leave at any time: a stopping consumer drains and
//!   hands its partitions back; a dead one's partitions are taken over
//!   when its leases expire, and its unacked messages are read again.
//!
//! [Redis Streams]: https://redis.io/docs/latest/develop/data-types/streams/
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod consumer;
mod dead;
mod error;
mod lease;
mod message;
mod metrics;
mod producer;
mod stream;

pub use consumer::{Consumer, ConsumerBuilder};
pub use dead::{check_entry_id, DeadLetter, DeadLetters, Redriven};
pub use error::Error;
pub use message::Message;
pub use metrics::{ConsumerMetrics, PartitionMetrics};
pub use producer::{Producer, DEFAULT_MAX_PAYLOAD};
pub use stream::{Stream, DEFAULT_PARTITIONS, MAX_PARTITIONS};
