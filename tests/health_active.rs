//! Active health checks through real sockets and a real checker task: a backend down from the
//! start never gets a client connection and joins after its first successful probe; HTTP probes
//! mark 500 down and 200/302 up; the real binary with `--active-health-checks` never routes to a
//! dead backend.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::daemon::VipdProcess;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use vipd::balance::{ActiveConfig, HealthConfig};
use vipd::health::ActiveState;

fn active(interval_ms: u64, rise: u32, fall: u32) -> ActiveConfig {
    ActiveConfig {
        enabled: true,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(500),
        rise,
        fall,
    }
}

/// A harness with the active checker running next to it.
fn start(active: ActiveConfig) -> (Harness, CancellationToken) {
    let h = Harness::with_health(
        test_config(),
        HealthConfig {
            active,
            ..HealthConfig::default()
        },
    );
    let stop = CancellationToken::new();
    vipd::control::checker::spawn(
        h.reader.clone(),
        h.dataplane.backends(),
        active,
        stop.clone(),
    );
    (h, stop)
}

fn verdict(h: &Harness, addr: SocketAddr) -> ActiveState {
    h.backend_stats(addr).active_health
}

#[tokio::test]
async fn a_backend_down_from_the_start_never_gets_a_connection_and_joins_after_a_probe() {
    init_tracing();
    let good = TaggedEchoServer::start("good").await;
    let late = refusing_addr(LOCALHOST);
    let (mut h, stop) = start(active(50, 2, 3));
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(good.addr), up(late)])]));
    h.wait_bound(listen).await;
    assert!(eventually(PATIENCE, || verdict(&h, good.addr) == ActiveState::Up).await);
    for _ in 0..20 {
        assert_eq!(roundtrip(listen, b"x").await.unwrap(), "good");
    }
    let s = h.backend_stats(late);
    assert_eq!((s.total, s.failures()), (0, 0), "never even tried: {s:?}");
    assert_ne!(s.active_health, ActiveState::Up);

    // It comes up: it joins once a probe succeeds.
    let listener = TcpListener::bind(late).await.expect("rebind");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"late\n").await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    assert!(eventually(PATIENCE, || verdict(&h, late) == ActiveState::Up).await);
    let joined = eventually_async(PATIENCE, || async {
        roundtrip(listen, b"x").await.unwrap() == "late"
    })
    .await;
    assert!(joined);
    stop.cancel();
}

/// An HTTP-ish backend: a request line starting with `GET ` gets an HTTP response with the
/// current `status`; anything else is client traffic: `<tag>\n`, then echo. Counts the client
/// (non-probe) connections.
struct HttpBackend {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    clients: Arc<AtomicUsize>,
}

impl HttpBackend {
    async fn start(tag: &'static str, status: u16) -> HttpBackend {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let clients = Arc::new(AtomicUsize::new(0));
        let (st, cl) = (status.clone(), clients.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (st, cl) = (st.clone(), cl.clone());
                tokio::spawn(async move {
                    let mut s = BufReader::new(s);
                    let mut line = String::new();
                    if s.read_line(&mut line).await.is_err() {
                        return;
                    }
                    if line.starts_with("GET /health ") {
                        let code = st.load(Ordering::SeqCst);
                        let _ = s
                            .get_mut()
                            .write_all(
                                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n")
                                    .as_bytes(),
                            )
                            .await;
                        return;
                    }
                    cl.fetch_add(1, Ordering::SeqCst);
                    let _ = s.get_mut().write_all(format!("{tag}\n").as_bytes()).await;
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest).await;
                });
            }
        });
        HttpBackend {
            addr,
            status,
            clients,
        }
    }
}

/// One client connection: sends a line, reads the tag.
async fn client_tag(listen: SocketAddr) -> String {
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(b"hello\n").await.unwrap();
    within("tag", read_tag(&mut s)).await.unwrap()
}

