//! Fault reports (DESIGN.md §6). Formatted into a fixed stack buffer and written with
//! `write(2)`: no allocation, usable from the allocation path and from signal handlers.
//! The first line always starts with `mie: <kind>` so logs can be grepped.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use crate::platform;

/// The error kinds mie reports. The names are stable: tests and users grep for them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    DoubleFree,
    InvalidFree,
    HeapBufferOverflow,
    WriteAfterFree,
    AllocKindMismatch,
    SizeOverflow,
    OutOfMemory,
    Internal,
    UseAfterFree,
    HeapBufferUnderflow,
    InvalidAccess,
    TagCheckFault,
    ZeroSizeAccess,
    HeapExecute,
    AccessFault,
    ForeignFree,
    InvalidPointer,
}

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Kind::DoubleFree => "double-free",
            Kind::InvalidFree => "invalid-free",
            Kind::HeapBufferOverflow => "heap-buffer-overflow",
            Kind::WriteAfterFree => "write-after-free",
            Kind::AllocKindMismatch => "alloc-dealloc-mismatch",
            Kind::SizeOverflow => "allocation-size-overflow",
            Kind::OutOfMemory => "out-of-memory",
            Kind::Internal => "internal-error",
            Kind::UseAfterFree => "use-after-free",
            Kind::HeapBufferUnderflow => "heap-buffer-underflow",
            Kind::InvalidAccess => "invalid-access",
            Kind::TagCheckFault => "tag-check-fault",
            Kind::ZeroSizeAccess => "zero-size-access",
            Kind::HeapExecute => "heap-execute",
            Kind::AccessFault => "access-fault",
            Kind::ForeignFree => "foreign-free",
            Kind::InvalidPointer => "invalid-pointer",
        }
    }
}

/// `log_path=PATH` (MIE_OPTIONS): reports, warnings and statistics go to `PATH.<pid>`
/// instead of stderr (which a daemon may not have; one that a program closes, as GNU tools do
/// in their exit handlers, is found again: `platform::write_stderr`, `platform::keep_stderr`).
static LOG_PATH: AtomicUsize = AtomicUsize::new(0);
static LOG_PATH_LEN: AtomicUsize = AtomicUsize::new(0);
/// The open log file and the process it was opened for (a fork child opens its own).
static LOG_FD: AtomicI32 = AtomicI32::new(-1);
static LOG_PID: AtomicI32 = AtomicI32::new(0);

/// Send what mie writes to `PATH.<pid>` (`path` lives for the process: the environment's).
pub fn set_log_path(path: &'static [u8]) {
    LOG_PATH_LEN.store(path.len(), Ordering::Relaxed);
    LOG_PATH.store(path.as_ptr() as usize, Ordering::Release);
}

/// Write to the log file if one is set (opened on first use, with this process's id), else
/// to stderr.
fn write_out(bytes: &[u8]) {
    let p = LOG_PATH.load(Ordering::Acquire);
    if p == 0 {
        return platform::write_stderr(bytes);
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut fd = LOG_FD.load(Ordering::Relaxed);
    if fd == -1 || LOG_PID.load(Ordering::Relaxed) != pid {
        // SAFETY: set_log_path stored a slice of the environment, which lives for the process.
        let path = unsafe { core::slice::from_raw_parts(p as *const u8, LOG_PATH_LEN.load(Ordering::Relaxed)) };
        fd = platform::open_log(path, pid as u32);
        let failed = fd < 0;
        // A failed open is not retried at every line: stderr it is, said once.
        LOG_FD.store(if failed { LOG_FAILED } else { fd }, Ordering::Relaxed);
        LOG_PID.store(pid, Ordering::Relaxed);
        if failed {
            let err = platform::errno();
            // LOG_FD now says "failed": this line itself goes to stderr.
            let mut o = Line::new();
            let _ = writeln!(
                o,
                "mie: warning: cannot write the log file {}.{pid} (log_path): {}; reports, warnings and statistics go to stderr instead",
                Bytes(path),
                errno_text(err)
            );
        }
    }
    if fd < 0 {
        return platform::write_stderr(bytes);
    }
    platform::write_fd(fd, bytes);
}

/// LOG_FD after an open that failed (for the process in LOG_PID).
const LOG_FAILED: i32 = -2;

/// A few errors a log file meets, in words (others by number).
fn errno_text(e: i32) -> &'static str {
    match e {
        libc::EACCES | libc::EPERM => "permission denied",
        libc::ENOENT => "no such directory",
        libc::EROFS => "read-only file system",
        libc::ENOSPC => "no space left on the device",
        libc::ENOTDIR => "a part of the path is not a directory",
        libc::EISDIR => "it is a directory",
        libc::ENAMETOOLONG | -1 => "the path is too long",
        _ => "the open failed",
    }
}

