//! Health-aware selection: the policy, its flags, and the health observations vipd makes itself.
//!
//! Owns: [`HealthArgs`] (the `vipd run` flags), the resolved [`HealthConfig`], the balancing
//! algorithm names ([`Balance`]), the per-frontend probe derivation ([`probe_for`]), the pure
//! state machines ([`outlier`] for passive ejection, [`counter`] for active rise/fall), the
//! probes ([`probe`]) and the active checker task ([`checker`]). README.health.md documents the
//! whole policy.
//!
//! Must not: pick backends (`dataplane::select` does, reading the per-backend state written
//! here), touch the table, or log per connection above `debug`.

pub mod checker;
pub mod counter;
pub mod outlier;
pub mod probe;

pub use counter::{ActiveState, RiseFall};
pub use outlier::{Outlier, OutlierConfig};

use crate::table::options::{self, ActiveCheck, PortOptions};
use crate::table::{Frontend, Protocol};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// The balancing algorithm lives with the typed per-port options; re-exported from its old path.
pub use crate::table::options::Balance;

/// Why vipd considers a backend unhealthy. Stable label strings for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthReason {
    /// Passive: consecutive connects refused.
    ConnectRefused,
    /// Passive: consecutive connects timed out.
    ConnectTimeout,
    /// Passive: consecutive connects failed otherwise.
    ConnectOther,
    /// Active: the probe's connect was refused.
    ProbeRefused,
    /// Active: the probe did not finish within its timeout.
    ProbeTimeout,
    /// Active: the HTTP probe got a status other than 2xx/3xx.
    ProbeStatus,
    /// Active: any other probe error (reset, malformed response, ...).
    ProbeError,
}

impl HealthReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthReason::ConnectRefused => "connect_refused",
            HealthReason::ConnectTimeout => "connect_timeout",
            HealthReason::ConnectOther => "connect_other",
            HealthReason::ProbeRefused => "probe_refused",
            HealthReason::ProbeTimeout => "probe_timeout",
            HealthReason::ProbeStatus => "probe_status",
            HealthReason::ProbeError => "probe_error",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            HealthReason::ConnectRefused => 1,
            HealthReason::ConnectTimeout => 2,
            HealthReason::ConnectOther => 3,
            HealthReason::ProbeRefused => 4,
            HealthReason::ProbeTimeout => 5,
            HealthReason::ProbeStatus => 6,
            HealthReason::ProbeError => 7,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => HealthReason::ConnectRefused,
            2 => HealthReason::ConnectTimeout,
            3 => HealthReason::ConnectOther,
            4 => HealthReason::ProbeRefused,
            5 => HealthReason::ProbeTimeout,
            6 => HealthReason::ProbeStatus,
            7 => HealthReason::ProbeError,
            _ => return None,
        })
    }
}

/// Health and balancing flags of `vipd run`. Durations take humantime values (`500ms`, `10s`).
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Default load-balancing algorithm; an app port overrides it with `VIPD_{n}_BALANCE`
    /// (or marathon-lb's `HAPROXY_{n}_BALANCE`).
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
    /// Per app port: label `VIPD_{n}_HEALTHCHECK` = `tcp`, `http:/path`, `on` or `off`.
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected a duration such as 500ms, 30s, 5m)"))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0".to_string()),
        d => Ok(d),
    }
}

/// Settings of the active checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveConfig {
    /// Probe every frontend's backends (a port's `VIPD_{n}_HEALTHCHECK` overrides it).
    pub enabled: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl Default for ActiveConfig {
    fn default() -> Self {
        ActiveConfig {
            enabled: false,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }
}

/// The whole health/selection policy, resolved from [`HealthArgs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    pub balance: Balance,
    pub fail_open: bool,
    pub outlier: OutlierConfig,
    /// 0-100.
    pub max_ejection_percent: u8,
    pub active: ActiveConfig,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            balance: Balance::RoundRobin,
            fail_open: true,
            outlier: OutlierConfig::default(),
            max_ejection_percent: 50,
            active: ActiveConfig::default(),
        }
    }
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

