//! mie: Memory Integrity Enforcement for Linux — a type-isolating secure allocator.
//!
//! Layering (see `README.md` in this folder): `platform` → `heap` → front ends (`api` here,
//! the C ABI in `mie-malloc`, the CLI in `mie-cli`). The allocator never uses the global
//! allocator, and the allocation path never panics: errors are reported and abort, or
//! return null for exhaustion.

pub mod heap;
pub mod options;
pub mod platform;
pub mod prf;
pub mod rand;
pub mod report;
pub mod stats;
pub mod tag;

mod api;
pub use api::{alloc_typed, checked_copy, free, object_size, owner_of, usable_size, Mie, TypeKey, TypedBox};
pub use heap::Caller;
pub use stats::{print as stats_print, snapshot as stats, Stats};

/// The options in force (after `MIE_OPTIONS`), initialising the heap if needed.
pub fn options() -> options::Options {
    heap::ensure_init().map(|g| g.opts).unwrap_or(options::Options::DEFAULT)
}
