//! The allocator core driven through its Rust API, in-process (the test harness itself runs
//! on the system allocator; mie has its own address space beside it).

use std::alloc::Layout;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc;

use mie::{alloc_typed, owner_of, usable_size, TypeKey};

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap()
}

/// Two raw type keys that this process maps to different pointer buckets.
fn two_pointer_keys_in_different_buckets() -> (TypeKey, TypeKey) {
    let a = TypeKey::from_raw(1, false);
    for h in 2..10_000u64 {
        let b = TypeKey::from_raw(h, false);
        if b.bucket() != a.bucket() {
            return (a, b);
        }
    }
    panic!("all keys landed in one bucket; is buckets=1?");
}

#[test]
fn sizes_alignments_and_usable_size() {
    let mut live = Vec::new();
    for size in (0..5000).step_by(7).chain([32 << 10, 100 << 10, 128 << 10, 129 << 10, 3 << 20]) {
        for align in [1usize, 8, 16, 32, 64, 256, 4096, 8192] {
            let p = alloc_typed(Layout::from_size_align(size, align).unwrap(), TypeKey::of::<u64>());
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            assert_eq!(usable_size(p), size);
            // SAFETY: p is a fresh block of `size` bytes.
            unsafe { std::ptr::write_bytes(p, 0xa5, size) };
            live.push((p, size));
        }
    }
    // No two live blocks overlap.
    let mut spans: Vec<(usize, usize)> = live.iter().map(|&(p, s)| (p as usize, p as usize + s.max(1))).collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap {:x?}", w);
    }
    for (p, size) in live {
        // SAFETY: p is live with `size` bytes we filled.
        let bytes = unsafe { std::slice::from_raw_parts(p, size) };
        assert!(bytes.iter().all(|&b| b == 0xa5));
        // SAFETY: p is a live mie block.
        unsafe { mie::free(p) };
    }
}

#[test]
fn different_types_never_share_an_address_same_type_reuses() {
    let (a, b) = two_pointer_keys_in_different_buckets();
    let data = TypeKey::pure_data::<[u8; 48]>();
    assert_eq!(data.bucket(), 0);
    let keys = [a, b, data];
    let mut seen: [HashSet<usize>; 3] = Default::default();
    let mut reuse = [0usize; 3];
    for i in 0..100_000 {
        let k = i % 3;
        let p = alloc_typed(layout(48), keys[k]) as usize;
        assert_ne!(p, 0);
        if !seen[k].insert(p) {
            reuse[k] += 1;
        }
        for (j, s) in seen.iter().enumerate() {
            if j != k {
                assert!(!s.contains(&p), "type {k} got an address of type {j}: {p:#x}");
            }
        }
        // SAFETY: p is a live block from alloc_typed.
        unsafe { mie::free(p as *mut u8) };
    }
    for (k, &r) in reuse.iter().enumerate() {
        assert!(r > 30_000, "type {k} reused addresses only {r} times");
    }
}

#[test]
fn an_address_never_changes_class_or_bucket() {
    let keys: Vec<TypeKey> = (0..16u64).map(|h| TypeKey::from_raw(h * 7919, h % 4 == 0)).collect();
    let mut owner: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut held = Vec::new();
    let mut x = 12345u64;
    for _ in 0..60_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = (x % 2048) as usize + 1;
        let key = keys[(x >> 20) as usize % keys.len()];
        let p = alloc_typed(layout(size), key);
        let o = owner_of(p).expect("small block");
        assert!(o.0 >= size);
        assert_eq!(o.1, key.bucket());
        if let Some(prev) = owner.insert(p as usize, o) {
            assert_eq!(prev, o, "address {p:?} changed owner");
        }
        held.push(p);
        if held.len() > 500 {
            let q = held.swap_remove((x >> 40) as usize % held.len());
            // SAFETY: q is a live block.
            unsafe { mie::free(q) };
        }
    }
    for q in held {
        // SAFETY: q is a live block.
        unsafe { mie::free(q) };
    }
}

