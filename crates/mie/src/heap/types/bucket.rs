//! Type buckets: which of a size class's buckets an allocation goes to.
//!
//! Bucket 0 holds pointer-free data; buckets 1..=N (N = option `buckets`) hold everything
//! else. A typed allocation picks its bucket by a keyed PRF of its type hash; an untyped one
//! by the PRF of its call site. The key is random per process, and the function cannot be
//! solved from observed (site, bucket) pairs, so an attacker who sees which sites share a
//! bucket still cannot plan which others do.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::prf::Prf;

pub const DATA_BUCKET: usize = 0;

/// The call-site table: entries hold `site << BUCKET_BITS | bucket`, for sites below
/// 2^SITE_BITS (every code address on today's machines); bucket 0 marks an empty entry.
const BUCKET_BITS: u32 = 16;
const SITE_BITS: u32 = 64 - BUCKET_BITS;
const SITE_SLOTS: usize = 512;
#[unsafe(link_section = ".bss.mie_big")]
static SITES: [AtomicU64; SITE_SLOTS] = [const { AtomicU64::new(0) }; SITE_SLOTS];

/// Layouts up to this size have a table entry (8-byte steps).
const LAYOUT_TABLE_MAX: usize = 4096;
static LAYOUT_BUCKETS: [core::sync::atomic::AtomicU8; LAYOUT_TABLE_MAX / 8 + 1] = [const { core::sync::atomic::AtomicU8::new(0) }; LAYOUT_TABLE_MAX / 8 + 1];
/// Keeps layout keys apart from call sites and type ids in the PRF's input.
const LAYOUT_KEY: u64 = 0x4c41_594f_5554 << 16;

/// Flag in a call-site entry: the site is an allocation wrapper's.
pub const WRAPPER: u64 = 1 << 15;

