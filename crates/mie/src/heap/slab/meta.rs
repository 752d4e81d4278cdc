//! Slab metadata, out of line in the metadata reservation, one block per slab:
//! ```text
//! header (64 B) | remote-free bitmap (own cache lines) | free bitmap | slot records
//! ```
//! - header: the owning thread cache (0: the slab is in its pool, empty), the "queued"
//!   bit (the slab is on its owner's notification stack), the stack link, and fields only
//!   the owner (or the pool, under its lock) touches: free-slot count, list links, flags;
//! - remote-free bitmap: a bit per slot freed by a thread that does not own the slab,
//!   set with one `fetch_or` and collected by the owner with one `swap` per word;
//! - free bitmap: slots the owner may hand out (owner only, plain stores);
//! - slot records (`record.rs`): state, kind, tag and slack of every slot.
//!
//! Every field is an atomic so that racing readers are well defined; the owner's accesses
//! are relaxed loads and stores, which compile to plain moves.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use crate::heap::slab::layout::{set_table_span, table_span, Geometry, BUCKET_SLOTS, GRANULE_SHIFT};
use crate::platform::{self, lock::Lock};
use crate::heap::slab::record;
use crate::heap::slab::size_class::{ClassInfo, CLASSES, MAGIC_SHIFT};

/// `state` bit: the slab is on its owner's notification stack.
pub const QUEUED: u64 = 1 << 32;

#[repr(C)]
pub struct SlabHeader {
    /// Owner cache id (low 32 bits; 0 = the pool) | QUEUED. Changes of owner and setting
    /// QUEUED are one atomic word, so a notification always reaches the owner it was meant
    /// for, and a slab on a notification stack never changes owner.
    pub state: AtomicU64,
    /// Notification stack link: the next slab id (0: end).
    pub next: AtomicU32,
    /// Owner (or pool): slots in the free bitmap.
    pub nfree: AtomicU32,
    /// Owner's partial list / pool's empty lists: neighbours' slab index + 1 (0: none).
    pub prev: AtomicU32,
    pub link: AtomicU32,
    /// Owner / pool flags.
    pub flags: AtomicU32,
    /// 1 once the slab is made (its bitmaps and records set up; a gap slab never is):
    /// stored with Release before the slab is published, read with Acquire by the free
    /// fast path, which finds a slab by its address alone.
    pub created: AtomicU32,
}

/// Owner flag: the slab is on the owner's partial list of its region.
pub const IN_PARTIAL: u32 = 1;
/// Pool flags: the slab is on the resident (pages kept) or the purged empty list.
pub const RESIDENT: u32 = 2;
pub const PURGED: u32 = 4;
/// Pool flag: the slab is on the pool's partial list (it holds live blocks).
pub const PARTIAL: u32 = 8;

/// A slab's id in notifications: region and slab index in one non-zero u32.
#[inline(always)]
pub const fn slab_id(region: usize, slab: usize) -> u32 {
    ((region << 18) | slab) as u32 + 1
}

#[inline(always)]
pub const fn from_id(id: u32) -> (usize, usize) {
    let v = id as usize - 1;
    (v >> 18, v & ((1 << 18) - 1))
}

/// A chunk-table entry is the address of its granule's metadata chunk with, from bit
/// `ENTRY_REGION` up, the region the granule belongs to (a granule lies in one segment of
/// one region): the free fast path learns class, bucket and metadata from one load.
pub const ENTRY_REGION: u32 = 48;
pub const ENTRY_CHUNK: usize = (1 << ENTRY_REGION) - 1;

/// The chunk address of a chunk-table entry.
#[inline(always)]
pub const fn entry_chunk(entry: usize) -> usize {
    entry & ENTRY_CHUNK
}

/// A slot found by address (`SlabMeta::slot_at`, `block_at`): its metadata, region, class
/// and index, and how far into it the address is.
#[derive(Clone, Copy)]
pub struct SlotAt {
    pub m: SlabMeta,
    pub region: usize,
    pub class: usize,
    pub slot: usize,
    pub interior: usize,
}

impl SlotAt {
    /// The slot's place (for a report); `p` is its address.
    pub fn loc(&self, g: &Geometry, p: usize) -> crate::heap::slab::layout::Loc {
        let k = &CLASSES[self.class];
        crate::heap::slab::layout::Loc { region: self.region, class: self.class, bucket: self.bucket(), slab: g.slab_of(k, p - self.interior), slot: self.slot, interior: self.interior }
    }

