//! UDP runtime counters: per frontend ([`UdpFrontendStats`]) and per backend
//! ([`UdpBackendStats`], datagram counts; bytes go to the byte counters of the UDP backend's
//! [`BackendStats`](crate::balance::BackendStats), keyed by protocol and address like TCP's).
//!
//! Owns: the atomics and their registries, keyed like the TCP ones (frontend key, backend address)
//! so that they survive table swaps, and the `snapshot()` copies the metrics work will read.
//!
//! Must not: decide anything, read the table, or do I/O. Counters are relaxed atomics bumped by
//! the one receive loop of a frontend and by its flows' return tasks.

use crate::table::FrontendKey;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// Counters of one UDP frontend. All monotonic except `flows_active`.
#[derive(Debug, Default)]
pub struct UdpFrontendStats {
    pub(crate) flows_active: AtomicU64,
    pub(crate) flows_created: AtomicU64,
    pub(crate) flows_expired: AtomicU64,
    /// Flows closed because the frontend left the table or the data plane shut down.
    pub(crate) flows_closed: AtomicU64,
    /// A flow moved to another backend (its backend left the table, became ineligible, or
    /// answered with an ICMP error).
    pub(crate) flows_repicked: AtomicU64,
    /// Datagrams received from clients on the frontend socket.
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    /// Datagrams sent to backends.
    pub(crate) datagrams_to_backends: AtomicU64,
    /// Replies sent back to clients.
    pub(crate) datagrams_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Datagrams of new clients dropped because the frontend had `--udp-max-flows` flows.
    pub(crate) dropped_by_cap: AtomicU64,
    /// Datagrams of new clients dropped because the process-wide flow budget was spent.
    pub(crate) dropped_by_budget: AtomicU64,
    /// Datagrams dropped because no backend was eligible (or the frontend was not in the table).
    pub(crate) dropped_no_backend: AtomicU64,
    /// Datagrams to a backend dropped because the upstream socket's send buffer was full.
    pub(crate) dropped_upstream_full: AtomicU64,
    /// Replies dropped because the frontend socket's send buffer was full.
    pub(crate) dropped_reply_full: AtomicU64,
    /// Datagrams or replies dropped on any other send error (ICMP errors, local errors).
    pub(crate) dropped_send_error: AtomicU64,
    /// Datagrams the kernel dropped on the frontend socket because its receive queue was full
    /// (`SO_RXQ_OVFL`; updated when the next datagram is read).
    pub(crate) dropped_kernel_rx: AtomicU64,
    /// Errors (ICMP unreachable and friends) seen on upstream sockets.
    pub(crate) upstream_errors: AtomicU64,
    /// Upstream sockets that could not be opened (local errors such as EMFILE).
    pub(crate) upstream_open_errors: AtomicU64,
    /// Errors receiving on the frontend socket (the loop continues).
    pub(crate) recv_errors: AtomicU64,
}

/// A point-in-time copy of [`UdpFrontendStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UdpFrontendStatsSnapshot {
    pub flows_active: u64,
    pub flows_created: u64,
    pub flows_expired: u64,
    pub flows_closed: u64,
    pub flows_repicked: u64,
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_to_backends: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    pub dropped_by_cap: u64,
    pub dropped_by_budget: u64,
    pub dropped_no_backend: u64,
    pub dropped_upstream_full: u64,
    pub dropped_reply_full: u64,
    pub dropped_send_error: u64,
    pub dropped_kernel_rx: u64,
    pub upstream_errors: u64,
    pub upstream_open_errors: u64,
    pub recv_errors: u64,
}

impl UdpFrontendStatsSnapshot {
    /// Every datagram dropped, wherever (cap, no backend, full buffers, errors, kernel queue).
    pub fn dropped(&self) -> u64 {
        self.dropped_by_cap
            + self.dropped_by_budget
            + self.dropped_no_backend
            + self.dropped_upstream_full
            + self.dropped_reply_full
            + self.dropped_send_error
            + self.dropped_kernel_rx
    }
}

