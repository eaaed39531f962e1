//! Build facts for `fitbit_proxy_build_info`: the compiler's version and
//! the git revision: `$FITBIT_PROXY_REVISION` when set (a build without the
//! checkout, such as deploy/Dockerfile's), else asked of git. Only local
//! commands (`rustc --version`, `git rev-parse`); without them the labels
//! say `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(Command::new(rustc).arg("--version"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FITBIT_PROXY_RUSTC_VERSION={rustc_version}");
    println!("cargo:rerun-if-env-changed=RUSTC");

    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(&dir).args(args));
    println!("cargo:rerun-if-env-changed=FITBIT_PROXY_REVISION");
    let revision = std::env::var("FITBIT_PROXY_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FITBIT_PROXY_REVISION={revision}");
    println!("cargo:rerun-if-changed=build.rs");
    // Built again when HEAD moves: a checkout (HEAD), a commit on the
    // branch (its ref, or packed-refs once git packed it). Only files that
    // exist, or cargo would run this script on every build.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            let path = absolute(&dir, &path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

fn absolute(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        dir.join(path)
    }
}

/// The command's first line of output, if it ran and succeeded.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_owned())
}
