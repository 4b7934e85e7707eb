//! The admin HTTP server: `/` (the status page), `/metrics`, `/healthz`, `/readyz`, `/v1/vips`,
//! `/v1/config`.
//!
//! Owns: serving operators on `--admin-listen` (a localhost address by default) from **its own OS
//! thread with its own current-thread runtime**, so a saturated data plane cannot starve it; the
//! bounds of that server ([`AdminLimits`]: a connection cap that evicts the oldest idle connection
//! so half-sent requests cannot starve `/metrics`, header-read and idle timeouts, head and body
//! size caps; accepts back off on descriptor exhaustion and log once per change of state); the
//! readiness rule; the `/v1/vips` view (the published table in `vipd table`'s shape plus each
//! backend's runtime state and the generation); the status page's view ([`status_view`], rendered
//! by `status_page`); the effective configuration with secrets redacted.
//!
//! Must not: change anything (every endpoint is read-only), or print a credential: flag values
//! whose name says password/token/secret are replaced, and URLs lose their userinfo.

use crate::balance::{BackendKey, BackendRegistry};
use crate::conn_slots::{Admission, ConnSlots, Slot};
use crate::control::history::ChangeLog;
use crate::dataplane::listener::{AcceptBackoff, AcceptErrorCounts, AcceptLog};
use crate::dataplane::{FrontendRegistry, ListenerState, ListenerStatusHandle};
use crate::metrics::{Family, Metrics, ScrapeFamilies, Scraped};
use crate::published::TableReader;
use crate::table::Warning;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} for the admin server: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the admin thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What the admin server reads. Everything is shared, read-only from here.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub tables: TableReader,
    pub listeners: ListenerStatusHandle,
    pub backends: Arc<BackendRegistry>,
    pub frontends: Arc<FrontendRegistry>,
    /// The last build's warnings (kept by the control loop).
    pub warnings: Arc<Mutex<Vec<Warning>>>,
    /// The effective configuration, already redacted.
    pub config: Arc<Value>,
    /// The last publishes (kept by the control loop).
    pub changes: ChangeLog,
    /// The source's status for the status page, as label/value rows, read at request time.
    pub source_status: SourceStatus,
}

/// Reads the source's status as label/value rows (`connected`, `last sync`, …). Already
/// redacted: a source never puts a credential in its status.
#[derive(Clone)]
pub struct SourceStatus(Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>);

impl SourceStatus {
    pub fn new(rows: impl Fn() -> Vec<(String, String)> + Send + Sync + 'static) -> Self {
        SourceStatus(Arc::new(rows))
    }

    pub fn rows(&self) -> Vec<(String, String)> {
        (self.0)()
    }
}

impl std::fmt::Debug for SourceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceStatus(..)")
    }
}

/// Bounds of the admin server. Defaults suit an operator's curl and a Prometheus scraper.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    /// Connections open at once. At the cap the oldest idle connection (one with no request in
    /// progress, a half-sent request included) is closed to make room; only when every one is
    /// busy is the new connection refused.
    pub max_connections: usize,
    /// A request head not complete this long after the connection became ready for it is closed.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request head (hyper's read buffer; at least 8 KiB).
    pub max_header_bytes: usize,
    /// Largest request body announced (every endpoint is a GET: bodies are refused with 413).
    pub max_body_bytes: u64,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 4096,
        }
    }
}

/// Counters of the admin server, exported as `vipd_admin_*`.
#[derive(Debug)]
pub struct AdminStats {
    pub slots: Arc<ConnSlots>,
    pub accept_errors: AcceptErrorCounts,
    /// Connections closed by the idle timeout.
    pub idle_closed: AtomicU64,
}

impl AdminStats {
    fn new(limits: &AdminLimits) -> Self {
        AdminStats {
            slots: ConnSlots::new(limits.max_connections),
            accept_errors: AcceptErrorCounts::default(),
            idle_closed: AtomicU64::new(0),
        }
    }
}

