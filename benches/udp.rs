//! UDP data plane bench tool (not criterion: it drives real sockets). Prints one JSON line per
//! scenario:
//! - `flow_lookup`: ns per `FlowTable::lookup_or_admit` hit, 10,000 live flows (the per-datagram
//!   table cost).
//! - `udp_pingpong`: one client, sequential request/response through vipd to an echo backend on
//!   loopback: rate and round-trip percentiles.
//! - `udp_window`: 8 clients (8 flows), 32 datagrams in flight each, through vipd: replies per
//!   second and datagrams lost (bounded: 400,000 datagrams or 5 s).
//!
//! Run: `cargo bench --bench udp` (everything on 127.0.0.1; bounded in count and time).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use vipd::dataplane::udp::flows::{Admit, FlowTable};
use vipd::dataplane::{Dataplane, DataplaneConfig};
use vipd::published;
use vipd::table::{Backend, BackendState, Frontend, FrontendKey, FrontendKind, Protocol, Table};

fn flow_lookup() {
    let n = 10_000u32;
    let mut t: FlowTable<u32> = FlowTable::new(Duration::from_secs(60), 65_536);
    let now = Instant::now();
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5000)))
        .collect();
    for (i, a) in addrs.iter().enumerate() {
        if let Admit::Vacant(v) = t.lookup_or_admit(*a, now) {
            v.insert(i as u32);
        }
    }
    let lookups = 2_000_000usize;
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..lookups {
        if let Admit::Existing(v) = t.lookup_or_admit(addrs[i % addrs.len()], now) {
            sum += u64::from(*v);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / lookups as f64;
    println!(
        r#"{{"bench":"flow_lookup","flows":{n},"lookups":{lookups},"ns_per_lookup":{ns:.1},"check":{sum}}}"#
    );
}

async fn echo_backend() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], peer).await;
        }
    });
    addr
}

async fn start_vipd(backend: SocketAddr) -> (Dataplane, SocketAddr, published::TablePublisher) {
    let (mut publisher, reader) = published::channel();
    let mut dp = Dataplane::new(DataplaneConfig::default(), reader);
    let listen = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let table = Table {
        frontends: vec![Frontend {
            protocol: Protocol::Udp,
            listen,
            kind: FrontendKind::ServicePort,
            vip_name: None,
            app: "/bench".into(),
            owner_kind: vipd::table::OwnerKind::App,
            apps: vec!["/bench".into()],
            port_index: 0,
            port_name: None,
            options: Default::default(),
            backends: vec![Backend {
                address: backend,
                task: "t".into(),
                state: BackendState::Up,
            }]
            .into(),
        }],
    };
    dp.reconcile(&publisher.publish(table));
    let key = FrontendKey {
        protocol: Protocol::Udp,
        listen,
    };
    let status = dp.listener_status();
    let start = Instant::now();
    while !status.is_bound(&key) {
        assert!(start.elapsed() < Duration::from_secs(10), "not bound");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (dp, listen, publisher)
}

async fn pingpong(listen: SocketAddr) {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(listen).await.unwrap();
    let payload = [7u8; 64];
    let mut buf = [0u8; 256];
    let n = 20_000usize;
    let mut rtts = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        client.send(&payload).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .expect("reply")
            .unwrap();
        rtts.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    rtts.sort();
    let p = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize].as_micros();
    println!(
        r#"{{"bench":"udp_pingpong","datagrams":{n},"per_sec":{:.0},"rtt_us_p50":{},"rtt_us_p99":{},"rtt_us_max":{}}}"#,
        n as f64 / secs,
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

async fn window(listen: SocketAddr) {
    const CLIENTS: usize = 8;
    const WINDOW: usize = 32;
    const QUOTA: u64 = 50_000; // per client
    let limit = Duration::from_secs(5);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            client.connect(listen).await.unwrap();
            let payload = [1u8; 512];
            let mut buf = [0u8; 1024];
            let (mut sent, mut got, mut refills) = (0u64, 0u64, 0u64);
            for _ in 0..WINDOW {
                client.send(&payload).await.unwrap();
                sent += 1;
            }
            while got < QUOTA && start.elapsed() < limit {
                match tokio::time::timeout(Duration::from_millis(100), client.recv(&mut buf)).await
                {
                    Ok(Ok(_)) => {
                        got += 1;
                        client.send(&payload).await.unwrap();
                        sent += 1;
                    }
                    _ => {
                        refills += 1;
                        for _ in 0..WINDOW {
                            client.send(&payload).await.unwrap();
                            sent += 1;
                        }
                    }
                }
            }
            (sent, got, refills)
        }));
    }
    let (mut sent, mut got, mut refills) = (0, 0, 0);
    for t in tasks {
        let (s, g, r) = t.await.unwrap();
        sent += s;
        got += g;
        refills += r;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        r#"{{"bench":"udp_window","clients":{CLIENTS},"window":{WINDOW},"sent":{sent},"replies":{got},"replies_per_sec":{:.0},"window_refills":{refills},"secs":{secs:.2}}}"#,
        got as f64 / secs
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    flow_lookup();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let backend = echo_backend().await;
        let (dp, listen, _publisher) = start_vipd(backend).await;
        pingpong(listen).await;
        window(listen).await;
        let stats = dp.udp_stats().frontends_snapshot();
        if let Some((_, s)) = stats.first() {
            println!(
                r#"{{"bench":"udp_counters","datagrams_in":{},"datagrams_out":{},"dropped":{},"dropped_kernel_rx":{}}}"#,
                s.datagrams_in,
                s.datagrams_out,
                s.dropped(),
                s.dropped_kernel_rx
            );
        }
        dp.shutdown(Duration::from_secs(1)).await;
    });
}