/// Forget a site's entry (it has just been found to be a wrapper's).
pub fn forget_site(site: usize) {
    let site = site as u64;
    if site >> SITE_BITS == 0 {
        let e = &SITES[site_slot(site)];
        let v = e.load(Ordering::Relaxed);
        if v >> BUCKET_BITS == site {
            let _ = e.compare_exchange(v, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// A site's entry: return addresses differ in their low bits; fold in a few higher ones.
#[inline(always)]
fn site_slot(site: u64) -> usize {
    ((site ^ (site >> 9) ^ (site >> 18)) as usize) & (SITE_SLOTS - 1)
}

/// Layout-semantics bits of an Apple-style `malloc_type_id_t` (DESIGN.md §4).
const LAYOUT_MASK: u64 = 0xffff << 48;
const GENERIC_DATA: u64 = 1 << 56;

#[derive(Clone, Copy)]
pub struct Keys {
    pub prf: Prf,
    pub pointer_buckets: u32,
    pub token_half: u64,
    /// Whether the AllocToken id space is known (the program's `-falloc-token-max`, or the
    /// `alloc_token_max` option): `token_max` then bounds every id a program passes.
    pub token_max_known: bool,
    pub token_max: u64,
}

impl Keys {
    #[inline]
    fn pointer_bucket(&self, x: u64) -> usize {
        let h = self.prf.eval(x);
        1 + (((h >> 32) * self.pointer_buckets as u64) >> 32) as usize
    }

    /// Untyped allocation: bucket from the caller's return address.
    #[inline]
    pub fn for_call_site(&self, ret_addr: usize) -> usize {
        (self.site_entry(ret_addr) & !WRAPPER) as usize
    }

    /// The bucket of a call site, with `WRAPPER` set if the site is an allocation wrapper's
    /// (`wrappers.rs`). The PRF takes ten AES rounds of latency on the allocation's critical
    /// path, so recent answers are kept in a small process-wide table (one word per entry:
    /// the site above, the bucket and flag below).
    #[inline]
    pub fn site_entry(&self, ret_addr: usize) -> u64 {
        let site = ret_addr as u64;
        if site >> SITE_BITS != 0 {
            return self.pointer_bucket(site) as u64;
        }
        let e = &SITES[site_slot(site)];
        let d = e.load(Ordering::Relaxed) ^ (site << BUCKET_BITS);
        // A hit leaves only the bucket and flag (never 0: pointer buckets start at 1).
        if d.wrapping_sub(1) < (1 << BUCKET_BITS) - 1 {
            return d;
        }
        let b = self.pointer_bucket(site) as u64 | if crate::heap::types::wrappers::is_wrapper(ret_addr) { WRAPPER } else { 0 };
        e.store(site << BUCKET_BITS | b, Ordering::Relaxed);
        b
    }

    /// Apple-style type descriptor: pure data (only the "generic data" layout bit) goes to
    /// the data bucket, anything that may hold a pointer to a pointer bucket by type hash.
    #[inline]
    pub fn for_type_id(&self, id: u64) -> usize {
        if id & LAYOUT_MASK == GENERIC_DATA {
            DATA_BUCKET
        } else {
            self.pointer_bucket(id & 0xffff_ffff)
        }
    }

    /// LLVM AllocToken id: the lower half of the id space is pointer-free.
    #[inline]
    pub fn for_alloc_token(&self, token: u64) -> usize {
        if self.token_max_known && token >= self.token_max {
            token_out_of_range(token, self.token_max);
        }
        if token < self.token_half {
            DATA_BUCKET
        } else {
            self.pointer_bucket(token)
        }
    }

    /// An untyped Rust allocation: by its layout. Rust's global allocator never learns the
    /// type, but a layout's size and alignment are a property of it, so blocks of different
    /// exact sizes (within one size class) go to buckets of their own: a freed `[u8; 24]`
    /// slot is not reused for a 32-byte struct. Small layouts come from a table made at
    /// start-up (no PRF on the allocation path).
    #[inline]
    pub fn for_layout(&self, size: usize, align: usize) -> usize {
        if align <= 16 && size <= LAYOUT_TABLE_MAX {
            let b = LAYOUT_BUCKETS[size.div_ceil(8)].load(Ordering::Relaxed);
            if b != 0 {
                return b as usize;
            }
        }
        self.pointer_bucket(LAYOUT_KEY ^ (size as u64) << 8 ^ align.trailing_zeros() as u64)
    }

    /// Fill the layout table (once, at start-up, after the key is set).
    pub fn init_layouts(&self) {
        for (i, e) in LAYOUT_BUCKETS.iter().enumerate() {
            // Sizes 8i-7..=8i share an entry (and a bucket); alignment up to 16 does not count.
            e.store(self.pointer_bucket(LAYOUT_KEY ^ ((i * 8) as u64) << 8 ^ 3) as u8, Ordering::Relaxed);
        }
    }

    /// A Rust type key (already hashed), with its pointer-free flag.
    #[inline]
    pub fn for_rust_type(&self, hash: u64, pure_data: bool) -> usize {
        if pure_data {
            DATA_BUCKET
        } else {
            self.pointer_bucket(hash)
        }
    }
}

/// An AllocToken id at or above the known id space: the program (or a library in it) was
/// compiled with a larger `-falloc-token-max` than mie was told. Said once; the id still
/// gets a bucket (the upper half's: pointer buckets).
#[cold]
#[inline(never)]
fn token_out_of_range(token: u64, max: u64) {
    static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        crate::report::warn(format_args!(
            "an allocation token id ({token}) is not below alloc_token_max ({max}): some code was compiled with a larger -falloc-token-max (or none); its pointer-free types may share pointer buckets. Build everything with the same -falloc-token-max (mie cc records it), or set MIE_OPTIONS=alloc_token_max=N"
        ));
    }
}

pub fn token_half(alloc_token_max: u64) -> u64 {
    if alloc_token_max == 0 {
        1 << 63
    } else {
        alloc_token_max / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u32) -> Keys {
        Keys { prf: Prf::random(), pointer_buckets: n, token_half: 1 << 63, token_max_known: false, token_max: 0 }
    }

    #[test]
    fn pointer_buckets_stay_in_range_and_are_all_used() {
        for n in 1..=7 {
            let k = keys(n);
            let mut seen = [0usize; 8];
            for site in 0..10_000usize {
                let b = k.pointer_bucket(0x5555_0000 + site as u64 * 5);
                assert!((1..=n as usize).contains(&b));
                seen[b] += 1;
            }
            for (b, &count) in seen.iter().enumerate().skip(1).take(n as usize) {
                let expect = 10_000 / n as usize;
                assert!(count > expect * 8 / 10, "bucket {b} underused: {seen:?}");
            }
        }
    }

    #[test]
    fn the_call_site_table_answers_as_the_function_does() {
        // Sites no other test uses (the table is process-wide, keyed by site only).
        let k = keys(7);
        for round in 0..3 {
            for i in 0..4000u64 {
                let site = 0x7777_0000_0000 + i * 24;
                assert_eq!(k.for_call_site(site as usize), k.pointer_bucket(site), "round {round} site {site:#x}");
            }
        }
        // Sites the table cannot hold go straight to the function.
        assert_eq!(k.for_call_site(usize::MAX - 3), k.pointer_bucket(u64::MAX - 3));
    }

    #[test]
    fn type_descriptor_layout_bits() {
        let k = keys(3);
        let pure_data = GENERIC_DATA | 0xabcd;
        assert_eq!(k.for_type_id(pure_data), DATA_BUCKET);
        // A data pointer bit next to generic data is not pure data.
        assert_ne!(k.for_type_id(pure_data | (1 << 48)), DATA_BUCKET);
        assert_ne!(k.for_type_id((1 << 49) | 0xabcd), DATA_BUCKET);
        // No layout bits at all: unknown, treated as possibly holding pointers.
        assert_ne!(k.for_type_id(0xabcd), DATA_BUCKET);
        // Same type hash, same bucket, whatever the call-site flags say.
        assert_eq!(k.for_type_id((1 << 49) | 7), k.for_type_id((1 << 49) | (1 << 40) | 7));
    }

    #[test]
    fn alloc_token_halves() {
        let k = keys(3);
        assert_eq!(k.for_alloc_token(0), DATA_BUCKET);
        assert_eq!(k.for_alloc_token((1 << 63) - 1), DATA_BUCKET);
        assert_ne!(k.for_alloc_token(1 << 63), DATA_BUCKET);
        let k2 = Keys { token_half: token_half(100), ..k };
        assert_eq!(k2.for_alloc_token(49), DATA_BUCKET);
        assert_ne!(k2.for_alloc_token(50), DATA_BUCKET);
    }
}
