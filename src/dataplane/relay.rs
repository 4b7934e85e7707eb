//! Byte relay between an accepted client socket and its backend socket.
//!
//! Owns: the two pumps (one per direction) with exact half-close semantics, the idle timeout, the
//! maximum lifetime, the per-chunk buffers and pipes, the choice of how bytes move
//! ([`RelayMode`]: copy or splice), and the close reason ([`CloseReason`]).
//!
//! Half-close: EOF read from one side becomes `shutdown(Write)` on the other side, while the
//! opposite direction keeps flowing until it sees its own EOF. The relay ends when both
//! directions have finished, on the first I/O error (either side), when nothing moved in either
//! direction for `idle_timeout`, when `max_lifetime` has passed, or when the connection is cut
//! (drain timeout, shutdown). Dropping the streams afterwards closes both sockets.
//!
//! Two ways to move bytes, with one pump and one outcome:
//! - [`RelayMode::Copy`] (every platform): each direction waits for readability, borrows a
//!   buffer from a per-thread free list ([`pool`]) for one read and the writes that follow, and
//!   gives it back.
//! - [`RelayMode::Splice`] (Linux, cargo feature `splice`): the same loop, but the chunk is a
//!   pipe borrowed from a per-thread pool (`splice` submodule): splice(2) socket → pipe, then
//!   pipe → socket until the pipe is empty, so the bytes never enter userspace. Readiness comes
//!   from tokio (`readable`/`writable` + `try_io`, so a WouldBlock clears it). If no pipe can be
//!   made (EMFILE, ENFILE), that direction of that connection copies instead, silently (one
//!   `debug` line).
//!
//! Either way an idle connection holds no buffer and no pipe (no descriptor beyond its two
//! sockets). Accounting is the same in both modes: a byte is counted (backend counters,
//! connection totals) when it has been written to the destination socket, per write; bytes read
//! but never written (the writer failed, or the relay was cut, timed out or expired mid-chunk)
//! are not counted: a buffer is dropped with them, a pipe holding them is closed, not pooled.
//! Per write: one relaxed atomic add into the backend's byte counters, one into the connection's
//! own total, and (only with an idle timeout) a store into the activity clock.
//!
//! Must not: choose backends, read the table, or log above `trace` per read/write.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[cfg(all(feature = "splice", target_os = "linux"))]
mod splice;

/// Default size of a relay buffer or pipe (one per direction while bytes are in flight).
pub const DEFAULT_BUFFER_SIZE: usize = 16 * 1024;

/// How the relay moves bytes (`--tcp-relay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayMode {
    /// read(2)/write(2) through a pooled userspace buffer. Every build.
    Copy,
    /// splice(2) socket → pipe → socket through a pooled pipe. Only where
    /// [`RelayMode::SPLICE_AVAILABLE`]; elsewhere a relay asked to splice copies.
    Splice,
    /// Each direction copies until one read fills a whole buffer (a bulk transfer), then splices
    /// for the rest of the connection (HAProxy's `splice-auto` idea). Small request/response
    /// traffic pays read+write (2 syscalls per chunk, and a short read clears readiness without
    /// an extra EAGAIN read); splice costs 2 splice calls plus the EAGAIN one, but keeps bulk
    /// bytes out of userspace. Copies where splice is not available.
    Auto,
}

impl RelayMode {
    /// Whether this build has the splice relay (Linux with the `splice` cargo feature).
    pub const SPLICE_AVAILABLE: bool = cfg!(all(feature = "splice", target_os = "linux"));

    /// `auto` where splice is available, `copy` otherwise.
    pub const DEFAULT: RelayMode = if Self::SPLICE_AVAILABLE {
        RelayMode::Auto
    } else {
        RelayMode::Copy
    };

    pub const fn as_str(self) -> &'static str {
        match self {
            RelayMode::Copy => "copy",
            RelayMode::Splice => "splice",
            RelayMode::Auto => "auto",
        }
    }
}

