//! Bounds of heap blocks, for checks at the moment of a bulk access: `memcpy`, `strcpy` and
//! friends (exported by libmie.so) ask here whether `[p, p + len)` stays inside the block
//! `p` points into, before they touch a byte. A small block's bounds follow from its
//! address and its slab metadata (its requested size, not the slot size); a sampled block's
//! from the sample table; a large block's from a sorted index read without locks. Pointers
//! outside mie's heap are never looked at beyond a range compare.

use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::heap::slab::layout::BUCKET_SLOTS;
use crate::heap::slab::size_class::{ClassInfo, CLASSES};
use crate::heap::slab::meta::{SlabMeta, SlotAt};
use crate::heap::{describe_slot, large, slab::record, guarded::sample, guarded::zero, READY, STATE};
use crate::heap::slab::tcache;
use crate::heap::slab::hints::{Hint, Hints};
use crate::platform::tls;
use crate::report::{self, Kind};
use crate::tag;

/// The code of the object mie itself is linked into: its own copies and fills (zeroing a
/// freed slot, moving a block in realloc) reach the exported, checked functions too, and are
/// not checked. Set at heap initialisation, before any pointer can be in the heap.
static OWN_CODE: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

pub(crate) fn init() {
    let (start, end) = crate::platform::object_extent(init as *const () as usize);
    OWN_CODE[0].store(start, Ordering::Relaxed);
    OWN_CODE[1].store(end - start, Ordering::Relaxed);
}

#[inline(always)]
fn from_mie(ret_addr: usize) -> bool {
    ret_addr.wrapping_sub(OWN_CODE[0].load(Ordering::Relaxed)) < OWN_CODE[1].load(Ordering::Relaxed)
}

/// What an address is, as far as a range check is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Not in a block mie can bound (not heap memory, or unknown).
    Unknown,
    /// Inside a live block: its start and requested size.
    Live { start: usize, size: usize },
    /// Inside a block that has been freed (a small slot or a sampled one).
    Freed { start: usize, size: usize },
}

/// Where `p` (tag ignored) lies.
#[inline(always)]
pub fn place(p: usize) -> Place {
    if STATE.load(Ordering::Acquire) != READY {
        return Place::Unknown;
    }
    let g = crate::heap::globals();
    let a = tag::untag(p);
    if let Some((s, k, r)) = small_slot(g, a) {
        let start = a - s.interior;
        if !record::is_live(r) {
            return Place::Freed { start, size: k.size as usize };
        }
        return Place::Live { start, size: (k.size as usize).saturating_sub(record::slack(r)) };
    }
    // (Elsewhere in the heap: no block here; the access itself faults (unmapped) or hits a
    // slab's unused tail. Samples, zero-size blocks and large blocks lie outside the heap.)
    if sample::owns(a) || zero::owns(a) || large::maybe_live(a) {
        return other_place(a);
    }
    Place::Unknown
}

#[inline(never)]
fn other_place(a: usize) -> Place {
    if zero::owns(a) {
        let start = a & !15;
        return if zero::is_live(start) { Place::Live { start, size: 0 } } else { Place::Freed { start, size: 0 } };
    }
    if sample::owns(a) {
        return match sample::bounds(a) {
            Some((start, size, true)) => Place::Live { start, size },
            Some((start, size, false)) => Place::Freed { start, size },
            None => Place::Unknown,
        };
    }
    match large::live_block_containing(a) {
        Some((start, size)) => Place::Live { start, size },
        None => Place::Unknown,
    }
}

/// The slot of a small block holding `a` (untagged), in a slab that was made, of a bucket
/// the checks cover: the slot, its class and its record now.
#[inline(always)]
fn small_slot(g: &crate::heap::Globals, a: usize) -> Option<(SlotAt, &'static ClassInfo, u32)> {
    small_slot_of(g, SlabMeta::block_at(&g.geo, a)?)
}

/// `small_slot` of a slot found by `SlabMeta::block_at` or `block_of_record`. (Its bucket
/// is one the checks cover: a granule has metadata only once a slab of its region was made,
/// and regions are made only for buckets in use.)
#[inline(always)]
fn small_slot_of(_g: &crate::heap::Globals, s: SlotAt) -> Option<(SlotAt, &'static ClassInfo, u32)> {
    debug_assert!(s.region % BUCKET_SLOTS <= _g.keys.pointer_buckets as usize);
    // SAFETY: block_at and block_of_record return class < CLASS_COUNT.
    let k = unsafe { CLASSES.get_unchecked(s.class) };
    Some((s, k, s.m.rec(k, s.slot)))
}

