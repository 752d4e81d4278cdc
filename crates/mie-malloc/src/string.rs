//! Bounds-checked memory and string functions: `memcpy`, `memmove`, `mempcpy`, `memset`,
//! `strcpy`, `stpcpy`, `strncpy`, `strcat`, `strncat`, `memccpy`, `wmemcpy`, `wmemmove`,
//! `wmemset`, the reads into a buffer `read`, `pread`, `recv`, `fread`, `fgets`, and glibc's
//! `__*_chk` fortify forms of them.
//!
//! Each works out how many bytes it will read and write, asks the heap whether those ranges
//! stay inside the blocks the pointers point into (`heap::bounds::check`), and only then
//! does the work with the C library's own implementation, found with
//! `dlsym(RTLD_NEXT, ...)` when libmie.so is loaded. A range that runs past a block's
//! requested size aborts with a heap-buffer-overflow report before a byte is touched;
//! pointers outside mie's heap pass through after one range compare.
//!
//! Before the C library's functions are found (very early in start-up, and while `dlsym`
//! itself runs) plain byte loops stand in.

use core::arch::naked_asm;
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use mie_core::sys::bounds::{self, Access};

type MemFn = unsafe extern "C" fn(*mut c_void, *const c_void, usize) -> *mut c_void;
type SetFn = unsafe extern "C" fn(*mut c_void, c_int, usize) -> *mut c_void;
type LenFn = unsafe extern "C" fn(*const c_char) -> usize;
type NLenFn = unsafe extern "C" fn(*const c_char, usize) -> usize;
type ChrFn = unsafe extern "C" fn(*const c_void, c_int, usize) -> *mut c_void;
type WSetFn = unsafe extern "C" fn(*mut libc::wchar_t, libc::wchar_t, usize) -> *mut libc::wchar_t;
type FailFn = unsafe extern "C" fn() -> !;
type ReadFn = unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;
type PreadFn = unsafe extern "C" fn(c_int, *mut c_void, usize, i64) -> isize;
type RecvFn = unsafe extern "C" fn(c_int, *mut c_void, usize, c_int) -> isize;
type FreadFn = unsafe extern "C" fn(*mut c_void, usize, usize, *mut libc::FILE) -> usize;
type FgetsFn = unsafe extern "C" fn(*mut c_char, c_int, *mut libc::FILE) -> *mut c_char;

/// The C library's implementations (0 until found; `memcpy` and `memmove` are in
/// `COPY`).
struct Real {
    memset: AtomicUsize,
    strlen: AtomicUsize,
    strnlen: AtomicUsize,
    memchr: AtomicUsize,
    wmemset: AtomicUsize,
    chk_fail: AtomicUsize,
    read: AtomicUsize,
    pread: AtomicUsize,
    recv: AtomicUsize,
    fread: AtomicUsize,
    fgets: AtomicUsize,
}

static REAL: Real = Real {
    memset: AtomicUsize::new(0),
    strlen: AtomicUsize::new(0),
    strnlen: AtomicUsize::new(0),
    memchr: AtomicUsize::new(0),
    wmemset: AtomicUsize::new(0),
    chk_fail: AtomicUsize::new(0),
    read: AtomicUsize::new(0),
    pread: AtomicUsize::new(0),
    recv: AtomicUsize::new(0),
    fread: AtomicUsize::new(0),
    fgets: AtomicUsize::new(0),
};
/// The C library's `memcpy` and `memmove`, and until they are found byte loops that stand
/// in: never null, so the checked entries jump through them without testing.
struct CopyFns {
    memcpy: AtomicPtr<()>,
    memmove: AtomicPtr<()>,
}

static COPY: CopyFns = CopyFns { memcpy: AtomicPtr::new(slow_copy as *mut ()), memmove: AtomicPtr::new(slow_copy as *mut ()) };

/// `memcpy` and `memmove` before the C library's are found (`slow_move` copies either way).
unsafe extern "C" fn slow_copy(d: *mut c_void, s: *const c_void, n: usize) -> *mut c_void {
    // SAFETY: the caller's (memcpy's contract).
    unsafe { slow_move(d.cast(), s.cast(), n) };
    d
}

static RESOLVING: AtomicBool = AtomicBool::new(false);
static RESOLVED: AtomicBool = AtomicBool::new(false);

/// Find the C library's functions. Runs from libmie.so's constructor; calls made while it
/// runs (dlsym may allocate, and the allocator copies) use the byte loops.
pub fn resolve() {
    if RESOLVED.load(Ordering::Acquire) || RESOLVING.swap(true, Ordering::AcqRel) {
        return;
    }
    let find = |name: &core::ffi::CStr| {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name only reads the symbol tables.
        unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
    };
    for (slot, name) in [(&COPY.memcpy, c"memcpy"), (&COPY.memmove, c"memmove")] {
        let f = find(name);
        if f != 0 {
            slot.store(f as *mut (), Ordering::Release);
        }
    }
    for (slot, name) in [
        (&REAL.memset, c"memset"),
        (&REAL.strlen, c"strlen"),
        (&REAL.strnlen, c"strnlen"),
        (&REAL.memchr, c"memchr"),
        (&REAL.wmemset, c"wmemset"),
        (&REAL.chk_fail, c"__chk_fail"),
        (&REAL.read, c"read"),
        (&REAL.pread, c"pread"),
        (&REAL.recv, c"recv"),
        (&REAL.fread, c"fread"),
        (&REAL.fgets, c"fgets"),
    ] {
        slot.store(find(name), Ordering::Release);
    }
    RESOLVED.store(true, Ordering::Release);
}

