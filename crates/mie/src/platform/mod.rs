//! Platform layer: every call into the operating system lives here, so the rest of the
//! allocator can be read (and ported) without hunting for syscalls.
//!
//! Nothing in this module allocates. Failures are returned as `false`/null, never panics.

pub mod code;
pub mod lock;
mod objects;
mod signals;
pub mod simd;
pub mod symbolizer;
pub mod symbols;
pub mod tls;

pub use objects::*;
pub use signals::*;

use core::ptr;

/// The smallest page size: the unit of sizes that never depend on the machine (a sampled
/// block is at most `PAGE - 16` bytes). Alignment of mappings follows `page_size()`.
pub const PAGE: usize = 4096;

static PAGE_SIZE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The system's page size (4, 16 or 64 KiB): what mmap, mprotect and madvise align to.
#[inline]
pub fn page_size() -> usize {
    let p = PAGE_SIZE.load(core::sync::atomic::Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no preconditions.
    let s = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let p = if s > 0 && (s as usize).is_power_of_two() { (s as usize).max(PAGE) } else { PAGE };
    PAGE_SIZE.store(p, core::sync::atomic::Ordering::Relaxed);
    p
}

/// Reserve `len` bytes of address space, inaccessible and not counted against commit.
pub fn reserve(len: usize) -> *mut u8 {
    // SAFETY: anonymous PROT_NONE mapping at a kernel-chosen address touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Map fresh read-write anonymous memory.
pub fn map_rw(len: usize) -> *mut u8 {
    // SAFETY: anonymous mapping at a kernel-chosen address touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Map fresh read-write memory exactly at `addr`, never replacing an existing mapping
/// (`MAP_FIXED_NOREPLACE`; on kernels that treat the flag as a hint, a mapping elsewhere is
/// undone). False if anything is in the way.
pub fn map_at(addr: *mut u8, len: usize, extra_prot: i32) -> bool {
    // SAFETY: NOREPLACE never touches existing mappings; a misplaced result is unmapped below.
    let p = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE | extra_prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    if p.cast() != addr {
        release(p.cast(), len);
        return false;
    }
    true
}

/// Make `[p, p+len)` (inside a reservation we own) readable and writable.
pub fn commit(p: *mut u8, len: usize) -> bool {
    // SAFETY: callers pass page-aligned ranges inside mappings owned by the allocator.
    unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

/// Drop the pages of a range and make it inaccessible, keeping the address range reserved.
pub fn decommit(p: *mut u8, len: usize) -> bool {
    // SAFETY: MAP_FIXED over a range the allocator owns replaces only that range.
    let r = unsafe {
        libc::mmap(
            p.cast(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    r != libc::MAP_FAILED
}

/// Give the pages of a range back to the OS; the range stays mapped and reads back as zero.
/// False (nothing done) unless the range is whole pages and the kernel agreed.
pub fn purge(p: *mut u8, len: usize) -> bool {
    let pg = page_size();
    if (p as usize) & (pg - 1) != 0 || len & (pg - 1) != 0 {
        return false;
    }
    // SAFETY: page-aligned range inside an allocator-owned read-write mapping; its contents are dead.
    unsafe { libc::madvise(p.cast(), len, libc::MADV_DONTNEED) == 0 }
}

/// Which pages of the page-aligned range `[p, p + len)` are resident: bit 0 of `out[i]` for
/// page i (`mincore`). False if the kernel refused (or `out` is too short): then nothing is
/// known.
pub fn resident(p: usize, len: usize, out: &mut [u8]) -> bool {
    let pg = page_size();
    if p & (pg - 1) != 0 || len.div_ceil(pg) > out.len() {
        return false;
    }
    // SAFETY: mincore writes one byte per page of the range into `out`, which is long enough
    // (checked); the range is the caller's mapped memory.
    unsafe { libc::mincore(p as *mut libc::c_void, len, out.as_mut_ptr().cast()) == 0 }
}

/// How many pages of the page-aligned range `[p, p + len)` are resident, counting no further
/// than `enough` (the answer is then `enough`); None if the kernel refused (nothing is known).
/// A query covers at most 256 KiB, as in `clear_pages`.
pub fn resident_count(p: usize, len: usize, enough: usize) -> Option<usize> {
    const CHUNK: usize = 256;
    let pg = page_size();
    let per_query = (CHUNK * 4096 / pg).max(1);
    let mut map = [0u8; CHUNK];
    let (mut at, mut count) = (p, 0);
    while at < p + len && count < enough {
        let n = ((p + len - at) / pg).min(per_query);
        if n == 0 || !resident(at, n * pg, &mut map) {
            return None;
        }
        count += map[..n].iter().filter(|&&m| m & 1 != 0).count();
        at += n * pg;
    }
    Some(count.min(enough))
}

/// Make the page-aligned range `[p, p + len)` of private anonymous memory read as zero,
/// touching only the pages that hold memory: resident pages are cleared in place, and every
/// run of other pages (never touched, which read as zero already, or swapped out, which do
/// not) is dropped with `MADV_DONTNEED`. A large block built from a freed block's pages
/// thus costs a clear of what the last owner touched, not a fault and a clear of every page
/// of it. Where dropping pages does not clear them (`dropping_clears`: an emulator whose
/// `madvise` does nothing) everything is cleared, as where the kernel refuses.
///
/// Whatever `mincore` answers, every page ends up cleared or dropped, so a wrong answer
/// costs time, never zeros. Each query covers at most `CHUNK` 4 KiB units, so that an
/// emulator that answers per host page of 4 KiB (qemu-user with 64 KiB guest pages) cannot
/// write past the buffer.
pub fn clear_pages(p: usize, len: usize) {
    const CHUNK: usize = 256;
    let pg = page_size();
    if p & (pg - 1) != 0 || len & (pg - 1) != 0 || !dropping_clears() {
        zero(p as *mut u8, len);
        return;
    }
    // A run of pages alike: cleared if resident, else dropped (the kernel says no: cleared).
    let flush = |from: usize, to: usize, present: bool| {
        if present || !purge(from as *mut u8, to - from) {
            zero_pages(from, to - from);
        }
    };
    let per_query = (CHUNK * 4096 / pg).max(1);
    let mut map = [0u8; CHUNK];
    let (mut run, mut present) = (p, true);
    let mut at = p;
    while at < p + len {
        let n = ((p + len - at) / pg).min(per_query);
        if !resident(at, n * pg, &mut map) {
            map[..n].fill(1);
        }
        for (i, &m) in map[..n].iter().enumerate() {
            let page = at + i * pg;
            if (m & 1 != 0) != present {
                flush(run, page, present);
                (run, present) = (page, m & 1 != 0);
            }
        }
        at += n * pg;
    }
    flush(run, p + len, present);
}

/// Whether `MADV_DONTNEED` really gives anonymous pages back (they then read as zero):
/// tried once on a page of our own (an emulator may do nothing and still say yes; the
/// qemu-user 7.2 the arm64 leg runs does clear them).
pub fn dropping_clears() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering::Relaxed};
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let pg = page_size();
    let q = map_rw(pg);
    let works = !q.is_null() && {
        // SAFETY: q is a fresh read-write page of our own.
        unsafe { core::ptr::write_volatile(q, 1u8) };
        // SAFETY: as above; read back after the pages were dropped.
        purge(q, pg) && unsafe { core::ptr::read_volatile(q) } == 0
    };
    if !q.is_null() {
        release(q, pg);
    }
    KNOWN.store(if works { 1 } else { 2 }, Relaxed);
    works
}

/// Map an inaccessible range exactly at `addr` without replacing anything (a probe or a
/// reservation); false if anything is in the way or the address is out of reach.
pub fn map_at_none(addr: *mut u8, len: usize) -> bool {
    // SAFETY: NOREPLACE never touches existing mappings.
    let p = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    if p != addr.cast() {
        // Kernels before 4.17 treat NOREPLACE as a hint: not where we asked.
        release(p.cast(), len);
        return false;
    }
    true
}

/// `madvise` advice for guard regions (Linux 6.13; the same number on every architecture).
const MADV_GUARD_INSTALL: i32 = 102;
const MADV_GUARD_REMOVE: i32 = 103;

/// Make the page-aligned `[p, p + len)` of a private anonymous mapping fault like unmapped
/// memory (SIGSEGV, `SEGV_MAPERR`) without splitting the mapping: guard markers in its page
/// tables, kept by `MADV_DONTNEED` and copied by fork. Whatever the range held is dropped.
/// False where the kernel has no guard regions (before 6.13), and then nothing changed.
pub fn guard_install(p: usize, len: usize) -> bool {
    // SAFETY: a page-aligned range of a mapping the allocator owns, holding nothing live.
    unsafe { libc::madvise(p as *mut libc::c_void, len, MADV_GUARD_INSTALL) == 0 }
}

/// Take the guard markers off `[p, p + len)`: it reads as fresh zero pages again.
pub fn guard_remove(p: usize, len: usize) -> bool {
    // SAFETY: a page-aligned range of a mapping the allocator owns.
    unsafe { libc::madvise(p as *mut libc::c_void, len, MADV_GUARD_REMOVE) == 0 }
}

/// Whether guard markers really fault here: a page written, guarded and unguarded again
/// must read back as zero and not be resident. An emulator that accepts the advice and does
/// nothing (qemu-user answers success to advice it does not know) keeps the byte.
pub fn guards_work() -> bool {
    let pg = page_size();
    let p = map_rw(pg);
    if p.is_null() {
        return false;
    }
    // SAFETY: p is a fresh private page of ours, unmapped below; it is read again only once
    // its markers are off.
    let works = unsafe {
        p.write_volatile(1);
        // (Room for a byte per 4 KiB: qemu-user with 64 KiB pages answers per host page.)
        let mut v = [1u8; 64];
        guard_install(p as usize, pg)
            && resident(p as usize, pg, &mut v)
            && v[0] & 1 == 0
            && guard_remove(p as usize, pg)
            && p.read_volatile() == 0
    };
    release(p, pg);
    works
}

/// Move the pages of the mapping `[from, from + len)` to `to`, replacing what was mapped
/// there; the source range is unmapped.
pub fn move_pages_to(from: *mut u8, to: *mut u8, len: usize) -> bool {
    // SAFETY: both ranges are page-aligned and allocator-owned; MREMAP_FIXED replaces the
    // target range atomically.
    let r = unsafe { libc::mremap(from.cast(), len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to as *mut libc::c_void) };
    r == to as *mut libc::c_void
}

/// Runs of at least this many bytes are cleared with streaming stores (`zero_pages`).
#[cfg(target_arch = "x86_64")]
const STREAM_MIN: usize = 128 << 10;

/// Clear the page-aligned range `[p, p + len)` of the allocator's own memory. A long run is
/// another block's old pages, whose new owner touches little of them soon (a buffer is
/// filled front to back, often not at all): on x86-64 it is cleared with non-temporal
/// stores, which write whole lines without reading them first and leave the caches to the
/// program (the `large` benchmark, x86-64: 0.7–0.9 s against 1.2–1.4 s with `rep stosb`,
/// which spent most of it reading the old lines in to overwrite them).
fn zero_pages(p: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len >= STREAM_MIN {
        // SAFETY: [p, p + len) is writable allocator memory (the caller's), p 16-aligned and
        // len a multiple of 64 (both page multiples); SSE2 is part of x86-64; the fence
        // orders the streaming stores before the block is handed out.
        unsafe {
            core::arch::asm!(
                "pxor {z}, {z}",
                "2:",
                "movntdq [{p}], {z}",
                "movntdq [{p} + 16], {z}",
                "movntdq [{p} + 32], {z}",
                "movntdq [{p} + 48], {z}",
                "add {p}, 64",
                "cmp {p}, {end}",
                "jb 2b",
                "sfence",
                p = inout(reg) p => _,
                end = in(reg) p + len,
                z = out(xmm_reg) _,
                options(nostack),
            );
        }
        return;
    }
    zero(p as *mut u8, len);
}

/// Fill `[p, p + len)` with zeros, without going through an exported (interposed) `memset`:
/// inside libmie.so the compiler's calls to `memset` would reach mie's own checked one.
/// `rep stosb` on x86-64, paired zero-register stores on arm64.
#[inline]
pub fn zero(p: *mut u8, len: usize) {
    // SAFETY (whole fn): callers pass a writable range they own.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("rep stosb", inout("rcx") len => _, inout("rdi") p => _, in("al") 0u8, options(nostack, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!(
            "2: cmp {n}, #16",
            "b.lo 3f",
            "stp xzr, xzr, [{p}], #16",
            "sub {n}, {n}, #16",
            "b 2b",
            "3: cbz {n}, 4f",
            "strb wzr, [{p}], #1",
            "sub {n}, {n}, #1",
            "b 3b",
            "4:",
            n = inout(reg) len => _,
            p = inout(reg) p => _,
            options(nostack),
        );
    }
}

/// Copy `len` bytes from `src` to `dst` (ranges that do not overlap), without the exported,
/// checked `memcpy` (a plain loop would be turned into a call to it).
pub fn copy(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY (whole fn): callers pass readable and writable ranges they own, apart.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("rep movsb", inout("rcx") len => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!(
            "2: cmp {n}, #16",
            "b.lo 3f",
            "ldp {a}, {b}, [{s}], #16",
            "stp {a}, {b}, [{d}], #16",
            "sub {n}, {n}, #16",
            "b 2b",
            "3: cbz {n}, 4f",
            "ldrb {a:w}, [{s}], #1",
            "strb {a:w}, [{d}], #1",
            "sub {n}, {n}, #1",
            "b 3b",
            "4:",
            n = inout(reg) len => _,
            d = inout(reg) dst => _,
            s = inout(reg) src => _,
            a = out(reg) _,
            b = out(reg) _,
            options(nostack),
        );
    }
}

/// Unmap a range entirely.
pub fn release(p: *mut u8, len: usize) {
    // SAFETY: the range is an allocator-owned mapping that nothing references any more.
    unsafe {
        libc::munmap(p.cast(), len);
    }
}

/// Fill `buf` from the kernel's CSPRNG. Falls back to time/address entropy only if the
/// syscall is unavailable (very old kernels or seccomp); that is reported once by the caller.
pub fn random_bytes(buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writes at most `buf.len() - done` bytes into the live slice.
        let r = unsafe {
            libc::syscall(
                libc::SYS_getrandom,
                buf.as_mut_ptr().add(done),
                buf.len() - done,
                0,
            )
        };
        if r <= 0 {
            if r < 0 && errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        done += r as usize;
    }
    true
}

/// Whether the CPU has the AES instructions.
///
/// On x86-64 the answer comes from the CPUID words the C library read when the process
/// started, not from a `cpuid` of our own: in a virtual machine every `cpuid` traps to the
/// hypervisor (7 us each on the machines CI runs on, more than the rest of mie's start-up),
/// and every process that loads libmie would pay it.
pub fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // ECX (the third word) bit 25: AES-NI.
        leaf1(|w| w[2] & (1 << 25) != 0)
    }
    #[cfg(target_arch = "aarch64")]
    {
        const HWCAP_AES: u64 = 1 << 3;
        // SAFETY: getauxval only reads the auxiliary vector.
        unsafe { libc::getauxval(libc::AT_HWCAP) & HWCAP_AES != 0 }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    false
}

/// Whether the CPU has AVX2 and the kernel saves its registers (what the C library itself
/// counts as usable: its "active" word of CPUID leaf 7, EBX bit 5), as the C library found
/// at start-up.
#[cfg(target_arch = "x86_64")]
pub fn cpu_has_avx2() -> bool {
    // SAFETY: as in `leaf1`; index 1 is leaf 7 (subleaf 0).
    unsafe { (*__x86_get_cpuid_feature_leaf(1)).active[1] & (1 << 5) != 0 }
}

/// glibc's `struct cpuid_feature` (`<sys/platform/x86.h>`): a CPUID leaf's four registers
/// as the CPU reported them, then as the C library uses them (the features it found usable,
/// the kernel's support counted).
#[cfg(target_arch = "x86_64")]
#[repr(C)]
struct CpuidFeature {
    cpuid: [u32; 4],
    active: [u32; 4],
}

#[cfg(target_arch = "x86_64")]
extern "C" {
    /// The CPUID words of one leaf (index 0: leaf 1, 1: leaf 7); glibc 2.33 and later. A
    /// pointer to the C library's start-up copy (a zeroed entry for an index it does not
    /// know), valid for the life of the process.
    fn __x86_get_cpuid_feature_leaf(index: libc::c_uint) -> *const CpuidFeature;
}

/// `f` of the four registers (EAX, EBX, ECX, EDX) CPUID leaf 1 gave when the process started.
#[cfg(target_arch = "x86_64")]
fn leaf1<T>(f: impl FnOnce(&[u32; 4]) -> T) -> T {
    // SAFETY: glibc returns a pointer to its start-up copy of the leaf (to a zeroed entry
    // for an index it does not know), valid for the life of the process.
    f(unsafe { &(*__x86_get_cpuid_feature_leaf(0)).cpuid })
}

/// CPUID leaf 1's EAX (family, model, stepping), as the C library read it.
#[cfg(all(test, target_arch = "x86_64"))]
fn cpu_leaf1_eax() -> u32 {
    leaf1(|w| w[0])
}

/// Monotonic time in nanoseconds (the vDSO: no system call).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleep for `ns` nanoseconds (less if a signal interrupts it).
pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long };
    // SAFETY: nanosleep reads a valid local; the remainder is not asked for.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if !random_bytes(&mut b) {
        // Degraded source: mix the clock, a stack address and the thread id.
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes into a valid local.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let x = (ts.tv_nsec as u64) ^ ((ts.tv_sec as u64) << 32) ^ (&b as *const _ as u64) ^ (thread_id() << 17);
        return crate::rand::mix64(x);
    }
    u64::from_ne_bytes(b)
}