/// Bytes from `p` to the end of its live block (0 if `p` is at or past the end, or the
/// block is freed); `usize::MAX` when `p` is not in a block mie can bound.
pub fn object_size(p: usize) -> usize {
    let a = tag::untag(p);
    match place(p) {
        Place::Live { start, size } => (start + size).saturating_sub(a),
        Place::Freed { .. } => 0,
        Place::Unknown => usize::MAX,
    }
}

/// Whether a checked function reads or writes the range.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read = 0,
    Write = 1,
}

/// The bytes from `a` to the end of `[start, start + size)`, if `a` lies in it.
#[inline(always)]
fn left_in(start: usize, size: usize, a: usize) -> Option<usize> {
    let off = a.wrapping_sub(start);
    (off < size).then(|| size - off)
}

/// The 4 bytes at `at` (readable allocator metadata, 4 bytes from `at`), read once. Other
/// threads may change them meanwhile (a remote free's compare-and-swap of the record, or
/// of its narrow neighbour's): read by one instruction, outside the language's model of
/// atomics, whose accesses must not mix sizes.
#[inline(always)]
fn read_word(at: usize) -> u32 {
    let v: u32;
    // SAFETY: [at, at + 4) is mapped, readable metadata (the caller's); one plain load,
    // which the hardware performs whole for the aligned record inside it.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("mov {v:e}, dword ptr [{p}]", p = in(reg) at, v = out(reg) v, options(nostack, preserves_flags, readonly));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("ldr {v:w}, [{p}]", p = in(reg) at, v = out(reg) v, options(nostack, preserves_flags, readonly));
    }
    v
}

/// Where a record at `rec` (of the width `wide`) is read from as a 4-byte word, and the
/// mask of its bytes in that word: a narrow record with the 2 bytes before it (the end of
/// the slab's free bitmap or the previous record: always metadata), so that every hint
/// reads one word and compares it masked, without a branch on the width.
#[inline(always)]
fn record_word(rec: usize, wide: bool) -> (usize, u32) {
    if wide {
        (rec, !0)
    } else {
        (rec - 2, 0xffff_0000)
    }
}

impl Hint {
    /// A hint for the block `[start, start + size)` whose record, at `rec` (of the width
    /// `wide`), is `val` now.
    #[inline(always)]
    fn new(start: usize, size: usize, rec: usize, val: u32, wide: bool) -> Hint {
        let (rec, mask) = record_word(rec, wide);
        Hint { start, size, rec, val: if wide { val } else { val << 16 }, mask }
    }

    /// Whether `[a, a + len)` lies inside the block, unchanged since (valid only when the
    /// hints' change count is the same after: `Hints::same`). One add and its carry: a range
    /// that starts before the block wraps round or ends past it. (An empty range at the
    /// block's end passes: it touches nothing.)
    #[inline(always)]
    fn inside(&self, a: usize, len: usize) -> bool {
        let (end, wrapped) = a.wrapping_sub(self.start).overflowing_add(len);
        !wrapped && end <= self.size && self.unchanged()
    }

    /// The bytes from `a` to the end of the block, if `a` is inside it and the block is
    /// unchanged since (as `inside`).
    #[inline(always)]
    fn rest(&self, a: usize) -> Option<usize> {
        let left = left_in(self.start, self.size, a)?;
        self.unchanged().then_some(left)
    }

    /// Whether the block's record is the one remembered.
    #[inline(always)]
    fn unchanged(&self) -> bool {
        read_word(self.rec) & self.mask == self.val
    }
}

impl Hints {
    /// The change count now (read again each time: a signal handler may change it).
    #[inline(always)]
    fn count(&self) -> usize {
        use core::sync::atomic::{compiler_fence, Ordering::SeqCst};
        compiler_fence(SeqCst);
        // SAFETY: a read of this thread's own field.
        let n = unsafe { core::ptr::read_volatile(&self.changes) };
        compiler_fence(SeqCst);
        n
    }

    /// Whether no hint changed since the count was `was`: what was read of them in between
    /// belongs together.
    #[inline(always)]
    fn same(&self, was: usize) -> bool {
        self.count() == was
    }

    /// `Hint::inside` for hint `i`, read consistently.
    #[inline(always)]
    fn inside(&self, i: usize, a: usize, len: usize) -> bool {
        let was = self.count();
        self.h[i].inside(a, len) && self.same(was)
    }

