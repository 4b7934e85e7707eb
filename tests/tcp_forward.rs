//! TCP forwarding through the data plane: service-port and VIP frontends, round-robin spread,
//! retry past a refusing backend, health tiers, and the relay's behaviours (echo, half-close both
//! ways, idle timeout, max lifetime, multi-MB integrity, backend reset mid-stream, byte counts),
//! each proved for both relays: `<test>::copy` and `<test>::splice` (the latter only in builds
//! with the splice relay).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vipd::balance::ConnectFailure;
use vipd::dataplane::relay::{thread_pipe_stats, PipeStats};
use vipd::dataplane::{DataplaneConfig, RelayMode};
use vipd::table::BackendState;

/// Defines `$name::copy` and (where the build has them) `$name::splice` and `$name::auto`, each
/// running `$name(mode)`.
macro_rules! both_relays {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn copy() {
                super::$name(vipd::dataplane::RelayMode::Copy).await
            }
            #[cfg(all(feature = "splice", target_os = "linux"))]
            #[tokio::test]
            async fn splice() {
                super::$name(vipd::dataplane::RelayMode::Splice).await
            }
            #[cfg(all(feature = "splice", target_os = "linux"))]
            #[tokio::test]
            async fn auto() {
                super::$name(vipd::dataplane::RelayMode::Auto).await
            }
        }
    )*};
}

both_relays!(
    echo_through_a_service_port_frontend,
    half_close_client_first_reply_still_flows,
    half_close_backend_first_client_keeps_sending,
    idle_connections_are_closed_after_the_idle_timeout,
    max_lifetime_closes_a_busy_connection,
    multi_megabyte_transfer_both_ways_is_intact,
    a_backend_reset_mid_stream_closes_the_client,
);

/// The test configuration with relay `mode`.
fn relay_config(mode: RelayMode) -> DataplaneConfig {
    DataplaneConfig {
        tcp_relay: mode,
        ..test_config()
    }
}

/// Proves which relay moved the bytes. The test runtime is current-thread, so every relay of
/// the test runs on this thread and this thread's pipe counters are the test's own.
struct Engine {
    mode: RelayMode,
    before: PipeStats,
}

impl Engine {
    fn watch(mode: RelayMode) -> Engine {
        Engine {
            mode,
            before: thread_pipe_stats(),
        }
    }

    /// Splice: exactly the `counted` bytes went through pipes. Copy: no byte did.
    fn assert_moved(&self, counted: u64) {
        let spliced = thread_pipe_stats().spliced_bytes - self.before.spliced_bytes;
        match self.mode {
            RelayMode::Copy => assert_eq!(spliced, 0, "the copy relay spliced"),
            RelayMode::Splice => {
                assert!(counted > 0);
                assert_eq!(spliced, counted, "every counted byte went through a pipe");
            }
            RelayMode::Auto => assert!(spliced <= counted),
        }
    }
}

/// Waits until `addr` has no live connection and returns its counters.
async fn settled(h: &Harness, addr: SocketAddr) -> vipd::balance::BackendStatsSnapshot {
    assert!(
        eventually(PATIENCE, || h.backend_stats(addr).active == 0).await,
        "connection released"
    );
    h.backend_stats(addr)
}

async fn echo_through_a_service_port_frontend(mode: RelayMode) {
    init_tracing();
    let engine = Engine::watch(mode);
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(relay_config(mode));
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(a.addr)])]));
    h.wait_bound(listen).await;

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(roundtrip(listen, &payload).await.unwrap(), "a");
    assert_eq!(a.connections(), 1);
    let fs = h.frontend_stats(listen);
    assert_eq!(fs.accepted, 1);
    assert!(
        eventually(PATIENCE, || h.backend_stats(a.addr).active == 0).await,
        "connection released"
    );
    let bs = h.backend_stats(a.addr);
    assert_eq!(bs.total, 1);
    assert_eq!(bs.bytes_to_backend, payload.len() as u64);
    assert_eq!(
        bs.bytes_from_backend,
        payload.len() as u64 + 2,
        "tag line + echo"
    );
    engine.assert_moved(bs.bytes_to_backend + bs.bytes_from_backend);
}