impl ScrapeFamilies for Arc<AdminStats> {
    fn families(&self) -> Vec<Family> {
        let mut open = Family::gauge("vipd_admin_connections_open", "Admin connections open now.");
        open.add(&[], self.slots.open() as f64);
        let mut closed = Family::counter(
            "vipd_admin_connections_dropped_total",
            "Admin connections closed by vipd, by reason (evicted: oldest idle one at the cap; refused: cap reached with every one busy; idle: idle or header timeout).",
        );
        closed.add(&[("reason", "evicted")], self.slots.evicted() as f64);
        closed.add(&[("reason", "refused")], self.slots.refused() as f64);
        closed.add(&[("reason", "idle")], self.idle_closed.load(Relaxed) as f64);
        let errors = crate::metrics::accept_errors_family(
            "vipd_admin_accept_errors_total",
            "accept(2) errors of the admin server, by kind (resource: EMFILE/ENFILE/ENOBUFS/ENOMEM).",
            &self.accept_errors,
        );
        vec![open, closed, errors]
    }
}

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    pub local_addr: SocketAddr,
    pub stats: Arc<AdminStats>,
    thread: Option<std::thread::JoinHandle<()>>,
    shutdown: CancellationToken,
    /// The listener's socket (kept for [`AdminServer::handover_socket`]).
    handover: std::os::fd::OwnedFd,
}

impl AdminServer {
    /// Binds now (so a bad address fails at start) and serves from a dedicated thread, with the
    /// default [`AdminLimits`].
    pub fn start(listen: SocketAddr, state: AdminState) -> Result<AdminServer, AdminError> {
        Self::start_with(listen, state, AdminLimits::default())
    }

    pub fn start_with(
        listen: SocketAddr,
        state: AdminState,
        limits: AdminLimits,
    ) -> Result<AdminServer, AdminError> {
        let listener = std::net::TcpListener::bind(listen).map_err(|source| AdminError::Bind {
            addr: listen,
            source,
        })?;
        Self::start_on(listener, state, limits)
    }

    /// Serves on a listener already bound (one handed over by a predecessor vipd).
    pub fn start_on(
        listener: std::net::TcpListener,
        state: AdminState,
        limits: AdminLimits,
    ) -> Result<AdminServer, AdminError> {
        let listen = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let bind_err = |source| AdminError::Bind {
            addr: listen,
            source,
        };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let handover = std::os::fd::AsFd::as_fd(&listener)
            .try_clone_to_owned()
            .map_err(bind_err)?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let stats = Arc::new(AdminStats::new(&limits));
        state
            .metrics
            .register(Box::new(Scraped::new(stats.clone())));
        let server_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("vipd-admin".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "admin runtime failed to start");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "admin listener failed");
                            return;
                        }
                    };
                    serve(listener, router(state), limits, server_stats, stop).await;
                });
            })
            .map_err(AdminError::Thread)?;
        tracing::info!(local = %local_addr, max_connections = limits.max_connections, "admin server listening");
        Ok(AdminServer {
            local_addr,
            stats,
            thread: Some(thread),
            shutdown,
            handover,
        })
    }

    /// A duplicate of the listening socket, for a successor vipd.
    pub fn handover_socket(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.handover.try_clone()
    }

    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The accept loop: backs off on descriptor exhaustion like the data plane's (one log line per
/// change of state, errors counted), admits through [`ConnSlots`], one task per connection.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: AdminLimits,
    stats: Arc<AdminStats>,
    stop: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let mut backoff = AcceptBackoff::default();
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                if let AcceptLog::Recovered { errors } = backoff.on_accept() {
                    tracing::info!(local = ?local, failed_accepts = errors, "admin server accepting again");
                }
                stream
            }
            Err(error) => {
                let (class, log) = backoff.on_error(&error);
                stats.accept_errors.count(class);
                if log == AcceptLog::Exhausted {
                    tracing::warn!(local = ?local, %error, "admin server out of descriptors; accepts paused and retried");
                } else {
                    tracing::debug!(local = ?local, %error, "admin accept error");
                }
                if let Some(pause) = class.pause() {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                continue;
            }
        };
        let slot = match stats.slots.admit() {
            Admission::Admitted { slot, evicted } => {
                if evicted {
                    tracing::debug!("admin connection cap reached; closed the oldest idle one");
                }
                slot
            }
            Admission::Refused => {
                tracing::debug!("admin connection cap reached with every connection busy; refused");
                continue;
            }
        };
        tracker.spawn(connection(
            stream,
            app.clone(),
            slot,
            limits,
            stats.clone(),
            stop.clone(),
        ));
    }
    tracker.close();
    tracker.wait().await;
}

