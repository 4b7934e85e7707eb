//! The Mesos source: the master's operator event stream (`POST /api/v1 {"type":"SUBSCRIBE"}`),
//! the tasks of every framework, published as full snapshots (`AppsSnapshot.tasks`).
//!
//! Owns: the source's task, a thin async shell around the sans-io [`driver::Driver`], which
//! decides everything (where to subscribe, when to reconnect, what to publish). The shell runs
//! the driver's actions: the `SUBSCRIBE` call (`client.rs`), reading the chunked body through the
//! RecordIO decoder (`recordio.rs`, records capped by `--max-document-size`), parsing records
//! (`model::mesos`; big ones on the blocking pool), the `watch` channel, and `--state-dir`
//! (`state_dir.rs`: the last good tasks as a `GET_STATE` document, served when the master is
//! down at start).
//!
//! Must not: decide anything itself, build tables, publish an empty or partial snapshot because
//! of an error, or log a credential.

pub mod client;
pub mod driver;
pub mod recordio;
pub mod state_dir;
pub mod status;

use crate::model::mesos::{parse_event, MesosTask, TaskRejection};
use crate::model::{AppRejection, AppsSnapshot};
use crate::source::marathon::{MarathonEndpoint, TlsConfig};
use crate::source::{Origin, SourceHandle, SourceSnapshot};
use client::{Answer, MesosClient};
use driver::{Action, Driver, DriverConfig, Input};
use futures::StreamExt;
use recordio::RecordDecoder;
pub use status::{MesosStatus, MesosStatusHandle};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

pub use crate::source::marathon::ConfigError;

/// Records above this size are parsed on the blocking pool.
const BLOCKING_PARSE_THRESHOLD: usize = 256 * 1024;

/// Everything the Mesos source needs (from `cli::mesos`).
#[derive(Debug, Clone)]
pub struct MesosConfig {
    /// The masters, in order; credentials already taken out of the URLs (HTTP basic).
    pub endpoints: Vec<MarathonEndpoint>,
    pub token_file: Option<PathBuf>,
    pub tls: TlsConfig,
    pub connect_timeout: Duration,
    /// How long the `SUBSCRIBE` call may take until its answer's headers.
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub recovery_timeout: Duration,
    pub tasks_grace: Duration,
    pub max_redirects: usize,
    /// The largest record accepted (`--max-document-size`).
    pub max_record: usize,
    pub state_dir: Option<PathBuf>,
}

/// The snapshot the control loop gets for `tasks`.
pub fn snapshot_of(tasks: Vec<Arc<MesosTask>>, rejected: Vec<TaskRejection>) -> AppsSnapshot {
    AppsSnapshot {
        tasks,
        rejected_tasks: rejected
            .into_iter()
            .map(|r| AppRejection {
                app: r.task,
                message: format!("Mesos task: {}", r.message),
            })
            .collect(),
        ..Default::default()
    }
}

/// Builds the HTTP client (validates the TLS files up front).
pub fn client(cfg: &MesosConfig) -> Result<MesosClient, ConfigError> {
    let mut http_cfg = crate::source::marathon::MarathonConfig::new(&["http://mesos.invalid"])?;
    http_cfg.tls = cfg.tls.clone();
    http_cfg.connect_timeout = cfg.connect_timeout;
    let http = crate::source::marathon::client::build_http(&http_cfg)?;
    MesosClient::new(http, cfg.endpoints.clone(), cfg.token_file.clone())
}

/// Starts the source; its snapshots are `AppsSnapshot`s holding only `tasks`.
pub fn spawn(
    cfg: MesosConfig,
    shutdown: CancellationToken,
) -> Result<(SourceHandle, MesosStatusHandle), ConfigError> {
    let client = client(&cfg)?;
    let status = MesosStatusHandle::default();
    let (tx, rx) = watch::channel(None);
    let resync = Arc::new(Notify::new());
    let mut driver = Driver::new(DriverConfig {
        endpoints: cfg.endpoints.iter().map(|e| e.url().clone()).collect(),
        backoff_initial: cfg.backoff_initial,
        backoff_max: cfg.backoff_max,
        recovery_timeout: cfg.recovery_timeout,
        tasks_grace: cfg.tasks_grace,
        max_redirects: cfg.max_redirects,
        seed: rand::random(),
    });
    if let Some(dir) = &cfg.state_dir {
        match state_dir::load(dir) {
            Ok(Some((tasks, saved_at))) => {
                let age = saved_at.elapsed().unwrap_or_default().as_secs();
                tracing::warn!(
                    tasks = tasks.len(),
                    age_s = age,
                    "serving the saved Mesos state from --state-dir until the master answers"
                );
                let tasks: Vec<Arc<MesosTask>> = tasks.into_iter().map(Arc::new).collect();
                driver.restore(tasks.clone());
                status.serving_stale_state(true);
                status.published(tasks.len(), 0, 0);
                let _ = tx.send(Some(SourceSnapshot {
                    apps: Arc::new(snapshot_of(tasks, Vec::new())),
                    origin: Origin::StateDir,
                    observed_at: Instant::now(),
                }));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "saved Mesos state unusable"),
        }
    }
    let handle = SourceHandle::new(rx, Arc::clone(&resync));
    tokio::spawn(run(
        cfg,
        client,
        driver,
        tx,
        resync,
        status.clone(),
        shutdown,
    ));
    Ok((handle, status))
}

