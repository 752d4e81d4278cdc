//! libmie.so loaded in a process whose allocator is not mie's.
//!
//! A library built with `mie cc` needs libmie.so (its typed calls, `__alloc_token_*`, are
//! defined only there), but a program that uses the library without mie as its allocator
//! binds `malloc` and `free` to the C library (which comes before libmie.so in the
//! loader's search order). If the typed calls allocated from mie's heap, the program's
//! `free` would be given blocks its allocator never made. So the typed entry points first
//! ask which allocator the process uses: when it is not this libmie.so's, they hand the
//! call, unchanged but for the type id, to the process's own function of the same name, as
//! a plain build of the library would have called it. Decided once, on the first typed call
//! or at load time, whichever comes first; afterwards a typed call pays one load and branch.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use mie_core::sys::platform;

const UNDECIDED: u8 = 0;
const OURS: u8 = 1;
const FORWARD: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// The process's functions, by these names (the `operator new` forms in the order of
/// `mie_forward_new`'s form number: array bit 0, aligned bit 1, nothrow bit 2).
const NAMES: [&core::ffi::CStr; 17] = [
    c"malloc",
    c"calloc",
    c"realloc",
    c"reallocarray",
    c"aligned_alloc",
    c"memalign",
    c"posix_memalign",
    c"valloc",
    c"pvalloc",
    c"_Znwm",
    c"_Znam",
    c"_ZnwmSt11align_val_t",
    c"_ZnamSt11align_val_t",
    c"_ZnwmRKSt9nothrow_t",
    c"_ZnamRKSt9nothrow_t",
    c"_ZnwmSt11align_val_tRKSt9nothrow_t",
    c"_ZnamSt11align_val_tRKSt9nothrow_t",
];
const MALLOC: usize = 0;
const CALLOC: usize = 1;
const REALLOC: usize = 2;
const REALLOCARRAY: usize = 3;
const ALIGNED_ALLOC: usize = 4;
const MEMALIGN: usize = 5;
const POSIX_MEMALIGN: usize = 6;
const VALLOC: usize = 7;
const PVALLOC: usize = 8;
const NEW: usize = 9;

static FNS: [AtomicUsize; NAMES.len()] = [const { AtomicUsize::new(0) }; NAMES.len()];

/// Whether typed calls go to the process's allocator instead of mie.
#[inline(always)]
pub fn active() -> bool {
    match MODE.load(Ordering::Acquire) {
        OURS => false,
        FORWARD => true,
        _ => decide(),
    }
}

/// Compare the `malloc` the whole process binds to (`dlsym(RTLD_DEFAULT)`) with this
/// library's own. Two threads deciding at once reach the same answer.
#[cold]
#[inline(never)]
fn decide() -> bool {
    let ours = platform::own_definition(decide as *const () as usize, c"malloc");
    let process = platform::global_symbol(c"malloc");
    if process == 0 || ours == 0 || process == ours {
        MODE.store(OURS, Ordering::Release);
        return false;
    }
    for (f, name) in FNS.iter().zip(NAMES) {
        f.store(platform::global_symbol(name), Ordering::Relaxed);
    }
    MODE.store(FORWARD, Ordering::Release);
    true
}

/// Decide at load time (libmie's constructor): true when mie is the process's allocator,
/// so the heap is set up; a process that only forwards never maps it.
pub fn mie_is_the_allocator() -> bool {
    !active()
}

#[inline(always)]
fn f(i: usize) -> usize {
    FNS[i].load(Ordering::Relaxed)
}

/// A missing function (an allocator without `pvalloc`, say) fails the call as the C
/// library's would with no memory.
fn missing<T>(null: *mut T) -> *mut T {
    platform::set_errno(libc::ENOMEM);
    null
}

macro_rules! call {
    ($i:expr, fn($($t:ty),*) -> $r:ty, ($($a:expr),*), $none:expr) => {{
        let p = f($i);
        if p == 0 {
            $none
        } else {
            // SAFETY: `p` is the process's definition of NAMES[$i], a C function of this type.
            let g: extern "C" fn($($t),*) -> $r = unsafe { core::mem::transmute(p) };
            g($($a),*)
        }
    }};
}

pub fn malloc(size: usize) -> *mut c_void {
    call!(MALLOC, fn(usize) -> *mut c_void, (size), missing(core::ptr::null_mut()))
}
pub fn calloc(n: usize, m: usize) -> *mut c_void {
    call!(CALLOC, fn(usize, usize) -> *mut c_void, (n, m), missing(core::ptr::null_mut()))
}
pub fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    call!(REALLOC, fn(*mut c_void, usize) -> *mut c_void, (p, size), missing(core::ptr::null_mut()))
}
pub fn reallocarray(p: *mut c_void, n: usize, m: usize) -> *mut c_void {
    if f(REALLOCARRAY) == 0 {
        let Some(total) = n.checked_mul(m) else { return missing(core::ptr::null_mut()) };
        return realloc(p, total);
    }
    call!(REALLOCARRAY, fn(*mut c_void, usize, usize) -> *mut c_void, (p, n, m), missing(core::ptr::null_mut()))
}
pub fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    call!(ALIGNED_ALLOC, fn(usize, usize) -> *mut c_void, (align, size), missing(core::ptr::null_mut()))
}
pub fn memalign(align: usize, size: usize) -> *mut c_void {
    call!(MEMALIGN, fn(usize, usize) -> *mut c_void, (align, size), missing(core::ptr::null_mut()))
}
pub fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    call!(POSIX_MEMALIGN, fn(*mut *mut c_void, usize, usize) -> c_int, (out, align, size), libc::ENOMEM)
}
pub fn valloc(size: usize) -> *mut c_void {
    call!(VALLOC, fn(usize) -> *mut c_void, (size), missing(core::ptr::null_mut()))
}
pub fn pvalloc(size: usize) -> *mut c_void {
    call!(PVALLOC, fn(usize) -> *mut c_void, (size), missing(core::ptr::null_mut()))
}

/// For shim/new.c: the process's `operator new` of form `form` (bit 0 array, bit 1 aligned,
/// bit 2 nothrow) when typed calls are forwarded, else 0 (mie allocates). The shim calls
/// it itself: a `std::bad_alloc` it throws must not pass through a Rust frame.
#[unsafe(no_mangle)]
pub extern "C" fn mie_forward_new(form: c_int) -> usize {
    if !active() {
        return 0;
    }
    f(NEW + (form as usize & 7))
}
