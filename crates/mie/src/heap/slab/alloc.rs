//! malloc. The common case (a small block, a slot waiting in the thread's bin) takes no lock
//! and no atomic read-modify-write: pop the slot, check its record says free (and, if it
//! held a block before, that it is still zero: a write after free), tag it (MTE), store its
//! record, write its canary.

use core::fmt::Write;

use crate::heap::slab::layout::region_of;
use crate::heap::slab::owner;
use crate::heap::slab::record;
use crate::heap::slab::size_class::{self, ClassInfo, CLASSES, ZERO_MAX};
use crate::heap::slab::meta::SlabMeta;
use crate::heap::slab::finding::{self, Finding};
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
/// `room` at `FAST_MAX` and above) or when the bin cannot hand out a slot.
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
    let (m, slot) = (SlabMeta::at(&g.geo, k, p), slot_of(k, p));
    let r = m.rec_of::<WIDE>(k, slot);
    if !record::allocatable(r) {
        return None; // the general path reports it
    }
    *count = n;
    tc.sample_countdown -= 1;
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
    tc.count_alloc(region);
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

/// `v`, opaque to the compiler (an empty `asm` block takes and gives it): no
/// instructions, only no conclusions drawn from where the value came from. Given a slot
/// size read from the class table, the fast paths' zero checks and clears test it with a
/// compare or two; seen through, the compiler turned those tests into range tests on the
/// request's size or the table entry's bits, and the code around them grew.
#[inline(always)]
pub fn opaque(mut v: usize) -> usize {
    // SAFETY: an empty instruction sequence; it only names a register.
    unsafe { core::arch::asm!("/* {0} */", inout(reg) v, options(pure, nomem, nostack, preserves_flags)) };
    v
}

