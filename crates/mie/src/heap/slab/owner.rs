//! Thread-owned slabs. A cache hands out the slots of slabs it owns and changes their
//! records with plain stores; another thread that frees a block there marks the record with
//! one compare-and-swap, sets the slot's bit in the slab's remote-free bitmap and, the first
//! time since the owner last looked, pushes the slab on the owner's notification stack.
//! The owner collects those bits (one swap per 64 slots) when it refills.
//!
//! A slot's way around: free bitmap -> bin (refill) -> live (malloc) -> quarantine (free,
//! or collection of a remote free) -> bin or free bitmap (expiry). A slab whose every slot
//! is back in the free bitmap is empty; a cache keeps one empty slab per region and gives
//! the others back to the pool. A thread that exits gives back all its slabs with free
//! slots (its bins and quarantine drained first: no slot of a slab it gives back is held
//! anywhere else), as partial slabs that any thread takes before an empty one, collecting
//! the frees that reached them meanwhile. While a cache runs, only empty slabs go back: a
//! partial one may still have slots in its bins or quarantine.

use core::sync::atomic::Ordering;

use crate::heap::slab::layout::{Geometry, Loc, BUCKET_SLOTS};
use crate::heap::slab::pool::POOLS;
use crate::heap::slab::quarantine;
use crate::heap::slab::record;
use crate::heap::slab::size_class::{ClassInfo, CLASSES, FAST_MAX, ZERO_MAX};
use crate::heap::slab::meta::{from_id, slab_id, SlabMeta, IN_PARTIAL, QUEUED};
use crate::heap::slab::finding::{self, Finding};
use crate::heap::slab::tcache::{self, TCache};
use crate::heap::Globals;

/// Empty slabs a cache keeps per region before giving more back to the pool (only slabs of
/// at most `KEEP_EMPTY_MAX` bytes: a big empty slab goes back at once).
const KEEP_EMPTY: u32 = 1;
const KEEP_EMPTY_MAX: usize = 16 << 10;
/// Partial slabs looked at when choosing where to take slots from.
const CHOICES: usize = 4;

/// Fill the (empty) bin of `region`: collect remote frees first, then take slots from an
/// owned slab with free slots, else from a slab taken from the pool. False: no memory.
#[cold]
#[inline(never)]
pub fn refill(g: &Globals, tc: &mut TCache, region: usize) -> bool {
    crate::heap::slab::remote::flush(g, &mut tc.outbox);
    tc.used[region / 64] |= 1u64 << (region % 64);
    collect(g, tc, "malloc");
    let k = &CLASSES[region / BUCKET_SLOTS];
    loop {
        if tc.bins.n[region] > 0 {
            return true;
        }
        if let Some(s) = pick_partial(&g.geo, k, tc, region) {
            take_slots(&g.geo, k, tc, region, s);
            return tc.bins.n[region] > 0;
        }
        let Some((s, partial)) = POOLS[region].take(&g.geo, region, tc.id, &mut tc.rng) else {
            // Out of address space or memory: the slots waiting in this thread's quarantine
            // end their delay now (checked as always when they leave), so that the blocks the
            // program freed serve it before it is told there is no memory.
            if end_quarantine(g, tc, "malloc") {
                continue;
            }
            return false;
        };
        let nfree = SlabMeta::of(&g.geo, k, region, s).header().nfree.load(Ordering::Relaxed);
        if nfree > 0 {
            partial_push(&g.geo, k, tc, region, s);
            tc.owned[region].empties += (nfree == k.nslots as u32) as u32;
        }
        if partial {
            // Frees that reached the slab while no cache owned it. (Their expiry may move
            // slots around, even give this slab back: the loop looks again.)
            collect_slab(g, tc, region, s, "malloc");
        }
    }
}

/// Among the first few owned partial slabs, two picked at random: the fuller one (so
/// slabs fill up and others can empty out; placement stays random).
fn pick_partial(g: &Geometry, k: &ClassInfo, tc: &mut TCache, region: usize) -> Option<usize> {
    let head = tc.owned[region].partial;
    if head == 0 {
        return None;
    }
    let mut cand = [0usize; CHOICES];
    let mut n = 0;
    let mut s = head;
    while s != 0 && n < CHOICES {
        cand[n] = s as usize - 1;
        n += 1;
        s = SlabMeta::of(g, k, region, s as usize - 1).header().link.load(Ordering::Relaxed);
    }
    let a = cand[tc.rng.below(n as u32) as usize];
    let b = cand[tc.rng.below(n as u32) as usize];
    let free = |x: usize| SlabMeta::of(g, k, region, x).header().nfree.load(Ordering::Relaxed);
    Some(if free(b) < free(a) { b } else { a })
}

