//! The pool of one (size class, bucket): the slabs no thread owns. A thread cache takes one
//! when its own slabs of the region are full: a partial slab (given back by a cache that
//! had more free slots than it used, or by a thread that exited) before an empty one, an
//! empty one before a new one. Slabs are created here (their heap and metadata committed at
//! their fixed addresses, never reassigned to another region).
//!
//! Empty slabs keep their pages (resident) while the process-wide budget of resident empty
//! slab memory allows; beyond it the oldest are purged (`MADV_DONTNEED`, runs of
//! neighbouring slabs in one call). A purged slab reads as zero, so its records go back to
//! FREE_CLEAN (no write-after-free check needed when it is used again).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::heap::slab::hook::Hook;
use crate::heap::slab::layout::{Geometry, BUCKET_SLOTS, REGION_COUNT};
use crate::heap::slab::size_class::{ClassInfo, CLASSES};
use crate::heap::slab::meta::{SlabMeta, PARTIAL, PURGED, RESIDENT};
use crate::heap::slab::locks::LOCKS;
use crate::heap::slab::islands;
use crate::platform;
use crate::rand::SecureRng;

/// Heap and metadata are committed in chunks of at least this size.
const COMMIT_CHUNK: usize = 256 << 10;
/// Bytes of empty slabs kept resident in all pools together before the oldest are purged:
/// a sixteenth of the slab memory mapped, within these bounds.
const EMPTY_BUDGET_MIN: usize = 1 << 20;
const EMPTY_BUDGET_MAX: usize = 64 << 20;

fn empty_budget() -> usize {
    (MAPPED_BYTES.load(Ordering::Relaxed) / 16).clamp(EMPTY_BUDGET_MIN, EMPTY_BUDGET_MAX)
}
/// The most slabs one purge call covers.
const PURGE_RUN: usize = 64;

struct Inner {
    initialised: bool,
    first_slab: u32,
    /// Slabs created: first_slab..end.
    end: u32,
    heap_committed: usize,
    /// Resident empty slabs, newest at the head (slab index + 1; 0 = none).
    resident_head: u32,
    resident_tail: u32,
    resident: u32,
    /// Purged empty slabs (a stack).
    purged_head: u32,
    purged: u32,
    /// Partial slabs (live blocks and free slots; a stack).
    partial_head: u32,
    partial: u32,
}

pub struct Pool {
    inner: UnsafeCell<Inner>,
    pub purges: AtomicU32,
}

// SAFETY: `inner` is only accessed with the pool's lock (`locks::LOCKS.pools`) held; the
// other fields are atomics.
unsafe impl Sync for Pool {}

#[unsafe(link_section = ".bss.mie_big")]
pub static POOLS: [Pool; REGION_COUNT] = [const { Pool::new() }; REGION_COUNT];

/// Per region: first slab | end << 32, published (Release) after a new slab's metadata is
/// initialised, so a lock-free reader (free, the fault handler) can trust it. Dense, so
/// the check on every free reads a line that is almost never written.
static SLABS: [AtomicU64; REGION_COUNT] = [const { AtomicU64::new(0) }; REGION_COUNT];

/// Per region: the first slab created without a guard after it (`u32::MAX`: none yet).
/// Slabs of guarded classes (`size_class::GUARDED_MIN`) are mapped one by one, only as far
/// as their slots reach (rounded to pages); the rest of the slab stays unmapped, so an
/// overflow out of the last slot faults at the access. Where the kernel has guard markers,
/// a guarded slab near an earlier mapping joins it (`islands.rs`: its gap is markers, which
/// fault the same); any other is a mapping of its own (the map-count limit,
/// `vm.max_map_count`, is 65530 by default): past `GUARDED_SLABS_MAX` of those in the
/// process, new slabs are mapped whole as in other classes, and their overflows are left to
/// the canaries. With MTE the gap is mapped and carries the allocator's tag, which faults as
/// well.
static UNGUARDED_FROM: [AtomicU32; REGION_COUNT] = [const { AtomicU32::new(u32::MAX) }; REGION_COUNT];
/// Guarded slabs created so far that are mappings of their own (all regions).
pub static GUARDED_SLABS: AtomicUsize = AtomicUsize::new(0);
pub const GUARDED_SLABS_MAX: usize = 4096;

