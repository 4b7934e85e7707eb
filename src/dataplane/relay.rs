//! Byte relay between an accepted client socket and its backend socket.
//!
//! Owns: the two copy loops with exact half-close semantics, the idle timeout, the maximum
//! lifetime, the per-connection buffers, and the close reason ([`CloseReason`]).
//!
//! Half-close: EOF read from one side becomes `shutdown(Write)` on the other side, while the
//! opposite direction keeps flowing until it sees its own EOF. The relay ends when both
//! directions have finished, on the first I/O error (either side), when nothing moved in either
//! direction for `idle_timeout`, when `max_lifetime` has passed, or when the connection is cut
//! (drain timeout, shutdown). Dropping the streams afterwards closes both sockets.
//!
//! Cost: two buffers allocated once per connection (never per read); one relaxed atomic add per
//! chunk into the backend's byte counters and one into the activity clock. Seam: a splice(2)
//! fast path (Linux, later) would replace [`relay`]'s body and keep its signature and outcome.
//!
//! Must not: choose backends, read the table, or log above `trace` per read/write.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Default size of each of the two per-connection buffers.
pub const DEFAULT_BUFFER_SIZE: usize = 16 * 1024;

/// Per-connection relay limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Close both sides after this long without a byte in either direction. `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Close both sides this long after the relay started. `None` = never.
    pub max_lifetime: Option<Duration>,
    pub buffer_size: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            idle_timeout: None,
            max_lifetime: None,
            buffer_size: DEFAULT_BUFFER_SIZE,
        }
    }
}

/// Which socket an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
        }
    }
}

/// Why a relay ended. Stable label strings for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions reached EOF and were shut down cleanly.
    Done,
    /// An I/O error on one side (reset, broken pipe, ...).
    Error(Side),
    Idle,
    Lifetime,
    /// Cut by the data plane (drain timeout of a removed frontend, or shutdown grace expired).
    Cut,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Done => "done",
            CloseReason::Error(Side::Client) => "client_error",
            CloseReason::Error(Side::Backend) => "backend_error",
            CloseReason::Idle => "idle_timeout",
            CloseReason::Lifetime => "max_lifetime",
            CloseReason::Cut => "cut",
        }
    }
}

/// How a relay ended and how much it moved.
#[derive(Debug)]
pub struct RelayOutcome {
    pub reason: CloseReason,
    pub bytes_to_backend: u64,
    pub bytes_from_backend: u64,
    /// The I/O error behind [`CloseReason::Error`].
    pub error: Option<io::Error>,
}

/// Where the relay adds the bytes it moves (e.g. the backend's runtime counters).
#[derive(Debug, Clone, Copy)]
pub struct ByteCounters<'a> {
    pub to_backend: &'a AtomicU64,
    pub from_backend: &'a AtomicU64,
}

/// Last-activity clock shared by both directions: nanoseconds since `start`.
struct Activity {
    start: Instant,
    last: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_nanos() as u64, Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Relaxed))
    }
}

/// Relays until one of the ends described in the module docs. Never panics on I/O errors.
pub async fn relay(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    config: &RelayConfig,
    counters: ByteCounters<'_>,
    cut: &CancellationToken,
) -> RelayOutcome {
    let activity = Activity {
        start: Instant::now(),
        last: AtomicU64::new(0),
    };
    let size = config.buffer_size.max(1);
    let mut up_buf = vec![0u8; size].into_boxed_slice();
    let mut down_buf = vec![0u8; size].into_boxed_slice();
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);

    let (mut client_r, mut client_w) = client.split();
    let (mut backend_r, mut backend_w) = backend.split();

    let upstream = pump(
        &mut client_r,
        &mut backend_w,
        &mut up_buf,
        Dir {
            reader: Side::Client,
            writer: Side::Backend,
        },
        &activity,
        [&sent, counters.to_backend],
    );
    let downstream = pump(
        &mut backend_r,
        &mut client_w,
        &mut down_buf,
        Dir {
            reader: Side::Backend,
            writer: Side::Client,
        },
        &activity,
        [&received, counters.from_backend],
    );
    let both = async { tokio::try_join!(upstream, downstream) };
    let idle = async {
        match config.idle_timeout {
            Some(timeout) => idle_expired(&activity, timeout).await,
            None => std::future::pending().await,
        }
    };
    let lifetime = async {
        match config.max_lifetime {
            Some(max) => tokio::time::sleep(max).await,
            None => std::future::pending().await,
        }
    };

    let (reason, error) = tokio::select! {
        biased;
        _ = cut.cancelled() => (CloseReason::Cut, None),
        r = both => match r {
            Ok(_) => (CloseReason::Done, None),
            Err((side, e)) => (CloseReason::Error(side), Some(e)),
        },
        _ = idle => (CloseReason::Idle, None),
        _ = lifetime => (CloseReason::Lifetime, None),
    };
    RelayOutcome {
        reason,
        bytes_to_backend: sent.load(Relaxed),
        bytes_from_backend: received.load(Relaxed),
        error,
    }
}

