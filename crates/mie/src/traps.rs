//! Reports for the checks the compiler and the C library make (what `mie cc` turns on):
//! a failed `-fsanitize=bounds` check traps (x86-64: `ud1` with the check's kind, SIGILL;
//! arm64: `brk #0x55xx`, SIGTRAP), the stack protector and `_FORTIFY_SOURCE` end in the C
//! library's `__stack_chk_fail` / `__chk_fail` (SIGABRT). Without mie these end as a bare
//! "Illegal instruction" or "*** stack smashing detected ***"; with it, a `mie:` report
//! names the check and where it failed, then the process ends as it would have.

use core::fmt::Write;

use crate::platform;
use crate::report::{self, Line};

/// Clang's sanitizer check kinds (SanitizerHandler), as encoded in a trap instruction.
fn check_name(kind: u32) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        0 | 12 | 13 | 21 => ("integer-overflow", "an arithmetic overflow check"),
        3 => ("integer-overflow", "a division overflow check"),
        18 => ("array-index-out-of-bounds", "an array index check (-fsanitize=bounds)"),
        19 => ("pointer-overflow", "a pointer arithmetic check"),
        20 => ("shift-out-of-bounds", "a shift check"),
        22 => ("type-mismatch", "a null, alignment or object size check"),
        24 => ("vla-bound-not-positive", "a variable-length array check"),
        25 => ("bounds-safety", "a -fbounds-safety check"),
        2 => ("cfi-check-fail", "a control-flow integrity check"),
        1 | 11 => ("unreachable", "an unreachable point"),
        _ => return None,
    })
}

/// The check kind of the trap instruction at `pc`, if it is one of clang's.
fn trap_kind(pc: usize) -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        // ud1 disp8(%eax), %eax: 67 0f b9 40 <kind>.
        if !platform::code_readable(pc, 5) {
            return None;
        }
        // SAFETY: [pc, pc + 5) lies in a readable executable segment (checked above).
        let b = unsafe { (pc as *const [u8; 5]).read() };
        (b[..4] == [0x67, 0x0f, 0xb9, 0x40]).then_some(b[4] as u32)
    }
    #[cfg(target_arch = "aarch64")]
    {
        if !platform::code_readable(pc, 4) {
            return None;
        }
        // SAFETY: as above.
        let insn = unsafe { (pc as *const u32).read() };
        // brk #imm16: 0xd4200000 | imm16 << 5; clang uses 0x5500 | kind.
        let imm = (insn >> 5) & 0xffff;
        (insn & 0xffe0_001f == 0xd420_0000 && imm & 0xff00 == 0x5500).then_some(imm & 0xff)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = pc;
        None
    }
}

#[cfg(target_arch = "x86_64")]
const TRAP_SIGNAL: libc::c_int = libc::SIGILL;
#[cfg(not(target_arch = "x86_64"))]
const TRAP_SIGNAL: libc::c_int = libc::SIGTRAP;

pub fn install() {
    platform::install_handler(TRAP_SIGNAL, on_trap);
}

extern "C" fn on_trap(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let pc = platform::context_pc(uc);
    // SAFETY: info is the kernel's siginfo.
    let sent = unsafe { (*info).si_code } <= 0;
    if !sent {
        if let Some((name, what)) = trap_kind(pc).and_then(check_name) {
            let mut o = Line::new();
            let _ = writeln!(o, "mie: {name} (the compiler's check trapped: {what} failed)");
            report::write_code_addr(&mut o, "faulting instruction", pc);
            let _ = writeln!(o, "mie: the process ends (the program was built with this check trapping)");
            o.flush();
        } else if sig == libc::SIGILL && platform::default_action(sig) {
            // SAFETY: info is the kernel's siginfo; for SIGILL si_addr is the instruction.
            report::fatal_signal(sig, unsafe { (*info).si_addr() } as usize, pc);
        }
    }
    // SAFETY: the arguments are the kernel's, passed on unchanged.
    unsafe { platform::chain(sig, info, uc) }
}

/// From the SIGABRT handler: if the C library stopped the program in its stack protector
/// or `_FORTIFY_SOURCE` check, say which and where; true if it did.
///
/// After a stack overflow the frames above the function that overflowed are garbage, and
/// unwinding into them can fault. So the stack is walked one frame further at a time and
/// never past the first frame outside the C library (and mie) once a check function was
/// seen: no frame beyond the one reported is ever unwound.
pub fn explain_abort() -> bool {
    const DEPTH: usize = 16;
    let mut frames = [0usize; DEPTH];
    let mut kind: Option<(&str, &str, &str)> = None;
    for n in 1..=DEPTH {
        let got = platform::backtrace_into(&mut frames[..n]);
        if got < n {
            return false;
        }
        let pc = frames[n - 1];
        // A return address: the call is the byte before it (a call to a function that never
        // returns is often its caller's last instruction).
        match platform::symbol_name(pc.wrapping_sub(1)) {
            Some(b"__stack_chk_fail" | b"__stack_chk_fail_local") => {
                kind = Some(("stack-buffer-overflow", "the stack protector found a stack frame's canary overwritten: a buffer on the stack of this function overflowed", "in"));
            }
            Some(b"__chk_fail" | b"__fortify_fail") if kind.is_none() => {
                kind = Some(("buffer-overflow", "a _FORTIFY_SOURCE check found a copy larger than its destination (a stack or global buffer); nothing was copied", "called from"));
            }
            _ => {
                if let Some((name, what, label)) = kind {
                    if !in_c_library_or_mie(pc) {
                        let mut o = Line::new();
                        let _ = writeln!(o, "mie: {name} (stopped by the C library's check)");
                        let _ = writeln!(o, "  {what}");
                        report::write_code_addr(&mut o, label, pc);
                        o.flush();
                        return true;
                    }
                }
            }
        }
    }
    false
}

/// Whether `pc` is in the C library or in libmie (their checking functions call each other).
fn in_c_library_or_mie(pc: usize) -> bool {
    // object_name is the file name without its directories already.
    platform::object_name(pc).is_some_and(|o| o.starts_with(b"libc.so") || o.starts_with(b"libmie"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_kinds_have_names() {
        assert_eq!(check_name(18).map(|c| c.0), Some("array-index-out-of-bounds"));
        assert_eq!(check_name(200), None);
        assert_eq!(trap_kind(0), None);
    }
}
