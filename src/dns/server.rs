//! The DNS server: UDP and TCP on one address, answering from the published table.
//!
//! Owns: the two sockets, the UDP receive loop (one reused receive and one reused send buffer),
//! the TCP accept loop with a cap on concurrent connections and per-connection tasks (2-byte
//! length framing, idle timeout), and the per-generation [`ZoneIndex`] cache shared by both.
//!
//! Must not: decide answers (that is [`super::ZoneIndex`]), hold a table across queries (each
//! query loads the published snapshot once, so DNS and data plane see the same generation), log
//! per query or per connection above `debug`, or panic on network input.

use super::{parse_zone, respond, DnsError, ServingCheck, Transport, ZoneIndex};
use crate::published::{PublishedTable, TableReader};
use crate::table::Protocol;
use hickory_proto::rr::Name;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits of the TCP side.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once; further connections are accepted and closed at once.
    pub max_tcp_connections: usize,
    /// A TCP connection that sends no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_tcp_connections: 128,
            tcp_idle_timeout: Duration::from_secs(10),
        }
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
                    return Ok(DnsServer {
                        udp,
                        tcp,
                        local,
                        limits: ServerLimits::default(),
                    })
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

    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
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
    tables: TableReader,
    serving: Arc<dyn ServingCheck + Send + Sync>,
    cache: Arc<IndexCache>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<(), DnsError> {
    let slots = Arc::new(Semaphore::new(limits.max_tcp_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(r) => r,
            Err(e) => {
                // EMFILE, ECONNABORTED, ...: per-connection trouble; back off a little.
                tracing::debug!(listen = %local, error = %e, "DNS TCP accept error");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = limits.max_tcp_connections, "DNS TCP connection cap reached; closing");
            drop(stream);
            continue;
        };
        let tables = tables.clone();
        let serving = serving.clone();
        let cache = cache.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = tcp_connection(stream, limits.tcp_idle_timeout, &tables, serving.as_ref(), &cache) => {
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
    idle: Duration,
    tables: &TableReader,
    serving: &(dyn ServingCheck + Send + Sync),
    cache: &IndexCache,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut request = Vec::new();
    let mut response = Vec::new();
    let mut framed = Vec::new();
    loop {
        // The whole query (length and body) must arrive within the idle timeout.
        let read = tokio::time::timeout(idle, async {
            let len = match stream.read_u16().await {
                Ok(len) => usize::from(len),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            };
            request.resize(len, 0);
            stream.read_exact(&mut request).await?;
            Ok(Some(()))
        })
        .await;
        match read {
            Err(_elapsed) => return Ok(()),
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Some(()))) => {}
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
