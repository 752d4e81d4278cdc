//! Hot-path micro-benchmark of mie as a Rust `#[global_allocator]`, against the system
//! allocator (glibc) measured in the same run.
//!
//! The parent process runs this binary as a child once per allocator and round (rounds
//! alternate the order); each child serves every allocation of its life from one allocator,
//! chosen before the first allocation from `MIE_MICRO_ALLOC`. The parent prints the median
//! ns per operation and mie's ratio to glibc.
//!
//! `cargo bench -p mie-alloc --bench hot_paths [-- --quick]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

/// Dispatches to mie or to the system allocator, fixed once per process.
struct Switch;

static MODE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 system, 2 mie

#[inline]
fn use_mie() -> bool {
    match MODE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // SAFETY: getenv reads the environment without allocating; the name is a C string.
            let v = unsafe { libc::getenv(c"MIE_MICRO_ALLOC".as_ptr()) };
            // SAFETY: a non-null getenv result is a NUL-terminated string.
            let system = !v.is_null() && unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes() == b"system";
            MODE.store(if system { 1 } else { 2 }, Ordering::Relaxed);
            !system
        }
    }
}

// SAFETY: every call is forwarded to one allocator, the same for the whole process.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { if use_mie() { mie::Mie.alloc(l) } else { System.alloc(l) } }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: p came from the same allocator (the mode never changes).
        unsafe { if use_mie() { mie::Mie.dealloc(p, l) } else { System.dealloc(p, l) } }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { if use_mie() { mie::Mie.alloc_zeroed(l) } else { System.alloc_zeroed(l) } }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: p came from the same allocator (the mode never changes).
        unsafe { if use_mie() { mie::Mie.realloc(p, l, n) } else { System.realloc(p, l, n) } }
    }
}

#[global_allocator]
static GLOBAL: Switch = Switch;

/// Time `f` (which performs `ops` operations) and return ns per operation.
fn time_ops(ops: u64, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64 / ops as f64
}

fn malloc_free(size: usize, n: u64) -> f64 {
    let l = Layout::from_size_align(size, 16).unwrap();
    time_ops(n, || {
        for i in 0..n {
            // SAFETY: l has a non-zero size; the block is written once and freed.
            unsafe {
                let p = std::alloc::alloc(l);
                assert!(!p.is_null());
                *p = i as u8;
                black_box(p);
                std::alloc::dealloc(p, l);
            }
        }
    })
}

fn batch(size: usize, batch: usize, rounds: u64) -> f64 {
    let l = Layout::from_size_align(size, 16).unwrap();
    let mut v = vec![std::ptr::null_mut(); batch];
    time_ops(rounds * batch as u64, || {
        for _ in 0..rounds {
            for p in v.iter_mut() {
                // SAFETY: as in malloc_free.
                *p = unsafe { std::alloc::alloc(l) };
            }
            for p in v.iter() {
                // SAFETY: each block is freed once.
                unsafe { std::alloc::dealloc(*p, l) };
            }
        }
    })
}

fn cross_thread(n: u64) -> f64 {
    let l = Layout::from_size_align(64, 16).unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<usize>>(64);
    time_ops(n, || {
        let consumer = std::thread::spawn(move || {
            for v in rx {
                for p in v {
                    // SAFETY: blocks allocated by the producer, freed once here.
                    unsafe { std::alloc::dealloc(p as *mut u8, l) };
                }
            }
        });
        let mut left = n;
        while left > 0 {
            let k = left.min(256);
            // SAFETY: as in malloc_free.
            let v: Vec<usize> = (0..k).map(|_| unsafe { std::alloc::alloc(l) } as usize).collect();
            tx.send(v).unwrap();
            left -= k;
        }
        drop(tx);
        consumer.join().unwrap();
    })
}

fn vec_and_map(n: u64) -> f64 {
    time_ops(n, || {
        let mut m: HashMap<u64, String> = HashMap::new();
        let mut v: Vec<Vec<u64>> = Vec::new();
        for i in 0..n {
            m.insert(i, format!("value {i}"));
            if i % 64 == 0 {
                v.push((0..i % 1000).collect());
            }
        }
        for i in 0..n {
            black_box(m.remove(&i));
        }
        black_box(v);
    })
}

const CASES: &[&str] = &[
    "malloc+free 16 B",
    "malloc+free 64 B",
    "malloc+free 1 KiB",
    "malloc+free 64 KiB",
    "1000 x 64 B, then free all",
    "cross-thread free 64 B",
    "Vec + HashMap<u64,String>",
];

fn child(scale: u64) {
    let r = [
        malloc_free(16, 2_000_000 * scale),
        malloc_free(64, 2_000_000 * scale),
        malloc_free(1024, 1_000_000 * scale),
        malloc_free(65536, 200_000 * scale),
        batch(64, 1000, 500 * scale),
        cross_thread(500_000 * scale),
        vec_and_map(200_000 * scale),
    ];
    for x in r {
        println!("{x:.3}");
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 3 };
    if std::env::var_os("MIE_MICRO_CHILD").is_some() {
        return child(scale);
    }
    let exe = std::env::current_exe().expect("own path");
    let rounds = if quick { 3 } else { 5 };
    let allocs = ["system", "mie"];
    let mut samples = vec![vec![Vec::new(); CASES.len()]; 2];
    for round in 0..rounds {
        for k in 0..2 {
            let a = (k + round) % 2;
            let out = Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .env("MIE_MICRO_CHILD", "1")
                .env("MIE_MICRO_ALLOC", allocs[a])
                .env_remove("MIE_OPTIONS")
                .output()
                .expect("run the benchmark child");
            assert!(out.status.success(), "{} child failed: {}", allocs[a], String::from_utf8_lossy(&out.stderr));
            for (i, line) in String::from_utf8_lossy(&out.stdout).lines().enumerate().take(CASES.len()) {
                samples[a][i].push(line.trim().parse::<f64>().expect("ns per op"));
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!("mie hot paths as #[global_allocator], median of {rounds} runs (ns per operation)");
    println!("{:<28} {:>10} {:>10} {:>8}", "case", "glibc", "mie", "ratio");
    for (i, c) in CASES.iter().enumerate() {
        let g = median(&mut samples[0][i]);
        let m = median(&mut samples[1][i]);
        println!("{c:<28} {g:>10.1} {m:>10.1} {:>7.2}x", m / g);
    }
}
