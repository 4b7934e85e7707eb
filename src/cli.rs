//! Command-line interface: clap definitions only. Every flag of `vipd run` can also be set from a
//! `VIPD_*` environment variable; `--help` documents each one.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "vipd",
    version,
    about = "Per-agent L4 load balancer for Marathon service ports and VIPs"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: follow the source, publish tables, forward traffic.
    Run(Box<RunArgs>),
    /// Print the table vipd would serve for an apps document (`GET /v2/apps?embed=apps.tasks`).
    Table(TableArgs),
    /// One-command demo: example backends, an example apps file, and vipd serving them.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log level or filter (`info`, `debug`, `vipd=debug,warn`); RUST_LOG is used when unset.
    #[arg(long, global = true, env = "VIPD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: human-readable text or JSON lines for log shippers.
    #[arg(long, global = true, env = "VIPD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct TableArgs {
    /// Apps document to read; `-` reads stdin.
    #[arg(long, env = "VIPD_APPS")]
    pub apps: PathBuf,
    #[command(flatten)]
    pub table: TableOptionArgs,
}

/// Options that shape the table (shared by `table` and `run`).
#[derive(Debug, Clone, clap::Args)]
pub struct TableOptionArgs {
    /// Address that service-port frontends bind.
    #[arg(long, env = "VIPD_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: std::net::IpAddr,
    /// Address pool for named VIPs (IPv4 or IPv6 CIDR). Every agent derives the same address
    /// for a name from it.
    #[arg(long, env = "VIPD_VIP_CIDR", default_value = "11.0.0.0/8")]
    pub vip_cidr: ipnet::IpNet,
    /// DNS zone of named VIPs.
    #[arg(long, env = "VIPD_ZONE", default_value = "l4lb.thisdcos.directory")]
    pub zone: String,
    /// Restrict IP VIP labels to loopback, --vip-cidr and these CIDRs (comma-separated). Unset:
    /// any unicast address. Unspecified, broadcast and multicast addresses are always refused.
    #[arg(long, env = "VIPD_IP_VIP_CIDR", value_delimiter = ',')]
    pub ip_vip_cidr: Vec<ipnet::IpNet>,
}

impl Default for TableOptionArgs {
    fn default() -> Self {
        TableOptionArgs {
            bind_address: std::net::Ipv4Addr::UNSPECIFIED.into(),
            vip_cidr: "11.0.0.0/8".parse().expect("valid default CIDR"),
            zone: "l4lb.thisdcos.directory".into(),
            ip_vip_cidr: Vec::new(),
        }
    }
}

/// Where Marathon state comes from: an apps file (the embedded default) or a Marathon cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Apps document to follow (the embedded default source): the same JSON as
    /// `GET /v2/apps?embed=apps.tasks`. Changes are picked up within 1 s.
    #[arg(long, env = "VIPD_APPS", conflicts_with = "marathon")]
    pub apps: Option<PathBuf>,
    #[command(flatten)]
    pub marathon: crate::source::marathon::args::MarathonArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub table: TableOptionArgs,
    #[command(flatten)]
    pub dataplane: crate::dataplane::DataplaneArgs,
    #[command(flatten)]
    pub addresses: crate::addresses::AddressArgs,
    #[command(flatten)]
    pub dns: crate::dns::DnsArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub health: crate::health::HealthArgs,
    /// Worker threads of the data plane runtime (default: the number of cores).
    #[arg(long, env = "VIPD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
}

impl RunArgs {
    /// Defaults for everything, following `path` (used by the demo and tests).
    pub fn for_apps_file(path: PathBuf) -> RunArgs {
        use clap::Parser as _;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            run: RunArgs,
        }
        let mut args = Wrapper::parse_from(["vipd"]).run;
        args.source.apps = Some(path);
        args
    }
}

/// The admin HTTP server (`/metrics`, `/healthz`, `/readyz`, `/v1/vips`, `/v1/config`).
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Address of the admin HTTP server. Keep it on localhost unless the network is trusted:
    /// it shows the whole table.
    #[arg(long, env = "VIPD_ADMIN_LISTEN", default_value = "127.0.0.1:61421")]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Run without the admin server.
    #[arg(long, env = "VIPD_NO_ADMIN")]
    pub no_admin: bool,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Service port for the example app (another free port is used if it is taken).
    #[arg(long, default_value_t = 10000)]
    pub service_port: u16,
    /// Port of the example IP VIP on 127.1.0.1.
    #[arg(long, default_value_t = 8080)]
    pub vip_port: u16,
}