#[used]
#[unsafe(link_section = ".init_array")]
static RESOLVE_AT_LOAD: extern "C" fn() = {
    extern "C" fn run() {
        resolve();
    }
    run
};

#[inline(always)]
fn real(slot: &AtomicUsize) -> usize {
    slot.load(Ordering::Relaxed)
}

// Fallbacks: volatile byte loops, so the compiler cannot turn them back into calls to the
// very functions they stand in for.
unsafe fn slow_move(d: *mut u8, s: *const u8, n: usize) {
    // SAFETY (whole fn): the caller guarantees both ranges are valid for n bytes.
    unsafe {
        if (d as usize) <= (s as usize) {
            for i in 0..n {
                d.add(i).write_volatile(s.add(i).read_volatile());
            }
        } else {
            for i in (0..n).rev() {
                d.add(i).write_volatile(s.add(i).read_volatile());
            }
        }
    }
}

unsafe fn slow_set(d: *mut u8, c: u8, n: usize) {
    for i in 0..n {
        // SAFETY: the caller guarantees d is valid for n bytes.
        unsafe { d.add(i).write_volatile(c) };
    }
}

unsafe fn slow_nlen(s: *const u8, max: usize) -> usize {
    let mut i = 0;
    // SAFETY: the caller guarantees s is readable up to its NUL or max bytes.
    while i < max && unsafe { s.add(i).read_volatile() } != 0 {
        i += 1;
    }
    i
}

// Primitives through the C library (or the fallbacks).

#[inline(always)]
unsafe fn copy(d: *mut c_void, s: *const c_void, n: usize) {
    // SAFETY: the C library's memcpy or its stand-in; the caller guarantees the ranges.
    unsafe { copy_fn(&COPY.memcpy)(d, s, n) };
}

#[inline(always)]
unsafe fn moved(d: *mut c_void, s: *const c_void, n: usize) {
    // SAFETY: the C library's memmove or its stand-in; the caller guarantees the ranges.
    unsafe { copy_fn(&COPY.memmove)(d, s, n) };
}

/// The function in a `COPY` slot.
#[inline(always)]
fn copy_fn(slot: &AtomicPtr<()>) -> MemFn {
    // SAFETY: the slot holds a function of this type, never null (`COPY`).
    unsafe { core::mem::transmute::<*mut (), MemFn>(slot.load(Ordering::Relaxed)) }
}

#[inline(always)]
unsafe fn set(d: *mut c_void, c: c_int, n: usize) {
    let f = real(&REAL.memset);
    if f != 0 {
        // SAFETY: f is the C library's memset; the caller guarantees the range.
        unsafe { core::mem::transmute::<usize, SetFn>(f)(d, c, n) };
    } else {
        // SAFETY: as above.
        unsafe { slow_set(d.cast(), c as u8, n) };
    }
}

#[inline(always)]
unsafe fn nlen(s: *const c_char, max: usize) -> usize {
    if max == usize::MAX {
        let f = real(&REAL.strlen);
        if f != 0 {
            // SAFETY: f is the C library's strlen; s is a string (the caller's contract).
            return unsafe { core::mem::transmute::<usize, LenFn>(f)(s) };
        }
    } else {
        let f = real(&REAL.strnlen);
        if f != 0 {
            // SAFETY: f is the C library's strnlen, reading at most max bytes of s.
            return unsafe { core::mem::transmute::<usize, NLenFn>(f)(s, max) };
        }
    }
    // SAFETY: as above.
    unsafe { slow_nlen(s.cast(), max) }
}

#[inline(always)]
unsafe fn find_byte(s: *const c_void, c: c_int, n: usize) -> Option<usize> {
    let f = real(&REAL.memchr);
    if f != 0 {
        // SAFETY: f is the C library's memchr over n readable bytes.
        let r = unsafe { core::mem::transmute::<usize, ChrFn>(f)(s, c, n) };
        return (!r.is_null()).then(|| r as usize - s as usize);
    }
    // SAFETY: the caller guarantees n readable bytes.
    (0..n).find(|&i| unsafe { (s as *const u8).add(i).read_volatile() } == c as u8)
}

