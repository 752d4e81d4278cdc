//! What is wrong and its report: the slow path of a release, harmless mismatches, the fault classifier, the C library meeting mie blocks, the sweep at exit, and the reports of what the slab allocator finds on its own paths.

pub mod findings;
pub mod validate;
pub mod mismatch;
pub mod fault;
pub mod foreign;
pub mod sweep;