/// Write all of `bytes` to standard error, retrying on short writes; never allocates, and
/// leaves `errno` as it was (a warning must not change what the program sees). When the
/// program has closed its standard error (GNU tools close it in an exit handler, which runs
/// before mie's exit checks), the bytes go to what standard error was at start-up, opened
/// again (`stderr_again`).
pub fn write_stderr(bytes: &[u8]) {
    let e = errno();
    if let Err(libc::EBADF) = write_all(2, bytes) {
        let fd = stderr_again();
        if fd >= 0 {
            let _ = write_all(fd, bytes);
        }
    }
    set_errno(e);
}

/// What standard error was at start-up (`note_stderr`): its file's device and inode, and the
/// name it had, when it had one (a terminal, a file the shell opened); NUL-terminated.
struct StartErr {
    dev: u64,
    ino: u64,
    named: bool,
    path: [u8; 256],
}

struct StartErrCell(core::cell::UnsafeCell<StartErr>);
// SAFETY: written once by `note_stderr` at start-up, before NOTED is set (Release); read only
// after NOTED is seen (Acquire).
unsafe impl Sync for StartErrCell {}

static START_ERR: StartErrCell = StartErrCell(core::cell::UnsafeCell::new(StartErr { dev: 0, ino: 0, named: false, path: [0; 256] }));
static NOTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// The descriptor `stderr_again` opened: -1 not tried yet, -2 tried and failed.
static AGAIN_FD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(-1);

