//! The slow path of every release and query: finds out exactly what a pointer is (a live
//! small, sampled, zero-size or large block, or what else), reports anything wrong with a
//! clear message and stops the process. Never answers for a non-block, nor for a pointer
//! whose tag is not its block's: no oracle.

use core::fmt::Write;

use crate::heap::types::kind::Release;
use crate::heap::large::{self, LARGE};
use crate::heap::slab::layout::Loc;
use crate::heap::slab::pool;
use crate::heap::slab::record;
use crate::heap::slab::size_class::CLASSES;
use crate::heap::slab::meta::SlabMeta;
use crate::heap::{types::bucket, checks::canary, diagnose::foreign, slab::free, diagnose::mismatch, guarded::sample, checks::stacks, guarded::zero, Caller, Globals};
use crate::report::{self, Kind};
use crate::tag::{self, TagStore};

/// A validated live block.
pub enum Block {
    Small { loc: Loc, rec: u32, usable: usize },
    Large { entry: large::Info },
}

/// What a call does with the pointer it validates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Gives the block back (free, delete, realloc): a freed block is a double free.
    Release,
    /// Only asks about it (malloc_usable_size): a freed block is a use after free.
    Query,
}

/// The full free: every pointer the fast path did not take.
#[inline(never)]
pub fn free_full(p: *mut u8, who: Caller, r: Release) {
    let raw = p as usize;
    let addr = tag::untag(raw);
    let Some(g) = crate::heap::ensure_init() else { invalid(addr, who, Use::Release, "mie's heap is not initialised") };
    if g.opts.guard {
        if let Some(e) = crate::heap::guarded::guard::lookup(addr) {
            if !e.is_live() {
                crate::heap::guarded::guard::bad_release(e, addr, who);
            }
            check_release(g, addr, who, r, e.kind, e.size, None);
            return crate::heap::guarded::guard::free(g, e, who);
        }
        // Inside a guarded block (they live in the large-block window; a block that came from
        // the ordinary heap when guard mode ran out of mappings is not looked for here).
        let (lo, hi) = g.geo.large_window;
        if addr >= lo && addr < hi && LARGE.lookup(addr).is_none() {
            if let Some(e) = crate::heap::guarded::guard::containing(addr).filter(|e| addr.wrapping_sub(e.p) < e.size.max(1)) {
                crate::heap::guarded::guard::bad_release(e, addr, who);
            }
        }
    }
    if sample::owns(addr) {
        let (size, _, kind) = sample::validate(addr, who.func, who.ret_addr, true);
        check_release(g, addr, who, r, kind, size, None);
        return sample::free(addr, &g.canary, who.func, who.ret_addr);
    }
    if zero::owns(addr) {
        zero::validate(addr, who.func, who.ret_addr, true);
        check_release(g, addr, who, r, crate::heap::types::kind::MALLOC, 0, None);
        return zero::free(addr, who.func, who.ret_addr);
    }
    if r.kind == crate::heap::types::kind::NEW || r.kind == crate::heap::types::kind::NEW_ALIGNED {
        array_cookie_check(g, addr, who, r);
    }
    match validate(g, raw, who, Use::Release) {
        Block::Small { loc, rec, usable } => {
            check_release(g, addr, who, r, record::kind(rec), usable, Some(&loc));
            let m = SlabMeta::at(&g.geo, &CLASSES[loc.class], addr);
            if g.opts.canary {
                check_small_canary(g, addr, raw, usable, &loc, m, rec, who);
            }
            free::release_valid(g, raw, addr, loc, m, rec, usable, who)
        }
        Block::Large { entry } => {
            check_release(g, addr, who, r, entry.kind, entry.req, None);
            free_large(g, entry.addr, entry, who)
        }
    }
}

