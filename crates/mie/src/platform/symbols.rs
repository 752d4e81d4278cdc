//! Code addresses to names for reports: the loaded object (from the loader), then the
//! function, from the object file's own symbol table (`.symtab`, which a program built with
//! or without `-g` keeps unless stripped; else the dynamic `.dynsym`). The file is mapped
//! read-only for the lookup and unmapped again: no allocation, only system calls that are
//! safe in a signal handler (reports are written from the SIGSEGV handler too).

use core::ffi::CStr;
use core::fmt::Write;
use core::ptr;

/// What is known about a code address.
pub struct Site<'a> {
    /// The object's path (for the program, its real path from /proc/self/exe).
    pub path: &'a [u8],
    /// The address relative to the object's load base (what `addr2line` wants).
    pub vaddr: usize,
    /// The containing function's (mangled) name and the offset into it.
    pub func: Option<(&'a [u8], usize)>,
    /// Whether the file has line tables (`.debug_line`): then `addr2line` can give file:line.
    pub has_lines: bool,
    /// The object's file is there but could not be mapped for reading now (out of address
    /// space or memory): `func` says nothing about its symbol table, try again later.
    pub unreadable_now: bool,
}

const RTLD_DL_LINKMAP: libc::c_int = 2;

#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const libc::c_char,
}

/// Find what `addr` is and call `f` with it (not at all if no loaded object holds it).
/// `ret`: the address is a return address (a call's next instruction), so the call is the
/// byte before it; that byte, not the address, names the function (a call to a function
/// that never returns can be the last instruction of its caller).
pub fn lookup(addr: usize, ret: bool, f: impl FnOnce(&Site<'_>)) {
    // SAFETY: dladdr1 only reads the loader's tables and fills the out-structs.
    let (info, map) = unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        let mut map: *mut LinkMap = ptr::null_mut();
        if libc::dladdr1(addr as *const libc::c_void, &mut info, &mut map as *mut *mut LinkMap as *mut *mut libc::c_void, RTLD_DL_LINKMAP) == 0 || map.is_null() {
            return;
        }
        (info, map)
    };
    // SAFETY: map is the loader's link map entry for the object, live while it is loaded.
    let bias = unsafe { (*map).l_addr };
    let vaddr = addr.wrapping_sub(bias);
    // The file: the loader's name for the object (for the program, argv[0], which may be
    // relative or empty), else /proc/self/exe (not the program itself when the dynamic loader
    // was started as the program). A candidate is taken only if its ELF header is the one
    // mapped at the object's base, so a moved or replaced file never lends its names.
    let mut fname: Option<&CStr> = None;
    if !info.dli_fname.is_null() {
        // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
        let c = unsafe { CStr::from_ptr(info.dli_fname) };
        if !c.is_empty() {
            fname = Some(c);
        }
    }
    // SAFETY: an object's first page (its ELF header) is mapped at its base while loaded.
    let header = (!info.dli_fbase.is_null()).then(|| unsafe { core::slice::from_raw_parts(info.dli_fbase as *const u8, 64) });
    let mut mapped = None;
    let mut path: &CStr = c"";
    let mut unreadable_now = false;
    for cand in [fname, Some(c"/proc/self/exe")].into_iter().flatten() {
        match Mapped::open(cand) {
            Ok(m) => {
                if header.is_none() || m.bytes().get(..64) == header {
                    path = cand;
                    mapped = Some(m);
                    break;
                }
            }
            Err(transient) => unreadable_now |= transient,
        }
    }
    let unreadable_now = unreadable_now && mapped.is_none();
    if mapped.is_none() {
        path = fname.unwrap_or(c"");
    }
    // The path to show (for the addr2line line): /proc/self/exe resolved, a relative name
    // made absolute.
    let mut buf = [0u8; 512];
    let mut shown = path.to_bytes();
    if shown == b"/proc/self/exe" {
        // SAFETY: readlink writes at most buf.len() bytes into the local buffer.
        let n = unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 && (n as usize) < buf.len() {
            shown = &buf[..n as usize];
        }
    } else if !shown.starts_with(b"/") && mapped.is_some() {
        // SAFETY: getcwd writes a NUL-terminated path of at most buf.len() bytes.
        if !unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) }.is_null() {
            let cwd = buf.iter().position(|&c| c == 0).unwrap_or(0);
            let rel = shown.strip_prefix(b"./").unwrap_or(shown);
            if cwd + 1 + rel.len() <= buf.len() {
                buf[cwd] = b'/';
                buf[cwd + 1..cwd + 1 + rel.len()].copy_from_slice(rel);
                shown = &buf[..cwd + 1 + rel.len()];
            }
        }
    }
    let mut site = Site { path: shown, vaddr, func: None, has_lines: false, unreadable_now };
    if let Some(m) = &mapped {
        if let Some(elf) = Elf::parse(m.bytes()) {
            site.has_lines = elf.has_section(b".debug_line");
            let probe = vaddr.wrapping_sub(ret as usize) as u64;
            site.func = elf.function_at(probe).map(|(name, off)| (name, off + ret as usize));
        }
    }
    if site.func.is_none() && !info.dli_sname.is_null() {
        // SAFETY: dli_sname is a NUL-terminated symbol name owned by the loader.
        let s = unsafe { CStr::from_ptr(info.dli_sname) }.to_bytes();
        site.func = Some((s, addr.wrapping_sub(info.dli_saddr as usize)));
    }
    f(&site);
    drop(mapped);
}

