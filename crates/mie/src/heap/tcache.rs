//! Thread caches: per thread, a small stack of ready slots for every (class, bucket), the
//! thread's quarantine and its statistics. The common malloc and free touch only this and
//! the slot's atomic live bit: no lock. Batches move between a cache and the central bucket
//! under the bucket's lock.
//!
//! Caches are carved from their own mappings (never from the heap), kept on a registry list
//! for statistics, and recycled when a thread exits (its cached slots go back to the buckets).

use core::cell::{Cell, UnsafeCell};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, Ordering};

use super::layout::REGION_COUNT;
use super::quarantine::Quarantine;
use crate::platform::{self, lock::Lock};
use crate::rand::Rng;

/// The largest `cache_cap` of any class.
pub const BIN_CAP: usize = 64;

#[derive(Clone, Copy)]
pub struct Bin {
    pub n: u32,
    pub slots: [usize; BIN_CAP],
}

pub struct TCache {
    pub bins: [Bin; REGION_COUNT],
    pub quarantine: Quarantine,
    pub rng: Rng,
    /// Owner-written counters (relaxed load + store), read by statistics from any thread.
    pub allocs: [AtomicU64; REGION_COUNT],
    pub frees: [AtomicU64; REGION_COUNT],
    pub live_bytes: AtomicI64,
    /// Allocations left until the next guarded sample (0 = draw a new distance).
    pub sample_countdown: u32,
    /// Set while this thread places a sampled block (its stack capture must not sample).
    pub in_sample: bool,
    next: AtomicPtr<TCache>,
    in_use: AtomicBool,
}

impl TCache {
    const fn new() -> Self {
        TCache {
            bins: [Bin { n: 0, slots: [0; BIN_CAP] }; REGION_COUNT],
            quarantine: Quarantine::new(),
            rng: Rng::from_seed(0),
            allocs: [const { AtomicU64::new(0) }; REGION_COUNT],
            frees: [const { AtomicU64::new(0) }; REGION_COUNT],
            live_bytes: AtomicI64::new(0),
            sample_countdown: 0,
            in_sample: false,
            next: AtomicPtr::new(ptr::null_mut()),
            in_use: AtomicBool::new(false),
        }
    }

    /// Single-writer increment: only the owning thread writes these counters.
    #[inline]
    pub fn bump(c: &AtomicU64) {
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    #[inline]
    pub fn add_live(&self, d: i64) {
        self.live_bytes.store(self.live_bytes.load(Ordering::Relaxed).wrapping_add(d), Ordering::Relaxed);
    }
}

/// TLS marker for a thread whose cache was already returned (during thread teardown).
const DEAD: usize = 1;

thread_local! {
    static CURRENT: Cell<*mut TCache> = const { Cell::new(ptr::null_mut()) };
}

/// Every cache ever created, for statistics. Caches are never unmapped, only recycled.
static REGISTRY: AtomicPtr<TCache> = AtomicPtr::new(ptr::null_mut());
pub static POOL_LOCK: Lock = Lock::new();

/// The cache used (under a lock) by threads that cannot have their own: during thread
/// teardown after their cache was returned, or when mapping a cache failed.
struct Fallback(UnsafeCell<TCache>);
// SAFETY: only accessed with FALLBACK_LOCK held.
unsafe impl Sync for Fallback {}
static FALLBACK: Fallback = Fallback(UnsafeCell::new(TCache::new()));
pub static FALLBACK_LOCK: Lock = Lock::new();
static FALLBACK_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Run `f` with the calling thread's cache. Must not be re-entered from inside `f` (nothing
/// on the allocation path allocates).
#[inline(always)]
pub fn with_cache<R>(f: impl FnOnce(&mut TCache) -> R) -> R {
    let p = CURRENT.with(|c| c.get());
    if p as usize > DEAD {
        // SAFETY: CURRENT holds a live cache owned exclusively by this thread.
        return f(unsafe { &mut *p });
    }
    with_cache_slow(p, f)
}

#[cold]
#[inline(never)]
fn with_cache_slow<R>(p: *mut TCache, f: impl FnOnce(&mut TCache) -> R) -> R {
    if p.is_null() {
        if let Some(tc) = attach() {
            // SAFETY: attach returned a cache now owned exclusively by this thread.
            return f(unsafe { &mut *tc });
        }
    }
    let _g = FALLBACK_LOCK.guard();
    // SAFETY: FALLBACK_LOCK serialises every use of the fallback cache.
    let tc = unsafe { &mut *FALLBACK.0.get() };
    if !FALLBACK_REGISTERED.swap(true, Ordering::Relaxed) {
        tc.rng = Rng::from_seed(platform::random_u64());
        register(tc);
    }
    f(tc)
}

fn register(tc: *mut TCache) {
    let mut head = REGISTRY.load(Ordering::Acquire);
    loop {
        // SAFETY: tc is a valid cache not yet visible to other threads.
        unsafe { (*tc).next.store(head, Ordering::Relaxed) };
        match REGISTRY.compare_exchange_weak(head, tc, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// Give this thread a cache: a recycled one or a freshly mapped one (zeroed memory is a
/// valid empty cache).
fn attach() -> Option<*mut TCache> {
    let g = super::ensure_init()?;
    let tc = {
        let _lock = POOL_LOCK.guard();
        let mut found = ptr::null_mut();
        let mut it = REGISTRY.load(Ordering::Acquire);
        while !it.is_null() {
            // SAFETY: registry entries are never unmapped.
            let c = unsafe { &*it };
            if !ptr::eq(it, FALLBACK.0.get()) && !c.in_use.load(Ordering::Relaxed) {
                found = it;
                break;
            }
            it = c.next.load(Ordering::Acquire);
        }
        if found.is_null() {
            found = platform::map_rw(core::mem::size_of::<TCache>()) as *mut TCache;
            if found.is_null() {
                return None;
            }
            super::slab::MAPPED_BYTES.fetch_add(core::mem::size_of::<TCache>(), Ordering::Relaxed);
            register(found);
        }
        // SAFETY: found is a valid cache that no thread uses (in_use is false).
        unsafe {
            (*found).in_use.store(true, Ordering::Relaxed);
            (*found).rng = Rng::from_seed(platform::random_u64() ^ platform::thread_id());
        }
        found
    };
    CURRENT.with(|c| c.set(tc));
    super::fault::ensure_installed();
    // May allocate inside glibc (for high key numbers); CURRENT is already set, so that
    // allocation is served by this cache.
    platform::thread_key_set(g.tc_key, tc.cast());
    Some(tc)
}

/// pthread key destructor: the thread is exiting; return its cached and quarantined slots.
///
/// # Safety
/// Called by pthread with the value `attach` stored for this key: this thread's cache.
pub unsafe extern "C" fn thread_exit(arg: *mut libc::c_void) {
    let tc = arg as *mut TCache;
    if tc.is_null() {
        return;
    }
    // SAFETY: arg is this thread's cache (set by attach); nothing else uses it now.
    let c = unsafe { &mut *tc };
    super::drain_cache(c);
    CURRENT.with(|x| x.set(DEAD as *mut TCache));
    c.in_use.store(false, Ordering::Release);
}

/// Visit every cache (statistics).
pub fn for_each(mut f: impl FnMut(&TCache)) {
    let mut it = REGISTRY.load(Ordering::Acquire);
    while !it.is_null() {
        // SAFETY: registry entries are never unmapped.
        let c = unsafe { &*it };
        f(c);
        it = c.next.load(Ordering::Acquire);
    }
}
