//! The allocator core: ties size classes, buckets, slabs, thread caches, quarantine and large
//! allocations together into malloc/free/realloc with full validation.

pub mod bounds;
pub mod bucket;
pub mod canary;
pub mod fault;
pub mod foreign;
pub mod kind;
pub mod large;
pub mod layout;
pub mod mismatch;
pub mod quarantine;
pub mod sample;
pub mod size_class;
pub mod slab;
pub mod stacks;
pub mod tcache;
pub mod zero;

use core::cell::UnsafeCell;
use core::fmt::Write;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::options::Options;
use crate::platform::{self, lock::Lock};
use crate::report::{self, Kind};
use crate::tag::{self, TagStore};
use bucket::Keys;
pub use kind::Release;
use large::LARGE;
use layout::{Loc, BUCKET_SLOTS, REGION_COUNT};
use size_class::{CLASSES, MAX_SMALL, ZERO_MAX};
use slab::{Bucket, Geometry, SlabMeta, ENTRY_DIRTY};
use tcache::{with_cache, TCache};

/// Process-wide state, written once by `init` and read-only afterwards.
pub struct Globals {
    pub geo: Geometry,
    pub keys: Keys,
    pub canary_key: u64,
    pub opts: Options,
    pub tc_key: libc::pthread_key_t,
}

struct GlobalCell(UnsafeCell<Globals>);
// SAFETY: written only by `init` before STATE becomes READY (Release); read only after an
// Acquire load of READY.
unsafe impl Sync for GlobalCell {}

static G: GlobalCell = GlobalCell(UnsafeCell::new(Globals {
    geo: Geometry { heap_base: 0, meta_base: 0 },
    keys: Keys { k0: 0, k1: 0, pointer_buckets: 1, token_half: 1 << 63 },
    canary_key: 0,
    opts: Options::DEFAULT,
    tc_key: 0,
}));

const UNINIT: u8 = 0;
const READY: u8 = 2;
const FAILED: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static INIT_LOCK: Lock = Lock::new();

pub static BUCKETS: [Bucket; REGION_COUNT] = [const { Bucket::new() }; REGION_COUNT];

/// The globals, initialising on first use. `None` if the heap could not be reserved.
#[inline]
pub fn ensure_init() -> Option<&'static Globals> {
    if STATE.load(Ordering::Acquire) == READY {
        // SAFETY: READY was published after the globals were written.
        return Some(unsafe { &*G.0.get() });
    }
    init_slow()
}

/// The globals when the caller knows init happened (it holds a thread cache or a heap pointer).
#[inline]
pub fn globals() -> &'static Globals {
    // SAFETY: callers only get here after ensure_init succeeded on some path that
    // happens-before this one (a cache or heap pointer exists).
    unsafe { &*G.0.get() }
}

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
                g.opts = crate::options::from_env();
                // Before any heap mapping exists: tagging decides PROT_MTE.
                tag::init(g.opts.mte);
                let (heap, meta) = layout::init_shape().choose_bases(platform::random_u64());
                let key = platform::thread_key_create(tcache::thread_exit);
                if key.is_none() {
                    report::warn(format_args!("cannot create a thread key; every allocation will fail"));
                    STATE.store(FAILED, Ordering::Release);
                    return None;
                }
                g.geo = Geometry { heap_base: heap, meta_base: meta };
                g.tc_key = key.unwrap_or(0);
                g.keys = Keys {
                    k0: platform::random_u64(),
                    k1: platform::random_u64(),
                    pointer_buckets: g.opts.buckets,
                    token_half: bucket::token_half(g.opts.alloc_token_max),
                };
                g.canary_key = platform::random_u64();
                bounds::init();
                // Always: guard pages and quarantined large blocks fault on every machine.
                fault::install();
                foreign::install();
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
        if opts.sample_rate != 0 {
            sample::init();
        }
        if opts.stacks {
            stacks::init();
        }
        if opts.stats {
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(stats_at_exit) };
        }
    }
    // SAFETY: READY is set.
    Some(unsafe { &*G.0.get() })
}

extern "C" fn stats_at_exit() {
    crate::stats::print();
}

// Fork: take every allocator lock so the child starts with consistent metadata.
unsafe extern "C" fn fork_prepare() {
    INIT_LOCK.lock();
    tcache::POOL_LOCK.lock();
    tcache::FALLBACK_LOCK.lock();
    for b in BUCKETS.iter() {
        b.lock.lock();
    }
    LARGE.lock.lock();
    sample::LOCK.lock();
}

