//! The SIGSEGV handler. A fault is first *classified* (`classify`: reads allocator state
//! only, never waits on a lock, never allocates, and cannot panic or overflow for any
//! address), then the finding is *written* (`Finding::write`) into a fixed buffer and the
//! process stops. Faults that are not mie's go to the previous handler, and a SIGSEGV sent
//! with `kill`/`raise` ends the process exactly as it would without mie.

use core::fmt::Write;

use crate::heap::large::{self, Info};
use crate::heap::slab::layout::{Geometry, Loc};
use crate::heap::guarded::sample::{self, Slot};
use crate::heap::slab::size_class::CLASSES;
use crate::heap::slab::meta::SlabMeta;
use crate::heap::{describe_slot, globals, slab::pool, guarded::zero, READY, STATE};
use crate::platform;
use crate::report::{self, Kind};
use crate::tag::{self, TagStore};

pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;
pub const SEGV_MTESERR: i32 = 9;
/// Marks a `pc` that is the return address of the call that jumped into the heap.
const JUMPED: usize = 1 << 63;

pub fn install() {
    platform::install_handler(libc::SIGSEGV, on_segv);
    for sig in [libc::SIGBUS, libc::SIGFPE] {
        platform::install_handler(sig, on_other_fault);
    }
}

/// Re-install the handler if something replaced it since (a runtime's own SIGSEGV handler,
/// e.g. Rust std's stack-overflow guard, installed after ours); the replacement is chained.
/// Called when a thread attaches its cache: one syscall per new thread.
pub fn ensure_installed() {
    if platform::current_handler(libc::SIGSEGV) != on_segv as *const () as usize {
        install();
    }
}

/// SIGBUS and SIGFPE: never a heap error mie names, but a fault that ends the process gets
/// its line (what and where); then the signal takes its course.
extern "C" fn on_other_fault(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to SA_SIGINFO handlers.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code > 0 && platform::default_action(sig) {
        report::fatal_signal(sig, addr, platform::context_pc(uc));
    }
    // SAFETY: the arguments are the kernel's, passed on unchanged.
    unsafe { platform::chain(sig, info, uc) }
}

extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to SA_SIGINFO handlers.
    let code = unsafe { (*info).si_code };
    // A SIGSEGV sent by kill(), raise() or sigqueue() (si_code <= 0) is not a fault: its
    // si_addr is not an address. It ends the process as it would without mie.
    if code > 0 && STATE.load(core::sync::atomic::Ordering::Acquire) == READY {
        // SAFETY: as above; for a fault, si_addr is the faulting address.
        let addr = unsafe { (*info).si_addr() } as usize;
        // A fault inside the C library's own free or realloc: it read the chunk header it
        // expects before a block mie made. That is the finding, whatever the address is.
        if platform::default_action(libc::SIGSEGV) && crate::heap::diagnose::foreign::pc_in_libc_allocator(platform::context_pc(uc)) {
            crate::heap::diagnose::foreign::explain_fault();
        }
        if let Some(f) = classify(code, addr, platform::context_pc(uc), platform::context_link(uc)) {
            if f.is_fatal() {
                let mut o = report::Line::new();
                let kind = f.write(&mut o);
                crate::heap::diagnose::foreign::add_cause_if_libc_allocator(&mut o, platform::context_pc(uc));
                report::conclude(o, kind);
            }
            // Not mie's to stop (the program protected its own memory): say what happened
            // only if nobody else handles the signal, then let it take its course.
            if platform::default_action(libc::SIGSEGV) {
                let mut o = report::Line::new();
                f.write(&mut o);
                let _ = writeln!(o, "mie: not a heap error; the process gets the signal (SIGSEGV)");
                o.flush();
            }
        } else if platform::default_action(libc::SIGSEGV) {
            // A crash inside the C library's own allocator: a mie block may have reached it.
            // Anything else: at least what and where.
            if !crate::heap::diagnose::foreign::explain("the C library's allocator crashed (SIGSEGV)") {
                report::fatal_signal(libc::SIGSEGV, tag::strip(addr), platform::context_pc(uc));
            }
        }
    }
    // SAFETY: the arguments are the kernel's, passed on unchanged.
    unsafe { platform::chain(sig, info, uc) }
}

/// What a hit large mapping means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LargeHit {
    /// The guard page (or alignment space) before a live block.
    Before,
    /// The guard page after a live block.
    After,
    /// A freed (quarantined) block's inaccessible range.
    Freed,
}

