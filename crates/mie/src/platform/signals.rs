//! Signal dispositions: installing mie's handlers (SIGSEGV, SIGABRT, SIGILL, SIGTRAP, SIGBUS,
//! SIGFPE),
//! passing a signal on to what was there before, and reading a signal's user context.

/// The dispositions mie replaced, for chaining: SIGSEGV (fault reports) and SIGABRT (the
/// C library's allocator stopping on a block it does not own).
struct OldAction(core::cell::UnsafeCell<core::mem::MaybeUninit<libc::sigaction>>);
// SAFETY: written in `install_handler` before the handler can run, read-only after.
unsafe impl Sync for OldAction {}
static OLD_SEGV: OldAction = OldAction(core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()));
static OLD_ABRT: OldAction = OldAction(core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()));
static OLD_ILL: OldAction = OldAction(core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()));
static OLD_TRAP: OldAction = OldAction(core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()));
static OLD_BUS: OldAction = OldAction(core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()));
static OLD_FPE: OldAction = OldAction(core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()));

fn old_action(sig: libc::c_int) -> &'static OldAction {
    match sig {
        libc::SIGABRT => &OLD_ABRT,
        libc::SIGILL => &OLD_ILL,
        libc::SIGTRAP => &OLD_TRAP,
        libc::SIGBUS => &OLD_BUS,
        libc::SIGFPE => &OLD_FPE,
        _ => &OLD_SEGV,
    }
}

/// A signal handler as mie installs it (SA_SIGINFO).
pub type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Install `handler` for `sig` (SIGSEGV, SIGABRT, SIGILL, SIGTRAP, SIGBUS or SIGFPE; SA_SIGINFO, on the alternate stack if
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

