//! Delayed reuse: a freed block waits in its thread's quarantine before its slot can be
//! handed out again. Two stages, as in hardened_malloc: a small array where a new entry
//! replaces a random occupant (so the delay is unpredictable), then a FIFO ring bounded in
//! entries and bytes (so the delay has a floor). Entries are slot addresses of small blocks.
//!
//! Slots of up to `FAST_MAX` bytes (the classes of the fast paths) have stages of their own,
//! counted in entries only: with the byte budget at least `(cap + RANDOM_STAGE) * FAST_MAX`
//! (the default: 160 KiB of 1 MiB) they can never exceed it, so their push is a swap in the
//! random stage and a swap in a fixed-length ring, with no sizes kept (the thread cache
//! decides, `TCache::fast`). Each block still waits at least `cap` later frees of its kind.

use crate::options::MAX_QUARANTINE;
#[cfg(test)]
use crate::rand::Rng;

pub const RANDOM_STAGE: usize = 16;

/// A small stage's entry holds the slot's region above its (untagged) address, which is
/// below 2^47 (the heap's windows end at 40 TiB): the slot leaves without decoding its
/// address again.
const REGION_SHIFT: u32 = 47;

#[inline(always)]
fn small_entry(p: usize, region: usize) -> usize {
    p | region << REGION_SHIFT
}

/// The slot address of a small stage's entry.
#[inline(always)]
fn small_slot(e: usize) -> usize {
    e & ((1 << REGION_SHIFT) - 1)
}
const _: () = assert!(RANDOM_STAGE.is_power_of_two());

/// How long the ring may grow: at most `cap` entries and `budget` bytes.
#[derive(Clone, Copy)]
pub struct Limits {
    pub cap: usize,
    pub budget: usize,
}

pub struct Quarantine {
    random: [usize; RANDOM_STAGE],
    random_size: [u32; RANDOM_STAGE],
    random_bytes: usize,
    ring: [usize; RING],
    ring_size: [u32; RING],
    head: usize,
    len: usize,
    ring_bytes: usize,
    /// Index mask of the part of the ring in use: the smallest power of two above the
    /// `quarantine` option, so the entries in use stay in a few cache lines (cycling through
    /// the whole ring missed the cache on most frees).
    mask: usize,
    /// The small slots' stages: a random stage, then a ring of exactly `small_cap` entries
    /// (0 = empty), the next to replace at `small_head`.
    small_random: [usize; RANDOM_STAGE],
    small_ring: [usize; RING],
    small_head: usize,
    small_cap: usize,
}

/// Ring capacity: room for the largest `quarantine` option and the one entry that is
/// momentarily over it (a power of two, so indices are masks).
const RING: usize = 2 * MAX_QUARANTINE as usize;
const _: () = assert!(RING.is_power_of_two());

impl Quarantine {
    pub const fn new() -> Self {
        Quarantine {
            random: [0; RANDOM_STAGE],
            random_size: [0; RANDOM_STAGE],
            random_bytes: 0,
            ring: [0; RING],
            ring_size: [0; RING],
            head: 0,
            len: 0,
            ring_bytes: 0,
            mask: RING - 1,
            small_random: [0; RANDOM_STAGE],
            small_ring: [0; RING],
            small_head: 0,
            small_cap: 1,
        }
    }

    /// Use only as much of the ring as a quarantine of `cap` entries needs. The quarantine
    /// must be empty (a new cache).
    pub fn size_for(&mut self, cap: usize) {
        debug_assert!(self.len == 0);
        self.head = 0;
        self.mask = (cap + 1).next_power_of_two().min(RING) - 1;
        self.small_head = 0;
        self.small_cap = cap.clamp(1, RING);
    }

    /// Quarantine a small slot `p` of `region` in place of the occupant `j` (random) of the
    /// small random stage, which enters the small ring; return the block the ring lets go
    /// and its region (p = 0: none, while the ring fills). A block leaves exactly `cap` ring
    /// entries after it entered.
    #[inline(always)]
    pub fn push_small(&mut self, p: usize, region: usize, j: usize) -> (usize, usize) {
        let victim = core::mem::replace(&mut self.small_random[j & (RANDOM_STAGE - 1)], small_entry(p, region));
        if victim == 0 {
            return (0, 0);
        }
        let h = self.small_head;
        let old = core::mem::replace(&mut self.small_ring[h & (RING - 1)], victim);
        self.small_head = if h + 1 >= self.small_cap { 0 } else { h + 1 };
        (small_slot(old), old >> REGION_SHIFT)
    }

    /// A ring index: within the part in use (`mask`, which `size_for` keeps below RING) and,
    /// so the compiler sees it, within the ring.
    #[inline(always)]
    fn at(&self, i: usize) -> usize {
        i & self.mask & (RING - 1)
    }

