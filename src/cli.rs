//! Command-line interface: clap definitions only. Every flag of `vipd run` can also be set from a
//! `VIPD_*` environment variable.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "vipd",
    version,
    about = "Per-agent L4 load balancer for Marathon service ports and VIPs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the table vipd would serve for an apps document (`GET /v2/apps?embed=apps.tasks`).
    Table(TableArgs),
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
    /// Address pool for named VIPs (IPv4 or IPv6 CIDR).
    #[arg(long, env = "VIPD_VIP_CIDR", default_value = "11.0.0.0/8")]
    pub vip_cidr: ipnet::IpNet,
    /// DNS zone of named VIPs.
    #[arg(long, env = "VIPD_ZONE", default_value = "l4lb.thisdcos.directory")]
    pub zone: String,
}
