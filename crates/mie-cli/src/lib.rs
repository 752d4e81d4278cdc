//! The `mie` command's library: the protection lab (`mie demo`), shared with its tests.

pub mod demo;
