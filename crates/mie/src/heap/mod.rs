//! The allocator core, one folder per concern, bottom to top (each uses only those above
//! it in this table; all read the globals in this file):
//!
//! | folder | what |
//! |---|---|
//! | `types/` | type ids, call sites and allocation wrappers to buckets; allocation kinds |
//! | `checks/` | what every block carries for its checks: slack canaries, allocation and free stacks |
//! | `slab/` | the small-block allocator: classes and address layout, slot records and slab metadata, pools, thread caches and their slabs, remote frees, the quarantine, and the hot paths (`alloc.rs`, `free.rs`) |
//! | `large/` | large blocks: their window, table, index and warm pages |
//! | `guarded/` | blocks with no accessible neighbour: guarded samples, guard mode, zero-size blocks |
//! | `bounds.rs` | bounds of the block an address is in, for the checks at the call |
//! | `diagnose/` | what is wrong and its report: the slow path of a release, harmless mismatches, the fault handlers, the C library meeting mie blocks, the sweep at exit |
//! | `alloc.rs`, `realloc.rs`, this file | the entry points: where an allocation goes, realloc and usable size, release |
//!
//! This file: the globals, start-up, fork and exit.

pub mod alloc;
pub mod bounds;
pub mod checks;
pub mod diagnose;
pub mod guarded;
pub mod large;
pub mod realloc;
pub mod slab;
pub mod types;

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::options::Options;
use crate::platform::{self, lock::Lock};
use crate::report;
use crate::tag;
use types::bucket::Keys;
use large::LARGE;
use slab::layout::{Geometry, REGION_COUNT};
use slab::pool::POOLS;

pub use alloc::alloc_as;
pub use realloc::{owner_of, realloc, slab_metadata_of, usable_size};
pub use types::kind::Release;

/// Free a block (`free`).
pub fn free(p: *mut u8, who: Caller) {
    free_inline(p, who)
}

/// `free` compiled into the entry point that calls it (the C ABI's `free`, Rust's
/// `dealloc`): the caller's name for the report is then a constant, not a register the fast
/// path keeps to its end (11 instructions fewer per malloc+free, 13 in a FIFO batch).
#[inline(always)]
pub fn free_inline(p: *mut u8, who: Caller) {
    release(p, who, types::kind::Release::FREE)
}

/// Release a block the way `r` says it was allocated (`delete[]`, sized `free_sized`, ...):
/// a block allocated otherwise, or of another size, is a mismatch (`diagnose/mismatch.rs`).
/// The slab allocator's fast path first; anything else, and every error, goes to
/// `diagnose::validate`, which finds out what it is and reports.
#[inline(always)]
pub fn release(p: *mut u8, who: Caller, r: types::kind::Release) {
    if p.is_null() {
        return;
    }
    if !slab::free::free_fast(p as usize, who, r) {
        diagnose::validate::free_full(p, who, r)
    }
}
pub use diagnose::validate::describe_slot;

/// Process-wide state, written once by `init` and read-only afterwards.
pub struct Globals {
    pub geo: Geometry,
    pub keys: Keys,
    /// Keyed PRF for block canaries.
    pub canary: crate::prf::Prf,
    /// Keyed PRF behind every thread's placement generator.
    pub placement: crate::prf::Prf,
    pub opts: Options,
    pub tc_key: libc::pthread_key_t,
}

struct GlobalCell(UnsafeCell<Globals>);
// SAFETY: written only by `init` before STATE becomes READY (Release); read only after an
// Acquire load of READY.
unsafe impl Sync for GlobalCell {}

static G: GlobalCell = GlobalCell(UnsafeCell::new(Globals {
    geo: Geometry::NONE,
    keys: Keys { prf: crate::prf::Prf::NONE, pointer_buckets: 1, token_half: 1 << 63, token_max_known: false, token_max: 0 },
    canary: crate::prf::Prf::NONE,
    placement: crate::prf::Prf::NONE,
    opts: Options::DEFAULT,
    tc_key: 0,
}));

