//! Slabs and the central state of one (size class, bucket): which slabs exist, which have
//! free slots, which slots are available. Reached by thread caches in batches, under a lock.
//!
//! Per-slab metadata lives out of line in the metadata reservation:
//! ```text
//! header (16 B) | avail bitmap | dirty bitmap | live bitmap (atomic) | slack table
//! ```
//! - `avail`: slot may be handed to a thread cache (guarded by the bucket lock);
//! - `dirty`: the slot held a block that was freed (so it carries the free tag and, with
//!   zero-on-free, must read as zero); cleared while the slot is out in a cache, where the
//!   entry's ENTRY_DIRTY bit carries it, and when the slab is purged (guarded by the lock);
//! - `live`: slot is an allocated block (atomic: set on malloc, cleared on free, which is how
//!   double and invalid frees are detected deterministically, from any thread);
//! - slack table: `slot size - requested size`, for canaries and `malloc_usable_size`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::layout::{self, BUCKET_SLOTS, META_SLABS_OFF};
use super::size_class::{ClassInfo, CLASSES, SLAB_HEADER};
use crate::platform::{self, lock::Lock};
use crate::rand::Rng;

const FLAG_EMPTY_RESIDENT: u16 = 1;
const FLAG_PURGED: u16 = 2;
/// Heap and metadata are committed (mprotect'ed read-write) in chunks of at least this size.
const COMMIT_CHUNK: usize = 256 << 10;
/// Fully free slabs kept resident per bucket (in bytes) before further ones are purged.
const EMPTY_RESIDENT_BYTES: usize = 256 << 10;
/// Slabs before the first one used in a region: a random number in 0..FIRST_SLAB_SPREAD.
const FIRST_SLAB_SPREAD: u32 = 256;

/// Thread-cache entries carry the slot address with bit 0 set if the slot held a freed block
/// (so its contents must be checked for writes after free when it is handed out again).
pub const ENTRY_DIRTY: usize = 1;

#[repr(C)]
pub struct SlabHeader {
    pub avail_count: u16,
    pub flags: u16,
    pub partial_pos: u32,
    _reserved: u64,
}

/// Typed view of one slab's metadata.
#[derive(Clone, Copy)]
pub struct SlabMeta {
    base: usize,
    words: usize,
}

impl SlabMeta {
    #[inline(always)]
    pub fn new(meta_base: usize, region: usize, slab: usize) -> Self {
        Self::of(meta_base, &CLASSES[region / BUCKET_SLOTS], region, slab)
    }

    /// As `new`, for a caller that already has the region's class.
    #[inline(always)]
    pub fn of(meta_base: usize, k: &ClassInfo, region: usize, slab: usize) -> Self {
        let base = meta_base + (region << layout::meta_region_shift()) + META_SLABS_OFF + slab * k.meta_stride as usize;
        SlabMeta { base, words: k.words as usize }
    }

    #[inline]
    fn header(&self) -> *mut SlabHeader {
        self.base as *mut SlabHeader
    }

    #[inline]
    fn avail(&self) -> *mut u64 {
        (self.base + SLAB_HEADER) as *mut u64
    }

    #[inline]
    fn dirty(&self) -> *mut u64 {
        (self.base + SLAB_HEADER + 8 * self.words) as *mut u64
    }

    #[inline]
    pub fn live_word(&self, slot: usize) -> &AtomicU64 {
        // SAFETY: the live bitmap lies in committed metadata of a slab that exists (callers
        // check the slab index against the bucket's published slab count) and slot < nslots.
        unsafe { &*((self.base + SLAB_HEADER + 16 * self.words + 8 * (slot / 64)) as *const AtomicU64) }
    }

    /// Whether the slot holds a live block (a relaxed read of its live bit).
    #[inline]
    pub fn is_live(&self, slot: usize) -> bool {
        self.live_word(slot).load(Ordering::Relaxed) & (1u64 << (slot % 64)) != 0
    }

    #[inline]
    fn slack_table(&self) -> usize {
        self.base + SLAB_HEADER + 24 * self.words
    }

