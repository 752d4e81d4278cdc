//! The Rust front end: `#[global_allocator]` and the typed-allocation API.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: mie::Mie = mie::Mie;
//! ```
//!
//! Untyped Rust allocations cannot see their call site (they arrive through the standard
//! library's allocation shim); they are bucketed by their layout, so blocks of different
//! exact sizes within one size class do not share slots. Types that deserve their own
//! bucket use [`TypedBox`] or [`alloc_typed`] with a [`TypeKey`].

use core::alloc::{GlobalAlloc, Layout};
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use crate::heap::{self, Caller};

/// Bytes from `p` to the end of the heap block it points into (0 if the block is freed);
/// `usize::MAX` when `p` is not in a block mie can bound (stack, globals, other memory).
/// For range checks of one's own: `n <= mie::object_size(p)` means `p[..n]` stays inside.
pub fn object_size(p: *const u8) -> usize {
    heap::bounds::object_size(p as usize)
}

/// `core::ptr::copy` (memmove semantics) with mie's range check first: if `dst` or `src`
/// points into a heap block and `n` bytes would run past its end, the process stops with a
/// heap-buffer-overflow report before any byte is copied.
///
/// # Safety
/// As `core::ptr::copy`: both ranges must be valid for `n` bytes (the check catches the
/// heap-block overruns among the violations, not all of them).
pub unsafe fn checked_copy(dst: *mut u8, src: *const u8, n: usize) {
    use heap::bounds::{check, Access};
    check(dst as usize, n, Access::Write, "mie::checked_copy", 0);
    check(src as usize, n, Access::Read, "mie::checked_copy", 0);
    // SAFETY: the caller guarantees both ranges; mie checked the heap-block bounds.
    unsafe { core::ptr::copy(src, dst, n) };
}

/// The mie allocator as a Rust global allocator.
pub struct Mie;

const RUST_CALLER: Caller = crate::caller!("Rust dealloc", 0);

#[inline]
fn untyped_bucket() -> usize {
    match heap::ensure_init() {
        Some(g) => g.keys.for_call_site(0),
        None => 1,
    }
}

/// The bucket of an untyped Rust allocation: by its layout (`Keys::for_layout`).
#[inline]
fn layout_bucket(layout: Layout) -> usize {
    match heap::ensure_init() {
        Some(g) => g.keys.for_layout(layout.size(), layout.align()),
        None => 1,
    }
}

// SAFETY: alloc returns blocks of at least layout.size() bytes aligned to layout.align(), or
// null; dealloc/realloc accept exactly the blocks this allocator returned.
unsafe impl GlobalAlloc for Mie {
    // Each method calls a function of this crate that, in a build with debug assertions (a
    // debug build), is not `#[inline]`: its code is then compiled here, with this crate's
    // optimisation level, instead of being instantiated unoptimised in the program's crate
    // (2 M boxes: 0.85 s against 0.25 s). In a release build they inline as before.
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        rust_alloc(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        rust_alloc_zeroed(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the GlobalAlloc contract: ptr is a live block of this allocator.
        unsafe { rust_dealloc(ptr) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the GlobalAlloc contract: ptr is a live block of `layout`.
        unsafe { rust_realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

#[cfg_attr(not(debug_assertions), inline)]
fn rust_alloc(size: usize, align: usize) -> *mut u8 {
    // SAFETY: a Layout's size and alignment come in as they were in the Layout.
    let layout = unsafe { Layout::from_size_align_unchecked(size, align) };
    heap::alloc(size, align, layout_bucket(layout))
}

#[cfg_attr(not(debug_assertions), inline)]
fn rust_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    // SAFETY: as in rust_alloc.
    let layout = unsafe { Layout::from_size_align_unchecked(size, align) };
    let (p, zero) = heap::alloc_zeroed_flag(size, align, layout_bucket(layout));
    if !p.is_null() && !zero {
        // SAFETY: p is a fresh block of `size` bytes.
        unsafe { core::ptr::write_bytes(p, 0, size) };
    }
    p
}

/// # Safety
/// `ptr` is a live block from `Mie`.
#[cfg_attr(not(debug_assertions), inline)]
unsafe fn rust_dealloc(ptr: *mut u8) {
    heap::free_inline(ptr, RUST_CALLER)
}

/// # Safety
/// `ptr` is a live block from `Mie` of `size` bytes aligned to `align`.
#[cfg_attr(not(debug_assertions), inline)]
unsafe fn rust_realloc(ptr: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
    // SAFETY: as in rust_alloc.
    let layout = unsafe { Layout::from_size_align_unchecked(size, align) };
    if align <= 16 {
        // A small block keeps its bucket when it moves; a large one has none and takes
        // the bucket of its new layout.
        let new_layout = Layout::from_size_align(new_size, align).unwrap_or(layout);
        return heap::realloc(ptr, new_size, layout_bucket(new_layout), RUST_CALLER);
    }
    let q = heap::alloc(new_size, align, layout_bucket(Layout::from_size_align(new_size, align).unwrap_or(layout)));
    if !q.is_null() {
        // SAFETY: both blocks are live and distinct; copy the smaller size.
        unsafe { core::ptr::copy_nonoverlapping(ptr, q, size.min(new_size)) };
        heap::free(ptr, RUST_CALLER);
    }
    q
}

/// Identifies a type for bucket selection: a 64-bit hash plus "contains no pointers".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeKey {
    hash: u64,
    pure_data: bool,
}

/// FNV-1a over the bytes a `TypeId` hashes to: stable within a process, no allocation.
struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
}

impl TypeKey {
    /// A type that may contain pointers: goes to a pointer bucket chosen by its identity.
    pub fn of<T: ?Sized + 'static>() -> Self {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        core::any::TypeId::of::<T>().hash(&mut h);
        TypeKey { hash: h.finish(), pure_data: false }
    }

    /// A type the caller asserts holds no pointers (bytes, numbers): the data bucket.
    pub fn pure_data<T: ?Sized + 'static>() -> Self {
        TypeKey { pure_data: true, ..Self::of::<T>() }
    }