/// A fault mie can explain. Every field is plain data copied out of the allocator's state
/// (it lives on the signal handler's stack: nothing may be boxed).
#[derive(Clone, Copy)]
#[allow(clippy::large_enum_variant)]
pub enum Finding {
    /// In the guarded sample area: the guard page after a slot, or a freed or unused slot.
    Sample { addr: usize, pc: usize, slot: Slot, guard: bool },
    /// In the zero-size area (`malloc(0)` addresses).
    Zero { addr: usize, pc: usize, block: usize, live: bool },
    /// In a large block's mapping, outside its accessible body.
    Large { addr: usize, pc: usize, e: Info, hit: LargeHit },
    /// Inside mapped memory of a block (small, large or sampled), where bounds and lifetime
    /// allow the access: it faulted for another reason. `exec`: the program jumped there.
    InBlock { addr: usize, pc: usize, start: usize, size: usize, live: bool, large: bool, exec: bool, loc: Option<Loc> },
    /// In the unmapped gap after the last slot of a guarded slab (`pool::slab_guarded`):
    /// `start`/`size` are the last slot's block (its slot, if free), `loc` its place.
    SlabGap { addr: usize, pc: usize, start: usize, size: usize, live: bool, loc: Loc },
    /// Inside mie's heap or metadata address ranges where nothing is mapped (or metadata,
    /// which no pointer should reach).
    Hole { addr: usize, pc: usize, meta: bool, exec: bool },
    /// In unmapped heap space just before the first slot of a slab whose block is live: a
    /// write (or read) before that block's start.
    SlabFront { addr: usize, pc: usize, start: usize, size: usize, loc: Loc },
    /// In or beside a block of guard mode (`guarded/guard.rs`).
    Guard { addr: usize, pc: usize, e: crate::heap::guarded::guard::Entry, exec: bool },
    /// In mie's large-block window, outside every block's mapping: `below` is the nearest
    /// block below the address (the likeliest one a too-large index came from).
    LargeArea { addr: usize, pc: usize, below: Option<Info>, exec: bool },
    /// A synchronous MTE tag-check fault.
    Tag(TagFault),
}

#[derive(Clone, Copy)]
pub struct TagFault {
    raw: usize,
    pc: usize,
    kind: Kind,
    ptag: u8,
    mtag: u8,
    /// The slot the address is in (None: not in a slab).
    loc: Option<Loc>,
    slot: usize,
    live: bool,
    /// The neighbouring block the pointer belongs to (overflow/underflow), or 0.
    origin: usize,
    /// For an access past the end of the pointer's own block, inside its slot (its slack):
    /// the block's end. 0 otherwise.
    own_end: usize,
    meta: bool,
}

/// Classify a fault: `code` is si_code, `raw` the fault address as delivered (tag bits
/// included with MTE), `pc` the faulting instruction, `link` the return address a call
/// would have left (where a jump into the heap came from). None: not about mie's memory.
pub fn classify(code: i32, raw: usize, pc: usize, link: usize) -> Option<Finding> {
    let addr = tag::strip(raw);
    let exec = tag::strip(pc) == addr && addr != 0;
    // For an execution fault, `pc` is the address itself: report where the jump came from.
    let pc = if exec && link != 0 { link | JUMPED } else { pc };
    if globals().opts.guard {
        if let Some(e) = crate::heap::guarded::guard::containing(addr) {
            return Some(Finding::Guard { addr, pc, e, exec });
        }
    }
    if let Some((slot, guard)) = sample::fault_view(addr) {
        if !guard && slot.is_live() && addr.wrapping_sub(slot.start()) < platform::page_size() {
            // The live slot's page is accessible: something else made this access fault.
            let (start, size) = (slot.start(), slot.size());
            return Some(Finding::InBlock { addr, pc, start, size, live: true, large: false, exec, loc: None });
        }
        return Some(Finding::Sample { addr, pc, slot, guard });
    }
    if let Some((block, live)) = zero::fault_view(addr) {
        return Some(Finding::Zero { addr, pc, block, live });
    }
    if code == SEGV_MTESERR && tag::enabled() {
        return Some(Finding::Tag(tag_fault(raw, pc)));
    }
    if code != SEGV_ACCERR && code != SEGV_MAPERR {
        return None;
    }
    if let Some(e) = large::LARGE.containing(addr) {
        let hit = if e.is_freed() {
            LargeHit::Freed
        } else if addr < e.addr {
            LargeHit::Before
        } else if addr.wrapping_sub(e.addr) >= e.body_len {
            LargeHit::After
        } else {
            let (start, size) = (e.addr, e.req);
            return Some(Finding::InBlock { addr, pc, start, size, live: true, large: true, exec, loc: None });
        };
        return Some(Finding::Large { addr, pc, e, hit });
    }
    let geo = &globals().geo;
    let (in_heap, in_meta) = (geo.holds_heap(addr), geo.holds_meta(addr));
    if !in_heap && !in_meta {
        let (lo, hi) = geo.large_window;
        if addr >= lo && addr < hi {
            return Some(Finding::LargeArea { addr, pc, below: large::LARGE.nearest_below(addr), exec });
        }
        return None;
    }
    if in_heap && code == SEGV_ACCERR {
        // Mapped slab memory (read-write): the program jumped into it, or changed its
        // protection itself.
        if let Some(l) = geo.decode(addr).filter(slot_exists) {
            let k = &CLASSES[l.class];
            let start = addr - l.interior;
            let m = SlabMeta::new(geo, l.region, l.slab);
            let live = m.is_live(k, l.slot);
            let size = if live { (k.size as usize).saturating_sub(m.slack(k, l.slot)) } else { k.size as usize };
            return Some(Finding::InBlock { addr, pc, start, size, live, large: false, exec, loc: Some(l) });
        }
    }
    if in_heap && !exec {
        if let Some(l) = geo.decode(addr).filter(|l| pool::slab_exists(l.region, l.slab) && l.slot >= CLASSES[l.class].nslots as usize) {
            // Past the last slot of a slab: the unmapped gap of a guarded slab.
            let k = &CLASSES[l.class];
            let last = Loc { slot: k.nslots as usize - 1, interior: 0, ..l };
            let start = geo.slot_addr(l.region, l.slab, last.slot);
            let m = SlabMeta::new(geo, l.region, l.slab);
            let live = m.is_live(k, last.slot);
            let size = if live { (k.size as usize).saturating_sub(m.slack(k, last.slot)) } else { k.size as usize };
            return Some(Finding::SlabGap { addr, pc, start, size, live, loc: last });
        }
    }
    if in_heap && !exec {
        // Just before the first slot of an existing slab (the slab before it was never
        // made, so nothing is mapped there): an underflow of that slot's block.
        // Slabs start on a page boundary: the next one above the address (in this region,
        // or the first slab of the next region).
        let pg = platform::page_size();
        let front = (addr | (pg - 1)) + 1;
        if let Some(l) = geo.decode(front).filter(|l| l.slot == 0 && l.interior == 0 && pool::slab_exists(l.region, l.slab)) {
            let k = &CLASSES[l.class];
            let m = SlabMeta::new(geo, l.region, l.slab);
            if m.is_live(k, 0) {
                let size = (k.size as usize).saturating_sub(m.slack(k, 0));
                return Some(Finding::SlabFront { addr, pc, start: front, size, loc: l });
            }
        }
        // In the gap at the end of a segment: past the last slot of the slab before it.
        if let Some(l) = geo.decode(addr) {
            let k = &CLASSES[l.class];
            let before = (Geometry::segment_usable_end(k, l.slab) >> k.slab_shift).wrapping_sub(1);
            if Geometry::is_gap(k, l.slab) && pool::slab_exists(l.region, before) {
                let last = Loc { slab: before, slot: k.nslots as usize - 1, interior: 0, ..l };
                let start = geo.slot_addr(l.region, before, last.slot);
                let m = SlabMeta::new(geo, l.region, before);
                let live = m.is_live(k, last.slot);
                let size = if live { (k.size as usize).saturating_sub(m.slack(k, last.slot)) } else { k.size as usize };
                return Some(Finding::SlabGap { addr, pc, start, size, live, loc: last });
            }
        }
    }
    Some(Finding::Hole { addr, pc, meta: in_meta, exec })
}

