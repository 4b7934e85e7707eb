//! `serve`: TCP and UDP benchmark backends on N ports, in one of three modes: `echo` (send back
//! what arrives), `sink` (read and discard) or `small-response` (TCP: read `--request-size`
//! bytes, answer `--response-size` bytes, repeat; UDP: answer every datagram with
//! `--response-size` bytes whose first 16 bytes copy the request's header). Prints the chosen
//! ports as one JSON line (`{"event":"listening",...}`) once every socket is bound, and a
//! `{"event":"stopped",...}` line with counters when it stops (SIGTERM, SIGINT or `--duration`).
//!
//! Must NOT: allocate per read (buffers are per connection / per socket), or log per connection.

use crate::common::{is_allowed_ip, parse_duration};
use anyhow::Context;
use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Bound on a `serve` run when `--duration` is not given.
pub const SERVE_DEFAULT_DURATION: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServeMode {
    Echo,
    Sink,
    SmallResponse,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Only loopback and private test ranges without `--force`.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Number of TCP ports to listen on.
    #[arg(long, default_value_t = 0)]
    pub tcp_ports: u16,
    /// Number of UDP ports to listen on.
    #[arg(long, default_value_t = 0)]
    pub udp_ports: u16,
    /// First port (TCP ports are base..base+N, UDP ports likewise); ephemeral ports if absent.
    #[arg(long)]
    pub base_port: Option<u16>,
    #[arg(long, value_enum, default_value = "echo")]
    pub mode: ServeMode,
    /// small-response (TCP): bytes that make one request.
    #[arg(long, default_value_t = 64)]
    pub request_size: usize,
    /// small-response: bytes of each answer.
    #[arg(long, default_value_t = 64)]
    pub response_size: usize,
    /// Stop after this long (default 3600 s); SIGTERM and SIGINT stop it earlier.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Runtime worker threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// TCP listen backlog.
    #[arg(long, default_value_t = 4096)]
    pub backlog: i32,
    /// Allow binding an address outside loopback and the private test ranges.
    #[arg(long)]
    pub force: bool,
}

#[derive(Default)]
struct Counters {
    tcp_accepted: AtomicU64,
    tcp_bytes_in: AtomicU64,
    tcp_bytes_out: AtomicU64,
    udp_in: AtomicU64,
    udp_out: AtomicU64,
    errors: AtomicU64,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if !args.force && !is_allowed_ip(args.bind) && !args.bind.is_unspecified() {
        anyhow::bail!(
            "refusing to bind {}: not loopback or a private test range; pass --force",
            args.bind
        );
    }
    anyhow::ensure!(
        args.tcp_ports > 0 || args.udp_ports > 0,
        "give --tcp-ports and/or --udp-ports"
    );
    anyhow::ensure!(
        args.request_size > 0 && args.response_size > 0,
        "sizes must be at least 1"
    );
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(serve_async(args))
}

fn port_at(base: Option<u16>, i: u16) -> anyhow::Result<u16> {
    match base {
        None => Ok(0),
        Some(b) => b
            .checked_add(i)
            .context("--base-port + port count exceeds 65535"),
    }
}

