//! Flags of upgrades without a dropped connection (SIGUSR2 re-exec and takeover through
//! `--handover-socket`; see [`crate::handover`]).
//!
//! Must not: hold upgrade logic.

use super::duration::parse_positive_duration;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct HandoverArgs {
    /// Unix socket for upgrades by takeover. At start, if a vipd (same uid) listens on PATH, this
    /// process takes its listening sockets and VIP addresses over and that vipd drains and exits;
    /// then (and otherwise) this process listens on PATH for the next one.
    #[arg(long, env = "VIPD_HANDOVER_SOCKET", value_name = "PATH")]
    pub handover_socket: Option<PathBuf>,
    /// How long a running vipd waits for its successor (SIGUSR2 re-exec or takeover) to serve
    /// before it gives up (stopping a re-executed child) and goes on serving.
    #[arg(long, env = "VIPD_HANDOVER_TIMEOUT", default_value = "2m",
          value_parser = parse_positive_duration)]
    pub handover_timeout: Duration,
}
