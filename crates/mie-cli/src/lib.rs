//! The `mie` tool's library: the protection lab (`mie demo`), the benchmark (`mie bench`)
//! and the compiler wrapper (`mie cc`).
pub mod bench;
pub mod cc;
pub mod deploy;
pub mod demo;
pub mod instructions;
pub mod report;
