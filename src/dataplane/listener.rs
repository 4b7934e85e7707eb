//! Listening sockets: binding (socket2), bind retry with backoff, and the per-frontend listener
//! status that `/readyz` and DNS read.
//!
//! Owns: [`bind_tcp`] (socket options), the bind retry (delays from [`crate::backoff::Backoff`]),
//! [`ListenerStatusHandle`], the accept-error classification ([`AcceptErrorClass`]) and a small
//! log rate limiter, and the bind-with-retry every listener task runs ([`ListenerTask`]). A task
//! given a socket handed over by a predecessor ([`crate::handover`]) adopts it instead of
//! binding; the status keeps a weak reference to each bound socket so that a handover can
//! duplicate it ([`ListenerStatusHandle::handover_sockets`]) without keeping it open.
//!
//! Bind errors (port in use, address not local) are logged at `warn` once per change of error for
//! that frontend and retried forever with backoff until the frontend leaves the table; they never
//! affect other frontends or the daemon.
//!
//! Must not: read the table, pick backends, or import the TCP or UDP forwarding that builds on it
//! (`tcp.rs` and `udp/` call in here; nothing here calls them).

use crate::table::FrontendKey;
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Binds a nonblocking TCP listening socket on `addr`.
///
/// Options: `SO_REUSEADDR` (rebind while old connections sit in TIME_WAIT), `IPV6_V6ONLY` for
/// IPv6 addresses (so `[::]:p` and `0.0.0.0:p` can be separate frontends), close-on-exec
/// (socket2's default), and the given accept backlog.
pub fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

// === impl ListenerStatusHandle ===

/// What the data plane knows about one frontend's listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ListenerState {
    /// Not attempted yet.
    Pending,
    /// Accepting on `local`.
    Bound { local: SocketAddr },
    /// The last bind failed; retrying with backoff.
    Failed { error: String, attempts: u32 },
    /// The data plane does not serve this frontend's protocol yet (UDP).
    Unsupported { reason: &'static str },
}

#[derive(Debug)]
struct StatusEntry {
    /// The listener instance that owns the entry; a stale task cannot overwrite a newer one.
    owner: u64,
    state: ListenerState,
    /// The bound socket, while its task holds it (for a handover).
    socket: Option<ListenerSocket>,
}

/// A listener task's socket, weakly: the task alone keeps it open.
#[derive(Debug, Clone)]
pub(crate) enum ListenerSocket {
    Tcp(Weak<tokio::net::TcpListener>),
    Udp(Weak<tokio::net::UdpSocket>),
}

impl ListenerSocket {
    fn duplicate(&self) -> Option<OwnedFd> {
        match self {
            ListenerSocket::Tcp(w) => w.upgrade()?.as_fd().try_clone_to_owned().ok(),
            ListenerSocket::Udp(w) => w.upgrade()?.as_fd().try_clone_to_owned().ok(),
        }
    }
}

/// Cloneable, thread-safe view of every current frontend's listener state.
#[derive(Debug, Clone, Default)]
pub struct ListenerStatusHandle {
    inner: Arc<RwLock<HashMap<FrontendKey, StatusEntry>>>,
}

impl ListenerStatusHandle {
    pub fn is_bound(&self, key: &FrontendKey) -> bool {
        matches!(self.state(key), Some(ListenerState::Bound { .. }))
    }

    /// The bound local address (useful when a frontend listens on port 0).
    pub fn local_addr(&self, key: &FrontendKey) -> Option<SocketAddr> {
        match self.state(key) {
            Some(ListenerState::Bound { local }) => Some(local),
            _ => None,
        }
    }

