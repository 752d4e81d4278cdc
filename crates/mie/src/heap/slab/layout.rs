//! Address layout: one reservation for all slab memory, one (far away) for metadata.
//!
//! ```text
//! heap:  | region (class 0, bucket 0) | region (class 0, bucket 1) | ... | region (47, 7) |
//!          each region: 4 GiB (256 MiB in a 39-bit address space), slabs of 2^slab_shift
//!          bytes from a random first slab upward
//! meta:  | chunk table | guard | chunks of slab metadata, packed in the order regions grow |
//!          a chunk holds the metadata of 256 consecutive slabs of one region; the table
//!          (row = slab / 256, column = region) gives each chunk's address
//! ```
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

use crate::heap::slab::size_class::{ClassInfo, CLASSES, CLASS_COUNT, MAGIC_SHIFT, MIN_SLAB_SHIFT};

/// Bucket slots per class: slot 0 is the pointer-free data bucket, 1..=7 pointer buckets.
pub const BUCKET_SLOTS: usize = 8;
pub const REGION_COUNT: usize = CLASS_COUNT * BUCKET_SLOTS;
/// Slabs per metadata chunk (one table entry).
pub const META_CHUNK_SHIFT: u32 = 8;
pub const META_CHUNK_SLABS: usize = 1 << META_CHUNK_SHIFT;
/// Unmapped bytes between the chunk table and the first chunk.
const META_TABLE_GUARD: usize = 1 << 20;