/// Bytes of a slab of class `k` that its slots use, rounded up to whole pages: what is
/// mapped of a guarded slab.
#[inline]
pub fn slot_span(k: &ClassInfo) -> usize {
    round_up(k.nslots as usize * k.size as usize, platform::page_size())
}

/// Whether the class's slabs get an unmapped gap after their slots (at least one page).
#[inline]
pub fn guardable(k: &ClassInfo) -> bool {
    k.size as usize >= crate::heap::slab::size_class::GUARDED_MIN && !crate::tag::enabled() && slot_span(k) < 1usize << k.slab_shift
}

/// Whether `slab` (created) of `region` has its unmapped gap after the last slot: reading
/// past `slot_span` faults there.
#[inline]
pub fn slab_guarded(region: usize, slab: usize) -> bool {
    guardable(&CLASSES[region / BUCKET_SLOTS]) && slab < UNGUARDED_FROM[region].load(Ordering::Acquire) as usize
}

/// The mapped bytes of created slab `slab` of `region`, from its start.
#[inline]
pub fn mapped_len(region: usize, slab: usize) -> usize {
    let k = &CLASSES[region / BUCKET_SLOTS];
    if slab_guarded(region, slab) {
        slot_span(k)
    } else {
        1 << k.slab_shift
    }
}

/// Bytes mapped for slabs and metadata (statistics).
pub static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);
/// What start-up installs to give address space back when a slab cannot be made (the large
/// blocks' quarantine and warm pages, `large::Large::relieve`): true if anything was
/// released.
static RELIEF: Hook<fn() -> bool> = Hook::new();

/// Start-up: who gives address space back.
pub fn install_relief(f: fn() -> bool) {
    RELIEF.install(f);
}

fn relieve() -> bool {
    RELIEF.get().is_some_and(|f| f())
}

/// Bytes of resident empty slabs in all pools.
static RESIDENT_EMPTY: AtomicUsize = AtomicUsize::new(0);

/// Is `slab` a created slab of `region`? Lock-free: one load.
#[inline(always)]
pub fn slab_exists(region: usize, slab: usize) -> bool {
    // SAFETY-free: region < REGION_COUNT for every decoded address.
    let v = SLABS[region].load(Ordering::Acquire);
    let (begin, end) = (v as u32 as usize, (v >> 32) as usize);
    slab.wrapping_sub(begin) < end.wrapping_sub(begin)
}

/// `f()` with `slab` of `region` held in its pool (no cache owns it, and none can take it
/// meanwhile: the pool's lock is held); None if a cache owns it, or the lock is taken. The
/// lock is tried, never waited for: the calling thread may hold it already (a signal handler
/// that interrupted a malloc). Nothing `f` calls may take a pool's lock; a report made under
/// it aborts, which is fine.
pub fn while_pooled<R>(g: &Geometry, region: usize, slab: usize, f: impl FnOnce() -> R) -> Option<R> {
    let lock = &LOCKS.pools[region].0;
    if !lock.try_lock() {
        return None;
    }
    let r = (SlabMeta::new(g, region, slab).owner() == 0).then(f);
    lock.unlock();
    r
}

/// The slabs created in `region` so far (lock-free: one load).
pub fn slabs(region: usize) -> core::ops::Range<usize> {
    let v = SLABS[region].load(Ordering::Acquire);
    v as u32 as usize..(v >> 32) as usize
}

/// Slabs created in `region`, segment gaps aside (statistics).
pub fn slab_count(region: usize) -> usize {
    let k = &CLASSES[region / BUCKET_SLOTS];
    slabs(region).filter(|&s| !Geometry::is_gap(k, s)).count()
}

impl Pool {
    pub const fn new() -> Self {
        Pool {
            inner: UnsafeCell::new(Inner {
                initialised: false,
                first_slab: 0,
                end: 0,
                heap_committed: 0,
                resident_head: 0,
                resident_tail: 0,
                resident: 0,
                purged_head: 0,
                purged: 0,
                partial_head: 0,
                partial: 0,
            }),
            purges: AtomicU32::new(0),
        }
    }