/// Remember what standard error is (at start-up, once; two system calls): see `write_stderr`.
pub fn note_stderr() {
    use core::sync::atomic::Ordering;
    if NOTED.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: called once, under the start-up lock, before NOTED is set: no reader yet.
    let st = unsafe { &mut *START_ERR.0.get() };
    if let Some((dev, ino, _)) = file_id(2) {
        (st.dev, st.ino) = (dev, ino);
        // SAFETY: the path is NUL-terminated, the buffer long enough for readlink's answer
        // and its NUL (at most len - 1 bytes are written).
        let n = unsafe { libc::readlink(c"/proc/self/fd/2".as_ptr(), st.path.as_mut_ptr().cast(), st.path.len() - 1) };
        // A pipe or socket has no name to open again ("pipe:[…]").
        st.named = n > 1 && st.path[0] == b'/';
        if n > 0 {
            st.path[n as usize] = 0;
        }
    }
    NOTED.store(true, Ordering::Release);
}

/// The device, inode and file type (`S_IFMT` bits) of what `fd` has open.
fn file_id(fd: i32) -> Option<(u64, u64, u32)> {
    // SAFETY: fstat fills the buffer it is given.
    unsafe {
        let mut sb: libc::stat = core::mem::zeroed();
        (libc::fstat(fd, &mut sb) == 0).then_some((sb.st_dev, sb.st_ino, sb.st_mode & libc::S_IFMT))
    }
}

