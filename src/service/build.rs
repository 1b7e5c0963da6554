//! Records the git revision the binary is built from, for `keyrelay --version`.
//! Written by hand rather than with vergen: one `git` call and no build
//! dependencies. `KEYRELAY_GIT_REV` in the environment wins (a Docker build
//! has no `.git`); without either, the revision is `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KEYRELAY_GIT_REV");
    let ours = is_our_checkout();
    let rev = std::env::var("KEYRELAY_GIT_REV")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| ours.then(|| git(&["rev-parse", "--short=12", "HEAD"]))?)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=KEYRELAY_GIT_REV={}", rev.trim());
    if ours {
        watch_head();
    }
}

/// Whether the git work tree around us is keyrelay's own (a source tarball
/// unpacked inside another repository must not take that one's revision).
fn is_our_checkout() -> bool {
    let (Some(top), Ok(manifest)) = (
        git(&["rev-parse", "--show-toplevel"]),
        std::env::var("CARGO_MANIFEST_DIR"),
    ) else {
        return false;
    };
    let same =
        |a: &str, b: &str| Path::new(a).canonicalize().ok() == Path::new(b).canonicalize().ok();
    same(&top, &manifest)
}

/// Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs,
/// and HEAD's reflog (written on every commit and checkout, so a branch ref
/// that lives only in packed refs is followed too).
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
    for extra in ["packed-refs", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", extra]) {
            watched.push(path);
        }
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
