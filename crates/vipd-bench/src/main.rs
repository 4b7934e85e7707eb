//! `vipd-bench`: the load generator and benchmark backend used to compare vipd with HAProxy,
//! nginx `stream` and a direct connection (see `benches/compare/`).
//!
//! Subcommands: `serve` (TCP/UDP backends: echo, sink, small-response), `tcp-connect`, `tcp-rr`,
//! `tcp-stream`, `udp-rr`. Every load mode is bounded in time (`--duration`, default 10 s, or a
//! 600 s safety bound when only `--requests` is given) and optionally in count (`--requests`), and
//! refuses targets outside loopback and the private test ranges unless `--force` is given — the
//! check runs before any socket is created. Results: one JSON line on stdout, a human summary on
//! stderr, and a live progress line on stderr only when stderr is a TTY.
//!
//! Must NOT: depend on or be linked into vipd (it is its own workspace member with its own
//! dependencies), or send anything before the target check has passed.

use clap::{Parser, Subcommand};

mod common;
mod serve;
mod tcp;
mod udp;

#[derive(Debug, Parser)]
#[command(
    name = "vipd-bench",
    version,
    about = "Load generator and backends for benchmarking vipd against HAProxy, nginx and direct"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// TCP/UDP backends on N ports (echo, sink or small-response); prints the ports as JSON.
    Serve(serve::ServeArgs),
    /// A new TCP connection per request: connections/s and connect+first-byte latency.
    TcpConnect(tcp::TcpConnectArgs),
    /// Request/response on persistent TCP connections: req/s and latency percentiles.
    TcpRr(tcp::TcpRrArgs),
    /// Bulk TCP throughput (Gbit/s) over one or more streams.
    TcpStream(tcp::TcpStreamArgs),
    /// UDP request/response over several flows with a window in flight: responses/s, loss.
    UdpRr(udp::UdpRrArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve(a) => serve::serve(a),
        Cmd::TcpConnect(a) => checked(&a.common).and_then(|t| tcp::tcp_connect(a, t)),
        Cmd::TcpRr(a) => checked(&a.common).and_then(|t| tcp::tcp_rr(a, t)),
        Cmd::TcpStream(a) => checked(&a.common).and_then(|t| tcp::tcp_stream(a, t)),
        Cmd::UdpRr(a) => checked(&a.common).and_then(|t| udp::udp_rr(a, t)),
    };
    if let Err(e) = result {
        eprintln!("vipd-bench: error: {e:#}");
        std::process::exit(2);
    }
}

fn checked(c: &common::CommonArgs) -> anyhow::Result<std::net::SocketAddr> {
    anyhow::ensure!(c.threads >= 1, "--threads must be at least 1");
    common::check_target(&c.target, c.force)
}
