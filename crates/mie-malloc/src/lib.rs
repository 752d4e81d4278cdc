//! libmie.so: the C ABI of the mie allocator.
//!
//! Exports the whole malloc family, C++ `operator new`/`delete` in every standard form, the
//! Apple-style `malloc_type_*` entry points and LLVM AllocToken's `__alloc_token_*` names.
//!
//! Untyped entry points are naked trampolines: at entry the return address is still where
//! the call put it (`[rsp]` on x86-64, `x30` on arm64), so the trampoline moves it into the
//! next free argument register and jumps to the implementation. This gives the program's call
//! site without frame pointers or unwinding, at the cost of one instruction.
//!
//! Throwing `operator new` forms jump into a small C file (`shim/new.c`) so that a
//! `std::bad_alloc` can propagate from a frame with C unwind tables; no Rust frame is ever on
//! the stack while a C++ exception unwinds.

use core::arch::naked_asm;
use core::ffi::{c_int, c_void};

use mie_core::sys::{self as heap, platform, report, Caller};

// ---------------------------------------------------------------------------------------
// Trampolines

#[cfg(target_arch = "x86_64")]
macro_rules! cs_to {
    (1) => { "mov rsi, [rsp]" };
    (2) => { "mov rdx, [rsp]" };
    (3) => { "mov rcx, [rsp]" };
    (4) => { "mov r8, [rsp]" };
    (5) => { "mov r9, [rsp]" };
}
#[cfg(target_arch = "x86_64")]
macro_rules! jump {
    () => { "jmp {0}" };
}
/// The caller's stack pointer at the call (just above the return address).
#[cfg(target_arch = "x86_64")]
macro_rules! sp_to {
    (2) => { "lea rdx, [rsp + 8]" };
    (3) => { "lea rcx, [rsp + 8]" };
    (4) => { "lea r8, [rsp + 8]" };
}
#[cfg(target_arch = "aarch64")]
macro_rules! sp_to {
    (2) => { "mov x2, sp" };
    (3) => { "mov x3, sp" };
    (4) => { "mov x4, sp" };
}

#[cfg(target_arch = "aarch64")]
macro_rules! cs_to {
    (1) => { "mov x1, x30" };
    (2) => { "mov x2, x30" };
    (3) => { "mov x3, x30" };
    (4) => { "mov x4, x30" };
    (5) => { "mov x5, x30" };
}
#[cfg(target_arch = "aarch64")]
macro_rules! jump {
    () => { "b {0}" };
}

/// Export `$name` taking `$args`, passing the caller's return address as argument `$n` and
/// its stack pointer as argument `$m` of `$target`.
macro_rules! entry_sp {
    ($name:ident ($($a:ident : $t:ty),*) -> $r:ty, $n:tt, $m:tt => $target:path) => {
        /// # Safety
        /// A C ABI entry point: callers follow the C/C++ contract of this function.
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            naked_asm!(cs_to!($n), sp_to!($m), jump!(), sym $target)
        }
    };
}

/// Export `$name` taking `$args`, passing the caller's return address as argument `$n`
/// (0-based) of `$target`.
macro_rules! entry {
    ($name:ident ($($a:ident : $t:ty),*) -> $r:ty, $n:tt => $target:path) => {
        /// # Safety
        /// A C ABI entry point: callers follow the C/C++ contract of this function.
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            naked_asm!(cs_to!($n), jump!(), sym $target)
        }
    };
}

/// Export `$name` running `$x86`/`$a64` (argument shuffles) before jumping to `$target`.
macro_rules! shuffle {
    ($name:ident ($($a:ident : $t:ty),*) -> $r:ty, x86: [$($x:literal),*], a64: [$($y:literal),*] => $target:path) => {
        /// # Safety
        /// A C ABI entry point: callers follow the C/C++ contract of this function.
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            #[cfg(target_arch = "x86_64")]
            naked_asm!($($x,)* jump!(), sym $target);
            #[cfg(target_arch = "aarch64")]
            naked_asm!($($y,)* jump!(), sym $target);
        }
    };
}

/// Export `$name`, an `operator new` of the default alignment: first `$first` (Rust: the
/// malloc fast path, a block of `new`'s kind), and only when that finds no memory the C
/// shim `$shim` (`shim/new.c`: the new-handler loop, `std::bad_alloc`), entered after
/// `$first` has returned, so that no Rust frame is on the stack while an exception
/// unwinds. `$x86`/`$a64` set the shim's alignment argument (with its form's flags); the
/// shim gets the size and the call site as `$first` did.
macro_rules! new_entry {
    ($name:ident ($($a:ident : $t:ty),*), $first:path, x86: [$($x:literal),*], a64: [$($y:literal),*] => $shim:path) => {
        /// # Safety
        /// A C ABI entry point: callers follow the C++ contract of this function.
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($a: $t),*) -> *mut c_void {
            #[cfg(target_arch = "x86_64")]
            naked_asm!(
                "push rdi",             // the size, kept for the shim (and rsp 16-aligned)
                "mov rsi, [rsp + 8]",   // the call site: the return address
                "lea rdx, [rsp + 16]",  // the caller's stack pointer at the call
                "call {first}",
                "pop rdi",
                "test rax, rax",
                "jz 7f",
                "ret",
                "7:",
                "mov rdx, [rsp]",
                $($x,)*
                "jmp {shim}",
                first = sym $first,
                shim = sym $shim,
            );
            #[cfg(target_arch = "aarch64")]
            naked_asm!(
                "stp x0, x30, [sp, #-16]!", // the size and the return address
                "mov x1, x30",
                "add x2, sp, #16",
                "bl {first}",
                "ldp x3, x30, [sp], #16",
                "cbz x0, 7f",
                "ret",
                "7:",
                "mov x0, x3",
                "mov x2, x30",
                $($y,)*
                "b {shim}",
                first = sym $first,
                shim = sym $shim,
            );
        }
    };
}

