//! The Marathon source's state machine, sans-io: what to fetch, when, what to publish.
//!
//! Owns: the current [`AppsSnapshot`] (apps and pods), the fetch queue (at most one fetch in
//! flight plus one queued behind it; definition events are debounced and coalesced into one
//! fetch of the named apps, one of the named pods (`GET /v2/pods/{id}::status`, never
//! `/v2/apps/{id}` for a pod), one of all pods, or one full fetch, which covers pods too), the replay of task events onto the result of a fetch that was in
//! flight when they arrived (bounded in bytes: past the bound the replay is dropped and a full
//! resync follows), the stream epochs (every (re)connect starts an epoch and a full fetch), the
//! `--state-dir` snapshot served as stale when Marathon does not answer in time, the
//! empty-answer check (an empty full answer that came through a redirect does not replace a
//! non-empty snapshot until a second full fetch confirms it), the jittered
//! exponential backoff of fetch retries and stream reconnects, and the periodic jittered resync.
//!
//! It is fed [`Input`]s with the time passed in (`now`) and answers [`Action`]s; the shell in
//! `mod.rs` does the I/O and calls [`Driver::handle`] with [`Input::Tick`] at
//! [`Driver::next_deadline`].
//!
//! Must not: do I/O, spawn, sleep or read the monotonic clock (time comes in as `now`), or
//! publish an empty or partial snapshot because of an error. It updates the shared
//! [`MarathonStatusHandle`] (atomics, for metrics) and logs through `tracing`, errors only when
//! their kind changes.

use super::apply::{
    apply_event, carry_forward_health, is_task_event, replace_all_pods, replace_app, replace_pod,
    same_apps, share_unchanged_apps, PodRefetch, Refetch,
};
use super::client::{AppFetch, FetchError, FullFetch, PodFetch, PodsFetch};
use super::events::MarathonEvent;
use super::status::{MarathonStatusHandle, SyncErrorKind};
use super::MarathonConfig;
use crate::backoff::{jittered, Backoff};
use crate::model::AppsSnapshot;
use crate::source::{Origin, SourceSnapshot};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Above this many queued apps one full fetch is cheaper.
pub const MAX_QUEUED_APPS: usize = 16;
/// What one buffered event costs beyond its bytes (so that tiny events are bounded in count too).
pub const EVENT_OVERHEAD_BYTES: usize = 64;

/// What the stream shell reports.
#[derive(Debug)]
pub enum StreamRecord {
    /// `GET /v2/events` answered 200 at `url` (after redirects, redacted).
    Connected { url: String },
    /// One parsed event; `received` is when its bytes arrived, `bytes` its size on the wire.
    Event {
        event: MarathonEvent,
        received: Instant,
        bytes: usize,
    },
    /// The stream could not be opened, or broke.
    Closed { error: FetchError },
}

/// One owner's fetch: its id and what came back, with when it was read.
pub type OneOutcome<T> = (String, Result<(T, Instant), FetchError>);

/// One app's fetch.
pub type AppOutcome = OneOutcome<AppFetch>;

/// One pod's fetch.
pub type PodOutcome = OneOutcome<PodFetch>;

/// What a fetch returned.
#[derive(Debug)]
pub enum FetchOutcome {
    Full(Result<FullFetch, FetchError>),
    /// The apps fetched one by one; `url` is the endpoint they were fetched from (redacted).
    Apps {
        results: Vec<AppOutcome>,
        url: String,
    },
    /// The pods fetched one by one.
    Pods {
        results: Vec<PodOutcome>,
        url: String,
    },
    /// `GET /v2/pods/::status` alone.
    AllPods(Result<PodsFetch, FetchError>),
}

/// What the driver is told.
// A fetch outcome is a few hundred bytes (apps, pods and tasks snapshots side by side); an
// `Input` is moved once into `Driver::handle` and never stored in bulk, so boxing it would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Input {
    /// Once, first.
    Start,
    /// Records from the event stream, in order (a batch is applied, then published once).
    Stream(Vec<StreamRecord>),
    /// The fetch started by the last [`Action::Fetch`] finished.
    FetchDone(FetchOutcome),
    /// The fetch task died without an outcome (panicked): retried like a failure.
    FetchLost,
    /// SIGHUP or `/v1/resync`: fetch everything now.
    ResyncRequested,
    /// The time given by [`Driver::next_deadline`] has come (early ticks are harmless).
    Tick,
}