#[derive(Clone, Copy)]
struct Dir {
    reader: Side,
    writer: Side,
}

/// One direction: read → write until EOF, then shut down the writer's write side.
async fn pump(
    r: &mut ReadHalf<'_>,
    w: &mut WriteHalf<'_>,
    buf: &mut [u8],
    dir: Dir,
    activity: &Activity,
    counters: [&AtomicU64; 2],
) -> Result<(), (Side, io::Error)> {
    loop {
        let n = r.read(buf).await.map_err(|e| (dir.reader, e))?;
        if n == 0 {
            tracing::trace!(from = dir.reader.as_str(), "eof; shutting down write side");
            return w.shutdown().await.map_err(|e| (dir.writer, e));
        }
        activity.touch();
        w.write_all(&buf[..n]).await.map_err(|e| (dir.writer, e))?;
        activity.touch();
        for c in counters {
            c.fetch_add(n as u64, Relaxed);
        }
        tracing::trace!(from = dir.reader.as_str(), bytes = n, "relayed");
    }
}

/// Resolves once nothing has moved for `timeout` (re-arms after every activity).
async fn idle_expired(activity: &Activity, timeout: Duration) {
    loop {
        let deadline = activity.last() + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected (a, b) pair of TCP streams on 127.0.0.1.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    struct Setup {
        client: TcpStream,
        backend: TcpStream,
        task: tokio::task::JoinHandle<RelayOutcome>,
        counters: std::sync::Arc<[AtomicU64; 2]>,
    }

    async fn setup(config: RelayConfig, cut: CancellationToken) -> Setup {
        let (client, mut proxy_client) = pair().await;
        let (mut proxy_backend, backend) = pair().await;
        let counters = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let c = counters.clone();
        let task = tokio::spawn(async move {
            let counters = ByteCounters {
                to_backend: &c[0],
                from_backend: &c[1],
            };
            relay(
                &mut proxy_client,
                &mut proxy_backend,
                &config,
                counters,
                &cut,
            )
            .await
        });
        Setup {
            client,
            backend,
            task,
            counters,
        }
    }

    #[tokio::test]
    async fn half_close_each_way_and_bytes_are_counted() {
        let mut s = setup(RelayConfig::default(), CancellationToken::new()).await;
        s.client.write_all(b"hello").await.unwrap();
        s.client.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello", "client FIN reached the backend");
        s.backend.write_all(b"reply after fin").await.unwrap();
        s.backend.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"reply after fin");
        let out = finished(s.task).await;
        assert_eq!(out.reason, CloseReason::Done);
        assert_eq!((out.bytes_to_backend, out.bytes_from_backend), (5, 15));
        assert_eq!(s.counters[0].load(Relaxed), 5);
        assert_eq!(s.counters[1].load(Relaxed), 15);
    }

    /// Bounds every wait on the relay task.
    async fn finished(task: tokio::task::JoinHandle<RelayOutcome>) -> RelayOutcome {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("relay ended within 10 s")
            .unwrap()
    }

    #[tokio::test]
    async fn idle_timeout_closes_both_sides() {
        let config = RelayConfig {
            idle_timeout: Some(Duration::from_millis(150)),
            ..RelayConfig::default()
        };
        let mut s = setup(config, CancellationToken::new()).await;
        s.client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.backend.read_exact(&mut one).await.unwrap();
        let out = finished(s.task).await;
        assert_eq!(out.reason, CloseReason::Idle);
        let mut rest = Vec::new();
        assert_eq!(s.client.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(s.backend.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn max_lifetime_ends_a_busy_connection() {
        let config = RelayConfig {
            max_lifetime: Some(Duration::from_millis(200)),
            idle_timeout: Some(Duration::from_secs(3600)),
            ..RelayConfig::default()
        };
        let s = setup(config, CancellationToken::new()).await;
        let out = finished(s.task).await;
        assert_eq!(out.reason, CloseReason::Lifetime);
    }

    #[tokio::test]
    async fn cut_ends_the_relay() {
        let cut = CancellationToken::new();
        let mut s = setup(RelayConfig::default(), cut.clone()).await;
        s.client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.backend.read_exact(&mut one).await.unwrap();
        cut.cancel();
        assert_eq!(finished(s.task).await.reason, CloseReason::Cut);
    }

    #[tokio::test]
    async fn a_reset_ends_both_directions() {
        let mut s = setup(RelayConfig::default(), CancellationToken::new()).await;
        // SO_LINGER 0 turns close into RST.
        socket2::SockRef::from(&s.backend)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s.backend);
        let out = finished(s.task).await;
        assert_eq!(out.reason, CloseReason::Error(Side::Backend));
        let mut rest = Vec::new();
        let _ = s.client.read_to_end(&mut rest).await; // EOF or reset: closed either way.
    }
}
