//! Flags of the Marathon source (`--marathon*`, `--state-dir`), each also a `VIPD_*` variable,
//! and their one conversion into a [`MarathonConfig`] (which reads the password file); also
//! `--max-document-size` ([`DocumentArgs`], shared with the file source and `vipd table`) and its
//! byte-size grammar ([`parse_byte_size`]).
//!
//! Must not: start anything, or let a credential reach `Debug` output (the password is a
//! [`Secret`]; URLs are parsed into endpoints without userinfo).

use super::duration::parse_duration;
use crate::source::marathon::client::{ConfigError, RedirectHost};
use crate::source::marathon::redact::Secret;
use crate::source::marathon::{AuthConfig, MarathonConfig, MarathonEndpoint, TlsConfig};
use std::path::PathBuf;
use std::time::Duration;

/// The bound on every source document, shared by `vipd run` (apps file, Marathon bodies) and
/// `vipd table`.
#[derive(Debug, Clone, clap::Args)]
pub struct DocumentArgs {
    /// Largest apps document or Marathon response body accepted (`134217728`, `512KiB`, `128MiB`,
    /// `1GiB`; `k`/`M`/`G` are binary too). A bigger one is an error; the last good table stays.
    #[arg(long, env = "VIPD_MAX_DOCUMENT_SIZE", default_value_t = crate::source::DEFAULT_MAX_DOCUMENT_SIZE, value_parser = parse_byte_size)]
    pub max_document_size: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MarathonArgs {
    /// Marathon URL(s), comma-separated (HA: tried in order, the one that answers is kept).
    /// `http[s]://[user:pass@]host:port[/prefix]`.
    #[arg(
        long = "marathon",
        env = "VIPD_MARATHON",
        value_delimiter = ',',
        value_name = "URL[,URL...]"
    )]
    pub marathon: Vec<String>,
    /// HTTP basic auth user (for URLs without `user:pass@`).
    #[arg(long, env = "VIPD_MARATHON_USER")]
    pub marathon_user: Option<String>,
    /// HTTP basic auth password. Prefer --marathon-password-file.
    #[arg(
        long,
        env = "VIPD_MARATHON_PASSWORD",
        hide_env_values = true,
        conflicts_with = "marathon_password_file"
    )]
    pub marathon_password: Option<Secret>,
    /// File holding the HTTP basic auth password.
    #[arg(long, env = "VIPD_MARATHON_PASSWORD_FILE")]
    pub marathon_password_file: Option<PathBuf>,
    /// File holding a DC/OS service token (`Authorization: token=...`); re-read on every request.
    #[arg(long, env = "VIPD_MARATHON_TOKEN_FILE")]
    pub marathon_token_file: Option<PathBuf>,
    /// PEM bundle of CA certificates that replaces the built-in roots.
    #[arg(long, env = "VIPD_MARATHON_CA_FILE")]
    pub marathon_ca_file: Option<PathBuf>,
    /// PEM client certificate (with --marathon-client-key).
    #[arg(
        long,
        env = "VIPD_MARATHON_CLIENT_CERT",
        requires = "marathon_client_key"
    )]
    pub marathon_client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(
        long,
        env = "VIPD_MARATHON_CLIENT_KEY",
        requires = "marathon_client_cert"
    )]
    pub marathon_client_key: Option<PathBuf>,
    /// Do not verify Marathon's TLS certificate (logs a warning). Off by default.
    #[arg(long, env = "VIPD_MARATHON_INSECURE")]
    pub marathon_insecure: bool,
    /// TCP/TLS connect timeout.
    #[arg(long, env = "VIPD_MARATHON_CONNECT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub marathon_connect_timeout: Duration,
    /// Total timeout of one API request (the apps document can be tens of MB).
    #[arg(long, env = "VIPD_MARATHON_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub marathon_timeout: Duration,
    /// Reconnect the event stream after this long without a byte (Marathon heartbeats every 10s).
    #[arg(long, env = "VIPD_MARATHON_STREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub marathon_stream_timeout: Duration,
    /// Period of the full resync (jittered ±15%).
    #[arg(long, env = "VIPD_MARATHON_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub marathon_resync_interval: Duration,
    /// Window in which app-definition events are coalesced into one re-fetch.
    #[arg(long, env = "VIPD_MARATHON_EVENT_DEBOUNCE", default_value = "200ms", value_parser = parse_duration)]
    pub marathon_event_debounce: Duration,
    /// First reconnect/retry delay (doubles per failure, jittered).
    #[arg(long, env = "VIPD_MARATHON_BACKOFF_INITIAL", default_value = "1s", value_parser = parse_duration)]
    pub marathon_backoff_initial: Duration,
    /// Longest reconnect/retry delay.
    #[arg(long, env = "VIPD_MARATHON_BACKOFF_MAX", default_value = "60s", value_parser = parse_duration)]
    pub marathon_backoff_max: Duration,
    /// Directory for the last-known-good Marathon state, served when Marathon is down at start.
    #[arg(long, env = "VIPD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Host (`host`: any port) or authority (`host:port`) a Marathon redirect may lead to with
    /// the credentials; repeatable or comma-separated. The hosts of `--marathon` always may.
    /// Redirects elsewhere are refused.
    #[arg(
        long = "marathon-trust-redirect-host",
        env = "VIPD_MARATHON_TRUST_REDIRECT_HOST",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub marathon_trust_redirect_host: Vec<String>,
}

