//! UDP flow behaviour over real sockets: idle expiry refreshed by traffic in either direction,
//! the per-frontend flow cap, re-pick when a flow's backend leaves the table or drains, and
//! ICMP port unreachable feeding passive health without hurting the frontend, and
//! `--fail-open=false` refusing new and existing flows alike when every backend is unhealthy.

mod support;
mod udp_support;

use std::time::Duration;
use support::*;
use udp_support::*;
use vipd::balance::HealthConfig;
use vipd::dataplane::ListenerState;
use vipd::table::BackendState;

#[tokio::test]
async fn idle_flows_expire_and_traffic_either_way_keeps_them() {
    init_tracing();
    let idle = Duration::from_millis(800);
    let a = UdpServer::start("a", Reply::Tagged).await;
    let s = UdpServer::start("s", Reply::Stream).await;
    let mut h = Harness::new(udp_config(idle, 100));
    let listen = free_udp_addr(LOCALHOST);
    let streamed = free_udp_addr(LOCALHOST);
    h.publish(table(vec![
        udp_frontend(listen, vec![up(a.addr)]),
        udp_frontend(streamed, vec![up(s.addr)]),
    ]));
    wait_udp_bound(&h, listen).await;
    wait_udp_bound(&h, streamed).await;

    let busy = UdpClient::new().await; // keeps sending
    let quiet = UdpClient::new().await; // one datagram, then silence
    let listener = UdpClient::new().await; // one request, then only replies flow
    assert_eq!(quiet.ask_tag(listen, b"hello").await, "a");
    assert_eq!(busy.ask_tag(listen, b"0").await, "a");
    // 25 replies, one every 100 ms: 2.5 s of backend-to-client traffic only.
    listener.send(streamed, b"stream 25 100").await;

    // The quiet flow expires while the busy one sends every 100 ms (paced traffic).
    let mut rounds = 0;
    while udp_stats(&h, listen).flows_expired == 0 {
        rounds += 1;
        assert!(rounds < 200, "the quiet flow never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(busy.ask_tag(listen, b"tick").await, "a");
    }
    let st = udp_stats(&h, listen);
    assert_eq!((st.flows_expired, st.flows_active), (1, 1), "{st:?}");

    // The streamed flow gets every reply although its client never sends again (the busy
    // client keeps its pace: one datagram per streamed reply).
    for i in 0..25 {
        let reply = listener
            .recv_within(PATIENCE)
            .await
            .expect("streamed reply");
        assert_eq!(
            split_tag(&reply),
            ("s".to_string(), i.to_string().into_bytes())
        );
        assert_eq!(busy.ask_tag(listen, b"tick").await, "a");
    }
    let ss = udp_stats(&h, streamed);
    assert_eq!((ss.flows_created, ss.flows_expired), (1, 0), "{ss:?}");

    // The quiet client's next datagram creates a new flow (a new upstream socket).
    assert_eq!(a.peers().len(), 2);
    assert_eq!(quiet.ask_tag(listen, b"back").await, "a");
    assert_eq!(a.peers().len(), 3, "a new upstream socket for the new flow");
    let st = udp_stats(&h, listen);
    assert_eq!(st.flows_created, 3);
    assert_eq!(st.flows_expired, 1);
    // And every flow expires once everything is quiet.
    let st = wait_udp_stats(&h, listen, "all expired", |s| s.flows_active == 0).await;
    assert_eq!(st.flows_expired, 3);
    assert_eq!(
        h.udp_backend_stats(a.addr).active,
        0,
        "expired flows release the backend"
    );
}

#[tokio::test]
async fn the_flow_cap_drops_new_clients_and_spares_existing_flows() {
    init_tracing();
    let a = UdpServer::start("a", Reply::Tagged).await;
    let mut h = Harness::new(udp_config(Duration::from_secs(60), 2));
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(listen, vec![up(a.addr)])]));
    wait_udp_bound(&h, listen).await;

    let (one, two, three) = (
        UdpClient::new().await,
        UdpClient::new().await,
        UdpClient::new().await,
    );
    assert_eq!(one.ask_tag(listen, b"1").await, "a");
    assert_eq!(two.ask_tag(listen, b"2").await, "a");
    for _ in 0..3 {
        three.send(listen, b"3").await;
    }
    let s = wait_udp_stats(&h, listen, "third client dropped", |s| {
        s.dropped_by_cap == 3
    })
    .await;
    assert_eq!((s.flows_created, s.flows_active), (2, 2));
    assert_eq!(
        a.received(),
        2,
        "nothing of the third client reached the backend"
    );
    assert_eq!(three.try_recv(), None, "and nothing came back to it");
    assert_eq!(one.ask_tag(listen, b"1 again").await, "a");
    assert_eq!(two.ask_tag(listen, b"2 again").await, "a");
    assert_eq!(udp_stats(&h, listen).dropped_by_cap, 3);
}

