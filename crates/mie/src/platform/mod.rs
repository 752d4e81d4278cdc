//! Platform layer: every call into the operating system lives here, so the rest of the
//! allocator can be read (and ported) without hunting for syscalls.
//!
//! Nothing in this module allocates. Failures are returned as `false`/null, never panics.

pub mod code;
pub mod lock;
pub mod symbols;
pub mod tls;

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

/// Move the pages of the mapping `[from, from + len)` to `to`, replacing what was mapped
/// there; the source range is unmapped.
pub fn move_pages_to(from: *mut u8, to: *mut u8, len: usize) -> bool {
    // SAFETY: both ranges are page-aligned and allocator-owned; MREMAP_FIXED replaces the
    // target range atomically.
    let r = unsafe { libc::mremap(from.cast(), len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to as *mut libc::c_void) };
    r == to as *mut libc::c_void
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

/// Write all of `bytes` to standard error, retrying on short writes; never allocates.
pub fn write_stderr(bytes: &[u8]) {
    write_fd(2, bytes)
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
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: the pointer and length describe the live remainder of `bytes`.
        let r = unsafe { libc::write(fd, bytes.as_ptr().add(off).cast(), bytes.len() - off) };
        if r <= 0 {
            if r < 0 && errno() == libc::EINTR {
                continue;
            }
            return;
        }
        off += r as usize;
    }
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

/// The dispositions mie replaced, for chaining: SIGSEGV (fault reports) and SIGABRT (the
/// C library's allocator stopping on a block it does not own).
struct OldAction(core::cell::UnsafeCell<core::mem::MaybeUninit<libc::sigaction>>);
// SAFETY: written in `install_handler` before the handler can run, read-only after.
unsafe impl Sync for OldAction {}
static OLD_SEGV: OldAction = OldAction(core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()));
static OLD_ABRT: OldAction = OldAction(core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()));
static OLD_ILL: OldAction = OldAction(core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()));
static OLD_TRAP: OldAction = OldAction(core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()));

fn old_action(sig: libc::c_int) -> &'static OldAction {
    match sig {
        libc::SIGABRT => &OLD_ABRT,
        libc::SIGILL => &OLD_ILL,
        libc::SIGTRAP => &OLD_TRAP,
        _ => &OLD_SEGV,
    }
}

/// A signal handler as mie installs it (SA_SIGINFO).
pub type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Install `handler` for `sig` (SIGSEGV, SIGABRT, SIGILL or SIGTRAP; SA_SIGINFO, on the alternate stack if
/// any, with the tag bits of a fault address exposed on arm64), remembering the previous
/// disposition for `chain`.
pub fn install_handler(sig: libc::c_int, handler: Handler) -> bool {
    const SA_EXPOSE_TAGBITS: libc::c_int = 0x800;
    // SAFETY: a zeroed sigaction is a valid starting point; sigaction copies it.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | SA_EXPOSE_TAGBITS;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, (*old_action(sig).0.get()).as_mut_ptr()) == 0
    }
}

/// The currently installed handler address of `sig` (or SIG_DFL/SIG_IGN).
pub fn current_handler(sig: libc::c_int) -> usize {
    // SAFETY: querying with a null new action only writes the out-struct.
    unsafe {
        let mut cur: libc::sigaction = core::mem::zeroed();
        libc::sigaction(sig, core::ptr::null(), &mut cur);
        cur.sa_sigaction
    }
}

/// Whether `sig`, passed on by mie, gets the default action (ends the process): no handler
/// of the program's was installed before mie's.
pub fn default_action(sig: libc::c_int) -> bool {
    // SAFETY: the old action was filled by sigaction before our handler was installed.
    let old = unsafe { &*(*old_action(sig).0.get()).as_ptr() };
    old.sa_sigaction == libc::SIG_DFL
}

