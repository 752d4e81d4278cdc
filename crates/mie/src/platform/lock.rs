//! The allocator's lock: test-and-test-and-set with bounded spinning, then yielding.
//!
//! Held only for short, bounded critical sections (refilling or flushing a batch of slots,
//! creating a slab), never across a syscall that can block indefinitely. Needs no
//! initialisation and no allocation, so it works before `main` and inside fork handlers.

use core::sync::atomic::{AtomicBool, Ordering};

pub struct Lock {
    held: AtomicBool,
}

impl Lock {
    pub const fn new() -> Self {
        Lock { held: AtomicBool::new(false) }
    }

    #[inline]
    pub fn lock(&self) {
        if self
            .held
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        self.lock_slow();
    }

    #[cold]
    fn lock_slow(&self) {
        let mut spins = 0u32;
        loop {
            while self.held.load(Ordering::Relaxed) {
                if spins < 64 {
                    core::hint::spin_loop();
                    spins += 1;
                } else {
                    super::yield_now();
                }
            }
            if self
                .held
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Take the lock if it is free (for a signal handler, which must not wait on a lock its
    /// own thread may hold).
    pub fn try_lock(&self) -> bool {
        self.held.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    #[inline]
    pub fn unlock(&self) {
        self.held.store(false, Ordering::Release);
    }

    /// After `fork`, the child's only thread owns every lock the parent held in `prepare`;
    /// releasing is the same operation as unlocking.
    pub fn reset(&self) {
        self.held.store(false, Ordering::Release);
    }

    pub fn guard(&self) -> Guard<'_> {
        self.lock();
        Guard { lock: self }
    }
}

impl Default for Lock {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Guard<'a> {
    lock: &'a Lock,
}

impl<'a> Guard<'a> {
    /// The guard of a lock the caller has just taken (`try_lock`).
    pub fn adopt(lock: &'a Lock) -> Self {
        Guard { lock }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}
