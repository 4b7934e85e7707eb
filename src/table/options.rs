//! Per-port options: typed, read from labels once, validated by the builder.
//!
//! Owns: [`PortOptions`] (balance algorithm, active health check mode, the probe derived from
//! the port's Marathon health check), the value grammars of the option labels, the one
//! precedence order every per-port setting is read in ([`read_port_setting`]), and the table's
//! JSON form of the options (the `options` object of a frontend: string keys and values, omitted
//! when empty, exactly as before options were typed).
//!
//! Must not: apply daemon flags (an unset option stays `None`; the route resolves it against the
//! flag), do I/O, or panic on any input.

use crate::model::Labels;
use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
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

/// What `VIPD_{n}_HEALTHCHECK` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActiveCheck {
    /// `off`, `none`, `false`, `no`: never probed.
    Off,
    /// `on`, `true`, `yes`, `auto`: the port's Marathon health check if it has one, else TCP.
    On,
    /// `tcp`.
    Tcp,
    /// `http`: the Marathon check's path, or `/`.
    Http,
    /// `http:/path`.
    HttpPath(String),
}

impl ActiveCheck {
    /// Parses a `VIPD_{n}_HEALTHCHECK` value; `Err` says why it is not one.
    pub fn parse(raw: &str) -> Result<ActiveCheck, String> {
        let value = raw.trim();
        let lower = value.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "off" | "none" | "false" | "no" => ActiveCheck::Off,
            "on" | "true" | "yes" | "auto" => ActiveCheck::On,
            "tcp" => ActiveCheck::Tcp,
            "http" => ActiveCheck::Http,
            _ if lower.starts_with("http:") => {
                let path = value[5..].trim();
                if !valid_probe_path(path) {
                    return Err(format!(
                        "active health check {raw:?}: the path must start with '/' and contain \
                         no spaces or control characters"
                    ));
                }
                ActiveCheck::HttpPath(path.to_string())
            }
            _ => {
                return Err(format!(
                    "active health check {raw:?} is not one of tcp, http, http:/path, on, off"
                ))
            }
        })
    }
}

/// An HTTP probe path vipd will send: starts with `/`, at most 2048 bytes, no whitespace or
/// control characters (so that it cannot break the request line).
pub fn valid_probe_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 2048
        && !path.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The probe a port's Marathon health check implies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `TCP`, `MESOS_TCP`, `HTTPS`, `MESOS_HTTPS` (vipd does not speak TLS to a backend).
    Tcp,
    /// `HTTP`, `MESOS_HTTP`: `GET path`.
    Http { path: String },
}

/// A probe derived from a Marathon health check: kind and, when the check gives them, its
/// interval and timeout (validated: more than 0 and less than a day; unclamped, the checker
/// applies its own minimum).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MarathonProbe {
    pub kind: ProbeKind,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
}

/// A typed value and the label text it was read from (trimmed; marathon-lb balance names
/// already mapped), which the table's JSON shows as before options were typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Labelled<T> {
    pub value: T,
    pub text: Box<str>,
}

/// One port's options. `None` = not set for this port: the daemon flag decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PortOptions {
    pub balance: Option<Labelled<Balance>>,
    pub active_check: Option<Labelled<ActiveCheck>>,
    pub probe: Option<MarathonProbe>,
}

/// Longest probe interval or timeout taken from a health check (exclusive).
const MAX_PROBE_SECONDS: f64 = 86_400.0;

/// Validates a health check's `intervalSeconds`/`timeoutSeconds`: finite, more than 0, less
/// than a day, also once rounded to nanoseconds (`86399.9999999999` rounds to a whole day and
/// `1e-12` to zero; the table's JSON form of either would not read back).
pub fn probe_seconds(v: f64) -> Option<Duration> {
    (v.is_finite() && v > 0.0 && v < MAX_PROBE_SECONDS)
        .then(|| Duration::from_secs_f64(v))
        .filter(|d| !d.is_zero() && d.as_secs_f64() < MAX_PROBE_SECONDS)
}

/// `3` for 3 s, `1.5` for 1.5 s: the table's JSON form of a probe period.
fn seconds_text(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{}", d.as_secs_f64())
    }
}

impl PortOptions {
    pub fn is_empty(&self) -> bool {
        self.balance.is_none() && self.active_check.is_none() && self.probe.is_none()
    }

    /// The balance algorithm this port asks for, if any.
    pub fn balance(&self) -> Option<Balance> {
        self.balance.as_ref().map(|b| b.value)
    }

    /// The active check mode this port asks for, if any.
    pub fn active_check(&self) -> Option<&ActiveCheck> {
        self.active_check.as_ref().map(|c| &c.value)
    }