    /// The slot's bucket (its region's, without the slab number `loc` works out).
    pub fn bucket(&self) -> usize {
        self.region % BUCKET_SLOTS
    }
}

/// Typed view of one slab's metadata.
#[derive(Clone, Copy)]
pub struct SlabMeta {
    base: usize,
}

impl SlabMeta {
    /// The metadata of `slab` in `region` of class `k`. Only for slabs that exist (their
    /// metadata is committed).
    #[inline(always)]
    pub fn of(g: &Geometry, k: &ClassInfo, region: usize, slab: usize) -> Self {
        SlabMeta { base: g.slab_meta_addr(k, region, slab) }
    }

    /// The metadata of the slab of class `k` that holds the heap address `p` (the slab
    /// exists): one table load, no slab number.
    #[inline(always)]
    pub fn at(g: &Geometry, k: &ClassInfo, p: usize) -> Self {
        SlabMeta { base: g.meta_of_addr(k, p) }
    }

    /// The slot that the heap address `p` is the start of: one chunk-table load gives its
    /// region (so its class) and metadata, one multiply its slot. None for an address
    /// outside the heap part whose table is mapped, in a granule without metadata, inside a
    /// slot or past the last one. The slab may never have been made: see `block_of_record`.
    /// (`Geometry::decode` finds the same place by arithmetic, for any heap address.)
    #[inline(always)]
    pub fn slot_at(g: &Geometry, p: usize) -> Option<SlotAt> {
        Self::block_of_record(g, p).filter(|s| s.interior == 0)
    }

    /// As `slot_at` for any address in a slot (`interior` bytes into it), in a slab that
    /// was made (its header's `created`).
    #[inline(always)]
    pub fn block_at(g: &Geometry, p: usize) -> Option<SlotAt> {
        Self::block_of_record(g, p).filter(|s| s.m.header().created.load(Ordering::Acquire) != 0)
    }

    /// As `block_at` without asking whether the slab was made, for callers that go on only
    /// with a live record: a slab's metadata is committed with its granule's and nothing
    /// writes it before the slab is made, so a slab not made has only zero records, which
    /// are never live. (A live record was written by the thread that handed the block out;
    /// a caller that got the block from it in order reads the slab as made. One that did
    /// not, a wild or racing free, may read a stale record: not live, or one whose
    /// compare-and-swap fails; either goes to the general path, which looks again.)
    #[inline(always)]
    pub fn block_of_record(g: &Geometry, p: usize) -> Option<SlotAt> {
        let off = p.wrapping_sub(g.heap_base);
        if off >= table_span() {
            return None;
        }
        let entry = g.meta_entry(p).load(Ordering::Relaxed);
        if entry == 0 {
            return None;
        }
        let region = entry >> ENTRY_REGION;
        let class = region / BUCKET_SLOTS;
        // SAFETY: a published entry names a region, so class < CLASS_COUNT.
        let k = unsafe { CLASSES.get_unchecked(class) };
        let in_slab = (off & k.slab_mask as usize) as u64;
        let slot = ((in_slab * k.magic) >> MAGIC_SHIFT) as usize;
        if slot >= k.nslots as usize {
            return None;
        }
        let interior = in_slab as usize - slot * k.size as usize;
        let m = SlabMeta { base: entry_chunk(entry) + g.slab_in_granule(k, p) * k.meta_stride as usize };
        Some(SlotAt { m, region, class, slot, interior })
    }

    #[inline(always)]
    pub fn new(g: &Geometry, region: usize, slab: usize) -> Self {
        Self::of(g, &CLASSES[region / BUCKET_SLOTS], region, slab)
    }

    /// The metadata's address: a key unique to the slab.
    #[inline(always)]
    pub fn key(&self) -> usize {
        self.base
    }

    #[inline(always)]
    pub fn header(&self) -> &SlabHeader {
        // SAFETY: the slab exists, so its metadata (header first) is committed and lives as
        // long as the process; SlabHeader is all atomics.
        unsafe { &*(self.base as *const SlabHeader) }
    }

    #[inline(always)]
    pub fn owner(&self) -> u32 {
        self.header().state.load(Ordering::Relaxed) as u32
    }

    #[inline(always)]
    pub fn remote_word(&self, k: &ClassInfo, w: usize) -> &AtomicU64 {
        // SAFETY: w < words: inside the committed remote bitmap.
        unsafe { &*((self.base + k.remote_off as usize + 8 * w) as *const AtomicU64) }
    }

