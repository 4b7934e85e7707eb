//! TCP forwarding: the listener task, the accept loop and the per-connection task.
//!
//! Owns: [`run_tcp_listener`] (bind with retry through [`ListenerTask`], then accept),
//! [`accept_loop`] (never exits on an accept error) and the connection flow: take ONE snapshot
//! (`load_full`), find the frontend and its route, pick a backend through the route (no lookup,
//! no lock: the route holds the backends' runtime entries), connect with a timeout, retry on
//! the next backend up to `connect_tries` attempts in total, then relay until close. A connect
//! that fails for vipd's own reasons (`health::fault`: EMFILE, ENFILE, ENOBUFS, ENOMEM,
//! EADDRNOTAVAIL) is a try like any other but is counted on the frontend (`local_failures`),
//! never against the backend. The snapshot
//! is used for the whole connection, so selection and retries never mix two tables, and an
//! established connection keeps its backend whatever later tables say.
//!
//! Must not: set socket options of listening sockets (listener.rs), change the table, or log per
//! connection above `debug`.

use super::frontends::{ActiveFrontend, FrontendStats};
use super::listener::{bind_tcp, AcceptErrorClass, ListenerSocket, ListenerTask, LogLimiter};
use super::relay::{self, ByteCounters, CloseReason, RelayConfig};
use crate::balance::{Candidates, ConnectFailure, Select};
use crate::health::LocalFault;
use crate::published::TableReader;
use crate::table::FrontendKey;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Everything a connection of one frontend needs. One per listener; it outlives table swaps.
pub(crate) struct ConnectionContext {
    pub key: FrontendKey,
    pub tables: TableReader,
    pub stats: Arc<FrontendStats>,
    pub connect_timeout: Duration,
    pub connect_tries: u32,
    pub relay: RelayConfig,
    /// Every connection task of the data plane (shutdown waits on it).
    pub connections: TaskTracker,
    /// This frontend's connections (a removed frontend's drain waits on it).
    pub frontend_connections: TaskTracker,
    /// Cuts this frontend's connections (drain timeout; a child of the shutdown cut).
    pub cut: CancellationToken,
}

/// Binds with retry, then runs the accept loop until `stop`. Never returns early on errors.
pub(crate) async fn run_tcp_listener(mut task: ListenerTask, ctx: Arc<ConnectionContext>) {
    let _closed = task.socket_closed.clone().drop_guard();
    let key = task.key;
    let backlog = task.backlog;
    let from_std = |l: std::net::TcpListener| {
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        l.local_addr().map(|a| (l, a))
    };
    let bound = task
        .bind_with_retry(
            |fd| from_std(std::net::TcpListener::from(fd)),
            |addr| bind_tcp(addr, backlog).and_then(from_std),
        )
        .await;
    let Some(listener) = bound else {
        return;
    };
    let listener = Arc::new(listener);
    task.status.set_socket(
        &key,
        task.owner,
        ListenerSocket::Tcp(Arc::downgrade(&listener)),
    );
    accept_loop(listener, ctx, task.stop).await;
    tracing::info!(frontend = %key, "stopped accepting");
}

