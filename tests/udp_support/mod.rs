//! UDP helpers for the integration tests: tagged/echo/streaming/slow UDP backends that record
//! the peers they saw, a client with bounded waits, and UDP frontends and stats for the harness
//! of `tests/support`.
//!
//! Every socket binds a loopback address chosen by the kernel; every wait is bounded.
#![allow(dead_code)]

use crate::support::*;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use vipd::dataplane::udp::UdpFrontendStatsSnapshot;
use vipd::dataplane::DataplaneConfig;
use vipd::table::{Backend, Frontend, FrontendKey, Protocol};

/// How a [`UdpServer`] answers a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `<tag>|<payload>`.
    Tagged,
    /// The payload, verbatim.
    Echo,
    /// For a payload `stream <n> <ms>`: `n` replies `<tag>|<i>`, one every `ms` milliseconds.
    Stream,
    /// Like `Tagged`, after `delay` per datagram (one at a time: a slow backend).
    Slow(Duration),
}

/// A UDP backend. Counts datagrams and remembers every peer (vipd's upstream socket) it saw.
pub struct UdpServer {
    pub addr: SocketAddr,
    pub tag: String,
    received: Arc<AtomicU64>,
    peers: Arc<Mutex<HashMap<SocketAddr, u64>>>,
    stop: CancellationToken,
}

impl UdpServer {
    pub async fn start(tag: &str, reply: Reply) -> Self {
        Self::start_on(LOCALHOST, tag, reply).await
    }

    pub async fn start_on(ip: IpAddr, tag: &str, reply: Reply) -> Self {
        let socket = Arc::new(UdpSocket::bind((ip, 0)).await.expect("bind udp backend"));
        let addr = socket.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let peers = Arc::new(Mutex::new(HashMap::new()));
        let stop = CancellationToken::new();
        let (count, seen, token, tag_bytes) = (
            received.clone(),
            peers.clone(),
            stop.clone(),
            tag.as_bytes().to_vec(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let (n, peer) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = socket.recv_from(&mut buf) => match r {
                        Ok(r) => r,
                        Err(_) => continue, // ICMP errors from earlier replies
                    },
                };
                count.fetch_add(1, Ordering::SeqCst);
                *seen.lock().unwrap().entry(peer).or_default() += 1;
                let payload = &buf[..n];
                match reply {
                    Reply::Echo => {
                        let _ = socket.send_to(payload, peer).await;
                    }
                    Reply::Tagged => {
                        let _ = socket.send_to(&tagged(&tag_bytes, payload), peer).await;
                    }
                    Reply::Slow(delay) => {
                        tokio::time::sleep(delay).await;
                        let _ = socket.send_to(&tagged(&tag_bytes, payload), peer).await;
                    }
                    Reply::Stream => {
                        let text = String::from_utf8_lossy(payload).into_owned();
                        let mut words = text.split_whitespace().skip(1);
                        let n: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
                        let ms: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(10);
                        let (socket, tag, token) =
                            (socket.clone(), tag_bytes.clone(), token.clone());
                        tokio::spawn(async move {
                            for i in 0..n {
                                // Pacing of generated traffic, not a wait for a condition.
                                tokio::select! {
                                    _ = token.cancelled() => return,
                                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                                }
                                let msg = tagged(&tag, i.to_string().as_bytes());
                                let _ = socket.send_to(&msg, peer).await;
                            }
                        });
                    }
                }
            }
        });
        UdpServer {
            addr,
            tag: tag.to_string(),
            received,
            peers,
            stop,
        }
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Distinct source addresses seen (one per vipd upstream socket, i.e. per flow/backend pick).
    pub fn peers(&self) -> Vec<SocketAddr> {
        let mut p: Vec<_> = self.peers.lock().unwrap().keys().copied().collect();
        p.sort();
        p
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn tagged(tag: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tag.len() + 1 + payload.len());
    out.extend_from_slice(tag);
    out.push(b'|');
    out.extend_from_slice(payload);
    out
}

/// Splits `<tag>|<payload>`.
pub fn split_tag(reply: &[u8]) -> (String, Vec<u8>) {
    match reply.iter().position(|b| *b == b'|') {
        Some(i) => (
            String::from_utf8_lossy(&reply[..i]).into_owned(),
            reply[i + 1..].to_vec(),
        ),
        None => (String::new(), reply.to_vec()),
    }
}