    /// The options as the table's JSON shows them: `(key, value)` in key order.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(c) = &self.active_check {
            out.push(("active_health_check", c.text.to_string()));
        }
        if let Some(b) = &self.balance {
            out.push(("balance", b.text.to_string()));
        }
        if let Some(p) = &self.probe {
            let kind = match &p.kind {
                ProbeKind::Tcp => "tcp",
                ProbeKind::Http { .. } => "http",
            };
            out.push(("probe", kind.to_string()));
            if let Some(d) = p.interval {
                out.push(("probe_interval_s", seconds_text(d)));
            }
            if let ProbeKind::Http { path } = &p.kind {
                out.push(("probe_path", path.clone()));
            }
            if let Some(d) = p.timeout {
                out.push(("probe_timeout_s", seconds_text(d)));
            }
        }
        out
    }

    /// One option in its JSON form (`balance` → `"maglev"`).
    pub fn get(&self, key: &str) -> Option<String> {
        self.entries()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Reads the JSON form back (a table read from disk or written by a test). Strict: a value
    /// the builder would not have produced is an error naming it. Unknown keys are ignored.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<PortOptions, String> {
        let mut out = PortOptions::default();
        let (mut kind, mut path, mut interval, mut timeout) = (None, None, None, None);
        let seconds = |key: &str, v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .and_then(probe_seconds)
                .ok_or_else(|| format!("option {key} {v:?} is not a number of seconds"))
        };
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k {
                "balance" => {
                    let value = Balance::parse_option(v)
                        .ok_or_else(|| format!("option balance {v:?} is not an algorithm"))?;
                    out.balance = Some(Labelled {
                        value,
                        text: v.into(),
                    });
                }
                "active_health_check" => {
                    out.active_check = Some(Labelled {
                        value: ActiveCheck::parse(v)?,
                        text: v.into(),
                    });
                }
                "probe" => kind = Some(v.to_string()),
                "probe_path" => path = Some(v.to_string()),
                "probe_interval_s" => interval = Some(seconds(k, v)?),
                "probe_timeout_s" => timeout = Some(seconds(k, v)?),
                _ => {}
            }
        }
        let kind = match kind.as_deref() {
            None => None,
            Some("tcp") => Some(ProbeKind::Tcp),
            Some("http") => {
                let path = path.unwrap_or_else(|| "/".to_string());
                if !valid_probe_path(&path) {
                    return Err(format!("option probe_path {path:?} is not a valid path"));
                }
                Some(ProbeKind::Http { path })
            }
            Some(other) => return Err(format!("option probe {other:?} is not tcp or http")),
        };
        out.probe = kind.map(|kind| MarathonProbe {
            kind,
            interval,
            timeout,
        });
        Ok(out)
    }
}

impl Serialize for PortOptions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries = self.entries();
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in &entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PortOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = std::collections::BTreeMap::<String, String>::deserialize(d)?;
        PortOptions::from_pairs(pairs).map_err(serde::de::Error::custom)
    }
}

/// Where a port's labels come from, for [`read_port_setting`].
#[derive(Debug, Clone, Copy)]
pub struct PortLabels<'a> {
    /// The port's own labels (`portDefinitions[i].labels`, `portMappings[i].labels`; a pod
    /// endpoint's or a Mesos discovery port's labels).
    pub port: Option<&'a Labels>,
    /// The app's (pod's) labels.
    pub owner: &'a Labels,
    /// The port's index `{n}` in the owner's label keys.
    pub index: usize,
}

/// A setting found by [`read_port_setting`]: the label key it came from and its trimmed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<'a> {
    pub key: String,
    pub value: &'a str,
    /// Read from the marathon-lb alias (`HAPROXY_{n}_…`).
    pub alias: bool,
}

/// Reads one per-port setting `NAME` in the one precedence order:
/// 1. the port's own labels, key `VIPD_<NAME>`;
/// 2. else the owner's labels, key `VIPD_{n}_<NAME>`;
/// 3. else the owner's marathon-lb alias `HAPROXY_{n}_<ALIAS>` when the setting has one;
/// 4. else `None`: the daemon flag applies (when the route resolves the policy).
pub fn read_port_setting<'a>(
    labels: PortLabels<'a>,
    name: &str,
    alias: Option<&str>,
) -> Option<Setting<'a>> {
    let n = labels.index;
    if let Some(port) = labels.port {
        let key = format!("VIPD_{name}");
        if let Some(v) = port.get(&key) {
            return Some(Setting {
                key,
                value: v.trim(),
                alias: false,
            });
        }
    }
    let key = format!("VIPD_{n}_{name}");
    if let Some(v) = labels.owner.get(&key) {
        return Some(Setting {
            key,
            value: v.trim(),
            alias: false,
        });
    }
    let alias = alias?;
    let key = format!("HAPROXY_{n}_{alias}");
    labels.owner.get(&key).map(|v| Setting {
        key,
        value: v.trim(),
        alias: true,
    })
}

