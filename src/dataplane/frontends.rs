//! Per-frontend runtime counters of the data plane: plain atomics that outlive every table swap.
//!
//! Owns: [`FrontendStats`] and the [`FrontendRegistry`] (keyed by [`FrontendKey`]). A key keeps
//! the same `Arc` for as long as it is in the registry; entries are pruned only at reconcile, and
//! only when the key is in no frontend of the current table AND no connection uses it.
//!
//! Must not: pick backends, read the table, or do I/O. Metrics export reads
//! [`FrontendRegistry::snapshot`]; nothing here knows about Prometheus.

use crate::health::LocalFault;
use crate::table::FrontendKey;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

// === impl FrontendStats ===

/// Runtime counters of one frontend.
#[derive(Debug, Default)]
pub struct FrontendStats {
    accepted: AtomicU64,
    active: AtomicU64,
    /// Connections closed because no backend could be reached (none eligible, or every try failed).
    no_backend: AtomicU64,
    /// Connections cut by a drain timeout or shutdown.
    cut: AtomicU64,
    /// Accept errors by class (resource exhaustion such as EMFILE, or anything else).
    accept_errors_resource: AtomicU64,
    accept_errors_other: AtomicU64,
    /// Connect attempts (TCP) and upstream sockets (UDP) that failed for vipd's own reasons, by
    /// [`LocalFault::index`]. They never count against a backend.
    local_failures: [AtomicU64; LocalFault::ALL.len()],
}

impl FrontendStats {
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Counts an accepted connection; the returned guard holds one unit of `active`.
    pub fn accepted(self: &Arc<Self>) -> ActiveFrontend {
        self.accepted.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        ActiveFrontend {
            stats: self.clone(),
        }
    }

    pub fn record_no_backend(&self) {
        self.no_backend.fetch_add(1, Relaxed);
    }

    pub fn record_cut(&self) {
        self.cut.fetch_add(1, Relaxed);
    }

    pub fn record_accept_error(&self, resource_exhausted: bool) {
        if resource_exhausted {
            self.accept_errors_resource.fetch_add(1, Relaxed);
        } else {
            self.accept_errors_other.fetch_add(1, Relaxed);
        }
    }

    /// A connect attempt or an upstream socket failed for a local reason (not the backend's).
    pub fn record_local_failure(&self, fault: LocalFault) {
        self.local_failures[fault.index()].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> FrontendStatsSnapshot {
        FrontendStatsSnapshot {
            local_failures: std::array::from_fn(|i| self.local_failures[i].load(Relaxed)),
            accepted: self.accepted.load(Relaxed),
            active: self.active.load(Relaxed),
            no_backend: self.no_backend.load(Relaxed),
            cut: self.cut.load(Relaxed),
            accept_errors_resource: self.accept_errors_resource.load(Relaxed),
            accept_errors_other: self.accept_errors_other.load(Relaxed),
        }
    }
}

/// A point-in-time copy of [`FrontendStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FrontendStatsSnapshot {
    pub accepted: u64,
    pub active: u64,
    pub no_backend: u64,
    pub cut: u64,
    pub accept_errors_resource: u64,
    pub accept_errors_other: u64,
    /// Local connect/upstream failures, by [`LocalFault::index`].
    pub local_failures: [u64; LocalFault::ALL.len()],
}

impl FrontendStatsSnapshot {
    /// Local failures of every reason.
    pub fn local_failures_total(&self) -> u64 {
        self.local_failures.iter().sum()
    }

    /// Local failures for `fault`.
    pub fn local_failures_of(&self, fault: LocalFault) -> u64 {
        self.local_failures[fault.index()]
    }
}

/// Holds one unit of a frontend's `active` count.
#[derive(Debug)]
pub struct ActiveFrontend {
    stats: Arc<FrontendStats>,
}

impl ActiveFrontend {
    pub fn stats(&self) -> &FrontendStats {
        &self.stats
    }
}

impl Drop for ActiveFrontend {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

// === impl FrontendRegistry ===

/// Runtime state of every frontend, by key. Survives swaps while the frontend stays in the table
/// (and while a removed frontend still has live connections).
#[derive(Debug, Default)]
pub struct FrontendRegistry {
    entries: RwLock<HashMap<FrontendKey, Arc<FrontendStats>>>,
}

impl FrontendRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get_or_insert(&self, key: FrontendKey) -> Arc<FrontendStats> {
        if let Some(s) = self.get(&key) {
            return s;
        }
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().clone()
    }

    pub fn get(&self, key: &FrontendKey) -> Option<Arc<FrontendStats>> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    /// Drops entries not in `keep` with no active connection. Returns how many were dropped.
    pub fn prune(&self, keep: &HashSet<FrontendKey>) -> usize {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|key, stats| keep.contains(key) || stats.active.load(Relaxed) > 0);
        before - map.len()
    }

    /// Every entry's counters, sorted by key.
    pub fn snapshot(&self) -> Vec<(FrontendKey, FrontendStatsSnapshot)> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map.iter().map(|(k, s)| (*k, s.snapshot())).collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Protocol;
    use std::net::SocketAddr;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn frontend_entries_survive_until_idle_and_unlisted() {
        let reg = FrontendRegistry::new();
        let key = FrontendKey {
            protocol: Protocol::Tcp,
            listen: addr(80),
        };
        let stats = reg.get_or_insert(key);
        let conn = stats.accepted();
        assert!(Arc::ptr_eq(&stats, &reg.get_or_insert(key)));
        assert_eq!(reg.prune(&HashSet::new()), 0, "busy entry stays");
        drop(conn);
        assert_eq!(stats.snapshot().accepted, 1);
        assert_eq!(reg.prune(&HashSet::new()), 1);
    }
}