    #[inline(always)]
    pub fn free_word(&self, k: &ClassInfo, w: usize) -> &AtomicU64 {
        // SAFETY: w < words: inside the committed free bitmap.
        unsafe { &*((self.base + k.free_off as usize + 8 * w) as *const AtomicU64) }
    }

    /// The address of a slot's record (for `bounds::Hint`).
    #[inline(always)]
    pub fn rec_addr(&self, k: &ClassInfo, slot: usize) -> usize {
        self.base + k.rec_off as usize + slot * if k.wide { 4 } else { 2 }
    }

    /// The record of `slot` (< nslots), relaxed.
    #[inline(always)]
    pub fn rec(&self, k: &ClassInfo, slot: usize) -> u32 {
        if k.wide {
            self.rec_of::<true>(k, slot)
        } else {
            self.rec_of::<false>(k, slot)
        }
    }

    /// Records per 16 bytes at the width `WIDE`.
    pub const fn recs_per_16<const WIDE: bool>() -> usize {
        if WIDE { 4 } else { 8 }
    }

    /// Whether the records of slots `slot..slot + recs_per_16::<WIDE>()` (all below
    /// `k.nslots`) are all zero: never used since the slab was made or purged. One 16-byte
    /// load, for a reader no other thread can race (the sweep at exit runs alone).
    #[inline(always)]
    pub fn recs_zero<const WIDE: bool>(&self, k: &ClassInfo, slot: usize) -> bool {
        debug_assert!(WIDE == k.wide && slot + Self::recs_per_16::<WIDE>() <= k.nslots as usize);
        // SAFETY: the 16 bytes are records of this slab (the caller's bound), committed.
        unsafe { (self.rec_addr(k, slot) as *const u128).read_unaligned() == 0 }
    }

    /// `rec` where the caller knows the record width (`WIDE` is `k.wide`): the fast paths
    /// split by width once, so the rest of each path has no width to test or keep.
    #[inline(always)]
    pub fn rec_of<const WIDE: bool>(&self, k: &ClassInfo, slot: usize) -> u32 {
        debug_assert_eq!(WIDE, k.wide);
        let a = self.base + k.rec_off as usize;
        // SAFETY: slot < nslots: inside the committed record array of the class's width.
        unsafe {
            if WIDE {
                (*(a as *const AtomicU32).add(slot)).load(Ordering::Relaxed)
            } else {
                (*(a as *const AtomicU16).add(slot)).load(Ordering::Relaxed) as u32
            }
        }
    }

    /// Store the record of `slot` (owner only, or a slot nobody else can reach).
    #[inline(always)]
    pub fn set_rec(&self, k: &ClassInfo, slot: usize, r: u32) {
        if k.wide {
            self.set_rec_of::<true>(k, slot, r)
        } else {
            self.set_rec_of::<false>(k, slot, r)
        }
    }

    /// `set_rec` where the caller knows the record width (`WIDE` is `k.wide`).
    #[inline(always)]
    pub fn set_rec_of<const WIDE: bool>(&self, k: &ClassInfo, slot: usize, r: u32) {
        debug_assert_eq!(WIDE, k.wide);
        let a = self.base + k.rec_off as usize;
        // SAFETY: as in `rec`; narrow records hold every value a narrow class produces.
        unsafe {
            if WIDE {
                (*(a as *const AtomicU32).add(slot)).store(r, Ordering::Relaxed)
            } else {
                (*(a as *const AtomicU16).add(slot)).store(r as u16, Ordering::Relaxed)
            }
        }
    }

