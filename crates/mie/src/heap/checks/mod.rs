//! Checks that are not the allocator's own bookkeeping: slack canaries, zero-size blocks, bounds for the checks at the call, guarded samples, guard mode, allocation and free stacks.

pub mod canary;
pub mod zero;
pub mod bounds;
pub mod sample;
pub mod guard;
pub mod stacks;
