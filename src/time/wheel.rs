//! A hierarchical hashed timing wheel (as Kafka's, Netty's and tokio's
//! timers): level 0 has a slot per tick for the current block of 64 ticks
//! and the next; levels 1–5 have 64 slots each, level `l`'s slot spanning
//! `64^l` ticks, so the wheel spans `64^6` ticks (795 days at 1 ms). Insert
//! and cancel are O(1); a poll visits only occupied slots (a bit mask per
//! level finds the next one), and an entry cascades at most five times on
//! its way to level 0.
//!
//! Entries live in one slab; a slot is a vector of slab indices (an entry
//! knows its position, so cancel is a swap-remove): a pending timer costs
//! one slab node and four bytes of its slot, and a cascade walks a
//! contiguous array rather than a linked list through the slab.
//!
//! Cascading early: the level-1 slot of the *next* block is moved down to
//! level 0 a bounded number of entries per poll while the current block
//! runs ([`PRECASCADE`]), so that a busy wheel (a million timers a second)
//! does not stall for the whole slot at the block's first tick. Whatever is
//! left is cascaded at that tick, as in any hierarchical wheel.
//!
//! Pure data: no clock, no lock, no thread. Time is a tick count the
//! caller supplies; the wheel never fires an entry before its tick.

const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
/// Level 0's slots: the current block of `SLOTS` ticks and the next.
const SLOTS0: usize = 2 * SLOTS;
/// The wheel's levels.
pub(crate) const LEVELS: usize = 6;
/// Ticks the wheel holds ahead of its time: an entry due this far or
/// farther ahead is refused. One top-level slot short of the full `64^6`,
/// so that no slot ever holds entries of two laps (the wheel's own slot at
/// any level holds entries of the current lap only).
pub(crate) const SPAN: u64 =
    (1 << (BITS as usize * LEVELS)) - (1 << (BITS as usize * (LEVELS - 1)));
/// Entries moved from the next block's level-1 slot to level 0 per call of
/// `precascade` (the driver calls it once a tick while timers are due: a
/// block of 64 ticks can take 64 × this many, a million timers a second
/// with room to spare).
pub(crate) const PRECASCADE: usize = 2048;
const NIL: u32 = u32::MAX;
/// `place` of a free node.
const FREE: u16 = u16::MAX;

/// The place (index into the slots) of `slot` of `level`.
fn place(level: usize, slot: usize) -> usize {
    if level == 0 {
        slot
    } else {
        SLOTS0 + (level - 1) * SLOTS + slot
    }
}

/// The level and slot of a place.
fn unplace(place: usize) -> (usize, usize) {
    if place < SLOTS0 {
        (0, place)
    } else {
        let p = place - SLOTS0;
        (1 + p / SLOTS, p % SLOTS)
    }
}

/// Names a pending entry for [`Wheel::cancel`]. A stale id (its entry fired
/// or was cancelled) names nothing: the generation tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerId {
    index: u32,
    gen: u32,
}

impl TimerId {
    /// The id as one word (for an atomic cell).
    pub(crate) fn to_bits(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.index)
    }

    /// The id from [`to_bits`](Self::to_bits).
    pub(crate) fn from_bits(bits: u64) -> Self {
        TimerId {
            index: bits as u32,
            gen: (bits >> 32) as u32,
        }
    }
}

struct Node<P> {
    due: u64,
    /// Linked: its index in its slot's vector. Free: the next free node.
    pos: u32,
    gen: u32,
    /// Its slot (see `place`), or `FREE`.
    place: u16,
    payload: Option<P>,
}

