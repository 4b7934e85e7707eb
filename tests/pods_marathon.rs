//! Marathon pods end to end: a real vipd process following the fake Marathon (pods served on
//! `/v2/pods/::status`, pod events on the stream), forwarding TCP and UDP to real backends on
//! loopback through a pod endpoint's IP VIP.

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::daemon::{http_get, VipdProcess};
use support::fake_marathon::{app, apps_doc, status_update, wait_until, FakeMarathon};
use support::{free_port, read_tag, TaggedEchoServer, LOCALHOST, PATIENCE};
use tokio::net::{TcpStream, UdpSocket};

const VERSION: &str = "2024-01-01T00:00:00.000Z";
const I1: &str = "shop.instance-11111111-1111-1111-1111-111111111111";
const I2: &str = "shop.instance-22222222-2222-2222-2222-222222222222";

/// `PodStatus` of `/shop`: host networking, one container `web` whose endpoint `http`
/// (`["udp","tcp"]`) has the IP VIP `vip`; one instance per `(instance id, port)`.
fn shop(vip: SocketAddr, instances: &[(&str, u16)]) -> Value {
    let instances: Vec<Value> = instances
        .iter()
        .map(|(id, port)| {
            json!({
                "id": id, "status": "STABLE", "agentHostname": "127.0.0.1",
                "networks": [{"addresses": ["127.0.0.1"]}],
                "containers": [{
                    "name": "web", "status": "TASK_RUNNING", "conditions": [],
                    "containerId": format!("{id}.web.1"),
                    "endpoints": [{"name": "http", "allocatedHostPort": port}]
                }]
            })
        })
        .collect();
    json!([{
        "id": "/shop",
        "spec": {
            "id": "/shop", "version": VERSION,
            "containers": [{"name": "web", "endpoints": [
                {"name": "http", "hostPort": 0, "protocol": ["udp", "tcp"],
                 "labels": {"VIP_0": vip.to_string()}}
            ]}],
            "networks": [{"mode": "host"}]
        },
        "status": "STABLE",
        "instances": instances
    }])
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
            "--marathon-event-debounce",
            "50ms",
        ],
        &[("VIPD_LOG_LEVEL", "debug")],
    );
    let admin = vipd.admin_addr(PATIENCE).expect("admin address");
    (vipd, admin)
}

async fn tag_of(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    tokio::time::timeout(Duration::from_secs(2), read_tag(&mut s))
        .await
        .ok()?
        .ok()
}

async fn wait_for_tag(addr: SocketAddr, tag: &str) -> bool {
    support::eventually_async(PATIENCE, || async move {
        tag_of(addr).await.as_deref() == Some(tag)
    })
    .await
}

/// A UDP backend on `port` answering every datagram with `tag`.
async fn udp_tagged(port: u16, tag: &'static str) -> tokio::task::JoinHandle<()> {
    let sock = UdpSocket::bind((LOCALHOST, port)).await.expect("udp bind");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((_, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(tag.as_bytes(), from).await;
        }
    })
}

async fn udp_answer(vip: SocketAddr) -> Option<String> {
    let sock = UdpSocket::bind((LOCALHOST, 0)).await.ok()?;
    sock.send_to(b"ping", vip).await.ok()?;
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}

