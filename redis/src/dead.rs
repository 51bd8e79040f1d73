//! What the consumers gave up on: reading a stream's dead-letter stream,
//! sending its messages back to their partitions once whatever made them
//! fail is fixed, and removing the ones nobody wants.
//!
//! Sending one back (a *redrive*) is one Lua script: the dead letter is
//! deleted (`XDEL`) and, only if that deleted it, its key and payload are
//! appended to the key's partition (`XADD`). Both happen or neither does,
//! so a dead letter redriven by two processes at once is sent back once,
//! and one whose redrive is interrupted is still in the dead-letter
//! stream.

use crate::error::Error;
use crate::message::{raw_entries, Fields};
use crate::stream::{Link, Stream, KEY_FIELD, PAYLOAD_FIELD, SENT_FIELD};
use std::time::{SystemTime, UNIX_EPOCH};

/// The field prefix under which a dead letter keeps the fields of an entry
/// that was not an ebbtide message.
pub(crate) const ORIGINAL_PREFIX: &[u8] = b"field:";

/// Deletes dead letter `ARGV[1]` from `KEYS[1]` and, if it was there,
/// appends the message to partition stream `KEYS[2]`; returns the new
/// entry's ID, or nil when the dead letter was gone.
const REDRIVE: &str = r"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  return redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
end
return false
";

/// Microseconds since the Unix epoch, for a redriven message's `sent_us`.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// How many dead letters one read fetches while redriving them all.
const PAGE: usize = 100;

/// One entry of a stream's dead-letter stream (`{stream}:dead`): a message
/// a consumer gave up on, where it came from, and why.
///
/// Every field is read from the broker as it is. An entry some other
/// program appended to the dead-letter stream may lack any of them; its
/// accessors then return `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    id: String,
    fields: Fields,
}

impl DeadLetter {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| &v[..])
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Its entry ID in the dead-letter stream.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The partition stream it was read from, such as `orders:3`.
    pub fn source(&self) -> Option<&str> {
        self.text("source")
    }

    /// Its entry ID in that partition stream.
    pub fn source_id(&self) -> Option<&str> {
        self.text("id")
    }

    /// Why it was given up on: the handler's last error, or why the entry
    /// could not be run at all (not an ebbtide message, payload too large).
    pub fn error(&self) -> Option<&str> {
        self.text("error")
    }

    /// How many times the handler ran for it (0: it never ran).
    pub fn attempts(&self) -> Option<u32> {
        self.text("attempts").and_then(|a| a.parse().ok())
    }

    /// The consumer that gave up on it.
    pub fn consumer(&self) -> Option<&str> {
        self.text("consumer")
    }

    /// The message's key, when the entry was a message.
    pub fn key(&self) -> Option<&[u8]> {
        self.field(KEY_FIELD)
    }

    /// The message's payload, when the entry was a message.
    pub fn payload(&self) -> Option<&[u8]> {
        self.field(PAYLOAD_FIELD)
    }

    /// Whether it can be sent back: it has a key and a payload.
    pub fn is_redrivable(&self) -> bool {
        self.key().is_some() && self.payload().is_some()
    }

    /// The fields of an entry that was not an ebbtide message, as it had
    /// them (empty for a message).
    pub fn original_fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(ORIGINAL_PREFIX)?, &v[..])))
    }
}

/// What [`DeadLetters::redrive_all`] or [`redrive_if`](DeadLetters::redrive_if) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redriven {
    /// Dead letters sent back to their partitions (and removed from the
    /// dead-letter stream).
    pub sent: u64,
    /// The IDs of the chosen dead letters left where they are, because
    /// they are not messages (no key or no payload) and cannot be sent
    /// back.
    pub kept: Vec<String>,
    /// Dead letters passed over because they were not chosen (left where
    /// they are).
    pub passed: u64,
}

