//! Allocation/release mismatches (`new[]` released by `delete`, `new` by `free`, a sized
//! delete naming another size...): which ones stop the program.
//!
//! By the time a mismatch is judged, the pointer has been validated as the *start* of a
//! live block. Releasing it then frees exactly the memory that was allocated, so a mismatch
//! in kind (or in the alignment it names) cannot corrupt memory: it is reported once per
//! call site and the program goes on (`alloc_dealloc_mismatch=1`, the default; `=2` makes
//! it fatal, `=0` silent). A release that names a size larger than the block says the
//! program believes in memory that is not there: always fatal, as is every
//! interior pointer (a `delete` of a `new[]` array with a cookie), which validation stops
//! as an invalid free before it gets here.
//!
//! A `malloc` block released by `operator delete` is legal when the code's `operator new`
//! is itself a replacement that calls `malloc` (a program's own, or a library's bound to
//! itself with `-Bsymbolic`, like LLVM's, whose blocks the program linked against it
//! deletes: `rust-lld`): then `delete` reaches libmie with a block it recorded as
//! `malloc`. Such a release passes silently.

use core::fmt::Write;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::heap::types::kind::{self, Release};
use crate::heap::slab::layout::Loc;
use crate::heap::{describe_slot, checks::stacks, Caller};
use crate::platform;
use crate::report::{self, Kind};

/// How bad a mismatch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Released at its start, naming no more than the block's size: cannot corrupt memory.
    Harmless,
    /// The release names more memory than the block has.
    Fatal,
}

/// Judge a release `r` of a block (at its start) allocated with `size` bytes (the caller
/// knows `r` does not accept it). The alignment a release names does not matter: mie
/// releases the block it finds at the pointer, whatever alignment the caller assumes.
pub fn judge(r: Release, size: usize) -> Verdict {
    if r.size.is_none_or(|s| s <= size) {
        Verdict::Harmless
    } else {
        Verdict::Fatal
    }
}

/// Handle a mismatch: return to go on with the release, or stop the process.
#[cold]
#[inline(never)]
pub fn on_mismatch(p: usize, who: Caller, r: Release, kind: u8, size: usize, loc: Option<&Loc>, mode: u8) {
    if judge(r, size) == Verdict::Harmless {
        let delete_of_malloc = kind == kind::MALLOC && (r.kind == kind::NEW || r.kind == kind::NEW_ARRAY) && r.align <= 1;
        if delete_of_malloc && operator_new_is_replaced(who.ret_addr) {
            return;
        }
        if mode < 2 {
            if mode == 1 && first_at(who.ret_addr) {
                let mut o = report::Line::new();
                let _ = writeln!(o, "mie: {} on {p:#x} in {}()", Kind::AllocKindMismatch.name(), who.func);
                describe(&mut o, p, who, r, kind, size, loc);
                let _ = writeln!(
                    o,
                    "mie: continuing: the block was released at its start and in full, so no memory was corrupted (alloc_dealloc_mismatch=2 makes this fatal); not reported again from this call site"
                );
                o.flush();
            }
            return;
        }
    }
    report::fatal(Kind::AllocKindMismatch, p, who.func, |o| describe(o, p, who, r, kind, size, loc))
}

fn describe(o: &mut dyn Write, p: usize, who: Caller, r: Release, kind: u8, size: usize, loc: Option<&Loc>) {
    if kind != r.kind {
        let _ = writeln!(o, "  {}() of a block allocated with {}: release it with {}()", who.func, kind::allocated_by(kind), kind::released_by(kind));
    } else if let Some(s) = r.size.filter(|&s| s != size) {
        let _ = writeln!(o, "  {}() names a size of {s} bytes, but the block was allocated with {size} bytes", who.func);
    } else {
        let _ = writeln!(o, "  {}() names an alignment of {}, but the block at {p:#x} is not aligned to it", who.func, r.align);
    }
    match loc {
        Some(l) => describe_slot(o, l, p, "live"),
        None => {
            let _ = writeln!(o, "  block {p:#x}: {size} bytes requested");
            stacks::print(o, p, "");
        }
    }
    report::write_code_addr(o, "called from", who.ret_addr);
}

/// Call sites already reported (non-zero return addresses), a small open-addressing set.
const SITES: usize = 256;
static SEEN: [AtomicUsize; SITES] = [const { AtomicUsize::new(0) }; SITES];
static FULL_NOTED: AtomicU8 = AtomicU8::new(0);

