//! The interface the C ABI crate (`mie-malloc`, which builds `libmie.so`) is written
//! against. It is not the Rust API (that is the crate root) and is hidden from the
//! documentation; the allocator's internals stay private to this crate.
//!
//! Soundness: safe code must not be able to corrupt the heap through mie. So every
//! function here that gives a block back (and so lets its memory be reused) is `unsafe`;
//! the rest only allocate, read mie's own metadata, or report and stop the process.

pub use crate::heap::types::kind;
pub use crate::heap::{alloc, alloc_as, alloc_zeroed_flag, count_unknown_type, ensure_init, owner_of, slab_metadata_of, token_bucket, trim, usable_size, Caller, Func, Globals, Release};

/// Range checks of the checked C functions (they read only mie's metadata).
pub mod bounds {
    pub use crate::heap::bounds::{check, copy_hinted, copy_learn, hinted, learn_one, object_size, scan_limit, Access};
}

pub mod platform {
    pub use crate::platform::{abort, global_symbol, own_definition, page_size, set_errno};
}

pub mod report {
    pub use crate::report::{fatal, write_code_addr, Kind};
}

pub mod tag {
    pub use crate::tag::untag;
}

/// This heap's address ranges: heap start and length, metadata start and length (zeros if
/// the heap could not be set up). `libmie.so` exports it as `__mie_heap_ranges`, so that a
/// second mie heap in the process (a Rust program's global allocator) keeps clear of them.
pub fn heap_ranges() -> [usize; 4] {
    match ensure_init() {
        Some(g) => [g.geo.heap_base, g.geo.heap_size(), g.geo.meta_base, g.geo.meta_size()],
        None => [0; 4],
    }
}

/// Size classes (for tests that check where blocks land).
pub mod size_class {
    pub use crate::heap::slab::size_class::class_size;
}

/// The bucket of an untyped allocation called from `cs` with the caller's stack pointer
/// `sp` (an allocation wrapper's calls are bucketed by the wrapper's caller).
///
/// # Safety
/// `sp` must be the caller's stack pointer at the call into the allocator.
#[inline(always)]
pub unsafe fn call_site_bucket(cs: usize, sp: usize) -> usize {
    // SAFETY: the caller's guarantee.
    unsafe { crate::heap::call_site_bucket(cs, sp) }
}

/// `malloc(size)` from call site `cs` (bucketed as `call_site_bucket` does): the fast
/// path's block, or what `slow(bucket)` makes of the rest (`alloc_in_bucket` serves it; the
/// C entry point's also sets `errno`).
///
/// # Safety
/// `sp` must be the caller's stack pointer at the call into the allocator.
#[inline(always)]
pub unsafe fn malloc_at_or(size: usize, cs: usize, sp: usize, slow: impl FnOnce(usize) -> *mut u8) -> *mut u8 {
    // SAFETY: the caller's guarantee.
    unsafe { crate::heap::malloc_at_or(size, cs, sp, slow) }
}

/// `malloc_at_or` for a block of allocation kind `kind` (`operator new`'s).
///
/// # Safety
/// As `malloc_at_or`.
#[inline(always)]
pub unsafe fn alloc_at_or(size: usize, cs: usize, sp: usize, kind: u8, slow: impl FnOnce(usize) -> *mut u8) -> *mut u8 {
    // SAFETY: the caller's guarantee.
    unsafe { crate::heap::alloc_at_or(size, cs, sp, kind, slow) }
}

/// `malloc(size)` in `bucket`, past the fast path. Null on exhaustion.
#[inline(always)]
pub fn alloc_in_bucket(size: usize, bucket: usize) -> *mut u8 {
    crate::heap::alloc_in_bucket(size, bucket)
}

/// Free `p` as `free` does (null is ignored; anything but a live mie block is reported and
/// stops the process).
///
/// # Safety
/// `p` must be null or a live block from mie that nothing uses afterwards: its memory is
/// reused.
#[inline(always)]
pub unsafe fn free(p: *mut u8, who: Caller) {
    crate::heap::free_inline(p, who)
}

/// Release `p` the way `r` says it was allocated (`delete[]`, sized frees, ...).
///
/// # Safety
/// As `free`.
#[inline(always)]
pub unsafe fn release(p: *mut u8, who: Caller, r: Release) {
    crate::heap::release(p, who, r)
}

/// Resize `p` as `realloc` does (the old block is released when the block moves).
///
/// # Safety
/// As `free`, for `p`; the returned block replaces it.
#[inline(always)]
pub unsafe fn realloc(p: *mut u8, size: usize, default_bucket: usize, who: Caller) -> *mut u8 {
    crate::heap::realloc(p, size, default_bucket, who)
}
