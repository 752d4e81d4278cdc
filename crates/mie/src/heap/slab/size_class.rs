//! Size classes: 16-byte steps up to 128 bytes, then four classes per doubling up to 128 KiB.
//! Everything about a class (slab geometry, metadata stride, division magic, cache depth) is
//! computed at compile time into one table, so the hot path does table loads, not arithmetic.

pub const CLASS_COUNT: usize = 48;
pub const MAX_SMALL: usize = 128 << 10;
/// Classes at or below this size are zeroed on free and checked for writes after free.
pub const ZERO_MAX: usize = 16 << 10;
/// Slabs are never smaller than this (16 KiB); they hold 16 slots up to 4 KiB classes and
/// are at most 64 KiB up to 16 KiB classes, so an empty slab of a big class does not hold
/// much memory. A slot's unused tail in its slab is never touched, so it costs address
/// space, not memory.
const MIN_SLAB_SHIFT: u32 = 14;
const MAX_SLAB_SHIFT: u32 = 16;
/// Classes from this size up leave at least `GUARD_GAP` bytes after the last slot of every
/// slab: their slabs are at least 64 KiB and big enough for two slots up to 32 KiB, for one
/// above (up to 256 KiB for the 128 KiB class). Where the gap is a page or more it is left
/// unmapped (`pool.rs`), so a linear overflow that runs out of a slab's last slot faults at
/// the access.
pub const GUARDED_MIN: usize = 16 << 10;
pub const GUARD_GAP: usize = 4 << 10;
#[cfg(test)]
pub const MAX_SLOTS: usize = 1 << (MIN_SLAB_SHIFT - 4);
#[cfg(test)]
pub const MAX_WORDS: usize = MAX_SLOTS / 64;
/// `(off * magic) >> MAGIC_SHIFT == off / size` for every offset inside a slab (≤ 1 MiB).
pub const MAGIC_SHIFT: u32 = 40;
/// Bytes of per-slab metadata header (see `meta.rs`): one cache line.
pub const SLAB_HEADER: usize = 64;
/// Classes up to this size keep 16-bit slot records (their slack fits in 8 bits).
pub const NARROW_RECORD_MAX: usize = 224;

#[derive(Clone, Copy, Debug)]
pub struct ClassInfo {
    pub size: u32,
    pub slab_shift: u8,
    /// (1 << slab_shift) - 1.
    pub slab_mask: u32,
    pub nslots: u16,
    /// 64-bit words in each per-slab bitmap.
    pub words: u8,
    /// Slot records are 32-bit (else 16-bit).
    pub wide: bool,
    /// Offsets inside a slab's metadata: the remote-free bitmap (its own cache lines), the
    /// owner's free bitmap, the slot records.
    pub remote_off: u16,
    pub free_off: u16,
    pub rec_off: u16,
    /// Bytes of metadata per slab (header, bitmaps, records), 64-aligned.
    pub meta_stride: u32,
    pub magic: u64,
    /// Thread-cache depth for this class.
    pub cache_cap: u8,
}

pub const fn class_size(i: usize) -> usize {
    if i < 8 {
        16 * (i + 1)
    } else {
        let j = i - 8;
        let e = 7 + j / 4;
        (5 + j % 4) << (e - 2)
    }
}

pub(crate) const fn make(i: usize) -> ClassInfo {
    let size = class_size(i);
    let (shift, nslots) = if size >= GUARDED_MIN {
        let room = if size <= 32 << 10 { 2 * size } else { size } + GUARD_GAP;
        let mut shift = 16;
        while (1usize << shift) < room {
            shift += 1;
        }
        (shift, ((1usize << shift) - GUARD_GAP) / size)
    } else {
        let target = if 16 * size <= 64 << 10 { 16 * size } else { 64 << 10 };
        let mut shift = MIN_SLAB_SHIFT;
        while shift < MAX_SLAB_SHIFT && (1usize << shift) < target {
            shift += 1;
        }
        (shift, (1usize << shift) / size)
    };
    let words = nslots.div_ceil(64);
    // Slack can be the whole slot (a zero-byte request): narrow records hold up to 255.
    let wide = size > NARROW_RECORD_MAX;
    let remote_off = SLAB_HEADER;
    let free_off = remote_off + (8 * words).next_multiple_of(64);
    let rec_off = free_off + 8 * words;
    let meta = rec_off + nslots * if wide { 4 } else { 2 };
    // Thread-cache bin capacity: a batch (half of it) moves per refill, so small classes,
    // the most frequent, move many slots at a time.
    let cache_cap = if size <= 256 {
        128
    } else if size <= 1024 {
        32
    } else if size <= 8192 {
        16
    } else if size <= 32768 {
        8
    } else {
        4
    };
    ClassInfo {
        size: size as u32,
        slab_shift: shift as u8,
        slab_mask: (1u32 << shift) - 1,
        nslots: nslots as u16,
        words: words as u8,
        wide,
        remote_off: remote_off as u16,
        free_off: free_off as u16,
        rec_off: rec_off as u16,
        meta_stride: meta.next_multiple_of(64) as u32,
        magic: (1u64 << MAGIC_SHIFT) / size as u64 + 1,
        cache_cap,
    }
}

pub static CLASSES: [ClassInfo; CLASS_COUNT] = {
    let mut t = [make(0); CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        t[i] = make(i);
        i += 1;
    }
    t
};

/// Requests up to this size (canary byte included: `need <= FAST_MAX`) take their class
/// from a table.
pub const FAST_MAX: usize = 2048;

