//! Thread caches. Each cache owns slabs (`owner.rs`): per (class, bucket) a bin of shuffled
//! free slots ready for malloc and a list of its slabs with free slots; its quarantine; its
//! notification stack (slabs where other threads freed blocks); its statistics. A thread
//! reaches its cache through one initial-exec TLS word.
//!
//! Caches are never unmapped: when a thread exits, its cache gives back what it can and
//! becomes idle, still owning its non-empty slabs, and the next new thread takes it over.
//! Frees into an idle cache's slabs are collected by the freeing thread itself ("helping"),
//! so memory freed after its owner exited is not stranded.

use crate::heap::types::sites::SiteMemos;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::heap::slab::hook::Hook;
use crate::heap::slab::layout::{region_of, BUCKET_SLOTS, REGION_COUNT};
use crate::heap::slab::size_class::{self, CLASSES, CLASS_COUNT};
use crate::heap::slab::quarantine::Quarantine;
use crate::platform::{self, lock::Lock, tls};
use crate::rand::SecureRng;

/// Run each time a thread attaches its cache: start-up installs the fault handler's check
/// that it is still in place (`diagnose::fault::ensure_installed`).
static ON_ATTACH: Hook<fn()> = Hook::new();

/// Start-up: what runs when a thread attaches its cache.
pub fn on_attach(hook: fn()) {
    ON_ATTACH.install(hook);
}

/// Caches that can exist at once (threads beyond this share a locked fallback cache).
pub const MAX_CACHES: usize = 16384;

/// Each region's free slots ready to be handed out, in random order (a stack per region:
/// the top is next). The counts lie together, apart from the slots: the first malloc of a
/// region reads its count before any slot is stored, and a read of an untouched page maps
/// the zero page, which the first store then faults out again. Together, the counts take
/// that double fault once (a page), not once per region's bin.
///
/// A bin holds its class's `cache_cap` slots (128 for the smallest classes, 4 for the
/// largest), and the bins of one bucket lie side by side in class order (`BIN_AT`): the
/// dozen classes a program uses in a bucket share a few pages. (Bins of 128 slots each,
/// one per region in region order, put every class's bin on a page of its own: a page
/// fault at its first use, and a copy-on-write fault at its first use after every fork.)
pub struct Bins {
    pub n: [u32; REGION_COUNT],
    slots: [usize; BIN_SLOTS],
}

/// Where each region's bin starts in `Bins::slots`: bucket by bucket, class by class.
static BIN_AT: [u16; REGION_COUNT] = bin_layout().0;
/// Slots of all bins together.
const BIN_SLOTS: usize = bin_layout().1;

const fn bin_layout() -> ([u16; REGION_COUNT], usize) {
    let mut at = [0u16; REGION_COUNT];
    let mut next = 0;
    let mut bucket = 0;
    while bucket < BUCKET_SLOTS {
        let mut class = 0;
        while class < CLASS_COUNT {
            at[region_of(class, bucket)] = next as u16;
            next += size_class::make(class).cache_cap as usize;
            class += 1;
        }
        bucket += 1;
    }
    assert!(next <= u16::MAX as usize);
    (at, next)
}

impl Bins {
    /// The count and the slots of `region`'s bin (its class's `cache_cap` of them).
    #[inline(always)]
    pub fn get_mut(&mut self, region: usize) -> (&mut u32, &mut [usize]) {
        let (at, len) = (BIN_AT[region] as usize, CLASSES[region / BUCKET_SLOTS].cache_cap as usize);
        (&mut self.n[region], &mut self.slots[at..at + len])
    }

    /// As `get_mut`, unchecked: the count, and the bin's first slot (its class's
    /// `cache_cap` slots from there are the bin's).
    ///
    /// # Safety
    /// `region < REGION_COUNT`.
    #[inline(always)]
    pub unsafe fn get_unchecked_mut(&mut self, region: usize) -> (&mut u32, *mut usize) {
        // SAFETY: the caller's guarantee; BIN_AT's entries lie inside `slots` (bin_layout).
        unsafe {
            let at = *BIN_AT.get_unchecked(region) as usize;
            (self.n.get_unchecked_mut(region), self.slots.as_mut_ptr().add(at))
        }
    }

