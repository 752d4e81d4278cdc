//! The loaded objects: which one holds an address (`_dl_find_object`, else `dladdr`), their
//! extents and own dynamic symbols, what the program itself exports to mie (its default
//! options, its AllocToken id space), stack walks and code addresses for reports.

use core::ptr;

use super::symbols;

/// Whether `[a, a + len)` is readable code of a loaded object.
pub fn code_readable(a: usize, len: usize) -> bool {
    super::code::readable(a, len)
}

// The unwinder (Rust's standard library links it in already: libgcc_s in a Rust program,
// libgcc_eh's copy inside libmie.so, which so loads no other object), called directly. Not the C library's `backtrace()`: its first call `dlopen`s libgcc_s, and a
// first call made from inside a `dlopen` (an allocation the loader makes while it enters the
// new object in its address table) re-enters the loader there, which then files the outer
// object as done while the outer update still counts on filling it in: the next lookup
// reads a null entry (python crashed in 1 of 600 starts, when mie's first stack walk, of a
// guarded sample or a wrapper's site, fell on that allocation).
#[allow(non_camel_case_types)]
type _Unwind_Trace_Fn = extern "C" fn(ctx: *mut libc::c_void, arg: *mut libc::c_void) -> libc::c_int;
extern "C" {
    fn _Unwind_Backtrace(trace: _Unwind_Trace_Fn, arg: *mut libc::c_void) -> libc::c_int;
    fn _Unwind_GetIP(ctx: *mut libc::c_void) -> usize;
    fn _Unwind_GetCFA(ctx: *mut libc::c_void) -> usize;
}

/// `_Unwind_Reason_Code` values the walk returns to stop.
const URC_NO_REASON: libc::c_int = 0;
const URC_END_OF_STACK: libc::c_int = 5;

struct Walk<'a> {
    out: &'a mut [usize],
    n: usize,
    cfa: usize,
    /// Frames still to pass over before recording.
    skip: usize,
}

extern "C" fn walk_frame(ctx: *mut libc::c_void, arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the `Walk` that `backtrace_into` passed, alive for the whole walk;
    // ctx is the unwinder's context of the current frame.
    let (w, ip, cfa) = unsafe { (&mut *(arg as *mut Walk), _Unwind_GetIP(ctx), _Unwind_GetCFA(ctx)) };
    if w.skip > 0 {
        w.skip -= 1;
        return URC_NO_REASON;
    }
    // A frame that repeats the last one (same return address and frame) is a walk that
    // makes no progress: stop (broken unwind tables).
    if ip == 0 || (w.n > 0 && w.out[w.n - 1] == ip && w.cfa == cfa) {
        return URC_END_OF_STACK;
    }
    w.out[w.n] = ip;
    w.n += 1;
    w.cfa = cfa;
    if w.n == w.out.len() {
        URC_END_OF_STACK
    } else {
        URC_NO_REASON
    }
}

/// Return addresses of the calling stack, innermost first, starting in the caller of this
/// function (the unwinder works without frame pointers). No allocation, no lock of the
/// loader's: safe inside an allocation the loader makes.
#[inline(never)]
pub fn backtrace_into(out: &mut [usize]) -> usize {
    if out.is_empty() {
        return 0;
    }
    // The first frame is this function's own (where it calls the unwinder): passed over, so
    // the walk starts where the C library's `backtrace` started, in the caller, and a
    // buffer of n entries gets n frames (the abort handler walks one frame deeper at a time).
    let mut w = Walk { out, n: 0, cfa: 0, skip: 1 };
    // SAFETY: walk_frame only writes below `w.out.len()`; `w` outlives the call.
    unsafe { _Unwind_Backtrace(walk_frame, (&mut w as *mut Walk).cast()) };
    w.n
}

