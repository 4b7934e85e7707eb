//! Flags of `vipd status`: which vipd to ask, how long to wait, and the output form.

use super::duration::parse_positive_duration;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Admin server of the vipd to ask: `host:port` or `http://host:port` (its `--admin-listen`;
    /// `VIPD_ADMIN_LISTEN` is read too, so a container's one setting serves both).
    #[arg(long, env = "VIPD_ADMIN_LISTEN", default_value = "127.0.0.1:61421")]
    pub admin: String,
    /// Print the same frontends and backends as JSON instead of a table.
    #[arg(long, conflicts_with = "ready")]
    pub json: bool,
    /// Ask `/readyz` instead: print its answer and exit 0 only when it is 200 (ready: a table is
    /// published and every frontend is bound). For container and Marathon command health checks.
    #[arg(long)]
    pub ready: bool,
    /// How long to wait for the answer (connect and read).
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
}

impl Default for StatusArgs {
    /// The defaults of the flags.
    fn default() -> Self {
        super::defaults::<StatusArgs>()
    }
}
