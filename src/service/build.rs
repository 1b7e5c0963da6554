//! Records the git revision the binary is built from, for `keyrelay --version`.
//! Written by hand rather than with vergen: one `git` call and no build
//! dependencies. `KEYRELAY_GIT_REV` in the environment wins (a Docker build
//! has no `.git`); without either, the revision is `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KEYRELAY_GIT_REV");
    let rev = std::env::var("KEYRELAY_GIT_REV")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=KEYRELAY_GIT_REV={}", rev.trim());
    watch_head();
}

/// Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
fn watch_head() {
    let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) else {
        return;
    };
    let mut watched = vec![head.clone()];
    if let Ok(text) = std::fs::read_to_string(&head)
        && let Some(branch) = text.trim().strip_prefix("ref: ")
        && let Some(path) = git(&["rev-parse", "--git-path", branch])
    {
        watched.push(path);
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        watched.push(packed);
    }
    // A path that does not exist would rerun the script on every build.
    for path in watched.iter().filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
