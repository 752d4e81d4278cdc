//! Slack canaries: the bytes between the requested size and the end of the slot hold a
//! per-process, per-address pattern with no zero bytes (so a stray NUL terminator is caught
//! too). Checked when the block is freed or reallocated.
//!
//! With canaries on, a request of n bytes is served from the class for n + 1, so every small
//! block has at least one canary byte right after its end: a one-byte linear overflow is
//! always caught at the next check. At most `MAX_CANARY` bytes are written and checked.

pub const MAX_CANARY: usize = 64;

/// The canary pattern word for a block: the byte at address `a` is `pattern >> 8*(a % 8)`.
#[inline]
pub fn pattern(key: u64, block: usize) -> u64 {
    let x = crate::rand::mix64(key ^ block as u64);
    // Force every byte non-zero.
    x | 0x0101_0101_0101_0101
}

#[inline]
fn byte_at(pat: u64, addr: usize) -> u8 {
    (pat >> (8 * (addr & 7))) as u8
}

/// Write the canary into `[end, end + len)`.
///
/// # Safety
/// The range must be writable memory owned by the block's slot.
#[inline]
pub unsafe fn write(pat: u64, end: *mut u8, len: usize) {
    let a = end as usize;
    for i in 0..len {
        // SAFETY: i < len and the caller guarantees the range is writable.
        unsafe { *end.add(i) = byte_at(pat, a + i) };
    }
}

/// Check the canary; returns the offset (from `end`) of the first corrupted byte.
///
/// # Safety
/// The range must be readable memory owned by the block's slot.
#[inline]
pub unsafe fn check(pat: u64, end: *const u8, len: usize) -> Option<usize> {
    let a = end as usize;
    // SAFETY: i < len and the caller guarantees the range is readable.
    (0..len).find(|&i| unsafe { *end.add(i) } != byte_at(pat, a + i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_has_no_zero_bytes_and_detects_any_single_byte_change() {
        for b in 0..1000usize {
            let pat = pattern(0xdead_beef, b * 16);
            assert!(pat.to_ne_bytes().iter().all(|&x| x != 0));
        }
        let mut buf = [0u8; 80];
        let pat = pattern(99, buf.as_ptr() as usize + 3);
        // SAFETY: the range lies inside buf.
        unsafe { write(pat, buf.as_mut_ptr().add(3), 64) };
        // SAFETY: as above.
        assert_eq!(unsafe { check(pat, buf.as_ptr().add(3), 64) }, None);
        for i in 0..64 {
            let saved = buf[3 + i];
            buf[3 + i] = 0;
            // SAFETY: as above.
            assert_eq!(unsafe { check(pat, buf.as_ptr().add(3), 64) }, Some(i));
            buf[3 + i] = saved;
        }
    }
}
