//! Command-line interface: every clap definition of the `vipd` binary, and the one conversion of
//! each group of flags into the options struct of the module it configures.
//!
//! Owns: the flags (each flag of `vipd run` can also be set from a `VIPD_*` environment
//! variable; `--help` documents each one), the one duration grammar ([`duration`]), and every
//! default value: a default is written once, in its clap attribute, and the `Default` impls of the
//! options structs (`HealthConfig`, `DataplaneConfig`, `BuildOptions`, ...) are the flags'
//! defaults, parsed from an empty command line ([`defaults`]).
//!
//! Must not: start anything or hold logic of the modules it configures.

pub mod addresses;
pub mod config;
pub mod dataplane;
pub mod dns;
pub mod duration;
pub mod handover;
pub mod health;
pub mod marathon;
pub mod mesos;
pub mod status;

pub use addresses::AddressArgs;
pub use dataplane::DataplaneArgs;
pub use dns::DnsArgs;
pub use handover::HandoverArgs;
pub use health::HealthArgs;
pub use marathon::MarathonArgs;
pub use mesos::MesosArgs;
pub use status::StatusArgs;

use crate::table::vip::IpVipScope;
use crate::table::BuildOptions;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The values of a group of flags when none is given: its defaults, parsed by clap itself so
/// that they are written only once (in the `#[arg]` attributes). `VIPD_*` environment variables
/// are not read here: these are the built-in defaults, whatever the environment says.
pub fn defaults<T: clap::Args>() -> T {
    let cmd = T::augment_args(clap::Command::new("vipd")).mut_args(|a| a.env(None));
    let matches = cmd
        .try_get_matches_from(["vipd"])
        .unwrap_or_else(|e| panic!("the flags' defaults must parse: {e}"));
    T::from_arg_matches(&matches).unwrap_or_else(|e| panic!("the flags' defaults must parse: {e}"))
}

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
    /// Show a running vipd's frontends and backends (state, connections, bytes), read from its
    /// admin API, in the manner of `ipvsadm -Ln`.
    Status(StatusArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log level or filter (`info`, `debug`, `vipd=debug,warn`); RUST_LOG is used when unset. An
    /// invalid value (`verbose`) is a startup error.
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
    #[arg(long, env = "VIPD_APPS", required_unless_present = "mesos_state")]
    pub apps: Option<PathBuf>,
    /// A Mesos operator-API `GET_STATE` answer to read (`{"type":"GET_STATE","get_state":…}`);
    /// `-` reads stdin. With `--apps`, service ports come from the apps document and VIPs from
    /// the Mesos state alone (the rule of `run --marathon` with `--mesos`).
    #[arg(long, env = "VIPD_MESOS_STATE")]
    pub mesos_state: Option<PathBuf>,
    #[command(flatten)]
    pub table: TableOptionArgs,
    #[command(flatten)]
    pub documents: marathon::DocumentArgs,
}

/// Options that shape the table (shared by `table` and `run`).
#[derive(Debug, Clone, clap::Args)]
pub struct TableOptionArgs {
    /// Address that service-port frontends bind.
    #[arg(long, env = "VIPD_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: std::net::IpAddr,
    /// Address pool for named VIPs (IPv4 or IPv6 CIDR). Every agent derives the same address
    /// for a name from it.
    #[arg(long, env = "VIPD_VIP_CIDR", default_value = "11.0.0.0/8", value_parser = parse_cidr)]
    pub vip_cidr: ipnet::IpNet,
    /// IPv6 address pool for named VIPs (e.g. fd01:c::/64; --vip-cidr is then IPv4). With it a
    /// named VIP is dual-stack: an IPv4 address with its IPv4 backends and an IPv6 address with
    /// its IPv6 ones, and DNS answers A and AAAA.
    #[arg(long, env = "VIPD_VIP_CIDR6", value_parser = parse_cidr6)]
    pub vip_cidr6: Option<ipnet::IpNet>,
    /// DNS zone of named VIPs.
    #[arg(long, env = "VIPD_ZONE", default_value = "l4lb.thisdcos.directory")]
    pub zone: String,
    /// Ranges IP VIP labels may name (comma-separated), beside loopback and --vip-cidr. With
    /// --manage-addresses an IP VIP must be in one of them (vipd adds it to lo); without, it may
    /// also be an address of this agent. `vipd table` accepts any unicast address unless this is
    /// set. Unspecified, broadcast and multicast addresses are always refused.
    #[arg(long, env = "VIPD_IP_VIP_CIDR", value_delimiter = ',')]
    pub ip_vip_cidr: Vec<ipnet::IpNet>,
}

/// Parses a CIDR, naming what is wrong: the address or the prefix length.
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let Some((addr, prefix)) = s.trim().split_once('/') else {
        return Err(format!(
            "{s:?} is not a CIDR: expected ADDRESS/PREFIX such as 11.0.0.0/8"
        ));
    };
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = prefix.parse().ok().filter(|l| *l <= max).ok_or_else(|| {
        format!(
            "prefix length /{prefix} is out of range for an IPv{} address (0-{max})",
            if addr.is_ipv4() { 4 } else { 6 }
        )
    })?;
    ipnet::IpNet::new(addr, len).map_err(|e| e.to_string())
}