unsafe extern "C" fn fork_parent() {
    sample::LOCK.unlock();
    LARGE.lock.unlock();
    for b in BUCKETS.iter().rev() {
        b.lock.unlock();
    }
    tcache::FALLBACK_LOCK.unlock();
    tcache::POOL_LOCK.unlock();
    INIT_LOCK.unlock();
}

unsafe extern "C" fn fork_child() {
    // Other threads do not exist in the child; their caches stay allocated (their slots are
    // simply never reused), which is safe whatever state those threads were in.
    sample::LOCK.reset();
    LARGE.lock.reset();
    for b in BUCKETS.iter() {
        b.lock.reset();
    }
    tcache::FALLBACK_LOCK.reset();
    tcache::POOL_LOCK.reset();
    INIT_LOCK.reset();
}

/// How a block is identified in reports.
#[derive(Clone, Copy)]
pub struct Caller {
    pub func: &'static str,
    pub ret_addr: usize,
}

#[inline]
fn canary_extra(o: &Options) -> usize {
    o.canary as usize
}

// ---------------------------------------------------------------------------------------
// Allocation

/// Allocate `size` bytes aligned to `align` (a power of two ≥ 1) in `bucket`, as `malloc`
/// does. Returns null on exhaustion (errno is left to the C front end).
#[inline]
pub fn alloc(size: usize, align: usize, bucket: usize) -> *mut u8 {
    alloc_zeroed_flag(size, align, bucket).0
}

/// As `alloc`, also telling whether the block's first `size` bytes are known to be zero.
#[inline]
pub fn alloc_zeroed_flag(size: usize, align: usize, bucket: usize) -> (*mut u8, bool) {
    alloc_as(size, align, bucket, kind::MALLOC)
}

/// As `alloc_zeroed_flag`, recording the allocation kind (`kind::NEW`, ...) that the
/// block's release must match.
#[inline]
pub fn alloc_as(size: usize, align: usize, bucket: usize, kind: u8) -> (*mut u8, bool) {
    let Some(g) = ensure_init() else { return (core::ptr::null_mut(), false) };
    let r = alloc_in(g, size, align, bucket, kind);
    if g.opts.stacks && !r.0.is_null() {
        stacks::on_alloc(tag::untag(r.0 as usize));
    }
    r
}

#[inline]
fn alloc_in(g: &Globals, size: usize, align: usize, bucket: usize, kind: u8) -> (*mut u8, bool) {
    if size == 0 && align <= 16 && kind == kind::MALLOC {
        // A unique address with no accessible bytes behind it (a 1-byte block if the
        // zero-size area cannot be had).
        let z = zero::alloc();
        if !z.is_null() {
            return (z, true);
        }
    }
    let extra = canary_extra(&g.opts);
    if let Some(need) = size.checked_add(extra) {
        if need <= MAX_SMALL {
            if let Some(class) = size_class::class_for(need, align) {
                let sampled = g.opts.sample_rate != 0 && align <= 16 && size <= sample::MAX_SIZE;
                if !sampled {
                    return with_cache(|tc| alloc_small(g, tc, class, bucket, size, kind));
                }
                if let Some(r) = with_cache(|tc| (!sample_due(g, tc)).then(|| alloc_small(g, tc, class, bucket, size, kind))) {
                    return r;
                }
                let p = sample::alloc(size, bucket, g.canary_key, kind);
                return with_cache(|tc| {
                    tc.in_sample = false;
                    if p.is_null() {
                        alloc_small(g, tc, class, bucket, size, kind)
                    } else {
                        (p, true)
                    }
                });
            }
        }
    }
    alloc_large(g, size, align, kind)
}

fn alloc_large(g: &Globals, size: usize, align: usize, kind: u8) -> (*mut u8, bool) {
    let slack = if g.opts.canary { 1 } else { 0 };
    let (p, body, fresh) = LARGE.alloc(size, align.max(16), slack, kind);
    if p.is_null() {
        return (p, false);
    }
    if g.opts.canary {
        let len = (body - size).min(canary::MAX_CANARY);
        // SAFETY: [p+size, p+size+len) lies inside the block's committed pages.
        unsafe { canary::write(canary::pattern(g.canary_key, p as usize), p.add(size), len) };
    }
    (p, fresh)
}

