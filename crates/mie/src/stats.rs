//! Statistics: live and mapped bytes, per (size class, bucket) counts. Gathered from the
//! thread caches' single-writer counters without stopping anyone, so a snapshot taken while
//! other threads allocate is approximate; a quiescent one is exact.

use core::fmt::Write;
use core::sync::atomic::Ordering;

use crate::heap::{large::LARGE, slab::layout::{BUCKET_SLOTS, REGION_COUNT}, slab::pool::{self, MAPPED_BYTES, POOLS}, slab::size_class::CLASSES, slab::tcache};
use crate::report::Line;

#[derive(Clone, Copy, Debug, Default)]
pub struct BucketStats {
    pub allocs: u64,
    pub frees: u64,
    pub slabs: u64,
    pub purges: u64,
}

#[derive(Clone, Debug)]
pub struct Stats {
    /// Bytes in live blocks: a small block counts its whole slot, a large or sampled one
    /// its requested size.
    pub live_bytes: u64,
    /// Bytes mapped read-write for slabs, metadata, caches and large blocks.
    pub mapped_bytes: u64,
    pub large_live: u64,
    pub large_live_bytes: u64,
    pub large_quarantined: u64,
    /// Pages of freed large blocks kept for reuse (`heap/large/warm.rs`).
    pub large_warm_bytes: u64,
    /// Guarded samples: allocations so far, live blocks and their bytes.
    pub sampled_allocs: u64,
    pub sampled_live: u64,
    pub sampled_live_bytes: u64,
    /// Large blocks allocated so far.
    pub large_allocs: u64,
    /// Allocations that came with a compiler type id (`mie cc`), and those of them whose
    /// type the compiler could not see (bucketed by call site, as untyped ones).
    pub typed_allocs: u64,
    pub unknown_type_allocs: u64,
    /// Indexed by `class * 8 + bucket`.
    pub buckets: [BucketStats; REGION_COUNT],
}

impl Stats {
    /// Every allocation so far (small, large and guarded samples).
    pub fn allocs(&self) -> u64 {
        self.buckets.iter().map(|b| b.allocs).sum::<u64>() + self.large_allocs + self.sampled_allocs
    }

    pub fn live_blocks(&self) -> u64 {
        self.buckets.iter().map(|b| b.allocs.wrapping_sub(b.frees)).sum::<u64>() + self.large_live + self.sampled_live
    }

    /// Guarded samples freed so far.
    pub fn sampled_frees(&self) -> u64 {
        self.sampled_allocs - self.sampled_live
    }

    pub fn bucket(&self, class: usize, bucket: usize) -> &BucketStats {
        &self.buckets[class * BUCKET_SLOTS + bucket]
    }
}

pub fn snapshot() -> Stats {
    let mut s = Stats {
        live_bytes: 0,
        mapped_bytes: 0,
        large_live: 0,
        large_live_bytes: 0,
        large_quarantined: 0,
        large_warm_bytes: 0,
        sampled_allocs: 0,
        sampled_live: 0,
        sampled_live_bytes: 0,
        large_allocs: 0,
        typed_allocs: 0,
        unknown_type_allocs: 0,
        buckets: [BucketStats::default(); REGION_COUNT],
    };
    tcache::for_each(|tc| {
        s.typed_allocs += tc.typed.load(Ordering::Relaxed);
        s.unknown_type_allocs += tc.unknown_type.load(Ordering::Relaxed);
        for r in 0..REGION_COUNT {
            s.buckets[r].allocs += tc.allocs[r].load(Ordering::Relaxed);
            s.buckets[r].frees += tc.frees[r].load(Ordering::Relaxed);
        }
    });
    for (r, p) in POOLS.iter().enumerate() {
        s.buckets[r].slabs = pool::slab_count(r) as u64;
        s.buckets[r].purges = p.purges.load(Ordering::Relaxed) as u64;
    }
    let l = LARGE.stats();
    s.large_live = l.live_count as u64;
    s.large_allocs = l.allocs as u64;
    s.large_live_bytes = l.live_bytes as u64;
    s.large_quarantined = l.quarantined as u64;
    s.large_warm_bytes = l.warm as u64;
    let (allocs, live_blocks, live_bytes) = crate::heap::guarded::sample::counts();
    s.sampled_allocs = allocs;
    s.sampled_live = live_blocks;
    s.sampled_live_bytes = live_bytes;
    let small: u64 = s.buckets.iter().enumerate().map(|(r, b)| (b.allocs.saturating_sub(b.frees)) * CLASSES[r / BUCKET_SLOTS].size as u64).sum();
    s.live_bytes = small + l.live_bytes as u64 + live_bytes;
    s.mapped_bytes = (MAPPED_BYTES.load(Ordering::Relaxed) + l.mapped) as u64;
    s
}