/// The slot of a slot address of class `k` in its slab (a multiply, no division; slabs are
/// aligned to their size).
#[inline(always)]
pub fn slot_of(k: &ClassInfo, p: usize) -> usize {
    let in_slab = (p & k.slab_mask as usize) as u64;
    ((in_slab * k.magic) >> size_class::MAGIC_SHIFT) as usize
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

/// When a write-after-free check runs (for the report).
#[derive(Clone, Copy)]
pub enum Found {
    /// The slot is about to be handed out again.
    Handout,
    /// The block is leaving the quarantine.
    Leaving,
    /// At process exit, still quarantined or cached.
    Exit,
    /// At process exit, in a free slot (the exit sweep, `diagnose/sweep.rs`).
    ExitFree,
}

/// The write-after-free check: a slot zeroed at free must still be zero. `p` is the slot
/// (untagged); with MTE its memory carries the free tag. Slots up to `SHORT_SLOT` bytes are
/// read in straight-line code (two to eight loads), larger ones by the loop.
#[inline(always)]
pub fn check_still_zero(p: usize, len: usize, func: &'static str, when: Found) {
    check_still_zero_in::<false>(p, len, func, when)
}

/// `check_still_zero` off the fast paths, for slots of any size up to `ZERO_MAX`: those
/// above `FAST_MAX` are read by a call with the widest loads the CPU has (on the fast paths
/// a call, even one not taken, costs every malloc and free register saves).
#[inline(always)]
pub fn check_still_zero_any(p: usize, len: usize, func: &'static str, when: Found) {
    check_still_zero_in::<true>(p, len, func, when)
}

#[inline(always)]
fn check_still_zero_in<const WIDE: bool>(p: usize, len: usize, func: &'static str, when: Found) {
    let zero = if len <= SHORT_SLOT && !tag::on() {
        // SAFETY: the slot [p, p+len) is committed heap memory no block owns now; len is a
        // multiple of 16 up to SHORT_SLOT (slot sizes are multiples of 16).
        unsafe { all_zero_short(p, len) }
    } else {
        // Read through the free tag with MTE.
        let view = if tag::on() { tag::with_tag(p, tag::TAG_FREE) } else { p };
        if WIDE && len > size_class::FAST_MAX {
            all_zero_wide(view, len)
        } else {
            // SAFETY: as above (any multiple of 16).
            unsafe { all_zero_slot(view, len) }
        }
    };
    if !zero {
        written_after_free(p, len, func, when);
    }
}

/// `all_zero_slot` of a slot above `FAST_MAX` bytes, with AVX2 where the CPU has it.
#[inline(never)]
fn all_zero_wide(p: usize, len: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if crate::platform::simd::avx2() {
        // SAFETY: the slot [p, p+len) is committed heap memory no block owns now (read
        // through the free tag with MTE), len a multiple of 16 above FAST_MAX; the CPU and
        // the kernel support AVX2 (simd::avx2).
        return unsafe { crate::platform::simd::all_zero_avx2(p, len) };
    }
    // SAFETY: as above; p is a slot's start, a multiple of 16.
    unsafe { all_zero_slot(p, len) }
}

/// A freed slot is not zero: find the first written byte and report.
#[cold]
#[inline(never)]
fn written_after_free(p: usize, len: usize, func: &'static str, when: Found) -> ! {
    let view = if tag::on() { tag::with_tag(p, tag::TAG_FREE) } else { p };
    // SAFETY: as in `check_still_zero`.
    let words = unsafe { core::slice::from_raw_parts(view as *const u64, len / 8) };
    let first = words.iter().position(|&w| w != 0).unwrap_or(0) * 8;
    finding::found(Finding::WriteAfterFree { p, first, func, when })
}

/// Slots up to this size are zeroed and checked in straight-line code.
pub const SHORT_SLOT: usize = 128;

/// The 16-byte pieces of a slot of `len` bytes (a multiple of 16, 16 to 128) as offsets:
/// the first and last two, and above 64 bytes four more from both ends, overlapping where
/// the slot is shorter than 128 (every piece of the slot is among them).
#[inline(always)]
fn short_pieces(len: usize, mut f: impl FnMut(usize)) {
    f(0);
    f(len - 16);
    if len > 32 {
        f(16);
        f(len - 32);
    }
    if len > 64 {
        f(32);
        f(48);
        f(len - 48);
        f(len - 64);
    }
}

/// Whether the `len` bytes at `p` are zero, for a multiple of 16 up to `SHORT_SLOT`.
///
/// # Safety
/// `[p, p + len)` must be readable, `p` a multiple of 16 (a slot's start).
#[inline(always)]
pub unsafe fn all_zero_short(p: usize, len: usize) -> bool {
    debug_assert!(p.is_multiple_of(16));
    if len <= 32 {
        // The first and the last 16 bytes, four word loads OR'ed (the classes most blocks
        // are in: fewer instructions than the vector compare, whose result must be moved
        // out of its register to be tested).
        // SAFETY: len is 16 or 32: every word lies inside [p, p + len), aligned.
        let w = |o: usize| unsafe { ((p + o) as *const u64).read() };
        return w(0) | w(8) | w(len - 16) | w(len - 8) == 0;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: every piece lies inside [p, p + len) (`short_pieces`) and is 16-byte aligned
    // (p is; so are the offsets); SSE2 is part of x86-64.
    unsafe {
        use core::arch::x86_64::*;
        let mut acc = _mm_setzero_si128();
        short_pieces(len, |o| acc = _mm_or_si128(acc, _mm_load_si128((p + o) as *const __m128i)));
        _mm_movemask_epi8(_mm_cmpeq_epi8(acc, _mm_setzero_si128())) == 0xffff
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut acc = 0u128;
        // SAFETY: every piece lies inside [p, p + len) (`short_pieces`).
        short_pieces(len, |o| acc |= unsafe { ((p + o) as *const u128).read_unaligned() });
        acc == 0
    }
}

/// Zero the `len` bytes at `p`, for a multiple of 16 up to `SHORT_SLOT`. Volatile, so the
/// compiler cannot make a call to the exported, checked `memset` of it.
///
/// # Safety
/// `[p, p + len)` must be writable and the caller's, `p` a multiple of 16 (a slot's start).
#[inline(always)]
pub unsafe fn zero_short(p: usize, len: usize) {
    // SAFETY: every piece lies inside [p, p + len) (`short_pieces`); SSE2 is part of x86-64.
    #[cfg(target_arch = "x86_64")]
    short_pieces(len, |o| unsafe {
        use core::arch::x86_64::*;
        // (As a vector: an array volatile-stored went through the stack first.)
        core::ptr::write_volatile((p + o) as *mut __m128i, _mm_setzero_si128())
    });
    // SAFETY: as above.
    #[cfg(not(target_arch = "x86_64"))]
    short_pieces(len, |o| unsafe { core::ptr::write_volatile((p + o) as *mut [u64; 2], [0; 2]) });
}

/// Whether `len` bytes (a multiple of 16) at `p` are all zero: 16-byte vector loads, four
/// independent accumulators per 64 bytes.
///
/// # Safety
/// `[p, p + len)` must be readable.
#[inline(always)]
pub unsafe fn all_zero(p: usize, len: usize) -> bool {
    // SAFETY: the caller's guarantee.
    unsafe { all_zero_in::<false>(p, len) }
}

/// `all_zero` of a slot: `p` is a multiple of 16, so the loads are aligned (and on x86-64
/// fold into the ORs: one instruction per 16 bytes).
///
/// # Safety
/// As `all_zero`, and `p` a multiple of 16.
#[inline(always)]
pub unsafe fn all_zero_slot(p: usize, len: usize) -> bool {
    debug_assert!(p.is_multiple_of(16));
    // SAFETY: the caller's guarantee.
    unsafe { all_zero_in::<true>(p, len) }
}

#[inline(always)]
unsafe fn all_zero_in<const ALIGNED: bool>(p: usize, len: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64; the caller guarantees the range (and the alignment
    // when ALIGNED).
    unsafe {
        use core::arch::x86_64::*;
        let ld = |o: usize| if ALIGNED { _mm_load_si128((p + o) as *const __m128i) } else { _mm_loadu_si128((p + o) as *const __m128i) };
        let mut i = 0;
        let (mut a, mut b, mut c, mut d) = (_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128());
        while i + 64 <= len {
            a = _mm_or_si128(a, ld(i));
            b = _mm_or_si128(b, ld(i + 16));
            c = _mm_or_si128(c, ld(i + 32));
            d = _mm_or_si128(d, ld(i + 48));
            i += 64;
        }
        while i < len {
            a = _mm_or_si128(a, ld(i));
            i += 16;
        }
        let acc = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
        _mm_movemask_epi8(_mm_cmpeq_epi8(acc, _mm_setzero_si128())) == 0xffff
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is part of arm64; the caller guarantees the range.
    unsafe {
        use core::arch::aarch64::*;
        let ld = |o: usize| vld1q_u8((p + o) as *const u8);
        let mut i = 0;
        let (mut a, mut b, mut c, mut d) = (vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0));
        while i + 64 <= len {
            a = vorrq_u8(a, ld(i));
            b = vorrq_u8(b, ld(i + 16));
            c = vorrq_u8(c, ld(i + 32));
            d = vorrq_u8(d, ld(i + 48));
            i += 64;
        }
        while i < len {
            a = vorrq_u8(a, ld(i));
            i += 16;
        }
        vmaxvq_u8(vorrq_u8(vorrq_u8(a, b), vorrq_u8(c, d))) == 0
    }
}

#[cold]
#[inline(never)]
fn corrupt_slot(g: &Globals, p: usize, r: u32) -> ! {
    let _ = g;
    report::fatal(Kind::Internal, p, "malloc", |o| {
        let _ = writeln!(o, "  a slot ready to be handed out has record {r:#x}, not a free slot's: allocator metadata is corrupted");
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_pieces_cover_every_short_slot() {
        for len in (16..=super::SHORT_SLOT).step_by(16) {
            let mut seen = [false; super::SHORT_SLOT / 16];
            super::short_pieces(len, |o| {
                assert!(o % 16 == 0 && o + 16 <= len, "len {len}: piece at {o}");
                seen[o / 16] = true;
            });
            assert!(seen[..len / 16].iter().all(|&s| s), "len {len}: {seen:?}");
            #[repr(align(16))]
            struct Slot([u8; super::SHORT_SLOT]);
            let mut slot = Slot([0; super::SHORT_SLOT]);
            let buf = &mut slot.0[..len];
            // SAFETY: buf has len bytes and starts at a multiple of 16.
            assert!(unsafe { super::all_zero_short(buf.as_ptr() as usize, len) });
            for i in 0..len {
                buf[i] = 1;
                // SAFETY: as above.
                assert!(!unsafe { super::all_zero_short(buf.as_ptr() as usize, len) }, "len {len} byte {i}");
                // SAFETY: as above.
                unsafe { super::zero_short(buf.as_mut_ptr() as usize, len) };
                assert!(buf.iter().all(|&b| b == 0));
            }
        }
    }
}
