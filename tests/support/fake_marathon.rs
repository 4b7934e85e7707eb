//! A fake Marathon for tests: a real HTTP server on 127.0.0.1:0, driven by the test.
//!
//! Owns: `GET /v2/apps` (settable apps document), `GET /v2/apps/{id}` (derived from the apps
//! document, or overridden per app), `GET /v2/events` (SSE with CRLF frames and heartbeats,
//! Jetty's exact-`Accept` rule: 405 unless one value is exactly `text/event-stream`), optional
//! HTTP basic auth (401 otherwise), a non-leader mode that redirects `/v2/events` to another URL,
//! failure modes (500, 401, garbage), cutting or silencing the streams, and per-path counters.
//! It can also delay `GET /v2/apps`, stream bodies in chunks without `Content-Length`, and
//! redirect the API paths (`/v2/apps...`) to another fake.
//! Pods ([`FakeMarathon::set_pods`]): `HEAD /v2/pods` (200), `GET /v2/pods/::status` (the
//! settable array), `GET /v2/pods/{id}::status` (one pod, 404 for an unknown id). Until pods
//! are set the fake is a pre-1.4 Marathon: every `/v2/pods` path answers 404. Counters are per
//! path, with `HEAD ` in front for HEAD requests.
//! The same fake also serves HTTPS ([`FakeMarathon::start_tls`], rustls on the ring provider,
//! optionally requiring a client certificate), with certificates made at test time by
//! [`TestPki`] (rcgen) and written as PEM files into a temporary directory.
//!
//! Must not: listen anywhere but loopback, sleep to synchronise (tests wait on conditions), or
//! resolve a name (the server certificate is for the IP address 127.0.0.1).
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// What the API paths answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// HTTP 500.
    Error500,
    /// HTTP 401 whatever the credentials.
    Unauthorized,
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// HTTP 503 (used to keep the event stream down).
    Unavailable,
}

struct Inner {
    apps: serde_json::Value,
    /// `apps` serialized once per change (a 30 MB document costs ~100 ms to serialize).
    apps_body: Bytes,
    app_overrides: HashMap<String, (StatusCode, Bytes)>,
    api_mode: Mode,
    events_mode: Mode,
    basic: Option<String>,
    redirect_events_to: Option<String>,
    redirect_api_to: Option<String>,
    apps_delay: Option<Duration>,
    chunked_bodies: bool,
    api_requests: Vec<Option<String>>,
    heartbeat: Option<Duration>,
    silent: bool,
    counters: HashMap<String, u64>,
    events_requests: Vec<EventsRequest>,
    /// `GET /v2/pods/::status`; `None`: no pods support (404).
    pods: Option<serde_json::Value>,
}

/// What a `/v2/events` request carried.
#[derive(Debug, Clone)]
pub struct EventsRequest {
    pub query: String,
    pub accept: Vec<String>,
    pub cache_control: Option<String>,
    pub authorization: Option<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    heartbeats: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<Bytes>,
    cut: watch::Sender<u64>,
    tls_ok: std::sync::atomic::AtomicU64,
    tls_failed: std::sync::atomic::AtomicU64,
    tls_errors: Mutex<Vec<String>>,
}

pub struct FakeMarathon {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    /// The TLS accept loop (HTTPS fakes only).
    acceptor: Option<tokio::task::JoinHandle<()>>,
    scheme: &'static str,
}

impl Drop for FakeMarathon {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(a) = &self.acceptor {
            a.abort();
        }
        self.cut_streams();
    }
}

impl FakeMarathon {
    /// Starts a fake serving `apps` (a `{"apps":[…]}` document) over plain HTTP.
    pub async fn start(apps: serde_json::Value) -> FakeMarathon {
        Self::start_with(apps, None).await
    }

    /// Starts the same fake over HTTPS with `tls` (the server certificate must hold the IP SAN
    /// 127.0.0.1). Failed handshakes are counted ([`FakeMarathon::tls_handshakes_failed`]).
    pub async fn start_tls(apps: serde_json::Value, tls: TlsOptions) -> FakeMarathon {
        Self::start_with(apps, Some(tls)).await
    }

