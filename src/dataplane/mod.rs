//! The data plane: listeners that follow the published table, and TCP and UDP forwarding.
//!
//! Owns: [`Dataplane`] (the listener manager: [`Dataplane::reconcile`] opens listeners for new
//! frontends and closes removed ones, never rebinding an unchanged frontend), per-backend and
//! per-frontend runtime state ([`backends`]), backend selection ([`select`]), the relay
//! ([`relay`]) and graceful shutdown. Configuration comes from [`DataplaneArgs`] (clap, `VIPD_*`).
//!
//! Lifecycle of a frontend: added → a listener task binds it (retrying with backoff on error) and
//! accepts; removed → it stops accepting at once (the socket is closed), its live connections go
//! on until they close or `--drain-timeout` expires, then they are cut. Shutdown does the same for
//! every frontend with the grace it is given.
//!
//! Must not: build or publish tables, or talk to Marathon. It only reads the published table
//! (one `load_full` per connection) and keeps runtime state outside the table, keyed by backend
//! address / frontend key, so that it survives every table swap.
//!
//! Selection: every listener owns a [`select::FrontendSelector`] (shared with its connections),
//! created when the listener opens and updated at every reconcile, so option changes (balance,
//! active checks) and backend-set changes apply without rebinding, and the selector's state
//! (round-robin position, Maglev table) survives swaps. Health settings come from
//! [`DataplaneConfig::health`].

//!
//! UDP frontends ([`udp`]) share the listener status, bind backoff, backend registry and
//! [`select`] with TCP. A removed UDP frontend closes its socket and its flows at once (their
//! replies need that socket; see [`udp`]); `--drain-timeout` applies to TCP connections only.

pub mod backends;
pub mod listener;
pub mod relay;
pub mod select;
mod tcp;
pub mod udp;

pub use backends::{
    BackendRegistry, BackendStatsSnapshot, ConnectFailure, FrontendRegistry, FrontendStatsSnapshot,
};
pub use listener::{ListenerState, ListenerStatusHandle};
pub use relay::{CloseReason, RelayConfig, RelayMode};

use crate::health::HealthConfig;
use crate::published::{PublishedTable, TableReader};
use crate::table::{FrontendKey, Protocol};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Data plane flags of `vipd run`. Durations take humantime values: `500ms`, `30s`, `1h`.
#[derive(Debug, Clone, clap::Args)]
pub struct DataplaneArgs {
    /// Time allowed for one TCP connect to a backend before trying the next one.
    #[arg(long, env = "VIPD_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Connect attempts per client connection, each on a different backend, before the client is
    /// closed (at least 1).
    #[arg(long, env = "VIPD_CONNECT_TRIES", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub connect_tries: u32,
    /// Close a TCP connection after this long without a byte in either direction; 0 = never.
    #[arg(long, env = "VIPD_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Close a TCP connection this long after it was established, busy or not; 0 or unset = never.
    #[arg(long, env = "VIPD_MAX_LIFETIME", value_parser = parse_duration)]
    pub max_lifetime: Option<Duration>,
    /// Grace given to live connections of a frontend that left the table, and to all connections
    /// at shutdown, before they are cut.
    #[arg(long, env = "VIPD_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Accept backlog of each TCP listening socket (the kernel caps it at net.core.somaxconn).
    #[arg(long, env = "VIPD_LISTEN_BACKLOG", default_value_t = 1024,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub listen_backlog: i32,
    /// Close a UDP flow (one per client address and frontend) after this long without a datagram
    /// in either direction. 60 s suits the request/response traffic UDP services carry (DNS,
    /// statsd, syslog: clients that go quiet rarely come back on the same port soon) and is
    /// Envoy's udp_proxy default. Must not be 0: a flow holds a socket until it expires.
    #[arg(long, env = "VIPD_UDP_IDLE_TIMEOUT", default_value = "60s",
          value_parser = parse_nonzero_duration)]
    pub udp_idle_timeout: Duration,
    /// Most UDP flows per frontend; datagrams of new clients beyond it are dropped (and
    /// counted) while existing flows go on. Each flow holds one socket (a file descriptor).
    #[arg(long, env = "VIPD_UDP_MAX_FLOWS", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub udp_max_flows: u32,
    /// How TCP connections move bytes: `auto` (each direction copies until a read fills a whole
    /// buffer, then splices: small request/response traffic costs fewest syscalls, bulk bytes
    /// never enter userspace; the default of Linux builds with the `splice` feature), `splice`
    /// (always splice(2) through a pooled pipe) or `copy` (read/write through a pooled buffer;
    /// the default elsewhere). A connection that cannot get a pipe (out of descriptors) copies
    /// instead. `splice` or `auto` on a build without splice is an error.
    #[arg(long, env = "VIPD_TCP_RELAY", value_name = "copy|splice|auto",
          default_value = RelayMode::DEFAULT.as_str(), value_parser = parse_relay_mode)]
    pub tcp_relay: RelayMode,
}

