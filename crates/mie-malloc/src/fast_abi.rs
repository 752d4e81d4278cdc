//! LLVM AllocToken's fast ABI (`clang -fsanitize=alloc-token -fsanitize-alloc-token-fast-abi`):
//! the token id is in the function's name, `__alloc_token_<id>_malloc(size)` and so on, for
//! ids below `-falloc-token-max`. libmie.so exports every form for ids 0..63 (with the fast
//! ABI, use `-falloc-token-max` of at most 64; `mie cc` checks it), and id 64 for a type the
//! compiler could not see. Each maps its id to a
//! bucket with `mie_fast_token`: by the id itself when the program's id space is known, so
//! the lower half is pointer-free; otherwise in the pointer half, so ids stay apart.
//!
//! The forms of `operator new` are naked trampolines into the C++ shim (which may throw
//! `std::bad_alloc`: no Rust frame may be on the stack then), the id as an immediate.

use core::arch::naked_asm;
use core::ffi::{c_int, c_void};

use super::{aligned_alloc_in, alloc_in, calloc_in, memalign_in, mie_cxx_new_fast, mie_cxx_new_fast_nothrow, mie_fast_token, posix_memalign_in, pvalloc_in, realloc_in, size_overflow, token_bucket};
use mie_core::sys::{platform, Func};

#[inline(always)]
fn bucket(id: usize) -> usize {
    token_bucket(mie_fast_token(id))
}

