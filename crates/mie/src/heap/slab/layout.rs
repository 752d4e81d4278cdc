//! Address layout: one reservation for all slab memory, one (far away) for metadata.
//!
//! ```text
//! heap:  row 0: | seg (class 0, bucket 0) | seg (1, 0) | ... | seg (47, 0) | 16 unused |
//!                 | seg (0, 1) | ... | seg (47, 7) | 16 unused |
//!        row 1: | seg (0, 0) | seg (1, 0) | ...                                          |
//!          a region (class, bucket) is its segment of every row: 256 KiB each, 512 slots
//!          per row (64 per bucket), 4 GiB per region in all (256 MiB in a 39-bit address
//!          space); slabs of 2^slab_shift bytes numbered through the region's segments,
//!          from a random first slab of its first segment upward; the end of each segment
//!          (at least 64 KiB and a slab) is never mapped: a gap between regions
//! meta:  | ... chunks of slab metadata, packed downward in the order slabs are made | guard | chunk table |
//!          a chunk holds the metadata of the slabs of one 256 KiB granule of the heap
//!          (one region's); the table, an entry per granule, gives each chunk's address
//! ```
//! Regions are interleaved so that what a small process touches lies close together: the
//! first slabs of all regions share a few page-table pages (each region 4 GiB from the next
//! cost a page-table page and a middle-level page of its own, copied at every fork).
//! Metadata is packed rather than laid out region by region: a region that starts costs a
//! few kilobytes of metadata beside the others' instead of pages (and page tables) of its
//! own, so a process that touches 40 regions maps a few page-table pages for its metadata,
//! not 80 (every page-table page is copied at each fork).
//!
//! A pointer's class, bucket, slab and slot follow from its address by shifts, masks and one
//! multiply, with no lookup. Region sizes depend on the address space (`Shape`). Address
//! ranges are never reassigned: a region belongs to one (class, bucket) for the life of the
//! process, and freed slabs keep their addresses.
//!
//! Nothing is reserved up front: the two bases are chosen at random (far below the kernel's
//! own mmap area) and each region grows by mapping at its computed address without ever
//! replacing anything. What is not mapped faults like a guard page. This keeps start-up
//! cheap under emulators and address-space limits (`RLIMIT_AS`, valgrind, qemu-user).

use crate::heap::slab::size_class::{ClassInfo, CLASSES, CLASS_COUNT, MAGIC_SHIFT};

/// Bucket slots per class: slot 0 is the pointer-free data bucket, 1..=7 pointer buckets.
pub const BUCKET_SLOTS: usize = 8;
pub const REGION_COUNT: usize = CLASS_COUNT * BUCKET_SLOTS;
/// A region's share of the first two heap rows; at least the largest slab. Row j >= 1
/// has segments of SEG << (j-1) bytes: a region has a segment per doubling of its size
/// (at most 15 mappings), and what a small process uses lies in the first rows, close
/// together.
pub const SEG_SHIFT: u32 = 18;
const SEG: usize = 1 << SEG_SHIFT;
/// Segments per row, a power of two for decoding by shifts: per bucket, CLASS_SLOTS of
/// them (CLASS_COUNT used), so the classes of a bucket lie side by side (a process uses
/// most classes of a few buckets: they share page-table pages).
const CLASS_SLOTS: usize = 64;
const ROW_BITS: u32 = 9;
const _: () = assert!(CLASS_COUNT <= CLASS_SLOTS && BUCKET_SLOTS * CLASS_SLOTS == 1 << ROW_BITS);
/// Bytes of heap row 0.
const ROW0: usize = 1 << (SEG_SHIFT + ROW_BITS);

/// The segment size (log 2) of the row that heap offset `off` lies in.
#[inline(always)]
const fn seg_shift_at(off: usize) -> u32 {
    usize::BITS - 1 - (off | ROW0).leading_zeros() - ROW_BITS
}