/// `delete p` of an array from `new T[n]` whose elements have a destructor: the compiler put
/// the element count (the array cookie: 8 bytes, 16 on arm64) before the first element and
/// passes the element's address, inside the block. Named for what it is, before the
/// interior pointer is (freeing it would corrupt the heap: always fatal).
#[cold]
fn array_cookie_check(g: &Globals, p: usize, who: Caller, r: Release) {
    use crate::heap::types::kind::{NEW_ARRAY, NEW_ARRAY_ALIGNED};
    let (start, kind, size, loc) = if let Some(l) = g.geo.decode(p).filter(|l| matches!(l.interior, 8 | 16)) {
        let k = &CLASSES[l.class];
        if l.bucket > g.keys.pointer_buckets as usize || !pool::slab_exists(l.region, l.slab) || l.slot >= k.nslots as usize {
            return;
        }
        let rec = SlabMeta::of(&g.geo, k, l.region, l.slab).rec(k, l.slot);
        if !record::is_live(rec) {
            return;
        }
        (p - l.interior, record::kind(rec), (k.size as usize).saturating_sub(record::slack(rec)), Some(l))
    } else if let Some(e) = LARGE.containing(p).filter(|e| e.is_live() && matches!(p.wrapping_sub(e.addr), 8 | 16)) {
        (e.addr, e.kind, e.req, None)
    } else {
        return;
    };
    if kind != NEW_ARRAY && kind != NEW_ARRAY_ALIGNED {
        return;
    }
    report::fatal(Kind::AllocKindMismatch, p, who.func, |o| {
        let _ = writeln!(
            o,
            "  {}() of an array allocated with {} (release it with delete[]): the pointer is {} bytes into the block at {start:#x}, past the array cookie where the compiler keeps the element count (the elements have a destructor)",
            crate::heap::types::kind::released_by(r.kind),
            crate::heap::types::kind::allocated_by(kind),
            p - start
        );
        match loc {
            Some(l) => describe_slot(o, &l, start, "live"),
            None => {
                let _ = writeln!(o, "  block {start:#x}: {size} bytes requested, large allocation (own mapping), state: live");
            }
        }
        stacks::print(o, start, "");
        report::write_code_addr(o, "called from", who.ret_addr);
    })
}

/// Check that the block (`kind`, requested `size`, at `p`) may be released as `r` says; a
/// mismatch is reported, and stops the process unless it is harmless (see `mismatch`).
#[inline]
pub fn check_release(g: &Globals, p: usize, who: Caller, r: Release, kind: u8, size: usize, loc: Option<&Loc>) {
    if !r.accepts(p, kind, size) {
        mismatch::on_mismatch(p, who, r, kind, size, loc, g.opts.alloc_dealloc_mismatch);
    }
}

/// Resolve `raw` (as the caller passed it, tag included) to a live block or report and stop.
pub fn validate(g: &Globals, raw: usize, who: Caller, how: Use) -> Block {
    let p = tag::untag(raw);
    if let Some(loc) = g.geo.decode(p) {
        let k = &CLASSES[loc.class];
        if loc.bucket > g.keys.pointer_buckets as usize || !pool::slab_exists(loc.region, loc.slab) {
            invalid(p, who, how, "the address is inside mie's heap reservation but in no slab that exists");
        }
        if loc.slot >= k.nslots as usize {
            invalid(p, who, how, "the address is in the unused tail of a slab, not in any block");
        }
        let m = SlabMeta::at(&g.geo, k, p);
        let rec = m.rec(k, loc.slot);
        let state = state_name(rec);
        if loc.interior != 0 {
            let start = p - loc.interior;
            let kind = if how == Use::Release { Kind::InvalidFree } else { Kind::InvalidPointer };
            report::fatal(kind, p, who.func, |o| {
                let _ = writeln!(o, "  pointer is {} bytes inside the block at {start:#x}, not at its start", loc.interior);
                describe_slot(o, &loc, start, state);
                report::write_code_addr(o, "called from", who.ret_addr);
            });
        }
        if !record::is_live(rec) {
            let never = record::state(rec) == record::FREE_CLEAN;
            let kind = match (how, never) {
                (Use::Release, false) => Kind::DoubleFree,
                (Use::Release, true) => Kind::InvalidFree,
                (Use::Query, false) => Kind::UseAfterFree,
                (Use::Query, true) => Kind::InvalidPointer,
            };
            report::fatal(kind, p, who.func, |o| {
                if never {
                    let _ = writeln!(o, "  no block was ever allocated at this address (a slot that was never handed out)");
                } else if record::state(rec) == record::REMOTE_FREED {
                    let _ = writeln!(o, "  the block is not allocated: another thread already freed it");
                } else {
                    let _ = writeln!(o, "  the block is not allocated: it was already freed");
                }
                if how == Use::Query {
                    let _ = writeln!(o, "  {}() asked about it: only a live block can be asked about", who.func);
                }
                describe_slot(o, &loc, p, state);
                report::write_code_addr(o, "called from", who.ret_addr);
            });
        }
        if tag::enabled() && tag::tag_of(raw) != record::tag(rec) {
            let kind = if how == Use::Release { Kind::InvalidFree } else { Kind::InvalidPointer };
            let mem = tag::hw().load(p);
            report::fatal(kind, raw, who.func, |o| {
                let _ = writeln!(
                    o,
                    "  tag mismatch: the pointer carries tag {:#x}, the block's memory tag is {mem:#x} (a stale or forged pointer)",
                    tag::tag_of(raw)
                );
                describe_slot(o, &loc, p, "live");
                report::write_code_addr(o, "called from", who.ret_addr);
            });
        }
        let usable = (k.size as usize).saturating_sub(record::slack(rec));
        return Block::Small { loc, rec, usable };
    }
    if tag::enabled() && tag::tag_of(raw) != 0 {
        invalid(raw, who, how, "a tagged pointer that is not in mie's heap (large blocks are untagged)");
    }
    match LARGE.lookup(p) {
        Some(e) if e.is_live() => Block::Large { entry: e },
        Some(e) => {
            let kind = if how == Use::Release { Kind::DoubleFree } else { Kind::UseAfterFree };
            report::fatal(kind, p, who.func, |o| {
                let _ = writeln!(o, "  large block of {} bytes was already freed (it is in the large quarantine)", e.req);
                stacks::print(o, p, "");
                report::write_code_addr(o, "called from", who.ret_addr);
            })
        }
        None if LARGE.was_freed(p) => {
            let kind = if how == Use::Release { Kind::DoubleFree } else { Kind::UseAfterFree };
            report::fatal(kind, p, who.func, |o| {
                let _ = writeln!(o, "  a large block at this address was freed (its quarantine is over: its memory is unmapped)");
                report::write_code_addr(o, "called from", who.ret_addr);
            })
        }
        None => large_elsewhere(p, who, how),
    }
}