/// Is the decoded slot inside a slab that exists?
fn slot_exists(l: &Loc) -> bool {
    pool::slab_exists(l.region, l.slab) && l.slot < CLASSES[l.class].nslots as usize
}

/// The live block that an access at `slot` (slot index `i`) with pointer tag `ptag` most
/// likely ran out of: the first live slot to the left, past slots that hold no block, if it
/// carries the tag (true: an overflow), else the same to the right (false: an underflow).
/// At most 16 slots each way.
fn origin_across_free_slots(m: SlabMeta, k: &crate::heap::slab::size_class::ClassInfo, i: usize, slot: usize, ptag: u8) -> Option<(usize, bool)> {
    let size = k.size as usize;
    let left = (1..=16.min(i)).find(|&d| m.is_live(k, i - d)).map(|d| slot - d * size);
    if let Some(b) = left.filter(|&b| tag::hw().load(b) == ptag) {
        return Some((b, true));
    }
    let n = k.nslots as usize;
    let right = (1..=16).take_while(|&d| i + d < n).find(|&d| m.is_live(k, i + d)).map(|d| slot + d * size);
    right.filter(|&b| tag::hw().load(b) == ptag).map(|b| (b, false))
}

fn tag_fault(raw: usize, pc: usize) -> TagFault {
    let g = globals();
    let addr = tag::strip(raw);
    let ptag = tag::tag_of(raw);
    let mut f = TagFault { raw, pc, kind: Kind::TagCheckFault, ptag, mtag: 0, loc: None, slot: 0, live: false, origin: 0, own_end: 0, meta: false };
    let decoded = g.geo.decode(addr);
    if let Some(l) = decoded.filter(|l| pool::slab_exists(l.region, l.slab) && l.slot == CLASSES[l.class].nslots as usize) {
        // A slab's unused tail (shorter than a slot): past the end of its last slot.
        let k = &CLASSES[l.class];
        let last = addr - l.interior - k.size as usize;
        let m = SlabMeta::new(&g.geo, l.region, l.slab);
        let mtag = tag::hw().load(addr);
        if m.is_live(k, l.slot - 1) && tag::hw().load(last) == ptag {
            let last_loc = Loc { slot: l.slot - 1, interior: 0, ..l };
            return TagFault { kind: Kind::HeapBufferOverflow, mtag, loc: Some(last_loc), slot: last, live: true, origin: last, ..f };
        }
    }
    let Some(l) = decoded.filter(slot_exists) else {
        f.meta = g.geo.holds_meta(addr);
        f.kind = if f.meta { Kind::InvalidAccess } else { Kind::TagCheckFault };
        return f;
    };
    let mtag = tag::hw().load(addr);
    let k = &CLASSES[l.class];
    let size = k.size as usize;
    let slot = addr - l.interior;
    let m = SlabMeta::new(&g.geo, l.region, l.slab);
    // The block the pointer came from: the neighbour whose tag it carries, if any.
    let left = slot.checked_sub(size).filter(|_| l.slot > 0);
    let right = Some(slot + size).filter(|_| l.slot + 1 < k.nslots as usize);
    let from_left = left.is_some_and(|b| tag::hw().load(b) == ptag);
    let from_right = right.is_some_and(|b| tag::hw().load(b) == ptag);
    // A neighbour's tag tells an overflow (into a live block or into unused slot space);
    // the free tag a use after free; any other mismatch a stale pointer after reuse.
    // Both neighbours can carry the pointer's tag (they are not each other's neighbours):
    // then the nearer one is where the pointer came from.
    let nearer_right = from_right && (!from_left || right.is_some_and(|r| r.wrapping_sub(addr) <= addr.wrapping_sub(slot)));
    // An access in the first granule after a block that carries the pointer's tag is the
    // most common overflow of all (a few bytes past a block that fills its slot).
    // And symmetrically, the last granule before a block is the common underflow.
    let touching_left = from_left && addr - slot < tag::GRANULE;
    let touching_right = from_right && right.is_some_and(|r| r - addr <= tag::GRANULE);
    let (kind, origin) = if touching_right && (!touching_left || nearer_right) {
        (Kind::HeapBufferUnderflow, right.unwrap_or(0))
    } else if touching_left {
        (Kind::HeapBufferOverflow, left.unwrap_or(0))
    } else if mtag == tag::TAG_FREE {
        (Kind::UseAfterFree, 0)
    } else if nearer_right {
        (Kind::HeapBufferUnderflow, right.unwrap_or(0))
    } else if from_left {
        (Kind::HeapBufferOverflow, left.unwrap_or(0))
    } else if mtag == tag::TAG_OWNED {
        // Memory no block owns (a slot never handed out): no pointer may reach it but by
        // running out of its block. The nearest live block before it (past slots that hold
        // none) that carries the pointer's tag is where it came from; else after it.
        match origin_across_free_slots(m, k, l.slot, slot, ptag) {
            Some((o, true)) => (Kind::HeapBufferOverflow, o),
            Some((o, false)) => (Kind::HeapBufferUnderflow, o),
            None => (Kind::InvalidAccess, 0),
        }
    } else {
        (Kind::UseAfterFree, 0)
    };
    let live = m.is_live(k, l.slot);
    let rec = m.rec(k, l.slot);
    let end = slot + size.saturating_sub(crate::heap::slab::record::slack(rec));
    if live && crate::heap::slab::record::tag(rec) == ptag && addr >= end {
        // The block's own pointer, past its tagged granules: into its slot's slack.
        return TagFault { kind: Kind::HeapBufferOverflow, mtag, loc: Some(l), slot, live, origin: slot, own_end: end, ..f };
    }
    // This thread was releasing the block when its memory changed tag under it: another
    // thread released it at the same moment.
    let racing = kind == Kind::UseAfterFree && crate::heap::slab::tcache::freeing() == slot;
    let kind = if racing { Kind::DoubleFree } else { kind };
    TagFault { kind, mtag, loc: Some(l), slot, live, origin, ..f }
}

