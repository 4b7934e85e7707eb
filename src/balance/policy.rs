//! The per-frontend selection policy: what the daemon flags and a port's options resolve to.
//!
//! Owns: the resolved [`HealthConfig`] (its flags and defaults are [`crate::cli::health`]) and
//! [`ActiveConfig`], the balancing algorithm names ([`Balance`]), and the per-frontend probe
//! derivation ([`probe_for`], [`probe_for_frontend`]). docs/health.md documents the whole policy.
//!
//! Must not: pick backends ([`super::select`] does), hold runtime state, or do I/O.

use crate::health::{OutlierConfig, ProbeKind, ProbeSpec};
use crate::table::{Frontend, Protocol};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Load-balancing algorithm of a frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Rotate through the eligible backends.
    #[default]
    RoundRobin,
    /// Fewest active connections; ties rotate.
    LeastConn,
    /// Power of two random choices on active connections.
    P2c,
    /// Consistent hashing of the client IP (same choice on every agent and after restarts).
    Maglev,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastConn => "least-conn",
            Balance::P2c => "p2c",
            Balance::Maglev => "maglev",
        }
    }

    /// Parses a `balance` option value (`VIPD_{n}_BALANCE`, or a mapped `HAPROXY_{n}_BALANCE`).
    /// Case-insensitive; marathon-lb's names are accepted as aliases.
    pub fn parse_option(value: &str) -> Option<Balance> {
        match value.trim().to_ascii_lowercase().as_str() {
            "round-robin" | "roundrobin" | "rr" => Some(Balance::RoundRobin),
            "least-conn" | "leastconn" => Some(Balance::LeastConn),
            "p2c" => Some(Balance::P2c),
            "maglev" | "source" => Some(Balance::Maglev),
            _ => None,
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// The whole health/selection policy, resolved from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    pub balance: Balance,
    pub fail_open: bool,
    pub outlier: OutlierConfig,
    /// 0-100.
    pub max_ejection_percent: u8,
    pub active: ActiveConfig,
}

/// The smallest probe interval/timeout taken from a Marathon health check.
const MIN_PROBE_PERIOD: Duration = Duration::from_millis(100);

/// The probe of a frontend with these `options`, or `None` when it is not actively checked.
///
/// `active_health_check` (from `VIPD_{n}_HEALTHCHECK`): `off`/`none`/`false` → not checked;
/// `on`/`true`/`auto` → the port's Marathon health check if it has one, else TCP; `tcp`;
/// `http` (the Marathon check's path or `/`); `http:/path`. Unset → checked only with
/// `--active-health-checks` (Marathon-derived, else TCP). Interval and timeout come from the
/// port's Marathon health check when it has one, else from the flags.
///
/// `Err` names a bad value; the caller warns once and uses [`probe_for_default`].
pub fn probe_for(
    options: &BTreeMap<String, String>,
    cfg: &ActiveConfig,
) -> Result<Option<ProbeSpec>, String> {
    let Some(raw) = options.get("active_health_check") else {
        return Ok(probe_for_default(options, cfg));
    };
    let value = raw.trim();
    let lower = value.to_ascii_lowercase();
    let kind = match lower.as_str() {
        "off" | "none" | "false" | "no" => return Ok(None),
        "on" | "true" | "yes" | "auto" => marathon_kind(options).unwrap_or(ProbeKind::Tcp),
        "tcp" => ProbeKind::Tcp,
        "http" => ProbeKind::Http {
            path: options
                .get("probe_path")
                .cloned()
                .unwrap_or_else(|| "/".to_string()),
        },
        _ if lower.starts_with("http:") => {
            let path = value[5..].trim();
            if !valid_path(path) {
                return Err(format!(
                    "active health check {raw:?}: the path must start with '/' and contain no \
                     spaces or control characters"
                ));
            }
            ProbeKind::Http {
                path: path.to_string(),
            }
        }
        _ => {
            return Err(format!(
                "active health check {raw:?} is not one of tcp, http, http:/path, on, off"
            ))
        }
    };
    Ok(Some(spec(kind, options, cfg)))
}

/// The probe of `frontend`: [`probe_for`] on its options, except that the global flag alone does
/// not probe UDP frontends (a TCP probe says nothing about a UDP port): a UDP frontend is probed
/// only when its label asks for it or its port has a Marathon health check.
///
/// `Ok` is the probe; `Err` carries the warning for a bad label AND the probe used instead.
pub fn probe_for_frontend(
    frontend: &Frontend,
    cfg: &ActiveConfig,
) -> Result<Option<ProbeSpec>, (String, Option<ProbeSpec>)> {
    let udp_default = |options: &BTreeMap<String, String>| {
        if frontend.protocol == Protocol::Udp && !options.contains_key("probe") {
            None
        } else {
            probe_for_default(options, cfg)
        }
    };
    if frontend.protocol == Protocol::Udp && !frontend.options.contains_key("active_health_check") {
        return Ok(udp_default(&frontend.options));
    }
    probe_for(&frontend.options, cfg).map_err(|e| (e, udp_default(&frontend.options)))
}

/// The probe of a frontend when its option is absent or invalid: the global flag decides.
pub fn probe_for_default(
    options: &BTreeMap<String, String>,
    cfg: &ActiveConfig,
) -> Option<ProbeSpec> {
    cfg.enabled.then(|| {
        let kind = marathon_kind(options).unwrap_or(ProbeKind::Tcp);
        spec(kind, options, cfg)
    })
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 2048
        && !path.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The probe kind the port's Marathon health check implies (`probe`, `probe_path` options).
fn marathon_kind(options: &BTreeMap<String, String>) -> Option<ProbeKind> {
    match options.get("probe").map(String::as_str) {
        Some("tcp") => Some(ProbeKind::Tcp),
        Some("http") => {
            let path = options
                .get("probe_path")
                .filter(|p| valid_path(p))
                .cloned()
                .unwrap_or_else(|| "/".to_string());
            Some(ProbeKind::Http { path })
        }
        _ => None,
    }
}

fn spec(kind: ProbeKind, options: &BTreeMap<String, String>, cfg: &ActiveConfig) -> ProbeSpec {
    let seconds = |key: &str| {
        options
            .get(key)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
            .map(|s| Duration::from_secs_f64(s).max(MIN_PROBE_PERIOD))
    };
    ProbeSpec {
        kind,
        interval: seconds("probe_interval_s").unwrap_or(cfg.interval),
        timeout: seconds("probe_timeout_s").unwrap_or(cfg.timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
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
        assert_eq!(probe_for(&opts(&[]), &off), Ok(None));
        assert_eq!(probe_for(&opts(&[]), &on), Ok(Some(tcp(i, t))));
        // Marathon health check: derived, with its interval/timeout.
        let marathon = opts(&[
            ("probe", "http"),
            ("probe_path", "/health"),
            ("probe_interval_s", "1.5"),
            ("probe_timeout_s", "20"),
        ]);
        assert_eq!(probe_for(&marathon, &off), Ok(None), "opt-in");
        let http = probe_for(&marathon, &on).unwrap().unwrap();
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
        assert_eq!(probe_for(&label("off"), &on), Ok(None));
        assert_eq!(probe_for(&label("TCP"), &off), Ok(Some(tcp(i, t))));
        assert_eq!(probe_for(&label("on"), &off), Ok(Some(tcp(i, t))));
        assert_eq!(
            probe_for(&label("http:/ready?x=1"), &off)
                .unwrap()
                .unwrap()
                .kind,
            ProbeKind::Http {
                path: "/ready?x=1".into()
            }
        );
        assert_eq!(
            probe_for(&label("http"), &off).unwrap().unwrap().kind,
            ProbeKind::Http { path: "/".into() }
        );
        let mut both = marathon.clone();
        both.insert("active_health_check".into(), "on".into());
        assert_eq!(probe_for(&both, &off).unwrap().unwrap(), http);
        both.insert("active_health_check".into(), "tcp".into());
        assert_eq!(
            probe_for(&both, &off).unwrap().unwrap().kind,
            ProbeKind::Tcp
        );
    }

    #[test]
    fn bad_probe_labels_are_errors_naming_the_value() {
        for bad in ["udp", "http:health", "http:/a b", "http:/\r\nX: y", ""] {
            let err = probe_for(
                &opts(&[("active_health_check", bad)]),
                &ActiveConfig::default(),
            )
            .unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        // Nonsense Marathon numbers fall back to the flags.
        let o = opts(&[
            ("active_health_check", "tcp"),
            ("probe_interval_s", "-3"),
            ("probe_timeout_s", "NaN"),
        ]);
        let s = probe_for(&o, &ActiveConfig::default()).unwrap().unwrap();
        assert_eq!(s.interval, Duration::from_secs(5));
        assert_eq!(s.timeout, Duration::from_secs(2));
    }
}
