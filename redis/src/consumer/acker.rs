//! The acker: acks what ran, in pipelined batches, after appending dead
//! letters; only then frees the messages' in-flight slots.

use super::shared::Shared;
use super::trim::Trimmer;
use crate::dead::ORIGINAL_PREFIX;
use crate::message::Message;
use crate::stream::connect;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// The most entries one round trip acks.
const BATCH: usize = 1024;

pub(crate) enum Outcome {
    /// The handler succeeded.
    Acked,
    /// The last attempt failed, or the message was refused unrun.
    Dead {
        error: String,
        attempts: u32,
        msg: Box<Message>,
    },
    /// The entry is not an ebbtide message.
    Invalid {
        reason: String,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

pub(crate) struct Done {
    pub(crate) partition: u32,
    pub(crate) id: String,
    pub(crate) outcome: Outcome,
}

pub(crate) fn run(shared: Arc<Shared>, rx: Receiver<Done>) {
    let mut con = None;
    let mut batch = Vec::with_capacity(BATCH);
    let mut trimmer = Trimmer::new(shared.settings.trim_every);
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(d) => batch.push(d),
            Err(RecvTimeoutError::Timeout) => {
                let closed = shared.closed.load(SeqCst);
                if let Some(c) = con.as_mut() {
                    trim(&shared, &mut trimmer, c, closed);
                }
                if closed {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(c) = con.as_mut() {
                    trim(&shared, &mut trimmer, c, true);
                }
                return;
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        // Never drop an outcome: retry until the broker takes it, or the
        // consumer has ended (what is unacked is then read again by the
        // partition's next owner).
        loop {
            if shared.closed.load(SeqCst) && con.is_none() {
                return;
            }
            let c = match con.as_mut() {
                Some(c) => c,
                None => match connect(&shared.settings.url) {
                    Ok(c) => con.insert(c),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                },
            };
            match flush(&shared, c, &batch) {
                Ok(()) => break,
                Err(_) => {
                    con = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let mut freed: BTreeMap<u32, usize> = BTreeMap::new();
        for d in batch.drain(..) {
            let c = &shared.parts[d.partition as usize].counters;
            c.acked.fetch_add(1, SeqCst);
            if !matches!(d.outcome, Outcome::Acked) {
                c.dead_lettered.fetch_add(1, SeqCst);
            }
            *freed.entry(d.partition).or_default() += 1;
        }
        for (p, n) in freed {
            trimmer.acked(p);
            shared.unreserve(p, n);
        }
        if let Some(c) = con.as_mut() {
            trim(&shared, &mut trimmer, c, false);
        }
    }
}

/// Trims the partitions due (`all`: every one with new acks).
fn trim(shared: &Shared, trimmer: &mut Trimmer, con: &mut redis::Connection, all: bool) {
    let s = &shared.settings;
    trimmer.run(
        con,
        |p| s.stream.partition_stream(p),
        all,
        |p, n| {
            shared.parts[p as usize]
                .counters
                .trimmed
                .fetch_add(n, SeqCst);
        },
    );
}

/// Acks one entry and, only if that acked it (it was still pending),
/// appends its dead letter, in one atomic step. So a batch sent again after
/// a reply was lost (a dropped connection) appends no dead letter twice,
/// and a letter never exists for an entry still pending, nor an acked
/// entry without its letter. KEYS: the partition stream, the dead-letter
/// stream. ARGV: the group, the entry's ID, the cap (`MAXLEN`, or empty),
/// then the letter's fields and values.
const DEAD_LETTER: &str = "\
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[3] == '' then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
else
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', unpack(ARGV, 4))
end
return 1";

/// One round trip: every dead letter appended with its entry's ack (an
/// atomic step each), then the other entries acked. Sent again as it is
/// after an error: every step can be repeated.
fn flush(shared: &Shared, con: &mut redis::Connection, batch: &[Done]) -> redis::RedisResult<()> {
    let s = &shared.settings;
    let dead = s.stream.dead_letter_stream();
    let mut pipe = redis::pipe();
    let mut by_partition: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for d in batch {
        let source = s.stream.partition_stream(d.partition);
        // A dead letter: where it came from, why, then what it held.
        let (error, attempts) = match &d.outcome {
            Outcome::Acked => (None, 0),
            Outcome::Dead {
                error, attempts, ..
            } => (Some(error), *attempts),
            Outcome::Invalid { reason, .. } => (Some(reason), 0),
        };
        if let Some(error) = error {
            let cmd = pipe
                .cmd("EVAL")
                .arg(DEAD_LETTER)
                .arg(2)
                .arg(&source)
                .arg(&dead)
                .arg(&s.group)
                .arg(&d.id);
            // The oldest go first, once there are more than `n`.
            match s.dead_letter_max_len {
                Some(n) => cmd.arg(n),
                None => cmd.arg(""),
            };
            let cmd = cmd
                .arg("source")
                .arg(&source)
                .arg("id")
                .arg(&d.id)
                .arg("error")
                .arg(error)
                .arg("attempts")
                .arg(attempts)
                .arg("consumer")
                .arg(&s.me);
            match &d.outcome {
                Outcome::Dead { msg, .. } => {
                    cmd.arg("key")
                        .arg(&msg.key[..])
                        .arg("payload")
                        .arg(&msg.payload[..])
                        .arg("redelivered")
                        .arg(u8::from(msg.redelivered));
                }
                Outcome::Invalid { fields, .. } => {
                    for (k, v) in fields {
                        let mut name = ORIGINAL_PREFIX.to_vec();
                        name.extend_from_slice(k);
                        cmd.arg(name).arg(&v[..]);
                    }
                }
                Outcome::Acked => {}
            }
            cmd.ignore();
        } else {
            by_partition.entry(d.partition).or_default().push(&d.id);
        }
    }
    for (p, ids) in by_partition {
        pipe.cmd("XACK")
            .arg(s.stream.partition_stream(p))
            .arg(&s.group)
            .arg(ids)
            .ignore();
    }
    pipe.query(con)
}