/// Serves one connection until it closes, is evicted, idles out, or the server stops.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    slot: Slot,
    limits: AdminLimits,
    stats: Arc<AdminStats>,
    stop: CancellationToken,
) {
    let slot = Arc::new(slot);
    let born = std::time::Instant::now();
    // Milliseconds since `born` at which the connection last became idle.
    let idle_since = Arc::new(AtomicU64::new(0));
    let inner = TowerToHyperService::new(app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            refuse_bodies(req, next, limits.max_body_bytes)
        },
    )));
    let (svc_slot, svc_idle) = (slot.clone(), idle_since.clone());
    let service = hyper::service::service_fn(move |req| {
        let slot = svc_slot.clone();
        let idle = svc_idle.clone();
        slot.set_idle(false);
        let call = hyper::service::Service::call(&inner, req);
        async move {
            let response = call.await;
            idle.store(born.elapsed().as_millis() as u64, Relaxed);
            slot.set_idle(true);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let idle_out = async {
        let tick = (limits.idle_timeout / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            let since = Duration::from_millis(idle_since.load(Relaxed));
            if slot.is_idle() && born.elapsed().saturating_sub(since) >= limits.idle_timeout {
                return;
            }
        }
    };
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                if e.is_timeout() {
                    stats.idle_closed.fetch_add(1, Relaxed);
                }
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        }
        _ = idle_out => {
            stats.idle_closed.fetch_add(1, Relaxed);
        }
        _ = slot.evicted().cancelled() => {}
        _ = stop.cancelled() => {}
    }
}

/// 413 for a request that announces (or streams) a body larger than `max` bytes; the handlers
/// never read bodies.
async fn refuse_bodies(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    max: u64,
) -> Response {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if chunked || len.is_some_and(|l| l > max) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            "request body too large\n",
        )
            .into_response();
    }
    next.run(req).await
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/vips", get(vips))
        .route("/v1/config", get(config))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Whether the daemon serves every frontend it should, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NoTable,
    /// Some listeners have not had their first bind attempt yet.
    Pending,
    /// These frontends failed to bind (retrying), with the error.
    BindFailed(Vec<(crate::table::FrontendKey, String)>),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        *self == Readiness::Ready
    }

    /// The `/readyz` body: one line, then one line per failed frontend.
    pub fn body(&self) -> String {
        match self {
            Readiness::Ready => "ready\n".into(),
            Readiness::NoTable => "no table published yet\n".into(),
            Readiness::Pending => "listeners not attempted yet\n".into(),
            Readiness::BindFailed(failed) => {
                let mut out = format!("{} frontend(s) failed to bind\n", failed.len());
                for (key, error) in failed {
                    out.push_str(&format!("{key}: {error}\n"));
                }
                out
            }
        }
    }
}

/// Ready once the first table is published and every one of its frontends is bound (a frontend
/// whose protocol is not served counts as attempted). A bind failure makes the agent unready
/// until it is fixed: readiness means serving every frontend it should.
pub fn readiness(tables: &TableReader, listeners: &ListenerStatusHandle) -> Readiness {
    let published = tables.load_full();
    if published.generation == 0 {
        return Readiness::NoTable;
    }
    let mut failed = Vec::new();
    let mut pending = false;
    for f in &published.table.frontends {
        let key = f.key();
        match listeners.state(&key) {
            None | Some(ListenerState::Pending) => pending = true,
            Some(ListenerState::Failed { error, .. }) => failed.push((key, error)),
            Some(ListenerState::Bound { .. } | ListenerState::Unsupported { .. }) => {}
        }
    }
    if !failed.is_empty() {
        Readiness::BindFailed(failed)
    } else if pending {
        Readiness::Pending
    } else {
        Readiness::Ready
    }
}

