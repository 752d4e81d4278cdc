//! The `mie` tool's library: the protection lab (`mie demo`) and the benchmark (`mie bench`).
pub mod bench;
pub mod demo;
pub mod instructions;
pub mod json;
