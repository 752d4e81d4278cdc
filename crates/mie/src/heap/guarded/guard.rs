//! Guard mode (`guard=1`, `mie run --guard`): a debugging allocator on any CPU, as Apple's
//! Guard Malloc and Electric Fence. Every block gets pages of its own in the large-block
//! window, placed so that its end touches an unmapped page (`guard_below=1`: its start), so
//! a read or write past the end (before the start) faults at the access. A freed block's
//! pages are made inaccessible and stay so while 16384 later blocks are freed; its
//! addresses are never handed out again (the window only moves forward), so a use after free
//! faults at the access as well. Stacks are recorded for every block.
//!
//! Alignment: C's `malloc` promises 16-byte alignment, so by default the block's end is
//! rounded up to 16 bytes and the up to 15 bytes between its end and the guard page carry a
//! canary, checked at free (an overrun into them is found then, not at the access);
//! `guard_align=1` places the end exactly on the guard page (byte-precise, blocks then have
//! whatever alignment their size gives them, which code that stores 8- or 16-byte values in
//! odd-sized blocks does not expect). Every block costs a page of memory at least and a
//! mapping of its own (at most about 60 000 live and recently freed blocks under the
//! default `vm.max_map_count`; past that, blocks come from the ordinary heap, said once).

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::heap::large::LARGE;
use crate::heap::{checks::canary, checks::stacks, Caller, Globals};
use crate::platform::{self, lock::Lock};
use crate::report::{self, Kind};

const LIVE: u8 = 1;
const FREED: u8 = 2;
const TOMB: u8 = 3;

#[derive(Clone, Copy)]
pub struct Entry {
    /// The block as the program sees it.
    pub p: usize,
    pub size: usize,
    /// Its pages: mapped read-write while live, inaccessible once freed.
    body: usize,
    body_len: usize,
    /// Bytes between the block's end and its alignment (they carry a canary).
    slack: u32,
    pub kind: u8,
    state: u8,
}

impl Entry {
    pub fn is_live(&self) -> bool {
        self.state == LIVE
    }
}

const CAP: usize = 1 << 18;
const RING: usize = 16384;

struct Tables {
    entries: *mut Entry,
    ring: [usize; RING],
    head: usize,
    len: usize,
    used: usize,
}

struct Shared(core::cell::UnsafeCell<Tables>);
// SAFETY: only touched with LOCK held (the fault handler reads racily, for a report).
unsafe impl Sync for Shared {}
#[unsafe(link_section = ".bss.mie_big")]
static T: Shared = Shared(core::cell::UnsafeCell::new(Tables { entries: core::ptr::null_mut(), ring: [0; RING], head: 0, len: 0, used: 0 }));
pub static LOCK: &Lock = &crate::heap::slab::locks::LOCKS.guard.0;
static ENTRIES: AtomicPtr<Entry> = AtomicPtr::new(core::ptr::null_mut());
static FULL_SAID: AtomicBool = AtomicBool::new(false);
/// Blocks allocated so far, and those live (statistics).
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static LIVE_NOW: AtomicUsize = AtomicUsize::new(0);

/// (blocks allocated, blocks live) in guard mode.
pub fn counts() -> (usize, usize) {
    (ALLOCS.load(Ordering::Relaxed), LIVE_NOW.load(Ordering::Relaxed))
}

#[allow(clippy::mut_from_ref)]
fn tables() -> &'static mut Tables {
    // SAFETY: callers hold LOCK.
    unsafe { &mut *T.0.get() }
}

fn slot_of(p: usize) -> usize {
    (crate::rand::mix64((p >> 4) as u64) as usize) & (CAP - 1)
}

/// The entry of block `p` (live or freed), under the lock.
fn find(t: &Tables, p: usize) -> Option<*mut Entry> {
    if t.entries.is_null() {
        return None;
    }
    let mut i = slot_of(p);
    for _ in 0..CAP {
        // SAFETY: i < CAP, inside the table mapping.
        let e = unsafe { t.entries.add(i) };
        // SAFETY: as above.
        let s = unsafe { (*e).state };
        if s == 0 {
            return None;
        }
        // SAFETY: as above.
        if s != TOMB && unsafe { (*e).p } == p {
            return Some(e);
        }
        i = (i + 1) & (CAP - 1);
    }
    None
}

fn insert(t: &mut Tables, e: Entry) -> bool {
    if t.entries.is_null() {
        let m = platform::map_rw(CAP * core::mem::size_of::<Entry>());
        if m.is_null() {
            return false;
        }
        t.entries = m.cast();
        ENTRIES.store(t.entries, Ordering::Release);
    }
    if t.used >= CAP * 3 / 4 && !rebuild(t) {
        return false;
    }
    let mut i = slot_of(e.p);
    loop {
        // SAFETY: i < CAP, inside the table mapping.
        let s = unsafe { &mut *t.entries.add(i) };
        if s.state == 0 || s.state == TOMB {
            if s.state == 0 {
                t.used += 1;
            }
            *s = e;
            return true;
        }
        i = (i + 1) & (CAP - 1);
    }
}

