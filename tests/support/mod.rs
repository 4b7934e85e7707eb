//! Shared helpers for the integration tests: tagged TCP echo backends, refusing addresses, free
//! ports, bounded condition waits, hand-built tables, and a data plane harness.
//!
//! Everything binds loopback addresses chosen by the kernel (port 0); nothing waits with a fixed
//! sleep: waits poll a condition every few milliseconds up to a generous bound.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use vipd::balance::{BackendKey, HealthConfig, Router};
use vipd::dataplane::{Dataplane, DataplaneConfig, ListenerState};
use vipd::published::{self, TablePublisher, TableReader};
use vipd::table::{Backend, BackendState, Frontend, FrontendKey, FrontendKind, Protocol, Table};

/// The bound every wait in these tests gives up after.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=vipd=debug`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// === waits ===
//
// The one bounded wait, in two shapes: `poll_until` (async) and `poll_until_blocking` (for plain
// threads and process handles). Each runs its probe at once, then every [`POLL`], until the probe
// yields `Some` or `timeout` has passed; the probe always runs at least once. `eventually*` are
// the yes/no forms. Every other wait in `tests/` is written with these.

/// How often a wait re-runs its probe.
pub const POLL: Duration = Duration::from_millis(5);

/// Runs `probe` until it yields `Some(value)` (returned) or `timeout` passes (`None`).
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`poll_until`] on the calling thread (sleeps with `std::thread::sleep`): not for a tokio
/// worker thread.
pub fn poll_until_blocking<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `cond` until it holds (true) or `timeout` passes (false).
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll_until(timeout, || std::future::ready(cond().then_some(())))
        .await
        .is_some()
}

/// [`eventually`] for conditions that need to await (e.g. a connect).
pub async fn eventually_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until(timeout, || {
        let holds = cond();
        async move { holds.await.then_some(()) }
    })
    .await
    .is_some()
}

/// [`eventually`] on the calling thread (see [`poll_until_blocking`]).
pub fn eventually_blocking(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll_until_blocking(timeout, || cond().then_some(())).is_some()
}

/// Runs `fut`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {PATIENCE:?}"))
}

// === addresses ===

/// A port that was free on `ip` a moment ago (bound, read, released).
pub fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

pub fn free_addr(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, free_port(ip))
}

/// An address on `ip` where nothing listens: connects to it are refused.
pub fn refusing_addr(ip: IpAddr) -> SocketAddr {
    free_addr(ip)
}

// === backends ===

/// A TCP backend that, per connection, writes `<tag>\n` and then echoes until EOF, then closes
/// its write side. Counts the connections it accepted. Stops (closing every connection) on drop.
pub struct TaggedEchoServer {
    pub addr: SocketAddr,
    pub tag: String,
    connections: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl TaggedEchoServer {
    pub async fn start(tag: &str) -> Self {
        Self::start_on(LOCALHOST, tag).await
    }

    pub async fn start_on(ip: IpAddr, tag: &str) -> Self {
        Self::start_at(SocketAddr::new(ip, 0), tag).await
    }

    /// Listens on `addr` (a fixed port where several backends must share one, as container
    /// ports do).
    pub async fn start_at(addr: SocketAddr, tag: &str) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind echo server");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (count, token, greeting) = (
            connections.clone(),
            stop.clone(),
            format!("{tag}\n").into_bytes(),
        );
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (token, greeting) = (token.clone(), greeting.clone());
                tokio::spawn(async move {
                    let echo = async {
                        stream.write_all(&greeting).await?;
                        let (mut r, mut w) = stream.split();
                        tokio::io::copy(&mut r, &mut w).await?;
                        w.shutdown().await
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = echo => {}
                    }
                });
            }
        });
        TaggedEchoServer {
            addr,
            tag: tag.to_string(),
            connections,
            stop,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TaggedEchoServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// === clients ===

/// Reads one `\n`-terminated line (the backend's tag) byte by byte, so no echo byte is consumed.
pub async fn read_tag(stream: &mut TcpStream) -> io::Result<String> {
    let mut tag = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if stream.read(&mut b).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "closed before the tag (got {:?})",
                    String::from_utf8_lossy(&tag)
                ),
            ));
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&tag).into_owned());
        }
        tag.push(b[0]);
    }
}

