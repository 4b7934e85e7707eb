//! Build script, two jobs:
//! 1. Finds the shared reference payloads (`reference/marathon/...`, not part of the repository)
//!    for the tests that read them, so that a fresh clone without them shows those tests as
//!    `ignored` with a reason instead of passing silently ([`shared_reference`]).
//! 2. Records the git commit the binary is built from, for `vipd_build_info` ([`git_commit`]).
//!
//! Shared reference: the shared directory is `$VIPD_SHARED_DIR`, else `../shared` beside the
//! checkout, else `../../shared` (a worktree under `wt/`). It sets `VIPD_SHARED_REFERENCE` (env,
//! always): the `reference` directory the tests read; and `vipd_shared_reference` (cfg) only when
//! that directory exists. Tests that need it carry
//! `#[cfg_attr(not(vipd_shared_reference), ignore = "...")]`. It reruns when `VIPD_SHARED_DIR` or
//! this file changes, not when the directory appears later: after adding `../shared`,
//! `touch build.rs`.
//!
//! Commit: sets `VIPD_GIT_COMMIT` (read with `option_env!`) to `$VIPD_BUILD_COMMIT` when that is
//! set (a build without `.git`, such as a container build, can pass it), else to
//! `git rev-parse --short HEAD`; otherwise leaves it unset and the metric says `unknown`. Reruns
//! when HEAD moves, not on every source change.
//!
//! Must NOT: generate code, or make the build depend on the reference data.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    shared_reference();
    git_commit();
}

fn shared_reference() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VIPD_SHARED_DIR");
    println!("cargo:rustc-check-cfg=cfg(vipd_shared_reference)");

    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let candidates: Vec<PathBuf> = match std::env::var_os("VIPD_SHARED_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![manifest.join("../shared"), manifest.join("../../shared")],
    };
    let found = candidates
        .iter()
        .map(|shared| shared.join("reference"))
        .find(|reference| reference.is_dir());
    let reference = found
        .clone()
        .unwrap_or_else(|| candidates[0].join("reference"));
    println!(
        "cargo:rustc-env=VIPD_SHARED_REFERENCE={}",
        reference.display()
    );
    if found.is_some() {
        println!("cargo:rustc-cfg=vipd_shared_reference");
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn git_commit() {
    println!("cargo:rerun-if-env-changed=VIPD_BUILD_COMMIT");
    let commit = std::env::var("VIPD_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]));
    if let Some(commit) = commit {
        println!("cargo:rustc-env=VIPD_GIT_COMMIT={commit}");
    }
    // Rerun when HEAD moves: HEAD itself (a checkout), the branch it names (a commit), and
    // packed-refs (a branch that was packed). Works in linked worktrees too.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for path in watched {
        // Only files that exist: a missing one would make cargo rerun this script every build.
        match git(&["rev-parse", "--git-path", &path]) {
            Some(p) if std::path::Path::new(&p).exists() => {
                println!("cargo:rerun-if-changed={p}")
            }
            _ => {}
        }
    }
}
