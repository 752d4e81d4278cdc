//! The MTE backend (arm64): IRG/LDG/STG/ST2G/STZG/STZ2G through inline assembly.

use super::{tag_of, with_tag, TagStore, GRANULE};

const HWCAP2_MTE: u64 = 1 << 18;

pub fn available() -> bool {
    crate::platform::hwcap2() & HWCAP2_MTE != 0
}

/// Synchronous tag-check faults, IRG may return any tag but 0 (the include mask excludes
/// tag 0 in hardware; the reserved free tag is excluded per call).
pub fn enable_sync() -> bool {
    crate::platform::mte_enable_sync(0xfffe)
}

/// Suspend (`true`) or resume tag checks for the calling thread: PSTATE.TCO, the tag check
/// override. While suspended, an access whose pointer tag does not match faults no more.
pub fn suspend_checks(on: bool) {
    // SAFETY: MSR TCO changes only the calling thread's tag-check override; no memory is
    // accessed. (The caller uses it only where MTE is on.)
    unsafe {
        if on {
            core::arch::asm!(".arch_extension memtag", "msr tco, #1", options(nostack, nomem, preserves_flags));
        } else {
            core::arch::asm!(".arch_extension memtag", "msr tco, #0", options(nostack, nomem, preserves_flags));
        }
    }
}

pub struct Mte;

impl TagStore for Mte {
    #[inline]
    fn load(&self, addr: usize) -> u8 {
        let mut x = addr;
        // SAFETY: LDG reads the allocation tag of a mapped granule; callers pass addresses
        // inside allocator-owned PROT_MTE mappings.
        unsafe { core::arch::asm!(".arch_extension memtag", "ldg {0}, [{0}]", inout(reg) x, options(nostack, readonly)) };
        tag_of(x)
    }

    #[inline]
    fn store(&mut self, addr: usize, len: usize, tag: u8, zero: bool) {
        let mut p = with_tag(addr, tag);
        let end = p + len;
        // SAFETY: [addr, addr+len) is granule-aligned allocator-owned PROT_MTE memory that no
        // live pointer refers to with another tag (the block is being created or freed).
        unsafe {
            if zero {
                while p + 2 * GRANULE <= end {
                    core::arch::asm!(".arch_extension memtag", "stz2g {0}, [{0}]", in(reg) p, options(nostack));
                    p += 2 * GRANULE;
                }
                if p < end {
                    core::arch::asm!(".arch_extension memtag", "stzg {0}, [{0}]", in(reg) p, options(nostack));
                }
            } else {
                while p + 2 * GRANULE <= end {
                    core::arch::asm!(".arch_extension memtag", "st2g {0}, [{0}]", in(reg) p, options(nostack));
                    p += 2 * GRANULE;
                }
                if p < end {
                    core::arch::asm!(".arch_extension memtag", "stg {0}, [{0}]", in(reg) p, options(nostack));
                }
            }
        }
    }

    #[inline]
    fn random(&mut self, exclude: u16) -> u8 {
        let x: usize;
        // SAFETY: IRG only computes a value (a random tag inserted into the source address).
        unsafe {
            core::arch::asm!(".arch_extension memtag", "irg {0}, {1}, {2}", out(reg) x, in(reg) 0usize, in(reg) exclude as u64, options(nostack, nomem))
        };
        tag_of(x)
    }
}
