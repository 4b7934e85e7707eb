//! vipd under a UDP blast it cannot keep up with: datagrams arrive much faster than the slow
//! backend answers (and faster than one receive loop forwards, with a small receive buffer).
//! vipd must stay up, keep memory bounded (no queue grows), count every datagram it lost, and
//! answer a new client afterwards.
//!
//! Its own test binary: it reads this process's RSS.

mod support;
mod udp_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use udp_support::*;

const BLASTERS: usize = 4;
const PER_BLASTER: u64 = 12_500; // 50,000 datagrams in all
const SIZE: usize = 1_200;
const BLAST_LIMIT: Duration = Duration::from_secs(5);

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blast_beyond_capacity_is_dropped_and_counted_and_vipd_keeps_answering() {
    init_tracing();
    let slow = UdpServer::start("slow", Reply::Slow(Duration::from_millis(1))).await;
    let mut config = test_config();
    config.udp.recv_buffer = Some(16 * 1024);
    let mut h = Harness::new(config);
    let listen = free_udp_addr(LOCALHOST);
    h.publish(table(vec![udp_frontend(listen, vec![up(slow.addr)])]));
    wait_udp_bound(&h, listen).await;
    let warmup = UdpClient::new().await;
    assert_eq!(warmup.ask_tag(listen, b"warm").await, "slow");
    let rss_before = rss_bytes();

    // Blocking senders on their own threads, bounded in count and in time.
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + BLAST_LIMIT;
    let threads: Vec<_> = (0..BLASTERS)
        .map(|i| {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let payload = vec![i as u8; SIZE];
                for n in 0..PER_BLASTER {
                    if n % 256 == 0 && Instant::now() >= deadline {
                        break;
                    }
                    socket.send_to(&payload, listen).expect("send");
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        tokio::task::spawn_blocking(move || t.join().unwrap())
            .await
            .unwrap();
    }
    let blasted = sent.load(Ordering::Relaxed);
    let rss_after = rss_bytes();

    // A new client is answered (the slow backend first works off its own full queue).
    let probe = UdpClient::new().await;
    let mut probes = 0u64;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let reply = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer after the blast"
        );
        probe.send(listen, b"probe").await;
        probes += 1;
        if let Ok(reply) = probe.recv_within(Duration::from_millis(300)).await {
            break reply;
        }
    };
    assert_eq!(split_tag(&reply).0, "slow");

    // Every datagram sent is accounted for: received by vipd, or dropped by the kernel on the
    // frontend socket and reported to vipd (SO_RXQ_OVFL, carried by the probe).
    let total = 1 + blasted + probes;
    let s = udp_stats(&h, listen);
    eprintln!("blasted {blasted}, probes {probes}: {s:?}");
    eprintln!(
        "rss before {} KiB, after the blast {} KiB",
        rss_before / 1024,
        rss_after / 1024
    );
    assert_eq!(
        s.datagrams_in + s.dropped_kernel_rx,
        total,
        "every datagram received or counted as dropped: {s:?}"
    );
    assert!(
        s.dropped() > 0,
        "the blast overflowed somewhere countable: {s:?}"
    );
    assert_eq!(
        s.datagrams_in,
        s.datagrams_to_backends + s.dropped_upstream_full + s.dropped_send_error,
        "everything received was forwarded or counted: {s:?}"
    );
    assert_eq!(s.flows_created, 1 + BLASTERS as u64 + 1, "{s:?}");
    // 60 MB went through; nothing may have queued it.
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 32 * 1024 * 1024,
        "RSS grew by {} KiB during the blast",
        growth / 1024
    );
}
