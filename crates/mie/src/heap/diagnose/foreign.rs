//! Blocks that cross into another allocator. A library loaded with `dlopen(RTLD_DEEPBIND)`
//! looks symbols up in its own dependencies first, so its `malloc` and `free` are the C
//! library's, whatever is preloaded; every preloaded allocator meets this (Debian's php-cli
//! loads its pdo, phar and tokenizer extensions that way). When such a library frees a block
//! mie allocated, the C library stops the program ("free(): invalid pointer", SIGABRT) or
//! crashes inside its `free` (SIGSEGV). mie cannot change the binding; it says what
//! happened: a SIGABRT or SIGSEGV with one of the C library's allocator functions on the
//! stack gets a report naming the library that called it.

use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Whether `pc` is in one of the C library's allocator functions (a fault there is the
/// C library meeting a block that is not its own).
pub fn pc_in_libc_allocator(pc: usize) -> bool {
    let libc_base = LIBC_BASE.load(Ordering::Relaxed);
    libc_base != 0 && in_libc_allocator(libc_base, pc)
}

use crate::platform;
use crate::report::{self, Kind, Line};

/// The C library's allocator entry points that can be handed a foreign block.
const LIBC_ALLOCATOR: [&[u8]; 9] = [
    b"free",
    b"cfree",
    b"__libc_free",
    b"realloc",
    b"__libc_realloc",
    b"reallocarray",
    b"__libc_reallocarray",
    b"malloc_usable_size",
    b"__malloc_usable_size",
];

/// Base address of the C library (0 until looked up).
static LIBC_BASE: AtomicUsize = AtomicUsize::new(0);

pub fn install() {
    LIBC_BASE.store(platform::object_base(libc::getpid as *const () as usize), Ordering::Relaxed);
    platform::install_handler(libc::SIGABRT, on_abrt);
}

extern "C" fn on_abrt(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // The checks first: after a stack overflow only their careful walk is safe.
    if !crate::traps::explain_abort() {
        explain("the C library's allocator stopped the program (SIGABRT)");
    }
    // SAFETY: the arguments are the kernel's, passed on unchanged.
    unsafe { platform::chain(sig, info, uc) }
}

/// If the calling stack runs through one of the C library's allocator functions, print a
/// report naming the function and the code that called it; true if it did. Called from the
/// SIGABRT and SIGSEGV handlers, where the process is about to end.
pub fn explain(what: &str) -> bool {
    let Some((func, caller)) = libc_allocator_on_stack() else { return false };
    let mut o = Line::new();
    write_report(&mut o, what, func, caller);
    let _ = writeln!(o, "mie: the process ends as the C library decided");
    o.flush();
    true
}

/// The same report for a fault inside the C library's allocator (it read the header it
/// expects before a block mie made, unmapped or, with MTE, tagged as another block's): it
/// ends the process as every mie report does. Returns if no such function is on the stack.
pub fn explain_fault() {
    let Some((func, caller)) = libc_allocator_on_stack() else { return };
    let mut o = Line::new();
    write_report(&mut o, "the C library's allocator crashed (SIGSEGV)", func, caller);
    report::conclude(o, Kind::ForeignFree)
}

fn write_report(o: &mut Line, what: &str, func: &[u8], caller: usize) {
    let _ = writeln!(o, "mie: {} in {}() of the C library", Kind::ForeignFree.name(), report::Bytes(func));
    let _ = writeln!(o, "  {what}: its {}() was given memory its own allocator does not own", report::Bytes(func));
    report::write_code_addr(o, "called from", caller);
    write_cause(o, caller);
}

/// For a fault report whose faulting instruction `pc` is in the C library's allocator (with
/// MTE, its free reads the header it expects before a block and faults there): add the
/// likely cause.
pub fn add_cause_if_libc_allocator(o: &mut dyn Write, pc: usize) {
    let libc_base = LIBC_BASE.load(Ordering::Relaxed);
    if libc_base == 0 || !in_libc_allocator(libc_base, pc) {
        return;
    }
    if let Some((func, caller)) = libc_allocator_on_stack() {
        let _ = writeln!(o, "  the fault is in the C library's own {}(), called from:", report::Bytes(func));
        report::write_code_addr(o, "called from", caller);
        write_cause(o, caller);
    }
}