/// [`readiness`] as `(ready, reason)`.
pub fn is_ready(tables: &TableReader, listeners: &ListenerStatusHandle) -> (bool, String) {
    let r = readiness(tables, listeners);
    (r.is_ready(), r.body().trim_end().to_string())
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let r = readiness(&state.tables, &state.listeners);
    let code = if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, r.body()).into_response()
}

fn listener_json(state: Option<ListenerState>) -> Value {
    match state {
        None => json!({"state": "unknown"}),
        Some(ListenerState::Pending) => json!({"state": "pending"}),
        Some(ListenerState::Bound { local }) => json!({"state": "bound", "local": local}),
        Some(ListenerState::Failed { error, attempts }) => {
            json!({"state": "failed", "error": error, "attempts": attempts})
        }
        Some(ListenerState::Unsupported { reason }) => {
            json!({"state": "unsupported", "reason": reason})
        }
    }
}

/// The published table in `vipd table`'s shape, plus runtime state and the generation.
pub fn vips_json(state: &AdminState) -> Value {
    let published = state.tables.load_full();
    let frontends: Vec<Value> = published
        .table
        .frontends
        .iter()
        .map(|f| {
            let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
            let key = f.key();
            if let Some(obj) = v.as_object_mut() {
                obj.insert(
                    "listener".into(),
                    listener_json(state.listeners.state(&key)),
                );
                if let Some(s) = state.frontends.get(&key) {
                    let s = s.snapshot();
                    obj.insert(
                        "stats".into(),
                        json!({
                            "accepted": s.accepted, "active": s.active, "no_backend": s.no_backend,
                            "cut": s.cut, "accept_errors_resource": s.accept_errors_resource,
                            "accept_errors_other": s.accept_errors_other,
                        }),
                    );
                }
                if let Some(Value::Array(backends)) = obj.get_mut("backends") {
                    for (b, bv) in f.backends.iter().zip(backends.iter_mut()) {
                        if let (Some(stats), Some(bobj)) = (
                            state.backends.get(&BackendKey::new(f.protocol, b.address)),
                            bv.as_object_mut(),
                        ) {
                            let s = stats.snapshot();
                            bobj.insert(
                                "runtime".into(),
                                json!({
                                    "active": s.active, "total": s.total,
                                    "failures_refused": s.failures_refused,
                                    "failures_timeout": s.failures_timeout,
                                    "failures_other": s.failures_other,
                                    "consecutive_failures": s.consecutive_failures,
                                    "last_failure": s.last_failure.map(|r| r.as_str()),
                                    "bytes_to_backend": s.bytes_to_backend,
                                    "bytes_from_backend": s.bytes_from_backend,
                                    "health": s.health_state(),
                                    "health_reason": s.health_reason.map(|r| r.as_str()),
                                    "ejected": s.ejected,
                                    "ejections": s.ejections,
                                }),
                            );
                        }
                    }
                }
            }
            v
        })
        .collect();
    let warnings = state.warnings.lock().map(|w| w.clone()).unwrap_or_default();
    let failed = match readiness(&state.tables, &state.listeners) {
        Readiness::BindFailed(failed) => failed.iter().map(|(k, _)| k.to_string()).collect(),
        _ => Vec::new(),
    };
    json!({
        "generation": published.generation,
        "listeners_failed": failed,
        "frontends": frontends,
        "warnings": warnings,
    })
}

