//! The coordinator thread: membership, leases (take, renew, hand back),
//! a reader per held partition, and the lag and pending figures.
//!
//! Each round: announce this consumer and list the live members; renew
//! every held lease (a lease found taken or gone stops its reader at
//! once); mark the partitions over this consumer's share for hand-back;
//! hand back those drained (no message in flight, every ack flushed);
//! take free partitions up to the share; read lag and pending. While
//! stopping, the share is 0, so everything is drained and handed back.

use super::acker::Done;
use super::reader;
use super::shared::{Shared, FREE, OWNED, RELEASING};
use crate::lease::{first_choice, share, to_release, Scripts};
use crate::stream::connect;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) fn run(shared: Arc<Shared>, done: Sender<Done>, backlog: ebbtide::Backlog) {
    let s = &shared.settings;
    let scripts = Scripts::new();
    let members_key = s.stream.members_key(&s.group);
    let round = s.lease_ttl / 4;
    let mut con: Option<redis::Connection> = None;
    let mut stop_since: Option<Instant> = None;
    loop {
        let stopping = shared.stopping.load(SeqCst);
        if stopping && stop_since.is_none() {
            stop_since = Some(Instant::now());
        }
        // A broker that cannot be reached while stopping: give up after
        // the drain timeout and a lease's length; the leases expire on
        // their own and what is unacked stays pending for the next owner.
        // (Saturating: a drain timeout of `Duration::MAX` never gives up.)
        if stop_since.is_some_and(|t| t.elapsed() >= s.drain_timeout.saturating_add(s.lease_ttl)) {
            for part in &shared.parts {
                part.state.store(FREE, SeqCst);
            }
            break;
        }
        let c = match con.as_mut() {
            Some(c) => c,
            None => match connect(&s.url) {
                Ok(c) => con.insert(c),
                Err(_) => {
                    if stopping && held(&shared).is_empty() {
                        break;
                    }
                    shared.wait(round.min(Duration::from_millis(200)));
                    continue;
                }
            },
        };
        if one_round(
            &shared,
            c,
            &scripts,
            &members_key,
            stopping,
            stop_since,
            &done,
            &backlog,
        )
        .is_err()
        {
            con = None;
        }
        if stopping && held(&shared).is_empty() {
            break;
        }
        // While handing back, look again soon; else once a quarter lease.
        let releasing = shared
            .parts
            .iter()
            .any(|p| p.state.load(SeqCst) == RELEASING);
        shared.wait(if releasing {
            Duration::from_millis(5)
        } else {
            round
        });
    }
    if let Some(c) = con.as_mut() {
        let _ = scripts.leave(c, &members_key, &s.me);
    }
    backlog.set(0);
    for part in &shared.parts {
        if let Some(r) = part.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = r.join();
        }
    }
}

