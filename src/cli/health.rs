//! Flags of health-aware selection (`--balance`, `--fail-open`, ejection and probe settings) and
//! their one conversion into a [`HealthConfig`]. The clap defaults here are the only place each
//! default is written: `HealthConfig::default()` is the flags' defaults.
//!
//! Must not: hold policy; [`crate::balance`] decides what the values mean.

use super::duration::{parse_duration, parse_positive_duration};
use crate::balance::{ActiveConfig, Balance, HealthConfig};
use crate::health::OutlierConfig;
use std::time::Duration;

/// Health and balancing flags of `vipd run`. Durations: see [`super::duration`].
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Default load-balancing algorithm; an app port overrides it with `VIPD_<n>_BALANCE`
    /// (or marathon-lb's `HAPROXY_<n>_BALANCE`).
    #[arg(long, env = "VIPD_BALANCE", value_enum, default_value_t = Balance::RoundRobin)]
    pub balance: Balance,
    /// When no backend is healthy or unknown, use any backend that is not draining rather than
    /// refusing the connection (Marathon drops every health result on a leader failover).
    #[arg(long, env = "VIPD_FAIL_OPEN", default_value_t = true, action = clap::ArgAction::Set)]
    pub fail_open: bool,
    /// Consecutive connect failures (refused, timed out) that eject a backend; 0 = never eject.
    #[arg(long, env = "VIPD_EJECT_AFTER", default_value_t = 3)]
    pub eject_after: u32,
    /// First ejection time; each repeated ejection doubles it.
    #[arg(long, env = "VIPD_EJECT_BASE", default_value = "10s", value_parser = parse_duration)]
    pub eject_base: Duration,
    /// Cap of the ejection time.
    #[arg(long, env = "VIPD_EJECT_MAX", default_value = "5m", value_parser = parse_duration)]
    pub eject_max: Duration,
    /// Largest share of a frontend's backends that ejections may take out of selection (0-100).
    #[arg(long, env = "VIPD_MAX_EJECTION_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_ejection_percent: u8,
    /// Probe every backend (TCP connect, or the app's Marathon health check when it has one).
    /// Per app port: label `VIPD_<n>_HEALTHCHECK` = `tcp`, `http:/path`, `on` or `off`.
    #[arg(long, env = "VIPD_ACTIVE_HEALTH_CHECKS")]
    pub active_health_checks: bool,
    /// Interval between two probes of a backend (jittered ±10 %).
    #[arg(long, env = "VIPD_PROBE_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub probe_interval: Duration,
    /// Time allowed for one probe.
    #[arg(long, env = "VIPD_PROBE_TIMEOUT", default_value = "2s", value_parser = parse_positive_duration)]
    pub probe_timeout: Duration,
    /// Consecutive successful probes that bring a down backend back.
    #[arg(long, env = "VIPD_PROBE_RISE", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub probe_rise: u32,
    /// Consecutive failed probes that take a backend down.
    #[arg(long, env = "VIPD_PROBE_FALL", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub probe_fall: u32,
}

impl From<&HealthArgs> for HealthConfig {
    fn from(a: &HealthArgs) -> Self {
        HealthConfig {
            balance: a.balance,
            fail_open: a.fail_open,
            outlier: OutlierConfig {
                eject_after: a.eject_after,
                base: a.eject_base,
                max: a.eject_max.max(a.eject_base),
            },
            max_ejection_percent: a.max_ejection_percent.min(100),
            active: ActiveConfig {
                enabled: a.active_health_checks,
                interval: a.probe_interval,
                timeout: a.probe_timeout,
                rise: a.probe_rise.max(1),
                fall: a.probe_fall.max(1),
            },
        }
    }
}

impl Default for HealthConfig {
    /// The defaults of the flags.
    fn default() -> Self {
        HealthConfig::from(&super::defaults::<HealthArgs>())
    }
}

impl Default for ActiveConfig {
    fn default() -> Self {
        HealthConfig::default().active
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        HealthConfig::default().outlier
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        health: HealthArgs,
    }

    fn parse(args: &[&str]) -> Result<HealthConfig, clap::Error> {
        let mut argv = vec!["vipd"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| HealthConfig::from(&c.health))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = parse(&[]).unwrap();
        assert_eq!(c, HealthConfig::default());
        assert_eq!(c.balance, Balance::RoundRobin);
        assert!(c.fail_open);
        assert_eq!(c.outlier.eject_after, 3);
        assert_eq!(c.outlier.base, Duration::from_secs(10));
        assert_eq!(c.outlier.max, Duration::from_secs(300));
        assert_eq!(c.max_ejection_percent, 50);
        assert!(!c.active.enabled);
        assert_eq!(c.active.interval, Duration::from_secs(5));
        assert_eq!(c.active.timeout, Duration::from_secs(2));
        assert_eq!((c.active.rise, c.active.fall), (2, 3));
    }

    #[test]
    fn flags_parse() {
        let c = parse(&[
            "--balance",
            "maglev",
            "--fail-open",
            "false",
            "--eject-after",
            "5",
            "--eject-base",
            "1s",
            "--eject-max",
            "30s",
            "--max-ejection-percent",
            "100",
            "--active-health-checks",
            "--probe-interval",
            "500ms",
            "--probe-timeout",
            "200ms",
            "--probe-rise",
            "1",
            "--probe-fall",
            "1",
        ])
        .unwrap();
        assert_eq!(c.balance, Balance::Maglev);
        assert!(!c.fail_open);
        assert_eq!(c.outlier.eject_after, 5);
        assert_eq!(c.outlier.max, Duration::from_secs(30));
        assert_eq!(c.max_ejection_percent, 100);
        assert!(c.active.enabled);
        assert_eq!(c.active.interval, Duration::from_millis(500));
        assert_eq!((c.active.rise, c.active.fall), (1, 1));
    }

    #[test]
    fn bad_flag_values_are_rejected_with_a_clear_error() {
        for (args, flag) in [
            (&["--balance", "random"][..], "--balance"),
            (
                &["--max-ejection-percent", "101"][..],
                "--max-ejection-percent",
            ),
            (&["--probe-interval", "0"][..], "--probe-interval"),
            (&["--probe-rise", "0"][..], "--probe-rise"),
            (&["--fail-open", "maybe"][..], "--fail-open"),
            (&["--eject-base", "ten"][..], "--eject-base"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn an_eject_max_below_the_base_is_raised_to_it() {
        let c = parse(&["--eject-base", "20s", "--eject-max", "5s"]).unwrap();
        assert_eq!(c.outlier.max, Duration::from_secs(20));
    }
}