    /// The slots now in `region`'s bin.
    #[inline(always)]
    pub fn held(&self, region: usize) -> &[usize] {
        let at = BIN_AT[region] as usize;
        &self.slots[at..at + self.n[region] as usize]
    }
}

/// A cache's slabs of one region.
#[derive(Clone, Copy)]
pub struct Owned {
    /// Head of the list of owned slabs with free slots (slab index + 1; 0 = none).
    pub partial: u32,
    /// Slabs on that list whose every slot is free.
    pub empties: u32,
}

/// Written by other threads (pushes of slabs with new remote frees): its own cache line.
#[repr(C, align(64))]
pub struct Notify {
    pub head: AtomicU32,
}

/// The part of a cache other threads touch: its notification stack, whether a thread uses
/// it, its statistics (single writer: the owner; read by anyone).
#[repr(C)]
pub struct Shared {
    pub id: u32,
    pub notify: Notify,
    /// A thread uses the cache (or a helper is collecting for it).
    pub in_use: AtomicBool,
    pub allocs: [AtomicU64; REGION_COUNT],
    pub frees: [AtomicU64; REGION_COUNT],
    /// Allocations that came with a compiler type id (AllocToken), and those of them whose
    /// type the compiler could not see (bucketed as untyped).
    pub typed: AtomicU64,
    pub unknown_type: AtomicU64,
    next: AtomicPtr<Entry>,
}

/// The owner's part: only the thread using the cache touches it (`with_cache`).
#[repr(C)]
pub struct TCache {
    pub id: u32,
    /// Allocations left until the next guarded sample (0 = draw a new distance).
    pub sample_countdown: u32,
    /// Set while this thread places a sampled block (its stack capture must not sample).
    pub in_sample: bool,
    /// The fast paths may run: the options are the ones they are written for (canaries,
    /// zeroing and its check on, a quarantine whose byte budget holds every small slot,
    /// no stacks recorded) and canary patterns come from the CPU's AES instructions. Fixed
    /// when the cache is made; otherwise every call takes the general paths, which read the
    /// options.
    pub fast: bool,
    /// Remote frees wait in the outbox to be published in batches. Not in the shared
    /// fallback cache, which any thread may use last (`remote.rs`).
    pub batch_remote: bool,
    pub rng: SecureRng,
    /// With MTE: the block this thread is releasing, while its canary is read (through the
    /// caller's tagged pointer). A tag fault on it then means another thread freed it at
    /// the same moment: a double free (`diagnose/fault.rs`). 0 otherwise.
    pub freeing: usize,
    /// Recent call sites of untyped allocations and their buckets (`types/sites.rs`).
    pub sites: SiteMemos,
    /// Recent AllocToken ids and their buckets + 1 (0: empty): the PRF stays off the typed
    /// allocation path. Per thread, so an entry is never read half-written.
    pub token_ids: [u64; TOKEN_CACHE],
    pub token_buckets: [u8; TOKEN_CACHE],
    /// The blocks the last checked read and write were in, and the last large block a
    /// checked call was in (`bounds::Hint`).
    pub hints: crate::heap::slab::hints::Hints,
    /// Random bits for the quarantine's random stage, used 4 at a time.
    pub qbits: u64,
    pub bins: Bins,
    /// Regions this cache has ever refilled a bin of (bits; never cleared): the only ones
    /// whose bins can hold slots. Walks over every bin (at exit, at thread exit) visit
    /// these only: the bins are 130 KiB, and reading each one's count mapped every page of
    /// them (about 50 page faults at every process exit).
    pub used: [u64; REGION_COUNT.div_ceil(64)],
    pub owned: [Owned; REGION_COUNT],
    pub quarantine: Quarantine,
    /// Frees of blocks in other caches' slabs, not yet published to them (`remote.rs`).
    pub outbox: crate::heap::slab::remote::Outbox,
}