// ---------------------------------------------------------------------------------------
// Implementations (plain Rust, reached only through the trampolines)

#[inline]
fn call_site_bucket(cs: usize) -> usize {
    match heap::ensure_init() {
        Some(g) => g.keys.for_call_site(cs),
        None => 1,
    }
}

#[inline]
fn nomem<T>(null: *mut T) -> *mut T {
    platform::set_errno(libc::ENOMEM);
    null
}

#[inline(never)]
fn alloc_in(size: usize, align: usize, bucket: usize) -> *mut c_void {
    alloc_inline(size, align, bucket)
}

/// `alloc_in` inlined into its caller: for `malloc` only (one call less on the commonest
/// path, 21 instructions a malloc+free); everywhere (the 1088 fast-ABI entry points among
/// them) it would add 210 KB of code.
#[inline(always)]
fn alloc_inline(size: usize, align: usize, bucket: usize) -> *mut c_void {
    let p = heap::alloc(size, align, bucket);
    if p.is_null() {
        return nomem(p.cast());
    }
    p.cast()
}

fn calloc_in(n: usize, m: usize, bucket: usize, func: &'static str, cs: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(m) else {
        return size_overflow(func, n, m, cs);
    };
    zeroed_in(total, bucket)
}

/// A zeroed block of `total` bytes in `bucket` (calloc once its size is known); null and
/// ENOMEM when there is no memory.
fn zeroed_in(total: usize, bucket: usize) -> *mut c_void {
    let (p, zero) = heap::alloc_zeroed_flag(total, 16, bucket);
    if p.is_null() {
        return nomem(p.cast());
    }
    if !zero {
        // SAFETY: p is a fresh block of `total` bytes.
        unsafe { core::ptr::write_bytes(p, 0, total) };
    }
    p.cast()
}

fn size_overflow(func: &'static str, n: usize, m: usize, cs: usize) -> *mut c_void {
    let abort = heap::ensure_init().is_some_and(|g| g.opts.overflow_abort);
    if abort {
        report::fatal(report::Kind::SizeOverflow, 0, func, |o| {
            use core::fmt::Write;
            let _ = writeln!(o, "  {n} * {m} overflows size_t");
            report::write_code_addr(o, "called from", cs);
        });
    }
    nomem(core::ptr::null_mut())
}

fn realloc_in(p: *mut c_void, size: usize, bucket: usize, func: &'static heap::Func, cs: usize) -> *mut c_void {
    if !p.is_null() && size == 0 {
        // glibc semantics: realloc(p, 0) frees p and returns NULL.
        // SAFETY: realloc(p, 0) frees p: the C contract makes p null or a live block.
        unsafe { heap::free(p.cast(), Caller { func, ret_addr: cs }) };
        return core::ptr::null_mut();
    }
    // SAFETY: the C contract of realloc: p is null or a live block, replaced by the result.
    let q = unsafe { heap::realloc(p.cast(), size, bucket, Caller { func, ret_addr: cs }) };
    if q.is_null() {
        return nomem(q.cast());
    }
    q.cast()
}

fn posix_memalign_in(out: *mut *mut c_void, align: usize, size: usize, bucket: usize) -> c_int {
    if !posix_align_ok(align) {
        return libc::EINVAL;
    }
    posix_memalign_result(out, heap::alloc(size, align, bucket))
}

/// An alignment `posix_memalign` accepts: a power of two and a multiple of a pointer's size.
fn posix_align_ok(align: usize) -> bool {
    align.is_power_of_two() && align.is_multiple_of(core::mem::size_of::<usize>())
}

/// `posix_memalign`'s answer for the block `p` (null: no memory).
fn posix_memalign_result(out: *mut *mut c_void, p: *mut u8) -> c_int {
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a valid out-pointer (POSIX contract).
    unsafe { *out = p.cast() };
    0
}

fn aligned_alloc_in(align: usize, size: usize, bucket: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        platform::set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    alloc_in(size, align, bucket)
}

/// glibc's memalign accepts any alignment and rounds it up to a power of two.
fn memalign_in(align: usize, size: usize, bucket: usize) -> *mut c_void {
    let Some(a) = align.max(1).checked_next_power_of_two() else {
        platform::set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    };
    alloc_in(size, a, bucket)
}

fn pvalloc_in(size: usize, bucket: usize) -> *mut c_void {
    let page = platform::page_size();
    let Some(rounded) = size.max(1).checked_add(page - 1) else {
        return nomem(core::ptr::null_mut());
    };
    alloc_in(rounded & !(page - 1), page, bucket)
}

/// The bucket for malloc, calloc and realloc: these are what allocation wrappers call, so
/// they pass the caller's stack pointer too (`heap/wrappers.rs`).
#[inline(always)]
fn wrapped_bucket(cs: usize, sp: usize) -> usize {
    // SAFETY: sp is the caller's stack pointer, passed by the entry trampoline.
    unsafe { heap::call_site_bucket(cs, sp) }
}