/// The (class, bucket) slot of the segment heap offset `off` lies in (a class of
/// CLASS_COUNT or more: one of the unused slots).
#[inline(always)]
const fn class_bucket_at(off: usize) -> (usize, usize) {
    let seg = (off >> seg_shift_at(off)) & ((1 << ROW_BITS) - 1);
    (seg & (CLASS_SLOTS - 1), seg / CLASS_SLOTS)
}

/// The region-linear start of the segment holding region-linear byte `lin`.
#[inline(always)]
const fn segment_start(lin: usize) -> usize {
    if lin < SEG {
        0
    } else {
        1 << (usize::BITS - 1 - lin.leading_zeros())
    }
}

/// The length of the segment holding region-linear byte `lin`.
#[inline(always)]
const fn segment_len(lin: usize) -> usize {
    if lin < SEG {
        SEG
    } else {
        segment_start(lin)
    }
}
/// The least gap at a segment's end: the largest page size (arm64 64 KiB pages).
const SEG_GAP_MIN: usize = 64 << 10;
/// Heap bytes per metadata chunk (one table entry): a granule of the heap's address range,
/// inside one segment (segments are multiples of it), so it belongs to one region.
pub const GRANULE_SHIFT: u32 = SEG_SHIFT;
const GRANULE_MASK: usize = (1 << GRANULE_SHIFT) - 1;
/// Unmapped bytes between the chunks (growing down) and the chunk table (the largest page).
const META_TABLE_GUARD: usize = 64 << 10;

/// The heap offsets whose chunk-table entries are mapped: the table is mapped from its start
/// as far as the rows in use reach (`meta::chunk_for`), so a process reserves table space
/// in proportion to what it uses. Only grows; stored (Release) after the mapping.
static TABLE_SPAN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// See `TABLE_SPAN`.
#[inline(always)]
pub fn table_span() -> usize {
    TABLE_SPAN.load(core::sync::atomic::Ordering::Acquire)
}

/// The table is mapped for heap offsets below `span` (under the metadata arena's lock).
pub fn set_table_span(span: usize) {
    TABLE_SPAN.store(span, core::sync::atomic::Ordering::Release);
}

/// How big the regions are, chosen at start-up for the address space the process has.
///
/// - `LARGE` (47/48-bit user address space, x86-64 and most arm64 kernels): 4 GiB per
///   (class, bucket) region, 2 TiB of heap and 384 GiB of metadata addresses, based at
///   random in [16, 24) TiB and [32, 40) TiB.
/// - `SMALL` (39 to 46 bits, e.g. arm64 kernels with 3-level 4 KiB page tables: 512 GiB):
///   256 MiB per region, 128 GiB of heap and 24 GiB of metadata addresses, based at random in
///   [64, 256) GiB and [256, 320) GiB.
///
/// Nothing is mapped up front either way; only the addresses are set aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub region_shift: u32,
    heap_window: (usize, usize),
    meta_window: (usize, usize),
    /// Where large blocks get their addresses (`large/window.rs`).
    pub large_window: (usize, usize),
}

impl Shape {
    pub const LARGE: Shape = Shape {
        region_shift: 32,
        heap_window: (16 << 40, 24 << 40),
        meta_window: (32 << 40, 40 << 40),
        large_window: (2 << 40, 14 << 40),
    };
    pub const SMALL: Shape = Shape {
        region_shift: 28,
        heap_window: (64 << 30, 256 << 30),
        meta_window: (256 << 30, 320 << 30),
        large_window: (8 << 30, 64 << 30),
    };

    #[inline(always)]
    pub const fn region_size(&self) -> usize {
        1 << self.region_shift
    }
    /// The metadata reservation per region is a quarter of a heap region (per-slab
    /// metadata is < 1/6 of a slab); the regions share it.
    #[inline(always)]
    pub const fn meta_region_shift(&self) -> u32 {
        self.region_shift - 2
    }
    /// Rows of all segment slots, REGION_COUNT of them used.
    #[inline(always)]
    pub const fn heap_size(&self) -> usize {
        1 << (self.region_shift + ROW_BITS)
    }
    #[inline(always)]
    pub const fn meta_size(&self) -> usize {
        REGION_COUNT << self.meta_region_shift()
    }