    /// Remember a block in hint `i`. The count changes first, and the size goes to 0 first
    /// and is set last (with compiler fences between): a signal handler on this thread that
    /// reads the hints in the middle (its own checked call) sees no block or the whole new
    /// one, never a mix, and a reader this interrupts sees the count changed. If such a
    /// handler remembers a block itself meanwhile (the count moved again), the hint is
    /// left empty rather than holding parts of both. (Nothing is left half done for later:
    /// a handler that jumps out of a `set` leaves an empty or a whole hint.)
    #[inline(always)]
    fn set(&mut self, i: usize, b: Hint) {
        self.set_in(&[i], b);
    }

    /// `set` for each hint in `which`, changed together (one count update).
    #[inline(always)]
    fn set_in(&mut self, which: &[usize], b: Hint) {
        use core::sync::atomic::{compiler_fence, Ordering::SeqCst};
        let now = self.count().wrapping_add(1);
        // SAFETY: a write of this thread's own field.
        unsafe { core::ptr::write_volatile(&mut self.changes, now) };
        compiler_fence(SeqCst);
        for &i in which {
            self.h[i].size = 0;
            compiler_fence(SeqCst);
            (self.h[i].start, self.h[i].rec, self.h[i].val, self.h[i].mask) = (b.start, b.rec, b.val, b.mask);
            compiler_fence(SeqCst);
            self.h[i].size = b.size;
        }
        if self.count() != now {
            for &i in which {
                self.h[i].size = 0;
            }
        }
        compiler_fence(SeqCst);
    }
}

/// Abort with a report unless `[p, p + len)` lies inside the live block `p` points into
/// (when it points into one). `func` names the checked function, `ret_addr` its caller.
/// The cost is in the order of the questions: is checking on (one load), is the pointer in
/// mie's memory at all (one compare), is it in a live small block whose requested size
/// covers the range (one decode, one record load). Only a range that fails (or a pointer
/// into a large, sampled or zero-size block) takes the out-of-line path, which also lets
/// calls from mie's own code and `checked_calls=0` through.
#[inline(always)]
pub fn check(p: usize, len: usize, access: Access, func: &'static str, ret_addr: usize) {
    if len == 0 || known_inside(p, len, access) {
        return;
    }
    check_unhinted(p, len, access, func, ret_addr);
}

/// `check` past the hint: the pointer is tracked, checks are on, `len` is not 0.
#[inline(always)]
fn check_unhinted(p: usize, len: usize, access: Access, func: &'static str, ret_addr: usize) {
    let g = crate::heap::globals();
    let a = tag::untag(p);
    // The last large block a checked call was in: a small block may have taken `access`'s
    // hint since (sqlite copies between small blocks and its big page buffers in turn).
    if hints().is_some_and(|h| h.inside(LARGE, a, len)) {
        return;
    }
    if let Some(b) = small_fit(g, a, len) {
        if let Some(h) = hints() {
            h.set(access as usize, b);
        }
        return;
    }
    check_tracked(p, len, access, func, ret_addr);
}

/// The live small block that `[a, a + len)` (untagged, tracked) lies inside, as a hint for
/// the next call about it; None when the range is not inside one (a large, sampled or
/// freed block, an overflow, or not a block at all: `check_tracked` tells which).
#[inline(always)]
fn small_fit(g: &crate::heap::Globals, a: usize, len: usize) -> Option<Hint> {
    // Only a live record counts: a slab never made need not be asked about (`block_of_record`).
    let (s, k, r) = small_slot_of(g, SlabMeta::block_of_record(&g.geo, a)?)?;
    let size = (k.size as usize).wrapping_sub(record::slack(r));
    if record::is_live(r) && s.interior.checked_add(len).is_some_and(|end| end <= size) {
        return Some(Hint::new(a - s.interior, size, s.m.rec_addr(k, s.slot), r, k.wide));
    }
    None
}

/// Whether `[p, p + len)` is surely fine without a full check: outside mie's memory, checks
/// off, or inside the block of this thread's last checked `access` whose record has not
/// changed since (`Hint`). False means only: ask `check`.
#[inline(always)]
pub fn known_inside(p: usize, len: usize, access: Access) -> bool {
    to_check(p).is_none_or(|(_, a)| hints().is_some_and(|h| h.inside(access as usize, a, len)))
}

/// The globals and `p` untagged, when `p` may be in mie's memory and checks are on; None
/// when there is nothing to check.
#[inline(always)]
fn to_check(p: usize) -> Option<(&'static crate::heap::Globals, usize)> {
    let g = crate::heap::globals();
    let a = tag::untag(p);
    (g.opts.checked_calls && g.geo.tracks(a)).then_some((g, a))
}

