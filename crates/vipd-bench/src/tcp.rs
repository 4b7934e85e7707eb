//! TCP load modes: `tcp-connect` (a new connection per request), `tcp-rr` (request/response on
//! persistent connections) and `tcp-stream` (bulk throughput).
//!
//! Must NOT: allocate or log per request (buffers are allocated once per connection task), or
//! touch the network before `common::check_target` has accepted the target (the caller does that).

use crate::common::{self, io_kind, run_threads, Bounds, CommonArgs, LocalStats, Shared, Stats};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;

/// Pause after a failed operation so a refused target does not turn into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, clap::Args)]
pub struct TcpConnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections attempted concurrently.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Bytes sent on each connection.
    #[arg(long, default_value_t = 64)]
    pub request_size: usize,
    /// Bytes expected back (match the server's `--response-size`, or `--request-size` for echo).
    #[arg(long, default_value_t = 64)]
    pub response_size: usize,
    /// Close with SO_LINGER 0 (a RST, no TIME_WAIT on the client) instead of a FIN.
    #[arg(long)]
    pub linger0: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TcpRrArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Persistent connections, each with one request outstanding at a time.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Bytes per request.
    #[arg(long, default_value_t = 64)]
    pub request_size: usize,
    /// Bytes per response (match the server's `--response-size`, or `--request-size` for echo).
    #[arg(long, default_value_t = 64)]
    pub response_size: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TcpStreamArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Parallel streams (connections).
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Bytes per write; `--requests` counts these chunks.
    #[arg(long, default_value_t = 128 * 1024)]
    pub chunk_size: usize,
    /// The server echoes (serve `echo`): read everything back and report both directions.
    #[arg(long)]
    pub echo: bool,
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn record_err(stats: &LocalStats, shared: &Shared, kind: &'static str) {
    stats.borrow_mut().error(kind);
    shared.errors.fetch_add(1, Ordering::Relaxed);
}

/// Splits `total` items over `threads` threads; returns thread `idx`'s share.
fn share(total: usize, threads: usize, idx: usize) -> usize {
    total / threads + usize::from(idx < total % threads)
}

pub fn tcp_connect(args: TcpConnectArgs, target: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.request_size > 0, "--request-size must be at least 1");
    anyhow::ensure!(args.response_size > 0, "--response-size must be at least 1");
    let bounds = Bounds::from_args(&args.common);
    let shared = Shared::new(bounds.requests);
    let progress = common::progress_enabled(&args.common);
    let threads = args.common.threads.max(1);
    let a = args.clone();
    let sh = shared.clone();
    let (stats, elapsed) =
        run_threads(
            threads,
            "tcp-connect",
            &shared,
            &bounds,
            progress,
            move |idx, stats| {
                let n = share(a.concurrency, threads, idx);
                let a = a.clone();
                let sh = sh.clone();
                common::join_local_workers((0..n).map(move |_| {
                    connect_worker(a.clone(), target, bounds, sh.clone(), stats.clone())
                }))
            },
        )?;
    let mut r = common::base_result(
        "tcp-connect",
        &args.common,
        target,
        &bounds,
        &stats,
        elapsed,
    );
    r.insert("concurrency".into(), json!(args.concurrency));
    r.insert("request_size".into(), json!(args.request_size));
    r.insert("response_size".into(), json!(args.response_size));
    r.insert("linger0".into(), json!(args.linger0));
    let summary = format!(
        "tcp-connect {target}: {} connections in {:.2}s = {:.0} conn/s (concurrency {})\n  {} (connect + first byte)\n  {}",
        stats.ok,
        elapsed.as_secs_f64(),
        stats.ok as f64 / elapsed.as_secs_f64(),
        args.concurrency,
        common::latency_summary(&stats.hist),
        common::errors_summary(&stats)
    );
    common::emit(r, &summary)
}

