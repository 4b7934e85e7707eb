//! HTTP access to a Mesos master: the `SUBSCRIBE` call, its credentials and its answer.
//!
//! Owns: the reqwest client (built by the Marathon source's `build_http`: the same rustls
//! setup, CA bundle, client certificate and insecure switch), the `Authorization` header (HTTP
//! basic from the `--mesos` URL, or `token=…` read from `--mesos-token-file` on every call, so a
//! rotated token is picked up on the next connect), and the classification of the answer: a
//! stream, a redirect (its raw `Location`, for the driver to follow), or a failure.
//!
//! Must not: follow redirects itself (the driver decides), hold state, or let a credential into
//! an error or a log (URLs are printed with `redact_url`, errors are built without reqwest's URL).

use crate::source::marathon::client::{basic_header, ConfigError};
use crate::source::marathon::redact::redact_url;
use crate::source::marathon::MarathonEndpoint;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use std::path::PathBuf;

/// What the `SUBSCRIBE` call answered.
#[derive(Debug)]
pub enum Answer {
    /// 200: the RecordIO body follows.
    Stream(reqwest::Response),
    /// A redirect (a non-leading master answers 307), with its `Location` if any.
    Redirect(Option<String>),
    /// Anything else; printable, without credentials.
    Failed(String),
}

#[derive(Debug)]
pub struct MesosClient {
    http: reqwest::Client,
    endpoints: Vec<MarathonEndpoint>,
    token_file: Option<PathBuf>,
}

impl MesosClient {
    pub fn new(
        http: reqwest::Client,
        endpoints: Vec<MarathonEndpoint>,
        token_file: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        if endpoints.is_empty() {
            return Err(ConfigError::NoUrl);
        }
        Ok(MesosClient {
            http,
            endpoints,
            token_file,
        })
    }

    async fn auth(&self, endpoint: usize) -> Result<Option<HeaderValue>, String> {
        if let Some(path) = &self.token_file {
            let token = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("reading token file {}: {e}", path.display()))?;
            let mut v = HeaderValue::from_str(&format!("token={}", token.trim()))
                .map_err(|_| format!("token file {}: not a valid header value", path.display()))?;
            v.set_sensitive(true);
            return Ok(Some(v));
        }
        Ok(self
            .endpoints
            .get(endpoint)
            .and_then(|e| e.basic())
            .map(|(user, pass)| basic_header(user, pass)))
    }

    /// `POST url {"type":"SUBSCRIBE"}` with the credentials of `--mesos` URL `endpoint`.
    pub async fn subscribe(&self, url: &Url, endpoint: usize) -> Answer {
        let shown = redact_url(url);
        let auth = match self.auth(endpoint).await {
            Ok(a) => a,
            Err(e) => return Answer::Failed(e),
        };
        let mut req = self
            .http
            .post(url.clone())
            // Mesos compares Content-Type by exact string equality.
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(r#"{"type":"SUBSCRIBE"}"#);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Failed(format!("{shown}: {}", chain(&e.without_url()))),
        };
        let status = resp.status();
        if status == StatusCode::OK {
            return Answer::Stream(resp);
        }
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            return Answer::Redirect(location);
        }
        let why = match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                " (no leader elected yet, or the master is recovering)"
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                " (credentials rejected or missing)"
            }
            _ => "",
        };
        Answer::Failed(format!("{shown} answered HTTP {}{why}", status.as_u16()))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}