/// Move up to half a bin of free slots of `slab` into the bin, a bitmap word at a time
/// from a random word, then shuffle them.
fn take_slots(g: &Geometry, k: &ClassInfo, tc: &mut TCache, region: usize, slab: usize) {
    let m = SlabMeta::of(g, k, region, slab);
    let h = m.header();
    let mut nfree = h.nfree.load(Ordering::Relaxed);
    if nfree == k.nslots as u32 {
        tc.owned[region].empties -= 1;
    }
    let want = (k.cache_cap as usize / 2).max(1);
    let base = g.slab_base(region, slab);
    let size = k.size as usize;
    let words = k.words as usize;
    let mut got = 0;
    let mut w = tc.rng.below(words as u32) as usize;
    // The bin's first `want` slots (want <= cache_cap): the loop's test is the bound's.
    let bin = &mut tc.bins.get_mut(region).1[..want];
    for _ in 0..words {
        let fw = m.free_word(k, w);
        let mut bits = fw.load(Ordering::Relaxed);
        while bits != 0 && got < want {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            bin[got] = base + (w * 64 + b) * size;
            got += 1;
        }
        let taken = fw.load(Ordering::Relaxed) & !bits;
        fw.store(bits, Ordering::Relaxed);
        nfree -= taken.count_ones();
        if got == want {
            break;
        }
        w = if w + 1 == words { 0 } else { w + 1 };
    }
    h.nfree.store(nfree, Ordering::Relaxed);
    if nfree == 0 {
        partial_remove(g, k, tc, region, slab);
    }
    let (count, slots) = tc.bins.get_mut(region);
    tc.rng.shuffle(&mut slots[..got]);
    *count = got as u32;
}

fn partial_push(g: &Geometry, k: &ClassInfo, tc: &mut TCache, region: usize, slab: usize) {
    let h = SlabMeta::of(g, k, region, slab);
    let head = tc.owned[region].partial;
    h.header().prev.store(0, Ordering::Relaxed);
    h.header().link.store(head, Ordering::Relaxed);
    h.header().flags.store(IN_PARTIAL, Ordering::Relaxed);
    if head != 0 {
        SlabMeta::of(g, k, region, head as usize - 1).header().prev.store(slab as u32 + 1, Ordering::Relaxed);
    }
    tc.owned[region].partial = slab as u32 + 1;
}

fn partial_remove(g: &Geometry, k: &ClassInfo, tc: &mut TCache, region: usize, slab: usize) {
    let h = SlabMeta::of(g, k, region, slab);
    let (prev, next) = (h.header().prev.load(Ordering::Relaxed), h.header().link.load(Ordering::Relaxed));
    if prev != 0 {
        SlabMeta::of(g, k, region, prev as usize - 1).header().link.store(next, Ordering::Relaxed);
    } else {
        tc.owned[region].partial = next;
    }
    if next != 0 {
        SlabMeta::of(g, k, region, next as usize - 1).header().prev.store(prev, Ordering::Relaxed);
    }
    h.header().flags.store(0, Ordering::Relaxed);
}

/// A slot leaves the quarantine: its zero fill is checked (a write after free is found now,
/// whatever happens to the slot next), then it goes to its bin, or to its slab's free
/// bitmap when the bin is full. `func` names the call it happens in, for reports.
#[inline(always)]
pub fn expire(g: &Globals, tc: &mut TCache, p: usize, func: &'static str) {
    let (region, k) = class_of_slot(g, p);
    // (With MTE the slot is zeroed when it is handed out instead: `alloc::tag_block`.)
    if g.opts.zero_on_free && g.opts.write_after_free_check && k.size as usize <= ZERO_MAX && !crate::tag::on() {
        crate::heap::slab::zeroed::check_still_zero_any(p, k.size as usize, func, crate::heap::slab::finding::Found::Leaving);
    }
    to_bin(g, tc, k, region, p);
}

