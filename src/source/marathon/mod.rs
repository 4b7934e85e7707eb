//! The Marathon source: watches a real Marathon cluster through full snapshots plus the event
//! stream applied incrementally, and publishes full [`SourceSnapshot`]s.
//!
//! Owns: the source's tasks. The *driver* holds the current [`AppsSnapshot`], applies events
//! (`apply.rs`), runs fetches (at most one in flight plus one queued, debounced), the periodic
//! jittered full resync, the start from `--state-dir`, and publishes into the `watch` channel.
//! The *stream* task holds `GET /v2/events`: it parses SSE (`sse.rs`) and payloads
//! (`events.rs`), enforces the liveness timeout, and reconnects with jittered backoff, rotating
//! through the Marathon URLs. The *state writer* persists the last good full body.
//!
//! Must not: build tables, publish an empty or partial snapshot because of an error (every
//! failure keeps the last good snapshot and emits nothing), log a credential, or log the same
//! failure over and over (errors are logged when their kind changes, and on recovery).
//!
//! Rules, in the order things happen:
//! - Start: a full fetch runs at once. If `--state-dir` holds a snapshot and the first fetch
//!   fails, or has not succeeded within the connect timeout, the saved snapshot is published
//!   (origin `StateDir`, logged as stale); Marathon's first good answer replaces it.
//! - Every (re)connect of the event stream triggers a full fetch: events missed while
//!   disconnected are never replayed by Marathon (../shared/reference/marathon/FACTS.md §5.1).
//! - Task events (`status_update_event`, `instance_*`, `health_status_changed_event`,
//!   `app_terminated_event`) are applied to the current snapshot at once and a new snapshot is
//!   emitted (origin `MarathonEvent`, `observed_at` = when the event's bytes arrived). Events
//!   that arrive while a fetch is in flight are applied again on top of its result, so a fetch
//!   served before an event cannot undo it.
//! - Definition events (`api_post_event`, `deployment_*`, `group_change_success`) and task
//!   events about apps vipd does not know schedule a debounced fetch of the named apps, or a
//!   full fetch.
//! - A periodic full fetch runs every `--marathon-resync-interval` ±15 %.
//! - Leader-failover health rule: see `apply.rs` (results that vanish are carried forward).

pub mod apply;
pub mod args;
pub mod client;
pub mod events;
pub mod redact;
pub mod sse;
pub mod state_dir;
pub mod status;

pub use client::{ConfigError, FetchError, MarathonEndpoint};
pub use redact::Secret;
pub use status::{MarathonStatus, MarathonStatusHandle, SyncErrorKind};

use crate::backoff::{jittered, Backoff};
use crate::model::AppsSnapshot;
use crate::source::{Origin, SourceHandle, SourceSnapshot};
use apply::{
    apply_event, carry_forward_health, is_task_event, replace_app, same_apps, share_unchanged_apps,
    Refetch,
};
use bytes::Bytes;
use client::{AppFetch, FullFetch, MarathonClient};
use events::{parse_event, MarathonEvent};
use futures::StreamExt;
use rand::SeedableRng;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch, Notify};
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
    pub max_redirects: usize,
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

impl MarathonConfig {
    /// A configuration with the defaults of the command line for these URLs.
    pub fn new(urls: &[&str]) -> Result<Self, ConfigError> {
        let endpoints = urls
            .iter()
            .map(|u| MarathonEndpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ConfigError::NoUrl);
        }
        Ok(MarathonConfig {
            endpoints,
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            stream_timeout: Duration::from_secs(30),
            resync_interval: Duration::from_secs(300),
            event_debounce: Duration::from_millis(200),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
            state_dir: None,
            state_write_interval: Duration::from_secs(10),
            max_event_bytes: 64 << 20,
            max_redirects: 3,
        })
    }

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
    let (ev_tx, ev_rx) = mpsc::channel(4096);
    let (write_tx, write_rx) = watch::channel::<Option<Bytes>>(None);
    if let Some(dir) = cfg.state_dir.clone() {
        tokio::spawn(state_writer(
            dir,
            cfg.state_write_interval,
            write_rx,
            shutdown.clone(),
        ));
    }
    let driver = Driver::new(cfg.clone(), client.clone(), status.clone(), tx, write_tx);
    tokio::spawn(driver.run(ev_rx, resync, shutdown.clone()));
    tokio::spawn(stream_loop(cfg, client, status.clone(), ev_tx, shutdown));
    (handle, status)
}

