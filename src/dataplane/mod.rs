//! The data plane: listeners that follow the published table, and TCP and UDP forwarding.
//!
//! Owns: [`Dataplane`] (the listener manager: [`Dataplane::reconcile`] opens listeners for new
//! frontends and closes removed ones, never rebinding an unchanged frontend), the per-frontend
//! counters ([`frontends`]), the relay ([`relay`]), TCP (`tcp.rs`) and UDP ([`udp`]) forwarding,
//! and graceful shutdown. Configuration: [`DataplaneConfig`] (flags in [`crate::cli::dataplane`]).
//!
//! Lifecycle of a frontend: added → a listener task binds it (retrying with backoff on error) and
//! accepts; removed → it stops accepting at once (the socket is closed), its live connections go
//! on until they close or `--drain-timeout` expires, then they are cut. Shutdown does the same for
//! every frontend with the grace it is given.
//!
//! Must not: build or publish tables, decide which backend is eligible, or talk to Marathon. It
//! only reads the published snapshot (one `load_full` per connection) and keeps its counters
//! outside the table, keyed by frontend key, so that they survive every table swap.
//!
//! Selection: a connection takes its frontend AND that frontend's [`crate::balance::Route`]
//! (policy, Maglev table, the backends' runtime entries) from the one snapshot it loaded, and
//! picks through the route. Option and backend-set changes arrive with the next snapshot; no
//! listener is rebound and nothing in the data plane is updated for them.
//!
//! UDP frontends ([`udp`]) share the listener status, bind backoff and the routes with TCP. A
//! removed UDP frontend closes its socket and its flows at once (their replies need that socket;
//! see [`udp`]); `--drain-timeout` applies to TCP connections only.
//!
//! Upgrades ([`crate::handover`]): a successor adopts the sockets its predecessor handed over
//! ([`Dataplane::adopt`]) for the frontends of its first table, instead of binding them; the
//! predecessor's [`Dataplane::handover_sockets`] duplicates them, and after the handover it
//! drains with [`Dataplane::drain_after_handover`] (TCP as at shutdown; UDP flows idle out,
//! both within `--drain-timeout`).

pub mod frontends;
pub mod listener;
pub mod relay;
mod tcp;
pub mod udp;

pub use frontends::{FrontendRegistry, FrontendStatsSnapshot};
pub use listener::{ListenerState, ListenerStatusHandle};
pub use relay::{CloseReason, RelayConfig, RelayMode};

use crate::balance::BackendRegistry;
use crate::published::{PublishedTable, TableReader};
use crate::table::{FrontendKey, Protocol};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The data plane's settings, resolved from the flags (or built directly in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    pub connect_timeout: Duration,
    /// At least 1.
    pub connect_tries: u32,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    pub drain_timeout: Duration,
    pub listen_backlog: i32,
    /// First delay of the bind retry backoff (not a flag).
    pub bind_retry_initial: Duration,
    /// Cap of the bind retry backoff (not a flag).
    pub bind_retry_max: Duration,
    /// Size of a relay buffer or pipe: the most one chunk moves (not a flag).
    pub relay_buffer_size: usize,
    /// How TCP connections move bytes (`--tcp-relay`). [`RelayMode::Splice`] in a build without
    /// it (see [`RelayMode::SPLICE_AVAILABLE`]) copies, with a warning at [`Dataplane::new`].
    pub tcp_relay: RelayMode,
    /// UDP flows: idle timeout, cap, socket buffer.
    pub udp: udp::UdpConfig,
}

impl DataplaneConfig {
    /// First delay of the bind retry backoff.
    pub const BIND_RETRY_INITIAL: Duration = Duration::from_millis(100);
    /// Cap of the bind retry backoff.
    pub const BIND_RETRY_MAX: Duration = Duration::from_secs(5);
}

/// What [`Dataplane::shutdown`] observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Connections alive when accepting stopped.
    pub live: usize,
    /// Of those, the ones that finished within the grace period.
    pub finished: usize,
    /// Of those, the ones cut when the grace period expired.
    pub cut: usize,
}

/// A frontend the data plane is serving (or trying to bind).
#[derive(Debug)]
struct ListenerEntry {
    /// Stops binding/accepting.
    stop: CancellationToken,
    /// Cancelled when the listener task has closed its socket.
    socket_closed: CancellationToken,
    /// This frontend's connections.
    connections: TaskTracker,
    /// Cuts this frontend's connections.
    cut: CancellationToken,
}

