//! The identity of a key inside one process: its index in the supervisor's table.

/// Index of a key in the supervisor's table (stable for the process lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub usize);