/// True the first time a mismatch is seen at `site` (and for every site once the set is
/// full, after saying once that no more sites are remembered).
fn first_at(site: usize) -> bool {
    let key = site | 1 << 63;
    let h = crate::rand::mix64(site as u64) as usize;
    for i in 0..SITES {
        let e = &SEEN[(h + i) % SITES];
        match e.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(k) if k == key => return false,
            Err(_) => {}
        }
    }
    if FULL_NOTED.swap(1, Ordering::Relaxed) == 0 {
        report::warn(format_args!("more than {SITES} call sites with alloc-dealloc mismatches: each further one is reported every time"));
    }
    true
}

/// Whether the `operator new` that code at `site` calls is a replacement (not libmie's):
/// the process-wide one (the program's own), or one the calling object defines for itself.
/// Cached: the global answer once, per object a few entries.
fn operator_new_is_replaced(site: usize) -> bool {
    static GLOBAL: AtomicU8 = AtomicU8::new(0);
    let own = platform::object_extent(operator_new_is_replaced as *const () as usize);
    let outside_own = |a: usize| a != 0 && a.wrapping_sub(own.0) >= own.1.wrapping_sub(own.0);
    let g = match GLOBAL.load(Ordering::Relaxed) {
        0 => {
            let r = if outside_own(platform::global_symbol(c"_Znwm")) { 2 } else { 1 };
            GLOBAL.store(r, Ordering::Relaxed);
            r
        }
        r => r,
    };
    if g == 2 {
        return true;
    }
    // The calling object's own definition, if it has one (bound to itself, -Bsymbolic).
    const OBJECTS: usize = 16;
    static CACHE: [AtomicUsize; OBJECTS] = [const { AtomicUsize::new(0) }; OBJECTS];
    let base = platform::object_base(site);
    if base == 0 {
        return false;
    }
    let slot = &CACHE[(base >> 12) % OBJECTS];
    let cached = slot.load(Ordering::Relaxed);
    if cached & !1 == base {
        return cached & 1 == 1;
    }
    let replaced = outside_own(platform::own_definition(site, c"_Znwm")) || a_library_has_its_own_operator_new();
    slot.store(base | replaced as usize, Ordering::Relaxed);
    replaced
}

/// Whether a loaded library other than libmie and the C++ runtime defines `operator new`
/// for itself (LLVM's `libLLVM.so` does, versioned and bound to itself): its `new` calls
/// `malloc`, and the code that deletes those blocks (`rust-lld`, linked against it) reaches
/// libmie's `delete`. Which allocation came from it is not known, so a `delete` of a
/// `malloc` block is legal in such a process. Asked again when libraries were loaded since.
fn a_library_has_its_own_operator_new() -> bool {
    static ADDS: AtomicUsize = AtomicUsize::new(usize::MAX);
    static ANSWER: AtomicU8 = AtomicU8::new(0);
    let own = platform::object_base(a_library_has_its_own_operator_new as *const () as usize);
    let mut found = false;
    let adds = platform::each_object(|name, inside| {
        let base = platform::base_name(name);
        let runtime = base.starts_with(b"libstdc++") || base.starts_with(b"libc++");
        found = !runtime && platform::object_base(inside) != own && platform::own_definition(inside, c"_Znwm") != 0;
        found
    });
    if !found && ADDS.load(Ordering::Relaxed) == adds {
        return ANSWER.load(Ordering::Relaxed) == 1;
    }
    ADDS.store(adds, Ordering::Relaxed);
    ANSWER.store(found as u8, Ordering::Relaxed);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(judge(Release::of(kind::NEW), 24), Verdict::Harmless);
        let sized = |s| Release { kind: kind::NEW, size: Some(s), align: 1 };
        assert_eq!(judge(sized(24), 24), Verdict::Harmless);
        assert_eq!(judge(sized(16), 24), Verdict::Harmless);
        assert_eq!(judge(sized(32), 24), Verdict::Fatal);
        assert_eq!(judge(Release { kind: kind::NEW_ALIGNED, size: None, align: 64 }, 24), Verdict::Harmless);
    }

    #[test]
    fn each_site_is_first_once() {
        assert!(first_at(0x1234_5678));
        assert!(!first_at(0x1234_5678));
        assert!(first_at(0x1234_5679));
        assert!(!first_at(0x1234_5678));
    }
}