/// `expire` of a slot of at most `FAST_MAX` bytes in a cache whose options are the fast
/// paths' (`TCache::fast`: zeroing and its check on).
#[inline(always)]
fn expire_small(g: &Globals, tc: &mut TCache, p: usize, region: usize, func: &'static str) {
    // SAFETY: the region of a slot of this cache's slabs: < REGION_COUNT.
    let k = unsafe { CLASSES.get_unchecked(region / BUCKET_SLOTS) };
    if !crate::tag::on() {
        // (With MTE the slot is zeroed when it is handed out instead: `alloc::tag_block`.
        // Given the size opaque (`alloc::opaque`) this check cost 1 KiB slots 50
        // instructions more for 3 fewer in 16-byte ones: left as the compiler sees it.)
        crate::heap::slab::zeroed::check_still_zero(p, k.size as usize, func, crate::heap::slab::finding::Found::Leaving);
    }
    to_bin(g, tc, k, region, p);
}

/// The region and class of a slot of this cache's slabs.
#[inline(always)]
fn class_of_slot(g: &Globals, p: usize) -> (usize, &'static ClassInfo) {
    let region = g.geo.region_of_addr(p);
    // SAFETY: p is a slot of this cache's slabs: region < REGION_COUNT.
    (region, unsafe { CLASSES.get_unchecked(region / BUCKET_SLOTS) })
}

/// Put a free slot of class `k` on top of its bin (half the bin goes back to the free
/// bitmaps first when it is full).
#[inline(always)]
fn to_bin(g: &Globals, tc: &mut TCache, k: &ClassInfo, region: usize, p: usize) {
    // SAFETY: region < REGION_COUNT (`class_of_slot`).
    let (count, slots) = unsafe { tc.bins.get_unchecked_mut(region) };
    if *count >= k.cache_cap as u32 {
        return expire_to_full_bin(g, k, tc, region, p);
    }
    // SAFETY: count < cache_cap: a slot of the bin.
    unsafe { *slots.add(*count as usize) = p };
    *count += 1;
}

/// At process exit, the exiting thread's freed blocks that wait in its quarantine or bins
/// may never be handed out again: check their zero fill once (bounded by the quarantine's
/// and the bins' capacities). Other threads may still run: their caches are not touched
/// (a thread that exits drains its own quarantine through `expire`).
pub fn check_at_exit(g: &Globals, tc: &TCache) {
    if !(g.opts.zero_on_free && g.opts.write_after_free_check) {
        return;
    }
    let check = |p: usize| {
        let (_, k) = class_of_slot(g, p);
        if k.size as usize <= ZERO_MAX {
            crate::heap::slab::zeroed::check_still_zero_any(p, k.size as usize, "exit", crate::heap::slab::finding::Found::Exit);
        }
    };
    tc.quarantine.for_each(check);
    for region in tcache::regions_in(tc.used) {
        let k = &CLASSES[region / BUCKET_SLOTS];
        for &p in tc.bins.held(region) {
            let slot = crate::heap::slab::layout::slot_of(k, p);
            if record::state(SlabMeta::at(&g.geo, k, p).rec(k, slot)) == record::FREED {
                check(p);
            }
        }
    }
}

/// The bin is full: half of it goes back to the free bitmaps first.
#[cold]
#[inline(never)]
fn expire_to_full_bin(g: &Globals, k: &ClassInfo, tc: &mut TCache, region: usize, p: usize) {
    let half = k.cache_cap as usize / 2;
    let n = tc.bins.n[region] as usize;
    to_bitmaps(&g.geo, k, tc, region, half, n);
    let (count, slots) = tc.bins.get_mut(region);
    slots[half] = p;
    *count = half as u32 + 1;
}

/// Return the owned free slots `from..to` of `region`'s bin to their slabs' free bitmaps
/// (the bin's count is the caller's to lower). Neighbours in a bin mostly come from one
/// slab (a bin is refilled from one slab at a time, and freed in about the order it was
/// handed out): a run of them shares one metadata lookup and one update of the slab's count.
/// An emptied slab beyond the one kept per region goes back to the pool.
fn to_bitmaps(g: &Geometry, k: &ClassInfo, tc: &mut TCache, region: usize, from: usize, to: usize) {
    let slab_mask = k.slab_mask as usize;
    let held = tc.bins.get_mut(region).1[..to].as_ptr();
    let mut i = from;
    while i < to {
        // SAFETY (all three): i < to, and `held` is the start of this bin's first `to`
        // slots (bounds checked once above); nothing below moves or shrinks the bin.
        let first = unsafe { *held.add(i) };
        let m = SlabMeta::at(g, k, first);
        let run = i;
        while i < to && unsafe { *held.add(i) } & !slab_mask == first & !slab_mask {
            let slot = crate::heap::slab::layout::slot_of(k, unsafe { *held.add(i) });
            let fw = m.free_word(k, slot / 64);
            fw.store(fw.load(Ordering::Relaxed) | 1u64 << (slot % 64), Ordering::Relaxed);
            i += 1;
        }
        let added = (i - run) as u32;
        let h = m.header();
        let nfree = h.nfree.load(Ordering::Relaxed) + added;
        h.nfree.store(nfree, Ordering::Relaxed);
        // (The slab's index only when a list changes: worked out from the address, it is
        // a dozen instructions a run.)
        if h.flags.load(Ordering::Relaxed) & IN_PARTIAL == 0 {
            partial_push(g, k, tc, region, g.slab_of(k, first));
        }
        if nfree == k.nslots as u32 {
            tc.owned[region].empties += 1;
            if tc.owned[region].empties > KEEP_EMPTY || 1usize << k.slab_shift > KEEP_EMPTY_MAX {
                release(g, k, tc, region, g.slab_of(k, first));
            }
        }
    }
}

