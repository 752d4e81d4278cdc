//! realloc and the queries about a block (usable size, where it lives).

use crate::heap::types::kind::Release;
use crate::heap::large::LARGE;
use crate::heap::slab::record;
use crate::heap::slab::size_class::{self, CLASSES, MAX_SMALL};
use crate::heap::slab::meta::SlabMeta;
use crate::heap::slab::tcache::with_cache;
use crate::heap::diagnose::validate::{self, Block, Use};
use crate::heap::{alloc, checks::canary, slab::pool, guarded::sample, guarded::zero, Caller, Globals};
use crate::tag::{self, TagStore};

/// Usable size of a live block (the requested size). Aborts for anything else: no oracle.
pub fn usable_size(p: *const u8, who: Caller) -> usize {
    if p.is_null() {
        return 0;
    }
    let a = tag::untag(p as usize);
    let Some(g) = crate::heap::ensure_init() else { validate::invalid(a, who, Use::Query, "mie's heap is not initialised") };
    if g.opts.guard {
        if let Some(e) = crate::heap::guarded::guard::lookup(a) {
            if !e.is_live() {
                validate::invalid(a, who, Use::Query, "a guarded block that was freed: only a live block can be asked about");
            }
            return e.size;
        }
    }
    if sample::owns(a) {
        return sample::validate(a, who.func, who.ret_addr, false).0;
    }
    if zero::owns(a) {
        zero::validate(a, who.func, who.ret_addr, false);
        return 0;
    }
    match validate::validate(g, p as usize, who, Use::Query) {
        Block::Small { usable, .. } => usable,
        Block::Large { entry } => entry.req,
    }
}

/// Resize a block. A small block keeps its bucket (its type) when it moves; a large one
/// moves to `default_bucket`. `p` is validated first (a non-block aborts with a report), so
/// every access below is to a live block: the function is safe to call with any pointer.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn realloc(p: *mut u8, size: usize, default_bucket: usize, who: Caller) -> *mut u8 {
    if p.is_null() {
        return alloc::alloc_as(size, 16, default_bucket, crate::heap::types::kind::MALLOC).0;
    }
    let raw = p as usize;
    let addr = tag::untag(raw);
    let Some(g) = crate::heap::ensure_init() else { validate::invalid(addr, who, Use::Release, "mie's heap is not initialised") };
    let extra = g.opts.canary as usize;
    if g.opts.guard {
        if let Some(e) = crate::heap::guarded::guard::lookup(addr) {
            // Guard mode: every realloc moves, so a stale pointer to the old block faults.
            if !e.is_live() {
                crate::heap::guarded::guard::bad_release(e, addr, who);
            }
            validate::check_release(g, addr, who, Release::FREE, e.kind, e.size, None);
            let q = alloc::alloc_as(size, 16, default_bucket, crate::heap::types::kind::MALLOC).0;
            if q.is_null() {
                return q;
            }
            // SAFETY: both are live blocks; the copy is no longer than either.
            unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, q, e.size.min(size)) };
            crate::heap::guarded::guard::free(g, e, who);
            return q;
        }
    }
    // A guarded sample always moves (it keeps its bucket, as a slab block does).
    // The block found on free's fast path, if it was: released through it after the copy.
    let mut found = None;
    let (old_usable, bucket) = if let Some((b, pat)) = crate::heap::slab::free::live_small_fast(raw, Release::FREE) {
        // The common case, checked as free checks it (a small block in a thread with the
        // default checks): what `validate` and the checks below would find, in one look.
        if fits_in_slot(size, extra, b.k.size as usize, b.s.class) && resize_small_in_place(g, addr, raw, &b.s.loc(&g.geo, addr), b.rec, b.usable, size) {
            return p;
        }
        found = Some((b, pat));
        (b.usable, b.s.bucket())
    } else if sample::owns(addr) {
        let (size, bucket, kind) = sample::validate(addr, who.func, who.ret_addr, true);
        validate::check_release(g, addr, who, Release::FREE, kind, size, None);
        (size, bucket)
    } else if zero::owns(addr) {
        zero::validate(addr, who.func, who.ret_addr, true);
        (0, default_bucket)
    } else {
        match validate::validate(g, raw, who, Use::Release) {
            Block::Small { loc, rec, usable } => {
                let k = &CLASSES[loc.class];
                validate::check_release(g, addr, who, Release::FREE, record::kind(rec), usable, Some(&loc));
                let slot_size = k.size as usize;
                if g.opts.canary {
                    let m = SlabMeta::at(&g.geo, k, addr);
                    validate::check_small_canary(g, addr, raw, usable, &loc, m, rec, who);
                }
                if fits_in_slot(size, extra, slot_size, loc.class) && resize_small_in_place(g, addr, raw, &loc, rec, usable, size) {
                    return p;
                }
                (usable, loc.bucket)
            }
            Block::Large { entry } => {
                validate::check_release(g, addr, who, Release::FREE, entry.kind, entry.req, None);
                if g.opts.canary {
                    validate::check_canary(g, addr, addr, entry.req, entry.body_len - entry.req, None, who);
                }
                if size.checked_add(extra).is_some_and(|n| n <= entry.body_len) && size > MAX_SMALL && size >= entry.body_len / 2 {
                    LARGE.resize(addr, size);
                    if g.opts.canary {
                        let len = (entry.body_len - size).min(canary::MAX_CANARY);
                        // SAFETY: [p+size, p+size+len) lies inside the block's committed pages.
                        unsafe { canary::write(canary::pattern(&g.canary, addr), p.add(size), len) };
                    }
                    return p;
                }
                (entry.req, default_bucket)
            }
        }
    };
    let q = alloc::alloc_with_room(size, grown(size, old_usable), bucket);
    if q.is_null() {
        return q;
    }
    // Both blocks are live and distinct; at most the smaller usable size is copied.
    crate::platform::copy(q, p, old_usable.min(size));
    if !found.is_some_and(|(b, pat)| crate::heap::slab::free::free_found(raw, b, pat, who)) {
        crate::heap::free(p, who);
    }
    q
}

