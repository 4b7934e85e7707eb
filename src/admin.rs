//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`, `/v1/vips`, `/v1/config`.
//!
//! Owns: serving operators on `--admin-listen` (a localhost address by default) from **its own OS
//! thread with its own current-thread runtime**, so a saturated data plane cannot starve it; the
//! readiness rule; the `/v1/vips` view (the published table in `vipd table`'s shape plus each
//! backend's runtime state and the generation); the effective configuration with secrets redacted.
//!
//! Must not: change anything (every endpoint is read-only), or print a credential: flag values
//! whose name says password/token/secret are replaced, and URLs lose their userinfo.

use crate::balance::{BackendKey, BackendRegistry};
use crate::dataplane::{FrontendRegistry, ListenerState, ListenerStatusHandle};
use crate::metrics::Metrics;
use crate::published::TableReader;
use crate::table::Warning;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

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
#[derive(Clone)]
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
}

/// A running admin server.
pub struct AdminServer {
    pub local_addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl AdminServer {
    /// Binds now (so a bad address fails at start) and serves from a dedicated thread.
    pub fn start(listen: SocketAddr, state: AdminState) -> Result<AdminServer, AdminError> {
        let bind_err = |source| AdminError::Bind {
            addr: listen,
            source,
        };
        let listener = std::net::TcpListener::bind(listen).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
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
                    let app = router(state);
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await
                    {
                        tracing::error!(error = %e, "admin server stopped");
                    }
                });
            })
            .map_err(AdminError::Thread)?;
        tracing::info!(local = %local_addr, "admin server listening");
        Ok(AdminServer {
            local_addr,
            thread: Some(thread),
            shutdown,
        })
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

pub fn router(state: AdminState) -> Router {
    Router::new()
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

/// Ready once the first table is published and every one of its listeners has been attempted
/// (bound, or failed and retrying: one bad port must not keep the whole agent unready).
pub fn is_ready(tables: &TableReader, listeners: &ListenerStatusHandle) -> (bool, &'static str) {
    let published = tables.load_full();
    if published.generation == 0 {
        return (false, "no table published yet");
    }
    let attempted = published.table.frontends.iter().all(|f| {
        !matches!(
            listeners.state(&f.key()),
            None | Some(ListenerState::Pending)
        )
    });
    if !attempted {
        return (false, "listeners not attempted yet");
    }
    (true, "ready")
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let (ready, why) = is_ready(&state.tables, &state.listeners);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{why}\n")).into_response()
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
    json!({
        "generation": published.generation,
        "frontends": frontends,
        "warnings": warnings,
    })
}

async fn vips(State(state): State<AdminState>) -> Json<Value> {
    Json(vips_json(&state))
}

async fn config(State(state): State<AdminState>) -> Json<Value> {
    Json((*state.config).clone())
}
