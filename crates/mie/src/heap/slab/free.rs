//! free. The common case, a valid small block, is one straight path: decode the address,
//! load the slot's record, check state, kind, size, tag and canary, then release it. In a
//! slab the calling thread owns that is plain stores and the quarantine (no atomic, no
//! lock); in another thread's slab, one compare-and-swap of the record, the owner told in
//! batches (`remote.rs`). Anything unusual (and every error) goes to `validate`, which finds
//! out what is wrong and reports it. The check of the bytes before the block (an underflow)
//! is `neighbour.rs`; the zero fill of the freed slot, `zeroed.rs`.

use crate::heap::checks::canary::{self, MAX_CANARY, TAIL};
use crate::heap::types::kind::Release;
use crate::heap::slab::layout::Loc;
use crate::heap::slab::owner;
use crate::heap::slab::record;
use crate::heap::slab::size_class::{ClassInfo, CLASSES, FAST_MAX, ZERO_MAX};
use crate::heap::slab::meta::{SlabMeta, SlotAt};
use crate::heap::slab::zeroed;
use crate::heap::slab::neighbour::{before_intact, before_intact_zeroed, changed, first_slot_before_intact};
use crate::heap::slab::finding::{self, Finding};
use crate::heap::slab::tcache::{self, with_cache, TCache};
use crate::heap::{checks::stacks, Caller, Globals};
use crate::platform::tls;
use crate::tag;

/// This thread's cache, if it has one and its options are the fast paths' (`TCache::fast`).
#[inline(always)]
fn fast_cache() -> Option<&'static mut TCache> {
    let tcp = tls::get();
    if tcp <= tcache::DEAD {
        return None;
    }
    // SAFETY: a live TLS word is this thread's own cache, which lives as long as the thread
    // and is touched by it alone; each caller holds the reference for one call only.
    let tc = unsafe { &mut *(tcp as *mut TCache) };
    tc.fast.then_some(tc)
}

/// The common free, in one straight line: a valid small block. False, having changed
/// nothing, for anything else (the general path then finds out what it is, and reports:
/// `heap::release`).
#[inline(always)]
pub fn free_fast(raw: usize, who: Caller, r: Release) -> bool {
    let Some(tc) = fast_cache() else { return false };
    let g = crate::heap::globals();
    // The block's canary pattern first: its AES chain (tens of cycles) then runs beside the
    // address decode and the record's load (often a cache miss), not after them. (With MTE
    // once the block's size is known: a block that fills its last granule has no canary.)
    // SAFETY: the fast paths run only where the PRF is AES (`fast`).
    let pat = if tag::on() { 0 } else { unsafe { canary::pattern_aes(&g.canary, raw) } };
    let Some(s) = SlabMeta::slot_at(&g.geo, tag::untag_on(raw)) else { return false };
    // Split by record width once: the rest of each path neither keeps nor tests it.
    // SAFETY: slot_at returns class < CLASS_COUNT.
    if unsafe { CLASSES.get_unchecked(s.class) }.wide {
        free_fast_of::<true>(g, tc, raw, pat, s, who, r)
    } else {
        free_fast_of::<false>(g, tc, raw, pat, s, who, r)
    }
}

/// `free_fast` once the slot is found, for records of one width (`WIDE` is the class's);
/// `pat` is the block's canary pattern.
#[inline(always)]
fn free_fast_of<const WIDE: bool>(g: &Globals, tc: &mut TCache, raw: usize, pat: u64, s: SlotAt, who: Caller, r: Release) -> bool {
    let p = tag::untag_on(raw);
    let Some(b) = live_small_at::<WIDE>(raw, s, r) else { return false };
    if tag::on() {
        tc.freeing = p;
    }
    // (With MTE the pattern once the block's size is known: a block that fills its last
    // granule has no canary.)
    // SAFETY: the PRF is AES (`fast`).
    let pat = if tag::on() && !canary::none_needed(b.usable) { unsafe { canary::pattern_aes(&g.canary, p) } } else { pat };
    free_checked::<WIDE>(g, tc, raw, p, b, pat, who)
}

