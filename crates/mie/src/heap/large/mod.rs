//! Large allocations (above the largest size class). Each block has its own range from the
//! large-block window (`window.rs`), between unmapped guard pages; its metadata (start,
//! range, requested size, state, the mappings its body is made of) sits in an out-of-line
//! open-addressing table in its own mapping.
//!
//! A freed large block's range is unmapped at once (its pages go back to the OS, or into
//! the warm pool, `warm.rs`) and kept in a bounded FIFO address quarantine: a use after free
//! of a large block faults deterministically and is reported as one, and a double free is
//! recognised as one. Its addresses are not handed out again.

mod index;
mod warm;
mod window;

use core::cell::UnsafeCell;

pub use index::{live_block_containing, maybe_live, GENERATION};
use warm::{Piece, Warm, MAX_PIECES};

use crate::platform::{self, lock::Lock};

const EMPTY: usize = 0;
const LIVE: usize = 1;
const FREED: usize = 2;
const TOMBSTONE: usize = 3;

/// Guard pages before and after each block.
const GUARD_PAGES: usize = 1;

/// What the rest of the allocator learns about a large block.
#[derive(Clone, Copy)]
pub struct Info {
    pub addr: usize,
    /// The block's range with its guard pages (for fault reports).
    pub map: usize,
    pub map_len: usize,
    /// Bytes read-write from `addr` (page multiple).
    pub body_len: usize,
    pub req: usize,
    pub state: usize,
    /// How the block was allocated (`heap::kind`).
    pub kind: u8,
}

/// A table entry: the block and the mappings its body is made of (warm pieces, then fresh
/// memory), each moved out separately when it is freed.
#[derive(Clone, Copy)]
struct Entry {
    info: Info,
    npieces: u8,
    pieces: [Piece; MAX_PIECES],
}

impl Info {
    const NONE: Info = Info { addr: 0, map: 0, map_len: 0, body_len: 0, req: 0, state: EMPTY, kind: 0 };

    pub fn is_live(&self) -> bool {
        self.state == LIVE
    }

    pub fn is_freed(&self) -> bool {
        self.state == FREED
    }
}

struct Table {
    slots: *mut Entry,
    cap: usize,
    used: usize,
    ring: [usize; crate::options::MAX_LARGE_QUARANTINE as usize],
    head: usize,
    len: usize,
    ring_bytes: usize,
    live_count: usize,
    /// Blocks allocated so far (statistics).
    allocs: usize,
    live_bytes: usize,
    /// Bytes mapped read-write for live blocks (statistics).
    mapped: usize,
    window: window::Window,
    warm: Warm,
}

pub struct Large {
    /// `slab::locks::LOCKS.large`.
    pub lock: &'static Lock,
    t: UnsafeCell<Table>,
}

// SAFETY: the table is only touched with `lock` held.
unsafe impl Sync for Large {}

pub static LARGE: Large = Large {
    lock: &crate::heap::slab::locks::LOCKS.large.0,
    t: UnsafeCell::new(Table {
        slots: core::ptr::null_mut(),
        cap: 0,
        used: 0,
        ring: [0; crate::options::MAX_LARGE_QUARANTINE as usize],
        head: 0,
        len: 0,
        ring_bytes: 0,
        live_count: 0,
        allocs: 0,
        live_bytes: 0,
        mapped: 0,
        window: window::Window::new(),
        warm: Warm::new(),
    }),
};

#[inline]
fn hash(addr: usize) -> usize {
    crate::rand::mix64((addr >> 12) as u64) as usize
}

pub struct Stats {
    pub allocs: usize,
    pub live_count: usize,
    pub live_bytes: usize,
    pub mapped: usize,
    pub quarantined: usize,
    pub warm: usize,
}

impl Table {
    fn find(&self, addr: usize) -> Option<*mut Entry> {
        if self.cap == 0 {
            return None;
        }
        let mask = self.cap - 1;
        let mut i = hash(addr) & mask;
        for _ in 0..self.cap {
            // SAFETY: i < cap, inside the committed table.
            let e = unsafe { self.slots.add(i) };
            // SAFETY: e points at an initialised entry.
            match unsafe { (*e).info.state } {
                EMPTY => return None,
                LIVE | FREED if unsafe { (*e).info.addr } == addr => return Some(e),
                _ => {}
            }
            i = (i + 1) & mask;
        }
        None
    }

