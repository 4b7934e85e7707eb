//! Listener lifecycle: bind errors reported and retried, UDP bound next to TCP, graceful shutdown
//! with and without connections that outlive the grace period.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::net::TcpStream;
use vipd::dataplane::ListenerState;
use vipd::table::{FrontendKey, Protocol};

#[tokio::test]
async fn a_taken_port_is_reported_retried_and_bound_once_free() {
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = holder.local_addr().unwrap();
    let other = free_addr(LOCALHOST);
    let mut h = Harness::new(test_config());
    h.publish(table(vec![
        frontend(listen, vec![up(a.addr)]),
        frontend(other, vec![up(a.addr)]),
    ]));

    // Failed (and retrying) while the test holds the port; the other frontend is unaffected.
    let key = tcp_key(listen);
    h.wait_bind_failed_in_use(key).await;
    h.wait_bound(other).await;
    assert_eq!(roundtrip(other, b"fine").await.unwrap(), "a");

    drop(holder);
    h.wait_bound(listen).await;
    assert_eq!(roundtrip(listen, b"now bound").await.unwrap(), "a");
}

#[tokio::test]
async fn an_address_that_is_not_local_fails_alone() {
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    // 192.0.2.0/24 (TEST-NET-1) is on no interface here: bind fails with EADDRNOTAVAIL. No
    // packet is sent anywhere.
    let foreign: SocketAddr = "192.0.2.10:8080".parse().unwrap();
    let local = free_addr(LOCALHOST);
    let mut h = Harness::new(test_config());
    h.publish(table(vec![
        vip_frontend(foreign, vec![up(a.addr)]),
        frontend(local, vec![up(a.addr)]),
    ]));
    let status = h.dataplane.listener_status();
    assert!(
        eventually(PATIENCE, || matches!(
            status.state(&tcp_key(foreign)),
            Some(ListenerState::Failed { .. })
        ))
        .await
    );
    h.wait_bound(local).await;
    assert_eq!(roundtrip(local, b"ok").await.unwrap(), "a");

    // Removing the frontend stops its retries and clears its status.
    h.publish(table(vec![frontend(local, vec![up(a.addr)])]));
    assert_eq!(status.state(&tcp_key(foreign)), None);
    assert!(status.all_attempted());
}

#[tokio::test]
async fn a_udp_frontend_on_the_same_port_is_bound_next_to_tcp() {
    // UDP forwarding itself is tested in tests/udp_*.rs.
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    let listen = free_addr(LOCALHOST);
    let mut udp = frontend(listen, vec![up(a.addr)]);
    udp.protocol = Protocol::Udp;
    let tcp = frontend(listen, vec![up(a.addr)]);
    let mut h = Harness::new(test_config());
    h.publish(table(vec![udp, tcp]));
    h.wait_bound(listen).await;
    let status = h.dataplane.listener_status();
    let udp_key = FrontendKey {
        protocol: Protocol::Udp,
        listen,
    };
    assert!(eventually(PATIENCE, || status.is_bound(&udp_key)).await);
    assert!(status.all_attempted());
    assert_eq!(roundtrip(listen, b"tcp still works").await.unwrap(), "a");
    h.publish(table(vec![]));
    assert_eq!(status.state(&udp_key), None);
}

#[tokio::test]
async fn shutdown_waits_for_a_live_connection_within_grace() {
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(test_config());
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(a.addr)])]));
    h.wait_bound(listen).await;
    let mut c = TcpStream::connect(listen).await.unwrap();
    assert_eq!(read_tag(&mut c).await.unwrap(), "a");

    let Harness { dataplane, .. } = h;
    let shutdown = tokio::spawn(dataplane.shutdown(PATIENCE * 2));
    assert!(wait_refused(listen).await, "stopped accepting");
    echo_once(&mut c, b"still served during shutdown")
        .await
        .unwrap();
    assert!(!shutdown.is_finished(), "waits for the live connection");
    drop(c);
    let report = within("shutdown", shutdown).await.unwrap();
    assert_eq!(report.live, 1);
    assert_eq!(report.finished, 1);
    assert_eq!(report.cut, 0);
}

#[tokio::test]
async fn shutdown_cuts_connections_that_outlive_the_grace() {
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(test_config());
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(a.addr)])]));
    h.wait_bound(listen).await;
    let mut c1 = TcpStream::connect(listen).await.unwrap();
    let mut c2 = TcpStream::connect(listen).await.unwrap();
    assert_eq!(read_tag(&mut c1).await.unwrap(), "a");
    assert_eq!(read_tag(&mut c2).await.unwrap(), "a");
    let frontends = h.dataplane.frontends();
    assert_eq!(h.dataplane.live_connections(), 2);

    let Harness { dataplane, .. } = h;
    let report = within("shutdown", dataplane.shutdown(Duration::from_millis(200))).await;
    assert_eq!(report.live, 2);
    assert_eq!(report.cut, 2);
    assert_eq!(report.finished, 0);
    assert!(closed_by_peer(&mut c1).await);
    assert!(closed_by_peer(&mut c2).await);
    let stats = frontends.get(&tcp_key(listen)).unwrap().snapshot();
    assert_eq!((stats.cut, stats.active), (2, 0));
}

#[tokio::test]
async fn shutdown_with_no_connections_returns_at_once() {
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(test_config());
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(a.addr)])]));
    h.wait_bound(listen).await;
    assert_eq!(roundtrip(listen, b"x").await.unwrap(), "a");
    let Harness { dataplane, .. } = h;
    // A grace far beyond PATIENCE: returning within PATIENCE proves it did not wait for it.
    let report = within("shutdown", dataplane.shutdown(Duration::from_secs(3600))).await;
    assert_eq!(report.cut, 0);
    assert!(wait_refused(listen).await);
}