/// The rest of `free_fast` for the live small block `b` at `raw` (`p` untagged), whose
/// canary pattern is `pat`: its canary checked, then released. False, having changed
/// nothing, when the canary is not intact (the general path then reports it).
#[inline(always)]
fn free_checked<const WIDE: bool>(g: &Globals, tc: &mut TCache, raw: usize, p: usize, b: LiveSmall, pat: u64, who: Caller) -> bool {
    let LiveSmall { s, k, rec, usable, slack } = b;
    let slot_size = k.size as usize;
    // SAFETY: [raw, raw + slot_size) is the live block's slot (its tag in raw).
    if !canary::none_needed(usable) && !unsafe { canary::small_intact_slack(pat, raw, slack, slot_size) } {
        return false;
    }
    if s.m.owner() != tc.id {
        free_remote(g, tc, raw, p, s, rec, usable, who);
        return true;
    }
    if !tag::on() {
        if s.slot == 0 {
            first_slot_before_intact(g, tc, k, p, who);
        } else {
            // SAFETY: the fast paths run only where the PRF is AES.
            let prev_pat = unsafe { canary::pattern_aes(&g.canary, p - slot_size) };
            if !before_intact_zeroed::<WIDE>(s.m.rec_of::<WIDE>(k, s.slot - 1), p, prev_pat) {
                return false;
            }
        }
    }
    // The record first: a thread racing to free the block too sees it freed (not a
    // cleared canary under a live record).
    s.m.set_rec_of::<WIDE>(k, s.slot, record::freed(rec));
    scrub(true, k, raw, p, usable);
    if tag::on() {
        tc.freeing = 0;
    }
    tc.count_free(s.region);
    if slot_size <= FAST_MAX {
        owner::quarantine_fast(g, tc, p, s.region, slot_size, who.func);
    } else {
        owner::quarantine(g, tc, p, s.region, slot_size, who.func);
    }
    true
}

/// For `realloc`, once it has copied a block that `live_small_fast` found (`b`, with its
/// canary pattern `pat`) into its new one: release it as `free` would, without finding
/// its slot and computing its pattern a second time (its canary is checked again, with
/// `pat`). False, having changed nothing, for anything `free_fast` would not release; the
/// caller then frees it the general way, which finds out what it is and reports.
pub fn free_found(raw: usize, b: LiveSmall, pat: u64, who: Caller) -> bool {
    // (`live_small_fast` answers only without MTE: the pointer carries no tag.)
    let Some(tc) = fast_cache().filter(|_| !tag::on()) else { return false };
    let g = crate::heap::globals();
    if b.k.wide {
        free_checked::<true>(g, tc, raw, raw, b, pat, who)
    } else {
        free_checked::<false>(g, tc, raw, raw, b, pat, who)
    }
}

/// A live small block found by `live_small`.
#[derive(Clone, Copy)]
pub struct LiveSmall {
    pub s: SlotAt,
    pub k: &'static ClassInfo,
    /// Its record.
    pub rec: u32,
    /// Its requested size, and what is left of the slot after it.
    pub usable: usize,
    pub slack: usize,
}

/// The live small block `raw` is the start of, if releasing it the way `r` does is
/// allowed: its record live, of `r`'s kind, with the pointer's tag. None for anything else
/// (the general path then finds out what it is). The canary is the caller's to check.
#[inline(always)]
fn live_small(g: &Globals, raw: usize, r: Release) -> Option<LiveSmall> {
    let s = SlabMeta::slot_at(&g.geo, tag::untag_on(raw))?;
    // SAFETY: slot_at returns class < CLASS_COUNT.
    if unsafe { CLASSES.get_unchecked(s.class) }.wide {
        live_small_at::<true>(raw, s, r)
    } else {
        live_small_at::<false>(raw, s, r)
    }
}

/// `live_small` for the slot `s` that `raw` decodes to, whose class has records of the
/// width `WIDE`.
#[inline(always)]
fn live_small_at<const WIDE: bool>(raw: usize, s: SlotAt, r: Release) -> Option<LiveSmall> {
    let p = tag::untag_on(raw);
    // SAFETY: slot_at returns class < CLASS_COUNT.
    let k = unsafe { CLASSES.get_unchecked(s.class) };
    let rec = s.m.rec_of::<WIDE>(k, s.slot);
    let slot_size = k.size as usize;
    let slack = record::slack(rec);
    if !record::is_live(rec) || slack > slot_size {
        return None;
    }
    let usable = slot_size - slack;
    if !r.accepts(p, record::kind(rec), usable) || (tag::on() && tag::tag_of(raw) != record::tag(rec)) {
        return None;
    }
    Some(LiveSmall { s, k, rec, usable, slack })
}

/// For `realloc`: the live small block `raw` is the start of, checked as `free_fast` checks
/// it (record, kind, canary intact), on the fast path's terms (the thread's `fast` flag;
/// without MTE, whose blocks the general path handles), with its canary pattern (for
/// `free_found`). None for anything else: the general path then finds out what it is, and
/// reports.
pub fn live_small_fast(raw: usize, r: Release) -> Option<(LiveSmall, u64)> {
    if fast_cache().is_none() || tag::on() {
        return None;
    }
    let g = crate::heap::globals();
    let b = live_small(g, raw, r)?;
    // SAFETY: the PRF is AES (`fast`).
    let pat = unsafe { canary::pattern_aes(&g.canary, raw) };
    // SAFETY: [raw, raw + slot size) is the live block's slot.
    unsafe { canary::small_intact(pat, raw, b.usable, b.k.size as usize) }.then_some((b, pat))
}