/// The status page's view: the frontends matching `query` (one page of them) with their
/// backends' table state and runtime counters, the source's rows, the last changes.
pub fn status_view(
    state: &AdminState,
    query: crate::status_page::PageQuery,
    now: std::time::SystemTime,
) -> crate::status_page::StatusView {
    use crate::status_page::{paginate, BackendRow, ChangeRow, FrontendRow, StatusView};
    let published = state.tables.load_full();
    let (ready, readiness) = is_ready(&state.tables, &state.listeners);
    // Filter and page on the table itself; rows (with a registry lookup per backend) are built
    // for the page's frontends only.
    let (matched, page, pages, shown) = paginate(published.table.frontends.iter(), &query);
    let frontends = shown.into_iter().map(|f| {
        let key = f.key();
        let stats = state.frontends.get(&key).map(|s| s.snapshot());
        let listener = match state.listeners.state(&key) {
            None => "unknown".into(),
            Some(ListenerState::Pending) => "pending".into(),
            Some(ListenerState::Bound { .. }) => "bound".into(),
            Some(ListenerState::Failed { error, .. }) => format!("failed: {error}"),
            Some(ListenerState::Unsupported { reason }) => format!("unsupported: {reason}"),
        };
        FrontendRow {
            key: key.to_string(),
            kind: match f.kind {
                crate::table::FrontendKind::ServicePort => "service_port",
                crate::table::FrontendKind::Vip => "vip",
            },
            vip_name: f.vip_name.clone(),
            owner_kind: f.owner_kind.as_str(),
            owners: f.apps.clone(),
            port_name: f.port_name.clone(),
            listener,
            accepted: stats.as_ref().map_or(0, |s| s.accepted),
            active: stats.as_ref().map_or(0, |s| s.active),
            no_backend: stats.as_ref().map_or(0, |s| s.no_backend),
            backends: f
                .backends
                .iter()
                .map(|b| {
                    let s = state
                        .backends
                        .get(&BackendKey::new(f.protocol, b.address))
                        .map(|s| s.snapshot())
                        .unwrap_or_default();
                    BackendRow {
                        address: b.address.to_string(),
                        task: b.task.to_string(),
                        table_state: b.state.as_str(),
                        health: s.health_state(),
                        health_reason: s.health_reason.map(|r| r.as_str()),
                        active: s.active,
                        total: s.total,
                        bytes_to_backend: s.bytes_to_backend,
                        bytes_from_backend: s.bytes_from_backend,
                        ejections: s.ejections,
                    }
                })
                .collect(),
        }
    });
    let frontends: Vec<FrontendRow> = frontends.collect();
    let changes = state
        .changes
        .recent()
        .into_iter()
        .map(|c| ChangeRow {
            generation: c.generation,
            age_secs: now.duration_since(c.at).map_or(0, |d| d.as_secs()),
            origin: c.origin,
            summary: c.summary,
            frontends: c.frontends,
        })
        .collect();
    StatusView {
        version: crate::metrics::BUILD_VERSION.into(),
        generation: published.generation,
        ready,
        readiness,
        source: state.source_status.rows(),
        changes,
        total_frontends: published.table.frontends.len(),
        matched,
        page,
        pages,
        query,
        frontends,
        warnings: state.warnings.lock().map_or(0, |w| w.len()),
    }
}

async fn status_page(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let query = crate::status_page::PageQuery {
        filter: params.get("q").cloned().unwrap_or_default(),
        page: params
            .get("page")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(1),
    };
    let view = status_view(&state, query, std::time::SystemTime::now());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        crate::status_page::render(&view),
    )
        .into_response()
}

async fn vips(State(state): State<AdminState>) -> Json<Value> {
    Json(vips_json(&state))
}

async fn config(State(state): State<AdminState>) -> Json<Value> {
    Json((*state.config).clone())
}

#[cfg(test)]
mod tests {
    use super::AdminLimits;

    #[test]
    fn the_admin_and_dns_caps_fit_in_the_fixed_descriptor_reserve() {
        let admin = AdminLimits::default().max_connections as u64;
        let dns = crate::dns::ServerLimits::default().max_tcp_connections as u64;
        // At least half the reserve stays for files, epoll, eventfds, sources and probes.
        assert!(
            admin + dns <= crate::fd_budget::FIXED_RESERVE / 2,
            "admin {admin} + DNS {dns} > half of {}",
            crate::fd_budget::FIXED_RESERVE
        );
    }
}