/// The table again without its tombstones (a new mapping; the old one is given back).
/// False if nothing would be gained (the live and freed blocks fill it).
fn rebuild(t: &mut Tables) -> bool {
    let old = t.entries;
    let keep = (0..CAP).filter(|&i| {
        // SAFETY: i < CAP, inside the old table, under the lock.
        let s = unsafe { (*old.add(i)).state };
        s == LIVE || s == FREED
    });
    if keep.count() >= CAP / 2 {
        return false;
    }
    let m = platform::map_rw(CAP * core::mem::size_of::<Entry>());
    if m.is_null() {
        return false;
    }
    t.entries = m.cast();
    t.used = 0;
    for i in 0..CAP {
        // SAFETY: as above.
        let e = unsafe { *old.add(i) };
        if e.state == LIVE || e.state == FREED {
            let mut j = slot_of(e.p);
            // SAFETY: j < CAP, inside the new table.
            while unsafe { (*t.entries.add(j)).state } != 0 {
                j = (j + 1) & (CAP - 1);
            }
            // SAFETY: as above.
            unsafe { *t.entries.add(j) = e };
            t.used += 1;
        }
    }
    ENTRIES.store(t.entries, Ordering::Release);
    // (A fault report reading the old table at this moment only reads stale entries: the
    // mapping is given back after the new one is published, and reports take the lock.)
    platform::release(old.cast(), CAP * core::mem::size_of::<Entry>());
    true
}

/// A guarded block of `size` bytes aligned to `align`, or null (out of memory, or of
/// mappings: the caller then takes the ordinary heap).
pub fn alloc(g: &Globals, size: usize, align: usize, kind: u8) -> *mut u8 {
    let page = platform::page_size();
    // (malloc asks for 16; only a larger alignment asked for explicitly is kept with guard_align.)
    let align = if g.opts.guard_align && align <= 16 { 1 } else { align.max(16) };
    let Some(padded) = size.checked_add(align - 1).map(|n| n & !(align - 1)) else { return core::ptr::null_mut() };
    let Some(body_len) = padded.max(1).checked_add(page - 1).map(|n| n & !(page - 1)) else { return core::ptr::null_mut() };
    if align > page {
        return core::ptr::null_mut(); // over-aligned: the ordinary heap
    }
    // The window's lock before (never inside) this one: fork takes them in that order.
    let body = LARGE.map_guarded(body_len);
    if body == 0 {
        if !FULL_SAID.swap(true, Ordering::Relaxed) {
            report::warn(format_args!("guard mode: no more mappings or address space (vm.max_map_count?): later blocks come from the ordinary heap, unguarded"));
        }
        return core::ptr::null_mut();
    }
    let p = if g.opts.guard_below { body } else { body + body_len - padded };
    let _g = LOCK.guard();
    if !insert(tables(), Entry { p, size, body, body_len, slack: (padded - size) as u32, kind, state: LIVE }) {
        platform::release(body as *mut u8, body_len);
        if !FULL_SAID.swap(true, Ordering::Relaxed) {
            report::warn(format_args!("guard mode: the block table is full: later blocks come from the ordinary heap, unguarded"));
        }
        return core::ptr::null_mut();
    }
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    LIVE_NOW.fetch_add(1, Ordering::Relaxed);
    if g.opts.canary && padded > size {
        // SAFETY: [p + size, p + padded) lies in the block's mapped pages.
        unsafe { canary::write(canary::pattern(&g.canary, p), (p + size) as *mut u8, padded - size) };
    }
    p as *mut u8
}

/// The live or freed guarded block `p` (for a release or a query), without the lock.
pub fn lookup(p: usize) -> Option<Entry> {
    if ENTRIES.load(Ordering::Acquire).is_null() {
        return None;
    }
    let _g = LOCK.guard();
    // SAFETY: find returns a pointer into the table, read under the lock.
    find(tables(), p).map(|e| unsafe { *e })
}

