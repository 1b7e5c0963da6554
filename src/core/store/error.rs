//! Everything that can go wrong in the store, as one error type.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store record {tree}/{key} is corrupt: {message}")]
    Corrupt {
        tree: &'static str,
        key: String,
        message: String,
    },
    #[error("store flush failed: {0}")]
    Flush(String),
    #[error("store is being reopened after a write failure")]
    Reopening,
    #[error(
        "the store at {} is damaged: {why} (sled dropped what followed a corrupt part of its \
         files, and rewrote those parts while opening: the lost results are not in that \
         directory any more). Restore it from a backup; or start with an empty store by setting \
         store.on_damage = \"move_aside\" (KEYRELAY__STORE__ON_DAMAGE=move_aside), which keeps \
         the damaged directory beside it as {}.damaged-<time>",
        path.display(),
        path.display()
    )]
    Damaged { path: PathBuf, why: String },
    #[error("store manifest {}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store at {}: {source}", path.display())]
    Open { path: PathBuf, source: sled::Error },
    #[error("cannot move the damaged store aside to {}: {source}", path.display())]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
}
