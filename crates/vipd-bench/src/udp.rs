//! UDP load mode `udp-rr`: several flows (one connected socket, so one source port, each), each
//! keeping a window of datagrams in flight. Every datagram carries a 16-byte header
//! `[flow u32 LE][slot u32 LE][seq u64 LE]`; the server (serve `echo` or `small-response`) sends
//! the header back. A datagram not answered within `--timeout` counts as lost and its window slot
//! is refilled with a new sequence number; an answer arriving after that counts as `late`.
//!
//! Must NOT: allocate per datagram, or touch the network before the target was checked.

use crate::common::{self, io_kind, run_threads, Bounds, CommonArgs, LocalStats, Shared};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::time::timeout_at;

/// Size of the header every datagram starts with.
pub const HEADER: usize = 16;

#[derive(Debug, Clone, clap::Args)]
pub struct UdpRrArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Flows: each its own socket and source port.
    #[arg(long, default_value_t = 4)]
    pub flows: usize,
    /// Datagrams in flight per flow.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Bytes per request datagram (at least 16).
    #[arg(long, default_value_t = 64)]
    pub request_size: usize,
}

#[derive(Clone, Copy)]
struct Slot {
    seq: u64,
    sent: Instant,
    active: bool,
}

pub fn udp_rr(args: UdpRrArgs, target: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(args.flows > 0, "--flows must be at least 1");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    anyhow::ensure!(
        args.request_size >= HEADER && args.request_size <= 65507,
        "--request-size must be between {HEADER} and 65507"
    );
    let bounds = Bounds::from_args(&args.common);
    let shared = Shared::new(bounds.requests);
    let progress = common::progress_enabled(&args.common);
    let threads = args.common.threads.max(1);
    let a = args.clone();
    let sh = shared.clone();
    let (stats, elapsed) = run_threads(
        threads,
        "udp-rr",
        &shared,
        &bounds,
        progress,
        move |idx, stats| {
            let a = a.clone();
            let sh = sh.clone();
            let flows = (idx..a.flows).step_by(threads);
            common::join_local_workers(flows.map(move |flow| {
                flow_worker(
                    a.clone(),
                    flow as u32,
                    target,
                    bounds,
                    sh.clone(),
                    stats.clone(),
                )
            }))
        },
    )?;
    let answered_or_lost = stats.ok + stats.lost;
    let loss_pct = if answered_or_lost == 0 {
        0.0
    } else {
        stats.lost as f64 * 100.0 / answered_or_lost as f64
    };
    let mut r = common::base_result("udp-rr", &args.common, target, &bounds, &stats, elapsed);
    r.insert("flows".into(), json!(args.flows));
    r.insert("window".into(), json!(args.window));
    r.insert("request_size".into(), json!(args.request_size));
    r.insert("sent".into(), json!(stats.sent));
    r.insert("received".into(), json!(stats.ok));
    r.insert("lost".into(), json!(stats.lost));
    r.insert("late".into(), json!(stats.late));
    r.insert("in_flight_at_end".into(), json!(stats.in_flight_at_end));
    r.insert(
        "loss_pct".into(),
        json!((loss_pct * 10000.0).round() / 10000.0),
    );
    let summary = format!(
        "udp-rr {target}: {} responses in {:.2}s = {:.0}/s ({} flows x window {}), sent {}, lost {} ({:.4}%), late {}\n  {}\n  {}",
        stats.ok,
        elapsed.as_secs_f64(),
        stats.ok as f64 / elapsed.as_secs_f64(),
        args.flows,
        args.window,
        stats.sent,
        stats.lost,
        loss_pct,
        stats.late,
        common::latency_summary(&stats.hist),
        common::errors_summary(&stats)
    );
    common::emit(r, &summary)
}