/// The wheel. `P` is what an entry carries.
pub(crate) struct Wheel<P> {
    /// The wheel's time: every entry due at or before it has fired.
    elapsed: u64,
    /// Level 0's `SLOTS0` slots, then 64 per level above: the slab indices
    /// of their entries.
    slots: Vec<Vec<u32>>,
    /// Level 0: a bit per non-empty slot.
    occupied0: u128,
    /// Levels 1–5 (index 0 unused): a bit per non-empty slot.
    occupied: [u64; LEVELS],
    nodes: Vec<Node<P>>,
    /// Head of the free-node list (linked through `pos`).
    free: u32,
    len: usize,
    /// An empty vector with capacity, swapped in for a slot being polled.
    spare: Vec<u32>,
}

/// Why an entry was not inserted; the payload is handed back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused<P> {
    /// Due at or before the wheel's time: fire it now.
    Due(P),
    /// Due `SPAN` ticks or more ahead.
    TooFar(P),
}

/// The level an entry due at `due` sits on while the wheel is at
/// `elapsed`: 0 within the current block or the next; otherwise the level
/// of the highest digit (base 64) in which they differ.
fn level_for(elapsed: u64, due: u64) -> usize {
    let block = elapsed & !(SLOTS as u64 - 1);
    if due < block + SLOTS0 as u64 {
        return 0;
    }
    let masked = (elapsed ^ due) | (SLOTS as u64 - 1);
    let significant = 63 - masked.leading_zeros() as usize;
    (significant / BITS as usize).clamp(1, LEVELS - 1)
}

fn slot_for(due: u64, level: usize) -> usize {
    if level == 0 {
        (due as usize) & (SLOTS0 - 1)
    } else {
        ((due >> (level as u32 * BITS)) as usize) & (SLOTS - 1)
    }
}

impl<P> Default for Wheel<P> {
    fn default() -> Self {
        Self::new(0)
    }
}

impl<P> Wheel<P> {
    /// An empty wheel whose time is `now`.
    pub(crate) fn new(now: u64) -> Self {
        Wheel {
            elapsed: now,
            slots: (0..SLOTS0 + (LEVELS - 1) * SLOTS)
                .map(|_| Vec::new())
                .collect(),
            occupied0: 0,
            occupied: [0; LEVELS],
            nodes: Vec::new(),
            free: NIL,
            len: 0,
            spare: Vec::new(),
        }
    }

    /// Pending entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The wheel's time.
    pub(crate) fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Adds an entry due at tick `due`.
    ///
    /// # Errors
    /// [`Refused::Due`] when `due <= elapsed` (the caller fires it now),
    /// [`Refused::TooFar`] when `due - elapsed >= SPAN`.
    pub(crate) fn insert(&mut self, due: u64, payload: P) -> Result<TimerId, Refused<P>> {
        if due <= self.elapsed {
            return Err(Refused::Due(payload));
        }
        if due - self.elapsed >= SPAN {
            return Err(Refused::TooFar(payload));
        }
        let index = if self.free != NIL {
            let index = self.free;
            let node = &mut self.nodes[index as usize];
            self.free = node.pos;
            node.due = due;
            node.payload = Some(payload);
            index
        } else {
            let index = u32::try_from(self.nodes.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("fewer than 2^32 - 1 pending timers");
            self.nodes.push(Node {
                due,
                pos: NIL,
                gen: 0,
                place: FREE,
                payload: Some(payload),
            });
            index
        };
        self.link(index);
        self.len += 1;
        Ok(TimerId {
            index,
            gen: self.nodes[index as usize].gen,
        })
    }

    /// Removes a pending entry and returns its payload; `None` if `id` is
    /// stale.
    pub(crate) fn cancel(&mut self, id: TimerId) -> Option<P> {
        let node = self.nodes.get(id.index as usize)?;
        if node.gen != id.gen || node.place == FREE {
            return None;
        }
        self.unlink(id.index);
        self.len -= 1;
        Some(self.release(id.index))
    }

    /// The tick at which the next poll may fire something (a lower bound:
    /// a higher level's slot may only cascade), or `None` when empty.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.next_expiration().map(|(_, _, deadline)| deadline)
    }