/// A pointer that is not the start of a large block: inside a live one, or in the part of
/// the large-block window handed out before (a block freed long ago), or not mie's at all.
fn large_elsewhere(p: usize, who: Caller, how: Use) -> ! {
    if let Some(e) = LARGE.containing(p).filter(|e| e.is_live() && p > e.addr && p - e.addr < e.req) {
        let kind = if how == Use::Release { Kind::InvalidFree } else { Kind::InvalidPointer };
        report::fatal(kind, p, who.func, |o| {
            let _ = writeln!(o, "  pointer is {} bytes inside the block at {:#x}, not at its start", p - e.addr, e.addr);
            let _ = writeln!(o, "  block {:#x}: {} bytes requested, large allocation (own mapping), state: live", e.addr, e.req);
            stacks::print(o, e.addr, "");
            report::write_code_addr(o, "called from", who.ret_addr);
        })
    }
    if LARGE.handed_out(p) && LARGE.containing(p).is_none() {
        // mie hands a large-block address out once (until its window wraps round): this one
        // belonged to a block that was freed, its quarantine long over.
        let start = p.is_multiple_of(crate::platform::page_size());
        let kind = match (how, start) {
            (Use::Release, true) => Kind::DoubleFree,
            (Use::Release, false) => Kind::InvalidFree,
            (Use::Query, _) => Kind::UseAfterFree,
        };
        report::fatal(kind, p, who.func, |o| {
            if start {
                let _ = writeln!(o, "  a large block at this address was freed before (its quarantine is over and its memory unmapped; mie never gives a large-block address out twice)");
            } else {
                let _ = writeln!(o, "  the address is inside a large block that was freed (its memory is unmapped): not the start of any block");
            }
            stacks::print(o, p, "");
            report::write_code_addr(o, "called from", who.ret_addr);
        })
    }
    match () {
        _ if foreign::in_libc_brk_heap(p) => invalid(
            p,
            who,
            how,
            "not a block allocated by mie: it lies in the C library's own heap, so the C library's malloc allocated it (a library loaded with dlopen(RTLD_DEEPBIND) calls it directly, and handed the block over?)",
        ),
        _ => invalid(p, who, how, "not a block allocated by mie (stack, global or foreign memory)"),
    }
}