const UNINIT: u8 = 0;
pub(crate) const READY: u8 = 2;
const FAILED: u8 = 3;
pub(crate) static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static INIT_LOCK: &Lock = &slab::locks::LOCKS.init.0;

/// The globals, initialising on first use. `None` if the heap could not be reserved.
#[inline(always)]
pub fn ensure_init() -> Option<&'static Globals> {
    if STATE.load(Ordering::Acquire) == READY {
        // SAFETY: READY was published after the globals were written.
        return Some(unsafe { &*G.0.get() });
    }
    init_slow()
}

/// The globals when the caller knows init happened (it holds a thread cache or a heap pointer).
#[inline(always)]
pub fn globals() -> &'static Globals {
    // SAFETY: callers only get here after ensure_init succeeded on some path that
    // happens-before this one (a cache or heap pointer exists).
    unsafe { &*G.0.get() }
}

/// At process exit (the C library runs `.fini_array` entries from `exit`): check the freed
/// blocks the exiting thread still holds for writes after free (`slab::owner::check_at_exit`),
/// then the whole heap for overflows from blocks that were never freed (`sweep.rs`).
extern "C" fn at_exit() {
    if STATE.load(Ordering::Acquire) != READY {
        return;
    }
    report::set_exiting();
    let tcp = crate::platform::tls::get();
    let mut own = None;
    if tcp > slab::tcache::DEAD {
        // SAFETY: a live TLS word is this thread's own cache, not in use during `exit`.
        let tc = unsafe { &*(tcp as *const slab::tcache::TCache) };
        slab::owner::check_at_exit(globals(), tc);
        own = Some(tc.id);
    }
    if globals().opts.exit_check {
        diagnose::sweep::at_exit(globals(), own);
    }
}

#[used]
#[unsafe(link_section = ".fini_array")]
static AT_EXIT: extern "C" fn() = at_exit;

#[cold]
fn init_slow() -> Option<&'static Globals> {
    {
        let _g = INIT_LOCK.guard();
        match STATE.load(Ordering::Acquire) {
            READY => {}
            FAILED => return None,
            _ => {
                // SAFETY: only this thread (holding INIT_LOCK, before READY) writes the globals.
                let g = unsafe { &mut *G.0.get() };
                // What stderr is now, for reports after the program closes it.
                platform::note_stderr();
                g.opts = crate::options::from_env();
                if !g.opts.symbolize {
                    platform::symbolizer::disable();
                }
                if g.opts.debug {
                    report::set_stack_frames(16);
                }
                report::set_stacks_recorded(g.opts.stacks);
                // Before any heap mapping exists: tagging decides PROT_MTE.
                tag::init(g.opts.mte);
                platform::simd::init();
                let shape = slab::layout::init_shape();
                // Another mie heap in the process (libmie.so under a Rust program that has
                // mie as its global allocator): region-aligned random bases could overlap
                // its regions, whose mappings would then be in the way of ours.
                let other = platform::other_instance_ranges(at_exit as *const () as usize);
                let clear = |h: usize, m: usize| {
                    let apart = |a: usize, al: usize, b: usize, bl: usize| a + al <= b || b + bl <= a;
                    other.is_none_or(|o| {
                        let (hs, ms) = (shape.heap_size(), shape.meta_size());
                        [(o[0], o[1]), (o[2], o[3])].iter().all(|&(b, bl)| bl == 0 || (apart(h, hs, b, bl) && apart(m, ms, b, bl)))
                    })
                };
                let mut bases = shape.choose_bases(platform::random_u64());
                for _ in 0..256 {
                    if clear(bases.0, bases.1) {
                        break;
                    }
                    bases = shape.choose_bases(platform::random_u64());
                }
                let (heap, meta) = bases;
                let Some(key) = platform::thread_key_create(slab::tcache::thread_exit) else {
                    report::warn(format_args!("cannot create a thread key; every allocation will fail"));
                    STATE.store(FAILED, Ordering::Release);
                    return None;
                };
                g.geo = Geometry::new(shape, heap, meta);
                slab::finding::install(diagnose::findings::report_finding);
                slab::pool::install_relief(|| LARGE.relieve());
                slab::tcache::on_attach(diagnose::fault::ensure_installed);
                if !slab::meta::map_table(&g.geo) {
                    report::warn(format_args!("cannot map the slab metadata table; every allocation will fail"));
                    STATE.store(FAILED, Ordering::Release);
                    return None;
                }
                g.tc_key = key;
                // The AllocToken id space: the option, else what `mie cc` recorded in the
                // program (`__mie_alloc_token_max`, its -falloc-token-max), else unknown.
                let token_max = if g.opts.alloc_token_max != 0 { g.opts.alloc_token_max } else { platform::program_token_max() };
                g.keys = Keys {
                    prf: crate::prf::Prf::random(),
                    pointer_buckets: g.opts.buckets,
                    token_half: types::bucket::token_half(token_max),
                    token_max_known: token_max != 0,
                    token_max,
                };
                g.keys.init_layouts();
                g.canary = crate::prf::Prf::random();
                g.placement = crate::prf::Prf::random();
                bounds::init();
                // Always: guard pages and quarantined large blocks fault on every machine.
                diagnose::fault::install();
                diagnose::foreign::install();
                crate::traps::install();
                STATE.store(READY, Ordering::Release);
            }
        }
    }
    // Registered after READY and outside the init lock: glibc may allocate here.
    static ONCE: AtomicU8 = AtomicU8::new(0);
    if ONCE.swap(1, Ordering::AcqRel) == 0 {
        platform::at_fork(fork_prepare, fork_parent, fork_child);
        // SAFETY: READY is set; the globals are read-only from here on.
        let opts = unsafe { &(*G.0.get()).opts };
        if opts.stacks {
            checks::stacks::init();
        }
        if opts.stats != 0 {
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(stats_at_exit) };
        }
    }
    // SAFETY: READY is set.
    Some(unsafe { &*G.0.get() })
}

