//! Flags of the data plane (timeouts, connect tries, backlog, UDP flows, the relay) and their
//! one conversion into a [`DataplaneConfig`]. The clap defaults here are the only place each
//! default is written: `DataplaneConfig::default()` is the flags' defaults.
//!
//! Must not: hold data-plane logic.

use super::duration::{parse_duration, parse_positive_duration};
use crate::dataplane::relay::{self, RelayMode};
use crate::dataplane::{udp, DataplaneConfig};
use std::time::Duration;

/// Data plane flags of `vipd run`. Durations: see [`super::duration`].
#[derive(Debug, Clone, clap::Args)]
pub struct DataplaneArgs {
    /// Time allowed for one TCP connect to a backend before trying the next one.
    #[arg(long, env = "VIPD_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Connect attempts per client connection, each on a different backend, before the client is
    /// closed (at least 1).
    #[arg(long, env = "VIPD_CONNECT_TRIES", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub connect_tries: u32,
    /// Close a TCP connection after this long without a byte in either direction; 0 = never.
    #[arg(long, env = "VIPD_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Close a TCP connection this long after it was established, busy or not; 0 or unset = never.
    #[arg(long, env = "VIPD_MAX_LIFETIME", value_parser = parse_duration)]
    pub max_lifetime: Option<Duration>,
    /// Grace given to live connections of a frontend that left the table, and to all connections
    /// at shutdown, before they are cut.
    #[arg(long, env = "VIPD_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Accept backlog of each TCP listening socket (the kernel caps it at net.core.somaxconn).
    #[arg(long, env = "VIPD_LISTEN_BACKLOG", default_value_t = 1024,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub listen_backlog: i32,
    /// Close a UDP flow (one per client address and frontend) after this long without a datagram
    /// in either direction. 60 s suits the request/response traffic UDP services carry (DNS,
    /// statsd, syslog: clients that go quiet rarely come back on the same port soon) and is
    /// Envoy's udp_proxy default. Must not be 0: a flow holds a socket until it expires.
    #[arg(long, env = "VIPD_UDP_IDLE_TIMEOUT", default_value = "60s",
          value_parser = parse_positive_duration)]
    pub udp_idle_timeout: Duration,
    /// Most UDP flows per frontend; datagrams of new clients beyond it are dropped (and
    /// counted) while existing flows go on. Each flow holds one socket (a file descriptor).
    #[arg(long, env = "VIPD_UDP_MAX_FLOWS", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub udp_max_flows: u32,
    /// How TCP connections move bytes: `auto` (each direction copies until a read fills a whole
    /// buffer, then splices: small request/response traffic costs fewest syscalls, bulk bytes
    /// never enter userspace; the default of Linux builds with the `splice` feature), `splice`
    /// (always splice(2) through a pooled pipe) or `copy` (read/write through a pooled buffer;
    /// the default elsewhere). A connection that cannot get a pipe (out of descriptors) copies
    /// instead. `splice` or `auto` on a build without splice is an error.
    #[arg(long, env = "VIPD_TCP_RELAY", value_name = "copy|splice|auto",
          default_value = RelayMode::DEFAULT.as_str(), value_parser = parse_relay_mode)]
    pub tcp_relay: RelayMode,
}

fn parse_relay_mode(s: &str) -> Result<RelayMode, relay::RelayModeError> {
    s.parse()
}

impl From<&DataplaneArgs> for DataplaneConfig {
    fn from(a: &DataplaneArgs) -> Self {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        DataplaneConfig {
            connect_timeout: a.connect_timeout,
            connect_tries: a.connect_tries.max(1),
            idle_timeout: nonzero(a.idle_timeout),
            max_lifetime: a.max_lifetime.and_then(nonzero),
            drain_timeout: a.drain_timeout,
            listen_backlog: a.listen_backlog.max(1),
            tcp_relay: a.tcp_relay,
            bind_retry_initial: DataplaneConfig::BIND_RETRY_INITIAL,
            bind_retry_max: DataplaneConfig::BIND_RETRY_MAX,
            relay_buffer_size: relay::DEFAULT_BUFFER_SIZE,
            udp: udp::UdpConfig {
                idle_timeout: a.udp_idle_timeout,
                max_flows: a.udp_max_flows.max(1) as usize,
                recv_buffer: None,
                flow_budget: crate::fd_budget::udp_flow_budget(crate::fd_budget::current().soft),
            },
        }
    }
}