/// Connects, reads the tag, sends `payload`, half-closes, and checks that the full echo comes
/// back before EOF. Returns the tag. Bounded by [`PATIENCE`].
pub async fn roundtrip(addr: SocketAddr, payload: &[u8]) -> io::Result<String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await?;
        let tag = read_tag(&mut s).await?;
        s.write_all(payload).await?;
        s.shutdown().await?;
        let mut echo = Vec::with_capacity(payload.len());
        s.read_to_end(&mut echo).await?;
        if echo != payload {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "echo of {} bytes came back as {} bytes",
                    payload.len(),
                    echo.len()
                ),
            ));
        }
        Ok(tag)
    };
    tokio::time::timeout(PATIENCE, work)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "roundtrip timed out",
            ))
        })
}

/// Sends `msg` on an open echo connection and reads the same number of bytes back.
pub async fn echo_once(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let work = async {
        s.write_all(msg).await?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await?;
        if back != msg {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "wrong echo"));
        }
        Ok(())
    };
    tokio::time::timeout(PATIENCE, work)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "echo timed out")))
}

/// Reads until EOF or error; true if the peer closed (EOF, reset) within [`PATIENCE`].
pub async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let work = async {
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    };
    tokio::time::timeout(PATIENCE, work).await.is_ok()
}

// === tables ===

pub fn backend(addr: SocketAddr, state: BackendState) -> Backend {
    Backend {
        address: addr,
        task: format!("task-{addr}").into(),
        state,
    }
}

pub fn up(addr: SocketAddr) -> Backend {
    backend(addr, BackendState::Up)
}

/// A TCP service-port frontend.
pub fn frontend(listen: SocketAddr, backends: Vec<Backend>) -> Frontend {
    let mut backends = backends;
    backends.sort_by_key(|b| b.address);
    Frontend {
        protocol: Protocol::Tcp,
        listen,
        kind: FrontendKind::ServicePort,
        vip_name: None,
        app: "/test".to_string(),
        owner_kind: vipd::table::OwnerKind::App,
        apps: vec!["/test".to_string()],
        port_index: 0,
        port_name: None,
        options: Default::default(),
        backends: backends.into(),
    }
}

/// A TCP IP-VIP frontend.
pub fn vip_frontend(listen: SocketAddr, backends: Vec<Backend>) -> Frontend {
    Frontend {
        kind: FrontendKind::Vip,
        ..frontend(listen, backends)
    }
}

/// A table from frontends in any order (sorted here, as the builder does).
pub fn table(frontends: Vec<Frontend>) -> Table {
    let mut frontends = frontends;
    frontends.sort_by_key(|f| f.key());
    Table { frontends }
}

pub fn tcp_key(listen: SocketAddr) -> FrontendKey {
    FrontendKey {
        protocol: Protocol::Tcp,
        listen,
    }
}

/// Short timeouts so failure paths finish quickly; bind retries are fast too.
pub fn test_config() -> DataplaneConfig {
    DataplaneConfig {
        connect_timeout: Duration::from_secs(2),
        connect_tries: 3,
        idle_timeout: Some(Duration::from_secs(60)),
        max_lifetime: None,
        drain_timeout: Duration::from_secs(30),
        listen_backlog: 1024,
        bind_retry_initial: Duration::from_millis(10),
        bind_retry_max: Duration::from_millis(100),
        ..DataplaneConfig::default()
    }
}

// === harness ===

/// A data plane with its own publisher: `publish` = publish + reconcile, like the control loop.
pub struct Harness {
    pub publisher: TablePublisher,
    pub reader: TableReader,
    pub dataplane: Dataplane,
}