/// A descriptor (above 2, close-on-exec) for what standard error was at start-up, opened again
/// after the program closed it: the same file by name, checked to be the same file (device and
/// inode: never a file put there since), never in a set-uid process, which must not open
/// paths on its invoker's say; else the process's terminal. Tried once; -2 when neither
/// opens. The first bytes written there say why.
fn stderr_again() -> i32 {
    use core::sync::atomic::Ordering;
    let fd = AGAIN_FD.load(Ordering::Acquire);
    if fd != -1 {
        return fd;
    }
    let mut fd = -2;
    let mut what: &[u8] = &[];
    if NOTED.load(Ordering::Acquire) && !is_secure_exec() {
        // SAFETY: START_ERR was written before NOTED was set.
        let st = unsafe { &*START_ERR.0.get() };
        if st.named {
            fd = open_same(st.path.as_ptr().cast(), st.dev, st.ino);
            let end = st.path.iter().position(|&b| b == 0).unwrap_or(0);
            what = &st.path[..end];
        }
    }
    if fd < 0 {
        // SAFETY: a NUL-terminated path.
        fd = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_WRONLY | libc::O_NOCTTY | libc::O_CLOEXEC) };
        what = b"/dev/tty";
    }
    let fd = if fd >= 0 { above_stdio(fd) } else { -2 };
    // A thread that raced here keeps its own descriptor open: both work, one is remembered.
    if AGAIN_FD.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return AGAIN_FD.load(Ordering::Acquire);
    }
    if fd >= 0 {
        for part in [b"mie: the program closed its standard error; mie's output goes to ".as_slice(), what, b"\n"] {
            let _ = write_all(fd, part);
        }
    }
    fd
}

