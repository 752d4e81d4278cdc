//! Slack canaries: the bytes between the requested size and the end of the slot hold a
//! per-process, per-address pattern with no zero bytes (so a stray NUL terminator is caught
//! too). Checked when the block is freed or reallocated.
//!
//! With canaries on, a request of n bytes is served from the class for n + 1, so every small
//! block has at least one canary byte right after its end: a one-byte linear overflow is
//! always caught at the next check. At most `MAX_CANARY` bytes are written and checked.

pub const MAX_CANARY: usize = 64;

/// When a small block's slack is longer than `MAX_CANARY`, the last `TAIL` bytes of its slot
/// hold the canary too. Then the bytes just before every slot are canary bytes of the slot
/// before it (or, if that slot is free, zero bytes checked when it is reused): a write just
/// before a block, an underflow, is caught like an overflow of its neighbour.
pub const TAIL: usize = 16;

/// Write a small block's canaries: after the block (up to `MAX_CANARY` bytes) and, when the
/// slack is longer, at the end of the slot. `slot` is the slot's start as the block's
/// (tagged) pointer; the pattern belongs to the block's untagged address.
///
/// # Safety
/// `[slot, slot + slot_size)` must be the block's own writable slot.
#[inline]
pub unsafe fn write_small(pat: u64, slot: usize, usable: usize, slot_size: usize) {
    let slack = slot_size - usable;
    // SAFETY: both ranges lie inside the slot (the caller's guarantee).
    unsafe {
        write(pat, (slot + usable) as *mut u8, slack.min(MAX_CANARY));
        if slack > MAX_CANARY {
            write(pat, (slot + slot_size - TAIL) as *mut u8, TAIL);
        }
    }
}

/// Check a small block's canaries; the offset of the first bad byte from the block's end.
///
/// # Safety
/// `[slot, slot + slot_size)` must be the block's own readable slot.
#[inline]
pub unsafe fn check_small(pat: u64, slot: usize, usable: usize, slot_size: usize) -> Option<usize> {
    let slack = slot_size - usable;
    // SAFETY: both ranges lie inside the slot (the caller's guarantee).
    unsafe {
        if let Some(off) = check(pat, (slot + usable) as *const u8, slack.min(MAX_CANARY)) {
            return Some(off);
        }
        if slack > MAX_CANARY {
            return check(pat, (slot + slot_size - TAIL) as *const u8, TAIL).map(|o| slack - TAIL + o);
        }
    }
    None
}

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

/// The 8 canary bytes starting at address `a`, as a little-endian word read from `a`.
#[inline]
fn word_at(pat: u64, a: usize) -> u64 {
    if cfg!(target_endian = "little") {
        pat.rotate_right(8 * (a & 7) as u32)
    } else {
        u64::from_be_bytes(pat.rotate_right(8 * (a & 7) as u32).to_le_bytes())
    }
}

/// Write the canary into `[end, end + len)`: whole words where it is 8 bytes or longer
/// (the last word may overlap the one before it), single bytes below that.
///
/// # Safety
/// The range must be writable memory owned by the block's slot.
#[inline]
pub unsafe fn write(pat: u64, end: *mut u8, len: usize) {
    let a = end as usize;
    if len >= 8 {
        let w = word_at(pat, a);
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: [end+i, end+i+8) lies inside the range; unaligned store.
            unsafe { (end.add(i) as *mut u64).write_unaligned(w) };
            i += 8;
        }
        if i < len {
            // SAFETY: len >= 8, so [end+len-8, end+len) lies inside the range.
            unsafe { (end.add(len - 8) as *mut u64).write_unaligned(word_at(pat, a + len - 8)) };
        }
        return;
    }
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
    if len >= 8 {
        let w = word_at(pat, a);
        let mut diff = 0u64;
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: [end+i, end+i+8) lies inside the range; unaligned load.
            diff |= unsafe { (end.add(i) as *const u64).read_unaligned() } ^ w;
            i += 8;
        }
        if i < len {
            // SAFETY: len >= 8, so [end+len-8, end+len) lies inside the range.
            diff |= unsafe { (end.add(len - 8) as *const u64).read_unaligned() } ^ word_at(pat, a + len - 8);
        }
        if diff == 0 {
            return None;
        }
    }
    // Slow path (short canaries and reporting): find the first bad byte.
    // SAFETY: i < len and the caller guarantees the range is readable.
    (0..len).find(|&i| unsafe { *end.add(i) } != byte_at(pat, a + i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_blocks_have_a_tail_canary_when_the_slack_is_long() {
        for (usable, slot) in [(20usize, 32usize), (200, 256), (1000, 1280), (1, 1024)] {
            let mut buf = vec![0u8; slot];
            let base = buf.as_mut_ptr() as usize;
            let pat = pattern(5, base);
            // SAFETY: the slot is buf.
            unsafe { write_small(pat, base, usable, slot) };
            // SAFETY: as above.
            assert_eq!(unsafe { check_small(pat, base, usable, slot) }, None);
            // The byte just before the next slot is always a canary byte.
            buf[slot - 1] ^= 0x2;
            // SAFETY: as above.
            assert_eq!(unsafe { check_small(pat, base, usable, slot) }, Some(slot - 1 - usable), "usable {usable} slot {slot}");
            buf[slot - 1] ^= 0x2;
            // Bytes between the two canaries (long slack) stay as they were: zero.
            if slot - usable > MAX_CANARY + TAIL {
                assert!(buf[usable + MAX_CANARY..slot - TAIL].iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn pattern_has_no_zero_bytes_and_detects_any_single_byte_change() {
        for b in 0..1000usize {
            let pat = pattern(0xdead_beef, b * 16);
            assert!(pat.to_ne_bytes().iter().all(|&x| x != 0));
        }
        // Every length and start alignment: the word path and the byte path write the same
        // bytes, touch nothing outside the range, and find every single corrupted byte.
        for start in 0..8 {
            for len in 0..=40 {
                let mut buf = [0u8; 64];
                let base = buf.as_ptr() as usize;
                let pat = pattern(99, base + start);
                // SAFETY: the range lies inside buf.
                unsafe { write(pat, buf.as_mut_ptr().add(start), len) };
                for (i, &b) in buf.iter().enumerate() {
                    let inside = i >= start && i < start + len;
                    assert_eq!(b, if inside { byte_at(pat, base + i) } else { 0 }, "start {start} len {len} byte {i}");
                }
                // SAFETY: as above.
                assert_eq!(unsafe { check(pat, buf.as_ptr().add(start), len) }, None);
                for i in 0..len {
                    let saved = buf[start + i];
                    buf[start + i] = 0;
                    // SAFETY: as above.
                    assert_eq!(unsafe { check(pat, buf.as_ptr().add(start), len) }, Some(i), "start {start} len {len}");
                    buf[start + i] = saved;
                }
            }
        }
    }
}
