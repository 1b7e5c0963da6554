//! The development admin token. A config that asks for it (`[admin]
//! dev_token = true`, as the dev config does), has no token and listens on
//! loopback only gets one from `keyrelay run`: kept beside the store
//! (`<store.path>.dev-admin-token`, mode 0600, owned by this user), where the
//! CLI finds it, so the CLI and the status page work out of the box on a
//! developer's machine. The token is never written to the logs: only the
//! file is named (and the token shown on a terminal).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use keyrelay_core::config::Config;
use keyrelay_core::secret::ApiKey;

/// Where the development token of `config`'s instance is kept.
pub fn path(config: &Config) -> PathBuf {
    let mut path = config.store.path.clone().into_os_string();
    path.push(".dev-admin-token");
    PathBuf::from(path)
}

/// Whether `config` gets a development token: asked for, no token
/// configured, and the admin API reachable from this machine only.
pub fn applies(config: &Config) -> bool {
    let admin = &config.admin;
    admin.dev_token
        && admin.admin_token.is_none()
        && admin.read_token.is_none()
        && config.metrics.listen.ip().is_loopback()
}

/// Give `config` its development token (the one already on disk, else a new
/// one); `None` when it does not apply. The error names the file.
pub fn ensure(config: &mut Config) -> anyhow::Result<Option<String>> {
    if !applies(config) {
        return Ok(None);
    }
    let path = path(config);
    let token = match read_checked(&path)? {
        Some(token) => token,
        None => write_new(&path)?,
    };
    config.admin.admin_token = Some(ApiKey::new(token.clone()));
    Ok(Some(token))
}

/// The development token on disk for `config`, if it applies and the file
/// is sound (see [`read_checked`]).
pub fn read(config: &Config) -> Option<String> {
    if !applies(config) {
        return None;
    }
    read_checked(&path(config)).ok().flatten()
}

/// The token in `path`: `None` when there is no file; an error when the file
/// is not a plain file of this user's that only they can read (a token
/// someone else could have planted or read is not used).
fn read_checked(path: &Path) -> anyhow::Result<Option<String>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    check_private(path, &meta)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let token = text.trim();
    if token.len() < 32 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "{} does not hold a dev admin token; delete it and start again",
            path.display()
        );
    }
    Ok(Some(token.to_owned()))
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        bail!(
            "{} must be a file of this user's that only they can read (chmod 600); not using it",
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> anyhow::Result<()> {
    Ok(())
}

fn write_new(path: &Path) -> anyhow::Result<String> {
    let token = hex::encode(rand::random::<[u8; 16]>());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for the dev admin token", dir.display()))?;
    }
    let mut file = create_private(path)
        .with_context(|| format!("cannot write the dev admin token to {}", path.display()))?;
    file.write_all(token.as_bytes())
        .with_context(|| format!("cannot write the dev admin token to {}", path.display()))?;
    Ok(token)
}

/// A new file only this user can read; never through a symlink, never over
/// an existing file.
#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_others_could_read_or_plant_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let token = write_new(&path).unwrap();
        assert_eq!(
            read_checked(&path).unwrap().as_deref(),
            Some(token.as_str())
        );
        assert!(write_new(&path).is_err(), "never over an existing file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = read_checked(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&path, &link).unwrap();
            assert!(read_checked(&link).is_err(), "a symlink is not followed");
        }
        assert_eq!(read_checked(&dir.path().join("none")).unwrap(), None);
    }
}
