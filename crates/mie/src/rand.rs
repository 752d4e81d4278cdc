//! Randomness: a fast per-thread generator for placement decisions (seeded from the kernel's
//! CSPRNG) and the keyed hash that maps type ids and call sites to buckets.

/// A strong 64-bit finaliser (from the SplitMix64 family); used to spread seeds and keys.
#[inline]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// wyrand: one multiply per output, passes PractRand; state seeded from getrandom.
/// Placement randomness only needs to be unpredictable without the seed, not a CSPRNG.
#[derive(Clone, Copy)]
pub struct Rng {
    state: u64,
}

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
    fn keyed_hash_depends_on_key() {
        let a = keyed_hash(0x1234, 1, 2);
        let b = keyed_hash(0x1234, 3, 2);
        let c = keyed_hash(0x1235, 1, 2);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