/// Accepts until `stop`, spawning one task per connection. Accept errors never end the loop.
pub(crate) async fn accept_loop(
    listener: Arc<TcpListener>,
    ctx: Arc<ConnectionContext>,
    stop: CancellationToken,
) {
    let mut limiter = LogLimiter::new(Duration::from_secs(5));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, client)) => {
                let active = ctx.stats.accepted();
                let token = ctx.frontend_connections.token();
                let conn_ctx = ctx.clone();
                ctx.connections.spawn(async move {
                    let _frontend_token = token;
                    handle(stream, client, conn_ctx, active).await;
                });
            }
            Err(error) => {
                let class = AcceptErrorClass::of(&error);
                let exhausted = class == AcceptErrorClass::ResourceExhausted;
                ctx.stats.record_accept_error(exhausted);
                if exhausted {
                    // Give this thread's idle splice pipes' descriptors back for accepts.
                    relay::trim_pipe_pool();
                }
                match class {
                    AcceptErrorClass::Connection => {
                        tracing::debug!(frontend = %ctx.key, %error, "accept: connection error");
                    }
                    _ => {
                        if let Some(suppressed) = limiter.allow(tokio::time::Instant::now()) {
                            tracing::warn!(frontend = %ctx.key, %error, suppressed, class = ?class, "accept failed; pausing");
                        }
                    }
                }
                if let Some(pause) = class.pause() {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

async fn handle(
    client: TcpStream,
    client_addr: SocketAddr,
    ctx: Arc<ConnectionContext>,
    active: ActiveFrontend,
) {
    let span = tracing::debug_span!(
        "conn",
        frontend = %ctx.key,
        client = %client_addr,
        backend = tracing::field::Empty
    );
    forward(client, client_addr, ctx, active)
        .instrument(span)
        .await
}

async fn forward(
    mut client: TcpStream,
    client_addr: SocketAddr,
    ctx: Arc<ConnectionContext>,
    active: ActiveFrontend,
) {
    // One snapshot for the whole connection.
    let snapshot = ctx.tables.load_full();
    let Some((frontend, route)) = snapshot.frontend(&ctx.key) else {
        tracing::debug!("frontend is not in the current table; closing");
        active.stats().record_no_backend();
        return;
    };
    if let Err(error) = client.set_nodelay(true) {
        tracing::debug!(%error, "set_nodelay on client failed");
    }

    let mut tried: Vec<usize> = Vec::with_capacity(ctx.connect_tries as usize);
    let (mut upstream, backend_addr, backend) = loop {
        if tried.len() >= ctx.connect_tries as usize {
            tracing::debug!(
                tries = tried.len(),
                "every connect try failed; closing client"
            );
            active.stats().record_no_backend();
            return;
        }
        let Some(i) = route.select(&Candidates::with_client(
            &frontend.backends,
            &tried,
            client_addr.ip(),
        )) else {
            tracing::debug!(tries = tried.len(), "no eligible backend; closing client");
            active.stats().record_no_backend();
            return;
        };
        tried.push(i);
        let addr = frontend.backends[i].address;
        let backend = route.begin_connect(i);
        let attempt = tokio::select! {
            biased;
            _ = ctx.cut.cancelled() => {
                active.stats().record_cut();
                return;
            }
            r = tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(addr)) => r,
        };
        let (reason, error) = match attempt {
            Ok(Ok(stream)) => {
                backend.stats().record_connected();
                break (stream, addr, backend);
            }
            Ok(Err(e)) => match LocalFault::of(&e) {
                // vipd's own fault (out of descriptors, ports, memory): not the backend's. The
                // attempt counts as a try; the next one goes on as after any failure.
                Some(fault) => {
                    active.stats().record_local_failure(fault);
                    if matches!(fault, LocalFault::Emfile | LocalFault::Enfile) {
                        // Give this thread's idle splice pipes' descriptors back.
                        relay::trim_pipe_pool();
                    }
                    tracing::debug!(backend = %addr, fault = fault.as_str(), error = %e, "connect failed locally; not counted against the backend");
                    continue;
                }
                None => (ConnectFailure::from_io(&e), e.to_string()),
            },
            Err(_) => (ConnectFailure::Timeout, "connect timed out".to_string()),
        };
        backend.stats().record_failure(reason);
        tracing::debug!(backend = %addr, reason = reason.as_str(), %error, "connect failed");
    };
    tracing::Span::current().record("backend", tracing::field::display(backend_addr));
    if let Err(error) = upstream.set_nodelay(true) {
        tracing::debug!(%error, "set_nodelay on backend failed");
    }
    tracing::debug!("connected");

    // Release the table before the (possibly hour-long) relay: the connection keeps only what it
    // needs, so old tables are freed promptly.
    drop(snapshot);
    let (to_backend, from_backend) = backend.stats().byte_counters();
    let outcome = relay::relay(
        &mut client,
        &mut upstream,
        &ctx.relay,
        ByteCounters {
            to_backend,
            from_backend,
        },
        &ctx.cut,
    )
    .await;
    if outcome.reason == CloseReason::Cut {
        active.stats().record_cut();
    }
    match &outcome.error {
        Some(error) => tracing::debug!(
            reason = outcome.reason.as_str(),
            %error,
            bytes_to_backend = outcome.bytes_to_backend,
            bytes_from_backend = outcome.bytes_from_backend,
            bytes_spliced = outcome.bytes_spliced,
            "closed"
        ),
        None => tracing::debug!(
            reason = outcome.reason.as_str(),
            bytes_to_backend = outcome.bytes_to_backend,
            bytes_from_backend = outcome.bytes_from_backend,
            bytes_spliced = outcome.bytes_spliced,
            "closed"
        ),
    }
}