/// glibc's fortify failure ("*** buffer overflow detected ***"), or abort without it.
fn chk_fail() -> ! {
    let f = real(&REAL.chk_fail);
    if f != 0 {
        // SAFETY: f is the C library's __chk_fail, which never returns.
        unsafe { core::mem::transmute::<usize, FailFn>(f)() }
    }
    mie_core::sys::platform::abort()
}

// Checks.

#[inline(always)]
fn w(p: *const c_void, n: usize, func: &'static str, cs: usize) {
    bounds::check(p as usize, n, Access::Write, func, cs);
}

#[inline(always)]
fn r(p: *const c_void, n: usize, func: &'static str, cs: usize) {
    bounds::check(p as usize, n, Access::Read, func, cs);
}

/// Length of the string at `s`, reading no further than the end of its block when it lies
/// in one: an unterminated string in a heap block is a read overflow, reported here.
#[inline(always)]
unsafe fn str_len(s: *const c_char, func: &'static str, cs: usize) -> usize {
    let limit = bounds::scan_limit(s as usize, cs);
    // SAFETY: s is readable up to its NUL or the end of its block.
    let n = unsafe { nlen(s, limit) };
    if n == limit {
        // No NUL before the block ends (or a freed block): reading on would overrun it.
        bounds::check(s as usize, n + 1, Access::Read, func, cs);
    }
    n
}

/// As `str_len`, but at most `max` bytes (strnlen-style).
#[inline(always)]
unsafe fn str_nlen(s: *const c_char, max: usize, func: &'static str, cs: usize) -> usize {
    let limit = bounds::scan_limit(s as usize, cs);
    // SAFETY: s is readable up to its NUL, max bytes or the end of its block.
    let n = unsafe { nlen(s, limit.min(max)) };
    if n == limit && n < max {
        bounds::check(s as usize, n + 1, Access::Read, func, cs);
    }
    n
}

fn fortify(n: usize, dlen: usize) {
    if n > dlen {
        chk_fail();
    }
}

// Implementations, reached through the call-site trampolines (argument after the last).

// The three hot ones: a range inside the block the thread's hint holds, or outside mie's
// memory, passes at the entry, which tail-jumps into the C library's function; a range that
// missed its hint goes to a second function that learns its block; anything else to the
// checking version. Each step is a tail call.

type KnownFn = extern "C" fn(*mut c_void, *const c_void, usize, usize, u32) -> *mut c_void;
type CheckedFn = extern "C" fn(*mut c_void, *const c_void, usize, usize) -> *mut c_void;

/// The entry of `memcpy` or `memmove` (the C library's function in `slot`; `known` the
/// function that learns a missed range's block).
#[inline(always)]
fn copy_entry(slot: &AtomicPtr<()>, d: *mut c_void, s: *const c_void, n: usize, cs: usize, known: KnownFn) -> *mut c_void {
    let f = copy_fn(slot);
    // SAFETY: f is the C library's memcpy or memmove (the one `slot` holds) or its
    // stand-in; each range is outside mie's memory or inside a live block (copy_hinted).
    let hit = || unsafe { f(d, s, n) };
    bounds::copy_hinted(d as usize, s as usize, n, hit, |miss| known(d, s, n, cs, miss))
}

/// `copy_entry` past the hints: learn the block of the range that missed (`miss`, from
/// `copy_hinted`), else `checked` checks each range in full.
#[inline(always)]
fn copy_known(slot: &AtomicPtr<()>, d: *mut c_void, s: *const c_void, n: usize, cs: usize, miss: u32, checked: CheckedFn) -> *mut c_void {
    if !bounds::copy_learn(d as usize, s as usize, n, miss) {
        return checked(d, s, n, cs);
    }
    // SAFETY: the C library's memcpy or memmove or its stand-in; each range is outside
    // mie's memory or inside a live block (copy_hinted, copy_learn).
    unsafe { copy_fn(slot)(d, s, n) }
}

pub(crate) extern "C" fn memcpy_cs(d: *mut c_void, s: *const c_void, n: usize, cs: usize) -> *mut c_void {
    copy_entry(&COPY.memcpy, d, s, n, cs, memcpy_known)
}

#[inline(never)]
extern "C" fn memcpy_known(d: *mut c_void, s: *const c_void, n: usize, cs: usize, miss: u32) -> *mut c_void {
    copy_known(&COPY.memcpy, d, s, n, cs, miss, memcpy_checked)
}

#[inline(never)]
extern "C" fn memcpy_checked(d: *mut c_void, s: *const c_void, n: usize, cs: usize) -> *mut c_void {
    w(d, n, "memcpy", cs);
    r(s, n, "memcpy", cs);
    // SAFETY: both ranges were checked against their blocks (or are outside the heap).
    unsafe { copy(d, s, n) };
    d
}

pub(crate) extern "C" fn memmove_cs(d: *mut c_void, s: *const c_void, n: usize, cs: usize) -> *mut c_void {
    copy_entry(&COPY.memmove, d, s, n, cs, memmove_known)
}