/// A thread got its cache (`slab::tcache::attach`, with no lock held; it may allocate): the
/// first time the main thread does, have a report of the exit checks find stderr even if the
/// program's exit handlers close it (`platform::keep_stderr`). Not at start-up: the
/// registration allocates, and a program that never allocates (`/bin/true`) would make a
/// heap for it (23 page faults more); one with no block has nothing for those checks.
pub(crate) fn cache_attached() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.load(Ordering::Relaxed) && platform::is_main_thread() && !REGISTERED.swap(true, Ordering::AcqRel) {
        platform::on_main_thread_exit(main_thread_exit);
    }
}

/// The main thread ends (`exit` begins, before the program's exit handlers).
unsafe extern "C" fn main_thread_exit(_: *mut libc::c_void) {
    platform::keep_stderr();
}

extern "C" fn stats_at_exit() {
    crate::stats::print_level(globals().opts.stats);
}

// Fork: take every allocator lock so the child starts with consistent metadata.
unsafe extern "C" fn fork_prepare() {
    INIT_LOCK.lock();
    slab::tcache::POOL_LOCK.lock();
    slab::tcache::FALLBACK_LOCK.lock();
    for l in slab::locks::LOCKS.pools.iter() {
        l.0.lock();
    }
    LARGE.lock.lock();
    guarded::sample::LOCK.lock();
    guarded::guard::LOCK.lock();
}

unsafe extern "C" fn fork_parent() {
    guarded::sample::LOCK.unlock();
    guarded::guard::LOCK.unlock();
    LARGE.lock.unlock();
    for l in slab::locks::LOCKS.pools.iter().rev() {
        l.0.unlock();
    }
    slab::tcache::FALLBACK_LOCK.unlock();
    slab::tcache::POOL_LOCK.unlock();
    INIT_LOCK.unlock();
}

unsafe extern "C" fn fork_child() {
    // Other threads do not exist in the child; their caches stay in use (their slots are
    // simply never reused, and frees into their slabs wait in the remote bitmaps), which is
    // safe whatever state those threads were in.
    guarded::sample::LOCK.reset();
    LARGE.lock.reset();
    for l in slab::locks::LOCKS.pools.iter() {
        l.0.reset();
    }
    slab::tcache::FALLBACK_LOCK.reset();
    slab::tcache::POOL_LOCK.reset();
    INIT_LOCK.reset();
    slab::tcache::after_fork_child();
    guarded::sample::after_fork_child();
    guarded::guard::after_fork_child();
}