    /// Advances the wheel to `now`, calling `fire(due, payload)` for every
    /// entry due at or before `now`, in order of due tick (entries due at
    /// the same tick in no set order). Call [`precascade`](Self::precascade)
    /// when the due entries are on their way.
    pub(crate) fn poll(&mut self, now: u64, mut fire: impl FnMut(u64, P)) {
        while let Some((level, slot, deadline)) = self.next_expiration() {
            if deadline > now {
                break;
            }
            self.elapsed = self.elapsed.max(deadline);
            // Take the slot's entries whole, then fire or cascade each.
            let at = place(level, slot);
            let spare = std::mem::take(&mut self.spare);
            let mut list = std::mem::replace(&mut self.slots[at], spare);
            self.clear_bit(level, slot);
            for &index in &list {
                let due = self.nodes[index as usize].due;
                if due <= self.elapsed {
                    self.len -= 1;
                    let payload = self.release(index);
                    fire(due, payload);
                } else {
                    self.link(index);
                }
            }
            list.clear();
            self.spare = list;
        }
        self.elapsed = self.elapsed.max(now);
    }

    /// Moves up to [`PRECASCADE`] entries of the next block's level-1 slot
    /// down to level 0 (their due ticks fall in the next block, which level
    /// 0 covers), so that the block's first tick finds little to cascade.
    /// Within one level-2 block only: the next block's slot is then the one
    /// after the wheel's own.
    pub(crate) fn precascade(&mut self) {
        let budget = PRECASCADE;
        let digit = ((self.elapsed >> BITS) as usize) & (SLOTS - 1);
        if digit == SLOTS - 1 {
            return;
        }
        let next = digit + 1;
        if self.occupied[1] & (1 << next) == 0 {
            return;
        }
        let at = place(1, next);
        for _ in 0..budget {
            let Some(index) = self.slots[at].pop() else {
                break;
            };
            self.link(index);
        }
        if self.slots[at].is_empty() {
            self.clear_bit(1, next);
        }
    }

    /// Removes every entry, in order of due tick.
    pub(crate) fn drain(&mut self) -> Vec<(u64, P)> {
        let mut out = Vec::with_capacity(self.len);
        self.poll(u64::MAX, |due, p| out.push((due, p)));
        out
    }

