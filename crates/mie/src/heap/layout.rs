//! Address layout: one reservation for all slab memory, one (far away) for metadata.
//!
//! ```text
//! heap:  | region (class 0, bucket 0) | region (class 0, bucket 1) | ... | region (47, 7) |
//!          each region: 4 GiB, slabs of 2^slab_shift bytes from a random first slab upward
//! meta:  | meta region (0,0) | meta region (0,1) | ...                                   |
//!          each meta region: 1 GiB: partial-slab list, guard, then per-slab metadata
//! ```
//! A pointer's class, bucket, slab and slot follow from its address by shifts, masks and one
//! multiply, with no lookup. Address ranges are never reassigned: a region belongs to one
//! (class, bucket) for the life of the process, and freed slabs keep their addresses.
//!
//! Nothing is reserved up front: the two bases are chosen at random (far below the kernel's
//! own mmap area) and each region grows by mapping at its computed address without ever
//! replacing anything. What is not mapped faults like a guard page. This keeps start-up
//! cheap under emulators and address-space limits (`RLIMIT_AS`, valgrind, qemu-user).

use super::size_class::{ClassInfo, CLASSES, CLASS_COUNT, MAGIC_SHIFT};

/// Bucket slots per class: slot 0 is the pointer-free data bucket, 1..=7 pointer buckets.
pub const BUCKET_SLOTS: usize = 8;
pub const REGION_SHIFT: u32 = 32;
pub const REGION_SIZE: usize = 1 << REGION_SHIFT;
pub const REGION_COUNT: usize = CLASS_COUNT * BUCKET_SLOTS;
pub const HEAP_SIZE: usize = REGION_COUNT << REGION_SHIFT;

pub const META_REGION_SHIFT: u32 = 30;
pub const META_SIZE: usize = REGION_COUNT << META_REGION_SHIFT;
/// Slab metadata starts here inside a meta region; below it sits the partial-slab list
/// (at most 2^18 slabs × 4 bytes = 1 MiB) and at least one MiB of guard.
pub const META_SLABS_OFF: usize = 2 << 20;

/// Bases are drawn from [LOW, LOW + SPAN) (heap) and [LOW + 2*SPAN, LOW + 3*SPAN) (metadata):
/// 16 TiB and up, below the 47-bit top where the kernel places mappings by default.
const BASE_LOW: usize = 1 << 44;
const BASE_SPAN: usize = 8 << 40;

