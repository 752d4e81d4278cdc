//! Call sites to buckets, per thread (`SiteMemos`, in each thread's cache): a thread
//! remembers its recent allocation sites and their buckets (`SiteMemo`), and for allocation
//! wrappers where their callers' return addresses lie on the stack and the buckets of their
//! recent callers (`CallerMemo`), so that most calls find their bucket without the
//! process-wide site table or a stack scan (`wrappers.rs`). A new wrapper clears both (its
//! site's calls change buckets). `heap::call_site_bucket` is the entry point.

use crate::heap::types::wrappers;

/// `SiteMemo::site` when there is none (no return address is this).
pub const NO_SITE: usize = usize::MAX;

/// Entries of `SiteMemos::sites`: a program's busy allocation sites (python calls malloc from
/// dozens, in turn) each keep theirs.
pub const SITE_MEMO: usize = 32;

/// A call site of an untyped allocation and its bucket, as this thread found it, for later
/// calls from there (`wrappers::Found`): always (`k` = `NO_SITE`: the site's own bucket);
/// for a wrapper's site, when stack word `k` holds the same return address `ret`, and
/// otherwise by the caller in word `k` (`CallerMemo`); for a wrapper called by a wrapper
/// (`k1` set), when word `k` holds `ret` (the outer wrapper's call), by the caller in
/// word `k1`. A sampled call looks its site up again. The words are read without checking
/// that they still follow a call instruction: they were found to be return addresses
/// before, and a wrong answer could only pick another pointer bucket.
#[derive(Clone, Copy)]
pub struct SiteMemo {
    pub site: usize,
    pub bucket: usize,
    pub k: usize,
    pub ret: usize,
    pub k1: usize,
}

impl SiteMemo {
    pub const NONE: SiteMemo = SiteMemo { site: NO_SITE, bucket: 0, k: NO_SITE, ret: 0, k1: NO_SITE };
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

/// Entries of `SiteMemos::callers`, by the caller's return address's low bits.
pub const CALLER_MEMO: usize = 64;

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
        let mut b = e.bucket;
        if e.k != NO_SITE {
            // SAFETY: the caller's guarantee; k was a word index the scan read.
            let w = unsafe { wrappers::word(sp, e.k) };
            if w != e.ret || e.k1 != NO_SITE {
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
        let ret = if e.k1 == NO_SITE {
            w
        } else if w == e.ret {
            // SAFETY: the caller's guarantee; k1 was a word index the scan read.
            unsafe { wrappers::word(sp, e.k1) }
        } else {
            return None;
        };
        // SAFETY: the index is below CALLER_MEMO.
        let c = unsafe { self.callers.get_unchecked(ret & (CALLER_MEMO - 1)) };
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
        let (memo, caller) = match found {
            wrappers::Found::Own => (SiteMemo { site: cs, bucket: b, k: NO_SITE, ret: 0, k1: NO_SITE }, None),
            wrappers::Found::Caller { k, ret } => (SiteMemo { site: cs, bucket: b, k, ret, k1: NO_SITE }, Some(ret)),
            wrappers::Found::Chain { k0, ret0, k1, ret1 } => (SiteMemo { site: cs, bucket: b, k: k0, ret: ret0, k1 }, Some(ret1)),
            wrappers::Found::Other => (SiteMemo::NONE, None),
        };
        self.sites[site_slot(cs)] = memo;
        if let Some(ret) = caller {
            self.callers[ret & (CALLER_MEMO - 1)] = CallerMemo { site: cs, ret, bucket: b };
        }
    }
}