/// One cache: both parts, in one mapping.
#[repr(C)]
pub struct Entry {
    pub shared: Shared,
    local: UnsafeCell<TCache>,
}

impl TCache {
    /// The shared part of this cache: the one in front of it in its entry (worked out from
    /// the cache's own address, not loaded: the allocation counters are updated on every
    /// malloc and free).
    #[inline(always)]
    pub fn shared(&self) -> &Shared {
        let at = (self as *const TCache as usize) - core::mem::offset_of!(Entry, local);
        // SAFETY: every TCache is the `local` part of an `Entry` (`init_entry`), whose
        // `shared` part is at the offset taken off; entries are never unmapped.
        unsafe { &(*(at as *const Entry)).shared }
    }

    /// Count an allocation in `region` (single writer: this thread). Live bytes follow from
    /// the counts and the class sizes (statistics count a small block's whole slot).
    #[inline(always)]
    pub fn count_alloc(&self, region: usize) {
        // SAFETY: region < REGION_COUNT for every caller (it indexed a bin already).
        let c = unsafe { self.shared().allocs.get_unchecked(region) };
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Count an allocation made with a compiler type id (`unknown`: the compiler's token
    /// for a type it could not see).
    #[inline(always)]
    pub fn count_typed(&self, unknown: bool) {
        let s = self.shared();
        let c = if unknown { &s.unknown_type } else { &s.typed };
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    #[inline(always)]
    pub fn count_free(&self, region: usize) {
        // SAFETY: as in count_alloc.
        let c = unsafe { self.shared().frees.get_unchecked(region) };
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// A random index into the quarantine's random stage (4 bits of a buffered random
    /// word; the word is refilled when its bits run out).
    #[inline(always)]
    pub fn stage_index(&mut self) -> usize {
        if self.qbits <= 0xf {
            self.qbits = self.rng.next_u64() | 1 << 63;
        }
        let j = self.qbits as usize & 0xf;
        self.qbits >>= 4;
        j
    }

}

/// The regions whose bit is set in `used` (a copy of `TCache::used`), in order.
pub fn regions_in(used: [u64; REGION_COUNT.div_ceil(64)]) -> impl Iterator<Item = usize> {
    used.into_iter().enumerate().flat_map(|(w, mut bits)| {
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(w * 64 + i)
        })
    })
}

/// TLS value of a thread whose cache was already returned (during thread teardown).
pub const DEAD: usize = 1;

/// Entries of a thread's AllocToken cache.
pub const TOKEN_CACHE: usize = 64;

/// The block this thread is releasing (see `TCache::freeing`), or 0. Reads only this
/// thread's cache: safe in a signal handler.
pub fn freeing() -> usize {
    let tcp = tls::get();
    if tcp <= DEAD {
        return 0;
    }
    // SAFETY: a live TLS word is this thread's own cache; one word read.
    unsafe { (*(tcp as *const TCache)).freeing }
}

/// Mark the block this thread is releasing (the slow path; the thread's first free may
/// come before it has a cache, so this attaches one, as the release will anyway).
pub fn set_freeing(p: usize) {
    with_cache(|tc| tc.freeing = p);
}

/// Caches by id (1-based); never unmapped.
#[unsafe(link_section = ".bss.mie_big")]
static CACHES: [AtomicPtr<Entry>; MAX_CACHES + 1] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CACHES + 1];
static NEXT_ID: AtomicU32 = AtomicU32::new(1);
/// Every cache, for statistics and recycling.
static REGISTRY: AtomicPtr<Entry> = AtomicPtr::new(ptr::null_mut());
pub static POOL_LOCK: &Lock = &crate::heap::slab::locks::LOCKS.caches.0;

/// The shared part of the cache with this id (ids come from slab headers).
#[inline]
pub fn by_id(id: u32) -> Option<&'static Shared> {
    let p = CACHES.get(id as usize)?.load(Ordering::Acquire);
    // SAFETY: registered caches are never unmapped; the shared part is all atomics.
    (!p.is_null()).then(|| unsafe { &(*p).shared })
}

