//! A small file in the store's directory that records the newest result known
//! to be on disk. sled, finding a corrupt segment when it opens, drops
//! everything after it without a word (tried: 64 flipped bytes in the middle of
//! a 500-result database left 252); comparing what sled recovered with this
//! record turns that silent loss into a refusal to start.
//!
//! Only results whose flush completed are recorded, so a kill -9 never looks
//! like damage; the manifest is written with write-to-temporary + fsync +
//! rename, so it is never half written.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::layout::split_time_key;

/// File name inside the store's directory.
pub const FILE: &str = "keyrelay-manifest.json";

/// The manifest file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Hex of the newest durable `results_by_time` key (time ++ id).
    pub newest: Option<String>,
    /// Hex of the time key before which retention pruned results: a newest
    /// result older than this may have been pruned, not lost.
    #[serde(default)]
    pub pruned_before: Option<String>,
}

/// What this process made durable since the manifest was last written.
#[derive(Debug, Default)]
pub struct Watermark {
    state: Mutex<(Manifest, bool)>,
}

impl Watermark {
    /// Starting from `manifest` as read at open: nothing to write yet.
    pub fn starting_from(manifest: Manifest) -> Watermark {
        Watermark {
            state: Mutex::new((manifest, false)),
        }
    }

    /// A result with this time key is on disk.
    pub fn durable(&self, time_key: &[u8]) {
        let key = hex::encode(time_key);
        let mut state = self.lock();
        if state.0.newest.as_ref().is_none_or(|n| *n < key) {
            state.0.newest = Some(key);
            state.1 = true;
        }
    }

    /// Retention removes results older than this time key. Only ever moves
    /// forward: a later, longer retention (or a clock stepped back) must not
    /// make results pruned before look lost.
    pub fn pruned(&self, before: &[u8]) {
        let key = hex::encode(before);
        let mut state = self.lock();
        if state.0.pruned_before.as_ref().is_none_or(|p| *p < key) {
            state.0.pruned_before = Some(key);
            state.1 = true;
        }
    }

    /// A write of the manifest failed: write it again next time.
    pub fn unwritten(&self) {
        self.lock().1 = true;
    }

    /// The manifest to write, if it changed since the last call.
    pub fn take_changed(&self) -> Option<Manifest> {
        let mut state = self.lock();
        std::mem::take(&mut state.1).then(|| state.0.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Manifest, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The manifest file of the store in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The manifest of the store in `dir`; default when there is none (a new
/// store, or one written by an older keyrelay).
pub fn read(dir: &Path) -> std::io::Result<Manifest> {
    match std::fs::read(path_in(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(e),
    }
}

/// Write the manifest durably (temporary file, fsync, rename).
pub fn write(dir: &Path, manifest: &Manifest) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(manifest).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path_in(dir))
}

/// Why the recovered store is missing results the manifest says were on
/// disk, if it is. `found` is the newest `results_by_time` key sled has.
pub fn missing(manifest: &Manifest, found: Option<&[u8]>) -> Option<String> {
    let newest = manifest.newest.as_deref()?;
    if manifest
        .pruned_before
        .as_deref()
        .is_some_and(|p| newest < p)
    {
        return None;
    }
    let found_hex = found.map(hex::encode);
    if found_hex.as_deref().is_some_and(|f| f >= newest) {
        return None;
    }
    let when = |hex_key: &str| {
        hex::decode(hex_key)
            .ok()
            .and_then(|k| {
                split_time_key(&k)
                    .map(|(at, record)| format!("{at} (job {})", record.replace('\u{1f}', "/")))
            })
            .unwrap_or_else(|| hex_key.to_owned())
    };
    Some(match found_hex {
        Some(f) => format!(
            "its newest result is from {}, but results up to {} were on disk",
            when(&f),
            when(newest)
        ),
        None => format!(
            "it holds no result, but results up to {} were on disk",
            when(newest)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::time_key;

    fn key(secs: i64, id: &str) -> Vec<u8> {
        time_key(jiff::Timestamp::from_second(secs).unwrap(), id)
    }

    #[test]
    fn only_a_store_behind_its_manifest_is_damaged() {
        let mark = Watermark::default();
        assert_eq!(mark.take_changed(), None);
        mark.durable(&key(100, "a"));
        mark.durable(&key(50, "b"));
        let manifest = mark.take_changed().unwrap();
        assert_eq!(manifest.newest, Some(hex::encode(key(100, "a"))));
        assert_eq!(mark.take_changed(), None, "unchanged");
        assert!(missing(&manifest, Some(&key(100, "a"))).is_none());
        assert!(
            missing(&manifest, Some(&key(200, "c"))).is_none(),
            "newer is fine"
        );
        let behind = missing(&manifest, Some(&key(60, "x"))).unwrap();
        assert!(
            behind.contains("job x") && behind.contains("job a"),
            "{behind}"
        );
        assert!(
            missing(&manifest, None)
                .unwrap()
                .contains("holds no result")
        );
        assert!(
            missing(&Manifest::default(), None).is_none(),
            "no manifest: new store"
        );
        mark.pruned(&key(150, ""));
        let pruned = mark.take_changed().unwrap();
        assert!(
            missing(&pruned, None).is_none(),
            "pruned by retention, not lost"
        );
        mark.pruned(&key(120, ""));
        assert_eq!(
            mark.take_changed(),
            None,
            "a longer retention does not move it back"
        );
        mark.unwritten();
        assert_eq!(
            mark.take_changed(),
            Some(pruned),
            "written again after a failure"
        );
    }

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Manifest::default());
        let manifest = Manifest {
            newest: Some("00ff".into()),
            pruned_before: None,
        };
        write(dir.path(), &manifest).unwrap();
        assert_eq!(read(dir.path()).unwrap(), manifest);
    }
}
