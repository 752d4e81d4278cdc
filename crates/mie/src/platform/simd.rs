//! Wide vector loops for the zero fill of a freed slot and the write-after-free check of a
//! slot being reused (both run for every slot of up to 16 KiB): 32-byte AVX2 loads and
//! stores where the CPU and the kernel allow them, half the instructions of the 16-byte
//! SSE2 loops every x86-64 has. Whether AVX2 may be used comes from the CPUID words the C
//! library read at start-up (as `cpu_has_aes`: no `cpuid` of our own), read once, at heap
//! initialisation. Elsewhere (and on arm64) the callers keep their own loops.

#[cfg(target_arch = "x86_64")]
use core::sync::atomic::{AtomicBool, Ordering};

#[cfg(target_arch = "x86_64")]
static AVX2: AtomicBool = AtomicBool::new(false);

/// Read the CPU's features once (heap initialisation, before any slot is freed or reused).
pub fn init() {
    #[cfg(target_arch = "x86_64")]
    AVX2.store(super::cpu_has_avx2(), Ordering::Relaxed);
}

/// Whether the AVX2 loops below may run (the CPU has AVX2 and the kernel saves its state).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn avx2() -> bool {
    AVX2.load(Ordering::Relaxed)
}

/// Whether the `len` bytes at `p` are all zero, with 32-byte AVX2 loads, written out in
/// `asm` so that it stays inline in the fast paths (the write-after-free check): a call to a
/// function compiled for AVX2 would cost every malloc and free the register saves of a
/// call, taken or not. Eight loads per round of 256 bytes into two accumulators, then at
/// most one more 128, then the last 128 bytes (overlapping what came before), so no tail
/// loop: for a 1 KiB slot less than half the instructions of the 16-byte loop.
/// `vzeroupper` at the end: the code around it uses the 16-byte registers only.
///
/// # Safety
/// `[p, p + len)` must be readable, `len` at least 128, and `avx2()` true.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn all_zero_avx2(p: usize, len: usize) -> bool {
    debug_assert!(len >= 128);
    let nonzero: usize;
    // SAFETY: every load lies in [p, p + len) (the first 128 bytes; rounds of 256 that start
    // below last - 128, so end before last + 128 = p + len; one more 128 from below last;
    // the last 128); AVX2 is usable (the caller's guarantee); the clobbered vector registers
    // are declared (their upper halves are cleared at the end).
    unsafe {
        core::arch::asm!(
            "vmovdqu ymm0, ymmword ptr [{p}]",
            "vmovdqu ymm1, ymmword ptr [{p} + 32]",
            "vpor ymm0, ymm0, ymmword ptr [{p} + 64]",
            "vpor ymm1, ymm1, ymmword ptr [{p} + 96]",
            "add {p}, 128",
            // A slot of up to 256 bytes: only the last 128 are left.
            "cmp {p}, {last}",
            "jae 4f",
            // 256 bytes a round while they end before the last 128: {p} runs 128 ahead
            // here, so the test is against {last} itself (no register for last - 128).
            "add {p}, 128",
            "cmp {p}, {last}",
            "jae 3f",
            "2:",
            "vpor ymm0, ymm0, ymmword ptr [{p} - 128]",
            "vpor ymm1, ymm1, ymmword ptr [{p} - 96]",
            "vpor ymm0, ymm0, ymmword ptr [{p} - 64]",
            "vpor ymm1, ymm1, ymmword ptr [{p} - 32]",
            "vpor ymm0, ymm0, ymmword ptr [{p}]",
            "vpor ymm1, ymm1, ymmword ptr [{p} + 32]",
            "vpor ymm0, ymm0, ymmword ptr [{p} + 64]",
            "vpor ymm1, ymm1, ymmword ptr [{p} + 96]",
            "add {p}, 256",
            "cmp {p}, {last}",
            "jb 2b",
            "3:",
            "sub {p}, 128",
            // Then 128 more if they end before the last 128, and the last 128.
            "cmp {p}, {last}",
            "jae 4f",
            "vpor ymm0, ymm0, ymmword ptr [{p}]",
            "vpor ymm1, ymm1, ymmword ptr [{p} + 32]",
            "vpor ymm0, ymm0, ymmword ptr [{p} + 64]",
            "vpor ymm1, ymm1, ymmword ptr [{p} + 96]",
            "4:",
            "vpor ymm0, ymm0, ymmword ptr [{last}]",
            "vpor ymm1, ymm1, ymmword ptr [{last} + 32]",
            "vpor ymm0, ymm0, ymmword ptr [{last} + 64]",
            "vpor ymm1, ymm1, ymmword ptr [{last} + 96]",
            "vpor ymm0, ymm0, ymm1",
            // The answer in p's register (one register fewer for the code around it).
            "xor {p:e}, {p:e}",
            "vptest ymm0, ymm0",
            "setnz {p:l}",
            "vzeroupper",
            p = inout(reg) p => nonzero,
            last = in(reg) p + len - 128,
            out("xmm0") _,
            out("xmm1") _,
            options(nostack, readonly),
        );
    }
    nonzero == 0
}