#[inline(never)]
extern "C" fn memmove_known(d: *mut c_void, s: *const c_void, n: usize, cs: usize, miss: u32) -> *mut c_void {
    copy_known(&COPY.memmove, d, s, n, cs, miss, memmove_checked)
}

#[inline(never)]
extern "C" fn memmove_checked(d: *mut c_void, s: *const c_void, n: usize, cs: usize) -> *mut c_void {
    w(d, n, "memmove", cs);
    r(s, n, "memmove", cs);
    // SAFETY: both ranges were checked.
    unsafe { moved(d, s, n) };
    d
}

pub(crate) extern "C" fn mempcpy_cs(d: *mut c_void, s: *const c_void, n: usize, cs: usize) -> *mut c_void {
    w(d, n, "mempcpy", cs);
    r(s, n, "mempcpy", cs);
    // SAFETY: as in memcpy.
    unsafe { copy(d, s, n) };
    (d as usize + n) as *mut c_void
}

pub(crate) extern "C" fn memset_cs(d: *mut c_void, c: c_int, n: usize, cs: usize) -> *mut c_void {
    let f = real(&REAL.memset);
    if f != 0 && bounds::hinted(d as usize, n, Access::Write) {
        // SAFETY: f is the C library's memset; the range is outside mie's memory or inside a
        // live block (bounds::hinted).
        return unsafe { core::mem::transmute::<usize, SetFn>(f)(d, c, n) };
    }
    memset_known(d, c, n, cs)
}

/// `memset` past the hint, as `memcpy_known`.
#[inline(never)]
extern "C" fn memset_known(d: *mut c_void, c: c_int, n: usize, cs: usize) -> *mut c_void {
    let f = real(&REAL.memset);
    if f == 0 || !bounds::learn_one(d as usize, n, Access::Write) {
        return memset_checked(d, c, n, cs);
    }
    // SAFETY: f is the C library's memset; the range is outside mie's memory or inside a
    // live block (bounds::learn_one).
    unsafe { core::mem::transmute::<usize, SetFn>(f)(d, c, n) }
}

#[inline(never)]
extern "C" fn memset_checked(d: *mut c_void, c: c_int, n: usize, cs: usize) -> *mut c_void {
    w(d, n, "memset", cs);
    // SAFETY: the range was checked against its block (or is outside the heap).
    unsafe { set(d, c, n) };
    d
}

unsafe fn str_copy(d: *mut c_char, s: *const c_char, func: &'static str, cs: usize) -> usize {
    // SAFETY: s is a string (the caller's contract), bounded by its block.
    let len = unsafe { str_len(s, func, cs) } + 1;
    w(d.cast(), len, func, cs);
    r(s.cast(), len, func, cs);
    // SAFETY: both ranges were checked.
    unsafe { moved(d.cast(), s.cast(), len) };
    len
}

pub(crate) extern "C" fn strcpy_cs(d: *mut c_char, s: *const c_char, cs: usize) -> *mut c_char {
    // SAFETY: strcpy's contract: s is a string, d has room (checked where mie can).
    unsafe { str_copy(d, s, "strcpy", cs) };
    d
}

pub(crate) extern "C" fn stpcpy_cs(d: *mut c_char, s: *const c_char, cs: usize) -> *mut c_char {
    // SAFETY: as in strcpy.
    let len = unsafe { str_copy(d, s, "stpcpy", cs) };
    (d as usize + len - 1) as *mut c_char
}

unsafe fn strn_copy(d: *mut c_char, s: *const c_char, n: usize, func: &'static str, cs: usize) -> usize {
    // SAFETY: s is readable up to its NUL or n bytes.
    let k = unsafe { str_nlen(s, n, func, cs) };
    w(d.cast(), n, func, cs);
    r(s.cast(), (k + 1).min(n), func, cs);
    // SAFETY: both ranges were checked; strncpy pads the rest of the n bytes with NULs.
    unsafe {
        moved(d.cast(), s.cast(), k);
        set((d as usize + k) as *mut c_void, 0, n - k);
    }
    k
}

pub(crate) extern "C" fn strncpy_cs(d: *mut c_char, s: *const c_char, n: usize, cs: usize) -> *mut c_char {
    // SAFETY: strncpy's contract.
    unsafe { strn_copy(d, s, n, "strncpy", cs) };
    d
}

unsafe fn str_cat(d: *mut c_char, s: *const c_char, max: usize, func: &'static str, cs: usize) {
    // SAFETY: d and s are strings (the caller's contract), bounded by their blocks.
    let dl = unsafe { str_len(d, func, cs) };
    // SAFETY: as above.
    let k = if max == usize::MAX { unsafe { str_len(s, func, cs) } } else { unsafe { str_nlen(s, max, func, cs) } };
    let at = (d as usize + dl) as *mut c_char;
    w(d.cast(), dl + k + 1, func, cs);
    r(s.cast(), k, func, cs);
    // SAFETY: both ranges were checked.
    unsafe {
        moved(at.cast(), s.cast(), k);
        *at.add(k) = 0;
    }
}