/// Whether the code at `addr` is the allocator's own (libmie.so, or mie and the Rust
/// allocation shims linked into a Rust program): such frames are left out of the stacks in
/// reports.
pub fn is_allocator_frame(addr: usize) -> bool {
    let mut yes = false;
    lookup(addr, true, |s| {
        yes = super::base_name(s.path).starts_with(b"libmie")
            || s.func.is_some_and(|(f, _)| {
                const PREFIXES: [&[u8]; 4] = [b"_ZN3mie", b"_ZN4core3ptr", b"_ZN5alloc5alloc", b"_ZN3std5alloc"];
                // The allocator shims, by name or inside a v0 name (`__rustc::__rust_dealloc`).
                const SHIMS: [&[u8]; 5] = [b"__rust_alloc", b"__rust_dealloc", b"__rust_realloc", b"__rust_alloc_zeroed", b"__rdl_"];
                let has = |n: &[u8]| f.windows(n.len()).any(|w| w == n);
                PREFIXES.iter().any(|p| f.starts_with(p)) || SHIMS.iter().any(|n| has(n)) || rust_library_frame(f)
                    || f.windows(9).any(|w| w == b"3mie3api")
                    // `<mie::api::Mie as GlobalAlloc>::dealloc`, legacy-mangled (a debug build).
                    || f.windows(13).any(|w| w == b"mie..api..Mie")
            });
    });
    yes
}

/// A Rust function of the standard library or of mie (`core::ptr::drop_in_place<…>`,
/// `<alloc::boxed::Box<T> as Drop>::drop`, `<mie::api::Mie as GlobalAlloc>::dealloc`): the
/// frames between the program's code and the allocator, by the start of the demangled name.
fn rust_library_frame(f: &[u8]) -> bool {
    if !f.starts_with(b"_ZN") && !f.starts_with(b"_R") {
        return false;
    }
    let mut buf = Prefix { b: [0; 24], n: 0 };
    write_demangled(&mut buf, f);
    let head = &buf.b[..buf.n];
    const CRATES: [&[u8]; 5] = [b"core::", b"alloc::", b"std::", b"mie::", b"__rustc::"];
    let head = head.strip_prefix(b"<").unwrap_or(head);
    CRATES.iter().any(|c| head.starts_with(c))
}

