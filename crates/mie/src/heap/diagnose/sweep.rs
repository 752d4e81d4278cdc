//! The sweep at exit: a block that is never freed never has its canary checked at free, so an
//! overflow from it (the heap overflows of long-lived buffers, CVE-2021-3156's among them)
//! would go unseen. When the process exits, every live block's canaries (small and large),
//! every freed slot's zero fill and the first bytes of every never-used slot and of every
//! slab's unused tail are checked once, and the first thing found broken is reported. The
//! never-used parts are read only where their page is resident (`mincore`): a page nobody
//! wrote to reads as zero, and reading it would only map it. (A page swapped out is not
//! resident either: never-used bytes on it go unchecked.)
//!
//! Bounded: the sweep stops after `BUDGET_NS` (measured: 2 ms for 200 MB of 1 KB blocks,
//! 15 ms for 2 million 64-byte blocks, so the budget runs out only in far bigger heaps). When
//! other threads still use the heap (a thread pool nobody joined), it covers the slabs the
//! exiting thread owns and those in the pools (the blocks of threads that ended), each pool's
//! slabs with its lock held: no other thread hands out their slots meanwhile, and one that
//! frees a block in them (a remote free) marks its record before it clears the slot. The
//! slabs other live threads own are swept too: such a thread may be between the two stores
//! of a hand-out or a free (the slot's record, then its bytes), so there a finding counts
//! only if it is still there, under the same record, after the owner had `SETTLE_STEPS`
//! milliseconds to finish; large blocks likewise, with the large-block table locked
//! meanwhile. With MTE those threads retag slots as the sweep reads them: the sweeping
//! thread's tag checks are suspended while other threads run. A finding is re-checked
//! against the slot's record, which must not have changed while its bytes were read.

use core::fmt::Write;

use crate::heap::slab::{finding::Found, zeroed::all_zero};
use crate::heap::large::LARGE;
use crate::heap::slab::layout::{Loc, REGION_COUNT, BUCKET_SLOTS};
use crate::heap::slab::record;
use crate::heap::slab::size_class::{CLASSES, ZERO_MAX};
use crate::heap::slab::meta::{SlabMeta, PURGED};
use crate::heap::{checks::canary, slab::pool, slab::tcache, diagnose::validate, Globals};
use crate::platform;
use crate::report::{self, Kind};
use crate::tag;

/// How long the sweep may take (nanoseconds).
pub const BUDGET_NS: u64 = 100_000_000;
/// Bytes of a never-used slot, or of a slab's unused tail, that are checked: a linear
/// overflow reaching it writes these first.
const CLEAN_PREFIX: usize = 64;
/// Milliseconds a finding in a slab another live thread owns must last (see the module's text).
const SETTLE_STEPS: u32 = 20;

/// Sweep the heap (see the module's text); `own` is the exiting thread's cache id, if it has
/// a cache.
pub fn at_exit(g: &Globals, own: Option<u32>) {
    // With other threads using the heap: this thread's slabs only (none without a cache).
    let only = if tcache::threads() > 1 {
        match own {
            Some(id) => Some(id),
            None => return,
        }
    } else {
        None
    };
    // With other threads running, large blocks too: a thread that has just made a block
    // writes its canary after the table has it, outside the table's lock, so there a
    // finding must last as long as one in another thread's slab (`lasts`). The lock held
    // meanwhile keeps every block in the table mapped and its size as it is; the report is
    // made after it is released, from what was read under it (the block may be gone by then).
    let threaded = only.is_some();
    // With MTE, other threads retag the slots they hand out and free: the sweep's reads of
    // their slabs and blocks go without tag checks (its own thread's, while it runs).
    let _unchecked = threaded.then(tag::ChecksSuspended::begin);
    if g.opts.canary {
        let mut first_bad = 0;
        let bad = LARGE.find_live(threaded, |e| {
            let len = (e.body_len - e.req).min(canary::MAX_CANARY);
            // SAFETY: the canary lies in the live block's committed pages, after its end
            // (the table is locked: the block stays).
            let broken = || unsafe { canary::check(canary::pattern(&g.canary, e.addr), (e.addr + e.req) as *const u8, len) };
            let Some(off) = broken() else { return false };
            first_bad = off;
            !threaded || lasts(|| broken().is_some())
        });
        if let Some(e) = bad {
            validate::large_overflow_at_exit(e.addr, e.req, first_bad);
        }
    }
    let deadline = platform::now_ns() + BUDGET_NS;
    let mut swept = 0usize;
    for region in 0..REGION_COUNT {
        for slab in pool::slabs(region) {
            if swept % 64 == 63 && platform::now_ns() > deadline {
                return;
            }
            match only {
                None => sweep_slab(g, region, slab, false),
                Some(id) => match owned_by(g, region, slab) {
                    o if o == id => sweep_slab(g, region, slab, false),
                    // (Left out if its pool's lock is taken: the exiting thread itself may
                    // hold it, in a signal handler that calls `exit` mid-malloc.)
                    0 => {
                        pool::while_pooled(&g.geo, region, slab, || sweep_slab(g, region, slab, false));
                    }
                    _ => sweep_slab(g, region, slab, true),
                },
            }
            swept += 1;
        }
    }
}

