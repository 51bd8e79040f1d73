//! Partition leases and membership: who reads which partition.
//!
//! Each partition has a lease key holding its owner's name with a time to
//! live. An owner renews with compare-and-extend and releases with
//! compare-and-delete, so it never touches a lease it lost. Members
//! announce themselves in a sorted set scored by expiry (Redis's clock),
//! and each computes its fair share from the live members: the policy is
//! [`share`], a pure function.

use crate::error::Error;

/// How many of `partitions` the member at `index` (in name order) of
/// `members` should own: an equal split, the first `partitions mod
/// members` members taking one more.
pub(crate) fn share(partitions: u32, members: usize, index: usize) -> u32 {
    let members = members.max(1) as u32;
    let index = index as u32;
    partitions / members + u32::from(index < partitions % members)
}

/// Where a member starts looking for free partitions, so that members
/// joining at once try different ones first.
pub(crate) fn first_choice(partitions: u32, members: usize, index: usize) -> u32 {
    (index as u64 * u64::from(partitions) / members.max(1) as u64) as u32
}

/// Which of its owned partitions a member over its share gives up: the
/// ones it took last in partition order (highest first), so that the
/// choice is stable between rounds.
pub(crate) fn to_release(owned: &[u32], share: u32) -> Vec<u32> {
    let mut owned = owned.to_vec();
    owned.sort_unstable();
    owned.split_off((share as usize).min(owned.len()))
}

pub(crate) struct Scripts {
    heartbeat: redis::Script,
    acquire: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    leave: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            // Announce (expiry on Redis's clock), forget the expired, list
            // the live members in name order.
            heartbeat: redis::Script::new(
                "local t = redis.call('TIME') \
                 local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
                 redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) \
                 redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) \
                 local m = redis.call('ZRANGE', KEYS[1], 0, -1) \
                 table.sort(m) \
                 return m",
            ),
            // Free, or already this consumer's: a lease whose taking
            // succeeded in Redis but whose reply was lost (a dropped
            // connection), or that an earlier run under the same name held,
            // is taken at once, not after it expires.
            acquire: redis::Script::new(
                "local v = redis.call('GET', KEYS[1]) \
                 if not v then \
                   redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
                   return 1 \
                 end \
                 if v == ARGV[1] then \
                   return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
                 end \
                 return 0",
            ),
            renew: redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                   return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
                 end \
                 return 0",
            ),
            release: redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                   return redis.call('DEL', KEYS[1]) \
                 end \
                 return 0",
            ),
            leave: redis::Script::new("return redis.call('ZREM', KEYS[1], ARGV[1])"),
        }
    }

    /// Announces `me` for `ttl_ms` and returns the live members, sorted.
    pub(crate) fn heartbeat(
        &self,
        con: &mut redis::Connection,
        members_key: &str,
        me: &str,
        ttl_ms: u64,
    ) -> Result<Vec<String>, Error> {
        self.heartbeat
            .key(members_key)
            .arg(me)
            .arg(ttl_ms)
            .invoke(con)
            .map_err(|e| Error::redis("announcing the consumer", e))
    }

    /// Takes a lease that is free or already `me`'s.
    pub(crate) fn acquire(
        &self,
        con: &mut redis::Connection,
        lease: &str,
        me: &str,
        ttl_ms: u64,
    ) -> Result<bool, Error> {
        let n: i64 = self
            .acquire
            .key(lease)
            .arg(me)
            .arg(ttl_ms)
            .invoke(con)
            .map_err(|e| Error::redis("taking a partition lease", e))?;
        Ok(n == 1)
    }

    /// Extends a lease `me` still holds; `false` when it is someone
    /// else's or gone.
    pub(crate) fn renew(
        &self,
        con: &mut redis::Connection,
        lease: &str,
        me: &str,
        ttl_ms: u64,
    ) -> Result<bool, Error> {
        let n: i64 = self
            .renew
            .key(lease)
            .arg(me)
            .arg(ttl_ms)
            .invoke(con)
            .map_err(|e| Error::redis("renewing a partition lease", e))?;
        Ok(n == 1)
    }

    /// Deletes a lease `me` still holds.
    pub(crate) fn release(
        &self,
        con: &mut redis::Connection,
        lease: &str,
        me: &str,
    ) -> Result<bool, Error> {
        let n: i64 = self
            .release
            .key(lease)
            .arg(me)
            .invoke(con)
            .map_err(|e| Error::redis("releasing a partition lease", e))?;
        Ok(n == 1)
    }

    /// Withdraws `me` from the members.
    pub(crate) fn leave(
        &self,
        con: &mut redis::Connection,
        members_key: &str,
        me: &str,
    ) -> Result<(), Error> {
        self.leave
            .key(members_key)
            .arg(me)
            .invoke::<i64>(con)
            .map(drop)
            .map_err(|e| Error::redis("leaving the consumer group", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for partitions in 1..=40u32 {
            for members in 1..=12usize {
                let shares: Vec<u32> = (0..members)
                    .map(|i| share(partitions, members, i))
                    .collect();
                assert_eq!(
                    shares.iter().sum::<u32>(),
                    partitions,
                    "{partitions}/{members}"
                );
                let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(hi - lo <= 1, "{partitions}/{members}: {shares:?}");
            }
        }
        assert_eq!(share(16, 3, 0), 6);
        assert_eq!(share(16, 3, 2), 5);
        assert_eq!(share(16, 0, 0), 16);
    }

    #[test]
    fn first_choices_are_spread() {
        assert_eq!(
            (0..4).map(|i| first_choice(16, 4, i)).collect::<Vec<_>>(),
            [0, 4, 8, 12]
        );
    }

    #[test]
    fn release_gives_up_the_highest() {
        assert_eq!(to_release(&[9, 1, 5, 3], 2), [5, 9]);
        assert_eq!(to_release(&[1, 2], 3), Vec::<u32>::new());
        assert_eq!(to_release(&[4, 2], 0), [2, 4]);
    }
}
