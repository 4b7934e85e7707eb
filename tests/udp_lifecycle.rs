//! UDP frontend lifecycle: bind errors reported and retried, no port sharing through
//! SO_REUSEADDR, removal closing the socket and its flows, re-adding, and shutdown.

mod support;
mod udp_support;

use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use udp_support::*;
use vipd::balance::BackendKey;

/// True once `addr` can be bound by a plain UDP socket (vipd's socket is closed).
fn udp_port_free(addr: SocketAddr) -> bool {
    std::net::UdpSocket::bind(addr).is_ok()
}

#[tokio::test]
async fn a_taken_udp_port_is_reported_retried_and_bound_once_free() {
    init_tracing();
    let a = UdpServer::start("a", Reply::Tagged).await;
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let listen = holder.local_addr().unwrap();
    let other = free_udp_addr(LOCALHOST);
    let mut h = Harness::new(test_config());
    h.publish(table(vec![
        udp_frontend(listen, vec![up(a.addr)]),
        udp_frontend(other, vec![up(a.addr)]),
    ]));
    h.wait_bind_failed_in_use(udp_key(listen)).await;
    wait_udp_bound(&h, other).await;
    let client = UdpClient::new().await;
    assert_eq!(client.ask_tag(other, b"fine").await, "a");

    drop(holder);
    wait_udp_bound(&h, listen).await;
    assert_eq!(client.ask_tag(listen, b"now bound").await, "a");
}

#[tokio::test]
async fn a_bound_frontend_cannot_be_shared_through_so_reuseaddr() {
    init_tracing();
    let a = UdpServer::start("a", Reply::Tagged).await;
    let mut h = Harness::new(test_config());
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(listen, vec![up(a.addr)])]));
    wait_udp_bound(&h, listen).await;
    // A second socket asking for SO_REUSEADDR (as a second daemon would) must not get the port.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    let err = s.bind(&listen.into()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    let client = UdpClient::new().await;
    assert_eq!(client.ask_tag(listen, b"still ours").await, "a");
}

#[tokio::test]
async fn removing_a_frontend_closes_its_socket_and_flows_and_it_can_come_back() {
    init_tracing();
    let a = UdpServer::start("a", Reply::Tagged).await;
    let mut h = Harness::new(test_config());
    let listen = free_udp_addr(LOCALHOST);
    let keep = free_udp_addr(LOCALHOST);
    h.publish(table(vec![
        udp_frontend(listen, vec![up(a.addr)]),
        udp_frontend(keep, vec![up(a.addr)]),
    ]));
    wait_udp_bound(&h, listen).await;
    wait_udp_bound(&h, keep).await;
    let (c1, c2) = (UdpClient::new().await, UdpClient::new().await);
    assert_eq!(c1.ask_tag(listen, b"1").await, "a");
    assert_eq!(c2.ask_tag(listen, b"2").await, "a");
    assert_eq!(c1.ask_tag(keep, b"k").await, "a");
    let stats = h.dataplane.udp_stats().frontend(&udp_key(listen)).unwrap();
    let frontend_stats = h.dataplane.frontends().get(&udp_key(listen)).unwrap();

    h.publish(table(vec![udp_frontend(keep, vec![up(a.addr)])]));
    assert_eq!(h.dataplane.listener_status().state(&udp_key(listen)), None);
    assert!(
        eventually(PATIENCE, || udp_port_free(listen)).await,
        "the removed frontend's socket closes"
    );
    let s = stats.snapshot();
    assert_eq!((s.flows_closed, s.flows_active), (2, 0), "{s:?}");
    assert_eq!(frontend_stats.snapshot().cut, 2);
    assert_eq!(frontend_stats.snapshot().active, 0);
    assert_eq!(
        h.udp_backend_stats(a.addr).active,
        1,
        "only the kept frontend's flow"
    );
    assert_eq!(c1.ask_tag(keep, b"unaffected").await, "a");

    // Back in the table: bound again and serving.
    h.publish(table(vec![
        udp_frontend(listen, vec![up(a.addr)]),
        udp_frontend(keep, vec![up(a.addr)]),
    ]));
    wait_udp_bound(&h, listen).await;
    assert_eq!(c1.ask_tag(listen, b"again").await, "a");
}

#[tokio::test]
async fn shutdown_closes_udp_frontends_and_their_flows() {
    init_tracing();
    let a = UdpServer::start("a", Reply::Stream).await;
    let mut h = Harness::new(test_config());
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(listen, vec![up(a.addr)])]));
    wait_udp_bound(&h, listen).await;
    let client = UdpClient::new().await;
    // A flow with replies still coming (one per 50 ms for 50 s): shutdown must not wait for it.
    client.send(listen, b"stream 1000 50").await;
    client
        .recv_within(PATIENCE)
        .await
        .expect("first streamed reply");
    let stats = h.dataplane.udp_stats().frontend(&udp_key(listen)).unwrap();
    let backends = h.dataplane.backends();
    let report = within("shutdown", h.dataplane.shutdown(Duration::from_secs(30))).await;
    assert_eq!(report.live, 0, "UDP flows are not connections to drain");
    assert!(udp_port_free(listen), "socket closed when shutdown returns");
    assert_eq!(stats.snapshot().flows_closed, 1);
    assert_eq!(backends.get(&BackendKey::udp(a.addr)).unwrap().active(), 0);
}
