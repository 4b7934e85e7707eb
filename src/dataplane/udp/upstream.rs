//! One flow's way to its backend: a UDP socket connected to the backend, and the return task that
//! relays the backend's replies to the client from the frontend's socket.
//!
//! Owns: [`Upstream`] (the socket, the backend's counters, the flow's [`FlowSignals`], and the
//! return task, aborted when the upstream is dropped), [`connect_upstream`], the error
//! classification of upstream sockets ([`is_backend_error`]) and the return path loop.
//!
//! The return task reads up to [`BATCH`](super::sys::BATCH) replies with one `recvmmsg(2)` into a
//! per-worker-thread batch (no `.await` between the read and the send, so one batch per runtime
//! thread serves every flow) and sends them on to the client with one nonblocking `sendmmsg(2)`
//! (a full frontend send buffer drops the replies not taken, and counts them), and
//! stores the reply time into the flow's atomic (one relaxed store per reply at most once per
//! millisecond; the receive loop reads it only when the flow looks idle).
//!
//! Must not: pick backends or touch the flow table (frontend.rs owns both).

use super::stats::{UdpBackendStats, UdpFrontendStats};
use super::sys::RecvBatch;
use crate::balance::backend::{ActiveBackend, BackendStats, ConnectFailure};
use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

/// Datagrams a return task relays before it yields to the scheduler.
const RETURN_BUDGET: usize = 64;

thread_local! {
    /// Reply batch shared by every return task running on this thread (never held across an
    /// `.await`).
    static REPLIES: RefCell<RecvBatch> = RefCell::new(RecvBatch::new());
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
    /// This many replies were received (and sent on, or counted as dropped).
    Relayed(usize),
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
        let mut relayed = 0;
        while relayed < RETURN_BUDGET {
            let step = REPLIES.with_borrow_mut(|batch| {
                let n = match upstream.try_io(Interest::READABLE, || batch.recv(upstream.as_raw_fd())) {
                    Ok((n, _)) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                    Err(e) => return Step::Failed(e),
                };
                signals.saw_reply(path.base);
                let mut bytes = 0u64;
                for i in 0..n {
                    bytes += batch.get(i).map_or(0, |(r, _)| r.len as u64);
                }
                from_backend.fetch_add(bytes, Relaxed);
                udp_backend.datagrams_from_backend.fetch_add(n as u64, Relaxed);
                // Straight to the syscall (nonblocking), as for sends to backends.
                let fd = path.frontend.as_raw_fd();
                let mut next = 0;
                while next < n {
                    match batch.send_to(fd, next, &client) {
                        Ok(sent) => {
                            let sent_bytes: u64 = (next..next + sent)
                                .map(|i| batch.get(i).map_or(0, |(r, _)| r.len as u64))
                                .sum();
                            UdpFrontendStats::add(&fs.datagrams_out, sent as u64);
                            UdpFrontendStats::add(&fs.bytes_out, sent_bytes);
                            next += sent.max(1);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            UdpFrontendStats::add(&fs.dropped_reply_full, (n - next) as u64);
                            break;
                        }
                        Err(error) => {
                            // The first one failed: count it and go on with the rest.
                            UdpFrontendStats::add(&fs.dropped_send_error, 1);
                            tracing::trace!(client = %path.client, %error, "reply to client failed");
                            next += 1;
                        }
                    }
                }
                Step::Relayed(n)
            });
            match step {
                Step::Relayed(n) => {
                    relayed += n;
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
                    relayed += 1;
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