/// The listener manager. Create it inside a tokio runtime; [`Dataplane::reconcile`] spawns tasks.
#[derive(Debug)]
pub struct Dataplane {
    config: DataplaneConfig,
    tables: TableReader,
    listeners: HashMap<FrontendKey, ListenerEntry>,
    /// Sockets of removed frontends that may still be closing (a re-added key waits for them).
    closing: HashMap<FrontendKey, CancellationToken>,
    status: ListenerStatusHandle,
    backends: Arc<BackendRegistry>,
    frontends: Arc<FrontendRegistry>,
    udp_stats: Arc<udp::UdpStatsRegistry>,
    /// Upstream sockets all UDP frontends together may hold (from the descriptor limit).
    flow_budget: Arc<udp::FlowBudget>,
    next_owner: u64,
    /// Parent of every listener's `stop`.
    stop_all: CancellationToken,
    /// Parent of every frontend's `cut`.
    cut_all: CancellationToken,
    /// Listener tasks and drain watchers.
    tasks: TaskTracker,
    /// Every connection task (and, after a handover, every lingering UDP frontend).
    connections: TaskTracker,
    /// Sockets handed over by a predecessor, until the first reconcile adopts them.
    inherited: HashMap<FrontendKey, OwnedFd>,
    /// Cancelled by [`Dataplane::drain_after_handover`]: UDP frontends linger.
    udp_linger: CancellationToken,
}

impl Dataplane {
    pub fn new(config: DataplaneConfig, tables: TableReader) -> Self {
        if config.tcp_relay != RelayMode::Copy && !RelayMode::SPLICE_AVAILABLE {
            tracing::warn!("this build has no splice relay; TCP connections copy instead");
        }
        let flow_budget = udp::FlowBudget::new(config.udp.flow_budget);
        Dataplane {
            config,
            listeners: HashMap::new(),
            closing: HashMap::new(),
            status: ListenerStatusHandle::default(),
            backends: tables.backends(),
            tables,
            frontends: Arc::new(FrontendRegistry::new()),
            udp_stats: Arc::new(udp::UdpStatsRegistry::new()),
            flow_budget,
            next_owner: 0,
            stop_all: CancellationToken::new(),
            cut_all: CancellationToken::new(),
            tasks: TaskTracker::new(),
            connections: TaskTracker::new(),
            inherited: HashMap::new(),
            udp_linger: CancellationToken::new(),
        }
    }

    /// Sockets a predecessor handed over, by frontend: the next reconcile serves each frontend of
    /// its table that has one on it (never binding it anew) and closes the rest.
    pub fn adopt(&mut self, sockets: HashMap<FrontendKey, OwnedFd>) {
        self.inherited.extend(sockets);
    }

    /// A duplicate of every bound frontend socket, for a successor.
    pub fn handover_sockets(&self) -> Vec<(FrontendKey, std::net::SocketAddr, OwnedFd)> {
        self.status.handover_sockets()
    }

    pub fn config(&self) -> &DataplaneConfig {
        &self.config
    }

    /// Reconciles listeners against `published`: opens new frontends, stops accepting on removed
    /// ones (their live connections drain), and leaves unchanged frontends alone (never rebound).
    /// Returns at once: binding happens in spawned tasks, with retry. Must run inside a tokio
    /// runtime. Idempotent: calling it twice with the same table does nothing the second time.
    pub fn reconcile(&mut self, published: &PublishedTable) {
        let table = &published.table;
        let wanted: HashSet<FrontendKey> = table.frontends.iter().map(|f| f.key()).collect();

        // Removed frontends: stop accepting now, drain their connections in the background.
        let removed: Vec<FrontendKey> = self
            .listeners
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        for key in &removed {
            if let Some(entry) = self.listeners.remove(key) {
                self.retire(*key, entry);
            }
        }
        self.closing.retain(|_, closed| !closed.is_cancelled());

        // New frontends.
        // Listener tasks started; each logs its own bind outcome, and the status says it.
        let mut starting = 0usize;
        for frontend in &table.frontends {
            let key = frontend.key();
            if self.listeners.contains_key(&key) {
                continue;
            }
            match key.protocol {
                Protocol::Tcp => {
                    self.open_tcp(key);
                    starting += 1;
                }
                Protocol::Udp => {
                    self.open_udp(key);
                    starting += 1;
                }
            }
        }

        if !self.inherited.is_empty() {
            let unused: Vec<String> = self.inherited.keys().map(|k| k.to_string()).collect();
            tracing::info!(frontends = ?unused, "handed-over sockets of frontends not in this table closed");
            self.inherited.clear();
        }
        // Every listening socket is a descriptor the UDP flows cannot have.
        self.flow_budget.set_listeners(self.listeners.len());

        // Per-frontend counters: drop the unused rest. (Per-backend entries follow the routes;
        // the publisher prunes them.)
        let addrs: HashSet<_> = table
            .frontends
            .iter()
            .flat_map(|f| f.backends.iter().map(|b| b.address))
            .collect();
        let pruned_frontends = self.frontends.prune(&wanted);
        self.udp_stats.prune(&wanted, &addrs);

        if starting > 0 || !removed.is_empty() {
            tracing::info!(
                generation = published.generation,
                starting,
                closed = removed.len(),
                listeners = self.listeners.len(),
                pruned_frontends,
                "listeners reconciled"
            );
        } else {
            tracing::debug!(
                generation = published.generation,
                pruned_frontends,
                "listeners unchanged"
            );
        }
    }