type Body = futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>;

async fn run(
    cfg: MesosConfig,
    client: MesosClient,
    mut driver: Driver,
    tx: watch::Sender<Option<SourceSnapshot>>,
    resync: Arc<Notify>,
    status: MesosStatusHandle,
    shutdown: CancellationToken,
) {
    let writer = cfg.state_dir.clone().map(|dir| {
        let (w, r) = watch::channel(None);
        tokio::spawn(write_state(dir, r, shutdown.clone()));
        w
    });
    let mut body: Option<(Body, RecordDecoder)> = None;
    let mut input = Some(Input::Start);
    loop {
        if let Some(i) = input.take() {
            match &i {
                Input::Records { records, .. } => status.records(records.len()),
                Input::Failed { .. } => status.failed(),
                _ => {}
            }
            let mut queue: std::collections::VecDeque<Action> =
                driver.handle(i, Instant::now()).into();
            while let Some(action) = queue.pop_front() {
                match action {
                    Action::Subscribe { url, endpoint } => {
                        body = None;
                        let answer = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            a = tokio::time::timeout(cfg.request_timeout, client.subscribe(&url, endpoint)) => a,
                        };
                        let next = match answer {
                            Err(_) => Input::Failed {
                                error: format!(
                                    "{}: no answer to SUBSCRIBE within {} ms",
                                    crate::source::marathon::redact::redact_url(&url),
                                    cfg.request_timeout.as_millis()
                                ),
                            },
                            Ok(Answer::Stream(resp)) => {
                                status.connected();
                                status.serving_stale_state(false);
                                body = Some((
                                    resp.bytes_stream().boxed(),
                                    RecordDecoder::new(cfg.max_record),
                                ));
                                Input::Connected
                            }
                            Ok(Answer::Redirect(location)) => {
                                status.redirected();
                                Input::Redirect { location }
                            }
                            Ok(Answer::Failed(error)) => Input::Failed { error },
                        };
                        if matches!(next, Input::Failed { .. }) {
                            status.failed();
                        }
                        queue.extend(driver.handle(next, Instant::now()));
                    }
                    Action::Disconnect => {
                        // The driver failed the stream (silent, or a record of the wrong shape).
                        status.failed();
                        body = None;
                    }
                    Action::Publish {
                        tasks,
                        rejected,
                        observed_at,
                    } => {
                        if let Some(w) = &writer {
                            let _ = w.send(Some(tasks.clone()));
                        }
                        tracing::debug!(tasks = tasks.len(), "Mesos tasks published");
                        status.published(tasks.len(), rejected.len(), driver.pending_agents());
                        let _ = tx.send(Some(SourceSnapshot {
                            apps: Arc::new(snapshot_of(tasks, rejected)),
                            origin: Origin::Mesos,
                            observed_at,
                        }));
                    }
                }
            }
        }
        status.recovered_agents_pending(driver.pending_agents());
        // A bad record after good ones in the same chunk: the good ones went to the driver
        // above; now the stream fails.
        if let Some(e) = body.as_mut().and_then(|(_, d)| d.take_error()) {
            body = None;
            input = Some(Input::Failed {
                error: format!("event stream: {e}"),
            });
            continue;
        }
        let deadline = driver.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let chunk = async {
            match body.as_mut() {
                Some((stream, _)) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        input = tokio::select! {
            _ = shutdown.cancelled() => return,
            () = sleep => Some(Input::Tick),
            () = resync.notified() => Some(Input::Start),
            c = chunk => Some(read_chunk(c, &mut body).await),
        };
    }
}

/// Minimum time between two writes of the state file.
const STATE_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Writes the newest published tasks to `--state-dir`, at most once per
/// [`STATE_WRITE_INTERVAL`] (the channel keeps only the newest).
async fn write_state(
    dir: PathBuf,
    mut tasks: watch::Receiver<Option<Vec<Arc<MesosTask>>>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = tasks.changed() => if changed.is_err() { return },
        }
        let Some(latest) = tasks.borrow_and_update().clone() else {
            continue;
        };
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || state_dir::save(&d, &latest)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not save the Mesos state to --state-dir")
            }
            Err(e) => tracing::warn!(error = %e, "the Mesos state writer failed"),
        }
        tokio::time::sleep(STATE_WRITE_INTERVAL).await;
    }
}

