//! What every block carries for its checks, below the allocators that use it: slack
//! canaries (`canary.rs`) and allocation and free stacks (`stacks.rs`).

pub mod canary;
pub mod stacks;
