//! Allocation and free stacks for every block (option `stacks=1`), printed in reports.
//!
//! Two fixed tables, mapped once when the option is on (pages become resident only as they
//! are used), so the cost stays bounded however long the program runs:
//! - a stack depot: each distinct stack is stored once and named by a 32-bit id; inserts are
//!   lock-free (an entry is claimed by compare-and-swap, written, then published);
//! - an address table: block address → (allocation stack id, free stack id). A block's
//!   record lives until its address is allocated again, so a use-after-free report shows
//!   where the block was allocated and where it was freed. When the probe window around an
//!   address is full an older record is evicted (that block's report then says the stack
//!   was not kept).
//!
//! Capturing a stack uses glibc's unwinder (no frame pointers needed): a few microseconds
//! per allocation and free. This is a debugging mode, off by default.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::platform;
use crate::report;

pub const FRAMES: usize = 16;
const DEPOT_BITS: u32 = 16;
const DEPOT_LEN: usize = 1 << DEPOT_BITS;
const RECORD_BITS: u32 = 20;
const RECORD_LEN: usize = 1 << RECORD_BITS;
const PROBES: usize = 8;
const BUSY: u64 = u64::MAX;

#[repr(C)]
struct DepotEntry {
    /// 0: empty; BUSY: being written; otherwise the stack's hash (published with Release).
    key: AtomicU64,
    len: usize,
    frames: [usize; FRAMES],
}

#[repr(C)]
struct Record {
    addr: AtomicUsize,
    alloc: AtomicU32,
    free: AtomicU32,
}

static DEPOT: AtomicUsize = AtomicUsize::new(0);
static RECORDS: AtomicUsize = AtomicUsize::new(0);
/// Recording starts once the unwinder is loaded (its first use allocates).
static READY: AtomicBool = AtomicBool::new(false);

/// Map the tables and warm up the unwinder. Called once after the heap is ready.
pub fn init() {
    let depot = platform::map_rw(DEPOT_LEN * core::mem::size_of::<DepotEntry>());
    let records = platform::map_rw(RECORD_LEN * core::mem::size_of::<Record>());
    if depot.is_null() || records.is_null() {
        report::warn(format_args!("stacks=1: cannot map the stack tables; stacks are not recorded"));
        return;
    }
    DEPOT.store(depot as usize, Ordering::Release);
    RECORDS.store(records as usize, Ordering::Release);
    let mut frames = [0usize; 4];
    platform::backtrace_into(&mut frames);
    READY.store(true, Ordering::Release);
}

fn depot(i: usize) -> &'static DepotEntry {
    // SAFETY: DEPOT is a live mapping of DEPOT_LEN zero-initialised entries (set before
    // READY) and i < DEPOT_LEN; every field is valid when zero.
    unsafe { &*(DEPOT.load(Ordering::Acquire) as *const DepotEntry).add(i & (DEPOT_LEN - 1)) }
}

fn record(i: usize) -> &'static Record {
    // SAFETY: as for `depot`, with RECORDS and RECORD_LEN.
    unsafe { &*(RECORDS.load(Ordering::Acquire) as *const Record).add(i & (RECORD_LEN - 1)) }
}

fn hash_frames(frames: &[usize]) -> u64 {
    let mut h = 0x51_7cc1_b727_220a_u64 ^ frames.len() as u64;
    for &f in frames {
        h = crate::rand::keyed_hash(f as u64, h, 0x9e37_79b9_7f4a_7c15);
    }
    h.clamp(1, BUSY - 1)
}