/// Zero the `len` bytes at `p`, 128 to 256 of them, with sixteen 16-byte SSE stores and no
/// loop: the first 128 bytes, then the last 128 (overlapping the first when `len` is under
/// 256), written in `asm` so that it stays inline in free's fast path and no compiler turns
/// it into a call to the exported, checked `memset`. (The word loop it replaces took about
/// 60 instructions for a 144-byte slot.)
///
/// # Safety
/// `[p, p + len)` must be writable and the caller's, and `len` within 128..=256.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn zero_128_to_256(p: usize, len: usize) {
    debug_assert!((128..=256).contains(&len));
    // SAFETY: [p, p + 128) and [p + len - 128, p + len) lie inside [p, p + len) (len >= 128);
    // SSE2 is part of x86-64; the vector register used is declared.
    unsafe {
        core::arch::asm!(
            "xorps xmm0, xmm0",
            "movups xmmword ptr [{p}], xmm0",
            "movups xmmword ptr [{p} + 16], xmm0",
            "movups xmmword ptr [{p} + 32], xmm0",
            "movups xmmword ptr [{p} + 48], xmm0",
            "movups xmmword ptr [{p} + 64], xmm0",
            "movups xmmword ptr [{p} + 80], xmm0",
            "movups xmmword ptr [{p} + 96], xmm0",
            "movups xmmword ptr [{p} + 112], xmm0",
            "movups xmmword ptr [{last}], xmm0",
            "movups xmmword ptr [{last} + 16], xmm0",
            "movups xmmword ptr [{last} + 32], xmm0",
            "movups xmmword ptr [{last} + 48], xmm0",
            "movups xmmword ptr [{last} + 64], xmm0",
            "movups xmmword ptr [{last} + 80], xmm0",
            "movups xmmword ptr [{last} + 96], xmm0",
            "movups xmmword ptr [{last} + 112], xmm0",
            p = in(reg) p,
            last = in(reg) p + len - 128,
            out("xmm0") _,
            options(nostack, preserves_flags),
        );
    }
}

/// Zero the `len` bytes at `p` (`len` a multiple of 8, at least 32) with 32-byte stores, the
/// last overlapping the one before (unaligned stores: slots are 16-byte aligned). Were the
/// compiler to make a `memset` call of it, that call would reach mie's exported `memset`,
/// which lets mie's own calls through unchecked: still right, only slower.
///
/// # Safety
/// `[p, p + len)` must be writable and the caller's, and `avx2()` true.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn zero_avx2(p: usize, len: usize) {
    use core::arch::x86_64::*;
    debug_assert!(len >= 32 && len.is_multiple_of(8));
    let z = _mm256_setzero_si256();
    // SAFETY (every store): the offset and the 32 bytes from it lie inside [p, p + len).
    let st = |o: usize| unsafe { _mm256_storeu_si256((p + o) as *mut __m256i, z) };
    let mut i = 0;
    while i + 128 <= len {
        st(i);
        st(i + 32);
        st(i + 64);
        st(i + 96);
        i += 128;
    }
    while i + 32 <= len {
        st(i);
        i += 32;
    }
    if i < len {
        st(len - 32);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_sse_fill_clears_exactly_its_range() {
        // Every length the fill takes (multiples of 8 from 128 to 256), with a byte set on
        // each side of the range that must survive.
        let mut buf = [0xa5u8; 16 + 256 + 16];
        for len in (128..=256).step_by(8) {
            buf.fill(0xa5);
            let p = buf.as_mut_ptr() as usize + 16;
            // SAFETY: [p, p + len) lies inside buf.
            unsafe { zero_128_to_256(p, len) };
            assert!(buf[16..16 + len].iter().all(|&b| b == 0), "len {len}");
            assert!(buf[..16].iter().chain(&buf[16 + len..]).all(|&b| b == 0xa5), "len {len}");
        }
    }

    #[test]
    fn avx2_loops_see_and_clear_every_byte() {
        if !super::super::cpu_has_avx2() {
            eprintln!("no AVX2 here: nothing to test");
            return;
        }
        let mut buf = vec![0u8; 4096 + 96];
        // (Room before the range too: a byte just before it must not be looked at either.)
        let base = (buf.as_mut_ptr() as usize + 16).next_multiple_of(16);
        for len in (128..=4096).step_by(16) {
            // SAFETY: [base, base + len) lies inside buf; AVX2 is there (checked above).
            unsafe {
                assert!(all_zero_avx2(base, len), "{len}");
                for at in [0, 1, 15, 16, 31, len / 2, len - 17, len - 16, len - 1] {
                    *((base + at) as *mut u8) = 0x40;
                    assert!(!all_zero_avx2(base, len), "len {len}, byte {at}");
                    *((base + at) as *mut u8) = 0;
                }
                // A byte just past the range is not looked at, nor one just before it.
                *((base + len) as *mut u8) = 1;
                assert!(all_zero_avx2(base, len), "{len}: read past the end");
                *((base + len) as *mut u8) = 0;
                *((base - 1) as *mut u8) = 1;
                assert!(all_zero_avx2(base, len), "{len}: read before the start");
                *((base - 1) as *mut u8) = 0;
            }
        }
        for len in (32..=4096).step_by(8) {
            // SAFETY: as above.
            unsafe {
                core::ptr::write_bytes(base as *mut u8, 0xa5, len + 8);
                zero_avx2(base, len);
                let s = core::slice::from_raw_parts(base as *const u8, len + 8);
                assert!(s[..len].iter().all(|&b| b == 0), "{len}: a byte left");
                assert!(s[len..].iter().all(|&b| b == 0xa5), "{len}: wrote past the end");
            }
        }
    }
}