/// What a fetch is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchJob {
    /// `GET /v2/apps?embed=apps.tasks`.
    Full,
    /// `GET /v2/apps/{id}` for each.
    Apps(Vec<String>),
    /// `GET /v2/pods/{id}::status` for each.
    Pods(Vec<String>),
    /// `GET /v2/pods/::status`.
    AllPods,
}

/// What the shell is to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Start this fetch (none is in flight) and report it with [`Input::FetchDone`].
    Fetch(FetchJob),
    /// Publish this snapshot. `stale_as_of` is set for a `--state-dir` snapshot: when it was saved.
    Publish {
        snapshot: SourceSnapshot,
        stale_as_of: Option<SystemTime>,
    },
    /// Save this full fetch's bodies to `--state-dir` (the writer rate-limits and deduplicates).
    Persist(StateBodies),
    /// Open the event stream now (on the current endpoint).
    ConnectStream,
    /// The current endpoint never answered: move to the next Marathon URL.
    RotateEndpoint,
}

/// The bodies of one full fetch, as `--state-dir` keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateBodies {
    /// `GET /v2/apps?embed=apps.tasks`.
    pub apps: Bytes,
    /// `GET /v2/pods/::status`; `None` when the server has no pods.
    pub pods: Option<Bytes>,
}

/// Logs a failure when its kind differs from the previous one, and the recovery once.
#[derive(Debug)]
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

/// What the next fetch will be. One is in flight at most; this is the one queued behind it.
#[derive(Debug, Default)]
struct FetchQueue {
    full: bool,
    apps: Vec<String>,
    pods: Vec<String>,
    all_pods: bool,
    due: Option<Instant>,
}