#[tokio::test]
async fn http_probes_mark_500_down_and_200_or_302_up() {
    init_tracing();
    let ok = HttpBackend::start("ok", 200).await;
    let redirect = HttpBackend::start("redirect", 302).await;
    let broken = HttpBackend::start("broken", 500).await;
    let (mut h, stop) = start(active(50, 2, 1));
    let listen = free_addr(LOCALHOST);
    let mut fe = frontend(
        listen,
        vec![up(ok.addr), up(redirect.addr), up(broken.addr)],
    );
    // As the builder maps a Marathon HTTP health check of this port.
    fe.options = vipd::table::PortOptions::from_pairs([
        ("probe", "http"),
        ("probe_path", "/health"),
        ("probe_interval_s", "0.05"),
    ])
    .unwrap();
    h.publish(table(vec![fe]));
    h.wait_bound(listen).await;
    let settled = eventually(PATIENCE, || {
        verdict(&h, ok.addr) == ActiveState::Up
            && verdict(&h, redirect.addr) == ActiveState::Up
            && verdict(&h, broken.addr) == ActiveState::Down
    })
    .await;
    assert!(
        settled,
        "{:?}",
        [ok.addr, redirect.addr, broken.addr].map(|a| verdict(&h, a))
    );
    assert_eq!(
        h.backend_stats(broken.addr)
            .health_reason
            .map(|r| r.as_str()),
        Some("probe_status")
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..12 {
        seen.insert(client_tag(listen).await);
    }
    assert_eq!(
        seen,
        ["ok", "redirect"].map(String::from).into_iter().collect()
    );
    assert_eq!(broken.clients.load(Ordering::SeqCst), 0);
    // Fixed: back after `rise` good probes.
    broken.status.store(200, Ordering::SeqCst);
    assert!(eventually(PATIENCE, || verdict(&h, broken.addr) == ActiveState::Up).await);
    let back = eventually_async(PATIENCE, || async { client_tag(listen).await == "broken" }).await;
    assert!(back);
    stop.cancel();
}

/// A host-mode app with one service port and the given backends.
fn apps_doc(service_port: u16, backends: &[SocketAddr]) -> String {
    let tasks: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            serde_json::json!({
                "id": format!("web.instance-{i:08}-0000-0000-0000-000000000000._app.1"),
                "host": b.ip().to_string(),
                "ports": [b.port()],
                "state": "TASK_RUNNING",
            })
        })
        .collect();
    serde_json::json!({"apps": [{
        "id": "/web",
        "portDefinitions": [{"port": service_port, "protocol": "tcp"}],
        "tasks": tasks,
    }]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vipd_run_with_active_checks_never_routes_to_a_dead_backend() {
    let good = TaggedEchoServer::start("good").await;
    let dead = refusing_addr(LOCALHOST);
    let port = free_port(LOCALHOST);
    let listen: SocketAddr = (LOCALHOST, port).into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, apps_doc(port, &[good.addr, dead])).unwrap();
    let vipd = VipdProcess::start(&[
        "run",
        "--apps",
        path.to_str().unwrap(),
        "--bind-address",
        "127.0.0.1",
        "--worker-threads",
        "2",
        "--admin-listen",
        "127.0.0.1:0",
        "--active-health-checks",
        "--probe-interval",
        "100ms",
        "--probe-fall",
        "1",
        "--log-level",
        "vipd=debug",
    ]);
    let listening = format!("frontend=tcp:{listen}");
    assert!(
        eventually(PATIENCE, || vipd
            .log()
            .iter()
            .any(|l| l.contains("listening") && l.contains(&listening)))
        .await,
        "{:#?}",
        vipd.log()
    );
    let good_up = format!("backend={}", good.addr);
    let probed = eventually(PATIENCE, || {
        vipd.log()
            .iter()
            .any(|l| l.contains("backend probe up") && l.contains(&good_up))
    })
    .await;
    assert!(probed, "no probe-up line: {:#?}", vipd.log());
    let dead_down = format!("backend={dead}");
    assert!(
        eventually(PATIENCE, || {
            vipd.log()
                .iter()
                .any(|l| l.contains("backend probe down") && l.contains(&dead_down))
        })
        .await
    );
    for _ in 0..20 {
        assert_eq!(roundtrip(listen, b"x").await.unwrap(), "good");
    }
    assert_eq!(vipd.count_log("connect failed"), 0, "{:#?}", vipd.log());
    // (The good backend's connection count also includes the TCP probes.)
    assert!(good.connections() >= 20);
}