/// Random heap and metadata bases (4 GiB and 1 GiB aligned) from a random word.
pub fn choose_bases(r: u64) -> (usize, usize) {
    let heap_slots = (BASE_SPAN - HEAP_SIZE) / REGION_SIZE;
    let meta_slots = (BASE_SPAN - META_SIZE) >> META_REGION_SHIFT;
    let heap = BASE_LOW + ((r as usize) % heap_slots) * REGION_SIZE;
    let meta = BASE_LOW + 2 * BASE_SPAN + ((((r >> 32) as usize) % meta_slots) << META_REGION_SHIFT);
    (heap, meta)
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

#[inline]
pub const fn region_of(class: usize, bucket: usize) -> usize {
    class * BUCKET_SLOTS + bucket
}

#[inline]
pub fn max_slabs(k: &ClassInfo) -> usize {
    REGION_SIZE >> k.slab_shift
}

/// Decode an address relative to the heap base. `None` if it is outside the heap.
#[inline]
pub fn decode(heap_base: usize, p: usize) -> Option<Loc> {
    let off = p.wrapping_sub(heap_base);
    if off >= HEAP_SIZE {
        return None;
    }
    let region = off >> REGION_SHIFT;
    let class = region / BUCKET_SLOTS;
    // SAFETY-free indexing: region < REGION_COUNT so class < CLASS_COUNT.
    let k = &CLASSES[class];
    let in_region = off & (REGION_SIZE - 1);
    let slab = in_region >> k.slab_shift;
    let in_slab = (in_region & ((1usize << k.slab_shift) - 1)) as u64;
    let slot = ((in_slab * k.magic) >> MAGIC_SHIFT) as usize;
    let interior = in_slab as usize - slot * k.size as usize;
    Some(Loc { region, class, bucket: region % BUCKET_SLOTS, slab, slot, interior })
}

#[inline]
pub fn slot_addr(heap_base: usize, region: usize, slab: usize, slot: usize) -> usize {
    let k = &CLASSES[region / BUCKET_SLOTS];
    heap_base + (region << REGION_SHIFT) + (slab << k.slab_shift) + slot * k.size as usize
}

#[inline]
pub fn slab_meta_addr(meta_base: usize, region: usize, slab: usize) -> usize {
    let k = &CLASSES[region / BUCKET_SLOTS];
    meta_base + (region << META_REGION_SHIFT) + META_SLABS_OFF + slab * k.meta_stride as usize
}

#[inline]
pub fn partial_list_addr(meta_base: usize, region: usize) -> usize {
    meta_base + (region << META_REGION_SHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_fits_its_region() {
        for k in CLASSES.iter() {
            let n = max_slabs(k);
            assert!(n * 4 <= META_SLABS_OFF / 2, "partial list overflows into guard");
            assert!(META_SLABS_OFF + n * k.meta_stride as usize <= 1 << META_REGION_SHIFT);
        }
    }

    #[test]
    fn decode_inverts_slot_addr() {
        let base = 1usize << 44;
        let mut seed = 7u64;
        for _ in 0..200_000 {
            seed = crate::rand::mix64(seed);
            let region = (seed % REGION_COUNT as u64) as usize;
            let k = &CLASSES[region / BUCKET_SLOTS];
            let slab = ((seed >> 20) as usize) % max_slabs(k);
            let slot = ((seed >> 40) as usize) % k.nslots as usize;
            let p = slot_addr(base, region, slab, slot);
            let l = decode(base, p).unwrap();
            assert_eq!((l.region, l.slab, l.slot, l.interior), (region, slab, slot, 0));
            assert_eq!((l.class, l.bucket), (region / BUCKET_SLOTS, region % BUCKET_SLOTS));
            // Every interior byte decodes to the same slot with its offset.
            let d = ((seed >> 8) as usize) % k.size as usize;
            let l2 = decode(base, p + d).unwrap();
            assert_eq!((l2.region, l2.slab, l2.slot, l2.interior), (region, slab, slot, d));
        }
        assert_eq!(decode(base, base - 1), None);
        assert_eq!(decode(base, base + HEAP_SIZE), None);
    }

    #[test]
    fn bases_are_aligned_disjoint_and_in_range() {
        let mut r = 1u64;
        for _ in 0..10_000 {
            r = crate::rand::mix64(r);
            let (h, m) = choose_bases(r);
            assert_eq!(h % REGION_SIZE, 0);
            assert_eq!(m % (1 << META_REGION_SHIFT), 0);
            assert!(h >= BASE_LOW && h + HEAP_SIZE <= BASE_LOW + BASE_SPAN);
            assert!(m >= BASE_LOW + 2 * BASE_SPAN && m + META_SIZE <= BASE_LOW + 3 * BASE_SPAN);
            assert!(m + META_SIZE < 1 << 47);
        }
    }

    #[test]
    fn regions_never_overlap() {
        // Property: the address ranges of distinct (class, bucket) pairs are disjoint, so an
        // address can never change owner.
        for r in 0..REGION_COUNT {
            let k = &CLASSES[r / BUCKET_SLOTS];
            let last = slot_addr(0, r, max_slabs(k) - 1, k.nslots as usize - 1) + k.size as usize - 1;
            assert_eq!(last >> REGION_SHIFT, r);
            assert_eq!(slot_addr(0, r, 0, 0) >> REGION_SHIFT, r);
        }
    }
}
