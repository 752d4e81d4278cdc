//! Addresses for large blocks: a bump pointer through a dedicated address window far below
//! the kernel's own mmap area (`Shape::large_window`), starting at a random point. It only
//! moves forward, so a block's addresses are not handed out again until the pointer has
//! gone round the whole window (terabytes of large blocks later). Nothing is reserved: a
//! freed block's range is simply unmapped again, its quarantine ends with no system call,
//! and address-space limits (`RLIMIT_AS`) see only the memory in use.
//!
//! Mappings are placed with `MAP_FIXED_NOREPLACE` (never over anything); until the pointer
//! has wrapped round, the window holds nothing but mie's own blocks, so moving pages into a
//! range the pointer just gave out cannot replace anything.

use crate::platform;

pub struct Window {
    lo: usize,
    hi: usize,
    bump: usize,
    /// Where the pointer started (random).
    first: usize,
    /// The pointer went round once: a range it gives may be in use (checked by the caller).
    pub wrapped: bool,
}

impl Window {
    pub const fn new() -> Self {
        Window { lo: 0, hi: 0, bump: 0, first: 0, wrapped: false }
    }

    /// Whether `addr` lies in the part of the window handed out so far (every address there
    /// belonged to a block or a guard page; none is handed out twice before a wrap).
    pub fn handed_out(&self, addr: usize) -> bool {
        if self.hi == 0 {
            return false;
        }
        if self.wrapped {
            addr >= self.lo && addr < self.hi
        } else {
            addr >= self.first && addr < self.bump
        }
    }

    /// A range of `len` bytes whose offset `align_at` is aligned to `align`, with one
    /// unmapped guard page before and after it. None if the window is not set up.
    pub fn take(&mut self, len: usize, align_at: usize, align: usize) -> Option<usize> {
        if self.hi == 0 {
            let (lo, hi) = crate::heap::globals().geo.large_window;
            if hi == 0 {
                return None;
            }
            self.lo = lo;
            self.hi = hi;
            // A random start in the first quarter of the window.
            self.bump = lo + (platform::random_u64() as usize % ((hi - lo) / 4)) / platform::page_size() * platform::page_size();
            self.first = self.bump;
        }
        let guard = platform::page_size();
        for _ in 0..2 {
            let start = ((self.bump + guard + align_at + align - 1) & !(align - 1)) - align_at;
            if start.checked_add(len + guard).is_some_and(|end| end <= self.hi) {
                // Each range has guard pages of its own: the next one starts past this one's.
                self.bump = start + len + guard;
                return Some(start);
            }
            self.bump = self.lo;
            self.wrapped = true;
        }
        None
    }
}
