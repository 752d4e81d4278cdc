//! The tag layer: one trait over memory tags, an MTE backend (arm64), a no-tag backend, and
//! a software tag store for testing the policy on any machine.
//!
//! Tag plan (4-bit tags, 16-byte granules):
//! - `TAG_OWNED` (0): memory the allocator owns and no live pointer may reach: metadata,
//!   never-used slots, slab tails, purged pages (which the kernel resets to 0 anyway).
//! - `TAG_FREE` (15): freed slots, from the moment they are freed until they are reused, and
//!   the slack of a live block's slot (past its last granule).
//! - 1..=14: live blocks (their own granules: the requested size rounded up to 16). A new block's tag differs from both neighbours' and from the slot's
//!   previous tag, so an overflow into a neighbour and the first reuse after free always fault.

pub mod none;
pub mod policy;
#[cfg(test)]
pub mod soft;

#[cfg(target_arch = "aarch64")]
pub mod mte;

use core::sync::atomic::{AtomicBool, Ordering};

/// The hardware backend of this architecture (the no-tag backend where there is no MTE).
#[cfg(target_arch = "aarch64")]
pub type Hw = mte::Mte;
#[cfg(not(target_arch = "aarch64"))]
pub type Hw = none::NoTags;

#[inline]
pub fn hw() -> Hw {
    #[cfg(target_arch = "aarch64")]
    return mte::Mte;
    #[cfg(not(target_arch = "aarch64"))]
    return none::NoTags;
}

/// The address part of a pointer: tag bits stripped only when tagging is on (elsewhere a
/// pointer with high bits set is simply not a heap pointer).
#[inline]
pub fn untag(p: usize) -> usize {
    if enabled() {
        strip(p)
    } else {
        p
    }
}

/// `untag` for code that runs only after start-up (`on`).
#[inline(always)]
pub fn untag_on(p: usize) -> usize {
    if on() {
        strip(p)
    } else {
        p
    }
}

pub const GRANULE: usize = 16;
pub const TAG_SHIFT: u32 = 56;
pub const ADDR_MASK: usize = (1 << TAG_SHIFT) - 1;
pub const TAG_OWNED: u8 = 0;
pub const TAG_FREE: u8 = 15;
/// Tags a live pointer never carries.
pub const RESERVED: u16 = (1 << TAG_OWNED) | (1 << TAG_FREE);

/// Memory tags over 16-byte granules. Addresses passed in are untagged.
pub trait TagStore {
    /// The tag of the granule containing `addr`.
    fn load(&self, addr: usize) -> u8;
    /// Set the tag of every granule in `[addr, addr + len)` (granule-aligned); with `zero`,
    /// also zero the bytes (MTE: STZG, one pass).
    fn store(&mut self, addr: usize, len: usize, tag: u8, zero: bool);
    /// A uniformly random tag outside `exclude` (bit t set = tag t excluded); `exclude`
    /// always includes the reserved tags, so at least 11 tags remain.
    fn random(&mut self, exclude: u16) -> u8;
}

/// Whether tagging is active in this process (set once at start-up).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether tagging is active. Only arm64 can tag: elsewhere this is a constant false, and
/// every tag branch on the allocation paths compiles away.
#[inline(always)]
pub fn enabled() -> bool {
    cfg!(target_arch = "aarch64") && ENABLED.load(Ordering::Relaxed)
}

/// While this lives, the calling thread's tag checks are suspended (with MTE on; elsewhere
/// it does nothing): for reading memory whose tags other threads change meanwhile.
pub struct ChecksSuspended(#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] bool);

impl ChecksSuspended {
    pub fn begin() -> Self {
        let on = enabled();
        #[cfg(target_arch = "aarch64")]
        if on {
            mte::suspend_checks(true);
        }
        ChecksSuspended(on)
    }
}

impl Drop for ChecksSuspended {
    fn drop(&mut self) {
        #[cfg(target_arch = "aarch64")]
        if self.0 {
            mte::suspend_checks(false);
        }
    }
}

/// `ENABLED` again, as a plain byte: its loads can be merged, so a hot path that asks many
/// times reads it once (an atomic load is repeated at every use). Written once, by `init`,
/// before start-up publishes the heap as ready (a Release store).
struct Plain(core::cell::UnsafeCell<bool>);
// SAFETY: written only by `init`, before the heap is published as ready; read only by code
// that runs after observing that (`on`).
unsafe impl Sync for Plain {}
static ON: Plain = Plain(core::cell::UnsafeCell::new(false));

/// `enabled`, for code that runs only after start-up: in a thread that has a cache, or past
/// `ensure_init` (both have seen the heap published as ready, after `init`'s one write).
#[inline(always)]
pub fn on() -> bool {
    // SAFETY: the one write happens before the ready flag's Release store, which the caller
    // has observed (Acquire): no write can race this read.
    cfg!(target_arch = "aarch64") && unsafe { *ON.0.get() }
}

/// Turn MTE on (synchronous, IRG include mask = all non-zero tags) if the CPU has it and
/// the options allow it. Must run before the program creates threads (they inherit it).
pub fn init(want: bool) -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        if want && mte::available() && mte::enable_sync() {
            ENABLED.store(true, Ordering::Relaxed);
            // SAFETY: start-up has not published the heap yet: nothing reads `ON` meanwhile.
            unsafe { *ON.0.get() = true };
            return true;
        }
    }
    let _ = want;
    false
}

/// Put `tag` into the top byte of an (untagged) address.
#[inline]
pub const fn with_tag(addr: usize, tag: u8) -> usize {
    (addr & ADDR_MASK) | ((tag as usize) << TAG_SHIFT)
}

#[inline]
pub const fn tag_of(p: usize) -> u8 {
    ((p >> TAG_SHIFT) & 0xf) as u8
}

#[inline]
pub const fn strip(p: usize) -> usize {
    p & ADDR_MASK
}

/// The extra mmap protection flag for heap memory (`PROT_MTE` when tagging).
pub fn prot_flags() -> i32 {
    if enabled() {
        0x20
    } else {
        0
    }
}
