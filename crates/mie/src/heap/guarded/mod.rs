//! Blocks with no accessible neighbour: guarded samples (`sample.rs`), guard mode
//! (`guard.rs`) and zero-size blocks (`zero.rs`), each in an area of the large-block window.

pub mod guard;
pub mod sample;
pub mod zero;