impl Finding {
    /// Whether mie stops the process for this finding. Only a fault inside a live block's
    /// accessible memory that is not an execution is not a heap error (the program changed
    /// the protection of its own memory, e.g. a garbage collector's write barrier).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Finding::InBlock { exec: false, live: true, .. })
    }

    /// The report kind.
    pub fn kind(&self) -> Kind {
        match *self {
            Finding::Sample { slot, guard, .. } => {
                if guard {
                    Kind::HeapBufferOverflow
                } else if slot.is_freed() {
                    Kind::UseAfterFree
                } else {
                    Kind::InvalidAccess
                }
            }
            Finding::Zero { .. } => Kind::ZeroSizeAccess,
            Finding::Large { hit: LargeHit::Freed, .. } => Kind::UseAfterFree,
            Finding::Large { hit: LargeHit::Before, .. } => Kind::HeapBufferUnderflow,
            Finding::Large { hit: LargeHit::After, .. } => Kind::HeapBufferOverflow,
            Finding::InBlock { exec: true, .. } | Finding::Hole { exec: true, .. } => Kind::HeapExecute,
            Finding::InBlock { live: false, .. } => Kind::UseAfterFree,
            Finding::InBlock { .. } => Kind::AccessFault,
            Finding::Hole { .. } => Kind::InvalidAccess,
            Finding::LargeArea { exec: true, .. } => Kind::HeapExecute,
            Finding::LargeArea { below: Some(e), .. } if e.is_live() => Kind::HeapBufferOverflow,
            Finding::LargeArea { .. } => Kind::InvalidAccess,
            Finding::SlabGap { .. } => Kind::HeapBufferOverflow,
            Finding::SlabFront { .. } => Kind::HeapBufferUnderflow,
            Finding::Guard { exec: true, .. } => Kind::HeapExecute,
            Finding::Guard { e, .. } if !e.is_live() => Kind::UseAfterFree,
            Finding::Guard { addr, e, .. } if addr >= e.p + e.size => Kind::HeapBufferOverflow,
            Finding::Guard { addr, e, .. } if addr < e.p => Kind::HeapBufferUnderflow,
            Finding::Guard { .. } => Kind::AccessFault,
            Finding::Tag(t) => t.kind,
        }
    }

    /// Write the report (headline and body, no closing line); returns its kind.
    pub fn write(&self, o: &mut dyn Write) -> Kind {
        let kind = self.kind();
        let pc_line = |o: &mut dyn Write, pc: usize| {
            if pc & JUMPED != 0 {
                report::write_code_addr(o, "jumped from a call returning to", pc & !JUMPED)
            } else {
                report::write_code_addr(o, "faulting instruction", pc)
            }
        };
        match *self {
            Finding::Sample { addr, pc, slot, guard } => {
                report::fault_headline(o, kind, addr, "guarded sample: the access hit an inaccessible page");
                let (start, size) = (slot.start(), slot.size());
                let state = if slot.is_live() { "live" } else { "freed" };
                if guard && start != 0 {
                    let past = addr.saturating_sub(start.saturating_add(size));
                    let _ = writeln!(o, "  {past} bytes past the end of the {size}-byte block at {start:#x} ({state})");
                } else if slot.is_freed() && addr.wrapping_sub(start) < size {
                    let _ = writeln!(o, "  {} bytes into the freed {size}-byte block at {start:#x}", addr - start);
                } else if slot.is_freed() {
                    let _ = writeln!(o, "  inside the freed guarded slot of the {size}-byte block at {start:#x}");
                } else {
                    let _ = writeln!(o, "  a guarded slot that holds no block: a wild pointer into mie's sample area");
                }
                pc_line(o, pc);
                slot.print_stacks(o);
            }
            Finding::Zero { addr, pc, block, live } => {
                report::fault_headline(o, kind, addr, "the access hit a zero-size block");
                let _ = writeln!(
                    o,
                    "  {} bytes into the zero-size block at {block:#x} ({}): malloc(0) gives no bytes to {}",
                    addr.wrapping_sub(block),
                    if live { "live" } else { "freed" },
                    if pc == addr { "execute" } else { "read or write" }
                );
                pc_line(o, pc);
            }
            Finding::Large { addr, pc, e, hit } => {
                report::fault_headline(o, kind, addr, "large block: the access hit an inaccessible page");
                match hit {
                    LargeHit::Freed if addr.wrapping_sub(e.addr) < e.req => {
                        let _ = writeln!(o, "  {} bytes into the freed {}-byte large block at {:#x}", addr - e.addr, e.req, e.addr);
                    }
                    LargeHit::Freed => {
                        let _ = writeln!(o, "  in the mapping of the freed {}-byte large block at {:#x}", e.req, e.addr);
                    }
                    LargeHit::Before => {
                        let _ = writeln!(o, "  {} bytes before the {}-byte large block at {:#x} (guard page)", e.addr.saturating_sub(addr), e.req, e.addr);
                    }
                    LargeHit::After => {
                        let past = addr.saturating_sub(e.addr.saturating_add(e.req));
                        let _ = writeln!(o, "  {past} bytes past the end of the {}-byte large block at {:#x} (guard page)", e.req, e.addr);
                    }
                }
                let what = if hit == LargeHit::Freed { "freed" } else { "live" };
                let _ = writeln!(o, "  block {:#x}: {} bytes requested, large allocation (own mapping), state: {what}", e.addr, e.req);
                crate::heap::checks::stacks::print(o, e.addr, "");
                pc_line(o, pc);
            }
            Finding::InBlock { addr, pc, start, size, live, large, exec, loc } => {
                let how = if exec { "the program jumped into heap memory" } else { "an access the page's protection does not allow" };
                report::fault_headline(o, kind, addr, how);
                let off = addr.wrapping_sub(start);
                let state = if live { "live" } else { "freed" };
                if exec {
                    let _ = writeln!(
                        o,
                        "  execution reached byte {off} of the {state} {size}-byte block at {start:#x}: heap memory is never executable (a corrupted function pointer or return address?)"
                    );
                } else if live {
                    let _ = writeln!(
                        o,
                        "  byte {off} of the live {size}-byte block at {start:#x} is within its bounds, but its page does not allow this access: the program changed the page's protection (mprotect)"
                    );
                } else {
                    let _ = writeln!(o, "  the block at {start:#x} was freed: access through a dangling pointer");
                }
                match loc {
                    Some(l) => describe_slot(o, &l, start, state),
                    None => {
                        let _ = writeln!(o, "  block {start:#x}: {size} bytes requested, {}", if large { "large allocation (own mapping)" } else { "guarded sample slot" });
                        crate::heap::checks::stacks::print(o, start, "");
                    }
                }
                pc_line(o, pc);
            }
            Finding::SlabGap { addr, pc, start, size, live, loc } => {
                report::fault_headline(o, kind, addr, "the access hit the guard after a slab's last slot");
                let past = addr.saturating_sub(start.saturating_add(size));
                if live {
                    let _ = writeln!(o, "  {past} bytes past the end of the {size}-byte block at {start:#x}: stopped at the access (the bytes up to the guard may have been written)");
                } else {
                    let _ = writeln!(
                        o,
                        "  {past} bytes past the end of the last slot of its slab ({start:#x}), which holds no block: an overflow that ran through it from a block before, or a pointer walked past its block"
                    );
                }
                describe_slot(o, &loc, start, if live { "live" } else { "free" });
                pc_line(o, pc);
            }
            Finding::Hole { addr, pc, meta, exec } => {
                let how = if exec {
                    "the program jumped into mie's heap"
                } else if meta {
                    "the access hit mie's metadata area"
                } else {
                    "the access hit unmapped space inside mie's heap"
                };
                report::fault_headline(o, kind, addr, how);
                if meta {
                    let _ = writeln!(o, "  the address is in mie's metadata area (or the guard space around it), which no heap pointer may reach");
                } else {
                    let _ = writeln!(o, "  no block is there: a pointer ran past the blocks of its region (out-of-bounds or wild access)");
                }
                pc_line(o, pc);
            }
            Finding::Guard { addr, pc, e, exec } => {
                crate::heap::guarded::guard::write_fault(o, e, addr, pc, exec);
            }
            Finding::SlabFront { addr, pc, start, size, loc } => {
                report::fault_headline(o, kind, addr, "the access hit unmapped space before a slab's first slot");
                let _ = writeln!(
                    o,
                    "  {} bytes before the {size}-byte block at {start:#x}, the first of its slab (nothing is mapped before it): stopped at the access",
                    start - addr
                );
                describe_slot(o, &loc, start, "live");
                pc_line(o, pc);
            }
            Finding::LargeArea { addr, pc, below, exec } => {
                let how = if exec { "the program jumped into mie's large-block area" } else { "the access hit unmapped space in mie's large-block area" };
                report::fault_headline(o, kind, addr, how);
                match below {
                    Some(e) if e.is_live() => {
                        let past = addr.saturating_sub(e.addr.saturating_add(e.req));
                        let _ = writeln!(
                            o,
                            "  {past} bytes past the end of the {}-byte large block at {:#x}, the nearest block below the address (an index or length far too large for it?)",
                            e.req, e.addr
                        );
                        let _ = writeln!(o, "  block {:#x}: {} bytes requested, large allocation (own mapping), state: live", e.addr, e.req);
                        crate::heap::checks::stacks::print(o, e.addr, "");
                    }
                    Some(e) => {
                        let _ = writeln!(
                            o,
                            "  no block is there; the nearest below is the freed {}-byte large block at {:#x}: a dangling or wild pointer",
                            e.req, e.addr
                        );
                    }
                    None => {
                        let _ = writeln!(o, "  no block is there, nor below it: a wild pointer into the address range mie keeps for large blocks");
                    }
                }
                pc_line(o, pc);
            }
            Finding::Tag(t) => t.write(o),
        }
        kind
    }
}

