//! Per-backend runtime state: plain atomics that outlive every table swap.
//!
//! Owns: [`BackendStats`] and the [`BackendRegistry`] (keyed by [`BackendKey`]: protocol AND
//! address, so a TCP and a UDP service on one `ip:port` have separate counters, ejection and
//! verdicts), and the connect-failure classes ([`ConnectFailure`]). A key keeps the same `Arc`
//! for as long as it is in the registry, so counters carry over when a new table is published.
//! Entries are pruned only when a new table's routes are built, and only when the key is in no
//! frontend of that table AND nothing is using it (zero active).
//!
//! Health runtime state lives here too, next to the counters it is derived from: each
//! [`BackendStats`] runs the pure passive-ejection machine ([`crate::health::outlier`]) behind
//! its own small mutex (taken only when a connect fails, or succeeds after failures or an
//! ejection: never per pick), and publishes what selection needs as atomics (`ejected until`,
//! the active-check verdict written by [`crate::control::checker`]). Ejection flips are logged
//! here, once per flip.
//!
//! Must not: pick backends (selection reads these values in [`super::select`]), read the table,
//! or do I/O. Metrics export reads [`BackendRegistry::snapshot`]; nothing here knows about
//! Prometheus. Local faults (`health::fault`) are never recorded here.
//!
//! Connections reach an entry through the route that holds it (no map lookup). A connection
//! still on an older snapshot whose backend was just pruned counts into that orphaned entry,
//! which is no longer exported (the backend left the table).

use crate::health::outlier::{Outlier, OutlierConfig, Transition};
use crate::health::{ActiveState, HealthReason};
use crate::table::Protocol;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

/// Milliseconds since a process-wide epoch, never 0 (0 means "not set" in the atomics below).
pub(crate) fn millis(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| Instant::now() - std::time::Duration::from_secs(1));
    u64::try_from(now.saturating_duration_since(epoch).as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Why a connect to a backend failed. Stable label strings for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectFailure {
    /// The backend answered with a RST (nothing listening).
    Refused,
    /// No answer within `--connect-timeout`.
    Timeout,
    /// Anything else from the backend or the path (unreachable, no route, reset, ...). Local
    /// resource errors are not connect failures (`health::fault`).
    Other,
}

impl ConnectFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Other => "other",
        }
    }

    /// Classifies a connect error (a timeout is classified by the caller, which owns the timer).
    pub fn from_io(err: &std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            std::io::ErrorKind::TimedOut => ConnectFailure::Timeout,
            _ => ConnectFailure::Other,
        }
    }

    /// The passive-health reason an ejection caused by this failure carries.
    pub fn health_reason(self) -> HealthReason {
        match self {
            ConnectFailure::Refused => HealthReason::ConnectRefused,
            ConnectFailure::Timeout => HealthReason::ConnectTimeout,
            ConnectFailure::Other => HealthReason::ConnectOther,
        }
    }

    fn code(self) -> u8 {
        match self {
            ConnectFailure::Refused => 1,
            ConnectFailure::Timeout => 2,
            ConnectFailure::Other => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ConnectFailure::Refused),
            2 => Some(ConnectFailure::Timeout),
            3 => Some(ConnectFailure::Other),
            _ => None,
        }
    }
}

/// Who a backend is for its runtime state: its protocol and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BackendKey {
    pub protocol: Protocol,
    pub address: SocketAddr,
}

impl BackendKey {
    pub fn new(protocol: Protocol, address: SocketAddr) -> Self {
        BackendKey { protocol, address }
    }

    pub fn tcp(address: SocketAddr) -> Self {
        Self::new(Protocol::Tcp, address)
    }

    pub fn udp(address: SocketAddr) -> Self {
        Self::new(Protocol::Udp, address)
    }
}

/// `tcp:127.0.0.1:80`, like a frontend key.
impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.address)
    }
}

// === impl BackendStats ===

