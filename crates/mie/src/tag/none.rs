//! The no-tag backend: every granule has tag 0 and every pointer is untagged.

use super::TagStore;

#[cfg_attr(target_arch = "aarch64", allow(dead_code))] // arm64 uses the MTE backend
pub struct NoTags;

impl TagStore for NoTags {
    fn load(&self, _addr: usize) -> u8 {
        0
    }

    fn store(&mut self, addr: usize, len: usize, _tag: u8, zero: bool) {
        if zero {
            // SAFETY: callers pass a range of allocator-owned, writable memory.
            unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len) };
        }
    }

    fn random(&mut self, _exclude: u16) -> u8 {
        0
    }
}
