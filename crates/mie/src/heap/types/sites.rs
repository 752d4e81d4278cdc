//! Call sites to buckets, per thread (`SiteMemos`, in each thread's cache): a thread
//! remembers its recent allocation sites and their buckets (`SiteMemo`), and for allocation
//! wrappers where their callers' return addresses lie on the stack and the buckets of their
//! recent callers (`CallerMemo`), so that most calls find their bucket without the
//! process-wide site table or a stack scan (`wrappers.rs`). A new wrapper clears both (its
//! site's calls change buckets). `heap::call_site_bucket` is the entry point.

use crate::heap::types::wrappers;

/// `SiteMemo::site` when there is none (no return address is this).
pub const NO_SITE: usize = usize::MAX;

/// Entries of `SiteMemos::sites`: a program's busy allocation sites each keep theirs. python
/// calls malloc from dozens of sites in turn: with 32 entries (or 64), one malloc in eight
/// found its entry taken by another site and went to the slow path (the site table and
/// the general malloc path, about 300 instructions more); with 128, one in 600.
pub const SITE_MEMO: usize = 128;

/// `SiteMemo::k` and `k1` when there is none.
pub const NO_WORD: u16 = u16::MAX;

/// A call site of an untyped allocation and its bucket, as this thread found it, for later
/// calls from there (`wrappers::Found`): always (`k` = `NO_WORD`: the site's own bucket);
/// for a wrapper's site, when stack word `k` holds the same return address `ret`, and
/// otherwise by the caller in word `k` (`CallerMemo`); for a wrapper called by a wrapper
/// (`k1` set), when word `k` holds `ret` (the outer wrapper's call), by the caller in
/// word `k1`. A sampled call looks its site up again. The words are read without checking
/// that they still follow a call instruction: they were found to be return addresses
/// before, and a wrong answer could only pick another pointer bucket. 24 bytes.
#[derive(Clone, Copy)]
pub struct SiteMemo {
    pub site: usize,
    pub ret: usize,
    pub bucket: u32,
    pub k: u16,
    pub k1: u16,
}

const _: () = assert!(core::mem::size_of::<SiteMemo>() == 24 && wrappers::SCAN < NO_WORD as usize);
const _: () = assert!(crate::heap::types::bucket::WRAPPER <= u32::MAX as u64);

impl SiteMemo {
    pub const NONE: SiteMemo = SiteMemo { site: NO_SITE, ret: 0, bucket: 0, k: NO_WORD, k1: NO_WORD };
}

/// The bucket of calls through the wrapper whose malloc call is `site`, from the caller
/// whose return address is `ret` (`SiteMemo`): programs call their wrapper from many places.
#[derive(Clone, Copy)]
pub struct CallerMemo {
    pub site: usize,
    pub ret: usize,
    pub bucket: usize,
}

impl CallerMemo {
    pub const NONE: CallerMemo = CallerMemo { site: NO_SITE, ret: 0, bucket: 0 };
}

/// Entries of `SiteMemos::callers`, by the low bits of the wrapper's site and its caller's
/// return address together: one caller may reach two allocation sites through its wrappers
/// (sqlite: a string that grows is allocated, then reallocated), and each pair keeps its
/// entry (by the caller alone they took turns: 111 000 slow calls in the sqlite workload).
pub const CALLER_MEMO: usize = 64;

/// The entry of `SiteMemos::callers` for the wrapper's site `cs` and its caller's return
/// address `ret`.
#[inline(always)]
const fn caller_slot(cs: usize, ret: usize) -> usize {
    (cs ^ ret) & (CALLER_MEMO - 1)
}

/// The entry of `SiteMemos::sites` for call site `cs`: return addresses differ in their low
/// bits (instructions have many lengths).
#[inline(always)]
pub const fn site_slot(cs: usize) -> usize {
    cs & (SITE_MEMO - 1)
}

