//! Local faults are not backend faults (issue 21): a data plane out of file descriptors must not
//! eject a healthy backend, over TCP or UDP.
//!
//! Each parent test re-executes this test binary as a child process that runs only its ignored
//! `*_child` test (which does nothing unless its environment variable is set). The child starts
//! a data plane, lowers its own RLIMIT_NOFILE so that only a few descriptors are left, and answers
//! `STATS`/`EXIT` on stdin. The parent exhausts those descriptors (idle TCP connections, or UDP
//! flows), keeps trying new connections or flows for a while, then frees the descriptors and
//! checks: no backend ejected, `/v1/vips` shows every backend healthy, the frontend's
//! `vipd_frontend_local_failures_total` moved, and a new connection or flow succeeds within a
//! second. The lower limit only ever applies to the child, which is killed by PID if it lingers.
#![cfg(target_os = "linux")]

mod support;
mod udp_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::child::{self, expect_line, leave_only_spare_fds, ChildTest, Lines};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use udp_support::*;
use vipd::admin::{vips_json, AdminState};
use vipd::dataplane::{DataplaneConfig, RelayMode};
use vipd::metrics::{DataplaneCollector, Metrics};
use vipd::table::FrontendKey;

const TCP_CHILD_ENV: &str = "VIPD_LOCAL_FAULTS_TCP_BACKEND";
const UDP_CHILD_ENV: &str = "VIPD_LOCAL_FAULTS_UDP_BACKEND";
/// Idle proxied TCP connections (two descriptors each) that exhaust the TCP child.
const IDLE_TCP: usize = 2;
/// UDP flows (one upstream socket each) that exhaust the UDP child.
const UDP_FLOWS: usize = 2;
/// New connections or flows tried while the child is out of descriptors.
const TRIES: usize = 12;

/// What a child reports: `STATS <local failures> <ejections> <all healthy in /v1/vips 0|1>
/// <local-failure metric> <udp flows active>`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stats {
    local_failures: u64,
    ejections: u64,
    all_healthy: bool,
    metric: f64,
    flows_active: u64,
}

async fn stats(stdin: &mut tokio::process::ChildStdin, lines: &mut Lines) -> Stats {
    stdin.write_all(b"STATS\n").await.unwrap();
    let line = expect_line(lines, "STATS").await;
    let f: Vec<&str> = line.split_whitespace().collect();
    Stats {
        local_failures: f[0].parse().unwrap(),
        ejections: f[1].parse().unwrap(),
        all_healthy: f[2] == "1",
        metric: f[3].parse().unwrap(),
        flows_active: f[4].parse().unwrap(),
    }
}

fn assert_no_backend_fault(s: &Stats) {
    assert!(s.local_failures >= TRIES as u64 / 2, "{s:?}");
    assert_eq!(s.metric, s.local_failures as f64, "exported: {s:?}");
    assert_eq!(s.ejections, 0, "no backend ejected: {s:?}");
    assert!(s.all_healthy, "/v1/vips shows every backend healthy: {s:?}");
}

#[tokio::test]
async fn tcp_connects_failing_for_lack_of_descriptors_never_eject_a_backend() {
    init_tracing();
    let backend = TaggedEchoServer::start("a").await;
    let ChildTest {
        mut child,
        mut stdin,
        mut lines,
    } = child::spawn("tcp_child", (TCP_CHILD_ENV, &backend.addr.to_string()));
    let listen: SocketAddr = expect_line(&mut lines, "READY").await.parse().unwrap();

    // Idle connections take every descriptor but one.
    let mut idle = Vec::new();
    for _ in 0..IDLE_TCP {
        let mut c = TcpStream::connect(listen).await.unwrap();
        assert_eq!(within("idle tag", read_tag(&mut c)).await.unwrap(), "a");
        idle.push(c);
    }
    // Each new connection is accepted with the last descriptor; its connect to the backend
    // fails with EMFILE, so it is closed without a tag.
    for _ in 0..TRIES {
        let mut c = TcpStream::connect(listen).await.unwrap();
        assert!(within("refused", read_tag(&mut c)).await.is_err());
    }
    let s = stats(&mut stdin, &mut lines).await;
    assert_no_backend_fault(&s);

    // Descriptors come back: new connections are served within a second.
    drop(idle);
    let freed = Instant::now();
    let served = eventually_async(Duration::from_secs(1), || async {
        roundtrip(listen, b"back").await.is_ok_and(|t| t == "a")
    })
    .await;
    assert!(served, "not served within 1 s ({:?})", freed.elapsed());
    assert_no_backend_fault(&stats(&mut stdin, &mut lines).await);

    stdin.write_all(b"EXIT\n").await.unwrap();
    let status = within("child exit", child.wait()).await.unwrap();
    assert!(status.success(), "child failed: {status}");
}

