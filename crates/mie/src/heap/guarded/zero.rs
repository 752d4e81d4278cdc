//! Zero-size blocks: `malloc(0)` returns a unique address inside a reservation that is never
//! mapped, so any read or write through it faults at once and is reported as a zero-size
//! access. Each address has a live bit (out of line, in its own mapping), so `free` of such
//! a pointer is validated like any other: a second free is a double free, an address between
//! two zero-size blocks is an invalid free.
//!
//! Addresses are handed out round-robin from an atomic cursor, so a freed zero-size
//! address comes back only after every other one has been used (millions of calls later).

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::platform;
use crate::report::{self, Kind};

/// Distinct zero-size addresses (16 bytes apart, like every block).
const COUNT: usize = 1 << 22;
const STRIDE: usize = 16;
const SPAN: usize = COUNT * STRIDE;
const WORDS: usize = COUNT / 64;

static BASE: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0); // *const [AtomicU64; WORDS]
static CURSOR: AtomicUsize = AtomicUsize::new(0);
static INIT: crate::platform::lock::Lock = crate::platform::lock::Lock::new();

/// Is `p` (untagged) inside the zero-size reservation? One compare.
#[inline(always)]
pub fn owns(p: usize) -> bool {
    let base = BASE.load(Ordering::Relaxed);
    base != 0 && p.wrapping_sub(base) < SPAN
}

fn words() -> &'static [AtomicU64] {
    // SAFETY: LIVE points at WORDS committed, zero-initialised words once BASE is set (both
    // are published together under INIT, BASE last with Release); never unmapped.
    unsafe { core::slice::from_raw_parts(LIVE.load(Ordering::Acquire) as *const AtomicU64, WORDS) }
}

fn init() -> bool {
    let _g = INIT.guard();
    if BASE.load(Ordering::Acquire) != 0 {
        return true;
    }
    let live = platform::map_rw(WORDS * 8);
    if live.is_null() {
        return false;
    }
    let base = crate::heap::large::LARGE.reserve_area(SPAN);
    if base.is_null() {
        platform::release(live, WORDS * 8);
        return false;
    }
    LIVE.store(live as usize, Ordering::Release);
    BASE.store(base as usize, Ordering::Release);
    true
}

/// A fresh zero-size block; null if the reservation could not be made or every address is
/// live (the caller then serves the request as a 1-byte block).
pub fn alloc() -> *mut u8 {
    if BASE.load(Ordering::Acquire) == 0 && !init() {
        return core::ptr::null_mut();
    }
    let w = words();
    for _ in 0..COUNT {
        let i = CURSOR.fetch_add(1, Ordering::Relaxed) % COUNT;
        let bit = 1u64 << (i % 64);
        if w[i / 64].fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            return (BASE.load(Ordering::Relaxed) + i * STRIDE) as *mut u8;
        }
    }
    core::ptr::null_mut()
}

/// Free the zero-size block at `p` (inside the reservation). Reports and aborts for a second
/// free or an address that is not a block start.
pub fn free(p: usize, func: &str, ret_addr: usize) {
    let i = index(p, func, ret_addr);
    let bit = 1u64 << (i % 64);
    if words()[i / 64].fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
        report::fatal(Kind::DoubleFree, p, func, |o| {
            let _ = writeln!(o, "  the zero-size block (malloc(0)) was already freed");
            report::write_code_addr(o, "called from", ret_addr);
        });
    }
}

/// Validate a live zero-size block at `p` for a query (usable size, realloc).
pub fn validate(p: usize, func: &str, ret_addr: usize, releasing: bool) {
    let i = index(p, func, ret_addr);
    if words()[i / 64].load(Ordering::Acquire) & (1u64 << (i % 64)) == 0 {
        let kind = if releasing { Kind::DoubleFree } else { Kind::InvalidFree };
        report::fatal(kind, p, func, |o| {
            let _ = writeln!(o, "  the zero-size block (malloc(0)) was already freed");
            report::write_code_addr(o, "called from", ret_addr);
        });
    }
}

/// Whether the zero-size block at `p` is live (for range checks; no report).
pub fn is_live(p: usize) -> bool {
    let i = (p - BASE.load(Ordering::Relaxed)) / STRIDE;
    words()[i / 64].load(Ordering::Acquire) & (1u64 << (i % 64)) != 0
}

fn index(p: usize, func: &str, ret_addr: usize) -> usize {
    let off = p - BASE.load(Ordering::Relaxed);
    if off & (STRIDE - 1) != 0 {
        report::fatal(Kind::InvalidFree, p, func, |o| {
            let _ = writeln!(o, "  inside mie's zero-size area but not the address of a zero-size block");
            report::write_code_addr(o, "called from", ret_addr);
        });
    }
    off / STRIDE
}

/// For the SIGSEGV handler: the zero-size block an address in the area belongs to, and
/// whether it is live. None outside the area.
pub(crate) fn fault_view(addr: usize) -> Option<(usize, bool)> {
    if !owns(addr) {
        return None;
    }
    let block = addr - (addr - BASE.load(Ordering::Relaxed)) % STRIDE;
    Some((block, is_live(block)))
}