#[inline]
fn alloc_small(g: &Globals, tc: &mut TCache, class: usize, bucket: usize, size: usize, kind: u8) -> (*mut u8, bool) {
    let region = layout::region_of(class, bucket);
    let k = &CLASSES[class];
    // SAFETY: region < REGION_COUNT (class < CLASS_COUNT, bucket < BUCKET_SLOTS).
    let bin = unsafe { tc.bins.get_unchecked_mut(region) };
    if bin.n == 0 {
        let want = (k.cache_cap as usize / 2).max(1);
        // SAFETY: region < REGION_COUNT.
        let b = unsafe { BUCKETS.get_unchecked(region) };
        bin.n = b.refill(&g.geo, region, &mut tc.rng, &mut bin.slots[..want]) as u32;
        if bin.n == 0 {
            return (core::ptr::null_mut(), false);
        }
    }
    bin.n -= 1;
    // SAFETY: n < BIN_CAP after the decrement.
    let e = unsafe { *bin.slots.get_unchecked(bin.n as usize) };
    let p = e & !ENTRY_DIRTY;
    let Some(l) = layout::decode(g.geo.heap_base, p) else {
        report::fatal(Kind::Internal, p, "malloc", |_| {})
    };
    let m = SlabMeta::of(g.geo.meta_base, k, region, l.slab);
    let bit = 1u64 << (l.slot % 64);
    if m.live_word(l.slot).fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        report::fatal(Kind::Internal, p, "malloc", |o| {
            let _ = writeln!(o, "  a cached slot was already live: allocator metadata is corrupted");
        });
    }
    let slot_size = k.size as usize;
    let slack = slot_size - size;
    m.set_slack(k, l.slot, slack);
    let zeroed_class = g.opts.zero_on_free && slot_size <= ZERO_MAX;
    let tagging = tag::enabled();
    if e & ENTRY_DIRTY != 0 && zeroed_class && g.opts.write_after_free_check {
        // A used slot carries the free tag until it is retagged below.
        let view = if tagging { tag::with_tag(p, tag::TAG_FREE) } else { p };
        check_still_zero(view, p, slot_size, &l, "malloc");
    }
    let user = if tagging {
        let t = tag_block(p, &l, &m);
        m.set_info(k, l.slot, t, kind);
        tag::with_tag(p, t)
    } else {
        m.set_info(k, l.slot, 0, kind);
        p
    };
    if g.opts.canary {
        // SAFETY: the slot [user, user+slot_size) is this block's, carrying user's tag.
        unsafe { canary::write_small(canary::pattern(g.canary_key, p), user, size, slot_size) };
    }
    TCache::bump(&tc.allocs[region]);
    tc.add_live(size as i64);
    (user as *mut u8, zeroed_class || e & ENTRY_DIRTY == 0)
}

/// Give a slot a fresh tag: not reserved, not either neighbour's, not its previous one.
/// Returns the tag (the caller records it in the slot's info byte).
fn tag_block(p: usize, l: &Loc, m: &SlabMeta) -> u8 {
    let k = &CLASSES[l.class];
    let b = &BUCKETS[l.region];
    let size = k.size as usize;
    let slab_mask = (1usize << k.slab_shift) - 1;
    // Neighbouring granules exist inside the slab, or in the adjacent slab if it exists.
    let left = (l.slot > 0 || b.slab_exists(l.slab.wrapping_sub(1))).then(|| p - tag::GRANULE);
    let end = p + size;
    let right = (l.slot + 1 < k.nslots as usize || end & slab_mask != 0 || b.slab_exists(l.slab + 1)).then_some(end);
    tag::policy::tag_new_block(&mut tag::hw(), p, size, left, right, m.prev_tag(k, l.slot), false)
}

/// Count down to the next guarded sample; the distance is random with mean `sample_rate`.
#[inline]
fn sample_due(g: &Globals, tc: &mut TCache) -> bool {
    if tc.in_sample || !sample::ready() {
        return false;
    }
    if tc.sample_countdown == 0 {
        let rate = g.opts.sample_rate;
        tc.sample_countdown = if rate == 1 { 1 } else { tc.rng.below(2 * rate - 1) + 1 };
    }
    tc.sample_countdown -= 1;
    if tc.sample_countdown == 0 {
        tc.in_sample = true;
        return true;
    }
    false
}

/// The write-after-free check: a slot zeroed at free must still be zero when reused.
/// `view` is the slot address with the tag its memory carries now.
#[inline]
fn check_still_zero(view: usize, p: usize, len: usize, l: &Loc, func: &'static str) {
    // SAFETY: the slot [p, p+len) is committed heap memory owned by this allocation.
    let words = unsafe { core::slice::from_raw_parts(view as *const u64, len / 8) };
    let mut acc = 0u64;
    for &w in words {
        acc |= w;
    }
    if acc != 0 {
        let first = words.iter().position(|&w| w != 0).unwrap_or(0) * 8;
        let l = *l;
        report::fatal(Kind::WriteAfterFree, p, func, |o| {
            let _ = writeln!(
                o,
                "  a freed block was modified while it was free: byte {first} of the {}-byte slot is not zero",
                CLASSES[l.class].size
            );
            describe_slot(o, &l, p, "free (being reused)");
            let _ = writeln!(o, "  hint: a dangling pointer wrote to this block after it was freed");
        });
    }
}

