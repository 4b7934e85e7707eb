//! Table swaps under traffic: no connection is ever dropped by a swap; removed backends and
//! removed frontends drain.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::net::TcpStream;
use vipd::balance::BackendKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_drop_no_connection() {
    init_tracing();
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 250; // 2,000 connections in total
    const MIN_SWAPS: usize = 200;
    const MAX_SWAPS: usize = 20_000;

    let mut servers = Vec::new();
    for i in 0..6 {
        servers.push(TaggedEchoServer::start(&format!("s{i}")).await);
    }
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let mut h = Harness::new(test_config());
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(addrs[0])])]));
    h.wait_bound(listen).await;

    let clients_done = Arc::new(AtomicBool::new(false));
    let swaps_while_busy = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (done, busy_swaps, addrs) = (
            clients_done.clone(),
            swaps_while_busy.clone(),
            addrs.clone(),
        );
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut swaps = 0usize;
            // Deterministic walk over non-empty subsets of the 6 backends: adds and removes.
            while swaps < MAX_SWAPS && tokio::time::Instant::now() < deadline {
                let busy = !done.load(Ordering::SeqCst);
                if !busy && swaps >= MIN_SWAPS {
                    break;
                }
                let mask = (swaps * 37 + 11) % 63 + 1; // 1..=63: never empty
                let backends = addrs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, a)| up(*a))
                    .collect();
                h.publish(table(vec![frontend(listen, backends)]));
                swaps += 1;
                if busy {
                    busy_swaps.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
            (h, swaps)
        })
    };

    let failures = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (failures, ok) = (failures.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..PER_CLIENT {
                let payload = format!("client {c} connection {i} ").repeat(1 + i % 7);
                match roundtrip(listen, payload.as_bytes()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("client {c} connection {i}: {e}");
                        failures.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    for c in clients {
        within("clients", c).await.unwrap();
    }
    clients_done.store(true, Ordering::SeqCst);
    let (h, swaps) = within("swapper", swapper).await.unwrap();

    assert_eq!(failures.load(Ordering::SeqCst), 0, "failed connections");
    assert_eq!(ok.load(Ordering::SeqCst), CLIENTS * PER_CLIENT);
    assert!(swaps >= MIN_SWAPS, "only {swaps} swaps");
    let busy = swaps_while_busy.load(Ordering::SeqCst);
    eprintln!("{swaps} swaps, {busy} while clients were running");
    assert!(busy > 0, "swaps overlapped the traffic");
    let served: usize = servers.iter().map(|s| s.connections()).sum();
    assert_eq!(served, CLIENTS * PER_CLIENT);
    assert_eq!(
        h.frontend_stats(listen).accepted as usize,
        CLIENTS * PER_CLIENT
    );
    // Never rebound: the frontend's counters and socket survived every swap.
    assert!(h.dataplane.listener_status().is_bound(&tcp_key(listen)));
}

#[tokio::test]
async fn a_connection_to_a_removed_backend_keeps_working() {
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    let b = TaggedEchoServer::start("b").await;
    let mut h = Harness::new(test_config());
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(a.addr)])]));
    h.wait_bound(listen).await;

    let mut long = TcpStream::connect(listen).await.unwrap();
    assert_eq!(read_tag(&mut long).await.unwrap(), "a");
    echo_once(&mut long, b"before").await.unwrap();

    // a leaves the table; b takes over new connections.
    h.publish(table(vec![frontend(listen, vec![up(b.addr)])]));
    assert_eq!(roundtrip(listen, b"new").await.unwrap(), "b");
    echo_once(&mut long, b"after removal").await.unwrap();
    assert_eq!(h.backend_stats(a.addr).active, 1, "kept while in use");

    // Still in use: a reconcile keeps a's runtime entry.
    h.publish(table(vec![frontend(listen, vec![up(b.addr)])]));
    assert!(h
        .dataplane
        .backends()
        .get(&BackendKey::tcp(a.addr))
        .is_some());
    echo_once(&mut long, b"after another swap").await.unwrap();

    drop(long);
    assert!(eventually(PATIENCE, || h.backend_stats(a.addr).active == 0).await);
    h.publish(table(vec![frontend(listen, vec![up(b.addr)])]));
    assert!(
        h.dataplane
            .backends()
            .get(&BackendKey::tcp(a.addr))
            .is_none(),
        "pruned once unused and unlisted"
    );
    assert!(h
        .dataplane
        .backends()
        .get(&BackendKey::tcp(b.addr))
        .is_some());
}

#[tokio::test]
async fn a_removed_frontend_stops_accepting_and_drains() {
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(test_config());
    let gone = free_addr(LOCALHOST);
    let stays = free_addr(LOCALHOST);
    h.publish(table(vec![
        frontend(gone, vec![up(a.addr)]),
        frontend(stays, vec![up(a.addr)]),
    ]));
    h.wait_bound(gone).await;
    h.wait_bound(stays).await;

    let mut long = TcpStream::connect(gone).await.unwrap();
    assert_eq!(read_tag(&mut long).await.unwrap(), "a");
    echo_once(&mut long, b"before").await.unwrap();

    h.publish(table(vec![frontend(stays, vec![up(a.addr)])]));
    assert!(wait_refused(gone).await, "new connects refused");
    assert_eq!(h.state(gone), None, "status entry removed");
    echo_once(&mut long, b"after removal").await.unwrap();
    assert_eq!(roundtrip(stays, b"other").await.unwrap(), "a");
    assert_eq!(h.frontend_stats(gone).active, 1);

    drop(long);
    assert!(eventually(PATIENCE, || h.frontend_stats(gone).active == 0).await);
    assert_eq!(h.frontend_stats(gone).cut, 0);
    assert_eq!(h.dataplane.live_connections(), 0);
}

#[tokio::test]
async fn drain_timeout_cuts_what_outlives_it() {
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(vipd::dataplane::DataplaneConfig {
        drain_timeout: Duration::from_millis(200),
        ..test_config()
    });
    let gone = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(gone, vec![up(a.addr)])]));
    h.wait_bound(gone).await;
    let mut long = TcpStream::connect(gone).await.unwrap();
    assert_eq!(read_tag(&mut long).await.unwrap(), "a");
    echo_once(&mut long, b"hi").await.unwrap();

    h.publish(table(vec![]));
    assert!(
        closed_by_peer(&mut long).await,
        "cut after the drain timeout"
    );
    assert!(eventually(PATIENCE, || h.frontend_stats(gone).cut == 1).await);
    assert!(eventually(PATIENCE, || h.frontend_stats(gone).active == 0).await);
}

#[tokio::test]
async fn a_frontend_removed_and_added_again_serves_again() {
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(test_config());
    let listen = free_addr(LOCALHOST);
    let t = table(vec![frontend(listen, vec![up(a.addr)])]);
    for round in 0..5 {
        h.publish(t.clone());
        h.wait_bound(listen).await;
        assert_eq!(roundtrip(listen, b"x").await.unwrap(), "a", "round {round}");
        h.publish(table(vec![]));
    }
    // Publishing the same table twice changes nothing (no rebind).
    h.publish(t.clone());
    h.wait_bound(listen).await;
    h.publish(t);
    assert!(h.dataplane.listener_status().is_bound(&tcp_key(listen)));
    assert_eq!(roundtrip(listen, b"y").await.unwrap(), "a");
}