/// Whether a small block of class `class` (slots of `slot_size`) is resized in place to
/// `size` (`extra`: the canary byte): when the new size fits the slot and would not use a
/// class of less than half the slot (then the block moves to a smaller class).
fn fits_in_slot(size: usize, extra: usize, slot_size: usize, class: usize) -> bool {
    size.checked_add(extra).is_some_and(|n| n <= slot_size) && size_class::class_of(size + extra) + 4 > class
}

/// The size to allocate when a block of `old` bytes grows to `new`: with 25% headroom
/// (within the small classes), so a block grown step by step passes through half as many
/// size classes and moves half as often. The block still reports `new` bytes.
fn grown(new: usize, old: usize) -> usize {
    if new > old && old > 0 && new <= MAX_SMALL / 2 {
        (new + new / 4).min(MAX_SMALL / 2).max(new)
    } else {
        new
    }
}

/// Change a small block's requested size in place: `p` is the block's address, `mem` its
/// tagged pointer, `rec` its record. False if the slot's record changed meanwhile.
fn resize_small_in_place(g: &Globals, p: usize, mem: usize, loc: &crate::heap::slab::layout::Loc, rec: u32, old: usize, new: usize) -> bool {
    let k = &CLASSES[loc.class];
    let slot_size = k.size as usize;
    if !pool::slab_exists(loc.region, loc.slab) {
        return false;
    }
    let m = SlabMeta::at(&g.geo, k, p);
    // What the old block's canary used (with MTE: its last granule only).
    let old_span = canary::span(old, slot_size);
    let old_end = (old + (old_span - old).min(canary::MAX_CANARY)).min(old_span);
    let new_rec = record::live(record::kind(rec), record::tag(rec), slot_size - new);
    // The owner changes records with plain stores; anyone else must not race with it.
    let mine = with_cache(|tc| m.owner() == tc.id);
    if mine {
        m.set_rec(k, loc.slot, new_rec);
    } else if !m.cas_rec(k, loc.slot, rec, new_rec) {
        return false;
    }
    // Keep the zero-beyond-the-block invariant the write-after-free check relies on. A block
    // that grows with canaries on needs nothing: its new canary covers all the old one did.
    if new < old_end && !(g.opts.canary && new >= old) {
        // [p+new, p+old_end) lies inside the slot.
        crate::platform::zero((mem + new) as *mut u8, old_end - new);
        if old_span - old > canary::MAX_CANARY {
            // The slot's last TAIL bytes.
            crate::platform::zero((mem + old_span - canary::TAIL) as *mut u8, canary::TAIL);
        }
    }
    if tag::enabled() {
        // The block's granules carry its tag, the slack beyond them the free tag (its bytes
        // are zero: never written, or cleared just above).
        let (was, now) = (tag::policy::tagged_len(old), tag::policy::tagged_len(new));
        let t = if now > was { tag::tag_of(mem) } else { tag::TAG_FREE };
        tag::hw().store(p + was.min(now), was.abs_diff(now), t, false);
    }
    if g.opts.canary {
        // SAFETY: [mem, mem+slot_size) is the block's slot.
        unsafe { canary::write_small(canary::pattern(&g.canary, p), mem, new, slot_size) };
    }
    true
}

/// Where an address is, for tests and tools: (class size, bucket) of a small block.
/// A guarded sample slot answers as one page-sized slot of the bucket it serves.
pub fn owner_of(p: *const u8) -> Option<(usize, usize)> {
    let g = crate::heap::ensure_init()?;
    if let Some(bucket) = sample::bucket_of(tag::untag(p as usize)) {
        return Some((sample::MAX_SIZE, bucket));
    }
    let l = g.geo.decode(tag::untag(p as usize))?;
    Some((CLASSES[l.class].size as usize, l.bucket))
}

/// Address of the out-of-line metadata of the slab holding small block `p` (diagnostics and
/// the tests that show a heap pointer cannot reach metadata). `None` for other pointers.
pub fn slab_metadata_of(p: *const u8) -> Option<usize> {
    let g = crate::heap::ensure_init()?;
    let l = g.geo.decode(tag::untag(p as usize))?;
    pool::slab_exists(l.region, l.slab).then(|| g.geo.slab_meta_addr(&CLASSES[l.class], l.region, l.slab))
}