/// The cache that owns `slab` of `region` (0: none), a slab in `pool::slabs` (its metadata
/// exists).
fn owned_by(g: &Globals, region: usize, slab: usize) -> u32 {
    SlabMeta::of(&g.geo, &CLASSES[region / BUCKET_SLOTS], region, slab).owner()
}

/// Sweep one created slab; `foreign`: another live thread owns it (findings must settle).
fn sweep_slab(g: &Globals, region: usize, slab: usize, foreign: bool) {
    let k = &CLASSES[region / BUCKET_SLOTS];
    let m = SlabMeta::of(&g.geo, k, region, slab);
    let h = m.header();
    if h.flags.load(core::sync::atomic::Ordering::Relaxed) & PURGED != 0 || h.created.load(core::sync::atomic::Ordering::Relaxed) == 0 {
        return; // its pages read as zero and no slot holds a block, or it is a segment's gap (never mapped)
    }
    let size = k.size as usize;
    let zeroed = g.opts.zero_on_free && g.opts.write_after_free_check && size <= ZERO_MAX;
    // Never-used slots and the tail are read only on resident pages: a page nothing ever
    // wrote to is not resident and reads as zero, and reading it would map it (a page fault
    // for each, most of the sweep's cost in a short-lived process).
    let base = g.geo.slab_base(region, slab);
    let pg = platform::page_size();
    let first_page = base & !(pg - 1);
    let span = (base + pool::mapped_len(region, slab)).next_multiple_of(pg) - first_page;
    let mut pages = [0u8; 256];
    let known = platform::resident(first_page, span, &mut pages);
    let shift = pg.trailing_zeros();
    // Whether the `len` bytes at `a` lie on pages nothing wrote to.
    let untouched = |a: usize, len: usize| {
        known && ((a - first_page) >> shift..=(a + len - 1 - first_page) >> shift).all(|i| pages.get(i).is_some_and(|b| b & 1 == 0))
    };
    if k.wide {
        sweep_slots::<true>(g, m, region, slab, base, zeroed, foreign, &untouched);
    } else {
        sweep_slots::<false>(g, m, region, slab, base, zeroed, foreign, &untouched);
    }
    // The slab's unused tail, where it is mapped (a guarded slab's faults instead).
    let tail = (1usize << k.slab_shift) - k.nslots as usize * size;
    let t = g.geo.slot_addr(region, slab, k.nslots as usize);
    if tail >= 16 && !pool::slab_guarded(region, slab) && !untouched(t, tail.min(CLEAN_PREFIX)) {
        // SAFETY: the slab's own mapped tail, which no block owns (tag 0 with MTE).
        if !unsafe { all_zero(t, tail.min(CLEAN_PREFIX)) } {
            let last = Loc::at_slot(region, slab, k.nslots as usize - 1);
            stray(g, last, g.geo.slot_addr(region, slab, last.slot), m.rec(k, last.slot), t, "the slab's unused tail after its last slot");
        }
    }
}

/// Check every slot of a created slab whose records are of the width `WIDE` (`base`: its
/// first slot; `untouched`: whether bytes lie on pages nothing wrote to; `foreign`: another
/// live thread owns the slab).
#[allow(clippy::too_many_arguments)]
fn sweep_slots<const WIDE: bool>(g: &Globals, m: SlabMeta, region: usize, slab: usize, base: usize, zeroed: bool, foreign: bool, untouched: &impl Fn(usize, usize) -> bool) {
    let k = &CLASSES[region / BUCKET_SLOTS];
    let size = k.size as usize;
    let (n, per, nslots) = (size.min(CLEAN_PREFIX), SlabMeta::recs_per_16::<WIDE>(), k.nslots as usize);
    let mut p = base;
    let mut slot = 0;
    while slot < nslots {
        // A run of never-used slots on pages nothing wrote to (most of a short-lived
        // process's heap): checked as a whole, their records in one load.
        if slot + per <= nslots && m.recs_zero::<WIDE>(k, slot) && untouched(p, (per - 1) * size + n) {
            slot += per;
            p += per * size;
            continue;
        }
        let rec = m.rec_of::<WIDE>(k, slot);
        // (The bytes were read before the record is read again: another thread that frees
        // the block marks the record before it clears the slot.)
        let still = || {
            core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
            m.rec_of::<WIDE>(k, slot) == rec
        };
        let bad = || slot_bad(g, p, size, n, rec, zeroed, untouched) && still();
        if bad() && (!foreign || lasts(bad)) {
            found(g, Loc::at_slot(region, slab, slot), p, rec);
        }
        slot += 1;
        p += size;
    }
}

