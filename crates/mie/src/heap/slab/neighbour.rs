//! Underflows: a write just before a block lands at the end of the slot before it (its
//! canary, or zeros if that slot is free), or, for a slab's first slot, at the end of the
//! slab before it in the segment. Checked at the block's free (`free.rs`) and, for a block
//! another thread freed, when the slab's owner collects it (`owner.rs`).

use crate::heap::checks::canary;
use crate::heap::slab::layout::{Geometry, Loc};
use crate::heap::slab::pool;
use crate::heap::slab::record;
use crate::heap::slab::size_class::{ClassInfo, ZERO_MAX};
use crate::heap::slab::meta::SlabMeta;
use crate::heap::slab::finding::{self, Finding};
use crate::heap::slab::tcache::TCache;
use crate::heap::{Caller, Globals};

/// The first slot of a slab: the bytes before it are the end of the slab before, in the
/// same segment of the region (its last slot, or the unused tail after it, zero). Checked
/// (`first_slot_end_changed`) and reported at the free.
#[cold]
#[inline(never)]
pub fn first_slot_before_intact(g: &Globals, tc: &TCache, k: &ClassInfo, p: usize, who: Caller) {
    let Some(loc) = g.geo.decode(p) else { return };
    if let Some((last_start, prev)) = first_slot_end_changed(g, tc, k, &loc, p) {
        finding::found(Finding::UnderflowFirstSlot { p, loc, last_start, prev, who, collected: false });
    }
}

/// Whether the 8 bytes before `p`, the first slot of its slab (`loc`), are not what the end
/// of the slab before should hold: then its last slot's start, and that slot's record unless
/// they are its unused tail. Checked as `before_intact` checks a slot's neighbour where that
/// slab is mapped there (not another region's gap, nor a guarded slab's) and this thread owns
/// it too, or no thread does (it is in its pool: checked with the pool's lock held, so that
/// no thread takes it meanwhile; tried, never waited for: a signal handler's free may
/// interrupt this thread while it holds it). Only a free of its last block by another thread
/// changes that slot meanwhile: its record is read again.
fn first_slot_end_changed(g: &Globals, tc: &TCache, k: &ClassInfo, loc: &Loc, p: usize) -> Option<(usize, Option<u32>)> {
    if Geometry::first_in_segment(k, loc.slab) || !pool::slab_exists(loc.region, loc.slab - 1) {
        return None; // the bytes before are the gap at the end of another region's segment
    }
    let prev_slab = loc.slab - 1;
    if p - 8 >= g.geo.slot_addr(loc.region, prev_slab, 0) + pool::mapped_len(loc.region, prev_slab) {
        return None; // an unmapped gap (guarded slab): an overrun faults there
    }
    let pm = SlabMeta::new(&g.geo, loc.region, prev_slab);
    let owner = pm.owner();
    if owner == tc.id {
        return end_of_slab_changed(g, k, loc.region, prev_slab, pm, p);
    }
    if owner != 0 {
        return None;
    }
    pool::while_pooled(&g.geo, loc.region, prev_slab, || end_of_slab_changed(g, k, loc.region, prev_slab, pm, p)).flatten()
}

/// The underflow check of a free, for a block another thread freed in a slab this thread
/// owns: made when this thread collects it (`owner::collect_slab`), as the freeing thread
/// cannot make it. The owner may be handing out the previous slot meanwhile, and a slot's
/// record and its canary are two stores: between them a check sees a live record without
/// its canary. The owner sees its own stores in order, and another thread's free of the
/// previous block changes its record before its bytes (`changed`). `loc` is the block's.
pub fn collected_before_intact(g: &Globals, tc: &TCache, k: &ClassInfo, m: SlabMeta, loc: Loc, p: usize) {
    // (The free that released the block ran in another thread; its call is not known here.)
    const WHO: Caller = Caller { func: &crate::heap::Func("free"), ret_addr: 0 };
    if loc.slot > 0 {
        let prev = m.rec(k, loc.slot - 1);
        // (The pattern only for a live block: a free slot's end is zero or unknown. Off the
        // fast paths a branch on the state costs less than the AES evaluation.)
        let pat = if record::is_live(prev) { canary::pattern(&g.canary, p - k.size as usize) } else { 0 };
        if !before_intact(k, prev, p, pat, g.opts.zero_on_free) && !changed(m, k, loc.slot - 1, prev) {
            finding::found(Finding::Underflow { p, loc, prev, who: WHO, collected: true });
        }
    } else if let Some((last_start, prev)) = first_slot_end_changed(g, tc, k, &loc, p) {
        finding::found(Finding::UnderflowFirstSlot { p, loc, last_start, prev, who: WHO, collected: true });
    }
}

/// `first_slot_end_changed` for `prev_slab` (metadata `pm`, owned by this thread or held
/// still by its pool's lock).
fn end_of_slab_changed(g: &Globals, k: &ClassInfo, region: usize, prev_slab: usize, pm: SlabMeta, p: usize) -> Option<(usize, Option<u32>)> {
    let last = k.nslots as usize - 1;
    let last_start = g.geo.slot_addr(region, prev_slab, last);
    let (expect, mask, rec) = if p - 8 >= last_start + k.size as usize {
        // The slab's unused tail: never written, so zero.
        (0u64, u64::MAX, None)
    } else {
        let prev = pm.rec(k, last);
        let (expect, mask) = end_of_slot(g, k, prev, last_start, p);
        (expect, mask, Some(prev))
    };
    // SAFETY: p - 8 lies in the mapped part of the previous slab of this region (checked).
    let w = unsafe { ((p - 8) as *const u64).read() };
    ((w ^ expect) & mask != 0 && !rec.is_some_and(|r| changed(pm, k, last, r))).then_some((last_start, rec))
}

