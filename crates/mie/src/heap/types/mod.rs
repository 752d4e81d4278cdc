//! Type isolation: type ids, call sites and allocation wrappers to buckets; allocation kinds.

pub mod bucket;
pub mod kind;
pub mod sites;
pub mod wrappers;