    /// Append a block to the ring (the random stage's victim).
    #[inline(always)]
    fn ring_push(&mut self, p: usize, size: usize) {
        let i = self.at(self.head + self.len);
        self.ring[i] = p;
        self.ring_size[i] = size as u32;
        self.len += 1;
        self.ring_bytes += size;
    }

    /// Take the ring's oldest block (the ring is not empty).
    #[inline(always)]
    fn ring_pop(&mut self) -> usize {
        let i = self.at(self.head);
        self.ring_bytes -= self.ring_size[i] as usize;
        self.head = self.at(self.head + 1);
        self.len -= 1;
        self.ring[i]
    }

    /// Quarantine `p` (whose slot is `size` bytes): it replaces a random occupant of the
    /// random stage, which moves on to the FIFO ring. Afterwards, `pop_expired` gives the
    /// blocks whose delay is over.
    #[cfg(test)]
    pub fn push(&mut self, p: usize, size: usize, rng: &mut Rng) {
        let j = rng.below(RANDOM_STAGE as u32) as usize;
        let victim = core::mem::replace(&mut self.random[j], p);
        let vsize = core::mem::replace(&mut self.random_size[j], size as u32) as usize;
        self.random_bytes = self.random_bytes + size - vsize;
        if victim != 0 {
            self.ring_push(victim, vsize);
        }
    }

    /// `push` and the first `pop_expired` in one: quarantine `p` (slot of `size` bytes) in
    /// place of the occupant `j` (< RANDOM_STAGE, random) of the random stage, which moves
    /// to the ring; return the ring's oldest block if the ring is now over its limits (0:
    /// none). In the steady state exactly one block leaves per block that enters.
    #[inline(always)]
    pub fn push_pop(&mut self, p: usize, size: usize, j: usize, limits: Limits) -> usize {
        let j = j & (RANDOM_STAGE - 1);
        let victim = core::mem::replace(&mut self.random[j], p);
        let vsize = core::mem::replace(&mut self.random_size[j], size as u32) as usize;
        self.random_bytes = self.random_bytes + size - vsize;
        if victim == 0 {
            return 0;
        }
        self.ring_push(victim, vsize);
        // The ring is not empty now: `over` without its emptiness test.
        if self.len > limits.cap || self.ring_bytes > limits.budget {
            return self.ring_pop();
        }
        0
    }

    /// Whether the ring is over its limits (another block must leave).
    #[inline(always)]
    pub fn over(&self, Limits { cap, budget }: Limits) -> bool {
        self.len > cap || (self.ring_bytes > budget && self.len > 0)
    }

    /// The oldest block of the ring if the ring is over its limits (at most `cap` entries
    /// and `budget` bytes; cap ≥ 1), else None. Call until None after each push.
    #[inline]
    pub fn pop_expired(&mut self, limits: Limits) -> Option<usize> {
        self.over(limits).then(|| self.ring_pop())
    }

    /// Take up to `out.len()` blocks out of the quarantine (oldest first after the random
    /// stage), setting `n` to how many; 0 when it is empty.
    pub fn drain_some(&mut self, out: &mut [usize], n: &mut usize) {
        *n = 0;
        for (e, size) in self.random.iter_mut().zip(self.random_size.iter_mut()) {
            if *n == out.len() {
                return;
            }
            if *e != 0 {
                out[*n] = core::mem::replace(e, 0);
                self.random_bytes -= core::mem::replace(size, 0) as usize;
                *n += 1;
            }
        }
        while self.len > 0 && *n < out.len() {
            out[*n] = self.ring_pop();
            *n += 1;
        }
        for e in self.small_random.iter_mut().chain(self.small_ring[..self.small_cap].iter_mut()) {
            if *n == out.len() {
                return;
            }
            if *e != 0 {
                out[*n] = small_slot(core::mem::replace(e, 0));
                *n += 1;
            }
        }
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.random_bytes + self.ring_bytes
    }

    /// Every block in the quarantine, left in place.
    pub fn for_each(&self, mut f: impl FnMut(usize)) {
        self.random.iter().filter(|&&e| e != 0).for_each(|&e| f(e));
        for i in 0..self.len {
            f(self.ring[self.at(self.head + i)]);
        }
        self.small_random.iter().chain(self.small_ring[..self.small_cap].iter()).filter(|&&e| e != 0).for_each(|&e| f(small_slot(e)));
    }

    /// Empty the quarantine, passing every block to `release`.
    #[cfg(test)]
    pub fn drain(&mut self, mut release: impl FnMut(usize)) {
        for (e, size) in self.random.iter_mut().zip(self.random_size.iter_mut()) {
            if *e != 0 {
                release(core::mem::replace(e, 0));
            }
            *size = 0;
        }
        while self.len > 0 {
            release(self.ring_pop());
        }
        self.random_bytes = 0;
        for e in self.small_random.iter_mut().chain(self.small_ring.iter_mut()) {
            if *e != 0 {
                release(small_slot(core::mem::replace(e, 0)));
            }
        }
    }
}

