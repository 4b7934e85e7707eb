//! HTTP access to Marathon: endpoints (HA list), auth, TLS, timeouts, redirects, error kinds.
//!
//! Owns: the reqwest client (rustls), the list of Marathon URLs and which one is current ("stick
//! to the one that answers, rotate on failure"), the `Authorization` header (HTTP basic, or a
//! DC/OS `token=` read from a file on every request so rotation works), manual redirect
//! following with the credentials sent again (reqwest drops `Authorization` on cross-host
//! redirects, and a non-leader answers `/v2/events` with a redirect to the leader,
//! ../shared/reference/marathon/FACTS.md §1),
//! `GET /v2/apps?embed=apps.tasks`, `GET /v2/apps/{id}`, the pods calls (`HEAD /v2/pods`, the
//! probe; `GET /v2/pods/::status`; `GET /v2/pods/{id}::status`) and opening `GET /v2/events`,
//! and the size cap on response bodies (`--max-document-size`, enforced while the body streams
//! in).
//!
//! Pods: a full fetch is `/v2/apps` and then, on the same endpoint, the pods. Until the server
//! is known to serve pods it is probed with `HEAD /v2/pods` first; a 404 (a pre-1.4 Marathon)
//! means "no pods": the full fetch has none, `/v2/apps` still serves, and this is logged once (at
//! info) until the answer changes. A 404 to `GET /v2/pods/::status` means the same.
//!
//! Redirect rule: a redirect is followed only to a *trusted authority*: the host and port
//! (`port_or_known_default`, so `http://m1` is `m1:80`) of one of the `--marathon` URLs, or one
//! named by `--marathon-trust-redirect-host` (`host:port` exactly, or `host` on any port). Hosts
//! compare as URLs normalise them (lower case; IPv6 in brackets), so `127.0.0.1:8080` and
//! `127.0.0.1:8081` are different hosts. Any other redirect is refused before a request is sent
//! to it: the credentials never reach it and its answer is never applied.
//!
//! Must not: hold state beyond the current endpoint and whether it serves pods, apply events, log credentials (URLs are
//! stored without userinfo and printed with [`redact_url`]; errors are built without reqwest's
//! URL), follow redirects without a bound or to an untrusted authority, or buffer a body past
//! the size cap.

use super::events::SUBSCRIBED_EVENT_TYPES;
use super::redact::{redact_url, take_userinfo, Secret};
use super::status::SyncErrorKind;
use super::MarathonConfig;
use crate::model::pod::{parse_pods_status, parse_single_pod_status, ParsedPods};
use crate::model::{
    parse_apps_document, parse_single_app_document, App, AppRejection, AppsSnapshot, Pod,
};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, LOCATION};
use reqwest::{Method, StatusCode, Url};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Bodies above this size are parsed on the blocking pool.
const BLOCKING_PARSE_THRESHOLD: usize = 256 * 1024;

/// One Marathon URL, without userinfo; credentials found in the URL are kept aside.
#[derive(Clone, PartialEq, Eq)]
pub struct MarathonEndpoint {
    url: Url,
    basic: Option<(String, Secret)>,
}

impl MarathonEndpoint {
    /// Parses `http[s]://[user:pass@]host[:port][/prefix]`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let mut url = Url::parse(s.trim()).map_err(|e| ConfigError::Url {
            // The input may hold a password: print only that it failed.
            reason: e.to_string(),
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ConfigError::Url {
                reason: format!("scheme {:?} is not http or https", url.scheme()),
            });
        }
        if url.host_str().is_none() {
            return Err(ConfigError::Url {
                reason: "no host".into(),
            });
        }
        let basic = take_userinfo(&mut url);
        url.set_query(None);
        url.set_fragment(None);
        Ok(MarathonEndpoint { url, basic })
    }

    /// The URL without credentials.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn has_credentials(&self) -> bool {
        self.basic.is_some()
    }

    /// Sets the path when the URL has none (`http://m1:5050` → `http://m1:5050/api/v1`).
    pub fn set_default_path(&mut self, path: &str) {
        if self.url.path() == "/" || self.url.path().is_empty() {
            self.url.set_path(path);
        }
    }

    /// The HTTP basic credentials that were in the URL.
    pub fn basic(&self) -> Option<&(String, Secret)> {
        self.basic.as_ref()
    }
}

