//! The one thread-local word mie needs (the calling thread's cache), with the initial-exec
//! TLS model: two instructions to reach it, also inside libmie.so, where Rust's
//! `thread_local!` would call `__tls_get_addr` on every access. The variable is defined
//! here (hidden, so every copy of mie in a process has its own) in `.tbss`.

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".globl mie_tls_current",
    ".hidden mie_tls_current",
    ".type mie_tls_current, @object",
    ".size mie_tls_current, 8",
    "mie_tls_current:",
    ".zero 8",
    ".popsection",
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",%nobits",
    ".p2align 3",
    ".globl mie_tls_current",
    ".hidden mie_tls_current",
    ".type mie_tls_current, %object",
    ".size mie_tls_current, 8",
    "mie_tls_current:",
    ".zero 8",
    ".popsection",
);

/// The address of this thread's word.
#[inline(always)]
fn slot() -> *mut usize {
    let p: usize;
    // SAFETY: computes the address of this thread's instance of mie_tls_current (static TLS,
    // initial-exec: thread pointer + offset from the GOT); reads nothing else.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr [rip + mie_tls_current@GOTTPOFF]",
            "add {p}, qword ptr fs:[0]",
            p = out(reg) p,
            options(nostack, pure, readonly, preserves_flags)
        )
    };
    // SAFETY: as above (tpidr_el0 is the thread pointer).
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!(
            "mrs {t}, tpidr_el0",
            "adrp {p}, :gottprel:mie_tls_current",
            "ldr {p}, [{p}, :gottprel_lo12:mie_tls_current]",
            "add {p}, {p}, {t}",
            p = out(reg) p,
            t = out(reg) _,
            options(nostack, pure, readonly, preserves_flags)
        )
    };
    p as *mut usize
}

/// This thread's word (0 until set).
#[inline(always)]
pub fn get() -> usize {
    // SAFETY: the slot is this thread's own, always mapped, 8-aligned.
    unsafe { *slot() }
}

#[inline(always)]
pub fn set(v: usize) {
    // SAFETY: as in `get`.
    unsafe { *slot() = v }
}