/// Print every statistic to stderr (`mie_stats_print`, `malloc_stats`).
pub fn print() {
    print_level(2)
}

/// Print statistics to stderr, every line prefixed with the process id (several processes
/// of a pipeline may print at once): level 1 lists the size classes that hold live blocks,
/// level 2 every class and bucket ever used (`MIE_OPTIONS=stats=1` / `stats=2`).
pub fn print_level(level: u8) {
    let s = snapshot();
    let mut o = Line::new();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let _ = writeln!(o, "mie[{pid}]: stats: live {} bytes in {} blocks, mapped {} bytes", s.live_bytes, s.live_blocks(), s.mapped_bytes);
    let _ = writeln!(
        o,
        "mie[{pid}]: stats: large: {} live ({} bytes), {} in quarantine, {} bytes of warm pages",
        s.large_live, s.large_live_bytes, s.large_quarantined, s.large_warm_bytes
    );
    let _ = writeln!(
        o,
        "mie[{pid}]: stats: guarded samples: {} so far, {} live ({} bytes)",
        s.sampled_allocs, s.sampled_live, s.sampled_live_bytes
    );
    let (guarded, guarded_live) = crate::heap::guarded::guard::counts();
    if guarded > 0 {
        let _ = writeln!(o, "mie[{pid}]: stats: guard mode: {guarded} blocks allocated on pages of their own, {guarded_live} live");
    }
    let typed = s.typed_allocs + s.unknown_type_allocs;
    let _ = writeln!(
        o,
        "mie[{pid}]: stats: type ids: {} of {} allocations came with a compiler type id (mie cc), {} of them for a type the compiler could not see (bucketed by call site, as the other {} untyped ones)",
        typed,
        s.allocs(),
        s.unknown_type_allocs,
        s.allocs().saturating_sub(typed)
    );
    let _ = writeln!(o, "mie[{pid}]: stats: {:>8} {:>8} {:>12} {:>12} {:>10} {:>7} {:>7}", "class", "bucket", "allocs", "frees", "live", "slabs", "purged");
    let mut hidden = 0;
    for (r, b) in s.buckets.iter().enumerate() {
        if b.allocs == 0 && b.slabs == 0 {
            continue;
        }
        if level < 2 && b.allocs.wrapping_sub(b.frees) as i64 <= 0 {
            hidden += 1;
            continue;
        }
        let (class, bucket) = (r / BUCKET_SLOTS, r % BUCKET_SLOTS);
        let _ = writeln!(
            o,
            "mie[{pid}]: stats: {:>8} {:>6}{} {:>12} {:>12} {:>10} {:>7} {:>7}",
            CLASSES[class].size,
            bucket,
            if bucket == 0 { "d" } else { "p" },
            b.allocs,
            b.frees,
            b.allocs.wrapping_sub(b.frees) as i64,
            b.slabs,
            b.purges
        );
    }
    if hidden > 0 {
        let _ = writeln!(o, "mie[{pid}]: stats: ({hidden} more class/bucket rows with no live blocks: stats=2 shows them)");
    }
    o.flush();
}