/// Runtime counters and health state of one backend address. All counters are monotonic except
/// `active` and `consecutive_failures`.
#[derive(Debug)]
pub struct BackendStats {
    key: BackendKey,
    outlier_config: OutlierConfig,
    /// The passive-ejection machine (its own lock; never taken by a pick).
    outlier: Mutex<Outlier>,
    /// [`millis`] until which the backend is ejected; 0 = not ejected (an expired value reads as
    /// half-open until the next outcome clears it).
    ejected_until: AtomicU64,
    /// [`millis`] when the current ejection started (orders ejections for the max-% rule).
    ejected_since: AtomicU64,
    /// Ejections so far.
    ejections: AtomicU64,
    /// [`ActiveState::code`] of the active checks' verdict.
    active_health: AtomicU8,
    /// [`HealthReason::code`] of the last flip to unhealthy (passive or active); 0 = none.
    health_reason: AtomicU8,
    /// Connections using this backend now, counting connect attempts in flight.
    active: AtomicU64,
    /// Connections established (successful connects), ever.
    total: AtomicU64,
    failures_refused: AtomicU64,
    failures_timeout: AtomicU64,
    failures_other: AtomicU64,
    /// Failed connects since the last successful one (the input of passive ejection, later).
    consecutive_failures: AtomicU64,
    /// [`ConnectFailure::code`] of the last failure; 0 = none yet.
    last_failure: AtomicU8,
    /// Bytes relayed from clients to this backend.
    bytes_to_backend: AtomicU64,
    /// Bytes relayed from this backend to clients.
    bytes_from_backend: AtomicU64,
}

impl Default for BackendStats {
    fn default() -> Self {
        BackendStats::new(
            BackendKey::tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            OutlierConfig::default(),
        )
    }
}

impl BackendStats {
    pub fn new(key: BackendKey, outlier_config: OutlierConfig) -> Self {
        BackendStats {
            key,
            outlier_config,
            outlier: Mutex::new(Outlier::new()),
            ejected_until: AtomicU64::new(0),
            ejected_since: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            active_health: AtomicU8::new(ActiveState::NotChecked.code()),
            health_reason: AtomicU8::new(0),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            failures_refused: AtomicU64::new(0),
            failures_timeout: AtomicU64::new(0),
            failures_other: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            last_failure: AtomicU8::new(0),
            bytes_to_backend: AtomicU64::new(0),
            bytes_from_backend: AtomicU64::new(0),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.key.address
    }

    pub fn key(&self) -> BackendKey {
        self.key
    }

    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures.load(Relaxed)
    }

    /// A connect succeeded (now).
    pub fn record_connected(&self) {
        self.total.fetch_add(1, Relaxed);
        let had_failures = self.consecutive_failures.swap(0, Relaxed) > 0;
        // Common path: no failure streak, no ejection: no lock, no clock.
        if had_failures || self.ejected_until.load(Relaxed) != 0 {
            self.passive_success(Instant::now());
        }
    }

    /// A connect failed (now) for `reason`; may eject the backend.
    pub fn record_failure(&self, reason: ConnectFailure) {
        self.record_failure_at(reason, Instant::now());
    }

