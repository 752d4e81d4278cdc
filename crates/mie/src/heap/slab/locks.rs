//! Every lock of the heap, side by side in one static. A fork takes them all before and
//! releases them after (`heap::fork_prepare`, `fork_parent`, `fork_child`): each page those
//! writes touch is copied at the write, in the parent and again in the child, at every fork.
//! Here they fill one page (4 KiB: 3 KiB of pools' locks and the rest); spread over the
//! modules that use them they touched 9 pages, 8 more copies per fork in each process.
//!
//! (The metadata arena's lock, `meta::ARENA_LOCK`, is not among them: it is only ever taken
//! with a pool's lock held (a slab's metadata) or the start-up lock (the chunk table), so
//! holding all of those keeps it free.)

use crate::heap::slab::layout::REGION_COUNT;
use crate::platform::lock::Lock;

/// A lock in 8 bytes of its own: eight to a cache line (a pool's lock is taken once per slab
/// a thread takes or gives back, not per block).
#[repr(align(8))]
pub struct SpacedLock(pub Lock);

#[repr(C, align(4096))]
pub struct Locks {
    /// Each pool's: `POOLS[region]`'s is `pools[region]` (`pool.rs`).
    pub pools: [SpacedLock; REGION_COUNT],
    /// Start-up (`heap::ensure_init`).
    pub init: SpacedLock,
    /// The registry of thread caches (`tcache::POOL_LOCK`).
    pub caches: SpacedLock,
    /// The fallback cache of threads that cannot have one of their own (`tcache`).
    pub fallback: SpacedLock,
    /// The large-block table (`large::LARGE`).
    pub large: SpacedLock,
    /// Guarded samples (`guarded::sample`).
    pub sample: SpacedLock,
    /// Guard mode's blocks (`guarded::guard`).
    pub guard: SpacedLock,
}

pub static LOCKS: Locks = Locks {
    pools: [const { SpacedLock(Lock::new()) }; REGION_COUNT],
    init: SpacedLock(Lock::new()),
    caches: SpacedLock(Lock::new()),
    fallback: SpacedLock(Lock::new()),
    large: SpacedLock(Lock::new()),
    sample: SpacedLock(Lock::new()),
    guard: SpacedLock(Lock::new()),
};

const _: () = assert!(core::mem::size_of::<Locks>() == 4096);