#[tokio::test]
async fn echo_through_vip_frontends_on_other_loopback_addresses() {
    init_tracing();
    // Backends on 127.0.0.1 and 127.0.0.3; VIPs on 127.0.0.2 and 127.0.0.3 (all of 127/8 is lo).
    let a = TaggedEchoServer::start("a").await;
    let c = TaggedEchoServer::start_on(loopback(3), "c").await;
    let mut h = Harness::new(test_config());
    let vip2 = free_addr(loopback(2));
    let vip3 = free_addr(loopback(3));
    h.publish(table(vec![
        vip_frontend(vip2, vec![up(a.addr)]),
        vip_frontend(vip3, vec![up(c.addr)]),
    ]));
    h.wait_bound(vip2).await;
    h.wait_bound(vip3).await;
    assert_eq!(roundtrip(vip2, b"to vip two").await.unwrap(), "a");
    assert_eq!(roundtrip(vip3, b"to vip three").await.unwrap(), "c");
    assert_eq!(
        h.dataplane.listener_status().local_addr(&tcp_key(vip2)),
        Some(vip2)
    );
}

#[tokio::test]
async fn round_robin_spreads_30_connections_10_10_10() {
    init_tracing();
    let servers = [
        TaggedEchoServer::start("a").await,
        TaggedEchoServer::start("b").await,
        TaggedEchoServer::start("c").await,
    ];
    let mut h = Harness::new(test_config());
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(
        listen,
        servers.iter().map(|s| up(s.addr)).collect(),
    )]));
    h.wait_bound(listen).await;

    let mut tags: HashMap<String, usize> = HashMap::new();
    for i in 0..30 {
        let tag = roundtrip(listen, format!("conn {i}").as_bytes())
            .await
            .unwrap();
        *tags.entry(tag).or_default() += 1;
    }
    for s in &servers {
        assert_eq!(tags.get(&s.tag), Some(&10), "tags: {tags:?}");
        assert_eq!(s.connections(), 10);
    }
}

#[tokio::test]
async fn a_refusing_backend_costs_clients_nothing() {
    init_tracing();
    let a = TaggedEchoServer::start("a").await;
    let b = TaggedEchoServer::start("b").await;
    let dead = refusing_addr(LOCALHOST);
    let mut h = Harness::new(test_config());
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(
        listen,
        vec![up(a.addr), up(dead), up(b.addr)],
    )]));
    h.wait_bound(listen).await;

    for i in 0..60 {
        let tag = roundtrip(listen, format!("conn {i}").as_bytes()).await;
        assert!(tag.is_ok(), "connection {i} failed: {tag:?}");
    }
    assert_eq!(a.connections() + b.connections(), 60);
    assert!(a.connections() > 0 && b.connections() > 0);
    let dead_stats = h.backend_stats(dead);
    assert!(dead_stats.failures_refused > 0, "{dead_stats:?}");
    assert_eq!(dead_stats.failures_refused, dead_stats.failures());
    assert_eq!(dead_stats.consecutive_failures, dead_stats.failures_refused);
    assert_eq!(dead_stats.last_failure, Some(ConnectFailure::Refused));
    assert_eq!(dead_stats.total, 0);
    assert_eq!(h.backend_stats(a.addr).consecutive_failures, 0);
    assert_eq!(h.frontend_stats(listen).no_backend, 0);
}

#[tokio::test]
async fn every_backend_refusing_closes_the_client_after_the_tries() {
    init_tracing();
    let dead = [
        refusing_addr(LOCALHOST),
        refusing_addr(LOCALHOST),
        refusing_addr(LOCALHOST),
        refusing_addr(LOCALHOST),
    ];
    let mut h = Harness::new(test_config()); // connect_tries = 3
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(
        listen,
        dead.iter().map(|a| up(*a)).collect(),
    )]));
    h.wait_bound(listen).await;

    let mut s = TcpStream::connect(listen).await.unwrap();
    assert!(read_tag(&mut s).await.is_err(), "closed without a backend");
    assert!(eventually(PATIENCE, || h.frontend_stats(listen).no_backend == 1).await);
    let attempts: u64 = dead.iter().map(|a| h.backend_stats(*a).failures()).sum();
    assert_eq!(
        attempts, 3,
        "exactly connect_tries attempts, each on another backend"
    );
    assert!(dead.iter().all(|a| h.backend_stats(*a).failures() <= 1));
}