/// Reads, redrives and removes a [`Stream`]'s dead letters.
///
/// A consumer appends a message to `{stream}:dead` after its last failed
/// attempt, or unrun when it is not an ebbtide message or its payload is
/// too large, and acks it. Once whatever made it fail is fixed,
/// [`redrive`](Self::redrive) sends it back: appended to its key's
/// partition as a new message, after the messages sent since, and removed
/// from the dead letters in the same atomic step.
///
/// A call that fails because the connection broke (a dropped connection, a
/// failover) returns the error, and the next call connects again (a failure
/// to connect is then [`Error::Connect`]). A redrive cut off so is either
/// done or not done, never half: calling it again finds the letter gone
/// (`None`) or sends it.
///
/// ```no_run
/// use ebbtide_redis::{DeadLetters, Stream};
/// let mut dead = DeadLetters::connect("redis://127.0.0.1/", Stream::new("orders")?)?;
/// for letter in dead.list(None, 20)? {
///     println!("{} from {:?}: {:?}", letter.id(), letter.source(), letter.error());
/// }
/// let redriven = dead.redrive_all()?;
/// println!("{} sent back, {} kept", redriven.sent, redriven.kept.len());
/// # Ok::<(), ebbtide_redis::Error>(())
/// ```
pub struct DeadLetters {
    link: Link,
    stream: Stream,
    dead: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// Connects and checks the stream's partition count (redriven messages
    /// go to their key's partition, so it must be the stream's).
    ///
    /// # Errors
    /// [`Error::Connect`] when the URL is bad or the server unreachable;
    /// [`Error::PartitionMismatch`] when the stream has another count.
    pub fn connect(url: &str, stream: Stream) -> Result<Self, Error> {
        let mut link = Link::open(url)?;
        link.run(String::new, |con| Ok(stream.check_partitions(con)))??;
        Ok(DeadLetters {
            link,
            dead: stream.dead_letter_stream(),
            stream,
        })
    }

    /// How many dead letters there are.
    ///
    /// # Errors
    /// [`Error::Redis`].
    pub fn len(&mut self) -> Result<u64, Error> {
        let dead = &self.dead;
        self.link.run(
            || format!("counting the entries of {dead}"),
            |con| redis::cmd("XLEN").arg(dead).query(con),
        )
    }

    /// Whether there are none.
    ///
    /// # Errors
    /// [`Error::Redis`].
    pub fn is_empty(&mut self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    /// Up to `count` dead letters, oldest first: from the first, or from
    /// the one after `after` (the last ID of the page before).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a `count` of 0 or an `after` that is not an
    /// entry ID; [`Error::Redis`], also when an entry does not parse.
    pub fn list(&mut self, after: Option<&str>, count: usize) -> Result<Vec<DeadLetter>, Error> {
        if count == 0 {
            return Err(Error::invalid("count", 0, "at least 1"));
        }
        let start = match after {
            None => "-".to_string(),
            Some(id) => format!("({}", check_entry_id(id)?),
        };
        self.range(&start, "+", count)
    }

    /// Dead letter `id`, if it is there.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `id` is not an entry ID; [`Error::Redis`].
    pub fn get(&mut self, id: &str) -> Result<Option<DeadLetter>, Error> {
        let id = check_entry_id(id)?;
        Ok(self.range(id, id, 1)?.pop())
    }

    fn range(&mut self, start: &str, end: &str, count: usize) -> Result<Vec<DeadLetter>, Error> {
        let dead = &self.dead;
        let reply: redis::Value = self.link.run(
            || format!("reading {dead}"),
            |con| {
                redis::cmd("XRANGE")
                    .arg(dead)
                    .arg(start)
                    .arg(end)
                    .arg("COUNT")
                    .arg(count)
                    .query(con)
            },
        )?;
        let entries = raw_entries(&reply).map_err(|why| {
            Error::redis(
                format!("reading {}", self.dead),
                redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply", why)),
            )
        })?;
        Ok(entries
            .into_iter()
            .map(|(id, fields)| DeadLetter { id, fields })
            .collect())
    }

    /// Sends dead letter `id` back to its key's partition, as a new
    /// message after those sent since, and removes it from the dead
    /// letters: both or neither. Returns the new message's entry ID, or
    /// `None` when there is no dead letter `id` (already redriven or
    /// removed, by this process or another).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `id` is not an entry ID, or names a dead
    /// letter that is not a message (it has no key or no payload; it is
    /// kept); [`Error::Redis`].
    pub fn redrive(&mut self, id: &str) -> Result<Option<String>, Error> {
        let Some(letter) = self.get(id)? else {
            return Ok(None);
        };
        self.send_back(&letter)
    }

    fn send_back(&mut self, letter: &DeadLetter) -> Result<Option<String>, Error> {
        let cmd = self.redrive_cmd(letter, now_us())?;
        self.link.run(
            || format!("redriving dead letter {}", letter.id),
            |con| cmd.query(con),
        )
    }

    /// The script's call that redrives `letter`, stamped sent at `at`. It
    /// carries the script's text (`EVAL`, not `EVALSHA`), so it cannot fail
    /// for a server that forgot the script.
    fn redrive_cmd(&self, letter: &DeadLetter, at: u64) -> Result<redis::Cmd, Error> {
        let (key, payload) = self.message_of(letter)?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REDRIVE)
            .arg(2)
            .arg(&self.dead)
            .arg(self.stream.partition_stream(self.stream.partition_of(key)))
            .arg(&letter.id)
            .arg(KEY_FIELD)
            .arg(key)
            .arg(PAYLOAD_FIELD)
            .arg(payload)
            .arg(SENT_FIELD)
            .arg(at);
        Ok(cmd)
    }

