//! Size classes: 16-byte steps up to 128 bytes, then four classes per doubling up to 128 KiB.
//! Everything about a class (slab geometry, metadata stride, division magic, cache depth) is
//! computed at compile time into one table, so the hot path does table loads, not arithmetic.

pub const CLASS_COUNT: usize = 48;
pub const MAX_SMALL: usize = 128 << 10;
/// Classes at or below this size are zeroed on free and checked for writes after free.
pub const ZERO_MAX: usize = 16 << 10;
/// Slabs are never smaller than this (16 KiB) nor larger than 1 MiB.
const MIN_SLAB_SHIFT: u32 = 14;
const MAX_SLAB_SHIFT: u32 = 20;
pub const MAX_SLOTS: usize = 1 << (MIN_SLAB_SHIFT - 4);
pub const MAX_WORDS: usize = MAX_SLOTS / 64;
/// `(off * magic) >> MAGIC_SHIFT == off / size` for every offset inside a slab (≤ 1 MiB).
pub const MAGIC_SHIFT: u32 = 40;
/// Bytes of per-slab metadata header (see `slab.rs`).
pub const SLAB_HEADER: usize = 16;

#[derive(Clone, Copy, Debug)]
pub struct ClassInfo {
    pub size: u32,
    pub slab_shift: u8,
    pub nslots: u16,
    /// 64-bit words in each per-slab bitmap.
    pub words: u8,
    /// Bytes per slot in the out-of-line slack table (1, 2 or 4).
    pub slack_width: u8,
    /// Bytes of metadata per slab (header, three bitmaps, slack table, tag nibbles), 16-aligned.
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

const fn make(i: usize) -> ClassInfo {
    let size = class_size(i);
    let mut shift = MIN_SLAB_SHIFT;
    while shift < MAX_SLAB_SHIFT && (1usize << shift) < 16 * size {
        shift += 1;
    }
    let nslots = (1usize << shift) / size;
    let words = nslots.div_ceil(64);
    // Slack can be the whole slot (a zero-byte request), so the width must hold `size`.
    let slack_width = if size < 256 {
        1
    } else if size < 65536 {
        2
    } else {
        4
    };
    // Header, three bitmaps, the slack table, then one byte per slot: the previous tag
    // (low nibble) and how the block was allocated (high nibble).
    let meta = SLAB_HEADER + 3 * 8 * words + slack_width * nslots + nslots;
    // Thread-cache bin capacity: a batch (half of it) moves per bucket lock, so small
    // classes, the most frequent, move many slots at a time.
    let cache_cap = if size <= 256 {
        64
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
        nslots: nslots as u16,
        words: words as u8,
        slack_width: slack_width as u8,
        meta_stride: ((meta + 15) & !15) as u32,
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
    fn slab_geometry() {
        for (i, k) in CLASSES.iter().enumerate() {
            let slab = 1usize << k.slab_shift;
            assert!(k.nslots as usize >= 8, "class {i} has {} slots", k.nslots);
            assert!(k.nslots as usize <= MAX_SLOTS);
            assert!(k.nslots as usize * k.size as usize <= slab);
            assert!(k.words as usize <= MAX_WORDS);
            assert_eq!(k.meta_stride % 16, 0);
            // The slack table must hold a slack of the whole slot (zero-byte request).
            assert!((k.size as u64) < 1u64 << (8 * k.slack_width as u32), "class {i} slack width");
            // Waste at the end of a slab stays below one slot.
            assert!(slab - k.nslots as usize * (k.size as usize) < (k.size as usize));
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