#[tokio::test]
async fn a_backend_that_never_answers_times_out_and_the_next_one_serves() {
    init_tracing();
    let Some(hole) = blackhole().await else {
        eprintln!("skipped: this kernel does not drop SYNs for a full accept queue");
        return;
    };
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(vipd::dataplane::DataplaneConfig {
        connect_timeout: Duration::from_millis(200),
        ..test_config()
    });
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(
        listen,
        vec![up(hole.addr), up(a.addr)],
    )]));
    h.wait_bound(listen).await;
    for i in 0..4 {
        assert_eq!(
            roundtrip(listen, b"x").await.unwrap(),
            "a",
            "connection {i}"
        );
    }
    let s = h.backend_stats(hole.addr);
    assert!(s.failures_timeout >= 2, "{s:?}");
    assert_eq!(s.failures_timeout, s.failures());
    assert_eq!(s.last_failure, Some(ConnectFailure::Timeout));
}

/// Sends `n` connections and returns how many each server got.
async fn spread(listen: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut tags = HashMap::new();
    for i in 0..n {
        let tag = roundtrip(listen, format!("{i}").as_bytes()).await.unwrap();
        *tags.entry(tag).or_default() += 1;
    }
    tags
}

#[tokio::test]
async fn health_tiers_up_then_unknown_then_fail_open_never_draining() {
    init_tracing();
    use BackendState::*;
    let up1 = TaggedEchoServer::start("up").await;
    let unknown1 = TaggedEchoServer::start("unknown").await;
    let unhealthy1 = TaggedEchoServer::start("unhealthy").await;
    let draining1 = TaggedEchoServer::start("draining").await;
    let mut h = Harness::new(test_config());
    let listen = free_addr(LOCALHOST);
    let all = |states: &[(SocketAddr, BackendState)]| {
        table(vec![frontend(
            listen,
            states.iter().map(|(a, s)| backend(*a, *s)).collect(),
        )])
    };

    h.publish(all(&[
        (up1.addr, Up),
        (unknown1.addr, Unknown),
        (unhealthy1.addr, Unhealthy),
        (draining1.addr, Draining),
    ]));
    h.wait_bound(listen).await;
    assert_eq!(spread(listen, 8).await, HashMap::from([("up".into(), 8)]));

    h.publish(all(&[
        (unknown1.addr, Unknown),
        (unhealthy1.addr, Unhealthy),
        (draining1.addr, Draining),
    ]));
    assert_eq!(
        spread(listen, 8).await,
        HashMap::from([("unknown".into(), 8)])
    );

    h.publish(all(&[
        (unhealthy1.addr, Unhealthy),
        (draining1.addr, Draining),
    ]));
    assert_eq!(
        spread(listen, 8).await,
        HashMap::from([("unhealthy".into(), 8)]),
        "fail open to a non-draining backend"
    );

    h.publish(all(&[(draining1.addr, Draining)]));
    let mut s = TcpStream::connect(listen).await.unwrap();
    assert!(
        read_tag(&mut s).await.is_err(),
        "only draining: closed, no backend"
    );
    assert_eq!(
        draining1.connections(),
        0,
        "draining never got a connection"
    );
    assert_eq!(h.frontend_stats(listen).no_backend, 1);
}

async fn half_close_client_first_reply_still_flows(mode: RelayMode) {
    init_tracing();
    let engine = Engine::watch(mode);
    // A backend that answers only after the client's FIN arrived.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let mut reply = b"got:".to_vec();
        reply.extend_from_slice(&got);
        s.write_all(&reply).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let mut h = Harness::new(relay_config(mode));
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(backend_addr)])]));
    h.wait_bound(listen).await;

    let mut c = TcpStream::connect(listen).await.unwrap();
    c.write_all(b"question").await.unwrap();
    c.shutdown().await.unwrap();
    let mut reply = Vec::new();
    within("reply after half-close", c.read_to_end(&mut reply))
        .await
        .unwrap();
    assert_eq!(reply, b"got:question");
    let bs = settled(&h, backend_addr).await;
    assert_eq!((bs.bytes_to_backend, bs.bytes_from_backend), (8, 12));
    engine.assert_moved(20);
}

