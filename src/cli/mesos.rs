//! Flags of the Mesos source (`--mesos*`), each also a `VIPD_*` variable, and their one
//! conversion into a [`MesosConfig`]. `--state-dir` and `--max-document-size` are shared with
//! the Marathon source.
//!
//! Must not: start anything, or let a credential reach `Debug` output (URLs are parsed into
//! endpoints without userinfo).

use super::duration::parse_duration;
use crate::source::marathon::{MarathonEndpoint, TlsConfig};
use crate::source::mesos::{ConfigError, MesosConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct MesosArgs {
    /// Mesos master URL(s), comma-separated, tried in order; a non-leader's redirect to the
    /// leader is followed. `http[s]://[user:pass@]host:5050/api/v1` (a URL without a path gets
    /// `/api/v1`). Serves the VIPs of every framework's tasks; with `--marathon` (or `--apps`),
    /// service ports come from Marathon and VIPs from Mesos alone.
    #[arg(
        long = "mesos",
        env = "VIPD_MESOS",
        value_delimiter = ',',
        value_name = "URL[,URL...]"
    )]
    pub mesos: Vec<String>,
    /// File holding a DC/OS service token (`Authorization: token=...`); re-read on every connect.
    #[arg(long, env = "VIPD_MESOS_TOKEN_FILE")]
    pub mesos_token_file: Option<PathBuf>,
    /// PEM bundle of CA certificates that replaces the built-in roots.
    #[arg(long, env = "VIPD_MESOS_CA_FILE")]
    pub mesos_ca_file: Option<PathBuf>,
    /// PEM client certificate (with --mesos-client-key).
    #[arg(long, env = "VIPD_MESOS_CLIENT_CERT", requires = "mesos_client_key")]
    pub mesos_client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "VIPD_MESOS_CLIENT_KEY", requires = "mesos_client_cert")]
    pub mesos_client_key: Option<PathBuf>,
    /// Do not verify the master's TLS certificate. Off by default.
    #[arg(long, env = "VIPD_MESOS_INSECURE")]
    pub mesos_insecure: bool,
    /// TCP/TLS connect timeout.
    #[arg(long, env = "VIPD_MESOS_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub mesos_connect_timeout: Duration,
    /// How long the SUBSCRIBE call may take to answer (the stream itself has no timeout: it is
    /// dropped after 3 x the master's heartbeat interval without a record).
    #[arg(long, env = "VIPD_MESOS_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub mesos_timeout: Duration,
    /// First reconnect delay (doubles per failure, jittered; each failure moves to the next URL).
    #[arg(long, env = "VIPD_MESOS_BACKOFF_INITIAL", default_value = "2s", value_parser = parse_duration)]
    pub mesos_backoff_initial: Duration,
    /// Longest reconnect delay.
    #[arg(long, env = "VIPD_MESOS_BACKOFF_MAX", default_value = "30s", value_parser = parse_duration)]
    pub mesos_backoff_max: Duration,
    /// After a master failover, how long the last known tasks of agents listed in
    /// `recovered_agents` are kept while they have not re-registered.
    #[arg(long, env = "VIPD_MESOS_RECOVERY_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub mesos_recovery_timeout: Duration,
    /// After a recovered agent re-registers, how long its tasks have to come back before its
    /// kept ones are dropped.
    #[arg(long, env = "VIPD_MESOS_TASKS_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub mesos_tasks_grace: Duration,
}

impl MesosArgs {
    /// True when `--mesos` was given.
    pub fn enabled(&self) -> bool {
        !self.mesos.is_empty()
    }

    /// The configuration; `state_dir` and `max_record` come from the shared flags.
    pub fn into_config(
        self,
        state_dir: Option<PathBuf>,
        max_record: usize,
    ) -> Result<MesosConfig, ConfigError> {
        let endpoints = self
            .mesos
            .iter()
            .map(|u| {
                let mut e = MarathonEndpoint::parse(u)?;
                e.set_default_path("/api/v1");
                Ok(e)
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        if endpoints.is_empty() {
            return Err(ConfigError::NoUrl);
        }
        if self.mesos_token_file.is_some() && endpoints.iter().any(|e| e.has_credentials()) {
            return Err(ConfigError::ConflictingAuth);
        }
        Ok(MesosConfig {
            endpoints,
            token_file: self.mesos_token_file,
            tls: TlsConfig {
                ca_file: self.mesos_ca_file,
                client_cert: self.mesos_client_cert,
                client_key: self.mesos_client_key,
                insecure: self.mesos_insecure,
            },
            connect_timeout: self.mesos_connect_timeout,
            request_timeout: self.mesos_timeout,
            backoff_initial: self.mesos_backoff_initial,
            backoff_max: self.mesos_backoff_max,
            recovery_timeout: self.mesos_recovery_timeout,
            tasks_grace: self.mesos_tasks_grace,
            max_redirects: 3,
            max_record,
            state_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_api_path_and_credentials_are_taken_out() {
        let mut a = super::super::defaults::<MesosArgs>();
        assert_eq!(a.mesos_recovery_timeout, Duration::from_secs(600));
        a.mesos = vec!["http://u:p@m1:5050".into(), "https://m2:5050/api/v1".into()];
        let c = a.into_config(None, 1 << 20).unwrap();
        assert_eq!(c.endpoints[0].url().as_str(), "http://m1:5050/api/v1");
        assert!(c.endpoints[0].has_credentials());
        assert_eq!(c.endpoints[1].url().as_str(), "https://m2:5050/api/v1");
        let mut a = super::super::defaults::<MesosArgs>();
        a.mesos = vec!["http://u:p@m1:5050".into()];
        a.mesos_token_file = Some("/t".into());
        assert!(matches!(
            a.into_config(None, 1),
            Err(ConfigError::ConflictingAuth)
        ));
    }
}