/// A word named `$holder` (hidden) that holds the address of `$symbol`, referenced weakly:
/// filled in by the static linker or the dynamic loader, 0 where nothing defines the symbol.
/// Read it as an `Option` of a function pointer.
macro_rules! weak_reference {
    ($symbol:literal, $holder:literal) => {
        core::arch::global_asm!(
            concat!(".weak ", $symbol),
            concat!(".pushsection .data.rel.ro.", $holder, ",\"aw\""),
            ".balign 8",
            concat!(".globl ", $holder),
            concat!(".hidden ", $holder),
            concat!($holder, ":"),
            concat!(".8byte ", $symbol),
            ".popsection",
        );
    };
}

// glibc 2.35's `_dl_find_object`, referenced weakly (0 on an older C library): the loaded
// object holding an address by a binary search of the loader's table. `dladdr` answers the
// same question by scanning the object's whole symbol table for the nearest symbol, which
// at start-up (three lookups) cost a process about 25 us.
weak_reference!("_dl_find_object", "mie_dl_find_object_fn");

#[repr(C)]
struct DlFindObject {
    flags: libc::c_ulonglong,
    map_start: *mut libc::c_void,
    map_end: *mut libc::c_void,
    link_map: *mut libc::c_void,
    eh_frame: *mut libc::c_void,
    reserved: [libc::c_ulonglong; 7],
}

extern "C" {
    static mie_dl_find_object_fn: Option<unsafe extern "C" fn(*mut libc::c_void, *mut DlFindObject) -> libc::c_int>;
}

/// (map start, map end, link map) of the loaded object holding `addr`, if the C library has
/// `_dl_find_object` and an object holds it.
fn find_object(addr: usize) -> Option<(usize, usize, *mut libc::c_void)> {
    // SAFETY: the word is written once by the loader before any code runs.
    let f = unsafe { mie_dl_find_object_fn }?;
    // SAFETY: an all-zero result struct is valid; _dl_find_object only fills it.
    let mut r: DlFindObject = unsafe { core::mem::zeroed() };
    // SAFETY: _dl_find_object reads the loader's tables (lock-free) and fills `r`.
    if unsafe { f(addr as *mut libc::c_void, &mut r) } != 0 || r.map_start.is_null() {
        return None;
    }
    Some((r.map_start as usize, r.map_end as usize, r.link_map))
}

/// Base address of the loaded object containing `addr` (0 if unknown).
pub fn object_base(addr: usize) -> usize {
    if mie_has_find_object() {
        return find_object(addr).map_or(0, |o| o.0);
    }
    // SAFETY: dladdr only reads loader tables and fills the out-struct.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(addr as *const libc::c_void, &mut info) != 0 {
            info.dli_fbase as usize
        } else {
            0
        }
    }
}

fn mie_has_find_object() -> bool {
    // SAFETY: as in find_object.
    unsafe { mie_dl_find_object_fn }.is_some()
}

/// Another mie heap in this process: `libmie.so`, when the process's `malloc` is its and this
/// code is not in it (a Rust program or library with `mie::Mie` as its global allocator,
/// run under `LD_PRELOAD` or a system-wide install). Its heap and metadata ranges (start,
/// length each), initialising it if need be. No dlsym, no allocation: usable at start-up.
pub fn other_instance_ranges(own_code: usize) -> Option<[usize; 4]> {
    let malloc_at = libc::malloc as *const () as usize;
    let f = own_definition(malloc_at, c"__mie_heap_ranges");
    if f == 0 || object_base(f) == object_base(own_code) {
        return None;
    }
    let mut out = [0usize; 4];
    // SAFETY: `__mie_heap_ranges` is libmie.so's export with this signature (sys::heap_ranges);
    // it writes four words.
    let f: extern "C" fn(*mut usize) = unsafe { core::mem::transmute(f) };
    f(out.as_mut_ptr());
    Some(out)
}

/// The address of `name` as the dynamic linker resolves it for the whole process
/// (`dlsym(RTLD_DEFAULT)`); 0 if undefined. Not for the allocation path: dlsym may allocate.
pub fn global_symbol(name: &core::ffi::CStr) -> usize {
    // SAFETY: dlsym only reads the loader's tables (a failure sets dlerror state).
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

const DT_NEEDED: i64 = 1;
const DT_PLTRELSZ: i64 = 2;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_JMPREL: i64 = 23;
const DT_GNU_HASH: i64 = 0x6fff_fef5;

#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const libc::c_char,
    l_ld: *const Dyn,
}

