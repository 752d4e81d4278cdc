//! What a thread remembers of its last checked calls (`memcpy` & co.): the blocks they were
//! in. Kept in the thread cache; what the hints mean and how they are used is `heap/bounds.rs`.

/// The small block a thread's last checked read (or write) was in: its bounds and its
/// record as they were then. While the record is unchanged the block is the same live block
/// (a free, a realloc or a new block in the slot changes it: state, size or generation), so
/// the next call about it costs a record compare instead of a decode. Per thread, in the
/// thread cache (out of line, like all metadata); zeroed it never matches.
#[derive(Clone, Copy)]
pub struct Hint {
    pub(crate) start: usize,
    pub(crate) size: usize,
    /// The 4-byte word that holds the block's record: a wide record itself, a narrow one
    /// with the 2 bytes before it (`bounds::record_word`).
    pub(crate) rec: usize,
    /// That word's record bytes as they were, and which bytes they are.
    pub(crate) val: u32,
    pub(crate) mask: u32,
}

/// A thread's hints: for reads, for writes and the last large block (`LARGE`), and how many
/// times they have been changed. A signal handler that makes a checked call on this thread
/// can change a hint between the reads of its fields: a reader reads the count before and
/// after, and trusts what it read only when the count is the same (no hint changed).
#[derive(Clone, Copy)]
pub struct Hints {
    pub(crate) h: [Hint; 3],
    pub(crate) changes: usize,
}