// ---------------------------------------------------------------------------------------
// Validation

/// A validated live block.
enum Block {
    Small { loc: Loc, usable: usize },
    Large { entry: large::Entry },
}

/// Resolve `raw` (as the caller passed it, tag included) to a live block or report and
/// abort. Never answers for a non-block or for a pointer whose tag is not the block's.
/// `releasing`: the call gives the block back (free, delete, realloc), so a freed block is
/// a double free rather than an invalid query.
fn validate(g: &Globals, raw: usize, who: Caller, releasing: bool) -> Block {
    let p = tag::untag(raw);
    if let Some(loc) = layout::decode(g.geo.heap_base, p) {
        let k = &CLASSES[loc.class];
        if loc.bucket > g.keys.pointer_buckets as usize || !BUCKETS[loc.region].slab_exists(loc.slab) {
            invalid_free(p, who, "the address is inside mie's heap reservation but in no slab that exists");
        }
        if loc.slot >= k.nslots as usize {
            invalid_free(p, who, "the address is in the unused tail of a slab, not in any block");
        }
        let m = SlabMeta::new(g.geo.meta_base, loc.region, loc.slab);
        let live = m.live_word(loc.slot).load(Ordering::Relaxed) & (1u64 << (loc.slot % 64)) != 0;
        if loc.interior != 0 {
            let start = p - loc.interior;
            report::fatal(Kind::InvalidFree, p, who.func, |o| {
                let _ = writeln!(
                    o,
                    "  pointer is {} bytes inside the block at {start:#x}, not at its start",
                    loc.interior
                );
                describe_slot(o, &loc, start, if live { "live" } else { "free" });
                report::write_code_addr(o, "called from", who.ret_addr);
            });
        }
        if !live {
            let kind = if releasing { Kind::DoubleFree } else { Kind::InvalidFree };
            report::fatal(kind, p, who.func, |o| {
                let _ = writeln!(o, "  the block is not allocated: it was already freed (or never handed out)");
                describe_slot(o, &loc, p, "free");
                report::write_code_addr(o, "called from", who.ret_addr);
            });
        }
        if tag::enabled() {
            let mem = tag::hw().load(p);
            if mem != tag::tag_of(raw) {
                report::fatal(Kind::InvalidFree, raw, who.func, |o| {
                    let _ = writeln!(
                        o,
                        "  tag mismatch: the pointer carries tag {:#x}, the block's memory tag is {:#x} (a stale or forged pointer)",
                        tag::tag_of(raw),
                        mem
                    );
                    describe_slot(o, &loc, p, "live");
                    report::write_code_addr(o, "called from", who.ret_addr);
                });
            }
        }
        let usable = k.size as usize - m.slack(k, loc.slot);
        return Block::Small { loc, usable };
    }
    if tag::enabled() && tag::tag_of(raw) != 0 {
        invalid_free(raw, who, "a tagged pointer that is not in mie's heap (large blocks are untagged)");
    }
    match LARGE.lookup(p) {
        Some(e) if e.is_live() => Block::Large { entry: e },
        Some(e) => report::fatal(if releasing { Kind::DoubleFree } else { Kind::InvalidFree }, p, who.func, |o| {
            let _ = writeln!(o, "  large block of {} bytes was already freed (it is in the large quarantine)", e.req);
            stacks::print(o, p, "");
            report::write_code_addr(o, "called from", who.ret_addr);
        }),
        None if foreign::in_libc_brk_heap(p) => invalid_free(
            p,
            who,
            "not a block allocated by mie: it lies in the C library's own heap, so the C library's malloc allocated it (a library loaded with dlopen(RTLD_DEEPBIND) calls it directly, and handed the block over?)",
        ),
        None => invalid_free(p, who, "not a block allocated by mie (stack, global, foreign or already unmapped memory?)"),
    }
}

fn invalid_free(p: usize, who: Caller, why: &str) -> ! {
    report::fatal(Kind::InvalidFree, p, who.func, |o| {
        let _ = writeln!(o, "  {why}");
        report::write_code_addr(o, "called from", who.ret_addr);
    })
}

