//! Allocation wrappers. A program that allocates through one function of its own
//! (`xmalloc`, `OPENSSL_malloc`, `Perl_safesysmalloc`, `luaM_realloc_`) shows mie one call
//! site, so every block it allocates lands in one bucket. A call site that serves a large
//! share of all allocations is taken for a wrapper's, and for calls from it the bucket is
//! chosen by the wrapper's own caller instead.
//!
//! Finding the wrapper's caller without frame pointers (Debian builds have none): the stack
//! above `malloc`'s return address holds the wrapper's frame and then its return address.
//! mie reads the words there and takes the first that is a return address: it lies in an
//! executable segment of a loaded object, just after a call instruction. Each wrapper site
//! remembers where it found it, so the next call reads one word and checks it. Nothing is
//! read outside the stack's live part (a few hundred bytes above the caller's frame) and
//! the code bytes read belong to mapped executable segments; when no return address is
//! found, the call site's own bucket is used. Each thread also remembers what it found
//! (`sites.rs`, in its thread cache): for a wrapper's site, the stack words where its
//! caller's return address lies (one level, or two for a wrapper called by a wrapper) and
//! the buckets of the callers it saw lately, so a call from a known caller reads those
//! words and nothing else.
//!
//! Detection is sampled: one allocation in 64 of each thread counts its call site in a
//! small table of hot sites. A site with a quarter or more of the samples is a wrapper's if
//! the function it is in has a name that says so (`…alloc…`, in any case: `xmalloc`,
//! `Perl_safesysmalloc`, `luaM_realloc_`, `l_alloc`, `CRYPTO_zalloc`, `g_malloc`); a hot site
//! in a function with another name is a program's own hot spot (a tree builder's `malloc`),
//! not a wrapper. Only where the object has no symbol for it (a stripped program's own
//! functions) does the share alone decide.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::heap::types::bucket::{self, Keys, WRAPPER};
use crate::platform;

pub const SAMPLE_EVERY: u32 = 64;
const HOT: usize = 16;
/// Samples between decisions, and the share that makes a wrapper (a quarter).
const ROUND: u32 = 256;
const SHARE: u32 = ROUND / 4;
const MAX_WRAPPERS: usize = 8;
/// Words of stack scanned for the wrapper's return address.
pub const SCAN: usize = 48;
/// Wrapper levels followed up the stack.
const MAX_DEPTH: usize = 3;

static HOT_SITE: [AtomicUsize; HOT] = [const { AtomicUsize::new(0) }; HOT];
static HOT_COUNT: [AtomicU32; HOT] = [const { AtomicU32::new(0) }; HOT];
static SAMPLES: AtomicU32 = AtomicU32::new(0);
static WRAPPERS: [AtomicUsize; MAX_WRAPPERS] = [const { AtomicUsize::new(0) }; MAX_WRAPPERS];
/// Hot sites found not to be wrappers' (their function has another name), most recent
/// replacing the oldest: the name lookup, which reads the object's symbol table, runs once
/// per site, not again every round (python spent 2 % of its time there).
const NOT_WRAPPERS_LEN: usize = 16;
static NOT_WRAPPERS: [AtomicUsize; NOT_WRAPPERS_LEN] = [const { AtomicUsize::new(0) }; NOT_WRAPPERS_LEN];
static NOT_WRAPPERS_NEXT: AtomicUsize = AtomicUsize::new(0);

/// Per wrapper: the stack word (index from the caller's frame start) where its caller's
/// return address was found last, + 1 (0: not found yet).
static SLOT_HINT: [AtomicU32; MAX_WRAPPERS] = [const { AtomicU32::new(0) }; MAX_WRAPPERS];

/// Counts the wrappers found: threads forget the buckets they remembered for call sites
/// when it changes (`TCache::sites`).
static EPOCH: AtomicU32 = AtomicU32::new(0);

/// The number of wrappers found so far (see `EPOCH`).
#[inline]
pub fn epoch() -> u32 {
    EPOCH.load(Ordering::Relaxed)
}

/// Whether `site` has been found to be a wrapper's.
pub fn is_wrapper(site: usize) -> bool {
    WRAPPERS.iter().any(|w| w.load(Ordering::Relaxed) == site)
}