/// Give an owned slab with free slots back to its pool (empty, or partial when the cache
/// holds none of its slots in bins or quarantine), unless it is on this cache's notification
/// stack (it then comes back through `collect`, and may be given back later).
fn release(g: &Geometry, k: &ClassInfo, tc: &mut TCache, region: usize, slab: usize) {
    let m = SlabMeta::of(g, k, region, slab);
    if m.header().state.compare_exchange(tc.id as u64, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return;
    }
    let nfree = m.header().nfree.load(Ordering::Relaxed);
    partial_remove(g, k, tc, region, slab);
    let empty = nfree == k.nslots as u32;
    tc.owned[region].empties -= empty as u32;
    POOLS[region].give(g, region, slab, empty);
}

/// Put a freed slot in the quarantine; slots whose delay is over leave it (`expire`).
#[inline(always)]
pub fn quarantine(g: &Globals, tc: &mut TCache, p: usize, region: usize, slot_size: usize, func: &'static str) {
    if tc.fast && slot_size <= FAST_MAX {
        return quarantine_fast(g, tc, p, region, slot_size, func);
    }
    let cap = g.opts.quarantine as usize;
    if cap == 0 {
        return expire(g, tc, p, func);
    }
    let limits = quarantine::Limits { cap, budget: g.opts.quarantine_bytes };
    let j = tc.stage_index();
    let old = tc.quarantine.push_pop(p, slot_size, j, limits);
    if old != 0 {
        expire(g, tc, old, func);
        if tc.quarantine.over(limits) {
            quarantine_overflow(g, tc, limits, func);
        }
    }
}

/// `quarantine` on the free fast path (`tc.fast`): a small slot enters the count-only ring.
#[inline(always)]
pub fn quarantine_fast(g: &Globals, tc: &mut TCache, p: usize, region: usize, slot_size: usize, func: &'static str) {
    debug_assert!(tc.fast && slot_size <= FAST_MAX);
    let j = tc.stage_index();
    let (old, old_region) = tc.quarantine.push_small(p, region, j);
    if old != 0 {
        expire_small(g, tc, old, old_region, func);
    }
}

/// More than one block must leave (the byte budget, with blocks of different sizes).
#[cold]
#[inline(never)]
fn quarantine_overflow(g: &Globals, tc: &mut TCache, limits: quarantine::Limits, func: &'static str) {
    while let Some(old) = tc.quarantine.pop_expired(limits) {
        expire(g, tc, old, func);
    }
}

/// Collect the slots other threads freed in this cache's slabs: they enter the quarantine
/// as if freed here. A collected slot whose record is not REMOTE_FREED was also freed by
/// its owner at the same time (the owner's plain store overwrote the remote mark): a double
/// free, reported.
pub fn collect(g: &Globals, tc: &mut TCache, func: &'static str) {
    // A plain load first: with no remote frees waiting (the common refill) no locked
    // instruction runs. A push that lands just after it is collected at the next refill.
    if tc.shared().notify.head.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut id = tc.shared().notify.head.swap(0, Ordering::Acquire);
    while id != 0 {
        let (region, slab) = from_id(id);
        let k = &CLASSES[region / BUCKET_SLOTS];
        let m = SlabMeta::of(&g.geo, k, region, slab);
        // Read the link before clearing QUEUED: from then on the slab may be pushed again.
        id = m.header().next.load(Ordering::Relaxed);
        // SeqCst, as the remote words' swaps: see `notify`.
        m.header().state.fetch_and(!QUEUED, Ordering::SeqCst);
        collect_slab(g, tc, region, slab, func);
    }
}