async fn serve_async(args: ServeArgs) -> anyhow::Result<()> {
    let counters = Arc::new(Counters::default());
    let domain = if args.bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let mut tcp_ports = Vec::new();
    let mut listeners = Vec::new();
    for i in 0..args.tcp_ports {
        let addr = SocketAddr::new(args.bind, port_at(args.base_port, i)?);
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())
            .with_context(|| format!("binding TCP {addr}"))?;
        s.listen(args.backlog)?;
        s.set_nonblocking(true)?;
        let l = TcpListener::from_std(s.into())?;
        tcp_ports.push(l.local_addr()?.port());
        listeners.push(l);
    }
    let mut udp_ports = Vec::new();
    let mut udps = Vec::new();
    for i in 0..args.udp_ports {
        let addr = SocketAddr::new(args.bind, port_at(args.base_port, i)?);
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        // Bigger buffers absorb bursts; the kernel caps them at rmem_max/wmem_max.
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.bind(&addr.into())
            .with_context(|| format!("binding UDP {addr}"))?;
        s.set_nonblocking(true)?;
        let u = UdpSocket::from_std(s.into())?;
        udp_ports.push(u.local_addr()?.port());
        udps.push(u);
    }
    let mode_name = match args.mode {
        ServeMode::Echo => "echo",
        ServeMode::Sink => "sink",
        ServeMode::SmallResponse => "small-response",
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}",
            json!({"event": "listening", "bind": args.bind.to_string(), "mode": mode_name,
                   "tcp_ports": tcp_ports, "udp_ports": udp_ports, "pid": std::process::id()})
        )?;
        out.flush()?;
    }
    for l in listeners {
        tokio::spawn(accept_loop(l, args.clone(), counters.clone()));
    }
    for u in udps {
        tokio::spawn(udp_loop(u, args.clone(), counters.clone()));
    }
    let duration = args.duration.unwrap_or(SERVE_DEFAULT_DURATION);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let reason = tokio::select! {
        _ = tokio::signal::ctrl_c() => "sigint",
        _ = term.recv() => "sigterm",
        _ = tokio::time::sleep(duration) => "duration",
    };
    let c = &counters;
    let line = json!({
        "event": "stopped", "reason": reason,
        "tcp_accepted": c.tcp_accepted.load(Ordering::Relaxed),
        "tcp_bytes_in": c.tcp_bytes_in.load(Ordering::Relaxed),
        "tcp_bytes_out": c.tcp_bytes_out.load(Ordering::Relaxed),
        "udp_datagrams_in": c.udp_in.load(Ordering::Relaxed),
        "udp_datagrams_out": c.udp_out.load(Ordering::Relaxed),
        "errors": c.errors.load(Ordering::Relaxed),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

async fn accept_loop(l: TcpListener, args: ServeArgs, counters: Arc<Counters>) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                counters.tcp_accepted.fetch_add(1, Ordering::Relaxed);
                let c = counters.clone();
                let mode = args.mode;
                let (req, resp) = (args.request_size, args.response_size);
                tokio::spawn(async move {
                    let r = handle_tcp(s, mode, req, resp, &c).await;
                    if r.is_err() {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            Err(_) => {
                // EMFILE and friends: count, back off briefly, keep serving.
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn handle_tcp(
    mut s: TcpStream,
    mode: ServeMode,
    req_size: usize,
    resp_size: usize,
    c: &Counters,
) -> std::io::Result<()> {
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let result = async {
        match mode {
            ServeMode::Echo => {
                s.set_nodelay(true)?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    bytes_in += n as u64;
                    s.write_all(&buf[..n]).await?;
                    bytes_out += n as u64;
                }
            }
            ServeMode::Sink => {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    bytes_in += n as u64;
                }
            }
            ServeMode::SmallResponse => {
                s.set_nodelay(true)?;
                let mut buf = vec![0u8; req_size.max(4096)];
                let resp: Vec<u8> = (0..resp_size).map(|i| (i % 251) as u8).collect();
                let mut have = 0usize;
                loop {
                    let n = s.read(&mut buf[..]).await?;
                    if n == 0 {
                        break;
                    }
                    bytes_in += n as u64;
                    have += n;
                    // Pipelined requests may arrive together: answer each complete one.
                    while have >= req_size {
                        have -= req_size;
                        s.write_all(&resp).await?;
                        bytes_out += resp.len() as u64;
                    }
                }
            }
        }
        s.shutdown().await
    }
    .await;
    c.tcp_bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
    c.tcp_bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    result
}

async fn udp_loop(u: UdpSocket, args: ServeArgs, c: Arc<Counters>) {
    let mut buf = vec![0u8; 65536];
    let mut resp: Vec<u8> = (0..args.response_size).map(|i| (i % 251) as u8).collect();
    loop {
        let (n, peer) = match u.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(_) => {
                // E.g. ECONNREFUSED left by an earlier send to a client that went away.
                c.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        c.udp_in.fetch_add(1, Ordering::Relaxed);
        let sent = match args.mode {
            ServeMode::Echo => u.send_to(&buf[..n], peer).await,
            ServeMode::Sink => Ok(0),
            ServeMode::SmallResponse => {
                let h = n.min(crate::udp::HEADER).min(resp.len());
                resp[..h].copy_from_slice(&buf[..h]);
                u.send_to(&resp, peer).await
            }
        };
        match sent {
            Ok(_) if args.mode != ServeMode::Sink => {
                c.udp_out.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
