//! A fake Mesos master for tests: a real HTTP server on 127.0.0.1:0, driven by the test.
//!
//! Owns: `POST /api/v1` (and `/master/api/v1`) with `{"type":"SUBSCRIBE"}`: Mesos' exact
//! `Content-Type` rule (415 unless it is exactly `application/json`), a 200 whose chunked body is
//! a RecordIO stream (`SUBSCRIBED` with the state the test set, a `HEARTBEAT` at once and then
//! every interval, then the events the test sends), optionally cut into small chunks; a
//! non-leader mode answering 307 with a protocol-relative `Location: //host:port/master/api/v1`;
//! a no-leader mode answering 503; optional auth (401 unless `Authorization` is exactly the one
//! set); silencing and cutting the streams; and a log of what each call carried.
//!
//! Must not: listen anywhere but loopback, or sleep to synchronise (tests wait on conditions).
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// What one call carried.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

struct Inner {
    state: Value,
    heartbeat: Duration,
    /// The framed `SUBSCRIBED` record for `state` and `heartbeat`, made once per change (a
    /// large state is not re-serialized on every subscription).
    subscribed: Option<Bytes>,
    redirect_to: Option<String>,
    unavailable: bool,
    authorization: Option<String>,
    silent: bool,
    chunk: Option<usize>,
    calls: Vec<Call>,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Bytes>,
    cut: watch::Sender<u64>,
    open: AtomicUsize,
    subscribed: AtomicUsize,
}

pub struct FakeMesos {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMesos {
    fn drop(&mut self) {
        self.server.abort();
        self.cut_streams();
    }
}

/// RecordIO framing of one record.
pub fn frame(record: &[u8]) -> Bytes {
    let mut out = format!("{}\n", record.len()).into_bytes();
    out.extend_from_slice(record);
    out.into()
}

impl FakeMesos {
    /// Starts a master whose `SUBSCRIBED` carries `state` (a `GetState` object).
    pub async fn start(state: Value) -> FakeMesos {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(4096);
        let (cut, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state,
                heartbeat: Duration::from_millis(200),
                subscribed: None,
                redirect_to: None,
                unavailable: false,
                authorization: None,
                silent: false,
                chunk: None,
                calls: Vec::new(),
            }),
            events,
            cut,
            open: AtomicUsize::new(0),
            subscribed: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeMesos {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT/api/v1`
    pub fn url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    pub fn url_with(&self, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@{}/api/v1", self.addr)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    /// The `GetState` the next `SUBSCRIBED` carries.
    pub fn set_state(&self, state: Value) {
        let mut inner = self.inner();
        inner.state = state;
        inner.subscribed = None;
    }

    pub fn set_heartbeat(&self, every: Duration) {
        let mut inner = self.inner();
        inner.heartbeat = every;
        inner.subscribed = None;
    }

    /// Makes the `SUBSCRIBED` record now, so that a subscription's answer starts at once.
    pub fn prepare_subscribed(&self) {
        let mut inner = self.inner();
        let record = subscribed_record(&inner.state, inner.heartbeat);
        inner.subscribed = Some(record);
    }

    /// Not the leader: answer 307 to `//leader/master/api/v1` (protocol-relative).
    pub fn redirect_to(&self, leader: Option<SocketAddr>) {
        self.inner().redirect_to = leader.map(|a| format!("//{a}/master/api/v1"));
    }

    /// No leader yet: answer 503.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner().unavailable = unavailable;
    }

    /// Require this exact `Authorization` value (401 otherwise).
    pub fn require_authorization(&self, value: &str) {
        self.inner().authorization = Some(value.to_string());
    }

    /// Stop sending heartbeats and events (the connection stays open).
    pub fn set_silent(&self, silent: bool) {
        self.inner().silent = silent;
    }

    /// Send every record in chunks of `n` bytes (arbitrary boundaries).
    pub fn set_chunk(&self, n: Option<usize>) {
        self.inner().chunk = n;
    }

    /// Sends one event (JSON) to every open stream.
    pub fn send_event(&self, event: &Value) {
        let _ = self.shared.events.send(frame(event.to_string().as_bytes()));
    }

    /// Sends raw bytes to every open stream (bad framing).
    pub fn send_raw(&self, bytes: impl Into<Bytes>) {
        let _ = self.shared.events.send(bytes.into());
    }