/// Release a small block that has been validated (live, matching, canary intact).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn release_valid(g: &Globals, raw: usize, p: usize, loc: Loc, m: SlabMeta, rec: u32, usable: usize, who: Caller) {
    with_cache(|tc| {
        if m.owner() == tc.id {
            free_local(g, tc, raw, p, loc, m, rec, usable, who)
        } else {
            free_remote(g, tc, raw, p, SlotAt { m, region: loc.region, class: loc.class, slot: loc.slot, interior: 0 }, rec, usable, who)
        }
    })
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn free_local(g: &Globals, tc: &mut TCache, raw: usize, p: usize, loc: Loc, m: SlabMeta, rec: u32, usable: usize, who: Caller) {
    // SAFETY: decode returned class < CLASS_COUNT.
    let k = unsafe { CLASSES.get_unchecked(loc.class) };
    if g.opts.canary && !tag::on() {
        if loc.slot > 0 {
            let prev = m.rec(k, loc.slot - 1);
            if !before_intact(k, prev, p, canary::pattern(&g.canary, p - k.size as usize), g.opts.zero_on_free) && !changed(m, k, loc.slot - 1, prev) {
                finding::found(Finding::Underflow { p, loc, prev, who, collected: false });
            }
        } else {
            first_slot_before_intact(g, tc, k, p, who);
        }
    }
    if tag::on() {
        tc.freeing = p;
    }
    if g.opts.stacks {
        stacks::on_free(p);
    }
    m.set_rec(k, loc.slot, record::freed(rec));
    scrub(g.opts.zero_on_free, k, raw, p, usable);
    tc.freeing = 0;
    tc.count_free(loc.region);
    owner::quarantine(g, tc, p, loc.region, k.size as usize, who.func);
}

/// A free in a slab another cache owns: claim the record with a compare-and-swap (so two
/// frees of one block can never both succeed), clear the slot, and post it for the owner
/// (`remote.rs`), who collects it into its quarantine.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn free_remote(g: &Globals, tc: &mut TCache, raw: usize, p: usize, s: SlotAt, rec: u32, usable: usize, who: Caller) {
    let k = &CLASSES[s.class];
    if tag::on() {
        tc.freeing = p;
    }
    if !s.m.cas_rec(k, s.slot, rec, record::remote_freed(rec)) {
        finding::found(Finding::ConcurrentDoubleFree { p, loc: s.loc(&g.geo, p), who });
    }
    if g.opts.stacks {
        stacks::on_free(p);
    }
    scrub(g.opts.zero_on_free, k, raw, p, usable);
    tc.freeing = 0;
    crate::heap::slab::remote::post(g, &mut tc.outbox, s.m, p, s.slot);
    if !tc.batch_remote {
        crate::heap::slab::remote::flush(g, &mut tc.outbox);
    }
    tc.count_free(s.region);
}

/// Clear a freed slot: zero what the block and its canary used (the rest of the slot is
/// zero already), and with MTE give the whole slot the free tag (zeroing in the same pass).
/// `zero_on_free` is the option (true on the fast path).
#[inline(always)]
fn scrub(zero_on_free: bool, k: &ClassInfo, raw: usize, p: usize, usable: usize) {
    let slot_size = k.size as usize;
    let zero = zero_on_free && slot_size <= ZERO_MAX;
    if tag::on() {
        // Dangling pointers fault from now on. The slack carries the free tag already.
        tag::policy::tag_freed_slot(&mut tag::hw(), p, tag::policy::tagged_len(usable), zero);
    } else if zero && slot_size <= zeroed::SHORT_SLOT {
        // The whole slot, in straight-line code (its size as the table holds it: `opaque`).
        // SAFETY: the slot is the block's, released now; slot sizes are multiples of 16.
        unsafe { zeroed::zero_short(raw, zeroed::opaque(slot_size)) };
    } else if zero {
        let slack = slot_size - usable;
        // Slots are multiples of 16 bytes: rounding up to whole words stays inside.
        let len = ((usable + slack.min(MAX_CANARY)).min(slot_size) + 7) & !7;
        zeroed::zero_words(raw, len);
        if slack > MAX_CANARY {
            zeroed::zero_words(raw + slot_size - TAIL, TAIL);
        }
    }
}