/// The first bytes written to it (the rest is dropped).
struct Prefix {
    b: [u8; 24],
    n: usize,
}

impl Write for Prefix {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let take = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + take].copy_from_slice(&s.as_bytes()[..take]);
        self.n += take;
        Ok(())
    }
}

/// A file mapped read-only.
struct Mapped {
    p: *const u8,
    len: usize,
}

impl Mapped {
    /// The whole file mapped read-only. Err(true): it is there but could not be opened or
    /// mapped for lack of memory, address space or descriptors (worth trying again later);
    /// Err(false): not there, not readable, or too short to be an object.
    fn open(path: &CStr) -> Result<Mapped, bool> {
        let transient = || matches!(super::errno(), libc::ENOMEM | libc::EAGAIN | libc::EMFILE | libc::ENFILE);
        // SAFETY: plain system calls on a path and the descriptor they return; the mapping
        // is private and read-only and is unmapped by Drop.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(transient());
            }
            let mut st: libc::stat = core::mem::zeroed();
            if libc::fstat(fd, &mut st) != 0 || st.st_size <= 64 {
                libc::close(fd);
                return Err(false);
            }
            let len = st.st_size as usize;
            let p = libc::mmap(ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, fd, 0);
            let again = p == libc::MAP_FAILED && transient();
            libc::close(fd);
            if p == libc::MAP_FAILED {
                return Err(again);
            }
            Ok(Mapped { p: p as *const u8, len })
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: [p, p + len) is our read-only mapping of the whole file.
        unsafe { core::slice::from_raw_parts(self.p, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.p as *mut libc::c_void, self.len) };
    }
}

/// An ELF64 little-endian file, read with bounds checks only (a corrupt file gives no
/// names, never a fault).
struct Elf<'a> {
    b: &'a [u8],
    shoff: usize,
    shnum: usize,
    shstr: usize,
}

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const STT_FUNC: u8 = 2;

impl<'a> Elf<'a> {
    fn parse(b: &'a [u8]) -> Option<Elf<'a>> {
        if b.get(..6)? != b"\x7fELF\x02\x01" {
            return None;
        }
        let shoff = rd64(b, 0x28)? as usize;
        let shentsize = rd16(b, 0x3a)? as usize;
        let shnum = rd16(b, 0x3c)? as usize;
        let shstrndx = rd16(b, 0x3e)? as usize;
        if shentsize != 64 || shstrndx >= shnum {
            return None;
        }
        let e = Elf { b, shoff, shnum, shstr: 0 };
        let shstr = e.section(shstrndx)?.offset;
        Some(Elf { shstr, ..e })
    }

    fn section(&self, i: usize) -> Option<Section> {
        let h = self.shoff.checked_add(i.checked_mul(64)?)?;
        Some(Section {
            name: rd32(self.b, h)?,
            kind: rd32(self.b, h + 4)?,
            offset: rd64(self.b, h + 0x18)? as usize,
            size: rd64(self.b, h + 0x20)? as usize,
            link: rd32(self.b, h + 0x28)? as usize,
        })
    }

    fn name_of(&self, s: &Section) -> &'a [u8] {
        cstr_at(self.b, self.shstr.saturating_add(s.name as usize))
    }

    fn has_section(&self, name: &[u8]) -> bool {
        (0..self.shnum).filter_map(|i| self.section(i)).any(|s| self.name_of(&s) == name)
    }