impl UdpFrontendStats {
    pub fn snapshot(&self) -> UdpFrontendStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Relaxed);
        UdpFrontendStatsSnapshot {
            flows_active: l(&self.flows_active),
            flows_created: l(&self.flows_created),
            flows_expired: l(&self.flows_expired),
            flows_closed: l(&self.flows_closed),
            flows_repicked: l(&self.flows_repicked),
            datagrams_in: l(&self.datagrams_in),
            bytes_in: l(&self.bytes_in),
            datagrams_to_backends: l(&self.datagrams_to_backends),
            datagrams_out: l(&self.datagrams_out),
            bytes_out: l(&self.bytes_out),
            dropped_by_cap: l(&self.dropped_by_cap),
            dropped_by_budget: l(&self.dropped_by_budget),
            dropped_no_backend: l(&self.dropped_no_backend),
            dropped_upstream_full: l(&self.dropped_upstream_full),
            dropped_reply_full: l(&self.dropped_reply_full),
            dropped_send_error: l(&self.dropped_send_error),
            dropped_kernel_rx: l(&self.dropped_kernel_rx),
            upstream_errors: l(&self.upstream_errors),
            upstream_open_errors: l(&self.upstream_open_errors),
            recv_errors: l(&self.recv_errors),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// Datagram counts of one backend address (UDP only; bytes are in `BackendStats`).
#[derive(Debug, Default)]
pub struct UdpBackendStats {
    pub(crate) datagrams_to_backend: AtomicU64,
    pub(crate) datagrams_from_backend: AtomicU64,
}

/// A point-in-time copy of [`UdpBackendStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UdpBackendStatsSnapshot {
    pub datagrams_to_backend: u64,
    pub datagrams_from_backend: u64,
}

impl UdpBackendStats {
    pub fn snapshot(&self) -> UdpBackendStatsSnapshot {
        UdpBackendStatsSnapshot {
            datagrams_to_backend: self.datagrams_to_backend.load(Relaxed),
            datagrams_from_backend: self.datagrams_from_backend.load(Relaxed),
        }
    }
}

/// Every UDP frontend's and backend's counters. Entries are pruned at reconcile when their key is
/// gone from the table and nothing holds them any more.
#[derive(Debug, Default)]
pub struct UdpStatsRegistry {
    frontends: RwLock<HashMap<FrontendKey, Arc<UdpFrontendStats>>>,
    backends: RwLock<HashMap<SocketAddr, Arc<UdpBackendStats>>>,
}

impl UdpStatsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn frontend(&self, key: &FrontendKey) -> Option<Arc<UdpFrontendStats>> {
        let map = self.frontends.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    pub fn backend(&self, addr: &SocketAddr) -> Option<Arc<UdpBackendStats>> {
        let map = self.backends.read().unwrap_or_else(|e| e.into_inner());
        map.get(addr).cloned()
    }

    pub(crate) fn frontend_or_insert(&self, key: FrontendKey) -> Arc<UdpFrontendStats> {
        if let Some(s) = self.frontend(&key) {
            return s;
        }
        let mut map = self.frontends.write().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().clone()
    }

    /// Called when a flow picks a backend (not per datagram).
    pub(crate) fn backend_or_insert(&self, addr: SocketAddr) -> Arc<UdpBackendStats> {
        if let Some(s) = self.backend(&addr) {
            return s;
        }
        let mut map = self.backends.write().unwrap_or_else(|e| e.into_inner());
        map.entry(addr).or_default().clone()
    }

    /// Drops entries whose key is not kept and that nobody else holds. Returns how many.
    pub(crate) fn prune(
        &self,
        frontends: &HashSet<FrontendKey>,
        backends: &HashSet<SocketAddr>,
    ) -> usize {
        let mut n = 0;
        {
            let mut map = self.frontends.write().unwrap_or_else(|e| e.into_inner());
            let before = map.len();
            map.retain(|k, s| frontends.contains(k) || Arc::strong_count(s) > 1);
            n += before - map.len();
        }
        let mut map = self.backends.write().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|a, s| backends.contains(a) || Arc::strong_count(s) > 1);
        n + before - map.len()
    }

    /// Every UDP frontend's counters, sorted by key.
    pub fn frontends_snapshot(&self) -> Vec<(FrontendKey, UdpFrontendStatsSnapshot)> {
        let map = self.frontends.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map.iter().map(|(k, s)| (*k, s.snapshot())).collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }

    /// Every backend's UDP datagram counts, sorted by address.
    pub fn backends_snapshot(&self) -> Vec<(SocketAddr, UdpBackendStatsSnapshot)> {
        let map = self.backends.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map.iter().map(|(a, s)| (*a, s.snapshot())).collect();
        out.sort_by_key(|(a, _)| *a);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Protocol;

    #[test]
    fn prune_keeps_listed_and_held_entries() {
        let reg = UdpStatsRegistry::new();
        let key = FrontendKey {
            protocol: Protocol::Udp,
            listen: "127.0.0.1:53".parse().unwrap(),
        };
        let held = reg.frontend_or_insert(key);
        let b: SocketAddr = "127.0.0.1:1".parse().unwrap();
        drop(reg.backend_or_insert(b));
        assert_eq!(
            reg.prune(&HashSet::new(), &HashSet::new()),
            1,
            "backend goes"
        );
        UdpFrontendStats::add(&held.datagrams_in, 3);
        drop(held);
        assert_eq!(reg.frontends_snapshot()[0].1.datagrams_in, 3);
        assert_eq!(reg.prune(&HashSet::new(), &HashSet::new()), 1);
        assert!(reg.frontend(&key).is_none());
    }
}