    pub fn state(&self, key: &FrontendKey) -> Option<ListenerState> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(|e| e.state.clone())
    }

    /// True once every frontend of the last reconciled table has had at least one bind attempt
    /// (bound, failed, or unsupported).
    pub fn all_attempted(&self) -> bool {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.values().all(|e| e.state != ListenerState::Pending)
    }

    /// Every frontend's state, sorted by key.
    pub fn snapshot(&self) -> Vec<(FrontendKey, ListenerState)> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map.iter().map(|(k, e)| (*k, e.state.clone())).collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }

    pub(crate) fn insert(&self, key: FrontendKey, owner: u64, state: ListenerState) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.insert(
            key,
            StatusEntry {
                owner,
                state,
                socket: None,
            },
        );
    }

    /// Records the socket `owner`'s task serves `key` with (weakly).
    pub(crate) fn set_socket(&self, key: &FrontendKey, owner: u64, socket: ListenerSocket) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(key).filter(|e| e.owner == owner) {
            entry.socket = Some(socket);
        }
    }

    /// A duplicate of every bound frontend's socket, with its local address, for a successor.
    pub fn handover_sockets(&self) -> Vec<(FrontendKey, SocketAddr, OwnedFd)> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .filter_map(|(key, e)| match (&e.state, &e.socket) {
                (ListenerState::Bound { local }, Some(socket)) => {
                    Some((*key, *local, socket.duplicate()?))
                }
                _ => None,
            })
            .collect();
        out.sort_by_key(|(k, _, _)| *k);
        out
    }

    /// Updates the entry only if `owner` still owns it. When this was the last first attempt
    /// outstanding, logs how many frontends are bound and which failed (the truth about a
    /// reconcile, whose own line only says how many listeners it started).
    pub(crate) fn update(&self, key: &FrontendKey, owner: u64, state: ListenerState) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = map.get_mut(key) else {
            return;
        };
        if entry.owner != owner {
            return;
        }
        let first_attempt =
            entry.state == ListenerState::Pending && state != ListenerState::Pending;
        entry.state = state;
        if !first_attempt || map.values().any(|e| e.state == ListenerState::Pending) {
            return;
        }
        let bound = map
            .values()
            .filter(|e| matches!(e.state, ListenerState::Bound { .. }))
            .count();
        let mut failed: Vec<String> = map
            .iter()
            .filter(|(_, e)| matches!(e.state, ListenerState::Failed { .. }))
            .map(|(k, _)| k.to_string())
            .collect();
        drop(map);
        failed.sort();
        if failed.is_empty() {
            tracing::info!(bound, failed = 0, "every listener attempted: all bound");
        } else {
            tracing::warn!(bound, failed = failed.len(), failed_frontends = ?failed, "every listener attempted: some failed to bind (retrying; /readyz is 503)");
        }
    }

    pub(crate) fn remove(&self, key: &FrontendKey) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

// === accept errors ===

/// How the accept loop reacts to an accept error. It never exits on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptErrorClass {
    /// Out of file descriptors or kernel memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): the pending
    /// connection stays in the backlog; pause [`ACCEPT_RESOURCE_PAUSE`] and try again.
    ResourceExhausted,
    /// A problem with that one connection (ECONNABORTED, EPROTO, EPERM, ...): accept the next.
    Connection,
    /// Anything unexpected: pause [`ACCEPT_OTHER_PAUSE`] (no busy loop) and try again.
    Other,
}

/// Accept errors of a side server (admin, DNS over TCP), by class, for its metrics.
#[derive(Debug, Default)]
pub struct AcceptErrorCounts {
    resource: std::sync::atomic::AtomicU64,
    other: std::sync::atomic::AtomicU64,
}

impl AcceptErrorCounts {
    pub fn count(&self, class: AcceptErrorClass) {
        let counter = match class {
            AcceptErrorClass::ResourceExhausted => &self.resource,
            AcceptErrorClass::Connection | AcceptErrorClass::Other => &self.other,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (resource exhaustion, other) so far.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.resource.load(Relaxed), self.other.load(Relaxed))
    }
}

/// Pause after a resource-exhaustion accept error.
pub const ACCEPT_RESOURCE_PAUSE: Duration = Duration::from_millis(50);
/// Pause after an unexpected accept error.
pub const ACCEPT_OTHER_PAUSE: Duration = Duration::from_millis(10);

