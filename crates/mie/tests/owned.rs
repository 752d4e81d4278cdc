//! Thread-owned slabs across thread lifetimes: slots of slabs owned by threads that exited,
//! freed later by others, are reused by new threads (the exiting thread gives its slabs with
//! free slots back to the pool; the taker collects the frees that reached them meanwhile),
//! so memory does not grow with the number of threads that come and go.

use std::alloc::Layout;

use mie::{alloc_typed, TypeKey};

const KEY: TypeKey = TypeKey::from_raw(0x5eed_0001, true);

fn slabs_of_class(size: usize) -> u64 {
    let s = mie::stats();
    let class = (0..48).find(|&c| mie::sys::size_class::class_size(c) > size).unwrap();
    (0..8).map(|b| s.bucket(class, b).slabs).sum()
}

#[test]
fn exited_threads_slots_are_reused_and_memory_stays_bounded() {
    const SIZE: usize = 700;
    const PER_THREAD: usize = 4000;
    let layout = Layout::from_size_align(SIZE, 16).unwrap();
    let mut after_first = 0;
    for round in 0..40 {
        // A thread allocates, writes, keeps half its blocks alive past its exit.
        let kept: Vec<usize> = std::thread::spawn(move || {
            let mut kept = Vec::new();
            for i in 0..PER_THREAD {
                let p = alloc_typed(layout, KEY);
                assert!(!p.is_null());
                // SAFETY: p is a fresh block of SIZE bytes.
                unsafe { std::ptr::write_bytes(p, (i % 251) as u8, SIZE) };
                if i % 2 == 0 {
                    kept.push(p as usize);
                } else {
                    // SAFETY: p is live.
                    unsafe { mie::free(p) };
                }
            }
            kept
        })
        .join()
        .unwrap();
        // Another thread (this one) frees them after the owner exited.
        for (n, &p) in kept.iter().enumerate() {
            // SAFETY: p is a live block of SIZE bytes written above.
            let first = unsafe { *(p as *const u8) };
            assert_eq!(first, ((2 * n) % 251) as u8, "block contents changed");
            // SAFETY: p is live.
            unsafe { mie::free(p as *mut u8) };
        }
        if round == 1 {
            after_first = slabs_of_class(SIZE);
        }
    }
    let end = slabs_of_class(SIZE);
    // Each round needs about the same memory; 40 rounds must not need 40 times as much.
    assert!(end <= after_first * 2 + 4, "slabs grew from {after_first} to {end} over 40 threads");
}