pub(crate) extern "C" fn strcat_cs(d: *mut c_char, s: *const c_char, cs: usize) -> *mut c_char {
    // SAFETY: strcat's contract.
    unsafe { str_cat(d, s, usize::MAX, "strcat", cs) };
    d
}

pub(crate) extern "C" fn strncat_cs(d: *mut c_char, s: *const c_char, n: usize, cs: usize) -> *mut c_char {
    // SAFETY: strncat's contract.
    unsafe { str_cat(d, s, n, "strncat", cs) };
    d
}

pub(crate) extern "C" fn memccpy_cs(d: *mut c_void, s: *const c_void, c: c_int, n: usize, cs: usize) -> *mut c_void {
    // The bytes memccpy reads: up to and including the first c, at most n; the search
    // itself must stay inside s's block.
    let limit = bounds::scan_limit(s as usize, cs);
    // SAFETY: searching at most min(n, block rest) readable bytes.
    let found = unsafe { find_byte(s, c, n.min(limit)) };
    let k = match found {
        Some(i) => i + 1,
        None => n,
    };
    w(d, k, "memccpy", cs);
    r(s, k, "memccpy", cs);
    // SAFETY: both ranges were checked.
    unsafe { copy(d, s, k) };
    if found.is_some() {
        (d as usize + k) as *mut c_void
    } else {
        core::ptr::null_mut()
    }
}

const WCHAR: usize = core::mem::size_of::<libc::wchar_t>();

fn wmem_copy(d: *mut libc::wchar_t, s: *const libc::wchar_t, n: usize, overlap: bool, func: &'static str, cs: usize) -> *mut libc::wchar_t {
    let bytes = n.saturating_mul(WCHAR);
    w(d.cast(), bytes, func, cs);
    r(s.cast(), bytes, func, cs);
    // SAFETY: both ranges were checked.
    unsafe {
        if overlap {
            moved(d.cast(), s.cast(), bytes)
        } else {
            copy(d.cast(), s.cast(), bytes)
        }
    };
    d
}

fn wmem_set(d: *mut libc::wchar_t, c: libc::wchar_t, n: usize, func: &'static str, cs: usize) -> *mut libc::wchar_t {
    w(d.cast(), n.saturating_mul(WCHAR), func, cs);
    let f = real(&REAL.wmemset);
    if f != 0 {
        // SAFETY: f is the C library's wmemset over the checked range.
        unsafe { core::mem::transmute::<usize, WSetFn>(f)(d, c, n) };
    } else {
        for i in 0..n {
            // SAFETY: the range was checked (or is the caller's).
            unsafe { d.add(i).write_volatile(c) };
        }
    }
    d
}

pub(crate) extern "C" fn wmemcpy_cs(d: *mut libc::wchar_t, s: *const libc::wchar_t, n: usize, cs: usize) -> *mut libc::wchar_t {
    wmem_copy(d, s, n, false, "wmemcpy", cs)
}

pub(crate) extern "C" fn wmemmove_cs(d: *mut libc::wchar_t, s: *const libc::wchar_t, n: usize, cs: usize) -> *mut libc::wchar_t {
    wmem_copy(d, s, n, true, "wmemmove", cs)
}

pub(crate) extern "C" fn wmemset_cs(d: *mut libc::wchar_t, c: libc::wchar_t, n: usize, cs: usize) -> *mut libc::wchar_t {
    wmem_set(d, c, n, "wmemset", cs)
}

// glibc's fortify forms: the compiler passes the destination's size as it knows it; past
// that is glibc's own failure. mie's block checks come first, with its report.

pub(crate) extern "C" fn memcpy_chk_cs(d: *mut c_void, s: *const c_void, n: usize, dlen: usize, cs: usize) -> *mut c_void {
    w(d, n, "__memcpy_chk", cs);
    r(s, n, "__memcpy_chk", cs);
    fortify(n, dlen);
    // SAFETY: both ranges were checked.
    unsafe { copy(d, s, n) };
    d
}

pub(crate) extern "C" fn memmove_chk_cs(d: *mut c_void, s: *const c_void, n: usize, dlen: usize, cs: usize) -> *mut c_void {
    w(d, n, "__memmove_chk", cs);
    r(s, n, "__memmove_chk", cs);
    fortify(n, dlen);
    // SAFETY: both ranges were checked.
    unsafe { moved(d, s, n) };
    d
}

pub(crate) extern "C" fn mempcpy_chk_cs(d: *mut c_void, s: *const c_void, n: usize, dlen: usize, cs: usize) -> *mut c_void {
    w(d, n, "__mempcpy_chk", cs);
    r(s, n, "__mempcpy_chk", cs);
    fortify(n, dlen);
    // SAFETY: both ranges were checked.
    unsafe { copy(d, s, n) };
    (d as usize + n) as *mut c_void
}