    /// [`BackendStats::record_connected`] at a given time (tests step a clock).
    pub fn record_connected_at(&self, now: Instant) {
        self.total.fetch_add(1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.passive_success(now);
    }

    /// [`BackendStats::record_failure`] at a given time (tests step a clock).
    pub fn record_failure_at(&self, reason: ConnectFailure, now: Instant) {
        let counter = match reason {
            ConnectFailure::Refused => &self.failures_refused,
            ConnectFailure::Timeout => &self.failures_timeout,
            ConnectFailure::Other => &self.failures_other,
        };
        counter.fetch_add(1, Relaxed);
        self.consecutive_failures.fetch_add(1, Relaxed);
        self.last_failure.store(reason.code(), Relaxed);
        let transition = {
            let mut outlier = self.outlier.lock().unwrap_or_else(|e| e.into_inner());
            outlier.on_failure(now, &self.outlier_config)
        };
        if let Some(Transition::Ejected {
            since,
            until,
            duration,
            consecutive,
            level,
        }) = transition
        {
            let health_reason = reason.health_reason();
            self.ejected_since.store(millis(since), Relaxed);
            self.ejected_until.store(millis(until), Relaxed);
            self.ejections.fetch_add(1, Relaxed);
            self.health_reason.store(health_reason.code(), Relaxed);
            tracing::warn!(
                backend = %self.key.address,
                protocol = self.key.protocol.as_str(),
                reason = health_reason.as_str(),
                consecutive_failures = consecutive,
                ejection = ?duration,
                backoff_level = level,
                "backend ejected"
            );
        }
    }

    fn passive_success(&self, now: Instant) {
        let transition = {
            let mut outlier = self.outlier.lock().unwrap_or_else(|e| e.into_inner());
            outlier.on_success(now)
        };
        if transition == Some(Transition::Recovered) {
            self.ejected_until.store(0, Relaxed);
            self.ejected_since.store(0, Relaxed);
            tracing::info!(
                backend = %self.key.address,
                protocol = self.key.protocol.as_str(),
                "ejected backend recovered (connect succeeded)"
            );
        }
    }

    /// Whether passive ejection takes this backend out of selection at `now_ms` ([`millis`]).
    /// An expired ejection is half-open: eligible again.
    pub(crate) fn ejected_at(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Relaxed) > now_ms
    }

    /// Cheap check without a clock: whether an ejection (maybe expired) is recorded.
    pub(crate) fn maybe_ejected(&self) -> bool {
        self.ejected_until.load(Relaxed) != 0
    }

    /// Ejected right now, or the active checks say `down`: a UDP flow pinned to this backend
    /// re-picks on its next datagram. Two atomic loads on the common path.
    pub fn excluded_by_health(&self, now: Instant) -> bool {
        (self.maybe_ejected() && self.ejected_at(millis(now)))
            || self.active_health() == ActiveState::Down
    }

    /// When the current ejection started ([`millis`]).
    pub(crate) fn ejected_since(&self) -> u64 {
        self.ejected_since.load(Relaxed)
    }

    /// The active checks' verdict.
    pub fn active_health(&self) -> ActiveState {
        ActiveState::from_code(self.active_health.load(Relaxed))
    }

    /// Written by the active checker; `reason` is kept when the state is `Down`.
    pub fn set_active_health(&self, state: ActiveState, reason: Option<HealthReason>) {
        self.active_health.store(state.code(), Relaxed);
        if let Some(reason) = reason {
            self.health_reason.store(reason.code(), Relaxed);
        }
    }

    /// The relay's byte counters for this backend (client→backend, backend→client).
    pub fn byte_counters(&self) -> (&AtomicU64, &AtomicU64) {
        (&self.bytes_to_backend, &self.bytes_from_backend)
    }

    pub fn snapshot(&self) -> BackendStatsSnapshot {
        BackendStatsSnapshot {
            active: self.active.load(Relaxed),
            total: self.total.load(Relaxed),
            failures_refused: self.failures_refused.load(Relaxed),
            failures_timeout: self.failures_timeout.load(Relaxed),
            failures_other: self.failures_other.load(Relaxed),
            consecutive_failures: self.consecutive_failures.load(Relaxed),
            last_failure: ConnectFailure::from_code(self.last_failure.load(Relaxed)),
            bytes_to_backend: self.bytes_to_backend.load(Relaxed),
            bytes_from_backend: self.bytes_from_backend.load(Relaxed),
            ejected: self.ejected_at(millis(Instant::now())),
            ejections: self.ejections.load(Relaxed),
            active_health: self.active_health(),
            health_reason: HealthReason::from_code(self.health_reason.load(Relaxed)),
        }
    }
}

