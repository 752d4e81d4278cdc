//! Source lines in reports: binutils' `addr2line` run as a child process for one code
//! address (with its inlined frames), as sanitizers run their symbolizer out of process. The
//! crashed process only forks (a raw `clone`, so no fork handler of anyone's runs: mie's
//! would take the allocator's locks), reads a pipe and waits; the DWARF is parsed in the
//! child, away from the damaged heap. Nothing here allocates.
//!
//! Not in a privileged (set-uid) process, not without debug info, not when `addr2line` is
//! missing (the report then keeps the `addr2line` command to run by hand); bounded to a few
//! seconds per report, so a report always ends.

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// Where binutils puts it.
const CANDIDATES: [&core::ffi::CStr; 3] = [c"/usr/bin/addr2line", c"/usr/local/bin/addr2line", c"/bin/addr2line"];

/// 0: not looked for yet, 1 + index into CANDIDATES, 255: none (or switched off).
static FOUND: AtomicU8 = AtomicU8::new(0);
/// Milliseconds spent in the symbolizer so far (a report's budget).
static SPENT_MS: AtomicU32 = AtomicU32::new(0);
const BUDGET_MS: u32 = 4000;
const PER_CALL_MS: i32 = 2000;

/// Turn source lines off (the `symbolize=0` option).
pub fn disable() {
    FOUND.store(255, Ordering::Relaxed);
}

fn symbolizer() -> Option<&'static core::ffi::CStr> {
    let f = match FOUND.load(Ordering::Relaxed) {
        0 => {
            let i = if super::is_secure_exec() {
                None
            } else {
                // SAFETY: access only checks the path.
                CANDIDATES.iter().position(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
            };
            let v = i.map_or(255, |i| i as u8 + 1);
            FOUND.store(v, Ordering::Relaxed);
            v
        }
        v => v,
    };
    (f != 255).then(|| CANDIDATES[f as usize - 1])
}

/// Write `    at FILE:LINE (FUNCTION)` for `vaddr` (an address relative to the load base of
/// the object at `path`), one line per inlined frame, innermost first, each line prefixed
/// with `indent`. False if nothing could be found (the caller keeps its fallback).
pub fn source_lines(out: &mut dyn Write, indent: &str, path: &[u8], vaddr: usize) -> bool {
    let Some(tool) = symbolizer() else { return false };
    if SPENT_MS.load(Ordering::Relaxed) >= BUDGET_MS || path.len() >= 1024 {
        return false;
    }
    let mut buf = [0u8; 4096];
    let Some(n) = run(tool, path, vaddr, &mut buf) else { return false };
    let text = &buf[..n];
    // Pairs of lines: function, then FILE:LINE (or ??:0 / ??:? when unknown).
    let mut lines = text.split(|&c| c == b'\n').filter(|l| !l.is_empty());
    let mut wrote = false;
    while let (Some(func), Some(loc)) = (lines.next(), lines.next()) {
        if loc.starts_with(b"??") {
            continue;
        }
        // Drop " (discriminator N)".
        let loc = loc.split(|&c| c == b' ').next().unwrap_or(loc);
        let _ = writeln!(out, "{indent}at {} ({})", crate::report::Bytes(loc), crate::report::Bytes(func));
        wrote = true;
    }
    wrote
}

/// Run `tool -Cfie PATH 0xVADDR` with its output in `buf`; the bytes read.
fn run(tool: &core::ffi::CStr, path: &[u8], vaddr: usize, buf: &mut [u8]) -> Option<usize> {
    let mut path_z = [0u8; 1025];
    path_z[..path.len()].copy_from_slice(path);
    // "0x" and the hex digits, NUL-terminated.
    let mut addr_z = [0u8; 24];
    addr_z[..2].copy_from_slice(b"0x");
    let digits = (usize::BITS - vaddr.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        addr_z[2 + i] = b"0123456789abcdef"[(vaddr >> (4 * (digits - 1 - i))) & 0xf];
    }
    let argv: [*const libc::c_char; 5] = [tool.as_ptr(), c"-Cfie".as_ptr(), path_z.as_ptr().cast(), addr_z.as_ptr().cast(), core::ptr::null()];
    let envp: [*const libc::c_char; 2] = [c"LC_ALL=C".as_ptr(), core::ptr::null()];
    let mut fds = [0 as libc::c_int; 2];
    let start = super::now_ns();
    // SAFETY: plain system calls on descriptors this function owns. The child runs only
    // async-signal-safe calls (dup2, open, execve, _exit) on memory prepared before the
    // clone, then becomes the symbolizer.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return None;
        }
        let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0usize, 0usize, 0usize, 0usize) as libc::pid_t;
        if pid == 0 {
            libc::dup2(fds[1], 1);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 2);
            }
            libc::execve(tool.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
        libc::close(fds[1]);
        if pid < 0 {
            libc::close(fds[0]);
            return None;
        }
        let mut n = 0usize;
        let mut timed_out = false;
        while n < buf.len() {
            let mut p = libc::pollfd { fd: fds[0], events: libc::POLLIN, revents: 0 };
            let r = libc::poll(&mut p, 1, PER_CALL_MS);
            if r == 0 {
                timed_out = true;
                break;
            }
            if r < 0 {
                if super::errno() == libc::EINTR {
                    continue;
                }
                break;
            }
            let got = libc::read(fds[0], buf.as_mut_ptr().add(n).cast(), buf.len() - n);
            if got <= 0 {
                break;
            }
            n += got as usize;
        }
        libc::close(fds[0]);
        if timed_out {
            libc::kill(pid, libc::SIGKILL);
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 && super::errno() == libc::EINTR {}
        let ms = ((super::now_ns().saturating_sub(start)) / 1_000_000) as u32;
        SPENT_MS.fetch_add(ms.max(1), Ordering::Relaxed);
        if timed_out || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return None;
        }
        Some(n)
    }
}
