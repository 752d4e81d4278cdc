//! Randomness: `SecureRng`, the per-thread placement generator (the keyed PRF in counter
//! mode: its outputs cannot be predicted from earlier ones); `Rng` (wyrand, tests only), a fast
//! generator for simulations where nothing is secret; `mix64` and `keyed_hash`
//! for spreading non-secret values over tables. Secrets themselves (canaries, buckets) come
//! from `prf`.

use crate::prf::Prf;

/// A strong 64-bit finaliser (from the SplitMix64 family); used to spread seeds and keys.
#[inline]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// wyrand: one multiply per output, passes PractRand. For tests and simulations only: its
/// state can be worked out from its outputs, so nothing secret may come from it.
#[cfg(test)]
#[derive(Clone, Copy)]
pub struct Rng {
    state: u64,
}

#[cfg(test)]
impl Rng {
    pub const fn from_seed(seed: u64) -> Self {
        Rng { state: seed }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.state as u128).wrapping_mul((self.state ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (n > 0) by multiply-shift (Lemire), bias below 2^-32 for our n.
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
}

/// Placement randomness that what it produced does not predict: the keyed PRF in counter
/// mode (a thread's own counter, started at a random point), eight outputs per batch.
/// Slot order, first slabs, quarantine order and sampling distances come from here; an
/// attacker who watches addresses learns past outputs and nothing about the next.
pub struct SecureRng {
    buf: [u64; 8],
    left: usize,
    ctr: u64,
    prf: &'static Prf,
}

impl SecureRng {
    pub fn new(prf: &'static Prf, start: u64) -> Self {
        SecureRng { buf: [0; 8], left: 0, ctr: start, prf }
    }

    /// 32 random bits (a batch gives sixteen).
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.left == 0 {
            self.refill();
        }
        self.left -= 1;
        (self.buf[self.left / 2] >> (32 * (self.left & 1))) as u32
    }

    /// 64 random bits: a whole output word (an odd half left over is dropped).
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut left = self.left & !1;
        if left == 0 {
            self.refill();
            left = self.left;
        }
        left -= 2;
        self.left = left;
        self.buf[left / 2]
    }

    #[cold]
    fn refill(&mut self) {
        self.prf.batch(self.ctr, &mut self.buf);
        self.ctr = self.ctr.wrapping_add(4);
        self.left = 16;
    }

    /// Uniform in `0..n` (n > 0), as `Rng::below`.
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next_u32() as u64 * n as u64) >> 32) as u32
    }

    /// Put `s` (at most 2^16 elements) in a uniformly random order (Fisher-Yates). Each
    /// draw takes 16 random bits (multiply-shift: an index is at most `len / 2^16` more
    /// likely than another, 0.1 % for a bin of 64), four draws per 64-bit output.
    #[inline]
    pub fn shuffle<T>(&mut self, s: &mut [T]) {
        debug_assert!(s.len() <= 1 << 16);
        let mut i = s.len();
        while i > 1 {
            let mut bits = self.next_u64();
            for _ in 0..4.min(i - 1) {
                i -= 1;
                // j <= i: a 16-bit draw times (i + 1), shifted down by 16.
                let j = (((bits & 0xffff) * (i as u64 + 1)) >> 16) as usize;
                bits >>= 16;
                debug_assert!(j <= i && i < s.len());
                // SAFETY: j <= i < s.len() (above), so both are in bounds.
                unsafe { core::ptr::swap(s.as_mut_ptr().add(i), s.as_mut_ptr().add(j)) };
            }
        }
    }
}

