//! malloc. The common case (a small block, a slot waiting in the thread's bin) takes no lock
//! and no atomic read-modify-write: pop the slot, check its record says free (and, if it
//! held a block before, that it is still zero: a write after free), tag it (MTE), store its
//! record, write its canary.

use core::fmt::Write;

use crate::heap::slab::layout::{region_of, slot_of};
use crate::heap::slab::zeroed::{check_still_zero, check_still_zero_any, opaque};
use crate::heap::slab::owner;
use crate::heap::slab::record;
use crate::heap::slab::size_class::{self, ClassInfo, CLASSES, ZERO_MAX};
use crate::heap::slab::meta::SlabMeta;
use crate::heap::slab::finding::Found;
use crate::heap::slab::tcache::{self, TCache};
use crate::heap::{checks::canary, Globals};
use crate::report::{self, Kind};
use crate::platform::tls;
use crate::tag;

/// The common malloc, in one straight line: a small block (up to 2 KiB) from the slot on
/// top of the thread's bin. Null when anything needs the general path (no cache yet, empty
/// bin, a sample due, zero or bigger sizes, stacks recorded); it then does the same work.
#[inline(always)]
pub fn malloc_fast(size: usize, bucket: usize, kind: u8) -> (*mut u8, bool) {
    let tcp = tls::get();
    if tcp <= tcache::DEAD {
        return (core::ptr::null_mut(), false);
    }
    // SAFETY: a live TLS word is this thread's own cache (attached after init).
    malloc_fast_in(unsafe { &mut *(tcp as *mut TCache) }, size, bucket, kind)
}

/// `malloc_fast` with the calling thread's cache.
#[inline(always)]
pub fn malloc_fast_in(tc: &mut TCache, size: usize, bucket: usize, kind: u8) -> (*mut u8, bool) {
    malloc_fast_then(tc, size, bucket, kind, |p, zero| (p, zero), || (core::ptr::null_mut(), false))
}

/// `malloc_fast_in` that goes on with `hit(block, zero)` or `miss()` straight from where it
/// ends (no answer built and tested again by the caller).
#[inline(always)]
pub fn malloc_fast_then<T>(tc: &mut TCache, size: usize, bucket: usize, kind: u8, hit: impl FnOnce(*mut u8, bool) -> T, miss: impl FnOnce() -> T) -> T {
    match malloc_fast_sized(tc, size, size, bucket, kind) {
        Some(p) => hit(p, true),
        None => miss(),
    }
}

/// The fast path for a block of `size` bytes in the class for `room` (≥ size; malloc's own
/// calls pass `size`): None, having changed nothing, for sizes it does not serve (0, or
/// `room` at `FAST_MAX` and above) or when the bin cannot hand out a slot. A slot on the
/// bin whose record is not a free slot's is reported at once (`corrupt_slot`), as the
/// general path reports it.
#[inline(always)]
pub fn malloc_fast_sized(tc: &mut TCache, size: usize, room: usize, bucket: usize, kind: u8) -> Option<*mut u8> {
    if size == 0 || room < size || room >= size_class::FAST_MAX {
        return None;
    }
    // Split by record width once (a class holds room + 1: canaries are on).
    if room < size_class::NARROW_RECORD_MAX {
        malloc_fast_of::<false>(tc, size, room, bucket, kind)
    } else {
        malloc_fast_of::<true>(tc, size, room, bucket, kind)
    }
}

/// `malloc_fast_in` for a block of `size` bytes in the class for `room` (≥ size; malloc's
/// own calls pass `size`), whose records have the width `WIDE`: the block (the first `size`
/// bytes zero), or None.
#[inline(always)]
fn malloc_fast_of<const WIDE: bool>(tc: &mut TCache, size: usize, room: usize, bucket: usize, kind: u8) -> Option<*mut u8> {
    let g = crate::heap::globals();
    // (`fast`: canaries on, so the class is for room + 1.)
    let class = size_class::fast_class(room + 1);
    let region = region_of(class, bucket);
    // SAFETY: class < CLASS_COUNT and bucket < BUCKET_SLOTS, so region < REGION_COUNT.
    let (k, (count, slots)) = unsafe { (CLASSES.get_unchecked(class), tc.bins.get_unchecked_mut(region)) };
    if *count == 0 || tc.sample_countdown <= 1 || !tc.fast {
        return None;
    }
    let n = *count - 1;
    // SAFETY: n < count <= the class's cache_cap: a slot of the bin.
    let p = unsafe { *slots.add(n as usize) };
    // The slot is taken from here on, the counters first: what the rest needs then fits in
    // the registers a call may clobber, and malloc saves none of its caller's.
    *count = n;
    tc.sample_countdown -= 1;
    tc.count_alloc(region);
    let (m, slot) = (SlabMeta::at(&g.geo, k, p), slot_of(k, p));
    let r = m.rec_of::<WIDE>(k, slot);
    if !record::allocatable(r) {
        corrupt_slot(g, p, r);
    }
    // From here the same steps as `alloc_small`'s end, written out again: one shared
    // function (tried, `#[inline(always)]`) costs this path 26 instructions per
    // malloc+free (callgrind), through worse register allocation.
    let slot_size = k.size as usize;
    let freed = record::state(r) == record::FREED;
    let (user, t) = if tag::on() {
        // A freed slot's tag store zeroes the block too (see `tag_block`).
        let t = tag_block(p, size, k, region, g.geo.slab_of(k, p), slot, record::tag(r), freed);
        (tag::with_tag(p, t), t)
    } else {
        if freed {
            // (The slot size as the table holds it: what the compiler would derive from the
            // request's size instead tests two ranges.)
            check_still_zero(p, opaque(slot_size), "malloc", Found::Handout);
        }
        (p, record::tag(r).wrapping_add(1))
    };
    m.set_rec_of::<WIDE>(k, slot, record::live(kind, t, slot_size - size));
    if !canary::none_needed(size) {
        // SAFETY: the slot [user, user + slot_size) is this block's, carrying user's tag, and
        // zero (never used, checked just above, or zeroed by the tag store: every fast class
        // is zeroed); the PRF is AES (`fast`).
        unsafe { canary::write_small_zeroed(canary::pattern_aes(&g.canary, p), user, size, slot_size) };
    }
    Some(user as *mut u8)
}