    #[inline]
    pub fn slack(&self, k: &ClassInfo, slot: usize) -> usize {
        let t = self.slack_table();
        // SAFETY: slot < nslots and the table has nslots entries of slack_width bytes.
        unsafe {
            match k.slack_width {
                1 => *(t as *const u8).add(slot) as usize,
                2 => *(t as *const u16).add(slot) as usize,
                _ => *(t as *const u32).add(slot) as usize,
            }
        }
    }

    /// The slot's info byte: the tag its previous block had (low nibble; 0 if it never held
    /// one) and the allocation kind of its current block (high nibble, `AllocKind`). One
    /// byte per slot, written only by the thread that owns the slot (allocating it), read
    /// after the live-bit handshake, so plain accesses suffice.
    #[inline]
    fn info(&self, k: &ClassInfo, slot: usize) -> *mut u8 {
        // SAFETY-free address arithmetic: the info table has nslots bytes after the slack table.
        (self.slack_table() + k.slack_width as usize * k.nslots as usize + slot) as *mut u8
    }

    #[inline]
    pub fn prev_tag(&self, k: &ClassInfo, slot: usize) -> u8 {
        // SAFETY: slot < nslots: inside the committed info table.
        unsafe { *self.info(k, slot) & 0xf }
    }

    /// The allocation kind recorded for the slot's block.
    #[inline]
    pub fn kind(&self, k: &ClassInfo, slot: usize) -> u8 {
        // SAFETY: slot < nslots: inside the committed info table.
        unsafe { *self.info(k, slot) >> 4 }
    }

    /// Record a new block in the slot: its tag (kept as the next block's previous tag) and
    /// its allocation kind.
    #[inline]
    pub fn set_info(&self, k: &ClassInfo, slot: usize, tag: u8, kind: u8) {
        // SAFETY: slot < nslots: inside the committed info table; the caller owns the slot.
        unsafe { *self.info(k, slot) = (tag & 0xf) | (kind << 4) };
    }

    /// Written only by the thread that owns the live slot (between malloc and free), read by
    /// the thread that frees it after the live bit handshake, so plain stores suffice.
    #[inline]
    pub fn set_slack(&self, k: &ClassInfo, slot: usize, slack: usize) {
        let t = self.slack_table();
        // SAFETY: as in `slack`; the value fits because slack < class size ≤ the width's range.
        unsafe {
            match k.slack_width {
                1 => *(t as *mut u8).add(slot) = slack as u8,
                2 => *(t as *mut u16).add(slot) = slack as u16,
                _ => *(t as *mut u32).add(slot) = slack as u32,
            }
        }
    }
}

/// What the central state of a bucket tracks, guarded by its lock.
struct Inner {
    first_slab: u32,
    heap_committed: usize,
    meta_committed: usize,
    partial_committed: usize,
    partial_len: u32,
    empty_resident: u32,
    initialised: bool,
}

pub struct Bucket {
    pub lock: Lock,
    inner: UnsafeCell<Inner>,
    /// Slabs created (indices first_slab .. first_slab+count). Published with Release after
    /// the slab's metadata is initialised, so lock-free readers (free) can trust it.
    slab_end: AtomicU32,
    /// Purged-slab counter for statistics.
    pub purges: AtomicU32,
}

// SAFETY: `inner` is only accessed with `lock` held; the other fields are atomics.
unsafe impl Sync for Bucket {}

pub static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);

impl Bucket {
    pub const fn new() -> Self {
        Bucket {
            lock: Lock::new(),
            inner: UnsafeCell::new(Inner {
                first_slab: 0,
                heap_committed: 0,
                meta_committed: 0,
                partial_committed: 0,
                partial_len: 0,
                empty_resident: 0,
                initialised: false,
            }),
            slab_end: AtomicU32::new(0),
            purges: AtomicU32::new(0),
        }
    }

    /// Is `slab` a created slab of this bucket? Lock-free (for validating frees).
    #[inline]
    pub fn slab_exists(&self, slab: usize) -> bool {
        slab < self.slab_end.load(Ordering::Acquire) as usize && self.slab_begin() <= slab
    }

