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

/// The end of the canaries' part of a small slot of `slot_size` bytes holding `usable`:
/// the slot's end, or with MTE the end of the block's last granule (the slack past it
/// carries the free tag, so any access there faults at once; only the bytes inside the last
/// granule need a canary).
#[inline(always)]
pub fn span(usable: usize, slot_size: usize) -> usize {
    if crate::tag::on() {
        crate::tag::policy::tagged_len(usable)
    } else {
        slot_size
    }
}

/// Whether a small block of `usable` bytes has no canary bytes at all: with MTE, when it
/// fills its last granule (every byte past it carries the free tag). Its pattern need not
/// be computed then.
#[inline(always)]
pub fn none_needed(usable: usize) -> bool {
    crate::tag::on() && usable.is_multiple_of(crate::tag::GRANULE)
}

/// Write a small block's canaries: after the block (up to `MAX_CANARY` bytes) and, when the
/// slack is longer, at the end of the slot. `slot` is the slot's start as the block's
/// (tagged) pointer; the pattern belongs to the block's untagged address.
///
/// # Safety
/// `[slot, slot + slot_size)` must be the block's own writable slot.
#[inline(always)]
pub unsafe fn write_small(pat: u64, slot: usize, usable: usize, slot_size: usize) {
    // SAFETY: the caller's guarantee.
    unsafe { write_small_in::<false>(pat, slot, usable, slot_size) }
}

/// `write_small` into a slot that is all zero (a fresh or checked free slot on the malloc
/// fast path): the canary's first word is stored without reading what it replaces.
///
/// # Safety
/// As `write_small`, and `[slot, slot + slot_size)` is zero.
#[inline(always)]
pub unsafe fn write_small_zeroed(pat: u64, slot: usize, usable: usize, slot_size: usize) {
    // SAFETY: the caller's guarantee.
    unsafe { write_small_in::<true>(pat, slot, usable, slot_size) }
}

#[inline(always)]
unsafe fn write_small_in<const ZEROED: bool>(pat: u64, slot: usize, usable: usize, slot_size: usize) {
    let span = span(usable, slot_size);
    let slack = span - usable;
    if ZEROED && window::half_fits(slack, span) {
        // SAFETY: the span's last 16 bytes, aligned; the block's bytes in them are zero
        // (ZEROED) and stay so.
        return unsafe { window::write_half(pat, slot + span, slack) };
    }
    if ZEROED && slack <= WINDOW && span >= WINDOW {
        // SAFETY: the window is the slot's last WINDOW bytes (span >= WINDOW), aligned, and
        // the block's bytes in it are zero (ZEROED) and stay so.
        return unsafe { window::write(pat, slot + span, slack) };
    }
    // SAFETY: both ranges lie inside the slot (the caller's guarantee); the word holding the
    // block's last bytes keeps them (the block is not handed out yet, or it is the caller's
    // own during a realloc in place, so they cannot change meanwhile; ZEROED: they are zero).
    unsafe {
        if slack <= MAX_CANARY {
            write_to_word::<ZEROED>(pat, slot + usable, slot + span);
        } else {
            write(pat, (slot + usable) as *mut u8, MAX_CANARY);
            write_to_word::<ZEROED>(pat, slot + span - TAIL, slot + span);
        }
    }
}

