//! Trimming what every group is done with: a partition stream keeps only
//! the entries some group still needs — below no group's oldest pending
//! entry, and not yet delivered to some group — so acked messages do not
//! pile up in Redis.
//!
//! One Lua script does it, so that the groups' positions it reads and the
//! trim it makes are one moment's: for each group, the first entry it
//! still needs is its oldest pending entry (`XPENDING`), or, with none
//! pending, the entry after its last delivered one; the stream is trimmed
//! below the earliest of these (`XTRIM … MINID`). A group's needs only
//! move forward (reads deliver later entries, acks remove pending ones),
//! so nothing a group needs is trimmed. A stream without groups is left
//! alone.
//!
//! While the consumer runs, trims are approximate (`MINID ~`): Redis then
//! frees only whole nodes of its stream (100 entries each by default),
//! which costs it far less than deleting entries one by one. The last
//! trim, as the consumer stops, is exact.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SCRIPT: &str = r"
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local best_ms, best_seq
for _, g in ipairs(groups) do
  local name, pending, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'pending' then pending = g[i + 1]
    elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local ms, seq
  if pending > 0 then
    local summary = redis.call('XPENDING', KEYS[1], name)
    ms, seq = string.match(summary[2], '^(%d+)-(%d+)$')
    ms, seq = tonumber(ms), tonumber(seq)
  else
    ms, seq = string.match(last, '^(%d+)-(%d+)$')
    ms, seq = tonumber(ms), tonumber(seq) + 1
  end
  if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
    best_ms, best_seq = ms, seq
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1], string.format('%d-%d', best_ms, best_seq))
";

/// Trims the partitions a consumer acked in, each at most once per
/// `every`.
pub(crate) struct Trimmer {
    script: redis::Script,
    every: Option<Duration>,
    /// Partitions acked in since their last trim, with that trim's time.
    due: BTreeMap<u32, Option<Instant>>,
    last: BTreeMap<u32, Instant>,
}

impl Trimmer {
    pub(crate) fn new(every: Option<Duration>) -> Trimmer {
        Trimmer {
            script: redis::Script::new(SCRIPT),
            every,
            due: BTreeMap::new(),
            last: BTreeMap::new(),
        }
    }

    /// Notes that `p` has new acks.
    pub(crate) fn acked(&mut self, p: u32) {
        if self.every.is_some() {
            let last = self.last.get(&p).copied();
            self.due.entry(p).or_insert(last);
        }
    }

    /// Trims each partition with new acks whose last trim is at least
    /// `every` ago (`all`: whatever its last trim, as the consumer stops);
    /// calls `trimmed(p, n)` with the entries removed. A partition whose
    /// trim fails stays due.
    pub(crate) fn run(
        &mut self,
        con: &mut redis::Connection,
        partition_stream: impl Fn(u32) -> String,
        all: bool,
        mut trimmed: impl FnMut(u32, u64),
    ) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        let ready: Vec<u32> = self
            .due
            .iter()
            .filter(|(_, last)| all || last.is_none_or(|t| now.duration_since(t) >= every))
            .map(|(&p, _)| p)
            .collect();
        for p in ready {
            let how = if all { "=" } else { "~" };
            let n: redis::RedisResult<u64> =
                self.script.key(partition_stream(p)).arg(how).invoke(con);
            if let Ok(n) = n {
                self.due.remove(&p);
                self.last.insert(p, now);
                trimmed(p, n);
            }
        }
    }
}