/// Cache shared, under a lock, by threads that cannot have their own (during thread
/// teardown, after their cache was returned, or beyond MAX_CACHES).
///
/// All zero until its first use, as a fresh mapping's entry (`attach`), which `init_entry`
/// then sets up: so it lies in `.bss`, not in the library's file (a whole cache, mostly
/// bins, was 250 KiB of initialised data).
struct Fallback(UnsafeCell<core::mem::MaybeUninit<Entry>>);
// SAFETY: the private part is only accessed with FALLBACK_LOCK held; the rest is atomics.
unsafe impl Sync for Fallback {}
#[unsafe(link_section = ".bss.mie_big")]
static FALLBACK: Fallback = Fallback(UnsafeCell::new(core::mem::MaybeUninit::zeroed()));

impl Fallback {
    fn entry(&self) -> *mut Entry {
        self.0.get().cast()
    }
}
pub static FALLBACK_LOCK: &Lock = &crate::heap::slab::locks::LOCKS.fallback.0;
static FALLBACK_READY: AtomicBool = AtomicBool::new(false);

/// Run `f` with the calling thread's cache. Must not be re-entered from inside `f` (nothing
/// on the allocation path allocates).
#[inline(always)]
pub fn with_cache<R>(f: impl FnOnce(&mut TCache) -> R) -> R {
    let p = tls::get();
    if p > DEAD {
        // SAFETY: the TLS word holds the private part of a cache owned by this thread.
        return f(unsafe { &mut *(p as *mut TCache) });
    }
    with_cache_slow(p, f)
}

#[cold]
#[inline(never)]
fn with_cache_slow<R>(p: usize, f: impl FnOnce(&mut TCache) -> R) -> R {
    if p == 0 {
        if let Some(tc) = attach() {
            // SAFETY: attach returned a cache now owned exclusively by this thread.
            return f(unsafe { &mut *tc });
        }
    }
    let _g = FALLBACK_LOCK.guard();
    let e = FALLBACK.entry();
    if !FALLBACK_READY.load(Ordering::Relaxed) {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let id = if (id as usize) <= MAX_CACHES { id } else { 0 };
        // SAFETY: FALLBACK_LOCK is held; the shared id is written before the cache is
        // published (CACHES, REGISTRY), the private part is ours.
        unsafe { init_entry(e, id, platform::random_u64()) };
        FALLBACK_READY.store(true, Ordering::Relaxed);
    }
    // SAFETY: FALLBACK_LOCK serialises every use of the fallback cache's private part.
    f(unsafe { &mut *(*e).local.get() })
}

/// Whether options let the fast paths run (`TCache::fast`).
fn fast_paths_allowed(o: &crate::options::Options) -> bool {
    let small_quarantine = (o.quarantine as usize + crate::heap::slab::quarantine::RANDOM_STAGE) * crate::heap::slab::size_class::FAST_MAX;
    o.canary && o.zero_on_free && o.write_after_free_check && !o.stacks && !o.guard && o.quarantine > 0 && o.quarantine_bytes >= small_quarantine
}

