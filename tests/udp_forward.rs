//! UDP forwarding through the data plane: service-port and VIP frontends, a `udp,tcp` pair on
//! one port, round-robin spread with per-client stickiness, and datagrams up to 65,507 bytes.

mod support;
mod udp_support;

use std::collections::HashMap;
use support::*;
use udp_support::*;

#[tokio::test]
async fn echo_through_a_udp_service_port() {
    init_tracing();
    let a = UdpServer::start("a", Reply::Tagged).await;
    let mut h = Harness::new(test_config());
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(listen, vec![up(a.addr)])]));
    wait_udp_bound(&h, listen).await;

    let client = UdpClient::new().await;
    for i in 0..3u8 {
        assert_eq!(client.ask_tag(listen, &[b'x', i]).await, "a");
    }
    assert_eq!(a.received(), 3);
    assert_eq!(a.peers().len(), 1, "one flow, one upstream socket");
    let s = wait_udp_stats(&h, listen, "all counted", |s| s.datagrams_out == 3).await;
    assert_eq!(
        (
            s.flows_created,
            s.flows_active,
            s.datagrams_in,
            s.datagrams_to_backends
        ),
        (1, 1, 3, 3)
    );
    assert_eq!(
        (s.bytes_in, s.bytes_out),
        (6, 6 + 3 * 2),
        "replies carry `a|`"
    );
    assert_eq!(s.dropped(), 0);
    let b = h.udp_backend_stats(a.addr);
    assert_eq!((b.bytes_to_backend, b.bytes_from_backend), (6, 12));
    assert_eq!(b.active, 1, "the live flow holds the backend");
    assert_eq!(b.total, 1, "connected once: at the flow's first reply");
    let ub = h.dataplane.udp_stats().backend(&a.addr).unwrap().snapshot();
    assert_eq!((ub.datagrams_to_backend, ub.datagrams_from_backend), (3, 3));
    let fs = h
        .dataplane
        .frontends()
        .get(&udp_key(listen))
        .unwrap()
        .snapshot();
    assert_eq!(
        (fs.accepted, fs.active),
        (1, 1),
        "flows, in the shared counters"
    );
}

#[tokio::test]
async fn echo_through_udp_vips_on_other_loopback_addresses() {
    init_tracing();
    let a = UdpServer::start("a", Reply::Tagged).await;
    let c = UdpServer::start_on(loopback(3), "c", Reply::Tagged).await;
    let mut h = Harness::new(test_config());
    let vip2 = free_udp_addr(loopback(2));
    let vip3 = free_udp_addr(loopback(3));
    h.publish(table(vec![
        udp_vip_frontend(vip2, vec![up(a.addr)]),
        udp_vip_frontend(vip3, vec![up(c.addr)]),
    ]));
    wait_udp_bound(&h, vip2).await;
    wait_udp_bound(&h, vip3).await;
    let client = UdpClient::new().await;
    assert_eq!(client.ask_tag(vip2, b"to vip two").await, "a");
    assert_eq!(client.ask_tag(vip3, b"to vip three").await, "c");
    assert_eq!(
        h.dataplane.listener_status().local_addr(&udp_key(vip2)),
        Some(vip2)
    );
}

#[tokio::test]
async fn a_udp_tcp_pair_on_one_port_serves_both_protocols() {
    init_tracing();
    let tcp_backend = TaggedEchoServer::start("t").await;
    let udp_backend = UdpServer::start("u", Reply::Tagged).await;
    let mut h = Harness::new(test_config());
    // A port free for both protocols (the TCP port is free; check UDP too).
    let listen = loop {
        let candidate = free_addr(LOCALHOST);
        if std::net::UdpSocket::bind(candidate).is_ok() {
            break candidate;
        }
    };
    h.publish(table(vec![
        frontend(listen, vec![up(tcp_backend.addr)]),
        udp_frontend(listen, vec![up(udp_backend.addr)]),
    ]));
    h.wait_bound(listen).await;
    wait_udp_bound(&h, listen).await;
    assert_eq!(roundtrip(listen, b"over tcp").await.unwrap(), "t");
    let client = UdpClient::new().await;
    assert_eq!(client.ask_tag(listen, b"over udp").await, "u");
    assert_eq!(roundtrip(listen, b"tcp again").await.unwrap(), "t");
}

