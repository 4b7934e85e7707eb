//! `vipd run --marathon URL` end to end: a real vipd process following the fake Marathon (a real
//! HTTP server speaking SSE), forwarding to real backends on loopback.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::daemon::{http_get, VipdProcess};
use support::fake_marathon::{status_update, FakeMarathon, Mode};
use support::{free_port, read_tag, TaggedEchoServer, LOCALHOST, PATIENCE};
use tokio::net::TcpStream;

const PASSWORD: &str = "s3cr3t-Pa55word";
const U1: &str = "11111111-1111-1111-1111-111111111111";
const U2: &str = "22222222-2222-2222-2222-222222222222";

fn task_id(u: &str) -> String {
    format!("web.instance-{u}._app.1")
}

/// The 1.10 shape of one host-mode app on `service_port` with the given backends.
fn apps(service_port: u16, backends: &[(&str, SocketAddr)]) -> serde_json::Value {
    let tasks: Vec<_> = backends
        .iter()
        .map(|(u, b)| {
            serde_json::json!({
                "id": task_id(u), "appId": "/web", "host": b.ip().to_string(), "ports": [b.port()],
                "state": "TASK_RUNNING", "ipAddresses": [], "healthCheckResults": [],
                "version": "2024-01-01T00:00:00.000Z"
            })
        })
        .collect();
    serde_json::json!({"apps": [{
        "id": "/web", "version": "2024-01-01T00:00:00.000Z",
        "networks": [{"mode": "host"}],
        "portDefinitions": [{"port": service_port, "protocol": "tcp", "name": "http"}],
        "healthChecks": [], "tasks": tasks,
    }]})
}

async fn tag_of(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    tokio::time::timeout(Duration::from_secs(2), read_tag(&mut s))
        .await
        .ok()?
        .ok()
}

/// Connects until a backend with `tag` answers (round-robin reaches every backend).
async fn wait_for_tag(addr: SocketAddr, tag: &str) -> bool {
    support::eventually_async(PATIENCE, || async move {
        tag_of(addr).await.as_deref() == Some(tag)
    })
    .await
}

fn start_vipd(url: &str) -> (VipdProcess, SocketAddr) {
    let vipd = VipdProcess::start_with_env(
        &[
            "run",
            "--marathon",
            url,
            "--bind-address",
            "127.0.0.1",
            "--admin-listen",
            "127.0.0.1:0",
            "--marathon-backoff-initial",
            "50ms",
            "--marathon-backoff-max",
            "200ms",
        ],
        &[("VIPD_LOG_LEVEL", "debug")],
    );
    let admin = vipd.admin_addr(PATIENCE).expect("admin address");
    (vipd, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_running_event_reaches_the_data_plane_without_a_refetch_and_no_secret_leaks() {
    let b1 = TaggedEchoServer::start("b1").await;
    let b2 = TaggedEchoServer::start("b2").await;
    let port = free_port(LOCALHOST);
    let frontend: SocketAddr = (LOCALHOST, port).into();
    let fake = FakeMarathon::start(apps(port, &[(U1, b1.addr)])).await;
    fake.require_basic("vipd", PASSWORD);
    let (vipd, admin) = start_vipd(&fake.url_with("vipd", PASSWORD));

    assert!(
        wait_for_tag(frontend, "b1").await,
        "{}",
        vipd.log().join("\n")
    );
    // Synced: the stream is open and the fetch that follows its connect has been served.
    support::fake_marathon::wait_until("stream synced", || {
        fake.open_streams() >= 1 && fake.count("/v2/apps") >= 2
    })
    .await;
    let full_fetches = fake.count("/v2/apps");

    fake.send_event(
        "status_update_event",
        &status_update(
            "/web",
            &task_id(U2),
            "TASK_RUNNING",
            "127.0.0.1",
            b2.addr.port(),
        ),
    );
    assert!(wait_for_tag(frontend, "b2").await, "new task never reached");
    assert_eq!(
        fake.count("/v2/apps"),
        full_fetches,
        "the event caused a full re-fetch"
    );
    assert_eq!(fake.app_fetches(), 0, "the event caused an app fetch");

    // TASK_KILLING drains: no new connections go to b2.
    fake.send_event(
        "status_update_event",
        &status_update(
            "/web",
            &task_id(U2),
            "TASK_KILLING",
            "127.0.0.1",
            b2.addr.port(),
        ),
    );
    let url = format!("http://{admin}/v1/vips");
    support::fake_marathon::wait_until("draining", || {
        // Blocking HTTP from a sync closure would stall; read the table via the log instead.
        vipd.count_log("published table") >= 3
    })
    .await;
    let before = b2.connections();
    for _ in 0..6 {
        assert_eq!(tag_of(frontend).await.as_deref(), Some("b1"));
    }
    assert_eq!(
        b2.connections(),
        before,
        "a draining backend got a connection"
    );
    let (_, vips) = http_get(&url).await;
    assert!(vips.contains("\"draining\""), "{vips}");

    // The password appears nowhere an operator can look.
    let (_, config) = http_get(&format!("http://{admin}/v1/config")).await;
    let (_, metrics) = http_get(&format!("http://{admin}/metrics")).await;
    assert!(config.contains("marathon"), "{config}");
    for (what, text) in [
        ("/v1/config", config),
        ("/metrics", metrics),
        ("/v1/vips", vips),
        ("logs", vipd.log().join("\n")),
    ] {
        assert!(!text.contains(PASSWORD), "password leaked in {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_failing_keeps_the_last_good_table_serving() {
    let b1 = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    let frontend: SocketAddr = (LOCALHOST, port).into();
    let fake = FakeMarathon::start(apps(port, &[(U1, b1.addr)])).await;
    let (vipd, admin) = start_vipd(&fake.url());
    assert!(wait_for_tag(frontend, "b1").await);

    for mode in [Mode::Error500, Mode::Garbage, Mode::Unauthorized] {
        fake.set_api_mode(mode);
        fake.set_events_mode(mode);
        fake.cut_streams();
        let errors_before = sync_errors(&http_get(&format!("http://{admin}/metrics")).await.1);
        // vipd notices (its sync errors count up while it retries), and keeps serving the last
        // good table.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (_, m) = http_get(&format!("http://{admin}/metrics")).await;
            if m.contains("vipd_source_sse_connected 0") && sync_errors(&m) > errors_before {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{mode:?} not noticed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(tag_of(frontend).await.as_deref(), Some("b1"), "{mode:?}");
    }
    assert!(
        vipd.count_log("published table") == 1,
        "a failure published a table:\n{}",
        vipd.log().join("\n")
    );
}

/// The sum of `vipd_source_sync_errors_total` over its kinds.
fn sync_errors(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("vipd_source_sync_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
