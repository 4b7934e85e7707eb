//! Shared, cheap status of the Mesos source, for metrics and the status page.
//!
//! Owns: [`MesosStatusHandle`] (atomics, cloned freely), written only by the source's shell, and
//! the plain [`MesosStatus`] copy it hands out.
//!
//! Must not: log, lock, or hold a URL or credential.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A copy of the source's status at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MesosStatus {
    /// A `SUBSCRIBE` call is answered and its stream is open.
    pub connected: bool,
    /// The tasks come from `--state-dir`: no master has answered since the start.
    pub serving_stale_state: bool,
    /// Streams opened (answered 200).
    pub subscriptions: u64,
    /// Failed calls and broken, silent or malformed streams.
    pub failures: u64,
    /// Leader redirects followed or refused.
    pub redirects: u64,
    /// Records decoded from the stream (events, heartbeats included).
    pub records: u64,
    /// Tasks in the last publish.
    pub tasks: u64,
    /// Tasks the master reported that were rejected (malformed), in the last publish.
    pub rejected_tasks: u64,
    /// Agents from `recovered_agents` that have not re-registered yet.
    pub recovered_agents_pending: u64,
}

#[derive(Debug, Default)]
struct Inner {
    connected: AtomicBool,
    serving_stale_state: AtomicBool,
    subscriptions: AtomicU64,
    failures: AtomicU64,
    redirects: AtomicU64,
    records: AtomicU64,
    tasks: AtomicU64,
    rejected_tasks: AtomicU64,
    recovered_agents_pending: AtomicU64,
}

/// The source's status, shared between its shell (writer) and the metrics (readers).
#[derive(Debug, Clone, Default)]
pub struct MesosStatusHandle(Arc<Inner>);

impl MesosStatusHandle {
    pub fn get(&self) -> MesosStatus {
        let i = &self.0;
        MesosStatus {
            connected: i.connected.load(Ordering::Relaxed),
            serving_stale_state: i.serving_stale_state.load(Ordering::Relaxed),
            subscriptions: i.subscriptions.load(Ordering::Relaxed),
            failures: i.failures.load(Ordering::Relaxed),
            redirects: i.redirects.load(Ordering::Relaxed),
            records: i.records.load(Ordering::Relaxed),
            tasks: i.tasks.load(Ordering::Relaxed),
            rejected_tasks: i.rejected_tasks.load(Ordering::Relaxed),
            recovered_agents_pending: i.recovered_agents_pending.load(Ordering::Relaxed),
        }
    }

    pub(super) fn connected(&self) {
        self.0.connected.store(true, Ordering::Relaxed);
        self.0.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn disconnected(&self) {
        self.0.connected.store(false, Ordering::Relaxed);
    }

    pub(super) fn failed(&self) {
        self.disconnected();
        self.0.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn redirected(&self) {
        self.0.redirects.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn records(&self, n: usize) {
        self.0.records.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(super) fn serving_stale_state(&self, stale: bool) {
        self.0.serving_stale_state.store(stale, Ordering::Relaxed);
    }

    pub(super) fn published(&self, tasks: usize, rejected: usize, recovered_pending: usize) {
        let i = &self.0;
        i.tasks.store(tasks as u64, Ordering::Relaxed);
        i.rejected_tasks.store(rejected as u64, Ordering::Relaxed);
        i.recovered_agents_pending
            .store(recovered_pending as u64, Ordering::Relaxed);
    }

    pub(super) fn recovered_agents_pending(&self, n: usize) {
        self.0
            .recovered_agents_pending
            .store(n as u64, Ordering::Relaxed);
    }
}