fn publish_stale(
    tx: &watch::Sender<Option<SourceSnapshot>>,
    status: &MarathonStatusHandle,
    snapshot: AppsSnapshot,
    as_of: SystemTime,
) {
    tracing::warn!(
        apps = snapshot.apps.len(),
        saved_secs_ago = SystemTime::now()
            .duration_since(as_of)
            .unwrap_or_default()
            .as_secs(),
        "Marathon not reachable yet: serving the STALE last-known-good state from --state-dir"
    );
    status.emitted(as_of, true);
    tx.send_replace(Some(SourceSnapshot {
        apps: Arc::new(snapshot),
        origin: Origin::StateDir,
        observed_at: Instant::now(),
    }));
}

// === Error logging without storms ===

/// Logs a failure when its kind differs from the previous one, and the recovery once.
struct ErrorLog {
    what: &'static str,
    last: Option<SyncErrorKind>,
}

impl ErrorLog {
    fn new(what: &'static str) -> Self {
        ErrorLog { what, last: None }
    }

    fn failed(&mut self, status: &MarathonStatusHandle, e: &FetchError) {
        let kind = e.kind();
        status.error(kind);
        if self.last != Some(kind) {
            tracing::warn!(what = self.what, kind = %kind, error = %e, "Marathon sync failed; keeping the last good snapshot");
        } else {
            tracing::debug!(what = self.what, kind = %kind, error = %e, "Marathon sync still failing");
        }
        self.last = Some(kind);
    }

    fn ok(&mut self, url: &str) {
        if let Some(kind) = self.last.take() {
            tracing::info!(what = self.what, previous = %kind, url, "Marathon sync recovered");
        }
    }
}

// === The event stream ===

enum StreamMsg {
    Connected,
    Event(MarathonEvent, Instant),
    Disconnected,
}

