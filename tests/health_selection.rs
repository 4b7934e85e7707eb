//! Health-aware selection through real sockets: Marathon health gates new connections, an
//! all-unhealthy pool fails open (or refuses with `fail_open` off), draining keeps live
//! connections, and Maglev pins a client IP to one backend.

mod support;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use support::*;
use tokio::net::{TcpSocket, TcpStream};
use vipd::balance::HealthConfig;
use vipd::table::BackendState::{self, *};

fn harness(health: HealthConfig) -> Harness {
    Harness::with_health(test_config(), health)
}

async fn tags(listen: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(roundtrip(listen, b"ping").await.expect("roundtrip"));
    }
    out
}

fn distinct(tags: &[String]) -> HashSet<&str> {
    tags.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn marathon_health_gates_new_connections() {
    init_tracing();
    let (a, b, c) = (
        TaggedEchoServer::start("up").await,
        TaggedEchoServer::start("unknown").await,
        TaggedEchoServer::start("unhealthy").await,
    );
    let mut h = harness(HealthConfig::default());
    let listen = free_addr(LOCALHOST);
    let fe = |states: [BackendState; 3]| {
        table(vec![frontend(
            listen,
            vec![
                backend(a.addr, states[0]),
                backend(b.addr, states[1]),
                backend(c.addr, states[2]),
            ],
        )])
    };
    h.publish(fe([Up, Unknown, Unhealthy]));
    h.wait_bound(listen).await;
    assert_eq!(distinct(&tags(listen, 12).await), HashSet::from(["up"]));
    assert_eq!((b.connections(), c.connections()), (0, 0));
    // No up backend left: unknown ones serve (a new task, or after a leader failover).
    h.publish(fe([Unhealthy, Unknown, Unhealthy]));
    assert_eq!(distinct(&tags(listen, 6).await), HashSet::from(["unknown"]));
}

#[tokio::test]
async fn an_all_unhealthy_pool_fails_open_and_refuses_with_fail_open_off() {
    init_tracing();
    let (a, b) = (
        TaggedEchoServer::start("a").await,
        TaggedEchoServer::start("b").await,
    );
    let all_unhealthy = |listen| {
        table(vec![frontend(
            listen,
            vec![backend(a.addr, Unhealthy), backend(b.addr, Unhealthy)],
        )])
    };

    let mut open = harness(HealthConfig::default());
    let listen = free_addr(LOCALHOST);
    open.publish(all_unhealthy(listen));
    open.wait_bound(listen).await;
    assert_eq!(distinct(&tags(listen, 4).await), HashSet::from(["a", "b"]));

    let mut closed = harness(HealthConfig {
        fail_open: false,
        ..HealthConfig::default()
    });
    let listen = free_addr(LOCALHOST);
    closed.publish(all_unhealthy(listen));
    closed.wait_bound(listen).await;
    let before = (a.connections(), b.connections());
    for _ in 0..3 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        assert!(
            read_tag(&mut s).await.is_err(),
            "refused: closed without a tag"
        );
    }
    assert!(
        eventually(PATIENCE, || closed.frontend_stats(listen).no_backend == 3).await,
        "{:?}",
        closed.frontend_stats(listen)
    );
    assert_eq!((a.connections(), b.connections()), before);
}

#[tokio::test]
async fn a_draining_backend_gets_no_new_connections_and_keeps_its_live_ones() {
    init_tracing();
    let (a, b) = (
        TaggedEchoServer::start("a").await,
        TaggedEchoServer::start("b").await,
    );
    let mut h = harness(HealthConfig::default());
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(a.addr), up(b.addr)])]));
    h.wait_bound(listen).await;
    // Open live connections until one lands on `a`.
    let mut live = Vec::new();
    let mut on_a = None;
    for _ in 0..4 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        let tag = read_tag(&mut s).await.unwrap();
        if tag == "a" && on_a.is_none() {
            on_a = Some(s);
        } else {
            live.push(s);
        }
    }
    let mut on_a = on_a.expect("round-robin reaches a");
    // TASK_KILLING: `a` drains.
    h.publish(table(vec![frontend(
        listen,
        vec![backend(a.addr, Draining), up(b.addr)],
    )]));
    let a_before = a.connections();
    assert_eq!(distinct(&tags(listen, 6).await), HashSet::from(["b"]));
    assert_eq!(
        a.connections(),
        a_before,
        "no new connection to a draining backend"
    );
    echo_once(&mut on_a, b"still here")
        .await
        .expect("live connection continues");
    // Gone from the table entirely: still not cut.
    h.publish(table(vec![frontend(listen, vec![up(b.addr)])]));
    echo_once(&mut on_a, b"and here")
        .await
        .expect("live connection continues");
    // Only draining backends left: nothing to pick, even failing open.
    h.publish(table(vec![frontend(
        listen,
        vec![backend(b.addr, Draining)],
    )]));
    let mut s = TcpStream::connect(listen).await.unwrap();
    assert!(read_tag(&mut s).await.is_err());
    echo_once(&mut on_a, b"to the end")
        .await
        .expect("live connection continues");
}

/// Connects from `ip` (a 127.0.0.x source address), reads the tag, closes.
async fn tag_from(ip: IpAddr, listen: SocketAddr) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    let mut s = socket.connect(listen).await.unwrap();
    read_tag(&mut s).await.unwrap()
}

#[tokio::test]
async fn maglev_sends_one_client_ip_to_one_backend() {
    init_tracing();
    let servers = [
        TaggedEchoServer::start("b0").await,
        TaggedEchoServer::start("b1").await,
        TaggedEchoServer::start("b2").await,
        TaggedEchoServer::start("b3").await,
    ];
    let mut h = harness(HealthConfig::default());
    let listen = free_addr(LOCALHOST);
    let mut fe = frontend(listen, servers.iter().map(|s| up(s.addr)).collect());
    fe.options = vipd::table::PortOptions::from_pairs([("balance", "maglev")]).unwrap();
    h.publish(table(vec![fe]));
    h.wait_bound(listen).await;
    let mut homes = HashSet::new();
    for last in 2..=17u8 {
        let ip = loopback(last);
        let first = tag_from(ip, listen).await;
        for _ in 0..4 {
            assert_eq!(tag_from(ip, listen).await, first, "client {ip}");
        }
        homes.insert(first);
    }
    assert!(
        homes.len() >= 2,
        "16 client IPs spread over 4 backends: {homes:?}"
    );
}
