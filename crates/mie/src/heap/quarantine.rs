//! Delayed reuse: a freed block waits in its thread's quarantine before its slot can be
//! handed out again. Two stages, as in hardened_malloc: a small array where a new entry
//! replaces a random occupant (so the delay is unpredictable), then a FIFO ring bounded in
//! entries and bytes (so the delay has a floor). Entries are slot addresses of small blocks.

use crate::options::MAX_QUARANTINE;
use crate::rand::Rng;

pub const RANDOM_STAGE: usize = 16;

/// How long the ring may grow: at most `cap` entries and `budget` bytes.
#[derive(Clone, Copy)]
pub struct Limits {
    pub cap: usize,
    pub budget: usize,
}

pub struct Quarantine {
    random: [usize; RANDOM_STAGE],
    random_bytes: usize,
    ring: [usize; MAX_QUARANTINE as usize],
    head: usize,
    len: usize,
    ring_bytes: usize,
}

impl Quarantine {
    pub const fn new() -> Self {
        Quarantine {
            random: [0; RANDOM_STAGE],
            random_bytes: 0,
            ring: [0; MAX_QUARANTINE as usize],
            head: 0,
            len: 0,
            ring_bytes: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.random_bytes + self.ring_bytes
    }

    /// Quarantine `p` (whose slot is `size` bytes). Blocks whose delay is over are passed to
    /// `release`, oldest first. The limits come from the options (cap ≥ 1).
    #[inline]
    pub fn push(
        &mut self,
        p: usize,
        size: usize,
        Limits { cap, budget }: Limits,
        rng: &mut Rng,
        size_of: impl Fn(usize) -> usize,
        mut release: impl FnMut(usize),
    ) {
        let j = rng.below(RANDOM_STAGE as u32) as usize;
        let victim = core::mem::replace(&mut self.random[j], p);
        self.random_bytes += size;
        if victim == 0 {
            return;
        }
        let vsize = size_of(victim);
        self.random_bytes -= vsize;
        let n = self.ring.len();
        self.ring[(self.head + self.len) % n] = victim;
        self.len += 1;
        self.ring_bytes += vsize;
        while self.len > cap || (self.ring_bytes > budget && self.len > 0) {
            let old = self.ring[self.head];
            self.head = (self.head + 1) % n;
            self.len -= 1;
            self.ring_bytes -= size_of(old);
            release(old);
        }
    }

    /// Empty the quarantine (thread exit, trim), passing every block to `release`.
    pub fn drain(&mut self, mut release: impl FnMut(usize)) {
        for e in self.random.iter_mut() {
            if *e != 0 {
                release(core::mem::replace(e, 0));
            }
        }
        let n = self.ring.len();
        while self.len > 0 {
            release(self.ring[self.head]);
            self.head = (self.head + 1) % n;
            self.len -= 1;
        }
        self.random_bytes = 0;
        self.ring_bytes = 0;
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
            q.push(i * 16, 16, Limits { cap, budget: usize::MAX }, &mut rng, |_| 16, |old| {
                released_at.insert(old / 16, now);
            });
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
    fn byte_budget_bounds_the_ring() {
        let mut q = Box::new(Quarantine::new());
        let mut rng = Rng::from_seed(9);
        let mut out = 0;
        for i in 1..=1000usize {
            q.push(i * 4096, 4096, Limits { cap: 1024, budget: 64 * 1024 }, &mut rng, |_| 4096, |_| out += 1);
            assert!(q.bytes() <= 64 * 1024 + RANDOM_STAGE * 4096);
        }
        assert!(out > 900);
    }
}