impl Default for RelayMode {
    fn default() -> Self {
        RelayMode::DEFAULT
    }
}

impl std::fmt::Display for RelayMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A relay mode that does not exist, or that this build does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayModeError {
    #[error(
        "this vipd was built without the splice relay (it needs Linux and the `splice` cargo \
         feature); use `copy`"
    )]
    SpliceUnavailable,
    #[error("unknown relay {0:?}: expected `copy`, `splice` or `auto`")]
    Unknown(String),
}

impl std::str::FromStr for RelayMode {
    type Err = RelayModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "copy" => Ok(RelayMode::Copy),
            "splice" if RelayMode::SPLICE_AVAILABLE => Ok(RelayMode::Splice),
            "auto" if RelayMode::SPLICE_AVAILABLE => Ok(RelayMode::Auto),
            "splice" | "auto" => Err(RelayModeError::SpliceUnavailable),
            other => Err(RelayModeError::Unknown(other.to_string())),
        }
    }
}

/// Per-connection relay limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Close both sides after this long without a byte in either direction. `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Close both sides this long after the relay started. `None` = never.
    pub max_lifetime: Option<Duration>,
    /// Size of a buffer (copy) or pipe (splice, set with `F_SETPIPE_SZ`): the most one chunk moves.
    pub buffer_size: usize,
    pub mode: RelayMode,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            idle_timeout: None,
            max_lifetime: None,
            buffer_size: DEFAULT_BUFFER_SIZE,
            mode: RelayMode::DEFAULT,
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
    /// Of both totals, the bytes that went through a pipe (splice); the rest were copied.
    pub bytes_spliced: u64,
    /// The I/O error behind [`CloseReason::Error`].
    pub error: Option<io::Error>,
}

/// Where the relay adds the bytes it moves (e.g. the backend's runtime counters).
#[derive(Debug, Clone, Copy)]
pub struct ByteCounters<'a> {
    pub to_backend: &'a AtomicU64,
    pub from_backend: &'a AtomicU64,
}

/// Splice pipe counters of the calling thread (pipes are pooled per thread). All zero in a build
/// without the splice relay. For tests and diagnostics: a tokio worker's counters cover the
/// connections that ran on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Pipes created (`pipe2` succeeded).
    pub created: u64,
    /// Pipes taken from the pool instead.
    pub reused: u64,
    /// `pipe2` failures (EMFILE, ENFILE, ...); each made one direction of a connection copy.
    pub create_failures: u64,
    /// Pipes closed, not pooled, because bytes were left in them.
    pub discarded: u64,
    /// Bytes spliced out of pipes into sockets.
    pub spliced_bytes: u64,
    /// Empty pipes in this thread's pool now.
    pub pooled: usize,
}

/// This thread's [`PipeStats`].
pub fn thread_pipe_stats() -> PipeStats {
    #[cfg(all(feature = "splice", target_os = "linux"))]
    return splice::thread_stats();
    #[cfg(not(all(feature = "splice", target_os = "linux")))]
    PipeStats::default()
}

/// Closes the empty pipes pooled on this thread and returns how many; descriptors are freed for
/// other uses (the accept loop calls it when accept fails for lack of descriptors). Pipes in use
/// are not affected. 0 in a build without the splice relay.
pub fn trim_pipe_pool() -> usize {
    #[cfg(all(feature = "splice", target_os = "linux"))]
    return splice::trim_pool();
    #[cfg(not(all(feature = "splice", target_os = "linux")))]
    0
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

/// Relays until one of the ends described in the module docs, moving bytes as `config.mode`
/// says. Never panics on I/O errors.
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
    let spliced = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    // Both pumps use both sockets (one reads, the other writes): shared borrows suffice.
    let (client, backend): (&TcpStream, &TcpStream) = (client, backend);

    let upstream = Pump {
        r: client,
        w: backend,
        size,
        dir: Dir {
            reader: Side::Client,
            writer: Side::Backend,
        },
        activity: clock,
        counters: [&sent, counters.to_backend],
        spliced: &spliced,
        finished: &finished,
    }
    .run(config.mode);
    let downstream = Pump {
        r: backend,
        w: client,
        size,
        dir: Dir {
            reader: Side::Backend,
            writer: Side::Client,
        },
        activity: clock,
        counters: [&received, counters.from_backend],
        spliced: &spliced,
        finished: &finished,
    }
    .run(config.mode);
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
        bytes_spliced: spliced.load(Relaxed),
        error,
    }
}

