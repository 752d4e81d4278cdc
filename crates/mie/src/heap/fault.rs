//! The SIGSEGV handler: turns a synchronous MTE tag-check fault into a report naming the
//! kind of bug, the pointer and memory tags and the block, found from metadata alone (no
//! allocation, no locks). Faults that are not mie's go to the previous handler.

use core::fmt::Write;

use super::layout::{self, Loc};
use super::size_class::CLASSES;
use super::slab::SlabMeta;
use super::{describe_slot, globals, BUCKETS};
use crate::platform;
use crate::report::{self, Kind};
use crate::tag::{self, TagStore};

const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;
const SEGV_MTESERR: i32 = 9;

pub fn install() {
    platform::install_segv_handler(on_segv);
}

/// Re-install the handler if something replaced it since (a runtime's own SIGSEGV handler,
/// e.g. Rust std's stack-overflow guard, installed after ours); the replacement is chained.
/// Called when a thread attaches its cache: one syscall per new thread.
pub fn ensure_installed() {
    if platform::current_segv_handler() != on_segv as *const () as usize {
        install();
    }
}

extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to SA_SIGINFO handlers.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    super::sample::on_fault(tag::strip(addr), platform::context_pc(uc));
    super::zero::on_fault(tag::strip(addr), platform::context_pc(uc));
    if code == SEGV_ACCERR || code == SEGV_MAPERR {
        large_fault(tag::strip(addr), platform::context_pc(uc));
        heap_hole_fault(tag::strip(addr), platform::context_pc(uc));
    }
    if code == SEGV_MTESERR && tag::enabled() {
        tag_fault(addr, platform::context_pc(uc));
    }
    platform::chain_segv(sig, info, uc)
}

/// A fault in a large block's guard pages or in a freed (quarantined) large block: report it
/// exactly. Returns if the address is not in a large mapping mie knows.
fn large_fault(addr: usize, pc: usize) {
    let Some(e) = super::large::LARGE.containing(addr) else { return };
    let how = "large block: the access hit an inaccessible page";
    let (kind, what) = if e.is_freed() {
        (Kind::UseAfterFree, "freed")
    } else if addr < e.addr {
        (Kind::HeapBufferUnderflow, "live")
    } else {
        (Kind::HeapBufferOverflow, "live")
    };
    report::fault(kind, addr, how, |o| {
        match kind {
            Kind::UseAfterFree if addr >= e.addr && addr < e.addr + e.req => {
                let _ = writeln!(o, "  {} bytes into the freed {}-byte large block at {:#x}", addr - e.addr, e.req, e.addr);
            }
            Kind::UseAfterFree => {
                let _ = writeln!(o, "  in the mapping of the freed {}-byte large block at {:#x}", e.req, e.addr);
            }
            Kind::HeapBufferUnderflow => {
                let _ = writeln!(o, "  {} bytes before the {}-byte large block at {:#x} (guard page)", e.addr - addr, e.req, e.addr);
            }
            _ => {
                let _ = writeln!(
                    o,
                    "  {} bytes past the end of the {}-byte large block at {:#x} (guard page)",
                    addr - (e.addr + e.req),
                    e.req,
                    e.addr
                );
            }
        }
        let _ = writeln!(o, "  block {:#x}: {} bytes requested, large allocation (own mapping), state: {what}", e.addr, e.req);
        super::stacks::print(o, e.addr, "");
        report::write_code_addr(o, "faulting instruction", pc);
    })
}

/// A fault inside mie's heap or metadata address ranges where nothing is mapped: a pointer
/// ran off a block into space no block has (e.g. past the last slab of a region), or into
/// the guard gaps around metadata. Returns if the address is elsewhere.
fn heap_hole_fault(addr: usize, pc: usize) {
    let geo = &globals().geo;
    let (in_heap, in_meta) = (geo.holds_heap(addr), geo.holds_meta(addr));
    if !in_heap && !in_meta {
        return;
    }
    report::fault(Kind::InvalidAccess, addr, "the access hit unmapped space inside mie's heap", |o| {
        if in_heap {
            let _ = writeln!(o, "  no block is there: a pointer ran past the blocks of its region (out-of-bounds or wild access)");
        } else {
            let _ = writeln!(o, "  the address is in the guard space around mie's metadata");
        }
        report::write_code_addr(o, "faulting instruction", pc);
    })
}