    /// A slab for cache `owner`: a partial one, else an empty resident one, a purged one, a
    /// new one. It belongs to `owner` when this returns; true if it is a partial slab (its
    /// remote-free bits must be collected). None: out of address space or memory.
    pub fn take(&self, g: &Geometry, region: usize, owner: u32, rng: &mut SecureRng) -> Option<(usize, bool)> {
        let k = &CLASSES[region / BUCKET_SLOTS];
        let mut partial = false;
        let slab = {
            let _guard = LOCKS.pools[region].0.guard();
            // SAFETY: we hold the lock.
            let inner = unsafe { &mut *self.inner.get() };
            if inner.partial_head != 0 {
                let s = inner.partial_head as usize - 1;
                let m = SlabMeta::of(g, k, region, s);
                inner.partial_head = m.header().link.load(Ordering::Relaxed);
                inner.partial -= 1;
                m.header().flags.store(0, Ordering::Relaxed);
                partial = true;
                s
            } else if inner.resident_head != 0 {
                let s = inner.resident_head as usize - 1;
                self.unlink_resident(g, k, region, inner, s);
                RESIDENT_EMPTY.fetch_sub(1 << k.slab_shift, Ordering::Relaxed);
                s
            } else if inner.purged_head != 0 {
                let s = inner.purged_head as usize - 1;
                let m = SlabMeta::of(g, k, region, s);
                inner.purged_head = m.header().link.load(Ordering::Relaxed);
                inner.purged -= 1;
                m.header().flags.store(0, Ordering::Relaxed);
                settle_tags(g.slab_base(region, s), 1 << k.slab_shift);
                s
            } else {
                // Out of address space: let the large quarantine go first, then try once more.
                self.grow(g, region, inner, rng).or_else(|| if relieve() { self.grow(g, region, inner, rng) } else { None })?
            }
        };
        let h = SlabMeta::of(g, k, region, slab);
        // Pool slabs have no live block, so nobody can notify about them; a free that raced
        // with the slab's way into the pool may still be clearing the queued bit it set.
        while h.header().state.compare_exchange(0, owner as u64, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        Some((slab, partial))
    }

    /// Take back a slab its owner has released (state already 0: no owner): `empty` when
    /// every slot is free, else it still holds live blocks (whose frees meanwhile set its
    /// remote bits, collected by the next owner).
    pub fn give(&self, g: &Geometry, region: usize, slab: usize, empty: bool) {
        let k = &CLASSES[region / BUCKET_SLOTS];
        let _guard = LOCKS.pools[region].0.guard();
        // SAFETY: we hold the lock.
        let inner = unsafe { &mut *self.inner.get() };
        let m = SlabMeta::of(g, k, region, slab);
        let h = m.header();
        if !empty {
            h.flags.store(PARTIAL, Ordering::Relaxed);
            h.link.store(inner.partial_head, Ordering::Relaxed);
            inner.partial_head = slab as u32 + 1;
            inner.partial += 1;
            return;
        }
        h.flags.store(RESIDENT, Ordering::Relaxed);
        h.prev.store(0, Ordering::Relaxed);
        h.link.store(inner.resident_head, Ordering::Relaxed);
        if inner.resident_head != 0 {
            SlabMeta::of(g, k, region, inner.resident_head as usize - 1).header().prev.store(slab as u32 + 1, Ordering::Relaxed);
        } else {
            inner.resident_tail = slab as u32 + 1;
        }
        inner.resident_head = slab as u32 + 1;
        inner.resident += 1;
        let total = RESIDENT_EMPTY.fetch_add(1 << k.slab_shift, Ordering::Relaxed) + (1 << k.slab_shift);
        let budget = empty_budget();
        if total > budget {
            self.purge_oldest(g, k, region, inner, total - budget);
        }
    }

    /// Purge every resident empty slab of this pool (malloc_trim).
    pub fn trim(&self, g: &Geometry, region: usize) {
        let k = &CLASSES[region / BUCKET_SLOTS];
        let _guard = LOCKS.pools[region].0.guard();
        // SAFETY: we hold the lock.
        let inner = unsafe { &mut *self.inner.get() };
        self.purge_oldest(g, k, region, inner, usize::MAX);
    }

    fn unlink_resident(&self, g: &Geometry, k: &ClassInfo, region: usize, inner: &mut Inner, s: usize) {
        let h = SlabMeta::of(g, k, region, s);
        let (prev, next) = (h.header().prev.load(Ordering::Relaxed), h.header().link.load(Ordering::Relaxed));
        if prev != 0 {
            SlabMeta::of(g, k, region, prev as usize - 1).header().link.store(next, Ordering::Relaxed);
        } else {
            inner.resident_head = next;
        }
        if next != 0 {
            SlabMeta::of(g, k, region, next as usize - 1).header().prev.store(prev, Ordering::Relaxed);
        } else {
            inner.resident_tail = prev;
        }
        h.header().flags.store(0, Ordering::Relaxed);
        inner.resident -= 1;
    }

    /// Purge resident empty slabs, oldest first, until `bytes` are given back or none is
    /// left; each purge also takes the resident empty neighbours of its slab (one call).
    fn purge_oldest(&self, g: &Geometry, k: &ClassInfo, region: usize, inner: &mut Inner, mut bytes: usize) {
        let slab_bytes = 1usize << k.slab_shift;
        if slab_bytes < platform::page_size() {
            return; // smaller than a page: cannot be purged alone; they stay resident
        }
        let is_resident = |s: usize| -> bool {
            slab_exists(region, s) && SlabMeta::of(g, k, region, s).header().flags.load(Ordering::Relaxed) & RESIDENT != 0
        };
        while bytes > 0 && inner.resident_tail != 0 {
            let victim = inner.resident_tail as usize - 1;
            let (mut lo, mut hi) = (victim, victim + 1);
            // A run stays inside one segment (the next one is another region's).
            while hi - lo < PURGE_RUN && !Geometry::first_in_segment(k, lo) && is_resident(lo - 1) {
                lo -= 1;
            }
            while hi - lo < PURGE_RUN && !Geometry::first_in_segment(k, hi) && is_resident(hi) {
                hi += 1;
            }
            for s in lo..hi {
                self.unlink_resident(g, k, region, inner, s);
            }
            let n = hi - lo;
            RESIDENT_EMPTY.fetch_sub(n * slab_bytes, Ordering::Relaxed);
            bytes = bytes.saturating_sub(n * slab_bytes);
            let purged = if guardable(k) {
                // Guarded slabs are separate mappings with gaps between them: one call each.
                (lo..hi).fold(true, |ok, s| platform::purge(g.slab_base(region, s) as *mut u8, mapped_len(region, s)) & ok)
            } else {
                platform::purge(g.slab_base(region, lo) as *mut u8, n * slab_bytes)
            };
            if purged {
                self.purges.fetch_add(n as u32, Ordering::Relaxed);
            }
            for s in lo..hi {
                let m = SlabMeta::of(g, k, region, s);
                if purged {
                    // The pages read as zero again: no slot needs a write-after-free check.
                    m.clear_records(k);
                }
                m.header().flags.store(PURGED, Ordering::Relaxed);
                m.header().link.store(inner.purged_head, Ordering::Relaxed);
                inner.purged_head = s as u32 + 1;
                inner.purged += 1;
            }
        }
    }

    /// Create the next slab of this region: commit its memory and metadata and initialise
    /// its free bitmap (all slots free). It is owned by nobody yet (state 0).
    fn grow(&self, g: &Geometry, region: usize, inner: &mut Inner, rng: &mut SecureRng) -> Option<usize> {
        let k = &CLASSES[region / BUCKET_SLOTS];
        let pg = platform::page_size();
        if !inner.initialised {
            // A random first slab in the region's first segment (all regions' first
            // segments lie side by side, in the first row).
            inner.first_slab = rng.below(Geometry::usable_in_first_segment(k) as u32);
            inner.end = inner.first_slab;
            // Mappings start on a page boundary (slabs may be smaller than a 16/64 KiB page).
            inner.heap_committed = ((inner.first_slab as usize) << k.slab_shift) & !(pg - 1);
            inner.initialised = true;
        }
        let begin = inner.first_slab as usize;
        // The gap at the end of a segment: its slabs fall in the slab range (it stays one
        // range) and have metadata (a gap can be a whole granule), but are never mapped,
        // made (their headers' `created` stays 0) nor handed out.
        while (inner.end as usize) < g.max_slabs(k) && Geometry::is_gap(k, inner.end as usize) {
            let gap = inner.end as usize;
            MAPPED_BYTES.fetch_add(crate::heap::slab::meta::chunk_for(g, k, region, gap, false)?, Ordering::Relaxed);
            inner.end += 1;
        }
        let end = inner.end as usize;
        if end >= g.max_slabs(k) {
            return None;
        }
        let slab_bytes = 1usize << k.slab_shift;
        // Heap pages for the new slab: a guarded slab alone, as far as its slots reach (the
        // mapping watermark stays at its end, so the gap is never mapped), any other with the
        // chunk around it, within its segment's usable part. (Offsets are region-linear:
        // the region's segments taken end to end.)
        let seg_start = Geometry::segment_start_of(k, end);
        if inner.heap_committed < seg_start {
            inner.heap_committed = seg_start; // the previous segment's gap stays unmapped
        }
        let need = (end + 1) * slab_bytes;
        let guarded = guardable(k)
            && inner.heap_committed == end * slab_bytes
            && UNGUARDED_FROM[region].load(Ordering::Relaxed) == u32::MAX
            && GUARDED_SLABS.fetch_add(1, Ordering::Relaxed) < GUARDED_SLABS_MAX;
        if guarded {
            let span = slot_span(k);
            let joined = islands::commit(g.region_addr(region, inner.heap_committed), span, crate::tag::prot_flags());
            // Not a mapping of its own (none made, or it joined one: its gap guard markers):
            // no budget used.
            if joined != Some(false) {
                GUARDED_SLABS.fetch_sub(1, Ordering::Relaxed);
            }
            joined?;
            MAPPED_BYTES.fetch_add(span, Ordering::Relaxed);
            inner.heap_committed = need;
        } else if guardable(k) && UNGUARDED_FROM[region].load(Ordering::Relaxed) == u32::MAX {
            // Out of guard budget (or the watermark is past this slab): from here on this
            // region's slabs are mapped whole. Published with the slab (Release below).
            UNGUARDED_FROM[region].store(end as u32, Ordering::Relaxed);
        }
        if need > inner.heap_committed {
            let usable_end = Geometry::segment_usable_end(k, end);
            let to = round_up((inner.heap_committed + COMMIT_CHUNK.max(slab_bytes)).max(need), pg).min(usable_end);
            let at = g.region_addr(region, inner.heap_committed);
            islands::commit(at, to - inner.heap_committed, crate::tag::prot_flags())?;
            MAPPED_BYTES.fetch_add(to - inner.heap_committed, Ordering::Relaxed);
            settle_tags(at, to - inner.heap_committed);
            inner.heap_committed = to;
        }
        // Slab metadata: a chunk of the shared reservation for each heap granule.
        MAPPED_BYTES.fetch_add(crate::heap::slab::meta::chunk_for(g, k, region, end, end == begin)?, Ordering::Relaxed);
        let m = SlabMeta::of(g, k, region, end);
        let n = k.nslots as usize;
        for w in 0..k.words as usize {
            let bits = if (w + 1) * 64 <= n { u64::MAX } else { (1u64 << (n % 64)) - 1 };
            m.free_word(k, w).store(bits, Ordering::Relaxed);
        }
        m.header().nfree.store(n as u32, Ordering::Relaxed);
        m.header().created.store(1, Ordering::Release);
        inner.end = end as u32 + 1;
        SLABS[region].store(begin as u64 | (inner.end as u64) << 32, Ordering::Release);
        Some(end)
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

/// Give every page of fresh or purged heap memory its owned tag (0, what the kernel gives such
/// pages anyway) while the pool lock is held, one granule per page. This makes the tag
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

#[inline]
fn round_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