/// A point-in-time copy of [`BackendStats`] (for the admin API and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackendStatsSnapshot {
    pub active: u64,
    pub total: u64,
    pub failures_refused: u64,
    pub failures_timeout: u64,
    pub failures_other: u64,
    pub consecutive_failures: u64,
    pub last_failure: Option<ConnectFailure>,
    pub bytes_to_backend: u64,
    pub bytes_from_backend: u64,
    /// Passively ejected right now.
    pub ejected: bool,
    /// Ejections so far.
    pub ejections: u64,
    /// The active checks' verdict (`not_checked` without active checks).
    pub active_health: ActiveState,
    /// Why the backend was last found unhealthy by vipd (kept after it recovers).
    pub health_reason: Option<HealthReason>,
}

impl Default for BackendStatsSnapshot {
    fn default() -> Self {
        BackendStats::default().snapshot()
    }
}

impl BackendStatsSnapshot {
    pub fn failures(&self) -> u64 {
        self.failures_refused + self.failures_timeout + self.failures_other
    }

    /// vipd's own verdict: `ejected`, `probe_down`, `probe_pending` or `healthy` (the table's
    /// state is separate).
    pub fn health_state(&self) -> &'static str {
        if self.ejected {
            "ejected"
        } else if self.active_health == ActiveState::Down {
            "probe_down"
        } else if self.active_health == ActiveState::Pending {
            "probe_pending"
        } else {
            "healthy"
        }
    }
}

/// Holds one unit of a backend's `active` count; dropping it gives the unit back.
#[derive(Debug)]
pub struct ActiveBackend {
    stats: Arc<BackendStats>,
}

impl ActiveBackend {
    /// Counts one more active user of `stats`.
    pub(crate) fn begin(stats: Arc<BackendStats>) -> Self {
        stats.active.fetch_add(1, Relaxed);
        ActiveBackend { stats }
    }

    pub fn stats(&self) -> &BackendStats {
        &self.stats
    }
}

impl Drop for ActiveBackend {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

// === impl BackendRegistry ===

/// Runtime state of every backend, by [`BackendKey`], shared by all frontends of that protocol
/// that forward to it.
#[derive(Debug, Default)]
pub struct BackendRegistry {
    entries: RwLock<HashMap<BackendKey, Arc<BackendStats>>>,
    outlier: OutlierConfig,
}

impl BackendRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose entries eject with `outlier`.
    pub fn with_outlier(outlier: OutlierConfig) -> Self {
        BackendRegistry {
            entries: RwLock::default(),
            outlier,
        }
    }

    fn create(&self, key: BackendKey) -> Arc<BackendStats> {
        Arc::new(BackendStats::new(key, self.outlier))
    }

    /// The entry for `key`, created if missing (routes and the active checker hold these).
    pub fn entry(&self, key: BackendKey) -> Arc<BackendStats> {
        if let Some(stats) = self.get(&key) {
            return stats;
        }
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_insert_with(|| self.create(key)).clone()
    }

    /// Takes (or creates) the entry for `key` and counts one more active user of it.
    pub fn begin_connect(&self, key: BackendKey) -> ActiveBackend {
        ActiveBackend::begin(self.entry(key))
    }

