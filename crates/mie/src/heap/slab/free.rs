//! free. The common case, a valid small block, is one straight path: decode the address,
//! load the slot's record, check state, kind, size, tag and canary, then release it. In a
//! slab the calling thread owns that is plain stores and the quarantine (no atomic, no
//! lock); in another thread's slab, one compare-and-swap of the record, the owner told in
//! batches (`remote.rs`). Anything unusual (and every error) goes to `validate`, which finds
//! out what is wrong and reports it.

use crate::heap::checks::canary::{self, MAX_CANARY, TAIL};
use crate::heap::types::kind::Release;
use crate::heap::slab::layout::{Geometry, Loc};
use crate::heap::slab::owner;
use crate::heap::slab::pool;
use crate::heap::slab::record;
use crate::heap::slab::size_class::{ClassInfo, CLASSES, FAST_MAX, ZERO_MAX};
use crate::heap::slab::meta::{SlabMeta, SlotAt};
use crate::heap::slab::finding::{self, Finding};
use crate::heap::slab::tcache::{self, with_cache, TCache};
use crate::heap::{checks::stacks, Caller, Globals};
use crate::platform::{self, tls};
use crate::tag;

/// The common free, in one straight line: a valid small block. False, having changed
/// nothing, for anything else (the general path then finds out what it is, and reports:
/// `heap::release`).
#[inline(always)]
pub fn free_fast(raw: usize, who: Caller, r: Release) -> bool {
    let tcp = tls::get();
    if tcp <= tcache::DEAD {
        return false;
    }
    // SAFETY: a live TLS word is this thread's own cache.
    let tc = unsafe { &mut *(tcp as *mut TCache) };
    if !tc.fast {
        return false;
    }
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
    let Some(LiveSmall { s, k, rec, usable, slack }) = live_small_at::<WIDE>(raw, s, r) else { return false };
    let slot_size = k.size as usize;
    if tag::on() {
        tc.freeing = p;
    }
    if !canary::none_needed(usable) {
        // SAFETY: the PRF is AES (`fast`).
        let pat = if tag::on() { unsafe { canary::pattern_aes(&g.canary, p) } } else { pat };
        // SAFETY: [raw, raw + slot_size) is the live block's slot (its tag in raw).
        if !unsafe { canary::small_intact_slack(pat, raw, slack, slot_size) } {
            return false;
        }
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

/// A live small block found by `live_small`.
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
/// without MTE, whose blocks the general path handles). None for anything else: the general
/// path then finds out what it is, and reports.
pub fn live_small_fast(raw: usize, r: Release) -> Option<LiveSmall> {
    let tcp = tls::get();
    // SAFETY: a live TLS word is this thread's own cache (read only).
    if tcp <= tcache::DEAD || !unsafe { (*(tcp as *const TCache)).fast } || tag::on() {
        return None;
    }
    let g = crate::heap::globals();
    let b = live_small(g, raw, r)?;
    // SAFETY: [raw, raw + slot size) is the live block's slot; the PRF is AES (`fast`).
    unsafe { canary::small_intact(canary::pattern_aes(&g.canary, raw), raw, b.usable, b.k.size as usize) }.then_some(b)
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
    } else if zero && slot_size <= crate::heap::slab::alloc::SHORT_SLOT {
        // The whole slot, in straight-line code (its size as the table holds it: `opaque`).
        // SAFETY: the slot is the block's, released now; slot sizes are multiples of 16.
        unsafe { crate::heap::slab::alloc::zero_short(raw, crate::heap::slab::alloc::opaque(slot_size)) };
    } else if zero {
        let slack = slot_size - usable;
        // Slots are multiples of 16 bytes: rounding up to whole words stays inside.
        let len = ((usable + slack.min(MAX_CANARY)).min(slot_size) + 7) & !7;
        zero_words(raw, len);
        if slack > MAX_CANARY {
            zero_words(raw + slot_size - TAIL, TAIL);
        }
    }
}

/// Zero `len` (a multiple of 8) bytes at `p`, a multiple of 16: pairs of word stores for
/// short ranges (the volatile stores keep the compiler from turning them into a call to the
/// exported, checked `memset`), aligned vector stores up to a few pages, the platform's
/// block fill above.
#[inline(always)]
fn zero_words(p: usize, len: usize) {
    if len > 256 {
        return zero_long(p, len);
    }
    let mut i = 0;
    // SAFETY (both loops): [p, p + len) lies inside the slot being freed, owned by the caller.
    while i + 16 <= len {
        unsafe {
            core::ptr::write_volatile((p + i) as *mut u64, 0);
            core::ptr::write_volatile((p + i + 8) as *mut u64, 0);
        }
        i += 16;
    }
    if i < len {
        unsafe { core::ptr::write_volatile((p + i) as *mut u64, 0) };
    }
}

/// `zero_words` above 256 bytes (out of line).
#[inline(never)]
fn zero_long(p: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len <= 4096 {
        if crate::platform::simd::avx2() {
            // SAFETY: [p, p + len) lies inside the slot being freed, owned by the caller
            // (len > 256, a multiple of 8); the CPU and the kernel support AVX2 (simd::avx2).
            unsafe { crate::platform::simd::zero_avx2(p, len) };
            return;
        }
        use core::arch::x86_64::*;
        let mut i = 0;
        // SAFETY (all stores): [p, p + len) lies inside the slot being freed, owned by the
        // caller; p is a multiple of 16, so is every vector store's address; SSE2 is part
        // of x86-64. (`rep stosb` costs an instruction per byte under valgrind, and the
        // vector loop is as fast below a few pages.)
        unsafe {
            let z = _mm_setzero_si128();
            while i + 64 <= len {
                core::ptr::write_volatile((p + i) as *mut __m128i, z);
                core::ptr::write_volatile((p + i + 16) as *mut __m128i, z);
                core::ptr::write_volatile((p + i + 32) as *mut __m128i, z);
                core::ptr::write_volatile((p + i + 48) as *mut __m128i, z);
                i += 64;
            }
            while i + 16 <= len {
                core::ptr::write_volatile((p + i) as *mut __m128i, z);
                i += 16;
            }
            if i < len {
                core::ptr::write_volatile((p + i) as *mut u64, 0);
            }
        }
        return;
    }
    platform::zero(p as *mut u8, len);
}

/// The first slot of a slab: the bytes before it are the end of the slab before, in the
/// same segment of the region (its last slot, or the unused tail after it, zero). Checked
/// (`first_slot_end_changed`) and reported at the free.
#[cold]
#[inline(never)]
fn first_slot_before_intact(g: &Globals, tc: &TCache, k: &ClassInfo, p: usize, who: Caller) {
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
fn changed(m: SlabMeta, k: &ClassInfo, slot: usize, was: u32) -> bool {
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
fn before_intact_zeroed<const WIDE: bool>(prev: u32, p: usize, pat: u64) -> bool {
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
fn before_intact(k: &ClassInfo, prev: u32, p: usize, pat: u64, zero_on_free: bool) -> bool {
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