fn held(shared: &Shared) -> Vec<u32> {
    (0..shared.parts.len() as u32)
        .filter(|&p| shared.parts[p as usize].state.load(SeqCst) != FREE)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn one_round(
    shared: &Arc<Shared>,
    c: &mut redis::Connection,
    scripts: &Scripts,
    members_key: &str,
    stopping: bool,
    stop_since: Option<Instant>,
    done: &Sender<Done>,
    backlog: &ebbtide::Backlog,
) -> Result<(), crate::Error> {
    let s = &shared.settings;
    let ttl = s.ttl_ms();
    let members = if stopping {
        Vec::new()
    } else {
        scripts.heartbeat(c, members_key, &s.me, ttl)?
    };
    let index = members
        .iter()
        .position(|m| *m == s.me)
        .unwrap_or(members.len());
    let count = members.len().max(index + 1);
    let partitions = s.stream.partition_count();
    let mine = if stopping {
        0
    } else {
        share(partitions, count, index)
    };

    // Renew.
    let mut renewed = false;
    for p in held(shared) {
        let part = &shared.parts[p as usize];
        let sent = Instant::now();
        if scripts.renew(c, &s.stream.lease_key(&s.group, p), &s.me, ttl)? {
            *part.valid_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(sent + s.lease_ttl - s.margin());
            renewed = true;
        } else {
            // Taken or expired: stop reading; what is in flight is acked
            // as it finishes (the next owner may run it again).
            *part.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
            part.state.store(FREE, SeqCst);
            part.counters.lost.fetch_add(1, SeqCst);
            shared.notify();
        }
    }
    if renewed {
        // A reader that waited for a late renewal reads again.
        shared.notify();
    }

    // Mark the excess for hand-back.
    let owned: Vec<u32> = held(shared)
        .into_iter()
        .filter(|&p| shared.parts[p as usize].state.load(SeqCst) == OWNED)
        .collect();
    for p in to_release(&owned, mine) {
        shared.parts[p as usize].state.store(RELEASING, SeqCst);
        shared.notify();
    }

    // Hand back the drained: reader ended, nothing in flight (acks flushed).
    let give_up = stop_since.is_some_and(|t| t.elapsed() >= s.drain_timeout);
    for p in held(shared) {
        let part = &shared.parts[p as usize];
        if part.state.load(SeqCst) != RELEASING {
            continue;
        }
        let reader_done = part
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|r| r.is_finished());
        if (reader_done && part.in_flight.load(SeqCst) == 0) || give_up {
            scripts.release(c, &s.stream.lease_key(&s.group, p), &s.me)?;
            *part.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
            part.state.store(FREE, SeqCst);
            part.counters.released.fetch_add(1, SeqCst);
        }
    }

    // Take free partitions up to the share.
    let mut have = held(shared)
        .into_iter()
        .filter(|&p| shared.parts[p as usize].state.load(SeqCst) == OWNED)
        .count() as u32;
    if !stopping && have < mine {
        let start = first_choice(partitions, count, index);
        for p in (start..partitions).chain(0..start) {
            if have >= mine {
                break;
            }
            let part = &shared.parts[p as usize];
            if part.state.load(SeqCst) != FREE {
                continue;
            }
            // A reader of an earlier holding must be gone before a new one
            // starts (it may still be dispatching what it read).
            let busy = part
                .reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|r| !r.is_finished());
            if busy || part.in_flight.load(SeqCst) > 0 {
                continue;
            }
            let sent = Instant::now();
            if !scripts.acquire(c, &s.stream.lease_key(&s.group, p), &s.me, ttl)? {
                continue;
            }
            // The group exists before its first lag reading.
            reader::ensure_group(c, &s.stream.partition_stream(p), &s.group)?;
            *part.valid_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(sent + s.lease_ttl - s.margin());
            part.state.store(OWNED, SeqCst);
            part.seen.store(true, SeqCst);
            part.counters.acquired.fetch_add(1, SeqCst);
            let (sh, tx) = (Arc::clone(shared), done.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("ebbtide-redis-p{p}"))
                .spawn(move || reader::run(sh, p, tx));
            let Ok(thread) = spawned else {
                // No thread for a reader (the process is at its limit):
                // hand the partition back at the next round rather than
                // hold it unread; a later round may take it again.
                part.state.store(RELEASING, SeqCst);
                continue;
            };
            if let Some(old) = part
                .reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace(thread)
            {
                let _ = old.join();
            }
            have += 1;
        }
    }

    // Lag and pending of the held partitions (the auto-scaler's backlog),
    // and how many dead letters wait.
    let held_now = held(shared);
    let mut pipe = redis::pipe();
    pipe.cmd("XLEN").arg(s.stream.dead_letter_stream());
    for &p in &held_now {
        pipe.cmd("XINFO")
            .arg("GROUPS")
            .arg(s.stream.partition_stream(p));
    }
    let replies: Vec<redis::Value> = pipe
        .query(c)
        .map_err(|e| crate::Error::redis("reading lag, pending and dead letters", e))?;
    if let Some(redis::Value::Int(n)) = replies.first() {
        shared.dead_letters.store((*n).max(0) as u64, SeqCst);
    }
    let mut waiting = 0u64;
    for (&p, reply) in held_now.iter().zip(replies.get(1..).unwrap_or_default()) {
        let (lag, pending) = group_figures(reply, &s.group);
        let counters = &shared.parts[p as usize].counters;
        counters.lag.store(lag, SeqCst);
        counters.pending.store(pending, SeqCst);
        let in_flight = shared.parts[p as usize].in_flight.load(SeqCst) as u64;
        waiting += lag + pending.saturating_sub(in_flight);
    }
    backlog.set(waiting as usize);
    Ok(())
}

/// The group's `lag` and `pending` from an `XINFO GROUPS` reply.
fn group_figures(reply: &redis::Value, group: &str) -> (u64, u64) {
    use redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let int = |v: &Value| match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    };
    let Value::Array(groups) = reply else {
        return (0, 0);
    };
    for g in groups {
        let pairs: Vec<(&Value, &Value)> = match g {
            Value::Array(f) => f
                .chunks(2)
                .filter(|kv| kv.len() == 2)
                .map(|kv| (&kv[0], &kv[1]))
                .collect(),
            Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
            _ => continue,
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| text(k).as_deref() == Some(name))
                .map(|(_, v)| *v)
        };
        if field("name").and_then(text).as_deref() != Some(group) {
            continue;
        }
        return (
            field("lag").and_then(int).unwrap_or(0),
            field("pending").and_then(int).unwrap_or(0),
        );
    }
    (0, 0)
}