/// At the main thread's exit (`on_main_thread_exit`, which `exit` runs before the program's
/// exit handlers): when standard error is still the pipe or socket it was at start-up, which
/// cannot be opened again by name, keep a copy of it (above fd 2, close-on-exec) for mie's
/// exit checks, which run after those handlers: a GNU tool's closes it. Taken only now: a
/// copy held for the life of the process would keep the reader from seeing the pipe's end
/// when the program closes it. (Not a pipe the program made its stderr itself: it may close
/// it in an exit handler and wait for the child reading it to see the end.)
pub fn keep_stderr() {
    use core::sync::atomic::Ordering;
    // (Also after an earlier `stderr_again` found nothing to open: -2.)
    let was = AGAIN_FD.load(Ordering::Acquire);
    if !NOTED.load(Ordering::Acquire) || was >= 0 {
        return;
    }
    // SAFETY: START_ERR was written before NOTED was set.
    let st = unsafe { &*START_ERR.0.get() };
    let e = errno();
    let unnamed = |kind| kind == libc::S_IFIFO || kind == libc::S_IFSOCK;
    if file_id(2).is_some_and(|(dev, ino, kind)| unnamed(kind) && (dev, ino) == (st.dev, st.ino)) {
        // SAFETY: duplicating fd 2, and closing the copy this function made.
        unsafe {
            let fd = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
            if fd >= 0 && AGAIN_FD.compare_exchange(was, fd, Ordering::AcqRel, Ordering::Acquire).is_err() {
                libc::close(fd);
            }
        }
    }
    set_errno(e);
}