extern "C" fn malloc_cs(size: usize, cs: usize, sp: usize) -> *mut c_void {
    // SAFETY: sp is the caller's stack pointer, passed by the entry trampoline.
    unsafe { heap::malloc_at_or(size, cs, sp, |b| malloc_slow(size, b)) }.cast()
}

/// `malloc` past its fast path (which never fails: only this one sets `errno`).
#[inline(never)]
fn malloc_slow(size: usize, bucket: usize) -> *mut u8 {
    let p = heap::alloc_in_bucket(size, bucket);
    if p.is_null() {
        return nomem(p);
    }
    p
}
extern "C" fn calloc_cs(n: usize, m: usize, cs: usize, sp: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(m) else {
        return size_overflow("calloc", n, m, cs);
    };
    // malloc's fast path: its blocks are zero (a freed slot was zeroed and checked).
    // SAFETY: sp is the caller's stack pointer, passed by the entry trampoline.
    unsafe { heap::malloc_at_or(total, cs, sp, |b| calloc_slow(total, b)) }.cast()
}

/// `calloc` past malloc's fast path, the bucket known.
#[inline(never)]
fn calloc_slow(total: usize, bucket: usize) -> *mut u8 {
    zeroed_in(total, bucket).cast()
}
extern "C" fn realloc_cs(p: *mut c_void, size: usize, cs: usize, sp: usize) -> *mut c_void {
    realloc_in(p, size, wrapped_bucket(cs, sp), &heap::Func("realloc"), cs)
}
extern "C" fn reallocarray_cs(p: *mut c_void, n: usize, m: usize, cs: usize) -> *mut c_void {
    match n.checked_mul(m) {
        Some(total) => realloc_in(p, total, call_site_bucket(cs), &heap::Func("reallocarray"), cs),
        None => size_overflow("reallocarray", n, m, cs),
    }
}
extern "C" fn free_cs(p: *mut c_void, cs: usize) {
    // SAFETY: the C contract of free: p is null or a live block, not used afterwards.
    unsafe { heap::free(p.cast(), mie_core::caller!("free", cs)) }
}
extern "C" fn free_sized_cs(p: *mut c_void, size: usize, cs: usize) {
    let r = heap::Release { kind: akind::MALLOC, size: Some(size), align: 1 };
    // SAFETY: as free.
    unsafe { heap::release(p.cast(), mie_core::caller!("free_sized", cs), r) }
}
extern "C" fn free_aligned_sized_cs(p: *mut c_void, align: usize, size: usize, cs: usize) {
    let r = heap::Release { kind: akind::MALLOC, size: Some(size), align };
    // SAFETY: as free.
    unsafe { heap::release(p.cast(), mie_core::caller!("free_aligned_sized", cs), r) }
}
/// An aligned allocation from call site `cs` (the caller's stack pointer `sp`: these too are
/// what wrappers call): by malloc's fast path and call-site memo when `fast` (a valid
/// alignment of at most 16: every slot is 16-byte aligned), else, and past the fast path,
/// by `general(bucket)`, which checks the alignment itself.
#[inline(always)]
fn aligned_at(fast: bool, size: usize, cs: usize, sp: usize, general: impl FnOnce(usize) -> *mut u8) -> *mut u8 {
    if fast {
        // SAFETY: sp is the caller's stack pointer, passed by the entry trampoline.
        return unsafe { heap::malloc_at_or(size, cs, sp, general) };
    }
    general(wrapped_bucket(cs, sp))
}
extern "C" fn memalign_cs(align: usize, size: usize, cs: usize, sp: usize) -> *mut c_void {
    aligned_at(align <= 16, size, cs, sp, |b| memalign_in(align, size, b).cast()).cast()
}
extern "C" fn aligned_alloc_cs(align: usize, size: usize, cs: usize, sp: usize) -> *mut c_void {
    aligned_at(align.is_power_of_two() && align <= 16, size, cs, sp, |b| aligned_alloc_in(align, size, b).cast()).cast()
}
extern "C" fn posix_memalign_cs(out: *mut *mut c_void, align: usize, size: usize, cs: usize, sp: usize) -> c_int {
    if !posix_align_ok(align) {
        return libc::EINVAL;
    }
    posix_memalign_result(out, aligned_at(align <= 16, size, cs, sp, |b| heap::alloc(size, align, b)))
}
extern "C" fn valloc_cs(size: usize, cs: usize) -> *mut c_void {
    alloc_in(size, platform::page_size(), call_site_bucket(cs))
}
extern "C" fn pvalloc_cs(size: usize, cs: usize) -> *mut c_void {
    pvalloc_in(size, call_site_bucket(cs))
}
extern "C" fn usable_size_cs(p: *mut c_void, cs: usize) -> usize {
    heap::usable_size(p.cast(), mie_core::caller!("malloc_usable_size", cs))
}