impl TagFault {
    fn write(&self, o: &mut dyn Write) {
        report::fault_headline(o, self.kind, self.raw, "MTE tag-check fault: the access was stopped before it happened");
        let (ptag, mtag, slot, origin) = (self.ptag, self.mtag, self.slot, self.origin);
        let addr = tag::strip(self.raw);
        let Some(l) = self.loc else {
            let _ = writeln!(o, "  pointer tag {ptag:#x}");
            if self.meta {
                let _ = writeln!(o, "  a heap pointer reached mie's metadata, which no live pointer's tag can access");
            } else {
                let _ = writeln!(o, "  the address is not in a mie heap slab (heap unused space or foreign tagged memory)");
            }
            report::write_code_addr(o, "faulting instruction", self.pc);
            return;
        };
        let _ = writeln!(o, "  pointer tag {ptag:#x}, memory tag {mtag:#x}");
        match self.kind {
            Kind::DoubleFree => {
                let _ = writeln!(o, "  this thread was freeing the block at {slot:#x} when another thread freed it too (the fault is in mie's free, reading the block)");
            }
            Kind::UseAfterFree if mtag == tag::TAG_FREE => {
                let _ = writeln!(o, "  the block at {slot:#x} was freed: access through a dangling pointer");
            }
            Kind::UseAfterFree => {
                let _ = writeln!(o, "  the slot at {slot:#x} was reused by a new block: a stale pointer to its previous block");
            }
            Kind::InvalidAccess => {
                let _ = writeln!(o, "  the granule belongs to the allocator (an unused slot or slab space), not to a block");
            }
            Kind::HeapBufferOverflow if self.own_end != 0 => {
                let _ = writeln!(
                    o,
                    "  the access is {} bytes past the end of the {}-byte block at {slot:#x}, in its slot's unused tail",
                    addr.wrapping_sub(self.own_end),
                    self.own_end - slot
                );
            }
            Kind::HeapBufferOverflow => {
                let past = addr.wrapping_sub(origin + CLASSES[l.class].size as usize);
                let into = if slot == origin {
                    "the slab's unused tail"
                } else if mtag == tag::TAG_OWNED && slot != origin + CLASSES[l.class].size as usize {
                    "an unused slot further on (the slots between hold no block)"
                } else if mtag == tag::TAG_OWNED {
                    "the next slot (unused)"
                } else if mtag == tag::TAG_FREE {
                    "the next slot (free)"
                } else {
                    "the next block"
                };
                let _ = writeln!(o, "  the pointer belongs to the block at {origin:#x}; the access is {past} bytes past its slot, in {into}");
            }
            _ => {
                let _ = writeln!(o, "  the pointer belongs to the block at {origin:#x}; the access is {} bytes before it", origin.saturating_sub(addr));
            }
        }
        describe_slot(o, &l, slot, if self.live { "live" } else { "free" });
        if origin != 0 {
            crate::heap::checks::stacks::print(o, origin, "the pointer's block was ");
        }
        report::write_code_addr(o, "faulting instruction", self.pc);
    }
}