/// Release guarded block `p` (found live by the caller's `lookup`): its canary checked, its
/// pages made inaccessible, the oldest freed block's pages given back when 16384 wait.
pub fn free(g: &Globals, e: Entry, who: Caller) {
    let slack = e.slack as usize;
    if g.opts.canary && slack > 0 {
        // SAFETY: the slack lies in the block's mapped pages.
        if let Some(off) = unsafe { canary::check(canary::pattern(&g.canary, e.p), (e.p + e.size) as *const u8, slack) } {
            report::fatal(Kind::HeapBufferOverflow, e.p, who.func, |o| {
                let _ = writeln!(o, "  the canary in the alignment padding after the block was overwritten: byte {off} past the end of the {}-byte block", e.size);
                let _ = writeln!(o, "  guard mode: a block's size is rounded up to its alignment (16 bytes for malloc), and only the rounded end is guarded by the page; guard_align=1 guards every byte");
                stacks::print(o, e.p, "");
                report::write_code_addr(o, "detected in a call from", who.ret_addr);
            });
        }
    }
    if g.opts.stacks {
        stacks::on_free(e.p);
    }
    let _g = LOCK.guard();
    let t = tables();
    let Some(slot) = find(t, e.p) else { return };
    // SAFETY: slot points into the table, written under the lock.
    unsafe { (*slot).state = FREED };
    LIVE_NOW.fetch_sub(1, Ordering::Relaxed);
    platform::decommit(e.body as *mut u8, e.body_len);
    if t.len == RING {
        let old = t.ring[t.head];
        if let Some(o) = find(t, old) {
            // SAFETY: as above.
            let oe = unsafe { *o };
            platform::release(oe.body as *mut u8, oe.body_len);
            // SAFETY: as above.
            unsafe { (*o).state = TOMB };
        }
        t.ring[t.head] = e.p;
        t.head = (t.head + 1) % RING;
    } else {
        t.ring[(t.head + t.len) % RING] = e.p;
        t.len += 1;
    }
}

/// A second release of guarded block `e`, or a release of an address inside one.
pub fn bad_release(e: Entry, p: usize, who: Caller) -> ! {
    if p == e.p {
        report::fatal(Kind::DoubleFree, p, who.func, |o| {
            let _ = writeln!(o, "  the {}-byte guarded block was already freed", e.size);
            stacks::print(o, e.p, "");
            report::write_code_addr(o, "called from", who.ret_addr);
        })
    }
    report::fatal(Kind::InvalidFree, p, who.func, |o| {
        let _ = writeln!(o, "  pointer is {} bytes inside the {}-byte guarded block at {:#x}, not at its start", p.wrapping_sub(e.p), e.size, e.p);
        stacks::print(o, e.p, "");
        report::write_code_addr(o, "called from", who.ret_addr);
    })
}

/// A guarded block whose pages (or the guard page on either side) hold `addr`. For the
/// fault handler and interior pointers: a scan, without waiting on the lock.
pub fn containing(addr: usize) -> Option<Entry> {
    let entries = ENTRIES.load(Ordering::Acquire);
    if entries.is_null() || !LOCK.try_lock() {
        return None;
    }
    let page = platform::page_size();
    let mut best: Option<Entry> = None;
    for i in 0..CAP {
        // SAFETY: i < CAP, inside the table mapping, read under the lock.
        let e = unsafe { *entries.add(i) };
        if (e.state == LIVE || e.state == FREED) && addr.wrapping_sub(e.body.wrapping_sub(page)) < e.body_len + 2 * page {
            // In a block's own pages wins over a neighbour's guard page.
            let inside = addr.wrapping_sub(e.body) < e.body_len;
            if best.is_none() || inside {
                best = Some(e);
                if inside {
                    break;
                }
            }
        }
    }
    LOCK.unlock();
    best
}

/// Write a fault report for `addr` in or beside guarded block `e`; returns its kind.
pub fn write_fault(o: &mut dyn Write, e: Entry, addr: usize, pc: usize, exec: bool) -> Kind {
    let (kind, what) = if exec {
        (Kind::HeapExecute, "the program jumped into a guarded block")
    } else if e.state == FREED {
        (Kind::UseAfterFree, "the access hit a freed guarded block")
    } else if addr >= e.p + e.size {
        (Kind::HeapBufferOverflow, "the access hit the guard page after a block")
    } else if addr < e.p {
        (Kind::HeapBufferUnderflow, "the access hit the memory before a guarded block")
    } else {
        (Kind::AccessFault, "an access the block's pages do not allow")
    };
    report::fault_headline(o, kind, addr, what);
    match kind {
        Kind::HeapBufferOverflow => {
            let _ = writeln!(o, "  {} bytes past the end of the {}-byte block at {:#x}: stopped at the access (guard mode)", addr - (e.p + e.size), e.size, e.p);
        }
        Kind::HeapBufferUnderflow => {
            let _ = writeln!(o, "  {} bytes before the {}-byte block at {:#x}: stopped at the access (guard mode)", e.p - addr, e.size, e.p);
        }
        Kind::UseAfterFree => {
            let _ = writeln!(o, "  byte {} of the freed {}-byte block at {:#x}: stopped at the access (guard mode)", addr.wrapping_sub(e.p) as isize, e.size, e.p);
        }
        _ => {
            let _ = writeln!(o, "  byte {} of the {}-byte block at {:#x}", addr.wrapping_sub(e.p) as isize, e.size, e.p);
        }
    }
    stacks::print(o, e.p, "");
    report::write_code_addr(o, "faulting instruction", pc);
    kind
}

/// After fork, in the child: the lock may have been held by a thread that is gone.
pub fn after_fork_child() {
    LOCK.reset();
}
