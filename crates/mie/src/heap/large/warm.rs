//! Warm pages: page faults on fresh memory are most of the cost of a large block. A freed
//! block's pages are moved out of its range (`mremap`: the range is left unmapped, so a
//! dangling pointer still faults) into a spare mapping at a fresh address of the large-block
//! window; a later block takes spares (several, if need be) and moves their pages into its
//! own, new range. Only pages, never addresses, are reused, and they read as zero before the
//! new block is handed out: the pages the last owner touched are cleared, the others are
//! dropped rather than faulted in (`platform::clear_pages`).
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

/// Whether the pages of a freed block `[addr, addr + len)` are worth keeping warm. A spare
/// saves the next block the page faults of the pages its last owner touched (the others are
/// dropped at reuse, not cleared); moving it out and back in costs two remaps (each flushes
/// the TLB, and with more than one thread interrupts every CPU the process runs on: 30 us
/// and more in a virtual machine) and the clearing's `mincore` and `madvise`. A block whose
/// pages were mostly never touched (a big buffer of which only the ends were written) saves
/// nothing that pays for that: its pages are given back instead, and the next block starts
/// from fresh memory (one `mmap`, no flush). Kept: blocks with at least a quarter of their
/// pages resident, half with threads. If the kernel cannot say, kept (as before).
pub fn worth_keeping(addr: usize, len: usize, threaded: bool) -> bool {
    let pages = len / platform::page_size();
    let need = if threaded { pages.div_ceil(2) } else { pages.div_ceil(4) };
    platform::resident_count(addr, len, need).is_none_or(|r| r >= need)
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

    /// Keep the pages of the mapping `[from, from + len)`: move them to a fresh range of the
    /// window (the source is left unmapped). False if that failed (the caller then drops them).
    pub fn put(&mut self, w: &mut Window, from: usize, len: usize) -> bool {
        let Some(to) = w.take(len, 0, platform::page_size()) else { return false };
        // Before the window wrapped, a fresh range holds nothing; after, make sure first.
        if w.wrapped && !platform::map_at_none(to as *mut u8, len) {
            return false;
        }
        if !platform::move_pages_to(from as *mut u8, to as *mut u8, len) {
            if w.wrapped {
                platform::release(to as *mut u8, len);
            }
            return false;
        }
        if self.n == SPARES {
            self.evict_oldest();
        }
        self.spares[self.n] = Spare { addr: to, len };
        self.n += 1;
        self.bytes += len;
        while self.bytes > self.budget() && self.n > 0 {
            self.evict_oldest();
        }
        true
    }

    fn evict_oldest(&mut self) {
        let s = self.spares[0];
        platform::release(s.addr as *mut u8, s.len);
        self.bytes -= s.len;
        self.spares.copy_within(1..self.n, 0);
        self.n -= 1;
    }

    /// Move warm pages into `[addr, addr + body)` (an inaccessible reserved range): the best
    /// single spare that covers it, else the biggest spares, up to `limit` of them.
    /// Fills `pieces` and returns (pieces used, bytes covered from offset 0); the rest of the
    /// body is left to the caller.
    pub fn take(&mut self, addr: usize, body: usize, pieces: &mut [Piece; MAX_PIECES], limit: usize) -> (usize, usize) {
        let limit = limit.min(MAX_PIECES - 1);
        if self.n == 0 {
            return (0, 0);
        }
        let mut covered = 0;
        let mut used = 0;
        while covered < body && used < limit && self.n > 0 {
            let want = body - covered;
            // The smallest spare that covers the rest, else the largest.
            let mut best: Option<usize> = None;
            for i in 0..self.n {
                let l = self.spares[i].len;
                best = match best {
                    None => Some(i),
                    Some(b) => {
                        let bl = self.spares[b].len;
                        let better = if l >= want { bl < want || l < bl } else { bl < want && l > bl };
                        Some(if better { i } else { b })
                    }
                };
            }
            let Some(i) = best else { break };
            let s = self.spares[i];
            let take = s.len.min(want);
            if !platform::move_pages_to(s.addr as *mut u8, (addr + covered) as *mut u8, take) {
                break;
            }
            if take < s.len {
                // The rest of the spare stays (its own mapping still).
                self.spares[i] = Spare { addr: s.addr + take, len: s.len - take };
            } else {
                self.spares.copy_within(i + 1..self.n, i);
                self.n -= 1;
            }
            self.bytes -= take;
            pieces[used] = Piece { off: covered, len: take };
            used += 1;
            covered += take;
        }
        (used, covered)
    }

    /// Drop every spare (out of memory or address space).
    pub fn clear(&mut self) -> bool {
        let had = self.n > 0;
        while self.n > 0 {
            self.evict_oldest();
        }
        had
    }
}
