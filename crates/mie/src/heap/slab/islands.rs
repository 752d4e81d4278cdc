//! Slab memory mapped as few kernel mappings (VMAs) as its guard gaps allow.
//!
//! Every region's slabs start at a random slab of its own segment, every segment ends in a
//! gap, and a guarded slab is followed by one: a process using 30 (class, bucket) regions had
//! 30 or more mappings of heap, each copied at every fork (about 0.9 µs of a fork's time per
//! mapping where this was measured: 80 more cost a small process's fork +70 µs), each one of
//! `vm.max_map_count`'s 65530. Where the kernel has guard regions (Linux 6.13), memory mapped near
//! an island, a mapping already made, joins it instead: the island is extended over the gap
//! between them, and the gap gets guard markers, which fault exactly like the unmapped gap
//! did (SIGSEGV, `SEGV_MAPERR`) and are copied by fork. Committing a range inside an island
//! later takes its markers off. Gaps between islands that are far apart (more than
//! `BRIDGE_MAX`) stay unmapped: markers need page tables, and a far gap would cost
//! page-table pages the unmapped one does not (a near one costs none: `BRIDGE_MAX`).
//!
//! The extension is mapped read-write before its gap's markers go in (the kernel merges a
//! fresh mapping with its neighbour, never a guarded one): for the microseconds in between,
//! that gap (addresses no block has ever had) does not fault.
//!
//! Only slab memory comes here, always under a pool's lock; the island lock is taken inside
//! it, so a fork (which takes every pool's lock) never finds it held.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::platform::{self, lock::Lock};

/// Islands remembered (64 KiB of table, touched as it fills): a mapping made when the table
/// is full stays one of its own.
const MAX_ISLANDS: usize = 4096;
/// The widest gap an island is extended over. Under 2 MiB, every last-level page-table page
/// its markers need is one a neighbour needs already (each 2 MiB span the gap touches holds
/// the island's last byte or the new range's first).
pub const BRIDGE_MAX: usize = 1 << 20;

struct Table {
    n: usize,
    /// `[lo, hi)` of each island (one mapping: committed ranges and the guarded gaps
    /// between them), sorted by address.
    lo: [usize; MAX_ISLANDS],
    hi: [usize; MAX_ISLANDS],
}

impl Table {
    const EMPTY: Table = Table { n: 0, lo: [0; MAX_ISLANDS], hi: [0; MAX_ISLANDS] };
}

struct TableCell(UnsafeCell<Table>);
// SAFETY: the table is only touched with LOCK held.
unsafe impl Sync for TableCell {}

#[unsafe(link_section = ".bss.mie_big")]
static TABLE: TableCell = TableCell(UnsafeCell::new(Table::EMPTY));
static LOCK: Lock = Lock::new();

const UNKNOWN: u8 = 0;
const WORKS: u8 = 1;
const ABSENT: u8 = 2;
/// Whether guard markers work here (probed at the first island's extension).
static GUARDS: AtomicU8 = AtomicU8::new(UNKNOWN);

fn guards() -> bool {
    match GUARDS.load(Ordering::Relaxed) {
        WORKS => true,
        ABSENT => false,
        _ => {
            let ok = platform::guards_work();
            GUARDS.store(if ok { WORKS } else { ABSENT }, Ordering::Relaxed);
            ok
        }
    }
}

/// Make the page-aligned `[a, a + len)` of the slab heap readable and writable (fresh zero
/// pages, `extra_prot` added), never replacing a mapping that is not the heap's: the range
/// has never been committed. Whether it joined a mapping made before (true) or is one of its
/// own; None if it cannot be had.
pub fn commit(a: usize, len: usize, extra_prot: i32) -> Option<bool> {
    let _guard = LOCK.guard();
    // SAFETY: LOCK is held.
    let t = unsafe { &mut *TABLE.0.get() };
    commit_in(t, a, a + len, extra_prot)
}

