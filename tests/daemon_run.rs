//! End-to-end tests of `vipd run --apps FILE`: the real binary, a real apps file, real backends on
//! loopback. Each wait is a condition with a bound, never a fixed sleep.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::daemon::{write_atomically, VipdProcess};
use support::{free_port, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A host-mode app with one service port and the given backends.
fn app(id: &str, service_port: u16, backends: &[SocketAddr]) -> serde_json::Value {
    let tasks: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            serde_json::json!({
                "id": format!("{}.instance-{i:08}-0000-0000-0000-000000000000._app.1", id.trim_start_matches('/')),
                "host": b.ip().to_string(),
                "ports": [b.port()],
                "state": "TASK_RUNNING",
            })
        })
        .collect();
    serde_json::json!({
        "id": id,
        "portDefinitions": [{"port": service_port, "protocol": "tcp"}],
        "tasks": tasks,
    })
}

fn doc(apps: Vec<serde_json::Value>) -> String {
    serde_json::json!({ "apps": apps }).to_string()
}

async fn connects(addr: SocketAddr) -> bool {
    roundtrip(addr, b"ping").await.is_ok()
}

/// Waits (bounded) until a round trip through `addr` succeeds.
async fn wait_serving(addr: SocketAddr, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    support::poll_until(timeout, || async move {
        connects(addr).await.then(|| start.elapsed())
    })
    .await
}

fn start_vipd(path: &std::path::Path) -> VipdProcess {
    VipdProcess::start(&[
        "run",
        "--apps",
        path.to_str().unwrap(),
        "--bind-address",
        "127.0.0.1",
        "--worker-threads",
        "2",
        "--drain-timeout",
        "10s",
        // Tests run in parallel: never the fixed default admin port.
        "--admin-listen",
        "127.0.0.1:0",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_edit_opens_a_new_frontend_within_one_second_and_garbage_keeps_the_old_table() {
    let backend = TaggedEchoServer::start("b1").await;
    let port_a = free_port(LOCALHOST);
    let port_b = free_port(LOCALHOST);
    let a: SocketAddr = (LOCALHOST, port_a).into();
    let b: SocketAddr = (LOCALHOST, port_b).into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![app("/a", port_a, &[backend.addr])])).unwrap();

    let vipd = start_vipd(&path);
    assert!(
        wait_serving(a, PATIENCE).await.is_some(),
        "first frontend never served; log:\n{}",
        vipd.log().join("\n")
    );

    // An in-place edit adds a second app: its frontend accepts within 1 s.
    let edited_at = Instant::now();
    std::fs::write(
        &path,
        doc(vec![
            app("/a", port_a, &[backend.addr]),
            app("/b", port_b, &[backend.addr]),
        ]),
    )
    .unwrap();
    let waited = wait_serving(b, PATIENCE).await;
    let took = edited_at.elapsed();
    assert!(waited.is_some(), "new frontend never served");
    assert!(
        took <= Duration::from_secs(1),
        "new frontend took {took:?} (> 1 s)"
    );

    // Garbage: the failure is logged, and both frontends keep serving from the last good table.
    std::fs::write(&path, "{\"apps\": [ this is not json").unwrap();
    assert!(
        vipd.wait_for_log("keeping the last good table", PATIENCE),
        "garbage not reported; log:\n{}",
        vipd.log().join("\n")
    );
    assert!(connects(a).await && connects(b).await);

    // A document of the wrong shape is also refused, and the table stays.
    std::fs::write(&path, "{\"tasks\": []}").unwrap();
    assert!(vipd.wait_for_log("not a Marathon apps document", PATIENCE));
    assert!(connects(a).await && connects(b).await);

    // An atomic rename removing /b closes its frontend; /a keeps serving.
    write_atomically(&path, &doc(vec![app("/a", port_a, &[backend.addr])]));
    let closed = support::wait_refused(b).await;
    assert!(closed, "removed frontend still accepting");
    assert!(connects(a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_live_connection_and_exits_zero() {
    let backend = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    let addr: SocketAddr = (LOCALHOST, port).into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![app("/a", port, &[backend.addr])])).unwrap();
    let mut vipd = start_vipd(&path);
    assert!(wait_serving(addr, PATIENCE).await.is_some());

    let mut live = TcpStream::connect(addr).await.unwrap();
    let tag = support::read_tag(&mut live).await.unwrap();
    assert_eq!(tag, "b1");

    vipd.signal(libc::SIGTERM);
    assert!(vipd.wait_for_log("SIGTERM", PATIENCE));
    // New connections are refused once draining starts...
    assert!(
        support::wait_refused(addr).await,
        "still accepting after SIGTERM"
    );
    // ...while the live one keeps working.
    live.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    live.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    assert!(
        vipd.wait_exit(Duration::from_millis(300)).is_none(),
        "exited while a connection was live"
    );
    drop(live);
    let status = vipd.wait_exit(PATIENCE).expect("vipd did not exit");
    assert_eq!(status.code(), Some(0), "log:\n{}", vipd.log().join("\n"));
    // The connection finished on its own; the grace period did not have to cut it.
    assert!(
        vipd.wait_for_log("finished=1 cut=0", PATIENCE),
        "log:\n{}",
        vipd.log().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_source() {
    let backend = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, doc(vec![app("/a", port, &[backend.addr])])).unwrap();
    let vipd = start_vipd(&path);
    assert!(wait_serving((LOCALHOST, port).into(), PATIENCE)
        .await
        .is_some());
    vipd.signal(libc::SIGHUP);
    assert!(vipd.wait_for_log("re-reading apps file", PATIENCE));
    // The daemon is still up and serving.
    assert!(connects((LOCALHOST, port).into()).await);
}

#[test]
fn every_run_flag_is_documented_with_its_environment_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--apps",
        "--bind-address",
        "--vip-cidr",
        "--connect-timeout",
        "--connect-tries",
        "--idle-timeout",
        "--drain-timeout",
        "--worker-threads",
        "--listen-backlog",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    let flags = help.matches("\n  -").count() + help.matches("\n      --").count();
    let envs = help.matches("[env: VIPD_").count();
    // Every flag but --help carries an env var.
    assert!(
        envs + 1 >= flags,
        "{envs} env vars for {flags} flags:\n{help}"
    );
}

#[test]
fn run_without_a_source_fails_with_a_clear_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["run"])
        .env_remove("VIPD_APPS")
        .env_remove("VIPD_MARATHON")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--apps"), "{err}");
}