/// What an active probe does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// A TCP connect that succeeds.
    Tcp,
    /// `GET path` over HTTP/1.1 answering 2xx or 3xx.
    Http { path: String },
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeKind::Tcp => f.write_str("tcp"),
            ProbeKind::Http { path } => write!(f, "http:{path}"),
        }
    }
}

/// One frontend's probe: what, how often, how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
}

/// The smallest probe interval/timeout taken from a Marathon health check.
const MIN_PROBE_PERIOD: Duration = Duration::from_millis(100);

/// The probe of a frontend with these `options`, or `None` when it is not actively checked.
///
/// The active check option (from `VIPD_{n}_HEALTHCHECK`): off → not checked; on → the port's
/// Marathon health check if it has one, else TCP; tcp; http (the Marathon check's path or `/`);
/// `http:/path`. Unset → checked only with `--active-health-checks` (Marathon-derived, else
/// TCP). Interval and timeout come from the port's Marathon health check when it has one, else
/// from the flags. The builder has validated every value.
pub fn probe_for(options: &PortOptions, cfg: &ActiveConfig) -> Option<ProbeSpec> {
    let Some(check) = options.active_check() else {
        return probe_for_default(options, cfg);
    };
    let kind = match check {
        ActiveCheck::Off => return None,
        ActiveCheck::On => marathon_kind(options).unwrap_or(ProbeKind::Tcp),
        ActiveCheck::Tcp => ProbeKind::Tcp,
        ActiveCheck::Http => ProbeKind::Http {
            path: match &options.probe {
                Some(options::MarathonProbe {
                    kind: options::ProbeKind::Http { path },
                    ..
                }) => path.clone(),
                _ => "/".to_string(),
            },
        },
        ActiveCheck::HttpPath(path) => ProbeKind::Http { path: path.clone() },
    };
    Some(spec(kind, options, cfg))
}

/// The probe of `frontend`: [`probe_for`] on its options, except that the global flag alone does
/// not probe UDP frontends (a TCP probe says nothing about a UDP port): a UDP frontend is probed
/// only when its label asks for it or its port has a Marathon health check.
pub fn probe_for_frontend(frontend: &Frontend, cfg: &ActiveConfig) -> Option<ProbeSpec> {
    let options = &frontend.options;
    if frontend.protocol == Protocol::Udp && options.active_check.is_none() {
        return if options.probe.is_none() {
            None
        } else {
            probe_for_default(options, cfg)
        };
    }
    probe_for(options, cfg)
}

/// The probe of a frontend when its option is absent: the global flag decides.
pub fn probe_for_default(options: &PortOptions, cfg: &ActiveConfig) -> Option<ProbeSpec> {
    cfg.enabled.then(|| {
        let kind = marathon_kind(options).unwrap_or(ProbeKind::Tcp);
        spec(kind, options, cfg)
    })
}

/// The probe kind the port's Marathon health check implies.
fn marathon_kind(options: &PortOptions) -> Option<ProbeKind> {
    options.probe.as_ref().map(|p| match &p.kind {
        options::ProbeKind::Tcp => ProbeKind::Tcp,
        options::ProbeKind::Http { path } => ProbeKind::Http { path: path.clone() },
    })
}