/// The backends `(address, state)` of the TCP frontend on `vip` in `/v1/vips`, and its owner
/// kind; `None` when there is no such frontend.
async fn vip_backends(
    admin: SocketAddr,
    vip: SocketAddr,
) -> Option<(String, Vec<(String, String)>)> {
    let (_, body) = http_get(&format!("http://{admin}/v1/vips")).await;
    let v: Value = serde_json::from_str(&body).ok()?;
    let f = v["frontends"]
        .as_array()?
        .iter()
        .find(|f| f["protocol"] == "tcp" && f["listen"] == vip.to_string())?;
    let backends = f["backends"]
        .as_array()?
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap_or_default().to_string(),
                b["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Some((f["owner_kind"].as_str()?.to_string(), backends))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_vip_forwards_tcp_and_udp_and_follows_the_pod_events() {
    let b1 = TaggedEchoServer::start("b1").await;
    let b2 = TaggedEchoServer::start("b2").await;
    let _u1 = udp_tagged(b1.addr.port(), "u1").await;
    let vip: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let fake = FakeMarathon::start(apps_doc(vec![])).await;
    fake.set_pods(shop(vip, &[(I1, b1.addr.port())]));
    let (vipd, admin) = start_vipd(&fake.url());

    // TCP and UDP through the pod endpoint's VIP.
    assert!(wait_for_tag(vip, "b1").await, "{}", vipd.log().join("\n"));
    let udp = support::poll_until(PATIENCE, || async { udp_answer(vip).await }).await;
    assert_eq!(udp.as_deref(), Some("u1"), "{}", vipd.log().join("\n"));
    assert_eq!(
        vip_backends(admin, vip).await.map(|(k, _)| k).as_deref(),
        Some("pod")
    );
    // The metrics say it too.
    let (_, metrics) = http_get(&format!("http://{admin}/metrics")).await;
    let frontend = format!("frontend=\"tcp:{vip}\"");
    assert!(
        metrics.lines().any(|l| l.starts_with("vipd_frontend_info{")
            && l.contains(&frontend)
            && l.contains("kind=\"vip\"")
            && l.contains("owner_kind=\"pod\"")
            && l.ends_with(" 1")),
        "no vipd_frontend_info for {frontend} with owner_kind=\"pod\" in:\n{metrics}"
    );

    // Synced: the stream is open and the full fetch its connect triggers has been served.
    wait_until("stream synced", || {
        fake.open_streams() >= 1 && fake.count("/v2/pods/::status") >= 2
    })
    .await;
    let apps_fetches = fake.count("/v2/apps");
    let pods_fetches = fake.count("/v2/pods/::status");

    // A new container's TASK_RUNNING: selectable at once, with no fetch at all.
    let mut running = status_update(
        "/shop",
        &format!("{I2}.web.1"),
        "TASK_RUNNING",
        "127.0.0.1",
        b2.addr.port(),
    );
    running["version"] = json!(VERSION);
    fake.send_event("status_update_event", &running);
    assert!(
        wait_for_tag(vip, "b2").await,
        "the new container never reached"
    );
    assert_eq!(fake.app_fetches(), 0, "a pod event fetched /v2/apps/<id>");
    assert_eq!(
        fake.count("/v2/apps"),
        apps_fetches,
        "a pod event fetched /v2/apps"
    );
    assert_eq!(
        fake.count("/v2/pods/::status"),
        pods_fetches,
        "a pod event fetched every pod"
    );
    assert_eq!(fake.pod_fetches(), 0, "the event carried everything");

    // TASK_KILLING drains: no new connections go to b2.
    let mut killing = status_update(
        "/shop",
        &format!("{I2}.web.1"),
        "TASK_KILLING",
        "127.0.0.1",
        b2.addr.port(),
    );
    killing["ports"] = json!([]);
    fake.send_event("status_update_event", &killing);
    let drained = support::poll_until(PATIENCE, || async {
        let (_, backends) = vip_backends(admin, vip).await?;
        backends
            .iter()
            .any(|(a, s)| a == &b2.addr.to_string() && s == "draining")
            .then_some(())
    })
    .await;
    assert!(drained.is_some(), "b2 never drained");
    let before = b2.connections();
    for _ in 0..6 {
        assert_eq!(tag_of(vip).await.as_deref(), Some("b1"));
    }
    assert_eq!(
        b2.connections(),
        before,
        "a draining backend got a connection"
    );

    // pod_deleted_event: the pod is fetched (404: gone) and its VIP goes with its backends.
    fake.set_pods(json!([]));
    fake.send_event(
        "pod_deleted_event",
        &json!({"clientIp": "10.0.0.1", "uri": "/v2/pods/shop", "eventType": "pod_deleted_event",
                "timestamp": "2024-01-01T00:00:02.000Z"}),
    );
    let gone = support::poll_until(PATIENCE, || async {
        vip_backends(admin, vip).await.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the deleted pod's VIP stayed");
    assert_eq!(fake.count("/v2/pods/shop::status"), 1);
    assert_eq!(fake.app_fetches(), 0, "a pod id was fetched as an app");
    assert!(support::wait_refused(vip).await, "the VIP still accepts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marathon_without_pods_support_still_serves_apps_and_says_so_once() {
    let b1 = TaggedEchoServer::start("b1").await;
    let port = free_port(LOCALHOST);
    let mut web = app(
        "/web",
        &[("web.instance-1._app.1", "127.0.0.1", b1.addr.port())],
    );
    web["portDefinitions"][0]["port"] = json!(port);
    let fake = FakeMarathon::start(apps_doc(vec![web])).await;
    let (vipd, _admin) = start_vipd(&fake.url());
    let frontend: SocketAddr = (LOCALHOST, port).into();
    assert!(
        wait_for_tag(frontend, "b1").await,
        "{}",
        vipd.log().join("\n")
    );
    // Another full sync (a reconnect): probed again, still no pods, not logged again.
    wait_until("first syncs", || fake.count("/v2/apps") >= 2).await;
    fake.cut_streams();
    wait_until("resync after the reconnect", || fake.count("/v2/apps") >= 3).await;
    wait_until("probed on every full sync", || {
        fake.count("HEAD /v2/pods") >= 3
    })
    .await;
    assert_eq!(fake.count("/v2/pods/::status"), 0);
    assert!(wait_for_tag(frontend, "b1").await);
    assert_eq!(
        vipd.count_log("no pods support"),
        1,
        "{}",
        vipd.log().join("\n")
    );
}
