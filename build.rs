//! Build script: finds the shared reference payloads (`reference/marathon/...`, not part of the
//! repository) for the tests that read them, so that a fresh clone without them shows those
//! tests as `ignored` with a reason instead of passing silently.
//!
//! The shared directory is `$VIPD_SHARED_DIR`, else `../shared` beside the checkout, else
//! `../../shared` (a worktree under `wt/`). It sets:
//! - `VIPD_SHARED_REFERENCE` (env, always): the `reference` directory the tests read;
//! - `vipd_shared_reference` (cfg): only when that directory exists. Tests that need it carry
//!   `#[cfg_attr(not(vipd_shared_reference), ignore = "...")]`.
//!
//! It reruns when `VIPD_SHARED_DIR` or this file changes, not when the directory appears later:
//! after adding `../shared`, `touch build.rs` (the tests keep saying `ignored` until then).
//!
//! Must NOT: generate code, or make the build depend on the reference data.

use std::path::PathBuf;

fn main() {
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