impl MarathonConfig {
    /// A configuration for `urls` with every other setting at its flag default.
    pub fn new(urls: &[&str]) -> Result<Self, ConfigError> {
        let endpoints = urls
            .iter()
            .map(|u| MarathonEndpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ConfigError::NoUrl);
        }
        let flags = super::defaults::<MarathonArgs>();
        Ok(MarathonConfig {
            endpoints,
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            connect_timeout: flags.marathon_connect_timeout,
            request_timeout: flags.marathon_timeout,
            stream_timeout: flags.marathon_stream_timeout,
            resync_interval: flags.marathon_resync_interval,
            event_debounce: flags.marathon_event_debounce,
            backoff_initial: flags.marathon_backoff_initial,
            backoff_max: flags.marathon_backoff_max,
            healthy_after: Duration::from_secs(60),
            state_dir: flags.state_dir,
            state_write_interval: Duration::from_secs(10),
            max_event_bytes: 64 << 20,
            max_replay_bytes: 64 << 20,
            max_queued_event_bytes: 64 << 20,
            max_redirects: 3,
            max_document_size: crate::source::DEFAULT_MAX_DOCUMENT_SIZE,
            trusted_redirect_hosts: Vec::new(),
        })
    }
}

impl MarathonArgs {
    /// True when `--marathon` was given.
    pub fn enabled(&self) -> bool {
        !self.marathon.is_empty()
    }

    /// [`MarathonArgs::into_config`] with the document bound of `documents`.
    pub fn into_config_with(self, documents: &DocumentArgs) -> Result<MarathonConfig, ConfigError> {
        let mut cfg = self.into_config()?;
        cfg.max_document_size = documents.max_document_size;
        Ok(cfg)
    }

    pub fn into_config(self) -> Result<MarathonConfig, ConfigError> {
        let urls: Vec<&str> = self.marathon.iter().map(String::as_str).collect();
        let mut cfg = MarathonConfig::new(&urls)?;
        let password = match (&self.marathon_password, &self.marathon_password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => {
                let s = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                    what: "password file",
                    path: path.clone(),
                    source,
                })?;
                Some(Secret::new(s.trim_end_matches(['\r', '\n'])))
            }
            (None, None) => None,
        };
        cfg.auth = AuthConfig {
            basic: match (self.marathon_user, password) {
                (Some(u), p) => Some((u, p.unwrap_or_else(|| Secret::new("")))),
                (None, Some(_)) => return Err(ConfigError::PasswordWithoutUser),
                (None, None) => None,
            },
            token_file: self.marathon_token_file,
        };
        cfg.tls = TlsConfig {
            ca_file: self.marathon_ca_file,
            client_cert: self.marathon_client_cert,
            client_key: self.marathon_client_key,
            insecure: self.marathon_insecure,
        };
        cfg.connect_timeout = self.marathon_connect_timeout;
        cfg.request_timeout = self.marathon_timeout;
        cfg.stream_timeout = self.marathon_stream_timeout;
        cfg.resync_interval = self.marathon_resync_interval;
        cfg.event_debounce = self.marathon_event_debounce;
        cfg.backoff_initial = self.marathon_backoff_initial;
        cfg.backoff_max = self.marathon_backoff_max;
        cfg.state_dir = self.state_dir;
        cfg.trusted_redirect_hosts = self
            .marathon_trust_redirect_host
            .iter()
            .map(|h| RedirectHost::parse(h))
            .collect::<Result<_, _>>()?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A byte count: `1048576`, `512k`/`512KiB`, `64M`/`64MiB`, `1G`/`1GiB` (all binary), `100B`.