/// Whether the slot at `p` (`size` bytes, record `rec`) is not as its record says: a
/// never-used slot's first `n` bytes not zero, a live block's canary broken, a free slot of
/// a zeroed class (`zeroed`) not zero.
fn slot_bad(g: &Globals, p: usize, size: usize, n: usize, rec: u32, zeroed: bool, untouched: &impl Fn(usize, usize) -> bool) -> bool {
    if record::state(rec) == record::FREE_CLEAN {
        // (The common slot by far: never used.)
        // SAFETY: a never-used slot: committed, zero, carrying the allocator's tag 0.
        !untouched(p, n) && !unsafe { all_zero(p, n) }
    } else if record::is_live(rec) {
        let usable = size.saturating_sub(record::slack(rec));
        let mem = if tag::enabled() { tag::with_tag(p, record::tag(rec)) } else { p };
        // SAFETY: the live block's slot, read through its own pointer.
        g.opts.canary && !unsafe { canary::small_intact(canary::pattern(&g.canary, p), mem, usable, size) }
    } else if record::state(rec) == record::FREED && zeroed {
        let view = if tag::enabled() { tag::with_tag(p, tag::TAG_FREE) } else { p };
        // SAFETY: a free slot of a created slab: committed, carrying the free tag.
        !unsafe { all_zero(view, size) }
    } else {
        false // freed by another thread a moment ago: its owner collects it
    }
}

/// For memory another live thread may be changing: whether a finding (`bad()`) is still
/// there after each of `SETTLE_STEPS` milliseconds. That thread stores a slot's record (or
/// a large block's table entry) before its bytes when it hands the block out or frees it,
/// so a finding made between the two is gone, or its record changed, a moment later.
#[cold]
fn lasts(bad: impl Fn() -> bool) -> bool {
    (0..SETTLE_STEPS).all(|_| {
        platform::sleep_ns(1_000_000);
        bad()
    })
}

/// Report what was found in the slot at `p` (record `rec`); returns if a second look finds
/// it intact after all.
#[cold]
fn found(g: &Globals, l: Loc, p: usize, rec: u32) {
    let k = &CLASSES[l.class];
    let size = k.size as usize;
    if record::is_live(rec) {
        let usable = size - record::slack(rec);
        let mem = if tag::enabled() { tag::with_tag(p, record::tag(rec)) } else { p };
        return validate::check_canary(g, p, mem, usable, size - usable, Some(&l), crate::caller!("exit", 0));
    }
    if record::state(rec) == record::FREED {
        return crate::heap::slab::zeroed::check_still_zero_any(p, size, "exit", Found::ExitFree);
    }
    // A never-used slot: the slot before it is where the write came from, if it holds a block.
    let prev = (l.slot > 0).then(|| (Loc { slot: l.slot - 1, ..l }, p - size));
    match prev {
        Some((pl, pp)) => {
            let m = SlabMeta::new(&g.geo, l.region, l.slab);
            stray(g, pl, pp, m.rec(k, pl.slot), p, "a never-used slot")
        }
        None => stray_unowned(p, "a never-used slot (the first of its slab)"),
    }
}

/// Bytes that no block owns (`at`, in `what`) were written; `before` is the slot before them.
fn stray(g: &Globals, before: Loc, start: usize, rec: u32, at: usize, what: &str) -> ! {
    let _ = g;
    if !record::is_live(rec) {
        stray_unowned(at, what);
    }
    let size = CLASSES[before.class].size as usize - record::slack(rec);
    report::fatal(Kind::HeapBufferOverflow, start, "exit", |o| {
        let _ = writeln!(o, "  {what} at {at:#x}, {} bytes past the end of the {size}-byte block at {start:#x}, was written", at - start - size);
        let _ = writeln!(o, "  found at exit: the block was never freed, so no free could check it");
        validate::describe_slot(o, &before, start, "live");
        let _ = writeln!(o, "  hint: a write ran past the end of this block (linear overflow), past its slack canary");
    })
}

fn stray_unowned(at: usize, what: &str) -> ! {
    report::fatal(Kind::InvalidAccess, at, "exit", |o| {
        let _ = writeln!(o, "  {what} at {at:#x} was written, and no live block comes before it: a wild write into mie's heap");
        let _ = writeln!(o, "  found at exit");
    })
}
