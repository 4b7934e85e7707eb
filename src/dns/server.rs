//! The DNS server: UDP and TCP on one address, answering from the published table.
//!
//! Owns: the two sockets, the UDP receive loop (one reused receive and one reused send buffer),
//! the TCP accept loop (backs off on descriptor exhaustion like the data plane's, one log line
//! per change of state) with a cap on concurrent connections that idle clients cannot hold (at
//! the cap the oldest idle connection is evicted), per-connection tasks (2-byte length framing,
//! idle timeout, oversized length prefixes refused), the counters ([`DnsStats`]), and the
//! per-generation [`ZoneIndex`] cache shared by both.
//!
//! Must not: decide answers (that is [`super::ZoneIndex`]), hold a table across queries (each
//! query loads the published snapshot once, so DNS and data plane see the same generation), log
//! per query or per connection above `debug`, or panic on network input.

use super::{parse_zone, respond, DnsError, ServingCheck, Transport, ZoneIndex};
use crate::conn_slots::{Admission, ConnSlots, Slot};
use crate::dataplane::listener::{AcceptBackoff, AcceptErrorCounts, AcceptLog};
use crate::metrics::{Family, ScrapeFamilies};
use crate::published::{PublishedTable, TableReader};
use crate::table::Protocol;
use hickory_proto::rr::Name;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits of the TCP side.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections open at once. At the cap the oldest idle connection (waiting for its next
    /// query) is closed to make room; if every one is mid-query the new one is closed.
    pub max_tcp_connections: usize,
    /// A TCP connection that sends no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Largest query accepted over TCP; a longer length prefix closes the connection.
    pub max_tcp_query: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_tcp_connections: 128,
            tcp_idle_timeout: Duration::from_secs(5),
            max_tcp_query: 4096,
        }
    }
}

/// Counters of the DNS server, exported as `vipd_dns_*`.
#[derive(Debug)]
pub struct DnsStats {
    /// The TCP connections (open, evicted, refused).
    pub tcp: Arc<ConnSlots>,
    pub accept_errors: AcceptErrorCounts,
    /// TCP connections closed because their length prefix exceeded `max_tcp_query`.
    pub tcp_oversized: AtomicU64,
    /// TCP connections closed by the idle timeout.
    pub tcp_idle_closed: AtomicU64,
}

impl DnsStats {
    fn new(limits: &ServerLimits) -> Arc<Self> {
        Arc::new(DnsStats {
            tcp: ConnSlots::new(limits.max_tcp_connections),
            accept_errors: AcceptErrorCounts::default(),
            tcp_oversized: AtomicU64::new(0),
            tcp_idle_closed: AtomicU64::new(0),
        })
    }
}

impl ScrapeFamilies for Arc<DnsStats> {
    fn families(&self) -> Vec<Family> {
        let mut open = Family::gauge(
            "vipd_dns_tcp_connections_open",
            "DNS-over-TCP connections open now.",
        );
        open.add(&[], self.tcp.open() as f64);
        let mut dropped = Family::counter(
            "vipd_dns_tcp_connections_dropped_total",
            "DNS-over-TCP connections closed by vipd, by reason (evicted: oldest idle one at the cap; refused: cap reached with every one busy; idle: idle timeout; oversized: length prefix over the limit).",
        );
        dropped.add(&[("reason", "evicted")], self.tcp.evicted() as f64);
        dropped.add(&[("reason", "refused")], self.tcp.refused() as f64);
        dropped.add(
            &[("reason", "idle")],
            self.tcp_idle_closed.load(Relaxed) as f64,
        );
        dropped.add(
            &[("reason", "oversized")],
            self.tcp_oversized.load(Relaxed) as f64,
        );
        let errors = crate::metrics::accept_errors_family(
            "vipd_dns_accept_errors_total",
            "accept(2) errors of the DNS TCP listener, by kind (resource: EMFILE/ENFILE/ENOBUFS/ENOMEM).",
            &self.accept_errors,
        );
        vec![open, dropped, errors]
    }
}

/// Serves the zone on `listen` (UDP and TCP) until `shutdown` is cancelled.
pub async fn serve(
    listen: SocketAddr,
    tables: TableReader,
    serving: Arc<dyn ServingCheck + Send + Sync>,
    zone: String,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let zone = parse_zone(&zone)?;
    DnsServer::bind(listen)
        .await?
        .run(tables, serving, zone, shutdown)
        .await
}

/// The bound sockets. Binding is separate from running so that a caller (or a test) can bind
/// port 0 and learn the one port that UDP and TCP share.
#[derive(Debug)]
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    local: SocketAddr,
    limits: ServerLimits,
    stats: Arc<DnsStats>,
}