async fn half_close_backend_first_client_keeps_sending(mode: RelayMode) {
    init_tracing();
    let engine = Engine::watch(mode);
    // A backend that says goodbye and half-closes first, then still reads what the client sends.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.unwrap();
        s.write_all(b"bye").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let _ = tx.send(got);
    });
    let mut h = Harness::new(relay_config(mode));
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(backend_addr)])]));
    h.wait_bound(listen).await;

    let mut c = TcpStream::connect(listen).await.unwrap();
    let mut first = Vec::new();
    within("backend FIN reaches the client", c.read_to_end(&mut first))
        .await
        .unwrap();
    assert_eq!(first, b"bye");
    c.write_all(b"still talking").await.unwrap();
    c.shutdown().await.unwrap();
    let got = within("backend receives after its own FIN", rx)
        .await
        .unwrap();
    assert_eq!(got, b"still talking");
    let bs = settled(&h, backend_addr).await;
    assert_eq!((bs.bytes_to_backend, bs.bytes_from_backend), (13, 3));
    engine.assert_moved(16);
}

async fn idle_connections_are_closed_after_the_idle_timeout(mode: RelayMode) {
    init_tracing();
    let engine = Engine::watch(mode);
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(DataplaneConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..relay_config(mode)
    });
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(a.addr)])]));
    h.wait_bound(listen).await;
    let mut c = TcpStream::connect(listen).await.unwrap();
    assert_eq!(read_tag(&mut c).await.unwrap(), "a");
    echo_once(&mut c, b"ping").await.unwrap();
    assert!(closed_by_peer(&mut c).await, "idle connection closed");
    let bs = settled(&h, a.addr).await;
    assert_eq!((bs.bytes_to_backend, bs.bytes_from_backend), (4, 2 + 4));
    engine.assert_moved(10);
}

async fn max_lifetime_closes_a_busy_connection(mode: RelayMode) {
    init_tracing();
    let engine = Engine::watch(mode);
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(DataplaneConfig {
        max_lifetime: Some(Duration::from_millis(300)),
        ..relay_config(mode)
    });
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(a.addr)])]));
    h.wait_bound(listen).await;
    let mut c = TcpStream::connect(listen).await.unwrap();
    assert_eq!(read_tag(&mut c).await.unwrap(), "a");
    // Keep it busy until the data plane closes it (bounded by count and time).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut closed = false;
    for _ in 0..100_000 {
        if echo_once(&mut c, b"busy").await.is_err() {
            closed = true;
            break;
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    assert!(closed, "busy connection closed at max lifetime");
    let bs = settled(&h, a.addr).await;
    engine.assert_moved(bs.bytes_to_backend + bs.bytes_from_backend);
}

/// Deterministic pseudo-random bytes (xorshift64*): no run of equal bytes hides a reordering.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha1_hex(bytes: &[u8]) -> String {
    sha1_smol::Sha1::from(bytes).digest().to_string()
}

/// Sends `payload` through `listen` to a tagged echo backend while reading the echo at the same
/// time; returns (tag, echoed bytes). Bounded by [`PATIENCE`].
async fn stream_through(listen: SocketAddr, payload: Vec<u8>) -> (String, Vec<u8>) {
    let mut c = TcpStream::connect(listen).await.unwrap();
    let tag = within("tag", read_tag(&mut c)).await.unwrap();
    let (mut r, mut w) = c.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut echo = Vec::new();
    within("echo to EOF", r.read_to_end(&mut echo))
        .await
        .unwrap();
    within("writer", writer).await.unwrap();
    (tag, echo)
}