async fn connect_worker(
    a: TcpConnectArgs,
    target: SocketAddr,
    bounds: Bounds,
    shared: Arc<Shared>,
    stats: LocalStats,
) {
    let req = pattern(a.request_size);
    let mut resp = vec![0u8; a.response_size];
    let timeout = a.common.timeout;
    let linger0 = a.linger0;
    loop {
        let t0 = Instant::now();
        if t0 >= bounds.deadline || !shared.claim() {
            return;
        }
        let op = async {
            let mut s = TcpStream::connect(target).await?;
            s.set_nodelay(true)?;
            s.write_all(&req).await?;
            let n = s.read(&mut resp).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let first_byte = t0.elapsed();
            if n < resp.len() {
                s.read_exact(&mut resp[n..]).await?;
            }
            if linger0 {
                socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
            }
            Ok::<_, std::io::Error>(first_byte)
        };
        match timeout_at(bounds.op_deadline(t0, timeout), op).await {
            Ok(Ok(lat)) => {
                stats.borrow_mut().record(lat);
                shared.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                record_err(&stats, &shared, io_kind(&e));
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
            Err(_) => {
                if Instant::now() >= bounds.deadline {
                    return;
                }
                record_err(&stats, &shared, "timeout");
            }
        }
    }
}

pub fn tcp_rr(args: TcpRrArgs, target: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.request_size > 0, "--request-size must be at least 1");
    anyhow::ensure!(args.response_size > 0, "--response-size must be at least 1");
    let bounds = Bounds::from_args(&args.common);
    let shared = Shared::new(bounds.requests);
    let progress = common::progress_enabled(&args.common);
    let threads = args.common.threads.max(1);
    let a = args.clone();
    let sh = shared.clone();
    let (stats, elapsed) = run_threads(
        threads,
        "tcp-rr",
        &shared,
        &bounds,
        progress,
        move |idx, stats| {
            let n = share(a.connections, threads, idx);
            let a = a.clone();
            let sh = sh.clone();
            common::join_local_workers(
                (0..n)
                    .map(move |_| rr_worker(a.clone(), target, bounds, sh.clone(), stats.clone())),
            )
        },
    )?;
    let mut r = common::base_result("tcp-rr", &args.common, target, &bounds, &stats, elapsed);
    r.insert("connections".into(), json!(args.connections));
    r.insert("request_size".into(), json!(args.request_size));
    r.insert("response_size".into(), json!(args.response_size));
    let summary = format!(
        "tcp-rr {target}: {} requests in {:.2}s = {:.0} req/s ({} connections)\n  {}\n  {}",
        stats.ok,
        elapsed.as_secs_f64(),
        stats.ok as f64 / elapsed.as_secs_f64(),
        args.connections,
        common::latency_summary(&stats.hist),
        common::errors_summary(&stats)
    );
    common::emit(r, &summary)
}

async fn rr_worker(
    a: TcpRrArgs,
    target: SocketAddr,
    bounds: Bounds,
    shared: Arc<Shared>,
    stats: LocalStats,
) {
    let req = pattern(a.request_size);
    let mut resp = vec![0u8; a.response_size];
    let timeout = a.common.timeout;
    'reconnect: loop {
        let t0 = Instant::now();
        if t0 >= bounds.deadline {
            return;
        }
        let mut s =
            match timeout_at(bounds.op_deadline(t0, timeout), TcpStream::connect(target)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    record_err(&stats, &shared, io_kind(&e));
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
                Err(_) => {
                    if Instant::now() < bounds.deadline {
                        record_err(&stats, &shared, "connect_timeout");
                    }
                    continue;
                }
            };
        if let Err(e) = s.set_nodelay(true) {
            record_err(&stats, &shared, io_kind(&e));
        }
        loop {
            let t0 = Instant::now();
            if t0 >= bounds.deadline || !shared.claim() {
                return;
            }
            let op = async {
                s.write_all(&req).await?;
                s.read_exact(&mut resp).await?;
                Ok::<_, std::io::Error>(())
            };
            match timeout_at(bounds.op_deadline(t0, timeout), op).await {
                Ok(Ok(())) => {
                    stats.borrow_mut().record(t0.elapsed());
                    shared.completed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    record_err(&stats, &shared, io_kind(&e));
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue 'reconnect;
                }
                Err(_) => {
                    if Instant::now() >= bounds.deadline {
                        return;
                    }
                    record_err(&stats, &shared, "timeout");
                    continue 'reconnect;
                }
            }
        }
    }
}

