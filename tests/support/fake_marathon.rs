//! A fake Marathon for tests: a real HTTP server on 127.0.0.1:0, driven by the test.
//!
//! Owns: `GET /v2/apps` (settable apps document), `GET /v2/apps/{id}` (derived from the apps
//! document, or overridden per app), `GET /v2/events` (SSE with CRLF frames and heartbeats,
//! Jetty's exact-`Accept` rule: 405 unless one value is exactly `text/event-stream`), optional
//! HTTP basic auth (401 otherwise), a non-leader mode that redirects `/v2/events` to another URL,
//! failure modes (500, 401, garbage), cutting or silencing the streams, and per-path counters.
//!
//! Must not: listen anywhere but loopback, or sleep to synchronise (tests wait on conditions).
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
    heartbeat: Option<Duration>,
    silent: bool,
    counters: HashMap<String, u64>,
    events_requests: Vec<EventsRequest>,
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
}

pub struct FakeMarathon {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMarathon {
    fn drop(&mut self) {
        self.server.abort();
        self.cut_streams();
    }
}

impl FakeMarathon {
    /// Starts a fake serving `apps` (a `{"apps":[…]}` document).
    pub async fn start(apps: serde_json::Value) -> FakeMarathon {
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
                heartbeat: Some(Duration::from_millis(200)),
                silent: false,
                counters: HashMap::new(),
                events_requests: Vec::new(),
            }),
            events,
            cut,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeMarathon {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:pass@127.0.0.1:PORT`
    pub fn url_with(&self, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@{}", self.addr)
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
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let mut inner = shared.inner.lock().unwrap();
    *inner.counters.entry(path.clone()).or_default() += 1;
    if let Some(expected) = &inner.basic {
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if got != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, "credentials required").into_response();
        }
    }
    if path == "/v2/events" {
        return events(&shared, &mut inner, &headers, query);
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

/// Polls `cond` every 5 ms until it holds; panics naming `what` after 10 s.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An app in the 1.10 shape with host-mode tasks `(task_id, host, port)`.
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