fn parse_relay_mode(s: &str) -> Result<RelayMode, relay::RelayModeError> {
    s.parse()
}

fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0".to_string()),
        d => Ok(d),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected a duration such as 500ms, 30s, 5m, 1h)"))
}

/// The data plane's settings, resolved from [`DataplaneArgs`] (or built directly in tests).
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
    /// Selection and health policy (flags in [`crate::health::HealthArgs`]).
    pub health: HealthConfig,
    /// UDP flows: idle timeout, cap, socket buffer.
    pub udp: udp::UdpConfig,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            connect_timeout: Duration::from_secs(1),
            connect_tries: 3,
            idle_timeout: Some(Duration::from_secs(3600)),
            max_lifetime: None,
            drain_timeout: Duration::from_secs(30),
            listen_backlog: 1024,
            bind_retry_initial: Duration::from_millis(100),
            bind_retry_max: Duration::from_secs(5),
            relay_buffer_size: relay::DEFAULT_BUFFER_SIZE,
            tcp_relay: RelayMode::DEFAULT,
            health: HealthConfig::default(),
            udp: udp::UdpConfig::default(),
        }
    }
}

impl From<&DataplaneArgs> for DataplaneConfig {
    fn from(a: &DataplaneArgs) -> Self {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        DataplaneConfig {
            connect_timeout: a.connect_timeout,
            connect_tries: a.connect_tries.max(1),
            idle_timeout: nonzero(a.idle_timeout),
            max_lifetime: a.max_lifetime.and_then(nonzero),
            drain_timeout: a.drain_timeout,
            listen_backlog: a.listen_backlog.max(1),
            tcp_relay: a.tcp_relay,
            udp: udp::UdpConfig {
                idle_timeout: a.udp_idle_timeout,
                max_flows: a.udp_max_flows.max(1) as usize,
                ..udp::UdpConfig::default()
            },
            ..DataplaneConfig::default()
        }
    }
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
struct ListenerEntry {
    /// Stops binding/accepting.
    stop: CancellationToken,
    /// Cancelled when the listener task has closed its socket.
    socket_closed: CancellationToken,
    /// This frontend's connections.
    connections: TaskTracker,
    /// Cuts this frontend's connections.
    cut: CancellationToken,
    /// This frontend's selector (shared with its connections; updated at reconcile).
    selector: Arc<select::FrontendSelector>,
}

/// The listener manager. Create it inside a tokio runtime; [`Dataplane::reconcile`] spawns tasks.
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
    /// Every connection task.
    connections: TaskTracker,
}

