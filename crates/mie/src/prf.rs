//! A keyed pseudo-random function for secrets derived per block (canaries): what an
//! attacker reads of one output, with its input, tells nothing about another output.
//!
//! AES-128 (ten rounds, eleven independent random round keys) on the CPU's AES instructions
//! (AES-NI on x86-64, the ARMv8 cryptographic extension on arm64, used through inline
//! assembly so no build flag is needed), or SipHash-2-4 where the CPU has none. Either is a
//! PRF: from any number of (input, output) pairs the key cannot be recovered nor another
//! output predicted, which an invertible mixer (what canaries used before) cannot promise.

use crate::platform;

#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct Prf {
    /// AES round keys (independent random values: no key schedule to invert); first and
    /// 16-byte aligned, as the instructions' memory operands need.
    keys: [[u64; 2]; 11],
    /// SipHash key, for CPUs without AES instructions.
    sip: [u64; 2],
    aes: bool,
}

impl Prf {
    pub const NONE: Prf = Prf { keys: [[0; 2]; 11], sip: [0; 2], aes: false };

    /// A fresh function with keys from the kernel's CSPRNG.
    pub fn random() -> Prf {
        // All the key material in one getrandom call.
        let mut w = [0u64; 24];
        let mut b = [0u8; 24 * 8];
        if platform::random_bytes(&mut b) {
            for (x, c) in w.iter_mut().zip(b.chunks_exact(8)) {
                *x = u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
            }
        } else {
            w.iter_mut().for_each(|x| *x = platform::random_u64());
        }
        let mut p = Prf { keys: [[0; 2]; 11], sip: [w[22], w[23]], aes: has_aes() };
        for (k, pair) in p.keys.iter_mut().zip(w.chunks_exact(2)) {
            *k = [pair[0], pair[1]];
        }
        p
    }

    /// The function at `x`.
    #[inline(always)]
    pub fn eval(&self, x: u64) -> u64 {
        if self.aes {
            // SAFETY: `aes` is set only where the CPU has the AES instructions.
            unsafe { aes(self, x) }
        } else {
            siphash24(self.sip, x)
        }
    }

    /// Eight outputs at once, for counter inputs `ctr..ctr + 4` (both halves of each AES
    /// block, or SipHash of `2 * ctr + i`): the four AES chains run interleaved, so a batch
    /// costs about what one chain's latency does.
    /// Whether `eval` runs on the CPU's AES instructions.
    pub fn has_aes(&self) -> bool {
        self.aes
    }

    /// `eval` without the test of which function it runs (the fast paths know).
    ///
    /// # Safety
    /// `has_aes()` must be true.
    #[inline(always)]
    pub unsafe fn eval_aes(&self, x: u64) -> u64 {
        debug_assert!(self.aes);
        // SAFETY: the CPU has AES (the caller's guarantee).
        unsafe { aes(self, x) }
    }

    pub fn batch(&self, ctr: u64, out: &mut [u64; 8]) {
        if self.aes {
            // SAFETY: as in `eval`.
            unsafe { aes4(self, ctr, out) }
        } else {
            for (i, o) in out.iter_mut().enumerate() {
                *o = siphash24(self.sip, ctr.wrapping_mul(2).wrapping_add(i as u64));
            }
        }
    }

}

/// Whether the CPU has AES instructions (asked once: CPUID traps to the hypervisor in a VM).
fn has_aes() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = platform::cpu_has_aes();
            KNOWN.store(1 + yes as u8, Ordering::Relaxed);
            yes
        }
    }
}

