//! `vipd run --mesos URL` end to end: a real vipd process subscribed to the fake Mesos master (a
//! real HTTP server streaming RecordIO over chunked encoding), forwarding to real backends on
//! loopback. VIPs here are IP VIPs on 127.0.0.1, so no address needs adding.

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::daemon::{http_get, VipdProcess};
use support::fake_mesos::{
    agent, framework, get_state, host_task, task_added, task_updated, FakeMesos,
};
use support::{free_port, read_tag, TaggedEchoServer, LOCALHOST, PATIENCE};
use tokio::net::TcpStream;

const FW: &str = "fw-marathon-0001";
const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.s3cr3t-Mesos-T0ken";

fn state(tasks: &[Value]) -> Value {
    get_state(
        tasks,
        &[framework(FW, "marathon")],
        &[agent("agent-1", "127.0.0.1")],
        &[],
    )
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

/// The tags 8 new connections reach.
async fn tags(addr: SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..8 {
        out.push(tag_of(addr).await.unwrap_or_default());
    }
    out.sort();
    out.dedup();
    out
}

async fn wait_for_tags(addr: SocketAddr, want: &[&str]) -> bool {
    support::eventually_async(PATIENCE, || async move { tags(addr).await == want }).await
}

fn start_vipd(extra: &[&str]) -> (VipdProcess, SocketAddr) {
    let mut args = vec![
        "run",
        "--bind-address",
        "127.0.0.1",
        "--admin-listen",
        "127.0.0.1:0",
        "--mesos-backoff-initial",
        "50ms",
        "--mesos-backoff-max",
        "200ms",
    ];
    args.extend_from_slice(extra);
    let vipd = VipdProcess::start_with_env(&args, &[("VIPD_LOG_LEVEL", "debug")]);
    let admin = vipd
        .admin_addr(PATIENCE)
        .unwrap_or_else(|| panic!("admin address: {}", vipd.log().join("\n")));
    (vipd, admin)
}

/// The value of the unlabelled sample `name` on `/metrics`.
async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let (code, body) = http_get(&format!("http://{admin}/metrics")).await;
    assert_eq!(code, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until `name` on `/metrics` satisfies `ok`.
async fn wait_metric(admin: SocketAddr, name: &str, ok: impl Fn(f64) -> bool) -> bool {
    support::poll_until(PATIENCE, || async {
        metric(admin, name).await.filter(|v| ok(*v))
    })
    .await
    .is_some()
}

/// The backends the admin API lists for `vip` (`address` → `state`).
async fn vip_backends(admin: SocketAddr, vip: SocketAddr) -> Vec<(String, String)> {
    let (_, body) = http_get(&format!("http://{admin}/v1/vips")).await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let list = v["frontends"]
        .as_array()
        .or(v.as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter(|f| f["listen"] == vip.to_string())
        .flat_map(|f| f["backends"].as_array().cloned().unwrap_or_default())
        .map(|b| {
            (
                b["address"].as_str().unwrap_or_default().to_string(),
                b["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_added_then_running_is_reachable_killing_drains_terminal_removes_unhealthy_ejects() {
    let b1 = TaggedEchoServer::start("b1").await;
    let b2 = TaggedEchoServer::start("b2").await;
    let vip: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let label = vip.to_string();
    let t1 = host_task(
        FW,
        "web.1",
        "agent-1",
        "TASK_RUNNING",
        b1.addr.port(),
        &label,
    );
    let fake = FakeMesos::start(state(&[t1])).await;
    fake.set_chunk(Some(7));
    let (vipd, admin) = start_vipd(&["--mesos", &fake.url()]);
    assert!(wait_for_tag(vip, "b1").await, "{}", vipd.log().join("\n"));

    // TASK_ADDED (staging) is no backend yet; TASK_UPDATED RUNNING makes it one.
    let t2 = host_task(
        FW,
        "web.2",
        "agent-1",
        "TASK_STAGING",
        b2.addr.port(),
        &label,
    );
    fake.send_event(&task_added(&t2));
    fake.send_event(&task_updated(FW, "web.2", "TASK_RUNNING", 2.0, None));
    assert!(
        wait_for_tags(vip, &["b1", "b2"]).await,
        "{}",
        vipd.log().join("\n")
    );

    // Health false ejects b2 from new connections.
    fake.send_event(&task_updated(FW, "web.2", "TASK_RUNNING", 3.0, Some(false)));
    assert!(wait_for_tags(vip, &["b1"]).await);
    fake.send_event(&task_updated(FW, "web.2", "TASK_RUNNING", 4.0, Some(true)));
    assert!(wait_for_tags(vip, &["b1", "b2"]).await);

    // KILLING drains: listed as draining, no new connections; an open one stays.
    let mut open = loop {
        let mut s = TcpStream::connect(vip).await.unwrap();
        if read_tag(&mut s).await.unwrap() == "b2" {
            break s;
        }
    };
    fake.send_event(&task_updated(FW, "web.2", "TASK_KILLING", 5.0, None));
    assert!(
        support::eventually_async(PATIENCE, || async {
            vip_backends(admin, vip)
                .await
                .contains(&(b2.addr.to_string(), "draining".into()))
        })
        .await,
        "{:?}",
        vip_backends(admin, vip).await
    );
    assert_eq!(tags(vip).await, ["b1"]);
    support::echo_once(&mut open, b"still here").await.unwrap();

    // A terminal state removes it.
    fake.send_event(&task_updated(FW, "web.2", "TASK_KILLED", 6.0, None));
    assert!(
        support::eventually_async(PATIENCE, || async {
            vip_backends(admin, vip).await == [(b1.addr.to_string(), "up".to_string())]
        })
        .await,
        "{:?}",
        vip_backends(admin, vip).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_redirect_resends_the_token_and_it_never_leaks() {
    let b1 = TaggedEchoServer::start("b1").await;
    let vip: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let t1 = host_task(
        FW,
        "web.1",
        "agent-1",
        "TASK_RUNNING",
        b1.addr.port(),
        &vip.to_string(),
    );
    let leader = FakeMesos::start(state(&[t1])).await;
    leader.require_authorization(&format!("token={TOKEN}"));
    let follower = FakeMesos::start(state(&[])).await;
    follower.redirect_to(Some(leader.addr));
    let dir = tempdir("token");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (vipd, admin) = start_vipd(&[
        "--mesos",
        &follower.url(),
        "--mesos-token-file",
        token_file.to_str().unwrap(),
    ]);
    assert!(wait_for_tag(vip, "b1").await, "{}", vipd.log().join("\n"));
    let f = follower.calls();
    assert_eq!(
        f[0].authorization.as_deref(),
        Some(&*format!("token={TOKEN}"))
    );
    let l = leader.calls();
    assert_eq!(l[0].path, "/master/api/v1");
    assert_eq!(
        l[0].authorization.as_deref(),
        Some(&*format!("token={TOKEN}"))
    );
    assert_eq!(l[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(l[0].body, r#"{"type":"SUBSCRIBE"}"#);
    for path in ["/metrics", "/v1/config", "/v1/vips", "/"] {
        let (_, body) = http_get(&format!("http://{admin}{path}")).await;
        assert!(!body.contains("s3cr3t"), "{path} shows the token");
    }
    assert!(vipd.wait_for_log("following its redirect", PATIENCE));
    // The token is re-read on every connect: a rotated one is sent at the next subscribe.
    let rotated = "eyJhbGciOiJIUzI1NiJ9.r0tated-s3cr3t";
    std::fs::write(&token_file, rotated).unwrap();
    leader.require_authorization(&format!("token={rotated}"));
    let before = leader.subscriptions();
    leader.cut_streams();
    assert!(
        support::eventually_blocking(PATIENCE, || leader.subscriptions() > before),
        "{}",
        vipd.log().join("\n")
    );
    assert_eq!(
        leader.calls().last().unwrap().authorization.as_deref(),
        Some(&*format!("token={rotated}"))
    );
    assert!(
        !vipd.log().join("\n").contains("s3cr3t"),
        "the log shows the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_the_url_is_sent_and_redacted() {
    let b1 = TaggedEchoServer::start("b1").await;
    let vip: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let t1 = host_task(
        FW,
        "web.1",
        "agent-1",
        "TASK_RUNNING",
        b1.addr.port(),
        &vip.to_string(),
    );
    let fake = FakeMesos::start(state(&[t1])).await;
    // base64("vipd:pa55-Secret-w0rd")
    fake.require_authorization("Basic dmlwZDpwYTU1LVNlY3JldC13MHJk");
    let (vipd, admin) = start_vipd(&["--mesos", &fake.url_with("vipd", "pa55-Secret-w0rd")]);
    assert!(wait_for_tag(vip, "b1").await, "{}", vipd.log().join("\n"));
    for path in ["/metrics", "/v1/config"] {
        let (_, body) = http_get(&format!("http://{admin}{path}")).await;
        assert!(!body.contains("pa55-Secret"), "{path} shows the password");
    }
    assert!(!vipd.log().join("\n").contains("pa55-Secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_then_a_leader_and_a_silent_stream_reconnects_keeping_the_table() {
    let b1 = TaggedEchoServer::start("b1").await;
    let vip: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let t1 = host_task(
        FW,
        "web.1",
        "agent-1",
        "TASK_RUNNING",
        b1.addr.port(),
        &vip.to_string(),
    );
    let fake = FakeMesos::start(state(&[t1])).await;
    fake.set_unavailable(true);
    fake.set_heartbeat(Duration::from_millis(100));
    let (vipd, admin) = start_vipd(&["--mesos", &fake.url()]);
    assert!(
        vipd.wait_for_log("answered HTTP 503", PATIENCE),
        "{}",
        vipd.log().join("\n")
    );
    assert!(wait_metric(admin, "vipd_mesos_stream_failures_total", |v| v >= 1.0).await);
    assert_eq!(metric(admin, "vipd_mesos_connected").await, Some(0.0));
    fake.set_unavailable(false);
    assert!(wait_for_tag(vip, "b1").await, "{}", vipd.log().join("\n"));
    assert_eq!(metric(admin, "vipd_mesos_connected").await, Some(1.0));
    assert_eq!(metric(admin, "vipd_mesos_tasks").await, Some(1.0));
    assert!(metric(admin, "vipd_mesos_records_total").await >= Some(1.0));
    let before = fake.subscriptions();
    // Silent: no heartbeat for 3 x 100 ms -> vipd drops the stream and subscribes again.
    fake.set_silent(true);
    assert!(vipd.wait_for_log("3 x heartbeat_interval_seconds", PATIENCE));
    assert_eq!(tag_of(vip).await.as_deref(), Some("b1"), "the table stays");
    fake.set_silent(false);
    assert!(
        support::eventually_blocking(PATIENCE, || fake.subscriptions() > before),
        "never resubscribed"
    );
    assert!(wait_metric(admin, "vipd_mesos_subscriptions_total", |v| v >= 2.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_length_line_reconnects_and_the_table_stays() {
    let b1 = TaggedEchoServer::start("b1").await;
    let vip: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let t1 = host_task(
        FW,
        "web.1",
        "agent-1",
        "TASK_RUNNING",
        b1.addr.port(),
        &vip.to_string(),
    );
    let fake = FakeMesos::start(state(&[t1])).await;
    let (vipd, _admin) = start_vipd(&["--mesos", &fake.url()]);
    assert!(wait_for_tag(vip, "b1").await, "{}", vipd.log().join("\n"));
    let before = fake.subscriptions();
    fake.send_raw("12x\n{}");
    assert!(
        vipd.wait_for_log("bad RecordIO length line", PATIENCE),
        "{}",
        vipd.log().join("\n")
    );
    assert!(support::eventually_blocking(PATIENCE, || fake
        .subscriptions()
        > before));
    assert_eq!(tag_of(vip).await.as_deref(), Some("b1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_removed_and_a_framework_renamed() {
    let b1 = TaggedEchoServer::start("b1").await;
    let b2 = TaggedEchoServer::start("b2").await;
    let vip: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let label = vip.to_string();
    let mut named = host_task(
        FW,
        "api.1",
        "agent-1",
        "TASK_RUNNING",
        b1.addr.port(),
        "/api:18080",
    );
    named["task_id"]["value"] = json!("api.1");
    let s = get_state(
        &[
            host_task(
                FW,
                "web.1",
                "agent-1",
                "TASK_RUNNING",
                b1.addr.port(),
                &label,
            ),
            host_task(
                FW,
                "web.2",
                "agent-2",
                "TASK_RUNNING",
                b2.addr.port(),
                &label,
            ),
            named,
        ],
        &[framework(FW, "marathon")],
        &[agent("agent-1", "127.0.0.1"), agent("agent-2", "localhost")],
        &[],
    );
    let fake = FakeMesos::start(s).await;
    let (vipd, admin) = start_vipd(&["--mesos", &fake.url(), "--vip-cidr", "127.77.0.0/16"]);
    assert!(
        wait_for_tags(vip, &["b1", "b2"]).await,
        "{}",
        vipd.log().join("\n")
    );
    fake.send_event(
        &json!({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": "agent-2"}}}),
    );
    assert!(wait_for_tags(vip, &["b1"]).await);
    let vips = || async {
        let (_, body) = http_get(&format!("http://{admin}/v1/vips")).await;
        body
    };
    assert!(vips()
        .await
        .contains("api.marathon.l4lb.thisdcos.directory"));
    fake.send_event(
        &json!({"type": "FRAMEWORK_UPDATED", "framework_updated": {"framework": {
        "framework_info": {"id": {"value": FW}, "name": "marathon-user"}, "active": true}}}),
    );
    assert!(
        support::eventually_async(PATIENCE, || async {
            vips()
                .await
                .contains("api.marathon-user.l4lb.thisdcos.directory")
        })
        .await,
        "{}",
        vips().await
    );
    assert!(!vips()
        .await
        .contains("api.marathon.l4lb.thisdcos.directory"));
    assert_eq!(tags(vip).await, ["b1"]);
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "vipd-mesos-{tag}-{}-{}",
        std::process::id(),
        free_port(LOCALHOST)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_down_at_start_serves_the_state_dir() {
    let b1 = TaggedEchoServer::start("b1").await;
    let vip: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let t1 = host_task(
        FW,
        "web.1",
        "agent-1",
        "TASK_RUNNING",
        b1.addr.port(),
        &vip.to_string(),
    );
    let dir = tempdir("state");
    let dir_s = dir.to_str().unwrap().to_string();
    {
        let fake = FakeMesos::start(state(&[t1])).await;
        let (mut vipd, _) = start_vipd(&["--mesos", &fake.url(), "--state-dir", &dir_s]);
        assert!(wait_for_tag(vip, "b1").await, "{}", vipd.log().join("\n"));
        assert!(support::eventually_blocking(PATIENCE, || dir
            .join("mesos-state.json")
            .exists()));
        vipd.signal(libc::SIGTERM);
        assert!(vipd.wait_exit(PATIENCE).is_some());
    }
    // The master is gone: its port refuses.
    let down = support::refusing_addr(LOCALHOST);
    let url = format!("http://{down}/api/v1");
    let (vipd, admin) = start_vipd(&["--mesos", &url, "--state-dir", &dir_s]);
    assert!(wait_for_tag(vip, "b1").await, "{}", vipd.log().join("\n"));
    assert!(vipd.wait_for_log("serving the saved Mesos state", PATIENCE));
    assert_eq!(
        metric(admin, "vipd_mesos_serving_stale_state").await,
        Some(1.0)
    );
    assert_eq!(metric(admin, "vipd_mesos_connected").await, Some(0.0));
    assert_eq!(metric(admin, "vipd_mesos_tasks").await, Some(1.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_recovered_agents_keep_their_backends_until_the_timeout() {
    let b1 = TaggedEchoServer::start("b1").await;
    let vip: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let t1 = host_task(
        FW,
        "web.1",
        "agent-1",
        "TASK_RUNNING",
        b1.addr.port(),
        &vip.to_string(),
    );
    let fake = FakeMesos::start(state(&[t1])).await;
    let (vipd, admin) = start_vipd(&["--mesos", &fake.url(), "--mesos-recovery-timeout", "2s"]);
    assert!(wait_for_tag(vip, "b1").await, "{}", vipd.log().join("\n"));
    // Failover: the new leader lists agent-1 as recovered and knows none of its tasks.
    fake.set_state(get_state(
        &[],
        &[framework(FW, "marathon")],
        &[],
        &[json!({"id": {"value": "agent-1"}, "hostname": "127.0.0.1"})],
    ));
    let before = fake.subscriptions();
    fake.cut_streams();
    assert!(support::eventually_blocking(PATIENCE, || fake
        .subscriptions()
        > before));
    assert!(vipd.wait_for_log("keeping their last known tasks", PATIENCE));
    assert_eq!(
        tag_of(vip).await.as_deref(),
        Some("b1"),
        "kept through the gate"
    );
    // The agent never comes back: after the timeout the VIP has no backend.
    assert!(
        support::eventually_async(PATIENCE, || async {
            vip_backends(admin, vip).await.is_empty()
        })
        .await,
        "{:?}",
        vip_backends(admin, vip).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_marathon_service_ports_come_from_marathon_and_vips_from_mesos_alone() {
    use support::fake_marathon::FakeMarathon;
    let b1 = TaggedEchoServer::start("b1").await;
    let b2 = TaggedEchoServer::start("b2").await;
    let b3 = TaggedEchoServer::start("b3").await;
    let vip: SocketAddr = (LOCALHOST, free_port(LOCALHOST)).into();
    let service_port = free_port(LOCALHOST);
    let frontend: SocketAddr = (LOCALHOST, service_port).into();
    // Marathon: /web on the service port with the same VIP label, tasks b1 and b3.
    let task = |id: &str, b: SocketAddr| {
        json!({"id": id, "appId": "/web", "host": "127.0.0.1", "ports": [b.port()],
               "state": "TASK_RUNNING", "ipAddresses": [], "healthCheckResults": [],
               "version": "2024-01-01T00:00:00.000Z"})
    };
    let apps = json!({"apps": [{
        "id": "/web", "version": "2024-01-01T00:00:00.000Z", "networks": [{"mode": "host"}],
        "portDefinitions": [{"port": service_port, "protocol": "tcp", "name": "http",
                             "labels": {"VIP_0": vip.to_string()}}],
        "healthChecks": [], "tasks": [task("web.1", b1.addr), task("web.3", b3.addr)]}]});
    let marathon = FakeMarathon::start(apps).await;
    // Mesos: b1 (the same task) and b2 (a task of another framework on the same VIP).
    let s = get_state(
        &[
            host_task(
                FW,
                "web.1",
                "agent-1",
                "TASK_RUNNING",
                b1.addr.port(),
                &vip.to_string(),
            ),
            host_task(
                "fw-h",
                "hello-0",
                "agent-1",
                "TASK_RUNNING",
                b2.addr.port(),
                &vip.to_string(),
            ),
        ],
        &[framework(FW, "marathon"), framework("fw-h", "hello-world")],
        &[agent("agent-1", "127.0.0.1")],
        &[],
    );
    let mesos = FakeMesos::start(s).await;
    let (vipd, admin) = start_vipd(&[
        "--marathon",
        &marathon.url(),
        "--marathon-backoff-initial",
        "50ms",
        "--mesos",
        &mesos.url(),
    ]);
    assert!(
        wait_for_tags(frontend, &["b1", "b3"]).await,
        "{}",
        vipd.log().join("\n")
    );
    assert!(
        wait_for_tags(vip, &["b1", "b2"]).await,
        "{}",
        vipd.log().join("\n")
    );
    let mut listed = vip_backends(admin, vip).await;
    listed.sort();
    let mut want = vec![
        (b1.addr.to_string(), "up".to_string()),
        (b2.addr.to_string(), "up".to_string()),
    ];
    want.sort();
    assert_eq!(listed, want, "VIP backends from Mesos alone, each once");
}
