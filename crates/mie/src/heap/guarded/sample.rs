//! Guarded sampling (every architecture): one small allocation in `sample_rate` is placed at
//! the end of its own page, with an inaccessible guard page after it. A linear overflow past
//! the block faults at the access; when the block is freed its page is dropped and made
//! inaccessible, so a use after free faults too. Allocation and free stacks are recorded, and
//! the SIGSEGV handler reports the exact block, the offset and both stacks.
//!
//! Slots are reused oldest-first, and only by the same bucket: an address never serves two
//! type buckets, so sampling keeps the type-isolation guarantee.

use core::cell::UnsafeCell;
use core::fmt::Write;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::platform::{self, lock::Lock, PAGE};
use crate::report::{self, Kind};

pub const SLOTS: usize = 64;
/// The largest block that is sampled.
pub const MAX_SIZE: usize = PAGE - 16;
use crate::heap::checks::stacks::FRAMES;
/// Each slot is one page for the block and one inaccessible guard page after it.
fn area() -> usize {
    2 * SLOTS * platform::page_size()
}

/// The area's length, published with BASE (0 until then).
static AREA_LEN: AtomicUsize = AtomicUsize::new(0);

const NEVER: u8 = 0;
const LIVE: u8 = 1;
const FREED: u8 = 2;

#[derive(Clone, Copy)]
pub struct Slot {
    state: u8,
    /// Taken by an allocation that is recording its stack (outside the lock); its state
    /// still says what the slot held before.
    reserved: bool,
    bucket: u8,
    /// How the block was allocated (`heap::kind`).
    kind: u8,
    addr: usize,
    size: usize,
    /// Sequence number of the last free, for oldest-first reuse.
    freed_at: u64,
    alloc_stack: [usize; FRAMES],
    alloc_frames: usize,
    free_stack: [usize; FRAMES],
    free_frames: usize,
}

const EMPTY: Slot = Slot {
    state: NEVER,
    reserved: false,
    bucket: 0,
    kind: 0,
    addr: 0,
    size: 0,
    freed_at: 0,
    alloc_stack: [0; FRAMES],
    alloc_frames: 0,
    free_stack: [0; FRAMES],
    free_frames: 0,
};

struct Table {
    slots: [Slot; SLOTS],
    seq: u64,
    allocs: u64,
    live: u64,
    live_bytes: u64,
}

struct Shared(UnsafeCell<Table>);
// SAFETY: the table is only written with LOCK held; the fault handler reads it racily,
// which at worst prints a stale stack in a report that ends the process.
unsafe impl Sync for Shared {}

#[unsafe(link_section = ".bss.mie_big")]
static TABLE: Shared = Shared(UnsafeCell::new(Table { slots: [EMPTY; SLOTS], seq: 0, allocs: 0, live: 0, live_bytes: 0 }));
pub static LOCK: &Lock = &crate::heap::slab::locks::LOCKS.sample.0;
static BASE: AtomicUsize = AtomicUsize::new(0);
/// The sample area is set up at the first sample, not at start-up (a short-lived process
/// never pays for it): reserving the area and the unwinder's first use, which loads its
/// tables and allocates.
static STATE: AtomicU8 = AtomicU8::new(UNSET);
const UNSET: u8 = 0;
const SETTING_UP: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