impl FetchQueue {
    fn arm(&mut self, at: Instant) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }
    fn full(&mut self, at: Instant) {
        self.full = true;
        self.apps.clear();
        self.pods.clear();
        self.all_pods = false;
        self.arm(at);
    }
    fn pods(&mut self, ids: &[String], at: Instant) {
        if !self.full && !self.all_pods {
            for id in ids {
                if !self.pods.iter().any(|a| super::apply::same_app_id(a, id)) {
                    self.pods.push(id.clone());
                }
            }
            if self.pods.len() > MAX_QUEUED_APPS {
                self.all_pods = true;
                self.pods.clear();
            }
        }
        self.arm(at);
    }
    fn all_pods(&mut self, at: Instant) {
        if !self.full {
            self.all_pods = true;
            self.pods.clear();
        }
        self.arm(at);
    }
    /// Something other than a full fetch is queued.
    fn partial(&self) -> bool {
        !self.apps.is_empty() || !self.pods.is_empty() || self.all_pods
    }
    fn apps(&mut self, ids: &[String], at: Instant) {
        if !self.full {
            for id in ids {
                if !self.apps.iter().any(|a| super::apply::same_app_id(a, id)) {
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
    /// The next job. Apps go first; pods still queued behind them stay due at the same time.
    fn take(&mut self) -> Option<FetchJob> {
        let due = self.due.take();
        if self.full {
            self.full = false;
            Some(FetchJob::Full)
        } else if !self.apps.is_empty() {
            if !self.pods.is_empty() || self.all_pods {
                self.due = due;
            }
            Some(FetchJob::Apps(std::mem::take(&mut self.apps)))
        } else if self.all_pods {
            self.all_pods = false;
            Some(FetchJob::AllPods)
        } else if !self.pods.is_empty() {
            Some(FetchJob::Pods(std::mem::take(&mut self.pods)))
        } else {
            None
        }
    }
}

/// The event stream as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// Not started yet, or waiting to reconnect at `reconnect_at`.
    Down { reconnect_at: Option<Instant> },
    /// [`Action::ConnectStream`] was given at `since`.
    Opening { since: Instant },
    /// Connected; the attempt started at `since`.
    Up { since: Instant },
}

/// Timings and bounds the driver needs (a plain copy of part of [`MarathonConfig`]).
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub connect_timeout: Duration,
    pub resync_interval: Duration,
    pub event_debounce: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub healthy_after: Duration,
    /// Bound of the events kept for replay onto an in-flight fetch, in bytes.
    pub max_replay_bytes: usize,
}

impl From<&MarathonConfig> for DriverConfig {
    fn from(c: &MarathonConfig) -> Self {
        DriverConfig {
            connect_timeout: c.connect_timeout,
            resync_interval: c.resync_interval,
            event_debounce: c.event_debounce,
            backoff_initial: c.backoff_initial,
            backoff_max: c.backoff_max,
            healthy_after: c.healthy_after,
            max_replay_bytes: c.max_replay_bytes,
        }
    }
}

/// The state machine. See the module docs.
#[derive(Debug)]
pub struct Driver<R> {
    cfg: DriverConfig,
    status: MarathonStatusHandle,
    rng: R,
    current: Option<Arc<AppsSnapshot>>,
    /// A state-dir snapshot not yet published (published if Marathon does not answer in time).
    stale: Option<(AppsSnapshot, SystemTime)>,
    stale_deadline: Option<Instant>,
    serving_stale: bool,
    queue: FetchQueue,
    /// The stream epoch the in-flight fetch started under.
    in_flight: Option<u64>,
    replay: Vec<MarathonEvent>,
    replay_bytes: usize,
    replay_overflow: bool,
    epoch: u64,
    stream: Stream,
    fetch_backoff: Backoff,
    stream_backoff: Backoff,
    fetch_log: ErrorLog,
    stream_log: ErrorLog,
    /// When the periodic full resync is due; pushed back by every successful full fetch.
    next_periodic: Option<Instant>,
    started: bool,
    /// A redirected empty answer was held back; the next full answer decides.
    empty_answer_held: bool,
}

impl<R: rand::Rng> Driver<R> {
    /// `stale` is the `--state-dir` snapshot, if one was loaded. `rng` jitters the delays.
    pub fn new(
        cfg: DriverConfig,
        status: MarathonStatusHandle,
        stale: Option<(AppsSnapshot, SystemTime)>,
        rng: R,
    ) -> Self {
        Driver {
            fetch_backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            stream_backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            cfg,
            status,
            rng,
            current: None,
            stale,
            stale_deadline: None,
            serving_stale: false,
            queue: FetchQueue::default(),
            in_flight: None,
            replay: Vec::new(),
            replay_bytes: 0,
            replay_overflow: false,
            epoch: 0,
            stream: Stream::Down { reconnect_at: None },
            fetch_log: ErrorLog::new("fetch"),
            stream_log: ErrorLog::new("event stream"),
            next_periodic: None,
            started: false,
            empty_answer_held: false,
        }
    }

    /// The current snapshot (the last one published).
    pub fn current(&self) -> Option<&Arc<AppsSnapshot>> {
        self.current.as_ref()
    }

    /// A fetch is in flight.
    pub fn fetch_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Bytes of events buffered for replay now.
    pub fn replay_bytes(&self) -> usize {
        self.replay_bytes
    }

    /// When the driver next wants an [`Input::Tick`] (`None`: only on other input).
    pub fn next_deadline(&self) -> Option<Instant> {
        let fetch = if self.in_flight.is_none() {
            self.queue.due
        } else {
            None
        };
        let reconnect = match self.stream {
            Stream::Down { reconnect_at } => reconnect_at,
            _ => None,
        };
        [fetch, reconnect, self.next_periodic, self.stale_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Feeds one input at `now`; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Start => self.start(now, &mut out),
            Input::Stream(records) => self.on_stream(records, now, &mut out),
            Input::FetchDone(outcome) => {
                let epoch = self.in_flight.take().unwrap_or(self.epoch);
                self.finish(outcome, epoch, now, &mut out);
                if self.current.is_none() && self.stale.is_some() {
                    // The first fetch failed: serve the saved state now.
                    self.serve_stale(now, &mut out);
                }
            }
            Input::FetchLost => {
                self.in_flight = None;
                self.replay_clear();
                self.retry_later(FetchJob::Full, now);
            }
            Input::ResyncRequested => {
                tracing::info!("Marathon resync requested");
                self.queue.full(now);
            }
            Input::Tick => {}
        }
        self.poll(now, &mut out);
        self.status
            .set_fetch_pending(self.in_flight.is_some() || self.queue.due.is_some());
        out
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.started {
            return;
        }
        self.started = true;
        self.queue.full(now);
        if self.stale.is_some() {
            self.stale_deadline = Some(now + self.cfg.connect_timeout);
        }
        self.next_periodic = Some(now + self.periodic_delay());
        self.stream = Stream::Opening { since: now };
        out.push(Action::ConnectStream);
    }

    /// Fires every deadline that has passed.
    fn poll(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.started {
            return;
        }
        if self.stale_deadline.is_some_and(|d| d <= now) {
            self.stale_deadline = None;
            if self.current.is_none() {
                self.serve_stale(now, out);
            }
        }
        if self.next_periodic.is_some_and(|d| d <= now) {
            self.queue.full(now);
            self.next_periodic = Some(now + self.periodic_delay());
        }
        if let Stream::Down {
            reconnect_at: Some(at),
        } = self.stream
        {
            if at <= now {
                self.stream = Stream::Opening { since: now };
                out.push(Action::ConnectStream);
            }
        }
        if self.in_flight.is_none() && self.queue.due.is_some_and(|d| d <= now) {
            self.start_fetch(out);
        }
    }

    fn periodic_delay(&mut self) -> Duration {
        jittered(self.cfg.resync_interval, 0.15, &mut self.rng)
    }

    fn serve_stale(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.stale_deadline = None;
        if let Some((snapshot, as_of)) = self.stale.take() {
            let snap = Arc::new(snapshot);
            self.current = Some(snap.clone());
            self.serving_stale = true;
            out.push(Action::Publish {
                snapshot: SourceSnapshot {
                    apps: snap,
                    origin: Origin::StateDir,
                    observed_at: now,
                },
                stale_as_of: Some(as_of),
            });
        }
    }

    fn emit(
        &mut self,
        snap: Arc<AppsSnapshot>,
        origin: Origin,
        observed_at: Instant,
        out: &mut Vec<Action>,
    ) {
        self.current = Some(snap.clone());
        self.serving_stale = false;
        out.push(Action::Publish {
            snapshot: SourceSnapshot {
                apps: snap,
                origin,
                observed_at,
            },
            stale_as_of: None,
        });
    }

    fn replay_clear(&mut self) {
        self.replay = Vec::new();
        self.replay_bytes = 0;
        self.replay_overflow = false;
    }

    fn on_stream(&mut self, records: Vec<StreamRecord>, now: Instant, out: &mut Vec<Action>) {
        // Apply the whole batch, then emit once.
        let mut changed_at: Option<Instant> = None;
        let mut snap = self.current.clone();
        for record in records {
            match record {
                StreamRecord::Connected { url } => {
                    let since = match self.stream {
                        Stream::Opening { since } | Stream::Up { since } => since,
                        Stream::Down { .. } => now,
                    };
                    self.stream = Stream::Up { since };
                    self.epoch += 1;
                    self.status.set_sse(true, Some(url.clone()));
                    self.stream_log.ok(&url);
                    tracing::info!(url = %url, "Marathon event stream connected");
                    // Events missed while disconnected are never replayed by Marathon.
                    self.queue.full(now);
                }
                StreamRecord::Closed { error } => self.stream_closed(&error, now, out),
                StreamRecord::Event {
                    event,
                    received,
                    bytes,
                } => {
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
                    match &fx.pod_refetch {
                        PodRefetch::None => {}
                        PodRefetch::Pods(ids) => self.queue.pods(ids, debounced),
                        PodRefetch::All => self.queue.all_pods(debounced),
                    }
                    if self.in_flight.is_some() && is_task_event(&event) {
                        self.buffer_for_replay(event, bytes);
                    }
                }
            }
        }
        if let (Some(at), Some(s)) = (changed_at, snap) {
            self.emit(s, Origin::MarathonEvent, at, out);
        }
    }

    /// Keeps `event` for replay onto the in-flight fetch; past the byte bound the buffer is
    /// dropped (its memory freed) and a full resync follows the fetch.
    fn buffer_for_replay(&mut self, event: MarathonEvent, bytes: usize) {
        if self.replay_overflow {
            return;
        }
        self.replay_bytes = self
            .replay_bytes
            .saturating_add(bytes.saturating_add(EVENT_OVERHEAD_BYTES));
        if self.replay_bytes > self.cfg.max_replay_bytes {
            tracing::warn!(
                max_bytes = self.cfg.max_replay_bytes,
                events = self.replay.len() + 1,
                "events buffered during a Marathon fetch exceed the replay bound; dropping them and fetching everything again"
            );
            self.replay = Vec::new();
            self.replay_bytes = 0;
            self.replay_overflow = true;
        } else {
            self.replay.push(event);
        }
    }

    fn stream_closed(&mut self, error: &FetchError, now: Instant, out: &mut Vec<Action>) {
        match self.stream {
            Stream::Up { since } => {
                self.status.set_sse(false, None);
                if now.saturating_duration_since(since) >= self.cfg.healthy_after {
                    self.stream_backoff.reset();
                }
            }
            Stream::Opening { .. } => out.push(Action::RotateEndpoint),
            Stream::Down { .. } => {}
        }
        self.stream_log.failed(&self.status, error);
        let delay = self.stream_backoff.next_delay(&mut self.rng);
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting the Marathon event stream"
        );
        self.stream = Stream::Down {
            reconnect_at: Some(now + delay),
        };
    }

    fn start_fetch(&mut self, out: &mut Vec<Action>) {
        if self.current.is_none() && !self.queue.full && self.queue.partial() {
            self.queue.full = true; // no base to patch yet
        }
        let Some(job) = self.queue.take() else {
            return;
        };
        self.replay_clear();
        self.in_flight = Some(self.epoch);
        out.push(Action::Fetch(job));
    }

    fn retry_later(&mut self, job: FetchJob, now: Instant) {
        let at = now + self.fetch_backoff.next_delay(&mut self.rng);
        match job {
            FetchJob::Full => self.queue.full(at),
            FetchJob::Apps(apps) => self.queue.apps(&apps, at),
            FetchJob::Pods(pods) => self.queue.pods(&pods, at),
            FetchJob::AllPods => self.queue.all_pods(at),
        }
    }

    /// An empty full answer through a redirect, over a non-empty snapshot, not yet confirmed.
    fn holds_back(&self, f: &FullFetch) -> bool {
        f.redirected
            && f.snapshot.apps.is_empty()
            && f.snapshot.pods.is_empty()
            && !self.empty_answer_held
            && self
                .current
                .as_ref()
                .is_some_and(|c| !c.apps.is_empty() || !c.pods.is_empty())
    }

    /// The end of a fetch of apps or pods one by one: each result is applied to a copy of the
    /// current snapshot with `apply` (which says whether it changed anything), failures are
    /// retried later as `retry(ids)`, the buffered events are replayed on top, and the snapshot
    /// is emitted if it changed.
    #[allow(clippy::too_many_arguments)]
    fn finish_one_by_one<T>(
        &mut self,
        results: Vec<OneOutcome<T>>,
        url: String,
        replay: &[MarathonEvent],
        retry: fn(Vec<String>) -> FetchJob,
        now: Instant,
        out: &mut Vec<Action>,
        mut apply: impl FnMut(&mut Self, &mut Arc<AppsSnapshot>, &str, T) -> bool,
    ) {
        let Some(mut snap) = self.current.clone() else {
            self.queue.full(now);
            return;
        };
        let mut changed = false;
        let mut observed = None;
        let mut failed = Vec::new();
        for (id, r) in results {
            match r {
                Ok((fetch, at)) => {
                    observed.get_or_insert(at);
                    changed |= apply(self, &mut snap, &id, fetch);
                }
                Err(e) => {
                    self.fetch_log.failed(&self.status, &e);
                    failed.push(id);
                }
            }
        }
        if failed.is_empty() {
            self.fetch_log.ok(&url);
            self.fetch_backoff.reset();
        } else {
            self.retry_later(retry(failed), now);
        }
        for e in replay {
            changed |= apply_event(&mut snap, e).changed;
        }
        if changed {
            self.emit(snap, Origin::MarathonEvent, observed.unwrap_or(now), out);
        }
    }

    fn finish(&mut self, outcome: FetchOutcome, epoch: u64, now: Instant, out: &mut Vec<Action>) {
        let replay = std::mem::take(&mut self.replay);
        self.replay_bytes = 0;
        if std::mem::take(&mut self.replay_overflow) {
            self.queue.full(now);
        }
        match outcome {
            FetchOutcome::Full(Err(e)) => {
                self.fetch_log.failed(&self.status, &e);
                self.retry_later(FetchJob::Full, now);
            }
            FetchOutcome::Full(Ok(f)) if self.holds_back(&f) => {
                tracing::warn!(
                    url = %f.url,
                    apps = self.current.as_ref().map_or(0, |c| c.apps.len()),
                    "a redirected Marathon answer has no apps: keeping the current snapshot until a second full fetch confirms it"
                );
                self.empty_answer_held = true;
                self.queue.full(now + self.cfg.event_debounce);
            }
            FetchOutcome::Full(Ok(f)) => {
                self.empty_answer_held = false;
                self.fetch_log.ok(&f.url);
                self.fetch_backoff.reset();
                self.next_periodic = Some(now + self.periodic_delay());
                self.status.synced(true);
                if matches!(self.stream, Stream::Up { .. }) && epoch == self.epoch {
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
                self.stale_deadline = None;
                if self.serving_stale {
                    tracing::info!(
                        apps = snap.apps.len(),
                        "Marathon reached: the stale state is replaced"
                    );
                }
                let unchanged = !self.serving_stale
                    && self.current.as_deref().is_some_and(|c| same_apps(c, &snap));
                if !unchanged {
                    self.emit(snap, Origin::MarathonFull, f.fetched_at, out);
                }
                out.push(Action::Persist(StateBodies {
                    apps: f.body,
                    pods: f.pods_body,
                }));
            }
            FetchOutcome::Apps { results, url } => {
                self.finish_one_by_one(results, url, &replay, FetchJob::Apps, now, out, |d, snap, id, fetch| {
                    // A fetched app counts as a sync (`vipd_source_fetches_total{scope="app"}`).
                    d.status.synced(false);
                    match fetch {
                        AppFetch::Found(app) => replace_app(snap, id, Some(*app)),
                        AppFetch::Gone => replace_app(snap, id, None),
                        AppFetch::Rejected(r) => {
                            tracing::warn!(app = %id, reason = %r.message, "malformed app; fetching everything");
                            d.queue.full(now);
                            false
                        }
                    }
                });
            }
            FetchOutcome::Pods { results, url } => {
                self.finish_one_by_one(results, url, &replay, FetchJob::Pods, now, out, |d, snap, id, fetch| {
                    match fetch {
                        PodFetch::Found(pod) => replace_pod(snap, id, Some(*pod)),
                        PodFetch::Gone => replace_pod(snap, id, None),
                        PodFetch::Rejected(r) => {
                            tracing::warn!(pod = %id, reason = %r.message, "malformed pod; fetching everything");
                            d.queue.full(now);
                            false
                        }
                    }
                });
            }
            FetchOutcome::AllPods(Err(e)) => {
                self.fetch_log.failed(&self.status, &e);
                self.retry_later(FetchJob::AllPods, now);
            }
            FetchOutcome::AllPods(Ok(fetched)) => {
                let Some(mut snap) = self.current.clone() else {
                    self.queue.full(now);
                    return;
                };
                self.fetch_backoff.reset();
                let mut changed = replace_all_pods(&mut snap, fetched.pods);
                for e in &replay {
                    changed |= apply_event(&mut snap, e).changed;
                }
                if changed {
                    self.emit(snap, Origin::MarathonEvent, fetched.fetched_at, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