    #[inline]
    fn slab_begin(&self) -> usize {
        // first_slab is written once, before slab_end is first published (Release), and
        // slab_exists only gets here after an Acquire load that saw a non-zero slab_end.
        // SAFETY: a plain read of a field that is immutable once published.
        unsafe { (*self.inner.get()).first_slab as usize }
    }

    pub fn slab_count(&self) -> usize {
        let end = self.slab_end.load(Ordering::Acquire) as usize;
        if end == 0 {
            0
        } else {
            end - self.slab_begin()
        }
    }

    /// Take up to `out.len()` available slots from random partial slabs, in random order.
    /// Returns how many were written. Zero means out of memory (or address space).
    pub fn refill(&self, g: &Geometry, region: usize, rng: &mut Rng, out: &mut [usize]) -> usize {
        let _guard = self.lock.guard();
        // SAFETY: we hold the lock.
        let inner = unsafe { &mut *self.inner.get() };
        let k = &CLASSES[region / BUCKET_SLOTS];
        let mut got = 0;
        while got < out.len() {
            // Out of address space: let the large quarantine go first, then try once more.
            if inner.partial_len == 0 && !self.grow(g, region, inner, rng) && !(super::large::LARGE.relieve() && self.grow(g, region, inner, rng)) {
                break;
            }
            let plist = layout::partial_list_addr(g.meta_base, region) as *mut u32;
            let j = rng.below(inner.partial_len) as usize;
            // SAFETY: j < partial_len, and the list's first partial_len entries are committed.
            let slab = unsafe { *plist.add(j) } as usize;
            let m = SlabMeta::new(g.meta_base, region, slab);
            // SAFETY: the slab exists, so its metadata is committed; we hold the lock.
            let h = unsafe { &mut *m.header() };
            if h.avail_count as usize == k.nslots as usize {
                if h.flags & FLAG_EMPTY_RESIDENT != 0 {
                    inner.empty_resident -= 1;
                }
                if h.flags & FLAG_PURGED != 0 {
                    settle_tags(layout::slot_addr(g.heap_base, region, slab, 0), 1 << k.slab_shift);
                }
                h.flags = 0;
            }
            // Take slots a bitmap word at a time, starting from a random word: every set bit
            // of the word up to the batch size, in one pass with bit tricks. The batch is
            // shuffled below, so the order slots are handed out in is random too.
            let slab_base = layout::slot_addr(g.heap_base, region, slab, 0);
            let size = k.size as usize;
            let mut w = rng.below(m.words as u32) as usize;
            while got < out.len() && h.avail_count > 0 {
                // SAFETY: w < words: the avail and dirty bitmaps have `words` committed words.
                let (avail, dirty) = unsafe { (&mut *m.avail().add(w), &mut *m.dirty().add(w)) };
                let mut bits = *avail;
                while bits != 0 && got < out.len() {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let slot = w * 64 + b;
                    // The dirty state travels with the cache entry (ENTRY_DIRTY) while the
                    // slot is out of the bucket; flush writes it back.
                    let d = (*dirty >> b) & 1;
                    out[got] = (slab_base + slot * size) | (d as usize * ENTRY_DIRTY);
                    got += 1;
                }
                let taken = *avail & !bits;
                h.avail_count -= taken.count_ones() as u16;
                *avail = bits;
                *dirty &= !taken;
                w = if w + 1 == m.words { 0 } else { w + 1 };
            }
            if h.avail_count == 0 {
                self.partial_remove(g, region, inner, j);
            }
        }
        // Fisher-Yates over the batch.
        for i in (1..got).rev() {
            let j = rng.below(i as u32 + 1) as usize;
            out.swap(i, j);
        }
        got
    }