/// A text buffer that writes to stderr one line at a time (each line with one `write`, so
/// lines from processes sharing a terminal or pipe do not interleave mid-line); a line
/// longer than the buffer goes out in pieces.
pub struct Line {
    buf: [u8; 1024],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Line { buf: [0; 1024], len: 0 }
    }

    pub fn flush(&mut self) {
        write_out(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

/// Displays a byte string lossily (non-UTF-8 bytes as `?`).
pub struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            f.write_char(if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' })?;
        }
        Ok(())
    }
}

/// Writes a code address with the object and function it belongs to, its source lines when
/// the object has line tables (or the `addr2line` command that gives them), and, for a call
/// or a faulting instruction, the rest of the stack. Address 0 (a call that could not name
/// its caller, as Rust's global allocator cannot): the first frame of the current stack
/// outside the allocator.
pub fn write_code_addr(out: &mut dyn Write, label: &str, addr: usize) {
    let addr = if addr == 0 { first_caller_frame() } else { addr };
    write_code_line(out, label, addr);
    // The rest of the stack of the call (or of the faulting instruction), in fatal and
    // non-fatal reports alike.
    if addr != 0 && (label == "called from" || label == "faulting instruction" || label == "detected in a call from") {
        write_stack_after(out, addr);
    }
}

/// Frames of the calling stack after `addr` (which must be one of them), numbered from 1,
/// at most `STACK_FRAMES`, with their source lines.
fn write_stack_after(out: &mut dyn Write, addr: usize) {
    let mut frames = [0usize; 48];
    let n = platform::backtrace_into(&mut frames);
    let Some(i) = frames[..n].iter().position(|&f| f == addr) else { return };
    for (j, &f) in frames[i + 1..n].iter().take(stack_frames()).enumerate() {
        if f == 0 {
            break;
        }
        write_frame(out, j + 1, f);
    }
}

/// Allocation and free stacks are recorded (`stacks=1`): reports print them.
static STACKS_RECORDED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// The process is in `exit`, running mie's checks there (no call of the program's to name).
static EXITING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Reports may say that stacks are recorded (set at start-up).
pub fn set_stacks_recorded(on: bool) {
    STACKS_RECORDED.store(on, Ordering::Relaxed);
}

/// Reports from here on come from the checks at exit.
pub fn set_exiting() {
    EXITING.store(true, Ordering::Relaxed);
}

/// How many frames of the bad call's stack a report shows (more with `debug=1`).
static STACK_FRAMES: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(6);

fn stack_frames() -> usize {
    STACK_FRAMES.load(Ordering::Relaxed)
}

/// Show `n` frames of the bad call's stack.
pub fn set_stack_frames(n: usize) {
    STACK_FRAMES.store(n, Ordering::Relaxed);
}

/// One labelled code address (0: unknown), with its source lines (or the command that
/// gives them).
fn write_code_line(out: &mut dyn Write, label: &str, addr: usize) {
    let _ = write!(out, "  {label}: {addr:#x}");
    if addr == 0 {
        let _ = out.write_str(" (unknown)\n");
        return;
    }
    // Every labelled address is a return address but the faulting instruction itself.
    let ret = label != "faulting instruction";
    platform::symbolize(addr, ret, out);
    let _ = out.write_str("\n");
    if ret {
        write_tail_caller(out, addr);
    }
    platform::symbols::lookup(addr, ret, |s| {
        if s.has_lines {
            // The return address is one past the call: ask for the call's line.
            let probe = s.vaddr.saturating_sub(ret as usize);
            if !platform::symbolizer::source_lines(out, "    ", s.path, probe) {
                let _ = writeln!(out, "    source line: addr2line -Cfpie {} {probe:#x}", Bytes(s.path));
            }
        }
    });
}

/// If the call before return address `ret` went to a function that is not the allocator
/// (and so reached it by a tail call, leaving no frame of its own), name that function: it
/// is the code that really made the call.
fn write_tail_caller(out: &mut dyn Write, ret: usize) {
    let Some(target) = platform::code::direct_call_target(ret) else { return };
    // (is_allocator_frame takes a return address: it looks up the byte before it.)
    if platform::symbols::is_allocator_frame(target + 1) {
        return;
    }
    platform::symbols::lookup(target, false, |s| {
        if let Some((f, 0)) = s.func {
            let _ = out.write_str("    through: ");
            platform::symbols::write_demangled(out, f);
            let _ = writeln!(out, " (called there; it ended in a tail call into the allocator, so its own frame is gone)");
        }
    });
}

