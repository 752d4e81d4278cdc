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

static UNKEYED: Prf = Prf::NONE;

impl SecureRng {
    /// Before a thread's cache is set up (never drawn from: `new` replaces it).
    pub const UNSEEDED: SecureRng = SecureRng { buf: [0; 8], left: 0, ctr: 0, prf: &UNKEYED };

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

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        (self.next_u32() as u64) << 32 | self.next_u32() as u64
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
    fn keyed_hash_depends_on_key() {
        let a = keyed_hash(0x1234, 1, 2);
        let b = keyed_hash(0x1234, 3, 2);
        let c = keyed_hash(0x1235, 1, 2);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
