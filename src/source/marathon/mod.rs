//! The Marathon source: watches a real Marathon cluster through full snapshots plus the event
//! stream applied incrementally, and publishes full [`SourceSnapshot`]s.
//!
//! Owns: the source's tasks, as a thin async shell around the sans-io [`driver::Driver`], which
//! decides everything (what to fetch and when, what to publish, when to reconnect). The shell
//! runs the driver's actions: fetch tasks (`client.rs`), the *stream reader* holding
//! `GET /v2/events` (SSE in `sse.rs`, payloads in `events.rs`, the liveness timeout), the
//! `watch` channel snapshots are published into, and the *state writer* that persists the last
//! good full body. Events reach the driver through a channel bounded in bytes: a reader that
//! runs ahead waits (backpressure on the stream) instead of buffering.
//!
//! Must not: decide anything itself (the driver does), build tables, publish an empty or partial
//! snapshot because of an error, or log a credential.
//!
//! Rules, in the order things happen (the driver implements them):
//! - Start: a full fetch runs at once. If `--state-dir` holds a snapshot and the first fetch
//!   fails, or has not succeeded within the connect timeout, the saved snapshot is published
//!   (origin `StateDir`, logged as stale); Marathon's first good answer replaces it.
//! - Every (re)connect of the event stream triggers a full fetch: events missed while
//!   disconnected are never replayed by Marathon (../shared/reference/marathon/FACTS.md §5.1).
//! - Task events (`status_update_event`, `instance_*`, `health_status_changed_event`,
//!   `app_terminated_event`) are applied to the current snapshot at once and a new snapshot is
//!   emitted (origin `MarathonEvent`, `observed_at` = when the event's bytes arrived). Events
//!   that arrive while a fetch is in flight are applied again on top of its result, so a fetch
//!   served before an event cannot undo it; past `max_replay_bytes` they are dropped and a full
//!   fetch follows.
//! - Definition events (`api_post_event`, `deployment_*`, `group_change_success`) and task
//!   events about apps vipd does not know schedule a debounced fetch of the named apps, or a
//!   full fetch.
//! - A periodic full fetch runs every `--marathon-resync-interval` ±15 %.
//! - Pods: every full fetch also reads `GET /v2/pods/::status` (after a `HEAD /v2/pods` probe
//!   while pods support is not known; a 404 means no pods, logged once). Pod container events are
//!   applied at once (`apply/pods.rs`); pod definition events re-fetch that pod
//!   (`GET /v2/pods/{id}::status`) or all pods; no pod id is ever fetched from `/v2/apps`. The
//!   pods body is kept in `--state-dir` beside the apps body.
//! - Leader-failover health rule: see `apply.rs` (results that vanish are carried forward).

pub mod apply;
pub mod client;
pub mod driver;
pub mod events;
pub mod redact;
pub mod sse;
pub mod state_dir;
pub mod status;

pub use client::{ConfigError, FetchError, MarathonEndpoint};
pub use redact::Secret;
pub use status::{MarathonStatus, MarathonStatusHandle, SyncErrorKind};