pub(crate) extern "C" fn memset_chk_cs(d: *mut c_void, c: c_int, n: usize, dlen: usize, cs: usize) -> *mut c_void {
    w(d, n, "__memset_chk", cs);
    fortify(n, dlen);
    // SAFETY: the range was checked.
    unsafe { set(d, c, n) };
    d
}

pub(crate) extern "C" fn strcpy_chk_cs(d: *mut c_char, s: *const c_char, dlen: usize, cs: usize) -> *mut c_char {
    // SAFETY: s is a string, bounded by its block.
    let len = unsafe { str_len(s, "__strcpy_chk", cs) } + 1;
    w(d.cast(), len, "__strcpy_chk", cs);
    fortify(len, dlen);
    // SAFETY: both ranges were checked.
    unsafe { moved(d.cast(), s.cast(), len) };
    d
}

pub(crate) extern "C" fn stpcpy_chk_cs(d: *mut c_char, s: *const c_char, dlen: usize, cs: usize) -> *mut c_char {
    // SAFETY: as in __strcpy_chk.
    let len = unsafe { str_len(s, "__stpcpy_chk", cs) } + 1;
    w(d.cast(), len, "__stpcpy_chk", cs);
    fortify(len, dlen);
    // SAFETY: both ranges were checked.
    unsafe { moved(d.cast(), s.cast(), len) };
    (d as usize + len - 1) as *mut c_char
}

pub(crate) extern "C" fn strncpy_chk_cs(d: *mut c_char, s: *const c_char, n: usize, dlen: usize, cs: usize) -> *mut c_char {
    w(d.cast(), n, "__strncpy_chk", cs);
    fortify(n, dlen);
    // SAFETY: strncpy's contract, destination checked.
    unsafe { strn_copy(d, s, n, "__strncpy_chk", cs) };
    d
}

pub(crate) extern "C" fn strcat_chk_cs(d: *mut c_char, s: *const c_char, dlen: usize, cs: usize) -> *mut c_char {
    // SAFETY: both are strings, bounded by their blocks.
    let need = unsafe { str_len(d, "__strcat_chk", cs) + str_len(s, "__strcat_chk", cs) } + 1;
    w(d.cast(), need, "__strcat_chk", cs);
    fortify(need, dlen);
    // SAFETY: strcat's contract, destination checked.
    unsafe { str_cat(d, s, usize::MAX, "__strcat_chk", cs) };
    d
}

pub(crate) extern "C" fn strncat_chk_cs(d: *mut c_char, s: *const c_char, n: usize, dlen: usize, cs: usize) -> *mut c_char {
    // SAFETY: both are strings, bounded by their blocks.
    let need = unsafe { str_len(d, "__strncat_chk", cs) + str_nlen(s, n, "__strncat_chk", cs) } + 1;
    w(d.cast(), need, "__strncat_chk", cs);
    fortify(need, dlen);
    // SAFETY: strncat's contract, destination checked.
    unsafe { str_cat(d, s, n, "__strncat_chk", cs) };
    d
}

pub(crate) extern "C" fn wmemcpy_chk_cs(d: *mut libc::wchar_t, s: *const libc::wchar_t, n: usize, dlen: usize, cs: usize) -> *mut libc::wchar_t {
    let bytes = n.saturating_mul(WCHAR);
    w(d.cast(), bytes, "__wmemcpy_chk", cs);
    fortify(n, dlen);
    wmem_copy(d, s, n, false, "__wmemcpy_chk", cs)
}

pub(crate) extern "C" fn wmemmove_chk_cs(d: *mut libc::wchar_t, s: *const libc::wchar_t, n: usize, dlen: usize, cs: usize) -> *mut libc::wchar_t {
    let bytes = n.saturating_mul(WCHAR);
    w(d.cast(), bytes, "__wmemmove_chk", cs);
    fortify(n, dlen);
    wmem_copy(d, s, n, true, "__wmemmove_chk", cs)
}

pub(crate) extern "C" fn wmemset_chk_cs(d: *mut libc::wchar_t, c: libc::wchar_t, n: usize, dlen: usize, cs: usize) -> *mut libc::wchar_t {
    w(d.cast(), n.saturating_mul(WCHAR), "__wmemset_chk", cs);
    fortify(n, dlen);
    wmem_set(d, c, n, "__wmemset_chk", cs)
}

// Reads into a buffer: the destination must hold the most the call may write.

/// The C library's function in `slot`, resolving now if this is a call from before
/// libmie.so's constructor ran (another library's constructor reading a file).
#[inline(always)]
fn real_fn(slot: &AtomicUsize) -> usize {
    let f = real(slot);
    if f != 0 {
        return f;
    }
    resolve();
    real(slot)
}

fn no_function(func: &'static str) -> ! {
    mie_core::sys::report::fatal(mie_core::sys::report::Kind::Internal, 0, func, |o| {
        use core::fmt::Write;
        let _ = writeln!(o, "  the C library's {func} could not be found (dlsym)");
    })
}