async fn stream_loop(
    cfg: Arc<MarathonConfig>,
    client: Arc<MarathonClient>,
    status: MarathonStatusHandle,
    tx: mpsc::Sender<StreamMsg>,
    shutdown: CancellationToken,
) {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    let mut log = ErrorLog::new("event stream");
    loop {
        let started = Instant::now();
        let mut connected = false;
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = read_stream(&cfg, &client, &status, &tx, &mut connected, &mut log) => r,
        };
        if connected {
            status.set_sse(false, None);
            if tx.send(StreamMsg::Disconnected).await.is_err() {
                return;
            }
        }
        match result {
            Ok(()) => return, // the driver is gone
            Err(e) => log.failed(&status, &e),
        }
        if connected && started.elapsed() >= cfg.healthy_after {
            backoff.reset();
        }
        if !connected {
            client.rotate();
            status.set_current_url(client.current_url());
        }
        let delay = backoff.next_delay(&mut rng);
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting the Marathon event stream"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Connects and reads until the stream fails. `Ok(())` only when the driver has gone away.
async fn read_stream(
    cfg: &MarathonConfig,
    client: &MarathonClient,
    status: &MarathonStatusHandle,
    tx: &mpsc::Sender<StreamMsg>,
    connected: &mut bool,
    log: &mut ErrorLog,
) -> Result<(), FetchError> {
    let (resp, url) = client.open_events().await?;
    let url_s = redact::redact_url(&url);
    *connected = true;
    status.set_sse(true, Some(url_s.clone()));
    log.ok(&url_s);
    tracing::info!(url = %url_s, "Marathon event stream connected");
    if tx.send(StreamMsg::Connected).await.is_err() {
        return Ok(());
    }
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
                        if tx.send(StreamMsg::Event(event, received)).await.is_err() {
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
    mut rx: watch::Receiver<Option<Bytes>>,
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
    async fn write_if_changed(&mut self, body: Bytes) -> bool {
        let digest = sha1_smol::Sha1::from(&body[..]).digest().bytes();
        if self.last_digest == Some(digest) {
            return false;
        }
        let dir = self.dir.clone();
        let r = tokio::task::spawn_blocking(move || state_dir::store(&dir, &body)).await;
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

// === The driver ===

/// What the next fetch will be. One is in flight at most; this is the one queued behind it.
#[derive(Debug, Default)]
struct FetchQueue {
    full: bool,
    apps: Vec<String>,
    due: Option<tokio::time::Instant>,
}

/// Above this many queued apps one full fetch is cheaper.
const MAX_QUEUED_APPS: usize = 16;
/// Above this many events to replay onto a fetch result, fetch everything again instead.
const MAX_REPLAY: usize = 100_000;

impl FetchQueue {
    fn arm(&mut self, at: tokio::time::Instant) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }
    fn full(&mut self, at: tokio::time::Instant) {
        self.full = true;
        self.apps.clear();
        self.arm(at);
    }
    fn apps(&mut self, ids: &[String], at: tokio::time::Instant) {
        if !self.full {
            for id in ids {
                if !self.apps.iter().any(|a| apply::same_app_id(a, id)) {
                    self.apps.push(id.clone());
                }
            }
            if self.apps.len() > MAX_QUEUED_APPS {
                self.full = true;
                self.apps.clear();
            }
        }
        self.arm(at);
    }
    fn take(&mut self) -> Option<Job> {
        self.due = None;
        if self.full {
            self.full = false;
            Some(Job::Full)
        } else if !self.apps.is_empty() {
            Some(Job::Apps(std::mem::take(&mut self.apps)))
        } else {
            None
        }
    }
}

enum Job {
    Full,
    Apps(Vec<String>),
}

/// One app's fetch: its id and what came back, with when it was read.
type AppOutcome = (String, Result<(AppFetch, Instant), FetchError>);

enum Outcome {
    Full(Result<FullFetch, FetchError>),
    Apps(Vec<AppOutcome>),
}

struct InFlight {
    task: JoinHandle<Outcome>,
    /// The stream connection this fetch started under.
    epoch: u64,
}

struct Driver {
    cfg: Arc<MarathonConfig>,
    client: Arc<MarathonClient>,
    status: MarathonStatusHandle,
    tx: watch::Sender<Option<SourceSnapshot>>,
    write_tx: watch::Sender<Option<Bytes>>,
    current: Option<Arc<AppsSnapshot>>,
    /// A state-dir snapshot not yet published (published if Marathon does not answer in time).
    stale: Option<(AppsSnapshot, SystemTime)>,
    serving_stale: bool,
    queue: FetchQueue,
    in_flight: Option<InFlight>,
    replay: Vec<MarathonEvent>,
    replay_overflow: bool,
    epoch: u64,
    stream_up: bool,
    fetch_backoff: Backoff,
    fetch_log: ErrorLog,
    rng: rand::rngs::StdRng,
    /// When the periodic full resync is due; pushed back by every successful full fetch.
    next_periodic: tokio::time::Instant,
}

impl Driver {
    fn new(
        cfg: Arc<MarathonConfig>,
        client: Arc<MarathonClient>,
        status: MarathonStatusHandle,
        tx: watch::Sender<Option<SourceSnapshot>>,
        write_tx: watch::Sender<Option<Bytes>>,
    ) -> Self {
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
        Driver {
            fetch_backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            cfg,
            client,
            status,
            tx,
            write_tx,
            current: None,
            stale,
            serving_stale: false,
            queue: FetchQueue::default(),
            in_flight: None,
            replay: Vec::new(),
            replay_overflow: false,
            epoch: 0,
            stream_up: false,
            fetch_log: ErrorLog::new("fetch"),
            rng: rand::rngs::StdRng::from_os_rng(),
            next_periodic: tokio::time::Instant::now(),
        }
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<StreamMsg>,
        resync: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        use tokio::time::{sleep_until, Instant as TInstant};
        let far = || TInstant::now() + Duration::from_secs(86_400 * 365);
        self.queue.full(TInstant::now());
        let mut stale_deadline = self
            .stale
            .is_some()
            .then(|| TInstant::now() + self.cfg.connect_timeout);
        self.next_periodic = TInstant::now() + self.periodic_delay();
        loop {
            let due = if self.in_flight.is_none() {
                self.queue.due
            } else {
                None
            };
            self.status
                .set_fetch_pending(self.in_flight.is_some() || self.queue.due.is_some());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    if let Some(f) = self.in_flight.take() {
                        f.task.abort();
                    }
                    return;
                }
                outcome = async { (&mut self.in_flight.as_mut().expect("guarded").task).await }, if self.in_flight.is_some() => {
                    let f = self.in_flight.take().expect("guarded");
                    match outcome {
                        Ok(o) => self.finish(o, f.epoch),
                        Err(e) => tracing::error!(error = %e, "Marathon fetch task failed"),
                    }
                    if self.current.is_none() && self.stale.is_some() {
                        // First fetch failed: serve the saved state now.
                        self.serve_stale();
                        stale_deadline = None;
                    }
                }
                msg = events.recv() => {
                    match msg {
                        None => return,
                        Some(m) => self.on_stream(m, &mut events),
                    }
                }
                _ = resync.notified() => {
                    tracing::info!("Marathon resync requested");
                    self.queue.full(TInstant::now());
                }
                _ = sleep_until(due.unwrap_or_else(far)), if due.is_some() => {
                    self.start_fetch();
                }
                _ = sleep_until(self.next_periodic) => {
                    self.queue.full(TInstant::now());
                    self.next_periodic = TInstant::now() + self.periodic_delay();
                }
                _ = sleep_until(stale_deadline.unwrap_or_else(far)), if stale_deadline.is_some() => {
                    stale_deadline = None;
                    if self.current.is_none() {
                        self.serve_stale();
                    }
                }
            }
        }
    }

    fn periodic_delay(&mut self) -> Duration {
        jittered(self.cfg.resync_interval, 0.15, &mut self.rng)
    }

    fn serve_stale(&mut self) {
        if let Some((snapshot, as_of)) = self.stale.take() {
            let snap = Arc::new(snapshot);
            self.current = Some(snap.clone());
            self.serving_stale = true;
            publish_stale(&self.tx, &self.status, (*snap).clone(), as_of);
        }
    }

    fn emit(&mut self, snap: Arc<AppsSnapshot>, origin: Origin, observed_at: Instant) {
        self.current = Some(snap.clone());
        self.serving_stale = false;
        self.status.emitted(SystemTime::now(), false);
        self.status
            .set_fetch_pending(self.in_flight.is_some() || self.queue.due.is_some());
        self.tx.send_replace(Some(SourceSnapshot {
            apps: snap,
            origin,
            observed_at,
        }));
    }

    fn on_stream(&mut self, first: StreamMsg, events: &mut mpsc::Receiver<StreamMsg>) {
        let now = tokio::time::Instant::now();
        let mut msg = Some(first);
        // Apply everything already queued, then emit once.
        let mut changed_at: Option<Instant> = None;
        let mut snap = self.current.clone();
        let mut budget = 1024;
        while let Some(m) = msg.take() {
            match m {
                StreamMsg::Connected => {
                    self.epoch += 1;
                    self.stream_up = true;
                    self.queue.full(now);
                }
                StreamMsg::Disconnected => {
                    self.stream_up = false;
                }
                StreamMsg::Event(event, received) => {
                    let Some(s) = snap.as_mut() else {
                        // No snapshot yet: the pending full fetch will cover it.
                        self.status.event(false);
                        self.queue.full(now);
                        continue;
                    };
                    let fx = apply_event(s, &event);
                    self.status.event(fx.changed);
                    if fx.changed && changed_at.is_none() {
                        changed_at = Some(received);
                    }
                    let debounced = now + self.cfg.event_debounce;
                    match &fx.refetch {
                        Refetch::None => {}
                        Refetch::Apps(ids) => self.queue.apps(ids, debounced),
                        Refetch::Full => self.queue.full(debounced),
                    }
                    if self.in_flight.is_some() && is_task_event(&event) {
                        if self.replay.len() < MAX_REPLAY {
                            self.replay.push(event);
                        } else {
                            self.replay_overflow = true;
                        }
                    }
                }
            }
            budget -= 1;
            if budget > 0 {
                msg = events.try_recv().ok();
            }
        }
        if let (Some(at), Some(s)) = (changed_at, snap) {
            self.emit(s, Origin::MarathonEvent, at);
        }
    }

    fn start_fetch(&mut self) {
        if self.current.is_none() && !self.queue.full && !self.queue.apps.is_empty() {
            self.queue.full = true; // no base to patch yet
        }
        let Some(job) = self.queue.take() else {
            return;
        };
        let client = self.client.clone();
        let task = match job {
            Job::Full => tokio::spawn(async move { Outcome::Full(client.fetch_apps().await) }),
            Job::Apps(ids) => tokio::spawn(async move {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let r = client.fetch_app(&id).await;
                    out.push((id, r));
                }
                Outcome::Apps(out)
            }),
        };
        self.replay.clear();
        self.replay_overflow = false;
        self.in_flight = Some(InFlight {
            task,
            epoch: self.epoch,
        });
    }

    fn retry_later(&mut self, job_full: bool, apps: Vec<String>) {
        let delay = self.fetch_backoff.next_delay(&mut self.rng);
        let at = tokio::time::Instant::now() + delay;
        if job_full {
            self.queue.full(at);
        } else {
            self.queue.apps(&apps, at);
        }
    }

    fn finish(&mut self, outcome: Outcome, epoch: u64) {
        let replay = std::mem::take(&mut self.replay);
        if self.replay_overflow {
            self.queue.full(tokio::time::Instant::now());
        }
        match outcome {
            Outcome::Full(Err(e)) => {
                self.fetch_log.failed(&self.status, &e);
                self.retry_later(true, Vec::new());
            }
            Outcome::Full(Ok(f)) => {
                self.fetch_log.ok(&f.url);
                self.fetch_backoff.reset();
                self.next_periodic = tokio::time::Instant::now() + self.periodic_delay();
                self.status.synced(true);
                self.status.set_current_url(self.client.current_url());
                if self.stream_up && epoch == self.epoch {
                    self.status.set_stream_synced(true);
                }
                let mut next = f.snapshot;
                let prev = self.current.clone();
                let base: Option<&AppsSnapshot> =
                    prev.as_deref().or(self.stale.as_ref().map(|(s, _)| s));
                if let Some(prev) = base {
                    let carried = carry_forward_health(prev, &mut next);
                    if carried > 0 {
                        tracing::info!(tasks = carried, "kept last known health results that Marathon no longer reports (leader failover?)");
                    }
                }
                let mut snap = Arc::new(next);
                for e in &replay {
                    apply_event(&mut snap, e);
                }
                if let Some(prev) = base {
                    // Freshly parsed and not yet shared: `make_mut` does not copy.
                    share_unchanged_apps(prev, Arc::make_mut(&mut snap));
                }
                self.stale = None;
                if self.serving_stale {
                    tracing::info!(
                        apps = snap.apps.len(),
                        "Marathon reached: the stale state is replaced"
                    );
                }
                let unchanged = !self.serving_stale
                    && self.current.as_deref().is_some_and(|c| same_apps(c, &snap));
                if !unchanged {
                    self.emit(snap, Origin::MarathonFull, f.fetched_at);
                }
                let _ = self.write_tx.send_replace(Some(f.body));
            }
            Outcome::Apps(results) => {
                let Some(mut snap) = self.current.clone() else {
                    self.queue.full(tokio::time::Instant::now());
                    return;
                };
                let mut changed = false;
                let mut observed = None;
                let mut failed = Vec::new();
                for (id, r) in results {
                    match r {
                        Ok((fetch, at)) => {
                            self.status.synced(false);
                            observed.get_or_insert(at);
                            changed |= match fetch {
                                AppFetch::Found(app) => replace_app(&mut snap, &id, Some(*app)),
                                AppFetch::Gone => replace_app(&mut snap, &id, None),
                                AppFetch::Rejected(r) => {
                                    tracing::warn!(app = %id, reason = %r.message, "malformed app; fetching everything");
                                    self.queue.full(tokio::time::Instant::now());
                                    false
                                }
                            };
                        }
                        Err(e) => {
                            self.fetch_log.failed(&self.status, &e);
                            failed.push(id);
                        }
                    }
                }
                if failed.is_empty() {
                    self.fetch_log.ok(&self.client.current_url());
                    self.fetch_backoff.reset();
                } else {
                    self.retry_later(false, failed);
                }
                for e in &replay {
                    changed |= apply_event(&mut snap, e).changed;
                }
                if changed {
                    self.emit(
                        snap,
                        Origin::MarathonEvent,
                        observed.unwrap_or_else(Instant::now),
                    );
                }
            }
        }
    }
}