fn write_header(buf: &mut [u8], flow: u32, slot: u32, seq: u64) {
    buf[0..4].copy_from_slice(&flow.to_le_bytes());
    buf[4..8].copy_from_slice(&slot.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
}

fn read_header(buf: &[u8]) -> (u32, u32, u64) {
    let flow = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
    let slot = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    (flow, slot, seq)
}

async fn flow_worker(
    a: UdpRrArgs,
    flow: u32,
    target: SocketAddr,
    bounds: Bounds,
    shared: Arc<Shared>,
    stats: LocalStats,
) {
    let bind: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => return stats.borrow_mut().error(io_kind(&e)),
    };
    if let Err(e) = sock.connect(target).await {
        return stats.borrow_mut().error(io_kind(&e));
    }
    let timeout = a.common.timeout;
    let scan_every = (timeout / 4).max(Duration::from_millis(1));
    let mut out = vec![0u8; a.request_size];
    for (i, b) in out.iter_mut().enumerate().skip(HEADER) {
        *b = (i % 251) as u8;
    }
    let mut inbuf = vec![0u8; 65536];
    let now = Instant::now();
    let mut slots = vec![
        Slot {
            seq: 0,
            sent: now,
            active: false
        };
        a.window
    ];
    let mut next_seq: u64 = 0;
    let mut sent = 0u64;
    let mut lost = 0u64;
    let mut late = 0u64;

    // Sends a new datagram in `slot` if the bounds allow; returns whether it did.
    macro_rules! refill {
        ($slot:expr) => {{
            let slot: usize = $slot;
            let now = Instant::now();
            if now < bounds.deadline && shared.claim() {
                write_header(&mut out, flow, slot as u32, next_seq);
                match sock.send(&out).await {
                    Ok(_) => {
                        slots[slot] = Slot {
                            seq: next_seq,
                            sent: now,
                            active: true,
                        };
                        next_seq += 1;
                        sent += 1;
                    }
                    Err(e) => {
                        // The slot stays empty; it is retried at the next scan.
                        slots[slot].active = false;
                        stats.borrow_mut().error(io_kind(&e));
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            } else {
                slots[slot].active = false;
            }
        }};
    }

    for slot in 0..a.window {
        refill!(slot);
    }
    let mut next_scan = Instant::now() + scan_every;
    loop {
        let now = Instant::now();
        if now >= bounds.deadline {
            break;
        }
        let wake = tokio::time::Instant::from_std(next_scan.min(bounds.deadline));
        match timeout_at(wake, sock.recv(&mut inbuf)).await {
            Ok(Ok(n)) => {
                if n < HEADER {
                    stats.borrow_mut().error("short_datagram");
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let (f, slot, seq) = read_header(&inbuf[..n]);
                let slot = slot as usize;
                if f != flow || slot >= slots.len() {
                    stats.borrow_mut().error("foreign_datagram");
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let s = slots[slot];
                if s.active && s.seq == seq {
                    stats.borrow_mut().record(s.sent.elapsed());
                    shared.completed.fetch_add(1, Ordering::Relaxed);
                    refill!(slot);
                    if !slots[slot].active && slots.iter().all(|s| !s.active) {
                        break;
                    }
                } else {
                    late += 1;
                }
            }
            Ok(Err(e)) => {
                // E.g. ECONNREFUSED from an ICMP port unreachable on the connected socket.
                stats.borrow_mut().error(io_kind(&e));
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= next_scan {
            next_scan = now + scan_every;
            let mut any_active = false;
            for slot in 0..slots.len() {
                let s = slots[slot];
                if s.active && now.duration_since(s.sent) >= timeout {
                    lost += 1;
                    refill!(slot);
                } else if !s.active {
                    refill!(slot);
                }
                any_active |= slots[slot].active;
            }
            if !any_active {
                break;
            }
        }
    }
    // Outstanding at the end: older than the timeout counts as lost, the rest as in flight.
    let now = Instant::now();
    let mut in_flight = 0u64;
    for s in slots.iter().filter(|s| s.active) {
        if now.duration_since(s.sent) >= timeout {
            lost += 1;
        } else {
            in_flight += 1;
        }
    }
    let mut st = stats.borrow_mut();
    st.sent += sent;
    st.lost += lost;
    st.late += late;
    st.in_flight_at_end += in_flight;
}