pub fn parse_byte_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = (&s[..split], s[split..].trim());
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (use e.g. 134217728, 512KiB, 128MiB)"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("invalid size unit in {s:?} (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(1 << shift)
        .and_then(|b| usize::try_from(b).ok())
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("invalid size {s:?}: zero or too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        m: MarathonArgs,
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_byte_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_byte_size("128MiB").unwrap(), 128 << 20);
        assert_eq!(parse_byte_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_byte_size("1g").unwrap(), 1 << 30);
        assert!(parse_byte_size("0").is_err());
        assert!(parse_byte_size("12 parsecs").is_err());
        assert!(parse_byte_size("-1").is_err());
        #[derive(Debug, Parser)]
        struct D {
            #[command(flatten)]
            d: DocumentArgs,
        }
        let d = D::try_parse_from(["x"]).unwrap();
        assert_eq!(
            d.d.max_document_size,
            crate::source::DEFAULT_MAX_DOCUMENT_SIZE
        );
        let d = D::try_parse_from(["x", "--max-document-size", "1MiB"]).unwrap();
        assert_eq!(d.d.max_document_size, 1 << 20);
    }

    #[test]
    fn flags_parse_and_debug_hides_the_password() {
        let t = T::try_parse_from([
            "x",
            "--marathon",
            "http://m1:8080,http://bob:urlpass99@m2:8080",
            "--marathon-user",
            "alice",
            "--marathon-password",
            "flagpass77",
            "--marathon-resync-interval",
            "2m",
        ])
        .unwrap();
        assert_eq!(t.m.marathon.len(), 2);
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("flagpass77"), "{dbg}");
        let cfg = t.m.into_config().unwrap();
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("flagpass77") && !dbg.contains("urlpass99"),
            "{dbg}"
        );
        assert_eq!(cfg.resync_interval, Duration::from_secs(120));
        assert_eq!(cfg.endpoints[1].url().as_str(), "http://m2:8080/");
    }

    #[test]
    fn bad_combinations_are_clear_errors() {
        let t = T::try_parse_from([
            "x",
            "--marathon",
            "http://u:p@m1",
            "--marathon-token-file",
            "/tmp/t",
        ])
        .unwrap();
        assert!(matches!(
            t.m.into_config(),
            Err(ConfigError::ConflictingAuth)
        ));
        let t = T::try_parse_from(["x", "--marathon", "http://m1", "--marathon-password", "p"])
            .unwrap();
        assert!(matches!(
            t.m.into_config(),
            Err(ConfigError::PasswordWithoutUser)
        ));
        assert!(T::try_parse_from([
            "x",
            "--marathon",
            "http://m1",
            "--marathon-client-cert",
            "/c"
        ])
        .is_err());
        let t = T::try_parse_from([
            "x",
            "--marathon",
            "http://m1",
            "--marathon-ca-file",
            "/nonexistent/ca.pem",
        ])
        .unwrap();
        assert!(matches!(t.m.into_config(), Err(ConfigError::File { .. })));
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let t = T::try_parse_from([
            "x",
            "--marathon",
            "http://m1",
            "--marathon-ca-file",
            ca.to_str().unwrap(),
        ])
        .unwrap();
        assert!(matches!(t.m.into_config(), Err(ConfigError::Tls { .. })));
        let t = T::try_parse_from(["x"]).unwrap();
        assert!(!t.m.enabled());
        assert!(matches!(t.m.into_config(), Err(ConfigError::NoUrl)));
    }
}
