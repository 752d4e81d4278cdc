//! mie: Memory Integrity Enforcement for Linux — a type-isolating secure allocator.
//!
//! Layering (see `README.md` in this folder): `platform` → `heap` → front ends (`api` here,
//! the C ABI in `mie-malloc`, the CLI in `mie-cli`). The allocator never uses the global
//! allocator, and the allocation path never panics: errors are reported and abort, or
//! return null for exhaustion.
//!
//! The Rust API is the crate root: [`Mie`] (the global allocator), [`TypedBox`],
//! [`alloc_typed`] and friends. The allocator's internals are private, and every function
//! that gives a block back is `unsafe`, so safe code cannot corrupt the heap through mie:
//!
//! ```compile_fail
//! #![forbid(unsafe_code)]
//! let v = vec![1u8; 16];
//! // The internals are private.
//! mie::heap::free(v.as_ptr() as *mut u8, mie::caller!("free", 0));
//! ```
//!
//! ```compile_fail
//! #![forbid(unsafe_code)]
//! let v = vec![1u8; 16];
//! // Freeing is unsafe, in the Rust API and in the C ABI's interface alike.
//! mie::free(v.as_ptr() as *mut u8);
//! ```
//!
//! ```compile_fail
//! #![forbid(unsafe_code)]
//! let v = vec![1u8; 16];
//! mie::sys::free(v.as_ptr() as *mut u8, mie::caller!("free", 0));
//! ```
//!
//! The same calls compile where the caller takes responsibility (so the failures above are
//! the unsafety, not a typo):
//!
//! ```no_run
//! let v = std::mem::ManuallyDrop::new(vec![1u8; 16]);
//! unsafe { mie::free(v.as_ptr() as *mut u8) };
//! unsafe { mie::sys::free(v.as_ptr() as *mut u8, mie::caller!("free", 0)) };
//! ```

pub(crate) mod heap;
pub mod options;
pub(crate) mod platform;
pub(crate) mod prf;
pub(crate) mod rand;
pub(crate) mod report;
pub(crate) mod stats;
pub(crate) mod tag;

mod api;
#[doc(hidden)]
pub mod sys;

pub use api::{alloc_typed, checked_copy, free, object_size, owner_of, realloc, usable_size, Mie, TypeKey, TypedBox};
pub use stats::{print as stats_print, snapshot as stats, Stats};

/// The options in force (after `MIE_OPTIONS`), initialising the heap if needed.
pub fn options() -> options::Options {
    heap::ensure_init().map(|g| g.opts).unwrap_or(options::Options::DEFAULT)
}