    fn message_of<'l>(&self, letter: &'l DeadLetter) -> Result<(&'l [u8], &'l [u8]), Error> {
        match (letter.key(), letter.payload()) {
            (Some(key), Some(payload)) => Ok((key, payload)),
            _ => Err(Error::invalid(
                "dead letter",
                &letter.id,
                "a message with a key and a payload (this entry was not a message, so it cannot be sent back)",
            )),
        }
    }

    /// Redrives `letters` (all messages) in one round trip: their calls
    /// pipelined, in ID order. Returns how many were sent back.
    fn send_page(&mut self, letters: &[&DeadLetter]) -> Result<u64, Error> {
        if letters.is_empty() {
            return Ok(0);
        }
        let at = now_us();
        let mut pipe = redis::pipe();
        for letter in letters {
            pipe.add_command(self.redrive_cmd(letter, at)?);
        }
        let dead = &self.dead;
        let replies: Vec<Option<String>> = self.link.run(
            || format!("redriving the dead letters of {dead}"),
            |con| pipe.query(con),
        )?;
        // `None`: redriven or removed meanwhile.
        Ok(replies.iter().filter(|r| r.is_some()).count() as u64)
    }

    /// Redrives every dead letter that is a message, oldest first, a page
    /// of 100 a round trip, and keeps the rest. Dead letters appended
    /// meanwhile are redriven too, up to those there when the last page
    /// was read.
    ///
    /// # Errors
    /// [`Error::Redis`]; the dead letters redriven before it were sent
    /// back, the others are still there.
    pub fn redrive_all(&mut self) -> Result<Redriven, Error> {
        self.redrive_if(|_| true)
    }

    /// Redrives the dead letters `choose` picks, as
    /// [`redrive_all`](Self::redrive_all) does all of them: once the fault
    /// behind one kind of error is fixed, say, only the letters with that
    /// error. The others stay where they are.
    ///
    /// ```no_run
    /// # use ebbtide_redis::{DeadLetters, Stream};
    /// # let mut dead = DeadLetters::connect("redis://127.0.0.1/", Stream::new("orders")?)?;
    /// let done = dead.redrive_if(|l| l.error().is_some_and(|e| e.contains("timed out")))?;
    /// println!("{} sent back, {} left", done.sent, done.passed);
    /// # Ok::<(), ebbtide_redis::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`redrive_all`](Self::redrive_all).
    pub fn redrive_if(
        &mut self,
        mut choose: impl FnMut(&DeadLetter) -> bool,
    ) -> Result<Redriven, Error> {
        let mut done = Redriven::default();
        self.each_page(|this, page| {
            let mut chosen = Vec::with_capacity(page.len());
            for letter in page {
                if !choose(letter) {
                    done.passed += 1;
                } else if letter.is_redrivable() {
                    chosen.push(letter);
                } else {
                    done.kept.push(letter.id.clone());
                }
            }
            done.sent += this.send_page(&chosen)?;
            Ok(())
        })?;
        Ok(done)
    }

    /// Removes the dead letters `choose` picks, a page of 100 a round trip;
    /// returns how many it removed.
    ///
    /// # Errors
    /// [`Error::Redis`]; the dead letters removed before it are gone.
    pub fn remove_if(&mut self, mut choose: impl FnMut(&DeadLetter) -> bool) -> Result<u64, Error> {
        let mut removed = 0;
        self.each_page(|this, page| {
            let chosen: Vec<&str> = page
                .iter()
                .filter(|l| choose(l))
                .map(|l| l.id.as_str())
                .collect();
            if !chosen.is_empty() {
                let dead = &this.dead;
                let n: u64 = this.link.run(
                    || format!("removing dead letters of {dead}"),
                    |con| redis::cmd("XDEL").arg(dead).arg(&chosen).query(con),
                )?;
                removed += n;
            }
            Ok(())
        })?;
        Ok(removed)
    }

    /// Calls `f` on every page of [`PAGE`] dead letters, oldest first,
    /// until a read finds none after the last page.
    fn each_page(
        &mut self,
        mut f: impl FnMut(&mut Self, &[DeadLetter]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut after: Option<String> = None;
        loop {
            let page = self.list(after.as_deref(), PAGE)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.id.clone());
            f(self, &page)?;
        }
    }

    /// Removes dead letter `id`; returns whether it was there.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `id` is not an entry ID; [`Error::Redis`].
    pub fn remove(&mut self, id: &str) -> Result<bool, Error> {
        let id = check_entry_id(id)?;
        let dead = &self.dead;
        let n: u64 = self.link.run(
            || format!("removing dead letter {id}"),
            |con| redis::cmd("XDEL").arg(dead).arg(id).query(con),
        )?;
        Ok(n == 1)
    }
}