/// Give a new cache entry its id and seed, and publish it.
///
/// # Safety
/// `e` is a cache entry nobody else can reach yet: a reused one, or all zero (a fresh
/// mapping, the fallback cache before its first use), which this makes valid.
unsafe fn init_entry(e: *mut Entry, id: u32, seed: u64) {
    // SAFETY: e is exclusively ours (the caller's guarantee).
    unsafe {
        core::ptr::addr_of_mut!((*e).shared.id).write(id);
        (*e).shared.in_use.store(true, Ordering::Relaxed);
        let tc = (*e).local.get();
        (*tc).id = id;
        // (Written in place: in a zeroed entry the generator's key reference is null.)
        core::ptr::addr_of_mut!((*tc).rng).write(SecureRng::new(&crate::heap::globals().placement, seed));
        (*tc).quarantine.size_for(crate::heap::globals().opts.quarantine as usize);
        (*tc).fast = fast_paths_allowed(&crate::heap::globals().opts) && crate::heap::globals().canary.has_aes();
        (*tc).batch_remote = !ptr::eq(e, FALLBACK.entry());
    }
    if id != 0 {
        CACHES[id as usize].store(e, Ordering::Release);
    }
    let mut head = REGISTRY.load(Ordering::Acquire);
    loop {
        // SAFETY: e is valid; its next field is only read after it is published below.
        unsafe { (*e).shared.next.store(head, Ordering::Relaxed) };
        match REGISTRY.compare_exchange_weak(head, e, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// Threads that hold a cache now.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// In a fork child only the forking thread exists.
pub fn after_fork_child() {
    // Stored only if it changes: a write copies the page (the parent's, shared after fork).
    let n = (tls::get() > DEAD) as usize;
    if THREADS.load(Ordering::Relaxed) != n {
        THREADS.store(n, Ordering::Relaxed);
    }
}

/// How many threads use the heap now (hold a cache).
#[inline]
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// Give this thread a cache: an idle one or a freshly mapped one (zeroed memory is a valid
/// empty cache).
fn attach() -> Option<*mut TCache> {
    let g = crate::heap::ensure_init()?;
    let tc = {
        let _lock = POOL_LOCK.guard();
        let mut found = ptr::null_mut();
        let mut it = REGISTRY.load(Ordering::Acquire);
        while !it.is_null() {
            // SAFETY: registry entries are never unmapped.
            let c = unsafe { &(*it).shared };
            if !ptr::eq(it, FALLBACK.entry()) && c.in_use.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                found = it;
                break;
            }
            it = c.next.load(Ordering::Acquire);
        }
        if found.is_null() {
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            if id as usize > MAX_CACHES {
                return None;
            }
            found = platform::map_rw(core::mem::size_of::<Entry>()) as *mut Entry;
            if found.is_null() {
                return None;
            }
            crate::heap::slab::pool::MAPPED_BYTES.fetch_add(core::mem::size_of::<Entry>(), Ordering::Relaxed);
            // SAFETY: a fresh, zeroed mapping (a valid empty entry) nobody else can reach.
            unsafe { init_entry(found, id, platform::random_u64()) };
        } else {
            // SAFETY: found is held exclusively (in_use set by us).
            unsafe { (*(*found).local.get()).rng = SecureRng::new(&crate::heap::globals().placement, platform::random_u64()) };
        }
        // SAFETY: found is a valid entry, held by this thread.
        unsafe { (*found).local.get() }
    };
    tls::set(tc as usize);
    THREADS.fetch_add(1, Ordering::Relaxed);
    if let Some(hook) = ON_ATTACH.get() {
        hook();
    }
    // May allocate inside glibc (for high key numbers); the TLS word is already set, so that
    // allocation is served by this cache.
    platform::thread_key_set(g.tc_key, tc.cast());
    crate::heap::cache_attached();
    Some(tc)
}

/// pthread key destructor: the thread is exiting; its cache gives back what it holds and
/// becomes idle.
///
/// # Safety
/// Called by pthread with the value `attach` stored for this key: this thread's cache.
pub unsafe extern "C" fn thread_exit(arg: *mut libc::c_void) {
    let tc = arg as *mut TCache;
    if tc.is_null() {
        return;
    }
    let Some(g) = crate::heap::ensure_init() else { return };
    // SAFETY: arg is this thread's cache (set by attach); nothing else uses it now.
    let c = unsafe { &mut *tc };
    crate::heap::slab::owner::drain(g, c, "thread exit");
    // The thread is gone: its slabs with free slots go back to the pools, where any thread
    // takes them (full ones stay with the idle cache until frees reach them).
    crate::heap::slab::owner::give_back(g, c, false);
    tls::set(DEAD);
    THREADS.fetch_sub(1, Ordering::Relaxed);
    release(c, g);
}

/// Mark a cache idle; if frees arrived meanwhile and nobody is collecting them, collect them
/// first (SeqCst pairs with `help`: either the freeing thread sees the cache idle, or we see
/// its notification).
fn release(c: &mut TCache, g: &'static crate::heap::Globals) {
    let s = c.shared() as *const Shared;
    // SAFETY: the shared part outlives the cache's use; only atomics are touched.
    let s = unsafe { &*s };
    loop {
        s.in_use.store(false, Ordering::SeqCst);
        if s.notify.head.load(Ordering::SeqCst) == 0 || s.in_use.compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return;
        }
        crate::heap::slab::owner::collect(g, c, "free");
    }
}

/// After notifying cache `id` of a remote free: if no thread uses it, collect for it.
pub fn help(id: u32) {
    let Some(e) = CACHES.get(id as usize).map(|c| c.load(Ordering::Acquire)).filter(|e| !e.is_null()) else { return };
    // SAFETY: registered entries are never unmapped.
    let s = unsafe { &(*e).shared };
    if s.in_use.load(Ordering::SeqCst) || s.in_use.compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed).is_err() {
        return;
    }
    let Some(g) = crate::heap::ensure_init() else { return };
    // SAFETY: in_use was false and we set it: the private part is ours until released.
    let c = unsafe { &mut *(*e).local.get() };
    crate::heap::slab::owner::collect(g, c, "free");
    release(c, g);
}