pub(crate) fn describe_slot(o: &mut dyn Write, l: &Loc, start: usize, state: &str) {
    let k = &CLASSES[l.class];
    let g = globals();
    let usable = if state == "live" {
        let m = SlabMeta::new(g.geo.meta_base, l.region, l.slab);
        Some(k.size as usize - m.slack(k, l.slot))
    } else {
        None
    };
    let _ = write!(o, "  block {start:#x}: ");
    if let Some(u) = usable {
        let _ = write!(o, "{u} bytes requested, ");
    }
    let _ = writeln!(
        o,
        "{}-byte slot (size class #{}), bucket {} ({}), slab {} slot {}, state: {}",
        k.size,
        l.class,
        l.bucket,
        if l.bucket == bucket::DATA_BUCKET { "data" } else { "pointer" },
        l.slab,
        l.slot,
        state
    );
    stacks::print(o, start, "");
}

/// Check the canary of the block at `p` (untagged), reading through `mem` (its tagged pointer).
fn check_canary(g: &Globals, p: usize, mem: usize, usable: usize, slack: usize, loc: Option<&Loc>, who: Caller) {
    let pat = canary::pattern(g.canary_key, p);
    let bad = if loc.is_some() {
        // SAFETY: [mem, mem+usable+slack) is the block's slot.
        unsafe { canary::check_small(pat, mem, usable, usable + slack) }
    } else {
        // SAFETY: [mem+usable, ...) lies inside the large block's committed pages.
        unsafe { canary::check(pat, (mem + usable) as *const u8, slack.min(canary::MAX_CANARY)) }
    };
    if let Some(off) = bad {
        report::fatal(Kind::HeapBufferOverflow, p, who.func, |o| {
            let _ = writeln!(
                o,
                "  the slack canary after the block was overwritten: byte {} past the end of the {}-byte block (address {:#x})",
                off,
                usable,
                p + usable + off
            );
            match loc {
                Some(l) => describe_slot(o, l, p, "live"),
                None => {
                    let _ = writeln!(o, "  block {p:#x}: {usable} bytes requested, large allocation (own mapping)");
                    stacks::print(o, p, "");
                }
            }
            report::write_code_addr(o, "detected in a call from", who.ret_addr);
            let _ = writeln!(o, "  hint: a write ran past the end of this block (linear overflow / off-by-one)");
            if loc.is_some() && off + canary::TAIL >= slack {
                let _ = writeln!(
                    o,
                    "  or a write just before the block in the next slot ({:#x}) ran backwards into this one (underflow)",
                    p + usable + slack
                );
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// Free

pub fn free(p: *mut u8, who: Caller) {
    release(p, who, Release::FREE)
}

/// Release a block the way `r` says it was allocated (`delete[]`, sized `free_sized`, ...):
/// a block allocated otherwise, or of another size, is reported and the process stopped.
pub fn release(p: *mut u8, who: Caller, r: Release) {
    if p.is_null() {
        return;
    }
    // The common case, a valid live small block on an untagged heap, in one straight pass;
    // everything else (and every error, which the full path then reports) goes the full way.
    if STATE.load(Ordering::Acquire) == READY && !tag::enabled() {
        let g = globals();
        if let Some(loc) = layout::decode(g.geo.heap_base, p as usize) {
            if free_small_fast(g, p as usize, loc, who, r) {
                return;
            }
        }
    }
    free_full(p, who, r)
}

/// Free a small block if it is a plain valid one: in the heap's slabs, at a slot start,
/// live, released as it was allocated, with an intact canary. Returns false, having
/// changed nothing, for anything else.
#[inline(always)]
fn free_small_fast(g: &Globals, p: usize, loc: Loc, who: Caller, r: Release) -> bool {
    // SAFETY: decode returns class < CLASS_COUNT and region < REGION_COUNT.
    let (k, b) = unsafe { (CLASSES.get_unchecked(loc.class), BUCKETS.get_unchecked(loc.region)) };
    if loc.interior != 0 || loc.slot >= k.nslots as usize || loc.bucket > g.keys.pointer_buckets as usize || !b.slab_exists(loc.slab) {
        return false;
    }
    let m = SlabMeta::of(g.geo.meta_base, k, loc.region, loc.slab);
    let word = m.live_word(loc.slot);
    let bit = 1u64 << (loc.slot % 64);
    if word.load(Ordering::Relaxed) & bit == 0 {
        return false;
    }
    let slot_size = k.size as usize;
    let slack = m.slack(k, loc.slot);
    let usable = slot_size - slack;
    if !r.accepts(p, m.kind(k, loc.slot), usable) {
        return false;
    }
    // SAFETY: [p, p+slot_size) is the live block's slot.
    if g.opts.canary && unsafe { canary::check_small(canary::pattern(g.canary_key, p), p, usable, slot_size) }.is_some() {
        return false;
    }
    release_small(g, p, loc, usable, slot_size, slack, who);
    true
}

/// Check that the block (`kind`, requested `size`, at `p`) may be released as `r` says; a
/// mismatch is reported, and stops the process unless it is harmless (see `mismatch`).
#[inline]
fn check_release(p: usize, who: Caller, r: Release, kind: u8, size: usize, loc: Option<&Loc>) {
    if !r.accepts(p, kind, size) {
        mismatch::on_mismatch(p, who, r, kind, size, loc, globals().opts.alloc_dealloc_mismatch);
    }
}

#[inline(never)]
fn free_full(p: *mut u8, who: Caller, r: Release) {
    let raw = p as usize;
    let addr = tag::untag(raw);
    let Some(g) = ensure_init() else { invalid_free(raw, who, "mie's heap is not initialised") };
    if sample::owns(addr) {
        let (size, _, kind) = sample::validate(addr, who.func, who.ret_addr, true);
        check_release(addr, who, r, kind, size, None);
        return sample::free(addr, g.canary_key, who.func, who.ret_addr);
    }
    if zero::owns(addr) {
        zero::validate(addr, who.func, who.ret_addr, true);
        check_release(addr, who, r, kind::MALLOC, 0, None);
        return zero::free(addr, who.func, who.ret_addr);
    }
    match validate(g, raw, who, true) {
        Block::Small { loc, usable } => {
            let m = SlabMeta::new(g.geo.meta_base, loc.region, loc.slab);
            check_release(addr, who, r, m.kind(&CLASSES[loc.class], loc.slot), usable, Some(&loc));
            free_small(g, raw, loc, usable, who)
        }
        Block::Large { entry } => {
            check_release(addr, who, r, entry.kind, entry.req, None);
            free_large(g, entry.addr, entry, who)
        }
    }
}

fn free_small(g: &Globals, raw: usize, loc: Loc, usable: usize, who: Caller) {
    let p = tag::untag(raw);
    let slot_size = CLASSES[loc.class].size as usize;
    let slack = slot_size - usable;
    if g.opts.canary {
        check_canary(g, p, raw, usable, slack, Some(&loc), who);
    }
    release_small(g, p, loc, usable, slot_size, slack, who);
}

/// The second half of every small free: the block (untagged `p`) is valid and checked.
#[inline(always)]
fn release_small(g: &Globals, p: usize, loc: Loc, usable: usize, slot_size: usize, slack: usize, who: Caller) {
    // SAFETY: loc came from decode: class < CLASS_COUNT.
    let m = SlabMeta::of(g.geo.meta_base, unsafe { CLASSES.get_unchecked(loc.class) }, loc.region, loc.slab);
    let bit = 1u64 << (loc.slot % 64);
    if m.live_word(loc.slot).fetch_and(!bit, Ordering::Relaxed) & bit == 0 {
        concurrent_double_free(p, &loc, who);
    }
    if g.opts.stacks {
        stacks::on_free(p);
    }
    let zero = g.opts.zero_on_free && slot_size <= ZERO_MAX;
    if tag::enabled() {
        // One pass: the whole slot gets the free tag (and zeroes). Dangling pointers now fault.
        tag::policy::tag_freed_slot(&mut tag::hw(), p, slot_size, zero);
    } else if zero {
        let len = (usable + slack.min(canary::MAX_CANARY)).min(slot_size);
        // SAFETY: the slot is ours again (live bit cleared by this thread); len <= slot size,
        // and the tail canary (long slack) is the slot's last TAIL bytes.
        unsafe {
            core::ptr::write_bytes(p as *mut u8, 0, len);
            if slack > canary::MAX_CANARY {
                core::ptr::write_bytes((p + slot_size - canary::TAIL) as *mut u8, 0, canary::TAIL);
            }
        }
    }
    with_cache(|tc| {
        TCache::bump(&tc.frees[loc.region]);
        tc.add_live(-(usable as i64));
        let cap = g.opts.quarantine as usize;
        if cap == 0 {
            release_slot(g, tc, p);
        } else {
            quarantine_push(g, tc, p, slot_size, cap);
        }
    });
}

#[cold]
#[inline(never)]
fn concurrent_double_free(p: usize, loc: &Loc, who: Caller) -> ! {
    // Lost a race with a concurrent free of the same block.
    report::fatal(Kind::DoubleFree, p, who.func, |o| {
        let _ = writeln!(o, "  the block was freed concurrently by another thread");
        describe_slot(o, loc, p, "free");
        report::write_code_addr(o, "called from", who.ret_addr);
    })
}

#[inline]
fn quarantine_push(g: &Globals, tc: &mut TCache, p: usize, size: usize, cap: usize) {
    tc.quarantine.push(p, size, &mut tc.rng);
    let limits = quarantine::Limits { cap, budget: g.opts.quarantine_bytes };
    while let Some(old) = tc.quarantine.pop_expired(limits) {
        release_slot(g, tc, old);
    }
}

/// A slot whose quarantine is over goes to the thread's bin, or back to its bucket.
fn release_slot(g: &Globals, tc: &mut TCache, p: usize) {
    let region = (p - g.geo.heap_base) >> layout::region_shift();
    let cap = CLASSES[region / BUCKET_SLOTS].cache_cap as usize;
    let bin = &mut tc.bins[region];
    if bin.n as usize >= cap {
        let half = cap / 2;
        BUCKETS[region].flush(&g.geo, region, &bin.slots[half..bin.n as usize]);
        bin.n = half as u32;
    }
    bin.slots[bin.n as usize] = p | ENTRY_DIRTY;
    bin.n += 1;
}

fn release_to_bucket(g: &Globals, p: usize) {
    let region = (p - g.geo.heap_base) >> layout::region_shift();
    BUCKETS[region].flush(&g.geo, region, &[p | ENTRY_DIRTY]);
}

/// Return everything a cache holds (thread exit, trim).
pub fn drain_cache(tc: &mut TCache) {
    let Some(g) = ensure_init() else { return };
    let mut pending = [0usize; 64];
    let mut n = 0;
    let TCache { quarantine, .. } = tc;
    quarantine.drain(|p| {
        pending[n] = p;
        n += 1;
        if n == pending.len() {
            for &q in &pending[..n] {
                release_to_bucket(g, q);
            }
            n = 0;
        }
    });
    for &q in &pending[..n] {
        release_to_bucket(g, q);
    }
    for (region, bin) in tc.bins.iter_mut().enumerate() {
        if bin.n > 0 {
            BUCKETS[region].flush(&g.geo, region, &bin.slots[..bin.n as usize]);
            bin.n = 0;
        }
    }
}

fn free_large(g: &Globals, p: usize, e: large::Entry, who: Caller) {
    if g.opts.canary {
        check_canary(g, p, p, e.req, e.body_len - e.req, None, who);
    }
    if g.opts.stacks {
        stacks::on_free(p);
    }
    if let Err(e) = LARGE.free(p, g.opts.large_quarantine as usize, g.opts.large_quarantine_bytes) {
        report::fatal(Kind::DoubleFree, p, who.func, |o| {
            let _ = writeln!(o, "  large block of {} bytes was freed concurrently or twice", e.req);
            report::write_code_addr(o, "called from", who.ret_addr);
        });
    }
}

// ---------------------------------------------------------------------------------------
// Queries and realloc

/// Usable size of a live block (the requested size). Aborts for anything else: no oracle.
pub fn usable_size(p: *const u8, who: Caller) -> usize {
    if p.is_null() {
        return 0;
    }
    let Some(g) = ensure_init() else { invalid_free(p as usize, who, "mie's heap is not initialised") };
    if sample::owns(tag::untag(p as usize)) {
        return sample::validate(tag::untag(p as usize), who.func, who.ret_addr, false).0;
    }
    if zero::owns(tag::untag(p as usize)) {
        zero::validate(tag::untag(p as usize), who.func, who.ret_addr, false);
        return 0;
    }
    match validate(g, p as usize, who, false) {
        Block::Small { usable, .. } => usable,
        Block::Large { entry } => entry.req,
    }
}

/// Resize a block. A small block keeps its bucket (its type) when it moves; a large one
/// moves to `default_bucket`. `p` is validated first (a non-block aborts with a report), so
/// every access below is to a live block: the function is safe to call with any pointer.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn realloc(p: *mut u8, size: usize, default_bucket: usize, who: Caller) -> *mut u8 {
    if p.is_null() {
        return alloc(size, 16, default_bucket);
    }
    let Some(g) = ensure_init() else { invalid_free(p as usize, who, "mie's heap is not initialised") };
    let raw = p as usize;
    let addr = tag::untag(raw);
    let extra = canary_extra(&g.opts);
    // A guarded sample always moves (it keeps its bucket, as a slab block does).
    let (old_usable, bucket) = if sample::owns(addr) {
        let (size, bucket, kind) = sample::validate(addr, who.func, who.ret_addr, true);
        check_release(addr, who, Release::FREE, kind, size, None);
        (size, bucket)
    } else if zero::owns(addr) {
        zero::validate(addr, who.func, who.ret_addr, true);
        (0, default_bucket)
    } else {
        match validate(g, raw, who, true) {
            Block::Small { loc, usable } => {
                let k = &CLASSES[loc.class];
                let m = SlabMeta::of(g.geo.meta_base, k, loc.region, loc.slab);
                check_release(addr, who, Release::FREE, m.kind(k, loc.slot), usable, Some(&loc));
                let slot_size = k.size as usize;
                if g.opts.canary {
                    check_canary(g, addr, raw, usable, slot_size - usable, Some(&loc), who);
                }
                let fits_here = size.checked_add(extra).is_some_and(|n| n <= slot_size)
                    && size_class::class_of(size + extra) == loc.class;
                if fits_here {
                    resize_small_in_place(g, addr, raw, &loc, usable, size);
                    return p;
                }
                (usable, loc.bucket)
            }
            Block::Large { entry } => {
                check_release(addr, who, Release::FREE, entry.kind, entry.req, None);
                if g.opts.canary {
                    check_canary(g, addr, addr, entry.req, entry.body_len - entry.req, None, who);
                }
                if size.checked_add(extra).is_some_and(|n| n <= entry.body_len) && size > MAX_SMALL && size >= entry.body_len / 2 {
                    LARGE.resize(addr, size);
                    if g.opts.canary {
                        let len = (entry.body_len - size).min(canary::MAX_CANARY);
                        // SAFETY: [p+size, p+size+len) lies inside the block's committed pages.
                        unsafe { canary::write(canary::pattern(g.canary_key, addr), p.add(size), len) };
                    }
                    return p;
                }
                (entry.req, default_bucket)
            }
        }
    };
    let q = alloc(size, 16, bucket);
    if q.is_null() {
        return q;
    }
    // SAFETY: both blocks are live and distinct; we copy at most the smaller usable size.
    unsafe { core::ptr::copy_nonoverlapping(p, q, old_usable.min(size)) };
    free(p, who);
    q
}

/// Resize in place: `p` is the block's address, `mem` its tagged pointer.
fn resize_small_in_place(g: &Globals, p: usize, mem: usize, loc: &Loc, old: usize, new: usize) {
    let k = &CLASSES[loc.class];
    let slot_size = k.size as usize;
    let m = SlabMeta::new(g.geo.meta_base, loc.region, loc.slab);
    let old_end = (old + (slot_size - old).min(canary::MAX_CANARY)).min(slot_size);
    if new < old_end {
        // Keep the zero-beyond-the-block invariant the write-after-free check relies on.
        // SAFETY: [p+new, p+old_end) lies inside the slot.
        unsafe { core::ptr::write_bytes((mem + new) as *mut u8, 0, old_end - new) };
    }
    m.set_slack(k, loc.slot, slot_size - new);
    with_cache(|tc| tc.add_live(new as i64 - old as i64));
    if g.opts.canary {
        // SAFETY: [mem, mem+slot_size) is the block's slot.
        unsafe { canary::write_small(canary::pattern(g.canary_key, p), mem, new, slot_size) };
    }
}

/// Where an address is, for tests and tools: (class size, bucket) of a small block.
/// A guarded sample slot answers as one page-sized slot of the bucket it serves.
pub fn owner_of(p: *const u8) -> Option<(usize, usize)> {
    let g = ensure_init()?;
    if let Some(bucket) = sample::bucket_of(tag::untag(p as usize)) {
        return Some((sample::MAX_SIZE, bucket));
    }
    let l = layout::decode(g.geo.heap_base, tag::untag(p as usize))?;
    Some((CLASSES[l.class].size as usize, l.bucket))
}

/// Address of the out-of-line metadata of the slab holding small block `p` (diagnostics and
/// the tests that show a heap pointer cannot reach metadata). `None` for other pointers.
pub fn slab_metadata_of(p: *const u8) -> Option<usize> {
    let g = ensure_init()?;
    let l = layout::decode(g.geo.heap_base, tag::untag(p as usize))?;
    BUCKETS[l.region].slab_exists(l.slab).then(|| layout::slab_meta_addr(g.geo.meta_base, l.region, l.slab))
}

/// Return cached and quarantined blocks of the calling thread and purge empty slabs.
pub fn trim() {
    if ensure_init().is_some() {
        with_cache(drain_cache);
    }
}