/// Whether the calling thread is the process's main thread.
pub fn is_main_thread() -> bool {
    // SAFETY: gettid and getpid have no preconditions.
    unsafe { libc::gettid() == libc::getpid() }
}

/// Have `f` run when the calling thread, which must be the main thread (`is_main_thread`),
/// ends: as the first thing `exit` does (the C library runs the exiting thread's TLS
/// destructors before the exit handlers), or at its `pthread_exit`. Allocates (the C
/// library's record of it).
pub fn on_main_thread_exit(f: unsafe extern "C" fn(*mut libc::c_void)) -> bool {
    unsafe extern "C" {
        fn __cxa_thread_atexit_impl(dtor: unsafe extern "C" fn(*mut libc::c_void), obj: *mut libc::c_void, dso: *mut libc::c_void) -> libc::c_int;
    }
    // SAFETY: the registration takes a plain function and an address inside this object
    // (which keeps it loaded while it is due).
    unsafe { __cxa_thread_atexit_impl(f, core::ptr::null_mut(), &AGAIN_FD as *const _ as *mut libc::c_void) == 0 }
}

/// Open `path` for appending if it is still the file (`dev`, `ino`); else -1.
fn open_same(path: *const libc::c_char, dev: u64, ino: u64) -> i32 {
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { libc::open(path, libc::O_WRONLY | libc::O_APPEND | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 || file_id(fd).is_some_and(|(d, i, _)| (d, i) == (dev, ino)) {
        return fd;
    }
    // SAFETY: closing the descriptor opened just above.
    unsafe { libc::close(fd) };
    -1
}

/// `fd` moved above the standard descriptors (the program may open 0, 1 or 2 again and
/// expect the lowest free number), close-on-exec.
fn above_stdio(fd: i32) -> i32 {
    if fd > 2 {
        return fd;
    }
    // SAFETY: duplicating and closing a descriptor this function owns.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
        libc::close(fd);
        if high < 0 { -2 } else { high }
    }
}

/// Open (create, append) `PATH.<pid>` for mie's output; -1 if that fails.
pub fn open_log(path: &[u8], pid: u32) -> i32 {
    let mut buf = [0u8; 4096];
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = pid;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if path.len() + 1 + n + 1 > buf.len() {
        return -1;
    }
    buf[..path.len()].copy_from_slice(path);
    buf[path.len()] = b'.';
    for i in 0..n {
        buf[path.len() + 1 + i] = digits[n - 1 - i];
    }
    // SAFETY: buf is NUL-terminated (zero beyond the name).
    unsafe { libc::open(buf.as_ptr().cast(), libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC, 0o644) }
}

/// Write all of `bytes` to `fd`, retrying on short writes; never allocates.
pub fn write_fd(fd: i32, bytes: &[u8]) {
    let _ = write_all(fd, bytes);
}

/// `write_fd`, with the error that stopped it (errno). A descriptor in non-blocking mode
/// (node.js sets its standard streams so, and the mode belongs to the pipe, which the
/// processes that share it share) whose pipe is full is waited for, up to a second: a report
/// is not cut short because its reader is slow (one that does not read in a second is not
/// waited for again, so a report is never held up for long). A pipe whose reader is gone
/// raises no SIGPIPE from these writes (`without_sigpipe`).
fn write_all(fd: i32, bytes: &[u8]) -> Result<(), i32> {
    without_sigpipe(|| write_loop(fd, bytes))
}

/// Run `f` (writes) with SIGPIPE blocked in this thread, and take back a SIGPIPE that `f`
/// raised (one that was pending before stays): a warning written to a stderr pipe whose
/// reader has exited (`prog 2>&1 >/dev/null | grep -q x`) must not kill a program that goes
/// on after it; the write fails with EPIPE instead. Async-signal-safe.
fn without_sigpipe<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: signal sets on the stack, initialised by sigemptyset before use; the mask
    // calls affect this thread only, and the old mask is put back before returning.
    unsafe {
        let mut pipe: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        let mut pending: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        libc::sigemptyset(&mut pending);
        let blocked = libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old) == 0;
        let before = blocked && libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1;
        let r = f();
        if blocked {
            libc::sigemptyset(&mut pending);
            if !before && libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1 {
                let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                libc::sigtimedwait(&pipe, core::ptr::null_mut(), &zero);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        }
        r
    }
}

