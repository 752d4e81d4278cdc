//! The whole test binary runs on mie as its global allocator: the standard library's own
//! collections, strings, threads and the test harness allocate through it.

use std::collections::{BTreeMap, HashMap};

#[global_allocator]
static GLOBAL: mie::Mie = mie::Mie;

#[test]
fn collections_and_strings() {
    let mut m: HashMap<String, Vec<u64>> = HashMap::new();
    for i in 0..50_000u64 {
        m.entry(format!("key-{}", i % 5000)).or_default().push(i);
    }
    assert_eq!(m.len(), 5000);
    assert!(m.values().all(|v| v.len() == 10));
    let mut b = BTreeMap::new();
    for i in 0..20_000 {
        b.insert(i.to_string(), vec![i as u8; i % 300]);
    }
    let total: usize = b.values().map(Vec::len).sum();
    assert_eq!(total, (0..20_000).map(|i| i % 300).sum::<usize>());
    // The blocks really are mie's (the Vec is on the heap on purpose).
    #[allow(clippy::useless_vec)]
    let v = vec![1u8; 100];
    assert!(mie::owner_of(v.as_ptr()).is_some());
    assert_eq!(mie::usable_size(v.as_ptr()), 100);
}

#[test]
fn growth_alignment_and_zeroing() {
    let mut v: Vec<u32> = Vec::new();
    for i in 0..3_000_000u32 {
        v.push(i);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).collect::<Vec<_>>());
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let pages: Vec<Box<Page>> = (0..64).map(|_| Box::new(Page([7; 4096]))).collect();
    assert!(pages.iter().all(|p| (&**p as *const Page as usize).is_multiple_of(4096) && p.0[4095] == 7));
    let z = vec![0u64; 1 << 20];
    assert!(z.iter().all(|&x| x == 0));
}

#[test]
fn threads_share_and_free_across() {
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                (0..20_000).map(|i| format!("{t}:{i}").into_bytes()).collect::<Vec<_>>()
            })
        })
        .collect();
    // Blocks made on eight threads are freed on this one.
    let all: Vec<Vec<Vec<u8>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(all.iter().map(Vec::len).sum::<usize>(), 160_000);
    drop(all);
    let s = mie::stats();
    assert!(s.mapped_bytes > 0);
}

/// Run test `child` of this executable as a child process (it does the bug) and return its
/// stderr; None inside that child.
fn child_report(child: &str) -> Option<String> {
    if std::env::var_os("MIE_TEST_CHILD").is_some() {
        return None;
    }
    let exe = std::env::current_exe().unwrap();
    let o = std::process::Command::new(exe)
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env("MIE_TEST_CHILD", "1")
        .env("MIE_OPTIONS", "sample_rate=0")
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A double free through the Rust global allocator (which cannot pass its caller's address)
/// is reported with the first frame outside the allocator as "called from", named.
#[test]
#[cfg_attr(target_arch = "aarch64", ignore = "re-runs its own executable, which under qemu is the arm64 loader")]
fn rust_double_free_report_names_the_caller() {
    let Some(t) = child_report("double_free_child") else { return };
    assert!(t.contains("mie: double-free on 0x"), "{t}");
    let line = t.lines().find(|l| l.starts_with("  called from: ")).unwrap_or_else(|| panic!("{t}"));
    assert!(!line.contains(": 0x0 ") && line.contains("global_alloc::free_twice+0x"), "{line}\n{t}");
}

#[test]
fn double_free_child() {
    if std::env::var_os("MIE_TEST_CHILD").is_none() {
        return;
    }
    free_twice(Box::into_raw(Box::new([7u64; 4])));
}

#[inline(never)]
fn free_twice(p: *mut [u64; 4]) {
    // SAFETY: none: this is the bug the parent test expects mie to stop.
    unsafe {
        drop(Box::from_raw(p));
        drop(Box::from_raw(std::hint::black_box(p)));
    }
}

/// A function whose last act is the drop reaches the allocator by a tail call, leaving no
/// frame: the report names it on a "through:" line under its caller (or as the caller).
#[test]
#[cfg_attr(target_arch = "aarch64", ignore = "re-runs its own executable, which under qemu is the arm64 loader")]
fn rust_double_free_through_a_tail_call_names_the_function() {
    let Some(t) = child_report("tail_drop_child") else { return };
    assert!(t.contains("mie: double-free on 0x"), "{t}");
    assert!(t.contains("called from: 0x") && !t.contains("called from: 0x0 "), "{t}");
    assert!(t.contains("global_alloc::drop_last"), "the function that freed is not named:\n{t}");
}

#[test]
fn tail_drop_child() {
    if std::env::var_os("MIE_TEST_CHILD").is_none() {
        return;
    }
    two_drops(Box::into_raw(Box::new([9u64; 4])));
}

#[inline(never)]
fn two_drops(p: *mut [u64; 4]) {
    drop_last(p);
    drop_last(std::hint::black_box(p));
    // Something after the call, so this function calls drop_last (a tail call here too
    // would leave neither frame).
    std::hint::black_box(p);
}

#[inline(never)]
fn drop_last(p: *mut [u64; 4]) {
    // SAFETY: none on the second call: the bug the parent test expects mie to stop.
    unsafe { drop(Box::from_raw(p)) }
}

/// Untyped Rust allocations are bucketed by layout: blocks of different sizes in one size
/// class spread over the pointer buckets (all in one bucket before), and one layout always
/// lands in one bucket.
#[test]
fn untyped_rust_allocations_are_bucketed_by_layout() {
    let sizes = [33usize, 41, 49, 57, 65, 73, 81, 89, 97, 105, 113, 121];
    let mut buckets = std::collections::BTreeSet::new();
    for &n in &sizes {
        let a = vec![0u8; n];
        let b = vec![1u8; n];
        let (_, ba) = mie::owner_of(a.as_ptr()).unwrap();
        let (_, bb) = mie::owner_of(b.as_ptr()).unwrap();
        assert_eq!(ba, bb, "one layout, two buckets");
        assert_ne!(ba, 0, "an untyped block in the data bucket");
        buckets.insert(ba);
    }
    // Twelve layouts, three pointer buckets: all in one by chance has probability 3^-11.
    assert!(buckets.len() >= 2, "{buckets:?}");
}