impl Harness {
    pub fn new(config: DataplaneConfig) -> Self {
        Self::with_health(config, HealthConfig::default())
    }

    /// A harness whose routes follow the selection and health policy `health`.
    pub fn with_health(config: DataplaneConfig, health: HealthConfig) -> Self {
        let (publisher, reader) = published::channel_with(Router::new(health));
        let dataplane = Dataplane::new(config, reader.clone());
        Harness {
            publisher,
            reader,
            dataplane,
        }
    }

    pub fn publish(&mut self, table: Table) {
        let published = self.publisher.publish(table);
        self.dataplane.reconcile(&published);
    }

    /// Waits until `listen` is bound (panics after [`PATIENCE`]).
    pub async fn wait_bound(&self, listen: SocketAddr) {
        let status = self.dataplane.listener_status();
        let key = tcp_key(listen);
        let ok = eventually(PATIENCE, || status.is_bound(&key)).await;
        assert!(ok, "{listen} not bound: {:?}", status.state(&key));
    }

    /// Waits until `key`'s bind has failed at least twice (so it is retrying) because the
    /// address is in use, and that this counts as attempted.
    pub async fn wait_bind_failed_in_use(&self, key: FrontendKey) {
        let status = self.dataplane.listener_status();
        assert!(
            eventually(PATIENCE, || matches!(
                status.state(&key),
                Some(ListenerState::Failed { attempts, .. }) if attempts >= 2
            ))
            .await,
            "state: {:?}",
            status.state(&key)
        );
        match status.state(&key) {
            Some(ListenerState::Failed { error, .. }) => {
                assert!(error.to_lowercase().contains("in use"), "{error}")
            }
            s => panic!("{s:?}"),
        }
        assert!(!status.is_bound(&key));
        assert!(status.all_attempted(), "a failed bind counts as attempted");
    }

    pub fn state(&self, listen: SocketAddr) -> Option<ListenerState> {
        self.dataplane.listener_status().state(&tcp_key(listen))
    }

    /// The runtime state of the TCP backend `addr`.
    pub fn backend_stats(&self, addr: SocketAddr) -> vipd::balance::BackendStatsSnapshot {
        self.backend_stats_of(BackendKey::tcp(addr))
    }

    /// The runtime state of the UDP backend `addr`.
    pub fn udp_backend_stats(&self, addr: SocketAddr) -> vipd::balance::BackendStatsSnapshot {
        self.backend_stats_of(BackendKey::udp(addr))
    }

    pub fn backend_stats_of(&self, key: BackendKey) -> vipd::balance::BackendStatsSnapshot {
        self.dataplane
            .backends()
            .get(&key)
            .map(|s| s.snapshot())
            .unwrap_or_default()
    }

    pub fn frontend_stats(&self, listen: SocketAddr) -> vipd::dataplane::FrontendStatsSnapshot {
        self.dataplane
            .frontends()
            .get(&tcp_key(listen))
            .map(|s| s.snapshot())
            .unwrap_or_default()
    }
}

/// Waits until connecting to `addr` is refused (nothing listens any more).
pub async fn wait_refused(addr: SocketAddr) -> bool {
    eventually_async(PATIENCE, || async move {
        matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    })
    .await
}

/// A backend address whose connects hang (SYNs dropped): a listener with backlog 0 that never
/// accepts, with its accept queue filled by test-owned loopback connections.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

/// `None` if the kernel here would not drop SYNs for a full accept queue (the caller skips).
pub async fn blackhole() -> Option<Blackhole> {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filling the blackhole: {e}"),
            Err(_) => {
                return Some(Blackhole {
                    addr,
                    _listener: listener,
                    _fillers: fillers,
                })
            }
        }
    }
    None
}
pub mod child;
pub mod daemon;
pub mod fake_marathon;
pub mod fake_mesos;
pub mod netns;
pub mod table_json;