impl Default for Quarantine {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_has_a_floor_and_varies() {
        let mut q = Box::new(Quarantine::new());
        let mut rng = Rng::from_seed(5);
        let cap = 64;
        let mut released_at = std::collections::HashMap::new();
        for i in 1..=20_000usize {
            // Time is counted in frees: the i-th push happens at time i.
            let now = i;
            q.push(i * 16, 16, &mut rng);
            while let Some(old) = q.pop_expired(Limits { cap, budget: usize::MAX }) {
                released_at.insert(old / 16, now);
            }
        }
        let delays: Vec<usize> = released_at.iter().map(|(&i, &at)| at - i).collect();
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(min >= cap, "a block left after {min} frees, below the FIFO floor {cap}");
        assert!(max > cap + RANDOM_STAGE, "delay never varied: max {max}");
        // Every released block was released exactly once and nothing is lost.
        let mut left = 0;
        q.drain(|_| left += 1);
        assert_eq!(released_at.len() + left, 20_000);
    }

    #[test]
    fn accounting_survives_a_drain() {
        let mut q = Box::new(Quarantine::new());
        let mut rng = Rng::from_seed(3);
        for round in 1..=3usize {
            for i in 1..=100usize {
                q.push(round * 100_000 + i * 16, 16 * round, &mut rng);
                while q.pop_expired(Limits { cap: 8, budget: usize::MAX }).is_some() {}
            }
            let mut n = 0;
            q.drain(|_| n += 1);
            assert_eq!(n, 8 + RANDOM_STAGE);
            assert_eq!(q.bytes(), 0);
        }
    }

    #[test]
    fn a_sized_ring_keeps_every_block_at_every_cap() {
        // At each cap (the largest too, where the ring holds cap + 1 for a moment), every
        // block pushed comes out exactly once, after at least cap later pushes.
        for cap in [1usize, 7, 64, 100, MAX_QUARANTINE as usize] {
            let mut q = Box::new(Quarantine::new());
            q.size_for(cap);
            let limits = Limits { cap, budget: usize::MAX };
            let mut out = std::collections::HashMap::new();
            let n = 5 * (cap + RANDOM_STAGE) + 50;
            for i in 1..=n {
                let old = q.push_pop(i * 16, 16, i.wrapping_mul(2654435761) >> 7, limits);
                if old != 0 {
                    assert!(out.insert(old / 16, i).is_none(), "cap {cap}: {old:#x} out twice");
                }
            }
            let mut left = 0;
            q.drain(|_| left += 1);
            assert_eq!(out.len() + left, n, "cap {cap}: blocks lost");
            assert!(out.iter().all(|(&b, &at)| at - b >= cap), "cap {cap}: one left early");
        }
    }

    #[test]
    fn small_slots_wait_at_least_cap_frees_and_none_is_lost() {
        for cap in [1usize, 5, 64, MAX_QUARANTINE as usize] {
            let mut q = Box::new(Quarantine::new());
            q.size_for(cap);
            let mut rng = Rng::from_seed(cap as u64);
            let mut out = std::collections::HashMap::new();
            let n = 4 * (cap + RANDOM_STAGE) + 100;
            let mut max = 0;
            for i in 1..=n {
                let (old, _) = q.push_small(i * 16, 3, rng.below(RANDOM_STAGE as u32) as usize);
                if old != 0 {
                    assert!(out.insert(old / 16, i).is_none(), "cap {cap}: {old:#x} out twice");
                    max = max.max(i - old / 16);
                }
            }
            assert!(out.iter().all(|(&b, &at)| at - b > cap), "cap {cap}: one left early");
            assert!(max > cap + RANDOM_STAGE, "cap {cap}: the delay never varied (max {max})");
            // Every block is somewhere: out, or still in the quarantine (drain and for_each).
            let mut seen = 0;
            q.for_each(|_| seen += 1);
            let mut left = 0;
            q.drain(|_| left += 1);
            assert_eq!((seen, out.len() + left), (cap + RANDOM_STAGE, n), "cap {cap}");
            let (mut buf, mut k) = ([0usize; 8], 0);
            q.drain_some(&mut buf, &mut k);
            assert_eq!(k, 0);
        }
    }

    #[test]
    fn byte_budget_bounds_the_ring() {
        let mut q = Box::new(Quarantine::new());
        let mut rng = Rng::from_seed(9);
        let mut out = 0;
        for i in 1..=1000usize {
            q.push(i * 4096, 4096, &mut rng);
            while q.pop_expired(Limits { cap: 1024, budget: 64 * 1024 }).is_some() {
                out += 1;
            }
            assert!(q.bytes() <= 64 * 1024 + RANDOM_STAGE * 4096);
        }
        assert!(out > 900);
    }
}