#[test]
fn typed_box_routes_by_type() {
    struct Node {
        next: Option<mie::TypedBox<Node>>,
        v: u64,
    }
    let mut head = mie::TypedBox::new(Node { next: None, v: 0 });
    for i in 1..1000 {
        head = mie::TypedBox::new(Node { next: Some(head), v: i });
    }
    let b = TypeKey::of::<Node>().bucket();
    let mut n = &*head;
    let mut sum = 0;
    loop {
        assert_eq!(owner_of(n as *const Node as *const u8).unwrap().1, b);
        sum += n.v;
        match &n.next {
            Some(x) => n = x,
            None => break,
        }
    }
    assert_eq!(sum, 999 * 1000 / 2);
    // Dropping a long chain recursively is fine at this depth.
    drop(head);
}

#[test]
fn cross_thread_frees_with_content_checks() {
    let threads = 8;
    let per = 20_000;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel::<(usize, usize, u8)>()).unzip();
    let mut handles = Vec::new();
    for (t, rx) in rxs.into_iter().enumerate() {
        let txs = txs.clone();
        handles.push(std::thread::spawn(move || {
            let mut x = 0x9e37_79b9u64 + t as u64;
            for i in 0..per {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let size = match x % 10 {
                    0 => (x >> 8) as usize % 200_000 + 1,
                    1..=3 => (x >> 8) as usize % 4096 + 1,
                    _ => (x >> 8) as usize % 256 + 1,
                };
                let p = alloc_typed(layout(size), TypeKey::from_raw(x % 5, x.is_multiple_of(5)));
                assert!(!p.is_null());
                let fill = (i % 251) as u8;
                // SAFETY: fresh block of `size` bytes.
                unsafe { std::ptr::write_bytes(p, fill, size) };
                // Hand it to another thread to free.
                let to = (t + 1 + (x as usize % (threads - 1))) % threads;
                txs[to].send((p as usize, size, fill)).unwrap();
                // Free what others sent us.
                while let Ok((q, s, f)) = rx.try_recv() {
                    // SAFETY: q is a live block of s bytes filled with f by its allocator.
                    let bytes = unsafe { std::slice::from_raw_parts(q as *const u8, s) };
                    assert!(bytes.iter().all(|&b| b == f), "corrupted block");
                    // SAFETY: q is live and ownership was transferred to us.
                    unsafe { mie::free(q as *mut u8) };
                }
            }
            rx
        }));
    }
    drop(txs);
    let rxs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for rx in rxs {
        while let Ok((q, s, f)) = rx.try_recv() {
            // SAFETY: as above.
            let bytes = unsafe { std::slice::from_raw_parts(q as *const u8, s) };
            assert!(bytes.iter().all(|&b| b == f));
            // SAFETY: as above.
            unsafe { mie::free(q as *mut u8) };
        }
    }
}

#[test]
fn stats_track_live_bytes() {
    // Other tests run concurrently in this process, so measure a large, distinctive delta.
    let before = mie::stats();
    let key = TypeKey::from_raw(0xfeed, true);
    let ps: Vec<_> = (0..1000).map(|_| alloc_typed(layout(1000), key)).collect();
    let mid = mie::stats();
    let class = (0..48).find(|&c| mie::sys::size_class::class_size(c) >= 1001).unwrap();
    let b = mid.bucket(class, 0);
    // A block picked for guarded sampling is counted with the samples, not its class.
    assert!(b.allocs - before.bucket(class, 0).allocs + (mid.sampled_allocs - before.sampled_allocs) >= 1000);
    assert!(mid.mapped_bytes >= 1000 * 1000);
    for p in ps {
        // SAFETY: p is live.
        unsafe { mie::free(p) };
    }
    let after = mie::stats();
    assert!(after.bucket(class, 0).frees - mid.bucket(class, 0).frees + (after.sampled_frees() - mid.sampled_frees()) >= 1000);
}

