//! Calls up out of the slab allocator: a function of a layer above it (the diagnosis's
//! report of a finding, the large blocks giving address space back, the fault handler's
//! check) that start-up installs here, so that `slab/` calls it without importing its layer.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};

/// A function pointer of type `F` (a `fn` type) that start-up installs; none before.
pub struct Hook<F: Copy>(AtomicUsize, PhantomData<F>);

impl<F: Copy> Hook<F> {
    const IS_A_WORD: () = assert!(core::mem::size_of::<F>() == core::mem::size_of::<usize>());

    pub const fn new() -> Self {
        Hook(AtomicUsize::new(0), PhantomData)
    }

    /// Start-up: install `f`.
    pub fn install(&self, f: F) {
        let () = Self::IS_A_WORD;
        // SAFETY: F is one word (IS_A_WORD); its bits are kept as they are, for `get`.
        self.0.store(unsafe { core::mem::transmute_copy::<F, usize>(&f) }, Ordering::Release);
    }

    /// The installed function, if start-up has installed one.
    pub fn get(&self) -> Option<F> {
        let v = self.0.load(Ordering::Acquire);
        // SAFETY: a non-zero value is the bits of an F stored by `install` (a function
        // pointer is never 0).
        (v != 0).then(|| unsafe { core::mem::transmute_copy::<usize, F>(&v) })
    }
}