/// Turns one read of the body into the driver's input.
async fn read_chunk(
    chunk: Option<reqwest::Result<bytes::Bytes>>,
    body: &mut Option<(Body, RecordDecoder)>,
) -> Input {
    let received = Instant::now();
    let Some((_, decoder)) = body.as_mut() else {
        return Input::Tick;
    };
    let failed = |error: String, body: &mut Option<(Body, RecordDecoder)>| {
        *body = None;
        Input::Failed { error }
    };
    let bytes = match chunk {
        None => {
            let why = match decoder.finish() {
                Ok(()) => "the master closed the event stream".to_string(),
                Err(e) => format!("the master closed the event stream: {e}"),
            };
            return failed(why, body);
        }
        Some(Err(e)) => {
            return failed(
                format!("reading the event stream: {}", e.without_url()),
                body,
            )
        }
        Some(Ok(b)) => b,
    };
    let records = match decoder.push(&bytes) {
        Ok(r) => r,
        Err(e) => return failed(format!("event stream: {e}"), body),
    };
    let mut parsed = Vec::with_capacity(records.len());
    for r in records {
        if r.len() > BLOCKING_PARSE_THRESHOLD {
            match tokio::task::spawn_blocking(move || parse_event(&r)).await {
                Ok(p) => parsed.push(p),
                Err(e) => return failed(format!("parsing a record: {e}"), body),
            }
        } else {
            parsed.push(parse_event(&r));
        }
    }
    Input::Records {
        records: parsed,
        received,
    }
}

/// `--marathon` (or `--apps`) with `--mesos`: one source whose snapshots hold the apps and pods
/// of `primary` and the tasks of `mesos`, re-made whenever either changes. The build reads VIP
/// labels from the tasks alone (`BuildOptions::marathon_vips` is off), so service ports come
/// from Marathon and VIPs from Mesos. A resync request goes to both.
pub fn combine(
    primary: SourceHandle,
    mesos: SourceHandle,
    shutdown: CancellationToken,
) -> SourceHandle {
    let (tx, rx) = watch::channel(None);
    let resync = Arc::new(Notify::new());
    let handle = SourceHandle::new(rx, Arc::clone(&resync));
    tokio::spawn(async move {
        let mut p = primary.snapshots.clone();
        let mut m = mesos.snapshots.clone();
        loop {
            let a = p.borrow_and_update().clone();
            let b = m.borrow_and_update().clone();
            if a.is_some() || b.is_some() {
                let mut merged = a
                    .as_ref()
                    .map(|s| AppsSnapshot::clone(&s.apps))
                    .unwrap_or_default();
                let origin = match (&a, &b) {
                    (_, Some(b)) if a.as_ref().map_or(true, |a| b.observed_at >= a.observed_at) => {
                        b.origin.clone()
                    }
                    (Some(a), _) => a.origin.clone(),
                    _ => Origin::Mesos,
                };
                if let Some(b) = &b {
                    merged.tasks.clone_from(&b.apps.tasks);
                    merged.rejected_tasks.clone_from(&b.apps.rejected_tasks);
                }
                let observed_at = a
                    .iter()
                    .chain(b.iter())
                    .map(|s| s.observed_at)
                    .max()
                    .unwrap_or_else(Instant::now);
                let _ = tx.send(Some(SourceSnapshot {
                    apps: Arc::new(merged),
                    origin,
                    observed_at,
                }));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = p.changed() => if r.is_err() { shutdown.cancelled().await; return },
                r = m.changed() => if r.is_err() { shutdown.cancelled().await; return },
                () = resync.notified() => { primary.resync(); mesos.resync(); }
            }
        }
    });
    handle
}