/// Visit every cache's shared part (statistics).
pub fn for_each(mut f: impl FnMut(&Shared)) {
    let mut it = REGISTRY.load(Ordering::Acquire);
    while !it.is_null() {
        // SAFETY: registry entries are never unmapped.
        let c = unsafe { &(*it).shared };
        f(c);
        it = c.next.load(Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_in_lists_the_set_bits_in_order() {
        let mut used = [0u64; REGION_COUNT.div_ceil(64)];
        let want = [0usize, 5, 63, 64, 200, REGION_COUNT - 1];
        for r in want {
            used[r / 64] |= 1 << (r % 64);
        }
        assert_eq!(regions_in(used).collect::<Vec<_>>(), want);
        assert_eq!(regions_in([0; REGION_COUNT.div_ceil(64)]).count(), 0);
    }

    #[test]
    fn bins_are_disjoint_and_a_bucket_s_lie_together() {
        // Every slot of every bin belongs to exactly one bin, inside the array.
        let mut owner = vec![usize::MAX; BIN_SLOTS];
        for r in 0..REGION_COUNT {
            let (at, cap) = (BIN_AT[r] as usize, CLASSES[r / BUCKET_SLOTS].cache_cap as usize);
            assert!(cap > 0 && at + cap <= BIN_SLOTS);
            for o in &mut owner[at..at + cap] {
                assert_eq!(*o, usize::MAX, "bins overlap at region {r}");
                *o = r;
            }
        }
        assert!(owner.iter().all(|&o| o != usize::MAX), "a slot no bin uses");
        // A bucket's bins, class after class, with nothing of another bucket between them.
        for b in 0..BUCKET_SLOTS {
            for c in 1..CLASS_COUNT {
                let (prev, this) = (region_of(c - 1, b), region_of(c, b));
                assert_eq!(BIN_AT[this] as usize, BIN_AT[prev] as usize + CLASSES[c - 1].cache_cap as usize);
            }
        }
        // get_mut hands out exactly the region's slots; a full bin's last slot is the end.
        // SAFETY: Bins holds integers only: all zero is a valid value (every bin empty).
        let mut bins: Box<Bins> = unsafe { Box::new_zeroed().assume_init() };
        let r = region_of(CLASS_COUNT - 1, BUCKET_SLOTS - 1);
        let (_, slots) = bins.get_mut(r);
        assert_eq!(slots.len(), CLASSES[CLASS_COUNT - 1].cache_cap as usize);
        slots[slots.len() - 1] = 7;
        assert_eq!(bins.slots[BIN_SLOTS - 1], 7);
    }
}