    /// Random heap and metadata bases (region aligned) inside the shape's windows.
    pub fn choose_bases(&self, r: u64) -> (usize, usize) {
        let heap_slots = (self.heap_window.1 - self.heap_window.0 - self.heap_size()) >> self.region_shift;
        let meta_slots = (self.meta_window.1 - self.meta_window.0 - self.meta_size()) >> self.meta_region_shift();
        let heap = self.heap_window.0 + (((r as usize) % heap_slots) << self.region_shift);
        let meta = self.meta_window.0 + ((((r >> 32) as usize) % meta_slots) << self.meta_region_shift());
        (heap, meta)
    }

    /// The highest address this shape may use.
    fn top(&self) -> usize {
        self.meta_window.1
    }
}

/// Pick the shape the address space allows: the large one if its highest address can be
/// mapped, else the small one. Probes with one inaccessible page, unmapped at once.
pub fn init_shape() -> Shape {
    let page = crate::platform::page_size();
    let fits = |s: &Shape| {
        let at = (s.top() - page) as *mut u8;
        let ok = crate::platform::map_at_none(at, page);
        if ok {
            crate::platform::release(at, page);
        }
        ok
    };
    if fits(&Shape::LARGE) {
        Shape::LARGE
    } else {
        Shape::SMALL
    }
}

/// Where a small-block pointer lives, decoded from its address alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub region: usize,
    pub class: usize,
    pub bucket: usize,
    pub slab: usize,
    pub slot: usize,
    /// Byte offset of the pointer from the start of its slot (0 for a block start).
    pub interior: usize,
}

impl Loc {
    /// The start of `slot` in `slab` of `region`.
    pub const fn at_slot(region: usize, slab: usize, slot: usize) -> Loc {
        Loc { region, class: region / BUCKET_SLOTS, bucket: region % BUCKET_SLOTS, slab, slot, interior: 0 }
    }
}

#[inline(always)]
pub const fn region_of(class: usize, bucket: usize) -> usize {
    class * BUCKET_SLOTS + bucket
}

/// The slot of a slot address of class `k` in its slab (a multiply, no division; slabs are
/// aligned to their size).
#[inline(always)]
pub fn slot_of(k: &ClassInfo, p: usize) -> usize {
    let in_slab = (p & k.slab_mask as usize) as u64;
    ((in_slab * k.magic) >> MAGIC_SHIFT) as usize
}


/// The two reservations and the region shape, fixed at start-up and passed around by
/// reference: every address computation is shifts and masks of these.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub heap_base: usize,
    pub meta_base: usize,
    pub region_shift: u32,
    /// The address window of large blocks.
    pub large_window: (usize, usize),
    /// Precomputed from the above, so that decoding is loads, masks and one multiply.
    heap_span: usize,
    /// The chunk table: an entry per heap granule. Its start (the first rows' granules)
    /// lies half-way into a 2 MiB page-table page that the first chunks, below it, share.
    meta_table: usize,
    /// Where metadata chunks end: they are carved downward from here.
    pub meta_chunks_top: usize,
    track_span: usize,
}

impl Geometry {
    pub const NONE: Geometry = Geometry {
        heap_base: 0,
        meta_base: 0,
        region_shift: 0,
        large_window: (0, 0),
        heap_span: 0,
        meta_table: 0,
        meta_chunks_top: 0,
        track_span: 0,
    };

    pub fn new(shape: Shape, heap_base: usize, meta_base: usize) -> Self {
        let heap_span = shape.heap_size();
        Geometry {
            heap_base,
            meta_base,
            region_shift: shape.region_shift,
            large_window: shape.large_window,
            heap_span,
            meta_table: meta_base + Self::meta_table_off(shape),
            meta_chunks_top: meta_base + Self::meta_table_off(shape) - META_TABLE_GUARD,
            track_span: (heap_base + heap_span).saturating_sub(shape.large_window.0),
        }
    }