use crate::model::AppsSnapshot;
use crate::source::{Origin, SourceHandle, SourceSnapshot};
use client::MarathonClient;
use driver::{
    Action, Driver, DriverConfig, FetchJob, FetchOutcome, Input, StateBodies, StreamRecord,
};
use events::parse_event;
use futures::StreamExt;
use rand::SeedableRng;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How to reach Marathon and how the source behaves. Its `Debug` output holds no credential.
#[derive(Debug, Clone)]
pub struct MarathonConfig {
    /// Marathon URLs in preference order (HA); credentials already taken out of them.
    pub endpoints: Vec<MarathonEndpoint>,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub connect_timeout: Duration,
    /// Total time for one API request (headers and body).
    pub request_timeout: Duration,
    /// Reconnect when the event stream is silent this long (Marathon heartbeats every 10 s).
    pub stream_timeout: Duration,
    /// Period of the full resync (jittered ±15 %).
    pub resync_interval: Duration,
    /// Window in which definition events are coalesced into one fetch.
    pub event_debounce: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A stream that lived this long resets the reconnect backoff.
    pub healthy_after: Duration,
    pub state_dir: Option<PathBuf>,
    /// Minimum time between two writes of the state file.
    pub state_write_interval: Duration,
    /// Longest SSE line (one event) accepted before the stream is dropped and resynced.
    pub max_event_bytes: usize,
    /// Bound, in bytes, of the events kept for replay onto the result of an in-flight fetch.
    pub max_replay_bytes: usize,
    /// Bound, in bytes, of the events on their way from the stream reader to the driver.
    pub max_queued_event_bytes: usize,
    pub max_redirects: usize,
    /// Largest response body read (`--max-document-size`).
    pub max_document_size: usize,
    /// Hosts besides those of `endpoints` that redirects may lead to, with the credentials.
    pub trusted_redirect_hosts: Vec<client::RedirectHost>,
}

#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// HTTP basic for every URL that carries no userinfo of its own.
    pub basic: Option<(String, Secret)>,
    /// DC/OS service token file, re-read on every request.
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub insecure: bool,
}

/// `MarathonConfig::new` (every setting at its flag default) is in [`crate::cli::marathon`],
/// where the defaults are written.
impl MarathonConfig {
    /// Checks what can be checked before starting: auth combination, TLS files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let any_basic =
            self.auth.basic.is_some() || self.endpoints.iter().any(|e| e.has_credentials());
        if any_basic && self.auth.token_file.is_some() {
            return Err(ConfigError::ConflictingAuth);
        }
        client::build_http(self).map(|_| ())
    }
}

/// Starts the Marathon source. Tasks stop when `shutdown` is cancelled.
///
/// The configuration should have passed [`MarathonConfig::validate`]; if the HTTP client cannot
/// be built anyway, the error is logged, the state-dir snapshot (if any) is served and the
/// source stays idle.
pub fn spawn(
    config: MarathonConfig,
    shutdown: CancellationToken,
) -> (SourceHandle, MarathonStatusHandle) {
    let (tx, rx) = watch::channel(None);
    let resync = Arc::new(Notify::new());
    let status = MarathonStatusHandle::default();
    let handle = SourceHandle::new(rx, resync.clone());
    let cfg = Arc::new(config);
    if cfg.tls.insecure {
        tracing::warn!("--marathon-insecure: Marathon's TLS certificate will NOT be verified");
    }
    let client = match MarathonClient::new(&cfg) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "Marathon source cannot start");
            if let Some(dir) = &cfg.state_dir {
                if let Ok(Some((snapshot, as_of))) = state_dir::load(dir) {
                    publish_stale(&tx, &status, snapshot, as_of);
                }
            }
            // Keep the sender alive until shutdown so readers see a live, stale source.
            tokio::spawn(async move {
                shutdown.cancelled().await;
                drop(tx);
            });
            return (handle, status);
        }
    };
    status.set_current_url(client.current_url());
    let (write_tx, write_rx) = watch::channel::<Option<StateBodies>>(None);
    if let Some(dir) = cfg.state_dir.clone() {
        tokio::spawn(state_writer(
            dir,
            cfg.state_write_interval,
            write_rx,
            shutdown.clone(),
        ));
    }
    let stale = cfg
        .state_dir
        .as_deref()
        .and_then(|dir| match state_dir::load(dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the saved Marathon state");
                None
            }
        });
    let driver = Driver::new(
        DriverConfig::from(&*cfg),
        status.clone(),
        stale,
        rand::rngs::StdRng::from_os_rng(),
    );
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let shell = Shell {
        budget: Arc::new(Semaphore::new(queued_event_budget(&cfg) as usize)),
        cfg,
        client,
        status: status.clone(),
        tx,
        write_tx,
        events_tx,
        fetch: None,
        stream: None,
    };
    tokio::spawn(shell.run(driver, events_rx, resync, shutdown));
    (handle, status)
}