#[cfg(target_arch = "x86_64")]
macro_rules! new_tramp {
    ($id:literal, $name:literal, [$($pre:literal),*], $target:path) => {
        const _: () = {
            /// # Safety
            /// A C++ ABI entry point.
            #[unsafe(naked)]
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_", $name))]
            unsafe extern "C" fn f() {
                naked_asm!($($pre,)* "mov edx, {id}", "jmp {t}", id = const $id, t = sym $target)
            }
        };
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! new_tramp {
    ($id:literal, $name:literal, [$($pre:literal),*], $target:path) => {
        const _: () = {
            /// # Safety
            /// A C++ ABI entry point.
            #[unsafe(naked)]
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_", $name))]
            unsafe extern "C" fn f() {
                naked_asm!($($pre,)* "mov x2, #{id}", "b {t}", id = const $id, t = sym $target)
            }
        };
    };
}

#[cfg(target_arch = "x86_64")]
macro_rules! new_forms {
    ($id:literal) => {
        new_tramp!($id, "_Znwm", ["mov esi, 16"], mie_cxx_new_fast);
        new_tramp!($id, "_Znam", ["mov esi, 16", "bts rsi, 40"], mie_cxx_new_fast);
        new_tramp!($id, "_ZnwmSt11align_val_t", ["bts rsi, 41"], mie_cxx_new_fast);
        new_tramp!($id, "_ZnamSt11align_val_t", ["bts rsi, 40", "bts rsi, 41"], mie_cxx_new_fast);
        new_tramp!($id, "_ZnwmRKSt9nothrow_t", ["mov esi, 16"], mie_cxx_new_fast_nothrow);
        new_tramp!($id, "_ZnamRKSt9nothrow_t", ["mov esi, 16", "bts rsi, 40"], mie_cxx_new_fast_nothrow);
        new_tramp!($id, "_ZnwmSt11align_val_tRKSt9nothrow_t", ["bts rsi, 41"], mie_cxx_new_fast_nothrow);
        new_tramp!($id, "_ZnamSt11align_val_tRKSt9nothrow_t", ["bts rsi, 40", "bts rsi, 41"], mie_cxx_new_fast_nothrow);
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! new_forms {
    ($id:literal) => {
        new_tramp!($id, "_Znwm", ["mov x1, #16"], mie_cxx_new_fast);
        new_tramp!($id, "_Znam", ["mov x1, #16", "orr x1, x1, #0x10000000000"], mie_cxx_new_fast);
        new_tramp!($id, "_ZnwmSt11align_val_t", ["orr x1, x1, #0x20000000000"], mie_cxx_new_fast);
        new_tramp!($id, "_ZnamSt11align_val_t", ["orr x1, x1, #0x30000000000"], mie_cxx_new_fast);
        new_tramp!($id, "_ZnwmRKSt9nothrow_t", ["mov x1, #16"], mie_cxx_new_fast_nothrow);
        new_tramp!($id, "_ZnamRKSt9nothrow_t", ["mov x1, #16", "orr x1, x1, #0x10000000000"], mie_cxx_new_fast_nothrow);
        new_tramp!($id, "_ZnwmSt11align_val_tRKSt9nothrow_t", ["orr x1, x1, #0x20000000000"], mie_cxx_new_fast_nothrow);
        new_tramp!($id, "_ZnamSt11align_val_tRKSt9nothrow_t", ["orr x1, x1, #0x30000000000"], mie_cxx_new_fast_nothrow);
    };
}

/// The typed calls behind every id's entry points: each entry point passes its id and tail
/// calls one of these (one copy of the body, not 64).
mod typed {
    use super::*;
    use crate::forward;

    #[inline(never)]
    pub extern "C" fn malloc(size: usize, id: usize) -> *mut c_void {
        if forward::active() {
            return forward::malloc(size);
        }
        alloc_in(size, 16, bucket(id))
    }
    #[inline(never)]
    pub extern "C" fn calloc(n: usize, m: usize, id: usize) -> *mut c_void {
        if forward::active() {
            return forward::calloc(n, m);
        }
        calloc_in(n, m, bucket(id), "calloc", 0)
    }
    #[inline(never)]
    pub extern "C" fn realloc(p: *mut c_void, size: usize, id: usize) -> *mut c_void {
        if forward::active() {
            return forward::realloc(p, size);
        }
        realloc_in(p, size, bucket(id), &Func("realloc"), 0)
    }
    #[inline(never)]
    pub extern "C" fn reallocarray(p: *mut c_void, n: usize, m: usize, id: usize) -> *mut c_void {
        if forward::active() {
            return forward::reallocarray(p, n, m);
        }
        match n.checked_mul(m) {
            Some(total) => realloc_in(p, total, bucket(id), &Func("reallocarray"), 0),
            None => size_overflow("reallocarray", n, m, 0),
        }
    }
    #[inline(never)]
    pub extern "C" fn aligned_alloc(align: usize, size: usize, id: usize) -> *mut c_void {
        if forward::active() {
            return forward::aligned_alloc(align, size);
        }
        aligned_alloc_in(align, size, bucket(id))
    }
    #[inline(never)]
    pub extern "C" fn memalign(align: usize, size: usize, id: usize) -> *mut c_void {
        if forward::active() {
            return forward::memalign(align, size);
        }
        memalign_in(align, size, bucket(id))
    }
    #[inline(never)]
    pub extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize, id: usize) -> c_int {
        if forward::active() {
            return forward::posix_memalign(out, align, size);
        }
        posix_memalign_in(out, align, size, bucket(id))
    }
    #[inline(never)]
    pub extern "C" fn valloc(size: usize, id: usize) -> *mut c_void {
        if forward::active() {
            return forward::valloc(size);
        }
        alloc_in(size, platform::page_size(), bucket(id))
    }
    #[inline(never)]
    pub extern "C" fn pvalloc(size: usize, id: usize) -> *mut c_void {
        if forward::active() {
            return forward::pvalloc(size);
        }
        pvalloc_in(size, bucket(id))
    }
}

macro_rules! c_forms {
    ($id:literal) => {
        const _: () = {
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_malloc"))]
            extern "C" fn malloc(size: usize) -> *mut c_void {
                typed::malloc(size, $id)
            }
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_calloc"))]
            extern "C" fn calloc(n: usize, m: usize) -> *mut c_void {
                typed::calloc(n, m, $id)
            }
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_realloc"))]
            extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
                typed::realloc(p, size, $id)
            }
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_reallocarray"))]
            extern "C" fn reallocarray(p: *mut c_void, n: usize, m: usize) -> *mut c_void {
                typed::reallocarray(p, n, m, $id)
            }
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_aligned_alloc"))]
            extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
                typed::aligned_alloc(align, size, $id)
            }
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_memalign"))]
            extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
                typed::memalign(align, size, $id)
            }
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_posix_memalign"))]
            extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
                typed::posix_memalign(out, align, size, $id)
            }
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_valloc"))]
            extern "C" fn valloc(size: usize) -> *mut c_void {
                typed::valloc(size, $id)
            }
            #[unsafe(export_name = concat!("__alloc_token_", $id, "_pvalloc"))]
            extern "C" fn pvalloc(size: usize) -> *mut c_void {
                typed::pvalloc(size, $id)
            }
        };
        new_forms!($id);
    };
}

// Id 64: the fast ABI's id for a type the compiler could not see (`mie cc` passes
// `-mllvm -alloc-token-fallback=64`; the id space is at most 64, so no type has it). Its
// entry points are the untyped functions themselves: a tail jump through the PLT to the
// process's `malloc` and so on keeps the caller's return address for call-site bucketing
// (mie's own functions when mie is the process's allocator; the process's otherwise).

macro_rules! unknown_forms {
    ($($name:literal),*) => {
        $(
            const _: () = {
                /// # Safety
                /// A C ABI entry point with the signature of the function it jumps to.
                #[unsafe(naked)]
                #[unsafe(export_name = concat!("__alloc_token_64_", $name))]
                unsafe extern "C" fn f() {
                    #[cfg(target_arch = "x86_64")]
                    naked_asm!(concat!("jmp ", $name, "@PLT"));
                    #[cfg(target_arch = "aarch64")]
                    naked_asm!(concat!("b ", $name));
                }
            };
        )*
    };
}
unknown_forms!(
    "malloc", "calloc", "realloc", "reallocarray", "aligned_alloc", "memalign", "posix_memalign", "valloc", "pvalloc",
    "_Znwm", "_Znam", "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t"
);

macro_rules! every_id {
    ($($id:literal)*) => { $(c_forms!($id);)* };
}

every_id!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);