#[cfg(test)]
mod tests {
    //! The classifier against a real heap: live, freed, guard, metadata, unmapped,
    //! zero-size, sampled and large addresses, every fault code, with and without the pc
    //! at the address. It must never panic or overflow (this test runs with overflow
    //! checks), and every report it writes must be sane: the right kind for the address,
    //! no absurd byte counts.
    use super::*;
    use crate::heap::{self, types::kind, Caller};
    use proptest::prelude::*;

    const WHO: Caller = crate::caller!("test", 0);

    /// What an address is, as the test set it up.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Truth {
        LiveSmall,
        FreedSmall,
        LiveLarge,
        LargeGuardBefore,
        LargeGuardAfter,
        FreedLarge,
        Zero,
        SampleLive,
        SampleGuard,
        SampleFreed,
        Meta,
        Elsewhere,
    }

    struct World {
        points: Vec<(usize, Truth)>,
        heap: (usize, usize),
        meta: (usize, usize),
    }

    fn world() -> &'static World {
        static W: std::sync::OnceLock<World> = std::sync::OnceLock::new();
        W.get_or_init(|| {
            let g = heap::ensure_init().expect("heap");
            let page = platform::page_size();
            let mut points = Vec::new();
            let mut add = |base: usize, offs: &[isize], t: Truth| {
                for &o in offs {
                    points.push((base.wrapping_add_signed(o), t));
                }
            };
            for size in [1usize, 16, 24, 100, 1000, 5000, 20000, 100_000] {
                let live = heap::alloc(size, 16, 1) as usize;
                add(live, &[0, 1, size as isize - 1], Truth::LiveSmall);
                let freed = heap::alloc(size, 16, 2) as usize;
                heap::free(freed as *mut u8, WHO);
                add(freed, &[0, 7], Truth::FreedSmall);
            }
            for size in [200_000usize, 1 << 20] {
                let live = heap::alloc(size, 16, 1) as usize;
                add(live, &[0, 4096, size as isize - 1], Truth::LiveLarge);
                add(live, &[-1, -(page as isize)], Truth::LargeGuardBefore);
                let body = (size + 1).div_ceil(page) * page; // one canary byte at least
                add(live + body, &[0, 1, page as isize - 1], Truth::LargeGuardAfter);
                let freed = heap::alloc(size, 16, 1) as usize;
                heap::free(freed as *mut u8, WHO);
                add(freed, &[0, 100, size as isize - 1], Truth::FreedLarge);
            }
            let z = heap::alloc_as(0, 16, 1, kind::MALLOC).0 as usize;
            add(z, &[0, 3, 15], Truth::Zero);
            let zf = heap::alloc_as(0, 16, 1, kind::MALLOC).0 as usize;
            heap::free(zf as *mut u8, WHO);
            add(zf, &[0, 1], Truth::Zero);
            let s = sample::alloc(40, 1, &g.canary, kind::MALLOC) as usize;
            if s != 0 {
                add(s, &[0, 39], Truth::SampleLive);
                add(s, &[40 + 16, 100], Truth::SampleGuard);
                let sf = sample::alloc(64, 2, &g.canary, kind::MALLOC) as usize;
                sample::free(sf, &g.canary, "test", 0);
                add(sf, &[0, 63], Truth::SampleFreed);
            }
            add(g.geo.meta_base, &[0, 1 << 20, 5 << 20], Truth::Meta);
            add(0, &[0, 8, 4096], Truth::Elsewhere);
            let stack = 0u64;
            add(&stack as *const u64 as usize, &[0], Truth::Elsewhere);
            World {
                points,
                heap: (g.geo.heap_base, g.geo.heap_size()),
                meta: (g.geo.meta_base, g.geo.meta_size()),
            }
        })
    }

    fn expected(t: Truth, code: i32, exec: bool) -> Option<&'static [Kind]> {
        use Kind::*;
        let fault = code == SEGV_MAPERR || code == SEGV_ACCERR;
        Some(match t {
            Truth::Zero => &[ZeroSizeAccess],
            Truth::SampleLive => &[AccessFault, HeapExecute],
            Truth::SampleGuard => &[HeapBufferOverflow],
            Truth::SampleFreed => &[UseAfterFree],
            Truth::LiveLarge if fault && exec => &[HeapExecute],
            Truth::LiveLarge if fault => &[AccessFault],
            Truth::LargeGuardBefore if fault => &[HeapBufferUnderflow],
            Truth::LargeGuardAfter if fault => &[HeapBufferOverflow],
            Truth::FreedLarge if fault => &[UseAfterFree],
            Truth::LiveSmall if code == SEGV_ACCERR && exec => &[HeapExecute],
            Truth::LiveSmall if code == SEGV_ACCERR => &[AccessFault],
            Truth::FreedSmall if code == SEGV_ACCERR && exec => &[HeapExecute],
            Truth::FreedSmall if code == SEGV_ACCERR => &[UseAfterFree],
            Truth::Meta if fault => &[InvalidAccess, HeapExecute],
            Truth::Elsewhere => return None,
            _ => &[InvalidAccess, HeapExecute, UseAfterFree, AccessFault, HeapBufferOverflow, HeapBufferUnderflow, TagCheckFault],
        })
    }

    /// Every decimal number in a report stays below 2^47: a byte count or offset that
    /// wrapped around would print as ~1.8e19.
    fn sane_numbers(text: &str) -> bool {
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
            .all(|w| w.parse::<u64>().is_ok_and(|n| n < 1 << 47))
    }

    fn check(code: i32, addr: usize, pc: usize, truth: Option<Truth>) -> Result<(), TestCaseError> {
        let f = classify(code, addr, pc, 0);
        let Some(f) = f else {
            if let Some(t) = truth {
                prop_assert!(expected(t, code, pc == addr).is_none() || !matches!(code, SEGV_MAPERR | SEGV_ACCERR) && !matches!(t, Truth::Zero | Truth::SampleLive | Truth::SampleGuard | Truth::SampleFreed),
                    "{t:?} at {addr:#x} (code {code}) not classified");
            }
            return Ok(());
        };
        let mut text = String::new();
        let kind = f.write(&mut text);
        prop_assert_eq!(kind, f.kind());
        prop_assert!(text.starts_with(&format!("mie: {} on 0x", kind.name())), "{}", text);
        prop_assert!(sane_numbers(&text), "absurd number in\n{}", text);
        prop_assert!(text.contains("faulting instruction: 0x") || text.contains("jumped from"), "{}", text);
        if let Some(t) = truth {
            if let Some(kinds) = expected(t, code, pc == addr && addr != 0) {
                prop_assert!(kinds.contains(&kind), "{t:?} at {addr:#x} code {code} pc {pc:#x}: got {kind:?}\n{text}");
            }
            prop_assert_eq!(f.is_fatal(), kind != Kind::AccessFault, "{}", text);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        #[test]
        fn classifier_is_total_and_sane(
            pick in any::<prop::sample::Index>(),
            jitter in -64isize..64,
            code in prop_oneof![Just(SEGV_MAPERR), Just(SEGV_ACCERR), Just(SEGV_MTESERR), any::<i32>()],
            pc_mode in 0u8..3,
            random in any::<u64>(),
            area in 0u8..4,
        ) {
            let w = world();
            let (addr, truth) = match area {
                // A known address, exactly.
                0 => { let (a, t) = w.points[pick.index(w.points.len())]; (a, Some(t)) }
                // Near a known address (what is there is not known exactly).
                1 => (w.points[pick.index(w.points.len())].0.wrapping_add_signed(jitter), None),
                // Anywhere in the heap or metadata ranges.
                2 => (w.heap.0 + (random as usize % w.heap.1), None),
                _ => if random & 1 == 0 { (w.meta.0 + (random as usize % w.meta.1), None) } else { (random as usize, None) },
            };
            let pc = match pc_mode { 0 => 0, 1 => addr, _ => random as usize ^ 0x5555 };
            check(code, addr, pc, truth)?;
        }
    }
}