fn commit_in(t: &mut Table, a: usize, b: usize, prot: i32) -> Option<bool> {
    // Islands are disjoint, sorted by address, and hold committed ranges and the guarded
    // gaps between them; this range was never committed, so it lies inside one island (in
    // a gap: its markers come off) or outside all.
    let i = t.lo[..t.n].partition_point(|&lo| lo <= a);
    if i > 0 && a < t.hi[i - 1] {
        return (b <= t.hi[i - 1] && platform::guard_remove(a, b - a)).then_some(true);
    }
    // The nearer of the islands just below and just above, if within reach.
    let below = (i > 0).then(|| (a - t.hi[i - 1], i - 1, true));
    let above = (i < t.n && b <= t.lo[i]).then(|| (t.lo[i] - b, i, false));
    let best = match (below, above) {
        (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
        (x, y) => x.or(y),
    };
    if let Some((gap, j, up)) = best.filter(|&(gap, _, _)| gap <= BRIDGE_MAX) {
        if gap == 0 || guards() {
            // The extension (the gap and the range) and the gap alone.
            let (from, to, g_lo, g_hi) = if up { (t.hi[j], b, t.hi[j], a) } else { (a, t.lo[j], b, t.lo[j]) };
            if platform::map_at(from as *mut u8, to - from, prot) {
                if g_lo == g_hi || platform::guard_install(g_lo, g_hi - g_lo) {
                    if up {
                        t.hi[j] = b;
                    } else {
                        t.lo[j] = a;
                    }
                    return Some(true);
                }
                // The markers were refused (a locked mapping: `mlockall(MCL_FUTURE)` made
                // the process's new mappings locked, and mapped the gap's pages in): the gap
                // goes back to unmapped, the range is an island of its own, and no gap is
                // bridged again.
                platform::release(g_lo as *mut u8, g_hi - g_lo);
                GUARDS.store(ABSENT, Ordering::Relaxed);
                add(t, i, a, b);
                return Some(false);
            }
            // Something else is mapped in the gap: the range alone, below.
        }
    }
    if !platform::map_at(a as *mut u8, b - a, prot) {
        return None;
    }
    add(t, i, a, b);
    Some(false)
}

/// Insert the island `[a, b)` at index `i` (the table stays sorted); when the table is full
/// the mapping is simply not remembered.
fn add(t: &mut Table, i: usize, a: usize, b: usize) {
    if t.n < MAX_ISLANDS {
        t.lo.copy_within(i..t.n, i + 1);
        t.hi.copy_within(i..t.n, i + 1);
        t.lo[i] = a;
        t.hi[i] = b;
        t.n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one byte of `p`: whether it faults, from a child process (a fault kills it).
    fn faults(p: usize) -> bool {
        // SAFETY: fork in a test; the child only reads and exits.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                core::ptr::read_volatile(p as *const u8);
                libc::_exit(0);
            }
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
            !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0)
        }
    }

    fn mappings_in(lo: usize, hi: usize) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter(|l| {
                let (r, _) = l.split_once(' ').unwrap();
                let (s, e) = r.split_once('-').unwrap();
                let (s, e) = (usize::from_str_radix(s, 16).unwrap(), usize::from_str_radix(e, 16).unwrap());
                s < hi && e > lo
            })
            .count()
    }

    /// Two ranges near each other become one mapping whose gap still faults, in this process
    /// and in a forked child; the gap committed later reads zero and does not fault; a range
    /// far away stays a mapping of its own.
    #[test]
    fn near_ranges_share_a_mapping_and_the_gap_still_faults() {
        let pg = platform::page_size();
        // Far below the kernel's own mmap area (where other tests' threads map), and free.
        let base = 0x2a5a_0000_0000usize + ((std::process::id() as usize & 0xfff) << 28);
        assert!(platform::map_at_none(base as *mut u8, 64 << 20), "the test's range is taken");
        platform::release(base as *mut u8, 64 << 20);
        let mut t = Table::EMPTY;
        let (a, gap_at, c) = (base + 16 * pg, base + 20 * pg, base + 36 * pg);
        assert_eq!(commit_in(&mut t, a, a + 4 * pg, 0), Some(false));
        // SAFETY: committed just above.
        unsafe { (a as *mut u8).write(7) };
        let joined = commit_in(&mut t, c, c + 4 * pg, 0);
        let far = base + (32 << 20);
        assert_eq!(commit_in(&mut t, far, far + pg, 0), Some(false), "far away: a mapping of its own");
        assert!(!faults(a) && !faults(c + pg) && !faults(far));
        if !platform::guards_work() {
            eprintln!("no guard regions on this kernel: mappings stay apart");
            assert!(faults(gap_at));
            assert_eq!(joined, Some(false));
            assert_eq!(mappings_in(base, base + (64 << 20)), 3);
        } else {
            assert_eq!(joined, Some(true));
            assert_eq!(mappings_in(base, base + (64 << 20)), 2, "the near ranges are one mapping");
            assert!(faults(gap_at) && faults(c - 1), "the gap faults");
            // The gap committed later: zero and accessible, its neighbours unchanged.
            assert_eq!(commit_in(&mut t, gap_at, gap_at + 2 * pg, 0), Some(true));
            // SAFETY: committed just above.
            assert_eq!(unsafe { (gap_at as *const u8).read() }, 0);
            assert!(!faults(gap_at + pg) && faults(gap_at + 2 * pg) && !faults(c));
            // SAFETY: still committed.
            assert_eq!(unsafe { (a as *const u8).read() }, 7);
            assert_eq!(mappings_in(base, base + (64 << 20)), 2);
            // A range below an island joins it downward, its gap guarded too.
            assert_eq!(commit_in(&mut t, base, base + 2 * pg, 0), Some(true));
            assert!(!faults(base) && faults(base + 2 * pg) && faults(a - 1) && !faults(a));
            assert_eq!(mappings_in(base, base + (64 << 20)), 2);
            assert_eq!((t.n, t.lo[0], t.hi[0]), (2, base, c + 4 * pg));
        }
        platform::release(base as *mut u8, 64 << 20);
    }
}