fn write_cause(o: &mut dyn Write, caller: usize) {
    let obj = platform::object_name(caller);
    // Who else binds the C library's free: the libraries loaded with RTLD_DEEPBIND.
    let libc_free = platform::own_definition(LIBC_BASE.load(Ordering::Relaxed), c"free");
    let mut deep = [0usize; 4];
    let n = if libc_free != 0 { platform::bound_to_libc(c"free", libc_free, &mut deep) } else { 0 };
    let deep = &deep[..n];
    let caller_base = platform::object_base(caller);
    let others = deep.iter().filter(|&&d| platform::object_base(d) != caller_base).count();
    if platform::code::indirect_call(caller) && others > 0 {
        // The call is through a function pointer (a destructor, a callback) that holds the C
        // library's free: a DEEPBIND library took its own free's address and handed it over.
        let _ = write!(
            o,
            "  cause: {} called free() through a function pointer (a destructor or callback) that holds the C library's free, not mie's; the library that took that address binds free to the C library, as a library loaded with dlopen(RTLD_DEEPBIND) does:",
            report::Bytes(obj.unwrap_or(b"the program"))
        );
        for &d in deep.iter().filter(|&&d| platform::object_base(d) != caller_base) {
            let _ = write!(o, " {}", report::Bytes(platform::object_name(d).unwrap_or(b"?")));
        }
        let _ = writeln!(o, "; the block it was given came from mie");
        let _ = writeln!(o, "  what to do: run the program without that library, or without mie (see mie's README, \"RTLD_DEEPBIND\")");
        return;
    }
    if platform::needs_library(caller, b"libmie") {
        // Built with `mie cc` (or `mie enable`d): its typed allocations are mie's only when
        // mie is the process's allocator (libmie forwards them otherwise), so its own free
        // reaching the C library means its lookups do not start with the process's scope.
        let _ = writeln!(
            o,
            "  cause: {} loads libmie.so itself (built with `mie cc` or changed by `mie enable`), but its free() binds to the C library's: it was loaded with dlopen(RTLD_DEEPBIND), or given its own copy of the C library's allocator, so mie's blocks reach an allocator that did not make them",
            report::Bytes(obj.unwrap_or(b"the calling library"))
        );
        let _ = writeln!(o, "  what to do: load it without RTLD_DEEPBIND, or run the whole program under mie (mie run), so that every free is mie's");
        return;
    }
    let _ = writeln!(
        o,
        "  cause: {} calls the C library's allocator instead of mie's, most likely because it was loaded with dlopen(RTLD_DEEPBIND), which binds a library's malloc and free to the C library before any preloaded allocator; a block allocated by mie elsewhere in the program reached it",
        report::Bytes(obj.unwrap_or(b"the calling library"))
    );
    let _ = writeln!(o, "  what to do: run the program without the library that is loaded this way, or without mie (see mie's README, \"RTLD_DEEPBIND\")");
}

/// The first of the C library's allocator functions on the calling stack (by the name the
/// program calls it) and the return address into its caller.
fn libc_allocator_on_stack() -> Option<(&'static [u8], usize)> {
    let libc_base = LIBC_BASE.load(Ordering::Relaxed);
    if libc_base == 0 {
        return None;
    }
    let mut frames = [0usize; 48];
    let n = platform::backtrace_into(&mut frames);
    let frames = &frames[..n];
    let i = frames.iter().position(|&pc| in_libc_allocator(libc_base, pc))?;
    let func = platform::symbol_name(frames[i]).unwrap_or(b"free");
    // glibc's internal names (__libc_free) for the function the program called (free).
    let func = func.strip_prefix(b"__libc_").or_else(|| func.strip_prefix(b"__")).unwrap_or(func);
    Some((func, frames.get(i + 1).copied().unwrap_or(0)))
}

/// Whether `pc` lies inside one of the C library's allocator functions (by its dynamic
/// symbol and that symbol's size).
fn in_libc_allocator(libc_base: usize, pc: usize) -> bool {
    match platform::symbol_at(pc) {
        Some((base, name, start, size)) => {
            base == libc_base && pc.wrapping_sub(start) < size.max(1) && LIBC_ALLOCATOR.contains(&name)
        }
        None => false,
    }
}

/// A pointer mie's `free` does not know: is it in the C library's own heap (its `brk`
/// area)? Then a block from the C library's `malloc` reached mie (a library bound to the C
/// library's allocator, RTLD_DEEPBIND, handed it over). For reports only.
pub fn in_libc_brk_heap(p: usize) -> bool {
    // The C library's malloc has `arena` bytes from sbrk (its mmap'ed heaps of other threads
    // are counted too, so bound the window by the program image when that lies below the
    // break, as it does unless the dynamic loader was started as the program).
    let Some(arena) = platform::libc_arena_bytes() else { return false };
    // SAFETY: sbrk(0) only reads the current program break; getauxval reads the auxv.
    let (brk, phdr) = unsafe { (libc::sbrk(0) as usize, libc::getauxval(libc::AT_PHDR) as usize) };
    let image_end = platform::object_extent(phdr).1;
    let mut lo = brk.saturating_sub(arena);
    if image_end <= brk {
        lo = lo.max(image_end);
    }
    arena != 0 && p >= lo && p < brk
}