    /// Return slots (from a thread cache) to the available pool.
    pub fn flush(&self, g: &Geometry, region: usize, slots: &[usize]) {
        let _guard = self.lock.guard();
        // SAFETY: we hold the lock.
        let inner = unsafe { &mut *self.inner.get() };
        let k = &CLASSES[region / BUCKET_SLOTS];
        for &e in slots {
            let p = e & !ENTRY_DIRTY;
            let Some(l) = layout::decode(g.heap_base, p) else { continue };
            let m = SlabMeta::new(g.meta_base, region, l.slab);
            // SAFETY: entries come from refill/free of this bucket, so the slab exists.
            let h = unsafe { &mut *m.header() };
            // SAFETY: l.slot < nslots.
            unsafe {
                *m.avail().add(l.slot / 64) |= 1u64 << (l.slot % 64);
                if e & ENTRY_DIRTY != 0 {
                    *m.dirty().add(l.slot / 64) |= 1u64 << (l.slot % 64);
                }
            }
            h.avail_count += 1;
            if h.avail_count == 1 {
                self.partial_push(g, region, inner, l.slab);
            }
            if h.avail_count == k.nslots {
                let slab_bytes = 1usize << k.slab_shift;
                if (inner.empty_resident as usize + 1) * slab_bytes <= EMPTY_RESIDENT_BYTES.max(slab_bytes) {
                    h.flags |= FLAG_EMPTY_RESIDENT;
                    inner.empty_resident += 1;
                } else if platform::purge(layout::slot_addr(g.heap_base, region, l.slab, 0) as *mut u8, slab_bytes) {
                    // The pages went back to the OS and read as zero again; the addresses stay
                    // with this bucket for good.
                    // SAFETY: the dirty bitmap has `words` committed words.
                    unsafe { core::ptr::write_bytes(m.dirty(), 0, m.words) };
                    h.flags |= FLAG_PURGED;
                    self.purges.fetch_add(1, Ordering::Relaxed);
                } else {
                    // A slab smaller than a page cannot be purged alone: it stays resident.
                    h.flags |= FLAG_EMPTY_RESIDENT;
                    inner.empty_resident += 1;
                }
            }
        }
    }

    fn partial_push(&self, g: &Geometry, region: usize, inner: &mut Inner, slab: usize) {
        let plist = layout::partial_list_addr(g.meta_base, region) as *mut u32;
        let pos = inner.partial_len as usize;
        // SAFETY: the list is committed for every existing slab (grow commits it), and a slab
        // appears in it at most once, so pos < slab count.
        unsafe {
            *plist.add(pos) = slab as u32;
            (*SlabMeta::new(g.meta_base, region, slab).header()).partial_pos = pos as u32;
        }
        inner.partial_len += 1;
    }

    fn partial_remove(&self, g: &Geometry, region: usize, inner: &mut Inner, j: usize) {
        let plist = layout::partial_list_addr(g.meta_base, region) as *mut u32;
        let last = inner.partial_len as usize - 1;
        // SAFETY: j and last are < partial_len, inside the committed list.
        unsafe {
            let moved = *plist.add(last);
            *plist.add(j) = moved;
            (*SlabMeta::new(g.meta_base, region, moved as usize).header()).partial_pos = j as u32;
        }
        inner.partial_len -= 1;
    }

