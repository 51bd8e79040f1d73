//! One thread per held partition: reads as many messages as there are
//! free in-flight slots (pending ones first, from ID 0, then new ones) and
//! submits each as a keyed task.

use super::acker::{Done, Outcome};
use super::shared::{Next, Shared};
use crate::error::Error;
use crate::message::{parse_reply, Entry, Message};
use crate::stream::connect;
use ebbtide::SubmitError;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// The consumer name a partition is read under: every owner of `p` reads
/// as the same consumer, so a new owner's read from ID 0 returns what an
/// earlier owner read and did not ack.
pub(crate) fn consumer_name(p: u32) -> String {
    format!("p{p}")
}

/// Creates the partition's group (from the stream's start) unless it
/// exists.
pub(crate) fn ensure_group(
    con: &mut redis::Connection,
    stream: &str,
    group: &str,
) -> Result<(), Error> {
    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(Error::redis(
            format!("creating group {group:?} on {stream:?}"),
            e,
        )),
    }
}

pub(crate) fn run(shared: Arc<Shared>, p: u32, done: Sender<Done>) {
    let s = &shared.settings;
    let stream = s.stream.partition_stream(p);
    let name = consumer_name(p);
    let mut con = None;
    // Pending entries first: `Some(after)` reads what this partition's
    // consumer read before and did not ack; `None` reads new entries.
    let mut replay_after = Some("0-0".to_string());
    // The last entry handed on (submitted, or sent to the acker): every
    // entry up to it is in flight or acked. After a failed read, only the
    // entries after it are read again from the pending list: those the
    // failed read may have had delivered. Reading from 0 instead would run
    // the in-flight ones a second time, behind later messages of their key.
    let mut handed: Option<String> = None;
    // After a read that found nothing, wait for the next message with a
    // blocking read of one (an idle partition holds one slot, not all);
    // after one that found some, read as many as there is room for.
    let mut idle = false;
    loop {
        match shared.next_read(p, s.block) {
            Next::Read => {}
            Next::Wait => {
                shared.wait(Duration::from_millis(20));
                continue;
            }
            Next::End => break,
        }
        let block = idle && replay_after.is_none();
        let n = if block {
            shared.reserve_one(p)
        } else {
            shared.reserve(p)
        };
        if n == 0 {
            shared.wait(Duration::from_millis(20));
            continue;
        }
        let c = match con.as_mut() {
            Some(c) => c,
            None => match connect(&s.url)
                .and_then(|mut c| ensure_group(&mut c, &stream, &s.group).map(|()| c))
            {
                Ok(c) => con.insert(c),
                Err(_) => {
                    shared.unreserve(p, n);
                    shared.wait(Duration::from_millis(100));
                    continue;
                }
            },
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&s.group)
            .arg(&name)
            .arg("COUNT")
            .arg(n);
        if block {
            cmd.arg("BLOCK").arg(s.block.as_millis() as u64);
        }
        cmd.arg("STREAMS")
            .arg(&stream)
            .arg(replay_after.as_deref().unwrap_or(">"));
        let entries = cmd
            .query::<redis::Value>(c)
            .map_err(|e| e.to_string())
            .and_then(|v| parse_reply(&v, p, replay_after.is_some()));
        let entries = match entries {
            Ok(e) => e,
            Err(_) => {
                // Reconnect; what the failed read had delivered is read
                // again from the pending list, after the last entry
                // handed on.
                con = None;
                replay_after = Some(handed.clone().unwrap_or_else(|| "0-0".to_string()));
                shared.unreserve(p, n);
                shared.wait(Duration::from_millis(100));
                continue;
            }
        };
        shared.unreserve(p, n - entries.len().min(n));
        idle = entries.is_empty();
        let last = entries.last().map(|e| match e {
            Ok(m) => m.id.clone(),
            Err(bad) => bad.id.clone(),
        });
        if replay_after.is_some() {
            replay_after = last.clone();
        }
        for entry in entries {
            if !dispatch(&shared, p, entry, &done) {
                // The reader ends: nothing is read after this.
                return;
            }
        }
        if last.is_some() {
            handed = last;
        }
    }
}

/// Submits one entry's task, or sends it to the dead letters unread.
/// `false` when the pool refused it for good.
fn dispatch(shared: &Arc<Shared>, p: u32, entry: Entry, done: &Sender<Done>) -> bool {
    let s = &shared.settings;
    let counters = &shared.parts[p as usize].counters;
    let msg = match entry {
        Err(bad) => {
            let _ = done.send(Done {
                partition: p,
                id: bad.id,
                outcome: Outcome::Invalid {
                    reason: bad.reason,
                    fields: bad.fields,
                },
            });
            return true;
        }
        Ok(m) => m,
    };
    if msg.redelivered {
        counters.redelivered.fetch_add(1, SeqCst);
    }
    let reason = if msg.payload.len() > s.max_payload {
        Some(format!(
            "payload of {} bytes is over the consumer's limit of {} bytes",
            msg.payload.len(),
            s.max_payload
        ))
    } else {
        let home = s.stream.partition_of(&msg.key);
        (home != p).then(|| {
            format!(
                "key hashes to partition {home} of {} but was read from partition {p}: \
                 the producer and the consumer disagree on the partition count",
                s.stream.partition_count()
            )
        })
    };
    if let Some(reason) = reason {
        let _ = done.send(Done {
            partition: p,
            id: msg.id.clone(),
            outcome: Outcome::Dead {
                error: reason,
                attempts: 0,
                msg: Box::new(msg),
            },
        });
        return true;
    }
    let msg = Arc::new(msg);
    let mut task = task(shared, Arc::clone(&msg), done.clone());
    loop {
        let r = shared
            .pool
            .task()
            .key(&msg.key[..])
            .retry(s.retry.clone())
            .execute_fallible(task);
        match r {
            Ok(()) => return true,
            Err(SubmitError::ShutDown(_)) | Err(SubmitError::Invalid(..)) => {
                // The message stays pending for whoever reads next.
                shared.unreserve(p, 1);
                shared.fail(Error::PoolClosed);
                return false;
            }
            Err(e) => {
                // Full, out of waiting time, or the breaker open: offer it
                // again; the partition reads nothing more meanwhile.
                task = e.into_inner();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

type Task = Box<dyn FnMut(&ebbtide::TaskContext) -> Result<(), String> + Send>;

/// A message's task: runs the handler (a panic counts as a failure); on
/// success, or on the last attempt's failure, tells the acker.
fn task(shared: &Arc<Shared>, msg: Arc<Message>, done: Sender<Done>) -> Task {
    let handler = Arc::clone(&shared.handler);
    let max = shared.settings.retry.attempts();
    let shared = Arc::clone(shared);
    let mut attempts = 0;
    Box::new(move |_cx| {
        attempts += 1;
        let r = match catch_unwind(AssertUnwindSafe(|| handler(&msg))) {
            Ok(r) => r,
            Err(panic) => Err(format!(
                "the handler panicked: {}",
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(not a string)".into())
            )),
        };
        let outcome = match &r {
            Ok(()) => Outcome::Acked,
            Err(e) if attempts >= max => Outcome::Dead {
                error: e.clone(),
                attempts,
                msg: Box::new((*msg).clone()),
            },
            Err(_) => {
                shared.parts[msg.partition as usize]
                    .counters
                    .retried
                    .fetch_add(1, SeqCst);
                return r;
            }
        };
        let _ = done.send(Done {
            partition: msg.partition,
            id: msg.id.clone(),
            outcome,
        });
        r
    })
}