fn state_name(rec: u32) -> &'static str {
    match record::state(rec) {
        record::FREE_CLEAN => "never allocated",
        record::FREED => "free",
        record::REMOTE_FREED => "freed by another thread",
        _ => "live",
    }
}

/// A pointer that is no block: invalid-free for a release, invalid-pointer for a query.
pub fn invalid(p: usize, who: Caller, how: Use, why: &str) -> ! {
    let kind = if how == Use::Release { Kind::InvalidFree } else { Kind::InvalidPointer };
    report::fatal(kind, p, who.func, |o| {
        let _ = writeln!(o, "  {why}");
        report::write_code_addr(o, "called from", who.ret_addr);
    })
}

pub fn describe_slot(o: &mut dyn Write, l: &Loc, start: usize, state: &str) {
    let k = &CLASSES[l.class];
    let g = crate::heap::globals();
    let _ = write!(o, "  block {start:#x}: ");
    if state == "live" && pool::slab_exists(l.region, l.slab) {
        let m = SlabMeta::of(&g.geo, k, l.region, l.slab);
        let _ = write!(o, "{} bytes requested, ", (k.size as usize).saturating_sub(m.slack(k, l.slot)));
    }
    let _ = writeln!(
        o,
        "{}-byte slot (size class #{}), bucket {} ({}), slab {} slot {}, state: {}",
        k.size,
        l.class,
        l.bucket,
        if l.bucket == bucket::DATA_BUCKET { "data" } else { "pointer" },
        l.slab,
        l.slot,
        state
    );
    stacks::print(o, start, "");
}

/// The canary check of a small block being released. A broken canary while the block's
/// record has changed since it was validated is not an overflow: another thread released the
/// block meanwhile (and cleared its slot): a double free.
#[allow(clippy::too_many_arguments)]
pub fn check_small_canary(g: &Globals, p: usize, mem: usize, usable: usize, loc: &Loc, m: SlabMeta, rec: u32, who: Caller) {
    let k = &CLASSES[loc.class];
    let slot_size = k.size as usize;
    if tag::enabled() {
        crate::heap::slab::tcache::set_freeing(p);
    }
    // SAFETY: [mem, mem + slot_size) is the block's slot.
    let intact = unsafe { canary::small_intact(canary::pattern(&g.canary, p), mem, usable, slot_size) };
    if tag::enabled() {
        crate::heap::slab::tcache::set_freeing(0);
    }
    if intact {
        return;
    }
    if m.rec(k, loc.slot) != rec {
        concurrent_double_free(g, p, loc, who);
    }
    check_canary(g, p, mem, usable, slot_size - usable, Some(loc), who);
}

/// Check the canary of the block at `p` (untagged), reading through `mem` (its tagged pointer).
pub fn check_canary(g: &Globals, p: usize, mem: usize, usable: usize, slack: usize, loc: Option<&Loc>, who: Caller) {
    // The exit sweep (`sweep.rs`) checks blocks nobody released.
    let at_exit = &**who.func == "exit";
    let pat = canary::pattern(&g.canary, p);
    let bad = if loc.is_some() {
        // SAFETY: [mem, mem+usable+slack) is the block's slot.
        unsafe { canary::check_small(pat, mem, usable, usable + slack) }
    } else {
        // SAFETY: [mem+usable, ...) lies inside the large block's committed pages.
        unsafe { canary::check(pat, (mem + usable) as *const u8, slack.min(canary::MAX_CANARY)) }
    };
    if let (Some(off), Some(l)) = (bad, loc) {
        // Intact right after the block, broken only near the end of the slot, where the
        // next slot's live block starts: a write before that block, not past this one.
        let k = &CLASSES[l.class];
        let next = p + usable + slack;
        let m = SlabMeta::new(&g.geo, l.region, l.slab);
        if blames_next(off, slack) && l.slot + 1 < k.nslots as usize && m.is_live(k, l.slot + 1) {
            let next_loc = Loc { slot: l.slot + 1, ..*l };
            report::fatal(Kind::HeapBufferUnderflow, next, who.func, |o| {
                let _ = writeln!(
                    o,
                    "  a write {} byte{} before the block at {next:#x}: it landed in the canary at the end of the previous slot, whose bytes from the previous block's end up to there are intact",
                    slack - off,
                    if slack - off == 1 { "" } else { "s" }
                );
                describe_slot(o, &next_loc, next, "live");
                if at_exit {
                    let _ = writeln!(o, "  found at exit, in the canary of the block before it ({p:#x}, {usable} bytes), which was never freed");
                } else {
                    let _ = writeln!(o, "  found when the block before it ({p:#x}, {usable} bytes) was released");
                    report::write_code_addr(o, "detected in a call from", who.ret_addr);
                }
            });
        }
    }
    if let Some(off) = bad {
        overflow(p, usable, off, loc, if at_exit { Found::AtExit } else { Found::Released }, who);
    }
}