impl AcceptErrorClass {
    pub fn of(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                AcceptErrorClass::ResourceExhausted
            }
            Some(
                libc::ECONNABORTED
                | libc::ECONNRESET
                | libc::EPROTO
                | libc::EPERM
                | libc::EINTR
                | libc::EAGAIN
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ETIMEDOUT,
            ) => AcceptErrorClass::Connection,
            _ => match err.kind() {
                io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock => AcceptErrorClass::Connection,
                _ => AcceptErrorClass::Other,
            },
        }
    }

    /// How long the accept loop pauses before the next accept.
    pub fn pause(self) -> Option<Duration> {
        match self {
            AcceptErrorClass::ResourceExhausted => Some(ACCEPT_RESOURCE_PAUSE),
            AcceptErrorClass::Connection => None,
            AcceptErrorClass::Other => Some(ACCEPT_OTHER_PAUSE),
        }
    }
}

/// The accept-error state of a side server's accept loop (admin, DNS): the same pauses as the
/// data plane's TCP loop ([`AcceptErrorClass::pause`]), one log line when descriptors run out
/// and one when accepting works again (never a line per error), and the errors counted.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    exhausted: bool,
    errors_since: u64,
}

/// What an accept loop should log after [`AcceptBackoff`] saw an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptLog {
    Nothing,
    /// Resources just ran out (log at warn).
    Exhausted,
    /// Accepting again after `errors` failed accepts (log at info).
    Recovered {
        errors: u64,
    },
}

impl AcceptBackoff {
    /// An accept failed: the class (for counting and the pause) and what to log.
    pub fn on_error(&mut self, err: &io::Error) -> (AcceptErrorClass, AcceptLog) {
        let class = AcceptErrorClass::of(err);
        if class != AcceptErrorClass::ResourceExhausted {
            return (class, AcceptLog::Nothing);
        }
        self.errors_since += 1;
        if std::mem::replace(&mut self.exhausted, true) {
            (class, AcceptLog::Nothing)
        } else {
            (class, AcceptLog::Exhausted)
        }
    }

    /// An accept succeeded.
    pub fn on_accept(&mut self) -> AcceptLog {
        if std::mem::take(&mut self.exhausted) {
            AcceptLog::Recovered {
                errors: std::mem::take(&mut self.errors_since),
            }
        } else {
            AcceptLog::Nothing
        }
    }
}

/// Lets one log line through per `interval` and counts the ones it held back.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if a line may be logged now (`n` = lines suppressed since the last one).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

// === the listener task ===

/// What a TCP listener task needs besides the connection context.
pub(crate) struct ListenerTask {
    pub key: FrontendKey,
    pub owner: u64,
    pub backlog: i32,
    pub retry: crate::backoff::Backoff,
    pub status: ListenerStatusHandle,
    /// Stop binding/accepting (frontend removed, or shutdown).
    pub stop: CancellationToken,
    /// Cancelled once a previous listener on the same key has closed its socket.
    pub previous_closed: Option<CancellationToken>,
    /// Cancelled (on drop) when this task's socket is closed.
    pub socket_closed: CancellationToken,
    /// A socket handed over by a predecessor: adopted instead of binding.
    pub inherited: Option<OwnedFd>,
}