    /// The occupied slot that expires first, at any level, and the tick at
    /// which it does (a level-0 slot: its entries' tick; above: the start of
    /// the block its entries fall in, when they cascade).
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        let mut best: Option<(usize, usize, u64)> = None;
        if self.occupied0 != 0 {
            // Level 0 holds ticks `elapsed ..= elapsed + 127`: the wheel's
            // own slot holds entries due now (a cascade at this tick may
            // just have put them there).
            let now_slot = (self.elapsed as usize) & (SLOTS0 - 1);
            let slot = (now_slot
                + self
                    .occupied0
                    .rotate_right(now_slot as u32)
                    .trailing_zeros() as usize)
                & (SLOTS0 - 1);
            let ahead = (slot + SLOTS0 - now_slot) & (SLOTS0 - 1);
            best = Some((0, slot, self.elapsed + ahead as u64));
        }
        for level in 1..LEVELS {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            let shift = level as u32 * BITS;
            let now_slot = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
            // From the wheel's own slot (which holds entries of this lap
            // only, see `SPAN`: due now, after a cascade at this tick).
            let slot = (now_slot
                + occupied.rotate_right(now_slot as u32).trailing_zeros() as usize)
                & (SLOTS - 1);
            let level_span = 1u64 << (shift + BITS);
            let level_start = self.elapsed & !(level_span - 1);
            let mut deadline = level_start + ((slot as u64) << shift);
            if slot < now_slot {
                // Behind the wheel's position: the next lap.
                deadline += level_span;
            }
            // On a tie the higher level goes first: its entries cascade
            // before the wheel's time reaches their slot's start (once
            // there, the wheel's own slot would read as a lap ahead).
            if best.map_or(true, |(_, _, d)| deadline <= d) {
                best = Some((level, slot, deadline));
            }
        }
        best
    }

    fn clear_bit(&mut self, level: usize, slot: usize) {
        if level == 0 {
            self.occupied0 &= !(1u128 << slot);
        } else {
            self.occupied[level] &= !(1u64 << slot);
        }
    }

    fn link(&mut self, index: u32) {
        let due = self.nodes[index as usize].due;
        let level = level_for(self.elapsed, due);
        let slot = slot_for(due, level);
        let at = place(level, slot);
        let list = &mut self.slots[at];
        let node = &mut self.nodes[index as usize];
        node.pos = list.len() as u32;
        node.place = at as u16;
        list.push(index);
        if level == 0 {
            self.occupied0 |= 1u128 << slot;
        } else {
            self.occupied[level] |= 1u64 << slot;
        }
    }

    fn unlink(&mut self, index: u32) {
        let (pos, at) = {
            let n = &self.nodes[index as usize];
            (n.pos as usize, n.place as usize)
        };
        let list = &mut self.slots[at];
        list.swap_remove(pos);
        if let Some(&moved) = list.get(pos) {
            self.nodes[moved as usize].pos = pos as u32;
        }
        if list.is_empty() {
            let (level, slot) = unplace(at);
            self.clear_bit(level, slot);
        }
    }

    /// Frees a node (already unlinked) and returns its payload.
    fn release(&mut self, index: u32) -> P {
        let node = &mut self.nodes[index as usize];
        node.place = FREE;
        node.gen = node.gen.wrapping_add(1);
        node.pos = self.free;
        self.free = index;
        node.payload
            .take()
            .expect("a linked node holds its payload")
    }
}

