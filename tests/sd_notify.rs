//! `sd_notify` readiness of the real binary, against a fake service manager: a unix datagram
//! socket the test binds and names in `$NOTIFY_SOCKET`. `READY=1` comes only once vipd is ready
//! (first table published, `/readyz` 200), and `STOPPING=1` when SIGTERM starts the drain.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use support::daemon::{http_get, VipdProcess};
use support::{free_port, TaggedEchoServer, LOCALHOST, PATIENCE};

/// The next notification datagram, or `None` after `timeout`.
fn next_notification(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_the_first_publish_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&socket_path).unwrap();
    let apps = dir.path().join("apps.json");
    // An apps file that does not parse yet (a missing one is a startup error): vipd runs but
    // publishes nothing, so it must not say READY.
    std::fs::write(&apps, "not yet").unwrap();
    let mut vipd = VipdProcess::start_with_env(
        &[
            "run",
            "--apps",
            apps.to_str().unwrap(),
            "--bind-address",
            "127.0.0.1",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let admin = vipd
        .admin_addr(PATIENCE)
        .unwrap_or_else(|| panic!("no admin address; log:\n{}", vipd.log().join("\n")));
    assert_eq!(http_get(&format!("http://{admin}/readyz")).await.0, 503);
    let early = next_notification(&manager, Duration::from_millis(300));
    assert_eq!(early, None, "notified before anything was published");

    let backend = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    support::daemon::write_atomically(
        &apps,
        &serde_json::json!({"apps": [{
            "id": "/web",
            "portDefinitions": [{"port": port}],
            "tasks": [{"id": "web.1", "host": "127.0.0.1", "ports": [backend.addr.port()],
                       "state": "TASK_RUNNING"}],
        }]})
        .to_string(),
    );
    let ready = next_notification(&manager, PATIENCE)
        .unwrap_or_else(|| panic!("no READY=1; log:\n{}", vipd.log().join("\n")));
    let lines: Vec<&str> = ready.lines().collect();
    assert_eq!(lines[0], "READY=1", "{ready}");
    assert_eq!(
        lines[1], "STATUS=serving table generation 1: 1 frontends",
        "{ready}"
    );
    // Ready means what /readyz says, and the listener takes connections.
    assert_eq!(http_get(&format!("http://{admin}/readyz")).await.0, 200);
    std::net::TcpStream::connect((LOCALHOST, port)).expect("listener bound when READY=1");

    vipd.signal(libc::SIGTERM);
    let stopping = next_notification(&manager, PATIENCE)
        .unwrap_or_else(|| panic!("no STOPPING=1; log:\n{}", vipd.log().join("\n")));
    assert_eq!(stopping.lines().next(), Some("STOPPING=1"), "{stopping}");
    let started = Instant::now();
    let status = vipd.wait_exit(PATIENCE).expect("vipd exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < PATIENCE);
    // One READY, one STOPPING: nothing else was sent.
    assert_eq!(next_notification(&manager, Duration::from_millis(50)), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_notify_socket_is_logged_and_vipd_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.json");
    std::fs::write(&apps, r#"{"apps": []}"#).unwrap();
    let missing = dir.path().join("nobody-listens.sock");
    let vipd = VipdProcess::start_with_env(
        &[
            "run",
            "--apps",
            apps.to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[("NOTIFY_SOCKET", missing.to_str().unwrap())],
    );
    let admin = vipd
        .admin_addr(PATIENCE)
        .unwrap_or_else(|| panic!("no admin address; log:\n{}", vipd.log().join("\n")));
    assert!(
        vipd.wait_for_log("cannot notify the service manager", PATIENCE),
        "{}",
        vipd.log().join("\n")
    );
    assert_eq!(http_get(&format!("http://{admin}/readyz")).await.0, 200);
}