    /// What every listener task of frontend `key` starts from: a new owner id (registered as
    /// `Pending`), its stop token, and the token it cancels when its socket is closed.
    fn listener_task(&mut self, key: FrontendKey, backlog: i32) -> listener::ListenerTask {
        self.next_owner += 1;
        let owner = self.next_owner;
        self.status.insert(key, owner, ListenerState::Pending);
        listener::ListenerTask {
            key,
            owner,
            backlog,
            retry: crate::backoff::Backoff::new(
                self.config.bind_retry_initial,
                self.config.bind_retry_max,
            ),
            status: self.status.clone(),
            stop: self.stop_all.child_token(),
            previous_closed: self.closing.remove(&key),
            socket_closed: CancellationToken::new(),
            inherited: self.inherited.remove(&key),
        }
    }

    fn open_tcp(&mut self, key: FrontendKey) {
        let task = self.listener_task(key, self.config.listen_backlog);
        let (stop, socket_closed) = (task.stop.clone(), task.socket_closed.clone());
        let cut = self.cut_all.child_token();
        let frontend_connections = TaskTracker::new();
        let ctx = Arc::new(tcp::ConnectionContext {
            key,
            tables: self.tables.clone(),
            stats: self.frontends.get_or_insert(key),
            connect_timeout: self.config.connect_timeout,
            connect_tries: self.config.connect_tries.max(1),
            relay: RelayConfig {
                idle_timeout: self.config.idle_timeout,
                max_lifetime: self.config.max_lifetime,
                buffer_size: self.config.relay_buffer_size,
                mode: self.config.tcp_relay,
            },
            connections: self.connections.clone(),
            frontend_connections: frontend_connections.clone(),
            cut: cut.clone(),
        });
        self.tasks.spawn(tcp::run_tcp_listener(task, ctx));
        self.listeners.insert(
            key,
            ListenerEntry {
                stop,
                socket_closed,
                connections: frontend_connections,
                cut,
            },
        );
    }

    /// Opens a UDP frontend: a task binds it (retrying like TCP) and runs its receive loop.
    fn open_udp(&mut self, key: FrontendKey) {
        let task = self.listener_task(key, 0); // the backlog is not used by UDP
        let (stop, socket_closed) = (task.stop.clone(), task.socket_closed.clone());
        let ctx = udp::UdpContext {
            key,
            tables: self.tables.clone(),
            frontend_stats: self.frontends.get_or_insert(key),
            udp_stats: self.udp_stats.clone(),
            flow_budget: self.flow_budget.clone(),
            config: self.config.udp.clone(),
            linger: udp::Linger {
                enabled: self.udp_linger.clone(),
                tracker: self.connections.clone(),
                cut: self.cut_all.child_token(),
            },
        };
        self.tasks.spawn(udp::run_udp_frontend(task, ctx));
        // Flows are not connections: the frontend task owns and closes them, so the drain of a
        // removed UDP frontend has nothing to wait for.
        self.listeners.insert(
            key,
            ListenerEntry {
                stop,
                socket_closed,
                connections: TaskTracker::new(),
                cut: self.cut_all.child_token(),
            },
        );
    }