    /// Ends every open stream.
    pub fn cut_streams(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    pub fn open_streams(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// How many `SUBSCRIBED` were sent.
    pub fn subscriptions(&self) -> usize {
        self.shared.subscribed.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner().calls.clone()
    }
}

struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let headers = req.headers().clone();
    let get = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = get(header::AUTHORIZATION);
    let content_type = get(header::CONTENT_TYPE);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let (subscribed, heartbeat, chunk) = {
        let mut inner = shared.inner.lock().unwrap();
        inner.calls.push(Call {
            path: path.clone(),
            authorization: authorization.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        if path != "/api/v1" && path != "/master/api/v1" {
            return (StatusCode::NOT_FOUND, "no such path").into_response();
        }
        if method != Method::POST {
            return (StatusCode::METHOD_NOT_ALLOWED, "POST only").into_response();
        }
        if let Some(want) = &inner.authorization {
            if authorization.as_deref() != Some(want.as_str()) {
                return (StatusCode::UNAUTHORIZED, "credentials required").into_response();
            }
        }
        if content_type.as_deref() != Some("application/json") {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type").into_response();
        }
        if let Some(to) = &inner.redirect_to {
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, HeaderValue::from_str(to).unwrap())],
            )
                .into_response();
        }
        if inner.unavailable {
            return (StatusCode::SERVICE_UNAVAILABLE, "No leader elected").into_response();
        }
        let call: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if call["type"] != "SUBSCRIBE" {
            return (StatusCode::BAD_REQUEST, "SUBSCRIBE only").into_response();
        }
        if inner.subscribed.is_none() {
            inner.subscribed = Some(subscribed_record(&inner.state, inner.heartbeat));
        }
        (
            inner.subscribed.clone().unwrap(),
            inner.heartbeat,
            inner.chunk,
        )
    };
    shared.open.fetch_add(1, Ordering::SeqCst);
    shared.subscribed.fetch_add(1, Ordering::SeqCst);
    let guard = OpenGuard(shared.clone());
    let mut events = shared.events.subscribe();
    let mut cut = shared.cut.subscribe();
    let first = vec![subscribed, frame(br#"{"type":"HEARTBEAT"}"#)];
    let stream = async_stream(move |tx| async move {
        let _guard = guard;
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move {
                match chunk {
                    None => tx.send(Ok(b)).await.is_ok(),
                    Some(n) => {
                        for i in (0..b.len()).step_by(n) {
                            if tx.send(Ok(b.slice(i..(i + n).min(b.len())))).await.is_err() {
                                return false;
                            }
                        }
                        true
                    }
                }
            }
        };
        for b in first {
            if !send(b).await {
                return;
            }
        }
        let mut tick = tokio::time::interval(heartbeat);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cut.changed() => return,
                _ = tick.tick() => {
                    if shared.inner.lock().unwrap().silent { continue; }
                    if !send(frame(br#"{"type":"HEARTBEAT"}"#)).await { return; }
                }
                e = events.recv() => match e {
                    Ok(b) => {
                        if shared.inner.lock().unwrap().silent { continue; }
                        if !send(b).await { return; }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// The framed `SUBSCRIBED` record carrying `state`.
fn subscribed_record(state: &Value, heartbeat: Duration) -> Bytes {
    let subscribed = json!({"type": "SUBSCRIBED", "subscribed": {
        "get_state": state, "heartbeat_interval_seconds": heartbeat.as_secs_f64()}});
    frame(subscribed.to_string().as_bytes())
}

/// A body stream fed by a task.
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream_from(rx)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

// === Wire shapes, as recorded (FACTS §3–§5) ===

pub fn framework(id: &str, name: &str) -> Value {
    json!({"framework_info": {"id": {"value": id}, "name": name, "user": "root"},
           "active": true, "connected": true, "recovered": false})
}

pub fn agent(id: &str, hostname: &str) -> Value {
    json!({"agent_info": {"id": {"value": id}, "hostname": hostname, "port": 5051},
           "active": true, "version": "1.9.0"})
}

/// A `GetState` with these tasks, frameworks and agents, and `recovered` agents (bare AgentInfo).
pub fn get_state(
    tasks: &[Value],
    frameworks: &[Value],
    agents: &[Value],
    recovered: &[Value],
) -> Value {
    let mut agents_obj = json!({});
    if !agents.is_empty() {
        agents_obj["agents"] = json!(agents);
    }
    if !recovered.is_empty() {
        agents_obj["recovered_agents"] = json!(recovered);
    }
    let tasks_obj = if tasks.is_empty() {
        json!({})
    } else {
        json!({"tasks": tasks})
    };
    json!({"get_tasks": tasks_obj, "get_executors": {},
           "get_frameworks": {"frameworks": frameworks}, "get_agents": agents_obj})
}

/// A task with one tcp discovery port `number` in host scope (agent address + number), whose
/// port label is `VIP_0 = vip`.
pub fn host_task(fw: &str, id: &str, agent: &str, state: &str, number: u16, vip: &str) -> Value {
    json!({
        "name": id, "task_id": {"value": id}, "framework_id": {"value": fw},
        "agent_id": {"value": agent}, "state": state,
        "statuses": [{"task_id": {"value": id}, "state": state, "timestamp": 1.0,
                      "agent_id": {"value": agent}, "source": "SOURCE_EXECUTOR"}],
        "status_update_state": state,
        "resources": [{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": number, "end": number}]}}],
        "discovery": {"visibility": "FRAMEWORK", "name": id, "ports": {"ports": [
            {"number": number, "name": "p", "protocol": "tcp", "labels": {"labels": [
                {"key": "VIP_0", "value": vip}, {"key": "network-scope", "value": "host"}]}}]}}
    })
}

pub fn task_added(task: &Value) -> Value {
    json!({"type": "TASK_ADDED", "task_added": {"task": task}})
}

/// `TASK_UPDATED` with the agent's `state` and an acknowledged status (optionally `healthy`).
pub fn task_updated(fw: &str, id: &str, state: &str, ts: f64, healthy: Option<bool>) -> Value {
    let mut status = json!({"task_id": {"value": id}, "state": state, "timestamp": ts,
                            "source": "SOURCE_EXECUTOR"});
    if let Some(h) = healthy {
        status["healthy"] = json!(h);
    }
    json!({"type": "TASK_UPDATED", "task_updated": {
        "framework_id": {"value": fw}, "status": status, "state": state}})
}