/// Class by ceil(need / 16), for need <= FAST_MAX.
static FAST_CLASS: [u8; FAST_MAX / 16 + 1] = {
    let mut t = [0u8; FAST_MAX / 16 + 1];
    let mut i = 1;
    while i <= FAST_MAX / 16 {
        let mut c = 0;
        while class_size(c) < i * 16 {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

/// The class for `need` bytes, 1 <= need <= FAST_MAX (a table load).
#[inline(always)]
pub fn fast_class(need: usize) -> usize {
    debug_assert!(need <= FAST_MAX);
    FAST_CLASS[(need + 15) >> 4] as usize
}

/// The smallest class holding `size` bytes (`size <= MAX_SMALL`), branch-light:
/// one compare, then either a shift or a leading-zero count.
#[inline]
pub fn class_of(size: usize) -> usize {
    if size <= 128 {
        size.saturating_sub(1) >> 4
    } else {
        let s = size - 1;
        let e = (usize::BITS - 1 - s.leading_zeros()) as usize;
        8 + (e - 7) * 4 + ((s >> (e - 2)) & 3)
    }
}

/// The smallest class holding `size` bytes whose slots all start at multiples of `align`
/// (a power of two). Slabs are aligned to their (power-of-two) size, so a class whose size
/// is a multiple of `align` gives aligned slots. `None` if no small class fits.
#[inline]
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    let need = if size < align { align } else { size };
    if need > MAX_SMALL {
        return None;
    }
    let mut c = class_of(need);
    if align <= 16 {
        return Some(c);
    }
    while c < CLASS_COUNT {
        if (CLASSES[c].size as usize) & (align - 1) == 0 {
            return Some(c);
        }
        c += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shape() {
        assert_eq!(class_size(0), 16);
        assert_eq!(class_size(7), 128);
        assert_eq!(class_size(8), 160);
        assert_eq!(class_size(11), 256);
        assert_eq!(class_size(CLASS_COUNT - 1), MAX_SMALL);
        for i in 1..CLASS_COUNT {
            assert!(class_size(i) > class_size(i - 1));
            assert_eq!(class_size(i) % 16, 0, "16-byte alignment of every slot");
        }
        // About four classes per doubling above 128 bytes: growth never above 25%.
        for i in 9..CLASS_COUNT {
            let (a, b) = (class_size(i - 1), class_size(i));
            assert!(b * 4 <= a * 5, "{a} -> {b}");
        }
    }

    #[test]
    fn class_of_is_smallest_fit_for_every_size() {
        let mut c = 0;
        for size in 0..=MAX_SMALL {
            while class_size(c) < size {
                c += 1;
            }
            assert_eq!(class_of(size), c, "size {size}");
        }
    }

    #[test]
    fn fast_class_table_matches_class_of() {
        for need in 1..=FAST_MAX {
            assert_eq!(fast_class(need), class_of(need), "need {need}");
        }
    }

    #[test]
    fn slab_geometry() {
        for (i, k) in CLASSES.iter().enumerate() {
            let slab = 1usize << k.slab_shift;
            assert!(k.nslots as usize >= if k.size <= 4096 { 16 } else { 1 }, "class {i} has {} slots", k.nslots);
            assert!(k.size > 4096 || (slab >= 16 * k.size as usize && (slab < 32 * k.size as usize || slab == 1 << MIN_SLAB_SHIFT)), "class {i}");
            assert!(k.size <= 4096 || slab <= (64 << 10).max(4 * k.size as usize), "class {i}: slab {slab}");
            assert!(k.nslots as usize <= MAX_SLOTS);
            assert!(k.nslots as usize * k.size as usize <= slab);
            assert!(k.words as usize <= MAX_WORDS);
            assert_eq!(k.meta_stride % 64, 0);
            assert_eq!(k.remote_off % 64, 0, "the remote bitmap has its own cache lines");
            // A record holds a slack of the whole slot (zero-byte request).
            let slack_bits = if k.wide { 24 } else { 8 };
            assert!((k.size as u64) < 1u64 << slack_bits, "class {i} record width");
            assert!(k.rec_off as usize + k.nslots as usize * if k.wide { 4 } else { 2 } <= k.meta_stride as usize);
            // Waste at the end of a slab stays below one slot; guarded classes keep room
            // for the guard, at most one slot more.
            let tail = slab - k.nslots as usize * (k.size as usize);
            if (k.size as usize) < GUARDED_MIN {
                assert!(tail < k.size as usize, "class {i}");
            } else {
                assert!(tail >= GUARD_GAP && tail <= GUARD_GAP + k.size as usize, "class {i}: tail {tail}");
                assert!(k.nslots >= if k.size <= 32 << 10 { 2 } else { 1 }, "class {i}");
            }
        }
    }

    #[test]
    fn magic_division_exact_over_every_offset() {
        for k in CLASSES.iter() {
            let slab = 1u64 << k.slab_shift;
            for off in 0..slab {
                let q = (off * k.magic) >> MAGIC_SHIFT;
                assert_eq!(q, off / k.size as u64, "size {} off {off}", k.size);
            }
        }
    }

    #[test]
    fn aligned_classes_give_aligned_slots() {
        let mut align = 32;
        while align <= MAX_SMALL {
            for size in [1usize, 17, align - 1, align, align + 1, 3 * align] {
                if let Some(c) = class_for(size, align) {
                    let s = CLASSES[c].size as usize;
                    assert!(s >= size && s >= align);
                    assert_eq!(s % align, 0);
                } else {
                    assert!(size.max(align) > MAX_SMALL / 2 || align > MAX_SMALL / 2 || size > MAX_SMALL);
                }
            }
            align *= 2;
        }
        assert_eq!(class_for(MAX_SMALL + 1, 16), None);
        assert_eq!(class_for(1, 16), Some(0));
    }
}
