//! One flow's way to its backend: a UDP socket connected to the backend, and the return task that
//! relays the backend's replies to the client from the frontend's socket.
//!
//! Owns: [`Upstream`] (the socket, the backend's counters, the flow's [`FlowSignals`], and the
//! return task, aborted when the upstream is dropped), [`connect_upstream`], the error
//! classification of upstream sockets ([`is_backend_error`]) and the return path loop.
//!
//! The return task reads replies into a per-worker-thread buffer (no `.await` between the read
//! and the send, so one 64 KiB buffer per runtime thread serves every flow), sends them with a
//! nonblocking `sendto(2)` (a full frontend send buffer drops the reply and counts it), and
//! stores the reply time into the flow's atomic (one relaxed store per reply at most once per
//! millisecond; the receive loop reads it only when the flow looks idle).
//!
//! Must not: pick backends or touch the flow table (frontend.rs owns both).

use super::stats::{UdpBackendStats, UdpFrontendStats};
use super::MAX_DATAGRAM;
use crate::dataplane::backends::{ActiveBackend, BackendStats, ConnectFailure};
use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

/// Datagrams a return task relays before it yields to the scheduler.
const RETURN_BUDGET: usize = 64;

thread_local! {
    /// Reply buffer shared by every return task running on this thread (never held across an
    /// `.await`).
    static REPLY_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_DATAGRAM].into_boxed_slice());
}

/// What the return path tells the receive loop, without locks.
#[derive(Debug, Default)]
pub(crate) struct FlowSignals {
    /// Microseconds from the frontend's clock base to the last reply, plus one; 0 = no reply yet.
    last_reply_us: AtomicU64,
    /// The backend answered with an error (ICMP): the next client datagram re-picks.
    failed: AtomicBool,
}

impl FlowSignals {
    /// The last reply's time, if any.
    pub fn last_reply(&self, base: Instant) -> Option<Instant> {
        match self.last_reply_us.load(Relaxed) {
            0 => None,
            us => Some(base + Duration::from_micros(us - 1)),
        }
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Relaxed)
    }

    pub fn mark_failed(&self) {
        self.failed.store(true, Relaxed);
    }

    fn saw_reply(&self, base: Instant) {
        let us = base.elapsed().as_micros() as u64 + 1;
        // Coalesced: at most one store per millisecond (expiry is ms-accurate).
        if us >= self.last_reply_us.load(Relaxed) + 1000 {
            self.last_reply_us.store(us, Relaxed);
        }
    }
}

/// True for errors that say the backend (or the path to it) is not there: ICMP port/host/net
/// unreachable. Anything else is local (buffers, permissions) and not the backend's fault.
pub(crate) fn is_backend_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENETDOWN
        )
    ) || e.kind() == io::ErrorKind::ConnectionRefused
}

/// Opens a nonblocking UDP socket on an ephemeral port of `backend`'s family, connected to it.
pub(crate) fn connect_upstream(backend: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match backend {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(backend)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// A flow's current backend. Dropping it aborts the return task.
pub(crate) struct Upstream {
    pub backend: SocketAddr,
    pub socket: Arc<UdpSocket>,
    pub signals: Arc<FlowSignals>,
    pub stats: Arc<BackendStats>,
    pub udp_stats: Arc<UdpBackendStats>,
    /// One unit of the backend's `active` count for as long as the flow uses it.
    _active: ActiveBackend,
    task: AbortHandle,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the return task of a flow shares with its frontend.
pub(crate) struct ReturnPath {
    pub frontend: Arc<UdpSocket>,
    pub client: SocketAddr,
    pub frontend_stats: Arc<UdpFrontendStats>,
    pub base: Instant,
}

impl Upstream {
    /// Wires an opened socket: spawns the return task into `tasks` (the frontend's set, so the
    /// frontend can wait for every task, and thus every handle on its socket, to end).
    pub fn start(
        backend: SocketAddr,
        socket: UdpSocket,
        active: ActiveBackend,
        stats: Arc<BackendStats>,
        udp_stats: Arc<UdpBackendStats>,
        path: ReturnPath,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Self {
        let socket = Arc::new(socket);
        let signals = Arc::new(FlowSignals::default());
        let task = tasks.spawn(return_path(
            socket.clone(),
            path,
            signals.clone(),
            stats.clone(),
            udp_stats.clone(),
        ));
        Upstream {
            backend,
            socket,
            signals,
            stats,
            udp_stats,
            _active: active,
            task,
        }
    }
}

enum Step {
    Again,
    Wait,
    Failed(io::Error),
}

async fn return_path(
    upstream: Arc<UdpSocket>,
    path: ReturnPath,
    signals: Arc<FlowSignals>,
    backend: Arc<BackendStats>,
    udp_backend: Arc<UdpBackendStats>,
) {
    let (_, from_backend) = backend.byte_counters();
    let fs = &path.frontend_stats;
    let mut confirmed = false;
    let client = socket2::SockAddr::from(path.client);
    loop {
        if let Err(error) = upstream.readable().await {
            tracing::debug!(client = %path.client, %error, "upstream socket failed; return path ends");
            return;
        }
        let mut drained = false;
        for _ in 0..RETURN_BUDGET {
            let step = REPLY_BUF.with_borrow_mut(|buf| match upstream.try_recv(buf) {
                Ok(n) => {
                    signals.saw_reply(path.base);
                    from_backend.fetch_add(n as u64, Relaxed);
                    udp_backend.datagrams_from_backend.fetch_add(1, Relaxed);
                    // Straight to the syscall (nonblocking), as for sends to backends.
                    match socket2::SockRef::from(&*path.frontend).send_to(&buf[..n], &client) {
                        Ok(_) => {
                            UdpFrontendStats::add(&fs.datagrams_out, 1);
                            UdpFrontendStats::add(&fs.bytes_out, n as u64);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            UdpFrontendStats::add(&fs.dropped_reply_full, 1);
                        }
                        Err(error) => {
                            UdpFrontendStats::add(&fs.dropped_send_error, 1);
                            tracing::trace!(client = %path.client, %error, "reply to client failed");
                        }
                    }
                    Step::Again
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Wait,
                Err(e) => Step::Failed(e),
            });
            match step {
                Step::Again => {
                    if !confirmed {
                        confirmed = true;
                        backend.record_connected();
                    }
                }
                Step::Wait => {
                    drained = true;
                    break;
                }
                Step::Failed(error) => {
                    UdpFrontendStats::add(&fs.upstream_errors, 1);
                    if is_backend_error(&error) {
                        backend.record_failure(ConnectFailure::from_io(&error));
                        signals.mark_failed();
                    }
                    tracing::debug!(client = %path.client, %error, "upstream receive error");
                }
            }
        }
        if !drained {
            // Budget used up with replies still queued: let other flows run.
            tokio::task::yield_now().await;
        }
    }
}