impl ListenerTask {
    /// Adopts the inherited socket with `adopt` if there is one (never binding that frontend
    /// anew: the predecessor's socket keeps every queued connection). Otherwise waits for a
    /// previous socket on the same key to close, then binds with `bind`, retrying with backoff
    /// and reporting every state in the listener status. A bind error is logged at warn once
    /// per distinct error (repeats at debug). `None` if stopped before binding.
    pub(crate) async fn bind_with_retry<S>(
        &mut self,
        adopt: impl FnOnce(OwnedFd) -> io::Result<(S, SocketAddr)>,
        mut bind: impl FnMut(SocketAddr) -> io::Result<(S, SocketAddr)>,
    ) -> Option<S> {
        if let Some(fd) = self.inherited.take() {
            match adopt(fd) {
                Ok((socket, local)) => {
                    self.status
                        .update(&self.key, self.owner, ListenerState::Bound { local });
                    tracing::info!(frontend = %self.key, %local, "listening (socket handed over)");
                    return Some(socket);
                }
                Err(error) => {
                    tracing::warn!(frontend = %self.key, %error, "handed-over socket unusable; binding anew");
                }
            }
        }
        if let Some(previous) = self.previous_closed.take() {
            tokio::select! {
                _ = previous.cancelled() => {}
                _ = self.stop.cancelled() => return None,
            }
        }
        let key = self.key;
        let mut attempts = 0u32;
        let mut last_error: Option<String> = None;
        loop {
            attempts += 1;
            match bind(key.listen) {
                Ok((socket, local)) => {
                    self.status
                        .update(&key, self.owner, ListenerState::Bound { local });
                    if attempts > 1 {
                        tracing::info!(frontend = %key, %local, attempts, "listening (bind succeeded after retries)");
                    } else {
                        tracing::info!(frontend = %key, %local, "listening");
                    }
                    return Some(socket);
                }
                Err(e) => {
                    let error = e.to_string();
                    if last_error.as_deref() != Some(error.as_str()) {
                        tracing::warn!(frontend = %key, %error, "bind failed; retrying with backoff");
                    } else {
                        tracing::debug!(frontend = %key, %error, attempts, "bind failed again");
                    }
                    self.status.update(
                        &key,
                        self.owner,
                        ListenerState::Failed {
                            error: error.clone(),
                            attempts,
                        },
                    );
                    last_error = Some(error);
                    let delay = self.retry.next_delay(&mut rand::rng());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.cancelled() => return None,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_classify_and_resource_errors_pause() {
        let e = |code| io::Error::from_raw_os_error(code);
        assert_eq!(
            AcceptErrorClass::of(&e(libc::EMFILE)),
            AcceptErrorClass::ResourceExhausted
        );
        assert_eq!(
            AcceptErrorClass::of(&e(libc::ENFILE)),
            AcceptErrorClass::ResourceExhausted
        );
        assert_eq!(
            AcceptErrorClass::of(&e(libc::ECONNABORTED)),
            AcceptErrorClass::Connection
        );
        assert_eq!(
            AcceptErrorClass::of(&e(libc::EBADF)),
            AcceptErrorClass::Other
        );
        let pause = AcceptErrorClass::ResourceExhausted.pause().unwrap();
        assert!(pause >= Duration::from_millis(50) && pause <= Duration::from_millis(100));
        assert_eq!(AcceptErrorClass::Connection.pause(), None);
        assert!(AcceptErrorClass::Other.pause().is_some(), "no busy loop");
    }

    #[test]
    fn accept_backoff_logs_once_per_state_change() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(b.on_error(&emfile).1, AcceptLog::Exhausted);
        for _ in 0..100 {
            assert_eq!(
                b.on_error(&emfile),
                (AcceptErrorClass::ResourceExhausted, AcceptLog::Nothing)
            );
        }
        assert_eq!(b.on_accept(), AcceptLog::Recovered { errors: 101 });
        assert_eq!(b.on_accept(), AcceptLog::Nothing);
    }

    #[test]
    fn log_limiter_counts_what_it_suppressed() {
        let mut l = LogLimiter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(6)), Some(2));
    }

    #[tokio::test]
    async fn bind_reports_address_in_use() {
        let first = bind_tcp("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind_tcp(addr, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(first);
        bind_tcp(addr, 16).expect("free again");
    }

    #[tokio::test]
    async fn bind_ipv6_loopback_is_v6_only() {
        let Ok(l) = bind_tcp("[::1]:0".parse().unwrap(), 16) else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        assert!(socket2::SockRef::from(&l).only_v6().unwrap());
    }

    #[test]
    fn status_updates_only_from_the_owner() {
        let status = ListenerStatusHandle::default();
        let key = FrontendKey {
            protocol: crate::table::Protocol::Tcp,
            listen: "127.0.0.1:1".parse().unwrap(),
        };
        status.insert(key, 2, ListenerState::Pending);
        assert!(!status.all_attempted());
        let local = key.listen;
        status.update(&key, 1, ListenerState::Bound { local });
        assert!(
            !status.is_bound(&key),
            "a stale listener cannot claim the entry"
        );
        status.update(&key, 2, ListenerState::Bound { local });
        assert!(status.is_bound(&key));
        assert!(status.all_attempted());
        status.remove(&key);
        assert_eq!(status.state(&key), None);
    }
}
