//! How a block was allocated, recorded per block so that its release can be checked: memory
//! from `malloc` must go back through `free`, from `new` through `delete`, from `new[]`
//! through `delete[]`, from the aligned forms through the aligned forms, and a sized release
//! must name the block's size.

pub const MALLOC: u8 = 0;
pub const NEW: u8 = 1;
pub const NEW_ARRAY: u8 = 2;
pub const NEW_ALIGNED: u8 = 3;
pub const NEW_ARRAY_ALIGNED: u8 = 4;

/// The allocation function of a kind, for reports.
pub fn allocated_by(kind: u8) -> &'static str {
    match kind {
        MALLOC => "malloc (or calloc, realloc, aligned_alloc, ...)",
        NEW => "operator new",
        NEW_ARRAY => "operator new[]",
        NEW_ALIGNED => "operator new(size_t, align_val_t)",
        NEW_ARRAY_ALIGNED => "operator new[](size_t, align_val_t)",
        _ => "an unknown allocation function",
    }
}

/// The matching release, for reports.
pub fn released_by(kind: u8) -> &'static str {
    match kind {
        MALLOC => "free",
        NEW => "operator delete",
        NEW_ARRAY => "operator delete[]",
        NEW_ALIGNED => "operator delete(void*, align_val_t)",
        NEW_ARRAY_ALIGNED => "operator delete[](void*, align_val_t)",
        _ => "?",
    }
}

/// What a release call expects of the block it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    pub kind: u8,
    /// The size a sized release names (`free_sized`, sized `delete`).
    pub size: Option<usize>,
    /// The alignment an aligned release names (1 when none).
    pub align: usize,
}

impl Release {
    pub const FREE: Release = Release { kind: MALLOC, size: None, align: 1 };

    pub const fn of(kind: u8) -> Release {
        Release { kind, size: None, align: 1 }
    }

    /// Whether a block of `kind` whose requested size is `size`, at address `p`, may be
    /// released this way.
    #[inline(always)]
    pub fn accepts(&self, p: usize, kind: u8, size: usize) -> bool {
        kind == self.kind && self.size.is_none_or(|s| s == size) && p & (self.align.max(1) - 1) == 0
    }
}