impl DnsServer {
    /// Binds UDP, then TCP on the same port. With port 0 the port UDP got is used for TCP, and
    /// if TCP cannot have it a few other ports are tried.
    pub async fn bind(listen: SocketAddr) -> Result<Self, DnsError> {
        let attempts = if listen.port() == 0 { 8 } else { 1 };
        let mut last_error = None;
        for _ in 0..attempts {
            let udp = UdpSocket::bind(listen)
                .await
                .map_err(|source| DnsError::Bind {
                    protocol: Protocol::Udp,
                    addr: listen,
                    source,
                })?;
            let local = udp.local_addr().map_err(|source| DnsError::Bind {
                protocol: Protocol::Udp,
                addr: listen,
                source,
            })?;
            match TcpListener::bind(local).await {
                Ok(tcp) => {
                    let limits = ServerLimits::default();
                    return Ok(DnsServer {
                        udp,
                        tcp,
                        local,
                        stats: DnsStats::new(&limits),
                        limits,
                    });
                }
                Err(source) => {
                    last_error = Some(DnsError::Bind {
                        protocol: Protocol::Tcp,
                        addr: local,
                        source,
                    })
                }
            }
        }
        Err(last_error.unwrap_or_else(|| DnsError::Bind {
            protocol: Protocol::Tcp,
            addr: listen,
            source: std::io::Error::other("no attempt made"),
        }))
    }

    /// Serves on sockets already bound to the same address (handed over by a predecessor vipd).
    pub fn from_std(
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
    ) -> Result<Self, DnsError> {
        let local = udp.local_addr().map_err(|source| DnsError::Bind {
            protocol: Protocol::Udp,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let tcp_err = |source| DnsError::Bind {
            protocol: Protocol::Tcp,
            addr: local,
            source,
        };
        udp.set_nonblocking(true).map_err(|source| DnsError::Bind {
            protocol: Protocol::Udp,
            addr: local,
            source,
        })?;
        let udp = UdpSocket::from_std(udp).map_err(|source| DnsError::Bind {
            protocol: Protocol::Udp,
            addr: local,
            source,
        })?;
        tcp.set_nonblocking(true).map_err(tcp_err)?;
        let tcp = TcpListener::from_std(tcp).map_err(tcp_err)?;
        let limits = ServerLimits::default();
        Ok(DnsServer {
            udp,
            tcp,
            local,
            stats: DnsStats::new(&limits),
            limits,
        })
    }

    /// Duplicates of the (UDP, TCP) sockets, for a successor vipd.
    pub fn handover_sockets(
        &self,
    ) -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
        use std::os::fd::AsFd;
        Ok((
            self.udp.as_fd().try_clone_to_owned()?,
            self.tcp.as_fd().try_clone_to_owned()?,
        ))
    }

    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.stats = DnsStats::new(&limits);
        self.limits = limits;
        self
    }