/// A thread's memory of call sites (in its cache).
pub struct SiteMemos {
    /// Counts untyped allocations, to sample call sites one in 64 (`wrappers.rs`).
    pub tick: u32,
    sites: [SiteMemo; SITE_MEMO],
    callers: [CallerMemo; CALLER_MEMO],
    /// `wrappers::epoch()` when these were last cleared.
    epoch: u32,
}

impl SiteMemos {
    /// The bucket of a call from a remembered site (through a wrapper: from a remembered
    /// caller), unless this call is sampled.
    ///
    /// # Safety
    /// As `heap::call_site_bucket`: `sp` is the caller's stack pointer at the call.
    #[inline(always)]
    pub unsafe fn bucket(&mut self, cs: usize, sp: usize) -> Option<usize> {
        let t = self.tick.wrapping_add(1);
        // SAFETY: site_slot < SITE_MEMO.
        let e = unsafe { self.sites.get_unchecked(site_slot(cs)) };
        if cs != e.site || t.is_multiple_of(wrappers::SAMPLE_EVERY) {
            return None;
        }
        let mut b = e.bucket as usize;
        if e.k != NO_WORD {
            // SAFETY: the caller's guarantee; k was a word index the scan read.
            let w = unsafe { wrappers::word(sp, e.k as usize) };
            if w != e.ret || e.k1 != NO_WORD {
                // SAFETY: the caller's guarantee.
                b = unsafe { self.caller_bucket(cs, sp, w) }?;
            }
        }
        self.tick = t;
        Some(b)
    }

    /// `bucket` of a wrapper's site `cs` whose memo did not match at once: word `w` of the
    /// stack is another caller (one level), or the outer wrapper's call whose caller is
    /// then in word `k1` (two levels); their buckets from `callers`.
    ///
    /// # Safety
    /// As `bucket`.
    #[inline(always)]
    unsafe fn caller_bucket(&self, cs: usize, sp: usize, w: usize) -> Option<usize> {
        // SAFETY: site_slot < SITE_MEMO.
        let e = unsafe { self.sites.get_unchecked(site_slot(cs)) };
        let ret = if e.k1 == NO_WORD {
            w
        } else if w == e.ret {
            // SAFETY: the caller's guarantee; k1 was a word index the scan read.
            unsafe { wrappers::word(sp, e.k1 as usize) }
        } else {
            return None;
        };
        // SAFETY: caller_slot is below CALLER_MEMO.
        let c = unsafe { self.callers.get_unchecked(caller_slot(cs, ret)) };
        (c.site == cs && c.ret == ret).then_some(c.bucket)
    }