/// `id` when it is a stream entry ID (`<ms>-<seq>`, or `<ms>`), such as
/// [`DeadLetter::id`] gives.
///
/// ```
/// assert!(ebbtide_redis::check_entry_id("1700000000000-0").is_ok());
/// assert!(ebbtide_redis::check_entry_id("yesterday").is_err());
/// ```
///
/// # Errors
/// [`Error::Invalid`] naming `id` when it is not one.
pub fn check_entry_id(id: &str) -> Result<&str, Error> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match id.split_once('-') {
        Some((ms, seq)) => digits(ms) && digits(seq),
        None => digits(id),
    };
    if ok {
        Ok(id)
    } else {
        Err(Error::invalid(
            "entry ID",
            id,
            "a stream entry ID such as 1700000000000-0",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_checked() {
        for good in ["0", "1700000000000-0", "1-18446744073709551615"] {
            assert_eq!(check_entry_id(good).unwrap(), good);
        }
        for bad in ["", "-", "1-", "-1", "abc", "1-2-3", "1 -2", "+", "(1-0"] {
            let e = check_entry_id(bad).unwrap_err().to_string();
            assert!(
                e.contains("entry ID") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_dead_letter_reads_its_fields_and_an_invalid_entrys_originals() {
        let f = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        let message = DeadLetter {
            id: "5-0".into(),
            fields: vec![
                f("source", "s:3"),
                f("id", "4-1"),
                f("error", "boom"),
                f("attempts", "5"),
                f("consumer", "c1"),
                f("key", "k"),
                f("payload", "p"),
                f("redelivered", "0"),
            ],
        };
        assert_eq!(message.source(), Some("s:3"));
        assert_eq!(message.source_id(), Some("4-1"));
        assert_eq!(message.error(), Some("boom"));
        assert_eq!(message.attempts(), Some(5));
        assert_eq!(message.consumer(), Some("c1"));
        assert_eq!(
            (message.key(), message.payload()),
            (Some(&b"k"[..]), Some(&b"p"[..]))
        );
        assert!(message.is_redrivable());
        assert_eq!(message.original_fields().count(), 0);

        let invalid = DeadLetter {
            id: "6-0".into(),
            fields: vec![
                f("source", "s:1"),
                f("error", "not a message"),
                f("attempts", "0"),
                f("field:colour", "red"),
                f("field:key", "k2"),
            ],
        };
        assert!(!invalid.is_redrivable());
        assert_eq!(invalid.key(), None);
        assert_eq!(
            invalid.original_fields().collect::<Vec<_>>(),
            vec![(&b"colour"[..], &b"red"[..]), (&b"key"[..], &b"k2"[..])]
        );
        let foreign = DeadLetter {
            id: "7-0".into(),
            fields: vec![f("attempts", "many")],
        };
        assert_eq!((foreign.source(), foreign.attempts()), (None, None));
    }
}