#[repr(C)]
struct Dyn {
    d_tag: i64,
    d_val: u64,
}

/// The loader's record of the object holding `addr` (null if none).
fn link_map_of(addr: usize) -> *mut LinkMap {
    const RTLD_DL_LINKMAP: libc::c_int = 2;
    let mut map: *mut LinkMap = ptr::null_mut();
    if let Some((_, _, m)) = find_object(addr) {
        map = m.cast();
    } else if !mie_has_find_object() {
        // SAFETY: dladdr1 fills the out-structs.
        unsafe {
            let mut info: libc::Dl_info = core::mem::zeroed();
            libc::dladdr1(addr as *const libc::c_void, &mut info, &mut map as *mut *mut LinkMap as *mut *mut libc::c_void, RTLD_DL_LINKMAP);
        }
    }
    map
}

/// Call `f(tag, value, address)` for each entry of the dynamic section of the object whose
/// link map is `map`: `address` is the value as a pointer (glibc relocates these entries in
/// place on x86-64 and arm64; the load base is added where it has not been).
///
/// # Safety
/// `map` must be a live link map of a loaded object (its dynamic section is mapped).
unsafe fn each_dynamic(map: *mut LinkMap, mut f: impl FnMut(i64, usize, usize)) {
    // SAFETY: the caller's guarantee; the section ends with a DT_NULL entry.
    unsafe {
        let base = (*map).l_addr;
        let mut d = (*map).l_ld;
        while !d.is_null() && (*d).d_tag != 0 {
            let v = (*d).d_val as usize;
            f((*d).d_tag, v, if v < base { v + base } else { v });
            d = d.add(1);
        }
    }
}

/// Call `f(name, inside)` for each loaded object (its path as the loader has it, an address
/// inside its first loaded segment) until `f` returns true. Returns the loader's count of
/// objects loaded so far (`dlpi_adds`: it changes when libraries are loaded). No allocation.
pub fn each_object(mut f: impl FnMut(&[u8], usize) -> bool) -> usize {
    struct Scan<'a> {
        f: &'a mut dyn FnMut(&[u8], usize) -> bool,
        adds: usize,
    }
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: libc::size_t, data: *mut libc::c_void) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info struct and our own Scan.
        let (info, s) = unsafe { (&*info, &mut *(data as *mut Scan)) };
        s.adds = info.dlpi_adds as usize;
        if info.dlpi_phnum == 0 {
            return 0;
        }
        // SAFETY: dlpi_name is a NUL-terminated string (maybe empty) for every object.
        let name = if info.dlpi_name.is_null() { &b""[..] } else { unsafe { core::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes() };
        // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
        let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let Some(load) = phdrs.iter().find(|h| h.p_type == libc::PT_LOAD) else { return 0 };
        (s.f)(name, info.dlpi_addr as usize + load.p_vaddr as usize) as libc::c_int
    }
    let mut scan = Scan { f: &mut f, adds: 0 };
    // SAFETY: the callback only reads the loader's structures and writes `scan`.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut scan as *mut Scan as *mut libc::c_void) };
    scan.adds
}

/// Whether the object holding `addr` lists a library whose name contains `part` among its
/// DT_NEEDED entries (it was linked against it). Reads only the loader's mapped tables.
pub fn needs_library(addr: usize, part: &[u8]) -> bool {
    let map = link_map_of(addr);
    if map.is_null() || part.is_empty() {
        return false;
    }
    // SAFETY: a loaded object's dynamic section and string table are mapped while it is
    // loaded; the strings are NUL-terminated.
    unsafe {
        let mut strtab = 0usize;
        each_dynamic(map, |tag, _, a| {
            if tag == DT_STRTAB {
                strtab = a;
            }
        });
        if strtab == 0 {
            return false;
        }
        let mut found = false;
        each_dynamic(map, |tag, v, _| {
            if tag == DT_NEEDED {
                let s = core::ffi::CStr::from_ptr((strtab + v) as *const libc::c_char).to_bytes();
                found |= s.windows(part.len()).any(|w| w == part);
            }
        });
        found
    }
}