impl fmt::Debug for MarathonEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarathonEndpoint")
            .field("url", &redact_url(&self.url))
            .field("basic", &self.basic.as_ref().map(|(u, p)| (u, p)))
            .finish()
    }
}

/// A configuration that cannot work. Never contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid Marathon URL: {reason}")]
    Url { reason: String },
    #[error("no Marathon URL given")]
    NoUrl,
    #[error("reading {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {reason}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("--marathon-client-cert and --marathon-client-key go together")]
    HalfClientCert,
    #[error("choose one of HTTP basic auth and --marathon-token-file")]
    ConflictingAuth,
    #[error("--marathon-password without --marathon-user")]
    PasswordWithoutUser,
    #[error("--marathon-trust-redirect-host {value:?}: {reason}")]
    RedirectHost { value: String, reason: String },
    #[error("building the HTTP client: {0}")]
    Client(String),
}

/// Why one request failed. Never contains a credential (URLs are redacted).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connecting to {url}: {msg}")]
    Connect { url: String, msg: String },
    #[error("{url}: timed out: {msg}")]
    Timeout { url: String, msg: String },
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{url} answered HTTP {status} (credentials rejected or missing)")]
    Unauthorized { url: String, status: u16 },
    #[error("{url}: too many redirects (more than {max})")]
    TooManyRedirects { url: String, max: usize },
    #[error("{url}: redirect without a usable Location")]
    BadRedirect { url: String },
    #[error("{url}: refused a redirect from https to plain http ({to}): credentials would travel in clear")]
    InsecureRedirect { url: String, to: String },
    #[error("{url}: refused a redirect to {to}: that host is neither in --marathon nor named by --marathon-trust-redirect-host")]
    UntrustedRedirect { url: String, to: String },
    #[error(
        "{url}: response body larger than {max} bytes (--max-document-size); not read further"
    )]
    TooLarge { url: String, max: usize },
    #[error("{url}: {msg}")]
    Parse { url: String, msg: String },
    #[error("{url}: event stream: {msg}")]
    Stream { url: String, msg: String },
    #[error("reading token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FetchError {
    pub fn kind(&self) -> SyncErrorKind {
        match self {
            FetchError::Connect { .. } => SyncErrorKind::Connect,
            FetchError::Timeout { .. } => SyncErrorKind::Timeout,
            FetchError::HttpStatus { .. }
            | FetchError::TooManyRedirects { .. }
            | FetchError::BadRedirect { .. }
            | FetchError::InsecureRedirect { .. }
            | FetchError::UntrustedRedirect { .. } => SyncErrorKind::HttpStatus,
            FetchError::Unauthorized { .. } | FetchError::Token { .. } => {
                SyncErrorKind::Unauthorized
            }
            FetchError::Parse { .. } | FetchError::TooLarge { .. } => SyncErrorKind::Parse,
            FetchError::Stream { .. } => SyncErrorKind::Stream,
        }
    }

    /// Classifies a reqwest error, without its URL.
    pub fn from_reqwest(url: &Url, e: reqwest::Error) -> Self {
        let url = redact_url(url);
        let timeout = e.is_timeout();
        let connect = e.is_connect();
        let body = e.is_body() || e.is_decode();
        let msg = error_chain(&e.without_url());
        if timeout {
            FetchError::Timeout { url, msg }
        } else if connect {
            FetchError::Connect { url, msg }
        } else if body {
            FetchError::Stream { url, msg }
        } else {
            FetchError::Connect { url, msg }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
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

/// A full apps document (and the pods) as fetched.
#[derive(Debug)]
pub struct FullFetch {
    pub body: Bytes,
    /// The `GET /v2/pods/::status` body; `None` when the server has no pods support.
    pub pods_body: Option<Bytes>,
    /// Apps and pods.
    pub snapshot: AppsSnapshot,
    /// When the body had been read completely.
    pub fetched_at: Instant,
    pub url: String,
    /// The answer came from another authority than the `--marathon` URL asked (a trusted
    /// redirect).
    pub redirected: bool,
}

/// One app as fetched.
#[derive(Debug)]
pub enum AppFetch {
    Found(Box<App>),
    /// 404: the app is gone.
    Gone,
    /// The app exists but is malformed: the caller falls back to a full fetch.
    Rejected(AppRejection),
}

/// One pod as fetched (`GET /v2/pods/{id}::status`).
#[derive(Debug)]
pub enum PodFetch {
    Found(Box<Pod>),
    /// 404: the pod is gone (or the server has no pods).
    Gone,
    /// The pod exists but is malformed: the caller falls back to a full fetch.
    Rejected(AppRejection),
}

/// All pods as fetched (`GET /v2/pods/::status`); `None` body: no pods support.
#[derive(Debug)]
pub struct PodsFetch {
    pub pods: ParsedPods,
    pub body: Option<Bytes>,
    pub fetched_at: Instant,
}

/// Whether the server serves pods, as last seen.
const PODS_UNKNOWN: u8 = 0;
const PODS_SUPPORTED: u8 = 1;
const PODS_UNSUPPORTED: u8 = 2;

/// A host a redirect may lead to with the credentials: `host` (any port) or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectHost {
    /// As [`Url::host_str`] gives it: lower case, IPv6 in brackets.
    host: String,
    port: Option<u16>,
}

impl RedirectHost {
    /// `m1.example`, `m1.example:8080`, `10.0.0.1:8080`, `[fd00::1]:8080`, `fd00::1`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let value = s.trim();
        let bad = |reason: &str| ConfigError::RedirectHost {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (format!("[{h}]"), port)
        } else {
            match value.matches(':').count() {
                0 => (value.to_string(), None),
                1 => {
                    let (h, p) = value.split_once(':').expect("one colon");
                    (h.to_string(), Some(p))
                }
                _ => (format!("[{value}]"), None), // a bare IPv6 address
            }
        };
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| bad("invalid port")))
            .transpose()?;
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return Err(bad("expected HOST or HOST:PORT"));
        }
        let url = Url::parse(&format!("http://{host}/")).map_err(|e| bad(&e.to_string()))?;
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
        Ok(RedirectHost { host, port })
    }

    fn matches(&self, url: &Url) -> bool {
        url.host_str() == Some(self.host.as_str())
            && self
                .port
                .map_or(true, |p| url.port_or_known_default() == Some(p))
    }
}