    /// The function symbol containing `vaddr`: from `.symtab`, else `.dynsym`.
    fn function_at(&self, vaddr: u64) -> Option<(&'a [u8], usize)> {
        for kind in [SHT_SYMTAB, SHT_DYNSYM] {
            let Some(tab) = (0..self.shnum).filter_map(|i| self.section(i)).find(|s| s.kind == kind) else { continue };
            let Some(strtab) = self.section(tab.link) else { continue };
            let mut best: Option<(u64, u32)> = None;
            for i in 0..tab.size / 24 {
                let at = tab.offset + i * 24;
                let (Some(name), Some(info), Some(value), Some(size)) = (rd32(self.b, at), self.b.get(at + 4), rd64(self.b, at + 8), rd64(self.b, at + 16)) else { break };
                if info & 0xf != STT_FUNC || value == 0 || vaddr < value || vaddr - value >= size.max(1) {
                    continue;
                }
                if best.is_none_or(|(v, _)| value > v) {
                    best = Some((value, name));
                }
            }
            if let Some((value, name)) = best {
                let s = cstr_at(self.b, strtab.offset.saturating_add(name as usize));
                if !s.is_empty() {
                    return Some((s, (vaddr - value) as usize));
                }
            }
        }
        None
    }
}

struct Section {
    name: u32,
    kind: u32,
    offset: usize,
    size: usize,
    link: usize,
}

fn rd16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}
fn rd32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}
fn rd64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// The NUL-terminated string at `at` (empty if out of bounds), at most 512 bytes.
fn cstr_at(b: &[u8], at: usize) -> &[u8] {
    let s = b.get(at..).unwrap_or(&[]);
    let s = &s[..s.len().min(512)];
    &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
}

/// Write a symbol name readably: Rust and C++ nested names (`_ZN3foo3bar17h…E`) as
/// `foo::bar` without Rust's hash, `_Z3fooi` as `foo`; anything else as it is.
pub fn write_demangled(o: &mut dyn Write, s: &[u8]) {
    // Rust's legacy (`_ZN...17h<hash>E`) and v0 (`_R...`) names: rustc-demangle writes
    // them without allocating; `{:#}` leaves the hash out.
    if s.starts_with(b"_R") || s.starts_with(b"_ZN") {
        if let Some(d) = core::str::from_utf8(s).ok().and_then(|t| rustc_demangle::try_demangle(t).ok()) {
            let _ = write!(o, "{d:#}");
            return;
        }
    }
    if let Some(rest) = s.strip_prefix(b"_ZN") {
        let mut r = rest;
        let mut first = true;
        let mut ok = false;
        let mut out = DemangleOut { o, wrote: false };
        while let Some((ident, tail)) = ident(r) {
            r = tail;
            let is_hash = ident.len() == 17 && ident[0] == b'h' && ident[1..].iter().all(u8::is_ascii_hexdigit) && r.first() == Some(&b'E');
            if !is_hash {
                if !first {
                    out.raw("::");
                }
                out.ident(ident);
                first = false;
            }
            if r.first() == Some(&b'E') {
                ok = true;
                break;
            }
        }
        if ok || out.wrote {
            return;
        }
    } else if let Some(rest) = s.strip_prefix(b"_Z") {
        if let Some((ident, _)) = ident(rest) {
            let mut out = DemangleOut { o, wrote: false };
            out.ident(ident);
            return;
        }
    }
    let _ = write!(o, "{}", crate::report::Bytes(s));
}

/// `<decimal length><bytes>`.
fn ident(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 4 {
        return None;
    }
    let n: usize = core::str::from_utf8(&s[..digits]).ok()?.parse().ok()?;
    let rest = &s[digits..];
    (n <= rest.len()).then(|| (&rest[..n], &rest[n..]))
}

struct DemangleOut<'o> {
    o: &'o mut dyn Write,
    wrote: bool,
}

