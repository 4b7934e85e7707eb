//! The container image's recipe, checked without building it (the build needs the network to
//! pull its base images, which tests do not have): its HEALTHCHECK command is run for real
//! against a running vipd (0 when ready, 1 when no vipd answers), its EXPOSEd port is the admin
//! default, its base images are pinned by version, and `.dockerignore` keeps `target/` out of the
//! build context. The `setcap` line is exercised for real in `capabilities_netns.rs`.

mod support;

use std::path::Path;
use std::process::Command;
use support::daemon::VipdProcess;
use support::{free_port, LOCALHOST, PATIENCE};

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments left out.
fn instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// The HEALTHCHECK's exec-form command.
fn healthcheck() -> Vec<String> {
    let hc = instructions()
        .into_iter()
        .find(|i| i.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    let cmd = hc.split_once(" CMD ").expect("HEALTHCHECK ... CMD [..]").1;
    serde_json::from_str(cmd.trim()).expect("the exec (JSON) form")
}

/// Runs the HEALTHCHECK command with this build's vipd in place of the image's, and the admin
/// address in the environment as the container would have it.
fn run_healthcheck(admin: &str) -> std::process::Output {
    let cmd = healthcheck();
    assert_eq!(cmd[0], "/usr/local/bin/vipd", "{cmd:?}");
    Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(&cmd[1..])
        .env("VIPD_ADMIN_LISTEN", admin)
        .output()
        .expect("run the health check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_passes_against_a_ready_vipd_and_fails_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(LOCALHOST);
    let apps = serde_json::json!({"apps": [{"id": "/web", "portDefinitions": [{"port": port}],
            "tasks": [{"id": "web.1", "host": "127.0.0.1", "ports": [9], "state": "TASK_RUNNING"}]}]});
    let (vipd, admin) = VipdProcess::run_on_apps(dir.path(), &apps, &[], PATIENCE);
    let admin = admin.to_string();
    let passed = support::eventually_async(PATIENCE, || {
        let admin = admin.clone();
        async move {
            tokio::task::spawn_blocking(move || run_healthcheck(&admin).status.success())
                .await
                .unwrap()
        }
    })
    .await;
    assert!(passed, "log:\n{}", vipd.log().join("\n"));
    drop(vipd);

    let nobody = format!("127.0.0.1:{}", free_port(LOCALHOST));
    let out = tokio::task::spawn_blocking(move || run_healthcheck(&nobody))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn the_image_exposes_the_admin_port_and_pins_its_bases() {
    let all = instructions();
    let admin_port = vipd::cli::defaults::<vipd::cli::RunArgs>()
        .admin
        .admin_listen
        .unwrap()
        .port();
    assert!(
        all.iter().any(|i| i == &format!("EXPOSE {admin_port}/tcp")),
        "EXPOSE {admin_port}/tcp: {all:?}"
    );
    let froms: Vec<&String> = all.iter().filter(|i| i.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    for from in froms {
        let image = from.split_whitespace().nth(1).unwrap();
        let tag = image.split_once(':').map(|(_, t)| t).unwrap_or("");
        // A version number (`1.95.0-bookworm`, `12.12-slim`), not a moving tag (`1`, `latest`).
        let version = tag.split('-').next().unwrap_or("");
        assert!(
            version.split('.').count() >= 2
                && version
                    .split('.')
                    .all(|p| p.chars().all(|c| c.is_ascii_digit())),
            "{image} is not pinned by version"
        );
    }
    assert!(
        all.iter()
            .any(|i| i.starts_with("USER ") && !i.starts_with("USER 0")),
        "runs as a non-root user"
    );
}

#[test]
fn dockerignore_keeps_target_out_of_the_context() {
    let ignore = read(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules.first(), Some(&"*"), "everything is ignored first");
    assert!(
        !rules
            .iter()
            .any(|r| r.starts_with('!') && r.contains("target")),
        "{rules:?}"
    );
    // Everything the Dockerfile COPYs from the context is let back in.
    for i in instructions()
        .iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from"))
    {
        let words: Vec<&str> = i.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(
                rules.contains(&format!("!{src}").as_str()),
                "{src} is ignored"
            );
        }
    }
}