/// Reads the label-driven options of one port (balance, active check). A bad value is an `Err`
/// in `bad` (label key, value, reason) and leaves that option unset.
pub fn label_options(labels: PortLabels<'_>, bad: &mut Vec<String>) -> PortOptions {
    let mut out = PortOptions::default();
    if let Some(s) = read_port_setting(labels, "BALANCE", Some("BALANCE")) {
        let text = if s.alias {
            match s.value {
                "roundrobin" => "round-robin",
                "leastconn" => "least-conn",
                "source" => "maglev",
                other => other,
            }
        } else {
            s.value
        };
        match Balance::parse_option(text) {
            Some(value) => {
                out.balance = Some(Labelled {
                    value,
                    text: text.into(),
                })
            }
            None => bad.push(format!(
                "label {}={:?}: balance is not one of round-robin, least-conn, p2c, maglev",
                s.key, s.value
            )),
        }
    }
    if let Some(s) = read_port_setting(labels, "HEALTHCHECK", None) {
        match ActiveCheck::parse(s.value) {
            Ok(value) => {
                out.active_check = Some(Labelled {
                    value,
                    text: s.value.into(),
                })
            }
            Err(e) => bad.push(format!("label {}={:?}: {e}", s.key, s.value)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn settings_follow_port_then_app_then_alias() {
        let app = labels(&[
            ("VIPD_0_BALANCE", "p2c"),
            ("HAPROXY_0_BALANCE", "leastconn"),
            ("HAPROXY_1_BALANCE", "source"),
        ]);
        let port = labels(&[("VIPD_BALANCE", " maglev ")]);
        fn at<'a>(port: Option<&'a Labels>, owner: &'a Labels, index: usize) -> PortLabels<'a> {
            PortLabels { port, owner, index }
        }
        let got = read_port_setting(at(Some(&port), &app, 0), "BALANCE", Some("BALANCE")).unwrap();
        assert_eq!((got.key.as_str(), got.value), ("VIPD_BALANCE", "maglev"));
        let got = read_port_setting(at(None, &app, 0), "BALANCE", Some("BALANCE")).unwrap();
        assert_eq!((got.key.as_str(), got.value), ("VIPD_0_BALANCE", "p2c"));
        let got = read_port_setting(at(None, &app, 1), "BALANCE", Some("BALANCE")).unwrap();
        assert_eq!(
            (got.key.as_str(), got.value, got.alias),
            ("HAPROXY_1_BALANCE", "source", true)
        );
        assert_eq!(read_port_setting(at(None, &app, 1), "BALANCE", None), None);
        assert_eq!(
            read_port_setting(at(None, &app, 2), "BALANCE", Some("BALANCE")),
            None
        );
        let mut bad = Vec::new();
        assert_eq!(
            label_options(at(None, &app, 1), &mut bad).balance(),
            Some(Balance::Maglev)
        );
        assert_eq!(
            label_options(at(Some(&port), &app, 0), &mut bad).balance(),
            Some(Balance::Maglev)
        );
        assert!(bad.is_empty());
    }

    #[test]
    fn bad_values_are_reported_with_the_label_and_left_unset() {
        let app = labels(&[("HAPROXY_0_BALANCE", "uri"), ("VIPD_0_HEALTHCHECK", "icmp")]);
        let mut bad = Vec::new();
        let o = label_options(
            PortLabels {
                port: None,
                owner: &app,
                index: 0,
            },
            &mut bad,
        );
        assert!(o.is_empty(), "{o:?}");
        assert_eq!(
            bad,
            [
                "label HAPROXY_0_BALANCE=\"uri\": balance is not one of round-robin, least-conn, p2c, maglev",
                "label VIPD_0_HEALTHCHECK=\"icmp\": active health check \"icmp\" is not one of tcp, http, http:/path, on, off",
            ]
        );
    }

    #[test]
    fn the_json_form_round_trips_and_keeps_the_label_spelling() {
        let o = PortOptions {
            balance: Some(Labelled {
                value: Balance::LeastConn,
                text: "Least-Conn".into(),
            }),
            active_check: Some(Labelled {
                value: ActiveCheck::Tcp,
                text: "TCP".into(),
            }),
            probe: Some(MarathonProbe {
                kind: ProbeKind::Http {
                    path: "/health".into(),
                },
                interval: probe_seconds(1.5),
                timeout: probe_seconds(20.0),
            }),
        };
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(
            json,
            r#"{"active_health_check":"TCP","balance":"Least-Conn","probe":"http","probe_interval_s":"1.5","probe_path":"/health","probe_timeout_s":"20"}"#
        );
        let back: PortOptions = serde_json::from_str(&json).unwrap();
        assert_eq!(back, o);
        assert_eq!(o.get("balance").as_deref(), Some("Least-Conn"));
        assert!(serde_json::from_str::<PortOptions>(r#"{"balance":"uri"}"#).is_err());
        assert!(serde_json::from_str::<PortOptions>(r#"{"probe_interval_s":"0"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&PortOptions::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn probe_seconds_are_bounded() {
        assert_eq!(probe_seconds(3.0), Some(Duration::from_secs(3)));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 86_400.0] {
            assert_eq!(probe_seconds(bad), None, "{bad}");
        }
        assert_eq!(seconds_text(Duration::from_millis(1500)), "1.5");
        assert_eq!(seconds_text(Duration::from_secs(3)), "3");
    }
}
