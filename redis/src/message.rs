//! A message as the handler sees it, and reading entries off the wire.

use crate::stream::{KEY_FIELD, PAYLOAD_FIELD, SENT_FIELD};
use redis::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A message read from a partition, handed to the consumer's handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub(crate) key: Vec<u8>,
    pub(crate) payload: Vec<u8>,
    pub(crate) id: String,
    pub(crate) partition: u32,
    pub(crate) sent_us: Option<u64>,
    pub(crate) redelivered: bool,
}

impl Message {
    /// Its key, as sent.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Its payload, as sent.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Its entry ID in its partition stream.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The partition it was read from.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// When the producer sent it, if it said.
    pub fn sent_at(&self) -> Option<SystemTime> {
        self.sent_us
            .map(|us| UNIX_EPOCH + Duration::from_micros(us))
    }

    /// Whether it was delivered before (to a consumer that did not ack it,
    /// typically one that crashed): the handler may have run for it.
    pub fn is_redelivery(&self) -> bool {
        self.redelivered
    }
}

/// An entry that is not an ebbtide message, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub(crate) id: String,
    pub(crate) reason: String,
    /// Its fields as they were, for the dead letter.
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One entry of an `XREADGROUP` reply.
pub(crate) type Entry = Result<Message, Malformed>;

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// The entries of a reply to `XREADGROUP … STREAMS <one stream> <id>`:
/// nil (a timeout) is none.
pub(crate) fn parse_reply(
    reply: &Value,
    partition: u32,
    redelivered: bool,
) -> Result<Vec<Entry>, String> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .iter()
            .map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => Ok(&pair[1]),
                other => Err(format!("unexpected stream in reply: {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(pairs) => pairs
            .iter()
            .map(|(_, v)| Ok(v))
            .collect::<Result<Vec<_>, String>>()?,
        other => return Err(format!("unexpected reply: {other:?}")),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            return Err(format!("unexpected entry list: {entries:?}"));
        };
        for entry in entries {
            out.push(parse_entry(entry, partition, redelivered)?);
        }
    }
    Ok(out)
}

/// An entry's fields, names and values, in their order.
pub(crate) type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The entries of an `XRANGE` reply: each one's ID and fields.
pub(crate) fn raw_entries(reply: &Value) -> Result<Vec<(String, Fields)>, String> {
    let Value::Array(entries) = reply else {
        return Err(format!("unexpected entry list: {reply:?}"));
    };
    entries
        .iter()
        .map(|entry| match split_entry(entry)? {
            (id, Some(fields)) => Ok((id, fields)),
            (id, None) => Err(format!("entry {id} without fields")),
        })
        .collect()
}

/// An entry's ID and fields; `None` for the fields of a pending entry
/// deleted from the stream since it was read.
fn split_entry(entry: &Value) -> Result<(String, Option<Fields>), String> {
    let Value::Array(parts) = entry else {
        return Err(format!("unexpected entry: {entry:?}"));
    };
    let id = parts
        .first()
        .and_then(bytes)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| format!("entry without an ID: {entry:?}"))?;
    let fields = match parts.get(1) {
        None | Some(Value::Nil) => None,
        Some(Value::Array(f)) => Some(
            f.chunks(2)
                .filter_map(|kv| Some((bytes(kv.first()?)?, bytes(kv.get(1)?)?)))
                .collect(),
        ),
        Some(Value::Map(m)) => Some(
            m.iter()
                .filter_map(|(k, v)| Some((bytes(k)?, bytes(v)?)))
                .collect(),
        ),
        Some(other) => return Err(format!("unexpected fields: {other:?}")),
    };
    Ok((id, fields))
}

fn parse_entry(entry: &Value, partition: u32, redelivered: bool) -> Result<Entry, String> {
    match split_entry(entry)? {
        (id, Some(fields)) => Ok(fields_to_message(id, fields, partition, redelivered)),
        // A pending entry deleted from the stream since it was read.
        (id, None) => Ok(Err(Malformed {
            id,
            reason: "the entry was deleted from the stream before it was processed".into(),
            fields: Vec::new(),
        })),
    }
}

fn fields_to_message(
    id: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    partition: u32,
    redelivered: bool,
) -> Entry {
    let find = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.clone())
    };
    let (key, payload) = match (find(KEY_FIELD), find(PAYLOAD_FIELD)) {
        (Some(k), Some(p)) => (k, p),
        (k, p) => {
            let missing: Vec<&str> = [(KEY_FIELD, k.is_none()), (PAYLOAD_FIELD, p.is_none())]
                .iter()
                .filter(|(_, gone)| *gone)
                .map(|(n, _)| *n)
                .collect();
            return Err(Malformed {
                reason: format!(
                    "entry {id} is not an ebbtide message: no {} field",
                    missing.join(" or ")
                ),
                id,
                fields,
            });
        }
    };
    let sent_us = find(SENT_FIELD)
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok());
    Ok(Message {
        key,
        payload,
        id,
        partition,
        sent_us,
        redelivered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_messages_and_names_what_is_missing() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s:3"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![
                        bulk("key"),
                        bulk("k"),
                        bulk("payload"),
                        bulk("p"),
                        bulk("sent_us"),
                        bulk("7"),
                    ]),
                ]),
                Value::Array(vec![
                    bulk("2-0"),
                    Value::Array(vec![bulk("payload"), bulk("p")]),
                ]),
                Value::Array(vec![bulk("3-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_reply(&reply, 3, false).unwrap();
        assert_eq!(entries.len(), 3);
        let m = entries[0].as_ref().unwrap();
        assert_eq!(
            (m.key(), m.payload(), m.id(), m.partition()),
            (&b"k"[..], &b"p"[..], "1-0", 3)
        );
        assert_eq!(m.sent_us, Some(7));
        let bad = entries[1].as_ref().unwrap_err();
        assert_eq!(
            bad.reason,
            "entry 2-0 is not an ebbtide message: no key field"
        );
        assert_eq!(bad.fields, vec![(b"payload".to_vec(), b"p".to_vec())]);
        assert!(entries[2].as_ref().unwrap_err().reason.contains("deleted"));
        assert_eq!(parse_reply(&Value::Nil, 0, false).unwrap(), Vec::new());
        assert!(parse_reply(&Value::Int(3), 0, false).is_err());
    }
}