entry_sp!(malloc(size: usize) -> *mut c_void, 1, 2 => malloc_cs);
entry_sp!(calloc(n: usize, m: usize) -> *mut c_void, 2, 3 => calloc_cs);
entry_sp!(realloc(p: *mut c_void, size: usize) -> *mut c_void, 2, 3 => realloc_cs);
entry!(reallocarray(p: *mut c_void, n: usize, m: usize) -> *mut c_void, 3 => reallocarray_cs);
entry!(free(p: *mut c_void) -> (), 1 => free_cs);
entry!(cfree(p: *mut c_void) -> (), 1 => free_cs);
entry!(free_sized(p: *mut c_void, size: usize) -> (), 2 => free_sized_cs);
entry!(free_aligned_sized(p: *mut c_void, align: usize, size: usize) -> (), 3 => free_aligned_sized_cs);
entry_sp!(memalign(align: usize, size: usize) -> *mut c_void, 2, 3 => memalign_cs);
entry_sp!(aligned_alloc(align: usize, size: usize) -> *mut c_void, 2, 3 => aligned_alloc_cs);
entry_sp!(posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int, 3, 4 => posix_memalign_cs);
entry!(valloc(size: usize) -> *mut c_void, 1 => valloc_cs);
entry!(pvalloc(size: usize) -> *mut c_void, 1 => pvalloc_cs);
entry!(malloc_usable_size(p: *mut c_void) -> usize, 1 => usable_size_cs);

// ---------------------------------------------------------------------------------------
// C++ operator delete (every form). The block must have come from the matching operator
// new (scalar or array, aligned or not), and a sized or aligned delete must name the block's
// size and an alignment it has: anything else is reported as an alloc-dealloc mismatch.

use mie_core::sys::kind::{self as akind};
use mie_core::sys::Release;

#[inline(always)]
fn delete_as(p: *mut c_void, func: &'static heap::Func, kind: u8, size: Option<usize>, align: usize, cs: usize) {
    // SAFETY: the C++ contract of operator delete: p is null or a live block from new.
    unsafe { heap::release(p.cast(), Caller { func, ret_addr: cs }, Release { kind, size, align }) };
}
extern "C" fn delete_cs(p: *mut c_void, cs: usize) {
    delete_as(p, &heap::Func("operator delete"), akind::NEW, None, 1, cs)
}
extern "C" fn delete_sized_cs(p: *mut c_void, size: usize, cs: usize) {
    delete_as(p, &heap::Func("operator delete"), akind::NEW, Some(size), 1, cs)
}
extern "C" fn delete_aligned_cs(p: *mut c_void, align: usize, cs: usize) {
    delete_as(p, &heap::Func("operator delete"), akind::NEW_ALIGNED, None, align, cs)
}
extern "C" fn delete_sized_aligned_cs(p: *mut c_void, size: usize, align: usize, cs: usize) {
    delete_as(p, &heap::Func("operator delete"), akind::NEW_ALIGNED, Some(size), align, cs)
}
extern "C" fn delete_nothrow_cs(p: *mut c_void, _t: usize, cs: usize) {
    delete_as(p, &heap::Func("operator delete"), akind::NEW, None, 1, cs)
}
extern "C" fn delete_aligned_nothrow_cs(p: *mut c_void, align: usize, _t: usize, cs: usize) {
    delete_as(p, &heap::Func("operator delete"), akind::NEW_ALIGNED, None, align, cs)
}
extern "C" fn delete_arr_cs(p: *mut c_void, cs: usize) {
    delete_as(p, &heap::Func("operator delete[]"), akind::NEW_ARRAY, None, 1, cs)
}
extern "C" fn delete_arr_sized_cs(p: *mut c_void, size: usize, cs: usize) {
    delete_as(p, &heap::Func("operator delete[]"), akind::NEW_ARRAY, Some(size), 1, cs)
}
extern "C" fn delete_arr_aligned_cs(p: *mut c_void, align: usize, cs: usize) {
    delete_as(p, &heap::Func("operator delete[]"), akind::NEW_ARRAY_ALIGNED, None, align, cs)
}
extern "C" fn delete_arr_sized_aligned_cs(p: *mut c_void, size: usize, align: usize, cs: usize) {
    delete_as(p, &heap::Func("operator delete[]"), akind::NEW_ARRAY_ALIGNED, Some(size), align, cs)
}
extern "C" fn delete_arr_nothrow_cs(p: *mut c_void, _t: usize, cs: usize) {
    delete_as(p, &heap::Func("operator delete[]"), akind::NEW_ARRAY, None, 1, cs)
}
extern "C" fn delete_arr_aligned_nothrow_cs(p: *mut c_void, align: usize, _t: usize, cs: usize) {
    delete_as(p, &heap::Func("operator delete[]"), akind::NEW_ARRAY_ALIGNED, None, align, cs)
}

// operator delete(void*), (void*, size_t), (void*, align_val_t), (void*, size_t, align_val_t),
// (void*, const nothrow_t&), (void*, align_val_t, const nothrow_t&) and the [] forms.
entry!(_ZdlPv(p: *mut c_void) -> (), 1 => delete_cs);
entry!(_ZdlPvm(p: *mut c_void, s: usize) -> (), 2 => delete_sized_cs);
entry!(_ZdlPvSt11align_val_t(p: *mut c_void, a: usize) -> (), 2 => delete_aligned_cs);
entry!(_ZdlPvmSt11align_val_t(p: *mut c_void, s: usize, a: usize) -> (), 3 => delete_sized_aligned_cs);
entry!(_ZdlPvRKSt9nothrow_t(p: *mut c_void, t: usize) -> (), 2 => delete_nothrow_cs);
entry!(_ZdlPvSt11align_val_tRKSt9nothrow_t(p: *mut c_void, a: usize, t: usize) -> (), 3 => delete_aligned_nothrow_cs);
entry!(_ZdaPv(p: *mut c_void) -> (), 1 => delete_arr_cs);
entry!(_ZdaPvm(p: *mut c_void, s: usize) -> (), 2 => delete_arr_sized_cs);
entry!(_ZdaPvSt11align_val_t(p: *mut c_void, a: usize) -> (), 2 => delete_arr_aligned_cs);
entry!(_ZdaPvmSt11align_val_t(p: *mut c_void, s: usize, a: usize) -> (), 3 => delete_arr_sized_aligned_cs);
entry!(_ZdaPvRKSt9nothrow_t(p: *mut c_void, t: usize) -> (), 2 => delete_arr_nothrow_cs);
entry!(_ZdaPvSt11align_val_tRKSt9nothrow_t(p: *mut c_void, a: usize, t: usize) -> (), 3 => delete_arr_aligned_nothrow_cs);