    async fn start_with(apps: serde_json::Value, tls: Option<TlsOptions>) -> FakeMarathon {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(16 * 1024);
        let (cut, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            heartbeats: std::sync::atomic::AtomicU64::new(0),
            inner: Mutex::new(Inner {
                apps_body: Bytes::from(apps.to_string()),
                apps,
                app_overrides: HashMap::new(),
                api_mode: Mode::Normal,
                events_mode: Mode::Normal,
                basic: None,
                redirect_events_to: None,
                redirect_api_to: None,
                apps_delay: None,
                chunked_bodies: false,
                api_requests: Vec::new(),
                heartbeat: Some(Duration::from_millis(200)),
                silent: false,
                counters: HashMap::new(),
                events_requests: Vec::new(),
                pods: None,
            }),
            events,
            cut,
            tls_ok: std::sync::atomic::AtomicU64::new(0),
            tls_failed: std::sync::atomic::AtomicU64::new(0),
            tls_errors: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        match tls {
            None => {
                let server = tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
                FakeMarathon {
                    addr,
                    shared,
                    server,
                    acceptor: None,
                    scheme: "http",
                }
            }
            Some(tls) => {
                let config = tls.server_config();
                let (tx, rx) = tokio::sync::mpsc::channel(64);
                let acceptor = tokio::spawn(tls_accept_loop(listener, config, tx, shared.clone()));
                let server = tokio::spawn(async move {
                    let _ = axum::serve(TlsListener { rx, addr }, app).await;
                });
                FakeMarathon {
                    addr,
                    shared,
                    server,
                    acceptor: Some(acceptor),
                    scheme: "https",
                }
            }
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` for a fake started with [`FakeMarathon::start_tls`]).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `http[s]://user:pass@127.0.0.1:PORT`
    pub fn url_with(&self, user: &str, pass: &str) -> String {
        format!("{}://{user}:{pass}@{}", self.scheme, self.addr)
    }

    /// TLS handshakes completed (HTTPS fakes).
    pub fn tls_handshakes_ok(&self) -> u64 {
        self.shared
            .tls_ok
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// TLS handshakes the server saw fail (HTTPS fakes).
    pub fn tls_handshakes_failed(&self) -> u64 {
        self.shared
            .tls_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The server-side errors of the failed handshakes, oldest first.
    pub fn tls_errors(&self) -> Vec<String> {
        self.shared.tls_errors.lock().unwrap().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    pub fn set_apps(&self, apps: serde_json::Value) {
        let body = Bytes::from(apps.to_string());
        let mut inner = self.lock();
        inner.apps = apps;
        inner.apps_body = body;
    }

    pub fn apps(&self) -> serde_json::Value {
        self.lock().apps.clone()
    }

    /// Serves pods: `pods` is the `GET /v2/pods/::status` array.
    pub fn set_pods(&self, pods: serde_json::Value) {
        self.lock().pods = Some(pods);
    }

    /// Requests on `/v2/pods/{id}::status` (one pod, not `::status` of all).
    pub fn pod_fetches(&self) -> u64 {
        self.lock()
            .counters
            .iter()
            .filter(|(p, _)| p.starts_with("/v2/pods/") && *p != "/v2/pods/::status")
            .map(|(_, n)| *n)
            .sum()
    }

    /// Overrides what `GET /v2/apps/{id}` answers (id without the leading `/`).
    pub fn set_app_response(&self, id: &str, status: StatusCode, body: impl Into<Bytes>) {
        self.lock().app_overrides.insert(
            id.trim_start_matches('/').to_string(),
            (status, body.into()),
        );
    }

    pub fn set_api_mode(&self, mode: Mode) {
        self.lock().api_mode = mode;
    }

    pub fn set_events_mode(&self, mode: Mode) {
        self.lock().events_mode = mode;
    }

    /// Requires HTTP basic auth on every path.
    pub fn require_basic(&self, user: &str, pass: &str) {
        self.lock().basic = Some(format!(
            "Basic {}",
            base64(format!("{user}:{pass}").as_bytes())
        ));
    }

    /// Requires the DC/OS token header `Authorization: token=<token>` on every path.
    pub fn require_token(&self, token: &str) {
        self.lock().basic = Some(format!("token={token}"));
    }

    /// Non-leader mode: `/v2/events` answers 307 to `leader_url` + `/v2/events?<same query>`.
    pub fn redirect_events_to(&self, leader_url: &str) {
        self.lock().redirect_events_to = Some(leader_url.to_string());
    }

    /// `/v2/apps` and `/v2/apps/{id}` answer 307 to `url` + the same path and query.
    pub fn redirect_api_to(&self, url: &str) {
        self.lock().redirect_api_to = Some(url.to_string());
    }

    /// `GET /v2/apps` waits this long before answering (the request is counted at once).
    pub fn set_apps_delay(&self, delay: Option<Duration>) {
        self.lock().apps_delay = delay;
    }

    /// API bodies are sent in 16 KiB chunks without `Content-Length`.
    pub fn set_chunked_bodies(&self, chunked: bool) {
        self.lock().chunked_bodies = chunked;
    }

    /// The `Authorization` header of every API (non-events) request, oldest first.
    pub fn api_authorizations(&self) -> Vec<Option<String>> {
        self.lock().api_requests.clone()
    }

    /// Heartbeat interval of new streams (`None`: no heartbeats).
    pub fn set_heartbeat(&self, every: Option<Duration>) {
        self.lock().heartbeat = every;
    }

    /// Silent: streams stay open but send nothing (no events, no heartbeats).
    pub fn set_silent(&self, silent: bool) {
        self.lock().silent = silent;
    }

    /// Ends every open event stream.
    pub fn cut_streams(&self) {
        self.shared.cut.send_modify(|g| *g += 1);
    }

    /// Sends one event as Marathon frames it: `event: T\r\ndata: JSON\r\n\r\n`.
    pub fn send_event(&self, event_type: &str, data: &serde_json::Value) {
        let frame = format!("event: {event_type}\r\ndata: {data}\r\n\r\n");
        let _ = self.shared.events.send(Bytes::from(frame));
    }

    /// Sends raw bytes to every open stream.
    pub fn send_raw(&self, bytes: impl Into<Bytes>) {
        let _ = self.shared.events.send(bytes.into());
    }

    /// Heartbeats written so far, over all streams.
    pub fn heartbeats_sent(&self) -> u64 {
        self.shared
            .heartbeats
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of open event streams.
    pub fn open_streams(&self) -> usize {
        self.shared.events.receiver_count()
    }

    /// Requests seen on `path` (e.g. `/v2/apps`, `/v2/apps/web`, `/v2/events`).
    pub fn count(&self, path: &str) -> u64 {
        self.lock().counters.get(path).copied().unwrap_or(0)
    }

    /// Requests on `/v2/apps/{anything}`.
    pub fn app_fetches(&self) -> u64 {
        self.lock()
            .counters
            .iter()
            .filter(|(p, _)| p.starts_with("/v2/apps/"))
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn events_requests(&self) -> Vec<EventsRequest> {
        self.lock().events_requests.clone()
    }
}

fn failure(mode: Mode) -> Option<Response> {
    match mode {
        Mode::Normal => None,
        Mode::Error500 => Some((StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()),
        Mode::Unauthorized => Some((StatusCode::UNAUTHORIZED, "no").into_response()),
        Mode::Unavailable => Some((StatusCode::SERVICE_UNAVAILABLE, "later").into_response()),
        Mode::Garbage => Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"apps\": [ this is not json",
            )
                .into_response(),
        ),
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (response, delay, chunked) = respond(&shared, req);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if !chunked {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "body").into_response();
    };
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = (0..bytes.len())
        .step_by(16 * 1024)
        .map(|i| Ok(bytes.slice(i..(i + 16 * 1024).min(bytes.len()))))
        .collect();
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from_stream(futures::stream::iter(chunks)))
}

/// The response, how long to wait before sending it, and whether to send it in chunks.
fn respond(shared: &Arc<Shared>, req: Request) -> (Response, Option<Duration>, bool) {
    let path = req.uri().path().to_string();
    let inner = shared.inner.lock().unwrap();
    let api = path.starts_with("/v2/apps");
    let delay = if path == "/v2/apps" || path == "/v2/apps/" {
        inner.apps_delay
    } else {
        None
    };
    let chunked = api && inner.chunked_bodies;
    drop(inner);
    (handle_now(shared, req), delay, chunked)
}

fn handle_now(shared: &Arc<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let head = req.method() == axum::http::Method::HEAD;
    let mut inner = shared.inner.lock().unwrap();
    let counter = if head {
        format!("HEAD {path}")
    } else {
        path.clone()
    };
    *inner.counters.entry(counter).or_default() += 1;
    if path.starts_with("/v2/apps") {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        inner.api_requests.push(auth);
        if let Some(to) = &inner.redirect_api_to {
            let q = if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            };
            let location = format!("{to}{path}{q}");
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, HeaderValue::from_str(&location).unwrap())],
            )
                .into_response();
        }
    }
    if let Some(expected) = &inner.basic {
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if got != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, "credentials required").into_response();
        }
    }
    if path == "/v2/events" {
        return events(shared, &mut inner, &headers, query);
    }
    if let Some(r) = failure(inner.api_mode) {
        return r;
    }
    let json = |status: StatusCode, body: Bytes| {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    if path == "/v2/apps" || path == "/v2/apps/" {
        return json(StatusCode::OK, inner.apps_body.clone());
    }
    if path == "/v2/pods" || path.starts_with("/v2/pods/") {
        let Some(pods) = &inner.pods else {
            return (StatusCode::NOT_FOUND, "not found").into_response();
        };
        if path == "/v2/pods" || path == "/v2/pods/" {
            return json(StatusCode::OK, Bytes::new());
        }
        if path == "/v2/pods/::status" {
            return json(StatusCode::OK, Bytes::from(pods.to_string()));
        }
        let id = path
            .strip_prefix("/v2/pods/")
            .and_then(|p| p.strip_suffix("::status"))
            .unwrap_or_default();
        let found = pods.as_array().and_then(|pods| {
            pods.iter()
                .find(|p| p["id"].as_str().map(|s| s.trim_start_matches('/')) == Some(id))
        });
        return match found {
            Some(pod) => json(StatusCode::OK, Bytes::from(pod.to_string())),
            None => json(
                StatusCode::NOT_FOUND,
                Bytes::from(format!("{{\"message\":\"Pod '/{id}' does not exist\"}}")),
            ),
        };
    }
    if let Some(id) = path.strip_prefix("/v2/apps/") {
        if let Some((status, body)) = inner.app_overrides.get(id) {
            return json(*status, body.clone());
        }
        let found = inner.apps["apps"].as_array().and_then(|apps| {
            apps.iter()
                .find(|a| a["id"].as_str().map(|s| s.trim_start_matches('/')) == Some(id))
        });
        return match found {
            Some(app) => json(
                StatusCode::OK,
                Bytes::from(serde_json::json!({ "app": app }).to_string()),
            ),
            None => json(
                StatusCode::NOT_FOUND,
                Bytes::from(format!("{{\"message\":\"App '/{id}' does not exist\"}}")),
            ),
        };
    }
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn events(shared: &Arc<Shared>, inner: &mut Inner, headers: &HeaderMap, query: String) -> Response {
    let accept: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    inner.events_requests.push(EventsRequest {
        query: query.clone(),
        accept: accept.clone(),
        cache_control: headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    // Jetty EventSourceServlet: some Accept value must equal "text/event-stream" exactly.
    if !accept.iter().any(|a| a == "text/event-stream") {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "HTTP method GET is not supported",
        )
            .into_response();
    }
    if let Some(leader) = &inner.redirect_events_to {
        let location = format!("{leader}/v2/events?{query}");
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, HeaderValue::from_str(&location).unwrap())],
        )
            .into_response();
    }
    if let Some(r) = failure(inner.events_mode) {
        return r;
    }
    let rx = shared.events.subscribe();
    let mut cut = shared.cut.subscribe();
    cut.borrow_and_update();
    let heartbeat = inner.heartbeat;
    let shared2 = shared.clone();
    struct St {
        rx: broadcast::Receiver<Bytes>,
        cut: watch::Receiver<u64>,
        tick: Option<tokio::time::Interval>,
        shared: Arc<Shared>,
    }
    let st = St {
        rx,
        cut,
        tick: heartbeat.map(|d| {
            let mut i = tokio::time::interval(d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        }),
        shared: shared2,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            let silent = st.shared.inner.lock().unwrap().silent;
            tokio::select! {
                _ = st.cut.changed() => return None,
                r = st.rx.recv() => match r {
                    Ok(b) if !silent => return Some((Ok::<Bytes, std::convert::Infallible>(b), st)),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = async { match st.tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                    if !silent {
                        st.shared.heartbeats.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // Jetty writes '\r' then '\n'.
                        return Some((Ok(Bytes::from_static(b"\r\n")), st));
                    }
                }
            }
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream;charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

// === HTTPS ===

/// How an HTTPS fake presents itself, as PEM text.
#[derive(Clone)]
pub struct TlsOptions {
    /// The server certificate (and any intermediates), PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// When set, a client certificate signed by this CA (PEM) is required.
    pub client_ca_pem: Option<String>,
}

impl TlsOptions {
    fn server_config(&self) -> Arc<tokio_rustls::rustls::ServerConfig> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        // Explicitly the provider reqwest uses: nothing depends on a process-wide default.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("server key PEM");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(c.expect("client CA PEM")).expect("client CA");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .expect("server certificate and key");
        // The fake's axum speaks HTTP/1.1 only (like Marathon's Jetty over HTTPS).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

type TlsIo = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Accepts TCP, runs each handshake in its own task (a stalled client cannot block the others)
/// and hands finished TLS streams to the HTTP server.
async fn tls_accept_loop(
    listener: tokio::net::TcpListener,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
    tx: tokio::sync::mpsc::Sender<(TlsIo, SocketAddr)>,
    shared: Arc<Shared>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning (not a synchronisation).
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let res = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
            match res {
                Ok(Ok(tls)) => {
                    shared
                        .tls_ok
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    shared.tls_errors.lock().unwrap().push(e.to_string());
                    shared
                        .tls_failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(_) => {
                    shared
                        .tls_errors
                        .lock()
                        .unwrap()
                        .push("handshake timed out".into());
                    shared
                        .tls_failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
}

/// The finished TLS streams, as an axum listener.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsIo, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop is gone (the fake is being dropped): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// Certificates made at test time, written as PEM files into a temporary directory that lives
/// as long as this value: a CA, a server certificate it signed for the IP address 127.0.0.1, a
/// client certificate it signed, and a second, unrelated CA.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    /// The test CA (PEM file).
    pub ca: std::path::PathBuf,
    /// A CA that signed nothing here (PEM file).
    pub other_ca: std::path::PathBuf,
    /// Client certificate and key signed by the test CA (PEM files).
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
    /// A client certificate and key signed by the unrelated CA (PEM files).
    pub stranger_cert: std::path::PathBuf,
    pub stranger_key: std::path::PathBuf,
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
}

impl TestPki {
    pub fn generate() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = p.self_signed(&key).unwrap();
            (cert, Issuer::new(p, key))
        }
        fn leaf(
            issuer: &Issuer<'static, KeyPair>,
            name: &str,
            sans: Vec<String>,
            eku: ExtendedKeyUsagePurpose,
        ) -> (String, String) {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![eku];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.use_authority_key_identifier_extension = true;
            let cert = p.signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
        let (ca_cert, ca_issuer) = ca("vipd test CA");
        let (other_cert, other_issuer) = ca("unrelated test CA");
        let (server_cert_pem, server_key_pem) = leaf(
            &ca_issuer,
            "fake marathon",
            vec!["127.0.0.1".to_string()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert_pem, client_key_pem) = leaf(
            &ca_issuer,
            "vipd test client",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (stranger_cert_pem, stranger_key_pem) = leaf(
            &other_issuer,
            "stranger client",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let ca_pem = ca_cert.pem();
        TestPki {
            ca: write("ca.pem", &ca_pem),
            other_ca: write("other-ca.pem", &other_cert.pem()),
            client_cert: write("client.pem", &client_cert_pem),
            client_key: write("client-key.pem", &client_key_pem),
            stranger_cert: write("stranger.pem", &stranger_cert_pem),
            stranger_key: write("stranger-key.pem", &stranger_key_pem),
            ca_pem,
            server_cert_pem,
            server_key_pem,
            dir,
        }
    }

    /// The server side: the certificate for 127.0.0.1, no client certificate asked for.
    pub fn server(&self) -> TlsOptions {
        TlsOptions {
            cert_pem: self.server_cert_pem.clone(),
            key_pem: self.server_key_pem.clone(),
            client_ca_pem: None,
        }
    }

    /// The server side, requiring a client certificate signed by the test CA (mTLS).
    pub fn server_requiring_client_cert(&self) -> TlsOptions {
        TlsOptions {
            client_ca_pem: Some(self.ca_pem.clone()),
            ..self.server()
        }
    }
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
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

/// Waits until `cond` holds ([`super::eventually`]); panics naming `what` after
/// [`super::PATIENCE`].
pub async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    let held = super::eventually(super::PATIENCE, cond).await;
    assert!(held, "timed out waiting for: {what}");
}

/// An app in the 1.10 shape with host-mode tasks `(task_id, host, port)`.
/// A source configuration for `urls` with test timings: short timeouts and backoff, no periodic
/// resync (tests drive fetches through events and reconnects).
pub fn fast_config(urls: &[&str]) -> vipd::source::marathon::MarathonConfig {
    let mut c = vipd::source::marathon::MarathonConfig::new(urls).unwrap();
    c.connect_timeout = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(5);
    c.stream_timeout = Duration::from_secs(5);
    c.event_debounce = Duration::from_millis(50);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.resync_interval = Duration::from_secs(3600);
    c
}

pub fn app(id: &str, tasks: &[(&str, &str, u16)]) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "version": "2024-01-01T00:00:00.000Z",
        "networks": [{"mode": "host"}],
        "portDefinitions": [{"port": 10000, "protocol": "tcp", "name": "http"}],
        "healthChecks": [],
        "tasks": tasks.iter().map(|(t, h, p)| serde_json::json!({
            "id": t, "appId": id, "host": h, "ports": [p], "state": "TASK_RUNNING",
            "ipAddresses": [], "healthCheckResults": [],
            "version": "2024-01-01T00:00:00.000Z"
        })).collect::<Vec<_>>()
    })
}

/// `{"apps":[…]}`
pub fn apps_doc(apps: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({ "apps": apps })
}

/// A `status_update_event` payload.
pub fn status_update(
    app_id: &str,
    task_id: &str,
    status: &str,
    host: &str,
    port: u16,
) -> serde_json::Value {
    serde_json::json!({
        "eventType": "status_update_event", "timestamp": "2024-01-01T00:00:01.000Z",
        "slaveId": "agent-1", "taskId": task_id, "taskStatus": status, "message": "",
        "appId": app_id, "host": host, "ipAddresses": [], "ports": [port],
        "version": "2024-01-01T00:00:00.000Z"
    })
}