/// Hand a signal mie does not keep to the previous handler, or give it the action it would
/// have had without mie. A fault returns to the faulting instruction, which runs again under
/// the default action; a signal sent by kill/raise/abort/sigqueue (`si_code <= 0`) is raised
/// again with the default action (ending the process, core dump included), or ignored if it
/// was ignored before. mie's handler stays installed whenever the process goes on.
///
/// # Safety
/// `info` and `uc` must be the arguments the kernel passed to a handler for `sig`.
pub unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the old action was filled by sigaction before our handler was installed; info
    // is the kernel's siginfo; the calls below are async-signal-safe.
    unsafe {
        let old = &*(*old_action(sig).0.get()).as_ptr();
        let sent = (*info).si_code <= 0;
        if old.sa_flags & libc::SA_SIGINFO != 0 && old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            let f: Handler = core::mem::transmute(old.sa_sigaction);
            f(sig, info, uc);
        } else if old.sa_sigaction == libc::SIG_IGN && sent {
            // Ignored before mie: still ignored.
        } else if old.sa_sigaction == libc::SIG_DFL || old.sa_sigaction == libc::SIG_IGN {
            // (A fault cannot be ignored: the kernel would deliver it again at once.)
            let mine = current_handler(sig);
            libc::signal(sig, libc::SIG_DFL);
            if sent {
                // Raise it again for this thread and let it through now: the default
                // action ends the process here, as it would have without mie.
                libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::syscall(libc::SYS_gettid), sig);
                let mut set: libc::sigset_t = core::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
                // Still here (the default action did not end the process, e.g. PID 1 in a
                // namespace): keep mie's handler.
                reinstall(sig, mine);
            }
        } else {
            let f: extern "C" fn(libc::c_int) = core::mem::transmute(old.sa_sigaction);
            f(sig);
        }
    }
}

/// Put back a handler address taken from `current_handler` (keeping mie's flags).
fn reinstall(sig: libc::c_int, handler: usize) {
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return;
    }
    const SA_EXPOSE_TAGBITS: libc::c_int = 0x800;
    // SAFETY: a zeroed sigaction is a valid starting point; the old action is not replaced
    // in OLD_SEGV (it still holds what mie chains to).
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | SA_EXPOSE_TAGBITS;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, core::ptr::null_mut());
    }
}

/// The program counter of a signal's user context.
/// Whether `[a, a + len)` is readable code of a loaded object.
pub fn code_readable(a: usize, len: usize) -> bool {
    code::readable(a, len)
}

pub fn context_pc(uc: *mut libc::c_void) -> usize {
    if uc.is_null() {
        return 0;
    }
    // SAFETY: the kernel passes a valid ucontext_t to SA_SIGINFO handlers.
    unsafe {
        let uc = &*(uc as *const libc::ucontext_t);
        #[cfg(target_arch = "aarch64")]
        return uc.uc_mcontext.pc as usize;
        #[cfg(target_arch = "x86_64")]
        return uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
        #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
        return 0;
    }
}

/// The return address a call would have left in a signal's user context (x86-64: the word
/// at the stack pointer; arm64: the link register). 0 if unknown.
pub fn context_link(uc: *mut libc::c_void) -> usize {
    if uc.is_null() {
        return 0;
    }
    // SAFETY: the kernel passes a valid ucontext_t to SA_SIGINFO handlers; on x86-64 the
    // stack pointer of the interrupted code points at mapped stack memory.
    unsafe {
        let uc = &*(uc as *const libc::ucontext_t);
        #[cfg(target_arch = "aarch64")]
        return uc.uc_mcontext.regs[30] as usize;
        #[cfg(target_arch = "x86_64")]
        return *(uc.uc_mcontext.gregs[libc::REG_RSP as usize] as *const usize);
        #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
        return 0;
    }
}

extern "C" {
    fn backtrace(buf: *mut *mut libc::c_void, size: libc::c_int) -> libc::c_int;
}