impl Default for DataplaneConfig {
    /// The defaults of the flags.
    fn default() -> Self {
        DataplaneConfig::from(&super::defaults::<DataplaneArgs>())
    }
}

impl Default for udp::UdpConfig {
    fn default() -> Self {
        DataplaneConfig::default().udp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        dp: DataplaneArgs,
    }

    fn parse(args: &[&str]) -> Result<DataplaneConfig, clap::Error> {
        let mut argv = vec!["vipd"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| DataplaneConfig::from(&c.dp))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.connect_tries, 3);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(c.max_lifetime, None);
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.listen_backlog, 1024);
        assert_eq!(c.udp.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.udp.max_flows, 65_536);
        assert_eq!(c.tcp_relay, RelayMode::DEFAULT);
    }

    #[test]
    fn tcp_relay_parses_and_defaults_to_auto_where_splice_is_available() {
        assert_eq!(
            parse(&["--tcp-relay", "copy"]).unwrap().tcp_relay,
            RelayMode::Copy
        );
        let expected = if cfg!(all(feature = "splice", target_os = "linux")) {
            RelayMode::Auto
        } else {
            RelayMode::Copy
        };
        assert_eq!(RelayMode::DEFAULT, expected);
        assert_eq!(parse(&[]).unwrap().tcp_relay, expected);
        let err = parse(&["--tcp-relay", "zerocopy"]).unwrap_err().to_string();
        assert!(
            err.contains("--tcp-relay") && err.contains("expected `copy`, `splice` or `auto`"),
            "{err}"
        );
    }

    #[cfg(all(feature = "splice", target_os = "linux"))]
    #[test]
    fn tcp_relay_splice_is_accepted_with_the_feature() {
        assert_eq!(
            parse(&["--tcp-relay", "splice"]).unwrap().tcp_relay,
            RelayMode::Splice
        );
        assert_eq!(
            parse(&["--tcp-relay", "auto"]).unwrap().tcp_relay,
            RelayMode::Auto
        );
    }

    #[cfg(not(all(feature = "splice", target_os = "linux")))]
    #[test]
    fn tcp_relay_splice_is_a_clear_error_without_the_feature() {
        let err = parse(&["--tcp-relay", "splice"]).unwrap_err().to_string();
        assert!(
            err.contains("--tcp-relay") && err.contains("built without the splice relay"),
            "{err}"
        );
    }

    #[test]
    fn udp_flags_parse_and_reject_zero() {
        let c = parse(&["--udp-idle-timeout", "5s", "--udp-max-flows", "2"]).unwrap();
        assert_eq!(c.udp.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.udp.max_flows, 2);
        let err = parse(&["--udp-idle-timeout", "0"]).unwrap_err().to_string();
        assert!(
            err.contains("--udp-idle-timeout") && err.contains("more than 0"),
            "{err}"
        );
        let err = parse(&["--udp-max-flows", "0"]).unwrap_err().to_string();
        assert!(err.contains("--udp-max-flows"), "{err}");
    }

    #[test]
    fn humantime_values_and_zero_means_none() {
        let c = parse(&[
            "--connect-timeout",
            "500ms",
            "--idle-timeout",
            "0",
            "--max-lifetime",
            "2h",
            "--drain-timeout",
            "1m 30s",
        ])
        .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.max_lifetime, Some(Duration::from_secs(7200)));
        assert_eq!(c.drain_timeout, Duration::from_secs(90));
        assert_eq!(parse(&["--max-lifetime", "0s"]).unwrap().max_lifetime, None);
    }

    #[test]
    fn bad_values_are_rejected_with_a_clear_error() {
        let err = parse(&["--connect-timeout", "soon"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--connect-timeout") && err.contains("500ms"),
            "{err}"
        );
        let err = parse(&["--connect-tries", "0"]).unwrap_err().to_string();
        assert!(err.contains("--connect-tries"), "{err}");
        let err = parse(&["--listen-backlog=-5"]).unwrap_err().to_string();
        assert!(err.contains("--listen-backlog"), "{err}");
        // One grammar for every duration flag: a bare number is seconds.
        assert_eq!(
            parse(&["--idle-timeout", "1.5"]).unwrap().idle_timeout,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse(&["--connect-timeout", "1.5"])
                .unwrap()
                .connect_timeout,
            Duration::from_millis(1500)
        );
    }
}
