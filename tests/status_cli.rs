//! `vipd status` through the real binary: against a running vipd it lists the frontend and its
//! backend (table and `--json`); with no vipd on the port it exits 1 with one stderr line.

mod support;

use std::process::{Command, Output};
use support::daemon::{http_get, VipdProcess};
use support::{free_port, roundtrip, TaggedEchoServer, LOCALHOST, PATIENCE};

fn vipd_status(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vipd"))
        .arg("status")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run vipd status")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_frontend_and_its_backend_with_their_counts() {
    let backend = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let apps = serde_json::json!({"apps": [{
        "id": "/web",
        "portDefinitions": [{"port": port}],
        "tasks": [{"id": "web.1", "host": "127.0.0.1", "ports": [backend.addr.port()],
                   "state": "TASK_RUNNING"}],
    }]});
    let (_vipd, admin) = VipdProcess::run_on_apps(dir.path(), &apps, &[], PATIENCE);
    let frontend = (LOCALHOST, port).into();
    assert!(
        support::eventually_async(PATIENCE, || async {
            roundtrip(frontend, b"hello").await.is_ok()
        })
        .await
    );
    roundtrip(frontend, b"hello").await.unwrap();
    // Both connections are counted once the relay closes them.
    assert!(
        support::eventually_async(PATIENCE, || async {
            let (_, m) = http_get(&format!("http://{admin}/metrics")).await;
            m.contains(&format!(
                "vipd_backend_connections_total{{backend=\"{}\",protocol=\"tcp\"}} 2",
                backend.addr
            ))
        })
        .await
    );

    let admin_arg = admin.to_string();
    let out = vipd_status(&["--admin", &admin_arg]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    let fe = lines
        .iter()
        .position(|l| l.starts_with("TCP "))
        .unwrap_or_else(|| panic!("no TCP frontend line:\n{stdout}"));
    assert_eq!(
        cells(lines[fe]),
        [
            "TCP",
            &format!("127.0.0.1:{port}"),
            "service_port",
            "bound",
            "0",
            "2",
            "/web"
        ],
        "{stdout}"
    );
    // "hello" each way, twice; the backend's tag line ("b1\n") comes back too.
    assert_eq!(
        cells(lines[fe + 1]),
        [
            "->",
            &backend.addr.to_string(),
            "up",
            "healthy",
            "0",
            "2",
            "10",
            "16",
            "web.1"
        ],
        "{stdout}"
    );

    let out = vipd_status(&["--admin", &format!("http://{admin}/"), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &json["frontends"][0];
    assert_eq!(f["listen"], format!("127.0.0.1:{port}"));
    assert_eq!(f["app"], "/web");
    assert_eq!(f["backends"][0]["address"], backend.addr.to_string());
    assert_eq!(f["backends"][0]["runtime"]["health"], "healthy");
    assert_eq!(f["backends"][0]["runtime"]["total"], 2);

    let out = vipd_status(&["--admin", &admin_arg, "--ready"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ready\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_ready_exits_1_while_a_frontend_cannot_bind() {
    // Something else holds the service port: vipd retries the bind and is not ready.
    let squatter = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let port = squatter.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let apps = serde_json::json!({"apps": [{
        "id": "/web",
        "portDefinitions": [{"port": port}],
        "tasks": [{"id": "web.1", "host": "127.0.0.1", "ports": [9], "state": "TASK_RUNNING"}],
    }]});
    let (vipd, admin) = VipdProcess::run_on_apps(dir.path(), &apps, &[], PATIENCE);
    let admin_arg = admin.to_string();
    let failed = support::eventually_async(PATIENCE, || async {
        let (code, body) = http_get(&format!("http://{admin}/readyz")).await;
        code == 503 && body.contains("failed to bind")
    })
    .await;
    assert!(failed, "log:\n{}", vipd.log().join("\n"));
    let out = tokio::task::spawn_blocking(move || vipd_status(&["--admin", &admin_arg, "--ready"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!("vipd status: http://{admin}/readyz answered 503 Service Unavailable: 1 frontend(s) failed to bind"),
    );
    drop(squatter);
}

#[test]
fn status_without_a_vipd_exits_1_with_one_line() {
    // Nothing listens on a port that was free a moment ago: the connect is refused.
    let admin = format!("127.0.0.1:{}", free_port(LOCALHOST));
    for json in [false, true] {
        let mut args = vec!["--admin", admin.as_str()];
        if json {
            args.push("--json");
        }
        let out = vipd_status(&args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!(
                "vipd status: no vipd answers at http://{admin}/v1/vips: connection refused (is vipd running, with this --admin-listen?)"
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_against_something_else_exits_1_with_one_line() {
    // An HTTP server that is not vipd: 404 for /v1/vips.
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let admin = addr.to_string();
    let out = tokio::task::spawn_blocking(move || vipd_status(&["--admin", &admin]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "vipd status: http://{addr}/v1/vips answered 404 Not Found, not 200"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_against_a_silent_port_times_out_with_one_line() {
    // Accepts (the kernel completes the handshake) but never answers.
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin = addr.to_string();
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        vipd_status(&["--admin", &admin, "--timeout", "300ms"])
    })
    .await
    .unwrap();
    drop(listener);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < PATIENCE);
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!("vipd status: no vipd answers at http://{addr}/v1/vips: no answer within 300ms"),
    );
}