    /// Create the next slab of this region: commit its memory and metadata, mark all slots
    /// available, and put it on the partial list.
    fn grow(&self, g: &Geometry, region: usize, inner: &mut Inner, rng: &mut Rng) -> bool {
        let k = &CLASSES[region / BUCKET_SLOTS];
        if !inner.initialised {
            inner.first_slab = rng.below(FIRST_SLAB_SPREAD);
            // Mappings start on a page boundary (slabs may be smaller than a 16/64 KiB page).
            inner.heap_committed = ((inner.first_slab as usize) << k.slab_shift) & !(platform::page_size() - 1);
            inner.meta_committed = 0;
            inner.initialised = true;
        }
        let begin = inner.first_slab as usize;
        let end = self.slab_end.load(Ordering::Relaxed).max(begin as u32) as usize;
        if end >= layout::max_slabs(k) {
            return false;
        }
        let slab_bytes = 1usize << k.slab_shift;
        let pg = platform::page_size();
        let region_base = g.heap_base + (region << layout::region_shift());
        // Heap pages for the new slab.
        let need = (end + 1) * slab_bytes;
        if need > inner.heap_committed {
            let to = round_up((inner.heap_committed + COMMIT_CHUNK.max(slab_bytes)).min(layout::region_size()).max(need), pg);
            if !platform::map_at((region_base + inner.heap_committed) as *mut u8, to - inner.heap_committed, crate::tag::prot_flags()) {
                return false;
            }
            MAPPED_BYTES.fetch_add(to - inner.heap_committed, Ordering::Relaxed);
            settle_tags(region_base + inner.heap_committed, to - inner.heap_committed);
            inner.heap_committed = to;
        }
        // Slab metadata.
        let meta_region = g.meta_base + (region << layout::meta_region_shift());
        let meta_need = META_SLABS_OFF + (end + 1) * k.meta_stride as usize;
        let meta_have = META_SLABS_OFF + inner.meta_committed;
        if meta_need > meta_have {
            let from = if inner.meta_committed == 0 {
                META_SLABS_OFF + ((begin * k.meta_stride as usize) & !(pg - 1))
            } else {
                meta_have
            };
            let to = round_up(meta_need.max(from + COMMIT_CHUNK / 4), pg);
            if !platform::map_at((meta_region + from) as *mut u8, to - from, crate::tag::prot_flags()) {
                return false;
            }
            MAPPED_BYTES.fetch_add(to - from, Ordering::Relaxed);
            inner.meta_committed = to - META_SLABS_OFF;
        }
        // Partial list: one u32 per existing slab.
        let count = end + 1 - begin;
        if count * 4 > inner.partial_committed {
            let to = round_up(count * 4, pg).max(inner.partial_committed + pg);
            if !platform::map_at((meta_region + inner.partial_committed) as *mut u8, to - inner.partial_committed, crate::tag::prot_flags()) {
                return false;
            }
            MAPPED_BYTES.fetch_add(to - inner.partial_committed, Ordering::Relaxed);
            inner.partial_committed = to;
        }
        let m = SlabMeta::new(g.meta_base, region, end);
        // SAFETY: the metadata was just committed (fresh pages are zero); we hold the lock.
        unsafe {
            let n = k.nslots as usize;
            for w in 0..m.words {
                let bits = if (w + 1) * 64 <= n { u64::MAX } else { (1u64 << (n % 64)) - 1 };
                *m.avail().add(w) = bits;
            }
            (*m.header()).avail_count = k.nslots;
        }
        self.partial_push(g, region, inner, end);
        self.slab_end.store((end + 1) as u32, Ordering::Release);
        true
    }
}

impl Default for Bucket {
    fn default() -> Self {
        Self::new()
    }
}

/// Give every page of fresh or purged heap memory its owned tag (0, what the kernel gives such
/// pages anyway) while the bucket lock is held, one granule per page. This makes the tag
/// storage of each page exist before several threads tag slots on it at once: qemu-user 7.2
/// allocates a page's tag storage lazily and can lose concurrent first tag writes otherwise.
fn settle_tags(addr: usize, len: usize) {
    if !crate::tag::enabled() {
        return;
    }
    use crate::tag::TagStore;
    let mut hw = crate::tag::hw();
    let mut a = addr;
    while a < addr + len {
        hw.store(a, crate::tag::GRANULE, crate::tag::TAG_OWNED, false);
        a += platform::page_size();
    }
}

/// The two reservation bases, passed around instead of re-read from globals.
#[derive(Clone, Copy)]
pub struct Geometry {
    pub heap_base: usize,
    pub meta_base: usize,
}

impl Geometry {
    /// Is `addr` (untagged) inside the heap's address range (mapped or not)?
    pub fn holds_heap(&self, addr: usize) -> bool {
        self.heap_base != 0 && addr.wrapping_sub(self.heap_base) < layout::heap_size()
    }

    /// Is `addr` (untagged) inside the metadata's address range (mapped or not)?
    pub fn holds_meta(&self, addr: usize) -> bool {
        self.meta_base != 0 && addr.wrapping_sub(self.meta_base) < layout::meta_size()
    }
}

#[inline]
fn round_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}
