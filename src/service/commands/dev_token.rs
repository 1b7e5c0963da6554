//! The development admin token: a keyrelay whose admin API listens on
//! loopback only and has no `[admin]` token makes one, writes it beside its
//! store (mode 0600) and says it at start-up, so the CLI and the status page
//! work out of the box on a developer's machine. Anything listening beyond
//! loopback keeps its admin API closed until tokens are configured.

use std::io::Write as _;
use std::path::PathBuf;

use keyrelay_core::config::Config;
use keyrelay_core::secret::ApiKey;

/// Where the development token of `config`'s instance is kept.
pub fn path(config: &Config) -> PathBuf {
    let mut path = config.store.path.clone().into_os_string();
    path.push(".dev-admin-token");
    PathBuf::from(path)
}

/// Whether `config` gets a development token: no token configured, and the
/// admin API reachable from this machine only.
pub fn applies(config: &Config) -> bool {
    let admin = &config.admin;
    admin.admin_token.is_none()
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
    let token = match read(config) {
        Some(token) => token,
        None => write_new(&path)?,
    };
    config.admin.admin_token = Some(ApiKey::new(token.clone()));
    Ok(Some(token))
}

/// The development token on disk, if there is a usable one.
pub fn read(config: &Config) -> Option<String> {
    let text = std::fs::read_to_string(path(config)).ok()?;
    let token = text.trim();
    (token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit())).then(|| token.to_owned())
}

fn write_new(path: &PathBuf) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let token = hex::encode(rand::random::<[u8; 16]>());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for the dev admin token", dir.display()))?;
    }
    let mut file = open_private(path)
        .with_context(|| format!("cannot write the dev admin token to {}", path.display()))?;
    file.write_all(token.as_bytes())
        .with_context(|| format!("cannot write the dev admin token to {}", path.display()))?;
    Ok(token)
}

#[cfg(unix)]
fn open_private(path: &PathBuf) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}