    /// The server's counters (for metrics).
    pub fn stats(&self) -> Arc<DnsStats> {
        self.stats.clone()
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` is cancelled; then stops accepting, lets open TCP connections see
    /// the cancellation, and returns once they are gone.
    pub async fn run(
        self,
        tables: TableReader,
        serving: Arc<dyn ServingCheck + Send + Sync>,
        zone: Name,
        shutdown: CancellationToken,
    ) -> Result<(), DnsError> {
        let cache = Arc::new(IndexCache::new(zone));
        tracing::info!(listen = %self.local, zone = %cache.zone, "DNS server listening (udp+tcp)");
        let tracker = TaskTracker::new();
        let udp = udp_loop(
            self.udp,
            self.local,
            tables.clone(),
            serving.clone(),
            cache.clone(),
            shutdown.clone(),
        );
        let tcp = tcp_loop(
            self.tcp,
            self.local,
            self.limits,
            self.stats.clone(),
            tables,
            serving,
            cache,
            shutdown.clone(),
            tracker.clone(),
        );
        let result = tokio::select! {
            r = udp => r,
            r = tcp => r,
        };
        // Either loop ending means shutdown or a fatal socket error: stop everything.
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        tracing::info!(listen = %self.local, "DNS server stopped");
        result
    }
}

/// One [`ZoneIndex`] per published table, rebuilt when the published snapshot changes.
#[derive(Debug)]
struct IndexCache {
    zone: Name,
    current: Mutex<Option<Arc<ZoneIndex>>>,
}

impl IndexCache {
    fn new(zone: Name) -> Self {
        IndexCache {
            zone,
            current: Mutex::new(None),
        }
    }

    /// The index for `snapshot` (the caller's one load of the published table).
    fn get(&self, snapshot: Arc<PublishedTable>) -> Arc<ZoneIndex> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(index) = current.as_ref() {
            if Arc::ptr_eq(index.snapshot(), &snapshot) {
                return index.clone();
            }
        }
        let index = Arc::new(ZoneIndex::new(snapshot, &self.zone));
        tracing::debug!(
            generation = index.snapshot().generation,
            names = index.names().len(),
            "DNS zone index rebuilt"
        );
        *current = Some(index.clone());
        index
    }
}

async fn udp_loop(
    socket: UdpSocket,
    local: SocketAddr,
    tables: TableReader,
    serving: Arc<dyn ServingCheck + Send + Sync>,
    cache: Arc<IndexCache>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let mut request = vec![0u8; 65535];
    let mut response = Vec::with_capacity(usize::from(super::MAX_UDP_PAYLOAD));
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = socket.recv_from(&mut request) => r,
        };
        let (len, peer) = match received {
            Ok(r) => r,
            Err(e) if transient(&e) => {
                tracing::debug!(listen = %local, error = %e, "DNS UDP receive error");
                continue;
            }
            Err(source) => {
                return Err(DnsError::Socket {
                    protocol: Protocol::Udp,
                    addr: local,
                    source,
                })
            }
        };
        let index = cache.get(tables.load_full());
        if respond(
            &request[..len],
            &index,
            serving.as_ref(),
            Transport::Udp,
            &mut response,
        ) {
            tracing::trace!(%peer, bytes = response.len(), "DNS UDP response");
            if let Err(e) = socket.send_to(&response, peer).await {
                tracing::debug!(%peer, error = %e, "DNS UDP send failed");
            }
        }
    }
}

/// Receive errors that concern one datagram or peer, not the socket.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock | TimedOut
    ) || e.raw_os_error() == Some(libc::EMSGSIZE)
}

#[allow(clippy::too_many_arguments)]
async fn tcp_loop(
    listener: TcpListener,
    local: SocketAddr,
    limits: ServerLimits,
    stats: Arc<DnsStats>,
    tables: TableReader,
    serving: Arc<dyn ServingCheck + Send + Sync>,
    cache: Arc<IndexCache>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<(), DnsError> {
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(r) => {
                if let AcceptLog::Recovered { errors } = backoff.on_accept() {
                    tracing::info!(listen = %local, failed_accepts = errors, "DNS TCP accepting again");
                }
                r
            }
            Err(error) => {
                let (class, log) = backoff.on_error(&error);
                stats.accept_errors.count(class);
                if log == AcceptLog::Exhausted {
                    tracing::warn!(listen = %local, %error, "DNS TCP out of descriptors; accepts paused and retried");
                } else {
                    tracing::debug!(listen = %local, %error, "DNS TCP accept error");
                }
                if let Some(pause) = class.pause() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                continue;
            }
        };
        let slot = match stats.tcp.admit() {
            Admission::Admitted { slot, evicted } => {
                if evicted {
                    tracing::debug!(%peer, max = limits.max_tcp_connections, "DNS TCP connection cap reached; closed the oldest idle one");
                }
                slot
            }
            Admission::Refused => {
                tracing::debug!(%peer, max = limits.max_tcp_connections, "DNS TCP connection cap reached, every connection busy; closing");
                drop(stream);
                continue;
            }
        };
        let tables = tables.clone();
        let serving = serving.clone();
        let cache = cache.clone();
        let shutdown = shutdown.clone();
        let stats = stats.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = slot.evicted().cancelled() => {}
                r = tcp_connection(stream, limits, &slot, &stats, &tables, serving.as_ref(), &cache) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "DNS TCP connection ended with an error");
                    }
                }
            }
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    limits: ServerLimits,
    slot: &Slot,
    stats: &DnsStats,
    tables: &TableReader,
    serving: &(dyn ServingCheck + Send + Sync),
    cache: &IndexCache,
) -> std::io::Result<()> {
    let idle = limits.tcp_idle_timeout;
    let _ = stream.set_nodelay(true);
    let mut request = Vec::new();
    let mut response = Vec::new();
    let mut framed = Vec::new();
    loop {
        slot.set_idle(true);
        // The whole query (length and body) must arrive within the idle timeout.
        let read = tokio::time::timeout(idle, async {
            let len = match stream.read_u16().await {
                Ok(len) => usize::from(len),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            };
            slot.set_idle(false);
            if len > limits.max_tcp_query {
                return Ok(Some(false));
            }
            request.resize(len, 0);
            stream.read_exact(&mut request).await?;
            Ok(Some(true))
        })
        .await;
        match read {
            Err(_elapsed) => {
                stats.tcp_idle_closed.fetch_add(1, Relaxed);
                return Ok(());
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Some(false))) => {
                stats.tcp_oversized.fetch_add(1, Relaxed);
                return Ok(());
            }
            Ok(Ok(Some(true))) => {}
        }
        let index = cache.get(tables.load_full());
        if !respond(&request, &index, serving, Transport::Tcp, &mut response) {
            // Not a query: nothing to say on this connection.
            return Ok(());
        }
        let Ok(len) = u16::try_from(response.len()) else {
            return Ok(());
        };
        framed.clear();
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&response);
        match tokio::time::timeout(idle, stream.write_all(&framed)).await {
            Ok(r) => r?,
            Err(_elapsed) => return Ok(()),
        }
    }
}
