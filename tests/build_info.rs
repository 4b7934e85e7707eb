//! `vipd_build_info{version,commit}` on the /metrics of a real `vipd run`: 1, the crate's version,
//! and the commit the binary was built from (`git rev-parse --short HEAD` when git is there).

mod support;

use std::process::Command;
use support::daemon::{http_get, VipdProcess};
use support::PATIENCE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_build_info_with_version_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.json");
    std::fs::write(&apps, r#"{"apps": []}"#).unwrap();
    let vipd = VipdProcess::start(&[
        "run",
        "--apps",
        apps.to_str().unwrap(),
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = vipd
        .admin_addr(PATIENCE)
        .unwrap_or_else(|| panic!("no admin address; log:\n{}", vipd.log().join("\n")));
    let (status, metrics) = http_get(&format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("vipd_build_info{"))
        .unwrap_or_else(|| panic!("no vipd_build_info in:\n{metrics}"));
    assert!(line.ends_with("} 1"), "{line}");
    assert!(
        line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    // The build script read the same repository this test runs in; without git it says unknown.
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let want = match std::env::var("VIPD_BUILD_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => head.unwrap_or_else(|| "unknown".into()),
    };
    assert!(line.contains(&format!("commit=\"{want}\"")), "{line}");
}