/// Is `addr` (untagged) inside a slab that exists?
fn live_slot(l: &Loc) -> bool {
    BUCKETS[l.region].slab_exists(l.slab) && l.slot < CLASSES[l.class].nslots as usize
}

fn tag_fault(raw: usize, pc: usize) -> ! {
    let g = globals();
    let addr = tag::strip(raw);
    let ptag = tag::tag_of(raw);
    let how = "MTE tag-check fault: the access was stopped before it happened";
    let pc_line = |o: &mut report::Line| report::write_code_addr(o, "faulting instruction", pc);
    let Some(l) = layout::decode(g.geo.heap_base, addr).filter(live_slot) else {
        let meta = g.geo.holds_meta(addr);
        report::fault(if meta { Kind::InvalidAccess } else { Kind::TagCheckFault }, raw, how, |o| {
            let _ = writeln!(o, "  pointer tag {ptag:#x}");
            if meta {
                let _ = writeln!(o, "  a heap pointer reached mie's metadata, which no live pointer's tag can access");
            } else {
                let _ = writeln!(o, "  the address is not in a mie heap slab (heap unused space or foreign tagged memory)");
            }
            pc_line(o);
        })
    };
    let mtag = tag::hw().load(addr);
    let k = &CLASSES[l.class];
    let slot = addr - l.interior;
    let m = SlabMeta::new(g.geo.meta_base, l.region, l.slab);
    let block_live = m.live_word(l.slot).load(core::sync::atomic::Ordering::Relaxed) & (1 << (l.slot % 64)) != 0;
    // The block the pointer came from: the neighbour whose tag it carries, if any.
    let left = slot.checked_sub(k.size as usize).filter(|_| l.slot > 0);
    let right = Some(slot + k.size as usize).filter(|_| l.slot + 1 < k.nslots as usize);
    let from_left = left.is_some_and(|b| tag::hw().load(b) == ptag);
    let from_right = right.is_some_and(|b| tag::hw().load(b) == ptag);
    // A neighbour's tag tells an overflow (into a live block or into unused slot space);
    // the free tag a use after free; any other mismatch a stale pointer after reuse.
    // `origin`: the block the pointer belongs to, for an overflow or underflow.
    // Both neighbours can carry the pointer's tag (they are not each other's neighbours):
    // then the nearer one is where the pointer came from.
    let nearer_right = from_right && (!from_left || right.is_some_and(|r| r - addr <= addr - slot));
    let (kind, origin) = if mtag == tag::TAG_FREE {
        (Kind::UseAfterFree, None)
    } else if nearer_right {
        (Kind::HeapBufferUnderflow, right)
    } else if from_left {
        (Kind::HeapBufferOverflow, left)
    } else if mtag == tag::TAG_OWNED {
        (Kind::InvalidAccess, None)
    } else {
        (Kind::UseAfterFree, None)
    };
    let origin = origin.unwrap_or(0);
    report::fault(kind, raw, how, |o| {
        let _ = writeln!(o, "  pointer tag {ptag:#x}, memory tag {mtag:#x}");
        match kind {
            Kind::UseAfterFree if mtag == tag::TAG_FREE => {
                let _ = writeln!(o, "  the block at {slot:#x} was freed: access through a dangling pointer");
            }
            Kind::UseAfterFree => {
                let _ = writeln!(
                    o,
                    "  the slot at {slot:#x} was reused by a new block: a stale pointer to its previous block"
                );
            }
            Kind::InvalidAccess => {
                let _ = writeln!(o, "  the granule belongs to the allocator (an unused slot or slab space), not to a block");
            }
            Kind::HeapBufferOverflow => {
                let _ = writeln!(
                    o,
                    "  the pointer belongs to the block at {origin:#x}; the access is {} bytes past its slot, in the next {}",
                    addr - slot,
                    if mtag == tag::TAG_OWNED { "slot (unused)" } else { "block" }
                );
            }
            _ => {
                let _ = writeln!(o, "  the pointer belongs to the block at {origin:#x}; the access is {} bytes before it", origin - addr);
            }
        }
        describe_slot(o, &l, slot, if block_live { "live" } else { "free" });
        if origin != 0 {
            super::stacks::print(o, origin, "the pointer's block was ");
        }
        pc_line(o);
    })
}