/// Return addresses of the calling stack (glibc's unwinder: works without frame pointers).
/// Its first use loads libgcc_s, which allocates: warm it up outside the allocation path.
pub fn backtrace_into(out: &mut [usize]) -> usize {
    // SAFETY: backtrace writes at most out.len() pointers into the buffer.
    let n = unsafe { backtrace(out.as_mut_ptr().cast(), out.len() as libc::c_int) };
    n.max(0) as usize
}

// glibc 2.35's `_dl_find_object`, referenced weakly (0 on an older C library): the loaded
// object holding an address by a binary search of the loader's table. `dladdr` answers the
// same question by scanning the object's whole symbol table for the nearest symbol, which
// at start-up (three lookups) cost a process about 25 us.
core::arch::global_asm!(
    ".weak _dl_find_object",
    ".pushsection .data.rel.ro.mie_dl_find_object,\"aw\"",
    ".balign 8",
    ".globl mie_dl_find_object_fn",
    ".hidden mie_dl_find_object_fn",
    "mie_dl_find_object_fn:",
    ".8byte _dl_find_object",
    ".popsection",
);

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

/// The address of `name` as the dynamic linker resolves it for the whole process
/// (`dlsym(RTLD_DEFAULT)`); 0 if undefined. Not for the allocation path: dlsym may allocate.
pub fn global_symbol(name: &core::ffi::CStr) -> usize {
    // SAFETY: dlsym only reads the loader's tables (a failure sets dlerror state).
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// The address of `name` if the loaded object containing `addr` defines it itself, from
/// that object's own dynamic symbol table (GNU hash); 0 otherwise. Reads only the loader's
/// mapped tables: no dlsym, no allocation.
pub fn own_definition(addr: usize, name: &core::ffi::CStr) -> usize {
    const RTLD_DL_LINKMAP: libc::c_int = 2;
    const DT_STRTAB: i64 = 5;
    const DT_SYMTAB: i64 = 6;
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
    let name = name.to_bytes();
    let mut h: u32 = 5381;
    for &c in name {
        h = h.wrapping_mul(33).wrapping_add(c as u32);
    }
    // SAFETY: dladdr1 fills the out-structs; a loaded object's dynamic section, symbol, string
    // and hash tables are mapped for as long as it is loaded, and are read within the bounds
    // their own headers give.
    unsafe {
        let mut map: *mut LinkMap = ptr::null_mut();
        if let Some((_, _, m)) = find_object(addr) {
            map = m.cast();
        } else if !mie_has_find_object() {
            let mut info: libc::Dl_info = core::mem::zeroed();
            libc::dladdr1(addr as *const libc::c_void, &mut info, &mut map as *mut *mut LinkMap as *mut *mut libc::c_void, RTLD_DL_LINKMAP);
        }
        if map.is_null() {
            return 0;
        }
        let base = (*map).l_addr;
        let (mut strtab, mut symtab, mut gnu_hash) = (0usize, 0usize, 0usize);
        let mut d = (*map).l_ld;
        while !d.is_null() && (*d).d_tag != 0 {
            let v = (*d).d_val as usize;
            // glibc relocates these entries in place on x86-64 and arm64; add the load
            // base where it has not.
            let v = if v < base { v + base } else { v };
            match (*d).d_tag {
                DT_STRTAB => strtab = v,
                DT_SYMTAB => symtab = v,
                DT_GNU_HASH => gnu_hash = v,
                _ => {}
            }
            d = d.add(1);
        }
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
        Some(f.rsplit(|&c| c == b'/').next().unwrap_or(f))
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
        let obj = s.path.rsplit(|&c| c == b'/').next().unwrap_or(s.path);
        let obj = if s.path == b"/proc/self/exe" { program_name() } else { obj };
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
core::arch::global_asm!(
    ".weak __mie_default_options",
    ".pushsection .data.rel.ro.mie_default_options,\"aw\"",
    ".balign 8",
    ".globl mie_program_options_fn",
    ".hidden mie_program_options_fn",
    "mie_program_options_fn:",
    ".8byte __mie_default_options",
    ".popsection",
);

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
    full.rsplit(|&c| c == b'/').next().unwrap_or(full)
}