fn log_stale(apps: usize, as_of: SystemTime) {
    tracing::warn!(
        apps,
        saved_secs_ago = SystemTime::now()
            .duration_since(as_of)
            .unwrap_or_default()
            .as_secs(),
        "Marathon not reachable yet: serving the STALE last-known-good state from --state-dir"
    );
}

fn publish_stale(
    tx: &watch::Sender<Option<SourceSnapshot>>,
    status: &MarathonStatusHandle,
    snapshot: AppsSnapshot,
    as_of: SystemTime,
) {
    log_stale(snapshot.apps.len(), as_of);
    status.emitted(as_of, true);
    tx.send_replace(Some(SourceSnapshot {
        apps: Arc::new(snapshot),
        origin: Origin::StateDir,
        observed_at: Instant::now(),
    }));
}

// === The event stream ===

/// One record on its way from the stream reader to the driver. An event holds its share of the
/// channel's byte budget until the driver has applied it.
struct Queued {
    record: StreamRecord,
    budget: Option<OwnedSemaphorePermit>,
}

/// Reads one connection of the event stream, then reports how it ended.
async fn read_stream(
    cfg: Arc<MarathonConfig>,
    client: Arc<MarathonClient>,
    status: MarathonStatusHandle,
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
) {
    let error = match read_events(&cfg, &client, &status, &tx, &budget).await {
        Ok(()) => return, // the driver is gone
        Err(e) => e,
    };
    let _ = tx.send(Queued {
        record: StreamRecord::Closed { error },
        budget: None,
    });
}

/// Connects and reads until the stream fails. `Ok(())` only when the driver has gone away.
async fn read_events(
    cfg: &MarathonConfig,
    client: &MarathonClient,
    status: &MarathonStatusHandle,
    tx: &mpsc::UnboundedSender<Queued>,
    budget: &Arc<Semaphore>,
) -> Result<(), FetchError> {
    let (resp, url) = client.open_events().await?;
    let url_s = redact::redact_url(&url);
    let connected = Queued {
        record: StreamRecord::Connected { url: url_s.clone() },
        budget: None,
    };
    if tx.send(connected).is_err() {
        return Ok(());
    }
    let max_permits = queued_event_budget(cfg);
    let mut body = resp.bytes_stream();
    let mut parser = sse::SseParser::new(cfg.max_event_bytes);
    let mut out = Vec::new();
    let mut warned_bad_event = false;
    loop {
        let chunk = match tokio::time::timeout(cfg.stream_timeout, body.next()).await {
            Err(_) => {
                return Err(FetchError::Timeout {
                    url: url_s,
                    msg: format!("no byte on the event stream for {:?}", cfg.stream_timeout),
                })
            }
            Ok(None) => {
                return Err(FetchError::Stream {
                    url: url_s,
                    msg: "closed by Marathon".into(),
                })
            }
            Ok(Some(Err(e))) => {
                return Err(FetchError::Stream {
                    url: url_s,
                    msg: client_error_text(e),
                })
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        let received = Instant::now();
        parser
            .feed(&chunk, &mut out)
            .map_err(|e| FetchError::Stream {
                url: url_s.clone(),
                msg: e.to_string(),
            })?;
        for ev in out.drain(..) {
            for line in ev.data.split('\n').filter(|l| !l.trim().is_empty()) {
                match parse_event(ev.event_type.as_deref(), line) {
                    Ok(event) => {
                        let bytes = line.len();
                        // Waits while the driver holds the whole budget: backpressure on the
                        // stream instead of memory.
                        let want = bytes
                            .saturating_add(driver::EVENT_OVERHEAD_BYTES)
                            .min(max_permits as usize) as u32;
                        let Ok(permit) = budget.clone().acquire_many_owned(want).await else {
                            return Ok(());
                        };
                        let q = Queued {
                            record: StreamRecord::Event {
                                event,
                                received,
                                bytes,
                            },
                            budget: Some(permit),
                        };
                        if tx.send(q).is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        status.event(false);
                        if !warned_bad_event {
                            warned_bad_event = true;
                            tracing::warn!(event_type = ?ev.event_type, error = %e, "unreadable Marathon event ignored (further ones on this connection logged at debug)");
                        } else {
                            tracing::debug!(event_type = ?ev.event_type, error = %e, "unreadable Marathon event ignored");
                        }
                    }
                }
            }
        }
    }
}

/// The byte budget of the reader→driver channel, as semaphore permits (at least one event's
/// overhead, at most `u32::MAX`).
fn queued_event_budget(cfg: &MarathonConfig) -> u32 {
    cfg.max_queued_event_bytes
        .clamp(driver::EVENT_OVERHEAD_BYTES, u32::MAX as usize) as u32
}

fn client_error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

// === State writer ===

async fn state_writer(
    dir: PathBuf,
    min_interval: Duration,
    mut rx: watch::Receiver<Option<StateBodies>>,
    shutdown: CancellationToken,
) {
    let mut w = StateWrite {
        dir,
        last_digest: None,
        failing: false,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Flush what is pending.
                let body = rx.borrow_and_update().clone();
                if let Some(body) = body {
                    w.write_if_changed(body).await;
                }
                return;
            }
            r = rx.changed() => {
                if r.is_err() {
                    return;
                }
                let body = rx.borrow_and_update().clone();
                if let Some(body) = body {
                    if w.write_if_changed(body).await {
                        // Rate limit: later bodies wait in the channel (only the newest is kept).
                        tokio::select! {
                            _ = tokio::time::sleep(min_interval) => {}
                            _ = shutdown.cancelled() => {}
                        }
                    }
                }
            }
        }
    }
}