// ---------------------------------------------------------------------------------------
// C++ operator new: trampolines into shim/new.c, which loops over the new-handler and
// throws std::bad_alloc. Its functions take (size, align, key) where key is the call site
// (mie_cxx_new*) or an AllocToken id (mie_cxx_new_token*).

extern "C" {
    fn mie_cxx_new(size: usize, align: usize, cs: usize) -> *mut c_void;
    fn mie_cxx_new_nothrow(size: usize, align: usize, cs: usize) -> *mut c_void;
    fn mie_cxx_new_token(size: usize, align: usize, token: usize, cs: usize) -> *mut c_void;
    fn mie_cxx_new_token_nothrow(size: usize, align: usize, token: usize, cs: usize) -> *mut c_void;
    fn mie_cxx_new_fast(size: usize, align: usize, id: usize) -> *mut c_void;
    fn mie_cxx_new_fast_nothrow(size: usize, align: usize, id: usize) -> *mut c_void;
}

/// Flags the `operator new` trampolines set in the alignment argument (above any real
/// alignment): the array forms and the forms with an explicit `align_val_t`.
const NEW_ARRAY_FLAG: usize = 1 << 40;
const NEW_ALIGNED_FLAG: usize = 1 << 41;

/// `operator new(size)`'s first attempt (`new_entry!`), from call site `cs` with the
/// caller's stack pointer `sp`: a block as `malloc` makes one (the same bucket for the same
/// call site), of the allocation kind `KIND` (`new`'s or `new[]`'s). Null only when there
/// is no memory: the C shim then takes over.
extern "C" fn new_first<const KIND: u8>(size: usize, cs: usize, sp: usize) -> *mut c_void {
    // SAFETY: sp is the caller's stack pointer, passed by the entry trampoline.
    unsafe { heap::alloc_at_or(size, cs, sp, KIND, |b| new_slow(size, b, KIND)) }.cast()
}

/// `new_first` past the fast path.
#[inline(never)]
fn new_slow(size: usize, bucket: usize, kind: u8) -> *mut u8 {
    heap::alloc_as(size, 16, bucket, kind).0
}

/// Called by shim/new.c: one allocation attempt. `key_kind` says how `key` maps to a
/// bucket (0: a call site, 1: an AllocToken id, 2: a fast-ABI id); `align` carries the form
/// of `new` in its flag bits, recorded for `delete`.
#[unsafe(no_mangle)]
pub extern "C" fn mie_cxx_alloc(size: usize, align: usize, key: usize, key_kind: c_int, cs: usize) -> *mut c_void {
    let bucket = match key_kind {
        0 => call_site_bucket(key),
        1 => typed_bucket(key, cs, 0),
        _ => token_bucket(mie_fast_token(key)),
    };
    let kind = match (align & NEW_ARRAY_FLAG != 0, align & NEW_ALIGNED_FLAG != 0) {
        (false, false) => akind::NEW,
        (true, false) => akind::NEW_ARRAY,
        (false, true) => akind::NEW_ALIGNED,
        (true, true) => akind::NEW_ARRAY_ALIGNED,
    };
    let align = align & (NEW_ARRAY_FLAG - 1);
    heap::alloc_as(size, align.max(1).next_power_of_two(), bucket, kind).0.cast()
}

/// Called by shim/new.c when `operator new` must fail but no exception can be thrown.
#[unsafe(no_mangle)]
pub extern "C" fn mie_cxx_oom(size: usize) -> ! {
    report::fatal(report::Kind::OutOfMemory, 0, "operator new", |o| {
        use core::fmt::Write;
        let _ = writeln!(
            o,
            "  cannot allocate {size} bytes, no new-handler is installed and std::bad_alloc cannot be thrown (libstdc++ not loaded)"
        );
    })
}

// new(size), new[](size)
new_entry!(_Znwm(s: usize), new_first::<{ akind::NEW }>, x86: ["mov esi, 16"], a64: ["mov x1, #16"] => mie_cxx_new);
new_entry!(_Znam(s: usize), new_first::<{ akind::NEW_ARRAY }>,
    x86: ["mov esi, 16", "bts rsi, 40"], a64: ["mov x1, #16", "orr x1, x1, #0x10000000000"] => mie_cxx_new);
// new(size, align_val_t)
shuffle!(_ZnwmSt11align_val_t(s: usize, a: usize) -> *mut c_void,
    x86: ["mov rdx, [rsp]", "bts rsi, 41"], a64: ["mov x2, x30", "orr x1, x1, #0x20000000000"] => mie_cxx_new);
shuffle!(_ZnamSt11align_val_t(s: usize, a: usize) -> *mut c_void,
    x86: ["mov rdx, [rsp]", "bts rsi, 40", "bts rsi, 41"], a64: ["mov x2, x30", "orr x1, x1, #0x30000000000"] => mie_cxx_new);
