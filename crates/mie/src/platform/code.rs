//! The executable segments of the loaded objects (from `dl_iterate_phdr`): made when first
//! needed, and made again now and then (every 1024 failed searches) to take in objects
//! loaded since. For the allocation-wrapper scan (`heap/wrappers.rs`) and the reports of
//! compiler traps (`traps.rs`): both read code bytes only where this table says code is.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::platform::lock::Lock;

const MAX: usize = 128;
static START: [AtomicUsize; MAX] = [const { AtomicUsize::new(0) }; MAX];
static END: [AtomicUsize; MAX] = [const { AtomicUsize::new(0) }; MAX];
static N: AtomicUsize = AtomicUsize::new(0);
static MISSES: AtomicU32 = AtomicU32::new(0);
static LAST: AtomicUsize = AtomicUsize::new(0);
static LOCK: Lock = Lock::new();

/// A scan found no return address: every 1024th time (and the first), make the table
/// again, in case the code it needs was loaded since.
#[cold]
pub fn missed() {
    if MISSES.fetch_add(1, Ordering::Relaxed).is_multiple_of(1024) {
        refresh();
    }
}

/// Whether `[a, a + len)` lies in one executable segment.
pub fn contains(a: usize, len: usize) -> bool {
    let n = N.load(Ordering::Acquire);
    let last = LAST.load(Ordering::Relaxed);
    let Some(end) = a.checked_add(len) else { return false };
    let hit = |i: usize| a >= START[i].load(Ordering::Relaxed) && end <= END[i].load(Ordering::Relaxed);
    if last < n && hit(last) {
        return true;
    }
    match (0..n).find(|&i| hit(i)) {
        Some(i) => {
            LAST.store(i, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// Make the table again from the loader's list of objects.
#[cold]
pub fn refresh() {
    struct Acc {
        n: usize,
    }
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut libc::c_void) -> libc::c_int {
        const PT_LOAD: u32 = 1;
        const PF_X: u32 = 1;
        const PF_R: u32 = 4;
        // SAFETY: the loader passes a valid info struct and our accumulator; the
        // object's program headers are mapped.
        unsafe {
            let info = &*info;
            let acc = &mut *(data as *mut Acc);
            for j in 0..info.dlpi_phnum as usize {
                let h = &*info.dlpi_phdr.add(j);
                if h.p_type == PT_LOAD && h.p_flags & (PF_X | PF_R) == (PF_X | PF_R) && acc.n < MAX {
                    let start = (info.dlpi_addr as usize).wrapping_add(h.p_vaddr as usize);
                    START[acc.n].store(start, Ordering::Relaxed);
                    END[acc.n].store(start.wrapping_add(h.p_memsz as usize), Ordering::Relaxed);
                    acc.n += 1;
                }
            }
        }
        0
    }
    let _g = LOCK.guard();
    let mut acc = Acc { n: 0 };
    // While the table is made, finders see it empty (and answer no: the safe answer).
    N.store(0, Ordering::Release);
    // SAFETY: dl_iterate_phdr calls `each` with the loader's lock held; `each` writes
    // only our tables (we hold LOCK) and the accumulator on this stack.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut acc as *mut Acc as *mut libc::c_void) };
    N.store(acc.n, Ordering::Release);
}

/// Whether `[a, a + len)` is code of a loaded object (readable and executable), making the
/// table first if it was never made.
pub fn readable(a: usize, len: usize) -> bool {
    if N.load(Ordering::Acquire) == 0 {
        refresh();
    }
    contains(a, len)
}

/// The target of the direct call whose return address is `ret` (x86-64 `call rel32`, arm64
/// `bl`), if the code there is such a call. Reports use it to name a function that ended in
/// a tail call into the allocator: its own frame is gone, the return address is its caller's.
pub fn direct_call_target(ret: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        let at = ret.checked_sub(5)?;
        if !readable(at, 5) {
            return None;
        }
        // SAFETY: [at, at + 5) lies in an executable segment of a loaded object.
        let (op, rel) = unsafe { (*(at as *const u8), core::ptr::read_unaligned((at + 1) as *const i32)) };
        (op == 0xe8).then(|| ret.wrapping_add(rel as isize as usize))
    }
    #[cfg(target_arch = "aarch64")]
    {
        let at = ret.checked_sub(4)?;
        if !readable(at, 4) {
            return None;
        }
        // SAFETY: [at, at + 4) lies in an executable segment of a loaded object.
        let insn = unsafe { core::ptr::read_unaligned(at as *const u32) };
        // BL: 100101 imm26, a signed word offset.
        (insn >> 26 == 0b100101).then(|| at.wrapping_add((((insn << 6) as i32) >> 4) as isize as usize))
    }
}

/// Whether the call whose return address is `ret` went through a function pointer held in a
/// register or in memory other than the caller's own GOT: x86-64 `call *%reg` and
/// `call *disp(%reg)`, arm64 `blr`. (A `call *GOT(%rip)` of code built with -fno-plt is a
/// call of the caller's own binding, not a pointer handed to it.)
pub fn indirect_call(ret: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // call *%reg: [REX] FF D0+r; call *disp8(%reg): [REX] FF 50+r d8 (or FF 14 24 / 54 24 d8
        // with a SIB byte); call *disp32(%reg): [REX] FF 90+r d32.
        let at = |n: usize| ret.checked_sub(n).filter(|&a| readable(a, n));
        // SAFETY: each address is checked readable code before it is read.
        let byte = |a: usize| unsafe { *(a as *const u8) };
        if let Some(a) = at(2) {
            if byte(a) == 0xff && byte(a + 1) & 0xf8 == 0xd0 {
                return true;
            }
        }
        if let Some(a) = at(3) {
            if byte(a) == 0xff && (byte(a + 1) & 0xf8 == 0x50 && byte(a + 1) != 0x54 || byte(a + 1) == 0x14 && byte(a + 2) == 0x24) {
                return true;
            }
        }
        if let Some(a) = at(4) {
            if byte(a) == 0xff && byte(a + 1) == 0x54 && byte(a + 2) == 0x24 {
                return true;
            }
        }
        if let Some(a) = at(6) {
            if byte(a) == 0xff && byte(a + 1) & 0xf8 == 0x90 && byte(a + 1) != 0x94 {
                return true;
            }
        }
        false
    }
    #[cfg(target_arch = "aarch64")]
    {
        let Some(at) = ret.checked_sub(4).filter(|&a| readable(a, 4)) else { return false };
        // SAFETY: [at, at + 4) is readable code.
        let insn = unsafe { core::ptr::read_unaligned(at as *const u32) };
        // BLR Xn (and the BLRAA/BLRAB forms of pointer authentication).
        insn & 0xffff_fc1f == 0xd63f_0000 || insn & 0xfeff_f800 == 0xd63f_0800
    }
}
