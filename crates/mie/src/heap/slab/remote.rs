//! Frees of blocks in slabs other threads own. The free itself claims the block's record
//! with one compare-and-swap (so two frees of one block can never both succeed: the loser
//! is reported at its call) and clears the slot; telling the owner is batched. Each thread
//! keeps an outbox of the slots it freed this way, per slab, and publishes a slab's entry
//! (one `fetch_or` per bitmap word with bits in it, and the owner's notification unless the
//! slab is queued already) when it has gathered `PUBLISH_AT` frees, when a free for another
//! slab needs its place, and whenever the thread takes one of its own slow paths (refill,
//! trim, thread exit). A thread that frees many blocks of one slab (a consumer of another
//! thread's allocations) so pays one locked instruction per free, the record's, and one
//! per word for the batch.
//!
//! A slot waits in an outbox at most until its entry is published: the owner cannot reuse
//! it meanwhile (it does not know it is free yet), which is all the delay costs.

use core::sync::atomic::Ordering;

use crate::heap::slab::layout::BUCKET_SLOTS;
use crate::heap::slab::size_class::CLASSES;
use crate::heap::slab::meta::SlabMeta;
use crate::heap::slab::finding::{self, Finding};
use crate::heap::{slab::owner, Globals};

/// Slabs an outbox holds frees for.
pub const ENTRIES: usize = 4;
/// Bitmap words of the slab with the most slots (1024 slots of 16 bytes).
const WORDS: usize = 16;
/// Frees gathered for one slab before they are published.
const PUBLISH_AT: u32 = 32;

#[derive(Clone, Copy)]
struct Entry {
    /// The slab's metadata address (0: the entry is empty), and one of its slots (its
    /// region and number are worked out from it when the entry is published).
    key: usize,
    addr: usize,
    count: u32,
    bits: [u64; WORDS],
}

/// A thread's remote frees not yet published to their slabs' owners. All zero (as a new
/// thread cache is) it is empty.
pub struct Outbox {
    e: [Entry; ENTRIES],
    /// The entry the next new slab replaces (round robin).
    next: usize,
    /// The entry of the last remote free.
    last: usize,
}

/// Note that this thread freed `slot` (at `p`) of the slab whose metadata is `m` (its
/// record already claimed): published with the slab's other such frees.
#[inline]
pub fn post(g: &Globals, ob: &mut Outbox, m: SlabMeta, p: usize, slot: usize) {
    let key = m.key();
    // The slab of the previous remote free first (a consumer frees runs of one slab).
    let i = if ob.e[ob.last].key == key { ob.last } else { find_or_replace(g, ob, key, p) };
    ob.last = i;
    let e = &mut ob.e[i];
    e.bits[slot / 64] |= 1u64 << (slot % 64);
    e.count += 1;
    if e.count >= PUBLISH_AT {
        publish(g, e);
    }
}

/// The entry of slab `key` (whose slot `p` is), else an empty one, else the next one round
/// robin, published and given to `key` (an entry published when it filled is empty again:
/// it is taken before a slab with frees waiting is pushed out early).
#[cold]
fn find_or_replace(g: &Globals, ob: &mut Outbox, key: usize, p: usize) -> usize {
    if let Some(i) = ob.e.iter().position(|e| e.key == key) {
        return i;
    }
    let i = match ob.e.iter().position(|e| e.key == 0) {
        Some(i) => i,
        None => {
            let i = ob.next;
            ob.next = (i + 1) % ENTRIES;
            publish(g, &mut ob.e[i]);
            i
        }
    };
    ob.e[i].key = key;
    ob.e[i].addr = p;
    i
}

/// Publish everything in the outbox (this thread's slow paths, thread exit, trim).
pub fn flush(g: &Globals, ob: &mut Outbox) {
    for e in ob.e.iter_mut().filter(|e| e.key != 0) {
        publish(g, e);
    }
}

/// Set the entry's bits in its slab's remote-free bitmap and tell the owner; empty it.
#[cold]
fn publish(g: &Globals, e: &mut Entry) {
    debug_assert!(e.key != 0, "an empty outbox entry is never published");
    let region = g.geo.region_of_addr(e.addr);
    let k = &CLASSES[region / BUCKET_SLOTS];
    let slab = g.geo.slab_of(k, e.addr);
    let m = SlabMeta::at(&g.geo, k, e.addr);
    for (w, bits) in e.bits.iter_mut().enumerate().take(k.words as usize) {
        if *bits == 0 {
            continue;
        }
        // SeqCst: `owner::notify` may skip the push on seeing the slab queued already.
        let old = m.remote_word(k, w).fetch_or(*bits, Ordering::SeqCst);
        if old & *bits != 0 {
            // A slot whose earlier remote free the owner has not collected yet was freed
            // remotely again: the owner freed it too meanwhile, and it was reused.
            let slot = w * 64 + (old & *bits).trailing_zeros() as usize;
            finding::found(Finding::RacingDoubleFree { p: g.geo.slot_addr(region, slab, slot), region, slab, slot });
        }
        *bits = 0;
    }
    e.key = 0;
    e.count = 0;
    owner::notify(&g.geo, m, region, slab);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_biggest_slab_fits_an_entry() {
        let most = CLASSES.iter().map(|k| k.words as usize).max().unwrap();
        assert!(most <= WORDS, "a slab has {most} bitmap words, an outbox entry {WORDS}");
    }
}
