//! Live large blocks sorted by start address, for lock-free lookups of interior pointers
//! (the range checks of memcpy and friends).

use core::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::platform;

/// Written under `LARGE.lock` inside a sequence lock (the counter is odd while a write is
/// in progress); readers retry when it moved.
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

/// Changes each time a large block is freed or resized: while it reads the same, a block
/// found live (read before the lookup) still is, with the same size (the checks' hint,
/// `bounds::Hint`, remembers a large block by it).
pub static GENERATION: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);


/// Add a live block `[start, end)` (requested size) (LARGE.lock held).
pub(super) fn insert(start: usize, end: usize) {
    INDEX.insert(start, end);
}

/// Remove a block, or change its end (LARGE.lock held).
pub(super) fn update(start: usize, new_end: Option<usize>) {
    // Before the index changes: a reader that reads the old generation after this reads the
    // block as it was and notes a generation that is already stale.
    GENERATION.fetch_add(1, Ordering::AcqRel);
    INDEX.update(start, new_end);
}