pub(crate) extern "C" fn read_cs(fd: c_int, buf: *mut c_void, n: usize, cs: usize) -> isize {
    w(buf, n, "read", cs);
    let f = real_fn(&REAL.read);
    if f == 0 {
        no_function("read");
    }
    // SAFETY: f is the C library's read; the destination range was checked.
    unsafe { core::mem::transmute::<usize, ReadFn>(f)(fd, buf, n) }
}

pub(crate) extern "C" fn pread_cs(fd: c_int, buf: *mut c_void, n: usize, off: i64, cs: usize) -> isize {
    w(buf, n, "pread", cs);
    let f = real_fn(&REAL.pread);
    if f == 0 {
        no_function("pread");
    }
    // SAFETY: f is the C library's pread; the destination range was checked.
    unsafe { core::mem::transmute::<usize, PreadFn>(f)(fd, buf, n, off) }
}

pub(crate) extern "C" fn recv_cs(fd: c_int, buf: *mut c_void, n: usize, flags: c_int, cs: usize) -> isize {
    w(buf, n, "recv", cs);
    let f = real_fn(&REAL.recv);
    if f == 0 {
        no_function("recv");
    }
    // SAFETY: f is the C library's recv; the destination range was checked.
    unsafe { core::mem::transmute::<usize, RecvFn>(f)(fd, buf, n, flags) }
}

pub(crate) extern "C" fn fread_cs(ptr: *mut c_void, size: usize, n: usize, stream: *mut libc::FILE, cs: usize) -> usize {
    w(ptr, size.saturating_mul(n), "fread", cs);
    let f = real_fn(&REAL.fread);
    if f == 0 {
        no_function("fread");
    }
    // SAFETY: f is the C library's fread; the destination range was checked.
    unsafe { core::mem::transmute::<usize, FreadFn>(f)(ptr, size, n, stream) }
}

pub(crate) extern "C" fn fgets_cs(s: *mut c_char, n: c_int, stream: *mut libc::FILE, cs: usize) -> *mut c_char {
    w(s.cast(), n.max(0) as usize, "fgets", cs);
    let f = real_fn(&REAL.fgets);
    if f == 0 {
        no_function("fgets");
    }
    // SAFETY: f is the C library's fgets; the destination range was checked.
    unsafe { core::mem::transmute::<usize, FgetsFn>(f)(s, n, stream) }
}

pub(crate) extern "C" fn read_chk_cs(fd: c_int, buf: *mut c_void, n: usize, buflen: usize, cs: usize) -> isize {
    w(buf, n, "__read_chk", cs);
    fortify(n, buflen);
    read_cs(fd, buf, n, cs)
}

pub(crate) extern "C" fn recv_chk_cs(fd: c_int, buf: *mut c_void, n: usize, buflen: usize, flags: c_int, cs: usize) -> isize {
    w(buf, n, "__recv_chk", cs);
    fortify(n, buflen);
    recv_cs(fd, buf, n, flags, cs)
}

pub(crate) extern "C" fn pread_chk_cs(fd: c_int, buf: *mut c_void, n: usize, off: i64, buflen: usize, cs: usize) -> isize {
    w(buf, n, "__pread_chk", cs);
    fortify(n, buflen);
    pread_cs(fd, buf, n, off, cs)
}

pub(crate) extern "C" fn fread_chk_cs(ptr: *mut c_void, ptrlen: usize, size: usize, n: usize, stream: *mut libc::FILE, cs: usize) -> usize {
    w(ptr, size.saturating_mul(n), "__fread_chk", cs);
    fortify(size.saturating_mul(n), ptrlen);
    fread_cs(ptr, size, n, stream, cs)
}

pub(crate) extern "C" fn fgets_chk_cs(s: *mut c_char, size: usize, n: c_int, stream: *mut libc::FILE, cs: usize) -> *mut c_char {
    w(s.cast(), n.max(0) as usize, "__fgets_chk", cs);
    fortify(n.max(0) as usize, size);
    fgets_cs(s, n, stream, cs)
}

