//! Passive health through real sockets: a backend killed under load costs clients at most the
//! connections in flight and gets ejected; an ejected backend that comes back gets traffic
//! again after its ejection; the max-ejection share of a pool is honored.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use vipd::balance::HealthConfig;
use vipd::dataplane::DataplaneConfig;
use vipd::health::OutlierConfig;

fn config(outlier: OutlierConfig, max_ejection_percent: u8) -> (DataplaneConfig, HealthConfig) {
    let dataplane = DataplaneConfig {
        connect_timeout: Duration::from_millis(500),
        ..test_config()
    };
    let health = HealthConfig {
        outlier,
        max_ejection_percent,
        ..HealthConfig::default()
    };
    (dataplane, health)
}

fn harness((dataplane, health): (DataplaneConfig, HealthConfig)) -> Harness {
    Harness::with_health(dataplane, health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_costs_at_most_the_connections_in_flight_and_is_ejected() {
    init_tracing();
    let servers = vec![
        TaggedEchoServer::start("a").await,
        TaggedEchoServer::start("b").await,
        TaggedEchoServer::start("victim").await,
    ];
    let victim_addr = servers[2].addr;
    let mut h = harness(config(
        OutlierConfig {
            eject_after: 3,
            base: Duration::from_secs(60),
            max: Duration::from_secs(60),
        },
        50,
    ));
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(
        listen,
        servers.iter().map(|s| up(s.addr)).collect(),
    )]));
    h.wait_bound(listen).await;

    // 8 clients, each doing sequential request/response: at most 8 connections in flight.
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 150;
    let stop = Arc::new(AtomicBool::new(false));
    // (start of the round trip, ok)
    let outcomes = Arc::new(Mutex::new(Vec::<(Instant, bool)>::new()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, outcomes) = (stop.clone(), outcomes.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let start = Instant::now();
                let ok = roundtrip(listen, b"request").await.is_ok();
                outcomes.lock().unwrap().push((start, ok));
            }
        }));
    }
    // Kill the victim once traffic flows through it.
    let victim_busy = eventually(PATIENCE, || servers[2].connections() >= 10).await;
    assert!(victim_busy, "victim got no traffic");
    let in_flight_before = h.backend_stats(victim_addr).active;
    let mut servers = servers;
    drop(servers.pop()); // closes its listener and cuts its connections
    assert!(wait_refused(victim_addr).await, "victim still accepting");
    let killed = Instant::now();

    for c in clients {
        within("clients", c).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let outcomes = outcomes.lock().unwrap().clone();
    let failed: Vec<Instant> = outcomes
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| *t)
        .collect();
    let after_kill = outcomes.iter().filter(|(t, _)| *t >= killed).count();
    eprintln!(
        "round trips: {}, failed: {}, victim in flight just before the kill: {in_flight_before}, \
         round trips started after the kill: {after_kill}",
        outcomes.len(),
        failed.len()
    );
    assert!(
        failed.len() <= CLIENTS,
        "more failures than connections in flight"
    );
    assert!(
        failed.iter().all(|t| *t < killed),
        "a round trip that started after the kill failed"
    );
    assert!(after_kill > 0, "the load loop ended before the kill");
    let s = h.backend_stats(victim_addr);
    assert!(s.ejected && s.ejections == 1, "{s:?}");
    assert_eq!(s.health_reason.map(|r| r.as_str()), Some("connect_refused"));
    // Ejected: further connections do not even try it.
    let failures = s.failures();
    for _ in 0..10 {
        roundtrip(listen, b"x").await.unwrap();
    }
    assert_eq!(h.backend_stats(victim_addr).failures(), failures);
    assert!(h.frontend_stats(listen).no_backend == 0);
}

/// A tagged echo server on a given address (to bring a dead backend back on its port).
async fn echo_on(addr: SocketAddr, tag: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.expect("rebind the dead port");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(format!("{tag}\n").as_bytes()).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    })
}

#[tokio::test]
async fn a_revived_backend_gets_traffic_again_after_its_ejection() {
    init_tracing();
    let good = TaggedEchoServer::start("good").await;
    let dead = refusing_addr(LOCALHOST);
    let mut h = harness(config(
        OutlierConfig {
            eject_after: 2,
            base: Duration::from_millis(300),
            max: Duration::from_secs(1),
        },
        50,
    ));
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(good.addr), up(dead)])]));
    h.wait_bound(listen).await;
    // Clients never notice: the failed connect is retried on `good`.
    let ejected = eventually_async(PATIENCE, || async {
        assert_eq!(roundtrip(listen, b"x").await.unwrap(), "good");
        h.backend_stats(dead).ejected
    })
    .await;
    assert!(ejected, "{:?}", h.backend_stats(dead));
    let _revived = echo_on(dead, "revived").await;
    let back = eventually_async(PATIENCE, || async {
        roundtrip(listen, b"x").await.unwrap() == "revived"
    })
    .await;
    assert!(back, "revived backend never got traffic again");
    let s = h.backend_stats(dead);
    assert!(!s.ejected && s.consecutive_failures == 0, "{s:?}");
}

#[tokio::test]
async fn max_ejection_percent_is_honored() {
    init_tracing();
    let good = TaggedEchoServer::start("good").await;
    let dead: Vec<SocketAddr> = (0..3).map(|_| refusing_addr(LOCALHOST)).collect();
    let outlier = OutlierConfig {
        eject_after: 1,
        base: Duration::from_secs(60),
        max: Duration::from_secs(60),
    };
    // Enough tries to always reach `good` behind three dead backends.
    let (dataplane, health) = config(outlier, 50);
    let mut h = Harness::with_health(
        DataplaneConfig {
            connect_tries: 4,
            ..dataplane
        },
        health,
    );
    let listen = free_addr(LOCALHOST);
    let mut backends: Vec<_> = dead.iter().map(|a| up(*a)).collect();
    backends.push(up(good.addr));
    h.publish(table(vec![frontend(listen, backends)]));
    h.wait_bound(listen).await;
    let all_recorded = eventually_async(PATIENCE, || async {
        assert_eq!(roundtrip(listen, b"x").await.unwrap(), "good");
        dead.iter().all(|a| h.backend_stats(*a).ejections == 1)
    })
    .await;
    assert!(all_recorded);
    // 4 backends at 50 %: two ejections honored, the latest one is kept in selection.
    let before: Vec<u64> = dead
        .iter()
        .map(|a| h.backend_stats(*a).failures())
        .collect();
    for _ in 0..12 {
        assert_eq!(roundtrip(listen, b"x").await.unwrap(), "good");
    }
    let grew: Vec<bool> = dead
        .iter()
        .zip(&before)
        .map(|(a, b)| h.backend_stats(*a).failures() > *b)
        .collect();
    assert_eq!(
        grew.iter().filter(|g| **g).count(),
        1,
        "exactly one dead backend (over the 50 % share) is still tried: {grew:?}"
    );
}