/// How a call is identified in reports: the function name and the caller's address. Two
/// words, so it travels in registers (`Caller::new("free", ret)` in a constant context
/// makes the name a promoted static).
#[derive(Clone, Copy)]
pub struct Caller {
    pub func: &'static Func,
    pub ret_addr: usize,
}

/// The name of an allocator entry point, behind a thin pointer.
pub struct Func(pub &'static str);

impl core::ops::Deref for Func {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl core::fmt::Display for Func {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

/// A `Caller` for the named function: `caller!("free", ret_addr)`.
#[macro_export]
macro_rules! caller {
    ($name:literal, $ret:expr) => {
        $crate::sys::Caller { func: &$crate::sys::Func($name), ret_addr: $ret }
    };
}

/// The bucket of an untyped allocation from the C ABI: by call site `cs`, or for a call
/// site found to be an allocation wrapper's, by the wrapper's caller (`types/wrappers.rs`),
/// through what the calling thread remembers of its call sites (`types/sites.rs`).
///
/// # Safety
/// `sp` must be the caller's stack pointer at the call (the words above it are read).
#[inline(always)]
pub unsafe fn call_site_bucket(cs: usize, sp: usize) -> usize {
    let tcp = platform::tls::get();
    if tcp > slab::tcache::DEAD {
        // SAFETY: a live TLS word is this thread's own cache; only this thread touches it.
        let tc = unsafe { &mut *(tcp as *mut slab::tcache::TCache) };
        // SAFETY: the caller's guarantee.
        if let Some(b) = unsafe { tc.sites.bucket(cs, sp) } {
            return b;
        }
    }
    // SAFETY: the caller's guarantee.
    unsafe { site_bucket_slow(cs, sp) }
}

/// `call_site_bucket` through the process-wide table of sites (and the wrappers' stack
/// scan); the thread remembers how it found the bucket.
///
/// # Safety
/// As `call_site_bucket`.
#[inline(never)]
unsafe fn site_bucket_slow(cs: usize, sp: usize) -> usize {
    let Some(g) = ensure_init() else { return 1 };
    let tcp = platform::tls::get();
    if tcp <= slab::tcache::DEAD {
        // SAFETY: the caller's guarantee.
        return unsafe { types::wrappers::bucket(&g.keys, cs, sp, None) }.0;
    }
    // SAFETY: a live TLS word is this thread's own cache; only this thread touches it.
    let tc = unsafe { &mut *(tcp as *mut slab::tcache::TCache) };
    // SAFETY: the caller's guarantee.
    let (b, found) = unsafe { types::wrappers::bucket(&g.keys, cs, sp, Some(&mut tc.sites.tick)) };
    tc.sites.note(cs, b, found);
    b
}

/// `malloc(size)` called from `cs` with the caller's stack pointer `sp`: the bucket from
/// the thread's last call site and the block from `slab::alloc::malloc_fast` when both can,
/// with one read of the thread's cache, returned as it is (no test of it on the way out);
/// everything else goes to `slow(bucket)` (the C entry point's, which serves it with
/// `alloc_in_bucket` and sets `errno`), the bucket from `call_site_bucket`'s slow path when
/// the thread's memo did not have it.
///
/// # Safety
/// As `call_site_bucket`.
#[inline(always)]
pub unsafe fn malloc_at_or(size: usize, cs: usize, sp: usize, slow: impl FnOnce(usize) -> *mut u8) -> *mut u8 {
    // SAFETY: the caller's guarantee.
    unsafe { alloc_at_or(size, cs, sp, types::kind::MALLOC, slow) }
}

/// `malloc_at_or` for a block of allocation kind `kind` (`operator new`'s, say: `delete`
/// then checks that kind).
///
/// # Safety
/// As `call_site_bucket`.
#[inline(always)]
pub unsafe fn alloc_at_or(size: usize, cs: usize, sp: usize, kind: u8, slow: impl FnOnce(usize) -> *mut u8) -> *mut u8 {
    let tcp = platform::tls::get();
    if tcp > slab::tcache::DEAD {
        // SAFETY: a live TLS word is this thread's own cache; only this thread touches it.
        let tc = unsafe { &mut *(tcp as *mut slab::tcache::TCache) };
        // SAFETY: the caller's guarantee.
        if let Some(b) = unsafe { tc.sites.bucket(cs, sp) } {
            return slab::alloc::malloc_fast_then(tc, size, b, kind, |p, _| p, || slow(b));
        }
    }
    // SAFETY: the caller's guarantee.
    unsafe { site_then(cs, sp, slow) }
}

/// `slow(bucket)` with the bucket from `site_bucket_slow`, out of line: the fast path
/// reaches it by a jump and keeps nothing across a call.
///
/// # Safety
/// As `call_site_bucket`.
#[inline(never)]
unsafe fn site_then(cs: usize, sp: usize, slow: impl FnOnce(usize) -> *mut u8) -> *mut u8 {
    // SAFETY: the caller's guarantee.
    slow(unsafe { site_bucket_slow(cs, sp) })
}

/// `malloc_at_or` past its fast path, the bucket known (out of line: the fast path stays
/// small). Null on exhaustion (errno is left to the C front end).
#[inline(never)]
pub fn alloc_in_bucket(size: usize, bucket: usize) -> *mut u8 {
    alloc(size, 16, bucket)
}

/// The bucket of an AllocToken id (`__alloc_token_*` entry points), through the calling
/// thread's cache of recent ids.
#[inline]
pub fn token_bucket(token: u64) -> usize {
    let Some(g) = ensure_init() else { return 1 };
    let tcp = platform::tls::get();
    if tcp <= slab::tcache::DEAD {
        return g.keys.for_alloc_token(token);
    }
    // SAFETY: a live TLS word is this thread's own cache; only this thread touches it.
    let tc = unsafe { &mut *(tcp as *mut slab::tcache::TCache) };
    tc.count_typed(false);
    let i = ((token ^ (token >> 17) ^ (token >> 41)) as usize) & (slab::tcache::TOKEN_CACHE - 1);
    if tc.token_ids[i] == token && tc.token_buckets[i] != 0 {
        return tc.token_buckets[i] as usize - 1;
    }
    let b = g.keys.for_alloc_token(token);
    tc.token_ids[i] = token;
    tc.token_buckets[i] = b as u8 + 1;
    b
}

/// Count an allocation whose compiler type id says the compiler could not see the type
/// (it is bucketed as an untyped one).
#[inline]
pub fn count_unknown_type() {
    let tcp = platform::tls::get();
    if tcp > slab::tcache::DEAD {
        // SAFETY: a live TLS word is this thread's own cache; only this thread touches it.
        unsafe { &*(tcp as *const slab::tcache::TCache) }.count_typed(true);
    }
}

/// Allocate `size` bytes aligned to `align` (a power of two ≥ 1) in `bucket`, as `malloc`
/// does. Returns null on exhaustion (errno is left to the C front end).
#[inline]
pub fn alloc(size: usize, align: usize, bucket: usize) -> *mut u8 {
    alloc_as(size, align, bucket, types::kind::MALLOC).0
}

/// As `alloc`, also telling whether the block's first `size` bytes are known to be zero.
#[inline]
pub fn alloc_zeroed_flag(size: usize, align: usize, bucket: usize) -> (*mut u8, bool) {
    alloc_as(size, align, bucket, types::kind::MALLOC)
}

/// Give back what the calling thread's cache holds and purge empty slabs (malloc_trim).
pub fn trim() {
    let Some(g) = ensure_init() else { return };
    slab::tcache::with_cache(|tc| {
        slab::owner::drain(g, tc, "malloc_trim");
        slab::owner::give_back(g, tc, true);
    });
    for (region, p) in POOLS.iter().enumerate().take(REGION_COUNT) {
        p.trim(&g.geo, region);
    }
}
