//! The per-frontend selection policy: what the daemon flags and a port's options resolve to.
//!
//! Owns: the resolved [`HealthConfig`] (its flags and defaults are [`crate::cli::health`]) and
//! [`ActiveConfig`], the balancing algorithm names ([`Balance`]), and the per-frontend probe
//! derivation ([`probe_for`], [`probe_for_frontend`]). docs/health.md documents the whole policy.
//!
//! Must not: pick backends ([`super::select`] does), hold runtime state, or do I/O.

use crate::health::{OutlierConfig, ProbeKind, ProbeSpec};
use crate::table::options::{self, ActiveCheck, PortOptions};
use crate::table::{Frontend, Protocol};
use std::time::Duration;

/// The balancing algorithm lives with the typed per-port options (the builder parses labels
/// into it); re-exported here, where the flags and routes use it.
pub use crate::table::options::Balance;

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
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
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
