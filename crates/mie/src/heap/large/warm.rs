//! Warm pages: page faults on fresh memory are most of the cost of a large block. A freed
//! block's pages are moved out of its range (`mremap`: the range is left unmapped, so a
//! dangling pointer still faults) into a spare mapping at a fresh address of the large-block
//! window; a later block takes spares (several, if need be) and moves their pages into its
//! own, new range. Only pages, never addresses, are reused, and they are cleared before the
//! new block is handed out.
//!
//! The system calls (moving pages in and out, unmapping) run without the large-block lock:
//! the lock only hands out addresses and spares, so threads do not queue behind `mremap`.
//!
//! The pool of spares is sized from the recent peak of live large-block memory: a program
//! that keeps 100 MiB of large blocks and churns them keeps their pages warm; one that
//! briefly needed them gives them back as the peak decays.

use super::window::Window;
use crate::platform;

/// Spares kept at most.
const SPARES: usize = 256;
/// The warm budget never goes below this, nor above MAX.
const MIN_BUDGET: usize = 8 << 20;
const MAX_BUDGET: usize = 1 << 30;
/// Pieces one block can be assembled from (its last piece may be fresh memory).
pub const MAX_PIECES: usize = 16;
/// Warm pieces one block takes while more than one thread uses the heap: every piece is one
/// `mremap` when the block is made and one when it is freed, and each of those flushes the
/// TLB of every CPU the process runs on (an inter-processor interrupt). A single-threaded
/// program pays no such interrupts and takes up to MAX_PIECES - 1 (fewer page faults).
pub const THREADED_PIECES: usize = 2;

/// Spares dropped while the lock was held, unmapped after it is released.
pub struct Evicted {
    ranges: [(usize, usize); 8],
    n: usize,
}

impl Evicted {
    pub const fn new() -> Self {
        Evicted { ranges: [(0, 0); 8], n: 0 }
    }

    /// Unmap them (without the lock).
    pub fn release(&mut self) {
        for &(a, l) in &self.ranges[..self.n] {
            platform::release(a as *mut u8, l);
        }
        self.n = 0;
    }
}

#[derive(Clone, Copy)]
struct Spare {
    addr: usize,
    len: usize,
}

pub struct Warm {
    spares: [Spare; SPARES],
    /// Oldest first.
    n: usize,
    pub bytes: usize,
    /// Recent peak of live large bytes (decays as blocks are freed).
    peak: usize,
}

/// One part of a block's body: [off, off + len) of it, one mapping.
#[derive(Clone, Copy, Default, Debug)]
pub struct Piece {
    pub off: usize,
    pub len: usize,
}

impl Warm {
    pub const fn new() -> Self {
        Warm { spares: [Spare { addr: 0, len: 0 }; SPARES], n: 0, bytes: 0, peak: 0 }
    }

    /// Live large bytes changed: follow the peak up at once, down slowly.
    pub fn note_live(&mut self, live: usize, freed: bool) {
        if live > self.peak {
            self.peak = live;
        } else if freed {
            self.peak = (self.peak - self.peak / 256).max(live);
        }
    }

    fn budget(&self) -> usize {
        self.peak.clamp(MIN_BUDGET, MAX_BUDGET)
    }

    /// Whether `len` more bytes of spares fit the budget.
    pub fn has_room(&self, len: usize) -> bool {
        self.bytes + len <= self.budget()
    }

    /// A range of the window to keep `len` bytes of a freed block's pages in, if the
    /// budget has room (the pages are moved there by the caller, without the lock, then
    /// handed to `keep`).
    pub fn reserve(&mut self, w: &mut Window, len: usize) -> Option<usize> {
        if !self.has_room(len) {
            return None;
        }
        w.take(len, 0, platform::page_size())
    }

    /// Keep the spare at `[to, to + len)` (its pages moved in). Spares beyond the budget
    /// (oldest first) go into `evicted` for the caller to unmap without the lock; what does
    /// not fit there is unmapped at once.
    pub fn keep(&mut self, to: usize, len: usize, evicted: &mut Evicted) {
        if self.n == SPARES {
            self.evict_oldest(evicted);
        }
        self.spares[self.n] = Spare { addr: to, len };
        self.n += 1;
        self.bytes += len;
        while self.bytes > self.budget() && self.n > 0 {
            self.evict_oldest(evicted);
        }
    }

    fn evict_oldest(&mut self, evicted: &mut Evicted) {
        let s = self.spares[0];
        if evicted.n < evicted.ranges.len() {
            evicted.ranges[evicted.n] = (s.addr, s.len);
            evicted.n += 1;
        } else {
            platform::release(s.addr as *mut u8, s.len);
        }
        self.bytes -= s.len;
        self.spares.copy_within(1..self.n, 0);
        self.n -= 1;
    }

    /// Spares for a block of `body` bytes: the best single spare that covers it, else the
    /// biggest spares, up to `limit` of them, taken out of the pool. Fills `pieces` (the
    /// parts of the body, from offset 0) and `from` (where each part's pages are now), and
    /// returns the count; the caller moves the pages (`move_pages_to`) without the lock.
    pub fn take(&mut self, body: usize, pieces: &mut [Piece; MAX_PIECES], from: &mut [usize; MAX_PIECES], limit: usize) -> usize {
        let limit = limit.min(MAX_PIECES - 1);
        let mut covered = 0;
        let mut used = 0;
        while covered < body && used < limit && self.n > 0 {
            let want = body - covered;
            // The smallest spare that covers the rest, else the largest.
            let mut best = 0;
            for i in 1..self.n {
                let (l, bl) = (self.spares[i].len, self.spares[best].len);
                if if l >= want { bl < want || l < bl } else { bl < want && l > bl } {
                    best = i;
                }
            }
            let s = self.spares[best];
            let take = s.len.min(want);
            if take < s.len {
                // The rest of the spare stays (a mapping of its own once the front moves).
                self.spares[best] = Spare { addr: s.addr + take, len: s.len - take };
            } else {
                self.spares.copy_within(best + 1..self.n, best);
                self.n -= 1;
            }
            self.bytes -= take;
            pieces[used] = Piece { off: covered, len: take };
            from[used] = s.addr;
            used += 1;
            covered += take;
        }
        used
    }

    /// Drop every spare (out of memory or address space).
    pub fn clear(&mut self) -> bool {
        let had = self.n > 0;
        let mut none = Evicted::new();
        while self.n > 0 {
            self.evict_oldest(&mut none);
            none.release();
        }
        had
    }
}
