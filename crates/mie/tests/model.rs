//! Model-based fuzzing of the allocator (proptest; `cargo fuzz` needs a nightly toolchain,
//! which this project's machines do not have). Arbitrary sequences of allocations (plain,
//! zeroed, aligned, typed), frees and reallocs are run against mie and against a model of
//! what must hold after each step:
//! - every block is aligned as asked and reports exactly its requested size (usable size
//!   and `object_size`);
//! - a zeroed block reads as zero; every block keeps the bytes written into it, also across
//!   realloc (up to the smaller size), until it is freed;
//! - no two live blocks overlap.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 256, 64 under the arm64 emulator;
//! `scripts/reliability.sh` runs 2000 or 20000).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

use mie::{Mie, TypeKey};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Alloc { size: usize, align_log: u8, how: u8 },
    Free { pick: usize },
    Realloc { pick: usize, size: usize },
    Touch { pick: usize },
}

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..=64,
        3 => 65usize..=4096,
        2 => 4097usize..=140_000,
        1 => 140_001usize..=1_200_000,
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (size_strategy(), 0u8..=12, 0u8..4).prop_map(|(size, align_log, how)| Op::Alloc { size, align_log, how }),
        3 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        2 => (any::<usize>(), size_strategy()).prop_map(|(pick, size)| Op::Realloc { pick, size }),
        1 => any::<usize>().prop_map(|pick| Op::Touch { pick }),
    ]
}

struct Live {
    ptr: *mut u8,
    size: usize,
    layout: Layout,
    fill: u8,
    typed: bool,
}

/// The byte a block's contents must hold at offset `i`.
fn byte(fill: u8, i: usize) -> u8 {
    fill.wrapping_add((i % 251) as u8)
}

fn write_pattern(l: &Live) {
    for i in 0..l.size {
        // SAFETY: i < size, inside the live block.
        unsafe { *l.ptr.add(i) = byte(l.fill, i) };
    }
}

fn check_pattern(l: &Live, upto: usize) -> Result<(), TestCaseError> {
    for i in 0..upto {
        // SAFETY: i < size, inside the live block.
        let b = unsafe { *l.ptr.add(i) };
        prop_assert_eq!(b, byte(l.fill, i), "byte {} of the {}-byte block at {:p}", i, l.size, l.ptr);
    }
    Ok(())
}

/// Live blocks by address, to find overlaps.
fn no_overlap(live: &BTreeMap<usize, usize>, start: usize, size: usize) -> Result<(), TestCaseError> {
    let end = start + size.max(1);
    if let Some((&s, &n)) = live.range(..=start).next_back() {
        prop_assert!(s + n.max(1) <= start, "block {:#x}+{} overlaps {:#x}+{}", start, size, s, n);
    }
    if let Some((&s, _)) = live.range(start + 1..).next() {
        prop_assert!(end <= s, "block {:#x}+{} overlaps the block at {:#x}", start, size, s);
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut blocks: Vec<Live> = Vec::new();
    let mut by_addr: BTreeMap<usize, usize> = BTreeMap::new();
    let mut fill = 1u8;
    let key = TypeKey::from_raw(0x5eed, false);
    for op in ops {
        match op {
            Op::Alloc { size, align_log, how } => {
                let align = 1usize << align_log;
                let layout = Layout::from_size_align(size.max(1), align).unwrap();
                // SAFETY: a valid, non-zero-size layout.
                let (ptr, typed) = match how {
                    0 => (unsafe { Mie.alloc_zeroed(layout) }, false),
                    1 => (mie::alloc_typed(layout, key), true),
                    _ => (unsafe { Mie.alloc(layout) }, false),
                };
                prop_assert!(!ptr.is_null(), "allocation of {} bytes failed", size);
                prop_assert_eq!(ptr as usize % align, 0, "alignment {}", align);
                let size = layout.size();
                prop_assert_eq!(mie::usable_size(ptr), size);
                prop_assert_eq!(mie::object_size(ptr), size);
                if how == 0 {
                    for i in 0..size {
                        // SAFETY: inside the fresh block.
                        prop_assert_eq!(unsafe { *ptr.add(i) }, 0, "zeroed block byte {}", i);
                    }
                }
                no_overlap(&by_addr, ptr as usize, size)?;
                fill = fill.wrapping_add(37);
                let l = Live { ptr, size, layout, fill, typed };
                write_pattern(&l);
                by_addr.insert(ptr as usize, size);
                blocks.push(l);
            }
            Op::Free { pick } if !blocks.is_empty() => {
                let l = blocks.swap_remove(pick % blocks.len());
                check_pattern(&l, l.size)?;
                by_addr.remove(&(l.ptr as usize));
                if l.typed {
                    // SAFETY: a live block from alloc_typed.
                    unsafe { mie::free(l.ptr) };
                } else {
                    // SAFETY: a live block from Mie with this layout.
                    unsafe { Mie.dealloc(l.ptr, l.layout) };
                }
            }
            Op::Realloc { pick, size } if !blocks.is_empty() => {
                let i = pick % blocks.len();
                if blocks[i].typed || blocks[i].layout.align() > 16 {
                    continue; // realloc keeps the alignment of 16; typed blocks are freed by mie::free
                }
                let l = blocks.swap_remove(i);
                check_pattern(&l, l.size)?;
                by_addr.remove(&(l.ptr as usize));
                let new_size = size.max(1);
                // SAFETY: a live block from Mie with this layout; the new size is non-zero.
                let q = unsafe { Mie.realloc(l.ptr, l.layout, new_size) };
                prop_assert!(!q.is_null());
                let moved = Live { ptr: q, size: new_size, layout: Layout::from_size_align(new_size, l.layout.align()).unwrap(), fill: l.fill, typed: false };
                check_pattern(&moved, l.size.min(new_size))?;
                prop_assert_eq!(mie::usable_size(q), new_size);
                no_overlap(&by_addr, q as usize, new_size)?;
                write_pattern(&moved);
                by_addr.insert(q as usize, new_size);
                blocks.push(moved);
            }
            Op::Touch { pick } if !blocks.is_empty() => {
                let l = &blocks[pick % blocks.len()];
                check_pattern(l, l.size)?;
            }
            _ => {}
        }
    }
    for l in blocks {
        check_pattern(&l, l.size)?;
        if l.typed {
            // SAFETY: a live block from alloc_typed.
            unsafe { mie::free(l.ptr) };
        } else {
            // SAFETY: a live block from Mie with this layout.
            unsafe { Mie.dealloc(l.ptr, l.layout) };
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Fewer by default on arm64, whose leg runs under an emulator.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(if cfg!(target_arch = "aarch64") { 64 } else { 256 }),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn allocator_matches_the_model(ops in proptest::collection::vec(op_strategy(), 1..300)) {
        run(ops)?;
    }
}
