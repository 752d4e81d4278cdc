//! Large allocations (above the largest size class): each gets its own mapping with an
//! inaccessible guard page on both sides. Their metadata (start, mapping, requested size,
//! state) sits in an out-of-line open-addressing table in its own mapping.
//!
//! A freed large block is replaced by an inaccessible reservation (its pages go back to the
//! OS at once) and kept in a bounded FIFO address quarantine before it is unmapped, so a use
//! after free of a large block faults deterministically for a while, and a double free of it
//! is recognised as one.
//!
//! Warm reuse: page faults on fresh memory are most of the cost of a large allocation. So,
//! while the warm budget allows, a freed block's pages are moved out of its address range to
//! a spare mapping (`mremap(MREMAP_DONTUNMAP)`) and its range is made inaccessible; a later
//! allocation moves those pages to its own, new address. The freed block's address range
//! stays inaccessible in the quarantine exactly as before, so a dangling pointer still
//! faults; only physical pages, never an address, are reused. The moved pages still hold the
//! old block's bytes, so such a block is not known to be zero (calloc clears it).

use core::cell::UnsafeCell;
use core::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::platform::{self, lock::Lock};

const EMPTY: usize = 0;
const LIVE: usize = 1;
const FREED: usize = 2;
const TOMBSTONE: usize = 3;
/// Bytes of freed large blocks whose pages are kept for warm reuse (part of peak RSS).
const WARM_BUDGET: usize = 32 << 20;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Entry {
    pub addr: usize,
    pub map: usize,
    pub map_len: usize,
    /// Bytes read-write from `addr` (page multiple).
    pub body_len: usize,
    pub req: usize,
    pub state: usize,
    /// How the block was allocated (`heap::kind`).
    pub kind: u8,
    /// Freed blocks only: bytes of the body whose pages were kept (0: none), and where they
    /// are now (a spare mapping of exactly `warm` bytes).
    pub warm: usize,
    pub warm_at: usize,
}

impl Entry {
    const NONE: Entry = Entry { addr: 0, map: 0, map_len: 0, body_len: 0, req: 0, state: EMPTY, kind: 0, warm: 0, warm_at: 0 };

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
    live_bytes: usize,
    mapped: usize,
    warm_bytes: usize,
    /// Set when the kernel refused to move pages: warm reuse is off from then on.
    no_warm: bool,
}

pub struct Large {
    pub lock: Lock,
    t: UnsafeCell<Table>,
}

// SAFETY: the table is only touched with `lock` held.
unsafe impl Sync for Large {}

pub static LARGE: Large = Large {
    lock: Lock::new(),
    t: UnsafeCell::new(Table {
        slots: core::ptr::null_mut(),
        cap: 0,
        used: 0,
        ring: [0; crate::options::MAX_LARGE_QUARANTINE as usize],
        head: 0,
        len: 0,
        ring_bytes: 0,
        live_count: 0,
        live_bytes: 0,
        mapped: 0,
        warm_bytes: 0,
        no_warm: false,
    }),
};

#[inline]
fn hash(addr: usize) -> usize {
    crate::rand::mix64((addr >> 12) as u64) as usize
}

