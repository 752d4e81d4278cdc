//! The small-block allocator: size classes and the address layout, slot records and slab metadata, the pools of slabs, thread caches and the slabs they own, remote frees, the quarantine, and the hot paths (malloc, free, realloc).

pub mod size_class;
pub mod layout;
pub mod record;
pub mod meta;
pub mod locks;
pub mod pool;
pub mod islands;
pub mod tcache;
pub mod hints;
pub mod owner;
pub mod remote;
pub mod quarantine;
pub mod alloc;
pub mod zeroed;
pub mod free;
pub mod neighbour;
pub mod finding;
pub mod hook;