/// The first frame of the calling stack that is not the allocator's (0 if none).
fn first_caller_frame() -> usize {
    let mut frames = [0usize; 24];
    let n = platform::backtrace_into(&mut frames);
    frames[..n].iter().copied().find(|&pc| !platform::symbols::is_allocator_frame(pc) && pc != 0).unwrap_or(0)
}

/// Writes one numbered frame of a stack trace.
pub fn write_frame(out: &mut dyn Write, n: usize, addr: usize) {
    let _ = write!(out, "    #{n}: {addr:#x}");
    platform::symbolize(addr, true, out);
    let _ = out.write_str("\n");
    platform::symbols::lookup(addr, true, |s| {
        if s.has_lines {
            platform::symbolizer::source_lines(out, "        ", s.path, s.vaddr.saturating_sub(1));
        }
    });
}

/// A fatal signal mie cannot name as a heap error (a fault outside the memory it manages, a
/// bus error, an arithmetic fault, an illegal instruction): at least what and where, before
/// the signal takes its course. Only for a fault (not a signal sent with kill) that no
/// handler of the program's catches. Safe in a signal handler: no allocation.
pub fn fatal_signal(sig: libc::c_int, addr: usize, pc: usize) {
    let (name, what) = match sig {
        libc::SIGSEGV if addr < 4096 => ("SIGSEGV", "an access through a NULL pointer (or a small offset from one)"),
        libc::SIGSEGV => ("SIGSEGV", "an access to memory that is not mapped, or not for this access, outside the memory mie manages"),
        libc::SIGBUS => ("SIGBUS", "a bus error (a mapped file's page beyond its end, or a misaligned access)"),
        libc::SIGFPE => ("SIGFPE", "an arithmetic fault (an integer division by zero, or its overflow)"),
        libc::SIGILL => ("SIGILL", "an illegal instruction (a corrupted code pointer, or an instruction this CPU lacks)"),
        _ => ("a fatal signal", "a fault"),
    };
    let mut o = Line::new();
    let _ = writeln!(o, "mie: {name} on {addr:#x}: {what}");
    let _ = writeln!(o, "  not a heap error mie can name: the program crashed here");
    write_code_addr(&mut o, "faulting instruction", pc);
    let _ = writeln!(o, "mie: the process ends as it would without mie ({name})");
    o.flush();
}

/// Print a report and stop the process. `body` writes the lines after the headline.
#[cold]
#[inline(never)]
pub fn fatal(kind: Kind, ptr: usize, func: &str, body: impl FnOnce(&mut Line)) -> ! {
    stop(kind, format_args!("mie: {} on {:#x} in {}()", kind.name(), ptr, func), body)
}

/// The first line of a report about a faulting access (from the SIGSEGV handler).
pub fn fault_headline(o: &mut dyn Write, kind: Kind, addr: usize, how: &str) {
    let _ = writeln!(o, "mie: {} on {:#x} ({})", kind.name(), addr, how);
}

/// Close a report written into `out` and stop the process.
pub fn conclude(mut out: Line, kind: Kind) -> ! {
    if kind == Kind::WriteAfterFree {
        // What a write-after-free report cannot know (the write itself), and the call in
        // which it was found. (Measured: any code added to this report's path, here or where
        // the finding is written, changes LTO's layout of the fast paths: +15 instructions per
        // 16-byte malloc+free, -28 per 1 KiB one.)
        if !STACKS_RECORDED.load(Ordering::Relaxed) {
            let _ = writeln!(
                out,
                "  the write itself was not seen (it is found when the slot's zeros are checked): run with `mie run --debug` (or stacks=1) to see where the block was allocated and freed; on arm64 with MTE the write faults where it happens"
            );
        }
        if !EXITING.load(Ordering::Relaxed) {
            write_code_addr(&mut out, "detected in a call from", 0);
        }
    }
    let _ = writeln!(out, "mie: aborting (error: {})", kind.name());
    out.flush();
    platform::abort()
}

/// Headline, body, closing line, then abort: the shape every report has.
fn stop(kind: Kind, headline: fmt::Arguments<'_>, body: impl FnOnce(&mut Line)) -> ! {
    let mut out = Line::new();
    let _ = out.write_fmt(headline);
    let _ = out.write_str("\n");
    body(&mut out);
    conclude(out, kind)
}

/// A one-time warning line (options, degraded randomness), never fatal.
pub fn warn(args: fmt::Arguments<'_>) {
    let mut out = Line::new();
    let _ = out.write_str("mie: warning: ");
    let _ = out.write_fmt(args);
    let _ = out.write_str("\n");
    out.flush();
}
