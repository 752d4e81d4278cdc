//! The tag policy: which tag a block gets, and which a freed slot gets.

use super::{TagStore, RESERVED, TAG_FREE};

/// Tag a slot for a new block: exclude the reserved tags, the tags of the neighbouring
/// blocks (`left`, `right`: an address in each neighbour's first granule, when those
/// exist), and the slot's previous tag. Returns the tag. The block's own granules (the first
/// `used` bytes of the slot) carry it; the rest of the slot (its slack) carries the free
/// tag, so an access 16 bytes or more past the block's end faults at the access.
#[allow(clippy::too_many_arguments)]
pub fn tag_new_block<S: TagStore>(
    s: &mut S,
    slot: usize,
    used: usize,
    slot_size: usize,
    left: Option<usize>,
    right: Option<usize>,
    previous: u8,
    zero: bool,
) -> u8 {
    let mut exclude = RESERVED | (1u16 << (previous & 0xf));
    if let Some(l) = left {
        exclude |= 1 << s.load(l);
    }
    if let Some(r) = right {
        exclude |= 1 << s.load(r);
    }
    let t = s.random(exclude);
    s.store(slot, used, t, zero);
    if used < slot_size {
        s.store(slot + used, slot_size - used, TAG_FREE, false);
    }
    t
}

/// The bytes of a block of `size` bytes that carry its tag: whole granules.
#[inline(always)]
pub const fn tagged_len(size: usize) -> usize {
    (size + super::GRANULE - 1) & !(super::GRANULE - 1)
}

/// Retag a freed slot with the reserved free tag (zeroing it too when asked), so any access
/// through a dangling pointer faults until the slot is reused with a fresh tag.
pub fn tag_freed_slot<S: TagStore>(s: &mut S, slot: usize, size: usize, zero: bool) {
    s.store(slot, size, TAG_FREE, zero);
}

#[cfg(test)]
mod tests {
    use super::super::soft::SoftTags;
    use super::super::{TAG_FREE, TAG_OWNED};
    use super::*;
    use crate::rand::Rng;

    /// 1,000,000 simulated alloc/free events over a slab of 256 slots of 48 bytes:
    /// neighbours never share a tag, a reused slot never gets its previous tag, reserved tags
    /// are never handed out, and the distribution over the 14 allowed tags is uniform enough
    /// (chi-square).
    #[test]
    fn million_events() {
        const SLOTS: usize = 256;
        const SIZE: usize = 48;
        let base = 0x10_0000;
        let mut mem = vec![TAG_OWNED; SLOTS * SIZE / 16];
        let mut s = SoftTags::new(base, &mut mem, 0x5eed);
        let mut live = [false; SLOTS];
        let mut prev = [TAG_OWNED; SLOTS];
        let mut hist = [0u64; 16];
        let mut rng = Rng::from_seed(77);
        let mut events = 0;
        while events < 1_000_000 {
            let i = rng.below(SLOTS as u32) as usize;
            let slot = base + i * SIZE;
            if live[i] {
                tag_freed_slot(&mut s, slot, SIZE, false);
                live[i] = false;
            } else {
                let left = (i > 0).then(|| slot - SIZE);
                let right = (i + 1 < SLOTS).then(|| slot + SIZE);
                let t = tag_new_block(&mut s, slot, SIZE, SIZE, left, right, prev[i], false);
                assert!(t != TAG_OWNED && t != TAG_FREE, "reserved tag {t} handed out");
                assert_ne!(t, prev[i], "slot {i} got its previous tag again");
                if i > 0 && live[i - 1] {
                    assert_ne!(s.load(slot - SIZE), t, "equal to left neighbour");
                }
                if i + 1 < SLOTS && live[i + 1] {
                    assert_ne!(s.load(slot + SIZE), t, "equal to right neighbour");
                }
                for g in 0..SIZE / 16 {
                    assert_eq!(s.load(slot + 16 * g), t);
                }
                prev[i] = t;
                live[i] = true;
                hist[t as usize] += 1;
            }
            events += 1;
        }
        // Chi-square over the 14 allowed tags, 13 degrees of freedom: 99.9% quantile ≈ 34.5.
        let n: u64 = hist.iter().sum();
        let expect = n as f64 / 14.0;
        let chi2: f64 = hist[1..15].iter().map(|&o| (o as f64 - expect).powi(2) / expect).sum();
        assert!(chi2 < 34.5, "tag distribution not uniform: chi2 = {chi2:.1}, {hist:?}");
        assert_eq!(hist[0] + hist[15], 0);
    }

    #[test]
    fn only_the_blocks_granules_carry_its_tag() {
        let base = 0x4000;
        let mut mem = vec![TAG_OWNED; 16];
        let mut s = SoftTags::new(base, &mut mem, 3);
        for size in [1usize, 15, 16, 17, 20, 32, 33, 100] {
            let slot_size = tagged_len(size) + 32;
            let t = tag_new_block(&mut s, base, tagged_len(size), slot_size, None, None, 0, false);
            for g in 0..slot_size / 16 {
                let want = if g * 16 < size { t } else { TAG_FREE };
                assert_eq!(s.load(base + 16 * g), want, "size {size} granule {g}");
            }
        }
    }

    #[test]
    fn freed_slot_gets_free_tag() {
        let base = 0x2000;
        let mut mem = vec![0u8; 8];
        let mut s = SoftTags::new(base, &mut mem, 1);
        let t = tag_new_block(&mut s, base, 64, 64, None, None, 0, false);
        assert!((1..=14).contains(&t));
        tag_freed_slot(&mut s, base, 64, true);
        assert!((0..4).all(|g| s.load(base + 16 * g) == TAG_FREE));
    }
}