    /// Bytes of the metadata chunk table: an address per heap granule.
    pub const fn table_bytes(shape: Shape) -> usize {
        Self::table_len(shape.heap_size())
    }
    const fn table_len(heap_size: usize) -> usize {
        (heap_size >> GRANULE_SHIFT) * 8
    }
    /// Where the chunk table starts in the metadata reservation: at its top, 1 MiB into a
    /// 2 MiB page.
    const fn meta_table_off(shape: Shape) -> usize {
        shape.meta_size() - Self::table_bytes(shape).next_multiple_of(2 << 20) - (1 << 20)
    }
    /// The chunk table's address and length.
    pub fn meta_table(&self) -> (usize, usize) {
        (self.meta_table, Self::table_len(self.heap_span))
    }

    #[inline(always)]
    pub const fn region_size(&self) -> usize {
        1 << self.region_shift
    }
    #[inline(always)]
    pub const fn meta_region_shift(&self) -> u32 {
        self.region_shift - 2
    }
    #[inline(always)]
    pub const fn heap_size(&self) -> usize {
        self.heap_span
    }
    #[inline(always)]
    pub const fn meta_size(&self) -> usize {
        REGION_COUNT << self.meta_region_shift()
    }
    #[inline(always)]
    pub fn max_slabs(&self, k: &ClassInfo) -> usize {
        self.region_size() >> k.slab_shift
    }

    /// Whether `slab` is the first of its segment: the bytes before it are another
    /// region's (its segment's end, a gap).
    #[inline(always)]
    pub const fn first_in_segment(k: &ClassInfo, slab: usize) -> bool {
        let lin = slab << k.slab_shift;
        lin == segment_start(lin)
    }

    /// Bytes at the end of a segment of `len` bytes of class `k` that no slab uses: never
    /// mapped, so a run past a segment's last slab faults before it reaches the next
    /// region. At least a slab and the largest page (64 KiB); none in a segment of one slab
    /// (its classes leave an unmapped gap inside each slab).
    #[inline(always)]
    pub const fn segment_gap(k: &ClassInfo, len: usize) -> usize {
        let slab = 1usize << k.slab_shift;
        if slab == len {
            0
        } else if slab > SEG_GAP_MIN {
            slab
        } else {
            SEG_GAP_MIN
        }
    }

    /// Whether `slab` lies in the gap at the end of its segment (made, never mapped).
    #[inline(always)]
    pub const fn is_gap(k: &ClassInfo, slab: usize) -> bool {
        let lin = slab << k.slab_shift;
        let len = segment_len(lin);
        lin - segment_start(lin) >= len - Self::segment_gap(k, len)
    }

    /// Usable slabs in a region's first segment.
    #[inline(always)]
    pub const fn usable_in_first_segment(k: &ClassInfo) -> usize {
        (SEG - Self::segment_gap(k, SEG)) >> k.slab_shift
    }

    /// Where, in region-linear bytes, the usable part of the segment holding `slab` ends.
    #[inline(always)]
    pub const fn segment_usable_end(k: &ClassInfo, slab: usize) -> usize {
        let lin = slab << k.slab_shift;
        let len = segment_len(lin);
        segment_start(lin) + len - Self::segment_gap(k, len)
    }

    /// Where, in region-linear bytes, the segment holding `slab` starts.
    #[inline(always)]
    pub const fn segment_start_of(k: &ClassInfo, slab: usize) -> usize {
        segment_start(slab << k.slab_shift)
    }

    /// Is `addr` (untagged) inside the heap's address range (mapped or not)?
    #[inline(always)]
    pub fn holds_heap(&self, addr: usize) -> bool {
        self.heap_base != 0 && addr.wrapping_sub(self.heap_base) < self.heap_size()
    }