#[tokio::test]
async fn udp_flows_failing_for_lack_of_descriptors_never_eject_a_backend() {
    init_tracing();
    let backend = UdpServer::start("u", Reply::Tagged).await;
    let ChildTest {
        mut child,
        mut stdin,
        mut lines,
    } = child::spawn("udp_child", (UDP_CHILD_ENV, &backend.addr.to_string()));
    let listen: SocketAddr = expect_line(&mut lines, "READY").await.parse().unwrap();

    // Flows take every spare descriptor (one upstream socket each).
    let mut flows = Vec::new();
    for i in 0..UDP_FLOWS {
        let c = UdpClient::new().await;
        assert_eq!(c.ask_tag(listen, format!("flow {i}").as_bytes()).await, "u");
        flows.push(c);
    }
    // New clients: no socket for their flow; each datagram is dropped and counted as local.
    for i in 0..TRIES {
        let c = UdpClient::new().await;
        c.send(listen, format!("new {i}").as_bytes()).await;
        assert!(c.recv_within(Duration::from_millis(50)).await.is_err());
    }
    let s = stats(&mut stdin, &mut lines).await;
    assert_no_backend_fault(&s);

    // The flows go idle and expire: their descriptors come back; a new flow works within 1 s.
    drop(flows);
    let mut s = stats(&mut stdin, &mut lines).await;
    let deadline = Instant::now() + PATIENCE;
    while s.flows_active > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s = stats(&mut stdin, &mut lines).await;
    }
    assert_eq!(s.flows_active, 0, "{s:?}");
    let freed = Instant::now();
    let c = UdpClient::new().await;
    let reply = c
        .ask_until_reply(listen, b"back", Duration::from_millis(50))
        .await;
    assert!(
        reply.is_some() && freed.elapsed() < Duration::from_secs(1),
        "not served within 1 s ({:?})",
        freed.elapsed()
    );
    assert_no_backend_fault(&stats(&mut stdin, &mut lines).await);

    stdin.write_all(b"EXIT\n").await.unwrap();
    let status = within("child exit", child.wait()).await.unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// The child's side: serve `key` from `h`, lower the limit to `spare` descriptors, answer.
async fn serve_child(h: Harness, key: FrontendKey, spare: usize) {
    let metrics = Arc::new(Metrics::new());
    metrics.register(Box::new(DataplaneCollector::new(
        h.dataplane.backends(),
        h.dataplane.frontends(),
        h.dataplane.udp_stats(),
        h.dataplane.listener_status(),
    )));
    let admin = AdminState {
        metrics: metrics.clone(),
        tables: h.reader.clone(),
        listeners: h.dataplane.listener_status(),
        backends: h.dataplane.backends(),
        frontends: h.dataplane.frontends(),
        warnings: Arc::new(Mutex::new(Vec::new())),
        config: Arc::new(serde_json::Value::Null),
        changes: Default::default(),
        source_status: vipd::admin::SourceStatus::new(Vec::new),
    };
    // Commands from the parent, read on a plain thread started before the limit drops.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let metric =
        format!("vipd_frontend_local_failures_total{{frontend=\"{key}\",reason=\"emfile\"}}");
    leave_only_spare_fds(spare);
    println!("READY {}", key.listen);
    while let Some(cmd) = rx.recv().await {
        match cmd.trim() {
            "STATS" => {
                let f = h.dataplane.frontends().get(&key).unwrap().snapshot();
                let ejections: u64 = h
                    .dataplane
                    .backends()
                    .snapshot()
                    .iter()
                    .map(|(_, s)| s.ejections)
                    .sum();
                let vips = vips_json(&admin);
                let all_healthy = vips["frontends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|f| f["backends"].as_array().unwrap())
                    .all(|b| b["runtime"]["health"] == "healthy" && b["state"] == "up");
                let text = metrics.encode();
                let exported: f64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix(metric.as_str()))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(-1.0);
                let flows = h
                    .dataplane
                    .udp_stats()
                    .frontend(&key)
                    .map_or(0, |s| s.snapshot().flows_active);
                println!(
                    "STATS {} {ejections} {} {exported} {flows}",
                    f.local_failures_total(),
                    u8::from(all_healthy)
                );
            }
            "EXIT" => break,
            other => panic!("unknown command {other:?}"),
        }
    }
}

#[tokio::test]
#[ignore = "runs only as the child process of tcp_connects_failing_for_lack_of_descriptors_never_eject_a_backend"]
async fn tcp_child() {
    let Ok(backend) = std::env::var(TCP_CHILD_ENV) else {
        eprintln!("skipped: tcp_child only runs as a child of its parent test");
        return;
    };
    init_tracing();
    let backend: SocketAddr = backend.parse().unwrap();
    // Copy relay: a proxied connection holds exactly two descriptors (no pipes).
    let mut h = Harness::new(DataplaneConfig {
        tcp_relay: RelayMode::Copy,
        ..test_config()
    });
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(backend)])]));
    h.wait_bound(listen).await;
    serve_child(h, tcp_key(listen), 2 * IDLE_TCP + 1).await;
}

#[tokio::test]
#[ignore = "runs only as the child process of udp_flows_failing_for_lack_of_descriptors_never_eject_a_backend"]
async fn udp_child() {
    let Ok(backend) = std::env::var(UDP_CHILD_ENV) else {
        eprintln!("skipped: udp_child only runs as a child of its parent test");
        return;
    };
    init_tracing();
    let backend: SocketAddr = backend.parse().unwrap();
    let mut h = Harness::new(udp_config(Duration::from_secs(3), 1024));
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(listen, vec![up(backend)])]));
    wait_udp_bound(&h, listen).await;
    serve_child(h, udp_key(listen), UDP_FLOWS).await;
}