    fn insert(&mut self, entry: Entry) -> bool {
        if (self.used + 1) * 2 > self.cap && !self.grow() {
            return false;
        }
        let mask = self.cap - 1;
        let mut i = hash(entry.info.addr) & mask;
        loop {
            // SAFETY: i < cap.
            let e = unsafe { &mut *self.slots.add(i) };
            if e.info.state == EMPTY || e.info.state == TOMBSTONE {
                if e.info.state == EMPTY {
                    self.used += 1;
                }
                *e = entry;
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) -> bool {
        let new_cap = if self.cap == 0 { 1024 } else { self.cap * 2 };
        let bytes = new_cap * core::mem::size_of::<Entry>();
        let new = platform::map_rw(bytes) as *mut Entry;
        if new.is_null() {
            return false;
        }
        let (old, old_cap) = (self.slots, self.cap);
        self.slots = new;
        self.cap = new_cap;
        self.used = 0;
        for i in 0..old_cap {
            // SAFETY: i < old_cap, inside the old table which is still mapped.
            let e = unsafe { *old.add(i) };
            if e.info.state == LIVE || e.info.state == FREED {
                self.insert(e);
            }
        }
        if !old.is_null() {
            platform::release(old.cast(), old_cap * core::mem::size_of::<Entry>());
        }
        true
    }

    /// The oldest quarantined block's quarantine ends (its range is unmapped already: only
    /// its record goes).
    fn evict_oldest(&mut self) {
        let n = self.ring.len();
        let addr = self.ring[self.head];
        self.head = (self.head + 1) % n;
        self.len -= 1;
        if let Some(e) = self.find(addr) {
            // SAFETY: e is a valid entry pointer from find.
            let e = unsafe { &mut *e };
            self.ring_bytes -= e.info.map_len;
            e.info.state = TOMBSTONE;
        }
    }
}

impl Large {
    #[allow(clippy::mut_from_ref)]
    fn table(&self) -> &mut Table {
        // SAFETY: callers hold self.lock.
        unsafe { &mut *self.t.get() }
    }

    /// Map a block of `size` bytes aligned to `align`, with at least `min_slack` bytes after it
    /// in the same pages (for the canary). Returns the block, the bytes mapped read-write
    /// from it (a page multiple) and whether they read as zero (always); null on exhaustion.
    pub fn alloc(&self, size: usize, align: usize, min_slack: usize, kind: u8) -> (*mut u8, usize, bool) {
        let null = (core::ptr::null_mut(), 0, false);
        // At least one page, so even a zero-byte block owns a unique, mapped address.
        let page = platform::page_size();
        let Some(body) = size.checked_add(min_slack).and_then(|n| n.max(1).checked_add(page - 1)).map(|n| n & !(page - 1)) else {
            return null;
        };
        let guard = GUARD_PAGES * page;
        let Some(total) = body.checked_add(2 * guard) else { return null };
        if total > isize::MAX as usize / 2 {
            return null;
        }
        let align = align.max(page);
        let (warm_bytes, addr) = {
            let _g = self.lock.guard();
            let t = self.table();
            let Some(addr) = Self::place(t, body, align) else { return null };
            let mut pieces = [Piece::default(); MAX_PIECES];
            let limit = if crate::heap::slab::tcache::threads() > 1 { warm::THREADED_PIECES } else { MAX_PIECES };
            let (mut n, warm) = t.warm.take(addr, body, &mut pieces, limit);
            if warm < body {
                // Out of memory or address space: the warm pages and the quarantine go first.
                let fresh = |a: usize, l: usize| platform::map_at(a as *mut u8, l, 0);
                if !(fresh(addr + warm, body - warm) || Self::relieve_locked(t) && fresh(addr + warm, body - warm)) {
                    platform::release(addr as *mut u8, body);
                    return null;
                }
                pieces[n] = Piece { off: warm, len: body - warm };
                n += 1;
            }
            let info = Info { addr, map: addr - guard, map_len: total, body_len: body, req: size, state: LIVE, kind };
            let e = Entry { info, npieces: n as u8, pieces };
            if !t.insert(e) {
                platform::release(addr as *mut u8, body);
                return null;
            }
            t.live_count += 1;
            t.allocs += 1;
            t.live_bytes += size;
            t.mapped += body;
            t.warm.note_live(t.live_bytes, false);
            index::insert(addr, addr + size);
            (warm, addr)
        };
        // Pages moved in from freed blocks still hold their bytes: clear them (outside the
        // lock; nobody has the block yet). Cheaper than giving them back to the kernel and
        // faulting fresh ones in, which is what warm reuse saves; pages the last owner never
        // touched are left untouched (`clear_pages`), not faulted in to be cleared.
        if warm_bytes != 0 {
            platform::clear_pages(addr, warm_bytes);
        }
        (addr as *mut u8, body, true)
    }

    /// A free range of `body` bytes (aligned to `align`) for a new block: from the window,
    /// checked free with a placeholder once the window has wrapped round (the placeholder is
    /// replaced by the block's mappings). Out of memory or address space: the quarantine
    /// and the warm pages go first, then once more.
    fn place(t: &mut Table, body: usize, align: usize) -> Option<usize> {
        for attempt in 0..8 {
            let addr = t.window.take(body, 0, align)?;
            if !t.window.wrapped {
                return Some(addr);
            }
            if platform::map_at_none(addr as *mut u8, body) {
                // The block's own mappings replace this placeholder.
                platform::release(addr as *mut u8, body);
                return Some(addr);
            }
            if attempt == 4 && !Self::relieve_locked(t) {
                return None;
            }
        }
        None
    }

    /// An inaccessible reservation of `len` bytes in the large-block window (for the guarded
    /// sample area and the zero-size area, so that every address mie hands out lies in one
    /// span and a range check of a foreign pointer is one compare). Null if none could be made.
    pub fn reserve_area(&self, len: usize) -> *mut u8 {
        let _g = self.lock.guard();
        let t = self.table();
        for _ in 0..4 {
            let Some(addr) = t.window.take(len, 0, platform::page_size()) else { break };
            if platform::map_at_none(addr as *mut u8, len) {
                return addr as *mut u8;
            }
        }
        core::ptr::null_mut()
    }

    /// `len` bytes mapped read-write in the large-block window, with an unmapped page before
    /// and after (guard mode's blocks); 0 if none could be had.
    pub fn map_guarded(&self, len: usize) -> usize {
        let _g = self.lock.guard();
        let t = self.table();
        for _ in 0..4 {
            let Some(addr) = t.window.take(len, 0, platform::page_size()) else { break };
            if platform::map_at(addr as *mut u8, len, 0) {
                return addr;
            }
        }
        0
    }

    /// The block at `p`, if `p` is the start of a live or quarantined large block.
    pub fn lookup(&self, p: usize) -> Option<Info> {
        let _g = self.lock.guard();
        // SAFETY: find returns a valid pointer into the table, read under the lock.
        self.table().find(p).map(|e| unsafe { (*e).info })
    }

    /// Whether a large block once started at `p` and was freed, its quarantine over (its
    /// table entry is kept as a tombstone until the slot is reused: best effort).
    pub fn was_freed(&self, p: usize) -> bool {
        let _g = self.lock.guard();
        let t = self.table();
        if t.cap == 0 {
            return false;
        }
        let mask = t.cap - 1;
        let mut i = hash(p) & mask;
        for _ in 0..t.cap {
            // SAFETY: i < cap, inside the committed table, read under the lock.
            let e = unsafe { &(*t.slots.add(i)).info };
            match e.state {
                EMPTY => return false,
                TOMBSTONE if e.addr == p => return true,
                _ => {}
            }
            i = (i + 1) & mask;
        }
        false
    }

    /// For the fault handler: the large block (live or quarantined) whose range, guard pages
    /// included, contains `addr`. A linear scan, without waiting on the lock (if this
    /// thread faulted while holding it, the answer is None).
    pub fn containing(&self, addr: usize) -> Option<Info> {
        if !self.lock.try_lock() {
            return None;
        }
        let t = self.table();
        let mut found = None;
        for i in 0..t.cap {
            // SAFETY: i < cap, inside the table, read with the lock held.
            let e = unsafe { (*t.slots.add(i)).info };
            if (e.state == LIVE || e.state == FREED) && addr.wrapping_sub(e.map) < e.map_len {
                found = Some(e);
                break;
            }
        }
        self.lock.unlock();
        found
    }

    /// Whether `addr` lies in the part of the large-block window handed out so far: an
    /// address there that is no live block belonged to a block that was freed (or its guard
    /// pages). For reports.
    pub fn handed_out(&self, addr: usize) -> bool {
        if !self.lock.try_lock() {
            return false;
        }
        let r = self.table().window.handed_out(addr);
        self.lock.unlock();
        r
    }

    /// For the fault handler: the block (live or quarantined) with the highest start below
    /// `addr`, without waiting on the lock.
    pub fn nearest_below(&self, addr: usize) -> Option<Info> {
        if !self.lock.try_lock() {
            return None;
        }
        let t = self.table();
        let mut best: Option<Info> = None;
        for i in 0..t.cap {
            // SAFETY: i < cap, inside the table, read with the lock held.
            let e = unsafe { (*t.slots.add(i)).info };
            if (e.state == LIVE || e.state == FREED) && e.addr <= addr && best.is_none_or(|b| e.addr > b.addr) {
                best = Some(e);
            }
        }
        self.lock.unlock();
        best
    }

    /// Change the requested size of a live block in place (`new_req + slack <= body_len`).
    pub fn resize(&self, p: usize, new_req: usize) {
        let _g = self.lock.guard();
        let t = self.table();
        if let Some(e) = t.find(p) {
            // SAFETY: e is a valid entry pointer from find.
            let e = unsafe { &mut (*e).info };
            t.live_bytes = t.live_bytes - e.req + new_req;
            index::update(p, Some(p + new_req));
            e.req = new_req;
        }
    }

    /// Free a live block. Returns `Err(entry)` if it is not live (already freed: double
    /// free), `Err(Entry::NONE)` if it is unknown.
    pub fn free(&self, p: usize, keep: usize, keep_bytes: usize) -> Result<(), Info> {
        let _g = self.lock.guard();
        let t = self.table();
        let Some(e) = t.find(p) else { return Err(Info::NONE) };
        // SAFETY: e is a valid entry pointer from find.
        let Entry { info: e, npieces, pieces } = unsafe { &mut *e };
        if e.state != LIVE {
            return Err(*e);
        }
        t.live_count -= 1;
        index::update(p, None);
        t.live_bytes -= e.req;
        t.mapped -= e.body_len;
        t.warm.note_live(t.live_bytes, true);
        // Keep the pages warm while the budget allows and they are worth it (each mapping of
        // the body moved out as it came in), else drop them; either way the range is left
        // unmapped.
        let threaded = crate::heap::slab::tcache::threads() > 1;
        let mut warm = t.warm.has_room(e.body_len) && warm::worth_keeping(e.addr, e.body_len, threaded);
        for piece in &pieces[..*npieces as usize] {
            warm = warm && t.warm.put(&mut t.window, e.addr + piece.off, piece.len);
            if !warm {
                platform::release((e.addr + piece.off) as *mut u8, piece.len);
            }
        }
        *npieces = 0;
        if keep == 0 || e.map_len > keep_bytes {
            // No quarantine for it.
            e.state = TOMBSTONE;
            return Ok(());
        }
        e.state = FREED;
        let len = e.map_len;
        while t.len >= keep || (t.len > 0 && t.ring_bytes + len > keep_bytes) {
            t.evict_oldest();
        }
        let n = t.ring.len();
        t.ring[(t.head + t.len) % n] = p;
        t.len += 1;
        t.ring_bytes += len;
        Ok(())
    }

    /// Out of address space or memory (a mapping failed): end the quarantine of every freed
    /// large block, drop the warm pages, give back used-up arenas, so that what the program
    /// freed can serve it again. Returns whether anything was released.
    pub fn relieve(&self) -> bool {
        let _g = self.lock.guard();
        Self::relieve_locked(self.table())
    }

    fn relieve_locked(t: &mut Table) -> bool {
        let had = t.len > 0;
        while t.len > 0 {
            t.evict_oldest();
        }
        t.warm.clear() || had
    }

    /// The first live block for which `bad` says yes (it runs with the table locked, so it
    /// must not call back into the large allocator).
    ///
    /// The scan ends at the last live block: the table is hashed, sized for far more blocks
    /// than most programs keep, and reading its untouched pages would map each of them (a
    /// page fault apiece at every exit).
    ///
    /// `patient`: the lock is tried for up to a second instead of waited for (other threads
    /// still run; the calling thread may hold it itself, in a signal handler that called
    /// `exit`): None if it could not be had.
    pub fn find_live(&self, patient: bool, mut bad: impl FnMut(&Info) -> bool) -> Option<Info> {
        let _g = if patient {
            if !(0..1000).any(|_| self.lock.try_lock() || {
                platform::sleep_ns(1_000_000);
                false
            }) {
                return None;
            }
            crate::platform::lock::Guard::adopt(self.lock)
        } else {
            self.lock.guard()
        };
        let t = self.table();
        let mut left = t.live_count;
        for i in 0..t.cap {
            if left == 0 {
                break;
            }
            // SAFETY: i < cap, inside the committed table.
            let e = unsafe { &(*t.slots.add(i)).info };
            if e.is_live() {
                if bad(e) {
                    return Some(*e);
                }
                left -= 1;
            }
        }
        None
    }

    pub fn stats(&self) -> Stats {
        let _g = self.lock.guard();
        let t = self.table();
        Stats { allocs: t.allocs, live_count: t.live_count, live_bytes: t.live_bytes, mapped: t.mapped + t.warm.bytes, quarantined: t.len, warm: t.warm.bytes }
    }
}

