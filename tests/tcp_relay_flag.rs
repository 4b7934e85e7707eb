//! `vipd run --tcp-relay copy|splice|auto` (and `VIPD_TCP_RELAY`) on the real binary: each relay
//! serves a connection, moves the bytes its own way (the per-connection `closed` debug line
//! reports `bytes_spliced`), and shows in `/v1/config`; a bad value, or `splice` in a build
//! without it, is a clear startup error.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::daemon::{http_get, VipdProcess};
use support::{free_port, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE};

fn apps_doc(service_port: u16, backend: SocketAddr) -> String {
    serde_json::json!({"apps": [{
        "id": "/relay",
        "portDefinitions": [{"port": service_port}],
        "tasks": [{
            "id": "relay.00000000-0000-0000-0000-000000000000",
            "host": backend.ip().to_string(), "ports": [backend.port()], "state": "TASK_RUNNING",
        }],
    }]})
    .to_string()
}

/// Starts vipd with `extra` args and `env`, serves one 100 kB echo through it, and returns the
/// `bytes_spliced=` value of the connection's `closed` line and the `/v1/config` entry of
/// `tcp_relay`.
async fn serve_once(extra: &[&str], env: &[(&str, &str)]) -> (u64, serde_json::Value) {
    let backend = TaggedEchoServer::start("r").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    let port = free_port(LOCALHOST);
    std::fs::write(&path, apps_doc(port, backend.addr)).unwrap();
    let mut args = vec![
        "--log-level",
        "info,vipd::dataplane=debug",
        "run",
        "--apps",
        path.to_str().unwrap(),
        "--bind-address",
        "127.0.0.1",
        "--admin-listen",
        "127.0.0.1:0",
        "--worker-threads",
        "1",
    ];
    args.extend_from_slice(extra);
    let vipd = VipdProcess::start_with_env(&args, env);
    let admin = vipd
        .admin_addr(PATIENCE)
        .unwrap_or_else(|| panic!("no admin address; log:\n{}", vipd.log().join("\n")));
    let listen: SocketAddr = (LOCALHOST, port).into();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while roundtrip(listen, &payload).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never served; log:\n{}",
            vipd.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The connection that succeeded is the last `closed` line (earlier tries had no listener).
    assert!(
        vipd.wait_for_log("bytes_spliced=", PATIENCE),
        "no closed line; log:\n{}",
        vipd.log().join("\n")
    );
    let spliced = vipd
        .log()
        .iter()
        .rev()
        .find_map(|l| {
            let v = l.split("bytes_spliced=").nth(1)?;
            v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .expect("bytes_spliced value");
    let (status, body) = http_get(&format!("http://{admin}/v1/config")).await;
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    (spliced, config["tcp_relay"].clone())
}

/// Bytes of one `serve_once` connection: 100 kB up, tag line + 100 kB echo down.
#[cfg(all(feature = "splice", target_os = "linux"))]
const MOVED: u64 = 100_000 + 2 + 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_relay_from_the_flag_and_from_the_environment() {
    let (spliced, config) = serve_once(&["--tcp-relay", "copy"], &[]).await;
    assert_eq!(spliced, 0, "copy splices nothing");
    assert_eq!(config["value"], "copy");
    assert_eq!(config["source"], "command_line");

    let (spliced, config) = serve_once(&[], &[("VIPD_TCP_RELAY", "copy")]).await;
    assert_eq!(spliced, 0);
    assert_eq!(config["value"], "copy");
    assert_eq!(config["source"], "environment");
}

#[cfg(all(feature = "splice", target_os = "linux"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_relay_from_the_flag_and_auto_by_default() {
    let (spliced, config) = serve_once(&["--tcp-relay", "splice"], &[]).await;
    assert_eq!(spliced, MOVED, "every byte spliced");
    assert_eq!(config["value"], "splice");

    // `auto` copies each direction's first chunk (at least), so fewer than all bytes splice;
    // the relay's unit tests pin down exactly which.
    let (spliced, config) = serve_once(&[], &[]).await;
    assert!(spliced < MOVED, "auto is the default: {spliced}");
    assert_eq!(config["value"], "auto");
    assert_eq!(config["source"], "default");
}

fn run_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vipd"));
    cmd.args(["run", "--apps", "/nonexistent/apps.json", "--no-admin"])
        .args(args)
        .env_remove("VIPD_TCP_RELAY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{args:?} {env:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unknown_relay_is_a_clear_error() {
    let err = run_fails(&["--tcp-relay", "zerocopy"], &[]);
    assert!(
        err.contains("--tcp-relay") && err.contains("expected `copy`, `splice` or `auto`"),
        "{err}"
    );
    let err = run_fails(&[], &[("VIPD_TCP_RELAY", "fast")]);
    assert!(err.contains("expected `copy`, `splice` or `auto`"), "{err}");
}

#[cfg(not(all(feature = "splice", target_os = "linux")))]
#[test]
fn splice_without_the_feature_is_a_clear_error() {
    let err = run_fails(&["--tcp-relay", "splice"], &[]);
    assert!(
        err.contains("--tcp-relay") && err.contains("built without the splice relay"),
        "{err}"
    );
}