/// Host and port of `url`, the unit a redirect is trusted by.
fn authority(url: &Url) -> Option<(String, u16)> {
    Some((url.host_str()?.to_string(), url.port_or_known_default()?))
}

#[derive(Debug)]
pub struct MarathonClient {
    http: reqwest::Client,
    endpoints: Vec<MarathonEndpoint>,
    /// Where redirects may lead: the authorities of `endpoints`, then the trusted hosts.
    endpoint_authorities: Vec<(String, u16)>,
    trusted_redirect_hosts: Vec<RedirectHost>,
    max_document_size: usize,
    current: AtomicUsize,
    basic: Option<(String, Secret)>,
    token_file: Option<PathBuf>,
    request_timeout: Duration,
    max_redirects: usize,
    /// `PODS_UNKNOWN`, `PODS_SUPPORTED` or `PODS_UNSUPPORTED`.
    pods: AtomicU8,
}

/// Builds the reqwest client for `cfg` (also used to validate a configuration up front).
pub fn build_http(cfg: &MarathonConfig) -> Result<reqwest::Client, ConfigError> {
    let mut ca_certs = Vec::new();
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .use_rustls_tls();
    if let Some(path) = &cfg.tls.ca_file {
        let pem = std::fs::read(path).map_err(|source| ConfigError::File {
            what: "CA file",
            path: path.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ConfigError::Tls {
            what: "CA file",
            path: path.clone(),
            reason: error_chain(&e),
        })?;
        if certs.is_empty() {
            return Err(ConfigError::Tls {
                what: "CA file",
                path: path.clone(),
                reason: "no PEM certificate in it".into(),
            });
        }
        // Like curl --cacert: the given bundle replaces the built-in roots.
        b = b.tls_built_in_root_certs(false);
        for c in &certs {
            b = b.add_root_certificate(c.clone());
        }
        ca_certs = certs;
    }
    let mut identity = None;
    match (&cfg.tls.client_cert, &cfg.tls.client_key) {
        (Some(cert), Some(key)) => {
            let read = |what, p: &PathBuf| {
                std::fs::read(p).map_err(|source| ConfigError::File {
                    what,
                    path: p.clone(),
                    source,
                })
            };
            let mut pem = read("client certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read("client key", key)?);
            let id =
                reqwest::Identity::from_pem(&pem).map_err(|e| identity_error(cert, key, &e))?;
            b = b.identity(id.clone());
            identity = Some(id);
        }
        (None, None) => {}
        _ => return Err(ConfigError::HalfClientCert),
    }
    if cfg.tls.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| {
        blame_tls_input(cfg, &ca_certs, identity.as_ref())
            .unwrap_or_else(|| ConfigError::Client(error_chain(&e)))
    })
}

/// A client certificate/key pair that rustls refuses; names both files (either may be at fault).
fn identity_error(cert: &Path, key: &Path, e: &dyn std::error::Error) -> ConfigError {
    ConfigError::Tls {
        what: "client certificate/key",
        path: cert.to_path_buf(),
        reason: format!("{} (key file {})", error_chain(e), key.display()),
    }
}

/// The client could not be built: finds the TLS input rustls refuses (a CA entry that is PEM
/// but not a certificate, a key that does not match its certificate, ...) by building a client
/// with that input alone, so the error names its file. Runs only on that failure path.
fn blame_tls_input(
    cfg: &MarathonConfig,
    ca_certs: &[reqwest::Certificate],
    identity: Option<&reqwest::Identity>,
) -> Option<ConfigError> {
    let alone = || {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
    };
    if let Some(path) = &cfg.tls.ca_file {
        for (i, c) in ca_certs.iter().enumerate() {
            if let Err(e) = alone().add_root_certificate(c.clone()).build() {
                return Some(ConfigError::Tls {
                    what: "CA file",
                    path: path.clone(),
                    reason: format!("certificate #{}: {}", i + 1, error_chain(&e)),
                });
            }
        }
    }
    if let (Some(id), Some(cert), Some(key)) = (identity, &cfg.tls.client_cert, &cfg.tls.client_key)
    {
        if let Err(e) = alone().identity(id.clone()).build() {
            return Some(identity_error(cert, key, &e));
        }
    }
    None
}

impl MarathonClient {
    pub fn new(cfg: &MarathonConfig) -> Result<Self, ConfigError> {
        if cfg.endpoints.is_empty() {
            return Err(ConfigError::NoUrl);
        }
        Ok(MarathonClient {
            http: build_http(cfg)?,
            endpoint_authorities: cfg
                .endpoints
                .iter()
                .filter_map(|e| authority(e.url()))
                .collect(),
            trusted_redirect_hosts: cfg.trusted_redirect_hosts.clone(),
            max_document_size: cfg.max_document_size,
            endpoints: cfg.endpoints.clone(),
            current: AtomicUsize::new(0),
            basic: cfg.auth.basic.clone(),
            token_file: cfg.auth.token_file.clone(),
            request_timeout: cfg.request_timeout,
            max_redirects: cfg.max_redirects,
            pods: AtomicU8::new(PODS_UNKNOWN),
        })
    }

    pub fn current_index(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.endpoints.len()
    }

    pub fn current_url(&self) -> String {
        redact_url(&self.endpoints[self.current_index()].url)
    }

    /// Moves to the next URL (after a failure on the current one).
    pub fn rotate(&self) {
        let n = self.endpoints.len();
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some((c + 1) % n));
    }

    fn url_for(&self, endpoint: usize, segments: &[&str]) -> Url {
        let mut url = self.endpoints[endpoint].url.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty();
            p.extend(segments);
        }
        url
    }

    async fn auth_header(&self, endpoint: usize) -> Result<Option<HeaderValue>, FetchError> {
        if let Some(path) = &self.token_file {
            let token =
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| FetchError::Token {
                        path: path.clone(),
                        source,
                    })?;
            let mut v =
                HeaderValue::from_str(&format!("token={}", token.trim())).map_err(|_| {
                    FetchError::Token {
                        path: path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "token is not a valid header value",
                        ),
                    }
                })?;
            v.set_sensitive(true);
            return Ok(Some(v));
        }
        let basic = self.endpoints[endpoint]
            .basic
            .as_ref()
            .or(self.basic.as_ref());
        Ok(basic.map(|(user, pass)| basic_header(user, pass)))
    }

    /// Sends a GET, following up to `max_redirects` redirects by hand with the credentials sent
    /// again. Returns the final response and its URL.
    async fn get(
        &self,
        endpoint: usize,
        url: Url,
        headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<(reqwest::Response, Url), FetchError> {
        self.request(Method::GET, endpoint, url, headers, timeout)
            .await
    }

    /// [`Self::get`] with another method (`HEAD`).
    async fn request(
        &self,
        method: Method,
        endpoint: usize,
        mut url: Url,
        headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<(reqwest::Response, Url), FetchError> {
        let auth = self.auth_header(endpoint).await?;
        for _ in 0..=self.max_redirects {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a.clone());
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| FetchError::from_reqwest(&url, e))?;
            let status = resp.status();
            if status.is_redirection() {
                let next = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .filter(|u| u.scheme() == "http" || u.scheme() == "https");
                let Some(mut next) = next else {
                    return Err(FetchError::BadRedirect {
                        url: redact_url(&url),
                    });
                };
                // Never take credentials from a Location header.
                let _ = take_userinfo(&mut next);
                check_redirect(&url, &next)?;
                if !self.may_redirect_to(&next) {
                    return Err(FetchError::UntrustedRedirect {
                        url: redact_url(&url),
                        to: redact_url(&next),
                    });
                }
                tracing::debug!(
                    from = %redact_url(&url),
                    to = %redact_url(&next),
                    status = status.as_u16(),
                    "following Marathon redirect"
                );
                url = next;
                continue;
            }
            return Ok((resp, url));
        }
        Err(FetchError::TooManyRedirects {
            url: redact_url(&url),
            max: self.max_redirects,
        })
    }

    /// True when `to`'s authority is a `--marathon` one or a trusted redirect host.
    fn may_redirect_to(&self, to: &Url) -> bool {
        authority(to).is_some_and(|a| self.endpoint_authorities.contains(&a))
            || self.trusted_redirect_hosts.iter().any(|h| h.matches(to))
    }

    /// Reads the body, refusing it as soon as it is known to pass `max_document_size` (from
    /// `Content-Length`, or while it streams in); the partial buffer is dropped then.
    async fn read_body(&self, url: &Url, mut resp: reqwest::Response) -> Result<Bytes, FetchError> {
        let max = self.max_document_size;
        let too_large = || FetchError::TooLarge {
            url: redact_url(url),
            max,
        };
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::from_reqwest(url, e))?
        {
            if buf.len() + chunk.len() > max {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    fn check_status(url: &Url, status: StatusCode) -> Result<(), FetchError> {
        if status.is_success() {
            return Ok(());
        }
        let url = redact_url(url);
        let status = status.as_u16();
        if status == 401 || status == 403 {
            Err(FetchError::Unauthorized { url, status })
        } else {
            Err(FetchError::HttpStatus { url, status })
        }
    }

    async fn get_body(
        &self,
        endpoint: usize,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes, Url, Instant), FetchError> {
        let mut url = self.url_for(endpoint, segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let (resp, url) = self
            .get(endpoint, url, headers, Some(self.request_timeout))
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok((status, Bytes::new(), url, Instant::now()));
        }
        Self::check_status(&url, status)?;
        let body = self.read_body(&url, resp).await?;
        Ok((status, body, url, Instant::now()))
    }

    /// Tries each endpoint once, starting with the current one; the first that answers becomes
    /// current. Returns the last error when none does.
    async fn on_any_endpoint<T, F, Fut>(&self, f: F) -> Result<T, FetchError>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, FetchError>>,
    {
        let n = self.endpoints.len();
        let start = self.current_index();
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            match f(idx).await {
                Ok(v) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    if i + 1 < n {
                        tracing::debug!(error = %e, "Marathon endpoint failed, trying the next one");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    /// Records whether the server serves pods; logs (once) when that changes to "no".
    fn set_pods_support(&self, supported: bool) {
        let new = if supported {
            PODS_SUPPORTED
        } else {
            PODS_UNSUPPORTED
        };
        let old = self.pods.swap(new, Ordering::Relaxed);
        if old != new {
            if supported {
                if old == PODS_UNSUPPORTED {
                    tracing::info!("Marathon serves pods now");
                }
            } else {
                tracing::info!(
                    "Marathon has no pods support (404 to /v2/pods, as before 1.4): no pods; apps are served"
                );
            }
        }
    }

    /// The pods of endpoint `idx`: probes `HEAD /v2/pods` unless pods are known to be served,
    /// then `GET /v2/pods/::status`. `Ok(None)` when the server has no pods support.
    async fn pods_on(&self, idx: usize) -> Result<Option<(ParsedPods, Bytes)>, FetchError> {
        if self.pods.load(Ordering::Relaxed) != PODS_SUPPORTED {
            let url = self.url_for(idx, &["v2", "pods"]);
            let (resp, url) = self
                .request(
                    Method::HEAD,
                    idx,
                    url,
                    HeaderMap::new(),
                    Some(self.request_timeout),
                )
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                self.set_pods_support(false);
                return Ok(None);
            }
            Self::check_status(&url, resp.status())?;
        }
        let (status, body, url, _) = self.get_body(idx, &["v2", "pods", "::status"], &[]).await?;
        if status == StatusCode::NOT_FOUND {
            self.set_pods_support(false);
            return Ok(None);
        }
        self.set_pods_support(true);
        let pods = parse_off_thread(body.clone(), parse_pods_status)
            .await
            .map_err(|msg| FetchError::Parse {
                url: redact_url(&url),
                msg,
            })?;
        Ok(Some((pods, body)))
    }

    /// `GET /v2/pods/::status` alone (a pod was created): every pod.
    pub async fn fetch_pods(&self) -> Result<PodsFetch, FetchError> {
        self.on_any_endpoint(|idx| async move {
            let pods = self.pods_on(idx).await?;
            let fetched_at = Instant::now();
            Ok(match pods {
                Some((pods, body)) => PodsFetch {
                    pods,
                    body: Some(body),
                    fetched_at,
                },
                None => PodsFetch {
                    pods: ParsedPods::default(),
                    body: None,
                    fetched_at,
                },
            })
        })
        .await
    }

    /// `GET /v2/pods/{id}::status`; 404 means the pod is gone. Never `/v2/apps/{id}`.
    pub async fn fetch_pod(&self, pod_id: &str) -> Result<(PodFetch, Instant), FetchError> {
        let mut parts: Vec<&str> = pod_id.split('/').filter(|s| !s.is_empty()).collect();
        let last = format!("{}::status", parts.pop().unwrap_or_default());
        let mut segments = vec!["v2", "pods"];
        segments.extend(parts);
        segments.push(&last);
        let segments = &segments;
        self.on_any_endpoint(|idx| async move {
            let (status, body, url, at) = self.get_body(idx, segments, &[]).await?;
            if status == StatusCode::NOT_FOUND {
                return Ok((PodFetch::Gone, at));
            }
            let parsed = parse_off_thread(body, parse_single_pod_status)
                .await
                .map_err(|msg| FetchError::Parse {
                    url: redact_url(&url),
                    msg,
                })?;
            Ok(match parsed {
                Ok(pod) => (PodFetch::Found(Box::new(pod)), at),
                Err(rejection) => (PodFetch::Rejected(rejection), at),
            })
        })
        .await
    }

    /// `GET /v2/apps?embed=apps.tasks` and the pods (module docs), parsed once.
    pub async fn fetch_apps(&self) -> Result<FullFetch, FetchError> {
        self.on_any_endpoint(|idx| async move {
            let (status, body, url, _) = self
                .get_body(idx, &["v2", "apps"], &[("embed", "apps.tasks")])
                .await?;
            if status == StatusCode::NOT_FOUND {
                return Err(FetchError::HttpStatus {
                    url: redact_url(&url),
                    status: 404,
                });
            }
            let mut snapshot = parse_off_thread(body.clone(), parse_apps_document)
                .await
                .map_err(|msg| FetchError::Parse {
                    url: redact_url(&url),
                    msg,
                })?;
            let pods_body = match self.pods_on(idx).await? {
                Some((pods, pods_body)) => {
                    snapshot.pods = pods.pods;
                    snapshot.rejected_pods = pods.rejected;
                    Some(pods_body)
                }
                None => None,
            };
            let fetched_at = Instant::now();
            Ok(FullFetch {
                body,
                pods_body,
                snapshot,
                fetched_at,
                redirected: authority(&url) != authority(self.endpoints[idx].url()),
                url: redact_url(&url),
            })
        })
        .await
    }

    /// `GET /v2/apps/{id}`; 404 means the app is gone.
    pub async fn fetch_app(&self, app_id: &str) -> Result<(AppFetch, Instant), FetchError> {
        let mut segments = vec!["v2", "apps"];
        segments.extend(app_id.split('/').filter(|s| !s.is_empty()));
        let segments = &segments;
        self.on_any_endpoint(|idx| async move {
            let (status, body, url, at) = self.get_body(idx, segments, &[]).await?;
            if status == StatusCode::NOT_FOUND {
                return Ok((AppFetch::Gone, at));
            }
            let parsed = parse_off_thread(body, parse_single_app_document)
                .await
                .map_err(|msg| FetchError::Parse {
                    url: redact_url(&url),
                    msg,
                })?;
            Ok(match parsed {
                Ok(app) => (AppFetch::Found(Box::new(app)), at),
                Err(rejection) => (AppFetch::Rejected(rejection), at),
            })
        })
        .await
    }

    /// Opens `GET /v2/events` on the current endpoint (following a non-leader's redirect).
    pub async fn open_events(&self) -> Result<(reqwest::Response, Url), FetchError> {
        let idx = self.current_index();
        let mut url = self.url_for(idx, &["v2", "events"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("plan-format", "light");
            for t in SUBSCRIBED_EVENT_TYPES {
                q.append_pair("event_type", t);
            }
        }
        let mut headers = HeaderMap::new();
        // Exactly this value: Jetty's EventSourceServlet answers 405 to anything else.
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let (resp, url) =
            tokio::time::timeout(self.request_timeout, self.get(idx, url, headers, None))
                .await
                .map_err(|_| FetchError::Timeout {
                    url: redact_url(&self.endpoints[idx].url),
                    msg: "no response to GET /v2/events".into(),
                })??;
        Self::check_status(&url, resp.status())?;
        Ok((resp, url))
    }
}

/// Parses on the blocking pool when the body is big, inline otherwise.
async fn parse_off_thread<T, E, F>(body: Bytes, f: F) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display,
    F: FnOnce(&[u8]) -> Result<T, E> + Send + 'static,
{
    if body.len() < BLOCKING_PARSE_THRESHOLD {
        return f(&body).map_err(|e| e.to_string());
    }
    tokio::task::spawn_blocking(move || f(&body).map_err(|e| e.to_string()))
        .await
        .map_err(|e| format!("parse task failed: {e}"))?
}

/// `Basic base64(user:pass)`, marked sensitive.
pub(crate) fn basic_header(user: &str, pass: &Secret) -> HeaderValue {
    let raw = format!("{user}:{}", pass.expose());
    let mut v = HeaderValue::from_str(&format!("Basic {}", base64(raw.as_bytes())))
        .expect("base64 is a valid header value");
    v.set_sensitive(true);
    v
}

pub(crate) fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// A redirect may not downgrade from https to http: the credentials are sent again to its
/// target, and would then travel in clear.
fn check_redirect(from: &Url, to: &Url) -> Result<(), FetchError> {
    if from.scheme() == "https" && to.scheme() == "http" {
        return Err(FetchError::InsecureRedirect {
            url: redact_url(from),
            to: redact_url(to),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_redirect_never_downgrades_https_to_http() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(check_redirect(
            &u("https://m1:8443/v2/events"),
            &u("https://m2:8443/v2/events")
        )
        .is_ok());
        assert!(check_redirect(
            &u("http://m1:8080/v2/events"),
            &u("http://m2:8080/v2/events")
        )
        .is_ok());
        assert!(check_redirect(
            &u("http://m1:8080/v2/events"),
            &u("https://m2:8443/v2/events")
        )
        .is_ok());
        let e = check_redirect(
            &u("https://m1:8443/v2/events"),
            &u("http://m2:8080/v2/events"),
        );
        assert!(matches!(e, Err(FetchError::InsecureRedirect { .. })));
    }

    use super::*;

    #[test]
    fn a_redirect_is_trusted_only_to_a_marathon_authority_or_a_named_host() {
        let mut cfg =
            MarathonConfig::new(&["http://127.0.0.1:8080", "https://m1.example/marathon"]).unwrap();
        cfg.trusted_redirect_hosts = vec![
            RedirectHost::parse("M2.example").unwrap(),
            RedirectHost::parse("10.0.0.9:9090").unwrap(),
            RedirectHost::parse("[fd00::1]:80").unwrap(),
        ];
        let client = MarathonClient::new(&cfg).unwrap();
        let may = |u: &str| client.may_redirect_to(&Url::parse(u).unwrap());
        // The --marathon authorities, whatever the path; default ports count.
        assert!(may("http://127.0.0.1:8080/v2/events?x=1"));
        assert!(may("https://m1.example:443/v2/apps"));
        assert!(may("https://M1.EXAMPLE/v2/apps"));
        // Another port is another host.
        assert!(!may("http://127.0.0.1:8081/v2/apps"));
        assert!(!may("http://m1.example:8443/v2/apps"));
        assert!(!may("http://evil.example:8080/v2/apps"));
        // Named hosts: a bare host on any port, host:port exactly.
        assert!(may("http://m2.example:1234/v2/apps"));
        assert!(may("https://m2.example/v2/apps"));
        assert!(may("http://10.0.0.9:9090/v2/apps"));
        assert!(!may("http://10.0.0.9:9091/v2/apps"));
        assert!(may("http://[fd00::1]/v2/apps"));
        assert!(!may("http://[fd00::2]/v2/apps"));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn endpoint_strips_and_keeps_credentials_and_debug_hides_them() {
        let e = MarathonEndpoint::parse("https://alice:s3cr3t@m1.example:8443/marathon").unwrap();
        assert_eq!(e.url().as_str(), "https://m1.example:8443/marathon");
        assert!(e.has_credentials());
        let dbg = format!("{e:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("alice"));
    }

    #[test]
    fn bad_urls_are_rejected_without_echoing_them() {
        for bad in ["ftp://u:pw123@x/", "not a url pw123", "http://"] {
            let err = MarathonEndpoint::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("pw123"), "{err}");
        }
    }

    #[test]
    fn request_errors_never_carry_userinfo() {
        let url: Url = "http://m1:8080/".parse().unwrap();
        let e = FetchError::HttpStatus {
            url: redact_url(&url),
            status: 500,
        };
        assert_eq!(e.kind(), SyncErrorKind::HttpStatus);
        assert_eq!(e.to_string(), "http://m1:8080/ answered HTTP 500");
    }
}