/// The common case of a checked copy, with no decode: each range, a write at `w` and a read
/// at `r` of `len` bytes, is inside the block of this thread's hint for its access, or
/// outside mie's memory (asked second: a stack range pays a few instructions more, a heap
/// range none). Goes on with `hit()`, or with `miss(where it stopped)` for `copy_learn`:
/// `WRITE_MISS` (the write range missed its hint, or a signal handler changed the hints
/// while they were read; the read range was not asked), `READ_MISS` (the read range
/// missed; the write range is fine), `NO_CACHE`; straight from
/// each test, so the caller's tail calls are the branches' own (no answer built and tested
/// again). Small enough to need no saved register, so the caller tail-calls the C
/// library's copy.
#[inline(always)]
pub fn copy_hinted<T>(w: usize, r: usize, len: usize, hit: impl FnOnce() -> T, miss: impl FnOnce(u32) -> T) -> T {
    let geo = &crate::heap::globals().geo;
    let (wa, ra) = (tag::untag(w), tag::untag(r));
    let Some(hs) = hints() else {
        // (A thread that has not allocated yet.)
        return if geo.tracks(wa) || geo.tracks(ra) { miss(NO_CACHE) } else { hit() };
    };
    let was = hs.count();
    let [hr, hw, _] = &hs.h;
    if !hw.inside(wa, len) && geo.tracks(wa) {
        return miss(WRITE_MISS);
    }
    if !hr.inside(ra, len) && geo.tracks(ra) {
        return miss(READ_MISS);
    }
    // (Both hints read while no signal handler changed them: the write range is asked
    // again when one did.)
    if !hs.same(was) {
        return miss(WRITE_MISS);
    }
    hit()
}

/// `copy_hinted`'s answers (see there).
pub const WRITE_MISS: u32 = 1;
pub const READ_MISS: u32 = 2;
pub const NO_CACHE: u32 = 3;

/// `copy_hinted` for one range (`memset`): true when it is surely fine.
#[inline(always)]
pub fn hinted(p: usize, len: usize, access: Access) -> bool {
    let a = tag::untag(p);
    if !crate::heap::globals().geo.tracks(a) {
        return true;
    }
    hints().is_some_and(|h| h.inside(access as usize, a, len))
}

/// After `copy_hinted` answered `miss`: whether the range that missed its hint is inside a
/// live small block, found now by a decode and remembered in the hint for the next call,
/// and the read range too when `copy_hinted` stopped before it (a range it passed is fine
/// already). Checks off: true. False means only: ask `check` for each range (it finds the
/// other kinds of block and reports what is wrong).
#[inline(always)]
pub fn copy_learn(w: usize, r: usize, len: usize, miss: u32) -> bool {
    let g = crate::heap::globals();
    if !g.opts.checked_calls {
        return true;
    }
    let Some(hs) = hints() else { return false };
    if miss == NO_CACHE {
        return false;
    }
    const R: usize = Access::Read as usize;
    const W: usize = Access::Write as usize;
    let ra = tag::untag(r);
    if miss == READ_MISS {
        // A copy inside one block (memmove within a buffer): the write's hint holds it.
        return hs.inside(W, ra, len) || learn(g, hs, R, ra, len) || hs.inside(LARGE, ra, len);
    }
    // The write range missed (or a signal handler changed the hints); the read range was
    // not asked.
    let wa = tag::untag(w);
    let Some(b) = small_fit(g, wa, len) else {
        return (hs.inside(W, wa, len) || hs.inside(LARGE, wa, len))
            && (hs.inside(R, ra, len) || hs.inside(LARGE, ra, len) || !g.geo.tracks(ra) || learn(g, hs, R, ra, len));
    };
    // The read range in the block just found (a copy inside one block): no second decode,
    // and both hints hold it.
    if left_in(b.start, b.size, ra).is_some_and(|left| len <= left) {
        hs.set_in(&[W, R], b);
        return true;
    }
    hs.set(W, b);
    if hs.inside(R, ra, len) || !g.geo.tracks(ra) {
        return true;
    }
    learn(g, hs, R, ra, len)
}

/// `copy_learn` for one range (`memset`), after `hinted` said false.
#[inline(always)]
pub fn learn_one(p: usize, len: usize, access: Access) -> bool {
    let g = crate::heap::globals();
    if !g.opts.checked_calls {
        return true;
    }
    let a = tag::untag(p);
    hints().is_some_and(|h| learn(g, h, access as usize, a, len) || h.inside(LARGE, a, len))
}