impl Dataplane {
    pub fn new(config: DataplaneConfig, tables: TableReader) -> Self {
        let outlier = config.health.outlier;
        if config.tcp_relay != RelayMode::Copy && !RelayMode::SPLICE_AVAILABLE {
            tracing::warn!("this build has no splice relay; TCP connections copy instead");
        }
        let flow_budget = udp::FlowBudget::new(config.udp.flow_budget);
        Dataplane {
            config,
            tables,
            listeners: HashMap::new(),
            closing: HashMap::new(),
            status: ListenerStatusHandle::default(),
            backends: Arc::new(BackendRegistry::with_outlier(outlier)),
            frontends: Arc::new(FrontendRegistry::new()),
            udp_stats: Arc::new(udp::UdpStatsRegistry::new()),
            flow_budget,
            next_owner: 0,
            stop_all: CancellationToken::new(),
            cut_all: CancellationToken::new(),
            tasks: TaskTracker::new(),
            connections: TaskTracker::new(),
        }
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

        // Runtime state: make sure every current backend has an entry, drop the unused rest.
        let addrs: HashSet<_> = table
            .frontends
            .iter()
            .flat_map(|f| f.backends.iter().map(|b| b.address))
            .collect();
        self.backends.ensure(&addrs);
        let pruned_backends = self.backends.prune(&addrs);
        let pruned_frontends = self.frontends.prune(&wanted);
        self.udp_stats.prune(&wanted, &addrs);

        // Selectors follow options and backend sets (no rebinding).
        for frontend in &table.frontends {
            if let Some(entry) = self.listeners.get(&frontend.key()) {
                entry.selector.update(frontend, &self.config.health);
            }
        }

        if starting > 0 || !removed.is_empty() {
            tracing::info!(
                generation = published.generation,
                starting,
                closed = removed.len(),
                listeners = self.listeners.len(),
                pruned_backends,
                pruned_frontends,
                "listeners reconciled"
            );
        } else {
            tracing::debug!(
                generation = published.generation,
                pruned_backends,
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
        }
    }

    fn open_tcp(&mut self, key: FrontendKey) {
        let task = self.listener_task(key, self.config.listen_backlog);
        let (stop, socket_closed) = (task.stop.clone(), task.socket_closed.clone());
        let cut = self.cut_all.child_token();
        let frontend_connections = TaskTracker::new();
        let selector = self.new_selector(key);
        let ctx = Arc::new(tcp::ConnectionContext {
            key,
            tables: self.tables.clone(),
            selector: selector.clone(),
            backends: self.backends.clone(),
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
        self.tasks.spawn(listener::run_tcp_listener(task, ctx));
        self.listeners.insert(
            key,
            ListenerEntry {
                stop,
                socket_closed,
                connections: frontend_connections,
                cut,
                selector,
            },
        );
    }

    /// A selector for frontend `key` under the health policy. Settings and backends are filled by
    /// [`select::FrontendSelector::update`], which [`Dataplane::reconcile`] calls for every
    /// listener after opening new ones (and at every later reconcile).
    fn new_selector(&self, key: FrontendKey) -> Arc<select::FrontendSelector> {
        let table = self.tables.load_full();
        let selector = match table.table.frontend(&key) {
            Some(frontend) => select::FrontendSelector::for_frontend(
                frontend,
                self.backends.clone(),
                &self.config.health,
            ),
            None => {
                let cfg = &self.config.health;
                let settings = select::SelectorSettings {
                    balance: cfg.balance,
                    checked: cfg.active.enabled,
                    fail_open: cfg.fail_open,
                    max_ejection_percent: cfg.max_ejection_percent,
                };
                select::FrontendSelector::new(key, self.backends.clone(), settings)
            }
        };
        Arc::new(selector)
    }

    /// Opens a UDP frontend: a task binds it (retrying like TCP) and runs its receive loop.
    fn open_udp(&mut self, key: FrontendKey) {
        let task = self.listener_task(key, 0); // the backlog is not used by UDP
        let (stop, socket_closed) = (task.stop.clone(), task.socket_closed.clone());
        let selector = self.new_selector(key);
        let ctx = udp::UdpContext {
            key,
            tables: self.tables.clone(),
            selector: selector.clone(),
            backends: self.backends.clone(),
            frontend_stats: self.frontends.get_or_insert(key),
            udp_stats: self.udp_stats.clone(),
            flow_budget: self.flow_budget.clone(),
            config: self.config.udp.clone(),
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
                selector,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        dp: DataplaneArgs,
    }

    fn parse(args: &[&str]) -> Result<DataplaneConfig, clap::Error> {
        let mut argv = vec!["vipd"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| DataplaneConfig::from(&c.dp))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.connect_tries, 3);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(c.max_lifetime, None);
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.listen_backlog, 1024);
        assert_eq!(c.udp.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.udp.max_flows, 65_536);
        assert_eq!(c.tcp_relay, RelayMode::DEFAULT);
    }

    #[test]
    fn tcp_relay_parses_and_defaults_to_auto_where_splice_is_available() {
        assert_eq!(
            parse(&["--tcp-relay", "copy"]).unwrap().tcp_relay,
            RelayMode::Copy
        );
        let expected = if cfg!(all(feature = "splice", target_os = "linux")) {
            RelayMode::Auto
        } else {
            RelayMode::Copy
        };
        assert_eq!(RelayMode::DEFAULT, expected);
        assert_eq!(parse(&[]).unwrap().tcp_relay, expected);
        let err = parse(&["--tcp-relay", "zerocopy"]).unwrap_err().to_string();
        assert!(
            err.contains("--tcp-relay") && err.contains("expected `copy`, `splice` or `auto`"),
            "{err}"
        );
    }

    #[cfg(all(feature = "splice", target_os = "linux"))]
    #[test]
    fn tcp_relay_splice_is_accepted_with_the_feature() {
        assert_eq!(
            parse(&["--tcp-relay", "splice"]).unwrap().tcp_relay,
            RelayMode::Splice
        );
        assert_eq!(
            parse(&["--tcp-relay", "auto"]).unwrap().tcp_relay,
            RelayMode::Auto
        );
    }

    #[cfg(not(all(feature = "splice", target_os = "linux")))]
    #[test]
    fn tcp_relay_splice_is_a_clear_error_without_the_feature() {
        let err = parse(&["--tcp-relay", "splice"]).unwrap_err().to_string();
        assert!(
            err.contains("--tcp-relay") && err.contains("built without the splice relay"),
            "{err}"
        );
    }

    #[test]
    fn udp_flags_parse_and_reject_zero() {
        let c = parse(&["--udp-idle-timeout", "5s", "--udp-max-flows", "2"]).unwrap();
        assert_eq!(c.udp.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.udp.max_flows, 2);
        let err = parse(&["--udp-idle-timeout", "0"]).unwrap_err().to_string();
        assert!(
            err.contains("--udp-idle-timeout") && err.contains("more than 0"),
            "{err}"
        );
        let err = parse(&["--udp-max-flows", "0"]).unwrap_err().to_string();
        assert!(err.contains("--udp-max-flows"), "{err}");
    }

    #[test]
    fn humantime_values_and_zero_means_none() {
        let c = parse(&[
            "--connect-timeout",
            "500ms",
            "--idle-timeout",
            "0",
            "--max-lifetime",
            "2h",
            "--drain-timeout",
            "1m 30s",
        ])
        .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.max_lifetime, Some(Duration::from_secs(7200)));
        assert_eq!(c.drain_timeout, Duration::from_secs(90));
        assert_eq!(parse(&["--max-lifetime", "0s"]).unwrap().max_lifetime, None);
    }

    #[test]
    fn bad_values_are_rejected_with_a_clear_error() {
        let err = parse(&["--connect-timeout", "soon"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--connect-timeout") && err.contains("500ms"),
            "{err}"
        );
        let err = parse(&["--connect-tries", "0"]).unwrap_err().to_string();
        assert!(err.contains("--connect-tries"), "{err}");
        let err = parse(&["--listen-backlog=-5"]).unwrap_err().to_string();
        assert!(err.contains("--listen-backlog"), "{err}");
        let err = parse(&["--idle-timeout", "10"]).unwrap_err().to_string();
        assert!(
            err.contains("--idle-timeout"),
            "a bare number needs a unit: {err}"
        );
    }
}