/// The bucket for an untyped allocation called from `cs` (the return address into the
/// caller), `sp` being the caller's stack pointer at the call (the first word of its frame);
/// `tick` is the calling thread's allocation counter (0 when it has none yet). Also how
/// the bucket was found, so that the thread can reuse it for its next call from `cs`
/// (`heap::call_site_bucket`).
///
/// # Safety
/// `sp` must be the caller's real stack pointer at the call into the allocator (the C
/// ABI's entry points pass it): the words above it are read.
#[inline(always)]
pub unsafe fn bucket(keys: &Keys, cs: usize, sp: usize, tick: Option<&mut u32>) -> (usize, Found) {
    let e = keys.site_entry(cs);
    let sampled = tick.is_some_and(|t| {
        *t = t.wrapping_add(1);
        t.is_multiple_of(SAMPLE_EVERY)
    });
    if e & WRAPPER == 0 {
        if sampled {
            sample(cs);
        }
        return (e as usize, Found::Own);
    }
    // SAFETY: the caller's guarantee.
    unsafe { through_wrappers(keys, cs, sp, e, sampled) }
}

/// How `bucket` found a call site's bucket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Found {
    /// The site's own: the same for every call from it.
    Own,
    /// A wrapper's caller's: the return address `ret` in stack word `k` above the caller's
    /// stack pointer (one level of wrapper). A later call from the same site whose word `k`
    /// holds the same return address has the same bucket.
    Caller { k: usize, ret: usize },
    /// A wrapper's wrapper's caller's (sqlite: `sqlite3MemMalloc` called by `sqlite3Malloc`):
    /// the inner wrapper's return address `ret0` in word `k0`, its caller's `ret1` in word
    /// `k1`. A later call from the same site with `ret0` in word `k0` (the same outer
    /// wrapper's call, so the same frames) and `ret1` in word `k1` has the same bucket.
    Chain { k0: usize, ret0: usize, k1: usize, ret1: usize },
    /// Anything else (deeper chains, no return address found): look again each time.
    Other,
}

/// Stack word `k` above `sp` (a word index a scan read before: `Found`).
///
/// # Safety
/// As `bucket`, and k < SCAN.
#[inline(always)]
pub unsafe fn word(sp: usize, k: usize) -> usize {
    // SAFETY: the caller's guarantee.
    unsafe { ((sp + 8 * k) as *const usize).read() }
}

/// The bucket of a call from a wrapper: by its caller, or, when that is a wrapper too (lua:
/// `l_alloc` called by `luaM_realloc_`), by the first caller up the stack that is not, a few
/// levels at most.
///
/// # Safety
/// As `bucket`.
#[cold]
#[inline(never)]
unsafe fn through_wrappers(keys: &Keys, cs: usize, sp: usize, mut e: u64, sampled: bool) -> (usize, Found) {
    let mut site = cs;
    let mut from = 0;
    let mut found = Found::Other;
    let mut first = (0, 0);
    for level in 0..MAX_DEPTH {
        if e & WRAPPER == 0 {
            break;
        }
        // SAFETY: the caller's guarantee.
        let Some((k, ret)) = (unsafe { caller_of_wrapper(site, sp, from) }) else {
            found = Found::Other;
            break;
        };
        site = ret;
        from = k + 1;
        e = keys.site_entry(site);
        found = match level {
            _ if e & WRAPPER != 0 => Found::Other,
            0 => Found::Caller { k, ret },
            1 => Found::Chain { k0: first.0, ret0: first.1, k1: k, ret1: ret },
            _ => Found::Other,
        };
        first = (k, ret);
    }
    if sampled {
        // The site the bucket comes from: a hot caller of a wrapper can be a wrapper too.
        sample(site);
    }
    // (`found` is a caller's only if the first level ended on a site that is no wrapper.)
    ((e & !WRAPPER) as usize, found)
}