    /// The entry for `key`, if any (never creates one).
    pub fn get(&self, key: &BackendKey) -> Option<Arc<BackendStats>> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    /// Creates entries for keys that have none (so the admin API lists backends that never got a
    /// connection).
    pub fn ensure<'a>(&self, keys: impl IntoIterator<Item = &'a BackendKey>) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            map.entry(*key).or_insert_with(|| self.create(*key));
        }
    }

    /// Drops entries not in `keep` that nothing uses any more. Returns how many were dropped.
    pub fn prune(&self, keep: &HashSet<BackendKey>) -> usize {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|key, stats| keep.contains(key) || stats.active.load(Relaxed) > 0);
        before - map.len()
    }

    /// Every entry's counters, sorted by key.
    pub fn snapshot(&self) -> Vec<(BackendKey, BackendStatsSnapshot)> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map.iter().map(|(k, s)| (*k, s.snapshot())).collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> BackendKey {
        BackendKey::tcp(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn same_address_keeps_its_entry_and_active_counts_follow_guards() {
        let reg = BackendRegistry::new();
        let a = reg.begin_connect(addr(1));
        let b = reg.begin_connect(addr(1));
        assert!(std::ptr::eq(a.stats(), b.stats()));
        assert_eq!(reg.get(&addr(1)).unwrap().active(), 2);
        drop(a);
        assert_eq!(reg.get(&addr(1)).unwrap().active(), 1);
        drop(b);
        assert_eq!(reg.get(&addr(1)).unwrap().active(), 0);
    }

    #[test]
    fn prune_keeps_listed_and_busy_entries() {
        let reg = BackendRegistry::new();
        reg.ensure(&[addr(1), addr(2), addr(3)]);
        let busy = reg.begin_connect(addr(2));
        let keep: HashSet<_> = [addr(1)].into_iter().collect();
        assert_eq!(reg.prune(&keep), 1, "only the idle, unlisted addr(3) goes");
        assert!(reg.get(&addr(2)).is_some());
        assert!(reg.get(&addr(3)).is_none());
        drop(busy);
        assert_eq!(reg.prune(&keep), 1);
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn failures_count_by_reason_and_success_resets_the_streak() {
        let stats = BackendStats::default();
        stats.record_failure(ConnectFailure::Refused);
        stats.record_failure(ConnectFailure::Timeout);
        let s = stats.snapshot();
        assert_eq!(
            (s.failures_refused, s.failures_timeout, s.failures()),
            (1, 1, 2)
        );
        assert_eq!(s.consecutive_failures, 2);
        assert_eq!(s.last_failure, Some(ConnectFailure::Timeout));
        stats.record_connected();
        let s = stats.snapshot();
        assert_eq!((s.consecutive_failures, s.total), (0, 1));
        assert_eq!(
            s.last_failure,
            Some(ConnectFailure::Timeout),
            "last reason is kept"
        );
    }

    #[test]
    fn connect_errors_classify() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            ConnectFailure::from_io(&Error::from(ErrorKind::ConnectionRefused)),
            ConnectFailure::Refused
        );
        assert_eq!(
            ConnectFailure::from_io(&Error::from(ErrorKind::TimedOut)),
            ConnectFailure::Timeout
        );
        assert_eq!(
            ConnectFailure::from_io(&Error::from_raw_os_error(libc::EHOSTUNREACH)),
            ConnectFailure::Other
        );
    }
}

#[cfg(test)]
mod protocol_tests {
    use super::*;

    /// Issue 20, finding 3: TCP and UDP backends on the same `ip:port` share one runtime state.
    #[test]
    fn tcp_and_udp_backends_on_the_same_ip_port_have_separate_runtime_state() {
        let reg = BackendRegistry::with_outlier(OutlierConfig {
            eject_after: 1,
            ..OutlierConfig::default()
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], 53));
        let (tcp, udp) = (
            reg.entry(BackendKey::tcp(addr)),
            reg.entry(BackendKey::udp(addr)),
        );
        assert!(!Arc::ptr_eq(&tcp, &udp));
        let _flow = reg.begin_connect(BackendKey::udp(addr));
        tcp.record_failure(ConnectFailure::Refused);
        let (t, u) = (tcp.snapshot(), udp.snapshot());
        assert!(
            t.ejected && !u.ejected,
            "a refusing TCP port does not eject UDP"
        );
        assert_eq!((t.active, u.active), (0, 1));
        assert_eq!(tcp.key().to_string(), "tcp:127.0.0.1:53");
    }
}
