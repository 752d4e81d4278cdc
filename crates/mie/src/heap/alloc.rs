//! The allocation entry points: where a request goes. The common case is the slab
//! allocator's fast path (`slab::alloc::malloc_fast`); past it, in order: guard mode, a
//! zero-size block, a guarded sample when one is due, a small block from the thread's bins
//! (`slab::alloc::alloc_small`), else a large block. Allocation stacks are recorded here,
//! once the block is known.

use crate::heap::checks::{canary, stacks};
use crate::heap::guarded::{guard, sample, zero};
use crate::heap::large::LARGE;
use crate::heap::slab::alloc::{alloc_small, malloc_fast, malloc_fast_sized};
use crate::heap::slab::size_class::{self, MAX_SMALL};
use crate::heap::slab::tcache::{self, with_cache, TCache};
use crate::heap::types::kind;
use crate::heap::Globals;
use crate::platform::tls;
use crate::tag;

/// Allocate `size` bytes aligned to `align` (a power of two ≥ 1) in `bucket`, recording the
/// allocation `kind` its release must match; also whether the first `size` bytes are known
/// to be zero. Null on exhaustion (errno is left to the C front end).
#[inline(always)]
pub fn alloc_as(size: usize, align: usize, bucket: usize, kind: u8) -> (*mut u8, bool) {
    if align <= 16 {
        let r = malloc_fast(size, bucket, kind);
        if !r.0.is_null() {
            return r;
        }
    }
    alloc_general(size, align, bucket, kind)
}

/// Everything `malloc_fast` leaves: first use, empty bins, samples, large, aligned.
#[inline(never)]
fn alloc_general(size: usize, align: usize, bucket: usize, kind: u8) -> (*mut u8, bool) {
    let Some(g) = crate::heap::ensure_init() else { return (core::ptr::null_mut(), false) };
    if g.opts.guard {
        // (Guard mode records stacks, so the fast path always comes here.)
        let p = guard::alloc(g, size, align, kind);
        if !p.is_null() {
            stacks::on_alloc(p as usize);
            return (p, true);
        }
    }
    let r = alloc_in(g, size, align, bucket, kind);
    if g.opts.stacks && !r.0.is_null() {
        stacks::on_alloc(tag::untag_on(r.0 as usize));
    }
    r
}

/// A malloc-kind block of `size` bytes in a slot with room for `room` (≥ size) bytes, so
/// that a block growing by realloc can grow in place for a while: from the thread's bin
/// when the fast path can, else the general path. It reports `size`.
#[inline(always)]
pub fn alloc_with_room(size: usize, room: usize, bucket: usize) -> *mut u8 {
    let tcp = tls::get();
    if tcp > tcache::DEAD {
        // SAFETY: a live TLS word is this thread's own cache (attached after init).
        if let Some(p) = malloc_fast_sized(unsafe { &mut *(tcp as *mut TCache) }, size, room, bucket, kind::MALLOC) {
            return p;
        }
    }
    alloc_with_room_general(size, room, bucket)
}

/// `alloc_with_room` past the fast path.
#[inline(never)]
fn alloc_with_room_general(size: usize, room: usize, bucket: usize) -> *mut u8 {
    let Some(g) = crate::heap::ensure_init() else { return core::ptr::null_mut() };
    let r = alloc_sized(g, size, room.max(size), 16, bucket, kind::MALLOC).0;
    if g.opts.stacks && !r.is_null() {
        stacks::on_alloc(tag::untag_on(r as usize));
    }
    r
}

#[inline(always)]
fn alloc_in(g: &Globals, size: usize, align: usize, bucket: usize, kind: u8) -> (*mut u8, bool) {
    alloc_sized(g, size, size, align, bucket, kind)
}

#[inline(always)]
fn alloc_sized(g: &Globals, size: usize, room: usize, align: usize, bucket: usize, kind: u8) -> (*mut u8, bool) {
    if size == 0 && align <= 16 && kind == kind::MALLOC {
        // A unique address with no accessible bytes behind it (a 1-byte block if the
        // zero-size area cannot be had).
        let z = zero::alloc();
        if !z.is_null() {
            return (z, true);
        }
    }
    if let Some(need) = room.checked_add(g.opts.canary as usize) {
        if need <= MAX_SMALL {
            if let Some(class) = size_class::class_for(need, align) {
                let sampling = g.opts.sample_rate != 0 && align <= 16 && size <= sample::MAX_SIZE;
                let r = with_cache(|tc| {
                    if g.opts.sample_rate == 0 {
                        tc.sample_countdown = u32::MAX; // never due: the fast path takes every block
                    } else if sampling && sample_due(g, tc) {
                        return None;
                    }
                    Some(alloc_small(g, tc, class, bucket, size, kind))
                });
                return match r {
                    Some(r) => r,
                    None => alloc_sampled(g, class, bucket, size, kind),
                };
            }
        }
    }
    alloc_large(g, size, align, kind)
}


/// Count down to the next guarded sample; the distance is random with mean `sample_rate`.
#[inline(always)]
fn sample_due(g: &Globals, tc: &mut TCache) -> bool {
    if tc.sample_countdown > 1 {
        tc.sample_countdown -= 1;
        return false;
    }
    sample_draw(g, tc)
}

/// The countdown reached 1 (this allocation is the sample) or 0 (not started): draw the
/// next distance, uniform in 1..2*rate.
#[cold]
fn sample_draw(g: &Globals, tc: &mut TCache) -> bool {
    let rate = g.opts.sample_rate;
    let draw = |tc: &mut TCache| if rate == 1 { 1 } else { tc.rng.below(2 * rate - 1) + 1 };
    if tc.sample_countdown == 0 {
        // The thread's first allocation: it counts as the first step of the first distance.
        let d = draw(tc);
        if d > 1 {
            tc.sample_countdown = d - 1;
            return false;
        }
    }
    tc.sample_countdown = draw(tc);
    if !tc.in_sample && sample::ready() {
        tc.in_sample = true;
        return true;
    }
    false
}

#[cold]
#[inline(never)]
fn alloc_sampled(g: &Globals, class: usize, bucket: usize, size: usize, kind: u8) -> (*mut u8, bool) {
    let p = sample::alloc(size, bucket, &g.canary, kind);
    with_cache(|tc| {
        tc.in_sample = false;
        if p.is_null() {
            alloc_small(g, tc, class, bucket, size, kind)
        } else {
            (p, true)
        }
    })
}

fn alloc_large(g: &Globals, size: usize, align: usize, kind: u8) -> (*mut u8, bool) {
    let slack = g.opts.canary as usize;
    let (p, body, fresh) = LARGE.alloc(size, align.max(16), slack, kind);
    if p.is_null() {
        return (p, false);
    }
    if g.opts.canary {
        let len = (body - size).min(canary::MAX_CANARY);
        // SAFETY: [p+size, p+size+len) lies inside the block's committed pages.
        unsafe { canary::write(canary::pattern(&g.canary, p as usize), p.add(size), len) };
    }
    (p, fresh)
}