/// What the object whose link map is `map` has bound its import `name` to: the address in
/// its GOT slot for that symbol (from its relocations, `DT_RELA` and `DT_JMPREL`), 0 if it
/// does not import it. A lazily bound slot not yet used points back into its own PLT.
///
/// # Safety
/// `map` must be a live link map of a loaded object.
unsafe fn bound_import(map: *mut LinkMap, name: &[u8]) -> usize {
    #[repr(C)]
    struct Rela {
        off: u64,
        info: u64,
        addend: i64,
    }
    // SAFETY: a loaded object's dynamic section, relocation, symbol and string tables are
    // mapped while it is loaded; each is read within the size its dynamic entry gives, and the
    // GOT slot a relocation names lies in the object's own writable mapping.
    unsafe {
        let base = (*map).l_addr;
        let (mut strtab, mut symtab, mut rela, mut relasz, mut jmprel, mut pltsz) = (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
        each_dynamic(map, |tag, raw, a| match tag {
            DT_STRTAB => strtab = a,
            DT_SYMTAB => symtab = a,
            DT_RELA => rela = a,
            DT_RELASZ => relasz = raw,
            DT_JMPREL => jmprel = a,
            DT_PLTRELSZ => pltsz = raw,
            _ => {}
        });
        if strtab == 0 || symtab == 0 {
            return 0;
        }
        for (table, size) in [(jmprel, pltsz), (rela, relasz)] {
            if table == 0 {
                continue;
            }
            for i in 0..size / core::mem::size_of::<Rela>() {
                let r = &*(table as *const Rela).add(i);
                let sym = (r.info >> 32) as usize;
                if sym == 0 {
                    continue;
                }
                let s = &*(symtab as *const libc::Elf64_Sym).add(sym);
                if core::ffi::CStr::from_ptr((strtab + s.st_name as usize) as *const libc::c_char).to_bytes() == name {
                    return *((base + r.off as usize) as *const usize);
                }
            }
        }
    }
    0
}

/// Up to `out.len()` loaded objects (their bases) other than the C library that have bound
/// their import `name` to the C library's own definition `libc_def`, while the process's
/// `name` is another one: libraries loaded with `dlopen(RTLD_DEEPBIND)`, which look in their
/// own dependencies first. For reports.
pub fn bound_to_libc(name: &core::ffi::CStr, libc_def: usize, out: &mut [usize]) -> usize {
    let libc_base = object_base(libc_def);
    let mut n = 0;
    each_object(|_, inside| {
        if object_base(inside) != libc_base {
            let map = link_map_of(inside);
            // SAFETY: `map` is the link map of an object the loader just listed as loaded.
            if !map.is_null() && unsafe { bound_import(map, name.to_bytes()) } == libc_def {
                out[n] = inside;
                n += 1;
            }
        }
        n == out.len()
    });
    n
}

/// The address of `name` if the loaded object containing `addr` defines it itself, from
/// that object's own dynamic symbol table (GNU hash); 0 otherwise. Reads only the loader's
/// mapped tables: no dlsym, no allocation.
pub fn own_definition(addr: usize, name: &core::ffi::CStr) -> usize {
    let name = name.to_bytes();
    let mut h: u32 = 5381;
    for &c in name {
        h = h.wrapping_mul(33).wrapping_add(c as u32);
    }
    // SAFETY: dladdr1 fills the out-structs; a loaded object's dynamic section, symbol, string
    // and hash tables are mapped for as long as it is loaded, and are read within the bounds
    // their own headers give.
    unsafe {
        let map = link_map_of(addr);
        if map.is_null() {
            return 0;
        }
        let base = (*map).l_addr;
        let (mut strtab, mut symtab, mut gnu_hash) = (0usize, 0usize, 0usize);
        each_dynamic(map, |tag, _, a| match tag {
            DT_STRTAB => strtab = a,
            DT_SYMTAB => symtab = a,
            DT_GNU_HASH => gnu_hash = a,
            _ => {}
        });
        if strtab == 0 || symtab == 0 || gnu_hash == 0 {
            return 0;
        }
        let hdr = gnu_hash as *const u32;
        let (nbuckets, symoffset, bloom_size) = (*hdr, *hdr.add(1), *hdr.add(2));
        if nbuckets == 0 {
            return 0;
        }
        let buckets = (hdr.add(4) as *const u64).add(bloom_size as usize) as *const u32;
        let chains = buckets.add(nbuckets as usize);
        let mut i = *buckets.add((h % nbuckets) as usize);
        if i == 0 || i < symoffset {
            return 0;
        }
        loop {
            let ch = *chains.add((i - symoffset) as usize);
            if ch | 1 == h | 1 {
                let sym = &*(symtab as *const libc::Elf64_Sym).add(i as usize);
                let s = core::ffi::CStr::from_ptr((strtab + sym.st_name as usize) as *const libc::c_char);
                if s.to_bytes() == name && sym.st_shndx != 0 && sym.st_value != 0 {
                    return base + sym.st_value as usize;
                }
            }
            if ch & 1 == 1 {
                return 0;
            }
            i += 1;
        }
    }
}

/// The address range `[start, end)` of the loaded object containing `addr`, from its ELF
/// program headers (mapped at its base); (0, 0) if unknown.
pub fn object_extent(addr: usize) -> (usize, usize) {
    let base = object_base(addr);
    if base == 0 {
        return (0, 0);
    }
    // SAFETY: a loaded object's ELF header and program headers are mapped at its base (the
    // loader reads them from there too); only header fields are read.
    unsafe {
        let eh = &*(base as *const libc::Elf64_Ehdr);
        if eh.e_ident[..4] != [0x7f, b'E', b'L', b'F'] || eh.e_phentsize as usize != core::mem::size_of::<libc::Elf64_Phdr>() {
            return (0, 0);
        }
        let ph = (base + eh.e_phoff as usize) as *const libc::Elf64_Phdr;
        let mut end = 0;
        for i in 0..eh.e_phnum as usize {
            let h = &*ph.add(i);
            if h.p_type == libc::PT_LOAD {
                end = end.max((h.p_vaddr + h.p_memsz) as usize);
            }
        }
        if end == 0 {
            (0, 0)
        } else {
            (base, base + end)
        }
    }
}

/// The dynamic symbol a code address lies in: (object base, symbol name, symbol address,
/// symbol size). None if the loader knows no symbol for it.
pub fn symbol_at(pc: usize) -> Option<(usize, &'static [u8], usize, usize)> {
    const RTLD_DL_SYMENT: libc::c_int = 1;
    // SAFETY: dladdr1 fills the out-structs with pointers into the loader's tables, which
    // stay valid while the object is loaded (names are read as NUL-terminated strings).
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        let mut sym: *const libc::Elf64_Sym = ptr::null();
        if libc::dladdr1(pc as *const libc::c_void, &mut info, &mut sym as *mut *const libc::Elf64_Sym as *mut *mut libc::c_void, RTLD_DL_SYMENT) == 0
            || info.dli_sname.is_null()
            || sym.is_null()
        {
            return None;
        }
        let name = core::ffi::CStr::from_ptr(info.dli_sname).to_bytes();
        Some((info.dli_fbase as usize, name, info.dli_saddr as usize, (*sym).st_size as usize))
    }
}