    /// From an explicit 64-bit id (e.g. a hash computed by a code generator).
    pub const fn from_raw(hash: u64, pure_data: bool) -> Self {
        TypeKey { hash, pure_data }
    }

    /// The bucket this key maps to in this process (random per process).
    pub fn bucket(&self) -> usize {
        match heap::ensure_init() {
            Some(g) => g.keys.for_rust_type(self.hash, self.pure_data),
            None => 1,
        }
    }
}

/// Allocate a block for `layout` in the bucket of `key`. Null on exhaustion.
pub fn alloc_typed(layout: Layout, key: TypeKey) -> *mut u8 {
    heap::alloc(layout.size(), layout.align(), key.bucket())
}

/// Free a block from [`alloc_typed`] (or any mie block).
///
/// # Safety
/// `p` must be null or a live block returned by mie; it must not be used afterwards.
/// (An invalid `p` is still caught and reported, but the call is not sound.)
pub unsafe fn free(p: *mut u8) {
    heap::free(p, crate::caller!("mie::free", 0))
}

/// Resize a block from [`alloc_typed`] (or any mie block) to `new_size` bytes, as C's
/// `realloc`: a small block keeps its bucket when it moves (a large block, which has none,
/// goes to the untyped bucket). Null on exhaustion, and then `p` is untouched.
///
/// # Safety
/// `p` must be null or a live block returned by mie; after a non-null return it must not be
/// used (the returned block replaces it).
pub unsafe fn realloc(p: *mut u8, new_size: usize) -> *mut u8 {
    heap::realloc(p, new_size, untyped_bucket(), crate::caller!("mie::realloc", 0))
}

/// Bytes usable in a live block (its requested size). Aborts with a report for anything else.
pub fn usable_size(p: *const u8) -> usize {
    heap::usable_size(p, crate::caller!("mie::usable_size", 0))
}

/// (slot size, bucket) of the small block containing `p`, or `None` for large blocks and
/// foreign memory. A diagnostic: it reveals no more than the address itself.
pub fn owner_of(p: *const u8) -> Option<(usize, usize)> {
    heap::owner_of(p)
}

/// A box whose memory comes from the bucket of its type, so a freed `TypedBox<A>` slot is
/// never reused for a `TypedBox<B>` in another bucket.
pub struct TypedBox<T: 'static> {
    ptr: NonNull<T>,
    _own: PhantomData<T>,
}

impl<T: 'static> TypedBox<T> {
    /// Allocate in the bucket of `TypeKey::of::<T>()`; calls the Rust OOM handler on exhaustion.
    pub fn new(value: T) -> Self {
        Self::new_in(value, TypeKey::of::<T>())
    }

    /// Allocate with an explicit key (e.g. `TypeKey::pure_data::<T>()`).
    pub fn new_in(value: T, key: TypeKey) -> Self {
        let layout = Layout::new::<T>();
        if layout.size() == 0 {
            return TypedBox { ptr: NonNull::dangling(), _own: PhantomData };
        }
        let p = alloc_typed(layout, key) as *mut T;
        let Some(ptr) = NonNull::new(p) else { std::alloc::handle_alloc_error(layout) };
        // SAFETY: ptr is a fresh, suitably aligned block for one T.
        unsafe { ptr.as_ptr().write(value) };
        TypedBox { ptr, _own: PhantomData }
    }

    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }
}

impl<T: 'static> Deref for TypedBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: ptr points to a live, initialised T owned by this box.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: 'static> DerefMut for TypedBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: ptr points to a live, initialised T owned uniquely by this box.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: 'static> Drop for TypedBox<T> {
    fn drop(&mut self) {
        // SAFETY: we own the T; drop it in place, then free its block (if it has one).
        unsafe {
            core::ptr::drop_in_place(self.ptr.as_ptr());
            if core::mem::size_of::<T>() != 0 {
                free(self.ptr.as_ptr().cast());
            }
        }
    }
}

// SAFETY: TypedBox owns its T like Box does.
unsafe impl<T: Send + 'static> Send for TypedBox<T> {}
// SAFETY: shared access only hands out &T.
unsafe impl<T: Sync + 'static> Sync for TypedBox<T> {}