/// `[a, a + len)` (untagged, tracked) is inside a live small block, which hint `i` then
/// holds.
#[inline(always)]
fn learn(g: &crate::heap::Globals, h: &mut Hints, i: usize, a: usize, len: usize) -> bool {
    match small_fit(g, a, len) {
        Some(b) => {
            h.set(i, b);
            true
        }
        None => false,
    }
}

/// The live large block that `[a, a + len)` (untagged) lies inside, as a hint: remembered
/// by the large blocks' generation, read before the lookup (a free meanwhile leaves the
/// hint stale).
#[inline(always)]
fn large_fit(a: usize, len: usize) -> Option<Hint> {
    if !large::maybe_live(a) {
        return None;
    }
    let gen = large::GENERATION.load(Ordering::Acquire);
    let (start, size) = large::live_block_containing(a)?;
    // (The block contains `a`: start <= a.)
    (a - start).checked_add(len).is_some_and(|end| end <= size).then(|| Hint::new(start, size, &large::GENERATION as *const _ as usize, gen, true))
}

/// The index of `Hints` that holds the last large block a checked call was in.
const LARGE: usize = 2;

/// This thread's hints (None before it has a cache).
#[inline(always)]
fn hints() -> Option<&'static mut Hints> {
    let tcp = tls::get();
    // SAFETY: a live TLS word is this thread's own cache, which lives as long as the
    // thread; its hints are used only here, by this thread, one reference at a time.
    (tcp > tcache::DEAD).then(|| unsafe { &mut (*(tcp as *mut tcache::TCache)).hints })
}

/// Whether `a` (untagged) may lie in memory mie hands out (and checks are on): one compare.
/// Before initialisation nothing is tracked.
#[inline(always)]
pub fn tracked(a: usize) -> bool {
    let g = crate::heap::globals();
    g.opts.checked_calls && g.geo.tracks(a)
}

/// Whether a call from `ret_addr` about `p` is checked at all: the heap is ready, the
/// caller is not mie itself, and `checked_calls` is on.
#[inline(always)]
fn checking(ret_addr: usize) -> bool {
    STATE.load(Ordering::Acquire) == READY && !from_mie(ret_addr) && crate::heap::globals().opts.checked_calls
}

/// The full check: where `p` is, and a report if the range leaves its block.
#[cold]
#[inline(never)]
fn check_tracked(p: usize, len: usize, access: Access, func: &'static str, ret_addr: usize) {
    // A range inside a live large block: remembered like a small block, by the large
    // blocks' generation (read before the lookup: a free meanwhile leaves the hint stale).
    // Any large block's free or resize makes every large hint stale: a program that grows a
    // big buffer by `realloc` between its copies (python's json writer) finds it here again
    // with one lookup.
    let a = tag::untag(p);
    if let Some(b) = large_fit(a, len) {
        // Remembered twice: as `access`'s hint (the entry of the next call asks it) and as
        // the last large block (asked when a small block has taken that hint since: sqlite
        // copies between small blocks and its big page buffers in turn).
        if let Some(h) = hints() {
            h.set_in(&[access as usize, LARGE], b);
        }
        return;
    }
    let fits = match place(p) {
        Place::Unknown => true,
        Place::Live { start, size } => (tag::untag(p) - start).checked_add(len).is_some_and(|end| end <= size),
        Place::Freed { .. } => false,
    };
    if fits || !checking(ret_addr) {
        return;
    }
    let a = tag::untag(p);
    match place(p) {
        Place::Unknown => {}
        Place::Live { start, size } if a - start < size => overflow(p, start, size, a - start, len, access, func, ret_addr),
        // Past the end of a live block, or in a free slot: if the range reaches a live block
        // in the next slot, it starts before that block (an underflow of it).
        Place::Live { start, size } | Place::Freed { start, size } => {
            if let Some((next, next_size)) = next_live(a, len) {
                underflow(p, next, next_size, len, access, func, ret_addr);
            }
            match place(p) {
                Place::Live { .. } => overflow(p, start, size, a - start, len, access, func, ret_addr),
                _ => freed(p, start, size, len, access, func, ret_addr),
            }
        }
    }
}