    /// Stops accepting on a removed frontend and lets its connections drain.
    fn retire(&mut self, key: FrontendKey, entry: ListenerEntry) {
        entry.stop.cancel();
        self.status.remove(&key);
        self.closing.insert(key, entry.socket_closed);
        entry.connections.close();
        let live = entry.connections.len();
        tracing::info!(frontend = %key, live, "frontend removed; stopped accepting, draining");
        // Watch even when `live` is 0: a connection accepted just before the stop may still be
        // joining the tracker.
        let grace = self.config.drain_timeout;
        let shutdown = self.stop_all.clone();
        let (connections, cut) = (entry.connections, entry.cut);
        self.tasks.spawn(async move {
            tokio::select! {
                _ = connections.wait() => {
                    tracing::info!(frontend = %key, "removed frontend drained");
                }
                _ = tokio::time::sleep(grace) => {
                    let remaining = connections.len();
                    cut.cancel();
                    tracing::info!(frontend = %key, cut = remaining, "drain timeout; cutting connections");
                }
                // Shutdown takes over (it cuts everything after its own grace).
                _ = shutdown.cancelled() => {}
            }
        });
    }

    /// Per-frontend listener status, for `/readyz` and DNS.
    pub fn listener_status(&self) -> ListenerStatusHandle {
        self.status.clone()
    }

    /// Per-backend runtime state (keyed by address; survives table swaps).
    pub fn backends(&self) -> Arc<BackendRegistry> {
        self.backends.clone()
    }

    /// Per-frontend runtime counters (accepted, active, ...). For a UDP frontend, `accepted` and
    /// `active` count flows, and `cut` the flows closed by its removal or shutdown.
    pub fn frontends(&self) -> Arc<FrontendRegistry> {
        self.frontends.clone()
    }

    /// UDP counters per frontend (flows, datagrams, drops) and per backend (datagrams).
    pub fn udp_stats(&self) -> Arc<udp::UdpStatsRegistry> {
        self.udp_stats.clone()
    }

    /// The process-wide UDP flow budget (for metrics).
    pub fn flow_budget(&self) -> Arc<udp::FlowBudget> {
        self.flow_budget.clone()
    }

    /// Connections alive now (all frontends, removed ones included).
    pub fn live_connections(&self) -> usize {
        self.connections.len()
    }

    /// Stops accepting everywhere, waits for live connections up to `grace`, then cuts the rest.
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        self.shutdown_or_cut(grace, CancellationToken::new()).await
    }

    /// After a handover to a successor that serves the same sockets: stops accepting and
    /// receiving, waits up to `grace` for live TCP connections to finish and for UDP flows to
    /// idle out (their replies still go out), then cuts the rest. `cut_now` as in
    /// [`Dataplane::shutdown_or_cut`].
    pub async fn drain_after_handover(
        self,
        grace: Duration,
        cut_now: CancellationToken,
    ) -> ShutdownReport {
        self.udp_linger.cancel();
        self.shutdown_or_cut(grace, cut_now).await
    }

    /// [`Dataplane::shutdown`], cutting at once when `cut_now` is cancelled (a second signal).
    pub async fn shutdown_or_cut(
        self,
        grace: Duration,
        cut_now: CancellationToken,
    ) -> ShutdownReport {
        self.stop_all.cancel();
        self.tasks.close();
        // Listener tasks exit promptly once stopped (their sockets close); drain watchers too.
        self.tasks.wait().await;
        self.connections.close();
        let live = self.connections.len();
        if live > 0 {
            tracing::info!(live, grace = ?grace, "data plane shutting down: stopped accepting; waiting for live connections up to the grace period (a second SIGTERM/SIGINT cuts them now)");
        } else {
            tracing::info!(live, "data plane shutting down: stopped accepting");
        }
        let remaining = tokio::select! {
            r = tokio::time::timeout(grace, self.connections.wait()) => match r {
                Ok(()) => 0,
                Err(_) => self.connections.len(),
            },
            _ = cut_now.cancelled() => self.connections.len(),
        };
        if remaining > 0 {
            self.cut_all.cancel();
            // Cut connections end at their next poll; bound the wait anyway.
            if tokio::time::timeout(Duration::from_secs(5), self.connections.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    left = self.connections.len(),
                    "connections still running after cut"
                );
            }
        }
        let remaining = remaining.min(live);
        let report = ShutdownReport {
            live,
            finished: live - remaining,
            cut: remaining,
        };
        tracing::info!(
            live = report.live,
            finished = report.finished,
            cut = report.cut,
            "data plane stopped"
        );
        report
    }
}

impl Drop for Dataplane {
    /// Dropped without [`Dataplane::shutdown`]: stop accepting and cut everything at once.
    fn drop(&mut self) {
        self.stop_all.cancel();
        self.cut_all.cancel();
    }
}
