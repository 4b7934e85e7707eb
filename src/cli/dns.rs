//! The DNS server's flag. The zone itself is the table option `--zone`.

use std::net::SocketAddr;

/// Flags of the DNS server. The zone itself is the table option `--zone`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DnsArgs {
    /// Address (IP:port) on which to serve the VIP zone over UDP and TCP; no DNS server when
    /// absent. Example: `127.0.0.1:8053`.
    #[arg(long, env = "VIPD_DNS_LISTEN")]
    pub dns_listen: Option<SocketAddr>,
}