/// Whether a broken canary (first bad byte at `off` of `slack`) is a write before the next
/// slot's block rather than past this one: the bytes right after this block are intact and
/// the damage lies in the slot's last `TAIL` bytes, where the next block starts.
fn blames_next(off: usize, slack: usize) -> bool {
    off > 0 && off + canary::TAIL >= slack
}

/// When an overflow was found.
#[derive(Clone, Copy)]
enum Found {
    /// At the block's release.
    Released,
    /// By the exit sweep (the block was never freed).
    AtExit,
    /// At the release of the block in the next slot, whose start check reads this canary.
    NextReleased(usize),
}

/// The exit sweep found the canary of the large block at `p` (`usable` bytes) broken from
/// byte `off` on.
#[cold]
pub fn large_overflow_at_exit(p: usize, usable: usize, off: usize) -> ! {
    overflow(p, usable, off, None, Found::AtExit, crate::caller!("exit", 0))
}

/// Report a write `off` bytes past the end of the `usable`-byte block at `p`.
fn overflow(p: usize, usable: usize, off: usize, loc: Option<&Loc>, found: Found, who: Caller) -> ! {
    report::fatal(Kind::HeapBufferOverflow, p, who.func, |o| {
        let _ = writeln!(
            o,
            "  the slack canary after the block was overwritten: byte {} past the end of the {}-byte block (address {:#x})",
            off,
            usable,
            p + usable + off
        );
        match loc {
            Some(l) => describe_slot(o, l, p, "live"),
            None => {
                let _ = writeln!(o, "  block {p:#x}: {usable} bytes requested, large allocation (own mapping)");
                stacks::print(o, p, "");
            }
        }
        match found {
            Found::AtExit => {
                let _ = writeln!(o, "  found at exit: the block was never freed, so no free checked its canary before");
            }
            Found::Released => report::write_code_addr(o, "detected in a call from", who.ret_addr),
            Found::NextReleased(next) => {
                let _ = writeln!(o, "  found when the block after it ({next:#x}) was released: its start check reads this canary");
                report::write_code_addr(o, "detected in a call from", who.ret_addr);
            }
        }
        let _ = writeln!(o, "  hint: a write ran past the end of this block (linear overflow / off-by-one)");
    })
}

/// The bytes just before the block at `p` (the end of the previous slot, `prev` its record)
/// were overwritten: found when the block is freed.
#[cold]
#[inline(never)]
pub fn underflow(g: &Globals, p: usize, loc: Loc, prev: u32, who: Caller, collected: bool) -> ! {
    let prev_loc = Loc { slot: loc.slot - 1, interior: 0, ..loc };
    blame_previous(g, p, p - CLASSES[loc.class].size as usize, prev, &prev_loc, who);
    report::fatal(Kind::HeapBufferUnderflow, p, who.func, |o| {
        let k = &CLASSES[loc.class];
        let prev_start = p - k.size as usize;
        if record::is_live(prev) {
            let _ = writeln!(
                o,
                "  the bytes just before the block (the canary at the end of the previous slot, {prev_start:#x}) were overwritten, and the previous block's canary is intact right after its end: a write before the start of this block"
            );
        } else {
            let _ = writeln!(
                o,
                "  the bytes just before the block (the end of the free previous slot, {prev_start:#x}) are not zero: a write before the start of this block"
            );
        }
        underflow_found(o, &loc, p, who, collected);
    })
}

/// The end of an underflow report: the block, and where the write was found (at its free,
/// or when its slab's owner collected it after another thread freed it).
fn underflow_found(o: &mut dyn Write, loc: &Loc, p: usize, who: Caller, collected: bool) {
    if !collected {
        describe_slot(o, loc, p, "live");
        report::write_code_addr(o, "detected in a call from", who.ret_addr);
        return;
    }
    describe_slot(o, loc, p, "free");
    let _ = writeln!(o, "  found when the thread that owns the block's slab took the block back after another thread freed it: the write came before that free");
    report::write_code_addr(o, "detected in a call from", 0);
}