#[test]
fn realloc_keeps_contents_and_bucket() {
    let key = TypeKey::from_raw(77, false);
    let mut p = alloc_typed(layout(10), key);
    // SAFETY: 10 fresh bytes.
    unsafe { std::ptr::copy_nonoverlapping(b"0123456789".as_ptr(), p, 10) };
    // Small-to-small moves keep the bucket; once a block has been large (no buckets there),
    // a later shrink lands in the untyped bucket.
    for (i, size) in [11usize, 20, 100, 1000, 40_000, 200_000, 5_000_000, 64, 9].into_iter().enumerate() {
        // SAFETY: p is the live block from the previous step.
        p = unsafe { mie::realloc(p, size) };
        assert!(!p.is_null());
        assert_eq!(usable_size(p), size);
        // SAFETY: p holds at least min(size, 10) of the original bytes.
        let got = unsafe { std::slice::from_raw_parts(p, size.min(10)) };
        assert_eq!(got, &b"0123456789"[..size.min(10)]);
        if i < 5 {
            assert_eq!(owner_of(p).unwrap().1, key.bucket(), "realloc moved the block to another bucket");
        }
    }
    // SAFETY: p is live.
    unsafe { mie::free(p) };
}

#[test]
fn object_size_follows_requested_sizes_of_small_and_large_blocks() {
    let key = TypeKey::from_raw(77, true);
    let mut large = Vec::new();
    for (i, size) in [1usize, 40, 1000, 200_000, 5 << 20, 300_000].into_iter().enumerate() {
        let p = alloc_typed(layout(size), key);
        assert!(!p.is_null());
        assert_eq!(mie::object_size(p), size, "block {i} of {size} bytes");
        // SAFETY: offsets inside (or one past) the block.
        unsafe {
            assert_eq!(mie::object_size(p.add(size / 2)), size - size / 2);
            assert_eq!(mie::object_size(p.add(size)), 0);
        }
        large.push((p, size));
    }
    // Not heap memory: no bound.
    let local = [0u8; 16];
    assert_eq!(mie::object_size(local.as_ptr()), usize::MAX);
    // Legal checked copies up to the very end of each block.
    let src = [7u8; 64];
    for &(p, size) in &large {
        let n = size.min(64);
        // SAFETY: [p + size - n, p + size) is inside the block; src has 64 bytes.
        unsafe { mie::checked_copy(p.add(size - n), src.as_ptr(), n) };
        // SAFETY: as above.
        assert_eq!(unsafe { *p.add(size - 1) }, 7);
    }
    // Freeing one large block leaves the others' bounds intact (the index stays sorted).
    let (p, _) = large.remove(3);
    // SAFETY: p is a live block from alloc_typed.
    unsafe { mie::free(p) };
    for &(p, size) in &large {
        assert_eq!(mie::object_size(p), size);
    }
    // A freed small block has no room left.
    let (p, _) = large.remove(1);
    // SAFETY: p is a live block from alloc_typed.
    unsafe { mie::free(p) };
    assert_eq!(mie::object_size(p), 0);
    for (p, _) in large {
        // SAFETY: live blocks from alloc_typed.
        unsafe { mie::free(p) };
    }
}

#[test]
fn large_blocks_made_of_freed_pages_read_as_zero() {
    use std::alloc::GlobalAlloc;
    // Each block is freed with two pages of every three written and the others never touched
    // (enough for its pages to be kept warm: `warm::worth_keeping`), or
    // (every fourth round) with every byte written, so that its pages are cleared as one
    // long run (streaming stores on x86-64); the next one takes the freed pages (warm reuse)
    // and must read as zero everywhere, through `alloc_zeroed` (which trusts the large
    // allocator's zero pages) as through `alloc`.
    let mie = mie::Mie;
    let page = 4096;
    for round in 0..48 {
        let size = (256 << 10) + (round % 7) * 3 * page + 100;
        let l = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { if round % 2 == 0 { mie.alloc_zeroed(l) } else { mie.alloc(l) } };
        assert!(!p.is_null());
        // SAFETY: the block's `size` bytes, ours until dealloc below.
        let s = unsafe { std::slice::from_raw_parts_mut(p, size) };
        if let Some(i) = s.iter().position(|&b| b != 0) {
            panic!("round {round}: byte {i} of a new {size}-byte block is {:#x}", s[i]);
        }
        if round % 4 == 3 {
            s.fill(0xc3);
        }
        for k in (0..size).step_by(3 * page) {
            s[k] = 0xa5;
            if k + page < size {
                s[k + page] = 0xa5;
            }
        }
        s[size - 1] = 0x5a;
        // SAFETY: p came from mie.alloc(_zeroed) with this layout.
        unsafe { mie.dealloc(p, l) };
    }
}