/// Keyed 64-bit hash of one word. Two rounds of multiply-xorshift with secret per-process
/// keys: an attacker who does not know the keys cannot predict which bucket a type or call
/// site lands in, and two different inputs collide only by chance.
#[inline]
pub fn keyed_hash(x: u64, k0: u64, k1: u64) -> u64 {
    let mut h = (x ^ k0).wrapping_mul(k1 | 1);
    h ^= h >> 32;
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15 ^ k0);
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_is_in_range_and_covers() {
        let mut r = Rng::from_seed(42);
        let mut seen = [0u32; 7];
        for _ in 0..70_000 {
            let v = r.below(7);
            assert!(v < 7);
            seen[v as usize] += 1;
        }
        for c in seen {
            assert!((9_000..11_000).contains(&c), "skewed: {seen:?}");
        }
    }

    #[test]
    fn secure_rng_is_uniform_and_streams_differ() {
        let prf: &'static Prf = Box::leak(Box::new(Prf::random()));
        let mut r = SecureRng::new(prf, 12345);
        let mut seen = [0u32; 7];
        for _ in 0..70_000 {
            seen[r.below(7) as usize] += 1;
        }
        for c in seen {
            assert!((9_000..11_000).contains(&c), "skewed: {seen:?}");
        }
        // Every bit position takes both values; two streams from different starts differ.
        let (mut or, mut and) = (0u64, !0u64);
        let mut s = SecureRng::new(prf, 999);
        for _ in 0..64 {
            let (x, y) = (r.next_u64(), s.next_u64());
            assert_ne!(x, y);
            or |= x;
            and &= x;
        }
        assert_eq!((or, and), (!0, 0));
    }

    #[test]
    fn every_draw_takes_bits_no_other_draw_had() {
        let prf: &'static Prf = Box::leak(Box::new(Prf::random()));
        let mut r = SecureRng::new(prf, 5);
        let mut batch = [0u64; 8];
        prf.batch(5, &mut batch);
        // 64-bit draws are the batch's words, last first; 32-bit draws their halves, high
        // first; a 64-bit draw after an odd number of 32-bit ones skips the half left over.
        assert_eq!(r.next_u64(), batch[7]);
        assert_eq!(r.next_u64(), batch[6]);
        assert_eq!(r.next_u32(), (batch[5] >> 32) as u32);
        assert_eq!(r.next_u64(), batch[4]);
        assert_eq!(r.next_u32(), (batch[3] >> 32) as u32);
        assert_eq!(r.next_u32(), batch[3] as u32);
        for i in (0..3).rev() {
            assert_eq!(r.next_u64(), batch[i]);
        }
        // Then the next batch.
        prf.batch(9, &mut batch);
        assert_eq!(r.next_u64(), batch[7]);
    }

    #[test]
    fn shuffle_gives_every_order_alike() {
        let prf: &'static Prf = Box::leak(Box::new(Prf::random()));
        let mut r = SecureRng::new(prf, 7);
        // All 24 orders of four elements, about equally often; and a long slice keeps its
        // elements and really moves them.
        let mut seen = std::collections::HashMap::new();
        for _ in 0..48_000 {
            let mut a = [0u8, 1, 2, 3];
            r.shuffle(&mut a);
            *seen.entry(a).or_insert(0u32) += 1;
        }
        assert_eq!(seen.len(), 24);
        for (order, c) in &seen {
            assert!((1_700..2_300).contains(c), "{order:?} came {c} times of 48000");
        }
        let mut v: Vec<u32> = (0..64).collect();
        r.shuffle(&mut v);
        let moved = v.iter().enumerate().filter(|&(i, &x)| i as u32 != x).count();
        assert!(moved > 48, "only {moved} of 64 moved");
        v.sort_unstable();
        assert!(v.iter().enumerate().all(|(i, &x)| i as u32 == x));
        // The last position is drawn too (an index of 0..=i, not 0..i).
        let last_stays = (0..6_000).filter(|_| { let mut a = [0u8, 1]; r.shuffle(&mut a); a == [0, 1] }).count();
        assert!((2_600..3_400).contains(&last_stays), "{last_stays}");
    }

    #[test]
    fn keyed_hash_depends_on_key() {
        let a = keyed_hash(0x1234, 1, 2);
        let b = keyed_hash(0x1234, 3, 2);
        let c = keyed_hash(0x1235, 1, 2);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
