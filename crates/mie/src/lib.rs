//! mie: Memory Integrity Enforcement for Linux — a type-isolating secure allocator.
//!
//! Layering (see `README.md` in this folder): `platform` → `heap` → front ends (`api` here,
//! the C ABI in `mie-malloc`, the CLI in `mie-cli`). The allocator never uses the global
//! allocator, and the allocation path never panics: errors are reported and abort, or
//! return null for exhaustion.
//!
//! The whole program on mie, in two lines:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: mie::Mie = mie::Mie;
//!
//! fn main() {
//!     let v: Vec<u64> = (0..1000).collect();
//!     assert_eq!(v.iter().sum::<u64>(), 499_500);
//!     let s = mie::stats();
//!     assert!(s.live_bytes >= 8000 && s.live_blocks() >= 1);
//! }
//! ```
//!
//! Types that deserve a bucket of their own (a freed object of one type is never reused for
//! another type in another bucket):
//!
//! ```
//! use mie::{TypeKey, TypedBox};
//!
//! struct Session { user: u64, key: [u8; 32] }
//! let s = TypedBox::new(Session { user: 7, key: [1; 32] });
//! assert_eq!(s.user + s.key[0] as u64, 8);
//!
//! // Raw typed blocks, with the bounds of any heap pointer at hand.
//! let layout = std::alloc::Layout::new::<[u64; 8]>();
//! let p = mie::alloc_typed(layout, TypeKey::pure_data::<[u64; 8]>());
//! assert_eq!(mie::object_size(p), 64);
//! assert_eq!(mie::object_size(p.wrapping_add(60)), 4);
//! unsafe { mie::free(p) };
//! ```
//!
//! The Rust API is the crate root: [`Mie`] (the global allocator, a unit struct usable in a
//! `static`), [`TypedBox`], [`alloc_typed`] and friends. The allocator's internals are private, and every function
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
pub(crate) mod traps;

mod api;
#[doc(hidden)]
pub mod sys;

pub use api::{alloc_typed, checked_copy, free, object_size, owner_of, realloc, usable_size, Mie, TypeKey, TypedBox};
pub use stats::{print as stats_print, snapshot as stats, Stats};

/// Options the program carries, as `MIE_OPTIONS` spells them, applied before the
/// environment's `MIE_OPTIONS` (which can change them, within the rules for privileged
/// processes). Use it once, at the crate root of the binary; the string is read at the
/// first allocation. The same hook as ASan's `__asan_default_options`: a C program defines
/// `const char *__mie_default_options(void)` and links with `-lmie`.
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: mie::Mie = mie::Mie;
///
/// // Reports name where each block was allocated and freed.
/// mie::default_options!("stacks=1");
///
/// fn main() {
///     assert!(mie::options().stacks);
/// }
/// ```
#[macro_export]
macro_rules! default_options {
    ($options:expr) => {
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn __mie_default_options() -> *const ::core::ffi::c_char {
            ::core::concat!($options, "\0").as_ptr().cast()
        }
    };
}

/// The options in force (after `MIE_OPTIONS`), initialising the heap if needed.
pub fn options() -> options::Options {
    heap::ensure_init().map(|g| g.opts).unwrap_or(options::Options::DEFAULT)
}