/// `write_all`'s loop.
fn write_loop(fd: i32, bytes: &[u8]) -> Result<(), i32> {
    use core::sync::atomic::{AtomicBool, Ordering};
    static STALLED: AtomicBool = AtomicBool::new(false);
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: the pointer and length describe the live remainder of `bytes`.
        let r = unsafe { libc::write(fd, bytes.as_ptr().add(off).cast(), bytes.len() - off) };
        if r <= 0 {
            let e = if r < 0 { errno() } else { 0 };
            if e == libc::EINTR {
                continue;
            }
            if (e == libc::EAGAIN || e == libc::EWOULDBLOCK) && !STALLED.load(Ordering::Relaxed) {
                let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                // SAFETY: one pollfd, ours; poll is async-signal-safe.
                if unsafe { libc::poll(&mut p, 1, 1000) } > 0 {
                    continue;
                }
                STALLED.store(true, Ordering::Relaxed);
            }
            return Err(e);
        }
        off += r as usize;
    }
    Ok(())
}

/// Stop the process after a report: SIGABRT, with the default action restored first so a
/// program's own handler cannot swallow it.
pub fn abort() -> ! {
    // SAFETY: resetting a signal disposition and raising it are async-signal-safe.
    unsafe {
        libc::signal(libc::SIGABRT, libc::SIG_DFL);
        libc::abort()
    }
}

pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(e: i32) {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e }
}

/// Read an environment variable as bytes without allocating; `None` if unset.
pub fn getenv(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv returns null or a NUL-terminated string owned by the environment block.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: p is a valid NUL-terminated C string; environ strings live for the process.
    Some(unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes())
}

/// Call `f` with each entry (`NAME=value`) of the parent process's initial environment
/// (`/proc/<ppid>/environ`), without allocating; entries longer than 4 KiB are skipped.
/// Nothing is called when the file cannot be read (another user's process, no /proc).
pub fn for_each_parent_env(mut f: impl FnMut(&[u8])) {
    let mut path = *b"/proc/\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    // SAFETY: getppid has no preconditions.
    let mut ppid = unsafe { libc::getppid() } as u32;
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (ppid % 10) as u8;
        n += 1;
        ppid /= 10;
        if ppid == 0 {
            break;
        }
    }
    let mut at = 6;
    for i in (0..n).rev() {
        path[at] = digits[i];
        at += 1;
    }
    path[at..at + 8].copy_from_slice(b"/environ");
    // SAFETY: path is NUL-terminated (the buffer's tail is zero).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 4096];
    let mut have = 0;
    let mut skipping = false;
    loop {
        // SAFETY: reading into the free tail of buf.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().add(have).cast(), buf.len() - have) };
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        if r <= 0 {
            break;
        }
        have += r as usize;
        let mut start = 0;
        while let Some(end) = buf[start..have].iter().position(|&c| c == 0) {
            if !skipping {
                f(&buf[start..start + end]);
            }
            skipping = false;
            start += end + 1;
        }
        if start == 0 && have == buf.len() {
            // One entry fills the buffer: skip it up to its end.
            skipping = true;
            have = 0;
        } else {
            buf.copy_within(start..have, 0);
            have -= start;
        }
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
}