/// Issue 20, finding 3: TCP and UDP backends on the same `ip:port` shared one runtime state.
#[tokio::test]
async fn tcp_and_udp_backends_on_the_same_ip_port_share_no_runtime_state() {
    init_tracing();
    // A UDP service on `shared`; TCP connects to the same ip:port are refused.
    let udp_backend = UdpServer::start("u", Reply::Tagged).await;
    let shared = udp_backend.addr;
    let mut h = Harness::new(test_config());
    let (tcp_listen, udp_listen) = (free_addr(LOCALHOST), free_udp_addr(LOCALHOST));
    h.publish(table(vec![
        frontend(tcp_listen, vec![up(shared)]),
        udp_frontend(udp_listen, vec![up(shared)]),
    ]));
    h.wait_bound(tcp_listen).await;
    wait_udp_bound(&h, udp_listen).await;
    let client = UdpClient::new().await;
    assert_eq!(client.ask_tag(udp_listen, b"1").await, "u");

    // The TCP port refuses until its backend is ejected.
    for _ in 0..3 {
        assert!(roundtrip(tcp_listen, b"x").await.is_err());
    }
    assert!(
        eventually(PATIENCE, || h.backend_stats(shared).ejected).await,
        "{:?}",
        h.backend_stats(shared)
    );
    let (t, u) = (h.backend_stats(shared), h.udp_backend_stats(shared));
    assert!(!u.ejected, "the UDP service is not ejected: {u:?}");
    assert_eq!((u.failures(), u.active, u.total), (0, 1, 1), "{u:?}");
    assert_eq!((t.active, t.total), (0, 0), "TCP counts no UDP flow: {t:?}");
    let other = UdpClient::new().await;
    assert_eq!(other.ask_tag(udp_listen, b"2").await, "u", "still served");

    // Metrics carry the protocol.
    let metrics = vipd::metrics::Metrics::new();
    metrics.register(Box::new(vipd::metrics::DataplaneCollector::new(
        h.dataplane.backends(),
        h.dataplane.frontends(),
        h.dataplane.udp_stats(),
        h.dataplane.listener_status(),
    )));
    let text = metrics.encode();
    let line = |protocol: &str| {
        format!("vipd_backend_ejections_total{{backend=\"{shared}\",protocol=\"{protocol}\"}}")
    };
    assert!(text.contains(&format!("{} 1", line("tcp"))), "{text}");
    assert!(text.contains(&format!("{} 0", line("udp"))), "{text}");
}

#[tokio::test]
async fn round_robin_spreads_6_clients_2_2_2_and_each_flow_sticks() {
    init_tracing();
    let servers = [
        UdpServer::start("a", Reply::Tagged).await,
        UdpServer::start("b", Reply::Tagged).await,
        UdpServer::start("c", Reply::Tagged).await,
    ];
    let mut h = Harness::new(test_config());
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(
        listen,
        servers.iter().map(|s| up(s.addr)).collect(),
    )]));
    wait_udp_bound(&h, listen).await;

    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(UdpClient::new().await);
    }
    let mut tags: Vec<Vec<String>> = vec![Vec::new(); clients.len()];
    // Interleaved: every client sends one datagram per round.
    for round in 0..5u8 {
        for (i, c) in clients.iter().enumerate() {
            tags[i].push(c.ask_tag(listen, &[round, i as u8]).await);
        }
    }
    let mut per_backend: HashMap<String, usize> = HashMap::new();
    for (i, t) in tags.iter().enumerate() {
        assert!(
            t.iter().all(|x| *x == t[0]),
            "client {i} moved between backends: {t:?}"
        );
        *per_backend.entry(t[0].clone()).or_default() += 1;
    }
    assert_eq!(
        per_backend,
        HashMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)])
    );
    for s in &servers {
        assert_eq!(s.received(), 10, "{}: 2 clients × 5 datagrams", s.tag);
        assert_eq!(
            s.peers().len(),
            2,
            "{}: one upstream socket per flow",
            s.tag
        );
    }
    let s = udp_stats(&h, listen);
    assert_eq!((s.flows_created, s.flows_active), (6, 6));
}

#[tokio::test]
async fn datagrams_of_60000_and_65507_bytes_pass_intact() {
    init_tracing();
    let echo = UdpServer::start("e", Reply::Echo).await;
    let mut h = Harness::new(test_config());
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(listen, vec![up(echo.addr)])]));
    wait_udp_bound(&h, listen).await;
    let client = UdpClient::new().await;
    for len in [1usize, 1500, 60_000, 65_507] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let reply = client.ask(listen, &payload).await.expect("reply");
        assert_eq!(reply.len(), len);
        assert!(reply == payload, "{len} bytes came back changed");
    }
    let s = udp_stats(&h, listen);
    assert_eq!(s.dropped(), 0, "{s:?}");
    assert_eq!(s.bytes_in, 1 + 1500 + 60_000 + 65_507);
}

/// A burst of replies from the backend (queued on the flow's upstream socket, so the return path
/// takes them in batches of several per `recvmmsg` and sends each batch with one `sendmmsg`)
/// reaches the client complete, in order, and exactly counted.
#[tokio::test]
async fn a_burst_of_replies_arrives_complete_in_order_and_counted() {
    init_tracing();
    let a = UdpServer::start("a", Reply::Stream).await;
    let mut h = Harness::new(test_config());
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(listen, vec![up(a.addr)])]));
    wait_udp_bound(&h, listen).await;

    let client = UdpClient::new().await;
    let n = 100;
    client
        .send(listen, format!("stream {n} 0").as_bytes())
        .await;
    let mut expected_bytes = 0;
    for i in 0..n {
        let reply = client
            .recv_within(std::time::Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("reply {i} of {n}: {e}"));
        let want = format!("a|{i}");
        assert_eq!(String::from_utf8_lossy(&reply), want, "reply {i} in order");
        expected_bytes += want.len() as u64;
    }
    let s = wait_udp_stats(&h, listen, "all counted", |s| s.datagrams_out == n).await;
    assert_eq!(s.bytes_out, expected_bytes);
    assert_eq!(s.dropped(), 0);
    let ub = h.dataplane.udp_stats().backend(&a.addr).unwrap().snapshot();
    assert_eq!(ub.datagrams_from_backend, n);
    assert_eq!(
        h.udp_backend_stats(a.addr).bytes_from_backend,
        expected_bytes
    );
}