struct StateWrite {
    dir: PathBuf,
    last_digest: Option<[u8; 20]>,
    failing: bool,
}

impl StateWrite {
    /// Writes `body` unless it equals the last one written. Returns whether it wrote.
    async fn write_if_changed(&mut self, body: StateBodies) -> bool {
        let mut sha = sha1_smol::Sha1::from(&body.apps[..]);
        match &body.pods {
            Some(p) => {
                sha.update(b"\0pods\0");
                sha.update(p);
            }
            None => sha.update(b"\0nopods\0"),
        }
        let digest = sha.digest().bytes();
        if self.last_digest == Some(digest) {
            return false;
        }
        let dir = self.dir.clone();
        let r = tokio::task::spawn_blocking(move || {
            state_dir::store_with_pods(&dir, &body.apps, body.pods.as_deref())
        })
        .await;
        match r {
            Ok(Ok(())) => {
                self.last_digest = Some(digest);
                if self.failing {
                    tracing::info!("--state-dir writable again");
                }
                self.failing = false;
            }
            Ok(Err(e)) => {
                if !self.failing {
                    tracing::warn!(error = %e, "cannot save Marathon state to --state-dir");
                }
                self.failing = true;
            }
            Err(e) => tracing::warn!(error = %e, "state writer task failed"),
        }
        true
    }
}

// === The shell around the driver ===

/// The I/O of the source: runs the driver's actions and feeds it what comes back.
struct Shell {
    cfg: Arc<MarathonConfig>,
    client: Arc<MarathonClient>,
    status: MarathonStatusHandle,
    tx: watch::Sender<Option<SourceSnapshot>>,
    write_tx: watch::Sender<Option<StateBodies>>,
    events_tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
    fetch: Option<JoinHandle<FetchOutcome>>,
    stream: Option<JoinHandle<()>>,
}