/// The name of the dynamic symbol a code address lies in.
pub fn symbol_name(pc: usize) -> Option<&'static [u8]> {
    symbol_at(pc).map(|s| s.1)
}

/// The file name (without directories) of the loaded object a code address belongs to.
pub fn object_name(pc: usize) -> Option<&'static [u8]> {
    // SAFETY: dladdr fills the out-struct; dli_fname points into the loader's tables.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(pc as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let f = core::ffi::CStr::from_ptr(info.dli_fname).to_bytes();
        Some(base_name(f))
    }
}

/// Bytes the C library's own malloc holds outside mmap'ed chunks (its `mallinfo2().arena`,
/// asked of the C library itself, not of an interposed `mallinfo2`). Reports only.
pub fn libc_arena_bytes() -> Option<usize> {
    #[repr(C)]
    struct Mallinfo2 {
        arena: usize,
        rest: [usize; 9],
    }
    // SAFETY: dlsym reads the loader's tables; the C library's mallinfo2 has this signature.
    unsafe {
        let f = libc::dlsym(libc::RTLD_NEXT, c"mallinfo2".as_ptr());
        if f.is_null() {
            return None;
        }
        let f: extern "C" fn() -> Mallinfo2 = core::mem::transmute(f);
        Some(f().arena)
    }
}