/// Check a small block's canaries; the offset of the first bad byte from the block's end.
///
/// # Safety
/// `[slot, slot + slot_size)` must be the block's own readable slot.
#[inline]
pub unsafe fn check_small(pat: u64, slot: usize, usable: usize, slot_size: usize) -> Option<usize> {
    let slot_size = span(usable, slot_size);
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

/// Whether a small block's canaries are intact (the fast check; `check_small` finds the
/// first bad byte for a report). Whole-word reads only.
///
/// # Safety
/// `[slot, slot + slot_size)` must be the block's own readable slot, `usable >= 8` or the
/// slot at least 16 bytes (always true of small blocks).
#[inline(always)]
pub unsafe fn small_intact(pat: u64, slot: usize, usable: usize, slot_size: usize) -> bool {
    let span = span(usable, slot_size);
    // SAFETY: the caller's guarantee.
    unsafe { intact_in(pat, slot, usable, span - usable, span) }
}

/// `small_intact` of a block given by its slack, `slot_size - usable`, as the free path
/// has it (without MTE no subtraction back: the slack the record holds is the canary's).
///
/// # Safety
/// As `small_intact`; `slack <= slot_size`.
#[inline(always)]
pub unsafe fn small_intact_slack(pat: u64, slot: usize, slack: usize, slot_size: usize) -> bool {
    if crate::tag::on() {
        // SAFETY: the caller's guarantee.
        return unsafe { small_intact(pat, slot, slot_size - slack, slot_size) };
    }
    // SAFETY: the caller's guarantee (without MTE the span is the slot).
    unsafe { intact_in(pat, slot, slot_size - slack, slack, slot_size) }
}

/// `small_intact` with the canary's `span` and its `slack` (span - usable) worked out.
#[inline(always)]
unsafe fn intact_in(pat: u64, slot: usize, usable: usize, slack: usize, span: usize) -> bool {
    if window::half_fits(slack, span) {
        // SAFETY: the span's last 16 bytes, aligned.
        return unsafe { window::intact_half(pat, slot + span, slack) };
    }
    if slack <= WINDOW && span >= WINDOW {
        // SAFETY: the window is the slot's last WINDOW bytes (span >= WINDOW), aligned.
        return unsafe { window::intact(pat, slot + span, slack) };
    }
    // SAFETY: both ranges lie inside the slot (the caller's guarantee).
    unsafe {
        if slack <= MAX_CANARY {
            intact_to_word(pat, slot + usable, slot + span)
        } else {
            long_intact(pat, slot + usable, slot + span)
        }
    }
}

/// Whether a long slack's canaries are intact: `MAX_CANARY` bytes from the block's end
/// `end`, and the `TAIL` bytes before the slot's canary end `stop` (16-aligned). On x86-64
/// five 16-byte loads compared at once, without branches: the bytes from an unaligned `end`
/// repeat with a period of 8, so one rotated pattern word broadcast covers them all.
///
/// # Safety
/// `[end, end + MAX_CANARY)` and `[stop - TAIL, stop)` must be readable and the slot's own.
#[inline(always)]
unsafe fn long_intact(pat: u64, end: usize, stop: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64; the unaligned loads cover [end, end + 64), the aligned
    // one [stop - 16, stop), both the caller's; MAX_CANARY is 64 and TAIL 16.
    unsafe {
        use core::arch::x86_64::*;
        const _: () = assert!(MAX_CANARY == 64 && TAIL == 16);
        let w = _mm_set1_epi64x(word_at(pat, end) as i64);
        let at = |i: usize| _mm_xor_si128(_mm_loadu_si128((end + 16 * i) as *const __m128i), w);
        let tail = _mm_xor_si128(_mm_load_si128((stop - TAIL) as *const __m128i), _mm_set1_epi64x(pat as i64));
        let d = _mm_or_si128(_mm_or_si128(_mm_or_si128(at(0), at(1)), _mm_or_si128(at(2), at(3))), tail);
        _mm_movemask_epi8(_mm_cmpeq_epi8(d, _mm_setzero_si128())) == 0xffff
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's guarantee.
    unsafe {
        intact(pat, end, MAX_CANARY) && intact_to_word(pat, stop - TAIL, stop)
    }
}

/// The short canaries of small slots (a slack of at most `WINDOW` bytes, in a slot of at
/// least `WINDOW`: most blocks up to 224 bytes) are checked and written as the slot's last
/// `WINDOW` bytes at once, with a mask per slack length that selects the canary bytes,
/// instead of word by word from the block's end: no loop, no first-word shifts.
pub const WINDOW: usize = 32;

mod window {
    use super::WINDOW;

    /// Per slack length n (0..=WINDOW): 0xff on the last n bytes of the window.
    #[repr(C, align(16))]
    struct Masks([[u8; WINDOW]; WINDOW + 1]);

    static MASKS: Masks = {
        let mut t = [[0u8; WINDOW]; WINDOW + 1];
        let mut n = 0;
        while n <= WINDOW {
            let mut i = WINDOW - n;
            while i < WINDOW {
                t[n][i] = 0xff;
                i += 1;
            }
            n += 1;
        }
        Masks(t)
    };

    /// Whether the last `slack` bytes before `end` hold the canary.
    ///
    /// # Safety
    /// `[end - WINDOW, end)` must be readable and the slot's own; `end` 16-aligned;
    /// `slack <= WINDOW`.
    #[inline(always)]
    pub unsafe fn intact(pat: u64, end: usize, slack: usize) -> bool {
        debug_assert!(slack <= WINDOW && end.is_multiple_of(16));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of x86-64; the loads are aligned and inside the window (the
        // caller's guarantee); the mask row is 16-aligned (32-byte rows of an aligned table).
        unsafe {
            use core::arch::x86_64::*;
            let p = _mm_set1_epi64x(pat as i64);
            let m = MASKS.0.get_unchecked(slack).as_ptr() as *const __m128i;
            let a = _mm_xor_si128(_mm_load_si128((end - 32) as *const __m128i), p);
            let b = _mm_xor_si128(_mm_load_si128((end - 16) as *const __m128i), p);
            let d = _mm_or_si128(_mm_and_si128(a, _mm_load_si128(m)), _mm_and_si128(b, _mm_load_si128(m.add(1))));
            _mm_movemask_epi8(_mm_cmpeq_epi8(d, _mm_setzero_si128())) == 0xffff
        }
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: as above; the words are 8-aligned; the row holds WINDOW bytes.
        unsafe {
            let m = MASKS.0.get_unchecked(slack).as_ptr() as *const u64;
            let mut d = 0u64;
            for i in 0..WINDOW / 8 {
                let w = u64::from_le(((end - WINDOW + 8 * i) as *const u64).read());
                d |= (w ^ pat) & u64::from_le(m.add(i).read());
            }
            d == 0
        }
    }

    /// Write the canary into the last `slack` bytes before `end`, and zeros into the rest of
    /// the window.
    ///
    /// # Safety
    /// `[end - WINDOW, end)` must be writable, the slot's own, and zero before its last
    /// `slack` bytes (nobody changes them meanwhile); `end` 16-aligned; `slack <= WINDOW`.
    #[inline(always)]
    pub unsafe fn write(pat: u64, end: usize, slack: usize) {
        debug_assert!(slack <= WINDOW && end.is_multiple_of(16));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `intact`, for stores.
        unsafe {
            use core::arch::x86_64::*;
            let p = _mm_set1_epi64x(pat as i64);
            let m = MASKS.0.get_unchecked(slack).as_ptr() as *const __m128i;
            _mm_store_si128((end - 32) as *mut __m128i, _mm_and_si128(p, _mm_load_si128(m)));
            _mm_store_si128((end - 16) as *mut __m128i, _mm_and_si128(p, _mm_load_si128(m.add(1))));
        }
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: as above.
        unsafe {
            let m = MASKS.0.get_unchecked(slack).as_ptr() as *const u64;
            for i in 0..WINDOW / 8 {
                ((end - WINDOW + 8 * i) as *mut u64).write((pat & u64::from_le(m.add(i).read())).to_le());
            }
        }
    }

    /// The last 16 bytes of the window: enough for a slack of up to 16 bytes (every class
    /// up to 128 bytes is 16 from the next), checked and written as two words (fewer
    /// instructions than the vector window, whose result must leave its register).
    pub const HALF: usize = WINDOW / 2;

    /// Whether a canary of `slack` bytes at the end of a span of `span` bytes lies in the
    /// span's last HALF bytes, which are the span's own. Without MTE the span is the slot,
    /// at least 16 bytes (compiled out); with MTE a block of 0 bytes has a span of 0, and
    /// the 16 bytes before it are the slot before's.
    #[inline(always)]
    pub fn half_fits(slack: usize, span: usize) -> bool {
        slack <= HALF && (!crate::tag::on() || span >= HALF)
    }

    /// The masks of the last two words for a slack of `slack` (<= HALF) bytes.
    #[inline(always)]
    fn half_masks(slack: usize) -> (u64, u64) {
        debug_assert!(slack <= HALF);
        // SAFETY: slack <= HALF < WINDOW + 1 rows; the row's last 16 bytes are two aligned
        // words (32-byte rows of a 16-aligned table).
        unsafe {
            let m = MASKS.0.get_unchecked(slack).as_ptr().add(HALF) as *const u64;
            (u64::from_le(m.read()), u64::from_le(m.add(1).read()))
        }
    }

    /// `intact` for a slack of at most `HALF` bytes: only `[end - HALF, end)` is read.
    ///
    /// # Safety
    /// `[end - HALF, end)` must be readable and the slot's own; `end` 16-aligned.
    #[inline(always)]
    pub unsafe fn intact_half(pat: u64, end: usize, slack: usize) -> bool {
        debug_assert!(end.is_multiple_of(16));
        let (m0, m1) = half_masks(slack);
        // SAFETY: both words lie in [end - 16, end), aligned (the caller's guarantee).
        let (a, b) = unsafe { (u64::from_le(((end - 16) as *const u64).read()), u64::from_le(((end - 8) as *const u64).read())) };
        ((a ^ pat) & m0) | ((b ^ pat) & m1) == 0
    }

    /// `write` for a slack of at most `HALF` bytes: only `[end - HALF, end)` is written.
    ///
    /// # Safety
    /// As `write`, for `[end - HALF, end)`.
    #[inline(always)]
    pub unsafe fn write_half(pat: u64, end: usize, slack: usize) {
        debug_assert!(end.is_multiple_of(16));
        let (m0, m1) = half_masks(slack);
        // SAFETY: both words lie in [end - 16, end), aligned, zero outside the canary (the
        // caller's guarantee).
        unsafe {
            ((end - 16) as *mut u64).write((pat & m0).to_le());
            ((end - 8) as *mut u64).write((pat & m1).to_le());
        }
    }
}

/// Whether the canary bytes `[end, stop)` are intact, `stop` a multiple of 8: aligned whole
/// words only, the first with the bytes before `end` masked off. An aligned canary word is
/// the pattern itself (see `pattern`), so no rotation is needed either.
///
/// # Safety
/// `[end & !7, stop)` must be readable and belong to the block's slot.
#[inline(always)]
unsafe fn intact_to_word(pat: u64, end: usize, stop: usize) -> bool {
    if end >= stop {
        return true;
    }
    let mut a = end & !7;
    // SAFETY (both reads): [a, stop) lies in the slot (the caller's guarantee); a is aligned.
    let mut diff = (u64::from_le(unsafe { (a as *const u64).read() }) ^ pat) & (!0u64 << (8 * (end & 7)));
    a += 8;
    while a < stop {
        diff |= u64::from_le(unsafe { (a as *const u64).read() }) ^ pat;
        a += 8;
    }
    diff == 0
}

/// Write the canary into `[end, stop)`, `stop` a multiple of 8: aligned whole words, the
/// bytes before `end` in the first one kept (`ZEROED`: they are zero, so zeros are stored
/// without reading them).
///
/// # Safety
/// `[end & !7, stop)` must be writable, belong to the block's slot, and nobody else may
/// change the bytes before `end` in its first word meanwhile.
#[inline(always)]
unsafe fn write_to_word<const ZEROED: bool>(pat: u64, end: usize, stop: usize) {
    if end >= stop {
        return;
    }
    let mut a = end & !7;
    let keep = !(!0u64 << (8 * (end & 7)));
    // SAFETY (all accesses): [a, stop) lies in the slot (the caller's guarantee); a is aligned.
    unsafe {
        let old = if ZEROED { 0 } else { u64::from_le((a as *const u64).read()) };
        (a as *mut u64).write(((old & keep) | (pat & !keep)).to_le());
        a += 8;
        while a < stop {
            (a as *mut u64).write(pat.to_le());
            a += 8;
        }
    }
}

/// Whether the `len` canary bytes at `end` are intact. Reads whole words: when `len < 8`,
/// the word that ends where the canary ends, with the block's own bytes in it masked off.
///
/// # Safety
/// `[end, end + len)` must be readable and belong to the block's slot, and for `len < 8`
/// the 8 bytes before `end + len` too (a small block's slot is at least 16 bytes).
#[inline(always)]
#[cfg(not(target_arch = "x86_64"))] // (x86-64 has `long_intact`'s vector form)
pub unsafe fn intact(pat: u64, end: usize, len: usize) -> bool {
    // SAFETY (whole fn): the reads stay inside [end + len - 8, end + len) or [end, end + len).
    unsafe {
        if len >= 8 {
            let w = word_at(pat, end);
            let mut diff = 0u64;
            let mut i = 0;
            while i + 8 <= len {
                diff |= ((end + i) as *const u64).read_unaligned() ^ w;
                i += 8;
            }
            if i < len {
                diff |= ((end + len - 8) as *const u64).read_unaligned() ^ word_at(pat, end + len - 8);
            }
            diff == 0
        } else if len > 0 {
            let a = end + len - 8;
            let mask = !0u64 << (8 * (8 - len));
            ((a as *const u64).read_unaligned() ^ word_at(pat, a)) & mask == 0
        } else {
            true
        }
    }
}

/// The canary pattern word for a block: the byte at address `a` is `pattern >> 8*(a % 8)`,
/// so a little-endian word read at a multiple of 8 is the pattern itself.
#[inline]
pub fn pattern(prf: &crate::prf::Prf, block: usize) -> u64 {
    let x = prf.eval(block as u64);
    // Force every byte non-zero.
    x | 0x0101_0101_0101_0101
}

/// `pattern` in a fast path, which runs only where the PRF is AES (`TCache::fast`).
///
/// # Safety
/// `prf.has_aes()` must be true.
#[inline(always)]
pub unsafe fn pattern_aes(prf: &crate::prf::Prf, block: usize) -> u64 {
    // SAFETY: the caller's guarantee.
    unsafe { prf.eval_aes(block as u64) | 0x0101_0101_0101_0101 }
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
#[inline(always)]
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
            let pat = pattern(&crate::prf::Prf::random(), base);
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
    fn word_checks_agree_with_the_byte_check() {
        // Every slot size, usable size and slot alignment: the fast check and the short
        // write (merged into a word) agree with the byte-exact check and write. The canaries'
        // span depends on whether MTE is on, which the heap's start-up decides once: start it
        // first, so another test starting it meanwhile cannot change the span mid-check (a
        // flake seen on the arm64 leg).
        let _ = crate::heap::ensure_init();
        for slot in [16usize, 32, 48, 80, 128, 256] {
            for usable in 0..=slot {
                let mut buf = vec![0x5au8; slot + 16];
                let base = (buf.as_mut_ptr() as usize + 15) & !15;
                let pat = pattern(&crate::prf::Prf::random(), base);
                if usable < 8 && slot - usable < 8 {
                    continue;
                }
                // SAFETY: the slot lies inside buf.
                unsafe { write_small(pat, base, usable, slot) };
                // The block's own bytes are untouched.
                // SAFETY: as above.
                assert!((0..usable).all(|i| unsafe { *((base + i) as *const u8) } == 0x5a), "slot {slot} usable {usable}");
                // SAFETY: as above.
                unsafe {
                    assert!(small_intact(pat, base, usable, slot));
                    assert_eq!(check_small(pat, base, usable, slot), None);
                }
                for i in usable..slot {
                    // SAFETY: i < slot: inside buf.
                    let b = unsafe { &mut *((base + i) as *mut u8) };
                    let saved = *b;
                    *b ^= 0x40;
                    // SAFETY: as above.
                    let (fast, exact) = unsafe { (small_intact(pat, base, usable, slot), check_small(pat, base, usable, slot)) };
                    assert_eq!(fast, exact.is_none(), "slot {slot} usable {usable} byte {i}");
                    *b = saved;
                }
            }
        }
    }

    #[test]
    fn the_write_into_a_zero_slot_writes_what_the_general_write_does() {
        let _ = crate::heap::ensure_init();
        for slot in [16usize, 32, 48, 80, 128, 256, 1024] {
            for usable in 0..slot {
                #[repr(align(16))]
                struct Buf([u8; 1024]);
                let (mut a, mut b) = (Buf([0; 1024]), Buf([0; 1024]));
                let (pa, pb) = (a.0.as_mut_ptr() as usize, b.0.as_mut_ptr() as usize);
                let pat = pattern(&crate::prf::Prf::random(), pa);
                // SAFETY: both slots lie inside their buffers and are zero.
                unsafe {
                    write_small(pat, pa, usable, slot);
                    write_small_zeroed(pat, pb, usable, slot);
                }
                assert!(a.0 == b.0, "slot {slot} usable {usable}");
            }
        }
    }

    #[test]
    fn pattern_has_no_zero_bytes_and_detects_any_single_byte_change() {
        let prf = crate::prf::Prf::random();
        for b in 0..1000usize {
            let pat = pattern(&prf, b * 16);
            assert!(pat.to_ne_bytes().iter().all(|&x| x != 0));
        }
        // Every length and start alignment: the word path and the byte path write the same
        // bytes, touch nothing outside the range, and find every single corrupted byte.
        for start in 0..8 {
            for len in 0..=40 {
                let mut buf = [0u8; 64];
                let base = buf.as_ptr() as usize;
                let pat = pattern(&crate::prf::Prf::random(), base + start);
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