// new(size, const nothrow_t&)
new_entry!(_ZnwmRKSt9nothrow_t(s: usize, t: usize), new_first::<{ akind::NEW }>, x86: ["mov esi, 16"], a64: ["mov x1, #16"] => mie_cxx_new_nothrow);
new_entry!(_ZnamRKSt9nothrow_t(s: usize, t: usize), new_first::<{ akind::NEW_ARRAY }>,
    x86: ["mov esi, 16", "bts rsi, 40"], a64: ["mov x1, #16", "orr x1, x1, #0x10000000000"] => mie_cxx_new_nothrow);
// new(size, align_val_t, const nothrow_t&)
shuffle!(_ZnwmSt11align_val_tRKSt9nothrow_t(s: usize, a: usize, t: usize) -> *mut c_void,
    x86: ["mov rdx, [rsp]", "bts rsi, 41"], a64: ["mov x2, x30", "orr x1, x1, #0x20000000000"] => mie_cxx_new_nothrow);
shuffle!(_ZnamSt11align_val_tRKSt9nothrow_t(s: usize, a: usize, t: usize) -> *mut c_void,
    x86: ["mov rdx, [rsp]", "bts rsi, 40", "bts rsi, 41"], a64: ["mov x2, x30", "orr x1, x1, #0x30000000000"] => mie_cxx_new_nothrow);

// AllocToken forms of new: the token comes last; the call site goes after it (for a type
// the compiler could not see).
shuffle!(__alloc_token__Znwm(s: usize, tok: usize) -> *mut c_void,
    x86: ["mov rdx, rsi", "mov esi, 16", "mov rcx, [rsp]"], a64: ["mov x2, x1", "mov x1, #16", "mov x3, x30"] => mie_cxx_new_token);
shuffle!(__alloc_token__Znam(s: usize, tok: usize) -> *mut c_void,
    x86: ["mov rdx, rsi", "mov esi, 16", "bts rsi, 40", "mov rcx, [rsp]"], a64: ["mov x2, x1", "mov x1, #16", "orr x1, x1, #0x10000000000", "mov x3, x30"] => mie_cxx_new_token);
shuffle!(__alloc_token__ZnwmSt11align_val_t(s: usize, a: usize, tok: usize) -> *mut c_void,
    x86: ["bts rsi, 41", "mov rcx, [rsp]"], a64: ["orr x1, x1, #0x20000000000", "mov x3, x30"] => mie_cxx_new_token);
shuffle!(__alloc_token__ZnamSt11align_val_t(s: usize, a: usize, tok: usize) -> *mut c_void,
    x86: ["bts rsi, 40", "bts rsi, 41", "mov rcx, [rsp]"], a64: ["orr x1, x1, #0x30000000000", "mov x3, x30"] => mie_cxx_new_token);
shuffle!(__alloc_token__ZnwmRKSt9nothrow_t(s: usize, t: usize, tok: usize) -> *mut c_void,
    x86: ["mov esi, 16", "mov rcx, [rsp]"], a64: ["mov x1, #16", "mov x3, x30"] => mie_cxx_new_token_nothrow);
shuffle!(__alloc_token__ZnamRKSt9nothrow_t(s: usize, t: usize, tok: usize) -> *mut c_void,
    x86: ["mov esi, 16", "bts rsi, 40", "mov rcx, [rsp]"], a64: ["mov x1, #16", "orr x1, x1, #0x10000000000", "mov x3, x30"] => mie_cxx_new_token_nothrow);
shuffle!(__alloc_token__ZnwmSt11align_val_tRKSt9nothrow_t(s: usize, a: usize, t: usize, tok: usize) -> *mut c_void,
    x86: ["mov rdx, rcx", "bts rsi, 41", "mov rcx, [rsp]"], a64: ["mov x2, x3", "orr x1, x1, #0x20000000000", "mov x3, x30"] => mie_cxx_new_token_nothrow);
shuffle!(__alloc_token__ZnamSt11align_val_tRKSt9nothrow_t(s: usize, a: usize, t: usize, tok: usize) -> *mut c_void,
    x86: ["mov rdx, rcx", "bts rsi, 40", "bts rsi, 41", "mov rcx, [rsp]"], a64: ["mov x2, x3", "orr x1, x1, #0x30000000000", "mov x3, x30"] => mie_cxx_new_token_nothrow);

// ---------------------------------------------------------------------------------------
// Typed entry points: Apple-style malloc_type_* (DESIGN.md §4) and LLVM AllocToken.

#[inline]
fn type_bucket(id: u64) -> usize {
    heap::ensure_init().map_or(1, |g| g.keys.for_type_id(id))
}

#[inline]
fn token_bucket(token: usize) -> usize {
    heap::token_bucket(token as u64)
}