/// Write ` (object+0xoffset, function+0xoffset)` for a code address (the function where
/// the object's symbol table names it); `ret` as in `symbols::lookup`. Never allocates.
pub fn symbolize(addr: usize, ret: bool, out: &mut dyn core::fmt::Write) {
    symbols::lookup(addr, ret, |s| {
        let obj = if s.path == b"/proc/self/exe" { program_name() } else { base_name(s.path) };
        let _ = write!(out, " ({}+{:#x}", crate::report::Bytes(obj), s.vaddr);
        if let Some((f, off)) = s.func {
            let _ = out.write_str(", ");
            symbols::write_demangled(out, f);
            let _ = write!(out, "+{off:#x}");
        }
        let _ = write!(out, ")");
    });
}

// A weak reference to the program's `__mie_default_options` (as ASan's and Scudo's
// `__*_default_options`): resolved by the static linker in a Rust program that links this
// crate, by the dynamic loader for libmie.so (the program must export the function: linking
// with -lmie does that, LD_PRELOAD alone needs -rdynamic); 0 where nobody defines it.
weak_reference!("__mie_default_options", "mie_program_options_fn");

extern "C" {
    static mie_program_options_fn: Option<unsafe extern "C" fn() -> *const libc::c_char>;
}

/// The options the program carries (`__mie_default_options()`, defined in C or with
/// `mie::default_options!`), applied before `MIE_OPTIONS`; None where it defines none.
pub fn program_options() -> Option<&'static [u8]> {
    // SAFETY: the word is written once by the linker or loader before any code runs.
    let f = unsafe { mie_program_options_fn }?;
    // SAFETY: the program's function takes nothing and returns a NUL-terminated string (or
    // NULL) that lives as long as the program, the contract of __mie_default_options.
    let s = unsafe { f() };
    if s.is_null() {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { core::ffi::CStr::from_ptr(s) }.to_bytes())
}

/// The `-falloc-token-max` the program was built with, if `mie cc` recorded it (an exported
/// `const unsigned long __mie_alloc_token_max` in the program); 0 otherwise. Reads the
/// program's own dynamic symbol table: no dlsym, no allocation.
pub fn program_token_max() -> u64 {
    // SAFETY: getauxval reads the auxiliary vector; AT_PHDR lies in the program's image.
    let in_program = unsafe { libc::getauxval(libc::AT_PHDR) } as usize;
    if in_program == 0 {
        return 0;
    }
    let p = own_definition(in_program, c"__mie_alloc_token_max");
    if p == 0 {
        return 0;
    }
    // SAFETY: the symbol is the program's exported u64 constant, mapped for its life.
    unsafe { (p as *const u64).read() }
}

/// The program's file name (from the auxiliary vector's AT_EXECFN), for reports.
pub fn program_name() -> &'static [u8] {
    // SAFETY: AT_EXECFN points at the NUL-terminated path the program was executed with,
    // on the initial stack for the life of the process.
    let p = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const libc::c_char;
    if p.is_null() {
        return b"program";
    }
    // SAFETY: as above.
    let full = unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes();
    base_name(full)
}

/// A path's last component (the file name without its directories).
pub fn base_name(path: &[u8]) -> &[u8] {
    path.rsplit(|&c| c == b'/').next().unwrap_or(path)
}
