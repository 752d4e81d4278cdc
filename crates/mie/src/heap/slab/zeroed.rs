//! Freed slots read as zero: the zero fill at a free and the write-after-free check when a
//! slot leaves the quarantine or is handed out again (straight-line code for slots up to
//! `SHORT_SLOT` bytes, loops beyond, AVX2 where glibc found it usable).

use crate::heap::slab::finding::{self, Finding, Found};
use crate::heap::slab::size_class;
use crate::platform;
use crate::tag;

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

/// `all_zero_slot` of a slot above `FAST_MAX` bytes, out of line: its loop (AVX2 where the
/// CPU has it) is not written into the fast paths.
#[inline(never)]
fn all_zero_wide(p: usize, len: usize) -> bool {
    // SAFETY: the slot [p, p+len) is committed heap memory no block owns now (read through
    // the free tag with MTE), p a slot's start (a multiple of 16), len a multiple of 16.
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
    if len >= 128 && platform::simd::avx2() {
        // SAFETY: the caller guarantees the range, at least 128 bytes; the CPU and the
        // kernel support AVX2 (simd::avx2).
        return unsafe { platform::simd::all_zero_avx2(p, len) };
    }
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

/// Zero `len` (a multiple of 8) bytes at `p`, a multiple of 16: pairs of word stores for
/// short ranges (the volatile stores keep the compiler from turning them into a call to the
/// exported, checked `memset`), on x86-64 sixteen SSE stores from 128 to 256 bytes, aligned
/// vector stores up to a few pages, the platform's block fill above.
#[inline(always)]
pub fn zero_words(p: usize, len: usize) {
    if len > 256 {
        return zero_long(p, len);
    }
    #[cfg(target_arch = "x86_64")]
    if len >= 128 {
        // SAFETY: [p, p + len) lies inside the slot being freed, owned by the caller;
        // 128 <= len <= 256.
        return unsafe { crate::platform::simd::zero_128_to_256(p, len) };
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
        if platform::simd::avx2() {
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
