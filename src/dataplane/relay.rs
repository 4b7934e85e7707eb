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
//! Cost: no buffer is owned by a connection. Each direction waits for readability, borrows a
//! buffer from a per-thread free list ([`pool`]) for one read and the write that follows, and
//! gives it back, so an idle connection holds no buffer memory and a busy thread reuses a few
//! warm buffers (allocation only when the list is empty). Per chunk: one relaxed atomic add into
//! the backend's byte counters, one into the connection's own total, and (only with an idle
//! timeout) two stores into the activity clock. Seam: a splice(2)
//! fast path (Linux, later) would replace [`relay`]'s body and keep its signature and outcome.
//!
//! Must not: choose backends, read the table, or log above `trace` per read/write.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
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
    // The activity clock is only read by the idle timer; without one, skip the clock updates.
    let clock = config.idle_timeout.map(|_| &activity);
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);

    let (mut client_r, mut client_w) = client.split();
    let (mut backend_r, mut backend_w) = backend.split();

    let upstream = pump(
        &mut client_r,
        &mut backend_w,
        size,
        Dir {
            reader: Side::Client,
            writer: Side::Backend,
        },
        clock,
        [&sent, counters.to_backend],
    );
    let downstream = pump(
        &mut backend_r,
        &mut client_w,
        size,
        Dir {
            reader: Side::Backend,
            writer: Side::Client,
        },
        clock,
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

/// One direction: wait until readable → borrow a buffer → read → write → return the buffer,
/// until EOF, then shut down the writer's write side.
///
/// The buffer is held only while bytes are in flight (a read and the write that follows), so an
/// idle connection holds no buffer; the [`pool`] keeps freed buffers for reuse by this thread.
async fn pump(
    r: &mut ReadHalf<'_>,
    w: &mut WriteHalf<'_>,
    size: usize,
    dir: Dir,
    activity: Option<&Activity>,
    counters: [&AtomicU64; 2],
) -> Result<(), (Side, io::Error)> {
    loop {
        r.readable().await.map_err(|e| (dir.reader, e))?;
        let mut buf = pool::Buf::take(size);
        let n = match r.try_read(&mut buf) {
            Ok(n) => n,
            // Spurious readiness: the buffer goes back to the pool on drop.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err((dir.reader, e)),
        };
        if n == 0 {
            drop(buf);
            tracing::trace!(from = dir.reader.as_str(), "eof; shutting down write side");
            return w.shutdown().await.map_err(|e| (dir.writer, e));
        }
        if let Some(a) = activity {
            a.touch();
        }
        w.write_all(&buf[..n]).await.map_err(|e| (dir.writer, e))?;
        drop(buf);
        if let Some(a) = activity {
            a.touch();
        }
        for c in counters {
            c.fetch_add(n as u64, Relaxed);
        }
        tracing::trace!(from = dir.reader.as_str(), bytes = n, "relayed");
    }
}

/// Per-thread free list of relay buffers.
///
/// A connection borrows a buffer only while it has bytes in flight; idle connections hold none
/// (HAProxy's buffer pools work the same way). A buffer is returned on drop, also when the pump
/// is cancelled mid-write. Buffers may be returned on another thread than the one that took
/// them (tokio moves tasks); each thread keeps at most [`MAX_POOLED`] and frees the rest.
mod pool {
    use std::cell::RefCell;
    use std::ops::{Deref, DerefMut};

    /// Free buffers kept per thread (at 16 KiB: 4 MiB at most per thread).
    pub(super) const MAX_POOLED: usize = 256;

    thread_local! {
        static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) struct Buf(Option<Box<[u8]>>);

    /// Free buffers on this thread (tests).
    #[cfg(test)]
    pub(super) fn free_len() -> usize {
        FREE.with(|f| f.borrow().len())
    }

    impl Buf {
        pub(super) fn take(size: usize) -> Buf {
            let pooled = FREE
                .try_with(|f| {
                    let mut f = f.borrow_mut();
                    // All buffers of one process have one size; a stray size is dropped.
                    while let Some(b) = f.pop() {
                        if b.len() == size {
                            return Some(b);
                        }
                    }
                    None
                })
                .ok()
                .flatten();
            Buf(Some(
                pooled.unwrap_or_else(|| vec![0u8; size].into_boxed_slice()),
            ))
        }
    }

    impl Drop for Buf {
        fn drop(&mut self) {
            if let Some(b) = self.0.take() {
                // During thread teardown the list is gone: the buffer is simply freed.
                let _ = FREE.try_with(|f| {
                    let mut f = f.borrow_mut();
                    if f.len() < MAX_POOLED {
                        f.push(b);
                    }
                });
            }
        }
    }

    impl Deref for Buf {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            self.0.as_deref().unwrap_or(&[])
        }
    }

    impl DerefMut for Buf {
        fn deref_mut(&mut self) -> &mut [u8] {
            self.0.as_deref_mut().unwrap_or(&mut [])
        }
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
    use tokio::io::AsyncReadExt;
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

    /// An open connection that has relayed bytes and is now idle holds no buffer: both
    /// directions gave theirs back to this thread's free list (the test runtime is
    /// current-thread, so the relay runs on this thread).
    #[tokio::test]
    async fn an_idle_connection_returns_its_buffers_to_the_pool() {
        let mut s = setup(RelayConfig::default(), CancellationToken::new()).await;
        s.client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.backend.read_exact(&mut got).await.unwrap();
        s.backend.write_all(b"pong").await.unwrap();
        s.client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        // The write to the client finished before the relay dropped the buffer; wait (bounded)
        // for the relay task to reach its next readiness wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool::free_len() < 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(pool::free_len() >= 1, "buffers are back in the pool");
        assert!(!s.task.is_finished(), "the connection is still open");
    }

    /// Bytes larger than one buffer, both ways at once, arrive intact and in order.
    #[tokio::test]
    async fn large_transfers_both_ways_arrive_intact() {
        let config = RelayConfig {
            buffer_size: 4096,
            ..RelayConfig::default()
        };
        let s = setup(config, CancellationToken::new()).await;
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let (mut cr, mut cw) = s.client.into_split();
        let (mut br, mut bw) = s.backend.into_split();
        let up = data.clone();
        let down = data.clone();
        let w1 = tokio::spawn(async move {
            cw.write_all(&up).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let w2 = tokio::spawn(async move {
            bw.write_all(&down).await.unwrap();
            bw.shutdown().await.unwrap();
        });
        let mut at_backend = Vec::new();
        let mut at_client = Vec::new();
        let (a, b) = tokio::join!(
            br.read_to_end(&mut at_backend),
            cr.read_to_end(&mut at_client)
        );
        a.unwrap();
        b.unwrap();
        w1.await.unwrap();
        w2.await.unwrap();
        assert!(at_backend == data, "upstream bytes intact");
        assert!(at_client == data, "downstream bytes intact");
        let out = finished(s.task).await;
        assert_eq!(out.reason, CloseReason::Done);
        assert_eq!(out.bytes_to_backend, data.len() as u64);
        assert_eq!(out.bytes_from_backend, data.len() as u64);
    }
}