/// Collect the remote frees of one slab this cache owns.
fn collect_slab(g: &Globals, tc: &mut TCache, region: usize, slab: usize, func: &'static str) {
    let k = &CLASSES[region / BUCKET_SLOTS];
    let m = SlabMeta::of(&g.geo, k, region, slab);
    let base = g.geo.slab_base(region, slab);
    for w in 0..k.words as usize {
        let mut bits = m.remote_word(k, w).swap(0, Ordering::SeqCst);
        while bits != 0 {
            let slot = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let r = m.rec(k, slot);
            let p = base + slot * k.size as usize;
            if record::state(r) != record::REMOTE_FREED {
                finding::found(Finding::RacingDoubleFree { p, region, slab, slot });
            }
            if g.opts.canary && !crate::tag::on() {
                crate::heap::slab::neighbour::collected_before_intact(g, tc, k, m, Loc::at_slot(region, slab, slot), p);
            }
            m.set_rec(k, slot, record::freed(r));
            quarantine(g, tc, p, region, k.size as usize, func);
        }
    }
}

/// Tell the owner of `slab` that a slot of it was freed by another thread (its remote bit
/// is set): push the slab on the owner's stack unless it is there already.
#[inline]
pub fn notify(g: &Geometry, m: SlabMeta, region: usize, slab: usize) {
    let h = m.header();
    // Already queued (the common case when threads free many blocks of one slab): nothing
    // to do, and no locked instruction. The caller set the slot's remote bit (SeqCst) just
    // before; the owner clears QUEUED (SeqCst) before it swaps the remote words (SeqCst),
    // so if this load still sees QUEUED, that swap comes after the bit was set and takes it.
    if h.state.load(Ordering::SeqCst) & QUEUED != 0 {
        return;
    }
    let old = h.state.fetch_or(QUEUED, Ordering::AcqRel);
    if old & QUEUED != 0 {
        return;
    }
    let owner = old as u32;
    let Some(c) = tcache::by_id(owner) else {
        // In the pool (the owner collected everything and gave the slab back meanwhile).
        h.state.fetch_and(!QUEUED, Ordering::AcqRel);
        return;
    };
    let id = slab_id(region, slab);
    let mut head = c.notify.head.load(Ordering::Relaxed);
    loop {
        h.next.store(head, Ordering::Relaxed);
        match c.notify.head.compare_exchange_weak(head, id, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => head = now,
        }
    }
    let _ = g;
    tcache::help(owner);
}

/// Every slot of the quarantine leaves it (`expire`: checked, then to its bin). False if
/// it was empty.
fn end_quarantine(g: &Globals, tc: &mut TCache, func: &'static str) -> bool {
    let mut pending = [0usize; 64];
    let mut any = false;
    loop {
        let mut n = 0;
        tc.quarantine.drain_some(&mut pending, &mut n);
        if n == 0 {
            return any;
        }
        any = true;
        for &p in &pending[..n] {
            expire(g, tc, p, func);
        }
    }
}

/// Give back everything a cache holds: collect remote frees, empty the quarantine (each
/// slot checked) and the bins into the free bitmaps, give empty slabs to the pools beyond
/// the one kept per region. Thread exit, trim, and collection for idle caches.
pub fn drain(g: &Globals, tc: &mut TCache, func: &'static str) {
    crate::heap::slab::remote::flush(g, &mut tc.outbox);
    collect(g, tc, func);
    end_quarantine(g, tc, func);
    for region in tcache::regions_in(tc.used) {
        let n = tc.bins.n[region] as usize;
        if n == 0 {
            continue;
        }
        to_bitmaps(&g.geo, &CLASSES[region / BUCKET_SLOTS], tc, region, 0, n);
        tc.bins.n[region] = 0;
    }
}

/// Give owned slabs with free slots back to their pools: only the empty ones (`empties_only`,
/// trim) or every one (thread exit, after `drain`: no slot is held in bins or quarantine).
pub fn give_back(g: &Globals, tc: &mut TCache, empties_only: bool) {
    for region in 0..tc.owned.len() {
        if tc.owned[region].partial == 0 || (empties_only && tc.owned[region].empties == 0) {
            continue;
        }
        let k = &CLASSES[region / BUCKET_SLOTS];
        let mut s = tc.owned[region].partial;
        while s != 0 {
            let slab = s as usize - 1;
            let h = SlabMeta::of(&g.geo, k, region, slab);
            s = h.header().link.load(Ordering::Relaxed);
            if !empties_only || h.header().nfree.load(Ordering::Relaxed) == k.nslots as u32 {
                release(&g.geo, k, tc, region, slab);
            }
        }
    }
}