/// In a fork child: a set-up another thread had begun will never finish there; begin again.
pub fn after_fork_child() {
    // Read first: even a compare-and-swap that fails writes, and a write copies the page.
    if STATE.load(Ordering::Relaxed) == SETTING_UP {
        let _ = STATE.compare_exchange(SETTING_UP, UNSET, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Whether sampling can go on (the area is ready, or not set up yet).
#[inline]
pub fn ready() -> bool {
    STATE.load(Ordering::Relaxed) != FAILED
}

/// Set up the area on first use; false while another thread does it, or if it failed.
/// Runs outside any allocator lock or borrowed thread cache: the unwinder's first use
/// allocates, and those allocations are served normally (this thread is placing a sample,
/// so none of them is sampled).
#[cold]
fn set_up() -> bool {
    if STATE.compare_exchange(UNSET, SETTING_UP, Ordering::Acquire, Ordering::Acquire).is_err() {
        return STATE.load(Ordering::Acquire) == READY;
    }
    let base = crate::heap::large::LARGE.reserve_area(area());
    if base.is_null() {
        STATE.store(FAILED, Ordering::Release);
        return false;
    }
    let mut frames = [0usize; 4];
    platform::backtrace_into(&mut frames);
    AREA_LEN.store(area(), Ordering::Relaxed);
    BASE.store(base as usize, Ordering::Release);
    STATE.store(READY, Ordering::Release);
    true
}

/// Is `p` inside the sample area? One compare.
#[inline]
pub fn owns(p: usize) -> bool {
    let base = BASE.load(Ordering::Relaxed);
    base != 0 && p.wrapping_sub(base) < AREA_LEN.load(Ordering::Relaxed)
}

fn slot_page(base: usize, i: usize) -> usize {
    base + 2 * i * platform::page_size()
}

/// The slot whose page (or guard page after it) holds `p`, an address in the area.
fn slot_index(base: usize, p: usize) -> usize {
    (p - base) / (2 * platform::page_size())
}

/// Place a block of `size` (≤ PAGE - 16) bytes in a guarded slot; null when every slot of
/// this bucket is busy (the caller then allocates normally).
pub fn alloc(size: usize, bucket: usize, canary: &crate::prf::Prf, kind: u8) -> *mut u8 {
    if size > MAX_SIZE || (STATE.load(Ordering::Acquire) != READY && !set_up()) {
        return core::ptr::null_mut();
    }
    let base = BASE.load(Ordering::Acquire);
    // A slot first (a never-used one, else this bucket's oldest freed one), so an
    // allocation that finds every slot busy costs no stack walk.
    let i = {
        let _g = LOCK.guard();
        // SAFETY: LOCK is held.
        let t = unsafe { &mut *TABLE.0.get() };
        let mut pick = None;
        for (i, s) in t.slots.iter().enumerate() {
            if s.reserved {
                continue;
            }
            match s.state {
                NEVER => {
                    pick = Some(i);
                    break;
                }
                FREED if s.bucket as usize == bucket && pick.is_none_or(|j: usize| t.slots[j].freed_at > s.freed_at) => {
                    pick = Some(i);
                }
                _ => {}
            }
        }
        let Some(i) = pick else { return core::ptr::null_mut() };
        t.slots[i].reserved = true;
        i
    };
    let mut stack = [0usize; FRAMES];
    let frames = platform::backtrace_into(&mut stack);
    let page = slot_page(base, i);
    let pg = platform::page_size();
    if !platform::commit(page as *mut u8, pg) {
        let _g = LOCK.guard();
        // SAFETY: LOCK is held.
        unsafe { (*TABLE.0.get()).slots[i].reserved = false };
        return core::ptr::null_mut();
    }
    // Right-aligned against the guard page, keeping 16-byte alignment; the few bytes of
    // padding after the block hold a canary checked at free.
    let p = page + pg - ((size + 15) & !15).max(16);
    let pad = page + pg - (p + size);
    // SAFETY: [p+size, page+pg) is inside the page just committed.
    unsafe { crate::heap::checks::canary::write(crate::heap::checks::canary::pattern(canary, p), (p + size) as *mut u8, pad) };
    let _g = LOCK.guard();
    // SAFETY: LOCK is held.
    let t = unsafe { &mut *TABLE.0.get() };
    t.allocs += 1;
    t.live += 1;
    t.live_bytes += size as u64;
    t.slots[i] = Slot {
        state: LIVE,
        reserved: false,
        bucket: bucket as u8,
        kind,
        addr: p,
        size,
        freed_at: 0,
        alloc_stack: stack,
        alloc_frames: frames,
        free_stack: [0; FRAMES],
        free_frames: 0,
    };
    p as *mut u8
}

/// The bucket a slot of the sample area serves (None outside the area or before first use).
pub fn bucket_of(p: usize) -> Option<usize> {
    if !owns(p) {
        return None;
    }
    let i = slot_index(BASE.load(Ordering::Acquire), p);
    // SAFETY: a racy read of one slot's fields; a slot's bucket never changes once set.
    let s = unsafe { &(*TABLE.0.get()).slots[i] };
    (s.state != NEVER).then_some(s.bucket as usize)
}

/// The sampled block whose slot holds `p` (inside the area): (start, size, live). None if
/// the slot never held a block.
pub fn bounds(p: usize) -> Option<(usize, usize, bool)> {
    let i = slot_index(BASE.load(Ordering::Acquire), p);
    let _g = LOCK.guard();
    // SAFETY: LOCK is held.
    let s = unsafe { &(*TABLE.0.get()).slots[i] };
    (s.state != NEVER).then_some((s.addr, s.size, s.state == LIVE))
}

/// The live sampled block at exactly `p`: its size, bucket and allocation kind. Reports and
/// aborts otherwise (`releasing`: a freed block is then a double free rather than an
/// invalid query).
pub fn validate(p: usize, func: &str, ret_addr: usize, releasing: bool) -> (usize, usize, u8) {
    let i = slot_index(BASE.load(Ordering::Acquire), p);
    let _g = LOCK.guard();
    // SAFETY: LOCK is held.
    let s = unsafe { (*TABLE.0.get()).slots[i] };
    if s.state == LIVE && s.addr == p {
        return (s.size, s.bucket as usize, s.kind);
    }
    let kind = if releasing && s.state == FREED && s.addr == p { Kind::DoubleFree } else { Kind::InvalidFree };
    report::fatal(kind, p, func, |o| {
        if s.state == FREED && s.addr == p {
            let _ = writeln!(o, "  the guarded (sampled) block of {} bytes was already freed", s.size);
        } else {
            let _ = writeln!(o, "  not the start of a live block in mie's guarded sample area");
        }
        report::write_code_addr(o, "called from", ret_addr);
        print_stacks(o, &s);
    })
}

/// Free a validated sampled block: check its canary, drop the page, keep it inaccessible.
pub fn free(p: usize, canary: &crate::prf::Prf, func: &str, ret_addr: usize) {
    let size = validate(p, func, ret_addr, true).0;
    let base = BASE.load(Ordering::Acquire);
    let i = slot_index(base, p);
    let page = slot_page(base, i);
    let pg = platform::page_size();
    let pad = page + pg - (p + size);
    // SAFETY: the page is committed while the block is live.
    if let Some(off) = unsafe { crate::heap::checks::canary::check(crate::heap::checks::canary::pattern(canary, p), (p + size) as *const u8, pad) } {
        report::fatal(Kind::HeapBufferOverflow, p, func, |o| {
            let _ = writeln!(o, "  the canary after the guarded {size}-byte block was overwritten: byte {off} past its end");
            report::write_code_addr(o, "detected in a call from", ret_addr);
            // SAFETY: a racy read of the slot for the report only.
            print_stacks(o, unsafe { &(*TABLE.0.get()).slots[i] });
        });
    }
    let mut stack = [0usize; FRAMES];
    let frames = platform::backtrace_into(&mut stack);
    let _g = LOCK.guard();
    platform::decommit(page as *mut u8, pg);
    // SAFETY: LOCK is held.
    let t = unsafe { &mut *TABLE.0.get() };
    t.seq += 1;
    t.live -= 1;
    t.live_bytes -= size as u64;
    let s = &mut t.slots[i];
    s.state = FREED;
    s.freed_at = t.seq;
    s.free_stack = stack;
    s.free_frames = frames;
}

/// (allocations so far, live blocks, live bytes) for statistics.
pub fn counts() -> (u64, u64, u64) {
    let _g = LOCK.guard();
    // SAFETY: LOCK is held.
    let t = unsafe { &*TABLE.0.get() };
    (t.allocs, t.live, t.live_bytes)
}

fn print_stacks(o: &mut dyn Write, s: &Slot) {
    crate::heap::checks::stacks::print_stack(o, format_args!("allocated at:"), &s.alloc_stack[..s.alloc_frames]);
    crate::heap::checks::stacks::print_stack(o, format_args!("freed at:"), &s.free_stack[..s.free_frames]);
}

/// What the SIGSEGV handler needs about a fault at `addr`: the slot it hit (a copy, read
/// without the lock: the handler must not wait, and a stale stack only makes a report less
/// complete) and whether the address is on the slot's guard page. None outside the area.
pub(crate) fn fault_view(addr: usize) -> Option<(Slot, bool)> {
    if !owns(addr) {
        return None;
    }
    let page_index = (addr - BASE.load(Ordering::Acquire)) / platform::page_size();
    // SAFETY: a racy read of one slot (plain data) for a report.
    let s = unsafe { (*TABLE.0.get()).slots[(page_index / 2).min(SLOTS - 1)] };
    Some((s, page_index % 2 == 1))
}

impl Slot {
    pub(crate) fn start(&self) -> usize {
        self.addr
    }
    pub(crate) fn size(&self) -> usize {
        self.size
    }
    pub(crate) fn is_live(&self) -> bool {
        self.state == LIVE
    }
    pub(crate) fn is_freed(&self) -> bool {
        self.state == FREED
    }
    pub(crate) fn print_stacks(&self, o: &mut dyn Write) {
        print_stacks(o, self);
    }
}
