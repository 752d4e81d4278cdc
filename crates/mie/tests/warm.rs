//! Warm reuse of large blocks' pages (`heap/large/warm.rs`): a freed block whose pages were
//! used is kept for the next block; one whose pages were mostly never touched is given back
//! (moving it would cost remaps and save no page faults). One test: the statistics are
//! process-wide.

use std::alloc::{GlobalAlloc, Layout};

#[test]
fn only_pages_that_were_used_are_kept_warm() {
    let mie = mie::Mie;
    let size = 1 << 20;
    let l = Layout::from_size_align(size, 16).unwrap();
    let before = mie::stats().large_warm_bytes;
    // A big buffer of which only the ends were written.
    // SAFETY: a non-zero size; the block's first and last bytes are ours until dealloc.
    unsafe {
        let p = mie.alloc(l);
        assert!(!p.is_null());
        p.write(1);
        p.add(size - 1).write(1);
        mie.dealloc(p, l);
    }
    let after_sparse = mie::stats().large_warm_bytes;
    assert_eq!(after_sparse, before, "the pages of a block with 2 of 257 pages touched were kept warm");
    // A buffer written in full.
    // SAFETY: as above, every byte of the block.
    unsafe {
        let p = mie.alloc(l);
        assert!(!p.is_null());
        core::ptr::write_bytes(p, 0x5a, size);
        mie.dealloc(p, l);
    }
    let after_dense = mie::stats().large_warm_bytes;
    assert!(after_dense >= after_sparse + size as u64, "a written 1 MiB block's pages were not kept warm ({after_sparse} -> {after_dense} bytes)");
}