/// AES-128 encryption of the block (x, 0) under the round keys; the low 64 bits.
///
/// # Safety
/// The CPU must have the AES instructions.
#[inline(always)]
unsafe fn aes(prf: &Prf, x: u64) -> u64 {
    let keys = &prf.keys;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64; AES-NI is the caller's guarantee; the asm reads only
    // the 176 bytes of round keys, which `Prf`'s alignment keeps 16-byte aligned.
    unsafe {
        use core::arch::x86_64::*;
        let mut s = _mm_cvtsi64_si128(x as i64);
        core::arch::asm!(
            "pxor {s}, xmmword ptr [{k}]",
            "aesenc {s}, xmmword ptr [{k} + 16]",
            "aesenc {s}, xmmword ptr [{k} + 32]",
            "aesenc {s}, xmmword ptr [{k} + 48]",
            "aesenc {s}, xmmword ptr [{k} + 64]",
            "aesenc {s}, xmmword ptr [{k} + 80]",
            "aesenc {s}, xmmword ptr [{k} + 96]",
            "aesenc {s}, xmmword ptr [{k} + 112]",
            "aesenc {s}, xmmword ptr [{k} + 128]",
            "aesenc {s}, xmmword ptr [{k} + 144]",
            "aesenclast {s}, xmmword ptr [{k} + 160]",
            s = inout(xmm_reg) s,
            k = in(reg) keys.as_ptr(),
            options(pure, readonly, nostack, preserves_flags)
        );
        _mm_cvtsi128_si64(s) as u64
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is part of arm64; the AES extension is the caller's guarantee; the loads
    // read the 176 bytes of round keys; the asm only computes on registers.
    unsafe {
        use core::arch::aarch64::*;
        // One 128-bit load per round key (`Prf` keeps them 16-byte aligned).
        let k = |i: usize| vld1q_u8(keys[i].as_ptr().cast());
        let mut s = vreinterpretq_u8_u64(vcombine_u64(vcreate_u64(x), vcreate_u64(0)));
        for i in 0..9 {
            core::arch::asm!(
                ".arch_extension aes",
                "aese {s:v}.16b, {k:v}.16b",
                "aesmc {s:v}.16b, {s:v}.16b",
                s = inout(vreg) s,
                k = in(vreg) k(i),
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        core::arch::asm!(".arch_extension aes", "aese {s:v}.16b, {k:v}.16b", s = inout(vreg) s, k = in(vreg) k(9), options(pure, nomem, nostack, preserves_flags));
        let s = veorq_u8(s, k(10));
        vgetq_lane_u64(vreinterpretq_u64_u8(s), 0)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (keys, x);
        unreachable!()
    }
}

/// AES-128 of the blocks (ctr + i, 1) for i in 0..4, both halves of each (the high half 1
/// keeps these inputs apart from `aes`'s (x, 0)).
///
/// # Safety
/// The CPU must have the AES instructions.
unsafe fn aes4(prf: &Prf, ctr: u64, out: &mut [u64; 8]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `aes`.
    unsafe {
        use core::arch::x86_64::*;
        let block = |i: u64| _mm_set_epi64x(1, ctr.wrapping_add(i) as i64);
        let (mut s0, mut s1, mut s2, mut s3) = (block(0), block(1), block(2), block(3));
        core::arch::asm!(
            "movdqa {t}, xmmword ptr [{k}]",
            "pxor {s0}, {t}", "pxor {s1}, {t}", "pxor {s2}, {t}", "pxor {s3}, {t}",
            "mov {i}, 16",
            "2:",
            "movdqa {t}, xmmword ptr [{k} + {i}]",
            "aesenc {s0}, {t}", "aesenc {s1}, {t}", "aesenc {s2}, {t}", "aesenc {s3}, {t}",
            "add {i}, 16",
            "cmp {i}, 160",
            "jne 2b",
            "movdqa {t}, xmmword ptr [{k} + 160]",
            "aesenclast {s0}, {t}", "aesenclast {s1}, {t}", "aesenclast {s2}, {t}", "aesenclast {s3}, {t}",
            s0 = inout(xmm_reg) s0, s1 = inout(xmm_reg) s1, s2 = inout(xmm_reg) s2, s3 = inout(xmm_reg) s3,
            t = out(xmm_reg) _,
            i = out(reg) _,
            k = in(reg) prf.keys.as_ptr(),
            options(pure, readonly, nostack)
        );
        for (j, s) in [s0, s1, s2, s3].into_iter().enumerate() {
            _mm_storeu_si128(out.as_mut_ptr().add(2 * j) as *mut __m128i, s);
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as in `aes`.
    unsafe {
        use core::arch::aarch64::*;
        let keys = &prf.keys;
        let k = |i: usize| vld1q_u8(keys[i].as_ptr().cast());
        let block = |i: u64| vreinterpretq_u8_u64(vcombine_u64(vcreate_u64(ctr.wrapping_add(i)), vcreate_u64(1)));
        let mut s = [block(0), block(1), block(2), block(3)];
        for i in 0..9 {
            let ki = k(i);
            for x in s.iter_mut() {
                core::arch::asm!(
                    ".arch_extension aes",
                    "aese {s:v}.16b, {k:v}.16b",
                    "aesmc {s:v}.16b, {s:v}.16b",
                    s = inout(vreg) *x,
                    k = in(vreg) ki,
                    options(pure, nomem, nostack, preserves_flags)
                );
            }
        }
        let (k9, k10) = (k(9), k(10));
        for (j, x) in s.iter_mut().enumerate() {
            core::arch::asm!(".arch_extension aes", "aese {s:v}.16b, {k:v}.16b", s = inout(vreg) *x, k = in(vreg) k9, options(pure, nomem, nostack, preserves_flags));
            vst1q_u64(out.as_mut_ptr().add(2 * j), vreinterpretq_u64_u8(veorq_u8(*x, k10)));
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (prf, ctr, out);
        unreachable!()
    }
}

/// SipHash-2-4 of one 64-bit word.
fn siphash24(k: [u64; 2], m: u64) -> u64 {
    let mut v = [k[0] ^ 0x736f_6d65_7073_6575, k[1] ^ 0x646f_7261_6e64_6f6d, k[0] ^ 0x6c79_6765_6e65_7261, k[1] ^ 0x7465_6462_7974_6573];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let b = 8u64 << 56; // message length 8, no tail bytes
    for word in [m, b] {
        v[3] ^= word;
        round(&mut v);
        round(&mut v);
        v[0] ^= word;
    }
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vector() {
        // The SipHash-2-4 paper's key 00..0f; the 8-byte message 00..07.
        let k = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        assert_eq!(siphash24(k, 0x0706_0504_0302_0100), 0x93f5_f579_9a93_2462);
    }

    #[test]
    fn batches_agree_with_single_blocks_and_do_not_repeat() {
        let p = Prf::random();
        let mut a = [0u64; 8];
        let mut b = [0u64; 8];
        p.batch(100, &mut a);
        p.batch(104, &mut b);
        let mut all: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 16);
        // The batch's input blocks differ from eval's: no output of one is one of the other.
        for x in 100..108 {
            assert!(!a.contains(&p.eval(x)) && !b.contains(&p.eval(x)));
        }
        // Block (x, 1) under keys k is block (x, 0) under keys k with k0's high half ^ 1:
        // the batch's chains compute the same cipher as `eval`.
        let mut q = p;
        q.keys[0][1] ^= 1;
        for j in 0..4 {
            assert_eq!(a[2 * j], q.eval(100 + j as u64));
        }
        // Overlapping counters give the same outputs (a deterministic function).
        let mut c = [0u64; 8];
        p.batch(102, &mut c);
        assert_eq!(c[..4], a[4..]);
        // The SipHash path (CPUs without AES): distinct outputs, the batch is eval's values.
        let s = Prf { aes: false, ..p };
        s.batch(7, &mut c);
        for (i, &x) in c.iter().enumerate() {
            assert_eq!(x, s.eval(14 + i as u64));
        }
        let mut d: Vec<u64> = c.to_vec();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 8);
    }

    #[test]
    fn aes_matches_the_fips_197_vector() {
        // FIPS-197 appendix C.1: key 000102..0f, plaintext 00112233..ff, ciphertext
        // 69c4e0d86a7b0430d8cdb78070b4c55a. Round keys from the AES-128 key schedule.
        if !has_aes() {
            return;
        }
        const RK: [[u8; 16]; 11] = [
            [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f],
            [0xd6, 0xaa, 0x74, 0xfd, 0xd2, 0xaf, 0x72, 0xfa, 0xda, 0xa6, 0x78, 0xf1, 0xd6, 0xab, 0x76, 0xfe],
            [0xb6, 0x92, 0xcf, 0x0b, 0x64, 0x3d, 0xbd, 0xf1, 0xbe, 0x9b, 0xc5, 0x00, 0x68, 0x30, 0xb3, 0xfe],
            [0xb6, 0xff, 0x74, 0x4e, 0xd2, 0xc2, 0xc9, 0xbf, 0x6c, 0x59, 0x0c, 0xbf, 0x04, 0x69, 0xbf, 0x41],
            [0x47, 0xf7, 0xf7, 0xbc, 0x95, 0x35, 0x3e, 0x03, 0xf9, 0x6c, 0x32, 0xbc, 0xfd, 0x05, 0x8d, 0xfd],
            [0x3c, 0xaa, 0xa3, 0xe8, 0xa9, 0x9f, 0x9d, 0xeb, 0x50, 0xf3, 0xaf, 0x57, 0xad, 0xf6, 0x22, 0xaa],
            [0x5e, 0x39, 0x0f, 0x7d, 0xf7, 0xa6, 0x92, 0x96, 0xa7, 0x55, 0x3d, 0xc1, 0x0a, 0xa3, 0x1f, 0x6b],
            [0x14, 0xf9, 0x70, 0x1a, 0xe3, 0x5f, 0xe2, 0x8c, 0x44, 0x0a, 0xdf, 0x4d, 0x4e, 0xa9, 0xc0, 0x26],
            [0x47, 0x43, 0x87, 0x35, 0xa4, 0x1c, 0x65, 0xb9, 0xe0, 0x16, 0xba, 0xf4, 0xae, 0xbf, 0x7a, 0xd2],
            [0x54, 0x99, 0x32, 0xd1, 0xf0, 0x85, 0x57, 0x68, 0x10, 0x93, 0xed, 0x9c, 0xbe, 0x2c, 0x97, 0x4e],
            [0x13, 0x11, 0x1d, 0x7f, 0xe3, 0x94, 0x4a, 0x17, 0xf3, 0x07, 0xb7, 0x8b, 0x4d, 0x2b, 0x30, 0xc5],
        ];
        let mut keys = [[0u64; 2]; 11];
        for (k, rk) in keys.iter_mut().zip(RK.iter()) {
            *k = [u64::from_le_bytes(rk[..8].try_into().unwrap()), u64::from_le_bytes(rk[8..].try_into().unwrap())];
        }
        // Our input block is (x, 0): check with a plaintext whose high half is zero by
        // folding the real plaintext's high half into round key 0.
        let pt = [0x00u8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
        let hi = u64::from_le_bytes(pt[8..].try_into().unwrap());
        keys[0][1] ^= hi;
        let x = u64::from_le_bytes(pt[..8].try_into().unwrap());
        // SAFETY: has_aes() was checked.
        let lo = unsafe { aes(&Prf { keys, sip: [0; 2], aes: true }, x) };
        assert_eq!(lo.to_le_bytes(), [0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30]);
    }
}