/// The memory one pending entry carrying `P` occupies in the slab.
#[cfg(all(test, not(loom)))]
pub(crate) const fn node_bytes<P>() -> usize {
    std::mem::size_of::<Node<P>>()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn fire_all(wheel: &mut Wheel<u32>, now: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        wheel.poll(now, |due, p| out.push((due, p)));
        wheel.precascade();
        out
    }

    #[test]
    fn fires_in_due_order_and_never_early() {
        let mut wheel = Wheel::new(0);
        let dues = [5u64, 1, 64, 63, 4096, 70, 1, 262_144, 100_000];
        for (i, &d) in dues.iter().enumerate() {
            wheel.insert(d, i as u32).unwrap();
        }
        assert_eq!(fire_all(&mut wheel, 0), vec![]);
        assert_eq!(fire_all(&mut wheel, 1), vec![(1, 1), (1, 6)]);
        assert_eq!(fire_all(&mut wheel, 63), vec![(5, 0), (63, 3)]);
        assert_eq!(fire_all(&mut wheel, 4095), vec![(64, 2), (70, 5)]);
        assert_eq!(fire_all(&mut wheel, 4096), vec![(4096, 4)]);
        assert_eq!(fire_all(&mut wheel, 262_143), vec![(100_000, 8)]);
        assert_eq!(wheel.len(), 1);
        assert_eq!(fire_all(&mut wheel, u64::MAX / 2), vec![(262_144, 7)]);
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn refuses_due_and_too_far() {
        let mut wheel = Wheel::new(10);
        assert_eq!(wheel.insert(10, 1), Err(Refused::Due(1)));
        assert_eq!(wheel.insert(10 + SPAN, 2), Err(Refused::TooFar(2)));
        assert!(wheel.insert(9 + SPAN, 3).is_ok());
        assert_eq!(fire_all(&mut wheel, 8 + SPAN), vec![]);
        assert_eq!(fire_all(&mut wheel, 9 + SPAN), vec![(9 + SPAN, 3)]);
    }

    #[test]
    fn cancel_is_exact_and_stale_ids_name_nothing() {
        let mut wheel = Wheel::new(0);
        let a = wheel.insert(100, 1).unwrap();
        let b = wheel.insert(100, 2).unwrap();
        let c = wheel.insert(100, 3).unwrap();
        assert_eq!(wheel.cancel(b), Some(2));
        assert_eq!(wheel.cancel(b), None);
        // The freed node is reused under a new generation.
        let d = wheel.insert(100, 4).unwrap();
        assert_eq!(wheel.cancel(b), None);
        assert_eq!(
            fire_all(&mut wheel, 100),
            vec![(100, 1), (100, 3), (100, 4)]
        );
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.cancel(c), None);
        assert_eq!(wheel.cancel(d), None);
        assert_eq!(TimerId::from_bits(d.to_bits()), d);
    }

    #[test]
    fn next_deadline_bounds_the_next_fire() {
        let mut wheel = Wheel::new(0);
        assert_eq!(wheel.next_deadline(), None);
        wheel.insert(5000, 1).unwrap();
        let first = wheel.next_deadline().unwrap();
        assert!(first <= 5000);
        assert_eq!(fire_all(&mut wheel, first - 1), vec![]);
        assert_eq!(fire_all(&mut wheel, 4999), vec![]);
        assert_eq!(wheel.next_deadline(), Some(5000));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Cancel(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop_oneof![0u64..70, 0u64..5000, 0u64..300_000, 0u64..SPAN]
                .prop_map(Op::Insert),
            1 => (0usize..64).prop_map(Op::Cancel),
            3 => prop_oneof![0u64..3, 0u64..100, 0u64..10_000, 0u64..2_000_000]
                .prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Against a sorted map: the same entries fire, at the same polls,
        /// in due order, none early, none twice; cancel removes exactly.
        #[test]
        fn agrees_with_a_sorted_map(start in 0u64..1 << 40, ops in prop::collection::vec(op(), 1..200)) {
            let mut wheel = Wheel::new(start);
            let mut model: BTreeMap<(u64, u32), ()> = BTreeMap::new();
            let mut ids: Vec<(TimerId, u64, u32)> = Vec::new();
            let mut now = start;
            let mut next = 0u32;
            for op in ops {
                match op {
                    Op::Insert(delta) => {
                        let due = now + delta;
                        match wheel.insert(due, next) {
                            Ok(id) => {
                                model.insert((due, next), ());
                                ids.push((id, due, next));
                            }
                            Err(Refused::Due(p)) => prop_assert!(due <= now && p == next),
                            Err(Refused::TooFar(_)) => prop_assert!(delta >= SPAN),
                        }
                        next += 1;
                    }
                    Op::Cancel(i) if !ids.is_empty() => {
                        let (id, due, p) = ids[i % ids.len()];
                        let in_model = model.remove(&(due, p)).is_some();
                        prop_assert_eq!(wheel.cancel(id), in_model.then_some(p));
                    }
                    Op::Cancel(_) => {}
                    Op::Advance(delta) => {
                        now += delta;
                        let mut fired = fire_all(&mut wheel, now);
                        prop_assert!(fired.windows(2).all(|w| w[0].0 <= w[1].0));
                        fired.sort_unstable();
                        let expected: Vec<(u64, u32)> = model
                            .range(..(now + 1, 0))
                            .map(|(&k, _)| k)
                            .collect();
                        for k in &expected {
                            model.remove(k);
                        }
                        prop_assert_eq!(fired, expected);
                    }
                }
                prop_assert_eq!(wheel.len(), model.len());
                // The driver sleeps until `next_deadline`: never past the
                // earliest due entry.
                if let Some((&(first, _), _)) = model.iter().next() {
                    let next = wheel.next_deadline().unwrap();
                    prop_assert!(next <= first, "sleeps to {} past {}", next, first);
                    prop_assert!(next > now || first <= now + 1);
                }
            }
        }
    }
}
