//! Shared, cheap status of the Marathon source, for metrics and the admin API.
//!
//! Owns: [`MarathonStatusHandle`] (atomics plus two small mutexes, cloned freely) and the plain
//! [`MarathonStatus`] copy it hands out. URLs in it are always redacted.
//!
//! Must not: log, block for long (every lock is held for a field copy), or hold credentials.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Why a sync with Marathon failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncErrorKind {
    /// TCP/TLS connect failed or the connection broke before a response.
    Connect,
    /// Connect, request or stream-liveness timeout.
    Timeout,
    /// A non-success HTTP status (5xx, unexpected 404, redirect loop).
    HttpStatus,
    /// 401/403, or the token file could not be read.
    Unauthorized,
    /// The body was not a usable Marathon document.
    Parse,
    /// The event stream broke or was closed by the server.
    Stream,
}

impl SyncErrorKind {
    pub const ALL: [SyncErrorKind; 6] = [
        SyncErrorKind::Connect,
        SyncErrorKind::Timeout,
        SyncErrorKind::HttpStatus,
        SyncErrorKind::Unauthorized,
        SyncErrorKind::Parse,
        SyncErrorKind::Stream,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncErrorKind::Connect => "connect",
            SyncErrorKind::Timeout => "timeout",
            SyncErrorKind::HttpStatus => "http_status",
            SyncErrorKind::Unauthorized => "unauthorized",
            SyncErrorKind::Parse => "parse",
            SyncErrorKind::Stream => "stream",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for SyncErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A copy of the status at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MarathonStatus {
    /// The event stream is connected.
    pub sse_connected: bool,
    /// A full fetch that started after the current stream connected has completed: events and
    /// snapshot are consistent.
    pub stream_synced: bool,
    /// A fetch is in flight or queued.
    pub fetch_pending: bool,
    /// The Marathon URL API calls go to (redacted).
    pub current_url: String,
    /// Where the event stream is connected, after redirects (redacted).
    pub stream_url: Option<String>,
    pub last_successful_sync: Option<SystemTime>,
    /// Age of the data in the last emitted snapshot (for a state-dir snapshot: of the file).
    pub snapshot_age: Option<Duration>,
    /// The last emitted snapshot came from `--state-dir` (Marathon not reached yet).
    pub serving_stale_state: bool,
    /// Sync errors by kind, in [`SyncErrorKind::ALL`] order.
    pub errors: Vec<(SyncErrorKind, u64)>,
    pub events_applied: u64,
    pub events_ignored: u64,
    pub full_fetches: u64,
    pub app_fetches: u64,
    pub snapshots_emitted: u64,
}

impl MarathonStatus {
    pub fn errors_of(&self, kind: SyncErrorKind) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

#[derive(Debug, Default)]
struct Inner {
    sse_connected: AtomicBool,
    stream_synced: AtomicBool,
    fetch_pending: AtomicBool,
    serving_stale_state: AtomicBool,
    urls: Mutex<(String, Option<String>)>,
    last_sync: Mutex<Option<SystemTime>>,
    data_as_of: Mutex<Option<SystemTime>>,
    errors: [AtomicU64; 6],
    events_applied: AtomicU64,
    events_ignored: AtomicU64,
    full_fetches: AtomicU64,
    app_fetches: AtomicU64,
    snapshots_emitted: AtomicU64,
}

/// Cloneable handle on the source's status.
#[derive(Debug, Clone, Default)]
pub struct MarathonStatusHandle {
    inner: Arc<Inner>,
}

impl MarathonStatusHandle {
    pub fn get(&self) -> MarathonStatus {
        let i = &self.inner;
        let (current_url, stream_url) = i.urls.lock().map(|u| u.clone()).unwrap_or_default();
        let now = SystemTime::now();
        let age = |t: Option<SystemTime>| t.map(|t| now.duration_since(t).unwrap_or_default());
        MarathonStatus {
            sse_connected: i.sse_connected.load(Ordering::Relaxed),
            stream_synced: i.stream_synced.load(Ordering::Relaxed),
            fetch_pending: i.fetch_pending.load(Ordering::Relaxed),
            current_url,
            stream_url,
            last_successful_sync: *i.last_sync.lock().expect("status lock"),
            snapshot_age: age(*i.data_as_of.lock().expect("status lock")),
            serving_stale_state: i.serving_stale_state.load(Ordering::Relaxed),
            errors: SyncErrorKind::ALL
                .iter()
                .map(|k| (*k, i.errors[k.index()].load(Ordering::Relaxed)))
                .collect(),
            events_applied: i.events_applied.load(Ordering::Relaxed),
            events_ignored: i.events_ignored.load(Ordering::Relaxed),
            full_fetches: i.full_fetches.load(Ordering::Relaxed),
            app_fetches: i.app_fetches.load(Ordering::Relaxed),
            snapshots_emitted: i.snapshots_emitted.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn error(&self, kind: SyncErrorKind) {
        self.inner.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn set_sse(&self, connected: bool, url: Option<String>) {
        self.inner.sse_connected.store(connected, Ordering::Relaxed);
        if !connected {
            self.inner.stream_synced.store(false, Ordering::Relaxed);
        }
        if let Ok(mut u) = self.inner.urls.lock() {
            u.1 = url;
        }
    }
    pub(crate) fn set_stream_synced(&self, v: bool) {
        self.inner.stream_synced.store(v, Ordering::Relaxed);
    }
    pub(crate) fn set_fetch_pending(&self, v: bool) {
        self.inner.fetch_pending.store(v, Ordering::Relaxed);
    }
    pub(crate) fn set_current_url(&self, url: String) {
        if let Ok(mut u) = self.inner.urls.lock() {
            u.0 = url;
        }
    }
    pub(crate) fn synced(&self, full: bool) {
        let now = SystemTime::now();
        *self.inner.last_sync.lock().expect("status lock") = Some(now);
        if full {
            self.inner.full_fetches.fetch_add(1, Ordering::Relaxed);
        } else {
            self.inner.app_fetches.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub(crate) fn emitted(&self, data_as_of: SystemTime, stale: bool) {
        *self.inner.data_as_of.lock().expect("status lock") = Some(data_as_of);
        self.inner
            .serving_stale_state
            .store(stale, Ordering::Relaxed);
        self.inner.snapshots_emitted.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn event(&self, applied: bool) {
        if applied {
            self.inner.events_applied.fetch_add(1, Ordering::Relaxed);
        } else {
            self.inner.events_ignored.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_kinds() {
        let h = MarathonStatusHandle::default();
        h.error(SyncErrorKind::Unauthorized);
        h.error(SyncErrorKind::Unauthorized);
        h.event(true);
        h.event(false);
        h.synced(true);
        let s = h.get();
        assert_eq!(s.errors_of(SyncErrorKind::Unauthorized), 2);
        assert_eq!(s.errors_of(SyncErrorKind::Parse), 0);
        assert_eq!(
            (s.events_applied, s.events_ignored, s.full_fetches),
            (1, 1, 1)
        );
        assert!(s.last_successful_sync.is_some());
        assert_eq!(SyncErrorKind::HttpStatus.to_string(), "http_status");
    }
}
