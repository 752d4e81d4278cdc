//! The reports of what the slab allocator finds on its own paths (`slab/finding.rs`): it
//! describes the finding, this reads the allocator's state around it and reports.

use core::fmt::Write;

use crate::heap::diagnose::validate::{self, describe_slot};
use crate::heap::slab::finding::Found;
use crate::heap::slab::finding::Finding;
use crate::heap::slab::layout::Loc;
use crate::heap::slab::size_class::CLASSES;
use crate::heap::globals;
use crate::report::{self, Kind};

/// The handler start-up installs (`slab::finding::install`).
pub fn report_finding(f: Finding) -> ! {
    let g = globals();
    match f {
        Finding::Underflow { p, loc, prev, who, collected } => validate::underflow(g, p, loc, prev, who, collected),
        Finding::UnderflowFirstSlot { p, loc, last_start, prev, who, collected } => validate::underflow_first_slot(p, loc, last_start, prev, who, collected),
        Finding::ConcurrentDoubleFree { p, loc, who } => validate::concurrent_double_free(g, p, &loc, who),
        Finding::RacingDoubleFree { p, region, slab, slot } => validate::racing_double_free(g, p, region, slab, slot),
        Finding::WriteAfterFree { p, first, func, when } => write_after_free(p, first, func, when),
    }
}

/// A free slot at `p` was written to: byte `first` of it is not zero.
fn write_after_free(p: usize, first: usize, func: &'static str, when: Found) -> ! {
    let l = globals().geo.decode(p).unwrap_or(Loc { region: 0, class: 0, bucket: 0, slab: 0, slot: 0, interior: 0 });
    report::fatal(Kind::WriteAfterFree, p, func, |o| {
        let _ = writeln!(o, "  a freed block was modified while it was free: byte {first} of the {}-byte slot is not zero", CLASSES[l.class].size);
        let _ = writeln!(
            o,
            "  found {}",
            match when {
                Found::Leaving => "when the block left the quarantine, where it waited after it was freed",
                Found::Handout => "when the slot was about to be handed out again",
                Found::Exit => "at exit: the block was still waiting in the quarantine or the thread's cache",
                Found::ExitFree => "at exit, in a slot that was free",
            }
        );
        describe_slot(o, &l, p, "free");
        let _ = writeln!(o, "  hint: a dangling pointer wrote to this block after it was freed");
    })
}