/// The id of the calling stack (0 if the depot's probe window for it is full).
fn capture() -> u32 {
    let mut frames = [0usize; FRAMES];
    let n = platform::backtrace_into(&mut frames);
    let frames = &frames[..n];
    let h = hash_frames(frames);
    for probe in 0..PROBES {
        let i = (h as usize).wrapping_add(probe) & (DEPOT_LEN - 1);
        let e = depot(i);
        let mut k = e.key.load(Ordering::Acquire);
        if k == 0 {
            match e.key.compare_exchange(0, BUSY, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => {
                    let w = e as *const DepotEntry as *mut DepotEntry;
                    // SAFETY: this thread claimed the empty entry (0 → BUSY); nobody reads
                    // its frames until the Release store of the key below.
                    unsafe {
                        (*w).len = n;
                        core::ptr::copy_nonoverlapping(frames.as_ptr(), core::ptr::addr_of_mut!((*w).frames).cast::<usize>(), n);
                    }
                    e.key.store(h, Ordering::Release);
                    return i as u32 + 1;
                }
                Err(now) => k = now,
            }
        }
        if k == h && e.len == n && e.frames[..n] == *frames {
            return i as u32 + 1;
        }
    }
    0
}

/// Where the probe window for address `p` starts in the address table.
fn home(p: usize) -> usize {
    crate::rand::keyed_hash(p as u64, 0x2545_f491_4f6c_dd1d, 0xff51_afd7_ed55_8ccd) as usize
}

/// The record for `p`, or a slot to (re)use for it.
fn slot_for(p: usize) -> &'static Record {
    let h = home(p);
    for probe in 0..PROBES {
        let r = record(h.wrapping_add(probe));
        let a = r.addr.load(Ordering::Relaxed);
        if a == p || (a == 0 && r.addr.compare_exchange(0, p, Ordering::Relaxed, Ordering::Relaxed).is_ok()) {
            return r;
        }
    }
    record(h.wrapping_add((p >> 4) % PROBES))
}

/// The record of `p`, if kept. Callers check READY first.
fn find(p: usize) -> Option<&'static Record> {
    let h = home(p);
    (0..PROBES).map(|probe| record(h.wrapping_add(probe))).find(|r| r.addr.load(Ordering::Acquire) == p)
}

/// A block at `p` (untagged) was allocated by the calling stack.
pub fn on_alloc(p: usize) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    let id = capture();
    let r = slot_for(p);
    r.alloc.store(id, Ordering::Relaxed);
    r.free.store(0, Ordering::Relaxed);
    r.addr.store(p, Ordering::Release);
}

/// The block at `p` (untagged) is being freed by the calling stack.
pub fn on_free(p: usize) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    let id = capture();
    if let Some(r) = find(p) {
        r.free.store(id, Ordering::Relaxed);
    }
}

fn print_id(o: &mut dyn Write, prefix: &str, what: &str, id: u32) {
    if id == 0 {
        return;
    }
    let e = depot(id as usize - 1);
    let k = e.key.load(Ordering::Acquire);
    if k != 0 && k != BUSY {
        print_stack(o, format_args!("{prefix}{what} at:"), &e.frames[..e.len.min(FRAMES)]);
    }
}

/// Print the recorded allocation (and free) stack of the block at `p`, if stacks are on.
/// `prefix` names the block when a report shows more than one ("" for the main block).
pub fn print(o: &mut dyn Write, p: usize, prefix: &str) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    let Some(r) = find(p) else {
        let _ = writeln!(o, "  (no stacks kept for the block at {p:#x}: the stack table was full there)");
        return;
    };
    print_id(o, prefix, "allocated", r.alloc.load(Ordering::Relaxed));
    print_id(o, prefix, "freed", r.free.load(Ordering::Relaxed));
}

/// Print a stack, without the allocator's own leading frames (mie's, in libmie.so or
/// linked into a Rust program, and Rust's allocation shims).
pub fn print_stack(o: &mut dyn Write, title: fmt::Arguments<'_>, frames: &[usize]) {
    if frames.is_empty() {
        return;
    }
    let skip = frames.iter().take_while(|&&pc| platform::symbols::is_allocator_frame(pc)).count();
    let frames = if skip == frames.len() { frames } else { &frames[skip..] };
    let _ = writeln!(o, "  {title}");
    for (n, &pc) in frames.iter().enumerate() {
        report::write_frame(o, n, pc);
    }
}