/// Most stream records handed to the driver in one batch (applied, then published once).
const MAX_BATCH: usize = 1024;

impl Shell {
    async fn run(
        mut self,
        mut driver: Driver<rand::rngs::StdRng>,
        mut events: mpsc::UnboundedReceiver<Queued>,
        resync: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        use tokio::time::{sleep_until, Instant as TInstant};
        let actions = driver.handle(Input::Start, Instant::now());
        self.execute(actions);
        loop {
            let deadline = driver.next_deadline();
            let mut permits = Vec::new();
            let input = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    if let Some(f) = self.fetch.take() {
                        f.abort();
                    }
                    if let Some(s) = self.stream.take() {
                        s.abort();
                    }
                    return;
                }
                outcome = async { self.fetch.as_mut().expect("guarded").await }, if self.fetch.is_some() => {
                    self.fetch = None;
                    match outcome {
                        Ok(o) => {
                            if matches!(o, FetchOutcome::Full(Ok(_))) {
                                self.status.set_current_url(self.client.current_url());
                            }
                            Input::FetchDone(o)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "Marathon fetch task failed");
                            Input::FetchLost
                        }
                    }
                }
                Some(first) = events.recv() => {
                    let mut batch = Vec::new();
                    let mut next = Some(first);
                    while let Some(q) = next.take() {
                        batch.push(q.record);
                        permits.extend(q.budget);
                        if batch.len() < MAX_BATCH {
                            next = events.try_recv().ok();
                        }
                    }
                    Input::Stream(batch)
                }
                _ = resync.notified() => Input::ResyncRequested,
                _ = sleep_until(deadline.map_or_else(TInstant::now, TInstant::from_std)), if deadline.is_some() => {
                    Input::Tick
                }
            };
            let actions = driver.handle(input, Instant::now());
            // The applied events give their bytes back to the reader.
            drop(permits);
            self.execute(actions);
        }
    }

    fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Fetch(job) => {
                    let client = self.client.clone();
                    self.fetch = Some(tokio::spawn(async move {
                        match job {
                            FetchJob::Full => FetchOutcome::Full(client.fetch_apps().await),
                            FetchJob::Apps(ids) => {
                                let mut results = Vec::with_capacity(ids.len());
                                for id in ids {
                                    let r = client.fetch_app(&id).await;
                                    results.push((id, r));
                                }
                                FetchOutcome::Apps {
                                    results,
                                    url: client.current_url(),
                                }
                            }
                            FetchJob::Pods(ids) => {
                                let mut results = Vec::with_capacity(ids.len());
                                for id in ids {
                                    let r = client.fetch_pod(&id).await;
                                    results.push((id, r));
                                }
                                FetchOutcome::Pods {
                                    results,
                                    url: client.current_url(),
                                }
                            }
                            FetchJob::AllPods => FetchOutcome::AllPods(client.fetch_pods().await),
                        }
                    }));
                }
                Action::Publish {
                    snapshot,
                    stale_as_of,
                } => {
                    match stale_as_of {
                        Some(as_of) => {
                            log_stale(snapshot.apps.apps.len(), as_of);
                            self.status.emitted(as_of, true);
                        }
                        None => self.status.emitted(SystemTime::now(), false),
                    }
                    self.tx.send_replace(Some(snapshot));
                }
                Action::Persist(body) => {
                    let _ = self.write_tx.send_replace(Some(body));
                }
                Action::ConnectStream => {
                    if let Some(old) = self.stream.take() {
                        old.abort();
                    }
                    self.stream = Some(tokio::spawn(read_stream(
                        self.cfg.clone(),
                        self.client.clone(),
                        self.status.clone(),
                        self.events_tx.clone(),
                        self.budget.clone(),
                    )));
                }
                Action::RotateEndpoint => {
                    self.client.rotate();
                    self.status.set_current_url(self.client.current_url());
                }
            }
        }
    }
}