#[derive(Clone, Copy)]
struct Dir {
    reader: Side,
    writer: Side,
}

/// What one chunk did.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// This many bytes were read and all written.
    Moved(usize),
    /// Readiness was stale (WouldBlock): tokio cleared it; wait again.
    Spurious,
    /// The reader sent EOF (nothing is in flight).
    Eof,
}

type PumpResult<T> = Result<T, (Side, io::Error)>;

/// One direction of the relay.
struct Pump<'a> {
    r: &'a TcpStream,
    w: &'a TcpStream,
    size: usize,
    dir: Dir,
    activity: Option<&'a Activity>,
    /// The connection's total for this direction, and the backend's counter.
    counters: [&'a AtomicU64; 2],
    /// The connection's spliced bytes (both directions; stays 0 in a build without splice).
    #[cfg_attr(not(all(feature = "splice", target_os = "linux")), allow(dead_code))]
    spliced: &'a AtomicU64,
    /// Set by the first pump to finish (EOF read and its writer shut down).
    finished: &'a AtomicBool,
}

impl Pump<'_> {
    /// Wait until readable → move one chunk (a pipe, or a buffer) → repeat, until EOF, then shut
    /// down the writer's write side. The chunk's pipe or buffer is held only while its bytes are
    /// in flight (the read and the writes that follow).
    async fn run(self, mode: RelayMode) -> PumpResult<()> {
        #[cfg(all(feature = "splice", target_os = "linux"))]
        let mut pipes = mode == RelayMode::Splice;
        // `auto`: copy until a read fills the whole buffer, then splice.
        #[cfg(all(feature = "splice", target_os = "linux"))]
        let mut auto = mode == RelayMode::Auto;
        #[cfg(not(all(feature = "splice", target_os = "linux")))]
        let _ = mode;
        loop {
            self.r.readable().await.map_err(|e| (self.dir.reader, e))?;
            #[cfg(all(feature = "splice", target_os = "linux"))]
            if pipes {
                match splice::Pipe::take(self.size) {
                    Ok(pipe) => {
                        if self.spliced_chunk(pipe).await? == Chunk::Eof {
                            return self.eof();
                        }
                        continue;
                    }
                    Err(error) => {
                        // Out of descriptors (or memory): this direction copies from now on.
                        pipes = false;
                        tracing::debug!(
                            from = self.dir.reader.as_str(),
                            %error,
                            "no pipe for the splice relay; copying instead"
                        );
                    }
                }
            }
            match self.copied_chunk().await? {
                Chunk::Eof => return self.eof(),
                #[cfg(all(feature = "splice", target_os = "linux"))]
                Chunk::Moved(n) if auto && n == self.size => {
                    auto = false;
                    pipes = true;
                    tracing::trace!(from = self.dir.reader.as_str(), "bulk transfer; splicing");
                }
                _ => {}
            }
        }
    }

    /// One chunk through a pooled buffer: one read, then writes until it is all written.
    async fn copied_chunk(&self) -> PumpResult<Chunk> {
        use std::io::Read;
        use tokio::io::Interest;
        let mut buf = pool::Buf::take(self.size);
        // A read that fills less than the buffer has drained the socket: report it to tokio as a
        // WouldBlock so the readiness is cleared now, which saves the read that would only
        // return EAGAIN next (tokio's own `poll_read` does the same on epoll). Readiness that
        // arrives meanwhile is not lost (tokio clears only the readiness it saw before the
        // read), and a FIN seen by the reactor stays set.
        let mut short = 0;
        let n = match self.r.try_io(Interest::READABLE, || {
            let n = (&*socket2::SockRef::from(self.r)).read(&mut buf)?;
            if n > 0 && n < buf.len() {
                short = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }) {
            Ok(0) => return Ok(Chunk::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => short,
            // Spurious readiness: the buffer goes back to the pool on drop.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Chunk::Spurious),
            Err(e) => return Err((self.dir.reader, e)),
        };
        self.touch();
        let mut done = 0;
        while done < n {
            self.w.writable().await.map_err(|e| (self.dir.writer, e))?;
            match self.w.try_write(&buf[done..n]) {
                Ok(0) => return Err((self.dir.writer, io::ErrorKind::WriteZero.into())),
                Ok(k) => {
                    done += k;
                    self.written(k);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The unwritten rest of the buffer is dropped uncounted.
                Err(e) => return Err((self.dir.writer, e)),
            }
        }
        tracing::trace!(from = self.dir.reader.as_str(), bytes = n, "relayed");
        Ok(Chunk::Moved(n))
    }

    /// One chunk through a pipe: one splice in (the pipe is empty, so WouldBlock can only mean
    /// the reader has nothing), then splices out until the pipe is empty. If the pump stops early
    /// (error here, or the relay ends), the pipe is dropped with its bytes and closed.
    #[cfg(all(feature = "splice", target_os = "linux"))]
    async fn spliced_chunk(&self, mut pipe: splice::Pipe) -> PumpResult<Chunk> {
        use std::os::fd::AsFd;
        use tokio::io::Interest;
        let n = match self.r.try_io(Interest::READABLE, || {
            pipe.fill_from(self.r.as_fd(), self.size)
        }) {
            // The pipe is empty: it goes back to the pool on drop.
            Ok(0) => return Ok(Chunk::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Chunk::Spurious),
            Err(e) => return Err((self.dir.reader, e)),
        };
        self.touch();
        while pipe.pending() > 0 {
            self.w.writable().await.map_err(|e| (self.dir.writer, e))?;
            match self
                .w
                .try_io(Interest::WRITABLE, || pipe.drain_to(self.w.as_fd()))
            {
                Ok(0) => return Err((self.dir.writer, io::ErrorKind::WriteZero.into())),
                Ok(k) => {
                    self.written(k);
                    self.spliced.fetch_add(k as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err((self.dir.writer, e)),
            }
        }
        tracing::trace!(from = self.dir.reader.as_str(), bytes = n, "spliced");
        Ok(Chunk::Moved(n))
    }

    fn touch(&self) {
        if let Some(a) = self.activity {
            a.touch();
        }
    }

    /// `n` bytes reached the writer's socket: count them.
    fn written(&self, n: usize) {
        self.touch();
        for c in self.counters {
            c.fetch_add(n as u64, Relaxed);
        }
    }

    /// The reader sent EOF: shut down the writer's write side (its FIN follows what was written).
    /// When the other direction has already finished, the relay ends now and closing the socket
    /// sends that FIN (its receive queue is empty: that direction read to EOF), so the
    /// `shutdown(2)` is skipped: one syscall less per connection.
    fn eof(&self) -> PumpResult<()> {
        if self.finished.swap(true, Relaxed) {
            tracing::trace!(from = self.dir.reader.as_str(), "eof; both directions done");
            return Ok(());
        }
        tracing::trace!(
            from = self.dir.reader.as_str(),
            "eof; shutting down write side"
        );
        socket2::SockRef::from(self.w)
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| (self.dir.writer, e))
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Defines `$name::copy` and (where the build has them) `$name::splice` and `$name::auto`,
    /// each running `$name(mode)`: every relay behaviour is proved for every way of moving bytes.
    macro_rules! both_modes {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                #[tokio::test]
                async fn copy() {
                    super::$name(super::RelayMode::Copy).await
                }
                #[cfg(all(feature = "splice", target_os = "linux"))]
                #[tokio::test]
                async fn splice() {
                    super::$name(super::RelayMode::Splice).await
                }
                #[cfg(all(feature = "splice", target_os = "linux"))]
                #[tokio::test]
                async fn auto() {
                    super::$name(super::RelayMode::Auto).await
                }
            }
        )*};
    }

    both_modes!(
        half_close_each_way_and_bytes_are_counted,
        idle_timeout_closes_both_sides,
        max_lifetime_ends_a_busy_connection,
        cut_ends_the_relay,
        a_reset_ends_both_directions,
        large_transfers_both_ways_arrive_intact,
        unwritten_bytes_are_not_counted_when_the_writer_fails,
    );

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
        /// The relay's own backend-facing socket (moved into the task; for socket queries).
        proxy_backend_fd: std::os::fd::RawFd,
        task: tokio::task::JoinHandle<RelayOutcome>,
        counters: std::sync::Arc<[AtomicU64; 2]>,
    }

    async fn setup(config: RelayConfig, cut: CancellationToken) -> Setup {
        use std::os::fd::AsRawFd;
        let (client, mut proxy_client) = pair().await;
        let (mut proxy_backend, backend) = pair().await;
        let proxy_backend_fd = proxy_backend.as_raw_fd();
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
            proxy_backend_fd,
            task,
            counters,
        }
    }

    fn config(mode: RelayMode) -> RelayConfig {
        RelayConfig {
            mode,
            ..RelayConfig::default()
        }
    }

    /// Bounds every wait on the relay task.
    async fn finished(task: tokio::task::JoinHandle<RelayOutcome>) -> RelayOutcome {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("relay ended within 10 s")
            .unwrap()
    }

    /// The bytes moved went through pipes in splice mode, and none did in copy mode.
    fn assert_engine(mode: RelayMode, out: &RelayOutcome) {
        let total = out.bytes_to_backend + out.bytes_from_backend;
        match mode {
            RelayMode::Copy => assert_eq!(out.bytes_spliced, 0, "copy splices nothing"),
            RelayMode::Splice => assert_eq!(out.bytes_spliced, total, "every byte spliced"),
            // Which chunks splice depends on read sizes; `auto_copies_small_and_splices_bulk`
            // pins it down.
            RelayMode::Auto => assert!(out.bytes_spliced <= total),
        }
    }

    async fn half_close_each_way_and_bytes_are_counted(mode: RelayMode) {
        let mut s = setup(config(mode), CancellationToken::new()).await;
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
        assert_engine(mode, &out);
    }

    async fn idle_timeout_closes_both_sides(mode: RelayMode) {
        let config = RelayConfig {
            idle_timeout: Some(Duration::from_millis(150)),
            ..config(mode)
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

    async fn max_lifetime_ends_a_busy_connection(mode: RelayMode) {
        let config = RelayConfig {
            max_lifetime: Some(Duration::from_millis(200)),
            idle_timeout: Some(Duration::from_secs(3600)),
            ..config(mode)
        };
        let s = setup(config, CancellationToken::new()).await;
        let out = finished(s.task).await;
        assert_eq!(out.reason, CloseReason::Lifetime);
    }

    async fn cut_ends_the_relay(mode: RelayMode) {
        let cut = CancellationToken::new();
        let mut s = setup(config(mode), cut.clone()).await;
        s.client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.backend.read_exact(&mut one).await.unwrap();
        cut.cancel();
        assert_eq!(finished(s.task).await.reason, CloseReason::Cut);
    }

    async fn a_reset_ends_both_directions(mode: RelayMode) {
        let mut s = setup(config(mode), CancellationToken::new()).await;
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

    /// Bytes larger than one buffer, both ways at once, arrive intact and in order.
    async fn large_transfers_both_ways_arrive_intact(mode: RelayMode) {
        let config = RelayConfig {
            buffer_size: 4096,
            ..config(mode)
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
        assert_engine(mode, &out);
    }

    /// Bytes queued on a TCP socket: `FIONREAD` (receive queue) or `TIOCOUTQ` (send queue, not
    /// yet acknowledged).
    fn queued(fd: std::os::fd::RawFd, request: libc::Ioctl) -> u64 {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD/TIOCOUTQ on a socket write one int through the valid pointer we pass.
        let rc = unsafe { libc::ioctl(fd, request, &mut n) };
        assert_eq!(rc, 0, "ioctl: {}", io::Error::last_os_error());
        n as u64
    }

    /// The relay's writer stalls (the backend reads nothing) with a chunk in flight, then the
    /// backend resets. Counted = exactly the bytes the kernel accepted from the relay (they sit in
    /// the backend's receive queue plus the relay socket's send queue); the chunk still in the
    /// buffer or pipe is not counted, and (splice) its pipe is closed, not pooled.
    async fn unwritten_bytes_are_not_counted_when_the_writer_fails(mode: RelayMode) {
        use std::os::fd::AsRawFd;
        let config = RelayConfig {
            buffer_size: 64 * 1024,
            ..config(mode)
        };
        let stats_before = thread_pipe_stats();
        let s = setup(config, CancellationToken::new()).await;
        let (_cr, mut cw) = s.client.into_split();
        // More than every queue on the way can hold: the client's write never finishes.
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 1 << 20];
            for _ in 0..64 {
                if cw.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            cw
        });
        let backend_fd = s.backend.as_raw_fd();
        let written =
            || queued(backend_fd, libc::FIONREAD) + queued(s.proxy_backend_fd, libc::TIOCOUTQ);
        // Wait (bounded) until the relay is stuck: counted == accepted by the kernel, unchanged
        // over 20 consecutive polls (the backend never reads, so once stuck it stays stuck).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (mut last, mut stable) = (u64::MAX, 0);
        while stable < 20 {
            assert!(std::time::Instant::now() < deadline, "relay never stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
            let (w, c) = (written(), s.counters[0].load(Relaxed));
            if w == c && w == last && w > 0 {
                stable += 1;
            } else {
                stable = 0;
            }
            last = w;
        }
        assert!(!s.task.is_finished());
        let counted = s.counters[0].load(Relaxed);
        socket2::SockRef::from(&s.backend)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s.backend);
        let out = finished(s.task).await;
        assert_eq!(out.reason, CloseReason::Error(Side::Backend), "{out:?}");
        assert_eq!(
            out.bytes_to_backend, counted,
            "nothing counted after the stall"
        );
        assert_eq!(s.counters[0].load(Relaxed), counted);
        let stats = thread_pipe_stats();
        match mode {
            RelayMode::Copy => assert_eq!(stats.discarded, stats_before.discarded),
            RelayMode::Splice => {
                assert!(out.bytes_spliced > 0 && out.bytes_spliced == counted);
                assert_eq!(
                    stats.discarded,
                    stats_before.discarded + 1,
                    "the pipe with the unwritten chunk was closed"
                );
            }
            RelayMode::Auto => assert!(out.bytes_spliced <= counted),
        }
        writer.abort();
    }

    /// An open connection that has relayed bytes and is now idle holds no buffer: both
    /// directions gave theirs back to this thread's free list (the test runtime is
    /// current-thread, so the relay runs on this thread).
    #[tokio::test]
    async fn an_idle_connection_returns_its_buffers_to_the_pool() {
        let mut s = setup(config(RelayMode::Copy), CancellationToken::new()).await;
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

    /// The splice twin: an idle connection holds no pipe; the pipes it used are back in this
    /// thread's pool, empty, and the next chunks reuse them.
    #[cfg(all(feature = "splice", target_os = "linux"))]
    #[tokio::test]
    async fn an_idle_connection_returns_its_pipes_to_the_pool() {
        trim_pipe_pool();
        let before = thread_pipe_stats();
        let mut s = setup(config(RelayMode::Splice), CancellationToken::new()).await;
        for _ in 0..3 {
            s.client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            s.backend.read_exact(&mut got).await.unwrap();
            s.backend.write_all(b"pong").await.unwrap();
            s.client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"pong");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while thread_pipe_stats().pooled < 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let after = thread_pipe_stats();
        assert!(after.pooled >= 1, "pipes are back in the pool: {after:?}");
        assert!(
            after.created - before.created <= 2,
            "six chunks, at most two pipes ever made: {after:?}"
        );
        assert!(after.reused > before.reused, "pipes were reused: {after:?}");
        assert_eq!(after.discarded, before.discarded);
        assert!(!s.task.is_finished(), "the connection is still open");
    }

    /// `auto`: a small exchange is copied; a bulk transfer is copied until one read fills the
    /// buffer, then spliced. 64 KiB are queued before the relay starts, so its first read is a
    /// full 16 KiB buffer and exactly the remaining 48 KiB are spliced.
    #[cfg(all(feature = "splice", target_os = "linux"))]
    #[tokio::test]
    async fn auto_copies_small_and_splices_bulk() {
        let mut s = setup(config(RelayMode::Auto), CancellationToken::new()).await;
        s.client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.backend.read_exact(&mut got).await.unwrap();
        s.backend.write_all(b"pong").await.unwrap();
        s.client.read_exact(&mut got).await.unwrap();
        s.client.shutdown().await.unwrap();
        s.backend.shutdown().await.unwrap();
        let out = finished(s.task).await;
        assert_eq!((out.bytes_to_backend, out.bytes_from_backend), (4, 4));
        assert_eq!(out.bytes_spliced, 0, "small chunks are copied");

        let (mut client, mut proxy_client) = pair().await;
        let (mut proxy_backend, mut backend) = pair().await;
        let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
        client.write_all(&payload).await.unwrap();
        client.shutdown().await.unwrap();
        let counters = [AtomicU64::new(0), AtomicU64::new(0)];
        let cut = CancellationToken::new();
        let auto = config(RelayMode::Auto);
        let relayed = relay(
            &mut proxy_client,
            &mut proxy_backend,
            &auto,
            ByteCounters {
                to_backend: &counters[0],
                from_backend: &counters[1],
            },
            &cut,
        );
        let reader = async {
            let mut got = Vec::new();
            backend.read_to_end(&mut got).await.unwrap();
            backend.shutdown().await.unwrap();
            got
        };
        let (out, got) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(relayed, reader)
        })
        .await
        .expect("relay ended within 10 s");
        assert_eq!(got, payload);
        assert_eq!(out.bytes_to_backend, payload.len() as u64);
        assert_eq!(
            out.bytes_spliced,
            (payload.len() - DEFAULT_BUFFER_SIZE) as u64,
            "the first (full) chunk is copied, the rest spliced"
        );
    }

    #[test]
    fn relay_modes_parse_with_clear_errors() {
        assert_eq!("copy".parse::<RelayMode>(), Ok(RelayMode::Copy));
        assert_eq!(
            "sendfile".parse::<RelayMode>(),
            Err(RelayModeError::Unknown("sendfile".into()))
        );
        let splice = "splice".parse::<RelayMode>();
        let auto = "auto".parse::<RelayMode>();
        if RelayMode::SPLICE_AVAILABLE {
            assert_eq!(splice, Ok(RelayMode::Splice));
            assert_eq!(auto, Ok(RelayMode::Auto));
        } else {
            assert_eq!(splice, Err(RelayModeError::SpliceUnavailable));
            assert_eq!(auto, Err(RelayModeError::SpliceUnavailable));
        }
        for m in [RelayMode::Copy, RelayMode::Splice, RelayMode::Auto] {
            assert_eq!(m.to_string(), m.as_str());
        }
    }
}