/// Parses an IPv6 CIDR (`--vip-cidr6`).
pub fn parse_cidr6(s: &str) -> Result<ipnet::IpNet, String> {
    let net = parse_cidr(s)?;
    match net {
        ipnet::IpNet::V6(_) => Ok(net),
        ipnet::IpNet::V4(_) => Err(format!("{s:?} is an IPv4 range; --vip-cidr6 takes IPv6")),
    }
}

/// `--vip-cidr6` beside an IPv6 `--vip-cidr`: both pools would be one family.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--vip-cidr6 {cidr6} needs an IPv4 --vip-cidr, but --vip-cidr is {cidr}")]
pub struct VipPoolsError {
    pub cidr: ipnet::IpNet,
    pub cidr6: ipnet::IpNet,
}

impl Default for TableOptionArgs {
    /// The defaults of the flags.
    fn default() -> Self {
        defaults::<TableOptionArgs>()
    }
}

impl From<&TableOptionArgs> for BuildOptions {
    fn from(a: &TableOptionArgs) -> Self {
        BuildOptions {
            bind_address: a.bind_address,
            vip_cidr: a.vip_cidr,
            vip_cidr6: a.vip_cidr6,
            zone: a.zone.clone(),
            marathon_vips: true,
            ip_vip_scope: if a.ip_vip_cidr.is_empty() {
                IpVipScope::AnyUnicast
            } else {
                IpVipScope::Within(
                    std::iter::once(a.vip_cidr)
                        .chain(a.vip_cidr6)
                        .chain(a.ip_vip_cidr.iter().copied())
                        .collect(),
                )
            },
        }
    }
}

impl TableOptionArgs {
    /// The two named-VIP pools are of different families.
    pub fn check_pools(&self) -> Result<(), VipPoolsError> {
        match self.vip_cidr6 {
            Some(cidr6) if self.vip_cidr.addr().is_ipv6() => Err(VipPoolsError {
                cidr: self.vip_cidr,
                cidr6,
            }),
            _ => Ok(()),
        }
    }

    /// The IP VIP scope of `vipd run`: only `--vip-cidr` and `--ip-vip-cidr` when vipd manages
    /// addresses (it would add any other address to `lo`), else also this agent's own addresses
    /// (`local`, read from its interfaces).
    pub fn run_ip_vip_scope(
        &self,
        manage_addresses: bool,
        local: Vec<std::net::IpAddr>,
    ) -> IpVipScope {
        let nets: Vec<ipnet::IpNet> = std::iter::once(self.vip_cidr)
            .chain(self.vip_cidr6)
            .chain(self.ip_vip_cidr.iter().copied())
            .collect();
        if manage_addresses {
            IpVipScope::Within(nets)
        } else {
            IpVipScope::LocalOrWithin { local, nets }
        }
    }
}

impl Default for BuildOptions {
    /// The defaults of the flags.
    fn default() -> Self {
        BuildOptions::from(&TableOptionArgs::default())
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
    pub marathon: MarathonArgs,
    #[command(flatten)]
    pub mesos: MesosArgs,
    #[command(flatten)]
    pub documents: marathon::DocumentArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub table: TableOptionArgs,
    #[command(flatten)]
    pub dataplane: DataplaneArgs,
    #[command(flatten)]
    pub addresses: AddressArgs,
    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub handover: HandoverArgs,
    /// Worker threads of the data plane runtime (default: the number of cores).
    #[arg(long, env = "VIPD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
}

impl RunArgs {
    /// Defaults for everything, following `path` (used by the demo and tests).
    pub fn for_apps_file(path: PathBuf) -> RunArgs {
        let mut args = defaults::<RunArgs>();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ip_vip_scope_is_the_named_ranges_when_managing_addresses_else_also_local() {
        let mut args = defaults::<TableOptionArgs>();
        args.ip_vip_cidr = vec!["10.10.0.0/24".parse().unwrap()];
        let nets: Vec<ipnet::IpNet> = vec![
            "11.0.0.0/8".parse().unwrap(),
            "10.10.0.0/24".parse().unwrap(),
        ];
        let local: Vec<std::net::IpAddr> = vec!["10.0.1.5".parse().unwrap()];
        assert_eq!(
            args.run_ip_vip_scope(true, local.clone()),
            IpVipScope::Within(nets.clone()),
            "vipd adds IP VIP addresses to lo: never one outside the named ranges"
        );
        assert_eq!(
            args.run_ip_vip_scope(false, local.clone()),
            IpVipScope::LocalOrWithin { local, nets }
        );
        // `vipd table` (a preview) keeps accepting any unicast address unless ranges are given.
        assert_eq!(
            BuildOptions::from(&defaults::<TableOptionArgs>()).ip_vip_scope,
            IpVipScope::AnyUnicast
        );
    }
}