/// The bytes before the block at `p` (the end of the slot at `prev_start`, `prev_loc`, record `prev`)
/// were found overwritten. When that slot holds a live block whose canary is broken from
/// right after its end, the write ran past that block: report it as its overflow (returns
/// otherwise: the write came from before `p`).
fn blame_previous(g: &Globals, p: usize, prev_start: usize, prev: u32, prev_loc: &Loc, who: Caller) {
    if !record::is_live(prev) {
        return;
    }
    let slot_size = CLASSES[prev_loc.class].size as usize;
    let slack = record::slack(prev).min(slot_size);
    let usable = slot_size - slack;
    // SAFETY: [prev_start, prev_start + slot_size) is the slot before p in the same region,
    // mapped (the caller read its end); no tags (this check runs without MTE).
    let bad = unsafe { canary::check_small(canary::pattern(&g.canary, prev_start), prev_start, usable, slot_size) };
    if let Some(off) = bad.filter(|&off| !blames_next(off, slack)) {
        overflow(prev_start, usable, off, Some(prev_loc), Found::NextReleased(p), who);
    }
}

/// As `underflow`, for the first slot of a slab: the bytes before it are the end of the
/// slab before (`prev` is its last slot's record; None: its unused tail).
#[cold]
#[inline(never)]
pub fn underflow_first_slot(p: usize, loc: Loc, last_start: usize, prev: Option<u32>, who: Caller, collected: bool) -> ! {
    if let Some(r) = prev {
        let last = CLASSES[loc.class].nslots as usize - 1;
        blame_previous(crate::heap::globals(), p, last_start, r, &Loc { slab: loc.slab - 1, slot: last, interior: 0, ..loc }, who);
    }
    report::fatal(Kind::HeapBufferUnderflow, p, who.func, |o| {
        let what = match prev {
            Some(r) if record::is_live(r) => format_args!("the canary at the end of the last slot of the slab before, {last_start:#x}"),
            Some(_) => format_args!("the end of the free last slot of the slab before, {last_start:#x}, which should be zero"),
            None => format_args!("the unused tail of the slab before, which is never written"),
        };
        let _ = writeln!(o, "  the bytes just before the block ({what}) were overwritten: a write before the start of this block, the first of its slab");
        underflow_found(o, &loc, p, who, collected);
    })
}

/// Two releases of one block raced, and this one lost.
#[cold]
#[inline(never)]
pub fn concurrent_double_free(g: &Globals, p: usize, loc: &Loc, who: Caller) -> ! {
    let _ = g;
    report::fatal(Kind::DoubleFree, p, who.func, |o| {
        let _ = writeln!(o, "  the block was freed concurrently by another thread");
        describe_slot(o, loc, p, "free");
        report::write_code_addr(o, "called from", who.ret_addr);
    })
}

/// Found by the owner when it collected a remote free: the block was also freed by the
/// owner at the same time (the owner's free overwrote the remote mark).
#[cold]
#[inline(never)]
pub fn racing_double_free(g: &Globals, p: usize, region: usize, slab: usize, slot: usize) -> ! {
    let l = g.geo.decode(p).unwrap_or(Loc { region, class: region / crate::heap::slab::layout::BUCKET_SLOTS, bucket: 0, slab, slot, interior: 0 });
    report::fatal(Kind::DoubleFree, p, "free", |o| {
        let _ = writeln!(o, "  the block was freed twice at the same time, by two threads (found when the second free was collected)");
        describe_slot(o, &l, p, "free");
    })
}

pub fn free_large(g: &Globals, p: usize, e: large::Info, who: Caller) {
    if g.opts.canary {
        check_canary(g, p, p, e.req, e.body_len - e.req, None, who);
    }
    if g.opts.stacks {
        stacks::on_free(p);
    }
    if let Err(e) = LARGE.free(p, g.opts.large_quarantine as usize, g.opts.large_quarantine_bytes) {
        report::fatal(Kind::DoubleFree, p, who.func, |o| {
            let _ = writeln!(o, "  large block of {} bytes was freed concurrently or twice", e.req);
            report::write_code_addr(o, "called from", who.ret_addr);
        });
    }
}
