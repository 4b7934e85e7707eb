//! Build script: records the git commit the binary is built from, for `vipd_build_info`.
//!
//! Sets `VIPD_GIT_COMMIT` (read with `option_env!`) to `$VIPD_BUILD_COMMIT` when that is set (a
//! build without `.git`, such as a container build, can pass it), else to
//! `git rev-parse --short HEAD` when git and the repository are there; otherwise leaves it unset
//! and the metric says `unknown`. Reruns when HEAD moves, not on every source change.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=VIPD_BUILD_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
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