/// Count one sampled allocation from `site`; every ROUND samples, mark the hot sites.
#[cold]
fn sample(site: usize) {
    // Space-saving counting: the site's counter, else replace the smallest.
    let mut min = 0;
    let mut found = false;
    for i in 0..HOT {
        if HOT_SITE[i].load(Ordering::Relaxed) == site {
            HOT_COUNT[i].fetch_add(1, Ordering::Relaxed);
            found = true;
            break;
        }
        if HOT_COUNT[i].load(Ordering::Relaxed) < HOT_COUNT[min].load(Ordering::Relaxed) {
            min = i;
        }
    }
    if !found {
        HOT_SITE[min].store(site, Ordering::Relaxed);
        HOT_COUNT[min].fetch_add(1, Ordering::Relaxed);
    }
    if SAMPLES.fetch_add(1, Ordering::Relaxed) + 1 < ROUND {
        return;
    }
    SAMPLES.store(0, Ordering::Relaxed);
    for i in 0..HOT {
        let c = HOT_COUNT[i].load(Ordering::Relaxed);
        let s = HOT_SITE[i].load(Ordering::Relaxed);
        if c >= SHARE && s != 0 && !is_wrapper(s) && !known_not_wrapper(s) && judge(s) {
            if let Some(free) = WRAPPERS.iter().position(|w| w.compare_exchange(0, s, Ordering::Relaxed, Ordering::Relaxed).is_ok()) {
                SLOT_HINT[free].store(0, Ordering::Relaxed);
                bucket::forget_site(s);
                EPOCH.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Decay, so the table follows what the program does now.
        HOT_COUNT[i].store(c / 2, Ordering::Relaxed);
    }
}

fn known_not_wrapper(site: usize) -> bool {
    NOT_WRAPPERS.iter().any(|w| w.load(Ordering::Relaxed) == site)
}

/// Whether a hot site is a wrapper's, by its function's name; a no is remembered. When the
/// name cannot be read now (the object's file cannot be mapped: the program is out of
/// address space or memory) the site is not judged: it stays hot and is judged in a later
/// round. (Taking it for a wrapper then would move the site's allocations to other buckets
/// in the middle of the program, whose address space may be exhausted.)
fn judge(site: usize) -> bool {
    let Some(yes) = named_like_a_wrapper(site) else { return false };
    if !yes {
        let i = NOT_WRAPPERS_NEXT.fetch_add(1, Ordering::Relaxed) % NOT_WRAPPERS_LEN;
        NOT_WRAPPERS[i].store(site, Ordering::Relaxed);
    }
    yes
}

/// Whether the function containing call site `site` is named like an allocation wrapper
/// (or has no name to say otherwise); None when its object's symbols cannot be read now.
fn named_like_a_wrapper(site: usize) -> Option<bool> {
    let mut verdict = Some(true);
    crate::platform::symbols::lookup(site, true, |s| {
        if let Some((name, _)) = s.func {
            verdict = Some(name.windows(5).any(|w| w.eq_ignore_ascii_case(b"alloc")));
        } else if s.unreadable_now {
            verdict = None;
        }
    });
    verdict
}

/// The return address of the wrapper whose call to the allocator returns to `cs`.
///
/// # Safety
/// As `bucket`.
unsafe fn caller_of_wrapper(cs: usize, sp: usize, from: usize) -> Option<(usize, usize)> {
    let i = WRAPPERS.iter().position(|w| w.load(Ordering::Relaxed) == cs)?;
    let hint = SLOT_HINT[i].load(Ordering::Relaxed) as usize;
    // SAFETY: the caller's guarantee.
    let (k, w) = unsafe { find_return(sp, from, hint) }?;
    if k + 1 != hint {
        SLOT_HINT[i].store(k as u32 + 1, Ordering::Relaxed);
    }
    Some((k, w))
}

/// The first return address among the stack words `from..SCAN` above `sp` (trying word
/// `hint - 1` first): its index and value.
///
/// # Safety
/// The SCAN words from `sp` must be readable.
unsafe fn find_return(sp: usize, from: usize, hint: usize) -> Option<(usize, usize)> {
    // SAFETY: k < SCAN: inside the range the caller vouches for.
    let word = |k: usize| unsafe { word(sp, k) };
    if hint > from && hint <= SCAN && is_return_address(word(hint - 1)) {
        return Some((hint - 1, word(hint - 1)));
    }
    let found = (from..SCAN).map(|k| (k, word(k))).find(|&(_, w)| is_return_address(w));
    if found.is_none() {
        platform::code::missed();
    }
    found
}

/// Whether `w` points just after a call instruction in a loaded object's executable code.
fn is_return_address(w: usize) -> bool {
    if w < 8 || !platform::code::contains(w - 8, 8) {
        return false;
    }
    // SAFETY: [w - 8, w) lies in a mapped, readable executable segment (checked above).
    let before = unsafe { ((w - 8) as *const [u8; 8]).read() };
    #[cfg(target_arch = "x86_64")]
    {
        // call rel32 (E8), call [rip+disp32] (FF 15), call reg (FF D0+r), call [reg] (FF 10+r).
        before[3] == 0xe8 || (before[2] == 0xff && before[3] == 0x15) || (before[6] == 0xff && (before[7] & 0xf8) == 0xd0) || (before[6] == 0xff && (before[7] & 0xf8) == 0x10)
    }
    #[cfg(target_arch = "aarch64")]
    {
        let insn = u32::from_le_bytes([before[4], before[5], before[6], before[7]]);
        // BL imm26, BLR Xn (and BLRAA/BLRAB with pointer authentication).
        insn >> 26 == 0b100101 || insn & 0xffff_fc1f == 0xd63f_0000 || insn & 0xfeff_f800 == 0xd63f_0800
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = before;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_finds_the_first_return_address_above_the_frame() {
        // Real return addresses: the frames of this test's own stack.
        let mut frames = [0usize; 8];
        let n = crate::platform::backtrace_into(&mut frames);
        assert!(n >= 3);
        let ret = frames[2];
        platform::code::refresh();
        assert!(is_return_address(ret), "{ret:#x}");
        let local = 5u64;
        assert!(!is_return_address(&local as *const u64 as usize));
        assert!(!is_return_address(0) && !is_return_address(3) && !is_return_address(usize::MAX) && !is_return_address(12345));
        assert!(!platform::code::contains(usize::MAX - 7, 16) && !platform::code::contains(usize::MAX - 7, 8));
        // A frame of saved data (a stack pointer, numbers, a heap-like pointer), then the
        // wrapper's return address, then more.
        let mut stack = [0usize; SCAN];
        stack[0] = &local as *const u64 as usize;
        stack[1] = 42;
        stack[2] = 0x7fff_0000_1000;
        stack[3] = ret;
        stack[4] = frames[1];
        // SAFETY: stack is SCAN readable words.
        unsafe {
            assert_eq!(find_return(stack.as_ptr() as usize, 0, 0), Some((3, ret)));
            // A remembered slot is read first; a stale one falls back to the scan.
            assert_eq!(find_return(stack.as_ptr() as usize, 0, 5), Some((4, frames[1])));
            assert_eq!(find_return(stack.as_ptr() as usize, 0, 2), Some((3, ret)));
            // A second level starts above the first.
            assert_eq!(find_return(stack.as_ptr() as usize, 4, 0), Some((4, frames[1])));
        }
        stack[3] = 7;
        stack[4] = 9;
        // SAFETY: as above.
        assert_eq!(unsafe { find_return(stack.as_ptr() as usize, 0, 0) }, None);
    }

    #[inline(never)]
    fn plain_function_name() -> usize {
        plain_function_name as *const () as usize + 4
    }

    #[test]
    fn a_hot_site_in_a_function_with_another_name_is_judged_once() {
        let site = plain_function_name();
        assert!(!known_not_wrapper(site));
        assert!(!judge(site), "a site in plain_function_name is no wrapper's");
        assert!(known_not_wrapper(site), "the verdict is remembered");
        // Made hot, it never becomes a wrapper (and is not looked up again).
        for _ in 0..2 * ROUND {
            sample(site);
        }
        assert!(!is_wrapper(site));
    }

    #[test]
    fn a_site_with_a_large_share_of_samples_becomes_a_wrapper() {
        let site = 0x7777_1234_5678;
        let other = 0x7777_1234_9999;
        assert!(!is_wrapper(site));
        for i in 0..2 * ROUND {
            sample(if i % 8 == 0 { other } else { site });
        }
        assert!(is_wrapper(site));
        assert!(!is_wrapper(other));
    }
}