impl DemangleOut<'_> {
    fn raw(&mut self, s: &str) {
        let _ = self.o.write_str(s);
        self.wrote = true;
    }

    /// One identifier, with Rust's legacy escapes (`$LT$`, `..`, `$u20$`, ...) undone.
    fn ident(&mut self, mut s: &[u8]) {
        if s.starts_with(b"_$") {
            s = &s[1..];
        }
        const ESC: [(&[u8], &str); 10] = [
            (b"$LT$", "<"),
            (b"$GT$", ">"),
            (b"$RF$", "&"),
            (b"$BP$", "*"),
            (b"$C$", ","),
            (b"$SP$", "@"),
            (b"$u20$", " "),
            (b"$u27$", "'"),
            (b"$u7b$", "{"),
            (b"$u7d$", "}"),
        ];
        let mut i = 0;
        'outer: while i < s.len() {
            for (from, to) in ESC {
                if s[i..].starts_with(from) {
                    self.raw(to);
                    i += from.len();
                    continue 'outer;
                }
            }
            if s[i..].starts_with(b"..") {
                self.raw("::");
                i += 2;
                continue;
            }
            let _ = self.o.write_char(if s[i].is_ascii_graphic() { s[i] as char } else { '?' });
            self.wrote = true;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demangled(s: &str) -> String {
        let mut o = String::new();
        write_demangled(&mut o, s.as_bytes());
        o
    }

    #[test]
    fn demangles_rust_and_cxx_names() {
        assert_eq!(demangled("_ZN3mie4heap4free4free17h0123456789abcdefE"), "mie::heap::free::free");
        assert_eq!(demangled("_ZN58_$LT$mie..api..Mie$u20$as$u20$core..alloc..GlobalAlloc$GT$7dealloc17h0123456789abcdefE"), "<mie::api::Mie as core::alloc::GlobalAlloc>::dealloc");
        assert_eq!(demangled("_ZN5Shape4areaEv"), "Shape::area");
        assert_eq!(demangled("_Z6squarei"), "square");
        assert_eq!(demangled("main"), "main");
        assert_eq!(demangled("_ZN"), "_ZN");
        // v0 mangling (-C symbol-mangling-version=v0, the standard library's own shims).
        assert_eq!(demangled("_RNvCs1234_4rrep9drop_user"), "rrep::drop_user");
        assert_eq!(demangled("_RNvNtCs1234_4core3mem4drop"), "core::mem::drop");
    }

    #[test]
    fn rust_library_frames_lead_to_the_program() {
        assert!(rust_library_frame(b"_ZN63_$LT$alloc..alloc..Global$u20$as$u20$core..alloc..Allocator$GT$10deallocate17h0123456789abcdefE"));
        assert!(rust_library_frame(b"_ZN4core3ptr13drop_in_place17h0123456789abcdefE"));
        assert!(rust_library_frame(b"_RNvNtCs1234_4core3mem4drop"));
        assert!(!rust_library_frame(b"_ZN4rrep9drop_user17h0123456789abcdefE"));
        assert!(!rust_library_frame(b"_RNvCs1234_4rrep9drop_user"));
        assert!(!rust_library_frame(b"_ZN48_$LT$rrep..User$u20$as$u20$core..ops..Drop$GT$4drop17h0123456789abcdefE"));
        assert!(!rust_library_frame(b"free_twice"));
    }

    #[inline(never)]
    fn symbolizer_probe(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(3).rotate_left(7)
    }

    #[test]
    fn finds_a_function_in_the_test_binary() {
        assert_eq!(symbolizer_probe(1), 3 << 7);
        let here = symbolizer_probe as *const () as usize;
        let mut name = String::new();
        lookup(here, false, |s| {
            if let Some((f, off)) = s.func {
                write_demangled(&mut name, f);
                assert_eq!(off, 0);
            }
        });
        assert!(name.ends_with("symbolizer_probe"), "{name:?}");
        // A return address just past the function still names it (the call's byte).
        let mut end = String::new();
        lookup(here + 1, true, |s| s.func.into_iter().for_each(|(f, _)| write_demangled(&mut end, f)));
        assert!(end.ends_with("symbolizer_probe"), "{end:?}");
        // An address in no object: nothing is called.
        let mut called = false;
        lookup(16, false, |_| called = true);
        assert!(!called);
    }
}