/// A client socket on 127.0.0.1 (one client address = one flow).
pub struct UdpClient {
    pub socket: UdpSocket,
}

impl UdpClient {
    pub async fn new() -> Self {
        UdpClient {
            socket: UdpSocket::bind((LOCALHOST, 0)).await.unwrap(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    pub async fn send(&self, to: SocketAddr, payload: &[u8]) {
        self.socket.send_to(payload, to).await.expect("send");
    }

    /// The next datagram, within `timeout`.
    pub async fn recv_within(&self, timeout: Duration) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        match tokio::time::timeout(timeout, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                buf.truncate(n);
                Ok(buf)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no reply")),
        }
    }

    /// Sends `payload` and returns the reply (bounded by [`PATIENCE`]).
    pub async fn ask(&self, to: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
        self.send(to, payload).await;
        self.recv_within(PATIENCE).await
    }

    /// Sends `payload` to a tagged backend through `to`; returns the tag, checking the echo.
    pub async fn ask_tag(&self, to: SocketAddr, payload: &[u8]) -> String {
        let reply = self.ask(to, payload).await.expect("reply");
        let (tag, echo) = split_tag(&reply);
        assert_eq!(echo, payload, "payload came back intact");
        tag
    }

    /// Sends until a reply comes (each try waits up to `per_try`), up to [`PATIENCE`] in all.
    /// For paths where a datagram may be lost on purpose (an ICMP-failing backend).
    pub async fn ask_until_reply(
        &self,
        to: SocketAddr,
        payload: &[u8],
        per_try: Duration,
    ) -> Option<Vec<u8>> {
        poll_until(PATIENCE, || async move {
            self.send(to, payload).await;
            self.recv_within(per_try).await.ok()
        })
        .await
    }

    /// A datagram already queued, without waiting.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        match self.socket.try_recv_from(&mut buf) {
            Ok((n, _)) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(_) => None,
        }
    }
}

// === tables and harness ===

pub fn udp_key(listen: SocketAddr) -> FrontendKey {
    FrontendKey {
        protocol: Protocol::Udp,
        listen,
    }
}

/// A UDP service-port frontend.
pub fn udp_frontend(listen: SocketAddr, backends: Vec<Backend>) -> Frontend {
    Frontend {
        protocol: Protocol::Udp,
        ..frontend(listen, backends)
    }
}

/// A UDP IP-VIP frontend.
pub fn udp_vip_frontend(listen: SocketAddr, backends: Vec<Backend>) -> Frontend {
    Frontend {
        protocol: Protocol::Udp,
        ..vip_frontend(listen, backends)
    }
}

/// A port free for UDP on `ip` a moment ago.
pub fn free_udp_addr(ip: IpAddr) -> SocketAddr {
    std::net::UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .expect("bind udp port 0")
}

/// An address where nothing receives UDP: datagrams to it draw ICMP port unreachable.
pub fn closed_udp_addr(ip: IpAddr) -> SocketAddr {
    free_udp_addr(ip)
}

/// [`test_config`] with the given UDP idle timeout and flow cap.
pub fn udp_config(idle: Duration, max_flows: usize) -> DataplaneConfig {
    let mut c = test_config();
    c.udp.idle_timeout = idle;
    c.udp.max_flows = max_flows;
    c
}

pub async fn wait_udp_bound(h: &Harness, listen: SocketAddr) {
    let status = h.dataplane.listener_status();
    let key = udp_key(listen);
    let ok = eventually(PATIENCE, || status.is_bound(&key)).await;
    assert!(ok, "udp {listen} not bound: {:?}", status.state(&key));
}

pub fn udp_stats(h: &Harness, listen: SocketAddr) -> UdpFrontendStatsSnapshot {
    h.dataplane
        .udp_stats()
        .frontend(&udp_key(listen))
        .map(|s| s.snapshot())
        .unwrap_or_default()
}

/// Waits until the frontend's UDP counters satisfy `cond`; panics with them after [`PATIENCE`].
pub async fn wait_udp_stats(
    h: &Harness,
    listen: SocketAddr,
    what: &str,
    cond: impl Fn(&UdpFrontendStatsSnapshot) -> bool,
) -> UdpFrontendStatsSnapshot {
    let ok = eventually(PATIENCE, || cond(&udp_stats(h, listen))).await;
    let s = udp_stats(h, listen);
    assert!(ok, "{what}: {s:?}");
    s
}