/// True for set-uid/set-gid and similar processes, where the environment is untrusted.
pub fn is_secure_exec() -> bool {
    // SAFETY: getauxval is a plain read of the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

#[cfg(target_arch = "aarch64")]
pub fn hwcap2() -> u64 {
    // SAFETY: getauxval is a plain read of the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_HWCAP2) as u64 }
}

#[cfg(target_arch = "aarch64")]
/// Enable the tagged-address ABI with synchronous MTE tag-check faults; `include` is the
/// set of tags IRG may generate. Threads created afterwards inherit the setting.
pub fn mte_enable_sync(include: u64) -> bool {
    const PR_SET_TAGGED_ADDR_CTRL: libc::c_int = 55;
    const PR_TAGGED_ADDR_ENABLE: u64 = 1;
    const PR_MTE_TCF_SYNC: u64 = 1 << 1;
    const PR_MTE_TAG_SHIFT: u64 = 3;
    let ctrl = PR_TAGGED_ADDR_ENABLE | PR_MTE_TCF_SYNC | (include << PR_MTE_TAG_SHIFT);
    // SAFETY: prctl with integer arguments changes only this thread's MTE settings.
    unsafe { libc::prctl(PR_SET_TAGGED_ADDR_CTRL, ctrl as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) == 0 }
}

pub fn thread_id() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

pub fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe {
        libc::sched_yield();
    }
}

/// Create the thread-specific key whose destructor returns a thread's cache at thread exit.
pub fn thread_key_create(dtor: unsafe extern "C" fn(*mut libc::c_void)) -> Option<libc::pthread_key_t> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: key is a valid out-pointer; dtor has the required signature.
    if unsafe { libc::pthread_key_create(&mut key, Some(dtor)) } == 0 {
        Some(key)
    } else {
        None
    }
}

pub fn thread_key_set(key: libc::pthread_key_t, v: *mut u8) {
    // SAFETY: key came from pthread_key_create.
    unsafe {
        libc::pthread_setspecific(key, v.cast());
    }
}

/// Register fork handlers so the child inherits consistent allocator locks.
pub fn at_fork(prepare: unsafe extern "C" fn(), parent: unsafe extern "C" fn(), child: unsafe extern "C" fn()) {
    // SAFETY: the handlers are plain functions with the expected signature.
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    /// Resident pages are counted, and the count stops at `enough`.
    #[test]
    fn resident_pages_are_counted() {
        let pg = page_size();
        let p = map_rw(600 * pg) as usize;
        assert!(p != 0);
        for i in [0, 7, 299, 300, 599] {
            // SAFETY: page i of the fresh mapping.
            unsafe { core::ptr::write_volatile((p + i * pg) as *mut u8, 1) };
        }
        if dropping_clears() && pg == 4096 {
            assert_eq!(resident_count(p, 600 * pg, usize::MAX), Some(5));
            assert_eq!(resident_count(p, 600 * pg, 3), Some(3));
            assert_eq!(resident_count(p + pg, 299 * pg, usize::MAX), Some(2));
        }
        release(p as *mut u8, 600 * pg);
    }

    /// The C library's copy of the CPUID words gives the answer the instruction gives.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn aes_detection_matches_the_cpuid_instruction() {
        // SAFETY: CPUID leaf 1 exists on every x86-64 CPU.
        #[allow(unused_unsafe)]
        let ecx = unsafe { core::arch::x86_64::__cpuid(1) }.ecx;
        assert_eq!(cpu_has_aes(), ecx & (1 << 25) != 0);
        // And the index is leaf 1's: its EAX (family, model, stepping) is the CPU's too.
        #[allow(unused_unsafe)]
        let eax = unsafe { core::arch::x86_64::__cpuid(1) }.eax;
        assert_eq!(cpu_leaf1_eax(), eax);
    }

    /// A range with dirty pages here and there, others never touched: afterwards every byte
    /// reads zero, and the untouched pages were not faulted in.
    #[test]
    fn clear_pages_clears_the_dirty_pages_and_leaves_the_rest_unmapped() {
        let pg = page_size();
        // More pages than one residency query covers, so runs cross its chunks.
        let pages = 600;
        let p = map_rw(pages * pg) as usize;
        assert_ne!(p, 0);
        let dirty = [0, 1, 7, 255, 256, 257, 400, pages - 1];
        for &i in &dirty {
            // SAFETY: page i lies inside the mapping made above.
            unsafe { core::ptr::write_bytes((p + i * pg + 100) as *mut u8, 0xa5, pg - 200) };
        }
        clear_pages(p, pages * pg);
        // (Where `madvise` does nothing, everything is cleared instead; with other than 4 KiB
        // pages an emulator may answer `mincore` per host page.)
        if dropping_clears() && pg == 4096 {
            let mut map = vec![0u8; pages];
            assert!(resident(p, pages * pg, &mut map));
            for (i, m) in map.iter().enumerate() {
                assert_eq!(m & 1 != 0, dirty.contains(&i), "page {i}: resident {}", m & 1);
            }
        }
        // SAFETY: the whole mapping is readable.
        let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, pages * pg) };
        assert!(bytes.iter().all(|&b| b == 0));
        release(p as *mut u8, pages * pg);
    }
}