    /// Remember how the bucket `b` of a call from `cs` was found (`wrappers::bucket`).
    pub fn note(&mut self, cs: usize, b: usize, found: wrappers::Found) {
        // A new wrapper changes the buckets of calls from its site: forget every site.
        let epoch = wrappers::epoch();
        if self.epoch != epoch {
            self.sites = [SiteMemo::NONE; SITE_MEMO];
            self.callers = [CallerMemo::NONE; CALLER_MEMO];
            self.epoch = epoch;
        }
        // (Buckets are below `bucket::WRAPPER`, word indices below `wrappers::SCAN`.)
        let bucket = b as u32;
        let (memo, caller) = match found {
            wrappers::Found::Own => (SiteMemo { site: cs, bucket, k: NO_WORD, ret: 0, k1: NO_WORD }, None),
            wrappers::Found::Caller { k, ret } => (SiteMemo { site: cs, bucket, k: k as u16, ret, k1: NO_WORD }, Some(ret)),
            wrappers::Found::Chain { k0, ret0, k1, ret1 } => (SiteMemo { site: cs, bucket, k: k0 as u16, ret: ret0, k1: k1 as u16 }, Some(ret1)),
            wrappers::Found::Other => (SiteMemo::NONE, None),
        };
        self.sites[site_slot(cs)] = memo;
        if let Some(ret) = caller {
            self.callers[caller_slot(cs, ret)] = CallerMemo { site: cs, ret, bucket: b };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::types::wrappers::Found;

    fn memos() -> SiteMemos {
        SiteMemos {
            tick: 0,
            sites: [SiteMemo::NONE; SITE_MEMO],
            callers: [CallerMemo::NONE; CALLER_MEMO],
            epoch: wrappers::epoch(),
        }
    }

    /// The bucket a call from `cs` finds in the memos, `stack` being the words above the
    /// caller's stack pointer (a sampled call is skipped: it always asks again).
    fn ask(m: &mut SiteMemos, cs: usize, stack: &[usize; 8]) -> Option<usize> {
        if m.tick.wrapping_add(1).is_multiple_of(wrappers::SAMPLE_EVERY) {
            m.tick = m.tick.wrapping_add(1);
        }
        // SAFETY: every word index the memos hold is below 8, inside `stack`.
        unsafe { m.bucket(cs, stack.as_ptr() as usize) }
    }

    #[test]
    fn busy_sites_keep_their_entries() {
        let mut m = memos();
        let stack = [0usize; 8];
        // Two busy sites alike in their low 6 bits (python's busiest were) shared an entry
        // of the 32- and 64-entry tables, and each call from one evicted the other.
        let (a, b) = (0x5555_5556_0a10usize, 0x5555_5556_0a50usize);
        m.note(a, 1, Found::Own);
        m.note(b, 2, Found::Own);
        for _ in 0..3 {
            assert_eq!(ask(&mut m, a, &stack), Some(1));
            assert_eq!(ask(&mut m, b, &stack), Some(2));
        }
        // As many sites as entries, one apart: all kept.
        let sites: [usize; SITE_MEMO] = core::array::from_fn(|i| 0x7f00_0000_1000 + i);
        for (i, &s) in sites.iter().enumerate() {
            m.note(s, i % 7 + 1, Found::Own);
        }
        for (i, &s) in sites.iter().enumerate() {
            assert_eq!(ask(&mut m, s, &stack), Some(i % 7 + 1), "site {i}");
        }
        // A site not noted is not found.
        assert_eq!(ask(&mut m, 0x7f00_0000_2000, &stack), None);
    }

    #[test]
    fn a_caller_that_reaches_two_sites_through_wrappers_keeps_both() {
        // sqlite: sqlite3DbRealloc's caller (return address R) reaches malloc through
        // sqlite3Malloc and sqlite3MemMalloc for a new string, and realloc through
        // sqlite3Realloc and sqlite3MemRealloc when it grows. The two sites' chains end at
        // the same caller; remembered by the caller alone, each call evicted the other.
        let (malloc_site, realloc_site) = (0x7f8f_a7a0_a504usize, 0x7f8f_a7a0_a4b9usize);
        let (via_malloc, via_realloc, r) = (0x7f8f_a7a0_b010usize, 0x7f8f_a7a0_b222usize, 0x7f8f_a7a2_106busize);
        let mut m = memos();
        let mut s1 = [0usize; 8];
        (s1[2], s1[5]) = (via_malloc, r);
        let mut s2 = [0usize; 8];
        (s2[2], s2[5]) = (via_realloc, r);
        m.note(malloc_site, 4, Found::Chain { k0: 2, ret0: via_malloc, k1: 5, ret1: r });
        m.note(realloc_site, 4, Found::Chain { k0: 2, ret0: via_realloc, k1: 5, ret1: r });
        for _ in 0..3 {
            assert_eq!(ask(&mut m, malloc_site, &s1), Some(4));
            assert_eq!(ask(&mut m, realloc_site, &s2), Some(4));
        }
        // Another caller of the same chain is not taken for this one.
        let mut s3 = s1;
        s3[5] = r + 0x40;
        assert_eq!(ask(&mut m, malloc_site, &s3), None);
    }
}