#[inline(always)]
pub fn alloc_small(g: &Globals, tc: &mut TCache, class: usize, bucket: usize, size: usize, kind: u8) -> (*mut u8, bool) {
    let region = region_of(class, bucket);
    // SAFETY: class < CLASS_COUNT and bucket < BUCKET_SLOTS, so region < REGION_COUNT.
    let k = unsafe { CLASSES.get_unchecked(class) };
    // SAFETY: as above.
    if unsafe { *tc.bins.n.get_unchecked(region) } == 0 && !owner::refill(g, tc, region) {
        return (core::ptr::null_mut(), false);
    }
    // SAFETY: as above.
    let (count, slots) = unsafe { tc.bins.get_unchecked_mut(region) };
    *count -= 1;
    // SAFETY: the count, after the decrement, is below the class's cache_cap: a slot of the bin.
    let p = unsafe { *slots.add(*count as usize) };
    let (m, slot) = (SlabMeta::at(&g.geo, k, p), slot_of(k, p));
    let r = m.rec(k, slot);
    if !record::allocatable(r) {
        corrupt_slot(g, p, r);
    }
    let slot_size = k.size as usize;
    let zeroed_class = g.opts.zero_on_free && slot_size <= ZERO_MAX;
    // With MTE a freed slot of a zeroed class is zeroed by the tag store instead of checked
    // (see `tag_block`).
    let checked = record::state(r) == record::FREED && zeroed_class && (g.opts.write_after_free_check || tag::on());
    if checked && !tag::on() {
        check_still_zero_any(p, slot_size, "malloc", Found::Handout);
    }
    let (user, t) = if tag::on() {
        let t = tag_block(p, size, k, region, g.geo.slab_of(k, p), slot, record::tag(r), checked);
        (tag::with_tag(p, t), t)
    } else {
        // Without MTE the tag field counts generations of the slot.
        (p, record::tag(r).wrapping_add(1))
    };
    m.set_rec(k, slot, record::live(kind, t, slot_size - size));
    if g.opts.canary {
        let pat = canary::pattern(&g.canary, p);
        // SAFETY (both): the slot [user, user + slot_size) is this block's, carrying user's
        // tag; zero when never used, checked just above or zeroed by the tag store. (Not
        // reading it matters in a fresh slab: a read of an untouched page maps the zero
        // page, and the write then faults a second time for a page of its own.)
        if checked || record::state(r) == record::FREE_CLEAN {
            unsafe { canary::write_small_zeroed(pat, user, size, slot_size) };
        } else {
            unsafe { canary::write_small(pat, user, size, slot_size) };
        }
    }
    tc.count_alloc(region);
    (user as *mut u8, zeroed_class || record::state(r) == record::FREE_CLEAN)
}

/// Give a slot a fresh tag: not reserved, not either neighbour's, not its previous one;
/// with `zero`, zero the block's granules in the same stores.
///
/// With MTE a freed slot is not checked for zeros when it leaves the quarantine or is
/// handed out: a write through a dangling pointer faults at the write (the slot carries the
/// free tag, which no live pointer has), so the check could only catch a write through a
/// pointer forged with the free tag. The tag store that hands a freed slot out zeroes the
/// block instead (STZG: as many instructions as STG), so even such a write never reaches
/// the next block. The exit sweep still checks the free slots it finds.
#[allow(clippy::too_many_arguments)]
fn tag_block(p: usize, size: usize, k: &ClassInfo, region: usize, slab: usize, slot: usize, previous: u8, zero: bool) -> u8 {
    let slot_size = k.size as usize;
    let slab_mask = (1usize << k.slab_shift) - 1;
    // The neighbouring slots' first granules (their blocks' tags), inside the slab or in the
    // adjacent slab of the same segment if it exists (a segment's ends border a gap).
    use crate::heap::slab::{layout::Geometry, pool::slab_exists};
    let left = (slot > 0 || (!Geometry::first_in_segment(k, slab) && slab_exists(region, slab - 1))).then(|| p - slot_size);
    let end = p + slot_size;
    let right = (slot + 1 < k.nslots as usize || end & slab_mask != 0 || (!Geometry::is_gap(k, slab + 1) && !Geometry::first_in_segment(k, slab + 1) && slab_exists(region, slab + 1))).then_some(end);
    tag::policy::tag_new_block(&mut tag::hw(), p, tag::policy::tagged_len(size), slot_size, left, right, previous, zero)
}

#[cold]
#[inline(never)]
fn corrupt_slot(g: &Globals, p: usize, r: u32) -> ! {
    let _ = g;
    report::fatal(Kind::Internal, p, "malloc", |o| {
        let _ = writeln!(o, "  a slot ready to be handed out has record {r:#x}, not a free slot's: allocator metadata is corrupted");
    })
}