pub fn tcp_stream(args: TcpStreamArgs, target: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(args.streams > 0, "--streams must be at least 1");
    anyhow::ensure!(args.chunk_size > 0, "--chunk-size must be at least 1");
    let bounds = Bounds::from_args(&args.common);
    let shared = Shared::new(bounds.requests);
    let progress = common::progress_enabled(&args.common);
    let threads = args.common.threads.max(1);
    let a = args.clone();
    let sh = shared.clone();
    let (stats, elapsed) =
        run_threads(
            threads,
            "tcp-stream",
            &shared,
            &bounds,
            progress,
            move |idx, stats| {
                let n = share(a.streams, threads, idx);
                let a = a.clone();
                let sh = sh.clone();
                common::join_local_workers((0..n).map(move |_| {
                    stream_worker(a.clone(), target, bounds, sh.clone(), stats.clone())
                }))
            },
        )?;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let gbit = |b: u64| ((b as f64 * 8.0 / secs / 1e9) * 1000.0).round() / 1000.0;
    let mut r = common::base_result("tcp-stream", &args.common, target, &bounds, &stats, elapsed);
    r.insert("streams".into(), json!(args.streams));
    r.insert("chunk_size".into(), json!(args.chunk_size));
    r.insert("echo".into(), json!(args.echo));
    r.insert("bytes_sent".into(), json!(stats.bytes_sent));
    r.insert("bytes_received".into(), json!(stats.bytes_received));
    r.insert("gbit_per_s_sent".into(), json!(gbit(stats.bytes_sent)));
    r.insert(
        "gbit_per_s_received".into(),
        json!(gbit(stats.bytes_received)),
    );
    let main = if args.echo {
        stats.bytes_received
    } else {
        stats.bytes_sent
    };
    r.insert("gbit_per_s".into(), json!(gbit(main)));
    // The latency histogram holds per-chunk write times; not a request latency.
    r.insert("latency_us".into(), serde_json::Value::Null);
    let summary = format!(
        "tcp-stream {target}: {:.3} Gbit/s sent, {:.3} Gbit/s received over {:.2}s ({} streams, {} B chunks)\n  {}",
        gbit(stats.bytes_sent),
        gbit(stats.bytes_received),
        secs,
        args.streams,
        args.chunk_size,
        common::errors_summary(&stats)
    );
    common::emit(r, &summary)
}

async fn stream_worker(
    a: TcpStreamArgs,
    target: SocketAddr,
    bounds: Bounds,
    shared: Arc<Shared>,
    stats: LocalStats,
) {
    let timeout = a.common.timeout;
    let t0 = Instant::now();
    let s = match timeout_at(bounds.op_deadline(t0, timeout), TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return record_err(&stats, &shared, io_kind(&e)),
        Err(_) => return record_err(&stats, &shared, "connect_timeout"),
    };
    let (mut rd, mut wr) = s.into_split();
    // After the run's deadline, the drain (FIN, then the server's close) gets `timeout` more.
    let drain_deadline = tokio::time::Instant::from_std(bounds.deadline + timeout);
    let chunk = pattern(a.chunk_size);
    let writer = async {
        let mut local = Stats::default();
        loop {
            let now = Instant::now();
            if now >= bounds.deadline || !shared.claim() {
                break;
            }
            // Count every partial write: a chunk cut short by the deadline still reached the
            // server, and in echo mode comes back, so `bytes_sent` must include it.
            let mut written = 0usize;
            let write_chunk = async {
                while written < chunk.len() {
                    let n = wr.write(&chunk[written..]).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                    written += n;
                }
                std::io::Result::Ok(())
            };
            let result = timeout_at(bounds.op_deadline(now, timeout), write_chunk).await;
            local.bytes_sent += written as u64;
            shared.bytes.fetch_add(written as u64, Ordering::Relaxed);
            match result {
                Ok(Ok(())) => {
                    local.ok += 1;
                    shared.completed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    local.error(io_kind(&e));
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    return local;
                }
                Err(_) => {
                    if Instant::now() < bounds.deadline {
                        local.error("timeout");
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
        match timeout_at(drain_deadline, wr.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => local.error(io_kind(&e)),
            Err(_) => local.error("drain_timeout"),
        }
        local
    };
    let reader = async {
        let mut local = Stats::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match timeout_at(drain_deadline, rd.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => {
                    if a.echo {
                        local.bytes_received += n as u64;
                    } else {
                        local.error("unexpected_data");
                    }
                }
                Ok(Err(e)) => {
                    local.error(io_kind(&e));
                    break;
                }
                Err(_) => {
                    local.error("drain_timeout");
                    break;
                }
            }
        }
        local
    };
    let (w, r) = tokio::join!(writer, reader);
    let mut st = stats.borrow_mut();
    st.merge(w);
    st.merge(r);
}
