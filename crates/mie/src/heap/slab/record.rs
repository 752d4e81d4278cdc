//! One metadata record per slot, out of line (in the slab's metadata): everything a malloc or
//! a free needs to know about a slot, in one load from one cache line.
//!
//! ```text
//! bits 0..4   state: FREE_CLEAN, FREED, REMOTE_FREED, or LIVE | allocation kind
//! bits 4..8   tag: the block's MTE tag while live, its previous tag once freed (without
//!             MTE a generation count, so a stale record never equals a new one)
//! bits 8..    slack: slot size - requested size (8 bits in 16-bit records, 24 in 32-bit)
//! ```
//! The owner of a slab changes its records with plain stores; another thread freeing a
//! block there moves its record LIVE -> REMOTE_FREED with one compare-and-swap, so two frees
//! of one block can never both succeed.

/// Never held a block since the slab was created or purged: its memory is zero.
pub const FREE_CLEAN: u32 = 0;
/// Held a block that was freed (zeroed on free for zeroed classes: checked at reuse).
pub const FREED: u32 = 1;
/// Freed by a thread that does not own the slab, not yet collected by the owner.
pub const REMOTE_FREED: u32 = 2;
/// Live: LIVE | kind (heap::kind, 0..=4).
pub const LIVE: u32 = 8;

#[inline(always)]
pub const fn live(kind: u8, tag: u8, slack: usize) -> u32 {
    LIVE | kind as u32 | ((tag as u32 & 15) << 4) | ((slack as u32) << 8)
}

#[inline(always)]
pub const fn state(r: u32) -> u32 {
    r & 15
}

#[inline(always)]
pub const fn is_live(r: u32) -> bool {
    r & LIVE != 0
}

/// The allocation kind of a live record.
#[inline(always)]
pub const fn kind(r: u32) -> u8 {
    (r & 7) as u8
}

#[inline(always)]
pub const fn tag(r: u32) -> u8 {
    ((r >> 4) & 15) as u8
}

#[inline(always)]
pub const fn slack(r: u32) -> usize {
    (r >> 8) as usize
}

/// The record of a slot whose block (record `r`) was freed: it keeps the block's tag.
#[inline(always)]
pub const fn freed(r: u32) -> u32 {
    FREED | (r & 0xf0)
}

/// The record of a live block `r` freed by a thread that does not own its slab.
#[inline(always)]
pub const fn remote_freed(r: u32) -> u32 {
    (r & !15) | REMOTE_FREED
}

/// Whether a slot with this record may be handed out (a free slot of either kind).
#[inline(always)]
pub const fn allocatable(r: u32) -> bool {
    state(r) == FREE_CLEAN || state(r) == FREED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        for kind in 0..5u8 {
            for tag in 0..16u8 {
                for slack in [0usize, 1, 17, 224, 255, 1 << 17, (1 << 24) - 1] {
                    let r = live(kind, tag, slack);
                    assert!(is_live(r) && !allocatable(r));
                    assert_eq!((super::kind(r), super::tag(r), super::slack(r)), (kind, tag, slack));
                    let f = freed(r);
                    assert!(!is_live(f) && allocatable(f) && super::tag(f) == tag && state(f) == FREED);
                    let rf = remote_freed(r);
                    assert!(!is_live(rf) && !allocatable(rf) && state(rf) == REMOTE_FREED && super::tag(rf) == tag);
                }
            }
        }
        assert!(allocatable(FREE_CLEAN));
    }
}
