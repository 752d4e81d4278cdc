//! What the slab allocator finds wrong on its own paths, deep inside a free, a refill or a
//! hand-out: it does not write reports. It describes the finding and hands it to the
//! diagnosis that start-up installs (`diagnose::findings::report_finding`), which reads the
//! allocator's state and reports; so `slab/` never imports `diagnose/`, and the arrow
//! between them points one way.

use crate::heap::slab::hook::Hook;
use crate::heap::slab::layout::Loc;
use crate::heap::Caller;

/// A memory-corrupting error the slab allocator found (each one ends the process).
#[derive(Clone, Copy)]
pub enum Finding {
    /// The bytes before the block at `p` (the end of the previous slot of its slab, record
    /// `prev`) were overwritten: found at its free, or (`collected`) when the owner of its
    /// slab collected it after another thread freed it.
    Underflow { p: usize, loc: Loc, prev: u32, who: Caller, collected: bool },
    /// As `Underflow`, for the first slot of a slab: the bytes before it end the slab before
    /// (its last slot at `last_start`, record `prev`; None: its unused tail).
    UnderflowFirstSlot { p: usize, loc: Loc, last_start: usize, prev: Option<u32>, who: Caller, collected: bool },
    /// Two releases of the block at `p` raced, and this one lost.
    ConcurrentDoubleFree { p: usize, loc: Loc, who: Caller },
    /// The owner, collecting remote frees, found the slot freed by two threads at once.
    RacingDoubleFree { p: usize, region: usize, slab: usize, slot: usize },
    /// A free slot at `p` is not zero from byte `first` on (found in `func`).
    WriteAfterFree { p: usize, first: usize, func: &'static str, when: Found },
}

/// The diagnosis's handler, which start-up installs.
static HANDLER: Hook<fn(Finding) -> !> = Hook::new();

/// Start-up: where findings go.
pub fn install(handler: fn(Finding) -> !) {
    HANDLER.install(handler);
}

/// Hand a finding to the diagnosis; never returns.
#[cold]
#[inline(never)]
pub fn found(f: Finding) -> ! {
    match HANDLER.get() {
        Some(h) => h(f),
        // No heap without start-up, so no finding before it: abort all the same.
        None => crate::platform::abort(),
    }
}

/// When a write-after-free check runs (for the report).
#[derive(Clone, Copy)]
pub enum Found {
    /// The slot is about to be handed out again.
    Handout,
    /// The block is leaving the quarantine.
    Leaving,
    /// At process exit, still quarantined or cached.
    Exit,
    /// At process exit, in a free slot (the exit sweep, `diagnose/sweep.rs`).
    ExitFree,
}