fn spec(kind: ProbeKind, options: &PortOptions, cfg: &ActiveConfig) -> ProbeSpec {
    let probe = options.probe.as_ref();
    ProbeSpec {
        kind,
        interval: probe
            .and_then(|p| p.interval)
            .map_or(cfg.interval, |d| d.max(MIN_PROBE_PERIOD)),
        timeout: probe
            .and_then(|p| p.timeout)
            .map_or(cfg.timeout, |d| d.max(MIN_PROBE_PERIOD)),
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

    #[test]
    fn balance_option_values_and_aliases() {
        assert_eq!(
            Balance::parse_option(" Least-Conn "),
            Some(Balance::LeastConn)
        );
        assert_eq!(
            Balance::parse_option("roundrobin"),
            Some(Balance::RoundRobin)
        );
        assert_eq!(Balance::parse_option("source"), Some(Balance::Maglev));
        assert_eq!(Balance::parse_option("p2c"), Some(Balance::P2c));
        assert_eq!(Balance::parse_option("uri"), None);
    }

    fn opts(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn probes_follow_the_label_then_marathon_then_the_flag() {
        let off = ActiveConfig::default();
        let on = ActiveConfig {
            enabled: true,
            ..off
        };
        let tcp = |interval, timeout| ProbeSpec {
            kind: ProbeKind::Tcp,
            interval,
            timeout,
        };
        let (i, t) = (off.interval, off.timeout);
        // Nothing set: only the global flag.
        assert_eq!(probe_for(&po(&opts(&[])), &off), None);
        assert_eq!(probe_for(&po(&opts(&[])), &on), Some(tcp(i, t)));
        // Marathon health check: derived, with its interval/timeout.
        let marathon = opts(&[
            ("probe", "http"),
            ("probe_path", "/health"),
            ("probe_interval_s", "1.5"),
            ("probe_timeout_s", "20"),
        ]);
        assert_eq!(probe_for(&po(&marathon), &off), None, "opt-in");
        let http = probe_for(&po(&marathon), &on).unwrap();
        assert_eq!(
            http.kind,
            ProbeKind::Http {
                path: "/health".into()
            }
        );
        assert_eq!(http.interval, Duration::from_millis(1500));
        assert_eq!(http.timeout, Duration::from_secs(20));
        // Labels.
        let label = |v: &str| opts(&[("active_health_check", v)]);
        assert_eq!(probe_for(&po(&label("off")), &on), None);
        assert_eq!(probe_for(&po(&label("TCP")), &off), Some(tcp(i, t)));
        assert_eq!(probe_for(&po(&label("on")), &off), Some(tcp(i, t)));
        assert_eq!(
            probe_for(&po(&label("http:/ready?x=1")), &off)
                .unwrap()
                .kind,
            ProbeKind::Http {
                path: "/ready?x=1".into()
            }
        );
        assert_eq!(
            probe_for(&po(&label("http")), &off).unwrap().kind,
            ProbeKind::Http { path: "/".into() }
        );
        let mut both = marathon.clone();
        both.insert("active_health_check".into(), "on".into());
        assert_eq!(probe_for(&po(&both), &off).unwrap(), http);
        both.insert("active_health_check".into(), "tcp".into());
        assert_eq!(probe_for(&po(&both), &off).unwrap().kind, ProbeKind::Tcp);
    }

    fn po(pairs: &std::collections::BTreeMap<String, String>) -> PortOptions {
        PortOptions::from_pairs(pairs).unwrap()
    }

    #[test]
    fn bad_probe_labels_are_errors_naming_the_value() {
        // The builder rejects them (with a warning naming the label); a table cannot hold them.
        for bad in ["udp", "http:health", "http:/a b", "http:/\r\nX: y", ""] {
            let err = PortOptions::from_pairs(&opts(&[("active_health_check", bad)])).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        for (k, v) in [("probe_interval_s", "-3"), ("probe_timeout_s", "NaN")] {
            let err = PortOptions::from_pairs(&opts(&[("probe", "tcp"), (k, v)])).unwrap_err();
            assert!(err.contains(&format!("{v:?}")), "{err}");
        }
        // Unset interval/timeout fall back to the flags.
        let s = probe_for(
            &po(&opts(&[("active_health_check", "tcp")])),
            &ActiveConfig::default(),
        )
        .unwrap();
        assert_eq!(s.interval, Duration::from_secs(5));
        assert_eq!(s.timeout, Duration::from_secs(2));
    }
}
