//! Everything that can go wrong in the store, as one error type.

use std::path::PathBuf;

use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// sled refused an operation (an I/O error: after one, every write fails
    /// until the store is reopened).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value is not the JSON it should be.
    #[error("store record {tree}/{key} is corrupt: {message}")]
    Corrupt {
        /// The tree it is in.
        tree: &'static str,
        /// Its key.
        key: String,
        /// Why it does not decode.
        message: String,
    },
    /// A write could not be made durable: the flush failed, the committer is
    /// gone, the value could not be encoded, or a recovery step gave up.
    #[error("store flush failed: {0}")]
    Flush(String),
    /// The tables are being replaced after a write failure; try again shortly.
    #[error("store is being reopened after a write failure")]
    Reopening,
    /// Results the manifest says were on disk are missing: sled lost them
    /// while opening.
    #[error(
        "the store at {} is damaged: {why} (sled dropped what followed a corrupt part of its \
         files, and rewrote those parts while opening: the lost results are not in that \
         directory any more). Restore it from a backup; or start with an empty store by setting \
         store.on_damage = \"move_aside\" (KEYRELAY__STORE__ON_DAMAGE=move_aside), which keeps \
         the damaged directory beside it as {}.damaged-<time>",
        path.display(),
        path.display()
    )]
    Damaged {
        /// The store's directory.
        path: PathBuf,
        /// What is missing, or what sled reported.
        why: String,
    },
    /// The manifest file could not be read or written.
    #[error("store manifest {}: {source}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Why reading or writing it failed.
        source: std::io::Error,
    },
    /// sled could not open the database (in one line: the reason is said,
    /// not chained).
    #[error("cannot open the store at {} (store.path, KEYRELAY__STORE__PATH): {reason}", path.display())]
    Open {
        /// The store's directory.
        path: PathBuf,
        /// Why, in words: "another process holds it" for a held lock.
        reason: String,
    },
    /// A damaged store could not be renamed out of the way
    /// (`store.on_damage = "move_aside"`).
    #[error("cannot move the damaged store aside to {}: {source}", path.display())]
    MoveAside {
        /// Where it was to be moved.
        path: PathBuf,
        /// Why the rename failed.
        source: std::io::Error,
    },
}