/// 8 MiB each way at once (client → backend and the echo back), checked with a SHA-1 of both
/// streams, and counted exactly.
async fn multi_megabyte_transfer_both_ways_is_intact(mode: RelayMode) {
    init_tracing();
    let engine = Engine::watch(mode);
    let a = TaggedEchoServer::start("a").await;
    let mut h = Harness::new(relay_config(mode));
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(a.addr)])]));
    h.wait_bound(listen).await;

    const LEN: usize = 8 << 20;
    let payload = pseudo_random(LEN, 0x5eed);
    let sent_sum = sha1_hex(&payload);
    let (tag, echo) = stream_through(listen, payload).await;
    assert_eq!(tag, "a");
    assert_eq!(echo.len(), LEN, "every byte came back");
    assert_eq!(sha1_hex(&echo), sent_sum, "and in order");
    let bs = settled(&h, a.addr).await;
    assert_eq!(bs.bytes_to_backend, LEN as u64);
    assert_eq!(bs.bytes_from_backend, LEN as u64 + 2, "tag line + echo");
    engine.assert_moved(bs.bytes_to_backend + bs.bytes_from_backend);
}

/// A backend that reads part of a long upload, answers, and resets: the client's connection is
/// closed (EOF or reset) instead of hanging, the backend's connection is released, and at least
/// the bytes the backend read were counted, never more than the client sent.
async fn a_backend_reset_mid_stream_closes_the_client(mode: RelayMode) {
    init_tracing();
    const READ_BEFORE_RESET: usize = 256 * 1024;
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0;
        while read < READ_BEFORE_RESET {
            match s.read(&mut buf).await.unwrap() {
                0 => panic!("client EOF before the reset"),
                n => read += n,
            }
        }
        s.write_all(b"partial answer").await.unwrap();
        // SO_LINGER 0 turns close into RST.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        read
    });
    let mut h = Harness::new(relay_config(mode));
    let listen = free_addr(LOCALHOST);
    h.publish(table(vec![frontend(listen, vec![up(backend_addr)])]));
    h.wait_bound(listen).await;

    let c = TcpStream::connect(listen).await.unwrap();
    let (mut r, mut w) = c.into_split();
    // 64 MiB at most: far more than the backend reads; the write fails once the reset arrives.
    let writer = tokio::spawn(async move {
        let chunk = pseudo_random(1 << 20, 7);
        let mut sent = 0u64;
        for _ in 0..64 {
            if w.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    let read_by_backend = within("backend read then reset", server).await.unwrap();
    assert!(
        closed_by_peer_half(&mut r).await,
        "client closed after the backend reset"
    );
    let sent_at_most = within("client writer ends", writer).await.unwrap() + (1 << 20);
    let bs = settled(&h, backend_addr).await;
    assert!(
        bs.bytes_to_backend >= read_by_backend as u64,
        "{} counted, {read_by_backend} read by the backend",
        bs.bytes_to_backend
    );
    assert!(bs.bytes_to_backend <= sent_at_most);
    assert_eq!(bs.total, 1);
}

/// Reads a read half until EOF or error; true if that happened within [`PATIENCE`].
async fn closed_by_peer_half(r: &mut tokio::net::tcp::OwnedReadHalf) -> bool {
    let work = async {
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink).await;
    };
    tokio::time::timeout(PATIENCE, work).await.is_ok()
}

/// The same transfer through a copy data plane and a splice data plane leaves the same per-backend
/// byte counters (the exact sizes sent and echoed), and each relay moved the bytes its own way.
#[cfg(all(feature = "splice", target_os = "linux"))]
#[tokio::test]
async fn both_relays_count_the_same_bytes_for_the_same_transfer() {
    init_tracing();
    const LEN: usize = (3 << 20) + 12_345; // not a multiple of any buffer or pipe size
    let payload = pseudo_random(LEN, 42);
    let mut counted = Vec::new();
    for mode in [RelayMode::Copy, RelayMode::Splice] {
        let engine = Engine::watch(mode);
        let a = TaggedEchoServer::start("a").await;
        let mut h = Harness::new(relay_config(mode));
        let listen = free_addr(LOCALHOST);
        h.publish(table(vec![frontend(listen, vec![up(a.addr)])]));
        h.wait_bound(listen).await;
        let (_, echo) = stream_through(listen, payload.clone()).await;
        assert!(echo == payload, "{mode}: echo intact");
        let bs = settled(&h, a.addr).await;
        engine.assert_moved(bs.bytes_to_backend + bs.bytes_from_backend);
        counted.push((bs.bytes_to_backend, bs.bytes_from_backend));
    }
    assert_eq!(counted[0], counted[1], "copy vs splice");
    assert_eq!(counted[0], (LEN as u64, LEN as u64 + 2));
}