#[tokio::test]
async fn flows_repick_when_their_backend_is_removed_or_draining() {
    init_tracing();
    let servers = [
        UdpServer::start("a", Reply::Tagged).await,
        UdpServer::start("b", Reply::Tagged).await,
        UdpServer::start("c", Reply::Tagged).await,
    ];
    let tag_addr = |tag: &str| servers.iter().find(|s| s.tag == tag).unwrap().addr;
    let mut h = Harness::new(test_config());
    let listen = free_udp_addr(LOCALHOST);
    let all: Vec<_> = servers.iter().map(|s| up(s.addr)).collect();
    h.publish(table(vec![udp_frontend(listen, all.clone())]));
    wait_udp_bound(&h, listen).await;

    let client = UdpClient::new().await;
    let first = client.ask_tag(listen, b"1").await;
    assert_eq!(client.ask_tag(listen, b"2").await, first, "sticky");

    // Its backend leaves the table: the next datagram lands elsewhere, on the same flow.
    let without: Vec<_> = all
        .iter()
        .filter(|b| b.address != tag_addr(&first))
        .cloned()
        .collect();
    h.publish(table(vec![udp_frontend(listen, without.clone())]));
    let second = client.ask_tag(listen, b"3").await;
    assert_ne!(second, first);
    assert_eq!(client.ask_tag(listen, b"4").await, second, "sticky again");
    let s = udp_stats(&h, listen);
    assert_eq!((s.flows_created, s.flows_repicked), (1, 1), "{s:?}");

    // An unrelated table change (a backend added back) does not move the flow.
    h.publish(table(vec![udp_frontend(listen, all.clone())]));
    assert_eq!(client.ask_tag(listen, b"5").await, second);

    // Its new backend starts draining: the flow moves again, never to a draining backend.
    let draining: Vec<_> = all
        .iter()
        .map(|b| {
            if b.address == tag_addr(&second) {
                backend(b.address, BackendState::Draining)
            } else {
                b.clone()
            }
        })
        .collect();
    h.publish(table(vec![udp_frontend(listen, draining)]));
    let third = client.ask_tag(listen, b"6").await;
    assert_ne!(third, second);
    assert_eq!(udp_stats(&h, listen).flows_repicked, 2);
    assert!(
        eventually(PATIENCE, || h.udp_backend_stats(tag_addr(&second)).active
            == 0)
        .await,
        "the old upstream released its backend"
    );
    if third != first {
        assert_eq!(h.udp_backend_stats(tag_addr(&first)).active, 0);
    }
}

#[tokio::test]
async fn icmp_unreachable_counts_on_the_backend_and_the_flow_repicks() {
    init_tracing();
    // The dead address sorts first (127.0.0.1 < 127.0.0.3), so round-robin picks it first.
    let dead = closed_udp_addr(LOCALHOST);
    let live = UdpServer::start_on(loopback(3), "live", Reply::Tagged).await;
    let mut h = Harness::new(test_config());
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(
        listen,
        vec![up(dead), up(live.addr)],
    )]));
    wait_udp_bound(&h, listen).await;

    let client = UdpClient::new().await;
    // The first datagram goes to the dead backend and is lost (ICMP port unreachable comes
    // back to vipd's upstream socket); a later one is re-picked to the live backend.
    let reply = client
        .ask_until_reply(listen, b"ping", Duration::from_millis(200))
        .await
        .expect("a reply once the flow moved");
    assert_eq!(split_tag(&reply), ("live".to_string(), b"ping".to_vec()));
    let b = h.udp_backend_stats(dead);
    assert!(b.failures_refused >= 1, "{b:?}");
    let s = udp_stats(&h, listen);
    assert_eq!(s.flows_created, 1, "the same flow moved: {s:?}");
    assert!(s.flows_repicked >= 1 && s.upstream_errors >= 1, "{s:?}");
    assert!(matches!(
        h.dataplane.listener_status().state(&udp_key(listen)),
        Some(ListenerState::Bound { .. })
    ));
    // The frontend keeps serving, new clients included.
    assert_eq!(client.ask_tag(listen, b"again").await, "live");
    let other = UdpClient::new().await;
    let reply = other
        .ask_until_reply(listen, b"new client", Duration::from_millis(200))
        .await
        .expect("a new client is served");
    assert_eq!(split_tag(&reply).0, "live");
    assert!(h.udp_backend_stats(live.addr).total >= 1);
}

#[tokio::test]
async fn with_fail_open_off_every_backend_unhealthy_refuses_new_and_existing_flows_like_tcp() {
    init_tracing();
    let a = UdpServer::start("a", Reply::Tagged).await;
    let mut h = Harness::with_health(
        test_config(),
        HealthConfig {
            fail_open: false,
            ..HealthConfig::default()
        },
    );
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(listen, vec![up(a.addr)])]));
    wait_udp_bound(&h, listen).await;
    let existing = UdpClient::new().await;
    assert_eq!(existing.ask_tag(listen, b"1").await, "a");

    // Every backend unhealthy: neither a new client nor the existing flow reaches it.
    h.publish(table(vec![udp_frontend(
        listen,
        vec![backend(a.addr, BackendState::Unhealthy)],
    )]));
    let received = a.received();
    existing.send(listen, b"2").await;
    let newcomer = UdpClient::new().await;
    newcomer.send(listen, b"3").await;
    let s = wait_udp_stats(&h, listen, "both datagrams dropped", |s| {
        s.dropped_no_backend >= 2
    })
    .await;
    assert_eq!(s.flows_created, 1, "no flow for the newcomer: {s:?}");
    assert_eq!(
        a.received(),
        received,
        "nothing reached the unhealthy backend"
    );
    assert_eq!(
        existing.recv_within(Duration::from_millis(200)).await.ok(),
        None
    );
    assert_eq!(
        h.udp_backend_stats(a.addr).active,
        0,
        "the flow let its backend go"
    );

    // Healthy again: the existing flow is served again, as a new TCP connection would be.
    h.publish(table(vec![udp_frontend(listen, vec![up(a.addr)])]));
    assert_eq!(existing.ask_tag(listen, b"4").await, "a");
    assert_eq!(newcomer.ask_tag(listen, b"5").await, "a");
}