pub struct Stats {
    pub live_count: usize,
    pub live_bytes: usize,
    pub mapped: usize,
    pub quarantined: usize,
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
            match unsafe { (*e).state } {
                EMPTY => return None,
                LIVE | FREED if unsafe { (*e).addr } == addr => return Some(e),
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
        let mut i = hash(entry.addr) & mask;
        loop {
            // SAFETY: i < cap.
            let e = unsafe { &mut *self.slots.add(i) };
            if e.state == EMPTY || e.state == TOMBSTONE {
                if e.state == EMPTY {
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
            if e.state == LIVE || e.state == FREED {
                self.insert(e);
            }
        }
        if !old.is_null() {
            platform::release(old.cast(), old_cap * core::mem::size_of::<Entry>());
        }
        true
    }

    fn evict_oldest(&mut self) {
        let n = self.ring.len();
        let addr = self.ring[self.head];
        self.head = (self.head + 1) % n;
        self.len -= 1;
        if let Some(e) = self.find(addr) {
            // SAFETY: e is a valid entry pointer from find.
            let e = unsafe { &mut *e };
            platform::release(e.map as *mut u8, e.map_len);
            if e.warm != 0 {
                platform::release(e.warm_at as *mut u8, e.warm);
            }
            self.ring_bytes -= e.map_len;
            self.mapped -= e.map_len;
            self.warm_bytes -= e.warm;
            e.state = TOMBSTONE;
        }
    }

    /// Move warm pages from the smallest quarantined block that covers the body to
    /// `[addr, addr + body)` (a reserved, inaccessible range). Returns how many bytes were
    /// moved (accessible, not zero): `body` or 0. Only whole bodies are moved, so a block is
    /// always one mapping and can be moved out again when it is freed.
    fn take_warm(&mut self, addr: usize, body: usize) -> usize {
        if self.warm_bytes == 0 {
            return 0;
        }
        let n = self.ring.len();
        let mut best: Option<(*mut Entry, usize)> = None;
        for i in 0..self.len {
            let Some(e) = self.find(self.ring[(self.head + i) % n]) else { continue };
            // SAFETY: e is a valid entry pointer from find; read under the lock.
            let w = unsafe { (*e).warm };
            let better = w >= body && best.is_none_or(|(_, b)| w < b);
            if better {
                best = Some((e, w));
            }
        }
        let Some((e, w)) = best else { return 0 };
        // SAFETY: e is a valid entry pointer from find.
        let e = unsafe { &mut *e };
        let moved = w.min(body);
        self.warm_bytes -= w;
        e.warm = 0;
        if !platform::move_pages_to(e.warm_at as *mut u8, addr as *mut u8, moved) {
            platform::release(e.warm_at as *mut u8, w);
            return 0;
        }
        if w > moved {
            platform::release((e.warm_at + moved) as *mut u8, w - moved);
        }
        moved
    }
}

/// Live large blocks sorted by start address, for lock-free lookups of interior pointers
/// (the range checks of memcpy and friends). Written under `LARGE.lock` inside a sequence
/// lock (the counter is odd while a write is in progress); readers retry when it moved.
/// Entries live in one reservation committed as it grows, so a reader never touches
/// unmapped memory; beyond `INDEX_CAP` live blocks the index stops answering (checks of
/// large blocks are then skipped, never wrong).
struct Index {
    /// Lowest start and highest end of any block ever indexed: a quick filter for the
    /// addresses that cannot be in a live large block (most pointers a memcpy gets).
    lo: AtomicUsize,
    hi: AtomicUsize,
    seq: AtomicU64,
    len: AtomicUsize,
    /// Pairs of (start, end of the requested size).
    entries: AtomicPtr<AtomicUsize>,
    committed: AtomicUsize,
    overflowed: core::sync::atomic::AtomicBool,
}

const INDEX_CAP: usize = 1 << 20;

static INDEX: Index = Index {
    lo: AtomicUsize::new(usize::MAX),
    hi: AtomicUsize::new(0),
    seq: AtomicU64::new(0),
    len: AtomicUsize::new(0),
    entries: AtomicPtr::new(core::ptr::null_mut()),
    committed: AtomicUsize::new(0),
    overflowed: core::sync::atomic::AtomicBool::new(false),
};

impl Index {
    #[inline]
    fn slot(&self, base: *mut AtomicUsize, i: usize) -> (&AtomicUsize, &AtomicUsize) {
        // SAFETY: callers keep i below the committed entry count of the reservation.
        unsafe { (&*base.add(2 * i), &*base.add(2 * i + 1)) }
    }

    /// Writers (LARGE.lock held): enter / leave the write section.
    fn begin(&self) {
        self.seq.store(self.seq.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        fence(Ordering::Release);
    }
    fn end(&self) {
        self.seq.store(self.seq.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// Position of the first entry whose start is > addr (writers, or inside a read).
    fn upper_bound(&self, base: *mut AtomicUsize, len: usize, addr: usize) -> usize {
        let (mut lo, mut hi) = (0, len);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.slot(base, mid).0.load(Ordering::Relaxed) <= addr {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Add a live block (LARGE.lock held).
    fn insert(&self, start: usize, end: usize) {
        let len = self.len.load(Ordering::Relaxed);
        if self.overflowed.load(Ordering::Relaxed) || !self.reserve(len + 1) {
            self.overflowed.store(true, Ordering::Relaxed);
            return;
        }
        let base = self.entries.load(Ordering::Relaxed);
        let at = self.upper_bound(base, len, start);
        self.begin();
        let mut i = len;
        while i > at {
            let (s, e) = self.slot(base, i - 1);
            let (ds, de) = self.slot(base, i);
            ds.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
            de.store(e.load(Ordering::Relaxed), Ordering::Relaxed);
            i -= 1;
        }
        let (ds, de) = self.slot(base, at);
        ds.store(start, Ordering::Relaxed);
        de.store(end, Ordering::Relaxed);
        self.len.store(len + 1, Ordering::Relaxed);
        self.lo.store(self.lo.load(Ordering::Relaxed).min(start), Ordering::Relaxed);
        self.hi.store(self.hi.load(Ordering::Relaxed).max(end + 1), Ordering::Relaxed);
        self.end();
    }

    /// Remove a block, or change its end (LARGE.lock held).
    fn update(&self, start: usize, new_end: Option<usize>) {
        let base = self.entries.load(Ordering::Relaxed);
        if base.is_null() || self.overflowed.load(Ordering::Relaxed) {
            return;
        }
        let len = self.len.load(Ordering::Relaxed);
        let at = self.upper_bound(base, len, start);
        if at == 0 || self.slot(base, at - 1).0.load(Ordering::Relaxed) != start {
            return;
        }
        let at = at - 1;
        self.begin();
        match new_end {
            Some(end) => {
                self.slot(base, at).1.store(end, Ordering::Relaxed);
                self.hi.store(self.hi.load(Ordering::Relaxed).max(end + 1), Ordering::Relaxed);
            }
            None => {
                for i in at..len - 1 {
                    let (s, e) = self.slot(base, i + 1);
                    let (ds, de) = self.slot(base, i);
                    ds.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
                    de.store(e.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                self.len.store(len - 1, Ordering::Relaxed);
            }
        }
        self.end();
    }

    /// Make room for `n` entries (LARGE.lock held). The reservation is made once.
    fn reserve(&self, n: usize) -> bool {
        if n > INDEX_CAP {
            return false;
        }
        let mut base = self.entries.load(Ordering::Relaxed);
        if base.is_null() {
            base = platform::reserve(INDEX_CAP * 16) as *mut AtomicUsize;
            if base.is_null() {
                return false;
            }
            self.entries.store(base, Ordering::Release);
        }
        let have = self.committed.load(Ordering::Relaxed);
        if n * 16 > have {
            let grow = (n * 16 - have).next_multiple_of(64 << 10);
            if !platform::commit((base as usize + have) as *mut u8, grow) {
                return false;
            }
            self.committed.store(have + grow, Ordering::Release);
        }
        true
    }

    /// The live block containing `addr`: (start, requested size). Lock-free. None also
    /// when the index cannot answer (it overflowed).
    fn find(&self, addr: usize) -> Option<(usize, usize)> {
        if self.overflowed.load(Ordering::Relaxed) {
            return None;
        }
        let base = self.entries.load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            // Never past the committed entries, whatever a racing writer does to len.
            let len = self.len.load(Ordering::Relaxed).min(self.committed.load(Ordering::Acquire) / 16);
            let at = self.upper_bound(base, len, addr);
            let found = if at > 0 {
                let (s, e) = self.slot(base, at - 1);
                let (start, end) = (s.load(Ordering::Relaxed), e.load(Ordering::Relaxed));
                // One past the end still belongs to the block (guard pages separate blocks).
                (addr <= end).then_some((start, end - start))
            } else {
                None
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return found;
            }
        }
    }
}

/// Whether `addr` may be in a live large block (false: it certainly is not). One compare
/// pair: blocks are only ever indexed inside [lo, hi).
#[inline(always)]
pub fn maybe_live(addr: usize) -> bool {
    addr.wrapping_sub(INDEX.lo.load(Ordering::Relaxed)) < INDEX.hi.load(Ordering::Relaxed).wrapping_sub(INDEX.lo.load(Ordering::Relaxed))
}

/// The live large block containing `addr` (start, requested size), lock-free; None also if
/// the index has given up (more than a million live large blocks).
pub fn live_block_containing(addr: usize) -> Option<(usize, usize)> {
    INDEX.find(addr)
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
        let extra = align.saturating_sub(page);
        let Some(total) = body.checked_add(extra).and_then(|n| n.checked_add(2 * page)) else {
            return null;
        };
        if total > isize::MAX as usize {
            return null;
        }
        let mut map = platform::reserve(total);
        if map.is_null() && self.relieve() {
            map = platform::reserve(total);
        }
        if map.is_null() {
            return null;
        }
        let addr = (map as usize + page + align - 1) & !(align.max(page) - 1);
        let warm = {
            let _g = self.lock.guard();
            let t = self.table();
            let warm = t.take_warm(addr, body);
            if warm < body && !platform::commit((addr + warm) as *mut u8, body - warm) {
                platform::release(map, total);
                return null;
            }
            if !t.insert(Entry { addr, map: map as usize, map_len: total, body_len: body, req: size, state: LIVE, kind, warm: 0, warm_at: 0 }) {
                platform::release(map, total);
                return null;
            }
            t.live_count += 1;
            t.live_bytes += size;
            INDEX.insert(addr, addr + size);
            t.mapped += total;
            warm
        };
        // Pages moved in from a freed block still hold its bytes: clear them (outside the
        // lock; nobody has the block yet). Cheaper than giving them back to the kernel and
        // faulting fresh ones in, which is what warm reuse saves.
        if warm != 0 {
            platform::zero(addr as *mut u8, warm);
        }
        (addr as *mut u8, body, true)
    }

    /// Copy of the entry for `p`, if `p` is the start of a live or quarantined large block.
    pub fn lookup(&self, p: usize) -> Option<Entry> {
        let _g = self.lock.guard();
        // SAFETY: find returns a valid pointer into the table, read under the lock.
        self.table().find(p).map(|e| unsafe { *e })
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
            let e = unsafe { &*t.slots.add(i) };
            match e.state {
                EMPTY => return false,
                TOMBSTONE if e.addr == p => return true,
                _ => {}
            }
            i = (i + 1) & mask;
        }
        false
    }

    /// For the fault handler: the large block (live or quarantined) whose mapping, guard
    /// pages included, contains `addr`. A linear scan, without waiting on the lock (if this
    /// thread faulted while holding it, the answer is None).
    pub fn containing(&self, addr: usize) -> Option<Entry> {
        if !self.lock.try_lock() {
            return None;
        }
        let t = self.table();
        let mut found = None;
        for i in 0..t.cap {
            // SAFETY: i < cap, inside the table, read with the lock held.
            let e = unsafe { *t.slots.add(i) };
            if (e.state == LIVE || e.state == FREED) && addr.wrapping_sub(e.map) < e.map_len {
                found = Some(e);
                break;
            }
        }
        self.lock.unlock();
        found
    }

    /// Change the requested size of a live block in place (`new_req + slack <= body_len`).
    pub fn resize(&self, p: usize, new_req: usize) {
        let _g = self.lock.guard();
        let t = self.table();
        if let Some(e) = t.find(p) {
            // SAFETY: e is a valid entry pointer from find.
            let e = unsafe { &mut *e };
            t.live_bytes = t.live_bytes - e.req + new_req;
            INDEX.update(p, Some(p + new_req));
            e.req = new_req;
        }
    }

    /// Free a live block. Returns `Err(entry)` if it is not live (already freed: double
    /// free), `Err(Entry::NONE)` if it is unknown.
    pub fn free(&self, p: usize, keep: usize, keep_bytes: usize) -> Result<(), Entry> {
        let _g = self.lock.guard();
        let t = self.table();
        let Some(e) = t.find(p) else { return Err(Entry::NONE) };
        // SAFETY: e is a valid entry pointer from find.
        let e = unsafe { &mut *e };
        if e.state != LIVE {
            return Err(*e);
        }
        t.live_count -= 1;
        INDEX.update(p, None);
        t.live_bytes -= e.req;
        if keep == 0 || e.map_len > keep_bytes {
            platform::release(e.map as *mut u8, e.map_len);
            t.mapped -= e.map_len;
            e.state = TOMBSTONE;
            return Ok(());
        }
        // Keep the addresses inaccessible; keep the pages too while the warm budget allows.
        e.state = FREED;
        e.warm = 0;
        let spare = if !t.no_warm && t.warm_bytes + e.body_len <= WARM_BUDGET {
            match platform::move_pages_out(e.addr as *mut u8, e.body_len) {
                Ok(p) => p,
                Err(errno) => {
                    // EINVAL: the kernel cannot move pages out (before Linux 5.7).
                    t.no_warm = errno == libc::EINVAL;
                    core::ptr::null_mut()
                }
            }
        } else {
            core::ptr::null_mut()
        };
        if !spare.is_null() && platform::protect_none(e.addr as *mut u8, e.body_len) {
            e.warm = e.body_len;
            e.warm_at = spare as usize;
            t.warm_bytes += e.body_len;
        } else {
            if !spare.is_null() {
                platform::release(spare, e.body_len);
            }
            platform::decommit(e.map as *mut u8, e.map_len);
        }
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

    /// Out of address space or memory (a mapping failed): give the quarantined blocks' address
    /// ranges and warm pages back to the kernel at once, ending their quarantine early, so that
    /// what the program freed can serve it again. Returns whether anything was released.
    pub fn relieve(&self) -> bool {
        let _g = self.lock.guard();
        let t = self.table();
        let had = t.len > 0;
        while t.len > 0 {
            t.evict_oldest();
        }
        had
    }

    pub fn stats(&self) -> Stats {
        let _g = self.lock.guard();
        let t = self.table();
        Stats { live_count: t.live_count, live_bytes: t.live_bytes, mapped: t.mapped, quarantined: t.len }
    }
}