/// The token the fast-ABI entry points (`shim/fast_abi.c`) pass for id `id`: the id itself
/// when the id space is known (the program's `-falloc-token-max`, found at start-up, or the
/// `alloc_token_max` option), so its lower half is pointer-free; otherwise the id in the
/// pointer half, so different ids still get their own pointer buckets.
#[unsafe(no_mangle)]
pub extern "C" fn mie_fast_token(id: usize) -> usize {
    match heap::ensure_init() {
        Some(g) if g.keys.token_max_known => id,
        _ => id | 1 << 63,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn malloc_type_malloc(size: usize, id: u64) -> *mut c_void {
    if forward::active() {
        return forward::malloc(size);
    }
    alloc_in(size, 16, type_bucket(id))
}
#[unsafe(no_mangle)]
pub extern "C" fn malloc_type_calloc(n: usize, m: usize, id: u64) -> *mut c_void {
    if forward::active() {
        return forward::calloc(n, m);
    }
    calloc_in(n, m, type_bucket(id), "malloc_type_calloc", 0)
}
#[unsafe(no_mangle)]
pub extern "C" fn malloc_type_realloc(p: *mut c_void, size: usize, id: u64) -> *mut c_void {
    if forward::active() {
        return forward::realloc(p, size);
    }
    realloc_in(p, size, type_bucket(id), &heap::Func("malloc_type_realloc"), 0)
}
#[unsafe(no_mangle)]
pub extern "C" fn malloc_type_aligned_alloc(align: usize, size: usize, id: u64) -> *mut c_void {
    if forward::active() {
        return forward::aligned_alloc(align, size);
    }
    aligned_alloc_in(align, size, type_bucket(id))
}
#[unsafe(no_mangle)]
pub extern "C" fn malloc_type_posix_memalign(out: *mut *mut c_void, align: usize, size: usize, id: u64) -> c_int {
    if forward::active() {
        return forward::posix_memalign(out, align, size);
    }
    posix_memalign_in(out, align, size, type_bucket(id))
}
#[unsafe(no_mangle)]
pub extern "C" fn malloc_type_valloc(size: usize, id: u64) -> *mut c_void {
    if forward::active() {
        return forward::valloc(size);
    }
    alloc_in(size, platform::page_size(), type_bucket(id))
}

/// The token clang gives an allocation whose type it cannot see when `mie cc` built the
/// code (`-mllvm -alloc-token-fallback=`; no real token is this large). Without `mie cc`'s
/// flag clang gives 0, which in an id space of unknown size (the default, 2^64) is this too.
pub const UNKNOWN_TYPE_TOKEN: u64 = u64::MAX;

/// The bucket of a default-ABI AllocToken call: by its token, or, where the compiler could
/// not see the type, by its call site as an untyped call (over the pointer buckets; a wrapper
/// such as `xmalloc` is seen through when `sp` is given).
#[inline(always)]
fn typed_bucket(token: usize, cs: usize, sp: usize) -> usize {
    let t = token as u64;
    if t == UNKNOWN_TYPE_TOKEN || t == 0 && heap::ensure_init().is_some_and(|g| !g.keys.token_max_known) {
        heap::count_unknown_type();
        return if sp != 0 { wrapped_bucket(cs, sp) } else { call_site_bucket(cs) };
    }
    token_bucket(token)
}

extern "C" fn token_malloc_cs(size: usize, token: usize, cs: usize, sp: usize) -> *mut c_void {
    if forward::active() {
        return forward::malloc(size);
    }
    alloc_in(size, 16, typed_bucket(token, cs, sp))
}
extern "C" fn token_calloc_cs(n: usize, m: usize, token: usize, cs: usize, sp: usize) -> *mut c_void {
    if forward::active() {
        return forward::calloc(n, m);
    }
    calloc_in(n, m, typed_bucket(token, cs, sp), "calloc", cs)
}
extern "C" fn token_realloc_cs(p: *mut c_void, size: usize, token: usize, cs: usize, sp: usize) -> *mut c_void {
    if forward::active() {
        return forward::realloc(p, size);
    }
    realloc_in(p, size, typed_bucket(token, cs, sp), &heap::Func("realloc"), cs)
}
extern "C" fn token_reallocarray_cs(p: *mut c_void, n: usize, m: usize, token: usize, cs: usize) -> *mut c_void {
    if forward::active() {
        return forward::reallocarray(p, n, m);
    }
    match n.checked_mul(m) {
        Some(total) => realloc_in(p, total, typed_bucket(token, cs, 0), &heap::Func("reallocarray"), cs),
        None => size_overflow("reallocarray", n, m, cs),
    }
}
extern "C" fn token_aligned_alloc_cs(align: usize, size: usize, token: usize, cs: usize) -> *mut c_void {
    if forward::active() {
        return forward::aligned_alloc(align, size);
    }
    aligned_alloc_in(align, size, typed_bucket(token, cs, 0))
}
extern "C" fn token_memalign_cs(align: usize, size: usize, token: usize, cs: usize) -> *mut c_void {
    if forward::active() {
        return forward::memalign(align, size);
    }
    memalign_in(align, size, typed_bucket(token, cs, 0))
}
extern "C" fn token_posix_memalign_cs(out: *mut *mut c_void, align: usize, size: usize, token: usize, cs: usize) -> c_int {
    if forward::active() {
        return forward::posix_memalign(out, align, size);
    }
    posix_memalign_in(out, align, size, typed_bucket(token, cs, 0))
}
extern "C" fn token_valloc_cs(size: usize, token: usize, cs: usize) -> *mut c_void {
    if forward::active() {
        return forward::valloc(size);
    }
    alloc_in(size, platform::page_size(), typed_bucket(token, cs, 0))
}
extern "C" fn token_pvalloc_cs(size: usize, token: usize, cs: usize) -> *mut c_void {
    if forward::active() {
        return forward::pvalloc(size);
    }
    pvalloc_in(size, typed_bucket(token, cs, 0))
}

// LLVM AllocToken's default ABI: the token comes after the usual arguments; the
// trampolines add the call site (and, where wrappers call, the caller's stack pointer).
entry_sp!(__alloc_token_malloc(size: usize, token: usize) -> *mut c_void, 2, 3 => token_malloc_cs);
entry_sp!(__alloc_token_calloc(n: usize, m: usize, token: usize) -> *mut c_void, 3, 4 => token_calloc_cs);
entry_sp!(__alloc_token_realloc(p: *mut c_void, size: usize, token: usize) -> *mut c_void, 3, 4 => token_realloc_cs);
entry!(__alloc_token_reallocarray(p: *mut c_void, n: usize, m: usize, token: usize) -> *mut c_void, 4 => token_reallocarray_cs);
entry!(__alloc_token_aligned_alloc(align: usize, size: usize, token: usize) -> *mut c_void, 3 => token_aligned_alloc_cs);
entry!(__alloc_token_memalign(align: usize, size: usize, token: usize) -> *mut c_void, 3 => token_memalign_cs);
entry!(__alloc_token_posix_memalign(out: *mut *mut c_void, align: usize, size: usize, token: usize) -> c_int, 4 => token_posix_memalign_cs);
entry!(__alloc_token_valloc(size: usize, token: usize) -> *mut c_void, 2 => token_valloc_cs);
entry!(__alloc_token_pvalloc(size: usize, token: usize) -> *mut c_void, 2 => token_pvalloc_cs);

// ---------------------------------------------------------------------------------------
// Introspection

#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    heap::trim();
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn malloc_stats() {
    mie_core::stats_print()
}

#[unsafe(no_mangle)]
pub extern "C" fn mie_stats_print() {
    mie_core::stats_print()
}

#[repr(C)]
pub struct Mallinfo2 {
    pub arena: usize,
    pub ordblks: usize,
    pub smblks: usize,
    pub hblks: usize,
    pub hblkhd: usize,
    pub usmblks: usize,
    pub fsmblks: usize,
    pub uordblks: usize,
    pub fordblks: usize,
    pub keepcost: usize,
}

#[repr(C)]
pub struct Mallinfo {
    pub arena: c_int,
    pub ordblks: c_int,
    pub smblks: c_int,
    pub hblks: c_int,
    pub hblkhd: c_int,
    pub usmblks: c_int,
    pub fsmblks: c_int,
    pub uordblks: c_int,
    pub fordblks: c_int,
    pub keepcost: c_int,
}

#[unsafe(no_mangle)]
pub extern "C" fn mallinfo2() -> Mallinfo2 {
    let s = mie_core::stats();
    let mapped = s.mapped_bytes as usize;
    let live = s.live_bytes as usize;
    Mallinfo2 {
        arena: mapped,
        ordblks: s.live_blocks() as usize,
        smblks: 0,
        hblks: s.large_live as usize,
        hblkhd: s.large_live_bytes as usize,
        usmblks: 0,
        fsmblks: 0,
        uordblks: live,
        fordblks: mapped.saturating_sub(live),
        keepcost: 0,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn mallinfo() -> Mallinfo {
    let m = mallinfo2();
    let c = |v: usize| v.min(c_int::MAX as usize) as c_int;
    Mallinfo {
        arena: c(m.arena),
        ordblks: c(m.ordblks),
        smblks: 0,
        hblks: c(m.hblks),
        hblkhd: c(m.hblkhd),
        usmblks: 0,
        fsmblks: 0,
        uordblks: c(m.uordblks),
        fordblks: c(m.fordblks),
        keepcost: 0,
    }
}

/// Initialise at load time (before `main` and before the program starts threads), so the
/// options are read and any warning is printed once, up front.
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = {
    extern "C" fn init() {
        // Loaded only as the dependency of a library built with `mie cc`, in a process that
        // allocates elsewhere: forward its typed calls, and never map a heap.
        if forward::mie_is_the_allocator() {
            let _ = heap::ensure_init();
        }
    }
    init
};

/// Diagnostic: the bucket (0 = data, 1..=7 pointer buckets) of the small block containing
/// `p`, or -1 for large blocks and non-heap memory. It says no more than the address does.
#[unsafe(no_mangle)]
pub extern "C" fn mie_bucket_of(p: *const c_void) -> c_int {
    if forward::active() {
        return -1;
    }
    match heap::owner_of(p.cast()) {
        Some((_, b)) => b as c_int,
        None => -1,
    }
}

/// Diagnostic: the address of the metadata of the slab holding small block `p` (NULL
/// otherwise). With MTE, metadata carries a tag no live pointer has: the arm64 tests use this
/// to show that a heap pointer walked into metadata faults.
#[unsafe(no_mangle)]
pub extern "C" fn mie_debug_slab_metadata(p: *const c_void) -> *mut c_void {
    if forward::active() {
        return core::ptr::null_mut();
    }
    heap::slab_metadata_of(p.cast()).unwrap_or(0) as *mut c_void
}

// ---------------------------------------------------------------------------------------
// Bounds-checked memory and string functions (after the trampoline macros they use).
mod fast_abi;
mod forward;
mod string;

/// Where this library's heap lies (heap start and length, metadata start and length), for a
/// second mie heap in the process (a Rust program with `mie::Mie` as its global allocator,
/// started under this library) to keep clear of. Not part of the public C API.
///
/// # Safety
/// `out` must point at four writable words.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __mie_heap_ranges(out: *mut usize) {
    let r = heap::heap_ranges();
    // SAFETY: the caller's guarantee.
    unsafe { core::ptr::copy_nonoverlapping(r.as_ptr(), out, 4) };
}