/// How big the regions are, chosen at start-up for the address space the process has.
///
/// - `LARGE` (47/48-bit user address space, x86-64 and most arm64 kernels): 4 GiB per
///   (class, bucket) region, 1.5 TiB of heap and 384 GiB of metadata addresses, based at
///   random in [16, 24) TiB and [32, 40) TiB.
/// - `SMALL` (39 to 46 bits, e.g. arm64 kernels with 3-level 4 KiB page tables: 512 GiB):
///   256 MiB per region, 96 GiB of heap and 24 GiB of metadata addresses, based at random in
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
    #[inline(always)]
    pub const fn heap_size(&self) -> usize {
        REGION_COUNT << self.region_shift
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

#[inline(always)]
pub const fn region_of(class: usize, bucket: usize) -> usize {
    class * BUCKET_SLOTS + bucket
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
    region_mask: usize,
    /// Where metadata chunks start (after the chunk table at `meta_base` and a guard).
    pub meta_chunks: usize,
    track_span: usize,
}

impl Geometry {
    pub const NONE: Geometry = Geometry {
        heap_base: 0,
        meta_base: 0,
        region_shift: 0,
        large_window: (0, 0),
        heap_span: 0,
        region_mask: 0,
        meta_chunks: 0,
        track_span: 0,
    };

    pub fn new(shape: Shape, heap_base: usize, meta_base: usize) -> Self {
        let heap_span = REGION_COUNT << shape.region_shift;
        Geometry {
            heap_base,
            meta_base,
            region_shift: shape.region_shift,
            large_window: shape.large_window,
            heap_span,
            region_mask: (1 << shape.region_shift) - 1,
            meta_chunks: meta_base + Self::table_bytes(shape.region_shift).next_multiple_of(META_TABLE_GUARD) + META_TABLE_GUARD,
            track_span: (heap_base + heap_span).saturating_sub(shape.large_window.0),
        }
    }

    /// Bytes of the metadata chunk table: a row of REGION_COUNT addresses per
    /// META_CHUNK_SLABS slabs of the class with the most slabs per region.
    pub const fn table_bytes(region_shift: u32) -> usize {
        Self::table_rows(region_shift) * REGION_COUNT * 8
    }
    const fn table_rows(region_shift: u32) -> usize {
        ((1usize << region_shift) >> MIN_SLAB_SHIFT).div_ceil(META_CHUNK_SLABS)
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
        if off >= self.heap_span {
            return None;
        }
        let region = off >> self.region_shift;
        let class = region / BUCKET_SLOTS;
        // SAFETY: region < REGION_COUNT, so class < CLASS_COUNT.
        let k = unsafe { CLASSES.get_unchecked(class) };
        let in_region = off & self.region_mask;
        let slab = in_region >> k.slab_shift;
        let in_slab = (in_region & k.slab_mask as usize) as u64;
        let slot = ((in_slab * k.magic) >> MAGIC_SHIFT) as usize;
        let interior = in_slab as usize - slot * k.size as usize;
        Some(Loc { region, class, bucket: region % BUCKET_SLOTS, slab, slot, interior })
    }

    /// The region of a slot address known to be in the heap.
    #[inline(always)]
    pub fn region_of_addr(&self, p: usize) -> usize {
        (p - self.heap_base) >> self.region_shift
    }

    #[inline(always)]
    pub fn slab_base(&self, region: usize, slab: usize) -> usize {
        // SAFETY-free indexing: callers pass region < REGION_COUNT.
        let k = &CLASSES[region / BUCKET_SLOTS];
        self.heap_base + (region << self.region_shift) + (slab << k.slab_shift)
    }

    #[inline(always)]
    pub fn slot_addr(&self, region: usize, slab: usize, slot: usize) -> usize {
        self.slab_base(region, slab) + slot * CLASSES[region / BUCKET_SLOTS].size as usize
    }

    /// The chunk table's entry for `slab` of `region`: the address the chunk's slab 0
    /// would have (a region's first chunk starts at its first slab, so it points below).
    #[inline(always)]
    pub fn meta_entry(&self, region: usize, slab: usize) -> &core::sync::atomic::AtomicUsize {
        let i = (slab >> META_CHUNK_SHIFT) * REGION_COUNT + region;
        // SAFETY: slab < max_slabs and region < REGION_COUNT: inside the table, which is
        // mapped before any slab exists (`meta::chunk_for`) and never unmapped.
        unsafe { &*((self.meta_base + 8 * i) as *const core::sync::atomic::AtomicUsize) }
    }

    /// Address of the metadata of `slab` in `region` (class `k`), which exists: its chunk's
    /// entry was published before the slab was (`pool.rs`, Release of the slab range).
    #[inline(always)]
    pub fn slab_meta_addr(&self, k: &ClassInfo, region: usize, slab: usize) -> usize {
        self.meta_entry(region, slab).load(core::sync::atomic::Ordering::Relaxed) + (slab & (META_CHUNK_SLABS - 1)) * k.meta_stride as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPES: [Shape; 2] = [Shape::LARGE, Shape::SMALL];

    #[test]
    fn metadata_fits_its_reservation() {
        for sh in SHAPES {
            let g = Geometry::new(sh, 0, sh.meta_window.0);
            // The table has a row for every chunk of the class with the most slabs.
            for k in CLASSES.iter() {
                let rows = g.max_slabs(k).div_ceil(META_CHUNK_SLABS);
                assert!(rows * REGION_COUNT * 8 <= Geometry::table_bytes(sh.region_shift));
            }
            // Every region's slabs' metadata, packed, fits after the table.
            let all: usize = CLASSES.iter().map(|k| BUCKET_SLOTS * g.max_slabs(k) * k.meta_stride as usize).sum();
            assert!(g.meta_chunks - g.meta_base + all <= sh.meta_size(), "{sh:?}");
            assert!(g.meta_chunks >= g.meta_base + Geometry::table_bytes(sh.region_shift) + META_TABLE_GUARD);
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
        // address can never change owner.
        for sh in SHAPES {
            let rs = sh.region_shift;
            let g = Geometry::new(sh, 0, 0);
            for r in 0..REGION_COUNT {
                let k = &CLASSES[r / BUCKET_SLOTS];
                let last = g.slot_addr(r, (sh.region_size() >> k.slab_shift) - 1, k.nslots as usize - 1) + k.size as usize - 1;
                assert_eq!(last >> rs, r);
                assert_eq!(g.slot_addr(r, 0, 0) >> rs, r);
            }
        }
    }
}