/// Whether the record of `slot` is no longer `was`, read again after the bytes checked
/// against it: another thread freed that block meanwhile (its free clears the slot after
/// it marks the record), so bytes that do not match `was` are not a write before this block.
#[cold]
pub fn changed(m: SlabMeta, k: &ClassInfo, slot: usize, was: u32) -> bool {
    // The slot's bytes were read before the record is read again (the other thread marks
    // the record before it clears the bytes).
    core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
    m.rec(k, slot) != was
}

/// `before_intact` for a zeroed class (every class on the fast path): the previous slot's
/// record is `prev`, of the width `WIDE`. The same rule, with the known bytes from tables: a
/// live block's last min(slack, 8) (by slack, up to a narrow record's 255), a free slot's
/// last 8, which are zero unless another thread is clearing it (REMOTE_FREED).
#[inline(always)]
pub fn before_intact_zeroed<const WIDE: bool>(prev: u32, p: usize, pat: u64) -> bool {
    /// Per slack (0..=255): the mask of the last min(slack, 8) bytes of a word.
    static BY_SLACK: [u64; 256] = {
        let mut t = [0u64; 256];
        let mut n = 0;
        while n < 256 {
            t[n] = LAST_BYTES[if n < 8 { n } else { 8 }];
            n += 1;
        }
        t
    };
    /// Per state of a record that is not live: the mask of the bytes known to be zero.
    const NOT_LIVE: [u64; 8] = {
        let mut t = [!0u64; 8];
        t[record::REMOTE_FREED as usize] = 0;
        t
    };
    let live = record::is_live(prev);
    // (A wide record's slack can pass 255; a narrow one's cannot.)
    let slack = if WIDE { record::slack(prev).min(255) } else { record::slack(prev) & 255 };
    // SAFETY (both): slack <= 255; the state of a record that is not live is below 8.
    // (Whether the previous slot is live is a coin toss with random placement: no branch.)
    let (mask_live, mask_free) = unsafe { (*BY_SLACK.get_unchecked(slack), *NOT_LIVE.get_unchecked(record::state(prev) as usize & 7)) };
    let mask = core::hint::select_unpredictable(live, mask_live, mask_free);
    // The word before p is aligned: its canary bytes are the pattern itself (`end_mask`).
    let expect = pat & (live as u64).wrapping_neg();
    // SAFETY: the 8 bytes before p are the end of the previous slot of this slab (slot > 0).
    let w = unsafe { ((p - 8) as *const u64).read() };
    (w ^ expect) & mask == 0
}

/// A write just before a block lands in the end of the previous slot: that slot's canary if
/// it is live, zeros if it is free. Whether those bytes are intact (checked when the block
/// is freed, by the slab's owner; another thread may free the previous block meanwhile, and
/// clear its slot: the caller reads its record `prev` again when the bytes do not match).
/// `pat` is the previous slot's canary pattern, `zero_on_free` the option.
///
/// Without branches on the previous slot's state: with random placement whether it is live
/// is a coin toss, and a mispredicted branch here cost 8 % of a tree-building benchmark.
#[inline(always)]
pub fn before_intact(k: &ClassInfo, prev: u32, p: usize, pat: u64, zero_on_free: bool) -> bool {
    let (expect, mask) = end_mask(k, prev, pat, p, zero_on_free);
    // SAFETY: the 8 bytes before p are the end of the previous slot of this slab (slot > 0).
    let w = unsafe { ((p - 8) as *const u64).read() };
    (w ^ expect) & mask == 0
}

/// What the 8 bytes before `p` must hold when they end the slot at `prev_start` (record
/// `prev`), and which of them are known: a live block's last min(slack, 8) (always canary),
/// a free zeroed slot's last 8, none in a slot another thread freed a moment ago or in a
/// class that is not zeroed. The pattern is computed whatever the state and selected by a
/// mask (a branch on the state would be a coin toss: see `before_intact`).
#[inline(always)]
fn end_of_slot(g: &Globals, k: &ClassInfo, prev: u32, prev_start: usize, p: usize) -> (u64, u64) {
    end_mask(k, prev, canary::pattern(&g.canary, prev_start), p, g.opts.zero_on_free)
}

/// `end_of_slot` given the previous slot's canary pattern `pat`.
#[inline(always)]
fn end_mask(k: &ClassInfo, prev: u32, pat: u64, p: usize, zero_on_free: bool) -> (u64, u64) {
    let live = record::is_live(prev);
    let zeroed = zero_on_free && k.size as usize <= ZERO_MAX && record::state(prev) != record::REMOTE_FREED;
    let n = if live { record::slack(prev).min(8) } else { 8 * zeroed as usize };
    // SAFETY: n <= 8.
    let mask = unsafe { *LAST_BYTES.get_unchecked(n) };
    // Slots start at multiples of 16, so the word before `p` is aligned: its canary bytes
    // are the pattern itself (`canary::pattern`).
    debug_assert!(p.is_multiple_of(8));
    let expect = pat & (live as u64).wrapping_neg();
    (expect, mask)
}

/// The mask of the last n bytes of a little-endian word, n = 0..=8 (a table: a shift by
/// 64 - 8n would need a branch for n = 0).
const LAST_BYTES: [u64; 9] = {
    let mut t = [0u64; 9];
    let mut n = 1;
    while n <= 8 {
        t[n] = !0u64 << (64 - 8 * n);
        n += 1;
    }
    t
};