/// The first live small block after `a`'s slot that `[a, a + len)` reaches into (within
/// `a`'s slab): a range that starts in free slots or slack before a live block is an
/// underflow of that block (memcpy from `p - 32` with `p` an 8-byte block).
fn next_live(a: usize, len: usize) -> Option<(usize, usize)> {
    let g = crate::heap::globals();
    let loc = g.geo.decode(a)?;
    let k = &CLASSES[loc.class];
    let end = a.saturating_add(len);
    let mut next = a - loc.interior + k.size as usize;
    for _ in loc.slot + 1..k.nslots as usize {
        if end <= next {
            return None;
        }
        if let Place::Live { start, size } = place(next) {
            if start == next {
                return Some((start, size));
            }
        }
        next += k.size as usize;
    }
    None
}

/// How far a checked function called from `ret_addr` may scan from `p` for a terminator
/// (a string's NUL, memccpy's byte): to the end of `p`'s block (0 in a freed block) when
/// the call is checked, without limit otherwise. Scanning up to the limit and finding
/// nothing means the next read would overrun the block: `check` then reports it.
///
/// The block of the thread's last checked read answers while it is unchanged, as it does
/// for the range checks; a small block found by a decode becomes that hint (the string is
/// then read, and checked, through it: `strcpy` and the like).
#[inline(always)]
pub fn scan_limit(p: usize, ret_addr: usize) -> usize {
    let a = tag::untag(p);
    if !(tracked(a) && checking(ret_addr)) {
        return usize::MAX;
    }
    if let Some(h) = hints() {
        let was = h.count();
        if let Some(rest) = h.h[Access::Read as usize].rest(a).filter(|_| h.same(was)) {
            return rest;
        }
        if let Some(b) = small_fit(crate::heap::globals(), a, 1) {
            h.set(Access::Read as usize, b);
            return b.start + b.size - a;
        }
    }
    object_size(p)
}

fn verb(a: Access) -> &'static str {
    match a {
        Access::Read => "read",
        Access::Write => "write",
    }
}

fn describe(o: &mut dyn Write, start: usize, state: &str) {
    let g = crate::heap::globals();
    match g.geo.decode(start) {
        Some(l) => describe_slot(o, &l, start, state),
        None => {
            let what = if sample::owns(start) {
                "guarded sample slot"
            } else if zero::owns(start) {
                "zero-size block (malloc(0)): no byte may be accessed"
            } else {
                "large allocation (own mapping)"
            };
            let _ = writeln!(o, "  block {start:#x}: {what}");
            crate::heap::checks::stacks::print(o, start, "");
        }
    }
}

#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn overflow(p: usize, start: usize, size: usize, off: usize, len: usize, access: Access, func: &'static str, ret_addr: usize) -> ! {
    report::fatal(Kind::HeapBufferOverflow, p, func, |o| {
        let over = off.saturating_add(len) - size;
        let _ = writeln!(
            o,
            "  {func} would {} {len} bytes at offset {off} of the {size}-byte block at {start:#x}: {over} byte{} past its end",
            verb(access),
            if over == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            o,
            "  {}",
            match access {
                Access::Write => "stopped before the copy: no byte was written",
                Access::Read => "stopped before reading past the end of the block",
            }
        );
        describe(o, start, "live");
        report::write_code_addr(o, "called from", ret_addr);
    })
}

#[cold]
#[inline(never)]
fn underflow(p: usize, start: usize, size: usize, len: usize, access: Access, func: &'static str, ret_addr: usize) -> ! {
    report::fatal(Kind::HeapBufferUnderflow, p, func, |o| {
        let before = start - tag::untag(p);
        let _ = writeln!(
            o,
            "  {func} would {} {len} bytes starting {before} byte{} before the {size}-byte block at {start:#x}",
            verb(access),
            if before == 1 { "" } else { "s" }
        );
        let _ = writeln!(o, "  stopped before the access: the range starts in front of the block (in the slot or slots before it)");
        describe(o, start, "live");
        report::write_code_addr(o, "called from", ret_addr);
    })
}

#[cold]
#[inline(never)]
fn freed(p: usize, start: usize, size: usize, len: usize, access: Access, func: &'static str, ret_addr: usize) -> ! {
    report::fatal(Kind::UseAfterFree, p, func, |o| {
        let _ = writeln!(
            o,
            "  {func} would {} {len} bytes at offset {} of a freed (or never allocated) block (slot {start:#x}, {size} bytes)",
            verb(access),
            tag::untag(p) - start
        );
        let _ = writeln!(o, "  stopped before the access: a dangling pointer was passed in");
        describe(o, start, "free");
        report::write_code_addr(o, "called from", ret_addr);
    })
}