    /// Change the record of `slot` from `old` to `new` if it is still `old` (a free by a
    /// thread that does not own the slab).
    #[inline]
    pub fn cas_rec(&self, k: &ClassInfo, slot: usize, old: u32, new: u32) -> bool {
        let a = self.base + k.rec_off as usize;
        // SAFETY: as in `rec`.
        unsafe {
            if k.wide {
                (*(a as *const AtomicU32).add(slot)).compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            } else {
                (*(a as *const AtomicU16).add(slot))
                    .compare_exchange(old as u16, new as u16, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            }
        }
    }

    /// Reset every record to FREE_CLEAN (the slab's memory was given back and reads zero).
    pub fn clear_records(&self, k: &ClassInfo) {
        for slot in 0..k.nslots as usize {
            self.set_rec(k, slot, record::FREE_CLEAN);
        }
    }

    /// Whether `slot` holds a live block (diagnostics, fault reports, range checks).
    #[inline]
    pub fn is_live(&self, k: &ClassInfo, slot: usize) -> bool {
        record::is_live(self.rec(k, slot))
    }

    /// Slack of the block in `slot` (meaningful while it is live).
    #[inline]
    pub fn slack(&self, k: &ClassInfo, slot: usize) -> usize {
        record::slack(self.rec(k, slot))
    }
}

/// The metadata reservation's allocator: chunks are carved from below the chunk table
/// downward, in the order slabs are made, and mapped in steps of `META_COMMIT`.
struct Arena {
    /// The lowest chunk byte so far, and the lowest mapped byte.
    low: usize,
    mapped: usize,
}

const META_COMMIT: usize = 256 << 10;

struct ArenaCell(UnsafeCell<Arena>);
// SAFETY: the arena is only touched with ARENA_LOCK held.
unsafe impl Sync for ArenaCell {}

static ARENA: ArenaCell = ArenaCell(UnsafeCell::new(Arena { low: 0, mapped: 0 }));
/// Taken inside a pool's lock only (`Pool::grow`): a fork, which holds every pool lock,
/// never finds it held.
static ARENA_LOCK: Lock = Lock::new();

/// Set up the metadata arena and map the start of the chunk table (at start-up).
pub fn map_table(g: &Geometry) -> bool {
    let _guard = ARENA_LOCK.guard();
    // SAFETY: ARENA_LOCK is held.
    let a = unsafe { &mut *ARENA.0.get() };
    a.low = g.meta_chunks_top;
    a.mapped = g.meta_chunks_top;
    grow_table(g, 0)
}

/// Bytes of the chunk table mapped at a time (at least): 8192 entries, 2 GiB of heap.
const TABLE_STEP: usize = 64 << 10;

/// Map the chunk table far enough for the heap offset `off` (ARENA_LOCK held): from its
/// start, doubling, never beyond its end.
fn grow_table(g: &Geometry, off: usize) -> bool {
    let (table, len) = g.meta_table();
    let have = (table_span() >> GRANULE_SHIFT) * 8;
    let need = ((off >> GRANULE_SHIFT) + 1) * 8;
    if need <= have {
        return true;
    }
    let to = need.max(2 * have).max(TABLE_STEP).next_multiple_of(TABLE_STEP.max(platform::page_size())).min(len);
    if !platform::map_at((table + have) as *mut u8, to - have, crate::tag::prot_flags()) {
        return false;
    }
    set_table_span((to / 8) << GRANULE_SHIFT);
    true
}

/// Give `slab` of `region` (class `k`) metadata if its heap granule has no chunk yet: the
/// region's first slab or the first slab of a granule. A chunk covers the whole granule
/// (the slabs before a region's first one too: their headers read "not made"). Called by
/// the pool, under its lock, before the slab is published. Returns the bytes newly
/// mapped, or None when the reservation is full or mapping fails.
pub fn chunk_for(g: &Geometry, k: &ClassInfo, region: usize, slab: usize, first: bool) -> Option<usize> {
    let base = g.slab_base(region, slab);
    if !first && g.slab_in_granule(k, base) != 0 {
        return Some(0);
    }
    let stride = k.meta_stride as usize;
    let len = ((1usize << GRANULE_SHIFT) >> k.slab_shift) * stride;
    let _guard = ARENA_LOCK.guard();
    // SAFETY: ARENA_LOCK is held.
    let a = unsafe { &mut *ARENA.0.get() };
    let pg = platform::page_size();
    let mut mapped = 0;
    if !grow_table(g, base - g.heap_base) {
        return None;
    }
    let at = a.low.checked_sub(len).filter(|&at| at >= g.meta_base && at <= ENTRY_CHUNK)? & !63;
    if at < a.mapped {
        let from = at.min(a.mapped.saturating_sub(META_COMMIT)).max(g.meta_base) & !(pg - 1);
        if !platform::map_at(from as *mut u8, a.mapped - from, crate::tag::prot_flags()) {
            return None;
        }
        mapped += a.mapped - from;
        a.mapped = from;
    }
    a.low = at;
    // Read only for slabs that exist, which the pool publishes (Release) after this, or
    // by the free fast path, which then reads the slab's `created` (Acquire).
    g.meta_entry(base).store(at | region << ENTRY_REGION, Ordering::Release);
    Some(mapped)
}