    /// Is `addr` (untagged) anywhere in the memory mie hands out: large blocks, guarded
    /// samples and zero-size blocks (all in the large-block window) or the heap? One
    /// compare; false before initialisation.
    #[inline(always)]
    pub fn tracks(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.large_window.0) < self.track_span
    }

    /// Is `addr` (untagged) inside the metadata's address range (mapped or not)?
    pub fn holds_meta(&self, addr: usize) -> bool {
        self.meta_base != 0 && addr.wrapping_sub(self.meta_base) < self.meta_size()
    }

    /// Decode an (untagged) address. `None` if it is outside the heap.
    #[inline(always)]
    pub fn decode(&self, p: usize) -> Option<Loc> {
        let off = p.wrapping_sub(self.heap_base);
        let (class, bucket) = class_bucket_at(off);
        if off >= self.heap_span || class >= CLASS_COUNT {
            return None;
        }
        // SAFETY: class < CLASS_COUNT.
        let k = unsafe { CLASSES.get_unchecked(class) };
        let slab = Self::linear(off) >> k.slab_shift;
        let in_slab = (off & k.slab_mask as usize) as u64;
        let slot = ((in_slab * k.magic) >> MAGIC_SHIFT) as usize;
        let interior = in_slab as usize - slot * k.size as usize;
        Some(Loc { region: region_of(class, bucket), class, bucket, slab, slot, interior })
    }

    /// An offset in the heap as an offset in its region (its segments end to end).
    #[inline(always)]
    const fn linear(off: usize) -> usize {
        let sh = seg_shift_at(off);
        (((off >= ROW0) as usize) << sh) | (off & ((1 << sh) - 1))
    }

    /// The region of a slot address known to be in the heap.
    #[inline(always)]
    pub fn region_of_addr(&self, p: usize) -> usize {
        let (class, bucket) = class_bucket_at(p - self.heap_base);
        region_of(class, bucket)
    }

    /// The slab of `region` (class `k`) that holds the heap address `p`.
    #[inline(always)]
    pub fn slab_of(&self, k: &ClassInfo, p: usize) -> usize {
        Self::linear(p - self.heap_base) >> k.slab_shift
    }

    /// The address of byte `lin` of `region`'s segments taken end to end.
    #[inline(always)]
    pub fn region_addr(&self, region: usize, lin: usize) -> usize {
        let seg = (region % BUCKET_SLOTS) * CLASS_SLOTS + region / BUCKET_SLOTS;
        // Row 0 holds region-linear bytes [0, SEG) in segments of SEG bytes; row j >= 1
        // holds [SEG << (j-1), SEG << j) in segments of SEG << (j-1) bytes, from heap offset
        // 512 segments of that size. (Without a branch: row 0's shift is SEG_SHIFT too.)
        let sh = usize::BITS - 1 - (lin | SEG).leading_zeros();
        let past_row0 = ((lin >= SEG) as usize) * ((1 << ROW_BITS) - 1);
        self.heap_base + ((past_row0 + seg) << sh) + lin
    }

    #[inline(always)]
    pub fn slab_base(&self, region: usize, slab: usize) -> usize {
        // SAFETY-free indexing: callers pass region < REGION_COUNT.
        let k = &CLASSES[region / BUCKET_SLOTS];
        self.region_addr(region, slab << k.slab_shift)
    }

    #[inline(always)]
    pub fn slot_addr(&self, region: usize, slab: usize, slot: usize) -> usize {
        self.slab_base(region, slab) + slot * CLASSES[region / BUCKET_SLOTS].size as usize
    }

    /// The chunk table's entry for the heap granule holding `p`: the address of the
    /// metadata of the granule's first slab, and the granule's region above it
    /// (`meta::entry_chunk`; 0: no chunk yet).
    #[inline(always)]
    pub fn meta_entry(&self, p: usize) -> &core::sync::atomic::AtomicUsize {
        let at = self.meta_table + 8 * ((p - self.heap_base) >> GRANULE_SHIFT);
        // SAFETY: p is in the heap below `table_span()` (a slab's address, or checked by
        // `SlabMeta::block_at`), so the entry is inside the mapped part of the table, never unmapped.
        unsafe { &*(at as *const core::sync::atomic::AtomicUsize) }
    }

    /// Address of the metadata of the slab of class `k` that holds the heap address `p`;
    /// the slab exists (its chunk's entry was published before the slab was: `pool.rs`,
    /// Release of the slab range).
    #[inline(always)]
    pub fn meta_of_addr(&self, k: &ClassInfo, p: usize) -> usize {
        crate::heap::slab::meta::entry_chunk(self.meta_entry(p).load(core::sync::atomic::Ordering::Relaxed)) + self.slab_in_granule(k, p) * k.meta_stride as usize
    }

    /// The index in its heap granule of the slab of class `k` holding `p`.
    #[inline(always)]
    pub fn slab_in_granule(&self, k: &ClassInfo, p: usize) -> usize {
        (p & GRANULE_MASK) >> k.slab_shift
    }

    /// Address of the metadata of `slab` in `region` (class `k`), which exists.
    #[inline(always)]
    pub fn slab_meta_addr(&self, k: &ClassInfo, region: usize, slab: usize) -> usize {
        self.meta_of_addr(k, self.slab_base(region, slab))
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPES: [Shape; 2] = [Shape::LARGE, Shape::SMALL];

    #[test]
    fn metadata_fits_its_reservation() {
        for sh in SHAPES {
            let g = Geometry::new(sh, sh.heap_window.0, sh.meta_window.0);
            let (table, len) = g.meta_table();
            assert_eq!(len, Geometry::table_bytes(sh));
            assert!(table + len <= g.meta_base + sh.meta_size());
            assert_eq!(g.meta_chunks_top + META_TABLE_GUARD, table);
            // Every region's slabs' metadata, packed, fits below the table.
            let all: usize = CLASSES.iter().map(|k| BUCKET_SLOTS * g.max_slabs(k) * k.meta_stride as usize).sum();
            assert!(g.meta_base + all <= g.meta_chunks_top, "{sh:?}");
            // The table's first page and the first chunks share a 2 MiB page-table page.
            assert_eq!(table >> 21, (g.meta_chunks_top - (512 << 10)) >> 21);
            // Each granule lies in one segment of one region.
            for k in CLASSES.iter() {
                assert!(1 << k.slab_shift <= 1 << GRANULE_SHIFT);
            }
        }
    }

    #[test]
    fn decode_inverts_slot_addr() {
        for sh in SHAPES {
            let base = sh.heap_window.0;
            let mut seed = 7u64;
            for _ in 0..100_000 {
                seed = crate::rand::mix64(seed);
                let region = (seed % REGION_COUNT as u64) as usize;
                let k = &CLASSES[region / BUCKET_SLOTS];
                let slab = ((seed >> 20) as usize) % (sh.region_size() >> k.slab_shift);
                let slot = ((seed >> 40) as usize) % k.nslots as usize;
                let g = Geometry::new(sh, base, 0);
                let p = g.slot_addr(region, slab, slot);
                let l = g.decode(p).unwrap();
                assert_eq!((l.region, l.slab, l.slot, l.interior), (region, slab, slot, 0));
                assert_eq!((l.class, l.bucket), (region / BUCKET_SLOTS, region % BUCKET_SLOTS));
                // Every interior byte decodes to the same slot with its offset.
                let d = ((seed >> 8) as usize) % k.size as usize;
                let l2 = g.decode(p + d).unwrap();
                assert_eq!((l2.region, l2.slab, l2.slot, l2.interior), (region, slab, slot, d));
            }
            let g = Geometry::new(sh, base, 0);
            assert_eq!(g.decode(base - 1), None);
            assert_eq!(g.decode(base + sh.heap_size()), None);
        }
    }

    #[test]
    fn bases_are_aligned_disjoint_and_in_range() {
        for (sh, va_bits) in [(Shape::LARGE, 47), (Shape::SMALL, 39)] {
            let mut r = 1u64;
            for _ in 0..10_000 {
                r = crate::rand::mix64(r);
                let (h, m) = sh.choose_bases(r);
                assert_eq!(h % sh.region_size(), 0);
                assert_eq!(m % (1 << sh.meta_region_shift()), 0);
                assert!(h >= sh.heap_window.0 && h + sh.heap_size() <= sh.heap_window.1);
                assert!(m >= sh.meta_window.0 && m + sh.meta_size() <= sh.meta_window.1);
                assert!(h + sh.heap_size() <= m, "heap and metadata overlap");
                assert!(m + sh.meta_size() < 1 << va_bits, "{sh:?} leaves a {va_bits}-bit address space");
                // The large-block window is below both, and above the first 4 GiB.
                assert!(sh.large_window.0 >= 4 << 30 && sh.large_window.1 <= sh.heap_window.0);
            }
        }
    }

    #[test]
    fn regions_never_overlap() {
        // Property: the address ranges of distinct (class, bucket) pairs are disjoint, so an
        // address can never change owner: every byte of a region's segments decodes to it
        // with its region-linear offset, and segments double in size row by row.
        for sh in SHAPES {
            let g = Geometry::new(sh, sh.heap_window.0, 0);
            let mut lins = vec![0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG - 1, 2 * SEG, 3 * SEG + 5, 4 * SEG, sh.region_size() / 2 - 1, sh.region_size() / 2, sh.region_size() - 1];
            let mut seed = 3u64;
            for _ in 0..200 {
                seed = crate::rand::mix64(seed);
                lins.push(seed as usize % sh.region_size());
            }
            let mut seen = std::collections::HashSet::new();
            for r in 0..REGION_COUNT {
                let k = &CLASSES[r / BUCKET_SLOTS];
                for &lin in &lins {
                    let a = g.region_addr(r, lin);
                    assert!(a >= g.heap_base && a < g.heap_base + g.heap_size());
                    assert!(seen.insert(a), "two regions share {a:#x}");
                    let l = g.decode(a).unwrap();
                    assert_eq!((l.region, l.slab), (r, lin >> k.slab_shift), "{sh:?} region {r} lin {lin:#x}");
                    assert_eq!(g.region_of_addr(a), r);
                    assert_eq!(g.slab_of(k, a), lin >> k.slab_shift);
                    // Within a segment, addresses are contiguous.
                    let s = segment_start(lin);
                    assert_eq!(g.region_addr(r, s) + (lin - s), a);
                }
                let usable = Geometry::usable_in_first_segment(k);
                assert!(usable >= 1);
                assert!((0..usable).all(|s| !Geometry::is_gap(k, s)));
                assert!(Geometry::is_gap(k, usable) || (1 << k.slab_shift) == SEG);
                // Every segment ends with a gap of at least 64 KiB and a slab, unless it is one slab.
                for seg_lin in [SEG, 2 * SEG, 8 * SEG] {
                    let last = ((2 * seg_lin) >> k.slab_shift) - 1;
                    assert!((Geometry::is_gap(k, last) || 1 << k.slab_shift == seg_lin) && Geometry::first_in_segment(k, last + 1));
                    assert!(!Geometry::is_gap(k, seg_lin >> k.slab_shift) && Geometry::first_in_segment(k, seg_lin >> k.slab_shift));
                    assert_eq!(Geometry::segment_usable_end(k, last), 2 * seg_lin - Geometry::segment_gap(k, seg_lin));
                }
                assert!(!Geometry::first_in_segment(k, 1) || (1 << k.slab_shift) == SEG);
            }
            // The unused slots of a row decode to nothing.
            assert_eq!(g.decode(g.heap_base + (CLASS_COUNT << SEG_SHIFT)), None);
            assert_eq!(g.decode(g.heap_base + ROW0 - 1), None);
            assert!(g.decode(g.heap_base + ROW0).is_some());
        }
    }
}
