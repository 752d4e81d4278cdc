//! A software tag store over a simulated address range, with tags drawn from a keyed
//! generator: lets the tag policy be tested (and measured) on machines without MTE.

use super::TagStore;
use crate::rand::Rng;

pub struct SoftTags<'a> {
    base: usize,
    tags: &'a mut [u8],
    rng: Rng,
}

impl<'a> SoftTags<'a> {
    /// Tags for `[base, base + 16 * tags.len())`, all starting at 0.
    pub fn new(base: usize, tags: &'a mut [u8], seed: u64) -> Self {
        SoftTags { base, tags, rng: Rng::from_seed(seed) }
    }
}

impl TagStore for SoftTags<'_> {
    fn load(&self, addr: usize) -> u8 {
        self.tags[(addr - self.base) / super::GRANULE]
    }

    fn store(&mut self, addr: usize, len: usize, tag: u8, _zero: bool) {
        let first = (addr - self.base) / super::GRANULE;
        for t in &mut self.tags[first..first + len / super::GRANULE] {
            *t = tag;
        }
    }

    fn random(&mut self, exclude: u16) -> u8 {
        let allowed = !exclude;
        let n = allowed.count_ones();
        // The k-th allowed tag, k uniform in 0..n (as IRG does).
        let mut k = self.rng.below(n);
        for t in 0..16u8 {
            if allowed & (1 << t) != 0 {
                if k == 0 {
                    return t;
                }
                k -= 1;
            }
        }
        unreachable!("the policy always leaves allowed tags")
    }
}