// The exported names.
entry!(memcpy(d: *mut c_void, s: *const c_void, n: usize) -> *mut c_void, 3 => memcpy_cs);
entry!(memmove(d: *mut c_void, s: *const c_void, n: usize) -> *mut c_void, 3 => memmove_cs);
entry!(mempcpy(d: *mut c_void, s: *const c_void, n: usize) -> *mut c_void, 3 => mempcpy_cs);
entry!(memset(d: *mut c_void, c: c_int, n: usize) -> *mut c_void, 3 => memset_cs);
entry!(strcpy(d: *mut c_char, s: *const c_char) -> *mut c_char, 2 => strcpy_cs);
entry!(stpcpy(d: *mut c_char, s: *const c_char) -> *mut c_char, 2 => stpcpy_cs);
entry!(strncpy(d: *mut c_char, s: *const c_char, n: usize) -> *mut c_char, 3 => strncpy_cs);
entry!(strcat(d: *mut c_char, s: *const c_char) -> *mut c_char, 2 => strcat_cs);
entry!(strncat(d: *mut c_char, s: *const c_char, n: usize) -> *mut c_char, 3 => strncat_cs);
entry!(memccpy(d: *mut c_void, s: *const c_void, c: c_int, n: usize) -> *mut c_void, 4 => memccpy_cs);
entry!(wmemcpy(d: *mut libc::wchar_t, s: *const libc::wchar_t, n: usize) -> *mut libc::wchar_t, 3 => wmemcpy_cs);
entry!(wmemmove(d: *mut libc::wchar_t, s: *const libc::wchar_t, n: usize) -> *mut libc::wchar_t, 3 => wmemmove_cs);
entry!(wmemset(d: *mut libc::wchar_t, c: libc::wchar_t, n: usize) -> *mut libc::wchar_t, 3 => wmemset_cs);
entry!(__memcpy_chk(d: *mut c_void, s: *const c_void, n: usize, dl: usize) -> *mut c_void, 4 => memcpy_chk_cs);
entry!(__memmove_chk(d: *mut c_void, s: *const c_void, n: usize, dl: usize) -> *mut c_void, 4 => memmove_chk_cs);
entry!(__mempcpy_chk(d: *mut c_void, s: *const c_void, n: usize, dl: usize) -> *mut c_void, 4 => mempcpy_chk_cs);
entry!(__memset_chk(d: *mut c_void, c: c_int, n: usize, dl: usize) -> *mut c_void, 4 => memset_chk_cs);
entry!(__strcpy_chk(d: *mut c_char, s: *const c_char, dl: usize) -> *mut c_char, 3 => strcpy_chk_cs);
entry!(__stpcpy_chk(d: *mut c_char, s: *const c_char, dl: usize) -> *mut c_char, 3 => stpcpy_chk_cs);
entry!(__strncpy_chk(d: *mut c_char, s: *const c_char, n: usize, dl: usize) -> *mut c_char, 4 => strncpy_chk_cs);
entry!(__strcat_chk(d: *mut c_char, s: *const c_char, dl: usize) -> *mut c_char, 3 => strcat_chk_cs);
entry!(__strncat_chk(d: *mut c_char, s: *const c_char, n: usize, dl: usize) -> *mut c_char, 4 => strncat_chk_cs);
entry!(__wmemcpy_chk(d: *mut libc::wchar_t, s: *const libc::wchar_t, n: usize, dl: usize) -> *mut libc::wchar_t, 4 => wmemcpy_chk_cs);
entry!(__wmemmove_chk(d: *mut libc::wchar_t, s: *const libc::wchar_t, n: usize, dl: usize) -> *mut libc::wchar_t, 4 => wmemmove_chk_cs);
entry!(read(fd: c_int, buf: *mut c_void, n: usize) -> isize, 3 => read_cs);
entry!(pread(fd: c_int, buf: *mut c_void, n: usize, off: i64) -> isize, 4 => pread_cs);
entry!(pread64(fd: c_int, buf: *mut c_void, n: usize, off: i64) -> isize, 4 => pread_cs);
entry!(recv(fd: c_int, buf: *mut c_void, n: usize, flags: c_int) -> isize, 4 => recv_cs);
entry!(fread(p: *mut c_void, size: usize, n: usize, stream: *mut libc::FILE) -> usize, 4 => fread_cs);
entry!(fgets(s: *mut c_char, n: c_int, stream: *mut libc::FILE) -> *mut c_char, 3 => fgets_cs);
entry!(__read_chk(fd: c_int, buf: *mut c_void, n: usize, buflen: usize) -> isize, 4 => read_chk_cs);
entry!(__recv_chk(fd: c_int, buf: *mut c_void, n: usize, buflen: usize, flags: c_int) -> isize, 5 => recv_chk_cs);
entry!(__pread_chk(fd: c_int, buf: *mut c_void, n: usize, off: i64, buflen: usize) -> isize, 5 => pread_chk_cs);
entry!(__pread64_chk(fd: c_int, buf: *mut c_void, n: usize, off: i64, buflen: usize) -> isize, 5 => pread_chk_cs);
entry!(__fread_chk(p: *mut c_void, plen: usize, size: usize, n: usize, stream: *mut libc::FILE) -> usize, 5 => fread_chk_cs);
entry!(__fgets_chk(s: *mut c_char, size: usize, n: c_int, stream: *mut libc::FILE) -> *mut c_char, 4 => fgets_chk_cs);
entry!(__wmemset_chk(d: *mut libc::wchar_t, c: libc::wchar_t, n: usize, dl: usize) -> *mut libc::wchar_t, 4 => wmemset_chk_cs);

/// `mie_object_size(p)`: bytes from `p` to the end of its block (0 for a freed block),
/// `SIZE_MAX` when `p` is not in a block mie can bound. Never aborts: it answers only for
/// memory the caller already holds a pointer into.
#[unsafe(no_mangle)]
pub extern "C" fn mie_object_size(p: *const c_void) -> usize {
    bounds::object_size(p as usize)
}
